//! One behavioural suite for the `Store` trait, run against every backend:
//! SQLite, and PostgreSQL on a private server started for each test
//! (`confab_testkit::postgres`). SQLite is the reference: every test passes
//! on both. Tests of what only a shared database can get wrong (several
//! nodes at once, outages) run on PostgreSQL alone.
//!
//! Without PostgreSQL installed, the SQLite half runs alone and a line on
//! stderr says the PostgreSQL half was skipped. `scripts/test` installs
//! PostgreSQL and sets `CONFAB_REQUIRE_POSTGRES=1`, which turns a missing
//! PostgreSQL into a failure, so CI always runs both halves.

use std::collections::HashMap;
use std::sync::Arc;

use confab_proto::api::{ConversationKind, Role};
use confab_proto::error::ErrorCode;
use confab_proto::MessageKind;
use confab_store::*;
use confab_testkit::postgres::Postgres;

struct Backend {
    name: &'static str,
    store: Arc<dyn Store>,
    /// The PostgreSQL server (dropped after the store), with its URL.
    pg: Option<(Postgres, String)>,
    _dir: Option<tempfile::TempDir>,
}

async fn sqlite() -> Backend {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(&dir.path().join("confab.db"))
        .await
        .expect("open sqlite");
    Backend {
        name: "sqlite",
        store: Arc::new(store),
        pg: None,
        _dir: Some(dir),
    }
}

async fn postgres() -> Option<Backend> {
    let pg = Postgres::start_or_skip().await?;
    let url = pg.url();
    let store = PostgresStore::open(&url).await.expect("open postgres");
    Some(Backend {
        name: "postgres",
        store: Arc::new(store),
        pg: Some((pg, url)),
        _dir: None,
    })
}

/// One of each backend, fresh and empty (SQLite alone without PostgreSQL).
async fn backends() -> Vec<Backend> {
    let mut all = vec![sqlite().await];
    all.extend(postgres().await);
    all
}

async fn user(store: &dyn Store, name: &str) -> i64 {
    store
        .create_user(NewUser {
            username: name.into(),
            username_key: name.to_lowercase(),
            display_name: name.into(),
            password_hash: "x".into(),
            now: 1,
        })
        .await
        .expect("create user")
        .id
}

fn append(conv: i64, sender: i64, id: &str) -> WriteOp {
    WriteOp::Append(NewMessage {
        conversation_id: conv,
        sender_id: sender,
        client_msg_id: id.into(),
        kind: MessageKind::Text,
        body: format!(r#"{{"text":"{id}"}}"#),
        ts: 10,
        mentions: Vec::new(),
    })
}

fn seq_of(o: &WriteOutcome) -> (i64, bool) {
    match o {
        WriteOutcome::Appended { seq, duplicate, .. } => (*seq, *duplicate),
        other => panic!("expected append, got {other:?}"),
    }
}

#[tokio::test]
async fn usernames_are_unique_without_regard_to_case() {
    for b in backends().await {
        let s = b.store.as_ref();
        user(s, "Ann").await;
        let again = s
            .create_user(NewUser {
                username: "ANN".into(),
                username_key: "ann".into(),
                display_name: "x".into(),
                password_hash: "x".into(),
                now: 1,
            })
            .await;
        assert!(matches!(again, Err(StoreError::Conflict)), "{}", b.name);
        let found = s.search_users("an", 10).await.expect("search");
        assert_eq!(found.len(), 1, "{}", b.name);
        assert!(s.search_users("a_", 10).await.expect("search").is_empty());
    }
}

fn identity(issuer: &str, subject: &str) -> OidcIdentity {
    OidcIdentity {
        issuer: issuer.into(),
        subject: subject.into(),
    }
}

fn oidc_new_user(name: &str, display: &str) -> NewUser {
    NewUser {
        username: name.into(),
        username_key: name.to_lowercase(),
        display_name: display.into(),
        password_hash: "!oidc".into(),
        now: 5,
    }
}

#[tokio::test]
async fn oidc_identities_link_one_provider_account_to_one_user() {
    for b in backends().await {
        let s = b.store.as_ref();
        let n = b.name;
        let google = identity("https://accounts.example", "sub-1");
        assert_eq!(
            s.oidc_identity_user(&google).await.expect("get"),
            None,
            "{n}"
        );
        let made = s
            .create_oidc_user(oidc_new_user("wang", "王小明"), google.clone())
            .await
            .expect("create");
        let OidcSignup::Created(wang) = made else {
            panic!("{n}: expected created, got {made:?}")
        };
        assert_eq!(wang.display_name, "王小明", "{n}");
        assert_eq!(
            s.oidc_identity_user(&google).await.expect("get"),
            Some(wang.id),
            "{n}"
        );
        // Same identity again, under another name: refused, nothing written.
        let again = s
            .create_oidc_user(oidc_new_user("other", "x"), google.clone())
            .await
            .expect("create");
        assert!(
            matches!(again, OidcSignup::IdentityTaken(id) if id == wang.id),
            "{n}: {again:?}"
        );
        assert!(
            s.credentials_by_username("other")
                .await
                .expect("get")
                .is_none(),
            "{n}"
        );
        // A taken username: refused, the identity stays free.
        let ann = user(s, "ann").await;
        let other_sub = identity("https://accounts.example", "sub-2");
        let taken = s
            .create_oidc_user(oidc_new_user("ANN", "x"), other_sub.clone())
            .await
            .expect("create");
        assert!(matches!(taken, OidcSignup::UsernameTaken), "{n}: {taken:?}");
        assert_eq!(
            s.oidc_identity_user(&other_sub).await.expect("get"),
            None,
            "{n}"
        );
        // Linking to an existing password account.
        let linked = s
            .link_oidc_identity(ann, other_sub.clone(), 6)
            .await
            .expect("link");
        assert_eq!(linked, OidcLink::Linked, "{n}");
        let again = s
            .link_oidc_identity(ann, other_sub.clone(), 7)
            .await
            .expect("link");
        assert_eq!(again, OidcLink::AlreadyLinked, "{n}");
        let stolen = s
            .link_oidc_identity(ann, google.clone(), 8)
            .await
            .expect("link");
        assert_eq!(stolen, OidcLink::TakenBy(wang.id), "{n}");
        // The same subject at another issuer is another account.
        let elsewhere = identity("https://other.example", "sub-1");
        let linked = s
            .link_oidc_identity(ann, elsewhere.clone(), 9)
            .await
            .expect("link");
        assert_eq!(linked, OidcLink::Linked, "{n}");
        assert_eq!(
            s.oidc_identities_of(ann).await.expect("list"),
            vec![other_sub, elsewhere],
            "{n}"
        );
        assert_eq!(
            s.oidc_identities_of(wang.id).await.expect("list"),
            vec![google],
            "{n}"
        );
    }
}

#[tokio::test]
async fn oidc_pending_secrets_are_single_use_expire_and_are_bounded() {
    for b in backends().await {
        let s = b.store.as_ref();
        let n = b.name;
        assert!(
            s.put_oidc_pending(b"k1", "one", 100, 10, 2)
                .await
                .expect("put"),
            "{n}"
        );
        assert!(
            s.put_oidc_pending(b"k2", "two", 50, 10, 2)
                .await
                .expect("put"),
            "{n}"
        );
        // Full: two live rows.
        assert!(
            !s.put_oidc_pending(b"k3", "three", 100, 10, 2)
                .await
                .expect("put"),
            "{n}"
        );
        // Once k2 has expired it is purged and makes room.
        assert!(
            s.put_oidc_pending(b"k3", "three", 100, 60, 2)
                .await
                .expect("put"),
            "{n}"
        );
        assert_eq!(
            s.take_oidc_pending(b"k1", 61)
                .await
                .expect("take")
                .as_deref(),
            Some("one"),
            "{n}"
        );
        assert_eq!(
            s.take_oidc_pending(b"k1", 61).await.expect("take"),
            None,
            "{n}: second take"
        );
        assert_eq!(
            s.take_oidc_pending(b"k2", 61).await.expect("take"),
            None,
            "{n}: purged"
        );
        assert_eq!(
            s.take_oidc_pending(b"k3", 100).await.expect("take"),
            None,
            "{n}: expired"
        );
        assert_eq!(
            s.take_oidc_pending(b"nope", 1).await.expect("take"),
            None,
            "{n}"
        );
    }
}

#[tokio::test]
async fn users_are_looked_up_by_ids_at_once() {
    for b in backends().await {
        let s = b.store.as_ref();
        let (a, c) = (user(s, "ann").await, user(s, "cy").await);
        let found = s.users(&[c, 999_999, a, c]).await.expect("users");
        let names: Vec<_> = found.iter().map(|u| u.username.as_str()).collect();
        assert_eq!(names, ["ann", "cy"], "{}", b.name);
        assert!(s.users(&[]).await.expect("none").is_empty(), "{}", b.name);
    }
}

#[tokio::test]
async fn seqs_are_gapless_and_idempotent() {
    for b in backends().await {
        let s = b.store.as_ref();
        let (a, bb) = (user(s, "ann").await, user(s, "bob").await);
        let (conv, made) = s
            .get_or_create_direct(a, bb, false, 1)
            .await
            .expect("direct");
        assert!(made);
        assert_eq!(
            s.get_or_create_direct(bb, a, false, 1)
                .await
                .expect("direct"),
            (conv, false)
        );

        let out = s
            .commit_batch(
                &[
                    append(conv, a, "m1"),
                    append(conv, bb, "m2"),
                    append(conv, a, "m1"),
                ],
                CommitRules::default(),
            )
            .await
            .expect("commit");
        assert_eq!(seq_of(&out[0]), (1, false), "{}", b.name);
        assert_eq!(seq_of(&out[1]), (2, false));
        assert_eq!(seq_of(&out[2]), (1, true), "repeat inside a batch");

        let out = s
            .commit_batch(
                &[append(conv, a, "m1"), append(conv, a, "m3")],
                CommitRules::default(),
            )
            .await
            .expect("commit");
        assert_eq!(seq_of(&out[0]), (1, true), "resend across batches");
        assert_eq!(seq_of(&out[1]), (3, false));

        // Same client_msg_id from another sender is a different message.
        let out = s
            .commit_batch(&[append(conv, bb, "m1")], CommitRules::default())
            .await
            .expect("commit");
        assert_eq!(seq_of(&out[0]), (4, false));

        let (page, more) = s
            .history(
                conv,
                a,
                HistoryQuery {
                    limit: 10,
                    ..Default::default()
                },
            )
            .await
            .expect("history");
        assert!(!more);
        assert_eq!(
            page.iter().map(|m| m.seq).collect::<Vec<_>>(),
            vec![1, 2, 3, 4]
        );
    }
}

#[tokio::test]
async fn large_mixed_batches_commit_correctly() {
    for b in backends().await {
        let s = b.store.as_ref();
        let users = [
            user(s, "ann").await,
            user(s, "bob").await,
            user(s, "cat").await,
        ];
        let (ab, _) = s
            .get_or_create_direct(users[0], users[1], false, 1)
            .await
            .expect("direct");
        let (bc, _) = s
            .get_or_create_direct(users[1], users[2], false, 1)
            .await
            .expect("direct");
        s.commit_batch(&[append(ab, users[0], "x5")], CommitRules::default())
            .await
            .expect("seed");
        // 700 ops: two conversations interleaved, a resend of a committed
        // message, repeats inside the batch, and a stranger's send.
        let mut ops = Vec::new();
        for i in 0..700 {
            ops.push(match i % 7 {
                0 => append(bc, users[1], &format!("x{}", i / 2)),
                6 => append(ab, users[2], "stranger"),
                _ => append(ab, users[0], &format!("x{}", i / 2)),
            });
        }
        let out = s
            .commit_batch(&ops, CommitRules::default())
            .await
            .expect("commit");
        let mut fresh = HashMap::<i64, Vec<i64>>::new();
        for (op, o) in ops.iter().zip(&out) {
            let WriteOp::Append(m) = op else {
                unreachable!()
            };
            match o {
                WriteOutcome::Appended {
                    seq,
                    duplicate: false,
                    ..
                } => fresh.entry(m.conversation_id).or_default().push(*seq),
                WriteOutcome::Appended {
                    duplicate: true, ..
                } => {}
                WriteOutcome::Rejected(ErrorCode::NotFound) => assert_eq!(m.sender_id, users[2]),
                other => panic!("{other:?}"),
            }
        }
        for (conv, seqs) in &fresh {
            let start = if *conv == ab { 2 } else { 1 };
            let want: Vec<i64> = (start..start + seqs.len() as i64).collect();
            assert_eq!(seqs, &want, "{} conversation {conv} gapless", b.name);
        }
        let (page, _) = s
            .history(
                ab,
                users[0],
                HistoryQuery {
                    after_seq: Some(0),
                    limit: 1000,
                    ..Default::default()
                },
            )
            .await
            .expect("history");
        assert_eq!(page.len(), 1 + fresh[&ab].len());
        let mut ids: Vec<_> = page.iter().map(|m| m.client_msg_id.clone()).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), page.len(), "no client_msg_id stored twice");
    }
}

