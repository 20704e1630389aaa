//! The MLS delivery service's rules (docs/protocol.md, "End-to-end
//! encryption"), for both doors: what an uploaded KeyPackage must be, and
//! what an `encrypted` message's clear header may claim (its Welcome goes
//! to devices of members). The epoch rule itself is decided in the commit
//! (`store::write_plan::apply_epochs`), where seqs are given.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use confab_proto::e2ee::encrypted_header;
use confab_proto::{ApiError, DeviceId, ErrorCode, MessageKind, UserId};
use confab_store::{NewMessage, Store};
use openmls::prelude::{
    BasicCredential, Ciphersuite, KeyPackageIn, MlsMessageBodyIn, MlsMessageIn, ProtocolVersion,
};
use tls_codec::Deserialize as _;

/// The one ciphersuite Confab speaks: `0x0001`.
pub const CIPHERSUITE: Ciphersuite = Ciphersuite::MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519;

fn invalid(why: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::InvalidKeyPackage, why)
}

/// The device key as stored: base64 of the 32 raw Ed25519 bytes.
pub fn encode_device_key(raw: &[u8]) -> String {
    B64.encode(raw)
}

/// Checks one uploaded KeyPackage (base64 of a TLS `KeyPackage`, or of an
/// `MLSMessage` wrapping one) of `user`'s `device`: it parses, has
/// ciphersuite 0x0001, verifies, and has a basic credential naming
/// `"<user>:<device>"`. Answers the TLS bytes to store and the leaf's
/// signature key.
pub fn check_key_package(
    encoded: &str,
    user: UserId,
    device: DeviceId,
    max_bytes: usize,
) -> Result<(Vec<u8>, Vec<u8>), ApiError> {
    if encoded.len() > max_bytes.saturating_mul(4) / 3 + 4 {
        return Err(invalid(format!(
            "a key package may take at most {max_bytes} bytes"
        )));
    }
    let bytes = B64
        .decode(encoded)
        .map_err(|_| invalid("key packages must be base64 (standard, padded)"))?;
    if bytes.len() > max_bytes {
        return Err(invalid(format!(
            "a key package may take at most {max_bytes} bytes"
        )));
    }
    let package = parse(&bytes).ok_or_else(|| invalid("not an MLS KeyPackage"))?;
    let package = package
        .validate(
            &openmls_rust_crypto::RustCrypto::default(),
            ProtocolVersion::Mls10,
        )
        .map_err(|e| invalid(format!("the key package does not verify: {e}")))?;
    if package.ciphersuite() != CIPHERSUITE {
        return Err(invalid(
            "the key package's ciphersuite must be 0x0001 (MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519)",
        ));
    }
    let leaf = package.leaf_node();
    let credential = BasicCredential::try_from(leaf.credential().clone())
        .map_err(|_| invalid("the key package's credential must be a basic credential"))?;
    let want = format!("{user}:{device}");
    if credential.identity() != want.as_bytes() {
        return Err(invalid(format!(
            "the key package's identity must be \"{want}\" (user id:device id)"
        )));
    }
    let key = leaf.signature_key().as_slice().to_vec();
    let tls = tls_codec::Serialize::tls_serialize_detached(&package)
        .map_err(|_| invalid("the key package cannot be re-encoded"))?;
    Ok((tls, key))
}

/// A KeyPackage, bare or in an `MLSMessage`, with nothing left over.
fn parse(bytes: &[u8]) -> Option<KeyPackageIn> {
    let mut rest = bytes;
    if let Ok(kp) = KeyPackageIn::tls_deserialize(&mut rest) {
        if rest.is_empty() {
            return Some(kp);
        }
    }
    let mut rest = bytes;
    let msg = MlsMessageIn::tls_deserialize(&mut rest).ok()?;
    if !rest.is_empty() {
        return None;
    }
    match msg.extract() {
        MlsMessageBodyIn::KeyPackage(kp) => Some(kp),
        _ => None,
    }
}

/// Checks what an `encrypted` message's clear header claims that the
/// commit cannot: each device its Welcome is for is a live device of a
/// current member (one store read; the commit refuses non-members and
/// applies the epoch rule).
pub async fn check_encrypted_message(store: &dyn Store, msg: &NewMessage) -> Result<(), ApiError> {
    if msg.kind != MessageKind::Encrypted {
        return Ok(());
    }
    let Ok(body) = serde_json::from_str::<serde_json::Value>(&msg.body) else {
        return Ok(());
    };
    let Some(header) = encrypted_header(&body)? else {
        return Ok(());
    };
    if header.welcome_devices.is_empty() {
        return Ok(());
    }
    let known = store
        .member_devices(msg.conversation_id, &header.welcome_devices)
        .await
        .map_err(crate::error::store_error)?;
    if let Some(stranger) = header.welcome_devices.iter().find(|d| !known.contains(d)) {
        return Err(ApiError::new(
            ErrorCode::BadRequest,
            format!(
                "device {stranger} in welcome_devices is not a live device of a member: add the user to the conversation first"
            ),
        ));
    }
    Ok(())
}

/// Edits and reactions are plain text the server would read: in an
/// encrypted conversation they travel inside the encrypted stream instead.
pub async fn refuse_plain_change(
    store: &dyn Store,
    id: confab_proto::ConversationId,
) -> Result<(), ApiError> {
    let encrypted = store
        .conversation_encrypted(id)
        .await
        .map_err(crate::error::store_error)?;
    if encrypted == Some(true) {
        return Err(ApiError::new(
            ErrorCode::EncryptionRequired,
            "this conversation is end-to-end encrypted: send edits and reactions inside encrypted messages",
        ));
    }
    Ok(())
}
