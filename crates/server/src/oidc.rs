//! Sign-in with OpenID Connect providers: the configured providers, their
//! discovery documents (cached), the authorization request (code flow with
//! PKCE, `state` and `nonce`) and the callback's checks (token exchange,
//! ID token signature by the provider's JWKS, `iss`, `aud`, `exp`, `nonce`).
//!
//! The single-use secrets of a sign-in in progress are kept in the store
//! (`oidc_pending`, bounded, with expiry), so the provider's redirect may
//! land on any node of a cluster. The HTTP handlers are in `http/oidc.rs`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use confab_proto::api::OidcProvider;
use confab_proto::ErrorCode;
use confab_store::OidcIdentity;
use openidconnect::core::{CoreAuthenticationFlow, CoreClient, CoreProviderMetadata};
use openidconnect::{
    AuthorizationCode, ClientId, ClientSecret, CsrfToken, IssuerUrl, Nonce, PkceCodeChallenge,
    PkceCodeVerifier, RedirectUrl, Scope, TokenResponse as _,
};

use crate::config::{OidcConfig, OidcProviderConfig};
use crate::error::{AppError, AppResult};

/// The path of the redirect URI, under the public URL.
pub const CALLBACK_PATH: &str = "/v1/auth/oidc/callback";

/// The configured providers and a cache of their discovery documents.
pub struct Oidc {
    providers: Vec<OidcProviderConfig>,
    redirect: RedirectUrl,
    http: reqwest::Client,
    config: OidcConfig,
    discovered: Mutex<HashMap<String, (Instant, CoreProviderMetadata)>>,
}

/// What the authorization request needs kept until the callback.
pub struct Authorization {
    /// Where to send the browser.
    pub url: String,
    /// The `state` sent (the key of the pending flow).
    pub state: String,
    /// The PKCE verifier of the challenge sent.
    pub pkce_verifier: String,
    /// The `nonce` sent; the ID token must carry it.
    pub nonce: String,
}

/// What a verified ID token says about the person.
#[derive(Debug, Clone)]
pub struct SignedIn {
    /// Issuer and subject.
    pub identity: OidcIdentity,
    /// `preferred_username`, if given.
    pub preferred_username: Option<String>,
    /// `name`, if given.
    pub name: Option<String>,
    /// `email`, if given.
    pub email: Option<String>,
}

fn failed(message: impl Into<String>) -> AppError {
    AppError::new(ErrorCode::OidcFailed, message)
}

