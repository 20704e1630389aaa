//! How `confab chat --p2p` shows the peer-to-peer store in the app's
//! server-shaped vocabulary: [`IdMap`] gives PeerIds synthetic [`UserId`]s,
//! P2P conversation ids synthetic [`ConversationId`]s and messages a
//! [`Seq`] in local display order; the functions below turn contacts,
//! conversations and stored messages into [`User`]s, [`Conversation`]s and
//! [`MessageRecord`]s. No IO.
//!
//! Seqs: a conversation's stored messages are numbered 1, 2, 3, … in the
//! order this map first sees them. The runner walks every conversation's
//! history (Lamport order, the order every member shows) when it starts,
//! so old messages keep that order; what arrives later is appended, also
//! a message that catch-up brings with an older Lamport time. Restarting
//! the app shows the Lamport order again. Receipts and typing envelopes
//! get no seq: they change ticks and the typing line, not the history.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use confab_p2p::envelope::kind;
use confab_p2p::store::{
    Contact, Conversation as P2pConversation, GroupChange, Shown, StoredMessage,
};
use confab_p2p::Envelope;
use confab_sdk::proto::api::{ConversationKind, Member, Role};
use confab_sdk::{
    Conversation, ConversationId, MessageKind, MessagePage, MessageRecord, Seq, SystemNotice, User,
    UserId,
};
use serde_json::Value;

/// The synthetic id of this device's user.
pub const ME: UserId = 1;

/// Both directions of the id mapping, for one run of the app.
#[derive(Debug, Clone)]
pub struct IdMap {
    me: String,
    users: HashMap<String, UserId>,
    peers: HashMap<UserId, String>,
    convs: HashMap<String, ConversationId>,
    conv_ids: HashMap<ConversationId, String>,
    /// The last seq handed out per conversation.
    last_seq: HashMap<ConversationId, Seq>,
    /// (sender PeerId, client_msg_id) → where the message is shown.
    messages: HashMap<(String, String), (ConversationId, Seq)>,
}

impl IdMap {
    /// A map for the device `me` (a PeerId), which gets [`ME`].
    pub fn new(me: &str) -> IdMap {
        let mut map = IdMap {
            me: me.to_owned(),
            users: HashMap::new(),
            peers: HashMap::new(),
            convs: HashMap::new(),
            conv_ids: HashMap::new(),
            last_seq: HashMap::new(),
            messages: HashMap::new(),
        };
        map.user(me);
        map
    }

    /// This device's PeerId.
    pub fn me_peer(&self) -> &str {
        &self.me
    }

    /// The user id of a PeerId (made on first sight).
    pub fn user(&mut self, peer: &str) -> UserId {
        if let Some(&id) = self.users.get(peer) {
            return id;
        }
        let id = UserId::try_from(self.users.len()).unwrap_or(UserId::MAX - 1) + 1;
        self.users.insert(peer.to_owned(), id);
        self.peers.insert(id, peer.to_owned());
        id
    }

    /// The user id of a PeerId seen before.
    pub fn known_user(&self, peer: &str) -> Option<UserId> {
        self.users.get(peer).copied()
    }

    /// The PeerId behind a user id.
    pub fn peer(&self, user: UserId) -> Option<&str> {
        self.peers.get(&user).map(String::as_str)
    }

    /// The conversation id of a P2P conversation (made on first sight).
    pub fn conversation(&mut self, p2p_id: &str) -> ConversationId {
        if let Some(&id) = self.convs.get(p2p_id) {
            return id;
        }
        let id = ConversationId::try_from(self.convs.len()).unwrap_or(ConversationId::MAX - 1) + 1;
        self.convs.insert(p2p_id.to_owned(), id);
        self.conv_ids.insert(id, p2p_id.to_owned());
        id
    }

    /// The P2P conversation behind a conversation id.
    pub fn p2p_conversation(&self, id: ConversationId) -> Option<&str> {
        self.conv_ids.get(&id).map(String::as_str)
    }

    /// The seq of a message (the next one of its conversation on first
    /// sight), with its conversation's id.
    pub fn seq(
        &mut self,
        p2p_conversation: &str,
        sender: &str,
        client_msg_id: &str,
    ) -> (ConversationId, Seq) {
        let key = (sender.to_owned(), client_msg_id.to_owned());
        if let Some(&found) = self.messages.get(&key) {
            return found;
        }
        let conv = self.conversation(p2p_conversation);
        let last = self.last_seq.entry(conv).or_insert(0);
        *last += 1;
        let found = (conv, *last);
        self.messages.insert(key, found);
        found
    }

