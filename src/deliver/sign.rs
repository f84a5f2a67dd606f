//! Request signatures: Standard Webhooks (`webhook-signature`) and GitHub's
//! `x-hub-signature-256`, so receivers written for either verify walhook's
//! requests with the library they already use.
//!
//! Secrets are held in [`Secret`], whose `Debug` never shows the value, so a
//! stray `{:?}` in a log line cannot leak one.

use std::fmt;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

const STANDARD_PREFIX: &str = "whsec_";

/// A subscription secret exactly as registered.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The key of the Standard Webhooks signature: a `whsec_<base64>` secret
    /// stands for its decoded bytes; anything else (or a `whsec_` secret
    /// whose rest is not base64) is used byte for byte.
    fn standard_key(&self) -> Vec<u8> {
        self.0
            .strip_prefix(STANDARD_PREFIX)
            .and_then(|encoded| BASE64.decode(encoded).ok())
            .unwrap_or_else(|| self.0.as_bytes().to_vec())
    }

    /// GitHub receivers configure the secret string itself, so it keys the
    /// HMAC as text, `whsec_` prefix and all.
    fn hub_key(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    // HMAC defines a key of any length (a long one is hashed first), so
    // `new_from_slice` has no failing input.
    #[allow(clippy::expect_used)]
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC accepts keys of any length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
}

/// One Standard Webhooks signature: `v1,<base64 HMAC-SHA256 of "id.timestamp.body">`.
pub fn standard_signature(secret: &Secret, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    let timestamp = timestamp.to_string();
    let mac = hmac(
        &secret.standard_key(),
        &[msg_id.as_bytes(), b".", timestamp.as_bytes(), b".", body],
    );
    format!("v1,{}", BASE64.encode(mac))
}

/// The `webhook-signature` header value: one signature per secret, space
/// separated, so a receiver holding either the new or the old secret during
/// a rotation accepts the request.
pub fn webhook_signature_header(
    secrets: &[&Secret],
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
) -> String {
    secrets
        .iter()
        .map(|secret| standard_signature(secret, msg_id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The `x-hub-signature-256` header value: `sha256=<hex HMAC-SHA256 of the body>`.
pub fn hub_signature(secret: &Secret, body: &[u8]) -> String {
    format!("sha256={}", hex::encode(hmac(secret.hub_key(), &[body])))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_webhooks_specification_example() {
        let secret = Secret::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        let signature = standard_signature(
            &secret,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn github_documentation_example() {
        let secret = Secret::new("It's a Secret to Everybody");
        assert_eq!(
            hub_signature(&secret, b"Hello, World!"),
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        );
    }

    #[test]
    fn the_standard_webhooks_library_verifies_our_signatures() {
        let secret = Secret::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        let body = br#"{"id":"evt_1","type":"orders.insert"}"#;
        let now = chrono::Utc::now().timestamp();
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert("webhook-id", "evt_1".parse().expect("header"));
        headers.insert(
            "webhook-timestamp",
            now.to_string().parse().expect("header"),
        );
        let value = webhook_signature_header(&[&secret], "evt_1", now, body);
        headers.insert("webhook-signature", value.parse().expect("header"));
        let verifier = standardwebhooks::Webhook::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
            .expect("secret");
        verifier.verify(body, &headers).expect("signature verifies");
    }

    #[test]
    fn a_raw_secret_keys_with_its_bytes() {
        let secret = Secret::new("plain-secret-value");
        let body = b"{}";
        let expected = standardwebhooks::Webhook::from_bytes(b"plain-secret-value".to_vec())
            .and_then(|hook| hook.sign("evt_2", 1700000000, body))
            .expect("sign");
        assert_eq!(
            standard_signature(&secret, "evt_2", 1700000000, body),
            expected
        );
    }

    #[test]
    fn rotation_gives_one_signature_per_secret() {
        let new = Secret::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        let old = Secret::new("old-secret-value");
        let header = webhook_signature_header(&[&new, &old], "evt_3", 1700000000, b"{}");
        let parts: Vec<&str> = header.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert_eq!(
            parts[0],
            standard_signature(&new, "evt_3", 1700000000, b"{}")
        );
        assert_eq!(
            parts[1],
            standard_signature(&old, "evt_3", 1700000000, b"{}")
        );
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let secret = Secret::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        assert!(!format!("{secret:?}").contains("MfKQ"));
    }
}
