//! Encrypted conversations on real SQLite files: envelopes carried from
//! one peer's store to another's as the node carries them (signed, as
//! stored), opened once, kept across a restart.

use std::path::Path;

use libp2p::identity::Keypair;

use super::*;
use crate::envelope::{Draft, DEFAULT_MAX_ENVELOPE_BYTES};
use crate::mls::MlsBody;
use crate::store::Contact;

struct Peer {
    key: Keypair,
    store: Store,
    mls: Mls,
    dir: tempfile::TempDir,
}

impl Peer {
    fn new() -> Peer {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = Keypair::generate_ed25519();
        let (store, mls) = open(dir.path(), &key);
        Peer {
            key,
            store,
            mls,
            dir,
        }
    }

    fn id(&self) -> String {
        self.key.public().to_peer_id().to_base58()
    }

    fn knows(&mut self, other: &Peer) {
        self.store
            .add_contact(&Contact {
                peer_id: other.id(),
                name: other.id(),
                addrs: vec![],
                relay: None,
            })
            .expect("contact");
    }

    /// What `/confab/kp/1` answers: a fresh KeyPackage, its private part
    /// saved first.
    fn key_package(&mut self) -> (String, String) {
        let kp = self.mls.key_package().expect("kp");
        self.store.save_mls(&self.mls).expect("save");
        (self.id(), kp)
    }

    fn send(&mut self, conv: &str, text: &str) -> Envelope {
        let body = serde_json::json!({ "text": text }).to_string();
        self.store
            .compose_encrypted(&self.key, &mut self.mls, conv, kind::TEXT, &body, None)
            .expect("send")
    }

    fn control(&mut self, conv: &str, body: &MlsBody) -> Envelope {
        self.store
            .compose_control(&self.key, &self.mls, conv, body, "", None)
            .expect("control")
    }

    fn receive(&mut self, env: &Envelope) -> Vec<Shown> {
        self.store.accept(env, "direct").expect("accept");
        self.store
            .open_encrypted(&mut self.mls, &env.conversation_id)
            .expect("open")
    }

    fn texts(&self, conv: &str) -> Vec<String> {
        self.store
            .shown_history(conv)
            .expect("history")
            .into_iter()
            .filter(|s| s.encrypted && s.message.kind == kind::TEXT)
            .filter_map(|s| {
                serde_json::from_str::<serde_json::Value>(&s.message.body)
                    .ok()
                    .and_then(|v| v["text"].as_str().map(str::to_owned))
            })
            .collect()
    }

    fn restart(&mut self) {
        let (store, mls) = open(self.dir.path(), &self.key);
        self.store = store;
        self.mls = mls;
    }
}

fn open(dir: &Path, key: &Keypair) -> (Store, Mls) {
    let store =
        Store::open(dir, key.public().to_peer_id(), DEFAULT_MAX_ENVELOPE_BYTES).expect("open");
    let mls = store.mls(key).expect("mls");
    (store, mls)
}