    /// Shows a message under a second id too: an encrypted send gets its
    /// seq under the app's `client_msg_id` before the node makes the
    /// envelope (with an id of its own), which acks and receipts name.
    pub fn alias(&mut self, sender: &str, client_msg_id: &str, at: (ConversationId, Seq)) {
        self.messages
            .entry((sender.to_owned(), client_msg_id.to_owned()))
            .or_insert(at);
    }

    /// Where a message seen before is shown.
    pub fn find(&self, sender: &str, client_msg_id: &str) -> Option<(ConversationId, Seq)> {
        self.messages
            .get(&(sender.to_owned(), client_msg_id.to_owned()))
            .copied()
    }

    /// The newest seq handed out in a conversation (0 for none).
    pub fn last_seq(&self, conv: ConversationId) -> Seq {
        self.last_seq.get(&conv).copied().unwrap_or(0)
    }
}

/// Whether a stored message of this kind is shown as a line of history.
pub fn is_shown(kind: &str) -> bool {
    matches!(
        kind,
        kind::TEXT
            | kind::IMAGE
            | kind::VOICE
            | kind::FILE
            | kind::ENCRYPTED
            | kind::GROUP_CREATE
            | kind::GROUP_CHANGE
    )
}

/// Whether a message is something someone said (what a read receipt
/// covers and what counts as unread), as opposed to a group notice.
fn is_said(kind: &str) -> bool {
    matches!(
        kind,
        kind::TEXT | kind::IMAGE | kind::VOICE | kind::FILE | kind::ENCRYPTED
    )
}

/// A stored message as the app shows it (with its seq, made on first
/// sight); `None` for what is not a line of history (receipts).
pub fn record(map: &mut IdMap, m: &StoredMessage) -> Option<MessageRecord> {
    if !is_shown(&m.kind) {
        return None;
    }
    let (conversation_id, seq) = map.seq(&m.conversation_id, &m.sender, &m.client_msg_id);
    let sender_id = map.user(&m.sender);
    let body: Value =
        serde_json::from_str(&m.body).unwrap_or_else(|_| serde_json::json!({ "text": m.body }));
    let (kind, body) = match m.kind.as_str() {
        kind::TEXT => (MessageKind::Text, body),
        kind::IMAGE => (MessageKind::Image, body),
        kind::VOICE => (MessageKind::Voice, body),
        kind::FILE => (MessageKind::File, body),
        kind::ENCRYPTED => (MessageKind::Encrypted, body),
        kind::GROUP_CREATE => {
            let title = body
                .get("title")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            let notice = SystemNotice::GroupCreated {
                by_user_id: sender_id,
                title,
            };
            (MessageKind::System, notice.to_body())
        }
        _ => (
            MessageKind::System,
            group_change_notice(map, sender_id, &m.body).to_body(),
        ),
    };
    Some(MessageRecord {
        conversation_id,
        seq,
        sender_id,
        client_msg_id: m.client_msg_id.clone(),
        kind,
        body,
        ts: m.received_ms,
        read_by: None,
        edited_at: None,
        deleted: false,
        reactions: BTreeMap::new(),
    })
}

/// A `group_change` as one notice: who was added, else who was removed
/// (the app's notices name one change; an admin's change does one).
fn group_change_notice(map: &mut IdMap, by: UserId, body: &str) -> SystemNotice {
    let change: GroupChange = serde_json::from_str(body).unwrap_or_default();
    if change.add.is_empty() {
        if let Some(removed) = change.remove.first() {
            return SystemNotice::MemberLeft {
                by_user_id: by,
                reason: "removed".to_owned(),
                user_id: map.user(removed),
            };
        }
    }
    SystemNotice::MemberJoined {
        by_user_id: by,
        user_ids: change.add.iter().map(|m| map.user(&m.peer)).collect(),
    }
}

/// A history line of the store as the app reads it: plain messages as
/// stored; encrypted ones opened to their plaintext kind and body, or,
/// when this device cannot open one (yet), an `encrypted` message whose
/// body says why (`{"waiting": reason}` or `{"unreadable": reason}`, shown
/// by [`format::encrypted_shown`](super::format::encrypted_shown)).
/// Welcomes and commits are not lines (the store leaves them out).
pub fn shown_message(shown: Shown) -> StoredMessage {
    shown.into_message()
}

