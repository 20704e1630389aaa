//! Passwords (argon2id), opaque tokens (random 256-bit, stored as SHA-256
//! hashes), and the extractor that authenticates requests.

use std::sync::Arc;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use confab_proto::api::{TokenResponse, User};
use confab_proto::{DeviceId, ErrorCode, UserId};
use confab_store::{NewToken, Store, TokenKind};
use rand::RngCore;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use crate::clock::now_millis;
use crate::config::AuthConfig;
use crate::error::{AppError, AppResult};

/// Password hashing and token issuing.
pub struct Auth {
    argon2: Argon2<'static>,
    /// Bounds concurrent hashing: each one holds `argon2_memory_kib`.
    hashing: Semaphore,
    /// A hash to verify against when the user does not exist, so a login
    /// for an unknown name costs the same time as a wrong password.
    dummy_hash: String,
    config: AuthConfig,
}

impl Auth {
    /// Sets up hashing with the configured cost.
    pub fn new(config: AuthConfig) -> Result<Auth, String> {
        let params = Params::new(config.argon2_memory_kib, config.argon2_iterations, 1, None)
            .map_err(|e| format!("bad argon2 parameters: {e}"))?;
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let salt = SaltString::generate(&mut rand::rngs::OsRng);
        let dummy_hash = argon2
            .hash_password(b"not a real password", &salt)
            .map_err(|e| format!("argon2 failed: {e}"))?
            .to_string();
        let permits = std::thread::available_parallelism().map_or(2, |n| n.get() * 2);
        Ok(Auth {
            argon2,
            hashing: Semaphore::new(permits),
            dummy_hash,
            config,
        })
    }

    /// Hashes a new password (off the async threads).
    pub async fn hash_password(self: &Arc<Self>, password: String) -> AppResult<String> {
        let _permit = self.hashing.acquire().await.map_err(|_| busy())?;
        let me = self.clone();
        tokio::task::spawn_blocking(move || {
            let salt = SaltString::generate(&mut rand::rngs::OsRng);
            me.argon2
                .hash_password(password.as_bytes(), &salt)
                .map(|h| h.to_string())
                .map_err(|e| AppError::new(ErrorCode::Internal, format!("hashing failed: {e}")))
        })
        .await
        .map_err(|_| busy())?
    }

    /// Checks a password against a stored hash (or the dummy one).
    pub async fn verify_password(self: &Arc<Self>, password: String, hash: Option<String>) -> bool {
        let Ok(_permit) = self.hashing.acquire().await else {
            return false;
        };
        let me = self.clone();
        let real = hash.is_some();
        tokio::task::spawn_blocking(move || {
            let hash = hash.unwrap_or_else(|| me.dummy_hash.clone());
            let ok = PasswordHash::new(&hash)
                .map(|parsed| {
                    me.argon2
                        .verify_password(password.as_bytes(), &parsed)
                        .is_ok()
                })
                .unwrap_or(false);
            ok && real
        })
        .await
        .unwrap_or(false)
    }

    /// Issues a fresh access + refresh pair for a device.
    pub async fn issue(
        &self,
        store: &dyn Store,
        user: User,
        device_id: DeviceId,
    ) -> AppResult<TokenResponse> {
        let now = now_millis();
        let (access, access_hash) = new_token();
        let (refresh, refresh_hash) = new_token();
        let ms = |s: u64| i64::try_from(s.saturating_mul(1000)).unwrap_or(i64::MAX);
        store
            .insert_tokens(vec![
                NewToken {
                    hash: access_hash,
                    device_id,
                    kind: TokenKind::Access,
                    expires_at: now.saturating_add(ms(self.config.access_ttl_s)),
                },
                NewToken {
                    hash: refresh_hash,
                    device_id,
                    kind: TokenKind::Refresh,
                    expires_at: now.saturating_add(ms(self.config.refresh_ttl_s)),
                },
            ])
            .await?;
        Ok(TokenResponse {
            access_token: access,
            refresh_token: refresh,
            expires_in: self.config.access_ttl_s,
            user,
            device_id,
        })
    }
}

fn busy() -> AppError {
    AppError::new(ErrorCode::Unavailable, "server is busy, retry shortly")
}

/// A new random token and its hash.
pub fn new_token() -> (String, Vec<u8>) {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let token = URL_SAFE_NO_PAD.encode(bytes);
    let hash = token_hash(&token);
    (token, hash)
}

/// SHA-256 of a token: what the database keeps.
pub fn token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// The authenticated caller of a request.
#[derive(Debug, Clone, Copy)]
pub struct AuthUser {
    /// User.
    pub user_id: UserId,
    /// Device (login) the token belongs to.
    pub device_id: DeviceId,
}
