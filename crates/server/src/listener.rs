//! Accepting HTTP connections, with the limits a slow or silent client
//! meets: a complete request header within `http.header_timeout_s` of
//! connecting, no connection silent (not a byte either way) for longer than
//! `http.idle_timeout_s`, and graceful shutdown. (Request bodies that stall
//! are cut off by the router's body timeout; WebSockets, once upgraded,
//! keep their own heartbeat.) `axum::serve` has none of these knobs, so
//! this is the accept loop of axum's low-level examples with them added.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use std::{io, pin::Pin};

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::config::HttpConfig;

/// Serves `app` on `listener` until `shutdown`, then waits (up to `grace`)
/// for requests in flight to finish.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    http: &HttpConfig,
    tls: Option<TlsAcceptor>,
    shutdown: CancellationToken,
    grace: Duration,
) -> io::Result<()> {
    let header_timeout = Duration::from_secs(http.header_timeout_s.max(1));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);
    let idle = Duration::from_secs(http.idle_timeout_s.max(1));
    let graceful = GracefulShutdown::new();
    loop {
        let (tcp, remote) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors or a connection reset before
                    // we took it: wait a little instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // Chat frames are small and latency-bound: no Nagle delay.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
        let activity = Arc::new(Activity::new());
        let io = Watched {
            inner: tcp,
            activity: activity.clone(),
        };
        // Each request learns its connection's peer (see `extract::ClientAddr`).
        let app = app.clone();
        let service = TowerToHyperService::new(tower::ServiceExt::map_request(
            app,
            move |mut req: hyper::Request<hyper::body::Incoming>| {
                req.extensions_mut()
                    .insert(crate::extract::PeerAddr(remote));
                req
            },
        ));
        let conn = Conn {
            builder: builder.clone(),
            watcher: graceful.watcher(),
            activity,
            idle,
        };
        let tls = tls.clone();
        tokio::spawn(async move {
            let Some(acceptor) = tls else {
                return conn.serve(TokioIo::new(io), service).await;
            };
            // The handshake counts as the first request's header.
            match tokio::time::timeout(header_timeout, acceptor.accept(io)).await {
                Ok(Ok(stream)) => conn.serve(TokioIo::new(stream), service).await,
                // Plain HTTP to the TLS port, or a client that gave up.
                Ok(Err(e)) => tracing::debug!(error = %e, "tls handshake failed"),
                Err(_) => crate::metrics::http_timeout("tls_handshake"),
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("http requests did not finish within the grace period");
    }
    Ok(())
}

/// What serving one connection needs.
struct Conn {
    builder: Arc<auto::Builder<TokioExecutor>>,
    watcher: hyper_util::server::graceful::Watcher,
    activity: Arc<Activity>,
    idle: Duration,
}

impl Conn {
    /// Serves HTTP/1.1 or HTTP/2 (with upgrades) on `io` until it ends, the
    /// server shuts down, or it stays silent for the idle timeout.
    async fn serve<I, S>(self, io: TokioIo<I>, service: S)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        S: hyper::service::Service<
                hyper::Request<hyper::body::Incoming>,
                Response = hyper::Response<axum::body::Body>,
            > + Clone
            + Send
            + 'static,
        S::Future: Send + 'static,
        S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let conn = self.builder.serve_connection_with_upgrades(io, service);
        let conn = self.watcher.watch(conn.into_owned());
        tokio::select! {
            result = conn => {
                if let Err(e) = result {
                    if is_timeout(&*e) {
                        crate::metrics::http_timeout("header");
                    }
                    tracing::debug!(error = %e, "http connection ended");
                }
            }
            _ = self.activity.silent_for(self.idle) => {
                crate::metrics::http_timeout("idle");
                tracing::debug!("http connection closed: idle");
            }
        }
    }
}

/// Whether hyper ended a connection for its header-read timeout.
fn is_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(h) = err.downcast_ref::<hyper::Error>() {
            if h.is_timeout() {
                return true;
            }
        }
        cur = err.source();
    }
    false
}

/// When a connection last moved a byte, in ms since it opened.
struct Activity {
    opened: tokio::time::Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            opened: tokio::time::Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let ms = self.opened.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// Resolves once no byte has moved for `limit`.
    async fn silent_for(&self, limit: Duration) {
        loop {
            let last = self.opened + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            let deadline = last + limit;
            if tokio::time::Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

/// A socket that records when it last read or wrote a byte.
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
