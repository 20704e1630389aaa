//! Extractors whose rejections use Confab's JSON error shape.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts};
use axum::http::StatusCode;
use confab_proto::ErrorCode;

use crate::error::AppError;

/// `Json` whose errors are `bad_request` (or `message_too_large`).
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(AppError))]
pub struct ApiJson<T>(pub T);

/// `Query` whose errors are `bad_request`.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(AppError))]
pub struct ApiQuery<T>(pub T);

/// `Path` whose errors are `not_found` (a malformed id names nothing).
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(AppError))]
pub struct ApiPath<T>(pub T);

impl From<JsonRejection> for AppError {
    fn from(r: JsonRejection) -> Self {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            AppError::new(
                ErrorCode::MessageTooLarge,
                "request body is over the size limit",
            )
        } else {
            AppError::new(ErrorCode::BadRequest, r.body_text())
        }
    }
}

impl From<QueryRejection> for AppError {
    fn from(r: QueryRejection) -> Self {
        AppError::new(ErrorCode::BadRequest, r.body_text())
    }
}

impl From<PathRejection> for AppError {
    fn from(_: PathRejection) -> Self {
        AppError::new(ErrorCode::NotFound, "no such resource")
    }
}
