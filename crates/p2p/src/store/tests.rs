//! Store tests on real SQLite files: dedup, one order on every member,
//! catch-up after gaps from a member other than the sender, outbox
//! persistence, refusals that store nothing.

use super::*;
use crate::envelope::DEFAULT_MAX_ENVELOPE_BYTES;

struct Peer {
    key: Keypair,
    store: Store,
    _dir: tempfile::TempDir,
}

impl Peer {
    fn new(name: &str) -> Peer {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = Keypair::generate_ed25519();
        let store = Store::open(
            dir.path(),
            key.public().to_peer_id(),
            DEFAULT_MAX_ENVELOPE_BYTES,
        )
        .expect("open");
        store.set_meta("name", name).expect("name");
        Peer {
            key,
            store,
            _dir: dir,
        }
    }

    fn id(&self) -> String {
        self.key.public().to_peer_id().to_base58()
    }

    fn knows(&mut self, other: &Peer, name: &str) {
        self.store
            .add_contact(&Contact {
                peer_id: other.id(),
                name: name.into(),
                addrs: vec![],
                relay: None,
            })
            .expect("contact");
    }

    fn text(&mut self, conv: &str, text: &str) -> Envelope {
        let body = serde_json::json!({ "text": text }).to_string();
        self.store
            .compose(&self.key, conv, kind::TEXT, &body, None)
            .expect("compose")
    }

    fn texts(&self, conv: &str) -> Vec<String> {
        self.store
            .history(conv)
            .expect("history")
            .into_iter()
            .filter(|m| m.kind == kind::TEXT)
            .map(|m| m.body)
            .collect()
    }
}

#[test]
fn a_repeat_is_acked_again_but_stored_once() {
    let mut a = Peer::new("a");
    let mut b = Peer::new("b");
    a.knows(&b, "b");
    b.knows(&a, "a");
    let conv = direct_conversation_id(&a.id(), &b.id());
    let env = a.text(&conv, "hi");
    assert!(b.store.accept(&env, "direct").expect("first").new);
    assert!(!b.store.accept(&env, "direct").expect("again").new);
    assert_eq!(b.store.history(&conv).expect("history").len(), 1);
    // The sender's own retry with the same client_msg_id makes nothing new.
    let again = a
        .store
        .compose(
            &a.key,
            &conv,
            kind::TEXT,
            &env.body,
            Some(&env.client_msg_id),
        )
        .expect("resend");
    assert_eq!(again, env);
    assert_eq!(a.store.history(&conv).expect("history").len(), 1);
}

#[test]
fn unknown_senders_non_members_and_tampering_store_nothing() {
    let mut a = Peer::new("a");
    let mut b = Peer::new("b");
    let mut stranger = Peer::new("s");
    a.knows(&b, "b");
    b.knows(&a, "a");
    let conv = direct_conversation_id(&a.id(), &b.id());
    // A stranger writing into a's and b's conversation.
    stranger.knows(&b, "b");
    let own = direct_conversation_id(&stranger.id(), &b.id());
    let mut env = stranger.text(&own, "hello?");
    let err = b.store.accept(&env, "direct").expect_err("unknown");
    assert!(
        matches!(err, StoreError::Refused(Refusal::UnknownSender(_))),
        "{err}"
    );
    // Re-signed into a conversation the stranger is not in.
    env = Envelope::sign(
        Draft {
            conversation_id: conv.clone(),
            counter: 1,
            client_msg_id: uuid::Uuid::new_v4().to_string(),
            lamport: 1,
            kind: kind::TEXT.into(),
            body: r#"{"text":"x"}"#.into(),
        },
        &stranger.key,
    );
    b.knows(&stranger, "s");
    let err = b.store.accept(&env, "direct").expect_err("not member");
    assert!(
        matches!(err, StoreError::Refused(Refusal::NotMember(..))),
        "{err}"
    );
    // Tampered after signing.
    let mut good = a.text(&conv, "real");
    good.body = r#"{"text":"fake"}"#.into();
    let err = b.store.accept(&good, "direct").expect_err("tampered");
    assert!(
        matches!(err, StoreError::Refused(Refusal::BadSignature)),
        "{err}"
    );
    assert!(b.store.history(&conv).expect("history").is_empty());
    assert!(b.store.history(&own).expect("history").is_empty());
}

