use super::*;

fn peer() -> (Keypair, Mls) {
    let key = Keypair::generate_ed25519();
    let mls = Mls::new(&key, None).expect("mls");
    (key, mls)
}

fn id(key: &Keypair) -> String {
    key.public().to_peer_id().to_base58()
}

fn text(b: &MlsBody) -> String {
    serde_json::to_string(b).expect("json")
}

const CONV: &str = "dm-e2ee-test";

#[test]
fn direct_conversation_both_ways_and_after_restart() {
    let (ka, mut a) = peer();
    let (kb, mut b) = peer();
    let kp = b.key_package().expect("kp");
    let welcome = a
        .create_group(CONV, &[(id(&kb), kp)])
        .expect("create")
        .expect("welcome");
    assert!(matches!(
        b.open(CONV, &id(&ka), &text(&welcome)),
        Opened::Joined { .. }
    ));
    let msg = "我们明天下午开会";
    let sealed = text(&a.encrypt(CONV, msg.as_bytes()).expect("encrypt"));
    assert!(!sealed.contains(msg));
    assert_eq!(
        b.open(CONV, &id(&ka), &sealed),
        Opened::Message(msg.as_bytes().to_vec())
    );
    // Opened once only: a repeat does not decrypt again.
    assert!(matches!(
        b.open(CONV, &id(&ka), &sealed),
        Opened::Unreadable(_)
    ));
    // b restarts from its snapshot and answers.
    let mut b = Mls::new(&kb, Some(&b.snapshot())).expect("restore");
    let reply = text(&b.encrypt(CONV, b"ok").expect("encrypt"));
    assert_eq!(
        a.open(CONV, &id(&kb), &reply),
        Opened::Message(b"ok".to_vec())
    );
}

#[test]
fn wrong_signer_garbage_and_early_messages() {
    let (ka, mut a) = peer();
    let (kb, mut b) = peer();
    let (kc, _c) = peer();
    let kp = b.key_package().expect("kp");
    let welcome = text(
        &a.create_group(CONV, &[(id(&kb), kp)])
            .expect("c")
            .expect("w"),
    );
    let early = text(&a.encrypt(CONV, b"early").expect("encrypt"));
    // Before the Welcome: not yet.
    assert!(matches!(b.open(CONV, &id(&ka), &early), Opened::NotYet(_)));
    // A Welcome claimed by someone else is refused.
    assert!(matches!(
        b.open(CONV, &id(&kc), &welcome),
        Opened::Unreadable(_)
    ));
    assert!(matches!(
        b.open(CONV, &id(&ka), &welcome),
        Opened::Joined { .. }
    ));
    // The MLS sender is a, the envelope signer says c: refused.
    let spoofed = text(&a.encrypt(CONV, b"spoof").expect("encrypt"));
    match b.open(CONV, &id(&kc), &spoofed) {
        Opened::Unreadable(r) => assert!(r.contains("signer"), "{r}"),
        other => panic!("{other:?}"),
    }
    let garbage = r#"{"mls":"application","epoch":1,"ciphertext":"AAAA"}"#;
    assert!(matches!(
        b.open(CONV, &id(&ka), garbage),
        Opened::Unreadable(_)
    ));
    assert!(matches!(
        b.open(CONV, &id(&ka), "{}"),
        Opened::Unreadable(_)
    ));
    // The conversation goes on, and the early message opens now.
    assert_eq!(
        b.open(CONV, &id(&ka), &early),
        Opened::Message(b"early".to_vec())
    );
    let later = text(&a.encrypt(CONV, b"later").expect("encrypt"));
    assert_eq!(
        b.open(CONV, &id(&ka), &later),
        Opened::Message(b"later".to_vec())
    );
}

