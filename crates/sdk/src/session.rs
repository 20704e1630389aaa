//! A logged-in device's credentials, and the URLs derived from a server's base URL.

use std::time::{SystemTime, UNIX_EPOCH};

use confab_proto::api::{TokenResponse, User};
use confab_proto::ids::{DeviceId, Millis};
use serde::{Deserialize, Serialize};

/// What a device needs to talk to the server as its user: tokens, the
/// account and the device id. Serializable, so a CLI can keep it in a file
/// and resume with [`Client::with_session`](crate::Client::with_session).
///
/// `Debug` hides the tokens.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    /// Bearer token for the API and the WebSocket.
    pub access_token: String,
    /// One-time token that buys the next pair (refresh tokens rotate).
    pub refresh_token: String,
    /// When the access token expires, milliseconds since the Unix epoch.
    pub access_expires_at: Millis,
    /// The account.
    pub user: User,
    /// This device.
    pub device_id: DeviceId,
    /// The server's HTTP base URL, e.g. `http://127.0.0.1:8080`.
    pub base_url: String,
}

impl Session {
    /// Builds a session from a login or refresh answer received now.
    pub fn from_tokens(tokens: TokenResponse, base_url: &str) -> Session {
        let ttl_ms = i64::try_from(tokens.expires_in.saturating_mul(1000)).unwrap_or(i64::MAX);
        Session {
            access_token: tokens.access_token,
            refresh_token: tokens.refresh_token,
            access_expires_at: now_millis().saturating_add(ttl_ms),
            user: tokens.user,
            device_id: tokens.device_id,
            base_url: base_url.to_owned(),
        }
    }

    /// Whether the access token has expired (by the local clock).
    pub fn is_expired(&self) -> bool {
        now_millis() >= self.access_expires_at
    }
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("access_token", &"<redacted>")
            .field("refresh_token", &"<redacted>")
            .field("access_expires_at", &self.access_expires_at)
            .field("user", &self.user)
            .field("device_id", &self.device_id)
            .field("base_url", &self.base_url)
            .finish()
    }
}

/// Milliseconds since the Unix epoch by the local clock.
pub(crate) fn now_millis() -> Millis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Normalizes a base URL: no trailing slash.
pub(crate) fn normalize_base(base_url: &str) -> String {
    base_url.trim().trim_end_matches('/').to_owned()
}

/// The WebSocket URL for a server: `http(s)://host/prefix` becomes
/// `ws(s)://host/prefix/v1/ws`. A URL that already starts with `ws://` or
/// `wss://` is taken as the full WebSocket URL.
pub fn ws_url(base_or_ws_url: &str) -> String {
    let url = normalize_base(base_or_ws_url);
    if url.starts_with("ws://") || url.starts_with("wss://") {
        return url;
    }
    let swapped = if let Some(rest) = url.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if let Some(rest) = url.strip_prefix("http://") {
        format!("ws://{rest}")
    } else {
        format!("ws://{url}")
    };
    format!("{swapped}/v1/ws")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ws_urls() {
        let cases = [
            ("http://127.0.0.1:8080", "ws://127.0.0.1:8080/v1/ws"),
            ("http://127.0.0.1:8080/", "ws://127.0.0.1:8080/v1/ws"),
            (
                "https://chat.example/confab",
                "wss://chat.example/confab/v1/ws",
            ),
            ("localhost:9", "ws://localhost:9/v1/ws"),
            ("ws://a:1/v1/ws", "ws://a:1/v1/ws"),
            ("wss://a/custom", "wss://a/custom"),
        ];
        for (base, want) in cases {
            assert_eq!(ws_url(base), want, "{base}");
        }
    }

    #[test]
    fn debug_hides_tokens_and_serde_round_trips() {
        let s = Session {
            access_token: "secret-a".into(),
            refresh_token: "secret-r".into(),
            access_expires_at: 1,
            user: User {
                id: 1,
                username: "ann".into(),
                display_name: "Ann".into(),
                avatar_media_id: None,
                status_text: None,
                created_at: 0,
                hide_presence: None,
            },
            device_id: 2,
            base_url: "http://x".into(),
        };
        let dbg = format!("{s:?}");
        assert!(!dbg.contains("secret"), "{dbg}");
        assert!(s.is_expired());
        let json = serde_json::to_string(&s).expect("serialize");
        let back: Session = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back, s);
    }
}