impl Peer {
    /// The stored envelopes and their bodies, and the outbox's envelopes.
    fn raw_envelopes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for sql in [
            "SELECT body || envelope FROM messages",
            "SELECT envelope FROM outbox",
        ] {
            let mut stmt = self.store.conn.prepare(sql).expect("sql");
            let rows = stmt
                .query_map([], |r| r.get::<_, String>(0))
                .expect("query");
            for row in rows {
                out.extend(row.expect("row").into_bytes());
            }
        }
        out
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn an_encrypted_direct_conversation_both_ways_survives_a_restart() {
    let mut a = Peer::new();
    let mut b = Peer::new();
    a.knows(&b);
    b.knows(&a);
    let conv = a.store.encrypted_direct(&b.id()).expect("conv");
    assert_ne!(conv, crate::direct_conversation_id(&a.id(), &b.id()));
    let kp = b.key_package();
    let welcome = a
        .mls
        .create_group(&conv, &[kp])
        .expect("group")
        .expect("welcome");
    let welcome = a.control(&conv, &welcome);
    // The message sent right after is opened even if it arrives first.
    let cn = "我们明天下午开会";
    let first = a.send(&conv, cn);
    assert!(!first.body.contains(cn));
    assert!(b.receive(&first).is_empty());
    let waiting = b.store.shown_history(&conv).expect("history");
    assert!(waiting[0].waiting.is_some(), "{waiting:?}");
    let opened = b.receive(&welcome);
    assert_eq!(opened.len(), 1);
    assert!(b.store.is_encrypted(&conv).expect("flag"));
    let reply = b.send(&conv, "好的");
    a.receive(&reply);
    assert_eq!(a.texts(&conv), vec![cn.to_owned(), "好的".to_owned()]);
    assert_eq!(b.texts(&conv), vec![cn.to_owned(), "好的".to_owned()]);
    // The envelopes as stored (and as sent, caught up and queued) carry
    // ciphertext only; the plaintext is kept apart, in `opened`.
    for p in [&a, &b] {
        let raw = p.raw_envelopes();
        assert!(raw.len() >= 3);
        for text in [cn, "好的"] {
            assert!(!contains(&raw, text.as_bytes()), "plaintext in an envelope");
        }
    }
    for env in [&first, &reply, &welcome] {
        let wire = serde_json::to_vec(env).expect("json");
        assert!(!contains(&wire, cn.as_bytes()) && !contains(&wire, "好的".as_bytes()));
    }
    // No plaintext message goes into an encrypted conversation.
    let plain = serde_json::json!({ "text": "oops" }).to_string();
    assert!(a
        .store
        .compose(&a.key, &conv, kind::TEXT, &plain, None)
        .is_err());
    // Restart: nothing opened twice, later messages open.
    b.restart();
    assert!(b
        .store
        .open_encrypted(&mut b.mls, &conv)
        .expect("open")
        .is_empty());
    let later = a.send(&conv, "later");
    assert_eq!(b.receive(&later).len(), 1);
    assert_eq!(b.texts(&conv).len(), 3);
    a.restart();
    let back = b.send(&conv, "back");
    assert_eq!(a.receive(&back).len(), 1);
}

#[test]
fn a_forged_sender_or_garbage_is_unreadable_and_the_conversation_goes_on() {
    let mut a = Peer::new();
    let mut b = Peer::new();
    let mut c = Peer::new();
    a.knows(&b);
    b.knows(&a);
    a.knows(&c);
    c.knows(&a);
    b.knows(&c);
    c.knows(&b);
    let create = a
        .store
        .create_group(&a.key, "g", &[b.id(), c.id()])
        .expect("group");
    let g = create.conversation_id.clone();
    let kps = [b.key_package(), c.key_package()];
    let welcome = a.mls.create_group(&g, &kps).expect("mls").expect("welcome");
    let welcome = a.control(&g, &welcome);
    for p in [&mut b, &mut c] {
        p.store.accept(&create, "direct").expect("create");
        p.receive(&welcome);
    }
    // c re-signs a's ciphertext as its own envelope.
    let real = a.send(&g, "from a");
    let forged = Envelope::sign(
        Draft {
            conversation_id: g.clone(),
            counter: 1,
            client_msg_id: uuid::Uuid::new_v4().to_string(),
            lamport: real.lamport + 1,
            kind: kind::ENCRYPTED.into(),
            body: real.body.clone(),
        },
        &c.key,
    );
    let garbage = Envelope::sign(
        Draft {
            conversation_id: g.clone(),
            counter: 2,
            client_msg_id: uuid::Uuid::new_v4().to_string(),
            lamport: real.lamport + 2,
            kind: kind::ENCRYPTED.into(),
            body: r#"{"mls":"application","epoch":1,"ciphertext":"AAAA"}"#.into(),
        },
        &c.key,
    );
    // Each comes back once, marked unreadable (never shown as nothing).
    for env in [&forged, &garbage] {
        let got = b.receive(env);
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(got[0].unreadable.is_some());
    }
    assert_eq!(b.receive(&real).len(), 1);
    let shown = b.store.shown_history(&g).expect("history");
    let unreadable: Vec<_> = shown.iter().filter(|s| s.unreadable.is_some()).collect();
    assert_eq!(unreadable.len(), 2, "{shown:?}");
    assert!(unreadable
        .iter()
        .all(|s| s.message.kind == kind::ENCRYPTED && s.message.sender == c.id()));
    assert_eq!(b.texts(&g), vec!["from a".to_owned()]);
    let after = a.send(&g, "after");
    assert_eq!(b.receive(&after).len(), 1);
}

#[test]
fn an_added_member_reads_only_what_follows_and_a_removed_one_nothing_after() {
    let mut a = Peer::new();
    let mut b = Peer::new();
    let mut c = Peer::new();
    let mut d = Peer::new();
    a.knows(&b);
    a.knows(&c);
    a.knows(&d);
    for p in [&mut b, &mut c, &mut d] {
        p.store
            .add_contact(&Contact {
                peer_id: a.id(),
                name: "a".into(),
                addrs: vec![],
                relay: None,
            })
            .expect("contact");
    }
    let create = a
        .store
        .create_group(&a.key, "g", &[b.id(), c.id()])
        .expect("group");
    let g = create.conversation_id.clone();
    a.store.mark_encrypted(&g).expect("mark");
    let kps = [b.key_package(), c.key_package()];
    let welcome = a.mls.create_group(&g, &kps).expect("mls").expect("welcome");
    let welcome = a.control(&g, &welcome);
    for p in [&mut b, &mut c] {
        p.store.accept(&create, "direct").expect("create");
        p.receive(&welcome);
    }
    let before = a.send(&g, "before d");
    for p in [&mut b, &mut c] {
        assert_eq!(p.receive(&before).len(), 1);
    }
    // a adds d: the group change and the commit with d's Welcome.
    let change = a
        .store
        .change_group(&a.key, &g, &[d.id()], &[])
        .expect("add d");
    let kp = d.key_package();
    let commit = a.mls.change(&g, &[kp], &[]).expect("commit");
    let commit = a.control(&g, &commit);
    for p in [&mut b, &mut c, &mut d] {
        p.store.accept(&change, "direct").expect("change");
        p.receive(&commit);
    }
    // d catches up the earlier history from a member: it stays unreadable.
    for env in [&create, &welcome, &before] {
        d.store.accept(env, "sync").expect("sync");
    }
    d.store.open_encrypted(&mut d.mls, &g).expect("open");
    let after = a.send(&g, "after d");
    for p in [&mut b, &mut c, &mut d] {
        assert_eq!(p.receive(&after).len(), 1);
    }
    assert_eq!(d.texts(&g), vec!["after d".to_owned()]);
    assert_eq!(
        b.texts(&g),
        vec!["before d".to_owned(), "after d".to_owned()]
    );
    // a removes c.
    let change = a
        .store
        .change_group(&a.key, &g, &[], &[c.id()])
        .expect("remove c");
    let commit = a.mls.change(&g, &[], &[c.id()]).expect("commit");
    let commit = a.control(&g, &commit);
    for p in [&mut b, &mut c, &mut d] {
        p.store.accept(&change, "direct").expect("change");
        p.receive(&commit);
    }
    let secret = a.send(&g, "without c");
    for p in [&mut b, &mut d] {
        assert_eq!(p.receive(&secret).len(), 1);
    }
    // c is no longer a member: it refuses the envelope or cannot open it.
    if c.store.accept(&secret, "direct").is_ok() {
        assert!(c
            .store
            .open_encrypted(&mut c.mls, &g)
            .expect("open")
            .is_empty());
    }
    assert!(!c.texts(&g).contains(&"without c".to_owned()));
    assert!(!matches!(
        c.mls.open(&g, &a.id(), &secret.body),
        crate::mls::Opened::Message(_)
    ));
}
