//! Settings: `config/walhook.toml`, overridden by `WALHOOK_*` environment
//! variables and command-line flags (flags win). An unknown key or a bad
//! value stops start-up with a message that names it.
//!
//! Adding a setting: a field in its section struct (`FileCapture`,
//! `FileDelivery`, `FileAdmin`), with `#[arg(id = "<section.key>", long,
//! env)]` when it also has a flag and a variable (else `#[arg(skip)]`); its
//! field in [`Config`] with the default; its line in `apply_file`; and its
//! documented line in `config/walhook.toml`. The flag appears on every
//! command that takes that section, the variable is known to `check_env`,
//! and the tests check the example file documents it.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;
use thiserror::Error;

/// The configuration file read when none is named.
pub const DEFAULT_CONFIG_PATH: &str = "config/walhook.toml";

/// Environment variables walhook reads beside the settings' own (see
/// [`known_env`]): the log filter.
pub const OTHER_ENV: &[&str] = &["WALHOOK_LOG"];

#[derive(Debug, Error)]
pub enum ConfigError {
    /// `error` is no `#[source]`: a printed chain would repeat it.
    #[error("cannot read the configuration file {path}: {error}; give an existing file with --config or WALHOOK_CONFIG, or leave both out to use config/walhook.toml when it exists")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("the configuration file {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{setting}: {message}")]
    Invalid { setting: String, message: String },
    #[error("unknown environment variable {name}; walhook reads {known}")]
    UnknownEnv { name: String, known: String },
}

/// A backfill rate limit: a positive number, or 0 for none.
fn rows_per_second(rate: f64, setting: &str) -> Result<Option<f64>, ConfigError> {
    if rate == 0.0 {
        Ok(None)
    } else if rate.is_finite() && rate > 0.0 {
        Ok(Some(rate))
    } else {
        Err(invalid(
            setting,
            format!("must be a positive number of rows per second, or 0 for no limit, not {rate}"),
        ))
    }
}

fn invalid(setting: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        setting: setting.to_owned(),
        message: message.into(),
    }
}

/// Where changes are captured from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CaptureMode {
    Replication,
    Trigger,
}

impl CaptureMode {
    pub fn as_str(self) -> &'static str {
        match self {
            CaptureMode::Replication => "replication",
            CaptureMode::Trigger => "trigger",
        }
    }
}

impl fmt::Display for CaptureMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CaptureMode {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim() {
            "replication" => Ok(CaptureMode::Replication),
            "trigger" => Ok(CaptureMode::Trigger),
            other => Err(format!(
                "unknown capture mode '{other}'; use 'replication' or 'trigger'"
            )),
        }
    }
}

/// The delays before each attempt: the first is usually `0s` (at once);
/// the number of delays is the number of attempts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrySchedule(pub Vec<Duration>);

impl RetrySchedule {
    pub const DEFAULT: &'static str = "0s,5s,5m,30m,2h,5h,10h,10h";

    pub fn max_attempts(&self) -> u32 {
        u32::try_from(self.0.len()).unwrap_or(u32::MAX)
    }
}

impl FromStr for RetrySchedule {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let delays = text
            .split(',')
            .map(str::trim)
            .filter(|part| !part.is_empty())
            .map(|part| parse_duration(part).map_err(|e| format!("'{part}' in '{text}': {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        if delays.is_empty() {
            return Err("the schedule is empty; list at least one delay, e.g. 0s,5s,5m".into());
        }
        Ok(RetrySchedule(delays))
    }
}

impl fmt::Display for RetrySchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|d| humantime::format_duration(*d).to_string())
            .collect();
        f.write_str(&parts.join(","))
    }
}

/// `10s`, `250ms`, `5m`, `2h`, `0s`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(text)
        .map_err(|e| format!("not a duration ({e}); write e.g. 250ms, 10s, 5m, 2h"))
}

#[derive(Debug, Clone)]
pub struct Config {
    pub database_url: Option<String>,
    pub capture: CaptureConfig,
    pub delivery: DeliveryConfig,
    pub admin: AdminConfig,
    pub backfill: BackfillConfig,
}

#[derive(Debug, Clone, Default)]
pub struct BackfillConfig {
    /// Rows a backfill reads per second at most; `None` (0 in the file):
    /// as fast as delivery takes them.
    pub max_rows_per_second: Option<f64>,
}

#[derive(Debug, Clone)]
pub struct CaptureConfig {
    pub mode: CaptureMode,
    /// At most this many changes go into one outbox transaction.
    pub batch_size: usize,
    /// A batch is written at the latest this long after its first change.
    pub batch_timeout: Duration,
    /// How often the trigger source looks for changes without a wake-up.
    pub poll_interval: Duration,
    /// Name of the logical replication slot.
    pub slot: String,
    /// Name of the publication.
    pub publication: String,
}

