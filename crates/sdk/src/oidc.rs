//! Sign-in with an OpenID Connect provider, for clients that are not a
//! browser: start a flow, have the user open its URL, then exchange the
//! one-time code the server's callback page shows (docs/protocol.md).

use confab_proto::api::{
    OidcClient, OidcExchangeRequest, OidcExchangeResponse, OidcLinked, OidcProvider, OidcProviders,
    OidcSignupOffer, OidcSignupRequest, OidcStartRequest, OidcStartResponse, TokenResponse,
};
use reqwest::Method;

use crate::client::Client;
use crate::error::Result;
use crate::session::Session;

/// What exchanging a one-time code gave.
#[derive(Debug, Clone)]
pub enum OidcOutcome {
    /// Signed in; the client keeps the session.
    SignedIn(Session),
    /// A first sign-in: pick a username with [`Client::oidc_signup`].
    SignupRequired(OidcSignupOffer),
    /// The provider account is now linked to the signed-in account.
    Linked(OidcLinked),
}

impl Client {
    /// The providers the server offers (empty when it offers none).
    pub async fn oidc_providers(&self) -> Result<Vec<OidcProvider>> {
        let list: OidcProviders = self.get_anonymous("/v1/auth/oidc/providers").await?;
        Ok(list.providers)
    }

    /// Starts a sign-in with `provider`: open `authorization_url` in a
    /// browser; keep `flow` for [`Client::oidc_exchange`].
    pub async fn oidc_start(
        &self,
        provider: &str,
        client: OidcClient,
    ) -> Result<OidcStartResponse> {
        let req = OidcStartRequest { client };
        self.request_anonymous(&format!("/v1/auth/oidc/{provider}/start"), &req)
            .await
    }

    /// Starts linking `provider` to the signed-in account.
    pub async fn oidc_link_start(
        &self,
        provider: &str,
        client: OidcClient,
    ) -> Result<OidcStartResponse> {
        let req = OidcStartRequest { client };
        self.call(
            Method::POST,
            &format!("/v1/auth/oidc/{provider}/link"),
            &[],
            Some(&req),
        )
        .await
    }

    /// Exchanges the one-time code of the callback (single use, with the
    /// `flow` secret of the start). A sign-in keeps the session.
    pub async fn oidc_exchange(
        &self,
        code: &str,
        flow: &str,
        device_name: Option<&str>,
    ) -> Result<OidcOutcome> {
        self.oidc_exchange_with_key(code, flow, device_name, None)
            .await
    }

    /// [`Client::oidc_exchange`] for a new device that registers
    /// `device_public_key` (see [`Client::login_with_key`]).
    pub async fn oidc_exchange_with_key(
        &self,
        code: &str,
        flow: &str,
        device_name: Option<&str>,
        device_public_key: Option<&str>,
    ) -> Result<OidcOutcome> {
        let req = OidcExchangeRequest {
            code: code.trim().to_owned(),
            flow: flow.to_owned(),
            device_name: device_name.map(str::to_owned),
            device_public_key: device_public_key.map(str::to_owned),
        };
        let answer: OidcExchangeResponse = self
            .request_anonymous("/v1/auth/oidc/exchange", &req)
            .await?;
        Ok(match answer {
            OidcExchangeResponse::SignedIn(tokens) => {
                OidcOutcome::SignedIn(self.adopt_tokens(tokens))
            }
            OidcExchangeResponse::SignupRequired(offer) => OidcOutcome::SignupRequired(offer),
            OidcExchangeResponse::Linked(linked) => OidcOutcome::Linked(linked),
        })
    }

    /// Finishes a first sign-in with the chosen username; keeps the session.
    pub async fn oidc_signup(
        &self,
        signup_token: &str,
        username: &str,
        display_name: Option<&str>,
        device_name: Option<&str>,
    ) -> Result<Session> {
        self.oidc_signup_with_key(signup_token, username, display_name, device_name, None)
            .await
    }

    /// [`Client::oidc_signup`] for a new device that registers
    /// `device_public_key` (see [`Client::login_with_key`]).
    pub async fn oidc_signup_with_key(
        &self,
        signup_token: &str,
        username: &str,
        display_name: Option<&str>,
        device_name: Option<&str>,
        device_public_key: Option<&str>,
    ) -> Result<Session> {
        let req = OidcSignupRequest {
            signup_token: signup_token.to_owned(),
            username: username.to_owned(),
            display_name: display_name.map(str::to_owned),
            device_name: device_name.map(str::to_owned),
            device_public_key: device_public_key.map(str::to_owned),
        };
        let tokens: TokenResponse = self.request_anonymous("/v1/auth/oidc/signup", &req).await?;
        Ok(self.adopt_tokens(tokens))
    }
}
