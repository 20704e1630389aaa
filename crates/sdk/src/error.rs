//! The SDK's error type: what can go wrong talking to a Confab server.

use confab_proto::{ApiError, ErrorBody, ErrorCode};

/// Everything an SDK call can fail with.
///
/// The variants carry strings rather than the underlying library errors so
/// that the type is `Clone` (one failed send may have several waiters) and
/// does not tie callers to the versions of `reqwest` or `tungstenite`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The server answered an HTTP request (or a WebSocket upgrade) with an
    /// error status and body.
    #[error("server answered {status}: {error}")]
    Http {
        /// HTTP status code.
        status: u16,
        /// The error from the body (or one made from the status when the
        /// body was not a Confab error).
        error: ApiError,
    },
    /// The server rejected a WebSocket request (an `error` frame), e.g. a
    /// `send` to a conversation the user is not in.
    #[error("server rejected the request: {0}")]
    Api(ApiError),
    /// The network failed: connect, TLS, reset, or a broken WebSocket.
    #[error("transport failed: {0}")]
    Transport(String),
    /// The connection (or client) was closed before the operation finished.
    #[error("connection is closed")]
    Closed,
    /// Nothing arrived within the time allowed.
    #[error("timed out")]
    Timeout,
    /// The server sent something that is not what the protocol says.
    #[error("could not decode what the server sent: {0}")]
    Decode(String),
    /// The call needs a session: log in first or use `Client::with_session`.
    #[error("not logged in: call Client::login first or build the client with a session")]
    NoSession,
    /// A URL or header could not be built from what the caller gave.
    #[error("invalid input: {0}")]
    InvalidInput(String),
}

/// Result with the SDK's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The Confab error code, when the server gave one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Error::Http { error, .. } | Error::Api(error) => Some(error.code),
            _ => None,
        }
    }

    /// The HTTP status, for errors that came from an HTTP answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Http { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Builds an [`Error::Http`] from a status and a response body. A body
    /// that is not `{"error": {...}}` still gives an error, with a code
    /// guessed from the status.
    pub(crate) fn from_http_body(status: u16, body: &[u8]) -> Error {
        let error = match serde_json::from_slice::<ErrorBody>(body) {
            Ok(b) => b.error,
            Err(_) => {
                let text = String::from_utf8_lossy(body);
                let text: String = text.chars().take(200).collect();
                ApiError::new(code_for_status(status), format!("http {status}: {text}"))
            }
        };
        Error::Http { status, error }
    }
}

/// The error code that best matches a bare HTTP status.
fn code_for_status(status: u16) -> ErrorCode {
    match status {
        401 => ErrorCode::Unauthorized,
        403 => ErrorCode::Forbidden,
        404 => ErrorCode::NotFound,
        413 => ErrorCode::MessageTooLarge,
        429 => ErrorCode::RateLimited,
        502..=504 => ErrorCode::Unavailable,
        500..=599 => ErrorCode::Internal,
        _ => ErrorCode::BadRequest,
    }
}

impl From<reqwest::Error> for Error {
    fn from(e: reqwest::Error) -> Self {
        if e.is_timeout() {
            Error::Timeout
        } else if e.is_decode() {
            Error::Decode(e.to_string())
        } else {
            Error::Transport(e.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_errors_parse_the_body_or_fall_back_to_the_status() {
        let body = br#"{"error":{"code":"username_taken","message":"taken"}}"#;
        let e = Error::from_http_body(409, body);
        assert_eq!(e.code(), Some(ErrorCode::UsernameTaken));
        assert_eq!(e.status(), Some(409));

        let cases = [
            (401, ErrorCode::Unauthorized),
            (429, ErrorCode::RateLimited),
            (503, ErrorCode::Unavailable),
            (500, ErrorCode::Internal),
            (418, ErrorCode::BadRequest),
        ];
        for (status, code) in cases {
            let e = Error::from_http_body(status, b"<html>oops</html>");
            assert_eq!(e.code(), Some(code), "{status}");
        }
    }
}
