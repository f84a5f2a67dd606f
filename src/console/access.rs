//! Who may use the console and `/metrics`, and how a browser proves it.
//!
//! On a loopback address without a token everything is open. With a token,
//! a browser signs in once with it and gets a session cookie (`HttpOnly`,
//! `SameSite=Strict`); scripts send `Authorization: Bearer <token>`.
//! Every browser gets a session cookie either way, because the CSRF token a
//! form carries is derived from it: a POST must come from the console's own
//! origin (Origin or Referer against Host) and carry its session's token.
//!
//! Sessions are stateless: a cookie is a random nonce and its HMAC under a
//! key made when the process starts, so a restart signs everyone out.

use std::net::SocketAddr;

use axum::http::{header, HeaderMap};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as BASE64URL;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The cookie that holds a browser's session.
pub const SESSION_COOKIE: &str = "walhook_session";

/// Why the console cannot be served as configured.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error("admin.listen is {listen}, not a loopback address, and no admin.token is set: anyone who can reach it could use the console; set admin.token (WALHOOK_ADMIN_TOKEN, --admin-token), or listen on 127.0.0.1")]
    TokenRequired { listen: SocketAddr },
}

/// The access rule of one admin server.
#[derive(Clone)]
pub struct Access {
    token: Option<String>,
    key: [u8; 32],
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Access")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

impl Access {
    /// The rule for a server on `listen`; refuses an open server off loopback.
    pub fn new(listen: SocketAddr, token: Option<String>) -> Result<Access, AccessError> {
        if token.is_none() && !listen.ip().is_loopback() {
            return Err(AccessError::TokenRequired { listen });
        }
        Ok(Access {
            token,
            key: rand::random(),
        })
    }

    /// Whether signing in is needed at all.
    pub fn needs_token(&self) -> bool {
        self.token.is_some()
    }

    /// Compares `given` with the token in constant time.
    pub fn token_matches(&self, given: &str) -> bool {
        let Some(token) = &self.token else {
            return true;
        };
        // Equal MACs of both under the process key: the comparison takes
        // as long whatever the first differing byte is.
        let expected = self.mac(&["token", token]);
        let mut mac = self.hmac();
        mac.update(b"token\0");
        mac.update(given.as_bytes());
        mac.update(b"\0");
        mac.verify_slice(&expected).is_ok()
    }

    /// A new session cookie value: `<nonce>.<mac>`.
    pub fn new_session(&self) -> String {
        let nonce: [u8; 18] = rand::random();
        let nonce = BASE64URL.encode(nonce);
        let mac = BASE64URL.encode(self.mac(&["session", &nonce]));
        format!("{nonce}.{mac}")
    }

    /// The nonce of a session cookie this process issued, if it is one.
    pub fn verify_session<'a>(&self, cookie: &'a str) -> Option<&'a str> {
        let (nonce, mac) = cookie.split_once('.')?;
        let mac = BASE64URL.decode(mac).ok()?;
        let mut check = self.hmac();
        check.update(b"session\0");
        check.update(nonce.as_bytes());
        check.update(b"\0");
        check.verify_slice(&mac).ok()?;
        Some(nonce)
    }

    /// The CSRF token of the session with `nonce`.
    pub fn csrf_token(&self, nonce: &str) -> String {
        BASE64URL.encode(self.mac(&["csrf", nonce]))
    }

    /// Whether `given` is the CSRF token of the session with `nonce`.
    pub fn csrf_matches(&self, nonce: &str, given: &str) -> bool {
        let Ok(given) = BASE64URL.decode(given) else {
            return false;
        };
        let mut check = self.hmac();
        check.update(b"csrf\0");
        check.update(nonce.as_bytes());
        check.update(b"\0");
        check.verify_slice(&given).is_ok()
    }

    /// Whether a request may read `/metrics` or a console page: no token
    /// configured, the token as a bearer, or a signed-in session.
    pub fn authorizes(&self, headers: &HeaderMap) -> bool {
        if self.token.is_none() {
            return true;
        }
        if let Some(bearer) = bearer_token(headers) {
            return self.token_matches(bearer);
        }
        self.session_nonce(headers).is_some()
    }

    /// The nonce of the request's valid session cookie.
    pub fn session_nonce<'a>(&self, headers: &'a HeaderMap) -> Option<&'a str> {
        cookie(headers, SESSION_COOKIE).and_then(|value| self.verify_session(value))
    }

    fn hmac(&self) -> HmacSha256 {
        // HMAC takes keys of any length; 32 bytes cannot be refused.
        #[allow(clippy::expect_used)]
        HmacSha256::new_from_slice(&self.key).expect("HMAC accepts a 32-byte key")
    }

    fn mac(&self, parts: &[&str]) -> Vec<u8> {
        let mut mac = self.hmac();
        for part in parts {
            mac.update(part.as_bytes());
            mac.update(b"\0");
        }
        mac.finalize().into_bytes().to_vec()
    }
}