#[test]
fn group_add_and_remove() {
    let (ka, mut a) = peer();
    let (kb, mut b) = peer();
    let (kc, mut c) = peer();
    let (kd, mut d) = peer();
    const G: &str = "group-1";
    let kps = vec![
        (id(&kb), b.key_package().expect("kp")),
        (id(&kc), c.key_package().expect("kp")),
    ];
    let welcome = text(&a.create_group(G, &kps).expect("c").expect("w"));
    for m in [&mut b, &mut c] {
        assert!(matches!(
            m.open(G, &id(&ka), &welcome),
            Opened::Joined { .. }
        ));
    }
    let before = text(&a.encrypt(G, b"before d").expect("e"));
    for m in [&mut b, &mut c] {
        assert_eq!(
            m.open(G, &id(&ka), &before),
            Opened::Message(b"before d".to_vec())
        );
    }
    // A KeyPackage under another peer's name is refused.
    assert!(matches!(
        a.change(G, &[(id(&kc), d.key_package().expect("kp"))], &[]),
        Err(MlsError::BadKeyPackage(..))
    ));
    let add = text(
        &a.change(G, &[(id(&kd), d.key_package().expect("kp"))], &[])
            .expect("add"),
    );
    for m in [&mut b, &mut c] {
        assert!(matches!(
            m.open(G, &id(&ka), &add),
            Opened::Commit { epoch: 2 }
        ));
    }
    assert!(matches!(
        d.open(G, &id(&ka), &add),
        Opened::Joined { epoch: 2 }
    ));
    // d cannot read what was sent before it joined.
    assert!(matches!(
        d.open(G, &id(&ka), &before),
        Opened::Unreadable(_)
    ));
    let after = text(&b.encrypt(G, b"after d").expect("e"));
    for m in [&mut a, &mut c, &mut d] {
        assert_eq!(
            m.open(G, &id(&kb), &after),
            Opened::Message(b"after d".to_vec())
        );
    }
    let remove = text(&a.change(G, &[], &[id(&kc)]).expect("remove"));
    for m in [&mut b, &mut d] {
        assert!(matches!(
            m.open(G, &id(&ka), &remove),
            Opened::Commit { epoch: 3 }
        ));
    }
    assert_eq!(c.open(G, &id(&ka), &remove), Opened::Nothing);
    assert_eq!(c.epoch(G), None);
    let secret = text(&a.encrypt(G, b"without c").expect("e"));
    assert!(!matches!(c.open(G, &id(&ka), &secret), Opened::Message(_)));
    for m in [&mut b, &mut d] {
        assert_eq!(
            m.open(G, &id(&ka), &secret),
            Opened::Message(b"without c".to_vec())
        );
    }
}

#[test]
fn the_committer_updates_its_keys_and_members_follow() {
    let (ka, mut a) = peer();
    let (kb, mut b) = peer();
    let kp = b.key_package().expect("kp");
    let welcome = a
        .create_group(CONV, &[(id(&kb), kp)])
        .expect("create")
        .expect("welcome");
    assert!(matches!(
        b.open(CONV, &id(&ka), &text(&welcome)),
        Opened::Joined { .. }
    ));
    assert!(a.is_committer(CONV));
    assert!(!b.is_committer(CONV));
    // Only the committer updates (a member's commit would fork the group).
    assert!(b.update_keys(CONV).is_err());
    let before = a.epoch(CONV).expect("epoch");
    // b writes before it has seen the update.
    let early = text(&b.encrypt(CONV, b"ok").expect("encrypt"));
    let update = text(&a.update_keys(CONV).expect("update"));
    assert_eq!(a.epoch(CONV), Some(before + 1));
    // A message of the new epoch that arrives first waits for the commit.
    let sealed = text(&a.encrypt(CONV, "密钥更新之后".as_bytes()).expect("encrypt"));
    assert!(matches!(b.open(CONV, &id(&ka), &sealed), Opened::NotYet(_)));
    assert_eq!(
        b.open(CONV, &id(&ka), &update),
        Opened::Commit { epoch: before + 1 }
    );
    assert_eq!(
        b.open(CONV, &id(&ka), &sealed),
        Opened::Message("密钥更新之后".as_bytes().to_vec())
    );
    // b's message from the old epoch still opens at a (past epochs are
    // kept), and b's next one is of the new epoch.
    assert_eq!(
        a.open(CONV, &id(&kb), &early),
        Opened::Message(b"ok".to_vec())
    );
    let next = b.encrypt(CONV, b"next").expect("encrypt");
    assert!(matches!(next, MlsBody::Application { epoch, .. } if epoch == before + 1));
    assert_eq!(
        a.open(CONV, &id(&kb), &text(&next)),
        Opened::Message(b"next".to_vec())
    );
}

#[test]
fn a_removed_member_can_be_added_again() {
    let (ka, mut a) = peer();
    let (kb, mut b) = peer();
    const G: &str = "group-again";
    let kps = vec![(id(&kb), b.key_package().expect("kp"))];
    let welcome = text(&a.create_group(G, &kps).expect("c").expect("w"));
    assert!(matches!(
        b.open(G, &id(&ka), &welcome),
        Opened::Joined { .. }
    ));
    let remove = text(&a.change(G, &[], &[id(&kb)]).expect("remove"));
    assert_eq!(b.open(G, &id(&ka), &remove), Opened::Nothing);
    assert_eq!(b.epoch(G), None);
    let add = text(
        &a.change(G, &[(id(&kb), b.key_package().expect("kp"))], &[])
            .expect("add again"),
    );
    assert!(
        matches!(b.open(G, &id(&ka), &add), Opened::Joined { .. }),
        "{:?}",
        b.open(G, &id(&ka), &add)
    );
    let back = text(&a.encrypt(G, "欢迎回来".as_bytes()).expect("e"));
    assert_eq!(
        b.open(G, &id(&ka), &back),
        Opened::Message("欢迎回来".as_bytes().to_vec())
    );
}
