//! The HTTP side of a delivery: one shared client (keep-alive pool,
//! connect and total timeouts, no redirects, no proxies), the request with
//! its signature headers, the capped response, and the guard that keeps
//! requests away from private networks.
//!
//! The guard sits in the resolver: the addresses a name resolves to are
//! filtered before the connector sees them, so the address connected to is
//! always one that was checked, and DNS rebinding between a check and the
//! connect cannot happen. IP literals never reach a resolver and are checked
//! before the request is built.

use std::error::Error as StdError;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use bytes::Bytes;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE, RETRY_AFTER};

use super::error::DeliverError;
use super::retry;
use super::sign::{self, Secret};
use crate::config::DeliveryConfig;

/// At most this much of a response body is read and stored.
pub const RESPONSE_BODY_CAP: usize = 16 * 1024;

const USER_AGENT: &str = concat!("walhook/", env!("CARGO_PKG_VERSION"));

/// How the body is encoded, per subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentType {
    /// The event JSON is the body.
    Json,
    /// `payload=<url-encoded JSON>`, for receivers that only read forms.
    Form,
}

impl ContentType {
    pub fn from_db(text: &str) -> ContentType {
        if text == "form" {
            ContentType::Form
        } else {
            ContentType::Json
        }
    }

    fn header(self) -> &'static str {
        match self {
            ContentType::Json => "application/json",
            ContentType::Form => "application/x-www-form-urlencoded",
        }
    }

    /// The exact bytes sent, which are also the bytes signed.
    pub fn encode(self, json: &[u8]) -> Bytes {
        match self {
            ContentType::Json => Bytes::copy_from_slice(json),
            ContentType::Form => {
                let mut body = String::from("payload=");
                body.extend(form_urlencoded::byte_serialize(json));
                Bytes::from(body)
            }
        }
    }
}

/// A subscription URL, parsed once per claim rather than once per request.
#[derive(Debug, Clone)]
pub struct Destination(Result<reqwest::Url, String>);

impl Destination {
    pub fn parse(url: &str) -> Destination {
        Destination(
            reqwest::Url::parse(url).map_err(|e| format!("the subscription URL is not valid: {e}")),
        )
    }
}

/// One request to send.
#[derive(Debug)]
pub struct Message<'a> {
    pub url: &'a Destination,
    pub webhook_id: &'a str,
    pub event_type: &'a str,
    pub subscription_id: i64,
    pub attempt: u32,
    pub content_type: ContentType,
    /// The subscription's extra headers.
    pub headers: &'a super::shape::Headers,
    /// The JSON document (an event, or an array of them).
    pub json: &'a [u8],
    /// The current secret first, then any still-valid previous one.
    pub secrets: &'a [&'a Secret],
}

/// What came of one request.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// The HTTP status, when a response arrived.
    pub status: Option<u16>,
    pub duration: Duration,
    /// The response body, capped; base64 when it is not text.
    pub body: Option<String>,
    pub error: Option<String>,
    /// The receiver's `Retry-After`, on statuses where it is honoured.
    pub retry_after: Option<Duration>,
    /// The receiver asked, with `webhook-delivery: abort-message`, that
    /// this message not be retried.
    pub abort: bool,
    /// The private-network guard refused the target: a permanent failure,
    /// since retrying would be refused the same way.
    pub refused: bool,
}

impl Outcome {
    pub fn is_success(&self) -> bool {
        matches!(self.status, Some(200..=299))
    }

    fn failed(error: String, duration: Duration) -> Outcome {
        Outcome {
            error: Some(error),
            duration,
            ..Outcome::default()
        }
    }

    fn refused(error: String, duration: Duration) -> Outcome {
        Outcome {
            refused: true,
            ..Outcome::failed(error, duration)
        }
    }
}

/// The shared client. Cheap to clone.
#[derive(Clone)]
pub struct Sender {
    client: reqwest::Client,
    allow_private: bool,
    timeout: Duration,
}

impl Sender {
    pub fn new(config: &DeliveryConfig) -> Result<Sender, DeliverError> {
        let mut builder = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .connect_timeout(config.connect_timeout)
            .timeout(config.timeout)
            .redirect(reqwest::redirect::Policy::none())
            // A proxy would connect on our behalf to addresses the guard
            // never saw; receivers are reached directly.
            .no_proxy()
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_keepalive(Duration::from_secs(60));
        if !config.allow_private_targets {
            builder = builder.dns_resolver(Arc::new(GuardedResolver));
        }
        let client = builder
            .build()
            .map_err(|e| DeliverError::HttpClient(e.to_string()))?;
        Ok(Sender {
            client,
            allow_private: config.allow_private_targets,
            timeout: config.timeout,
        })
    }