#[tokio::test]
async fn outsiders_are_rejected_and_nothing_is_stored() {
    for b in backends().await {
        let s = b.store.as_ref();
        let (a, bb, c) = (
            user(s, "ann").await,
            user(s, "bob").await,
            user(s, "cat").await,
        );
        let (conv, _) = s
            .get_or_create_direct(a, bb, false, 1)
            .await
            .expect("direct");
        let out = s
            .commit_batch(
                &[
                    append(conv, c, "x"),
                    append(999, a, "y"),
                    append(conv, a, "z"),
                ],
                CommitRules::default(),
            )
            .await
            .expect("commit");
        assert!(
            matches!(out[0], WriteOutcome::Rejected(ErrorCode::NotFound)),
            "{}",
            b.name
        );
        assert!(matches!(
            out[1],
            WriteOutcome::Rejected(ErrorCode::NotFound)
        ));
        assert_eq!(seq_of(&out[2]), (1, false));
        assert!(s.conversation_for(conv, c).await.expect("view").is_none());
    }
}

#[tokio::test]
async fn history_pages_both_ways() {
    for b in backends().await {
        let s = b.store.as_ref();
        let (a, bb) = (user(s, "ann").await, user(s, "bob").await);
        let (conv, _) = s
            .get_or_create_direct(a, bb, false, 1)
            .await
            .expect("direct");
        let ops: Vec<_> = (0..25).map(|i| append(conv, a, &format!("m{i}"))).collect();
        s.commit_batch(&ops, CommitRules::default())
            .await
            .expect("commit");
        let q = |before, after| HistoryQuery {
            before_seq: before,
            after_seq: after,
            limit: 10,
        };
        let seqs = |v: &[confab_proto::MessageRecord]| v.iter().map(|m| m.seq).collect::<Vec<_>>();
        let (p, more) = s.history(conv, bb, q(None, None)).await.expect("latest");
        assert_eq!(seqs(&p), (16..=25).collect::<Vec<_>>(), "{}", b.name);
        assert!(more);
        let (p, more) = s.history(conv, bb, q(Some(6), None)).await.expect("back");
        assert_eq!(seqs(&p), (1..=5).collect::<Vec<_>>());
        assert!(!more);
        let (p, more) = s
            .history(conv, bb, q(None, Some(20)))
            .await
            .expect("forward");
        assert_eq!(seqs(&p), (21..=25).collect::<Vec<_>>());
        assert!(!more);
        let (p, more) = s
            .history(conv, bb, q(Some(12), Some(3)))
            .await
            .expect("window");
        assert_eq!(seqs(&p), (4..=11).collect::<Vec<_>>());
        assert!(!more);
    }
}

#[tokio::test]
async fn sync_caps_per_conversation() {
    for b in backends().await {
        let s = b.store.as_ref();
        let (a, bb, c) = (
            user(s, "ann").await,
            user(s, "bob").await,
            user(s, "cat").await,
        );
        let (ab, _) = s
            .get_or_create_direct(a, bb, false, 1)
            .await
            .expect("direct");
        let (ac, _) = s
            .get_or_create_direct(a, c, false, 1)
            .await
            .expect("direct");
        let mut ops: Vec<_> = (0..5).map(|i| append(ab, bb, &format!("b{i}"))).collect();
        ops.push(append(ac, c, "c0"));
        s.commit_batch(&ops, CommitRules::default())
            .await
            .expect("commit");

        let three = SyncLimits {
            per_conversation: 3,
            total: 100,
        };
        let batches = s
            .sync(a, &HashMap::from([(ab, 1)]), three)
            .await
            .expect("sync");
        let by: HashMap<_, _> = batches.iter().map(|x| (x.conversation_id, x)).collect();
        assert_eq!(
            by[&ab].messages.iter().map(|m| m.seq).collect::<Vec<_>>(),
            vec![2, 3, 4],
            "{}",
            b.name
        );
        assert!(by[&ab].has_more);
        assert_eq!(by[&ac].messages.len(), 1);
        assert!(!by[&ac].has_more);

        let none = s
            .sync(a, &HashMap::from([(ab, 5), (ac, 1)]), three)
            .await
            .expect("sync");
        assert!(none.is_empty());
        assert!(s
            .sync(bb, &HashMap::from([(ab, 5)]), three)
            .await
            .expect("sync")
            .is_empty());

        // The whole answer is bounded too: past the total, conversations
        // come back empty with has_more, and the next sync continues.
        let tight = SyncLimits {
            per_conversation: 3,
            total: 2,
        };
        let batches = s.sync(a, &HashMap::new(), tight).await.expect("sync");
        let by: HashMap<_, _> = batches.iter().map(|x| (x.conversation_id, x)).collect();
        let carried: usize = batches.iter().map(|x| x.messages.len()).sum();
        assert_eq!(carried, 2, "{}", b.name);
        // Conversations are answered in id order: ab takes the budget.
        assert_eq!(by[&ab].messages.len(), 2);
        assert!(by[&ab].has_more);
        assert!(
            by[&ac].messages.is_empty() && by[&ac].has_more,
            "ac is told to ask again"
        );
    }
}

#[tokio::test]
async fn cursors_move_forward_only_and_count_unread() {
    for b in backends().await {
        let s = b.store.as_ref();
        let (a, bb) = (user(s, "ann").await, user(s, "bob").await);
        let (conv, _) = s
            .get_or_create_direct(a, bb, false, 1)
            .await
            .expect("direct");
        let ops: Vec<_> = (0..4).map(|i| append(conv, a, &format!("m{i}"))).collect();
        s.commit_batch(&ops, CommitRules::default())
            .await
            .expect("commit");
        let view = s
            .conversation_for(conv, bb)
            .await
            .expect("view")
            .expect("member");
        assert_eq!(view.unread_count, 4, "{}", b.name);
        assert_eq!(view.last_message.as_ref().map(|m| m.seq), Some(4));
        assert_eq!(
            s.conversation_for(conv, a)
                .await
                .expect("v")
                .expect("m")
                .unread_count,
            0
        );

        let read = |seq| WriteOp::Read {
            user_id: bb,
            conversation_id: conv,
            seq,
        };
        let out = s
            .commit_batch(&[read(2), read(3), read(1)], CommitRules::default())
            .await
            .expect("read");
        assert!(
            matches!(out[1], WriteOutcome::CursorMoved { seq: 3, .. }),
            "{out:?}"
        );
        assert!(matches!(out[0], WriteOutcome::CursorUnchanged));
        let out = s
            .commit_batch(&[read(99)], CommitRules::default())
            .await
            .expect("read");
        assert!(
            matches!(out[0], WriteOutcome::CursorMoved { seq: 4, .. }),
            "clamped: {out:?}"
        );
        let out = s
            .commit_batch(&[read(2)], CommitRules::default())
            .await
            .expect("read");
        assert!(matches!(out[0], WriteOutcome::CursorUnchanged));
        assert_eq!(
            s.conversation_for(conv, bb)
                .await
                .expect("v")
                .expect("m")
                .unread_count,
            0
        );

        let dev = s.create_device(bb, None, None, 1).await.expect("device");
        let delivered = |seq| WriteOp::Delivered {
            device_id: dev,
            user_id: bb,
            conversation_id: conv,
            seq,
        };
        let out = s
            .commit_batch(&[delivered(3)], CommitRules::default())
            .await
            .expect("delivered");
        assert!(matches!(out[0], WriteOutcome::CursorMoved { seq: 3, .. }));
        let out = s
            .commit_batch(&[delivered(2)], CommitRules::default())
            .await
            .expect("delivered");
        assert!(matches!(out[0], WriteOutcome::CursorUnchanged));
        assert_eq!(s.delivered_seq(dev, conv).await.expect("seq"), 3);
    }
}

#[tokio::test]
async fn refresh_tokens_rotate_and_reuse_revokes() {
    for b in backends().await {
        let s = b.store.as_ref();
        let a = user(s, "ann").await;
        let dev = s
            .create_device(a, Some("laptop".into()), None, 1)
            .await
            .expect("device");
        s.insert_tokens(vec![
            NewToken {
                hash: vec![1; 32],
                device_id: dev,
                kind: TokenKind::Access,
                expires_at: 100,
            },
            NewToken {
                hash: vec![2; 32],
                device_id: dev,
                kind: TokenKind::Refresh,
                expires_at: 1000,
            },
        ])
        .await
        .expect("tokens");
        let owner = TokenOwner {
            user_id: a,
            device_id: dev,
        };
        assert_eq!(
            s.access_token_owner(&[1; 32], 50).await.expect("a"),
            Some(owner),
            "{}",
            b.name
        );
        assert_eq!(
            s.access_token_owner(&[1; 32], 100).await.expect("a"),
            None,
            "expired"
        );
        assert_eq!(
            s.spend_refresh_token(&[9; 32], 50).await.expect("r"),
            RefreshOutcome::Invalid
        );
        assert_eq!(
            s.spend_refresh_token(&[2; 32], 50).await.expect("r"),
            RefreshOutcome::Fresh(owner)
        );
        s.insert_tokens(vec![NewToken {
            hash: vec![3; 32],
            device_id: dev,
            kind: TokenKind::Access,
            expires_at: 100,
        }])
        .await
        .expect("tokens");
        assert_eq!(
            s.spend_refresh_token(&[2; 32], 60).await.expect("r"),
            RefreshOutcome::Reused(owner)
        );
        assert_eq!(
            s.access_token_owner(&[3; 32], 60).await.expect("a"),
            None,
            "device revoked"
        );
        assert_eq!(
            s.spend_refresh_token(&[2; 32], 61).await.expect("r"),
            RefreshOutcome::Reused(owner)
        );
    }
}

// --- helpers for the tests below ------------------------------------------

async fn commit(store: &dyn Store, ops: &[WriteOp]) -> Vec<WriteOutcome> {
    store
        .commit_batch(ops, CommitRules::default())
        .await
        .expect("commit")
}

fn group(change: GroupChange) -> WriteOp {
    WriteOp::Group { change, ts: 20 }
}

fn add(conversation_id: i64, by: i64, users: &[i64], max_members: i64) -> WriteOp {
    group(GroupChange::Add {
        conversation_id,
        by,
        users: users.to_vec(),
        max_members,
    })
}

fn remove(conversation_id: i64, by: i64, user: i64) -> WriteOp {
    group(GroupChange::Remove {
        conversation_id,
        by,
        user,
    })
}

fn set_role(conversation_id: i64, by: i64, user: i64, role: Role) -> WriteOp {
    group(GroupChange::SetRole {
        conversation_id,
        by,
        user,
        role,
    })
}

fn read(conversation_id: i64, user_id: i64, seq: i64) -> WriteOp {
    WriteOp::Read {
        user_id,
        conversation_id,
        seq,
    }
}