#[test]
fn every_member_shows_one_order_and_a_gap_is_filled_by_another_member() {
    let mut a = Peer::new("a");
    let mut b = Peer::new("b");
    let mut c = Peer::new("c");
    a.knows(&b, "b");
    a.knows(&c, "c");
    b.knows(&a, "a");
    c.knows(&a, "a");
    let create = a
        .store
        .create_group(&a.key, "trio", &["b".into(), "c".into()])
        .expect("group");
    let group = create.conversation_id.clone();
    for peer in [&mut b, &mut c] {
        peer.store.accept(&create, "direct").expect("create");
    }
    // b and c learnt each other from the group_create.
    assert!(b.store.find_contact(&c.id()).is_ok());
    let a1 = a.text(&group, "a1");
    let a2 = a.text(&group, "a2");
    let a3 = a.text(&group, "a3");
    b.store.accept(&a1, "direct").expect("b a1");
    let b1 = b.text(&group, "b1");
    b.store.accept(&a2, "direct").expect("b a2");
    b.store.accept(&a3, "direct").expect("b a3");
    a.store.accept(&b1, "direct").expect("a b1");
    // c was offline for a2: it gets a1, a3, b1 in another order.
    c.store.accept(&b1, "direct").expect("c b1");
    let got = c.store.accept(&a3, "direct").expect("c a3");
    // Counter 1 was the group_create; a1..a3 are 2..4.
    assert_eq!(got.missing, vec![(2, 3)]);
    c.store.accept(&a1, "direct").expect("c a1");
    assert_eq!(c.store.gaps().expect("gaps").len(), 1);
    // Catch-up from b (not the sender): b answers what c lacks.
    let have = c.store.cursors(&group).expect("cursors");
    let (answer, more) = b.store.answer_sync(&c.id(), &group, &have).expect("answer");
    assert!(!more);
    // It answers above c's contiguous cursor: a2, and a3 again (a repeat).
    assert_eq!(answer, vec![a2.clone(), a3.clone()]);
    let fresh: Vec<bool> = answer
        .iter()
        .map(|env| c.store.accept(env, "sync").expect("c sync").new)
        .collect();
    assert_eq!(fresh, vec![true, false]);
    assert!(c.store.gaps().expect("gaps").is_empty());
    let order = a.texts(&group);
    assert_eq!(order.len(), 4);
    assert_eq!(b.texts(&group), order);
    assert_eq!(c.texts(&group), order);
    // A stranger may not ask.
    let stranger = Peer::new("s");
    assert!(b.store.answer_sync(&stranger.id(), &group, &have).is_err());
}

#[test]
fn only_the_admin_changes_members_and_a_removed_member_is_refused() {
    let mut a = Peer::new("a");
    let mut b = Peer::new("b");
    let mut c = Peer::new("c");
    a.knows(&b, "b");
    a.knows(&c, "c");
    b.knows(&a, "a");
    c.knows(&a, "a");
    let create = a
        .store
        .create_group(&a.key, "g", &["b".into(), "c".into()])
        .expect("group");
    let group = create.conversation_id.clone();
    b.store.accept(&create, "direct").expect("b");
    c.store.accept(&create, "direct").expect("c");
    assert!(b
        .store
        .change_group(&b.key, &group, &[], &[c.id()])
        .is_err());
    let change = a
        .store
        .change_group(&a.key, &group, &[], &[c.id()])
        .expect("kick");
    b.store.accept(&change, "direct").expect("b change");
    let from_c = c.text(&group, "still here?");
    let err = b.store.accept(&from_c, "direct").expect_err("removed");
    assert!(
        matches!(err, StoreError::Refused(Refusal::NotMember(..))),
        "{err}"
    );
}

