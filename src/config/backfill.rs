//! The `[backfill]` section: how fast a backfill reads.

use serde::Deserialize;

use super::values::rows_per_second;
use super::ConfigError;

/// The `[backfill]` section as written.
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

/// The backfill settings in effect.
#[derive(Debug, Clone, Default)]
pub struct BackfillConfig {
    /// Rows a backfill reads per second at most; `None` (0 in the file):
    /// as fast as delivery takes them.
    pub max_rows_per_second: Option<f64>,
}

impl BackfillConfig {
    /// Takes the values `file` gives, checked; the others stay.
    pub(super) fn apply(&mut self, file: FileBackfill) -> Result<(), ConfigError> {
        if let Some(rate) = file.max_rows_per_second {
            self.max_rows_per_second = rows_per_second(rate, "backfill.max_rows_per_second")?;
        }
        Ok(())
    }
}
