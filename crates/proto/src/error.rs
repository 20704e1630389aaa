//! Error codes shared by HTTP responses and WebSocket `error` frames.

use serde::{Deserialize, Serialize};

/// Every error code Confab answers with. The snake_case names are the wire
/// contract (see docs/protocol.md); the HTTP status goes with the code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The request is malformed or a field is out of range.
    BadRequest,
    /// A WebSocket frame could not be parsed or has an unknown `type`.
    BadFrame,
    /// The username does not follow the username rules.
    InvalidUsername,
    /// The password is too short or too long.
    WeakPassword,
    /// The username is already registered (case-insensitively).
    UsernameTaken,
    /// Wrong username or password.
    InvalidCredentials,
    /// Missing, unknown, expired or revoked access token.
    Unauthorized,
    /// Unknown, expired or already used refresh token.
    InvalidRefreshToken,
    /// The caller may not do this.
    Forbidden,
    /// No such thing, or the caller may not know it exists.
    NotFound,
    /// A frame, message or request body is over its configured limit.
    MessageTooLarge,
    /// The caller sent too much too fast; retry later.
    RateLimited,
    /// The server cannot take this now (storage down, shutting down); retry.
    Unavailable,
    /// The recipient has blocked the sender.
    Blocked,
    /// The server only allows direct messages between friends.
    NotFriends,
    /// An uploaded media file is over the size limit.
    MediaTooLarge,
    /// The group is at its member limit.
    GroupFull,
    /// A plain message (or edit, reaction) in an end-to-end encrypted
    /// conversation, which takes only `encrypted` messages.
    EncryptionRequired,
    /// An `encrypted` message names an MLS epoch that is not the
    /// conversation's current one (a commit for it was already accepted).
    EpochConflict,
    /// An uploaded MLS KeyPackage fails a check.
    InvalidKeyPackage,
    /// A device's KeyPackage stock is full.
    KeyPackageLimit,
    /// A bug or an unexpected failure on the server.
    Internal,
}

impl ErrorCode {
    /// The HTTP status that goes with this code.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::BadRequest
            | ErrorCode::BadFrame
            | ErrorCode::InvalidUsername
            | ErrorCode::WeakPassword
            | ErrorCode::EncryptionRequired
            | ErrorCode::InvalidKeyPackage => 400,
            ErrorCode::InvalidCredentials
            | ErrorCode::Unauthorized
            | ErrorCode::InvalidRefreshToken => 401,
            ErrorCode::Forbidden | ErrorCode::Blocked | ErrorCode::NotFriends => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::UsernameTaken
            | ErrorCode::GroupFull
            | ErrorCode::EpochConflict
            | ErrorCode::KeyPackageLimit => 409,
            ErrorCode::MessageTooLarge | ErrorCode::MediaTooLarge => 413,
            ErrorCode::RateLimited => 429,
            ErrorCode::Internal => 500,
            ErrorCode::Unavailable => 503,
        }
    }

    /// Whether the same request may succeed if simply tried again later.
    pub fn is_retryable(self) -> bool {
        matches!(self, ErrorCode::RateLimited | ErrorCode::Unavailable)
    }

    /// The wire name, e.g. `"bad_frame"`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::BadFrame => "bad_frame",
            ErrorCode::InvalidUsername => "invalid_username",
            ErrorCode::WeakPassword => "weak_password",
            ErrorCode::UsernameTaken => "username_taken",
            ErrorCode::InvalidCredentials => "invalid_credentials",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::InvalidRefreshToken => "invalid_refresh_token",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MessageTooLarge => "message_too_large",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Blocked => "blocked",
            ErrorCode::NotFriends => "not_friends",
            ErrorCode::MediaTooLarge => "media_too_large",
            ErrorCode::GroupFull => "group_full",
            ErrorCode::EncryptionRequired => "encryption_required",
            ErrorCode::EpochConflict => "epoch_conflict",
            ErrorCode::InvalidKeyPackage => "invalid_key_package",
            ErrorCode::KeyPackageLimit => "key_package_limit",
            ErrorCode::Internal => "internal",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error with a code and a human-readable message: what the HTTP error
/// body and the WebSocket `error` frame carry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    /// Machine-readable code.
    pub code: ErrorCode,
    /// Lower-case explanation that says what to do.
    pub message: String,
}

impl ApiError {
    /// Makes an error from a code and a message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
        }
    }
}

/// The JSON body of every HTTP error: `{"error": {"code", "message"}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error.
    pub error: ApiError,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_names_match_as_str() {
        let all = [
            ErrorCode::BadRequest,
            ErrorCode::BadFrame,
            ErrorCode::InvalidUsername,
            ErrorCode::WeakPassword,
            ErrorCode::UsernameTaken,
            ErrorCode::InvalidCredentials,
            ErrorCode::Unauthorized,
            ErrorCode::InvalidRefreshToken,
            ErrorCode::Forbidden,
            ErrorCode::NotFound,
            ErrorCode::MessageTooLarge,
            ErrorCode::RateLimited,
            ErrorCode::Unavailable,
            ErrorCode::Blocked,
            ErrorCode::NotFriends,
            ErrorCode::MediaTooLarge,
            ErrorCode::GroupFull,
            ErrorCode::EncryptionRequired,
            ErrorCode::EpochConflict,
            ErrorCode::InvalidKeyPackage,
            ErrorCode::KeyPackageLimit,
            ErrorCode::Internal,
        ];
        for code in all {
            let json = serde_json::to_string(&code).expect("serialize");
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            let back: ErrorCode = serde_json::from_str(&json).expect("deserialize");
            assert_eq!(back, code);
        }
    }

    #[test]
    fn error_body_shape() {
        let body = ErrorBody {
            error: ApiError::new(ErrorCode::UsernameTaken, "username is taken"),
        };
        assert_eq!(
            serde_json::to_string(&body).expect("serialize"),
            r#"{"error":{"code":"username_taken","message":"username is taken"}}"#
        );
    }
}
