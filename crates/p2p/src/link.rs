//! `confab://` contact links: PeerId, display name, known addresses and an
//! optional relay, e.g.
//! `confab://12D3Koo…?name=Ann&addr=/ip4/10.0.0.2/tcp/4001&relay=/ip4/…/p2p/…`.

use libp2p::{Multiaddr, PeerId};

/// A parsed contact link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContactLink {
    /// The device's PeerId.
    pub peer: PeerId,
    /// Its display name (may be empty).
    pub name: String,
    /// Addresses it listens on.
    pub addrs: Vec<Multiaddr>,
    /// A relay it keeps a reservation on.
    pub relay: Option<Multiaddr>,
}

/// Why a link did not parse.
#[derive(Debug, thiserror::Error)]
#[error("invalid confab:// link: {0}")]
pub struct LinkError(String);

impl ContactLink {
    /// The link text.
    pub fn to_link(&self) -> String {
        let mut out = format!("confab://{}?name={}", self.peer, encode(&self.name));
        for a in &self.addrs {
            out.push_str("&addr=");
            out.push_str(&encode(&a.to_string()));
        }
        if let Some(r) = &self.relay {
            out.push_str("&relay=");
            out.push_str(&encode(&r.to_string()));
        }
        out
    }

    /// Parses a link.
    pub fn parse(link: &str) -> Result<ContactLink, LinkError> {
        let rest = link
            .trim()
            .strip_prefix("confab://")
            .ok_or_else(|| LinkError("it must start with confab://".into()))?;
        let (peer, query) = rest.split_once('?').unwrap_or((rest, ""));
        let peer: PeerId = peer
            .trim_end_matches('/')
            .parse()
            .map_err(|_| LinkError(format!("{peer:?} is not a PeerId")))?;
        let mut out = ContactLink {
            peer,
            name: String::new(),
            addrs: Vec::new(),
            relay: None,
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v = decode(v).ok_or_else(|| LinkError(format!("bad escape in {k}")))?;
            match k {
                "name" => out.name = v,
                "addr" => out.addrs.push(
                    v.parse()
                        .map_err(|_| LinkError(format!("{v:?} is not a multiaddr")))?,
                ),
                "relay" => {
                    out.relay = Some(
                        v.parse()
                            .map_err(|_| LinkError(format!("{v:?} is not a multiaddr")))?,
                    )
                }
                _ => {} // unknown keys: newer links stay readable
            }
        }
        Ok(out)
    }
}

fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~/:".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_round_trip_and_bad_ones_are_refused() {
        let peer = libp2p::identity::Keypair::generate_ed25519()
            .public()
            .to_peer_id();
        let link = ContactLink {
            peer,
            name: "Ann & Bo ünï".into(),
            addrs: vec!["/ip4/10.0.0.2/tcp/4001".parse().expect("addr")],
            relay: Some(
                format!("/ip4/1.2.3.4/tcp/4001/p2p/{peer}")
                    .parse()
                    .expect("relay"),
            ),
        };
        assert_eq!(ContactLink::parse(&link.to_link()).expect("parse"), link);
        assert!(ContactLink::parse("http://x").is_err());
        assert!(ContactLink::parse("confab://nope").is_err());
        assert!(ContactLink::parse(&format!("confab://{peer}?addr=%2")).is_err());
    }
}
