//! Settings: `config/walhook.toml`, overridden by `WALHOOK_*` environment
//! variables and command-line flags (flags win). An unknown key or a bad
//! value stops start-up with a message that names it.
//!
//! Each section of the file has a module of its own (`capture`, `delivery`,
//! `admin`, `backfill`) holding everything about its settings: the section
//! as written (`FileCapture`, ...: every field an `Option`, `None` where
//! neither the file nor a flag gives it), the settings in effect
//! (`CaptureConfig`, ...) with their defaults, and `apply`, which checks the
//! one and sets the other. Flags and environment variables are read into
//! the same section structs ([`Overrides`]) and applied by the same code, so
//! a bad flag is reported like a bad file key, named by its flag.
//!
//! Adding a setting takes its section's module and the example file:
//!
//! 1. a field on the section struct, with `#[arg(id = "<section.key>",
//!    long, env)]` when it also has a flag and a variable (its doc comment
//!    is the flag's help), else `#[arg(skip)]`;
//! 2. its field in the settings struct, its default, and its line in
//!    `apply` (the helpers in `values` check durations, counts, names);
//! 3. its documented line in `config/walhook.toml`.
//!
//! The flag then appears on every command that takes the section, the
//! variable is known to [`check_env`] (see [`known_env`]), and
//! `tests/config_file.rs` checks that the example file documents the key
//! (and lists settings with a flag, which DESIGN.md fixes, by name).

#![warn(missing_docs)]

mod admin;
mod backfill;
mod capture;
mod delivery;
mod overrides;
mod values;

use std::path::{Path, PathBuf};

use serde::Deserialize;
use thiserror::Error;

pub use admin::{AdminConfig, FileAdmin};
pub use backfill::{BackfillConfig, FileBackfill};
pub use capture::{CaptureConfig, FileCapture};
pub use delivery::{DeliveryConfig, FileDelivery};
pub use overrides::{known_env, overridable_settings, ConnectionOverrides, Overrides};
pub use values::{parse_duration, CaptureMode, RetrySchedule, Secret};

use values::invalid;

/// The configuration file read when none is named.
pub const DEFAULT_CONFIG_PATH: &str = "config/walhook.toml";

/// Environment variables walhook reads beside the settings' own (see
/// [`known_env`]): the log filter.
pub const OTHER_ENV: &[&str] = &["WALHOOK_LOG"];

/// Why the settings could not be read; each message names the file, key,
/// flag or variable at fault and what to do.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The configuration file could not be read. `error` is no `#[source]`:
    /// a printed chain would repeat it.
    #[error("cannot read the configuration file {path}: {error}; give an existing file with --config or WALHOOK_CONFIG, or leave both out to use config/walhook.toml when it exists")]
    Read {
        /// The file named (or the default one).
        path: PathBuf,
        /// What reading it reported.
        error: std::io::Error,
    },
    /// The file is no valid TOML, or has a key or section walhook does not
    /// know (named in `message`).
    #[error("the configuration file {path} is not valid: {message}")]
    Parse {
        /// The file read.
        path: PathBuf,
        /// The parser's message, with line and column.
        message: String,
    },
    /// A value is wrong: `setting` is the file key (`delivery.timeout`), or
    /// the flag and variable it came from (`--delivery-timeout /
    /// WALHOOK_DELIVERY_TIMEOUT`); `message` says what to write.
    #[error("{setting}: {message}")]
    Invalid {
        /// The key, or the flag and variable.
        setting: String,
        /// What is wrong and what to write instead.
        message: String,
    },
    /// A `WALHOOK_*` variable walhook does not read (a typo, most likely).
    #[error("unknown environment variable {name}; walhook reads {known}")]
    UnknownEnv {
        /// The variable.
        name: String,
        /// The variables walhook reads, comma-separated.
        known: String,
    },
}

