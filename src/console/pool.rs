//! The console's own small connection pool. Its size caps what the console
//! can take from the database, and every statement on it is cut off by a
//! timeout, so a busy page can neither starve the relay of connections nor
//! hold one for long.

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;

use super::ConsoleError;
use crate::db::{parse_url_tls, SslMode};

/// Connections the console holds at most.
pub const POOL_SIZE: usize = 4;

/// The longest any console statement may run.
pub const STATEMENT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a request waits for a free connection before it gives up.
const WAIT_TIMEOUT: Duration = Duration::from_secs(5);

/// A pool of connections named `walhook console`, with the statement
/// timeout set on each; connections are opened on first use.
pub fn build(url: &str) -> Result<Pool, ConsoleError> {
    let (mut config, tls) = parse_url_tls(url)?;
    config.application_name("walhook console");
    let timeout = format!(
        "-c statement_timeout={} -c jit=off",
        STATEMENT_TIMEOUT.as_millis()
    );
    let options = match config.get_options() {
        Some(given) if !given.trim().is_empty() => format!("{given} {timeout}"),
        _ => timeout,
    };
    config.options(options);
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(5));
    }
    let manager_config = ManagerConfig {
        recycling_method: RecyclingMethod::Fast,
    };
    let manager = if tls.mode == SslMode::Disable {
        Manager::from_config(config, NoTls, manager_config)
    } else {
        let connector = tokio_postgres_rustls::MakeRustlsConnect::new(tls.client_config()?);
        Manager::from_config(config, connector, manager_config)
    };
    Pool::builder(manager)
        .max_size(POOL_SIZE)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(WAIT_TIMEOUT))
        .create_timeout(Some(Duration::from_secs(5)))
        .build()
        .map_err(|e| ConsoleError::Pool(e.to_string()))
}
