//! The console's buttons: a POST to `/actions` names an action of the SQL
//! interface and its arguments; once the same-origin and CSRF checks
//! pass, it runs, and the browser is sent back with a notice of what it
//! did.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as BASE64URL;
use base64::Engine;
use chrono::{DateTime, NaiveDateTime, Utc};
use serde::Deserialize;

use super::handlers::PageError;
use super::pages;
use super::queries::Action;
use super::session::{append_cookie, csrf_refusal, local_path, Session};
use super::{Console, NOTICE_COOKIE};

/// A button's form: the action, the id it acts on, and what some actions
/// take besides (`since` for a replay; `table` and `subscription` for a
/// backfill, which has no id yet).
#[derive(Debug, Deserialize)]
pub(super) struct ActionForm {
    csrf: String,
    action: String,
    id: Option<i64>,
    back: Option<String>,
    since: Option<String>,
    table: Option<String>,
    /// A subscription id, or empty for every matching subscription.
    subscription: Option<String>,
}

fn parse_action(form: &ActionForm) -> Result<Action, String> {
    if form.action == "backfill" {
        return parse_backfill(form);
    }
    let id = form
        .id
        .ok_or_else(|| format!("the action \"{}\" needs the id it acts on", form.action))?;
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
        "cancel-backfill" => Action::CancelBackfill(id),
        other => return Err(format!("\"{other}\" is not an action of the console")),
    })
}

fn parse_backfill(form: &ActionForm) -> Result<Action, String> {
    let table = form.table.as_deref().unwrap_or("").trim();
    if table.is_empty() {
        return Err("choose the table to backfill".into());
    }
    let subscription = form.subscription.as_deref().unwrap_or("").trim();
    let subscription_id = match subscription {
        "" => None,
        text => Some(text.parse::<i64>().map_err(|_| {
            format!(
                "\"{text}\" is not a subscription id; choose one, or every matching subscription"
            )
        })?),
    };
    Ok(Action::Backfill {
        table: table.to_owned(),
        subscription_id,
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

pub(super) async fn act(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_times_are_read_as_utc() {
        let at = parse_since("2026-12-01T09:30").expect("datetime-local");
        assert_eq!(at.to_rfc3339(), "2026-12-01T09:30:00+00:00");
        let at = parse_since("2026-12-01T10:30:00+01:00").expect("rfc3339");
        assert_eq!(at.to_rfc3339(), "2026-12-01T09:30:00+00:00");
        assert!(parse_since("yesterday").is_none());
    }

    fn form(action: &str, id: Option<i64>, table: &str, subscription: &str) -> ActionForm {
        ActionForm {
            csrf: String::new(),
            action: action.into(),
            id,
            back: None,
            since: None,
            table: Some(table.into()),
            subscription: Some(subscription.into()),
        }
    }

    #[test]
    fn a_backfill_names_its_table_and_maybe_a_subscription() {
        match parse_action(&form("backfill", None, " public.orders ", "")) {
            Ok(Action::Backfill {
                table,
                subscription_id: None,
            }) => assert_eq!(table, "public.orders"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse_action(&form("backfill", None, "orders", "3")),
            Ok(Action::Backfill {
                subscription_id: Some(3),
                ..
            })
        ));
        let error = parse_action(&form("backfill", None, "", "")).expect_err("no table");
        assert!(error.contains("choose the table"), "{error}");
        let error = parse_action(&form("backfill", None, "orders", "x")).expect_err("bad id");
        assert!(error.contains("\"x\" is not a subscription id"), "{error}");
        assert!(matches!(
            parse_action(&form("cancel-backfill", Some(4), "", "")),
            Ok(Action::CancelBackfill(4))
        ));
        let error = parse_action(&form("pause", None, "", "")).expect_err("no id");
        assert!(error.contains("needs the id"), "{error}");
    }
}
