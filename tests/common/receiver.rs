//! Receivers for tests: walhook's own receiver (`walhook::receiver`) on
//! 127.0.0.1, keeping every request, answering as each test tells it.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::ops::Deref;
use std::time::{Duration, Instant};

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

pub use walhook::receiver::{Options as ReceiverOptions, Received, Responder};

/// A running receiver; the methods of `walhook::receiver::Receiver`
/// (`received`, `wait_for`, `count`) work on it too.
pub struct Receiver {
    /// `http://127.0.0.1:<port>/hooks`.
    pub url: String,
    pub addr: SocketAddr,
    inner: walhook::receiver::Receiver,
}

impl Receiver {
    /// Answers every request with 200.
    pub async fn ok() -> Receiver {
        Receiver::with(ReceiverOptions::new()).await
    }

    /// Answers the `n`th request (0-based) with `responder(request, n)`.
    pub async fn start(responder: Responder) -> Receiver {
        Receiver::with(ReceiverOptions::new().responder(responder)).await
    }

    pub async fn with(options: ReceiverOptions) -> Receiver {
        let inner = walhook::receiver::Receiver::start(options)
            .await
            .expect("bind receiver");
        Receiver {
            url: inner.url(),
            addr: inner.addr(),
            inner,
        }
    }

    /// The distinct `record.id`s received, once there are `count` of them
    /// or `timeout` has passed.
    pub async fn wait_for_rows(&self, count: usize, timeout: Duration) -> HashSet<i64> {
        let deadline = Instant::now() + timeout;
        loop {
            let rows: HashSet<i64> = self
                .received()
                .iter()
                .filter_map(|r| r.json()["record"]["id"].as_i64())
                .collect();
            if rows.len() >= count || Instant::now() >= deadline {
                return rows;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The `webhook-id` of every request, in arrival order.
    pub fn webhook_ids(&self) -> Vec<String> {
        self.received()
            .iter()
            .filter_map(|r| r.header("webhook-id"))
            .collect()
    }

    /// The distinct `webhook-id`s received.
    pub fn event_ids(&self) -> HashSet<String> {
        self.received()
            .iter()
            .filter_map(|r| r.header("webhook-id"))
            .collect()
    }
}

impl Deref for Receiver {
    type Target = walhook::receiver::Receiver;

    fn deref(&self) -> &Self::Target {
        &self.inner
    }
}

/// An empty response with `status`.
pub fn answer(status: u16) -> Response {
    StatusCode::from_u16(status)
        .expect("status")
        .into_response()
}

/// An empty response with `status` and one header.
pub fn answer_with(status: u16, header: &'static str, value: &str) -> Response {
    let mut response = answer(status);
    let value = HeaderValue::from_str(value).expect("header value");
    response.headers_mut().insert(header, value);
    response
}
