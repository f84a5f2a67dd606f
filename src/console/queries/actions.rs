//! What the console's buttons do: each one call of the SQL interface.

use chrono::{DateTime, Utc};
use tokio_postgres::Client;

/// What the console's buttons do, each one SQL interface call.
#[derive(Debug, Clone)]
pub enum Action {
    Pause(i64),
    Resume(i64),
    Unsubscribe(i64),
    Ping(i64),
    Redeliver(i64),
    RedeliverDead(i64),
    Replay {
        subscription_id: i64,
        since: DateTime<Utc>,
    },
    /// `walhook.backfill(table, subscription_id)`.
    Backfill {
        table: String,
        subscription_id: Option<i64>,
    },
    CancelBackfill(i64),
}

impl Action {
    /// Runs the action; returns a short account of what it did.
    pub async fn run(&self, client: &Client) -> Result<String, tokio_postgres::Error> {
        Ok(match self {
            Action::Pause(id) => {
                client.execute("SELECT walhook.pause($1)", &[id]).await?;
                format!("Subscription {id} paused.")
            }
            Action::Resume(id) => {
                client.execute("SELECT walhook.resume($1)", &[id]).await?;
                format!("Subscription {id} resumed.")
            }
            Action::Unsubscribe(id) => {
                client
                    .execute("SELECT walhook.unsubscribe($1)", &[id])
                    .await?;
                format!("Subscription {id} removed.")
            }
            Action::Ping(id) => {
                let event: String = client
                    .query_one("SELECT walhook.ping($1)", &[id])
                    .await?
                    .get(0);
                format!("Test event {event} queued for subscription {id}.")
            }
            Action::Redeliver(id) => {
                client
                    .execute("SELECT walhook.redeliver($1)", &[id])
                    .await?;
                format!("Delivery {id} queued again.")
            }
            Action::RedeliverDead(id) => {
                let n: i64 = client
                    .query_one(
                        "SELECT count(*) FROM (SELECT walhook.redeliver(d.id) FROM walhook.deliveries d
                         WHERE d.subscription_id = $1 AND d.phase = 'dead') AS queued",
                        &[id],
                    )
                    .await?
                    .get(0);
                format!("{n} dead deliveries of subscription {id} queued again.")
            }
            Action::Replay {
                subscription_id,
                since,
            } => {
                let n: i64 = client
                    .query_one(
                        "SELECT walhook.replay($1, since => $2)",
                        &[subscription_id, since],
                    )
                    .await?
                    .get(0);
                format!("Replaying {n} events to subscription {subscription_id}.")
            }
            Action::Backfill {
                table,
                subscription_id,
            } => {
                let id: i64 = client
                    .query_one(
                        "SELECT walhook.backfill($1, subscription_id => $2)",
                        &[table, subscription_id],
                    )
                    .await?
                    .get(0);
                let to = subscription_id.map_or_else(
                    || "every matching subscription".to_owned(),
                    |s| format!("subscription {s}"),
                );
                format!("Backfill {id} of {table} to {to} started.")
            }
            Action::CancelBackfill(id) => {
                client
                    .execute("SELECT walhook.cancel_backfill($1)", &[id])
                    .await?;
                format!("Backfill {id} cancelled.")
            }
        })
    }
}
