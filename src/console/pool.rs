//! The console's own small connection pool. Its size caps what the console
//! can take from the database, and every statement on it is cut off by a
//! short timeout, so a busy page can neither starve the relay of
//! connections nor hold one for long. Its connections are opened like
//! every other of walhook's ([`crate::pool`], [`crate::db`]): keepalives,
//! connect timeout, and a watchdog on unanswered requests.

use std::time::Duration;

use super::ConsoleError;
use crate::db::Settings;
use crate::pool::Pool;

/// Connections the console holds at most.
pub const POOL_SIZE: usize = 4;

/// The longest any console statement may run.
pub const STATEMENT_TIMEOUT: Duration = Duration::from_secs(5);

/// A pool of connections named `walhook console`, with the statement
/// timeout set on each; connections are opened on first use.
pub fn build(url: &str) -> Result<Pool, ConsoleError> {
    let settings = Settings::with_statement_timeout(url, "console", STATEMENT_TIMEOUT)?;
    crate::pool::pool_with(settings, "console", POOL_SIZE)
        .map_err(|e| ConsoleError::Pool(e.to_string()))
}
