//! The kinds of value settings hold (durations, the retry schedule, the
//! capture mode, a secret) and the checks that turn a file's or a flag's
//! text into them, each failing with a message that names the setting and
//! what to write instead.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;

use super::ConfigError;

/// Where changes are captured from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CaptureMode {
    /// Logical replication from a slot (`wal_level=logical`).
    Replication,
    /// Triggers that copy each change into `walhook.capture`.
    Trigger,
}

impl CaptureMode {
    /// The mode as the file, the flags and the database spell it.
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
/// the number of delays is the number of attempts. Never empty when parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrySchedule(pub Vec<Duration>);

impl RetrySchedule {
    /// The schedule when none is configured, as the file writes it.
    pub const DEFAULT: &'static str = "0s,5s,5m,30m,2h,5h,10h,10h";

    /// How many attempts a delivery gets: one per delay.
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

/// `10s`, `250ms`, `5m`, `2h`, `0s` (or a bare `0`); anything else is
/// refused with an example of what to write.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(text)
        .map_err(|e| format!("not a duration ({e}); write e.g. 250ms, 10s, 5m, 2h"))
}

/// A value that is never printed: `Debug` shows it masked.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl Secret {
    /// The value itself, for the one place that must compare or send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// The error for a bad value of `setting`.
pub(super) fn invalid(setting: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        setting: setting.to_owned(),
        message: message.into(),
    }
}

/// Sets `target` when the file or a flag gave a duration.
pub(super) fn set_duration(
    target: &mut Duration,
    value: Option<String>,
    setting: &str,
) -> Result<(), ConfigError> {
    if let Some(text) = value {
        *target = parse_duration(&text).map_err(|e| invalid(setting, e))?;
    }
    Ok(())
}

/// Sets `target` when given, refusing 0.
pub(super) fn set_positive(
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

/// A backfill rate limit: a positive number, or 0 for none.
pub(super) fn rows_per_second(rate: f64, setting: &str) -> Result<Option<f64>, ConfigError> {
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

/// An address and port to listen on.
pub(super) fn parse_listen(text: &str, setting: &str) -> Result<SocketAddr, ConfigError> {
    text.parse().map_err(|_| {
        invalid(
            setting,
            format!("'{text}' is not an address and port, e.g. 127.0.0.1:9750"),
        )
    })
}

/// A name walhook creates in the database (slot, publication): lowercase,
/// so that it never needs quoting.
pub(super) fn valid_identifier(text: &str, setting: &str) -> Result<String, ConfigError> {
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

/// A token short enough to guess would make the console's sign-in a lock
/// anyone can pick.
pub(super) fn admin_token(token: String, setting: &str) -> Result<String, ConfigError> {
    if token.trim().chars().count() < 16 {
        return Err(invalid(
            setting,
            "the admin token must be at least 16 characters; generate one with e.g. `openssl rand -hex 24`",
        ));
    }
    Ok(token.trim().to_owned())
}
