//! The console: HTML pages at `/` of the admin server to see every
//! subscription, delivery, event and attempt and to act on them through
//! the SQL interface's functions, with a live tail over server-sent
//! events.
//!
//! Pages are rendered on the server and work without JavaScript; the one
//! script (the live tail) and the stylesheet are served from the binary,
//! so the Content-Security-Policy allows nothing inline and nothing from
//! elsewhere. Who may see the pages is [`access`]'s business; every
//! statement is in [`queries`] and runs on the console's own small pool.

pub mod access;
pub mod change;
mod headers;
pub mod pages;
pub mod pool;
pub mod queries;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use crate::pool::Pool;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Form, Router};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as BASE64URL;
use base64::Engine;
use chrono::{DateTime, NaiveDateTime, Utc};
use futures_util::stream::{self, Stream, StreamExt};
use maud::Markup;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use access::{Access, AccessError};
use pages::Frame;
use queries::{Action, DeliveryFilter};

/// Responses of the console forbid everything not served by itself.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// How often the live tail looks for new deliveries and attempts.
const TAIL_POLL: Duration = Duration::from_millis(250);

/// The cookie that carries an action's result to the page shown after it.
const NOTICE_COOKIE: &str = "walhook_notice";

const STYLESHEET: &str = include_str!("assets/console.css");
const SCRIPT: &str = include_str!("assets/console.js");