/// The settings in effect: defaults, then the file, then the overrides.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// The database to capture from and keep the outbox in; required by
    /// every command that talks to the database (see
    /// [`Config::require_database_url`]).
    pub database_url: Option<String>,
    /// `[capture]`.
    pub capture: CaptureConfig,
    /// `[delivery]`.
    pub delivery: DeliveryConfig,
    /// `[admin]`.
    pub admin: AdminConfig,
    /// `[backfill]`.
    pub backfill: BackfillConfig,
}

/// The file's shape: every key documented in `config/walhook.toml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    database_url: Option<String>,
    #[serde(default)]
    capture: FileCapture,
    #[serde(default)]
    delivery: FileDelivery,
    #[serde(default)]
    admin: FileAdmin,
    #[serde(default)]
    backfill: FileBackfill,
}

impl Config {
    /// Reads the file (the named one, or `config/walhook.toml` when it
    /// exists), then applies the overrides and checks the result.
    pub fn load(overrides: &Overrides) -> Result<Config, ConfigError> {
        let file = match &overrides.connection.config {
            Some(path) => read_file(path)?,
            None if Path::new(DEFAULT_CONFIG_PATH).exists() => {
                read_file(Path::new(DEFAULT_CONFIG_PATH))?
            }
            None => FileConfig::default(),
        };
        let mut config = Config::default();
        config.apply_file(file)?;
        config.apply_overrides(overrides)?;
        config.check()?;
        Ok(config)
    }

    /// Parses configuration text, as in a file at `path` (for messages).
    pub fn from_toml(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let mut config = Config::default();
        config.apply_file(parse_file(text, path)?)?;
        config.check()?;
        Ok(config)
    }

    fn apply_file(&mut self, file: FileConfig) -> Result<(), ConfigError> {
        if file.database_url.is_some() {
            self.database_url = file.database_url;
        }
        self.capture.apply(file.capture)?;
        self.delivery.apply(file.delivery)?;
        self.admin.apply(file.admin)?;
        self.backfill.apply(file.backfill)
    }

    /// Applies flags and environment variables as a file of their own;
    /// a bad value is named by its flag and variable.
    fn apply_overrides(&mut self, o: &Overrides) -> Result<(), ConfigError> {
        let as_file = FileConfig {
            database_url: o.connection.database_url.clone(),
            capture: o.capture.clone(),
            delivery: o.delivery.clone(),
            admin: o.admin.clone(),
            backfill: o.backfill.clone(),
        };
        self.apply_file(as_file).map_err(|error| match error {
            ConfigError::Invalid { setting, message } => ConfigError::Invalid {
                setting: overrides::label(&setting),
                message,
            },
            other => other,
        })
    }

    /// Rules across settings, checked once everything is applied.
    fn check(&self) -> Result<(), ConfigError> {
        if self.delivery.timeout.is_zero() {
            return Err(invalid("delivery.timeout", "must be more than 0s"));
        }
        Ok(())
    }

    /// The database URL, or a message that says how to give one.
    pub fn require_database_url(&self) -> Result<&str, ConfigError> {
        self.database_url.as_deref().ok_or_else(|| {
            invalid(
                "database_url",
                "no database given; set DATABASE_URL, pass --database-url, or set database_url in config/walhook.toml",
            )
        })
    }
}

/// Refuses `WALHOOK_*` variables walhook does not read, so a typo is not
/// silently ignored; other variables are not looked at.
pub fn check_env<I: IntoIterator<Item = String>>(names: I) -> Result<(), ConfigError> {
    let known = known_env();
    for name in names {
        if name.starts_with("WALHOOK_") && !known.contains(&name) {
            return Err(ConfigError::UnknownEnv {
                name,
                known: known.join(", "),
            });
        }
    }
    Ok(())
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
        path: path.to_owned(),
        error,
    })?;
    parse_file(&text, path)
}