impl Oidc {
    /// Checks the providers (ids unique and well-formed, issuers URLs) and
    /// fills in defaults. `public_url` is where users reach this server.
    pub fn new(mut config: OidcConfig, public_url: &str) -> Result<Oidc, String> {
        let mut seen = std::collections::HashSet::new();
        for (i, p) in config.providers.iter_mut().enumerate() {
            let issuer = IssuerUrl::new(p.issuer.clone())
                .map_err(|e| format!("oidc provider {}: bad issuer {:?}: {e}", i + 1, p.issuer))?;
            if p.client_id.is_empty() {
                return Err(format!("oidc provider {:?}: client_id is empty", p.issuer));
            }
            if p.name.trim().is_empty() {
                p.name = issuer.url().host_str().unwrap_or("OpenID").to_owned();
            }
            if p.id.is_empty() {
                p.id = default_id(&p.name, i);
            }
            let ok = !p.id.is_empty()
                && p.id.len() <= 32
                && p.id
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
            if !ok {
                return Err(format!(
                    "oidc provider id {:?} must be 1-32 characters of a-z, 0-9, '-', '_'",
                    p.id
                ));
            }
            if !seen.insert(p.id.clone()) {
                return Err(format!("oidc provider id {:?} is used twice", p.id));
            }
        }
        let redirect = RedirectUrl::new(format!(
            "{}{CALLBACK_PATH}",
            public_url.trim_end_matches('/')
        ))
        .map_err(|e| format!("bad public_url {public_url:?}: {e}"))?;
        let http = reqwest::Client::builder()
            // The provider's answers are read, never followed elsewhere
            // (the openidconnect crate's advice against SSRF).
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(config.provider_timeout_s.max(1)))
            .build()
            .map_err(|e| format!("http client: {e}"))?;
        Ok(Oidc {
            providers: config.providers.clone(),
            redirect,
            http,
            config,
            discovered: Mutex::new(HashMap::new()),
        })
    }

    /// Lifetimes and bounds.
    pub fn config(&self) -> &OidcConfig {
        &self.config
    }

    /// The redirect URI registered at providers.
    pub fn redirect_uri(&self) -> &str {
        self.redirect.as_str()
    }

    /// The providers for the sign-in buttons.
    pub fn providers(&self) -> Vec<OidcProvider> {
        self.providers
            .iter()
            .map(|p| OidcProvider {
                id: p.id.clone(),
                name: p.name.clone(),
            })
            .collect()
    }

    /// A provider by id: 404 when there is none.
    pub fn provider(&self, id: &str) -> AppResult<&OidcProviderConfig> {
        self.providers
            .iter()
            .find(|p| p.id == id)
            .ok_or_else(|| AppError::not_found("sign-in provider"))
    }

    /// The id of the configured provider with this issuer.
    pub fn provider_of_issuer(&self, issuer: &str) -> Option<&str> {
        self.providers
            .iter()
            .find(|p| p.issuer.trim_end_matches('/') == issuer.trim_end_matches('/'))
            .map(|p| p.id.as_str())
    }

    /// The provider's discovery document and keys, from the cache when fresh.
    async fn metadata(
        &self,
        p: &OidcProviderConfig,
        fresh: bool,
    ) -> AppResult<CoreProviderMetadata> {
        let ttl = Duration::from_secs(self.config.discovery_ttl_s);
        if !fresh {
            let cache = self.discovered.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((at, m)) = cache.get(&p.id) {
                if at.elapsed() < ttl {
                    return Ok(m.clone());
                }
            }
        }
        let issuer = IssuerUrl::new(p.issuer.clone()).map_err(|e| failed(e.to_string()))?;
        let metadata = CoreProviderMetadata::discover_async(issuer, &self.http)
            .await
            .map_err(|e| {
                tracing::warn!(provider = %p.id, error = %e, "oidc discovery failed");
                AppError::new(
                    ErrorCode::Unavailable,
                    format!(
                        "the sign-in provider {} cannot be reached, try again later",
                        p.name
                    ),
                )
            })?;
        self.discovered
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(p.id.clone(), (Instant::now(), metadata.clone()));
        Ok(metadata)
    }

    fn client(
        &self,
        p: &OidcProviderConfig,
        metadata: CoreProviderMetadata,
    ) -> CoreClientFromMetadata {
        CoreClient::from_provider_metadata(
            metadata,
            ClientId::new(p.client_id.clone()),
            p.client_secret
                .as_ref()
                .map(|s| ClientSecret::new(s.expose().to_owned())),
        )
        .set_redirect_uri(self.redirect.clone())
    }

    /// Makes the authorization request: a fresh `state`, `nonce` and PKCE
    /// (S256) challenge.
    pub async fn authorize(&self, p: &OidcProviderConfig) -> AppResult<Authorization> {
        let metadata = self.metadata(p, false).await?;
        let client = self.client(p, metadata);
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut request = client.authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        );
        for scope in p.scopes.iter().filter(|s| s.as_str() != "openid") {
            request = request.add_scope(Scope::new(scope.clone()));
        }
        let (url, state, nonce) = request.set_pkce_challenge(challenge).url();
        Ok(Authorization {
            url: url.to_string(),
            state: state.secret().clone(),
            pkce_verifier: verifier.secret().clone(),
            nonce: nonce.secret().clone(),
        })
    }

    /// The callback's work: redeems the code (with the PKCE verifier) and
    /// verifies the ID token (signature, `iss`, `aud`, `exp`, `nonce`).
    pub async fn finish(
        &self,
        p: &OidcProviderConfig,
        code: String,
        pkce_verifier: String,
        nonce: String,
    ) -> AppResult<SignedIn> {
        let metadata = self.metadata(p, false).await?;
        let client = self.client(p, metadata);
        let tokens = client
            .exchange_code(AuthorizationCode::new(code))
            .map_err(|e| failed(format!("the provider has no token endpoint: {e}")))?
            .set_pkce_verifier(PkceCodeVerifier::new(pkce_verifier))
            .request_async(&self.http)
            .await
            .map_err(|e| {
                tracing::info!(provider = %p.id, error = %e, "oidc code exchange refused");
                failed("the provider did not accept the sign-in, start again")
            })?;
        let id_token = tokens
            .id_token()
            .ok_or_else(|| failed("the provider sent no ID token"))?;
        let nonce = Nonce::new(nonce);
        let claims = match id_token.claims(&client.id_token_verifier(), &nonce) {
            Ok(c) => c.clone(),
            Err(first) => {
                // The provider may have rotated its keys since discovery:
                // read them again once before giving up.
                let metadata = self.metadata(p, true).await?;
                let client = self.client(p, metadata);
                let verified = id_token.claims(&client.id_token_verifier(), &nonce);
                verified.cloned().map_err(|_| {
                    tracing::info!(provider = %p.id, error = %first, "oidc id token refused");
                    failed(format!("the ID token failed verification: {first}"))
                })?
            }
        };
        let name = claims
            .name()
            .and_then(|n| n.get(None))
            .map(|n| n.as_str().to_owned());
        Ok(SignedIn {
            identity: OidcIdentity {
                issuer: claims.issuer().as_str().to_owned(),
                subject: claims.subject().as_str().to_owned(),
            },
            preferred_username: claims.preferred_username().map(|u| u.as_str().to_owned()),
            name,
            email: claims.email().map(|e| e.as_str().to_owned()),
        })
    }
}

