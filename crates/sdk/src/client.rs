//! The HTTP client: accounts, tokens and the plumbing every API call shares
//! (bearer auth, error bodies, one automatic refresh on an expired token).

use std::sync::Arc;
use std::time::Duration;

use confab_proto::api::{
    LoginRequest, RefreshRequest, RegisterRequest, RegisterResponse, TokenResponse, User,
};
use confab_proto::ErrorCode;
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::{watch, Mutex};

use crate::error::{Error, Result};
use crate::session::{normalize_base, ws_url, Session};

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
    base_url: String,
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
            .field("base_url", &self.inner.base_url)
            .field("session", &*self.inner.session.borrow())
            .finish()
    }
}

impl Client {
    /// A client for the server at `base_url` (e.g. `http://127.0.0.1:8080`),
    /// not logged in.
    pub fn new(base_url: &str) -> Client {
        Client::build(base_url, None)
    }

    /// A client that resumes a saved session against `base_url`.
    pub fn with_session(base_url: &str, session: Session) -> Client {
        Client::build(base_url, Some(session))
    }

    /// A client that resumes a saved session against the server it names.
    pub fn from_session(session: Session) -> Client {
        let base = session.base_url.clone();
        Client::build(&base, Some(session))
    }

    fn build(base_url: &str, session: Option<Session>) -> Client {
        let base_url = normalize_base(base_url);
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        let session = session.map(|mut s| {
            s.base_url.clone_from(&base_url);
            s
        });
        Client {
            inner: Arc::new(Inner {
                http,
                base_url,
                session: watch::Sender::new(session),
                refresh_lock: Mutex::new(()),
            }),
        }
    }

    /// The server's HTTP base URL, without a trailing slash.
    pub fn base_url(&self) -> &str {
        &self.inner.base_url
    }

    /// The WebSocket URL of this client's server (`ws(s)://…/v1/ws`).
    pub fn ws_url(&self) -> String {
        ws_url(&self.inner.base_url)
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
        let resp: RegisterResponse = self
            .request(Method::POST, "/v1/auth/register", &[], Some(&req), false)
            .await?;
        Ok(resp.user)
    }

    /// Logs in as a new device and keeps the session in this client.
    pub async fn login(
        &self,
        username: &str,
        password: &str,
        device_name: Option<&str>,
    ) -> Result<Session> {
        let req = LoginRequest {
            username: username.to_owned(),
            password: password.to_owned(),
            device_name: device_name.map(str::to_owned),
            device_public_key: None,
        };
        let tokens: TokenResponse = self
            .request(Method::POST, "/v1/auth/login", &[], Some(&req), false)
            .await?;
        let session = Session::from_tokens(tokens, &self.inner.base_url);
        self.inner.session.send_replace(Some(session.clone()));
        Ok(session)
    }

    /// Trades the refresh token for a new token pair now, and keeps it.
    pub async fn refresh(&self) -> Result<Session> {
        let _guard = self.inner.refresh_lock.lock().await;
        let current = self.session().ok_or(Error::NoSession)?;
        self.refresh_locked(&current).await
    }

    /// Refreshes only if the session still holds `stale_access_token`: when
    /// several tasks see the same expired token, one refreshes and the others
    /// use its result instead of spending the (already spent) refresh token.
    pub(crate) async fn refresh_if_stale(&self, stale_access_token: &str) -> Result<Session> {
        let _guard = self.inner.refresh_lock.lock().await;
        let current = self.session().ok_or(Error::NoSession)?;
        if current.access_token != stale_access_token {
            return Ok(current);
        }
        self.refresh_locked(&current).await
    }

    async fn refresh_locked(&self, current: &Session) -> Result<Session> {
        let req = RefreshRequest {
            refresh_token: current.refresh_token.clone(),
        };
        let tokens: TokenResponse = self
            .request(Method::POST, "/v1/auth/refresh", &[], Some(&req), false)
            .await?;
        let session = Session::from_tokens(tokens, &self.inner.base_url);
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

    /// An authorized JSON request whose answer has a JSON body.
    pub(crate) async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&(impl Serialize + ?Sized)>,
    ) -> Result<T> {
        self.request(method, path, query, body, true).await
    }

    /// An authorized JSON request whose answer has no body (204).
    pub(crate) async fn request_empty(
        &self,
        method: Method,
        path: &str,
        body: Option<&(impl Serialize + ?Sized)>,
    ) -> Result<()> {
        self.send(method, path, &[], body, true).await.map(drop)
    }

    async fn request<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&(impl Serialize + ?Sized)>,
        auth: bool,
    ) -> Result<T> {
        let bytes = self.send(method, path, query, body, auth).await?;
        serde_json::from_slice(&bytes).map_err(|e| Error::Decode(format!("{path}: {e}")))
    }

    /// Sends a request and returns the body of a successful answer. With
    /// `auth`, a 401 `unauthorized` triggers one refresh and one retry.
    async fn send(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&(impl Serialize + ?Sized)>,
        auth: bool,
    ) -> Result<Vec<u8>> {
        let body = match body {
            Some(b) => Some(serde_json::to_vec(b).map_err(|e| Error::InvalidInput(e.to_string()))?),
            None => None,
        };
        let mut token = if auth {
            Some(self.access_token().ok_or(Error::NoSession)?)
        } else {
            None
        };
        let mut refreshed = false;
        loop {
            let url = format!("{}{path}", self.inner.base_url);
            let mut req = self.inner.http.request(method.clone(), url).query(query);
            if let Some(t) = &token {
                req = req.bearer_auth(t);
            }
            if let Some(b) = &body {
                req = req
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(b.clone());
            }
            let resp = req.send().await?;
            let status = resp.status();
            let bytes = resp.bytes().await?.to_vec();
            if status.is_success() {
                return Ok(bytes);
            }
            let err = Error::from_http_body(status.as_u16(), &bytes);
            let expired =
                status == StatusCode::UNAUTHORIZED && err.code() == Some(ErrorCode::Unauthorized);
            match token.as_deref() {
                Some(stale) if expired && !refreshed => {
                    let has_refresh = self
                        .session()
                        .is_some_and(|s| !s.refresh_token.is_empty());
                    if !has_refresh {
                        return Err(err);
                    }
                    let fresh = self.refresh_if_stale(stale).await?;
                    token = Some(fresh.access_token);
                    refreshed = true;
                }
                _ => return Err(err),
            }
        }
    }
}
