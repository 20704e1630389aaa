//! Per-conversation reordering and deduplication: turns at-least-once,
//! possibly out-of-order `message` frames into exactly-once, in-order,
//! gapless delivery. Sans-IO: frames go in, ready messages come out.

use std::collections::{BTreeMap, HashMap};

use crate::{ConversationId, MessageRecord, Seq};

/// Default bound on out-of-order messages held per conversation.
pub const DEFAULT_MAX_BUFFERED: usize = 10_000;

/// What became of one pushed message.
#[derive(Debug, Clone, PartialEq)]
pub enum Push {
    /// Already delivered (or already buffered): dropped.
    Duplicate,
    /// It was next in line: it and any buffered successors, in seq order.
    Ready(Vec<MessageRecord>),
    /// It is ahead of a gap and waits in the buffer; the gap must be filled
    /// (by a sync).
    Buffered,
    /// It was ahead of a gap and the buffer was full: the buffer was
    /// dropped (this message too) and a sync must refetch everything after
    /// the cursor.
    Overflowed,
}

#[derive(Debug, Default)]
struct ConversationOrder {
    /// Highest seq delivered, with every seq below it delivered too.
    cursor: Seq,
    /// Messages above `cursor + 1`, waiting for the gap to close.
    buffer: BTreeMap<Seq, MessageRecord>,
}

/// The reorder/dedup state of every conversation the client has seen.
#[derive(Debug)]
pub struct Ordering {
    conversations: HashMap<ConversationId, ConversationOrder>,
    max_buffered: usize,
}

impl Ordering {
    /// Starts from the given cursors (last seq seen per conversation);
    /// conversations not named start at 0. At most `max_buffered` messages
    /// are held per conversation while waiting for a gap to close.
    pub fn new(cursors: HashMap<ConversationId, Seq>, max_buffered: usize) -> Ordering {
        let conversations = cursors
            .into_iter()
            .map(|(id, cursor)| {
                let order = ConversationOrder {
                    cursor: cursor.max(0),
                    buffer: BTreeMap::new(),
                };
                (id, order)
            })
            .collect();
        Ordering {
            conversations,
            max_buffered,
        }
    }

    /// Takes in one message as it arrived.
    pub fn push(&mut self, msg: MessageRecord) -> Push {
        let max_buffered = self.max_buffered;
        let conv = self.conversations.entry(msg.conversation_id).or_default();
        let seq = msg.seq;
        if seq <= conv.cursor || conv.buffer.contains_key(&seq) {
            return Push::Duplicate;
        }
        if seq == conv.cursor.saturating_add(1) {
            conv.cursor = seq;
            let mut ready = vec![msg];
            while let Some(next) = conv.buffer.remove(&conv.cursor.saturating_add(1)) {
                conv.cursor = next.seq;
                ready.push(next);
            }
            return Push::Ready(ready);
        }
        if conv.buffer.len() >= max_buffered {
            conv.buffer.clear();
            return Push::Overflowed;
        }
        conv.buffer.insert(seq, msg);
        Push::Buffered
    }

    /// Moves a conversation's cursor up to `seq` without delivering the
    /// seqs skipped (they are not visible to this user: they came before
    /// the user joined), then releases buffered messages that are now next.
    pub fn advance(&mut self, id: ConversationId, seq: Seq) -> Vec<MessageRecord> {
        let conv = self.conversations.entry(id).or_default();
        if seq <= conv.cursor {
            return Vec::new();
        }
        conv.cursor = seq;
        conv.buffer = conv.buffer.split_off(&seq.saturating_add(1));
        let mut ready = Vec::new();
        while let Some(next) = conv.buffer.remove(&conv.cursor.saturating_add(1)) {
            conv.cursor = next.seq;
            ready.push(next);
        }
        ready
    }

    /// The highest seq delivered in order for a conversation (0 if unseen).
    pub fn cursor(&self, id: ConversationId) -> Seq {
        self.conversations.get(&id).map_or(0, |c| c.cursor)
    }

    /// Every known conversation's cursor: what a `sync` should send.
    pub fn cursors(&self) -> HashMap<ConversationId, Seq> {
        self.conversations
            .iter()
            .map(|(id, c)| (*id, c.cursor))
            .collect()
    }