    /// Sends one message. Never fails: every problem becomes the outcome's error.
    pub async fn send(&self, message: &Message<'_>) -> Outcome {
        let started = Instant::now();
        if let (false, Ok(url)) = (self.allow_private, &message.url.0) {
            if let Err(refused) = check_literal_host(url) {
                return Outcome::refused(refused, started.elapsed());
            }
        }
        let request = match self.build(message) {
            Ok(request) => request,
            Err(error) => return Outcome::failed(error, started.elapsed()),
        };
        let response = match self.client.execute(request).await {
            Ok(response) => response,
            Err(error) => {
                let refused = find_source::<Refused>(&error).is_some();
                let error = describe_error(error, self.timeout);
                return if refused {
                    Outcome::refused(error, started.elapsed())
                } else {
                    Outcome::failed(error, started.elapsed())
                };
            }
        };
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let (body, read_error) = read_capped(response).await;
        Outcome {
            status: Some(status),
            duration: started.elapsed(),
            body,
            error: read_error.map(|e| {
                format!(
                    "reading the response body: {}",
                    describe_error(e, self.timeout)
                )
            }),
            retry_after: retry_after(status, &headers),
            abort: asks_to_abort(&headers),
            refused: false,
        }
    }

    fn build(&self, message: &Message<'_>) -> Result<reqwest::Request, String> {
        let url = message.url.0.clone()?;
        let body = message.content_type.encode(message.json);
        let timestamp = chrono::Utc::now().timestamp();
        let mut headers = HeaderMap::new();
        message.headers.apply(&mut headers);
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static(message.content_type.header()),
        );
        let signature =
            sign::webhook_signature_header(message.secrets, message.webhook_id, timestamp, &body);
        let hub = message
            .secrets
            .first()
            .map(|secret| sign::hub_signature(secret, &body));
        let values: [(&'static str, Option<String>); 7] = [
            ("webhook-id", Some(message.webhook_id.to_owned())),
            ("webhook-timestamp", Some(timestamp.to_string())),
            ("webhook-signature", Some(signature)),
            ("x-hub-signature-256", hub),
            ("walhook-event", Some(message.event_type.to_owned())),
            (
                "walhook-subscription",
                Some(message.subscription_id.to_string()),
            ),
            ("walhook-attempt", Some(message.attempt.to_string())),
        ];
        for (name, value) in values {
            let Some(value) = value else { continue };
            let value = HeaderValue::from_bytes(value.as_bytes()).map_err(|_| {
                format!("the {name} header cannot carry the value for this message")
            })?;
            headers.insert(HeaderName::from_static(name), value);
        }
        let mut request = reqwest::Request::new(reqwest::Method::POST, url);
        *request.headers_mut() = headers;
        *request.body_mut() = Some(body.into());
        Ok(request)
    }
}

fn retry_after(status: u16, headers: &HeaderMap) -> Option<Duration> {
    if !retry::honours_retry_after(status) {
        return None;
    }
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?;
    retry::parse_retry_after(value, SystemTime::now())
}

fn asks_to_abort(headers: &HeaderMap) -> bool {
    headers
        .get_all("webhook-delivery")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.trim().eq_ignore_ascii_case("abort-message"))
}

/// Reads at most [`RESPONSE_BODY_CAP`] bytes; the rest is not waited for.
async fn read_capped(mut response: reqwest::Response) -> (Option<String>, Option<reqwest::Error>) {
    let mut body = Vec::new();
    let mut truncated = false;
    let mut failure = None;
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let room = RESPONSE_BODY_CAP - body.len();
                if chunk.len() >= room {
                    body.extend_from_slice(&chunk[..room]);
                    truncated = chunk.len() > room;
                    break;
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => break,
            Err(error) => {
                failure = Some(error);
                break;
            }
        }
    }
    let text = if body.is_empty() {
        None
    } else {
        Some(body_as_text(&body, truncated))
    };
    (text, failure)
}

