//! End-to-end encryption on the wire (docs/protocol.md, "End-to-end
//! encryption"): the clear header of an `encrypted` message body that the
//! server orders by (MLS message type and epoch, Welcome recipients, the
//! attachment's upload), and the bodies of the KeyPackage routes.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{ApiError, ErrorCode};
use crate::{DeviceId, Millis};

/// Most devices one Welcome may be addressed to.
pub const MAX_WELCOME_DEVICES: usize = 1000;
/// Most KeyPackages one upload may carry.
pub const MAX_KEY_PACKAGES_PER_UPLOAD: usize = 100;

/// What an MLS message in an `encrypted` body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MlsKind {
    /// An application message (what members say).
    Application,
    /// A commit: moves the group to the next epoch.
    Commit,
    /// A proposal.
    Proposal,
}

/// The fields of an `encrypted` body the server reads (everything but the
/// ciphertext, which it never reads).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncryptedHeader {
    /// Commit, proposal or application message.
    pub mls: MlsKind,
    /// The sender's MLS epoch.
    pub epoch: u64,
    /// Devices the Welcome (commits only) is for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub welcome_devices: Vec<DeviceId>,
}

/// The full `encrypted` body as clients build it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncryptedBody {
    /// The TLS-serialised `MLSMessage`, base64.
    pub ciphertext: String,
    /// Commit, proposal or application message.
    pub mls: MlsKind,
    /// The sender's MLS epoch.
    pub epoch: u64,
    /// A Welcome `MLSMessage`, base64 (commits that add devices).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub welcome: Option<String>,
    /// The devices the Welcome is for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub welcome_devices: Vec<DeviceId>,
    /// The (encrypted) upload an application message's attachment is in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_id: Option<String>,
}

/// The clear header of an `encrypted` body, `None` when it has none (an
/// `encrypted` message outside an encrypted conversation may be anything
/// with a `ciphertext`). A header that is there but malformed is an error.
pub fn encrypted_header(body: &Value) -> Result<Option<EncryptedHeader>, ApiError> {
    let Some(obj) = body.as_object() else {
        return Ok(None);
    };
    if !obj.contains_key("mls") && !obj.contains_key("epoch") {
        return Ok(None);
    }
    let bad = |m: &str| ApiError::new(ErrorCode::BadRequest, m);
    let header: EncryptedHeader = serde_json::from_value(Value::Object(obj.clone()))
        .map_err(|_| {
            bad("\"mls\" must be application, commit or proposal and \"epoch\" a non-negative integer")
        })?;
    let welcome = obj.get("welcome");
    if welcome.is_some_and(|w| !w.is_string()) {
        return Err(bad("\"welcome\" must be a base64 string"));
    }
    if welcome.is_some() != !header.welcome_devices.is_empty() {
        return Err(bad("\"welcome\" and \"welcome_devices\" go together"));
    }
    if welcome.is_some() && header.mls != MlsKind::Commit {
        return Err(bad("only a commit carries a welcome"));
    }
    if header.welcome_devices.len() > MAX_WELCOME_DEVICES {
        return Err(bad("a welcome may be for at most 1000 devices"));
    }
    if obj.get("media_id").is_some_and(|m| !m.is_string()) {
        return Err(bad("\"media_id\" must be a string"));
    }
    Ok(Some(header))
}

/// `POST /v1/keys/packages`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct UploadKeyPackagesRequest {
    /// TLS-serialised KeyPackages, base64.
    #[serde(default)]
    pub key_packages: Vec<String>,
    /// A package handed out when the stock is empty, and kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_resort: Option<String>,
}

/// A device's KeyPackages on the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyPackageStock {
    /// Packages that will be handed out (and consumed).
    pub stock: i64,
    /// Whether a last-resort package is kept.
    pub last_resort: bool,
}

/// One device of a user (`GET /v1/users/{id}/devices`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceInfo {
    /// The device.
    pub device_id: DeviceId,
    /// Its Ed25519 public key, base64 of the 32 bytes, if registered.
    pub public_key: Option<String>,
    /// When it logged in.
    pub created_at: Millis,
}

/// `GET /v1/users/{id}/devices`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DevicesResponse {
    /// The user's live devices.
    pub devices: Vec<DeviceInfo>,
}

/// One claimed KeyPackage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimedKeyPackage {
    /// Whose.
    pub device_id: DeviceId,
    /// The package, base64.
    pub key_package: String,
}

/// `GET /v1/users/{id}/key-packages`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClaimedKeyPackages {
    /// One per device that had one.
    pub key_packages: Vec<ClaimedKeyPackage>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn header_table() {
        let ok = |v: Value| encrypted_header(&v).map_err(|e| e.code);
        assert_eq!(ok(json!({"ciphertext": "AA"})), Ok(None));
        assert_eq!(
            ok(json!({"ciphertext": "AA", "mls": "commit", "epoch": 3})),
            Ok(Some(EncryptedHeader {
                mls: MlsKind::Commit,
                epoch: 3,
                welcome_devices: vec![]
            }))
        );
        for bad in [
            json!({"ciphertext": "AA", "mls": "weird", "epoch": 3}),
            json!({"ciphertext": "AA", "mls": "commit", "epoch": -1}),
            json!({"ciphertext": "AA", "mls": "commit"}),
            json!({"ciphertext": "AA", "mls": "commit", "epoch": 0, "welcome": "AA"}),
            json!({"ciphertext": "AA", "mls": "application", "epoch": 0, "welcome": "AA", "welcome_devices": [1]}),
            json!({"ciphertext": "AA", "mls": "commit", "epoch": 0, "welcome_devices": [1]}),
            json!({"ciphertext": "AA", "mls": "application", "epoch": 0, "media_id": 5}),
        ] {
            assert_eq!(ok(bad.clone()), Err(ErrorCode::BadRequest), "{bad}");
        }
    }
}
