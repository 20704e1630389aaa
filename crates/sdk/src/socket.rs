//! The WebSocket transport under both the raw and the reconnecting
//! connection: TCP without Nagle, TLS with the SDK's trusted roots for
//! `wss://`, the HTTP/1.1 upgrade (offering permessage-deflate, RFC 7692),
//! then yawc's framing and compression. A refused upgrade keeps the
//! server's status and error body.

use std::sync::{Arc, LazyLock};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::header::{self, HeaderValue};
use hyper::upgrade::Upgraded;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use rand::RngCore;
use sha1::{Digest, Sha1};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use yawc::{CompressionLevel, Options, Role, WebSocket};

use crate::error::{Error, Result};
use crate::trust::Trust;

/// An open WebSocket, compressed when the server agreed to it.
pub(crate) type WsStream = WebSocket<TokioIo<Upgraded>>;

/// What the SDK offers: permessage-deflate with the defaults (15-bit
/// windows, context takeover unless the server says otherwise; the Confab
/// server imposes no context takeover both ways).
const DEFLATE_OFFER: &str = "permessage-deflate";
/// Messages the SDK sends that are shorter than this go uncompressed.
const COMPRESSION_MIN_BYTES: usize = 256;
/// Largest frame (and message) the SDK reads, compressed or inflated.
const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;
/// Most bytes of a refused upgrade's body read for its error.
const MAX_ERROR_BODY: usize = 64 * 1024;
/// The GUID of RFC 6455 section 1.3.
const ACCEPT_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// rustls with the web PKI, for `wss://` when no private CA is configured.
static WEB_PKI: LazyLock<Arc<rustls::ClientConfig>> = LazyLock::new(|| {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map(|b| b.with_root_certificates(roots).with_no_client_auth());
    match config {
        Ok(c) => Arc::new(c),
        // ring supports the default versions; this cannot fail.
        Err(_) => unreachable!("ring lacks the default TLS versions"),
    }
});

/// Whether to offer permessage-deflate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// Offer it (the server decides; it may decline).
    #[default]
    Offer,
    /// Do not offer it: every frame goes as it is.
    Off,
}

/// An open socket, and whether the server agreed to permessage-deflate.
pub(crate) struct Dialed {
    /// The socket.
    pub ws: WsStream,
    /// permessage-deflate is on.
    pub compressed: bool,
}

/// Opens a WebSocket to `url` (`ws://` or `wss://`), with
/// `Authorization: Bearer <token>` when a token is given. A refused upgrade
/// becomes [`Error::Http`] (401 for a bad token).
pub(crate) async fn dial(
    url: &str,
    token: Option<&str>,
    trust: Option<&Trust>,
    compression: Compression,
) -> Result<Dialed> {
    let bad_url = |why: &str| Error::InvalidInput(format!("websocket url {url:?}: {why}"));
    let parsed = url::Url::parse(url).map_err(|e| bad_url(&e.to_string()))?;
    let tls = match parsed.scheme() {
        "ws" => false,
        "wss" => true,
        _ => return Err(bad_url("the scheme must be ws or wss")),
    };
    let host = match parsed.host() {
        Some(url::Host::Domain(d)) => d.to_owned(),
        Some(url::Host::Ipv4(a)) => a.to_string(),
        Some(url::Host::Ipv6(a)) => a.to_string(),
        None => return Err(bad_url("no host")),
    };
    let port = parsed
        .port_or_known_default()
        .ok_or_else(|| bad_url("no port"))?;
    let tcp = TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| Error::Transport(format!("connect to {host}:{port}: {e}")))?;
    // TCP_NODELAY: frames are small and latency-bound; Nagle plus delayed
    // acks would add 40 ms stalls to multi-segment frames.
    let _ = tcp.set_nodelay(true);
    let request = upgrade_request(&parsed, token, compression)?;
    if tls {
        let config = trust.map_or_else(|| WEB_PKI.clone(), Trust::rustls);
        let name = rustls_pki_types::ServerName::try_from(host.clone())
            .map_err(|e| bad_url(&e.to_string()))?;
        let stream = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(|e| Error::Transport(format!("tls with {host}: {e}")))?;
        upgrade(stream, request, compression).await
    } else {
        upgrade(tcp, request, compression).await
    }
}

