//! Liveness, readiness and metrics.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use confab_proto::api::Health;

use crate::state::AppState;

/// `GET /healthz`: the process is up.
pub async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
    })
}

/// `GET /readyz`: the store and the bus answer, and we are not shutting down.
pub async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let problem = if state.shutdown.is_cancelled() {
        Some("shutting down".to_string())
    } else if let Err(e) = state.store.ping().await {
        Some(format!("store: {e}"))
    } else if !state.bus.is_ready() {
        Some("bus not connected".to_string())
    } else {
        None
    };
    match problem {
        None => (
            StatusCode::OK,
            Json(Health {
                status: "ok".into(),
            }),
        ),
        Some(p) => (StatusCode::SERVICE_UNAVAILABLE, Json(Health { status: p })),
    }
}

/// `GET /metrics`: Prometheus text.
pub async fn metrics() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        crate::metrics::render(),
    )
}
