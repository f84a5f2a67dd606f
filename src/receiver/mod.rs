//! A webhook receiver for trying walhook out and for measuring it: an HTTP
//! server that checks each request's signatures against the subscription
//! secret(s), records what it got and answers as it is told. `walhook
//! receive`, `walhook demo`, the integration tests and the pipeline
//! benchmark all use this one.
//!
//! Every path and method is accepted (a caller that wants only `POST
//! /hooks` says so in its [`Options::respond`]); connections are kept
//! alive, so a client reusing them measures walhook, not connection setup.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! use std::time::Duration;
//! use walhook::receiver::{Options, Receiver};
//!
//! // The first request fails with 503, every later one gets 200.
//! let receiver = Receiver::start(Options::new().statuses([503])).await?;
//! let client = reqwest::Client::new();
//! for _ in 0..2 {
//!     let _ = client.post(receiver.url()).body("{}").send().await;
//! }
//! let got = receiver.wait_for(2, Duration::from_secs(5)).await;
//! assert_eq!(got.len(), 2);
//! assert_eq!(got[0].uri.path(), "/hooks");
//! assert_eq!(got[1].verdict, None, "no secret given, nothing checked");
//! receiver.stop().await
//! # }
//! ```

mod verify;

pub use verify::{verify_hub_signature, verify_request, verify_standard, Verifier, VerifyError};

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: Method,
    /// The request target as sent: path and query.
    pub uri: Uri,
    pub headers: HeaderMap,
    /// The body exactly as received (what the signatures cover).
    pub body: Bytes,
    /// When it arrived, before it was answered.
    pub at: Instant,
    /// The signatures' check: `None` when it was not checked (no secret
    /// given, or the request was not in the sample, see
    /// [`Options::verify_one_in`]); otherwise `Ok` when one of the secrets
    /// verifies both signatures, else the first secret's reason.
    pub verdict: Option<Result<(), VerifyError>>,
}

impl Received {
    /// The header's value, when present and text.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }

    /// The body as JSON: `Value::Null` when it is not JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// Whether the signatures were checked and hold.
    pub fn verified(&self) -> bool {
        matches!(self.verdict, Some(Ok(())))
    }

    /// `webhook-id`: the event's id, or a batch's (empty when missing).
    pub fn webhook_id(&self) -> String {
        self.header("webhook-id").unwrap_or_default()
    }

    /// The event type: the body's `type`, else the `walhook-event` header
    /// (a batch's body is an array), else empty.
    pub fn event_type(&self) -> String {
        self.json()
            .get("type")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .or_else(|| self.header("walhook-event"))
            .unwrap_or_default()
    }

    /// `walhook-attempt`: 1 for the first try (also when missing).
    pub fn attempt(&self) -> u32 {
        self.header("walhook-attempt")
            .and_then(|a| a.parse().ok())
            .unwrap_or(1)
    }
}

/// How the receiver answers the `n`th request (0-based, in arrival order).
/// It runs inside the server's task: a responder that sleeps holds that
/// request (and its connection) for as long.
pub type Responder = Arc<dyn Fn(&Received, usize) -> Response + Send + Sync>;

/// Told of every request as it arrives, before it is answered.
pub type Observer = Arc<dyn Fn(&Received) + Send + Sync>;

/// How a receiver checks, records and answers requests. [`Options::new`]
/// checks nothing, keeps every request and answers 200.
#[derive(Clone)]
pub struct Options {
    secrets: Vec<String>,
    respond: Responder,
    observe: Option<Observer>,
    verify_one_in: u64,
    keep: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options::new()
    }
}

impl Options {
    /// Checks nothing, keeps every request, answers 200.
    pub fn new() -> Options {
        Options {
            secrets: Vec::new(),
            respond: Arc::new(|_, _| StatusCode::OK.into_response()),
            observe: None,
            verify_one_in: 1,
            keep: true,
        }
    }

    /// Checks signatures with `secret` too (one per secret of a rotation).
    pub fn secret(mut self, secret: impl Into<String>) -> Options {
        self.secrets.push(secret.into());
        self
    }