/// The HTTP/1.1 upgrade request, and the key its answer must match.
fn upgrade_request(
    url: &url::Url,
    token: Option<&str>,
    compression: Compression,
) -> Result<(Request<Empty<Bytes>>, String)> {
    let mut nonce = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut nonce);
    let key = base64::engine::general_purpose::STANDARD.encode(nonce);
    let host = match url.port() {
        Some(p) => format!("{}:{p}", url.host_str().unwrap_or_default()),
        None => url.host_str().unwrap_or_default().to_owned(),
    };
    let target = &url[url::Position::BeforePath..url::Position::AfterQuery];
    let mut builder = Request::get(target)
        .header(header::HOST, host)
        .header(header::UPGRADE, "websocket")
        .header(header::CONNECTION, "upgrade")
        .header(header::SEC_WEBSOCKET_KEY, key.as_str())
        .header(header::SEC_WEBSOCKET_VERSION, "13");
    if compression == Compression::Offer {
        builder = builder.header(header::SEC_WEBSOCKET_EXTENSIONS, DEFLATE_OFFER);
    }
    if let Some(token) = token {
        let value = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| Error::InvalidInput("access token is not a valid header value".into()))?;
        builder = builder.header(header::AUTHORIZATION, value);
    }
    let request = builder
        .body(Empty::new())
        .map_err(|e| Error::InvalidInput(format!("websocket request: {e}")))?;
    Ok((request, key))
}

/// Runs the upgrade on an open stream and wraps the result in yawc.
async fn upgrade<S>(
    io: S,
    (request, key): (Request<Empty<Bytes>>, String),
    compression: Compression,
) -> Result<Dialed>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let transport = |e: hyper::Error| Error::Transport(format!("websocket handshake: {e}"));
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(transport)?;
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    let mut response = sender.send_request(request).await.map_err(transport)?;
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        let status = response.status().as_u16();
        let body = Limited::new(response.into_body(), MAX_ERROR_BODY)
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        return Err(Error::from_http_body(status, &body));
    }
    let accept = response
        .headers()
        .get(header::SEC_WEBSOCKET_ACCEPT)
        .map(HeaderValue::as_bytes);
    if accept != Some(accept_for(&key).as_bytes()) {
        return Err(Error::Transport(
            "websocket handshake: wrong Sec-WebSocket-Accept".into(),
        ));
    }
    let extensions = response
        .headers()
        .get(header::SEC_WEBSOCKET_EXTENSIONS)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    if extensions.is_some() && compression == Compression::Off {
        return Err(Error::Transport(
            "websocket handshake: the server agreed to an extension never offered".into(),
        ));
    }
    let upgraded = hyper::upgrade::on(&mut response).await.map_err(transport)?;
    let mut options = Options::default()
        .with_max_payload_read(MAX_MESSAGE_BYTES)
        .with_max_read_buffer(MAX_MESSAGE_BYTES)
        .with_utf8();
    if compression == Compression::Offer {
        options = options
            .with_compression_level(CompressionLevel::fast())
            .with_compression_threshold(COMPRESSION_MIN_BYTES);
    }
    let ws = WebSocket::from_stream_with_extensions(
        TokioIo::new(upgraded),
        Role::Client,
        extensions.as_deref(),
        options,
    )
    .map_err(|e| Error::Transport(format!("websocket handshake: {e}")))?;
    Ok(Dialed {
        ws,
        compressed: extensions.is_some(),
    })
}

/// `Sec-WebSocket-Accept` for a key (RFC 6455 section 4.2.2).
fn accept_for(key: &str) -> String {
    let mut sha1 = Sha1::new();
    sha1.update(key.as_bytes());
    sha1.update(ACCEPT_GUID);
    base64::engine::general_purpose::STANDARD.encode(sha1.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_matches_rfc_6455_example() {
        // RFC 6455 section 1.3.
        assert_eq!(
            accept_for("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }
}
