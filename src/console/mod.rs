//! The console: HTML pages at `/` of the admin server to see every
//! subscription, delivery, event, attempt and backfill and to act on them
//! through the SQL interface's functions, with a live tail over
//! server-sent events.
//!
//! Pages are rendered on the server and work without JavaScript; the one
//! script (the live tail) and the stylesheet are served from the binary,
//! so the Content-Security-Policy allows nothing inline and nothing from
//! elsewhere. Who may see the pages is [`access`]'s business and
//! [`session`]'s guard enforces it; [`handlers`] read each page through
//! [`queries`] on the console's own small pool and draw it with [`pages`];
//! [`actions`] run the buttons.

pub mod access;
mod actions;
pub mod change;
mod handlers;
mod headers;
pub mod pages;
pub mod pool;
pub mod queries;
mod session;

use std::sync::Arc;
use std::time::Duration;

use crate::pool::Pool;
use axum::http::HeaderMap;
use axum::middleware;
use axum::routing::{get, post};
use axum::{Extension, Router};
use tokio_util::sync::CancellationToken;

use access::{Access, AccessError};
use handlers::{
    backfills, event, overview, script, stylesheet, subscription, subscriptions, tail, tail_events,
    unsubscribe,
};
use session::{guard, secure_headers, sign_in, sign_in_page, sign_out};

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
            .route("/backfills", get(backfills))
            .route("/actions", post(actions::act))
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
