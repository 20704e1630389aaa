//! Full-text search, the part both backends share: tokenizing
//! ([`text`]), what an indexing round writes ([`plan_round`]), and the
//! background indexer task that keeps the index behind the commits.
//!
//! Indexing is off the ack path: the commit that acks a message writes only
//! the message's key into `search_queue` (a trigger, one small row), and
//! the indexer, woken after each commit and every [`POLL`] anyway, takes
//! the queue in rounds of up to [`ROUND`] keys, reads each message's
//! current state, and in one transaction writes or removes its index entry
//! and deletes the keys it handled. The queue is the persisted watermark:
//! whatever is not in it is in the index, so a restart (even after
//! `kill -9`) resumes where the last round ended. Rebuilding empties the
//! index and queues every searchable message again.

pub(crate) mod text;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Notify;

use crate::Result;

/// Keys taken per indexing round.
pub(crate) const ROUND: usize = 4096;
/// How often the indexer looks at the queue when no commit woke it (other
/// nodes' commits on a shared database, or a missed wake-up).
pub(crate) const POLL: Duration = Duration::from_millis(200);
/// How long the indexer lets keys gather after a wake-up, so that under
/// load it writes large batches instead of one per commit.
pub(crate) const GATHER: Duration = Duration::from_millis(20);
/// Pause after a failed round before the next try.
const RETRY: Duration = Duration::from_secs(1);

/// One queued key with the message's state when the round read it.
#[derive(Debug, Clone)]
pub(crate) struct Queued {
    pub queue_id: i64,
    pub conversation_id: i64,
    pub seq: i64,
    /// `(kind, body, deleted)`; `None` when the message is gone.
    pub message: Option<(String, String, bool)>,
}

/// A queue row joined with its message, as both backends select it:
/// `id, conversation_id, seq, kind, body, deleted_at`.
pub(crate) type QueueRow = (i64, i64, i64, Option<String>, Option<String>, Option<i64>);

impl Queued {
    /// Reads a [`QueueRow`].
    pub(crate) fn from_row((id, c, s, kind, body, deleted): QueueRow) -> Queued {
        Queued {
            queue_id: id,
            conversation_id: c,
            seq: s,
            message: kind.zip(body).map(|(k, b)| (k, b, deleted.is_some())),
        }
    }
}

/// A message's key: `(conversation_id, seq)`.
pub(crate) type MessageKey = (i64, i64);

/// What a round writes: per message key, its tokens (`None`: no entry).
#[derive(Debug, Default)]
pub(crate) struct RoundPlan {
    pub entries: Vec<(MessageKey, Option<Vec<String>>)>,
    pub queue_ids: Vec<i64>,
}

/// Turns a round's queued keys into index entries: the latest state of
/// each message once; deleted, emptied and non-text messages get none.
pub(crate) fn plan_round(queued: Vec<Queued>) -> RoundPlan {
    let mut plan = RoundPlan::default();
    let mut seen: HashMap<MessageKey, usize> = HashMap::new();
    for q in queued {
        plan.queue_ids.push(q.queue_id);
        let key = (q.conversation_id, q.seq);
        let tokens = q.message.and_then(|(kind, body, deleted)| {
            if deleted {
                return None;
            }
            let body: serde_json::Value = serde_json::from_str(&body).ok()?;
            let tokens = text::index_tokens(&text::searchable_text(&kind, &body)?);
            (!tokens.is_empty()).then_some(tokens)
        });
        match seen.get(&key) {
            Some(&i) => plan.entries[i].1 = tokens,
            None => {
                seen.insert(key, plan.entries.len());
                plan.entries.push((key, tokens));
            }
        }
    }
    plan
}

/// A found message with its snippet.
pub(crate) fn hit(
    plan: &text::SearchPlan,
    message: confab_proto::MessageRecord,
) -> crate::SearchHit {
    let body = text::searchable_text(message.kind.as_str(), &message.body).unwrap_or_default();
    crate::SearchHit {
        snippet: plan.snippet(&body),
        message,
    }
}