/// A client made from discovery: authorization endpoint set, token and
/// userinfo endpoints as the provider lists them.
type CoreClientFromMetadata = CoreClient<
    openidconnect::EndpointSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointMaybeSet,
    openidconnect::EndpointMaybeSet,
>;

/// An id from a display name: its ASCII letters and digits, lower-cased.
fn default_id(name: &str, index: usize) -> String {
    let id: String = name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .take(32)
        .collect();
    match (id.is_empty(), index) {
        (false, _) => id,
        (true, 0) => "oidc".to_owned(),
        (true, i) => format!("oidc{}", i + 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider(id: &str, name: &str) -> OidcProviderConfig {
        OidcProviderConfig {
            id: id.into(),
            name: name.into(),
            issuer: "https://id.example.com".into(),
            client_id: "confab".into(),
            client_secret: None,
            scopes: Vec::new(),
        }
    }

    #[test]
    fn providers_get_ids_and_names_and_duplicates_are_refused() {
        let config = OidcConfig {
            providers: vec![provider("", "Example ID"), provider("", "")],
            ..Default::default()
        };
        let oidc = Oidc::new(config, "https://chat.example.com/").expect("valid");
        let ids: Vec<_> = oidc
            .providers()
            .into_iter()
            .map(|p| (p.id, p.name))
            .collect();
        assert_eq!(
            ids,
            vec![
                ("exampleid".to_owned(), "Example ID".to_owned()),
                ("idexamplecom".to_owned(), "id.example.com".to_owned())
            ]
        );
        assert_eq!(
            oidc.redirect_uri(),
            "https://chat.example.com/v1/auth/oidc/callback"
        );
        let twice = OidcConfig {
            providers: vec![provider("a", "A"), provider("a", "B")],
            ..Default::default()
        };
        assert!(Oidc::new(twice, "http://x").is_err());
        let bad = OidcConfig {
            providers: vec![provider("A B", "A")],
            ..Default::default()
        };
        assert!(Oidc::new(bad, "http://x").is_err());
        let cjk = OidcConfig {
            providers: vec![provider("", "微信")],
            ..Default::default()
        };
        let oidc = Oidc::new(cjk, "http://x").expect("valid");
        assert_eq!(oidc.providers()[0].id, "oidc");
        assert_eq!(oidc.providers()[0].name, "微信");
    }
}
