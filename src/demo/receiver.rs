//! The demo's built-in receiver (also `walhook receive`): an HTTP server
//! that checks
//! each request's Standard Webhooks signature and its
//! `x-hub-signature-256`, answers 200 when both hold (401 otherwise), and
//! hands every request on for printing.

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use thiserror::Error;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Why a request's signatures did not check out.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum VerifyError {
    #[error("the subscription secret is not usable: {0}")]
    Secret(String),
    #[error("Standard Webhooks signature: {0}")]
    Standard(String),
    #[error("x-hub-signature-256 is missing")]
    HubMissing,
    #[error("x-hub-signature-256 is not sha256=<hex>")]
    HubMalformed,
    #[error("x-hub-signature-256 does not match the body")]
    HubMismatch,
}

/// Checks both signatures of one request, as a receiver would: the
/// Standard Webhooks one over `id.timestamp.body` (with the library of the
/// specification, which also refuses timestamps more than five minutes
/// off) and the GitHub-style HMAC of the body keyed by the secret string.
pub fn verify_request(secret: &str, headers: &HeaderMap, body: &[u8]) -> Result<(), VerifyError> {
    let webhook = if secret.starts_with("whsec_") {
        standardwebhooks::Webhook::new(secret).map_err(|e| VerifyError::Secret(e.to_string()))?
    } else {
        standardwebhooks::Webhook::from_bytes(secret.as_bytes().to_vec())
            .map_err(|e| VerifyError::Secret(e.to_string()))?
    };
    webhook
        .verify(body, headers)
        .map_err(|e| VerifyError::Standard(e.to_string()))?;
    let header = headers
        .get("x-hub-signature-256")
        .ok_or(VerifyError::HubMissing)?;
    verify_hub_signature(secret, header.as_bytes(), body)
}

/// `sha256=<hex HMAC-SHA256 of body>`, keyed by `secret` exactly as
/// registered; compared in constant time.
pub fn verify_hub_signature(secret: &str, header: &[u8], body: &[u8]) -> Result<(), VerifyError> {
    let hex_part = header
        .strip_prefix(b"sha256=")
        .ok_or(VerifyError::HubMalformed)?;
    let expected = hex::decode(hex_part).map_err(|_| VerifyError::HubMalformed)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
        .map_err(|e| VerifyError::Secret(e.to_string()))?;
    mac.update(body);
    mac.verify_slice(&expected)
        .map_err(|_| VerifyError::HubMismatch)
}

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub event_id: String,
    pub event_type: String,
    /// `walhook-attempt`: 1 for the first try.
    pub attempt: u32,
    pub verdict: Result<(), VerifyError>,
    /// The body as JSON (`Null` when it is not JSON).
    pub event: Value,
}

impl Received {
    pub fn verified(&self) -> bool {
        self.verdict.is_ok()
    }
}

#[derive(Clone)]
struct ReceiverState {
    secret: String,
    sink: mpsc::UnboundedSender<Received>,
}

/// The receiver, bound but not serving until [`Receiver::serve`] knows the
/// secret (the subscription that generates it needs the URL first).
pub struct Receiver {
    listener: tokio::net::TcpListener,
    pub addr: SocketAddr,
}

impl Receiver {
    pub async fn bind() -> std::io::Result<Receiver> {
        Receiver::bind_to(SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Binds `addr`, e.g. `0.0.0.0:8080` for a receiver in a container.
    pub async fn bind_to(addr: SocketAddr) -> std::io::Result<Receiver> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        Ok(Receiver { listener, addr })
    }

    pub fn url(&self) -> String {
        format!("http://{}/hooks", self.addr)
    }

    /// Serves until `stop` fires; every request goes to `sink`.
    pub fn serve(
        self,
        secret: String,
        sink: mpsc::UnboundedSender<Received>,
        stop: CancellationToken,
    ) -> tokio::task::JoinHandle<std::io::Result<()>> {
        let app = axum::Router::new()
            .route("/hooks", axum::routing::post(handle))
            .with_state(ReceiverState { secret, sink });
        tokio::spawn(async move {
            axum::serve(self.listener, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await
        })
    }
}

async fn handle(State(state): State<ReceiverState>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let verdict = verify_request(&state.secret, &headers, &body);
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let event: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let status = if verdict.is_ok() {
        StatusCode::OK
    } else {
        StatusCode::UNAUTHORIZED
    };
    let received = Received {
        event_id: header("webhook-id"),
        event_type: event
            .get("type")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| header("walhook-event")),
        attempt: header("walhook-attempt").parse().unwrap_or(1),
        verdict,
        event,
    };
    let _ = state.sink.send(received);
    status
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, String)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            if let Ok(value) = HeaderValue::from_str(value) {
                map.insert(*name, value);
            }
        }
        map
    }

    #[test]
    fn github_documented_example_verifies() {
        // docs.github.com, "Validating webhook deliveries".
        let header = b"sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert_eq!(
            verify_hub_signature("It's a Secret to Everybody", header, b"Hello, World!"),
            Ok(())
        );
        assert_eq!(
            verify_hub_signature("It's a Secret to Everybody", header, b"Hello, World?"),
            Err(VerifyError::HubMismatch)
        );
        assert_eq!(
            verify_hub_signature("x", b"sha1=00", b""),
            Err(VerifyError::HubMalformed)
        );
    }

    #[test]
    fn standard_webhooks_specification_example_signs_as_published() {
        // The example of the Standard Webhooks specification.
        let webhook = standardwebhooks::Webhook::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
            .map_err(|e| e.to_string());
        let signature = webhook.and_then(|w| {
            w.sign(
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1614265330,
                br#"{"test": 2432232314}"#,
            )
            .map_err(|e| e.to_string())
        });
        assert_eq!(
            signature.as_deref(),
            Ok("v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=")
        );
    }

    fn signed(secret: &str, body: &str) -> HeaderMap {
        let timestamp = chrono::Utc::now().timestamp();
        let webhook = standardwebhooks::Webhook::new(secret).map_err(|e| e.to_string());
        let signature = webhook.and_then(|w| {
            w.sign("evt_1", timestamp, body.as_bytes())
                .map_err(|e| e.to_string())
        });
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).map_err(|e| e.to_string());
        if let Ok(mac) = &mut mac {
            mac.update(body.as_bytes());
        }
        let hub = mac
            .map(|m| hex::encode(m.finalize().into_bytes()))
            .unwrap_or_default();
        headers(&[
            ("webhook-id", "evt_1".into()),
            ("webhook-timestamp", timestamp.to_string()),
            (
                "webhook-signature",
                format!("v1,bogus= {}", signature.unwrap_or_default()),
            ),
            ("x-hub-signature-256", format!("sha256={hub}")),
        ])
    }

    #[test]
    fn both_signatures_are_checked() {
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let body = r#"{"type":"orders.insert"}"#;
        let good = signed(secret, body);
        assert_eq!(verify_request(secret, &good, body.as_bytes()), Ok(()));
        assert!(matches!(
            verify_request(secret, &good, b"{}"),
            Err(VerifyError::Standard(_))
        ));
        let mut no_hub = good.clone();
        no_hub.remove("x-hub-signature-256");
        assert_eq!(
            verify_request(secret, &no_hub, body.as_bytes()),
            Err(VerifyError::HubMissing)
        );
        let other = signed("whsec_dGhlIG90aGVyIHNlY3JldA==", body);
        assert!(verify_request(secret, &other, body.as_bytes()).is_err());
    }
}
