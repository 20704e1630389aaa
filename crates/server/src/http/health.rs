//! Liveness, readiness and metrics.

use crate::openapi::{code, Errors};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use confab_proto::ErrorCode;
use sha2::{Digest, Sha256};

use crate::error::AppError;
use axum::Json;
use confab_proto::api::Health;

use crate::state::AppState;

/// `GET /healthz`: the process is up.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    responses((status = 200, description = "The process is up", body = Health)),
)]
pub async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
    })
}

/// `GET /readyz`: the store and the bus answer, and we are not shutting down.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    responses(
        (status = 200, description = "Ready: storage and bus answer", body = Health),
        (status = 503, description = "Not ready: `status` says why", body = Health),
    ),
)]
pub async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let problem = if state.shutdown.is_cancelled() {
        Some("shutting down".to_string())
    } else if let Some(problem) = store_problem(&state).await {
        Some(problem)
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

/// What is wrong with the store, if anything; a store that does not
/// answer within two seconds counts as down.
async fn store_problem(state: &AppState) -> Option<String> {
    match tokio::time::timeout(std::time::Duration::from_secs(2), state.store.ping()).await {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(format!("store: {e}")),
        Err(_) => Some("store: no answer within 2 s".into()),
    }
}

/// `GET /metrics`: Prometheus text.
pub async fn metrics() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        crate::metrics::render(),
    )
}

/// `GET /metrics` on the main address: only with `http.metrics_token` set
/// and presented as `Authorization: Bearer …`; otherwise 404 (metrics then
/// live on `http.metrics_listen`, or nowhere).
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    security(("metrics_token" = [])),
    responses(
        (status = 200, description = "Prometheus text exposition", content_type = "text/plain", body = String),
        Errors<(code::Unauthorized, code::NotFound)>,
    ),
)]
pub async fn metrics_with_token(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let Some(expected) = &state.config.http.metrics_token else {
        return AppError::not_found("metrics here (they are served on the metrics address)")
            .into_response();
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    // Compared as digests: the time taken says nothing about the token.
    if Sha256::digest(given.as_bytes()) != Sha256::digest(expected.expose().as_bytes()) {
        return AppError::new(
            ErrorCode::Unauthorized,
            "metrics need Authorization: Bearer <metrics token>",
        )
        .into_response();
    }
    metrics().await.into_response()
}