#[test]
fn an_added_member_makes_the_group_from_the_change_and_catches_up_from_another_member() {
    let mut a = Peer::new("a");
    let mut b = Peer::new("b");
    let mut c = Peer::new("c");
    let d = Peer::new("d");
    a.knows(&b, "b");
    a.knows(&c, "c");
    a.knows(&d, "d");
    b.knows(&a, "a");
    c.knows(&a, "a");
    let create = a
        .store
        .create_group(&a.key, "g", &["b".into(), "d".into()])
        .expect("group");
    let group = create.conversation_id.clone();
    b.store.accept(&create, "direct").expect("b create");
    let before = a.text(&group, "before c");
    b.store.accept(&before, "direct").expect("b before");
    // d is removed, then c added: a change c would undo if it were applied
    // again after the later one.
    let kick = a
        .store
        .change_group(&a.key, &group, &[], &["d".into()])
        .expect("kick d");
    b.store.accept(&kick, "direct").expect("b kick");
    let add = a
        .store
        .change_group(&a.key, &group, &["c".into()], &[])
        .expect("add c");
    // Only new changes: adding a member twice is refused.
    assert!(a
        .store
        .change_group(&a.key, &group, &["c".into()], &[])
        .is_err());
    // c never saw the group: the change alone makes it, with a gap.
    let got = c.store.accept(&add, "direct").expect("c add");
    assert!(got.new && !got.missing.is_empty(), "{:?}", got.missing);
    let conv = c.store.conversation(&group).expect("read").expect("made");
    assert_eq!(conv.title, "g");
    assert_eq!(conv.admin, a.id());
    let mut members = conv.members.clone();
    members.sort();
    let mut want = vec![a.id(), b.id(), c.id()];
    want.sort();
    assert_eq!(members, want);
    // b learns of c, then fills c's gap (the create, the kick, the text).
    b.store.accept(&add, "direct").expect("b add");
    let (envs, more) = b
        .store
        .answer_sync(&c.id(), &group, &c.store.cursors(&group).expect("cursors"))
        .expect("b answers a member");
    assert!(!more);
    for env in &envs {
        c.store.accept(env, "sync").expect("catch-up");
    }
    assert_eq!(c.texts(&group).len(), 1, "the text from before c joined");
    // The late create and kick changed nothing: still a, b and c.
    let mut after = c
        .store
        .conversation(&group)
        .expect("read")
        .expect("there")
        .members;
    after.sort();
    assert_eq!(after, want);
    // c's own message reaches b, a member.
    let hi = c.text(&group, "hi from c");
    assert!(b.store.accept(&hi, "direct").expect("b accepts c").new);
}

#[test]
fn a_change_that_does_not_add_the_receiver_makes_no_group() {
    let mut a = Peer::new("a");
    let b = Peer::new("b");
    let mut c = Peer::new("c");
    a.knows(&b, "b");
    a.knows(&c, "c");
    c.knows(&a, "a");
    let create = a
        .store
        .create_group(&a.key, "g", &["c".into()])
        .expect("group");
    let group = create.conversation_id.clone();
    let add_b = a
        .store
        .change_group(&a.key, &group, &["b".into()], &[])
        .expect("add b");
    // c was in the group from the start but missed the create: a change
    // that adds someone else is not enough to make the group.
    let err = c.store.accept(&add_b, "direct").expect_err("not for c");
    assert!(
        matches!(err, StoreError::Refused(Refusal::NotMember(..))),
        "{err}"
    );
    assert!(c.store.conversation(&group).expect("read").is_none());
}