fn parse_file(text: &str, path: &Path) -> Result<FileConfig, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::Parse {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(text, Path::new("test.toml"))
    }

    #[test]
    fn defaults_match_the_documented_ones() {
        let config = Config::default();
        assert_eq!(config.capture.mode, CaptureMode::Replication);
        assert_eq!(
            config.delivery.retry_schedule.to_string(),
            "0s,5s,5m,30m,2h,5h,10h,10h"
        );
        assert_eq!(config.delivery.timeout, Duration::from_secs(10));
        assert!(!config.delivery.allow_private_targets);
        assert_eq!(config.admin.listen.to_string(), "127.0.0.1:9750");
    }

    #[test]
    fn unknown_key_is_named() {
        let err = parse("[delivery]\ntimeuot = \"5s\"\n")
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(err.contains("timeuot"), "{err}");
        assert!(err.contains("test.toml"), "{err}");
    }

    #[test]
    fn bad_value_is_named() {
        let err = parse("[capture]\nmode = \"wal\"\n")
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("capture.mode") && err.contains("'wal'"),
            "{err}"
        );
        let err = parse("[delivery]\nretry_schedule = \"0s,soon\"\n")
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("delivery.retry_schedule") && err.contains("soon"),
            "{err}"
        );
    }

    #[test]
    fn a_backfill_rate_is_positive_or_zero_for_none() {
        let limited = parse("[backfill]\nmax_rows_per_second = 2500\n").unwrap_or_default();
        assert_eq!(limited.backfill.max_rows_per_second, Some(2500.0));
        let unlimited = parse("[backfill]\nmax_rows_per_second = 0\n").unwrap_or_default();
        assert_eq!(unlimited.backfill.max_rows_per_second, None);
        let err = parse("[backfill]\nmax_rows_per_second = -5\n")
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(err.contains("backfill.max_rows_per_second"), "{err}");
    }

    #[test]
    fn the_prune_interval_is_a_positive_duration() {
        assert_eq!(
            Config::default().delivery.prune_interval,
            Duration::from_secs(60)
        );
        let often = parse("[delivery]\nprune_interval = \"1s\"\n").unwrap_or_default();
        assert_eq!(often.delivery.prune_interval, Duration::from_secs(1));
        let err = parse("[delivery]\nprune_interval = \"0s\"\n")
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(err.contains("delivery.prune_interval"), "{err}");
    }

    #[test]
    fn overrides_win_over_the_file() {
        let mut config = parse("[capture]\nmode = \"replication\"\n").unwrap_or_default();
        let overrides = Overrides {
            capture: FileCapture {
                mode: Some("trigger".into()),
                ..Default::default()
            },
            delivery: FileDelivery {
                retry_schedule: Some("0s,1s".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        config
            .apply_overrides(&overrides)
            .map_err(|e| e.to_string())
            .unwrap_or(());
        assert_eq!(config.capture.mode, CaptureMode::Trigger);
        assert_eq!(
            config.delivery.retry_schedule.0,
            vec![Duration::ZERO, Duration::from_secs(1)]
        );
    }

    #[test]
    fn the_admin_token_is_never_printed() {
        let config = parse("[admin]\ntoken = \"hunter2-token-of-24-chars\"\n").unwrap_or_default();
        assert_eq!(
            config.admin.token.as_ref().map(Secret::expose),
            Some("hunter2-token-of-24-chars")
        );
        assert!(!format!("{config:?}").contains("hunter2"));
    }

    #[test]
    fn a_bad_override_is_named_by_its_flag_and_variable() {
        let overrides = Overrides {
            capture: FileCapture {
                slot: Some("Bad-Slot".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let err = Config::load(&overrides)
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("--slot / WALHOOK_SLOT: 'Bad-Slot'"),
            "{err}"
        );
    }

    #[test]
    fn unknown_env_is_refused() {
        assert!(check_env(["WALHOOK_MODE".to_string(), "PATH".to_string()]).is_ok());
        let err = check_env(["WALHOOK_MOOD".to_string()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("WALHOOK_MOOD"), "{err}");
    }
}
