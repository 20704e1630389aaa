//! The browser app: static files served at the site root, from the copy
//! embedded in the binary (or from `web_dir` while developing), under a
//! strict Content-Security-Policy.
//!
//! Anything under `/v1` that no API route matched, and any path that is not
//! a file of the app, is answered `404 not_found` as before.

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use confab_proto::ErrorCode;
use sha2::{Digest, Sha256};

use crate::error::AppError;
use crate::state::AppState;

/// The files of `crates/server/web`, compiled into the binary.
#[derive(rust_embed::RustEmbed)]
#[folder = "web/"]
struct Assets;

/// One file of the app, ready to serve (the embedded bytes are served
/// from the binary as they are, never copied).
struct Asset {
    bytes: std::borrow::Cow<'static, [u8]>,
    sha256: [u8; 32],
}

/// Fallback handler: a file of the browser app, or the API's 404.
pub async fn serve(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let not_found = || AppError::new(ErrorCode::NotFound, "no such endpoint").into_response();
    if method != Method::GET && method != Method::HEAD {
        return not_found();
    }
    let path = uri.path();
    if path == "/v1" || path.starts_with("/v1/") {
        return not_found();
    }
    let Some(rel) = relative_path(path) else {
        return not_found();
    };
    let asset = match &state.config.web_dir {
        Some(dir) => read_dir_asset(dir, &rel).await,
        None => Assets::get(&rel).map(|f| Asset {
            sha256: f.metadata.sha256_hash(),
            bytes: f.data,
        }),
    };
    let Some(asset) = asset else {
        return not_found();
    };

    let etag = format!("\"{}\"", crate::hex::encode(&asset.sha256));
    let mut out = HeaderMap::new();
    out.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(&rel)),
    );
    out.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(v) = HeaderValue::from_str(&etag) {
        out.insert(header::ETAG, v);
    }
    if let Ok(v) = HeaderValue::from_str(&content_security_policy(&headers)) {
        out.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    out.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    out.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    out.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    out.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    out.insert(
        "permissions-policy",
        HeaderValue::from_static("microphone=(self), camera=(self), geolocation=()"),
    );

    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    if fresh {
        return (StatusCode::NOT_MODIFIED, out).into_response();
    }
    let body = if method == Method::HEAD {
        Body::empty()
    } else {
        Body::from(asset.bytes)
    };
    (StatusCode::OK, out, body).into_response()
}

/// `/` is `index.html`; other paths must be plain relative file names
/// (no empty, hidden, `..` or backslashed segments), else `None`.
fn relative_path(path: &str) -> Option<String> {
    if path == "/" {
        return Some("index.html".to_string());
    }
    let rel = path.strip_prefix('/')?;
    let ok = rel.split('/').all(|seg| {
        !seg.is_empty() && !seg.starts_with('.') && !seg.contains('\\') && !seg.contains('\0')
    });
    ok.then(|| rel.to_string())
}

async fn read_dir_asset(dir: &std::path::Path, rel: &str) -> Option<Asset> {
    let path = dir.join(rel);
    if !tokio::fs::metadata(&path).await.ok()?.is_file() {
        return None;
    }
    let bytes = tokio::fs::read(&path).await.ok()?;
    let sha256 = Sha256::digest(&bytes).into();
    Some(Asset {
        bytes: bytes.into(),
        sha256,
    })
}

/// Types for what the app is made of; anything else is served as bytes
/// (and `nosniff` keeps the browser from guessing).
fn content_type(rel: &str) -> &'static str {
    let ext = rel.rsplit_once('.').map(|(_, e)| e).unwrap_or("");
    match ext {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" => "application/json",
        "webmanifest" => "application/manifest+json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// No inline script or style, no eval, nothing from other origins; the
/// WebSocket is allowed to this same host (named explicitly: older
/// browsers do not count `ws:` as `'self'`).
fn content_security_policy(headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .filter(|h| {
            !h.is_empty()
                && h.len() <= 255
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
        });
    let ws = match host {
        Some(h) => format!(" ws://{h} wss://{h}"),
        None => String::new(),
    };
    format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; \
         media-src 'self' blob:; connect-src 'self'{ws}; font-src 'self'; manifest-src 'self'; \
         base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_that_can_not_leave_the_folder() {
        assert_eq!(relative_path("/").as_deref(), Some("index.html"));
        assert_eq!(
            relative_path("/app/main.js").as_deref(),
            Some("app/main.js")
        );
        for bad in [
            "/../etc/passwd",
            "/app/../../x",
            "/.git/config",
            "//x",
            "/app/",
            "/a\\b",
        ] {
            assert_eq!(relative_path(bad), None, "{bad}");
        }
    }

    #[test]
    fn csp_names_only_a_plain_host() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("chat.example:8080"));
        assert!(content_security_policy(&h)
            .contains("connect-src 'self' ws://chat.example:8080 wss://chat.example:8080;"));
        h.insert(header::HOST, HeaderValue::from_static("evil; script-src *"));
        let csp = content_security_policy(&h);
        assert!(csp.contains("connect-src 'self';"), "{csp}");
        assert!(!csp.contains("evil"));
    }
}
