//! The MLS delivery service over HTTP: a device's KeyPackages (upload,
//! stock), a user's devices, and claiming one KeyPackage per device
//! (docs/protocol.md, "End-to-end encryption").

use axum::extract::State;
use axum::Json;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use confab_proto::e2ee::{
    ClaimedKeyPackage, ClaimedKeyPackages, DevicesResponse, KeyPackageStock,
    UploadKeyPackagesRequest, MAX_KEY_PACKAGES_PER_UPLOAD,
};
use confab_proto::{DeviceId, ErrorCode, UserId};
use serde::Deserialize;

use super::{ApiJson, ApiQuery};
use crate::auth::AuthUser;
use crate::chat::e2ee::{check_key_package, encode_device_key};
use crate::clock::now_millis;
use crate::error::{AppError, AppResult};
use crate::extract::ApiPath;
use crate::state::AppState;

/// `POST /v1/keys/packages`: adds KeyPackages of the caller's device, all
/// or none.
pub async fn upload(
    State(state): State<AppState>,
    who: AuthUser,
    ApiJson(req): ApiJson<UploadKeyPackagesRequest>,
) -> AppResult<Json<KeyPackageStock>> {
    if req.key_packages.len() > MAX_KEY_PACKAGES_PER_UPLOAD {
        return Err(AppError::bad_request(format!(
            "at most {MAX_KEY_PACKAGES_PER_UPLOAD} key packages per request"
        )));
    }
    let limits = &state.config.limits;
    let mut key: Option<Vec<u8>> = None;
    let mut check = |encoded: &str| -> AppResult<Vec<u8>> {
        let (tls, signature_key) = check_key_package(
            encoded,
            who.user_id,
            who.device_id,
            limits.max_key_package_bytes,
        )?;
        if key.as_ref().is_some_and(|k| *k != signature_key) {
            return Err(AppError::new(
                ErrorCode::InvalidKeyPackage,
                "all key packages of a device must carry its one signature key",
            ));
        }
        key = Some(signature_key);
        Ok(tls)
    };
    let mut packages = Vec::with_capacity(req.key_packages.len());
    for encoded in &req.key_packages {
        packages.push(check(encoded)?);
    }
    let last_resort = req.last_resort.as_deref().map(&mut check).transpose()?;
    if let Some(key) = key {
        let encoded = encode_device_key(&key);
        let registered = state
            .store
            .pin_device_key(who.device_id, &encoded)
            .await?
            .ok_or_else(|| AppError::new(ErrorCode::Unauthorized, "this device is revoked"))?;
        if registered != encoded {
            return Err(AppError::new(
                ErrorCode::InvalidKeyPackage,
                "the key package's signature key is not this device's registered key (device_public_key)",
            ));
        }
    }
    let max = limits.max_key_packages_per_device;
    let stock = state
        .store
        .add_key_packages(who.device_id, packages, last_resort, max, now_millis())
        .await?
        .ok_or_else(|| {
            AppError::new(
                ErrorCode::KeyPackageLimit,
                format!("a device may keep at most {max} key packages; upload fewer"),
            )
        })?;
    Ok(Json(stock))
}

/// `GET /v1/keys/packages`: the caller's device's stock.
pub async fn stock(
    State(state): State<AppState>,
    who: AuthUser,
) -> AppResult<Json<KeyPackageStock>> {
    Ok(Json(state.store.key_package_stock(who.device_id).await?))
}

/// Another user's devices and key packages are for those who could start
/// a conversation with them: they exist, and no block either way.
async fn check_reachable(state: &AppState, me: UserId, them: UserId) -> AppResult<()> {
    state
        .store
        .user(them)
        .await?
        .ok_or_else(|| AppError::not_found("user"))?;
    if me != them && state.store.blocked_either(me, them).await? {
        return Err(AppError::new(ErrorCode::Blocked, crate::refusal::BLOCKED));
    }
    Ok(())
}

/// `GET /v1/users/{id}/devices`: the user's live devices and their keys.
pub async fn devices(
    State(state): State<AppState>,
    who: AuthUser,
    ApiPath(user): ApiPath<UserId>,
) -> AppResult<Json<DevicesResponse>> {
    check_reachable(&state, who.user_id, user).await?;
    Ok(Json(DevicesResponse {
        devices: state.store.live_devices(user).await?,
    }))
}

/// Query of `GET /v1/users/{id}/key-packages`.
#[derive(Debug, Deserialize)]
pub struct ClaimQuery {
    /// Comma-separated device ids: only these.
    device_ids: Option<String>,
}

/// `GET /v1/users/{id}/key-packages`: one KeyPackage per live device,
/// consumed (the last-resort one is kept).
pub async fn claim(
    State(state): State<AppState>,
    who: AuthUser,
    ApiPath(user): ApiPath<UserId>,
    ApiQuery(q): ApiQuery<ClaimQuery>,
) -> AppResult<Json<ClaimedKeyPackages>> {
    check_reachable(&state, who.user_id, user).await?;
    let only: Option<Vec<DeviceId>> = match q.device_ids.as_deref() {
        None => None,
        Some(list) => Some(
            list.split(',')
                .filter(|s| !s.is_empty())
                .map(|s| s.trim().parse::<DeviceId>())
                .collect::<Result<_, _>>()
                .map_err(|_| AppError::bad_request("device_ids must be comma-separated ids"))?,
        ),
    };
    if only.as_ref().is_some_and(|o| o.len() > 1000) {
        return Err(AppError::bad_request("at most 1000 device_ids"));
    }
    let claimed = state
        .store
        .claim_key_packages(user, only.as_deref())
        .await?;
    Ok(Json(ClaimedKeyPackages {
        key_packages: claimed
            .into_iter()
            .map(|(device_id, data)| ClaimedKeyPackage {
                device_id,
                key_package: B64.encode(data),
            })
            .collect(),
    }))
}