#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error(transparent)]
    Access(#[from] AccessError),
    #[error(transparent)]
    Db(#[from] crate::db::DbError),
    #[error("cannot build the console's connection pool: {0}")]
    Pool(String),
}

/// What the console's handlers share. Cheap to clone.
#[derive(Clone)]
pub struct Console {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    access: Access,
    slot: String,
}

impl Console {
    /// The console of the admin server on `admin.listen`, reading the
    /// database at `url` and reporting the lag of replication slot `slot`.
    /// Fails off loopback without a token.
    pub fn new(
        url: &str,
        admin: &crate::config::AdminConfig,
        slot: &str,
    ) -> Result<Console, ConsoleError> {
        let access = Access::new(
            admin.listen,
            admin.token.as_ref().map(|t| t.expose().to_owned()),
        )?;
        Ok(Console {
            inner: Arc::new(Inner {
                pool: pool::build(url)?,
                access,
                slot: slot.to_owned(),
            }),
        })
    }

    /// Whether the request may read what the admin server guards
    /// (`/metrics` and the pages).
    pub fn authorizes(&self, headers: &HeaderMap) -> bool {
        self.inner.access.authorizes(headers)
    }

    /// The console's routes; live tails end when `stop` fires, so a
    /// graceful shutdown does not wait on them.
    pub fn routes(self, stop: CancellationToken) -> Router {
        let guarded = Router::new()
            .route("/", get(overview))
            .route("/subscriptions", get(subscriptions))
            .route("/subscriptions/{id}", get(subscription))
            .route("/subscriptions/{id}/unsubscribe", get(unsubscribe))
            .route("/events/{id}", get(event))
            .route("/tail", get(tail))
            .route("/tail/events", get(tail_events))
            .route("/actions", post(act))
            .route("/sign-out", post(sign_out))
            .layer(Extension(stop))
            .route_layer(middleware::from_fn_with_state(self.clone(), guard));
        Router::new()
            .merge(guarded)
            .route("/sign-in", get(sign_in_page).post(sign_in))
            .route("/static/console.css", get(stylesheet))
            .route("/static/console.js", get(script))
            .layer(middleware::map_response(secure_headers))
            .with_state(self)
    }
}

/// The browser's session, as the guard found or made it.
#[derive(Clone, Debug, Default)]
struct Session {
    nonce: Option<String>,
    signed_in: bool,
    notice: Option<String>,
}

impl Session {
    fn frame<'a>(&'a self, console: &Console, csrf: &'a mut String) -> Frame<'a> {
        if let Some(nonce) = &self.nonce {
            *csrf = console.inner.access.csrf_token(nonce);
        }
        Frame {
            csrf,
            notice: self.notice.as_deref(),
            signed_in: self.signed_in,
        }
    }
}

/// Lets through requests the access rule allows, sending browsers to sign
/// in otherwise; gives every browser a session (the CSRF tokens hang on
/// it) and hands over a pending notice.
async fn guard(State(console): State<Console>, mut request: Request, next: Next) -> Response {
    let access = &console.inner.access;
    let headers = request.headers();
    if !access.authorizes(headers) {
        if request.method() == Method::GET {
            let next_path = request
                .uri()
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_owned();
            let target = format!(
                "/sign-in?{}",
                form_urlencoded::Serializer::new(String::new())
                    .append_pair("next", &next_path)
                    .finish()
            );
            return Redirect::to(&target).into_response();
        }
        return (StatusCode::UNAUTHORIZED, "sign in first").into_response();
    }
    let existing = access.session_nonce(headers).map(str::to_owned);
    let fresh = if existing.is_none() && !access.needs_token() {
        Some(access.new_session())
    } else {
        None
    };
    let nonce = existing.or_else(|| {
        fresh
            .as_deref()
            .and_then(|s| access.verify_session(s))
            .map(str::to_owned)
    });
    let notice = access::cookie(headers, NOTICE_COOKIE)
        .and_then(|v| BASE64URL.decode(v).ok())
        .and_then(|v| String::from_utf8(v).ok());
    let had_notice = notice.is_some();
    request.extensions_mut().insert(Session {
        signed_in: access.needs_token() && nonce.is_some(),
        nonce,
        notice,
    });
    let is_get = request.method() == Method::GET;
    let mut response = next.run(request).await;
    if let Some(session) = fresh {
        append_cookie(&mut response, &access::session_cookie(&session));
    }
    if had_notice && is_get && response.status() == StatusCode::OK {
        append_cookie(
            &mut response,
            &format!("{NOTICE_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
        );
    }
    response
}

fn append_cookie(response: &mut Response, cookie: &str) {
    if let Ok(value) = HeaderValue::from_str(cookie) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
}

async fn secure_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in [
        ("content-security-policy", CONTENT_SECURITY_POLICY),
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "same-origin"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

/// Why a page could not be shown.
enum PageError {
    Db(String),
    NotFound(&'static str),
}

impl From<tokio_postgres::Error> for PageError {
    fn from(error: tokio_postgres::Error) -> Self {
        warn!(%error, "console statement failed");
        PageError::Db(
            error
                .as_db_error()
                .map_or_else(|| error.to_string(), |e| e.message().to_owned()),
        )
    }
}

impl From<deadpool::managed::PoolError<crate::db::DbError>> for PageError {
    fn from(error: deadpool::managed::PoolError<crate::db::DbError>) -> Self {
        warn!(%error, "console cannot get a database connection");
        PageError::Db(format!("no database connection: {error}"))
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let frame = Frame {
            csrf: "",
            notice: None,
            signed_in: false,
        };
        let (status, title, message) = match &self {
            PageError::Db(message) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "The database did not answer",
                message.as_str(),
            ),
            PageError::NotFound(what) => (StatusCode::NOT_FOUND, "Not found", *what),
        };
        (
            status,
            Html(pages::problem(&frame, title, message).into_string()),
        )
            .into_response()
    }
}

fn page(markup: Markup) -> Response {
    Html(markup.into_string()).into_response()
}

/// A page with the session's CSRF token and notice.
fn render(console: &Console, session: &Session, draw: impl FnOnce(&Frame) -> Markup) -> Response {
    let mut csrf = String::new();
    let frame = session.frame(console, &mut csrf);
    page(draw(&frame))
}

async fn existing_subscription(
    client: &tokio_postgres::Client,
    id: i64,
) -> Result<queries::Subscription, PageError> {
    queries::subscription(client, id)
        .await?
        .ok_or(PageError::NotFound(
            "There is no subscription with this id.",
        ))
}

async fn overview(
    State(console): State<Console>,
    Extension(session): Extension<Session>,
) -> Result<Response, PageError> {
    let client = console.inner.pool.get().await?;
    let depth = queries::depth(&client).await?;
    let lag = queries::lag(&client, &console.inner.slot).await?;
    let rates = queries::throughput(&client, 15, 20).await?;
    let subs = queries::subscriptions(&client, true).await?;
    Ok(render(&console, &session, |frame| {
        pages::overview(frame, &depth, &lag, &rates, &subs)
    }))
}

async fn subscriptions(
    State(console): State<Console>,
    Extension(session): Extension<Session>,
) -> Result<Response, PageError> {
    let client = console.inner.pool.get().await?;
    let subs = queries::subscriptions(&client, false).await?;
    Ok(render(&console, &session, |frame| {
        pages::subscriptions(frame, &subs)
    }))
}

#[derive(Debug, Deserialize)]
struct DeliveryQuery {
    state: Option<String>,
    #[serde(rename = "type")]
    event_type: Option<String>,
    before: Option<String>,
}

impl DeliveryQuery {
    fn filter(self) -> DeliveryFilter {
        let nonempty = |v: Option<String>| v.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
        DeliveryFilter {
            state: nonempty(self.state),
            event_type: nonempty(self.event_type),
            before: self.before.and_then(|b| b.trim().parse().ok()),
        }
    }
}

async fn subscription(
    State(console): State<Console>,
    Extension(session): Extension<Session>,
    Path(id): Path<i64>,
    Query(query): Query<DeliveryQuery>,
) -> Result<Response, PageError> {
    let client = console.inner.pool.get().await?;
    let sub = existing_subscription(&client, id).await?;
    let filter = query.filter();
    let (rows, next) = queries::deliveries(&client, id, &filter).await?;
    Ok(render(&console, &session, |frame| {
        pages::subscription(frame, &sub, &rows, next, &filter)
    }))
}

async fn unsubscribe(
    State(console): State<Console>,
    Extension(session): Extension<Session>,
    Path(id): Path<i64>,
) -> Result<Response, PageError> {
    let client = console.inner.pool.get().await?;
    let sub = existing_subscription(&client, id).await?;
    Ok(render(&console, &session, |frame| {
        pages::unsubscribe(frame, &sub)
    }))
}

async fn event(
    State(console): State<Console>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let client = console.inner.pool.get().await?;
    let ev = queries::event(&client, &id)
        .await?
        .ok_or(PageError::NotFound("There is no event with this id."))?;
    Ok(render(&console, &session, |frame| pages::event(frame, &ev)))
}

async fn tail(
    State(console): State<Console>,
    Extension(session): Extension<Session>,
) -> Result<Response, PageError> {
    let client = console.inner.pool.get().await?;
    let lines = queries::tail_recent(&client, 50).await?;
    Ok(render(&console, &session, |frame| {
        pages::tail(frame, &lines)
    }))
}

/// `<delivery id>.<attempt id>`: where a reconnecting tail resumes.
fn parse_cursor(text: &str) -> Option<(i64, i64)> {
    let (delivery, attempt) = text.split_once('.')?;
    Some((delivery.parse().ok()?, attempt.parse().ok()?))
}

async fn tail_events(
    State(console): State<Console>,
    Extension(stop): Extension<CancellationToken>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, PageError> {
    let resumed = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_cursor);
    let cursor = match resumed {
        Some(cursor) => cursor,
        None => queries::tail_cursor(&*console.inner.pool.get().await?).await?,
    };
    let lines = stream::unfold(
        (console, stop, cursor),
        |(console, stop, mut cursor)| async move {
            loop {
                tokio::select! {
                    () = stop.cancelled() => return None,
                    () = tokio::time::sleep(TAIL_POLL) => {}
                }
                let Ok(client) = console.inner.pool.get().await else {
                    continue;
                };
                match queries::tail_since(&client, &mut cursor).await {
                    Ok(lines) if lines.is_empty() => {}
                    Ok(lines) => {
                        let id = format!("{}.{}", cursor.0, cursor.1);
                        let events: Vec<Result<Event, Infallible>> = lines
                            .iter()
                            .filter_map(|line| Event::default().event("line").json_data(line).ok())
                            .map(|e| Ok(e.id(id.clone())))
                            .collect();
                        return Some((stream::iter(events), (console, stop, cursor)));
                    }
                    Err(error) => warn!(%error, "live tail statement failed"),
                }
            }
        },
    )
    .flatten();
    Ok(Sse::new(lines).keep_alive(KeepAlive::default()))
}

#[derive(Debug, Deserialize)]
struct ActionForm {
    csrf: String,
    action: String,
    id: i64,
    back: Option<String>,
    since: Option<String>,
}

/// A local path to return to, or the overview.
fn local_path(back: Option<&str>) -> &str {
    match back {
        Some(path) if path.starts_with('/') && !path.starts_with("//") && !path.contains('\\') => {
            path
        }
        _ => "/",
    }
}

fn forbidden(reason: &str) -> Response {
    let frame = Frame {
        csrf: "",
        notice: None,
        signed_in: false,
    };
    (
        StatusCode::FORBIDDEN,
        Html(pages::problem(&frame, "Refused", reason).into_string()),
    )
        .into_response()
}

/// Why a state-changing request fails the CSRF check, if it does.
fn csrf_refusal(
    console: &Console,
    session: &Session,
    headers: &HeaderMap,
    token: &str,
) -> Option<Response> {
    if !access::same_origin(headers) {
        return Some(forbidden(
            "This request did not come from a console page (its Origin or Referer does not name this server).",
        ));
    }
    match &session.nonce {
        Some(nonce) if console.inner.access.csrf_matches(nonce, token) => None,
        _ => Some(forbidden(
            "This form is out of date or was not made by this console; reload the page and try again.",
        )),
    }
}

fn parse_action(form: &ActionForm) -> Result<Action, String> {
    let id = form.id;
    Ok(match form.action.as_str() {
        "pause" => Action::Pause(id),
        "resume" => Action::Resume(id),
        "unsubscribe" => Action::Unsubscribe(id),
        "ping" => Action::Ping(id),
        "redeliver" => Action::Redeliver(id),
        "redeliver-dead" => Action::RedeliverDead(id),
        "replay" => {
            let text = form.since.as_deref().unwrap_or("").trim();
            let since = parse_since(text).ok_or_else(|| {
                format!("\"{text}\" is not a time; give one like 2026-12-01T09:30 (UTC)")
            })?;
            Action::Replay {
                subscription_id: id,
                since,
            }
        }
        other => return Err(format!("\"{other}\" is not an action of the console")),
    })
}

/// `2026-12-01T09:30` (as a datetime-local field sends it, read as UTC),
/// with seconds, or RFC 3339.
fn parse_since(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .ok()
        .or_else(|| {
            ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M"]
                .iter()
                .find_map(|f| NaiveDateTime::parse_from_str(text, f).ok())
                .map(|t| t.and_utc())
        })
}

async fn act(
    State(console): State<Console>,
    Extension(session): Extension<Session>,
    headers: HeaderMap,
    Form(form): Form<ActionForm>,
) -> Response {
    if let Some(refused) = csrf_refusal(&console, &session, &headers, &form.csrf) {
        return refused;
    }
    let mut csrf = String::new();
    let frame = session.frame(&console, &mut csrf);
    let action = match parse_action(&form) {
        Ok(action) => action,
        Err(message) => {
            return (
                StatusCode::BAD_REQUEST,
                Html(pages::problem(&frame, "Cannot do that", &message).into_string()),
            )
                .into_response()
        }
    };
    let outcome = match console.inner.pool.get().await {
        Ok(client) => action.run(&client).await.map_err(PageError::from),
        Err(error) => Err(PageError::from(error)),
    };
    match outcome {
        Ok(done) => {
            tracing::info!(action = ?action, "console action");
            let mut response = Redirect::to(local_path(form.back.as_deref())).into_response();
            append_cookie(
                &mut response,
                &format!(
                    "{NOTICE_COOKIE}={}; Path=/; HttpOnly; SameSite=Strict; Max-Age=60",
                    BASE64URL.encode(done)
                ),
            );
            response
        }
        Err(PageError::Db(message)) => (
            StatusCode::CONFLICT,
            Html(pages::problem(&frame, "The database refused", &message).into_string()),
        )
            .into_response(),
        Err(other) => other.into_response(),
    }
}

#[derive(Debug, Deserialize)]
struct SignInQuery {
    next: Option<String>,
}

async fn sign_in_page(
    State(console): State<Console>,
    Query(query): Query<SignInQuery>,
) -> Response {
    if !console.inner.access.needs_token() {
        return Redirect::to("/").into_response();
    }
    page(pages::sign_in(local_path(query.next.as_deref()), false))
}

#[derive(Debug, Deserialize)]
struct SignInForm {
    token: String,
    next: Option<String>,
}

async fn sign_in(
    State(console): State<Console>,
    headers: HeaderMap,
    Form(form): Form<SignInForm>,
) -> Response {
    if !access::same_origin(&headers) {
        return forbidden("Sign in from the console's own sign-in page.");
    }
    let next = local_path(form.next.as_deref());
    if !console.inner.access.token_matches(&form.token) {
        // Each wrong guess costs the guesser time.
        tokio::time::sleep(Duration::from_millis(500)).await;
        warn!("console sign-in with a wrong token");
        return (
            StatusCode::UNAUTHORIZED,
            Html(pages::sign_in(next, true).into_string()),
        )
            .into_response();
    }
    let mut response = Redirect::to(next).into_response();
    append_cookie(
        &mut response,
        &access::session_cookie(&console.inner.access.new_session()),
    );
    response
}

#[derive(Debug, Deserialize)]
struct SignOutForm {
    csrf: String,
}

async fn sign_out(
    State(console): State<Console>,
    Extension(session): Extension<Session>,
    headers: HeaderMap,
    Form(form): Form<SignOutForm>,
) -> Response {
    if let Some(refused) = csrf_refusal(&console, &session, &headers, &form.csrf) {
        return refused;
    }
    let mut response = Redirect::to("/sign-in").into_response();
    append_cookie(
        &mut response,
        &format!(
            "{}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0",
            access::SESSION_COOKIE
        ),
    );
    response
}

async fn stylesheet() -> Response {
    asset("text/css; charset=utf-8", STYLESHEET)
}

async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_paths_are_returned_to() {
        assert_eq!(
            local_path(Some("/subscriptions/1?state=dead")),
            "/subscriptions/1?state=dead"
        );
        assert_eq!(local_path(Some("//evil.example/")), "/");
        assert_eq!(local_path(Some("https://evil.example/")), "/");
        assert_eq!(local_path(Some("/\\evil.example")), "/");
        assert_eq!(local_path(None), "/");
    }

    #[test]
    fn replay_times_are_read_as_utc() {
        let at = parse_since("2026-12-01T09:30").expect("datetime-local");
        assert_eq!(at.to_rfc3339(), "2026-12-01T09:30:00+00:00");
        let at = parse_since("2026-12-01T10:30:00+01:00").expect("rfc3339");
        assert_eq!(at.to_rfc3339(), "2026-12-01T09:30:00+00:00");
        assert!(parse_since("yesterday").is_none());
    }

    #[test]
    fn tail_cursors_round_trip() {
        assert_eq!(parse_cursor("12.34"), Some((12, 34)));
        assert_eq!(parse_cursor("12"), None);
        assert_eq!(parse_cursor("a.b"), None);
    }
}
