//! Extractors whose rejections use Confab's JSON error shape, and the
//! authenticated caller ([`AuthUser`] from the `Authorization` header,
//! [`WsAuthUser`] for WebSocket upgrades).

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts};
use axum::http::StatusCode;
use confab_proto::ErrorCode;

use axum::http::request::Parts;

use crate::auth::{token_hash, AuthUser};
use crate::clock::now_millis;
use crate::error::AppError;
use crate::state::AppState;

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

/// The bearer token in `Authorization`. Access tokens are accepted in no
/// URL (URLs end up in access logs, browser history and `Referer`
/// headers); browsers' WebSockets offer theirs as a subprotocol instead
/// (see [`WsAuthUser`]).
pub fn bearer_token(parts: &Parts) -> Option<String> {
    let value = parts.headers.get(axum::http::header::AUTHORIZATION)?;
    let value = value.to_str().ok()?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))?;
    Some(token.trim().to_owned())
}

/// The subprotocol a browser offers a WebSocket upgrade along with its
/// access token (`Sec-WebSocket-Protocol: confab.v1, bearer.<token>`), and
/// the one the server picks.
pub const WS_PROTOCOL: &str = "confab.v1";

/// The access token a browser offers as the subprotocol `bearer.<token>`:
/// browsers cannot set `Authorization` on a WebSocket, and a token in the
/// URL would land in access logs.
fn protocol_token(parts: &Parts) -> Option<String> {
    parts
        .headers
        .get_all(axum::http::header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|p| p.trim().strip_prefix("bearer."))
        .map(str::to_owned)
}

fn unauthorized() -> AppError {
    AppError::new(
        ErrorCode::Unauthorized,
        "missing, expired or revoked access token: log in or refresh",
    )
}

async fn authenticate(state: &AppState, token: Option<String>) -> Result<AuthUser, AppError> {
    let token = token.ok_or_else(unauthorized)?;
    let owner = state
        .store
        .access_token_owner(&token_hash(&token), now_millis())
        .await?
        .ok_or_else(unauthorized)?;
    Ok(AuthUser {
        user_id: owner.user_id,
        device_id: owner.device_id,
    })
}

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = AppError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        authenticate(state, bearer_token(parts)).await
    }
}

/// The caller of a WebSocket upgrade: the token in `Authorization`, or
/// offered as the subprotocol `bearer.<token>` (browsers; see
/// [`WS_PROTOCOL`]). A `?token=` in the URL is refused like anywhere else.
#[derive(Debug, Clone, Copy)]
pub struct WsAuthUser(pub AuthUser);

impl FromRequestParts<AppState> for WsAuthUser {
    type Rejection = AppError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token = bearer_token(parts).or_else(|| protocol_token(parts));
        authenticate(state, token).await.map(WsAuthUser)
    }
}

/// The TCP peer of the connection a request came on (set by the accept
/// loop).
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub std::net::SocketAddr);

/// The client's address: the TCP peer, or, when the peer is one of
/// `http.trusted_proxies`, the last address in `X-Forwarded-For` that is
/// not a trusted proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub std::net::IpAddr);

impl ClientAddr {
    /// Resolves the client of a request from its peer and headers.
    pub fn resolve(
        peer: std::net::IpAddr,
        forwarded_for: Option<&str>,
        trusted: &[ipnet::IpNet],
    ) -> ClientAddr {
        let is_trusted = |ip: &std::net::IpAddr| trusted.iter().any(|net| net.contains(ip));
        if !is_trusted(&peer) {
            return ClientAddr(peer);
        }
        let hops = forwarded_for
            .unwrap_or("")
            .split(',')
            .filter_map(|h| h.trim().parse::<std::net::IpAddr>().ok());
        let mut client = peer;
        for hop in hops.collect::<Vec<_>>().into_iter().rev() {
            client = hop;
            if !is_trusted(&hop) {
                break;
            }
        }
        ClientAddr(client)
    }
}

impl FromRequestParts<AppState> for ClientAddr {
    type Rejection = AppError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        // Requests that did not come through the accept loop (tests calling
        // the router directly) count as from loopback.
        let peer = parts
            .extensions
            .get::<PeerAddr>()
            .map_or(std::net::IpAddr::from([127, 0, 0, 1]), |p| p.0.ip());
        let forwarded = parts
            .headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok());
        Ok(ClientAddr::resolve(
            peer,
            forwarded,
            &state.config.http.trusted_proxies,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::ClientAddr;

    #[test]
    fn forwarded_for_counts_only_behind_trusted_proxies() {
        let lb: ipnet::IpNet = "10.0.0.0/8".parse().expect("net");
        let trusted = [lb];
        let peer = "10.1.2.3".parse().expect("ip");
        let stranger = "203.0.113.9".parse().expect("ip");
        // A trusted proxy: the last untrusted hop is the client.
        assert_eq!(
            ClientAddr::resolve(peer, Some("198.51.100.7, 10.9.9.9"), &trusted).0,
            "198.51.100.7".parse::<std::net::IpAddr>().expect("ip")
        );
        // A client who forges the header gets its own address.
        assert_eq!(
            ClientAddr::resolve(stranger, Some("1.2.3.4"), &trusted).0,
            stranger
        );
        // No header behind a proxy: the proxy.
        assert_eq!(ClientAddr::resolve(peer, None, &trusted).0, peer);
    }
}