/// What the runner reads from the store to show one conversation.
#[derive(Debug, Clone)]
pub struct ConversationState {
    /// The conversation and its members.
    pub conversation: P2pConversation,
    /// End-to-end encrypted (MLS): `history` holds what this device
    /// opened (see [`shown_message`]).
    pub encrypted: bool,
    /// Its messages in Lamport order.
    pub history: Vec<StoredMessage>,
    /// Who has read which message (client_msg_id → readers' PeerIds).
    pub read_by: BTreeMap<String, BTreeSet<String>>,
    /// My messages some member has not acked yet (client_msg_ids).
    pub undelivered: BTreeSet<String>,
}

/// The newest of my messages every member has acked (0 for none): how far
/// the "delivered" tick reaches when the app starts.
pub fn delivered_seq(map: &IdMap, state: &ConversationState) -> Seq {
    let me = map.me_peer();
    state
        .history
        .iter()
        .filter(|m| {
            m.sender == me && is_shown(&m.kind) && !state.undelivered.contains(&m.client_msg_id)
        })
        .filter_map(|m| map.find(me, &m.client_msg_id).map(|(_, seq)| seq))
        .max()
        .unwrap_or(0)
}

/// A history page of at most `limit` messages before `before` (the newest
/// ones without it), oldest first, from a conversation's whole history.
pub fn history_page(
    map: &mut IdMap,
    history: &[StoredMessage],
    before: Option<Seq>,
    limit: usize,
) -> MessagePage {
    let mut records: Vec<MessageRecord> = history.iter().filter_map(|m| record(map, m)).collect();
    records.sort_by_key(|r| r.seq);
    if let Some(before) = before {
        records.retain(|r| r.seq < before);
    }
    let start = records.len().saturating_sub(limit);
    MessagePage {
        has_more: start > 0,
        messages: records.split_off(start),
        has_more_before: None,
    }
}

/// One of my envelopes as the store keeps it, stored now.
pub fn own_message(env: &Envelope, now_ms: i64) -> StoredMessage {
    StoredMessage {
        conversation_id: env.conversation_id.clone(),
        sender: env.sender.clone(),
        counter: env.counter,
        client_msg_id: env.client_msg_id.clone(),
        lamport: env.lamport,
        kind: env.kind.clone(),
        body: env.body.clone(),
        via: "local".to_owned(),
        received_ms: now_ms,
    }
}

/// A conversation as the app lists it: members with read cursors (the
/// newest of my messages each has read), my own read cursor and unread
/// count, the last message. Gives seqs to messages not seen before.
pub fn conversation(map: &mut IdMap, state: &ConversationState) -> Conversation {
    let c = &state.conversation;
    let id = map.conversation(&c.id);
    let me = map.me_peer().to_owned();
    let records: Vec<(MessageRecord, &StoredMessage)> = state
        .history
        .iter()
        .filter_map(|m| record(map, m).map(|r| (r, m)))
        .collect();
    let read_by_me = |m: &StoredMessage| {
        state
            .read_by
            .get(&m.client_msg_id)
            .is_some_and(|r| r.contains(&me))
    };
    let unread: Vec<Seq> = records
        .iter()
        .filter(|(_, m)| m.sender != me && is_said(&m.kind) && !read_by_me(m))
        .map(|(r, _)| r.seq)
        .collect();
    let last_seq = map.last_seq(id);
    let read_seq = unread.iter().min().map_or(last_seq, |first| first - 1);
    let members = c
        .members
        .iter()
        .map(|peer| {
            let read_seq = records
                .iter()
                .filter(|(_, m)| {
                    m.sender == me
                        && state
                            .read_by
                            .get(&m.client_msg_id)
                            .is_some_and(|r| r.contains(peer))
                })
                .map(|(r, _)| r.seq)
                .max()
                .unwrap_or(0);
            Member {
                user_id: map.user(peer),
                role: if *peer == c.admin {
                    Role::Owner
                } else {
                    Role::Member
                },
                joined_seq: 0,
                read_seq,
            }
        })
        .collect::<Vec<_>>();
    let last_message = records
        .iter()
        .map(|(r, _)| r)
        .max_by_key(|r| r.seq)
        .cloned();
    let created_at = state.history.first().map_or(0, |m| m.received_ms);
    Conversation {
        id,
        kind: if c.kind == "group" {
            ConversationKind::Group
        } else {
            ConversationKind::Direct
        },
        title: (c.kind == "group").then(|| c.title.clone()),
        avatar_media_id: None,
        members_can_add: false,
        member_count: i64::try_from(members.len()).unwrap_or(0),
        members,
        last_seq,
        last_message,
        read_seq,
        unread_count: i64::try_from(unread.len()).unwrap_or(0),
        unread_mentions: 0,
        muted: false,
        created_at,
        encrypted: state.encrypted,
        mls_epoch: None,
    }
}

