//! The pages: each handler reads what its page shows through
//! [`queries`](super::queries) on the console's pool and draws it with
//! [`pages`]; the live tail's stream; the stylesheet and the script.

use std::convert::Infallible;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::Extension;
use futures_util::stream::{self, Stream, StreamExt};
use maud::Markup;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::pages::{self, Frame};
use super::queries::{self, DeliveryFilter};
use super::session::Session;
use super::{Console, SCRIPT, STYLESHEET, TAIL_POLL};

/// Why a page could not be shown.
pub(super) enum PageError {
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

pub(super) fn page(markup: Markup) -> Response {
    Html(markup.into_string()).into_response()
}

/// A page with the session's CSRF token and notice.
pub(super) fn render(
    console: &Console,
    session: &Session,
    draw: impl FnOnce(&Frame) -> Markup,
) -> Response {
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

pub(super) async fn overview(
    State(console): State<Console>,
    Extension(session): Extension<Session>,
) -> Result<Response, PageError> {
    let client = console.inner.pool.get().await?;
    let depth = queries::depth(&client).await?;
    let lag = queries::lag(&client, &console.inner.slot).await?;
    let rates = queries::throughput(&client, 15, 20).await?;
    let subs = queries::subscriptions(&client, true).await?;
    let backfills = queries::backfills(&client, false, BACKFILLS_ON_OVERVIEW).await?;
    Ok(render(&console, &session, |frame| {
        pages::overview(frame, &depth, &lag, &rates, &subs, &backfills)
    }))
}

pub(super) async fn subscriptions(
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
pub(super) struct DeliveryQuery {
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

pub(super) async fn subscription(
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

pub(super) async fn unsubscribe(
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

pub(super) async fn event(
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

pub(super) async fn tail(
    State(console): State<Console>,
    Extension(session): Extension<Session>,
) -> Result<Response, PageError> {
    let client = console.inner.pool.get().await?;
    let lines = queries::tail_recent(&client, 50).await?;
    Ok(render(&console, &session, |frame| {
        pages::tail(frame, &lines)
    }))
}

/// Backfills shown on their page: the newest this many.
const BACKFILLS_SHOWN: i64 = 100;

/// Backfills on the overview: those pending, running or finished in the
/// last hour, at most this many.
const BACKFILLS_ON_OVERVIEW: i64 = 20;

pub(super) async fn backfills(
    State(console): State<Console>,
    Extension(session): Extension<Session>,
) -> Result<Response, PageError> {
    let client = console.inner.pool.get().await?;
    let list = queries::backfills(&client, true, BACKFILLS_SHOWN).await?;
    let targets = queries::backfill_targets(&client).await?;
    Ok(render(&console, &session, |frame| {
        pages::backfills(frame, &list, &targets)
    }))
}

/// `<delivery id>.<attempt id>`: where a reconnecting tail resumes.
fn parse_cursor(text: &str) -> Option<(i64, i64)> {
    let (delivery, attempt) = text.split_once('.')?;
    Some((delivery.parse().ok()?, attempt.parse().ok()?))
}

pub(super) async fn tail_events(
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

pub(super) async fn stylesheet() -> Response {
    asset("text/css; charset=utf-8", STYLESHEET)
}

pub(super) async fn script() -> Response {
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
    fn tail_cursors_round_trip() {
        assert_eq!(parse_cursor("12.34"), Some((12, 34)));
        assert_eq!(parse_cursor("12"), None);
        assert_eq!(parse_cursor("a.b"), None);
    }
}