    /// Answers with `respond(request, n)` instead of 200.
    pub fn respond(
        self,
        respond: impl Fn(&Received, usize) -> Response + Send + Sync + 'static,
    ) -> Options {
        self.responder(Arc::new(respond))
    }

    /// [`Options::respond`] with a shared responder.
    pub fn responder(mut self, respond: Responder) -> Options {
        self.respond = respond;
        self
    }

    /// Answers the `n`th request with the `n`th status of `statuses`, and
    /// every request after the list with 200: failures to inject first.
    /// A number that is no HTTP status (outside 100..=999) answers 500.
    pub fn statuses(self, statuses: impl IntoIterator<Item = u16>) -> Options {
        let statuses: Vec<StatusCode> = statuses
            .into_iter()
            .map(|s| StatusCode::from_u16(s).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
            .collect();
        self.respond(move |_, nth| {
            statuses
                .get(nth)
                .copied()
                .unwrap_or(StatusCode::OK)
                .into_response()
        })
    }

    /// Calls `observe` with every request, before it is answered.
    pub fn observe(mut self, observe: impl Fn(&Received) + Send + Sync + 'static) -> Options {
        self.observe = Some(Arc::new(observe));
        self
    }

    /// Checks the signatures of one request in `n` only (the first, then
    /// every `n`th): a receiver measuring walhook must stay faster than
    /// what it measures. 0 counts as 1.
    pub fn verify_one_in(mut self, n: u64) -> Options {
        self.verify_one_in = n.max(1);
        self
    }

    /// Keeps no request in memory ([`Receiver::received`] stays empty):
    /// for an observer that keeps what it needs, over millions of requests.
    pub fn forget(mut self) -> Options {
        self.keep = false;
        self
    }
}

/// The state the request handler shares with the [`Receiver`].
struct Shared {
    verifiers: Vec<Verifier>,
    respond: Responder,
    observe: Option<Observer>,
    verify_one_in: u64,
    keep: bool,
    /// Requests that reached the sampling decision, for `verify_one_in`.
    sampled: AtomicU64,
    count: AtomicUsize,
    kept: Mutex<Vec<Received>>,
    arrived: Notify,
}

impl Shared {
    fn verdict(&self, headers: &HeaderMap, body: &[u8]) -> Option<Result<(), VerifyError>> {
        if self.verifiers.is_empty()
            || self.sampled.fetch_add(1, Ordering::Relaxed) % self.verify_one_in != 0
        {
            return None;
        }
        let mut first_error = None;
        for verifier in &self.verifiers {
            match verifier.verify(headers, body) {
                Ok(()) => return Some(Ok(())),
                Err(error) => {
                    first_error.get_or_insert(error);
                }
            }
        }
        first_error.map(Err)
    }

    /// Counts (and keeps) the request; its index in arrival order.
    fn record(&self, request: &Received) -> usize {
        if !self.keep {
            return self.count.fetch_add(1, Ordering::SeqCst);
        }
        // The index and the position in the list are taken together, so
        // `received()[n]` is the request the responder saw as `n`.
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        kept.push(request.clone());
        self.count.fetch_add(1, Ordering::SeqCst)
    }
}

/// A receiver bound to its address but not serving yet: the URL is known
/// before the secret (a subscription generates its secret once it has the
/// URL).
pub struct Bound {
    listener: tokio::net::TcpListener,
    addr: SocketAddr,
}

impl Bound {
    /// The address bound, with the port chosen when 0 was asked for.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<address>/hooks`.
    pub fn url(&self) -> String {
        format!("http://{}/hooks", self.addr)
    }

    /// Starts serving on the runtime of the caller (it must run inside
    /// one), until [`Receiver::stop`] or the receiver is dropped.
    pub fn serve(self, options: Options) -> Receiver {
        let shared = Arc::new(Shared {
            verifiers: options.secrets.into_iter().map(Verifier::new).collect(),
            respond: options.respond,
            observe: options.observe,
            verify_one_in: options.verify_one_in,
            keep: options.keep,
            sampled: AtomicU64::new(0),
            count: AtomicUsize::new(0),
            kept: Mutex::new(Vec::new()),
            arrived: Notify::new(),
        });
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(shared.clone());
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            axum::serve(self.listener, app)
                .with_graceful_shutdown(async move { stopped.cancelled().await })
                .await
        });
        Receiver {
            addr: self.addr,
            shared,
            stop,
            task: Some(task),
        }
    }
}