/// A contact (or this device, or a member that is not a contact) as a
/// user: the username is the contact's name, or the PeerId when it has
/// none; `/dm` takes either.
pub fn user(map: &mut IdMap, peer: &str, contact: Option<&Contact>, my_name: &str) -> User {
    let id = map.user(peer);
    let name = match contact {
        Some(c) => c.name.clone(),
        None if peer == map.me_peer() => my_name.to_owned(),
        None => String::new(),
    };
    let (username, display_name) = if name.is_empty() {
        (peer.to_owned(), short_peer(peer))
    } else {
        (name.clone(), name)
    };
    User {
        id,
        username,
        display_name,
        avatar_media_id: None,
        status_text: None,
        created_at: 0,
        hide_presence: None,
    }
}

/// `12D3Koo…wxyz`: enough of a PeerId to tell contacts apart on screen.
pub fn short_peer(peer: &str) -> String {
    let chars: Vec<char> = peer.chars().collect();
    if chars.len() <= 12 {
        return peer.to_owned();
    }
    let head: String = chars[..7].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}…{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use confab_p2p::store::{GroupMember, Receipt};

    const ANN: &str = "12D3KooWAnnAnnAnnAnnAnnAnnAnn";
    const BOB: &str = "12D3KooWBobBobBobBobBobBobBob";
    const CAT: &str = "12D3KooWCatCatCatCatCatCatCat";

    fn stored(conv: &str, sender: &str, id: &str, kind: &str, body: &str) -> StoredMessage {
        StoredMessage {
            conversation_id: conv.into(),
            sender: sender.into(),
            counter: 1,
            client_msg_id: id.into(),
            lamport: 1,
            kind: kind.into(),
            body: body.into(),
            via: "local".into(),
            received_ms: 60_000,
        }
    }

    #[test]
    fn ids_are_stable_and_go_both_ways() {
        let mut map = IdMap::new(ANN);
        assert_eq!(map.user(ANN), ME);
        let bob = map.user(BOB);
        assert_ne!(bob, ME);
        assert_eq!(map.user(BOB), bob, "same peer, same id");
        assert_eq!(map.peer(bob), Some(BOB));
        assert_eq!(map.known_user(CAT), None);
        assert_eq!(map.peer(999), None);

        let dm = map.conversation("dm-1");
        let group = map.conversation("g-1");
        assert_ne!(dm, group);
        assert_eq!(map.conversation("dm-1"), dm);
        assert_eq!(map.p2p_conversation(group), Some("g-1"));
        assert_eq!(map.p2p_conversation(777), None);
    }

    #[test]
    fn seqs_count_per_conversation_in_first_seen_order() {
        let mut map = IdMap::new(ANN);
        let (dm, s1) = map.seq("dm-1", ANN, "m1");
        let (_, s2) = map.seq("dm-1", BOB, "m2");
        let (g, g1) = map.seq("g-1", BOB, "m3");
        assert_eq!((s1, s2, g1), (1, 2, 1));
        assert_eq!(map.seq("dm-1", ANN, "m1"), (dm, 1), "seen again: same seq");
        // The same client_msg_id from another sender is another message.
        assert_eq!(map.seq("dm-1", BOB, "m1"), (dm, 3));
        assert_eq!(map.find(BOB, "m3"), Some((g, 1)));
        assert_eq!(map.find(CAT, "m3"), None);
        assert_eq!(map.last_seq(dm), 3);
        assert_eq!(map.last_seq(g), 1);
        assert_eq!(map.last_seq(12345), 0);
    }

    #[test]
    fn messages_and_group_notices_become_records_and_receipts_do_not() {
        let mut map = IdMap::new(ANN);
        let text = stored(
            "dm-1",
            BOB,
            "a",
            kind::TEXT,
            r#"{"text":"我们明天下午开会"}"#,
        );
        let r = record(&mut map, &text).expect("text is shown");
        assert_eq!((r.seq, r.kind, r.ts), (1, MessageKind::Text, 60_000));
        assert_eq!(r.sender_id, map.known_user(BOB).expect("bob"));
        assert_eq!(r.body["text"], "我们明天下午开会");

        let receipt = serde_json::to_string(&Receipt {
            of: vec!["a".into()],
            state: "read".into(),
        })
        .expect("json");
        let receipt = stored("dm-1", ANN, "b", kind::RECEIPT, &receipt);
        assert!(record(&mut map, &receipt).is_none());
        assert_eq!(map.last_seq(r.conversation_id), 1, "no seq for a receipt");

        let create = stored(
            "g-1",
            ANN,
            "c",
            kind::GROUP_CREATE,
            r#"{"title":"周会","members":[]}"#,
        );
        let r = record(&mut map, &create).expect("shown");
        assert_eq!(r.kind, MessageKind::System);
        let name = |u: UserId| format!("u{u}");
        assert_eq!(
            super::super::format::system_text(&r.body, r.sender_id, &name),
            "u1 created the group 周会"
        );

        let member = |p: &str| GroupMember {
            peer: p.into(),
            name: String::new(),
            addrs: Vec::new(),
        };
        let added = serde_json::to_string(&GroupChange {
            add: vec![member(CAT)],
            ..GroupChange::default()
        })
        .expect("json");
        let r = record(
            &mut map,
            &stored("g-1", ANN, "d", kind::GROUP_CHANGE, &added),
        )
        .expect("shown");
        let cat = map.known_user(CAT).expect("cat got an id");
        assert_eq!(
            super::super::format::system_text(&r.body, r.sender_id, &name),
            format!("u1 added u{cat}")
        );
        let removed = serde_json::to_string(&GroupChange {
            remove: vec![CAT.into()],
            ..GroupChange::default()
        })
        .expect("json");
        let r = record(
            &mut map,
            &stored("g-1", ANN, "e", kind::GROUP_CHANGE, &removed),
        )
        .expect("shown");
        assert_eq!(
            super::super::format::system_text(&r.body, r.sender_id, &name),
            format!("u1 removed u{cat}")
        );
        assert_eq!(r.seq, 3);
    }

    #[test]
    fn conversation_has_read_cursors_unread_counts_and_the_last_message() {
        let mut map = IdMap::new(ANN);
        let history = vec![
            stored("dm-1", ANN, "a1", kind::TEXT, r#"{"text":"one"}"#),
            stored("dm-1", ANN, "a2", kind::TEXT, r#"{"text":"two"}"#),
            stored("dm-1", BOB, "b1", kind::TEXT, r#"{"text":"three"}"#),
            stored("dm-1", BOB, "b2", kind::TEXT, r#"{"text":"four"}"#),
            stored(
                "dm-1",
                BOB,
                "r1",
                kind::RECEIPT,
                r#"{"of":["a1"],"state":"read"}"#,
            ),
        ];
        let mut read_by = BTreeMap::new();
        read_by.insert("a1".to_owned(), BTreeSet::from([BOB.to_owned()]));
        read_by.insert("b1".to_owned(), BTreeSet::from([ANN.to_owned()]));
        let state = ConversationState {
            conversation: P2pConversation {
                id: "dm-1".into(),
                kind: "direct".into(),
                title: String::new(),
                admin: String::new(),
                members: vec![ANN.into(), BOB.into()],
            },
            encrypted: false,
            history,
            read_by,
            undelivered: BTreeSet::from(["a2".to_owned()]),
        };
        let c = conversation(&mut map, &state);
        assert_eq!(c.kind, ConversationKind::Direct);
        assert_eq!(c.title, None);
        assert_eq!(c.last_seq, 4);
        assert_eq!(c.read_seq, 3, "b2 is the first unread");
        assert_eq!(c.unread_count, 1);
        let bob = map.known_user(BOB).expect("bob");
        let bob_member = c.members.iter().find(|m| m.user_id == bob).expect("member");
        assert_eq!(bob_member.read_seq, 1, "bob read a1 only");
        assert_eq!(c.last_message.as_ref().map(|m| m.seq), Some(4));
        // Listed again: the same ids and seqs.
        let again = conversation(&mut map, &state);
        assert_eq!((again.id, again.last_seq), (c.id, 4));
        assert_eq!(delivered_seq(&map, &state), 1, "a2 waits for bob's ack");
    }

    #[test]
    fn encrypted_lines_show_plaintext_or_why_not() {
        let mut map = IdMap::new(ANN);
        let shown = |kind: &str, body: &str, waiting: Option<&str>, unreadable: Option<&str>| {
            shown_message(Shown {
                message: stored("dme-1", BOB, "x", kind, body),
                encrypted: true,
                waiting: waiting.map(str::to_owned),
                unreadable: unreadable.map(str::to_owned),
            })
        };
        let name = |u: UserId| format!("u{u}");
        let line = |map: &mut IdMap, m: &StoredMessage| {
            let r = record(map, m).expect("a line");
            let text = if r.kind == MessageKind::Encrypted {
                super::super::format::encrypted_shown(&r, None, true, &name)
            } else {
                super::super::format::body_text(&r, &name)
            };
            (r.kind, text)
        };
        // Opened: the plaintext, as a plain text line.
        let opened = shown(kind::TEXT, r#"{"text":"端到端加密"}"#, None, None);
        assert_eq!(
            line(&mut map, &opened),
            (MessageKind::Text, "端到端加密".to_owned())
        );
        // Not opened yet, or never: an encrypted line saying why, never
        // blank and never the ciphertext.
        let sealed = r#"{"mls":"application","ciphertext":"QUJD"}"#;
        let waiting = shown(
            kind::ENCRYPTED,
            sealed,
            Some("not in the group yet (waiting for keys)"),
            None,
        );
        assert_eq!(
            line(&mut map, &waiting),
            (
                MessageKind::Encrypted,
                "🔒 [waiting: not in the group yet (waiting for keys)]".to_owned()
            )
        );
        let bad = shown(
            kind::ENCRYPTED,
            sealed,
            None,
            Some("cannot decrypt: bad tag"),
        );
        let (k, text) = line(&mut map, &bad);
        assert_eq!(k, MessageKind::Encrypted);
        assert_eq!(text, "🔒 [unreadable: cannot decrypt: bad tag]");
        let unknown = shown(kind::ENCRYPTED, sealed, None, None);
        let (_, text) = line(&mut map, &unknown);
        assert!(text.starts_with("🔒 [waiting: "), "{text}");
        assert!(!text.contains("QUJD"), "{text}");
        // A plain conversation's message passes unchanged.
        let plain = stored("dm-1", BOB, "y", kind::TEXT, r#"{"text":"hi"}"#);
        let same = shown_message(Shown {
            message: plain.clone(),
            encrypted: false,
            waiting: None,
            unreadable: None,
        });
        assert_eq!(same, plain);
    }

    #[test]
    fn an_alias_finds_the_same_line() {
        let mut map = IdMap::new(ANN);
        let at = map.seq("dme-1", ANN, "app-id");
        map.alias(ANN, "envelope-id", at);
        assert_eq!(map.find(ANN, "envelope-id"), Some(at));
        assert_eq!(map.seq("dme-1", ANN, "envelope-id"), at, "no second seq");
        assert_eq!(map.last_seq(at.0), 1);
    }

    #[test]
    fn history_pages_go_back_from_the_newest() {
        let mut map = IdMap::new(ANN);
        let history: Vec<StoredMessage> = (1..=5)
            .map(|i| stored("dm-1", BOB, &format!("m{i}"), kind::TEXT, r#"{"text":"x"}"#))
            .chain([stored(
                "dm-1",
                BOB,
                "r",
                kind::RECEIPT,
                r#"{"of":[],"state":"read"}"#,
            )])
            .collect();
        let seqs = |p: &MessagePage| p.messages.iter().map(|m| m.seq).collect::<Vec<_>>();
        let newest = history_page(&mut map, &history, None, 2);
        assert_eq!((seqs(&newest), newest.has_more), (vec![4, 5], true));
        let older = history_page(&mut map, &history, Some(4), 2);
        assert_eq!((seqs(&older), older.has_more), (vec![2, 3], true));
        let oldest = history_page(&mut map, &history, Some(2), 2);
        assert_eq!((seqs(&oldest), oldest.has_more), (vec![1], false));
    }

    #[test]
    fn users_are_named_by_contact_name_or_peer_id() {
        let mut map = IdMap::new(ANN);
        let bob = Contact {
            peer_id: BOB.into(),
            name: "王小明".into(),
            addrs: Vec::new(),
            relay: None,
        };
        let u = user(&mut map, BOB, Some(&bob), "ann");
        assert_eq!(
            (u.username.as_str(), u.display_name.as_str()),
            ("王小明", "王小明")
        );
        let me = user(&mut map, ANN, None, "ann");
        assert_eq!((me.id, me.username.as_str()), (ME, "ann"));
        let stranger = user(&mut map, CAT, None, "ann");
        assert_eq!(stranger.username, CAT, "/dm takes the PeerId");
        assert_eq!(stranger.display_name, "12D3Koo…tCat");
    }
}
