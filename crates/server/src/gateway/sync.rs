//! Answering `sync`: messages past the client's cursors, then `sync_done`,
//! as bulk traffic that waits for room in the outbound queue.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use confab_bus::Priority;
use confab_proto::{ConversationId, Seq, ServerFrame, UserId};
use confab_store::{Store, SyncLimits};

/// One sync answer carries at most this many conversations' worth of
/// messages (`sync_batch` each); the rest are flagged `has_more` and come
/// with the client's next sync. Bounds the memory one `sync` can take.
const SYNC_ANSWER_CONVERSATIONS: u32 = 10;

use crate::error::store_error;
use crate::outbound::Outbound;

/// Streams the answer to one `sync` into `out`. Returns when done or when
/// the connection is gone.
pub async fn answer_sync(
    store: Arc<dyn Store>,
    out: Arc<Outbound>,
    user: UserId,
    cursors: HashMap<ConversationId, Seq>,
    cap: u32,
) {
    let limits = SyncLimits {
        per_conversation: cap,
        total: cap.saturating_mul(SYNC_ANSWER_CONVERSATIONS),
    };
    let batches = match store.sync(user, &cursors, limits).await {
        Ok(b) => b,
        Err(e) => {
            let frame = ServerFrame::error(None, store_error(e)).encode();
            let _ = out.push(Priority::Control, Bytes::from(frame));
            return;
        }
    };
    let mut has_more = HashMap::with_capacity(batches.len());
    let mut floors = HashMap::new();
    for batch in batches {
        has_more.insert(batch.conversation_id, batch.has_more);
        if let Some(floor) = batch.floor {
            floors.insert(batch.conversation_id, floor);
        }
        for m in batch.messages {
            let frame = ServerFrame::Message(m).encode();
            if out.push_bulk(Bytes::from(frame)).await.is_err() {
                return;
            }
        }
    }
    let done = ServerFrame::SyncDone { has_more, floors }.encode();
    let _ = out.push_bulk(Bytes::from(done)).await;
}
