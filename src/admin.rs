//! The admin endpoints: `/healthz` (is the relay up, its database
//! reachable, capture and delivery working; 503 naming the stuck part
//! otherwise), `/metrics` (Prometheus) and the console at `/`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::health::StageHealth;

/// What `/healthz` needs to know of capture: the capture loop provides
/// it, and the admin server sees nothing else of capture.
pub trait CaptureView: Send + Sync {
    /// Whether this relay captures (holds the capture lock) rather than
    /// standing by while another one does.
    fn is_capturing(&self) -> bool;

    /// The capture stage's health: failing or working.
    fn health(&self) -> &StageHealth;
}

/// What the admin endpoints read.
#[derive(Clone)]
pub struct AdminState {
    /// Connections for the health check (shared with the gauges).
    pub pool: crate::pool::Pool,
    /// Capture's role and health, for `/healthz`.
    pub capture: Arc<dyn CaptureView>,
    /// Delivery's health, for `/healthz`.
    pub delivery: Arc<StageHealth>,
    /// The console served at `/`, which also decides who may read
    /// `/metrics`.
    pub console: crate::console::Console,
}

/// The running server.
pub struct Admin {
    /// The address it listens on (the port chosen when `listen` had 0).
    pub local_addr: SocketAddr,
    /// Ends once `stop` fired and open requests finished.
    pub task: JoinHandle<()>,
}

/// Binds `listen` and serves until `stop` fires.
pub async fn serve(
    listen: SocketAddr,
    state: AdminState,
    stop: CancellationToken,
) -> std::io::Result<Admin> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let local_addr = listener.local_addr()?;
    let metrics = crate::metrics::install();
    let console = state.console.clone();
    let app = Router::new()
        .route("/healthz", get(healthz))
        .with_state(state)
        .route(
            "/metrics",
            get({
                let console = console.clone();
                move |headers: HeaderMap| {
                    let allowed = console.authorizes(&headers);
                    let metrics = metrics.clone();
                    async move {
                        if !allowed {
                            return (
                                StatusCode::UNAUTHORIZED,
                                [(axum::http::header::WWW_AUTHENTICATE, "Bearer")],
                                "send the admin token: Authorization: Bearer <admin.token>",
                            )
                                .into_response();
                        }
                        render_metrics(metrics).await
                    }
                }
            }),
        )
        .merge(console.routes(stop.clone()));
    let task = tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
        if let Err(error) = served {
            tracing::warn!(%error, "admin server stopped");
        }
    });
    Ok(Admin { local_addr, task })
}

async fn healthz(State(state): State<AdminState>) -> Response {
    let capture = if state.capture.is_capturing() {
        "capturing"
    } else {
        "standby"
    };
    let reachable = tokio::time::timeout(Duration::from_secs(2), async {
        let client = state.pool.get().await.ok()?;
        client.query_one("SELECT 1", &[]).await.ok()
    })
    .await
    .ok()
    .flatten()
    .is_some();
    let report = crate::health::report(
        reachable,
        capture,
        state.capture.health().failure(),
        state.delivery.failure(),
    );
    let status = if report.healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(report.body)).into_response()
}

async fn render_metrics(handle: Option<metrics_exporter_prometheus::PrometheusHandle>) -> Response {
    match handle {
        Some(handle) => (
            [(
                axum::http::header::CONTENT_TYPE,
                "text/plain; version=0.0.4",
            )],
            handle.render(),
        )
            .into_response(),
        None => (
            StatusCode::NOT_FOUND,
            "metrics are not enabled in this process",
        )
            .into_response(),
    }
}
