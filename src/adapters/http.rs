//! `/metrics`, `/healthz` and `/readyz`.
//!
//! Both probes answer 200 `ok`, or 503 with one line per failing check, so
//! `kubectl describe pod` and a curl say what is wrong.

use crate::telemetry::Metrics;
use crate::telemetry::health::Health;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use std::net::SocketAddr;
use std::sync::Arc;

#[derive(Clone)]
struct HttpState {
    metrics: Arc<Metrics>,
    health: Arc<Health>,
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

fn answer(result: Result<(), Vec<String>>) -> (StatusCode, String) {
    match result {
        Ok(()) => (StatusCode::OK, "ok\n".to_string()),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, why.join("\n") + "\n"),
    }
}

async fn readyz(State(s): State<HttpState>) -> impl IntoResponse {
    answer(s.health.readiness())
}

async fn healthz(State(s): State<HttpState>) -> impl IntoResponse {
    answer(s.health.liveness())
}

/// Serves /metrics, /healthz and /readyz until the process ends.
pub async fn serve(
    listen: SocketAddr,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(self::metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(HttpState { metrics, health });
    let listener = tokio::net::TcpListener::bind(listen).await?;
    tracing::info!(%listen, "serving /metrics, /healthz and /readyz");
    axum::serve(listener, app).await
}
