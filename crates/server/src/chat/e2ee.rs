//! The MLS delivery service's rules (docs/protocol.md, "End-to-end
//! encryption"), for both doors: what an uploaded KeyPackage must be, and
//! what an `encrypted` message's clear header may claim (its Welcome goes
//! to devices of members). The epoch rule itself is decided in the commit
//! (`store::write_plan::apply_epochs`), where seqs are given.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use confab_proto::e2ee::{encrypted_header, MlsKind};
use confab_proto::{ApiError, DeviceId, ErrorCode, MessageKind, UserId};
use confab_store::{NewMessage, Store};
use openmls::prelude::{
    BasicCredential, Ciphersuite, ContentType, KeyPackageIn, MlsMessageBodyIn, MlsMessageIn,
    ProtocolVersion,
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
///
/// The header says which to try first: an `MLSMessage` holding a
/// KeyPackage starts with version `00 01` and wire format `00 05`
/// (`mls_key_package`), a bare one with version `00 01` and its
/// ciphersuite (`00 01` for any we accept). Trying the bare form first is
/// not enough: now and then (about one package in a thousand) the bytes
/// of a wrapped package also read as a whole, nonsensical bare one, which
/// then fails its signature check.
fn parse(bytes: &[u8]) -> Option<KeyPackageIn> {
    let bare = || {
        let mut rest = bytes;
        KeyPackageIn::tls_deserialize(&mut rest)
            .ok()
            .filter(|_| rest.is_empty())
    };
    let wrapped = || {
        let mut rest = bytes;
        let msg = MlsMessageIn::tls_deserialize(&mut rest).ok()?;
        if !rest.is_empty() {
            return None;
        }
        match msg.extract() {
            MlsMessageBodyIn::KeyPackage(kp) => Some(kp),
            _ => None,
        }
    };
    if bytes.get(2..4) == Some(&[0, 5]) {
        wrapped().or_else(bare)
    } else {
        bare().or_else(wrapped)
    }
}

/// Checks what an `encrypted` message's clear header claims that the
/// commit cannot: each device its Welcome is for is a live device of a
/// current member (one store read; the commit refuses non-members and
/// applies the epoch rule), and the MLS framing matches the header
/// ([`check_framing`]).
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
    if !header.welcome_devices.is_empty() {
        check_welcome_devices(store, msg, &header.welcome_devices).await?;
    }
    check_framing(msg.conversation_id, &header, &body)
}

/// What the server can check of an MLS message without reading it: the
/// ciphertext is an `MLSMessage` carrying a PrivateMessage or
/// PublicMessage of this conversation's group (`confab:<id>`), at the
/// epoch the header names, of the content type the header names (a commit
/// is a commit: a mislabelled or undecodable "commit" would otherwise move
/// the epoch and leave every member behind), and a Welcome decodes as one.
fn check_framing(
    conversation_id: confab_proto::ConversationId,
    header: &confab_proto::e2ee::EncryptedHeader,
    body: &serde_json::Value,
) -> Result<(), ApiError> {
    let bad = |m: String| ApiError::new(ErrorCode::BadRequest, m);
    let decode = |field: &str| -> Result<MlsMessageIn, ApiError> {
        let text = body
            .get(field)
            .and_then(serde_json::Value::as_str)
            .ok_or_else(|| bad(format!("\"{field}\" must be a base64 string")))?;
        let bytes = B64
            .decode(text)
            .map_err(|_| bad(format!("\"{field}\" is not base64 (standard, padded)")))?;
        MlsMessageIn::tls_deserialize_exact(bytes.as_slice())
            .map_err(|_| bad(format!("\"{field}\" is not an MLS message")))
    };
    let message = decode("ciphertext")?
        .try_into_protocol_message()
        .map_err(|_| bad("\"ciphertext\" is not an MLS group message".into()))?;
    let group = format!("confab:{conversation_id}");
    if message.group_id().as_slice() != group.as_bytes() {
        return Err(bad(format!(
            "the MLS message is not for this conversation's group ({group})"
        )));
    }
    if message.epoch().as_u64() != header.epoch {
        return Err(bad(format!(
            "the MLS message is of epoch {}, the body says {}",
            message.epoch().as_u64(),
            header.epoch
        )));
    }
    let expected = match header.mls {
        MlsKind::Application => ContentType::Application,
        MlsKind::Commit => ContentType::Commit,
        MlsKind::Proposal => ContentType::Proposal,
    };
    if message.content_type() != expected {
        return Err(bad(format!(
            "the MLS message is a {:?}, the body says {:?}",
            message.content_type(),
            header.mls
        )));
    }
    if body.get("welcome").is_some()
        && !matches!(decode("welcome")?.extract(), MlsMessageBodyIn::Welcome(_))
    {
        return Err(bad("\"welcome\" is not an MLS Welcome".into()));
    }
    Ok(())
}

/// Each device a Welcome is for is a live device of a current member.
async fn check_welcome_devices(
    store: &dyn Store,
    msg: &NewMessage,
    welcome_devices: &[DeviceId],
) -> Result<(), ApiError> {
    let known = store
        .member_devices(msg.conversation_id, welcome_devices)
        .await
        .map_err(crate::error::store_error)?;
    if let Some(stranger) = welcome_devices.iter().find(|d| !known.contains(d)) {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A KeyPackage made by the browser app (ts-mls) and sent in an
    /// `MLSMessage`, whose bytes also read as one whole (nonsensical) bare
    /// KeyPackage: one of 900 uploaded from Chromium, refused with "the leaf
    /// node signature is not valid" while `parse` tried the bare form first.
    const AMBIGUOUS: &str = concat!(
        "AAEABQABAAEgqYMxkKEPmt2wKGLX6/oAHc4kaB+QO3YzHUWnqB89hQkg0qYoD4y+dAypbiK1ksns",
        "v0XiGDA8ivGWrxF9G+saQhoggQh88IH5XueWvXBxQa86MiOF1pCLgdVJkJU6BXNbm5MAAQUyMDo0",
        "NAIAASgAAQACAAMABAAFAAYABwBNAE4ATwBQAFEAUgBTAFQAVQBWAFcAWHp6BAoKGhoECgqqqgYA",
        "AQACGhoBAAAAAGsSwk8AAAAAa4A83wBAQKRV3he/Ce5sm/xYSKD1clArjQrFj+2C+UrJewloo0Yt",
        "/S4kRuCk3U9K/wUAzfw676tY2itUQwJ7Z/15yoh9nQMAQEBSobvdPgKGtWV2Rd8c9mJjj4Rc1zRd",
        "jeUBsuJkT4wS2zsPgxeyLPHKlC+1A4YAebAUQltjdcIAYYBzEzlhPFsF",
    );

    #[test]
    fn a_wrapped_key_package_that_also_reads_as_a_bare_one_is_read_as_wrapped() {
        let bytes = B64.decode(AMBIGUOUS).expect("base64");
        // The trap: read bare, every byte is used up.
        let mut rest = &bytes[..];
        assert!(KeyPackageIn::tls_deserialize(&mut rest).is_ok() && rest.is_empty());
        let kp = parse(&bytes).expect("a key package");
        let again = tls_codec::Serialize::tls_serialize_detached(&kp).expect("encode");
        assert_eq!(again, bytes[4..], "the package inside the MLSMessage");
        // A bare package still reads as itself.
        let bare = parse(&bytes[4..]).expect("bare");
        assert_eq!(
            tls_codec::Serialize::tls_serialize_detached(&bare).expect("encode"),
            bytes[4..]
        );
    }
}
