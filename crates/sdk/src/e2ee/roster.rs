//! Who should be in a conversation's MLS group: its leaves
//! (`"<user_id>:<device_id>"` basic credentials) compared with the
//! members' live devices on the server. Sans-IO: the facts come in, the
//! additions and removals go out.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use confab_proto::{DeviceId, UserId};
use openmls::prelude::{BasicCredential, KeyPackage, LeafNodeIndex, MlsGroup};

/// What a commit should change.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Plan {
    /// Devices to add, per user.
    pub missing: BTreeMap<UserId, Vec<DeviceId>>,
    /// Leaves to remove.
    pub stale: Vec<LeafNodeIndex>,
}

/// `"<user>:<device>"` as two ids.
pub(crate) fn parse_identity(identity: &[u8]) -> Option<(UserId, DeviceId)> {
    let s = std::str::from_utf8(identity).ok()?;
    let (u, d) = s.split_once(':')?;
    Some((u.parse().ok()?, d.parse().ok()?))
}

/// Every leaf of the group: (index, user, device); leaves with another kind
/// of identity count as (0, 0), which no member has.
pub(crate) fn leaves(group: &MlsGroup) -> Vec<(LeafNodeIndex, UserId, DeviceId)> {
    let mut out: Vec<_> = group
        .members()
        .map(|m| {
            let (u, d) = BasicCredential::try_from(m.credential)
                .ok()
                .and_then(|c| parse_identity(c.identity()))
                .unwrap_or((0, 0));
            (m.index, u, d)
        })
        .collect();
    out.sort_by_key(|(i, u, d)| (*u, *d, i.u32()));
    out
}

/// Compares the group with `live` (each member's live devices; users not
/// in it are not members) from the point of view of `me` on `my_device`.
pub(crate) fn plan(
    group: &MlsGroup,
    me: UserId,
    my_device: DeviceId,
    live: &HashMap<UserId, Vec<(DeviceId, Option<String>)>>,
) -> Plan {
    let present = leaves(group);
    let have: BTreeSet<(UserId, DeviceId)> = present.iter().map(|(_, u, d)| (*u, *d)).collect();
    let mut plan = Plan::default();
    for (user, devices) in live {
        for (device, _) in devices {
            if (*user, *device) != (me, my_device) && !have.contains(&(*user, *device)) {
                plan.missing.entry(*user).or_default().push(*device);
            }
        }
    }
    for (index, user, device) in present {
        if (user, device) == (me, my_device) {
            continue;
        }
        let wanted = live
            .get(&user)
            .is_some_and(|ds| ds.iter().any(|(d, _)| *d == device));
        if !wanted {
            plan.stale.push(index);
        }
    }
    plan
}

/// Whether a KeyPackage's leaf names `user`'s `device` and carries its
/// registered key (when it has one).
pub(crate) fn leaf_is(kp: &KeyPackage, user: UserId, device: DeviceId, key: Option<&str>) -> bool {
    let leaf = kp.leaf_node();
    let named = BasicCredential::try_from(leaf.credential().clone())
        .ok()
        .and_then(|c| parse_identity(c.identity()))
        == Some((user, device));
    let keyed = match key {
        Some(k) => B64.encode(leaf.signature_key().as_slice()) == k,
        None => true,
    };
    named && keyed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities() {
        assert_eq!(parse_identity(b"12:34"), Some((12, 34)));
        for bad in [&b"12"[..], b"a:1", b"1:", b":1", b"\xff:1"] {
            assert_eq!(parse_identity(bad), None, "{bad:?}");
        }
    }
}
