//! Test support for the console: a relay with its admin server on a known
//! port, and an HTTP client that keeps the console's cookies and sends
//! forms the way a browser on the console's page would.

use std::time::Duration;

use tokio_postgres::Client;
use walhook::config::{CaptureMode, Config};

use super::{test_config, Relay, TestDb};

/// The secret of the subscription [`orders_table`] makes.
pub const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// Trigger capture, a watched `orders (id int PRIMARY KEY, status text,
/// note text, total numeric)` and a subscription of `receiver_url` to
/// `orders.*` with [`SECRET`]; returns the subscription's id.
pub async fn orders_table(client: &Client, receiver_url: &str) -> i64 {
    client
        .batch_execute(
            "SELECT walhook.set_capture_mode('trigger');
             CREATE TABLE orders (id int PRIMARY KEY, status text, note text, total numeric);
             SELECT walhook.watch('orders');",
        )
        .await
        .expect("setup");
    client
        .query_one(
            "SELECT walhook.subscribe($1, ARRAY['orders.*'], secret => $2)",
            &[&receiver_url, &SECRET],
        )
        .await
        .expect("subscribe")
        .get(0)
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A relay (trigger capture) whose console is at `base`.
pub struct ConsoleRelay {
    pub relay: Relay,
    pub base: String,
}

impl ConsoleRelay {
    /// Starts the relay on `db` with `token` (None: open on loopback) and
    /// waits until its admin server answers.
    pub async fn start(db: &TestDb, token: Option<&str>) -> ConsoleRelay {
        ConsoleRelay::start_with(token, test_config(&db.url, CaptureMode::Trigger)).await
    }

    /// [`ConsoleRelay::start`] with a configuration of the test's own.
    pub async fn start_with(token: Option<&str>, mut config: Config) -> ConsoleRelay {
        let port = free_port();
        config.admin.listen = format!("127.0.0.1:{port}").parse().expect("address");
        config.admin.token = token.map(|t| walhook::config::Secret(t.to_owned()));
        let relay = Relay::start_with(config);
        let base = format!("http://127.0.0.1:{port}");
        for _ in 0..100 {
            if let Ok(response) = reqwest::get(format!("{base}/healthz")).await {
                if response
                    .text()
                    .await
                    .unwrap_or_default()
                    .contains("capturing")
                {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        ConsoleRelay { relay, base }
    }

    pub async fn stop(self) {
        self.relay.stop().await;
    }
}

/// What a page request returned.
#[derive(Debug)]
pub struct Page {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Page {
    pub fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    }

    pub fn location(&self) -> String {
        self.header("location")
    }

    /// The CSRF token in the page's forms.
    pub fn csrf(&self) -> String {
        let marker = "name=\"csrf\" value=\"";
        let start = self.body.find(marker).expect("the page has a form") + marker.len();
        let end = self.body[start..].find('"').expect("value ends") + start;
        self.body[start..end].to_owned()
    }
}

/// An HTTP client that keeps the session cookie, follows no redirects and
/// sends the Origin a browser sends.
pub struct ConsoleClient {
    pub base: String,
    http: reqwest::Client,
    pub cookies: Vec<(String, String)>,
}

impl ConsoleClient {
    pub fn new(base: &str) -> ConsoleClient {
        ConsoleClient {
            base: base.to_owned(),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("http client"),
            cookies: Vec::new(),
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn finish(&mut self, request: reqwest::RequestBuilder) -> Page {
        let request = if self.cookies.is_empty() {
            request
        } else {
            request.header("cookie", self.cookie_header())
        };
        let response = request.send().await.expect("console answers");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        for set in headers.get_all("set-cookie") {
            let text = set.to_str().expect("cookie text");
            let pair = text.split(';').next().unwrap_or_default();
            if let Some((name, value)) = pair.split_once('=') {
                self.cookies.retain(|(n, _)| n != name);
                if !value.is_empty() && !text.contains("Max-Age=0") {
                    self.cookies.push((name.to_owned(), value.to_owned()));
                }
            }
        }
        let body = response.text().await.expect("body");
        Page {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&mut self, path: &str) -> Page {
        let request = self.http.get(format!("{}{path}", self.base));
        self.finish(request).await
    }

    /// A form POST from one of the console's own pages.
    pub async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        let origin = self.base.clone();
        self.post_from(path, form, Some(&origin)).await
    }

    /// A form POST with the given Origin (None: no Origin, no Referer).
    pub async fn post_from(
        &mut self,
        path: &str,
        form: &[(&str, &str)],
        origin: Option<&str>,
    ) -> Page {
        let mut request = self.http.post(format!("{}{path}", self.base)).form(form);
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        self.finish(request).await
    }
}