#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    pub allow_private_targets: bool,
    pub retry_schedule: RetrySchedule,
    pub timeout: Duration,
    pub connect_timeout: Duration,
    /// Requests in flight across all subscriptions, each counted until its
    /// result is recorded.
    pub max_in_flight: usize,
    /// Requests in flight to one subscription (a subscription's own
    /// `max_in_flight` overrides it).
    pub max_in_flight_per_subscription: usize,
    /// How many due deliveries one claim takes.
    pub claim_batch: i64,
    /// How long a claim holds a delivery before another worker may take it.
    pub lease: Duration,
    /// A subscription whose deliveries all fail for this long is disabled.
    pub disable_after: Duration,
    /// Delivered history older than this is pruned.
    pub retention: Duration,
    /// Dead deliveries older than this are pruned.
    pub dead_retention: Duration,
}

#[derive(Debug, Clone)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    /// What the admin server asks for when it listens beyond loopback.
    pub token: Option<Secret>,
}

/// A value that is never printed: `Debug` shows it masked.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            database_url: None,
            capture: CaptureConfig {
                mode: CaptureMode::Replication,
                batch_size: 1000,
                batch_timeout: Duration::from_millis(20),
                poll_interval: Duration::from_secs(1),
                slot: "walhook".into(),
                publication: "walhook".into(),
            },
            delivery: DeliveryConfig {
                allow_private_targets: false,
                retry_schedule: RetrySchedule::DEFAULT
                    .parse()
                    .unwrap_or(RetrySchedule(vec![Duration::ZERO])),
                timeout: Duration::from_secs(10),
                connect_timeout: Duration::from_secs(5),
                max_in_flight: 256,
                max_in_flight_per_subscription: 32,
                claim_batch: 256,
                lease: Duration::from_secs(10),
                disable_after: Duration::from_secs(5 * 24 * 3600),
                retention: Duration::from_secs(7 * 24 * 3600),
                dead_retention: Duration::from_secs(30 * 24 * 3600),
            },
            admin: AdminConfig {
                listen: SocketAddr::from(([127, 0, 0, 1], 9750)),
                token: None,
            },
            backfill: BackfillConfig::default(),
        }
    }
}

mod overrides;

pub use overrides::{known_env, overridable_settings, ConnectionOverrides, Overrides};

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

/// The `[backfill]` section.
#[derive(Debug, Clone, Default, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct FileBackfill {
    /// Rows a backfill reads per second at most, 0 for no limit (file key backfill.max_rows_per_second)
    #[arg(
        id = "backfill.max_rows_per_second",
        long = "backfill-max-rows-per-second",
        env = "WALHOOK_BACKFILL_MAX_ROWS_PER_SECOND",
        value_name = "ROWS"
    )]
    pub max_rows_per_second: Option<f64>,
}

/// The `[capture]` section; its flags are those of `run`, `migrate` and `demo`.
#[derive(Debug, Clone, Default, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct FileCapture {
    /// Capture mode: replication or trigger (file key capture.mode)
    #[arg(
        id = "capture.mode",
        long = "mode",
        env = "WALHOOK_MODE",
        value_name = "MODE"
    )]
    pub mode: Option<String>,
    #[arg(skip)]
    pub batch_size: Option<usize>,
    #[arg(skip)]
    pub batch_timeout: Option<String>,
    #[arg(skip)]
    pub poll_interval: Option<String>,
    /// Logical replication slot, one per database of a server (file key capture.slot)
    #[arg(
        id = "capture.slot",
        long = "slot",
        env = "WALHOOK_SLOT",
        value_name = "NAME"
    )]
    pub slot: Option<String>,
    #[arg(skip)]
    pub publication: Option<String>,
}

/// The `[delivery]` section.
#[derive(Debug, Clone, Default, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct FileDelivery {
    /// Allow targets in private and loopback networks (file key delivery.allow_private_targets)
    #[arg(id = "delivery.allow_private_targets", long = "allow-private-targets", env = "WALHOOK_ALLOW_PRIVATE_TARGETS", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true", value_parser = clap::builder::BoolishValueParser::new())]
    pub allow_private_targets: Option<bool>,
    /// Delays before each attempt, e.g. 0s,5s,5m,30m (file key delivery.retry_schedule)
    #[arg(
        id = "delivery.retry_schedule",
        long = "retry-schedule",
        env = "WALHOOK_RETRY_SCHEDULE",
        value_name = "DELAYS"
    )]
    pub retry_schedule: Option<String>,
    /// Time limit of one delivery request, e.g. 10s (file key delivery.timeout)
    #[arg(
        id = "delivery.timeout",
        long = "delivery-timeout",
        env = "WALHOOK_DELIVERY_TIMEOUT",
        value_name = "DURATION"
    )]
    pub timeout: Option<String>,
    #[arg(skip)]
    pub connect_timeout: Option<String>,
    #[arg(skip)]
    pub max_in_flight: Option<usize>,
    #[arg(skip)]
    pub max_in_flight_per_subscription: Option<usize>,
    #[arg(skip)]
    pub claim_batch: Option<i64>,
    #[arg(skip)]
    pub lease: Option<String>,
    #[arg(skip)]
    pub disable_after: Option<String>,
    #[arg(skip)]
    pub retention: Option<String>,
    #[arg(skip)]
    pub dead_retention: Option<String>,
}

