//! `/metrics`, `/healthz` and `/readyz`.

use crate::telemetry::Metrics;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// What /readyz reports: each part must be up.
#[derive(Default)]
pub struct Readiness {
    /// The identity key is loaded.
    pub identity: AtomicBool,
    /// The zone has been built from a complete list of SendingDomains (and, for
    /// the embedded backend, the DNS server is listening).
    pub zone: AtomicBool,
    /// The process is stopping: it still answers DNS, but takes no new traffic.
    pub draining: AtomicBool,
}

impl Readiness {
    pub fn ready(&self) -> bool {
        self.identity.load(Ordering::Relaxed)
            && self.zone.load(Ordering::Relaxed)
            && !self.draining.load(Ordering::Relaxed)
    }
}

#[derive(Clone)]
struct HttpState {
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
}

async fn metrics(State(s): State<HttpState>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.render(),
    )
}

async fn readyz(State(s): State<HttpState>) -> impl IntoResponse {
    if s.readiness.ready() {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

/// Serves /metrics, /healthz and /readyz until the process ends.
pub async fn serve(
    listen: SocketAddr,
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(self::metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(HttpState { metrics, readiness });
    let listener = tokio::net::TcpListener::bind(listen).await?;
    tracing::info!(%listen, "serving /metrics, /healthz and /readyz");
    axum::serve(listener, app).await
}
