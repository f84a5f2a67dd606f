//! A small pool of ordinary connections for the relay's occasional reads:
//! `/healthz`, the gauges. They need no prepared statements nor ordering of
//! their own, so they share a couple of connections instead of opening one
//! per request. Connections come from [`crate::db`] (its settings, its
//! sockets); one that closed is never handed out again.

use std::time::Duration;

use deadpool::managed::{self, Metrics, RecycleError, RecycleResult};
use deadpool::Runtime;
use tokio_postgres::Client;

use crate::db::{self, DbError, Settings};

/// Opens and checks the pool's connections.
#[derive(Debug)]
pub struct Manager {
    settings: Settings,
    role: String,
}

impl managed::Manager for Manager {
    type Type = Client;
    type Error = DbError;

    async fn create(&self) -> Result<Client, DbError> {
        db::connect_with(&self.settings, &self.role).await
    }

    async fn recycle(&self, client: &mut Client, _: &Metrics) -> RecycleResult<DbError> {
        if client.is_closed() {
            return Err(RecycleError::message("the connection closed"));
        }
        Ok(())
    }
}

pub type Pool = managed::Pool<Manager>;

/// A pool of at most `max_size` connections named `walhook <role>`; the
/// URL is parsed here, once.
pub fn pool(url: &str, role: &str, max_size: usize) -> Result<Pool, DbError> {
    pool_with(Settings::for_role(url, role)?, role, max_size)
}

/// A pool of at most `max_size` connections opened with `settings`.
pub fn pool_with(settings: Settings, role: &str, max_size: usize) -> Result<Pool, DbError> {
    let wait = settings.connect_timeout + Duration::from_secs(1);
    Pool::builder(Manager {
        settings,
        role: role.to_owned(),
    })
    .max_size(max_size)
    .runtime(Runtime::Tokio1)
    .wait_timeout(Some(wait))
    .create_timeout(Some(wait))
    .build()
    .map_err(|e| DbError::Tls(format!("cannot build the connection pool: {e}")))
}