    /// How many messages wait behind a gap in a conversation.
    pub fn buffered(&self, id: ConversationId) -> usize {
        self.conversations.get(&id).map_or(0, |c| c.buffer.len())
    }

    /// Whether any conversation has messages waiting behind a gap.
    pub fn has_gaps(&self) -> bool {
        self.conversations.values().any(|c| !c.buffer.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MessageKind;
    use serde_json::json;

    fn msg(conv: ConversationId, seq: Seq) -> MessageRecord {
        MessageRecord {
            conversation_id: conv,
            seq,
            sender_id: 1,
            client_msg_id: format!("m{conv}-{seq}"),
            kind: MessageKind::Text,
            body: json!({"text": seq.to_string()}),
            ts: seq,
            read_by: None,
            edited_at: None,
            deleted: false,
            reactions: Default::default(),
        }
    }

    /// What a push should do, with the seqs (of conversation 1) it releases.
    #[derive(Debug, PartialEq)]
    enum Want {
        Dup,
        Ready(Vec<Seq>),
        Buf,
        Over,
    }

    fn run(start: Seq, max: usize, arrivals: &[Seq], want: &[Want]) -> Ordering {
        let mut o = Ordering::new(HashMap::from([(1, start)]), max);
        for (i, (&seq, want)) in arrivals.iter().zip(want).enumerate() {
            let got = match o.push(msg(1, seq)) {
                Push::Duplicate => Want::Dup,
                Push::Ready(ms) => Want::Ready(ms.iter().map(|m| m.seq).collect()),
                Push::Buffered => Want::Buf,
                Push::Overflowed => Want::Over,
            };
            assert_eq!(&got, want, "arrival #{i} (seq {seq}) of {arrivals:?}");
        }
        assert_eq!(arrivals.len(), want.len(), "table row is malformed");
        o
    }

    /// One row of the table: arrivals on conversation 1 from a starting
    /// cursor, what each push should do, and the cursor at the end.
    struct Case {
        name: &'static str,
        start: Seq,
        max_buffered: usize,
        arrivals: Vec<Seq>,
        want: Vec<Want>,
        cursor: Seq,
    }

    #[rustfmt::skip]
    fn cases() -> Vec<Case> {
        use Want::*;
        let case = |name, start, max_buffered, arrivals: &[Seq], want: Vec<Want>, cursor| Case {
            name, start, max_buffered, arrivals: arrivals.to_vec(), want, cursor,
        };
        vec![
            case("in order", 0, 10, &[1, 2, 3],
                 vec![Ready(vec![1]), Ready(vec![2]), Ready(vec![3])], 3),
            case("repeat of last", 0, 10, &[1, 1, 2, 2],
                 vec![Ready(vec![1]), Dup, Ready(vec![2]), Dup], 2),
            case("old seq after cursor moved", 0, 10, &[1, 2, 3, 1],
                 vec![Ready(vec![1]), Ready(vec![2]), Ready(vec![3]), Dup], 3),
            case("gap then fill", 0, 10, &[1, 3, 4, 2],
                 vec![Ready(vec![1]), Buf, Buf, Ready(vec![2, 3, 4])], 4),
            case("live overtakes sync", 4, 10, &[12, 5, 6, 7, 8, 9, 10, 11, 12],
                 vec![Buf, Ready(vec![5]), Ready(vec![6]), Ready(vec![7]), Ready(vec![8]),
                      Ready(vec![9]), Ready(vec![10]), Ready(vec![11, 12]), Dup], 12),
            case("duplicate while buffered", 0, 10, &[3, 3, 1, 2],
                 vec![Buf, Dup, Ready(vec![1]), Ready(vec![2, 3])], 3),
            case("partial fill keeps the rest", 0, 10, &[2, 5, 1, 4, 3],
                 vec![Buf, Buf, Ready(vec![1, 2]), Buf, Ready(vec![3, 4, 5])], 5),
            case("start from a cursor", 7, 10, &[7, 8, 6],
                 vec![Dup, Ready(vec![8]), Dup], 8),
            case("zero and negative seqs", 0, 10, &[0, -3, 1],
                 vec![Dup, Dup, Ready(vec![1])], 1),
            case("overflow drops the buffer", 0, 2, &[3, 4, 5, 1, 2],
                 vec![Buf, Buf, Over, Ready(vec![1]), Ready(vec![2])], 2),
            case("after overflow buffering starts over", 0, 1, &[5, 6, 6, 1],
                 vec![Buf, Over, Buf, Ready(vec![1])], 1),
            case("sync resends what was buffered", 0, 10, &[3, 1, 2, 3, 2],
                 vec![Buf, Ready(vec![1]), Ready(vec![2, 3]), Dup, Dup], 3),
        ]
    }

    #[test]
    fn ordering_table() {
        for c in cases() {
            let o = run(c.start, c.max_buffered, &c.arrivals, &c.want);
            assert_eq!(o.cursor(1), c.cursor, "{}: final cursor", c.name);
        }
    }

    #[test]
    fn conversations_are_independent() {
        let mut o = Ordering::new(HashMap::from([(2, 10)]), DEFAULT_MAX_BUFFERED);
        assert_eq!(o.push(msg(1, 2)), Push::Buffered);
        assert_eq!(o.push(msg(2, 11)), Push::Ready(vec![msg(2, 11)]));
        assert_eq!(o.push(msg(3, 1)), Push::Ready(vec![msg(3, 1)]));
        assert_eq!(o.buffered(1), 1);
        assert!(o.has_gaps());
        assert_eq!(o.cursors(), HashMap::from([(1, 0), (2, 11), (3, 1)]));
        assert_eq!(o.push(msg(1, 1)), Push::Ready(vec![msg(1, 1), msg(1, 2)]));
        assert!(!o.has_gaps());
        assert_eq!(o.cursor(99), 0);
    }

    #[test]
    fn negative_initial_cursor_counts_as_zero() {
        let mut o = Ordering::new(HashMap::from([(1, -5)]), 4);
        assert_eq!(o.cursor(1), 0);
        assert_eq!(o.push(msg(1, 1)), Push::Ready(vec![msg(1, 1)]));
    }

    #[test]
    fn shuffled_repeated_arrivals_come_out_exactly_once_in_order() {
        use rand::rngs::StdRng;
        use rand::seq::SliceRandom;
        use rand::{Rng, SeedableRng};
        let mut rng = StdRng::seed_from_u64(42);
        for round in 0..50 {
            let n: Seq = rng.gen_range(1..300);
            // Every seq at least once, some twice, shuffled within windows
            // (as live frames overtaking a sync would).
            let mut arrivals: Vec<Seq> = (1..=n).collect();
            for s in 1..=n {
                if rng.gen_bool(0.3) {
                    arrivals.push(s);
                }
            }
            arrivals.sort_by_cached_key(|s| *s + rng.gen_range(0..20));
            for chunk in arrivals.chunks_mut(7) {
                chunk.shuffle(&mut rng);
            }
            let mut o = Ordering::new(HashMap::new(), DEFAULT_MAX_BUFFERED);
            let mut out = Vec::new();
            for s in arrivals {
                if let Push::Ready(ms) = o.push(msg(1, s)) {
                    out.extend(ms.into_iter().map(|m| m.seq));
                }
            }
            assert_eq!(out, (1..=n).collect::<Vec<_>>(), "round {round}");
            assert_eq!(o.buffered(1), 0);
        }
    }

    #[test]
    fn advancing_to_a_join_point_releases_what_waited_behind_it() {
        let mut o = Ordering::new(HashMap::new(), 16);
        // Joined at 7: the first visible message is 8; 10 came live too.
        assert_eq!(o.push(msg(1, 10)), Push::Buffered);
        assert_eq!(o.push(msg(1, 8)), Push::Buffered);
        let seqs = |v: Vec<MessageRecord>| v.into_iter().map(|m| m.seq).collect::<Vec<_>>();
        assert_eq!(seqs(o.advance(1, 7)), vec![8]);
        assert_eq!(o.cursor(1), 8);
        assert!(o.has_gaps(), "9 is still missing");
        assert_eq!(o.push(msg(1, 9)), Push::Ready(vec![msg(1, 9), msg(1, 10)]));
        assert!(seqs(o.advance(1, 3)).is_empty(), "never moves back");
        assert_eq!(o.cursor(1), 10);
    }
}
