#![allow(missing_docs)] // criterion_group! generates undocumented items
//! Group commit on SQLite: messages per second for several batch sizes
//! (each batch is one transaction and one fsync). Run with
//! `cargo bench -p confab-store --bench commit`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use confab_proto::MessageKind;
use confab_store::{CommitRules, NewMessage, NewUser, SqliteStore, Store, WriteOp};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

fn commit(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, convs) = rt.block_on(async {
        let store = SqliteStore::open(&dir.path().join("bench.db"))
            .await
            .expect("open");
        let mut users = Vec::new();
        for i in 0..64 {
            let name = format!("u{i}");
            let user = store
                .create_user(NewUser {
                    username: name.clone(),
                    username_key: name,
                    display_name: "x".into(),
                    password_hash: "x".into(),
                    now: 0,
                })
                .await
                .expect("user");
            users.push(user.id);
        }
        let mut convs = Vec::new();
        for pair in users.chunks(2) {
            let (id, _) = store
                .get_or_create_direct(pair[0], pair[1], false, 0)
                .await
                .expect("conv");
            convs.push((id, pair[0]));
        }
        (store, convs)
    });
    let counter = AtomicU64::new(0);
    let mut group = c.benchmark_group("commit_batch");
    group.measurement_time(Duration::from_secs(5));
    for size in [1usize, 16, 128, 512] {
        group.throughput(Throughput::Elements(size as u64));
        group.bench_with_input(BenchmarkId::from_parameter(size), &size, |b, &size| {
            b.iter(|| {
                let ops: Vec<WriteOp> = (0..size)
                    .map(|i| {
                        let (conversation_id, sender_id) = convs[i % convs.len()];
                        let n = counter.fetch_add(1, Ordering::Relaxed);
                        WriteOp::Append(NewMessage {
                            conversation_id,
                            sender_id,
                            client_msg_id: format!("m{n}"),
                            kind: MessageKind::Text,
                            body: r#"{"text":"a typical short chat message"}"#.into(),
                            ts: 0,
                            mentions: Vec::new(),
                        })
                    })
                    .collect();
                rt.block_on(store.commit_batch(&ops, CommitRules::default()))
                    .expect("commit")
            })
        });
    }
    group.finish();
}

criterion_group!(benches, commit);
criterion_main!(benches);
