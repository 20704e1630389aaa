//! The HTTP client: accounts, tokens and the plumbing every API call shares
//! (bearer auth, error bodies, one automatic refresh on an expired token).

use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
use std::sync::Arc;
use std::time::Duration;

use confab_proto::api::{
    LoginRequest, RefreshRequest, RegisterRequest, RegisterResponse, TokenResponse, User,
};
use confab_proto::ErrorCode;
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::{watch, Mutex};

use crate::error::{Error, Result};
use crate::session::{normalize_base, ws_url, Session};
use crate::trust::Trust;

/// How long one HTTP request may take before it fails with [`Error::Timeout`].
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long establishing a TCP (and TLS) connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A Confab API client. Cheap to clone: clones share the HTTP connection
/// pool and the session, so a refresh made by one is seen by all (and by
/// the WebSocket [`Connection`](crate::Connection)s made from them).
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    /// Extra trusted CA roots (a private CA), for HTTP and WebSockets.
    trust: Option<Trust>,
    /// Every server of the cluster, the one given first first (never
    /// empty). Requests that cannot
    /// reach one move on to the next (see [`Client::with_servers`]).
    servers: Vec<String>,
    /// Index into `servers` of the one in use.
    current: AtomicUsize,
    /// The current session; a watch so callers can observe refreshes.
    session: watch::Sender<Option<Session>>,
    /// Refresh tokens are single-use and reusing a spent one revokes the
    /// device, so refreshes are serialized and skipped when another task
    /// already refreshed.
    refresh_lock: Mutex<()>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base_url", &self.base_url())
            .field("session", &*self.inner.session.borrow())
            .finish()
    }
}

impl Client {
    /// A client for the server at `base_url` (e.g. `http://127.0.0.1:8080`),
    /// not logged in.
    pub fn new(base_url: &str) -> Client {
        Client::build(vec![normalize_base(base_url)], None)
    }

    /// A client that resumes a saved session against `base_url`.
    pub fn with_session(base_url: &str, session: Session) -> Client {
        Client::build(vec![normalize_base(base_url)], Some(session))
    }

    /// A client that resumes a saved session against the server it names.
    pub fn from_session(session: Session) -> Client {
        let base = session.base_url.clone();
        Client::build(vec![normalize_base(&base)], Some(session))
    }

    /// A client for a cluster: requests go to the first server and move on
    /// to the next when one cannot be reached (connection refused, reset,
    /// no route), and connections made from it fail over through all of
    /// them too. Every node serves every user, so nothing else changes.
    pub fn with_servers(urls: &[impl AsRef<str>]) -> Client {
        let servers: Vec<String> = urls.iter().map(|u| normalize_base(u.as_ref())).collect();
        Client::build(servers, None)
    }

    /// Every server this client knows, the one in use first on a fresh
    /// client.
    pub fn servers(&self) -> &[String] {
        &self.inner.servers
    }

    /// The same client trusting, besides the public web PKI, the CA
    /// certificates in the PEM file at `path` (a server with a private
    /// CA). `CONFAB_CA_CERT` does the same for every client.
    pub fn with_ca_cert(self, path: &std::path::Path) -> crate::Result<Client> {
        let trust = Trust::from_pem_file(path)?;
        let session = self.session();
        Ok(Client::build_trusting(
            self.inner.servers.clone(),
            session,
            Some(trust),
        ))
    }

    fn build(servers: Vec<String>, session: Option<Session>) -> Client {
        Client::build_trusting(servers, session, Trust::from_env())
    }

