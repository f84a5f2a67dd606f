//! The delivery engine's scenario: a migrated database, a receiver, a
//! subscription of it to every event with a known secret, events written
//! straight into the outbox, and a `Deliverer` running against it.
//!
//! ```ignore
//! let s = Scenario::answering(|_, _| answer(500)).subscribed(", max_attempts => 2").await;
//! let delivery = s.event("evt_1", "1").await;
//! let running = s.deliver(delivery_config("0s,100ms")).await;
//! s.wait_for_state(delivery, "dead").await;
//! running.stop().await;
//! ```

use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::response::Response;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_postgres::types::{FromSqlOwned, ToSql};
use tokio_postgres::{Client, Row};
use tokio_util::sync::CancellationToken;
use walhook::config::{Config, DeliveryConfig};
use walhook::deliver::{DeliverError, Deliverer};

use super::{wait_for_count, Received, Receiver, ReceiverOptions, TestDb};

/// The secret of the scenario's subscription.
pub const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
/// How long a scenario waits for a delivery to reach a state.
pub const WAIT: Duration = Duration::from_secs(15);

/// Delivery settings for tests: `schedule` as the retry schedule, private
/// targets allowed, short timeouts.
pub fn delivery_config(schedule: &str) -> DeliveryConfig {
    let mut config = Config::default().delivery;
    config.allow_private_targets = true;
    config.retry_schedule = schedule.parse().expect("schedule");
    config.timeout = Duration::from_secs(5);
    config.connect_timeout = Duration::from_secs(2);
    config
}

/// How a scenario's receiver answers and its subscription is made.
#[derive(Default)]
pub struct Setup {
    receiver: ReceiverOptions,
    subscription: String,
}

impl Setup {
    /// Further named arguments of `walhook.subscribe`, e.g.
    /// `", max_attempts => 2"`.
    pub fn subscribed(mut self, options: &str) -> Setup {
        self.subscription = options.to_owned();
        self
    }

    async fn start(self) -> Scenario {
        let db = TestDb::new().await;
        let client = db.client().await;
        let receiver = Receiver::with(self.receiver).await;
        let subscription = subscribe(&client, &receiver.url, &self.subscription).await;
        Scenario {
            db,
            client,
            receiver,
            subscription,
        }
    }
}

/// Awaiting a `Setup` starts the scenario.
impl IntoFuture for Setup {
    type Output = Scenario;
    type IntoFuture = Pin<Box<dyn Future<Output = Scenario> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.start())
    }
}

pub struct Scenario {
    pub db: TestDb,
    pub client: Client,
    pub receiver: Receiver,
    /// The receiver's subscription to every event.
    pub subscription: i64,
}

impl Scenario {
    /// A receiver answering 200, subscribed with no options.
    pub async fn new() -> Scenario {
        Setup::default().start().await
    }

    /// A receiver answering the `n`th request with `respond(request, n)`.
    pub fn answering(
        respond: impl Fn(&Received, usize) -> Response + Send + Sync + 'static,
    ) -> Setup {
        Setup {
            receiver: ReceiverOptions::new().respond(respond),
            ..Setup::default()
        }
    }

    /// A receiver answering 200, subscribed with `options`.
    pub fn subscribed(options: &str) -> Setup {
        Setup::default().subscribed(options)
    }

    /// Another subscription to every event, of `url`, with the secret.
    pub async fn subscribe(&self, url: &str, options: &str) -> i64 {
        subscribe(&self.client, url, options).await
    }

    /// An event for row `row` and its delivery to the scenario's subscription.
    pub async fn event(&self, event_id: &str, row: &str) -> i64 {
        self.event_for(self.subscription, event_id, row).await
    }

    /// An event for row `row` and its delivery to `subscription`.
    pub async fn event_for(&self, subscription: i64, event_id: &str, row: &str) -> i64 {
        self.client
            .execute(
                "INSERT INTO walhook.events (id, type, payload, row_key) VALUES ($1, 'orders.insert', $2::text::json, $3)",
                &[&event_id, &payload(event_id, row), &row],
            )
            .await
            .expect("insert event");
        self.client
            .query_one(
                "INSERT INTO walhook.deliveries (event_id, subscription_id, row_key) VALUES ($1, $2, $3) RETURNING id",
                &[&event_id, &subscription, &row],
            )
            .await
            .expect("insert delivery")
            .get(0)
    }