/// The `Set-Cookie` value of a session.
pub fn session_cookie(value: &str) -> String {
    format!("{SESSION_COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict")
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

/// Whether a state-changing request comes from a page of this server: its
/// `Origin` (or, when a browser sends none, its `Referer`) names the host
/// the request was sent to.
pub fn same_origin(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let origin_host = |value: &str| {
        url::Url::parse(value).ok().and_then(|url| {
            let host = url.host_str()?.to_owned();
            Some(match url.port() {
                Some(port) => format!("{host}:{port}"),
                None => host,
            })
        })
    };
    let named = match headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        Some("null") => return false,
        Some(origin) => origin_host(origin),
        None => headers
            .get(header::REFERER)
            .and_then(|v| v.to_str().ok())
            .and_then(origin_host),
    };
    named.is_some_and(|named| named.eq_ignore_ascii_case(host))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).expect("header value"));
        }
        map
    }

    fn local(token: Option<&str>) -> Access {
        Access::new(
            "127.0.0.1:9750".parse().expect("address"),
            token.map(Into::into),
        )
        .expect("loopback is allowed")
    }

    #[test]
    fn off_loopback_a_token_is_required() {
        let error =
            Access::new("0.0.0.0:9750".parse().expect("address"), None).expect_err("refused");
        assert!(error.to_string().contains("admin.token"), "{error}");
        assert!(Access::new(
            "0.0.0.0:9750".parse().expect("address"),
            Some("0123456789abcdef".into())
        )
        .is_ok());
        assert!(Access::new("[::1]:9750".parse().expect("address"), None).is_ok());
    }

    #[test]
    fn sessions_verify_only_when_issued_here() {
        let access = local(Some("0123456789abcdef"));
        let session = access.new_session();
        let nonce = access
            .verify_session(&session)
            .expect("own session verifies");
        assert!(session.starts_with(nonce));
        let other = local(Some("0123456789abcdef")).new_session();
        assert!(
            access.verify_session(&other).is_none(),
            "another key's session"
        );
        let forged = format!("{nonce}.{}", BASE64URL.encode([0u8; 32]));
        assert!(access.verify_session(&forged).is_none());
        assert!(access.verify_session("no-dot").is_none());
    }

    #[test]
    fn csrf_tokens_belong_to_one_session() {
        let access = local(None);
        let token = access.csrf_token("nonce-a");
        assert!(access.csrf_matches("nonce-a", &token));
        assert!(!access.csrf_matches("nonce-b", &token));
        assert!(!access.csrf_matches("nonce-a", "garbage!"));
        assert!(!access.csrf_matches("nonce-a", ""));
    }

    #[test]
    fn bearer_and_cookie_authorize_only_with_the_right_token() {
        let access = local(Some("0123456789abcdef"));
        assert!(!access.authorizes(&headers(&[])));
        assert!(access.authorizes(&headers(&[("authorization", "Bearer 0123456789abcdef")])));
        assert!(!access.authorizes(&headers(&[("authorization", "Bearer 0123456789abcdeX")])));
        let cookie = format!("a=b; {SESSION_COOKIE}={}", access.new_session());
        assert!(access.authorizes(&headers(&[("cookie", &cookie)])));
        assert!(local(None).authorizes(&headers(&[])));
    }

    #[test]
    fn same_origin_compares_origin_or_referer_with_host() {
        let host = ("host", "127.0.0.1:9750");
        assert!(same_origin(&headers(&[
            host,
            ("origin", "http://127.0.0.1:9750")
        ])));
        assert!(!same_origin(&headers(&[
            host,
            ("origin", "http://evil.example")
        ])));
        assert!(!same_origin(&headers(&[
            host,
            ("origin", "http://127.0.0.1:9751")
        ])));
        assert!(!same_origin(&headers(&[host, ("origin", "null")])));
        assert!(same_origin(&headers(&[
            host,
            ("referer", "http://127.0.0.1:9750/subscriptions/1")
        ])));
        assert!(!same_origin(&headers(&[
            host,
            ("referer", "http://127.0.0.1:9750.evil.example/")
        ])));
        assert!(!same_origin(&headers(&[host])), "neither header: refused");
        assert!(!same_origin(&headers(&[(
            "origin",
            "http://127.0.0.1:9750"
        )])));
    }
}
