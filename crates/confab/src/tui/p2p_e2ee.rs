//! The P2P terminal app's end-to-end encrypted conversations, the parts
//! apart from the runner: a conversation's lines as this device opened
//! them, bounded KeyPackage waits, and what the app says when keys cannot
//! be had.

use confab_p2p::node::NodeError;
use confab_p2p::store::{Store, StoreError, StoredMessage};

use super::p2p_map;

/// How long a command waits for members' KeyPackages (the node answers at
/// once for a member that is not connected; this bounds a silent one).
const KEYS_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// A conversation's lines: its history, encrypted messages as this
/// device opened them (see [`p2p_map::shown_message`]).
pub fn lines(s: &mut Store, id: &str) -> Result<Vec<StoredMessage>, StoreError> {
    if !s.is_encrypted(id)? {
        return s.history(id);
    }
    Ok(s.shown_history(id)?
        .into_iter()
        .map(p2p_map::shown_message)
        .collect())
}

/// Runs a node call that fetches members' KeyPackages (none is sent
/// before they all came, so it can run again), bounded by [`KEYS_WAIT`].
/// A member that gave a KeyPackage less than 5 s ago says how long to
/// wait, and the node asks it again itself (`/dm NAME -e` then
/// `/group … NAME -e` at once).
pub async fn with_keys<T, F, Fut>(call: F) -> Result<T, NodeError>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, NodeError>>,
{
    tokio::time::timeout(KEYS_WAIT, call())
        .await
        .unwrap_or_else(|_| {
            Err(NodeError::Transport(
                "waiting for keys: no answer from a member".into(),
            ))
        })
}

/// What to say when an encrypted conversation or change could not get a
/// member's keys: a member that could not be asked (not connected, the
/// connection closed, no answer) must be online, as its KeyPackage comes
/// from it; one that answered without a KeyPackage, and other errors, as
/// they are.
pub fn keys_notice(error: &str, who: &str) -> String {
    if !error.contains("waiting for keys") {
        error.to_owned()
    } else if !["answered no key package", "too often", "no contact"]
        .iter()
        .any(|why| error.contains(why))
    {
        format!(
            "🔒 waiting for keys: {who} must be online (connected to this device) for end-to-end encryption; try again when connected"
        )
    } else {
        format!("🔒 {error}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_say_who_must_be_online() {
        let offline = "store: waiting for keys: cannot get 12D3KooWx's key package (12D3KooWx is not connected); try again when it is online";
        assert_eq!(
            keys_notice(offline, "小明"),
            "🔒 waiting for keys: 小明 must be online (connected to this device) for end-to-end encryption; try again when connected"
        );
        let other =
            "waiting for keys: cannot get x's key package (the peer answered no key package)";
        assert_eq!(keys_notice(other, "bob"), format!("🔒 {other}"));
        assert_eq!(keys_notice("no contact bob", "bob"), "no contact bob");
        let closed = "waiting for keys: cannot get x's key package (Connection was closed before a response was received)";
        assert!(keys_notice(closed, "carl").starts_with("🔒 waiting for keys: carl must be online"));
    }
}