/// The SQL side of indexing, one per backend.
#[async_trait]
pub(crate) trait IndexBackend: Send + Sync + 'static {
    /// Runs one round over at most [`ROUND`] queued keys; how many it took.
    async fn index_round(&self) -> Result<usize>;
    /// The lowest and highest queued key ids; `None` when the queue is empty.
    async fn queue_bounds(&self) -> Result<Option<(i64, i64)>>;
}

/// How long a search waits for the indexer to take in what was committed
/// before it (then it searches the index as it is).
pub(crate) const SEARCH_WAIT: Duration = Duration::from_secs(1);

/// Waits until every key queued when it was called has been indexed (by
/// this node's indexer or another's), at most `limit`: a search sees the
/// messages acked before it began, though indexing is off the ack path.
pub(crate) async fn wait_for_index(
    indexer: &Indexer,
    backend: &impl IndexBackend,
    limit: Duration,
) -> Result<()> {
    let Some((_, through)) = backend.queue_bounds().await? else {
        return Ok(());
    };
    let mut rounds = indexer.rounds.subscribe();
    indexer.wake();
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match backend.queue_bounds().await? {
            Some((head, _)) if head <= through => {}
            _ => return Ok(()),
        }
        // Another node's indexer may be the one working: look again now
        // and then even without news from ours.
        let next = tokio::time::timeout(Duration::from_millis(20), rounds.changed());
        if tokio::time::timeout_at(deadline, next).await.is_err() {
            return Ok(());
        }
    }
}

/// The background indexer of one store: a task and the handle that wakes
/// it. Dropping it stops the task.
#[derive(Debug)]
pub(crate) struct Indexer {
    wake: Arc<Notify>,
    /// Counts finished rounds, for [`wait_for_index`].
    rounds: tokio::sync::watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl Indexer {
    /// Starts the task on `backend`.
    pub(crate) fn start(backend: impl IndexBackend + Clone) -> Indexer {
        let wake = Arc::new(Notify::new());
        let w = wake.clone();
        let (rounds, _) = tokio::sync::watch::channel(0u64);
        let done = rounds.clone();
        let task = tokio::spawn(async move {
            loop {
                let woken = tokio::time::timeout(POLL, w.notified()).await.is_ok();
                if woken {
                    tokio::time::sleep(GATHER).await;
                }
                loop {
                    let r = backend.index_round().await;
                    if r.is_ok() {
                        done.send_modify(|n| *n += 1);
                    }
                    match r {
                        Ok(n) if n >= ROUND => continue,
                        Ok(_) => break,
                        Err(e) => {
                            tracing::warn!(error = %e, "search indexing round failed");
                            tokio::time::sleep(RETRY).await;
                            break;
                        }
                    }
                }
            }
        });
        Indexer { wake, rounds, task }
    }

    /// Tells the indexer that new keys were committed.
    pub(crate) fn wake(&self) {
        self.wake.notify_one();
    }

    /// Stops the task.
    pub(crate) fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for Indexer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_round_indexes_the_latest_state_once() {
        let q = |id, seq, m: Option<(&str, &str, bool)>| Queued {
            queue_id: id,
            conversation_id: 1,
            seq,
            message: m.map(|(k, b, d)| (k.to_string(), b.to_string(), d)),
        };
        let plan = plan_round(vec![
            q(1, 1, Some(("text", r#"{"text":"Hello world"}"#, false))),
            q(2, 2, Some(("text", r#"{"text":"gone"}"#, true))),
            q(3, 1, Some(("text", r#"{"text":"hello again"}"#, false))),
            q(4, 3, Some(("image", r#"{"caption":"sunset"}"#, false))),
            q(5, 4, None),
            q(6, 5, Some(("system", r#"{"text":"x"}"#, false))),
        ]);
        assert_eq!(plan.queue_ids, vec![1, 2, 3, 4, 5, 6]);
        let e: Vec<_> = plan.entries.iter().map(|(k, t)| (k.1, t.clone())).collect();
        assert_eq!(
            e,
            vec![
                (1, Some(vec!["hello".into(), "again".into()])),
                (2, None),
                (3, Some(vec!["sunset".into()])),
                (4, None),
                (5, None),
            ]
        );
    }
}
