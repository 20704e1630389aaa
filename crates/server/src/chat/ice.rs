//! The ICE servers a calling client gets: STUN URLs as they are, TURN URLs
//! with short-lived credentials in coturn's shared-secret scheme
//! (`use-auth-secret`, the "TURN REST API"): the user name is
//! `<expiry unix time>:<user_id>` and the password is
//! base64(HMAC-SHA1(secret, user name)), which coturn recomputes with the
//! same secret, so no per-user state is shared with it.

use base64::Engine as _;
use confab_proto::api::{IceServer, IceServers};
use confab_proto::UserId;
use hmac::{Hmac, Mac};
use sha1::Sha1;

use crate::config::CallsConfig;

/// The TURN password for `username` under `secret`.
pub fn turn_credential(secret: &str, username: &str) -> String {
    // HMAC takes a key of any length: new_from_slice cannot fail.
    let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(secret.as_bytes()) else {
        return String::new();
    };
    mac.update(username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// The ICE servers for `user` at `now_s` (Unix seconds). TURN URLs are
/// left out when no secret is configured: they would not work.
pub fn ice_servers(config: &CallsConfig, user: UserId, now_s: u64) -> IceServers {
    let (turn, stun): (Vec<String>, Vec<String>) = config
        .turn_urls
        .iter()
        .cloned()
        .partition(|u| u.starts_with("turn:") || u.starts_with("turns:"));
    let mut ice_servers = Vec::new();
    if !stun.is_empty() {
        ice_servers.push(IceServer {
            urls: stun,
            username: None,
            credential: None,
        });
    }
    if let (false, Some(secret)) = (turn.is_empty(), &config.turn_secret) {
        let username = format!("{}:{user}", now_s + config.turn_ttl_s);
        ice_servers.push(IceServer {
            credential: Some(turn_credential(secret.expose(), &username)),
            urls: turn,
            username: Some(username),
        });
    }
    IceServers {
        ice_servers,
        ttl_s: config.turn_ttl_s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    #[test]
    fn credentials_follow_coturns_scheme() {
        // RFC 2202 test case 2: HMAC-SHA1("Jefe", "what do ya want for
        // nothing?") = effcdf6ae5eb2fa2d27416d5f184df9c259a7c79.
        assert_eq!(
            turn_credential("Jefe", "what do ya want for nothing?"),
            "7/zfauXrL6LSdBbV8YTfnCWafHk="
        );
        let config = CallsConfig {
            turn_urls: vec![
                "stun:example.org:3478".into(),
                "turn:example.org:3478?transport=udp".into(),
            ],
            turn_secret: Some(Secret::new("s3cret")),
            turn_ttl_s: 600,
        };
        let got = ice_servers(&config, 7, 1_000);
        assert_eq!(got.ttl_s, 600);
        assert_eq!(got.ice_servers[0].urls, ["stun:example.org:3478"]);
        let turn = &got.ice_servers[1];
        assert_eq!(turn.username.as_deref(), Some("1600:7"));
        assert_eq!(
            turn.credential.as_deref(),
            Some(turn_credential("s3cret", "1600:7").as_str())
        );
        let no_secret = CallsConfig {
            turn_secret: None,
            ..config
        };
        assert_eq!(ice_servers(&no_secret, 7, 1_000).ice_servers.len(), 1);
    }
}