#[test]
fn a_read_receipt_names_each_unread_message_once_and_typing_is_never_stored() {
    let mut a = Peer::new("a");
    let mut b = Peer::new("b");
    a.knows(&b, "b");
    b.knows(&a, "a");
    let conv = direct_conversation_id(&a.id(), &b.id());
    let one = a.text(&conv, "one");
    b.store.accept(&one, "direct").expect("one");
    let receipt = b
        .store
        .mark_read(&b.key, &conv)
        .expect("read")
        .expect("receipt");
    assert!(b.store.mark_read(&b.key, &conv).expect("again").is_none());
    a.store
        .accept(&receipt, "direct")
        .expect("a takes the receipt");
    let read = a.store.read_by(&conv).expect("read_by");
    assert_eq!(read.get(&one.client_msg_id).map(|s| s.len()), Some(1));
    assert!(read[&one.client_msg_id].contains(&b.id()));
    // Only what came after: the next receipt names the new message alone.
    let two = a.text(&conv, "two");
    b.store.accept(&two, "direct").expect("two");
    let next = b
        .store
        .mark_read(&b.key, &conv)
        .expect("read")
        .expect("receipt");
    let body: Receipt = serde_json::from_str(&next.body).expect("body");
    assert_eq!(body.of, vec![two.client_msg_id.clone()]);

    // typing: checked like a message, stored nowhere.
    let (typing, to) = b.store.compose_typing(&b.key, &conv).expect("typing");
    assert_eq!(to, vec![a.id()]);
    a.store.check_ephemeral(&typing).expect("from a member");
    assert!(matches!(
        a.store.accept(&typing, "direct"),
        Err(StoreError::Refused(Refusal::Malformed(_)))
    ));
    // From a stranger (in its own conversation with a): unknown sender.
    let mut s = Peer::new("s");
    s.knows(&a, "a");
    let theirs = direct_conversation_id(&s.id(), &a.id());
    let (foreign, _) = s.store.compose_typing(&s.key, &theirs).expect("own conv");
    assert!(matches!(
        a.store.check_ephemeral(&foreign),
        Err(StoreError::Refused(Refusal::UnknownSender(_)))
    ));
    // A typing envelope never answers a catch-up either.
    let (envs, _) = a
        .store
        .answer_sync(&b.id(), &conv, &BTreeMap::new())
        .expect("sync");
    assert!(envs.iter().all(|e| e.kind != kind::TYPING));
}

#[test]
fn the_outbox_survives_a_restart_and_backs_off() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = Keypair::generate_ed25519();
    let bob = Keypair::generate_ed25519()
        .public()
        .to_peer_id()
        .to_base58();
    let conv = direct_conversation_id(&key.public().to_peer_id().to_base58(), &bob);
    let env = {
        let mut s = Store::open(
            dir.path(),
            key.public().to_peer_id(),
            DEFAULT_MAX_ENVELOPE_BYTES,
        )
        .expect("open");
        s.add_contact(&Contact {
            peer_id: bob.clone(),
            name: "bob".into(),
            addrs: vec![],
            relay: None,
        })
        .expect("contact");
        s.compose(&key, &conv, kind::TEXT, r#"{"text":"hi"}"#, None)
            .expect("compose")
    };
    let s = Store::open(
        dir.path(),
        key.public().to_peer_id(),
        DEFAULT_MAX_ENVELOPE_BYTES,
    )
    .expect("reopen");
    let due = s.due(&bob, false).expect("due");
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].envelope, env);
    s.failed(&bob, &env.client_msg_id).expect("failed");
    assert!(s.due(&bob, false).expect("due").is_empty(), "backing off");
    assert_eq!(
        s.due(&bob, true).expect("forced").len(),
        1,
        "contact reachable again"
    );
    s.delivered(&bob, &env.client_msg_id).expect("acked");
    assert_eq!(s.outbox_len().expect("len"), 0);
    assert!(backoff(0) < backoff(3) && backoff(30) == Duration::from_secs(60));
}