    fn build_trusting(
        mut servers: Vec<String>,
        session: Option<Session>,
        trust: Option<Trust>,
    ) -> Client {
        if servers.is_empty() {
            servers.push(String::new());
        }
        let base_url = servers[0].clone();
        let mut builder = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT);
        if let Some(t) = &trust {
            builder = t.apply(builder);
        }
        let http = builder.build().unwrap_or_else(|_| reqwest::Client::new());
        let session = session.map(|mut s| {
            s.base_url.clone_from(&base_url);
            s
        });
        Client {
            inner: Arc::new(Inner {
                http,
                trust,
                servers,
                current: AtomicUsize::new(0),
                session: watch::Sender::new(session),
                refresh_lock: Mutex::new(()),
            }),
        }
    }

    /// The HTTP base URL of the server in use, without a trailing slash.
    pub fn base_url(&self) -> &str {
        let servers = &self.inner.servers;
        servers
            .get(self.inner.current.load(AtomicOrdering::Relaxed) % servers.len().max(1))
            .map_or("", |s| s.as_str())
    }

    /// The WebSocket URL of the server in use (`ws(s)://…/v1/ws`).
    pub fn ws_url(&self) -> String {
        ws_url(self.base_url())
    }

    /// The current session (the latest one after any refresh), if logged in.
    pub fn session(&self) -> Option<Session> {
        self.inner.session.borrow().clone()
    }

    /// A receiver that sees every change of the session: login, each
    /// refresh, logout. Use it to save refreshed tokens.
    pub fn watch_session(&self) -> watch::Receiver<Option<Session>> {
        self.inner.session.subscribe()
    }

    /// The extra CA roots this client trusts, if any.
    pub(crate) fn trust(&self) -> Option<&Trust> {
        self.inner.trust.as_ref()
    }

    /// The current access token, if logged in.
    pub(crate) fn access_token(&self) -> Option<String> {
        self.inner
            .session
            .borrow()
            .as_ref()
            .map(|s| s.access_token.clone())
    }

    /// Creates an account. Does not log in.
    pub async fn register(
        &self,
        username: &str,
        password: &str,
        display_name: Option<&str>,
    ) -> Result<User> {
        let req = RegisterRequest {
            username: username.to_owned(),
            password: password.to_owned(),
            display_name: display_name.map(str::to_owned),
        };
        let resp: RegisterResponse = self.request_anonymous("/v1/auth/register", &req).await?;
        Ok(resp.user)
    }

    /// Logs in as a new device and keeps the session in this client. The
    /// device registers no key: see [`Client::login_with_key`] for one that
    /// takes part in end-to-end encryption.
    pub async fn login(
        &self,
        username: &str,
        password: &str,
        device_name: Option<&str>,
    ) -> Result<Session> {
        self.login_with_key(username, password, device_name, None)
            .await
    }

    /// Logs in as a new device that registers `device_public_key` (its
    /// Ed25519 public key, base64 of the 32 bytes: see
    /// [`crate::DeviceKey`]), the key of its MLS leaves.
    pub async fn login_with_key(
        &self,
        username: &str,
        password: &str,
        device_name: Option<&str>,
        device_public_key: Option<&str>,
    ) -> Result<Session> {
        let req = LoginRequest {
            username: username.to_owned(),
            password: password.to_owned(),
            device_name: device_name.map(str::to_owned),
            device_public_key: device_public_key.map(str::to_owned),
        };
        let tokens: TokenResponse = self.request_anonymous("/v1/auth/login", &req).await?;
        let session = Session::from_tokens(tokens, self.base_url());
        self.inner.session.send_replace(Some(session.clone()));
        Ok(session)
    }

    /// Trades the refresh token for a new token pair now, and keeps it.
    pub async fn refresh(&self) -> Result<Session> {
        self.refresh_guarded(None).await
    }

    /// Refreshes only if the session still holds `stale_access_token`: when
    /// several tasks see the same expired token, one refreshes and the others
    /// use its result instead of spending the (already spent) refresh token.
    pub(crate) async fn refresh_if_stale(&self, stale_access_token: &str) -> Result<Session> {
        self.refresh_guarded(Some(stale_access_token.to_owned()))
            .await
    }

    async fn refresh_guarded(&self, stale_access_token: Option<String>) -> Result<Session> {
        let client = self.clone();
        // Run in its own task so that a caller giving up (a timeout, a
        // dropped future) cannot cancel a refresh half-way: the server may
        // already have rotated the pair, and losing the answer would leave
        // only a spent refresh token, whose reuse revokes the device.
        let task = tokio::spawn(async move {
            let _guard = client.inner.refresh_lock.lock().await;
            let current = client.session().ok_or(Error::NoSession)?;
            if let Some(stale) = stale_access_token {
                if current.access_token != stale {
                    return Ok(current);
                }
            }
            client.refresh_locked(&current).await
        });
        task.await
            .map_err(|e| Error::Transport(format!("refresh task failed: {e}")))?
    }

    async fn refresh_locked(&self, current: &Session) -> Result<Session> {
        let req = RefreshRequest {
            refresh_token: current.refresh_token.clone(),
        };
        let tokens: TokenResponse = self.request_anonymous("/v1/auth/refresh", &req).await?;
        let session = Session::from_tokens(tokens, self.base_url());
        self.inner.session.send_replace(Some(session.clone()));
        Ok(session)
    }

    /// Revokes this device's tokens on the server and forgets the session.
    pub async fn logout(&self) -> Result<()> {
        self.request_empty(Method::POST, "/v1/auth/logout", None::<&()>)
            .await?;
        self.inner.session.send_replace(None);
        Ok(())
    }

    /// Changes the password; the server logs out every other device of
    /// the user (this one stays logged in).
    pub async fn change_password(&self, current: &str, new: &str) -> Result<()> {
        let req = confab_proto::api::ChangePasswordRequest {
            current_password: current.to_owned(),
            new_password: new.to_owned(),
        };
        self.request_empty(Method::POST, "/v1/auth/password", Some(&req))
            .await
    }

    /// An authorized JSON request whose answer has a JSON body.
    pub(crate) async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&(impl Serialize + ?Sized)>,
    ) -> Result<T> {
        let bytes = self.send_authorized(method, path, query, body).await?;
        decode(path, &bytes)
    }

    /// An authorized JSON request whose answer has no body (204).
    pub(crate) async fn request_empty(
        &self,
        method: Method,
        path: &str,
        body: Option<&(impl Serialize + ?Sized)>,
    ) -> Result<()> {
        self.send_authorized(method, path, &[], body)
            .await
            .map(drop)
    }

    /// A JSON request without a token (register, login, refresh).
    async fn request_anonymous<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl Serialize,
    ) -> Result<T> {
        let body = encode(body)?;
        let bytes = self
            .send_once(Method::POST, path, &[], body.as_deref(), None)
            .await?;
        decode(path, &bytes)
    }

    /// Sends with the session's token; a 401 `unauthorized` triggers one
    /// refresh (when there is a refresh token) and one retry.
    async fn send_authorized(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&(impl Serialize + ?Sized)>,
    ) -> Result<Vec<u8>> {
        let body = match body {
            Some(b) => encode(b)?,
            None => None,
        };
        let token = self.access_token().ok_or(Error::NoSession)?;
        let first = self
            .send_once(method.clone(), path, query, body.as_deref(), Some(&token))
            .await;
        let expired = matches!(
            &first,
            Err(e) if e.status() == Some(401) && e.code() == Some(ErrorCode::Unauthorized)
        );
        let can_refresh = self.session().is_some_and(|s| !s.refresh_token.is_empty());
        if !expired || !can_refresh {
            return first;
        }
        let fresh = self.refresh_if_stale(&token).await?;
        self.send_once(
            method,
            path,
            query,
            body.as_deref(),
            Some(&fresh.access_token),
        )
        .await
    }

    /// Sends one request and returns the body of a successful answer. A
    /// server that cannot be reached is skipped for the next one, once
    /// round the list.
    async fn send_once(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&[u8]>,
        token: Option<&str>,
    ) -> Result<Vec<u8>> {
        let tries = self.inner.servers.len().max(1);
        let mut last = Error::Transport("no server".into());
        for _ in 0..tries {
            let base = self.base_url().to_owned();
            match self
                .send_to(&base, method.clone(), path, query, body, token)
                .await
            {
                Err(Error::Transport(e)) if tries > 1 => {
                    // Move on from this server (unless another task already did).
                    let i = self.inner.current.load(AtomicOrdering::Relaxed);
                    if self.inner.servers.get(i % tries) == Some(&base) {
                        let _ = self.inner.current.compare_exchange(
                            i,
                            i.wrapping_add(1),
                            AtomicOrdering::Relaxed,
                            AtomicOrdering::Relaxed,
                        );
                    }
                    last = Error::Transport(e);
                }
                other => return other,
            }
        }
        Err(last)
    }

    async fn send_to(
        &self,
        base: &str,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&[u8]>,
        token: Option<&str>,
    ) -> Result<Vec<u8>> {
        let url = format!("{base}{path}");
        let mut req = self.inner.http.request(method, url).query(query);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(b.to_vec());
        }
        let resp = req.send().await?;
        let status = resp.status();
        let bytes = resp.bytes().await?.to_vec();
        if status.is_success() {
            Ok(bytes)
        } else {
            Err(Error::from_http_body(status.as_u16(), &bytes))
        }
    }
}

fn encode(body: &(impl Serialize + ?Sized)) -> Result<Option<Vec<u8>>> {
    serde_json::to_vec(body)
        .map(Some)
        .map_err(|e| Error::InvalidInput(e.to_string()))
}

fn decode<T: DeserializeOwned>(path: &str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| Error::Decode(format!("{path}: {e}")))
}