/// A running receiver; it stops when dropped.
pub struct Receiver {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: CancellationToken,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Receiver {
    /// Binds `addr` (port 0 for a free one), e.g. `0.0.0.0:8080` for a
    /// receiver in a container.
    pub async fn bind(addr: SocketAddr) -> std::io::Result<Bound> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        Ok(Bound { listener, addr })
    }

    /// A receiver on a free port of 127.0.0.1, serving with `options`.
    pub async fn start(options: Options) -> std::io::Result<Receiver> {
        let bound = Receiver::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        Ok(bound.serve(options))
    }

    /// The address it serves on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<address>/hooks`.
    pub fn url(&self) -> String {
        format!("http://{}/hooks", self.addr)
    }

    /// How many requests arrived so far.
    pub fn count(&self) -> usize {
        self.shared.count.load(Ordering::SeqCst)
    }

    /// Every request kept so far, in arrival order (none after
    /// [`Options::forget`]).
    pub fn received(&self) -> Vec<Received> {
        self.shared
            .kept
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Waits until at least `count` requests arrived, or `timeout` passed;
    /// then what [`Receiver::received`] returns.
    pub async fn wait_for(&self, count: usize, timeout: Duration) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let arrived = self.shared.arrived.notified();
            tokio::pin!(arrived);
            // Registered before the count is read, so an arrival in
            // between still wakes this wait.
            arrived.as_mut().enable();
            if self.count() >= count {
                break;
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                break;
            }
        }
        self.received()
    }

    /// Stops serving: requests being answered are finished first.
    pub async fn stop(mut self) -> std::io::Result<()> {
        self.stop.cancel();
        match self.task.take() {
            Some(task) => task.await.map_err(std::io::Error::other)?,
            None => Ok(()),
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let at = Instant::now();
    let verdict = shared.verdict(&headers, &body);
    let request = Received {
        method,
        uri,
        headers,
        body,
        at,
        verdict,
    };
    let nth = shared.record(&request);
    shared.arrived.notify_waiters();
    if let Some(observe) = &shared.observe {
        observe(&request);
    }
    (shared.respond)(&request, nth)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(headers: HeaderMap, body: &'static [u8]) -> Received {
        Received {
            method: Method::POST,
            uri: Uri::from_static("/hooks"),
            headers,
            body: Bytes::from_static(body),
            at: Instant::now(),
            verdict: None,
        }
    }

    #[test]
    fn accessors_read_walhooks_headers_and_body() {
        let mut headers = HeaderMap::new();
        headers.insert("webhook-id", "evt_1".parse().expect("header"));
        headers.insert("walhook-attempt", "3".parse().expect("header"));
        headers.insert("walhook-event", "batch".parse().expect("header"));
        let single = request(headers.clone(), br#"{"type":"orders.insert"}"#);
        assert_eq!(single.webhook_id(), "evt_1");
        assert_eq!(single.attempt(), 3);
        assert_eq!(single.event_type(), "orders.insert");
        let batch = request(headers, b"[]");
        assert_eq!(batch.event_type(), "batch");
        let bare = request(HeaderMap::new(), b"not json");
        assert_eq!(bare.json(), Value::Null);
        assert_eq!((bare.attempt(), bare.webhook_id()), (1, String::new()));
        assert!(!bare.verified());
    }

    #[test]
    fn one_request_in_n_is_checked() {
        let options = Options::new().secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        let shared = Shared {
            verifiers: options.secrets.into_iter().map(Verifier::new).collect(),
            respond: options.respond,
            observe: None,
            verify_one_in: 3,
            keep: true,
            sampled: AtomicU64::new(0),
            count: AtomicUsize::new(0),
            kept: Mutex::new(Vec::new()),
            arrived: Notify::new(),
        };
        let checked: Vec<bool> = (0..6)
            .map(|_| shared.verdict(&HeaderMap::new(), b"").is_some())
            .collect();
        assert_eq!(checked, [true, false, false, true, false, false]);
    }
}
