//! Typing state of one connection: which conversations it is typing in,
//! until when, and to whom the indicator was relayed. A `start` relays
//! only when the state changes; refreshes just push the deadline, so a
//! client refreshing every few seconds costs no database read and sends
//! the others nothing. A start not refreshed within the timeout ends by
//! itself (the others get `stop`), as does everything when the connection
//! closes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use confab_proto::{ConversationId, UserId};
use tokio::time::Instant;

/// One conversation being typed in.
struct Active {
    deadline: Instant,
    audience: Arc<[UserId]>,
}

/// Per-connection typing tracker.
pub struct Typing {
    timeout: Duration,
    active: HashMap<ConversationId, Active>,
}

impl Typing {
    /// A tracker whose starts last `timeout` unless refreshed.
    pub fn new(timeout: Duration) -> Typing {
        Typing {
            timeout,
            active: HashMap::new(),
        }
    }

    /// A `start` for a conversation already active: pushes its deadline and
    /// returns true (nothing to relay).
    pub fn refresh(&mut self, conversation: ConversationId, now: Instant) -> bool {
        match self.active.get_mut(&conversation) {
            Some(a) => {
                a.deadline = now + self.timeout;
                true
            }
            None => false,
        }
    }

    /// A relayed `start`: remembers to whom, to tell them `stop` later.
    pub fn start(&mut self, conversation: ConversationId, audience: Arc<[UserId]>, now: Instant) {
        self.active.insert(
            conversation,
            Active {
                deadline: now + self.timeout,
                audience,
            },
        );
    }

    /// A `stop`: the audience to tell, if the conversation was active.
    pub fn stop(&mut self, conversation: ConversationId) -> Option<Arc<[UserId]>> {
        self.active.remove(&conversation).map(|a| a.audience)
    }

    /// The next deadline, if anything is active.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.active.values().map(|a| a.deadline).min()
    }

    /// Ends every start past its deadline; returns what to tell whom.
    pub fn expire(&mut self, now: Instant) -> Vec<(ConversationId, Arc<[UserId]>)> {
        let due: Vec<ConversationId> = self
            .active
            .iter()
            .filter(|(_, a)| a.deadline <= now)
            .map(|(c, _)| *c)
            .collect();
        due.into_iter()
            .filter_map(|c| self.stop(c).map(|a| (c, a)))
            .collect()
    }

    /// Ends everything (the connection is closing).
    pub fn drain(&mut self) -> Vec<(ConversationId, Arc<[UserId]>)> {
        self.active.drain().map(|(c, a)| (c, a.audience)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_expire_unless_refreshed() {
        let t0 = Instant::now();
        let mut t = Typing::new(Duration::from_secs(6));
        assert!(!t.refresh(1, t0), "nothing to refresh yet");
        t.start(1, Arc::from(vec![2, 3]), t0);
        t.start(4, Arc::from(vec![5]), t0);
        assert!(t.refresh(1, t0 + Duration::from_secs(5)));
        assert_eq!(t.next_deadline(), Some(t0 + Duration::from_secs(6)));
        let expired = t.expire(t0 + Duration::from_secs(7));
        assert_eq!(expired.len(), 1);
        assert_eq!(expired[0].0, 4);
        assert_eq!(t.next_deadline(), Some(t0 + Duration::from_secs(11)));
        assert_eq!(t.stop(1).as_deref(), Some(&[2, 3][..]));
        assert!(t.stop(1).is_none(), "stop twice relays once");
        assert!(t.drain().is_empty());
    }
}