/// The body as stored: text when it is UTF-8 (a character cut in half by
/// the cap is dropped), base64 otherwise. NUL cannot be stored in a
/// Postgres text column, so a body with one counts as binary.
pub fn body_as_text(body: &[u8], truncated: bool) -> String {
    let text = match std::str::from_utf8(body) {
        Ok(text) => Some(text),
        Err(e) if truncated && e.error_len().is_none() => {
            std::str::from_utf8(&body[..e.valid_up_to()]).ok()
        }
        Err(_) => None,
    };
    match text {
        Some(text) if !text.contains('\0') => text.to_owned(),
        _ => BASE64.encode(body),
    }
}

/// A short, secret-free account of a failed request. The URL is left out:
/// it may carry credentials, and the attempt row already names the delivery.
fn describe_error(error: reqwest::Error, timeout: Duration) -> String {
    let error = error.without_url();
    if let Some(refused) = find_source::<Refused>(&error) {
        return refused.to_string();
    }
    if error.is_timeout() {
        return format!("timed out after {}", humantime::format_duration(timeout));
    }
    let mut parts = vec![error.to_string()];
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = cause.source();
    }
    parts.join(": ")
}

fn find_source<'a, T: StdError + 'static>(error: &'a (dyn StdError + 'static)) -> Option<&'a T> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(found) = e.downcast_ref::<T>() {
            return Some(found);
        }
        current = e.source();
    }
    None
}

/// A target refused by the guard.
#[derive(Debug)]
pub struct Refused {
    host: String,
    address: IpAddr,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "refused: {} is {}, a {} address; walhook only delivers to public addresses unless delivery.allow_private_targets is set",
            self.host,
            self.address,
            address_kind(self.address).unwrap_or("non-public")
        )
    }
}

impl StdError for Refused {}

fn check_literal_host(url: &reqwest::Url) -> Result<(), String> {
    let address = match url.host() {
        Some(url::Host::Ipv4(v4)) => IpAddr::V4(v4),
        Some(url::Host::Ipv6(v6)) => IpAddr::V6(v6),
        _ => return Ok(()),
    };
    if is_forbidden(address) {
        return Err(Refused {
            host: address.to_string(),
            address,
        }
        .to_string());
    }
    Ok(())
}

/// Resolves names and keeps only public addresses.
struct GuardedResolver;

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let resolved: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let first = resolved.first().map(SocketAddr::ip);
            let allowed: Vec<SocketAddr> = resolved
                .into_iter()
                .filter(|a| !is_forbidden(a.ip()))
                .collect();
            match (allowed.is_empty(), first) {
                (false, _) => Ok(Box::new(allowed.into_iter()) as Addrs),
                (true, Some(address)) => {
                    Err(Box::new(Refused { host, address }) as Box<dyn StdError + Send + Sync>)
                }
                (true, None) => Err(format!("{host} resolved to no address").into()),
            }
        })
    }
}

/// Is this an address a webhook must not be sent to?
pub fn is_forbidden(address: IpAddr) -> bool {
    address_kind(address).is_some()
}

/// The kind of non-public address this is, or `None` for a public one.
pub fn address_kind(address: IpAddr) -> Option<&'static str> {
    match address {
        IpAddr::V4(v4) => v4_kind(v4),
        IpAddr::V6(v6) => v6_kind(v6),
    }
}

fn v4_kind(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    match (a, b, c) {
        (0, _, _) => Some("unspecified"),
        (127, _, _) => Some("loopback"),
        (10, _, _) | (172, 16..=31, _) | (192, 168, _) => Some("private"),
        (169, 254, _) => Some("link-local"),
        (100, 64..=127, _) => Some("shared (CGNAT)"),
        (192, 0, 0) => Some("protocol-assignment"),
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => Some("documentation"),
        (198, 18..=19, _) => Some("benchmarking"),
        (224..=239, _, _) => Some("multicast"),
        (240..=255, _, _) => Some("reserved or broadcast"),
        _ => None,
    }
}