/// The `[admin]` section.
#[derive(Debug, Clone, Default, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct FileAdmin {
    /// Address of the admin server: /healthz, /metrics, the console (file key admin.listen)
    #[arg(
        id = "admin.listen",
        long = "admin-listen",
        env = "WALHOOK_ADMIN_LISTEN",
        value_name = "ADDR"
    )]
    pub listen: Option<String>,
    /// Token the admin server asks for off loopback (file key admin.token)
    #[arg(
        id = "admin.token",
        long = "admin-token",
        env = "WALHOOK_ADMIN_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
}

impl Config {
    /// Reads the file (the named one, or `config/walhook.toml` when it
    /// exists), then applies the overrides.
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
        let c = file.capture;
        if let Some(mode) = c.mode {
            self.capture.mode = mode.parse().map_err(|e| invalid("capture.mode", e))?;
        }
        if let Some(n) = c.batch_size {
            if n == 0 {
                return Err(invalid("capture.batch_size", "must be at least 1"));
            }
            self.capture.batch_size = n;
        }
        set_duration(
            &mut self.capture.batch_timeout,
            c.batch_timeout,
            "capture.batch_timeout",
        )?;
        set_duration(
            &mut self.capture.poll_interval,
            c.poll_interval,
            "capture.poll_interval",
        )?;
        if let Some(slot) = c.slot {
            self.capture.slot = valid_identifier(&slot, "capture.slot")?;
        }
        if let Some(publication) = c.publication {
            self.capture.publication = valid_identifier(&publication, "capture.publication")?;
        }
        let d = file.delivery;
        if let Some(allow) = d.allow_private_targets {
            self.delivery.allow_private_targets = allow;
        }
        if let Some(schedule) = d.retry_schedule {
            self.delivery.retry_schedule = schedule
                .parse()
                .map_err(|e| invalid("delivery.retry_schedule", e))?;
        }
        set_duration(&mut self.delivery.timeout, d.timeout, "delivery.timeout")?;
        set_duration(
            &mut self.delivery.connect_timeout,
            d.connect_timeout,
            "delivery.connect_timeout",
        )?;
        set_positive(
            &mut self.delivery.max_in_flight,
            d.max_in_flight,
            "delivery.max_in_flight",
        )?;
        set_positive(
            &mut self.delivery.max_in_flight_per_subscription,
            d.max_in_flight_per_subscription,
            "delivery.max_in_flight_per_subscription",
        )?;
        if let Some(n) = d.claim_batch {
            if n < 1 {
                return Err(invalid("delivery.claim_batch", "must be at least 1"));
            }
            self.delivery.claim_batch = n;
        }
        set_duration(&mut self.delivery.lease, d.lease, "delivery.lease")?;
        set_duration(
            &mut self.delivery.disable_after,
            d.disable_after,
            "delivery.disable_after",
        )?;
        set_duration(
            &mut self.delivery.retention,
            d.retention,
            "delivery.retention",
        )?;
        set_duration(
            &mut self.delivery.dead_retention,
            d.dead_retention,
            "delivery.dead_retention",
        )?;
        if let Some(listen) = file.admin.listen {
            self.admin.listen = parse_listen(&listen, "admin.listen")?;
        }
        if let Some(token) = file.admin.token {
            self.admin.token = Some(Secret(admin_token(token, "admin.token")?));
        }
        if let Some(rate) = file.backfill.max_rows_per_second {
            self.backfill.max_rows_per_second =
                rows_per_second(rate, "backfill.max_rows_per_second")?;
        }
        Ok(())
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
/// silently ignored.
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

/// A token short enough to guess would make the console's sign-in a lock
/// anyone can pick.
fn admin_token(token: String, setting: &str) -> Result<String, ConfigError> {
    if token.trim().chars().count() < 16 {
        return Err(invalid(
            setting,
            "the admin token must be at least 16 characters; generate one with e.g. `openssl rand -hex 24`",
        ));
    }
    Ok(token.trim().to_owned())
}

fn set_duration(
    target: &mut Duration,
    value: Option<String>,
    setting: &str,
) -> Result<(), ConfigError> {
    if let Some(text) = value {
        *target = parse_duration(&text).map_err(|e| invalid(setting, e))?;
    }
    Ok(())
}

fn set_positive(
    target: &mut usize,
    value: Option<usize>,
    setting: &str,
) -> Result<(), ConfigError> {
    match value {
        Some(0) => Err(invalid(setting, "must be at least 1")),
        Some(n) => {
            *target = n;
            Ok(())
        }
        None => Ok(()),
    }
}

fn parse_listen(text: &str, setting: &str) -> Result<SocketAddr, ConfigError> {
    text.parse().map_err(|_| {
        invalid(
            setting,
            format!("'{text}' is not an address and port, e.g. 127.0.0.1:9750"),
        )
    })
}

fn valid_identifier(text: &str, setting: &str) -> Result<String, ConfigError> {
    let ok = !text.is_empty()
        && text.len() <= 63
        && text
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(text.to_owned())
    } else {
        Err(invalid(
            setting,
            format!("'{text}' must be 1 to 63 lowercase letters, digits or _"),
        ))
    }
}

#[cfg(test)]
mod tests {
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
