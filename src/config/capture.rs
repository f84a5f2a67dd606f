//! The `[capture]` section: how changes are captured and batched.

use std::time::Duration;

use serde::Deserialize;

use super::values::{invalid, set_duration, valid_identifier, CaptureMode};
use super::ConfigError;

/// The `[capture]` section as written; its flags are those of `run`,
/// `migrate` and `demo`.
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
    /// `capture.batch_size` (file only), see [`CaptureConfig::batch_size`].
    #[arg(skip)]
    pub batch_size: Option<usize>,
    /// `capture.batch_timeout` (file only), see [`CaptureConfig::batch_timeout`].
    #[arg(skip)]
    pub batch_timeout: Option<String>,
    /// `capture.poll_interval` (file only), see [`CaptureConfig::poll_interval`].
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
    /// `capture.publication` (file only), see [`CaptureConfig::publication`].
    #[arg(skip)]
    pub publication: Option<String>,
}

/// The capture settings in effect.
#[derive(Debug, Clone)]
pub struct CaptureConfig {
    /// Where changes come from.
    pub mode: CaptureMode,
    /// At most this many changes go into one outbox transaction (in
    /// trigger mode up to 999 more: a statement capture row is never split).
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

impl Default for CaptureConfig {
    fn default() -> Self {
        CaptureConfig {
            mode: CaptureMode::Replication,
            batch_size: 1000,
            batch_timeout: Duration::from_millis(20),
            poll_interval: Duration::from_secs(1),
            slot: "walhook".into(),
            publication: "walhook".into(),
        }
    }
}

impl CaptureConfig {
    /// Takes the values `file` gives, checked; the others stay.
    pub(super) fn apply(&mut self, file: FileCapture) -> Result<(), ConfigError> {
        if let Some(mode) = file.mode {
            self.mode = mode.parse().map_err(|e| invalid("capture.mode", e))?;
        }
        if let Some(n) = file.batch_size {
            if n == 0 {
                return Err(invalid("capture.batch_size", "must be at least 1"));
            }
            self.batch_size = n;
        }
        set_duration(
            &mut self.batch_timeout,
            file.batch_timeout,
            "capture.batch_timeout",
        )?;
        set_duration(
            &mut self.poll_interval,
            file.poll_interval,
            "capture.poll_interval",
        )?;
        if let Some(slot) = file.slot {
            self.slot = valid_identifier(&slot, "capture.slot")?;
        }
        if let Some(publication) = file.publication {
            self.publication = valid_identifier(&publication, "capture.publication")?;
        }
        Ok(())
    }
}
