//! The one place that turns failures into HTTP responses (and, through
//! [`ApiError`], into WebSocket `error` frames).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use confab_proto::{ApiError, ErrorBody, ErrorCode};
use confab_store::StoreError;

/// An error on its way to a client.
#[derive(Debug)]
pub struct AppError(pub ApiError);

/// Handler result.
pub type AppResult<T> = Result<T, AppError>;

impl AppError {
    /// Error with a code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> AppError {
        AppError(ApiError::new(code, message))
    }

    /// 404 with a message.
    pub fn not_found(what: &str) -> AppError {
        AppError::new(ErrorCode::NotFound, format!("no such {what}"))
    }

    /// 400 with a message.
    pub fn bad_request(message: impl Into<String>) -> AppError {
        AppError::new(ErrorCode::BadRequest, message)
    }
}

impl From<ApiError> for AppError {
    fn from(e: ApiError) -> Self {
        AppError(e)
    }
}

impl From<StoreError> for AppError {
    fn from(e: StoreError) -> Self {
        AppError(store_error(e))
    }
}

/// Maps a store failure to what a client is told.
pub fn store_error(e: StoreError) -> ApiError {
    match e {
        StoreError::Conflict => ApiError::new(ErrorCode::BadRequest, "that already exists"),
        StoreError::Unavailable(detail) => {
            tracing::warn!(%detail, "store unavailable");
            ApiError::new(
                ErrorCode::Unavailable,
                "storage is unavailable, try again shortly",
            )
        }
        StoreError::Corrupt(detail) => {
            tracing::error!(%detail, "stored data unreadable");
            ApiError::new(ErrorCode::Internal, "internal error")
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        crate::metrics::error(self.0.code);
        let status = StatusCode::from_u16(self.0.code.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, Json(ErrorBody { error: self.0 })).into_response()
    }
}
