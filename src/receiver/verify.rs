//! Checking a request's signatures as a receiver does: the Standard
//! Webhooks `webhook-signature` with the library of the specification
//! (which also refuses timestamps more than five minutes off), and
//! GitHub's `x-hub-signature-256`, the HMAC of the body keyed by the
//! secret string.

use axum::http::HeaderMap;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use thiserror::Error;

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

/// One secret, prepared once for checking many requests.
pub struct Verifier {
    secret: String,
    standard: Result<standardwebhooks::Webhook, VerifyError>,
}

impl Verifier {
    /// A `whsec_<base64>` secret keys the Standard Webhooks signature with
    /// its decoded bytes, any other secret byte for byte (as walhook signs).
    pub fn new(secret: impl Into<String>) -> Verifier {
        let secret = secret.into();
        let standard = if secret.starts_with("whsec_") {
            standardwebhooks::Webhook::new(&secret)
        } else {
            standardwebhooks::Webhook::from_bytes(secret.as_bytes().to_vec())
        }
        .map_err(|e| VerifyError::Secret(e.to_string()));
        Verifier { secret, standard }
    }

    /// Both signatures of one request: `Ok` only when each holds.
    pub fn verify(&self, headers: &HeaderMap, body: &[u8]) -> Result<(), VerifyError> {
        self.verify_standard(headers, body)?;
        let header = headers
            .get("x-hub-signature-256")
            .ok_or(VerifyError::HubMissing)?;
        verify_hub_signature(&self.secret, header.as_bytes(), body)
    }

    /// The Standard Webhooks signature alone (`webhook-id`,
    /// `webhook-timestamp`, `webhook-signature`); one matching signature
    /// among several (a rotation) is enough.
    pub fn verify_standard(&self, headers: &HeaderMap, body: &[u8]) -> Result<(), VerifyError> {
        let webhook = self.standard.as_ref().map_err(Clone::clone)?;
        webhook
            .verify(body, headers)
            .map_err(|e| VerifyError::Standard(e.to_string()))
    }
}

/// Checks both signatures of one request against `secret`; see
/// [`Verifier::verify`].
///
/// ```
/// use axum::http::{HeaderMap, HeaderValue};
/// use walhook::deliver::sign::{hub_signature, webhook_signature_header, Secret};
/// use walhook::receiver::{verify_request, VerifyError};
///
/// let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
/// let body = br#"{"type":"orders.insert"}"#;
/// let now = chrono::Utc::now().timestamp();
/// let signing = Secret::new(secret);
/// let mut headers = HeaderMap::new();
/// let mut set = |name: &'static str, value: String| {
///     headers.insert(name, HeaderValue::from_str(&value).unwrap());
/// };
/// set("webhook-id", "evt_1".into());
/// set("webhook-timestamp", now.to_string());
/// set("webhook-signature", webhook_signature_header(&[&signing], "evt_1", now, body));
/// set("x-hub-signature-256", hub_signature(&signing, body));
///
/// assert_eq!(verify_request(secret, &headers, body), Ok(()));
/// assert!(matches!(
///     verify_request(secret, &headers, b"{}"),
///     Err(VerifyError::Standard(_))
/// ));
/// ```
pub fn verify_request(secret: &str, headers: &HeaderMap, body: &[u8]) -> Result<(), VerifyError> {
    Verifier::new(secret).verify(headers, body)
}

/// Checks only the Standard Webhooks signature against `secret`; see
/// [`Verifier::verify_standard`].
pub fn verify_standard(secret: &str, headers: &HeaderMap, body: &[u8]) -> Result<(), VerifyError> {
    Verifier::new(secret).verify_standard(headers, body)
}

/// `header` is `sha256=<hex HMAC-SHA256 of body>`, keyed by `secret`
/// exactly as registered; compared in constant time.
///
/// ```
/// use walhook::receiver::{verify_hub_signature, VerifyError};
///
/// // GitHub's documented example.
/// let header = b"sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
/// let secret = "It's a Secret to Everybody";
/// assert_eq!(verify_hub_signature(secret, header, b"Hello, World!"), Ok(()));
/// assert_eq!(
///     verify_hub_signature(secret, header, b"Hello, World?"),
///     Err(VerifyError::HubMismatch)
/// );
/// ```
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
        assert_eq!(verify_standard(secret, &no_hub, body.as_bytes()), Ok(()));
        let other = signed("whsec_dGhlIG90aGVyIHNlY3JldA==", body);
        assert!(verify_request(secret, &other, body.as_bytes()).is_err());
    }

    #[test]
    fn an_unusable_secret_is_named_not_a_mismatch() {
        let verifier = Verifier::new("whsec_!!!not base64");
        assert!(matches!(
            verifier.verify_standard(&HeaderMap::new(), b""),
            Err(VerifyError::Secret(_))
        ));
    }
}