    /// A `Deliverer` running against the scenario's database.
    pub async fn deliver(&self, config: DeliveryConfig) -> Running {
        let wake = Arc::new(Notify::new());
        let deliverer = Deliverer::new(&self.db.url, config, wake)
            .await
            .expect("deliverer starts");
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(deliverer.run(shutdown.clone()));
        Running { shutdown, handle }
    }

    /// The one row `sql` returns.
    pub async fn row(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Row {
        self.client
            .query_one(sql, params)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// The first column of the one row `sql` returns.
    pub async fn one<T: FromSqlOwned>(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> T {
        self.row(sql, params).await.get(0)
    }

    pub async fn state(&self, delivery: i64) -> String {
        self.one(
            "SELECT state FROM walhook.deliveries WHERE id = $1",
            &[&delivery],
        )
        .await
    }

    /// Waits (at most [`WAIT`]) for the scenario's subscription to be
    /// disabled; 1 when it is, else 0.
    pub async fn wait_for_disabled(&self) -> i64 {
        let query = format!(
            "SELECT count(*) FROM walhook.subscriptions WHERE id = {} AND NOT active",
            self.subscription
        );
        wait_for_count(&self.client, &query, 1, WAIT).await
    }

    /// Waits (at most [`WAIT`]) for `delivery` to be in `state`.
    pub async fn wait_for_state(&self, delivery: i64, state: &str) {
        let query = format!(
            "SELECT count(*) FROM walhook.deliveries WHERE id = {delivery} AND state = '{state}'"
        );
        let got = wait_for_count(&self.client, &query, 1, WAIT).await;
        let actual = self.state(delivery).await;
        assert_eq!(
            got, 1,
            "delivery {delivery} should become {state}, is {actual}"
        );
    }

    /// Waits (at most [`WAIT`]) for `count` deliveries to be delivered.
    pub async fn wait_for_delivered(&self, count: i64) {
        let query = "SELECT count(*) FROM walhook.deliveries WHERE state = 'delivered'";
        assert_eq!(
            wait_for_count(&self.client, query, count, WAIT).await,
            count
        );
    }

    /// The attempts recorded for `delivery`, oldest first.
    pub async fn attempts(&self, delivery: i64) -> Vec<AttemptRow> {
        self.client
            .query(
                "SELECT status, duration_ms, response_body, error FROM walhook.attempts WHERE delivery_id = $1 ORDER BY id",
                &[&delivery],
            )
            .await
            .expect("attempts")
            .iter()
            .map(|row| AttemptRow {
                status: row.get(0),
                duration_ms: row.get(1),
                body: row.get(2),
                error: row.get(3),
            })
            .collect()
    }
}

/// A running `Deliverer`.
pub struct Running {
    shutdown: CancellationToken,
    handle: JoinHandle<Result<(), DeliverError>>,
}

impl Running {
    /// Shuts down; panics unless the deliverer ends cleanly within 20 s.
    pub async fn stop(self) {
        self.shutdown.cancel();
        let result = tokio::time::timeout(Duration::from_secs(20), self.handle)
            .await
            .expect("run returns after shutdown")
            .expect("run does not panic");
        result.expect("run ends cleanly");
    }
}

/// One row of `walhook.attempts`.
pub struct AttemptRow {
    pub status: Option<i32>,
    pub duration_ms: Option<i32>,
    pub body: Option<String>,
    pub error: Option<String>,
}

impl AttemptRow {
    /// The error, or "" when there is none.
    pub fn error_text(&self) -> String {
        self.error.clone().unwrap_or_default()
    }
}

/// A subscription of `url` to every event with [`SECRET`]; `options` are
/// further named arguments of `walhook.subscribe`.
async fn subscribe(client: &Client, url: &str, options: &str) -> i64 {
    let sql = format!("SELECT walhook.subscribe($1, ARRAY['*'], secret => $2 {options})");
    client
        .query_one(&sql, &[&url, &SECRET])
        .await
        .expect("subscribe")
        .get(0)
}

/// The stored payload of event `event_id` for row `row`.
pub fn payload(event_id: &str, row: &str) -> String {
    format!(
        r#"{{"id":"{event_id}","type":"orders.insert","table":"orders","record":{{"id":"{row}"}}}}"#
    )
}

/// `sha256=<hex HMAC-SHA256 of body>`, computed here, independently of
/// walhook's signing.
pub fn hub_signature(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("key");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Panics unless `request`'s `webhook-signature` verifies with `secret`
/// (checked with the Standard Webhooks library).
pub fn verify_standard(secret: &str, request: &Received) {
    standardwebhooks::Webhook::new(secret)
        .expect("secret")
        .verify(&request.body, &request.headers)
        .expect("webhook-signature verifies");
}
