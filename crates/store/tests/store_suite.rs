//! One behavioural suite for the `Store` trait, run against every backend.
//! (SQLite here; the Postgres backend joins the list in `backends()`.)

use std::collections::HashMap;
use std::sync::Arc;

use confab_proto::error::ErrorCode;
use confab_proto::MessageKind;
use confab_store::*;

struct Backend {
    name: &'static str,
    store: Arc<dyn Store>,
    _dir: tempfile::TempDir,
}

async fn backends() -> Vec<Backend> {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(&dir.path().join("confab.db"))
        .await
        .expect("open sqlite");
    vec![Backend {
        name: "sqlite",
        store: Arc::new(store),
        _dir: dir,
    }]
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

#[tokio::test]
async fn seqs_are_gapless_and_idempotent() {
    for b in backends().await {
        let s = b.store.as_ref();
        let (a, bb) = (user(s, "ann").await, user(s, "bob").await);
        let (conv, made) = s.get_or_create_direct(a, bb, 1).await.expect("direct");
        assert!(made);
        assert_eq!(
            s.get_or_create_direct(bb, a, 1).await.expect("direct"),
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
            .get_or_create_direct(users[0], users[1], 1)
            .await
            .expect("direct");
        let (bc, _) = s
            .get_or_create_direct(users[1], users[2], 1)
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
        let (conv, _) = s.get_or_create_direct(a, bb, 1).await.expect("direct");
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
        let (conv, _) = s.get_or_create_direct(a, bb, 1).await.expect("direct");
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
        let (ab, _) = s.get_or_create_direct(a, bb, 1).await.expect("direct");
        let (ac, _) = s.get_or_create_direct(a, c, 1).await.expect("direct");
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
        let (conv, _) = s.get_or_create_direct(a, bb, 1).await.expect("direct");
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