fn mentioning(conv: i64, sender: i64, id: &str, mentions: &[i64]) -> WriteOp {
    WriteOp::Append(NewMessage {
        conversation_id: conv,
        sender_id: sender,
        client_msg_id: id.into(),
        kind: MessageKind::Text,
        body: format!(r#"{{"text":"{id}"}}"#),
        ts: 10,
        mentions: mentions.to_vec(),
    })
}

fn changed(o: &WriteOutcome) -> &GroupChangeOutcome {
    match o {
        WriteOutcome::GroupChanged(done) => done,
        other => panic!("expected a group change, got {other:?}"),
    }
}

fn rejected(o: &WriteOutcome) -> ErrorCode {
    match o {
        WriteOutcome::Rejected(code) => *code,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn event(m: &confab_proto::MessageRecord) -> &str {
    assert_eq!(m.kind, MessageKind::System);
    m.body["event"].as_str().expect("event name")
}

/// Everything `user` may see of `conv`, ascending.
async fn all_history(store: &dyn Store, conv: i64, user: i64) -> Vec<confab_proto::MessageRecord> {
    let (page, more) = store
        .history(
            conv,
            user,
            HistoryQuery {
                after_seq: Some(0),
                limit: 100_000,
                ..Default::default()
            },
        )
        .await
        .expect("history");
    assert!(!more);
    page
}

async fn view(store: &dyn Store, conv: i64, user: i64) -> confab_proto::api::Conversation {
    store
        .conversation_for(conv, user)
        .await
        .expect("view")
        .expect("member")
}

async fn role(store: &dyn Store, conv: i64, user: i64) -> Role {
    store
        .member(conv, user)
        .await
        .expect("member")
        .expect("is a member")
        .role
}

// --- groups ----------------------------------------------------------------

#[tokio::test]
async fn group_changes_take_their_place_in_seq_order() {
    for b in backends().await {
        let s = b.store.as_ref();
        let (a, bb, c, d) = (
            user(s, "ann").await,
            user(s, "bob").await,
            user(s, "cat").await,
            user(s, "dan").await,
        );
        let g = s
            .create_group(a, "team", &[bb, bb], false, 5)
            .await
            .expect("group");
        let v = view(s, g, a).await;
        assert_eq!(v.kind, ConversationKind::Group, "{}", b.name);
        assert_eq!(v.title.as_deref(), Some("team"));
        assert_eq!((v.member_count, v.last_seq), (2, 1));
        assert_eq!(role(s, g, a).await, Role::Owner);
        assert_eq!(role(s, g, bb).await, Role::Member);

        let out = commit(
            s,
            &[
                append(g, a, "m1"),
                add(g, a, &[d, c, c, bb], 10),
                append(g, c, "c1"),
                set_role(g, a, bb, Role::Admin),
                group(GroupChange::Update {
                    conversation_id: g,
                    by: bb,
                    title: Some("crew".into()),
                    avatar_media_id: Some(Some("pic".into())),
                    members_can_add: Some(true),
                }),
                remove(g, bb, c),
                append(g, c, "c2"),
                read(g, c, 7),
                add(g, d, &[c], 10),
            ],
        )
        .await;
        assert_eq!(seq_of(&out[0]), (2, false), "{}", b.name);
        let joined = changed(&out[1]);
        assert_eq!(joined.added, vec![c, d]);
        assert_eq!(&*joined.members_before, &[a, bb]);
        assert_eq!(&*joined.members_after, &[a, bb, c, d]);
        assert_eq!(joined.notices.len(), 1);
        assert_eq!(joined.notices[0].seq, 3);
        assert_eq!(event(&joined.notices[0]), "member_joined");
        assert_eq!(
            joined.notices[0].body["user_ids"],
            serde_json::json!([c, d])
        );
        assert_eq!(joined.notices[0].sender_id, a);
        match &out[2] {
            WriteOutcome::Appended {
                seq: 4,
                duplicate: false,
                members,
                ..
            } => assert_eq!(&**members, &[a, bb, c, d], "a new member sends at once"),
            other => panic!("{other:?}"),
        }
        let promoted = changed(&out[3]);
        assert_eq!(promoted.notices[0].seq, 5);
        assert_eq!(event(&promoted.notices[0]), "role_changed");
        assert_eq!(promoted.notices[0].body["role"], "admin");
        let updated = changed(&out[4]);
        assert_eq!(updated.notices[0].seq, 6);
        assert_eq!(event(&updated.notices[0]), "conversation_updated");
        assert_eq!(updated.notices[0].body["title"], "crew");
        assert_eq!(updated.notices[0].body["avatar_media_id"], "pic");
        assert_eq!(updated.notices[0].body["members_can_add"], true);
        let kicked = changed(&out[5]);
        assert_eq!(kicked.notices[0].seq, 7);
        assert_eq!(event(&kicked.notices[0]), "member_left");
        assert_eq!(kicked.notices[0].body["reason"], "removed");
        assert_eq!(&*kicked.members_after, &[a, bb, d]);
        assert_eq!(rejected(&out[6]), ErrorCode::Forbidden, "former member");
        assert_eq!(rejected(&out[7]), ErrorCode::Forbidden);
        let back = changed(&out[8]);
        assert_eq!(back.added, vec![c], "members may add once allowed");
        assert_eq!(back.notices[0].seq, 8);

        let seqs: Vec<(i64, MessageKind)> = all_history(s, g, a)
            .await
            .iter()
            .map(|m| (m.seq, m.kind))
            .collect();
        use MessageKind::{System as S, Text as T};
        assert_eq!(
            seqs,
            vec![
                (1, S),
                (2, T),
                (3, S),
                (4, T),
                (5, S),
                (6, S),
                (7, S),
                (8, S)
            ]
        );
        let first = &all_history(s, g, a).await[0];
        assert_eq!(event(first), "group_created");
        assert_eq!(first.body["title"], "team");
        assert_eq!(
            all_history(s, g, d)
                .await
                .iter()
                .map(|m| m.seq)
                .collect::<Vec<_>>(),
            (3..=8).collect::<Vec<_>>(),
            "history starts at the join notice"
        );
        assert_eq!(
            all_history(s, g, c)
                .await
                .iter()
                .map(|m| m.seq)
                .collect::<Vec<_>>(),
            vec![8],
            "a re-added member starts over"
        );
        assert_eq!(s.member(g, d).await.expect("m").expect("m").joined_seq, 2);
        assert_eq!(s.member(g, c).await.expect("m").expect("m").joined_seq, 7);
        assert!(!s.was_member(g, c).await.expect("was"), "back in");
        assert_eq!(s.member_ids(g).await.expect("ids"), vec![a, bb, c, d]);
        let v = view(s, g, a).await;
        assert_eq!(v.title.as_deref(), Some("crew"));
        assert_eq!(v.avatar_media_id.as_deref(), Some("pic"));
        assert!(v.members_can_add);
        assert_eq!((v.member_count, v.last_seq), (4, 8));
        assert_eq!(v.members.len(), 4);

        // Refusals write nothing.
        let e = user(s, "eve").await;
        let (dm, _) = s
            .get_or_create_direct(a, bb, false, 1)
            .await
            .expect("direct");
        let out = commit(
            s,
            &[
                remove(g, bb, a),
                set_role(g, bb, d, Role::Admin),
                set_role(g, a, a, Role::Member),
                add(g, a, &[e], 4),
                add(g, a, &[999_999], 10),
                group(GroupChange::Update {
                    conversation_id: g,
                    by: d,
                    title: Some("mine".into()),
                    avatar_media_id: None,
                    members_can_add: None,
                }),
                remove(g, a, e),
                add(dm, a, &[c], 10),
                add(g, e, &[e], 10),
                add(999_999, a, &[e], 10),
                remove(g, d, bb),
            ],
        )
        .await;
        let codes: Vec<ErrorCode> = out.iter().map(rejected).collect();
        use ErrorCode::*;
        assert_eq!(
            codes,
            vec![
                Forbidden, Forbidden, BadRequest, GroupFull, NotFound, Forbidden, NotFound,
                BadRequest, NotFound, NotFound, Forbidden
            ],
            "{}",
            b.name
        );
        // No-ops: nothing to announce.
        let out = commit(
            s,
            &[set_role(g, a, bb, Role::Admin), add(g, bb, &[d, c], 10)],
        )
        .await;
        assert!(changed(&out[0]).notices.is_empty());
        assert!(changed(&out[1]).notices.is_empty() && changed(&out[1]).added.is_empty());
        assert_eq!(view(s, g, a).await.last_seq, 8, "nothing was written");

        // Handing ownership on, and an owner leaving.
        let out = commit(s, &[set_role(g, a, d, Role::Owner)]).await;
        let handed = changed(&out[0]);
        assert_eq!(
            handed
                .notices
                .iter()
                .map(|n| (n.seq, n.body["user_id"].as_i64(), n.body["role"].clone()))
                .collect::<Vec<_>>(),
            vec![
                (9, Some(d), serde_json::json!("owner")),
                (10, Some(a), serde_json::json!("admin"))
            ]
        );
        assert_eq!(role(s, g, d).await, Role::Owner);
        assert_eq!(role(s, g, a).await, Role::Admin);
        let out = commit(s, &[remove(g, d, d), append(g, d, "late")]).await;
        let left = changed(&out[0]);
        assert_eq!(left.notices.len(), 2);
        assert_eq!(left.notices[0].body["reason"], "left");
        assert_eq!(event(&left.notices[1]), "role_changed");
        // Admins first, then the longest-serving: ann and bob joined together.
        assert_eq!(left.notices[1].body["user_id"], a);
        assert_eq!(left.notices[1].seq, 12);
        assert_eq!(rejected(&out[1]), ErrorCode::Forbidden);
        assert_eq!(role(s, g, a).await, Role::Owner);
        assert!(s.was_member(g, d).await.expect("was"));
        assert!(s.conversation_for(g, d).await.expect("view").is_none());
        assert!(s.member(g, d).await.expect("member").is_none());
        assert_eq!(view(s, g, a).await.member_count, 3);

        // Mute is per member.
        assert!(s.set_muted(g, bb, true).await.expect("mute"));
        assert!(!s.set_muted(g, d, true).await.expect("mute"));
        assert!(view(s, g, bb).await.muted);
        assert!(!view(s, g, a).await.muted);
        let members = s.members(g).await.expect("members");
        assert_eq!(
            members
                .iter()
                .map(|m| (m.user_id, m.role))
                .collect::<Vec<_>>(),
            vec![(a, Role::Owner), (bb, Role::Admin), (c, Role::Member)]
        );
    }
}

#[tokio::test]
async fn a_bad_group_update_fails_only_itself() {
    for b in backends().await {
        let s = b.store.as_ref();
        let (a, bb) = (user(s, "ann").await, user(s, "bob").await);
        let g = s
            .create_group(a, "t", &[bb], false, 1)
            .await
            .expect("group");
        let out = commit(
            s,
            &[
                append(g, a, "before"),
                group(GroupChange::Update {
                    conversation_id: g,
                    by: a,
                    title: Some("nul\0here".into()),
                    avatar_media_id: None,
                    members_can_add: None,
                }),
                append(g, bb, "after"),
            ],
        )
        .await;
        assert_eq!(seq_of(&out[0]), (2, false), "{}", b.name);
        // SQLite stores the NUL; PostgreSQL cannot and refuses the change.
        let next = match &out[1] {
            WriteOutcome::GroupChanged(_) => 4,
            WriteOutcome::Rejected(ErrorCode::BadRequest) => 3,
            other => panic!("{other:?}"),
        };
        assert_eq!(seq_of(&out[2]), (next, false));
    }
}

// --- friends and blocks ----------------------------------------------------

#[tokio::test]
async fn friend_requests_friends_and_blocks() {
    for b in backends().await {
        let s = b.store.as_ref();
        let (a, bb, c, d) = (
            user(s, "ann").await,
            user(s, "bob").await,
            user(s, "cat").await,
            user(s, "dan").await,
        );
        let FriendRequestOutcome::Pending(r1) = s
            .send_friend_request(a, bb, Some("hi".into()), 10, 100)
            .await
            .expect("request")
        else {
            panic!("{}: expected pending", b.name)
        };
        assert_eq!((r1.from_user.id, r1.to_user.id), (a, bb));
        assert_eq!(r1.from_user.username, "ann");
        assert_eq!((r1.message.as_deref(), r1.created_at), (Some("hi"), 100));
        let FriendRequestOutcome::Pending(again) = s
            .send_friend_request(a, bb, None, 10, 101)
            .await
            .expect("request")
        else {
            panic!("expected pending")
        };
        assert_eq!((again.id, again.message.as_deref()), (r1.id, Some("hi")));
        let ids =
            |v: Vec<confab_proto::api::FriendRequest>| v.iter().map(|r| r.id).collect::<Vec<_>>();
        assert_eq!(
            ids(s.friend_requests(bb, true).await.expect("in")),
            vec![r1.id]
        );
        assert_eq!(
            ids(s.friend_requests(a, false).await.expect("out")),
            vec![r1.id]
        );
        assert!(s.friend_requests(a, true).await.expect("in").is_empty());
        assert!(matches!(
            s.send_friend_request(a, 999_999, None, 10, 1).await,
            Ok(FriendRequestOutcome::UnknownUser)
        ));
        assert!(matches!(
            s.send_friend_request(a, c, None, 1, 1).await,
            Ok(FriendRequestOutcome::TooMany)
        ));
        let FriendRequestOutcome::Pending(rc) = s
            .send_friend_request(a, c, None, 10, 102)
            .await
            .expect("request")
        else {
            panic!("expected pending")
        };
        assert!(!s.cancel_friend_request(rc.id, c).await.expect("cancel"));
        assert!(s.cancel_friend_request(rc.id, a).await.expect("cancel"));
        assert!(!s.cancel_friend_request(rc.id, a).await.expect("cancel"));

        // Crossing requests: the second accepts the first.
        match s.send_friend_request(bb, a, None, 10, 103).await {
            Ok(FriendRequestOutcome::Accepted { request, since }) => {
                assert_eq!((request.id, request.from_user.id, since), (r1.id, a, 103))
            }
            other => panic!("{other:?}"),
        }
        let friends = s.friends(a).await.expect("friends");
        assert_eq!(
            friends.iter().map(|(u, t)| (u.id, *t)).collect::<Vec<_>>(),
            vec![(bb, 103)]
        );
        assert_eq!(s.friend_ids(bb).await.expect("ids"), vec![a]);
        assert!(s.friend_requests(bb, true).await.expect("in").is_empty());
        assert!(matches!(
            s.send_friend_request(a, bb, None, 10, 104).await,
            Ok(FriendRequestOutcome::AlreadyFriends)
        ));

        // Answering.
        let FriendRequestOutcome::Pending(rd) = s
            .send_friend_request(d, a, None, 10, 105)
            .await
            .expect("request")
        else {
            panic!("expected pending")
        };
        assert!(matches!(
            s.answer_friend_request(rd.id, bb, true, 106).await,
            Ok(FriendAnswer::NotFound)
        ));
        match s.answer_friend_request(rd.id, a, false, 106).await {
            Ok(FriendAnswer::Declined(r)) => assert_eq!(r.id, rd.id),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            s.answer_friend_request(rd.id, a, true, 107).await,
            Ok(FriendAnswer::NotFound)
        ));
        let FriendRequestOutcome::Pending(rd) = s
            .send_friend_request(d, a, None, 10, 108)
            .await
            .expect("request")
        else {
            panic!("expected pending")
        };
        match s.answer_friend_request(rd.id, a, true, 109).await {
            Ok(FriendAnswer::Accepted { request, since }) => {
                assert_eq!((request.from_user.id, since), (d, 109))
            }
            other => panic!("{other:?}"),
        }
        let names: Vec<String> = s
            .friends(a)
            .await
            .expect("friends")
            .into_iter()
            .map(|(u, _)| u.username)
            .collect();
        assert_eq!(names, vec!["bob", "dan"], "by username");
        assert!(s.unfriend(d, a).await.expect("unfriend"));
        assert!(!s.unfriend(a, d).await.expect("unfriend"));
        assert_eq!(s.friend_ids(a).await.expect("ids"), vec![bb]);

        // Blocking ends the friendship and the requests both ways.
        assert!(s.block(a, bb, 200).await.expect("block"));
        assert!(s.friend_ids(a).await.expect("ids").is_empty());
        assert!(s.friend_ids(bb).await.expect("ids").is_empty());
        assert!(s.blocked_either(bb, a).await.expect("either"));
        assert!(s.blocked_either(a, bb).await.expect("either"));
        s.send_friend_request(c, a, None, 10, 201)
            .await
            .expect("request");
        s.send_friend_request(a, c, None, 10, 202)
            .await
            .expect("request");
        assert!(s.unfriend(a, c).await.expect("unfriend"), "crossed");
        s.send_friend_request(c, a, None, 10, 203)
            .await
            .expect("request");
        assert!(!s.block(a, c, 204).await.expect("block"));
        assert!(s.friend_requests(a, true).await.expect("in").is_empty());
        assert!(s.friend_requests(c, false).await.expect("out").is_empty());
        assert!(matches!(
            s.send_friend_request(c, a, None, 10, 205).await,
            Ok(FriendRequestOutcome::Blocked)
        ));
        assert!(matches!(
            s.send_friend_request(a, c, None, 10, 205).await,
            Ok(FriendRequestOutcome::Blocked)
        ));
        assert!(!s.block(a, c, 206).await.expect("block again"));
        let blocked: Vec<i64> = s
            .blocked_users(a)
            .await
            .expect("blocked")
            .iter()
            .map(|u| u.id)
            .collect();
        assert_eq!(blocked, vec![c, bb], "newest first");
        assert!(s.unblock(a, bb).await.expect("unblock"));
        assert!(!s.unblock(a, bb).await.expect("unblock"));
        assert!(!s.unblock(c, a).await.expect("only the blocker lifts it"));
        assert!(!s.blocked_either(a, bb).await.expect("either"));
        assert!(s.blocked_either(c, a).await.expect("either"));
    }
}

#[tokio::test]
async fn blocks_and_the_friends_only_rule_stop_direct_messages() {
    for b in backends().await {
        let s = b.store.as_ref();
        let (a, bb, c) = (
            user(s, "ann").await,
            user(s, "bob").await,
            user(s, "cat").await,
        );
        let (ab, _) = s
            .get_or_create_direct(a, bb, false, 1)
            .await
            .expect("direct");
        let g = s
            .create_group(a, "g", &[bb], false, 2)
            .await
            .expect("group");
        assert_eq!(
            seq_of(&commit(s, &[append(ab, a, "m1")]).await[0]),
            (1, false)
        );
        s.block(bb, a, 5).await.expect("block");
        // The checks calls and group additions use: blocks either way
        // among several users at once, and a shared conversation.
        assert_eq!(s.blocks_among(a, &[bb, c]).await.expect("among"), vec![bb]);
        assert_eq!(s.blocks_among(bb, &[c, a]).await.expect("among"), vec![a]);
        assert!(s.blocks_among(c, &[a, bb]).await.expect("among").is_empty());
        assert!(
            s.share_conversation(a, bb).await.expect("share"),
            "{}",
            b.name
        );
        assert!(!s.share_conversation(a, c).await.expect("share"));
        assert!(!s.share_conversation(c, bb).await.expect("share"));
        let out = commit(
            s,
            &[
                append(ab, a, "m2"),
                append(ab, bb, "m3"),
                append(g, a, "g1"),
                append(ab, a, "m1"),
                append(ab, a, "m2"),
                read(ab, bb, 1),
            ],
        )
        .await;
        assert_eq!(rejected(&out[0]), ErrorCode::Blocked, "{}", b.name);
        assert_eq!(rejected(&out[1]), ErrorCode::Blocked, "either way");
        assert_eq!(seq_of(&out[2]), (2, false), "groups are not affected");
        assert_eq!(seq_of(&out[3]), (1, true), "a resend still answers");
        assert_eq!(rejected(&out[4]), ErrorCode::Blocked, "a repeat too");
        assert!(matches!(out[5], WriteOutcome::CursorMoved { seq: 1, .. }));
        assert_eq!(s.audience(ab, a).await.expect("aud"), Some(vec![]));
        assert_eq!(s.audience(g, bb).await.expect("aud"), Some(vec![]));
        assert_eq!(s.audience(g, c).await.expect("aud"), None);
        s.unblock(bb, a).await.expect("unblock");
        assert_eq!(s.audience(g, bb).await.expect("aud"), Some(vec![a]));

        let friends_only = CommitRules {
            direct_messages: DirectMessagePolicy::FriendsOnly,
        };
        let out = s
            .commit_batch(&[append(ab, a, "m4"), append(g, bb, "g2")], friends_only)
            .await
            .expect("commit");
        assert_eq!(rejected(&out[0]), ErrorCode::NotFriends);
        assert_eq!(seq_of(&out[1]), (3, false));
        s.send_friend_request(a, bb, None, 10, 6)
            .await
            .expect("request");
        s.send_friend_request(bb, a, None, 10, 7)
            .await
            .expect("accept");
        let out = s
            .commit_batch(&[append(ab, a, "m4"), append(ab, bb, "m5")], friends_only)
            .await
            .expect("commit");
        assert_eq!(seq_of(&out[0]), (2, false), "refused sends took no seq");
        assert_eq!(seq_of(&out[1]), (3, false));
        match &out[1] {
            WriteOutcome::Appended { members, .. } => assert_eq!(&**members, &[a, bb]),
            other => panic!("{other:?}"),
        }

        // Newest activity first.
        let listed: Vec<i64> = s
            .conversations_for(a)
            .await
            .expect("list")
            .iter()
            .map(|c| c.id)
            .collect();
        assert_eq!(listed.len(), 2);
        assert!(s.conversations_for(c).await.expect("list").is_empty());
    }
}

// --- mentions, sync floors, receipts -----------------------------------------

#[tokio::test]
async fn mentions_count_until_read() {
    for b in backends().await {
        let s = b.store.as_ref();
        let (a, bb, c, d) = (
            user(s, "ann").await,
            user(s, "bob").await,
            user(s, "cat").await,
            user(s, "dan").await,
        );
        let g = s
            .create_group(a, "m", &[bb, c], false, 1)
            .await
            .expect("group");
        let out = commit(
            s,
            &[
                mentioning(g, a, "x", &[bb, c, a, d, bb, 999_999]),
                mentioning(g, bb, "y", &[c]),
                mentioning(g, bb, "x", &[c]),
            ],
        )
        .await;
        assert_eq!(seq_of(&out[0]), (2, false));
        assert_eq!(seq_of(&out[1]), (3, false));
        assert_eq!(seq_of(&out[2]), (4, false), "another sender's x");
        let counts = |v: confab_proto::api::Conversation| (v.unread_count, v.unread_mentions);
        assert_eq!(counts(view(s, g, bb).await), (1, 1), "{}", b.name);
        assert_eq!(counts(view(s, g, c).await), (3, 3));
        assert_eq!(counts(view(s, g, a).await), (2, 0));
        commit(s, &[read(g, bb, 2), read(g, c, 3)]).await;
        assert_eq!(
            counts(view(s, g, bb).await),
            (0, 0),
            "the rest is bob's own"
        );
        assert_eq!(counts(view(s, g, c).await), (1, 1));
        // A resend mentions nobody again.
        commit(s, &[mentioning(g, bb, "y", &[c])]).await;
        assert_eq!(counts(view(s, g, c).await), (1, 1));
        // Leaving forgets them; coming back starts clean; system notices
        // are never unread.
        commit(s, &[remove(g, a, c), add(g, a, &[c, d], 10)]).await;
        assert_eq!(counts(view(s, g, c).await), (0, 0));
        assert_eq!(counts(view(s, g, d).await), (0, 0));
        assert_eq!(counts(view(s, g, bb).await), (0, 0));

        let (ab, _) = s
            .get_or_create_direct(a, bb, false, 1)
            .await
            .expect("direct");
        commit(s, &[mentioning(ab, a, "dm", &[bb])]).await;
        assert_eq!(counts(view(s, ab, bb).await), (1, 1));
        let v = view(s, ab, bb).await;
        assert_eq!(
            v.last_message.map(|m| m.client_msg_id).as_deref(),
            Some("dm")
        );
    }
}

#[tokio::test]
async fn sync_tells_new_members_where_their_history_starts() {
    for b in backends().await {
        let s = b.store.as_ref();
        let (a, bb, c) = (
            user(s, "ann").await,
            user(s, "bob").await,
            user(s, "cat").await,
        );
        let g = s
            .create_group(a, "s", &[bb], false, 1)
            .await
            .expect("group");
        let ops: Vec<_> = (0..3).map(|i| append(g, a, &format!("m{i}"))).collect();
        commit(s, &ops).await;
        commit(s, &[add(g, a, &[c], 10), append(g, bb, "after")]).await;
        let limits = SyncLimits {
            per_conversation: 100,
            total: 1000,
        };
        let batch = |cursor: Option<i64>, who: i64| async move {
            let cursors: HashMap<i64, i64> = cursor.map(|c| (g, c)).into_iter().collect();
            let mut got = s.sync(who, &cursors, limits).await.expect("sync");
            assert!(got.len() <= 1);
            got.pop().map(|x| {
                (
                    x.floor,
                    x.messages.iter().map(|m| m.seq).collect::<Vec<_>>(),
                    x.has_more,
                )
            })
        };
        assert_eq!(
            batch(None, c).await,
            Some((Some(4), vec![5, 6], false)),
            "{}",
            b.name
        );
        assert_eq!(batch(Some(2), c).await, Some((Some(4), vec![5, 6], false)));
        assert_eq!(batch(Some(4), c).await, Some((None, vec![5, 6], false)));
        assert_eq!(batch(Some(5), c).await, Some((None, vec![6], false)));
        assert_eq!(batch(Some(6), c).await, None);
        assert_eq!(
            batch(None, bb).await,
            Some((None, (1..=6).collect(), false))
        );
        commit(s, &[remove(g, a, bb)]).await;
        assert_eq!(batch(None, bb).await, None, "former members sync nothing");
        let (page, _) = s
            .history(
                g,
                bb,
                HistoryQuery {
                    limit: 10,
                    ..Default::default()
                },
            )
            .await
            .expect("history");
        assert!(page.is_empty());
    }
}

#[tokio::test]
async fn group_history_counts_readers_of_own_messages() {
    for b in backends().await {
        let s = b.store.as_ref();
        let (a, bb, c) = (
            user(s, "ann").await,
            user(s, "bob").await,
            user(s, "cat").await,
        );
        let g = s
            .create_group(a, "r", &[bb, c], false, 1)
            .await
            .expect("group");
        commit(
            s,
            &[
                append(g, a, "x1"),
                append(g, a, "x2"),
                append(g, a, "x3"),
                append(g, bb, "y1"),
            ],
        )
        .await;
        commit(s, &[read(g, bb, 3), read(g, c, 2)]).await;
        let read_by = |v: Vec<confab_proto::MessageRecord>| {
            v.iter().map(|m| (m.seq, m.read_by)).collect::<Vec<_>>()
        };
        assert_eq!(
            read_by(all_history(s, g, a).await),
            vec![
                (1, None),
                (2, Some(2)),
                (3, Some(1)),
                (4, Some(0)),
                (5, None)
            ],
            "{}",
            b.name
        );
        assert_eq!(
            read_by(all_history(s, g, bb).await),
            vec![(1, None), (2, None), (3, None), (4, None), (5, Some(0))]
        );
        // Someone who joins later starts with a read cursor past these
        // messages but never read them: they do not count.
        let dan = user(s, "dan").await;
        commit(s, &[add(g, a, &[dan], 100)]).await;
        let counts: Vec<_> = read_by(all_history(s, g, a).await)
            .into_iter()
            .filter(|(_, r)| r.is_some())
            .collect();
        assert_eq!(
            counts,
            vec![(2, Some(2)), (3, Some(1)), (4, Some(0))],
            "{}: a late joiner is not a reader",
            b.name
        );
        let (ab, _) = s
            .get_or_create_direct(a, bb, false, 1)
            .await
            .expect("direct");
        commit(s, &[append(ab, a, "d1")]).await;
        commit(s, &[read(ab, bb, 1)]).await;
        assert_eq!(
            read_by(all_history(s, ab, a).await),
            vec![(1, None)],
            "groups only"
        );
    }
}

// --- accounts and presence ---------------------------------------------------

#[tokio::test]
async fn profiles_and_presence_bookkeeping() {
    for b in backends().await {
        let s = b.store.as_ref();
        let (a, bb) = (user(s, "ann").await, user(s, "bob").await);
        let recs = s
            .presence_records(&[a, bb, 999_999])
            .await
            .expect("presence");
        assert_eq!(recs.len(), 2, "{}", b.name);
        assert_eq!(recs[&a], PresenceRecord::default());
        assert!(s.presence_records(&[]).await.expect("presence").is_empty());
        s.set_last_seen(a, 100).await.expect("seen");
        s.set_last_seen(a, 50).await.expect("seen");
        s.set_last_seen(999_999, 5).await.expect("nobody");
        let updated = s
            .update_profile(
                a,
                ProfileUpdate {
                    hide_presence: Some(true),
                    status_text: Some(Some("busy".into())),
                    avatar_media_id: Some(Some("face".into())),
                    ..Default::default()
                },
            )
            .await
            .expect("update")
            .expect("exists");
        assert_eq!(updated.status_text.as_deref(), Some("busy"));
        assert_eq!(updated.avatar_media_id.as_deref(), Some("face"));
        assert_eq!(updated.display_name, "ann");
        let recs = s.presence_records(&[a, bb]).await.expect("presence");
        assert_eq!(
            recs[&a],
            PresenceRecord {
                hidden: true,
                last_seen: Some(100)
            }
        );
        assert_eq!(recs[&bb], PresenceRecord::default());
        let updated = s
            .update_profile(
                a,
                ProfileUpdate {
                    display_name: Some("Ann A.".into()),
                    avatar_media_id: Some(None),
                    ..Default::default()
                },
            )
            .await
            .expect("update")
            .expect("exists");
        assert_eq!(updated.avatar_media_id, None);
        assert_eq!(updated.status_text.as_deref(), Some("busy"));
        let again = s.user(a).await.expect("user").expect("exists");
        assert_eq!(again.display_name, "Ann A.");
        assert!(s.presence_records(&[a]).await.expect("p")[&a].hidden);
        assert!(s
            .update_profile(999_999, ProfileUpdate::default())
            .await
            .expect("update")
            .is_none());
        assert!(s.user(999_999).await.expect("user").is_none());
    }
}

#[tokio::test]
async fn password_changes_and_revocation_end_other_devices() {
    for b in backends().await {
        let s = b.store.as_ref();
        let a = user(s, "ann").await;
        let creds = s
            .credentials_by_username("ann")
            .await
            .expect("creds")
            .expect("exists");
        assert_eq!((creds.user.id, creds.password_hash.as_str()), (a, "x"));
        assert!(s
            .credentials_by_username("nobody")
            .await
            .expect("creds")
            .is_none());
        let d1 = s.create_device(a, None, None, 1).await.expect("device");
        let d2 = s
            .create_device(a, Some("phone".into()), Some("key".into()), 1)
            .await
            .expect("device");
        let token = |h: u8, device_id, kind| NewToken {
            hash: vec![h; 32],
            device_id,
            kind,
            expires_at: 1000,
        };
        s.insert_tokens(vec![
            token(1, d1, TokenKind::Access),
            token(2, d2, TokenKind::Access),
            token(3, d2, TokenKind::Refresh),
        ])
        .await
        .expect("tokens");
        assert!(matches!(
            s.insert_tokens(vec![token(1, d2, TokenKind::Access)]).await,
            Err(StoreError::Conflict)
        ));
        s.change_password(a, "new", d1, 10).await.expect("change");
        assert_eq!(
            s.credentials_by_username("ann")
                .await
                .expect("creds")
                .expect("exists")
                .password_hash,
            "new",
            "{}",
            b.name
        );
        assert!(s
            .access_token_owner(&[1; 32], 10)
            .await
            .expect("a")
            .is_some());
        assert!(s
            .access_token_owner(&[2; 32], 10)
            .await
            .expect("a")
            .is_none());
        assert_eq!(
            s.spend_refresh_token(&[3; 32], 10).await.expect("r"),
            RefreshOutcome::Invalid
        );
        s.revoke_device(d1, 11).await.expect("revoke");
        assert!(s
            .access_token_owner(&[1; 32], 12)
            .await
            .expect("a")
            .is_none());
        s.ping().await.expect("ping");
    }
}

// --- PostgreSQL only: several nodes on one database, outages ---------------

/// Two stores (two pools: two "nodes") on one fresh PostgreSQL database;
/// `None` without PostgreSQL.
async fn two_nodes() -> Option<(Backend, Arc<PostgresStore>, Arc<PostgresStore>)> {
    let b = postgres().await?;
    let url = b.pg.as_ref().map(|(_, url)| url.clone()).expect("url");
    let one = Arc::new(PostgresStore::open(&url).await.expect("node one"));
    let two = Arc::new(PostgresStore::open(&url).await.expect("node two"));
    Some((b, one, two))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_committing_at_once_keep_seqs_gapless_and_sends_unique() {
    let Some((_pg, one, two)) = two_nodes().await else {
        return;
    };
    let s: &dyn Store = one.as_ref();
    let (a, bb, c, d) = (
        user(s, "ann").await,
        user(s, "bob").await,
        user(s, "cat").await,
        user(s, "dan").await,
    );
    let (ab, _) = s
        .get_or_create_direct(a, bb, false, 1)
        .await
        .expect("direct");
    let g = s
        .create_group(a, "g", &[bb, c], false, 1)
        .await
        .expect("group");
    let dev = s.create_device(bb, None, None, 1).await.expect("device");
    const ROUNDS: usize = 40;
    const PER: usize = 6;
    let start = Arc::new(tokio::sync::Barrier::new(2));
    let node = |store: Arc<PostgresStore>, n: usize| {
        let start = start.clone();
        tokio::spawn(async move {
            start.wait().await;
            let mut seen: Vec<(String, i64, i64, bool)> = Vec::new();
            for round in 0..ROUNDS {
                let mut ops = Vec::new();
                for k in 0..PER {
                    ops.push(append(ab, a, &format!("n{n}-{round}-{k}")));
                    ops.push(append(g, bb, &format!("n{n}-{round}-{k}")));
                }
                // The same sends through both nodes: a client resending
                // through another node while the first commit is in flight.
                ops.push(append(ab, bb, &format!("shared-{round}")));
                ops.push(append(g, c, &format!("shared-{round}")));
                ops.push(read(g, bb, (round * 3) as i64));
                ops.push(WriteOp::Delivered {
                    device_id: dev,
                    user_id: bb,
                    conversation_id: ab,
                    seq: (round * 5) as i64,
                });
                if n == 1 && round % 5 == 2 {
                    ops.insert(PER, add(g, a, &[d], 100));
                }
                if n == 1 && round % 5 == 4 {
                    ops.insert(PER, remove(g, a, d));
                }
                let out = store
                    .commit_batch(&ops, CommitRules::default())
                    .await
                    .expect("commit");
                for (op, o) in ops.iter().zip(&out) {
                    match (op, o) {
                        (WriteOp::Append(m), WriteOutcome::Appended { seq, duplicate, .. }) => seen
                            .push((m.client_msg_id.clone(), m.conversation_id, *seq, *duplicate)),
                        (WriteOp::Append(_), other) => panic!("node {n}: {other:?}"),
                        (WriteOp::Group { .. }, WriteOutcome::GroupChanged(_)) => {}
                        (WriteOp::Group { .. }, other) => panic!("node {n}: {other:?}"),
                        _ => {}
                    }
                }
            }
            seen
        })
    };
    let (r1, r2) = tokio::join!(node(one.clone(), 1), node(two.clone(), 2));
    let mut seen = r1.expect("node one");
    seen.extend(r2.expect("node two"));

    for conv in [ab, g] {
        let page = all_history(s, conv, a).await;
        let seqs: Vec<i64> = page.iter().map(|m| m.seq).collect();
        assert_eq!(seqs, (1..=page.len() as i64).collect::<Vec<_>>(), "gapless");
        let mut keys: Vec<(i64, String)> = page
            .iter()
            .map(|m| (m.sender_id, m.client_msg_id.clone()))
            .collect();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), page.len(), "one row per client_msg_id");
        let texts = page.iter().filter(|m| m.kind == MessageKind::Text).count();
        assert_eq!(texts, ROUNDS * (2 * PER + 1), "every send stored once");
        assert_eq!(view(s, conv, a).await.last_seq, page.len() as i64);
        // What each node was told matches what is stored.
        let stored: HashMap<&str, i64> = page
            .iter()
            .map(|m| (m.client_msg_id.as_str(), m.seq))
            .collect();
        for (id, c, seq, _) in seen.iter().filter(|x| x.1 == conv) {
            assert_eq!(stored.get(id.as_str()), Some(seq), "{id} in {c}");
        }
    }
    for round in 0..ROUNDS {
        for conv in [ab, g] {
            let id = format!("shared-{round}");
            let answers: Vec<&(String, i64, i64, bool)> =
                seen.iter().filter(|x| x.0 == id && x.1 == conv).collect();
            assert_eq!(answers.len(), 2);
            assert_eq!(answers[0].2, answers[1].2, "both nodes report one seq");
            assert_eq!(
                answers.iter().filter(|x| !x.3).count(),
                1,
                "exactly one of them is the original"
            );
        }
    }
    assert!(s.delivered_seq(dev, ab).await.expect("delivered") > 0);
    two.close().await;
    one.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_racing_on_pairs_and_tokens_agree() {
    let Some((_pg, one, two)) = two_nodes().await else {
        return;
    };
    let s: &dyn Store = one.as_ref();
    for i in 0..15 {
        let u = user(s, &format!("u{i}")).await;
        let v = user(s, &format!("v{i}")).await;
        // The same direct conversation made through both nodes at once.
        let (x, y) = tokio::join!(
            one.get_or_create_direct(u, v, false, 1),
            two.get_or_create_direct(v, u, false, 1)
        );
        let (x, y) = (x.expect("direct"), y.expect("direct"));
        assert_eq!(x.0, y.0, "one conversation");
        assert!(x.1 ^ y.1, "made once: {x:?} {y:?}");
        assert_eq!(two.member_ids(x.0).await.expect("ids").len(), 2);

        // Crossing friend requests through two nodes: friends, nothing pending.
        let (x, y) = tokio::join!(
            one.send_friend_request(u, v, None, 10, 2),
            two.send_friend_request(v, u, None, 10, 2)
        );
        let accepted = [x.expect("request"), y.expect("request")]
            .iter()
            .filter(|o| matches!(o, FriendRequestOutcome::Accepted { .. }))
            .count();
        assert_eq!(accepted, 1, "one request, answered by the other");
        assert_eq!(s.friend_ids(u).await.expect("ids"), vec![v]);
        assert!(s.friend_requests(u, true).await.expect("in").is_empty());
        assert!(s.friend_requests(v, true).await.expect("in").is_empty());

        // A refresh token spent through both nodes at once: one wins, the
        // other is a replay.
        let dev = s.create_device(u, None, None, 1).await.expect("device");
        let hash = vec![i as u8; 32];
        s.insert_tokens(vec![NewToken {
            hash: hash.clone(),
            device_id: dev,
            kind: TokenKind::Refresh,
            expires_at: 1000,
        }])
        .await
        .expect("token");
        let (x, y) = tokio::join!(
            one.spend_refresh_token(&hash, 5),
            two.spend_refresh_token(&hash, 5)
        );
        let mut got = [x.expect("spend"), y.expect("spend")];
        got.sort_by_key(|o| matches!(o, RefreshOutcome::Reused(_)));
        let owner = TokenOwner {
            user_id: u,
            device_id: dev,
        };
        assert_eq!(
            got,
            [RefreshOutcome::Fresh(owner), RefreshOutcome::Reused(owner)]
        );
    }
}

#[tokio::test]
async fn an_outage_is_unavailable_and_committed_data_survives_it() {
    let Some(mut pg) = Postgres::start_or_skip().await else {
        return;
    };
    // A short acquire timeout: during the outage every call waits that long.
    let store = PostgresStore::open_with(&pg.url(), 4, std::time::Duration::from_secs(1))
        .await
        .expect("open");
    let s: Arc<dyn Store> = Arc::new(store);
    let (a, bb) = (user(s.as_ref(), "ann").await, user(s.as_ref(), "bob").await);
    let (ab, _) = s
        .get_or_create_direct(a, bb, false, 1)
        .await
        .expect("direct");
    commit(s.as_ref(), &[append(ab, a, "before")]).await;
    pg.stop().await;
    assert!(
        matches!(s.ping().await, Err(StoreError::Unavailable(_))),
        "down"
    );
    assert!(matches!(
        s.commit_batch(&[append(ab, a, "during")], CommitRules::default())
            .await,
        Err(StoreError::Unavailable(_))
    ));
    pg.start_again().await.expect("start again");
    s.ping().await.expect("back");
    let out = commit(
        s.as_ref(),
        &[append(ab, a, "during"), append(ab, a, "before")],
    )
    .await;
    assert_eq!(seq_of(&out[0]), (2, false), "the failed batch burnt no seq");
    assert_eq!(seq_of(&out[1]), (1, true));
}

// --- media ----------------------------------------------------------------

fn media_record(id: &str, owner: i64, size: i64) -> MediaRecord {
    MediaRecord {
        id: id.into(),
        owner_id: owner,
        sha256: format!("{id:0>64}"),
        size,
        mime: "image/png".into(),
        kind: MediaKind::Image,
        width: Some(4),
        height: Some(3),
        duration_ms: None,
        thumbnail: false,
        created_at: 5,
    }
}

fn media_message(conv: i64, sender: i64, id: &str, media_id: &str) -> WriteOp {
    WriteOp::Append(NewMessage {
        conversation_id: conv,
        sender_id: sender,
        client_msg_id: id.into(),
        kind: MessageKind::Image,
        body: format!(r#"{{"media_id":"{media_id}","width":4,"height":3}}"#),
        ts: 10,
        mentions: Vec::new(),
    })
}

#[tokio::test]
async fn media_records_quotas_and_access() {
    for b in backends().await {
        let s = b.store.as_ref();
        let (a, bb, c, d) = (
            user(s, "ann").await,
            user(s, "bob").await,
            user(s, "cat").await,
            user(s, "dan").await,
        );
        // Records and quota (the quota counts every upload of the owner).
        let m1 = media_record("m1", a, 600);
        assert_eq!(
            s.insert_media(&m1, 1000).await.expect("insert"),
            MediaInsert::Stored
        );
        assert_eq!(
            s.insert_media(&media_record("m2", a, 500), 1000)
                .await
                .expect("insert"),
            MediaInsert::OverQuota { used: 600 },
            "{}",
            b.name
        );
        assert_eq!(s.media_usage(a).await.expect("usage"), 600);
        assert_eq!(s.media_usage(bb).await.expect("usage"), 0);
        assert_eq!(s.media("m1").await.expect("media"), Some(m1.clone()));
        assert_eq!(s.media("m2").await.expect("media"), None);
        s.set_media_thumbnail("m1").await.expect("thumb");
        assert!(s.media("m1").await.expect("media").expect("m1").thumbnail);

        // Only the uploader until a message references it.
        let g = s
            .create_group(a, "g", &[bb, c], false, 1)
            .await
            .expect("group");
        for (who, can) in [(a, true), (bb, false), (c, false), (d, false)] {
            assert_eq!(s.can_read_media("m1", who).await.expect("can"), can);
        }
        // cat is kicked, then the image is shared, then dan joins.
        commit(s, &[remove(g, a, c)]).await;
        let out = commit(s, &[media_message(g, a, "img", "m1")]).await;
        let (seq, _) = seq_of(&out[0]);
        // A resend stores nothing twice.
        commit(s, &[media_message(g, a, "img", "m1")]).await;
        commit(s, &[add(g, a, &[d], 10)]).await;
        for (who, can) in [(a, true), (bb, true), (c, false), (d, false)] {
            assert_eq!(
                s.can_read_media("m1", who).await.expect("can"),
                can,
                "{} user {who} seq {seq}",
                b.name
            );
        }
        assert!(!s.can_read_media("nope", a).await.expect("can"));
        // Leaving ends access through that conversation.
        commit(s, &[remove(g, bb, bb)]).await;
        assert!(!s.can_read_media("m1", bb).await.expect("can"));
    }
}

// --- message changes and search ----------------------------------------------

fn change(change: MessageChange) -> WriteOp {
    WriteOp::Message { change, ts: 30 }
}

fn edit(conversation_id: i64, seq: i64, by: i64, body: serde_json::Value) -> WriteOp {
    change(MessageChange::Edit {
        conversation_id,
        seq,
        by,
        body,
    })
}

fn delete(conversation_id: i64, seq: i64, by: i64) -> WriteOp {
    change(MessageChange::Delete {
        conversation_id,
        seq,
        by,
    })
}

fn react(conversation_id: i64, seq: i64, by: i64, emoji: &str, on: bool) -> WriteOp {
    change(MessageChange::React {
        conversation_id,
        seq,
        by,
        emoji: emoji.into(),
        on,
    })
}

fn text(conv: i64, sender: i64, id: &str, body: serde_json::Value) -> WriteOp {
    WriteOp::Append(NewMessage {
        conversation_id: conv,
        sender_id: sender,
        client_msg_id: id.into(),
        kind: MessageKind::Text,
        body: body.to_string(),
        ts: 10,
        mentions: Vec::new(),
    })
}

fn message_changed(o: &WriteOutcome) -> &MessageChangeOutcome {
    match o {
        WriteOutcome::MessageChanged(done) => done,
        other => panic!("expected a message change, got {other:?}"),
    }
}

/// Waits (up to 10 s) until the background indexer has indexed every
/// committed change: search is eventually consistent, off the ack path.
async fn indexed(store: &dyn Store) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        if store.search_backlog().await.expect("backlog") == 0 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the search indexer did not catch up in 10 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

/// Searches once the index has caught up with every commit.
async fn find(store: &dyn Store, user: i64, q: &str) -> Vec<SearchHit> {
    indexed(store).await;
    let query = SearchQuery {
        q: q.into(),
        limit: 50,
        ..Default::default()
    };
    store.search_messages(user, &query).await.expect("search").0
}

fn seqs(hits: &[SearchHit]) -> Vec<(i64, i64)> {
    hits.iter()
        .map(|h| (h.message.conversation_id, h.message.seq))
        .collect()
}

#[tokio::test]
async fn message_changes_take_their_place_and_show_current_state() {
    use serde_json::json;
    for b in backends().await {
        let s = b.store.as_ref();
        let name = b.name;
        let (a, bb, c) = (
            user(s, "ann").await,
            user(s, "bob").await,
            user(s, "cat").await,
        );
        let g = s
            .create_group(a, "g", &[bb, c], false, 1)
            .await
            .expect("group");
        let base = view(s, g, a).await.last_seq;
        let out = commit(
            s,
            &[
                text(g, a, "m1", json!({"text": "hello"})),
                text(g, bb, "m2", json!({"text": "hi", "reply_to": base + 1})),
            ],
        )
        .await;
        let (m1, _) = seq_of(&out[0]);
        let (m2, _) = seq_of(&out[1]);

        // Edits: the author only; reply_to stays; a notice takes the next seq.
        let out = commit(
            s,
            &[
                edit(g, m2, a, json!({"text": "not mine"})),
                edit(g, m2, bb, json!({"text": "hi there", "reply_to": 99})),
                edit(g, m2, bb, json!({"caption": "no text"})),
            ],
        )
        .await;
        assert_eq!(rejected(&out[0]), ErrorCode::Forbidden, "{name}");
        let done = message_changed(&out[1]);
        let n = done.notice.as_ref().expect("notice");
        assert_eq!(n.seq, m2 + 1, "{name}");
        assert_eq!(n.sender_id, bb);
        assert_eq!(event(n), "message_edited");
        assert_eq!(n.body["target_seq"], m2);
        assert_eq!(n.client_msg_id, format!("system/{g}/{}", n.seq));
        assert_eq!(
            done.target.body,
            json!({"text": "hi there", "reply_to": base + 1})
        );
        assert_eq!(done.target.edited_at, Some(30));
        assert_eq!(&*done.viewers, &[a, bb, c][..]);
        assert_eq!(rejected(&out[2]), ErrorCode::BadRequest, "{name}");

        // Reactions: one per user, a new one replaces the old, off is idempotent.
        let out = commit(
            s,
            &[
                react(g, m1, bb, "👍", true),
                react(g, m1, bb, "❤️", true),
                react(g, m1, c, "❤️", true),
                react(g, m1, c, "❤️", true),
                react(g, m1, bb, "👍", false),
                react(g, base, a, "👍", true),
            ],
        )
        .await;
        let r = &message_changed(&out[1]).notice.as_ref().expect("n").body;
        assert_eq!(r["event"], "reaction_changed", "{name}");
        assert_eq!(r["emoji"], "❤️");
        assert_eq!(r["previous"], "👍");
        assert!(message_changed(&out[3]).notice.is_none(), "already on");
        assert!(message_changed(&out[4]).notice.is_none(), "not bob's");
        assert_eq!(rejected(&out[5]), ErrorCode::BadRequest, "a system message");
        let hist = all_history(s, g, c).await;
        let first = hist.iter().find(|m| m.seq == m1).expect("m1");
        let mut want = std::collections::BTreeMap::new();
        want.insert("❤️".to_string(), vec![bb, c]);
        assert_eq!(first.reactions, want, "{name}");
        let second = hist.iter().find(|m| m.seq == m2).expect("m2");
        assert_eq!(second.body["text"], "hi there");
        assert_eq!(second.edited_at, Some(30));
        let last = hist.last().expect("notices");
        assert_eq!(event(last), "reaction_changed");

        // Deletion: the author or an owner/admin, not another member.
        let out = commit(
            s,
            &[
                delete(g, m1, c),
                set_role(g, a, c, Role::Admin),
                delete(g, m2, c),
                delete(g, m2, c),
                edit(g, m2, bb, json!({"text": "too late"})),
                react(g, m2, a, "👍", true),
            ],
        )
        .await;
        assert_eq!(rejected(&out[0]), ErrorCode::Forbidden, "{name}");
        let done = message_changed(&out[2]);
        assert_eq!(event(done.notice.as_ref().expect("n")), "message_deleted");
        assert!(done.target.deleted);
        assert!(message_changed(&out[3]).notice.is_none(), "already deleted");
        assert_eq!(rejected(&out[4]), ErrorCode::NotFound);
        assert_eq!(rejected(&out[5]), ErrorCode::NotFound);
        let out = commit(s, &[delete(g, m1, a)]).await;
        assert!(message_changed(&out[0]).notice.is_some());

        // Sync shows the current state too.
        let batches = s
            .sync(
                bb,
                &HashMap::new(),
                SyncLimits {
                    per_conversation: 100,
                    total: 100,
                },
            )
            .await
            .expect("sync");
        let msgs = &batches
            .iter()
            .find(|x| x.conversation_id == g)
            .expect("g")
            .messages;
        let gone = msgs.iter().find(|m| m.seq == m1).expect("m1");
        assert!(gone.deleted, "{name}");
        assert_eq!(gone.body, json!({}));
        assert!(gone.reactions.is_empty());
        let wire = serde_json::to_value(gone).expect("json");
        assert_eq!(wire["deleted"], true);
        assert!(wire.get("reactions").is_none());
        assert!(
            s.message_for(g, c, m1)
                .await
                .expect("read")
                .expect("m")
                .deleted
        );

        // Direct chats: no admins; a former member is refused.
        let (d, _) = s
            .get_or_create_direct(a, bb, false, 1)
            .await
            .expect("direct");
        let out = commit(s, &[text(d, a, "d1", json!({"text": "x"}))]).await;
        let (d1, _) = seq_of(&out[0]);
        let out = commit(
            s,
            &[
                delete(d, d1, bb),
                remove(g, bb, bb),
                react(g, m2 - 1, bb, "👍", true),
            ],
        )
        .await;
        assert_eq!(rejected(&out[0]), ErrorCode::Forbidden, "{name}");
        assert_eq!(rejected(&out[2]), ErrorCode::Forbidden, "{name}");
        assert!(s.message_for(g, bb, m1).await.expect("read").is_none());
    }
}

#[tokio::test]
async fn search_ranks_marks_and_keeps_to_what_the_caller_can_read() {
    use serde_json::json;
    for b in backends().await {
        let s = b.store.as_ref();
        let name = b.name;
        let (a, bb, c, d) = (
            user(s, "ann").await,
            user(s, "bob").await,
            user(s, "cat").await,
            user(s, "dan").await,
        );
        let g = s
            .create_group(a, "g", &[bb, c], false, 1)
            .await
            .expect("group");
        let (ad, _) = s
            .get_or_create_direct(a, d, false, 1)
            .await
            .expect("direct");
        let out = commit(
            s,
            &[
                text(
                    g,
                    a,
                    "s1",
                    json!({"text": "the quick brown fox rests under a tree all day long"}),
                ),
                text(g, bb, "s2", json!({"text": "fox fox fox"})),
                text(g, a, "s3", json!({"text": "<b>fox</b> & \"co\" \u{2}x"})),
                text(g, c, "s4", json!({"text": "nothing to see"})),
                text(ad, d, "s5", json!({"text": "a fox in private"})),
            ],
        )
        .await;
        let sq: Vec<i64> = out.iter().map(|o| seq_of(o).0).collect();

        // Ranked: the message that is all fox comes first.
        let hits = find(s, a, "fox").await;
        assert_eq!(hits.len(), 4, "{name}: {:?}", seqs(&hits));
        assert_eq!(seqs(&hits)[0], (g, sq[1]), "{name}");
        assert!(
            hits[0].snippet.contains("<mark>fox</mark>"),
            "{name}: {}",
            hits[0].snippet
        );
        let odd = hits
            .iter()
            .find(|h| h.message.seq == sq[2] && h.message.conversation_id == g)
            .expect("s3");
        assert!(
            odd.snippet.contains("<mark>fox</mark>"),
            "{name}: {}",
            odd.snippet
        );
        assert!(odd.snippet.contains("&amp;"), "{name}: {}", odd.snippet);
        assert!(
            odd.snippet.contains("&quot;co&quot;"),
            "{name}: {}",
            odd.snippet
        );
        assert!(!odd.snippet.contains("<b>"), "{name}: {}", odd.snippet);
        assert!(!odd.snippet.contains('\u{2}'), "{name}");
        assert!(
            !odd.snippet
                .replace("<mark>", "")
                .replace("</mark>", "")
                .contains('<'),
            "{name}: {}",
            odd.snippet
        );

        // Bob sees no direct chat of ann's; phrases, exclusions, filters.
        assert_eq!(find(s, bb, "fox").await.len(), 3, "{name}");
        assert_eq!(
            seqs(&find(s, a, "\"brown fox\"").await),
            vec![(g, sq[0])],
            "{name}"
        );
        assert_eq!(find(s, a, "fox -quick").await.len(), 3, "{name}");
        assert!(find(s, a, "-fox").await.is_empty());
        assert!(find(s, a, "\"").await.is_empty());
        let only = |conversation_id, sender_id| SearchQuery {
            q: "fox".into(),
            conversation_id,
            sender_id,
            limit: 50,
            ..Default::default()
        };
        indexed(s).await;
        let (h, _) = s
            .search_messages(a, &only(Some(ad), None))
            .await
            .expect("s");
        assert_eq!(seqs(&h), vec![(ad, sq[4])], "{name}");
        let (h, _) = s
            .search_messages(a, &only(None, Some(bb)))
            .await
            .expect("s");
        assert_eq!(seqs(&h), vec![(g, sq[1])], "{name}");
        let mut q = only(None, None);
        q.after = Some(10);
        assert!(s.search_messages(a, &q).await.expect("s").0.is_empty());
        q.after = Some(9);
        q.before = Some(11);
        assert_eq!(s.search_messages(a, &q).await.expect("s").0.len(), 4);

        // Pages.
        let mut q = only(None, None);
        q.limit = 3;
        let (p1, more) = s.search_messages(a, &q).await.expect("s");
        assert!(more, "{name}");
        q.offset = 3;
        let (p2, more) = s.search_messages(a, &q).await.expect("s");
        assert!(!more);
        let mut all = seqs(&p1);
        all.extend(seqs(&p2));
        assert_eq!(all, seqs(&find(s, a, "fox").await), "{name}");

        // Edits re-index; deletions vanish.
        commit(
            s,
            &[
                edit(g, sq[0], a, json!({"text": "the quick brown cat"})),
                delete(g, sq[1], bb),
            ],
        )
        .await;
        assert_eq!(seqs(&find(s, a, "fox").await).len(), 2, "{name}");
        assert_eq!(seqs(&find(s, a, "cat").await), vec![(g, sq[0])], "{name}");

        // A newcomer finds nothing from before they joined; a leaver
        // finds nothing in the group at all.
        commit(s, &[add(g, a, &[d], 10), remove(g, bb, bb)]).await;
        let out = commit(s, &[text(g, c, "s6", json!({"text": "late fox"}))]).await;
        let late = seq_of(&out[0]).0;
        let dh = find(s, d, "fox").await;
        assert_eq!(seqs(&dh), vec![(g, late), (ad, sq[4])], "{name}");
        assert!(find(s, bb, "fox").await.is_empty(), "{name}");
        assert!(find(s, bb, "cat").await.is_empty(), "{name}");
    }
}

#[tokio::test]
async fn captions_are_edited_searched_and_deleted_media_is_unreachable() {
    use serde_json::json;
    for b in backends().await {
        let s = b.store.as_ref();
        let name = b.name;
        let (a, bb) = (user(s, "ann").await, user(s, "bob").await);
        let (d, _) = s
            .get_or_create_direct(a, bb, false, 1)
            .await
            .expect("direct");
        let image = WriteOp::Append(NewMessage {
            conversation_id: d,
            sender_id: a,
            client_msg_id: "img".into(),
            kind: MessageKind::Image,
            body: json!({"media_id": "pic1", "width": 1, "height": 1, "caption": "sunset beach"})
                .to_string(),
            ts: 10,
            mentions: Vec::new(),
        });
        let (seq, _) = seq_of(&commit(s, &[image]).await[0]);
        assert_eq!(seqs(&find(s, bb, "sunset").await), vec![(d, seq)], "{name}");
        assert!(s.can_read_media("pic1", bb).await.expect("read"), "{name}");

        let out = commit(
            s,
            &[
                edit(d, seq, a, json!({"text": "not a caption"})),
                edit(d, seq, a, json!({"caption": "harbour at night"})),
            ],
        )
        .await;
        assert_eq!(rejected(&out[0]), ErrorCode::BadRequest, "{name}");
        let body = &message_changed(&out[1]).target.body;
        assert_eq!(body["caption"], "harbour at night");
        assert_eq!(body["media_id"], "pic1", "the media stays");
        assert!(find(s, bb, "sunset").await.is_empty(), "{name}");
        assert_eq!(find(s, bb, "harbour").await.len(), 1, "{name}");

        let out = commit(s, &[edit(d, seq, a, json!({})), delete(d, seq, a)]).await;
        assert!(message_changed(&out[0])
            .target
            .body
            .get("caption")
            .is_none());
        assert!(message_changed(&out[1]).target.deleted);
        assert!(find(s, bb, "harbour").await.is_empty(), "{name}");
        assert!(
            !s.can_read_media("pic1", bb).await.expect("read"),
            "{name}: no longer reachable through the deleted message"
        );
    }
}

#[tokio::test]
async fn search_finds_words_inside_chinese_japanese_korean_and_mixed_text() {
    use serde_json::json;
    for b in backends().await {
        let s = b.store.as_ref();
        let name = b.name;
        let (a, bb) = (user(s, "ann").await, user(s, "bob").await);
        let (d, _) = s
            .get_or_create_direct(a, bb, false, 1)
            .await
            .expect("direct");
        let texts = [
            "我们明天下午开会讨论分布式系统",
            "今天开会，明天开会，后天还开会",
            "明日の会議で検索機能について話します",
            "コンピュータが壊れました",
            "내일 오후에 회의가 있습니다",
            "明天的meeting很重要 with searching",
            "Searchable café notes",
            "升级以后的新消息",
        ];
        let ops: Vec<WriteOp> = texts
            .iter()
            .enumerate()
            .map(|(i, t)| text(d, a, &format!("c{i}"), json!({ "text": t })))
            .collect();
        let sq: Vec<i64> = commit(s, &ops).await.iter().map(|o| seq_of(o).0).collect();
        let found = |hits: Vec<SearchHit>| {
            let mut v: Vec<usize> = hits
                .iter()
                .map(|h| sq.iter().position(|&x| x == h.message.seq).expect("ours"))
                .collect();
            v.sort_unstable();
            v
        };
        let cases: &[(&str, &[usize])] = &[
            ("开会", &[0, 1]),
            ("分布式", &[0]),
            ("系统", &[0]),
            ("分布式系统", &[0]),
            ("开会 系统", &[0]),
            ("开会 -系统", &[1]),
            ("会議", &[2]),
            ("検索", &[2]),
            ("コンピュータ", &[3]),
            ("ピュー", &[3]),
            ("회의", &[4]),
            ("오후", &[4]),
            ("meeting", &[5]),
            ("meet 重要", &[5]),
            ("search", &[5, 6]),
            ("\"search\"", &[]),
            ("CAFE", &[6]),
            ("还", &[1]),
            // jieba leaves 的 and 新 as single characters side by side in
            // the text, but reads 新消息 as one word in the query.
            ("新消息", &[7]),
            ("消息", &[7]),
            ("的", &[5, 7]),
            // Across jieba's word boundaries (分布式|系统, 讨论|分布式).
            ("式系", &[0]),
            ("论分布", &[0]),
            ("以后的新", &[7]),
        ];
        for (q, want) in cases {
            assert_eq!(found(find(s, bb, q).await), *want, "{name}: {q}");
        }
        // Ranked: three meetings before one; the hit is marked.
        let hits = find(s, bb, "开会").await;
        assert_eq!(hits[0].message.seq, sq[1], "{name}");
        assert_eq!(
            hits[1].snippet, "我们明天下午<mark>开会</mark>讨论分布式系统",
            "{name}"
        );
        let hits = find(s, bb, "회의").await;
        assert_eq!(
            hits[0].snippet, "내일 오후에 <mark>회의</mark>가 있습니다",
            "{name}"
        );
        let hits = find(s, bb, "search").await;
        let mixed = hits.iter().find(|h| h.message.seq == sq[5]).expect("mixed");
        assert_eq!(
            mixed.snippet, "明天的meeting很重要 with <mark>searching</mark>",
            "{name}"
        );
    }
}

/// Whether the background indexer, by itself (no search waits for it),
/// takes in everything committed within `limit`, and `q` then finds `want`.
async fn found_within(
    store: &dyn Store,
    user: i64,
    q: &str,
    want: (i64, i64),
    limit: std::time::Duration,
) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while store.search_backlog().await.expect("backlog") > 0 {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    seqs(&find(store, user, q).await).contains(&want)
}

#[tokio::test]
async fn search_index_follows_commits_edits_deletions_and_rebuilds_alike() {
    use serde_json::json;
    for b in backends().await {
        let s = b.store.as_ref();
        let name = b.name;
        let (a, bb, c, out) = (
            user(s, "ann").await,
            user(s, "bob").await,
            user(s, "cat").await,
            user(s, "olga").await,
        );
        let g = s
            .create_group(a, "g", &[bb, c], false, 1)
            .await
            .expect("group");
        // Searchable within a second of the ack.
        let sent = commit(
            s,
            &[text(g, a, "x1", json!({"text": "讨论分布式系统 deadline"}))],
        )
        .await;
        let s1 = seq_of(&sent[0]).0;
        assert!(
            found_within(s, bb, "分布式", (g, s1), std::time::Duration::from_secs(1)).await,
            "{name}: not searchable within 1 s of its ack"
        );
        // Edited: found by the new text only; deleted: not found.
        let sent = commit(
            s,
            &[
                text(g, bb, "x2", json!({"text": "旧的文字 oldword"})),
                text(g, c, "x3", json!({"text": "要删除的消息 doomed"})),
            ],
        )
        .await;
        let (s2, s3) = (seq_of(&sent[0]).0, seq_of(&sent[1]).0);
        indexed(s).await;
        commit(
            s,
            &[
                edit(g, s2, bb, json!({"text": "新的内容 newword"})),
                delete(g, s3, c),
            ],
        )
        .await;
        assert_eq!(seqs(&find(s, a, "newword").await), vec![(g, s2)], "{name}");
        assert_eq!(seqs(&find(s, a, "内容").await), vec![(g, s2)], "{name}");
        assert!(find(s, a, "oldword").await.is_empty(), "{name}");
        assert!(find(s, a, "doomed").await.is_empty(), "{name}");
        assert!(find(s, a, "删除").await.is_empty(), "{name}");

        // Access: an outsider, a kicked member, messages before a join.
        assert!(find(s, out, "分布式").await.is_empty(), "{name}");
        commit(s, &[remove(g, a, c)]).await;
        assert!(find(s, c, "分布式").await.is_empty(), "{name}: kicked");
        assert!(find(s, c, "newword").await.is_empty(), "{name}: kicked");
        commit(s, &[add(g, a, &[out], 10)]).await;
        let sent = commit(
            s,
            &[text(g, a, "x4", json!({"text": "欢迎 分布式 newcomer"}))],
        )
        .await;
        let s4 = seq_of(&sent[0]).0;
        assert_eq!(seqs(&find(s, out, "分布式").await), vec![(g, s4)], "{name}");
        assert!(find(s, out, "newword").await.is_empty(), "{name}");

        // Rebuilt from the messages table: the same hits.
        let queries = ["分布式", "newword", "oldword", "doomed", "deadline", "欢迎"];
        let mut before = Vec::new();
        for q in queries {
            before.push(seqs(&find(s, a, q).await));
        }
        s.rebuild_search_index().await.expect("rebuild");
        let mut after = Vec::new();
        for q in queries {
            after.push(seqs(&find(s, a, q).await));
        }
        assert_eq!(before, after, "{name}");
        assert_eq!(before[0].len(), 2, "{name}");
    }
}

// --- end-to-end encryption (MLS delivery service) ---------------------------

fn mls(conv: i64, sender: i64, id: &str, kind: &str, epoch: u64) -> WriteOp {
    WriteOp::Append(NewMessage {
        conversation_id: conv,
        sender_id: sender,
        client_msg_id: id.into(),
        kind: MessageKind::Encrypted,
        body: format!(r#"{{"ciphertext":"AAAA","mls":"{kind}","epoch":{epoch}}}"#),
        ts: 10,
        mentions: Vec::new(),
    })
}

#[tokio::test]
async fn encrypted_conversations_order_commits_by_epoch() {
    for b in backends().await {
        let s = b.store.as_ref();
        let (a, bb) = (user(s, "ann").await, user(s, "bob").await);
        let conv = s
            .create_group(a, "e2ee", &[bb], true, 1)
            .await
            .expect("group");
        let (direct, made) = s
            .get_or_create_direct(a, bb, true, 1)
            .await
            .expect("direct");
        assert!(made);
        let (plain, _) = s
            .get_or_create_direct(a, bb, false, 1)
            .await
            .expect("plain");
        assert_ne!(plain, direct, "{}: an encrypted direct is its own", b.name);
        assert_eq!(
            s.conversation_encrypted(direct).await.expect("enc"),
            Some(true)
        );
        assert_eq!(
            s.conversation_encrypted(plain).await.expect("enc"),
            Some(false)
        );
        assert_eq!(view(s, conv, a).await.mls_epoch, Some(0));
        assert!(view(s, conv, a).await.encrypted);
        assert_eq!(view(s, plain, a).await.mls_epoch, None);

        // In one batch: two commits for epoch 0 (the first wins), an
        // application message at the new epoch, one at the old, a plain
        // text, and a resend of the winner (its original seq).
        let out = commit(
            s,
            &[
                mls(conv, a, "c1", "commit", 0),
                mls(conv, bb, "c2", "commit", 0),
                mls(conv, bb, "m1", "application", 1),
                mls(conv, a, "m0", "application", 0),
                append(conv, a, "plain"),
            ],
        )
        .await;
        let first = seq_of(&out[0]);
        assert_eq!(rejected(&out[1]), ErrorCode::EpochConflict, "{}", b.name);
        assert_eq!(seq_of(&out[2]).0, first.0 + 1, "{}", b.name);
        assert_eq!(rejected(&out[3]), ErrorCode::EpochConflict, "{}", b.name);
        assert_eq!(
            rejected(&out[4]),
            ErrorCode::EncryptionRequired,
            "{}",
            b.name
        );
        assert_eq!(view(s, conv, a).await.mls_epoch, Some(1), "{}", b.name);
        let again = commit(s, &[mls(conv, a, "c1", "commit", 0)]).await;
        assert_eq!(seq_of(&again[0]), (first.0, true), "{}", b.name);
        // The next batch sees the new epoch.
        let next = commit(s, &[mls(conv, bb, "c3", "commit", 1)]).await;
        assert!(!seq_of(&next[0]).1);
        assert_eq!(view(s, conv, a).await.mls_epoch, Some(2), "{}", b.name);
        // Plain conversations keep taking anything.
        let out = commit(s, &[mls(plain, a, "x", "commit", 7), append(plain, a, "t")]).await;
        assert!(matches!(out[0], WriteOutcome::Appended { .. }));
        assert!(matches!(out[1], WriteOutcome::Appended { .. }));
    }
}

#[tokio::test]
async fn key_packages_are_claimed_once_and_the_last_resort_is_kept() {
    for b in backends().await {
        let s = b.store.as_ref();
        let ann = user(s, "ann").await;
        let d1 = s.create_device(ann, None, None, 1).await.expect("device");
        let d2 = s
            .create_device(ann, None, Some("key".into()), 1)
            .await
            .expect("device");
        assert_eq!(
            s.pin_device_key(d1, "k1").await.expect("pin").as_deref(),
            Some("k1")
        );
        assert_eq!(
            s.pin_device_key(d1, "k2").await.expect("pin").as_deref(),
            Some("k1"),
            "{}: the first key stays",
            b.name
        );
        assert_eq!(
            s.pin_device_key(d2, "k3").await.expect("pin").as_deref(),
            Some("key")
        );
        let stock = s
            .add_key_packages(
                d1,
                vec![b"p1".to_vec(), b"p2".to_vec()],
                Some(b"lr".to_vec()),
                3,
                1,
            )
            .await
            .expect("add")
            .expect("room");
        assert_eq!((stock.stock, stock.last_resort), (2, true));
        assert!(
            s.add_key_packages(d1, vec![b"p3".to_vec(), b"p4".to_vec()], None, 3, 1)
                .await
                .expect("add")
                .is_none(),
            "{}: over the limit",
            b.name
        );
        let claim = |only: Option<Vec<i64>>| async move {
            s.claim_key_packages(ann, only.as_deref())
                .await
                .expect("claim")
        };
        assert_eq!(claim(None).await, vec![(d1, b"p1".to_vec())], "{}", b.name);
        assert_eq!(claim(Some(vec![d1])).await, vec![(d1, b"p2".to_vec())]);
        assert_eq!(claim(None).await, vec![(d1, b"lr".to_vec())]);
        assert_eq!(claim(None).await, vec![(d1, b"lr".to_vec())], "kept");
        assert_eq!(claim(Some(vec![d2])).await, vec![]);
        let stock = s.key_package_stock(d1).await.expect("stock");
        assert_eq!((stock.stock, stock.last_resort), (0, true));
        let devices = s.live_devices(ann).await.expect("devices");
        assert_eq!(devices.len(), 2);
        s.revoke_device(d1, 2).await.expect("revoke");
        assert_eq!(
            claim(None).await,
            vec![],
            "{}: revoked devices give none",
            b.name
        );
        assert_eq!(s.live_devices(ann).await.expect("devices").len(), 1);
        // Devices of members, for Welcome recipients.
        let bob = user(s, "bob").await;
        let db = s.create_device(bob, None, None, 1).await.expect("device");
        let conv = s.create_group(ann, "g", &[], true, 1).await.expect("g");
        let found = s
            .member_devices(conv, &[d1, d2, db])
            .await
            .expect("devices");
        assert_eq!(found, vec![d2], "{}", b.name);
    }
}

/// The WAL's checkpoint sequence number (bytes 12..16 of its header): SQLite
/// adds one each time the WAL starts over from its beginning.
fn wal_restarts(wal: &std::path::Path) -> u32 {
    let head = std::fs::read(wal).expect("read the wal");
    u32::from_be_bytes(head[12..16].try_into().expect("a wal header"))
}

#[tokio::test]
async fn the_sqlite_wal_starts_over_while_writes_never_pause() {
    // Under steady writes the background checkpoint never catches up with
    // the writer on its own; the writer thread finishes it between commits
    // so the WAL starts over instead of growing for as long as the load
    // lasts.
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(&dir.path().join("confab.db"))
        .await
        .expect("open sqlite");
    let s: &dyn Store = &store;
    let (ann, bob) = (user(s, "ann").await, user(s, "bob").await);
    let (conv, _) = s
        .get_or_create_direct(ann, bob, false, 1)
        .await
        .expect("direct");
    let wal = dir.path().join("confab.db-wal");
    let text = "长".repeat(600);
    let mut sent = 0u64;
    let mut first = None;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let restarted = loop {
        let ops: Vec<WriteOp> = (0..16)
            .map(|i| {
                let mut op = append(conv, ann, &format!("m{sent}-{i}"));
                if let WriteOp::Append(m) = &mut op {
                    m.body = format!(r#"{{"text":"{text}"}}"#);
                }
                op
            })
            .collect();
        commit(s, &ops).await;
        sent += 1;
        let now = wal_restarts(&wal);
        let base = *first.get_or_insert(now);
        if now >= base + 2 {
            break true;
        }
        if std::time::Instant::now() > deadline {
            break false;
        }
    };
    assert!(
        restarted,
        "the WAL never started over in {sent} back-to-back commits ({} bytes)",
        std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0)
    );
    // Nothing was lost on the way.
    let history = all_history(s, conv, bob).await;
    assert_eq!(history.len() as u64, sent * 16);
    store.close().await;
}

/// A database file made by the server before SQLite moved from sqlx to
/// rusqlite (all nine migrations applied and recorded by sqlx's migrator,
/// two users, a direct conversation with a Chinese and an English message,
/// both indexed) opens without migrating again, applies the migrations
/// made since, and keeps everything: accounts, history, search (indexed
/// again), and the next seq.
#[tokio::test]
async fn a_database_made_through_sqlx_opens_and_keeps_its_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("confab.db");
    std::fs::copy(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/sqlx-migrated.db"
        ),
        &path,
    )
    .expect("copy the fixture");
    let before: Vec<(i64, String)> = migrations_recorded(&path);
    assert_eq!(before.len(), 9, "{before:?}");

    let s = SqliteStore::open(&path)
        .await
        .expect("open the old database");
    let after = migrations_recorded(&path);
    assert_eq!(after[..before.len()], before[..], "nothing migrated twice");
    assert!(after.len() > before.len(), "the newer migrations applied");
    let found = s.search_users("李", 10).await.expect("users");
    assert_eq!(found.len(), 1);
    let ann = s.search_users("ann", 10).await.expect("users")[0].id;
    let (conv, made) = s
        .get_or_create_direct(ann, found[0].id, false, 3)
        .await
        .expect("direct");
    assert!(!made, "the conversation is the stored one");
    let query = HistoryQuery {
        before_seq: None,
        after_seq: None,
        limit: 10,
    };
    let (history, _) = s.history(conv, ann, query).await.expect("history");
    assert_eq!(history.len(), 2);
    assert_eq!(
        seqs(&find(&s, ann, "分布式").await),
        vec![(conv, history[0].seq)]
    );
    assert_eq!(
        seqs(&find(&s, ann, "search").await),
        vec![(conv, history[1].seq)]
    );
    // Re-indexed on upgrade: a stretch across jieba's words is found.
    assert_eq!(
        seqs(&find(&s, ann, "式系").await),
        vec![(conv, history[0].seq)]
    );
    let next = s
        .commit_batch(
            &[append(conv, ann, "after-upgrade")],
            CommitRules::default(),
        )
        .await
        .expect("commit");
    assert_eq!(seq_of(&next[0]), (history[1].seq + 1, false));
    s.close().await;
}

/// The `_sqlx_migrations` rows of the file at `path`.
fn migrations_recorded(path: &std::path::Path) -> Vec<(i64, String)> {
    let c = rusqlite::Connection::open(path).expect("open");
    let mut st = c
        .prepare("SELECT version, description FROM _sqlx_migrations WHERE success ORDER BY version")
        .expect("prepare");
    st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("query")
        .collect::<rusqlite::Result<Vec<_>>>()
        .expect("rows")
}