fn v6_kind(ip: Ipv6Addr) -> Option<&'static str> {
    if let Some(v4) = embedded_v4(ip) {
        return v4_kind(v4);
    }
    let segments = ip.segments();
    if ip.is_unspecified() {
        Some("unspecified")
    } else if ip.is_loopback() {
        Some("loopback")
    } else if segments[0] & 0xfe00 == 0xfc00 {
        Some("private (unique local)")
    } else if segments[0] & 0xffc0 == 0xfe80 || segments[0] & 0xffc0 == 0xfec0 {
        Some("link-local")
    } else if segments[0] & 0xff00 == 0xff00 {
        Some("multicast")
    } else if (segments[0] == 0x2001 && segments[1] == 0x0db8) || segments[0] & 0xfff0 == 0x3ff0 {
        Some("documentation")
    } else if segments[0] == 0x0100 && segments[1..4] == [0, 0, 0] {
        Some("discard-only")
    } else if segments[..6] == [0, 0, 0, 0, 0, 0] {
        Some("IPv4-compatible")
    } else {
        None
    }
}

/// The IPv4 address inside an IPv4-mapped (`::ffff:a.b.c.d`), NAT64
/// (`64:ff9b::a.b.c.d`) or 6to4 (`2002:aabb:ccdd::`) address: each of these
/// reaches that IPv4 host, so it is judged as that host.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let from =
        |hi: u16, lo: u16| Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8);
    let mapped = s[..5] == [0, 0, 0, 0, 0] && s[5] == 0xffff;
    let nat64 = s[..6] == [0x64, 0xff9b, 0, 0, 0, 0];
    if mapped || nat64 {
        Some(from(s[6], s[7]))
    } else if s[0] == 0x2002 {
        Some(from(s[1], s[2]))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forbidden(text: &str) -> bool {
        is_forbidden(text.parse().expect("address"))
    }

    #[test]
    fn private_and_special_v4_addresses_are_refused() {
        for address in [
            "0.0.0.0",
            "127.0.0.1",
            "127.1.2.3",
            "10.0.0.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.255",
            "224.0.0.1",
            "255.255.255.255",
            "192.0.2.1",
            "198.51.100.7",
            "203.0.113.9",
        ] {
            assert!(forbidden(address), "{address}");
        }
    }

    #[test]
    fn public_v4_addresses_pass() {
        for address in [
            "1.1.1.1",
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "93.184.216.34",
            "192.169.0.1",
        ] {
            assert!(!forbidden(address), "{address}");
        }
    }

    #[test]
    fn private_and_special_v6_addresses_are_refused() {
        for address in [
            "::",
            "::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "ff02::1",
            "2001:db8::1",
            "::ffff:127.0.0.1",
            "::ffff:10.1.2.3",
            "::ffff:169.254.169.254",
            "64:ff9b::7f00:1",
            "2002:7f00:1::",
        ] {
            assert!(forbidden(address), "{address}");
        }
    }

    #[test]
    fn public_v6_addresses_pass() {
        for address in [
            "2606:4700:4700::1111",
            "2a00:1450:4001::200e",
            "::ffff:1.1.1.1",
            "64:ff9b::808:808",
        ] {
            assert!(!forbidden(address), "{address}");
        }
    }

    #[test]
    fn literal_hosts_are_checked_in_every_spelling() {
        for url in [
            "http://127.0.0.1/",
            "http://[::1]:8080/",
            "http://2130706433/",
            "http://0x7f.1/",
            "http://[::ffff:7f00:1]/",
        ] {
            let url = reqwest::Url::parse(url).expect("url");
            assert!(check_literal_host(&url).is_err(), "{url}");
        }
        let public = reqwest::Url::parse("https://93.184.216.34/hooks").expect("url");
        assert!(check_literal_host(&public).is_ok());
    }

    #[test]
    fn form_bodies_carry_the_url_encoded_json() {
        let body = ContentType::Form.encode(br#"{"a":"b c&d"}"#);
        assert_eq!(&body[..], b"payload=%7B%22a%22%3A%22b+c%26d%22%7D");
        let decoded: Vec<(String, String)> = form_urlencoded::parse(&body).into_owned().collect();
        assert_eq!(
            decoded,
            vec![("payload".to_owned(), r#"{"a":"b c&d"}"#.to_owned())]
        );
    }

    #[test]
    fn bodies_are_stored_as_text_or_base64() {
        assert_eq!(body_as_text(b"ok", false), "ok");
        assert_eq!(body_as_text(&[0xff, 0xfe], false), "//4=");
        assert_eq!(body_as_text(b"a\0b", false), BASE64.encode(b"a\0b"));
        let cut = "é".as_bytes()[..1].to_vec();
        let mut body = b"abc".to_vec();
        body.extend(cut);
        assert_eq!(body_as_text(&body, true), "abc");
    }
}
