//! End-to-end encrypted conversations (issue 14) through the SDK's MLS
//! client against the real server: KeyPackages, groups of three users with
//! two devices each (add, remove, new device, revoked device), concurrent
//! commits (first wins by seq, the loser retries), encrypted attachments,
//! what the server's database and logs contain, and a `kill -9` of the
//! server mid-conversation.

use std::path::Path;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use confab_sdk::proto::e2ee::{KeyPackageStock, UploadKeyPackagesRequest};
use confab_sdk::{
    Attachment, Client, ConversationId, E2ee, E2eeContent, E2eeMessage, ErrorCode, MessageKind,
    UserId,
};
use serde_json::json;

use crate::support::*;

/// A device with its own session dir.
struct Device {
    e2ee: E2ee,
    _dir: tempfile::TempDir,
}

async fn new_device(base_url: &str, name: &str) -> Device {
    let dir = tempfile::tempdir().expect("tempdir");
    let client = Client::new(base_url);
    let e2ee = E2ee::login(client, dir.path(), name, PASSWORD, Some("e2ee test"))
        .await
        .expect("e2ee login");
    Device { e2ee, _dir: dir }
}

async fn register(base_url: &str, name: &str) -> UserId {
    Client::new(base_url)
        .register(name, PASSWORD, None)
        .await
        .expect("register")
        .id
}

/// The decrypted texts of a conversation as this device sees them.
async fn texts(d: &Device, id: ConversationId) -> Vec<String> {
    d.e2ee
        .history(id)
        .await
        .expect("history")
        .into_iter()
        .filter_map(|m| match m.content {
            E2eeContent::Message { kind, body } if kind == "text" => {
                body.get("text").and_then(|t| t.as_str()).map(str::to_owned)
            }
            _ => None,
        })
        .collect()
}

fn failures(history: &[E2eeMessage]) -> Vec<String> {
    history
        .iter()
        .filter_map(|m| match &m.content {
            E2eeContent::Failed { reason } => Some(format!("seq {}: {reason}", m.seq)),
            _ => None,
        })
        .collect()
}

async fn no_failures(d: &Device, id: ConversationId) {
    let h = d.e2ee.history(id).await.expect("history");
    let f = failures(&h);
    assert!(f.is_empty(), "undecryptable messages: {f:?}");
}

#[tokio::test]
async fn three_users_two_devices_add_remove_new_and_revoked_device() {
    let app = spawn_app().await;
    let url = app.base_url.clone();
    let ann = register(&url, "ann").await;
    let bob = register(&url, "bob").await;
    let cat = register(&url, "cat").await;
    let a1 = new_device(&url, "ann").await;
    let a2 = new_device(&url, "ann").await;
    let b1 = new_device(&url, "bob").await;
    let b2 = new_device(&url, "bob").await;
    let c1 = new_device(&url, "cat").await;
    let c2 = new_device(&url, "cat").await;

    // Ann makes a group with Bob: one commit adds a2, b1 and b2.
    let conv = a1
        .e2ee
        .create_group("秘密 group", &[bob])
        .await
        .expect("create");
    assert!(conv.encrypted);
    assert_eq!(conv.mls_epoch, Some(1));
    a1.e2ee
        .send_text(conv.id, "你好 from a1")
        .await
        .expect("send");
    for d in [&a2, &b1, &b2] {
        assert_eq!(texts(d, conv.id).await, ["你好 from a1"]);
    }
    assert_eq!(
        a1.e2ee.group_devices(conv.id).await.expect("leaves").len(),
        4
    );

    // Adding Cat adds both her devices in one commit.
    a1.e2ee.add_members(conv.id, &[cat]).await.expect("add cat");
    assert_eq!(a1.e2ee.epoch(conv.id).await.expect("epoch"), Some(2));
    b2.e2ee.send_text(conv.id, "hi cat").await.expect("send");
    for d in [&a1, &a2, &b1, &c1, &c2] {
        assert!(texts(d, conv.id).await.contains(&"hi cat".to_owned()));
    }
    // Cat's devices joined after the first message: it is "before join",
    // not a failure.
    let c1_history = c1.e2ee.history(conv.id).await.expect("history");
    assert!(failures(&c1_history).is_empty(), "{c1_history:?}");
    assert!(!texts(&c1, conv.id)
        .await
        .contains(&"你好 from a1".to_owned()));

    // Bob is removed: after it neither of his devices decrypts anything.
    let no = c1
        .e2ee
        .remove_member(conv.id, bob)
        .await
        .expect_err("cat is no admin");
    assert_eq!(no.code(), Some(ErrorCode::Forbidden));
    a1.e2ee
        .remove_member(conv.id, bob)
        .await
        .expect("remove bob");
    let bob_epoch = b1.e2ee.epoch(conv.id).await.expect("epoch");
    a2.e2ee
        .send_text(conv.id, "bob cannot read this")
        .await
        .expect("send");
    for d in [&a1, &c1, &c2] {
        assert!(texts(d, conv.id)
            .await
            .contains(&"bob cannot read this".to_owned()));
    }
    // The server refuses Bob the conversation now...
    let refused = b1.e2ee.history(conv.id).await.expect_err("bob is out");
    assert_eq!(refused.code(), Some(ErrorCode::Forbidden));
    // ...and a server that handed him the ciphertext anyway would not help.
    let page = a1
        .e2ee
        .client()
        .history(conv.id, confab_sdk::HistoryQuery::default())
        .await
        .expect("history");
    let after = page
        .messages
        .iter()
        .rev()
        .find(|m| m.kind == MessageKind::Encrypted)
        .expect("the last message")
        .clone();
    for d in [&b1, &b2] {
        let got = d.e2ee.decrypt_detached(conv.id, after.clone()).await;
        assert!(
            matches!(got, E2eeContent::Failed { .. } | E2eeContent::BeforeJoin),
            "a removed device read {got:?}"
        );
    }
    assert_eq!(b1.e2ee.epoch(conv.id).await.expect("epoch"), bob_epoch);

    // Ann logs in on a third device; Cat's client adds it.
    let a3 = new_device(&url, "ann").await;
    c2.e2ee.reconcile(conv.id).await.expect("reconcile");
    a1.e2ee
        .send_text(conv.id, "welcome a3")
        .await
        .expect("send");
    assert!(texts(&a3, conv.id).await.contains(&"welcome a3".to_owned()));
    assert!(!texts(&a3, conv.id).await.contains(&"hi cat".to_owned()));

    // Cat's second device is revoked (logout): Ann's client removes its
    // leaf, then updates her keys.
    c2.e2ee.client().logout().await.expect("logout");
    a1.e2ee.reconcile(conv.id).await.expect("reconcile");
    a1.e2ee.update_keys(conv.id).await.expect("update");
    let leaves = a1.e2ee.group_devices(conv.id).await.expect("leaves");
    assert_eq!(leaves.len(), 4, "a1 a2 a3 c1: {leaves:?}");
    assert!(leaves.iter().all(|(u, _)| *u == ann || *u == cat));
    c1.e2ee
        .send_text(conv.id, "after revoke")
        .await
        .expect("send");
    for d in [&a1, &a2, &a3] {
        assert!(texts(d, conv.id).await.contains(&"after revoke".to_owned()));
    }
    for d in [&a1, &a2, &a3, &c1] {
        no_failures(d, conv.id).await;
    }
    // Every device that is in the group is at the same epoch.
    let epoch = a1.e2ee.epoch(conv.id).await.expect("epoch");
    for d in [&a2, &a3, &c1] {
        assert_eq!(d.e2ee.epoch(conv.id).await.expect("epoch"), epoch);
    }
}

#[tokio::test]
async fn keys_are_updated_on_schedule_before_a_send() {
    let app = spawn_app().await;
    let url = app.base_url.clone();
    register(&url, "ann").await;
    let bob_id = register(&url, "bob").await;
    let ann = new_device(&url, "ann").await;
    let bob = new_device(&url, "bob").await;
    let conv = ann.e2ee.create_direct(bob_id).await.expect("direct");
    ann.e2ee.send_text(conv.id, "one").await.expect("send");
    let start = ann
        .e2ee
        .epoch(conv.id)
        .await
        .expect("epoch")
        .expect("in group");
    // Fresh keys from creating and joining: not due yet.
    ann.e2ee.send_text(conv.id, "two").await.expect("send");
    bob.e2ee.send_text(conv.id, "二").await.expect("send");
    assert_eq!(ann.e2ee.epoch(conv.id).await.expect("epoch"), Some(start));

    // Due: a self-update commit goes first, then the message.
    ann.e2ee.set_key_update_interval(std::time::Duration::ZERO);
    ann.e2ee.send_text(conv.id, "three").await.expect("send");
    assert_eq!(
        ann.e2ee.epoch(conv.id).await.expect("epoch"),
        Some(start + 1)
    );
    bob.e2ee.set_key_update_interval(std::time::Duration::ZERO);
    bob.e2ee.send_text(conv.id, "四").await.expect("send");
    assert_eq!(
        bob.e2ee.epoch(conv.id).await.expect("epoch"),
        Some(start + 2)
    );
    for d in [&ann, &bob] {
        assert_eq!(texts(d, conv.id).await, ["one", "two", "二", "three", "四"]);
        no_failures(d, conv.id).await;
    }
    let commits = bob
        .e2ee
        .history(conv.id)
        .await
        .expect("history")
        .into_iter()
        .filter(|m| matches!(m.content, E2eeContent::Commit { .. }))
        .count();
    assert_eq!(commits, 2, "one self-update from each side");
}

#[tokio::test]
async fn concurrent_commits_one_wins_the_other_retries() {
    let app = spawn_app().await;
    let url = app.base_url.clone();
    let _ann = register(&url, "ann").await;
    let bob = register(&url, "bob").await;
    let cat = register(&url, "cat").await;
    let dan = register(&url, "dan").await;
    let a1 = new_device(&url, "ann").await;
    let b1 = new_device(&url, "bob").await;
    let c1 = new_device(&url, "cat").await;
    let d1 = new_device(&url, "dan").await;
    let conv = a1.e2ee.create_group("race", &[bob]).await.expect("create");
    // Bob may add members too (an admin).
    a1.e2ee
        .client()
        .set_role(conv.id, bob, confab_sdk::proto::api::Role::Admin)
        .await
        .expect("make bob admin");
    b1.e2ee.catch_up(conv.id).await.expect("join");
    let epoch = b1
        .e2ee
        .epoch(conv.id)
        .await
        .expect("epoch")
        .expect("in group");

    // Both commit at once from the same epoch: Ann adds Cat, Bob adds Dan.
    let (cats, dans) = ([cat], [dan]);
    let (x, y) = tokio::join!(
        a1.e2ee.add_members(conv.id, &cats),
        b1.e2ee.add_members(conv.id, &dans),
    );
    x.expect("ann's commit");
    y.expect("bob's commit");
    // Key updates at the same moment, until one of them lost a race (it
    // retried after applying the winner): each round is two commits.
    let conflicts = || a1.e2ee.epoch_conflicts() + b1.e2ee.epoch_conflicts();
    let before = conflicts();
    let mut rounds = 0;
    while rounds == 0 || conflicts() == before {
        rounds += 1;
        assert!(rounds <= 20, "no commit ever lost a race in 20 rounds");
        let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(2));
        let (ba, bb) = (barrier.clone(), barrier);
        let (x, y) = tokio::join!(
            async {
                ba.wait().await;
                a1.e2ee.update_keys(conv.id).await
            },
            async {
                bb.wait().await;
                b1.e2ee.update_keys(conv.id).await
            },
        );
        x.expect("ann's update");
        y.expect("bob's update");
    }
    a1.e2ee.send_text(conv.id, "from ann").await.expect("send");
    b1.e2ee.send_text(conv.id, "from bob").await.expect("send");
    let ea = a1.e2ee.epoch(conv.id).await.expect("epoch");
    let eb = b1.e2ee.epoch(conv.id).await.expect("epoch");
    assert_eq!(ea, eb, "both in the same epoch");
    assert!(
        ea.expect("epoch") >= epoch + 1 + 2 * rounds,
        "the commits were all applied: {ea:?} from {epoch} after {rounds} rounds"
    );
    let ca = a1.e2ee.group_devices(conv.id).await.expect("leaves");
    assert_eq!(ca, b1.e2ee.group_devices(conv.id).await.expect("leaves"));
    assert_eq!(ca.len(), 4, "{ca:?}");
    for d in [&a1, &b1] {
        let t = texts(d, conv.id).await;
        for want in ["from ann", "from bob"] {
            assert!(t.contains(&want.to_owned()), "{t:?}");
        }
        no_failures(d, conv.id).await;
    }
    // The server saw each epoch's commit once: its epoch is the clients'.
    let server = a1.e2ee.client().conversation(conv.id).await.expect("conv");
    assert_eq!(server.mls_epoch, ea);
    // A commit for an old epoch is refused with epoch_conflict.
    // Cat and Dan, added in the race, read what came after.
    for d in [&c1, &d1] {
        let t = texts(d, conv.id).await;
        assert!(
            t.contains(&"from ann".to_owned()) && t.contains(&"from bob".to_owned()),
            "{t:?}"
        );
        no_failures(d, conv.id).await;
    }
    // A real commit of an old epoch, sent again as new: epoch_conflict.
    let old_commit = a1
        .e2ee
        .client()
        .history(conv.id, confab_sdk::HistoryQuery::after(0, 200))
        .await
        .expect("history")
        .messages
        .into_iter()
        .find(|m| m.body["mls"] == "commit" && m.body["epoch"] == epoch)
        .expect("the commit of that epoch");
    let mut body = old_commit.body.clone();
    if let Some(o) = body.as_object_mut() {
        o.remove("welcome");
        o.remove("welcome_devices");
    }
    let stale = a1
        .e2ee
        .client()
        .send_http(conv.id, "stale-commit", MessageKind::Encrypted, body)
        .await
        .expect_err("stale");
    assert_eq!(stale.code(), Some(ErrorCode::EpochConflict));
}

#[tokio::test]
async fn the_server_refuses_plain_messages_and_bad_key_packages() {
    let app = spawn_app().await;
    let url = app.base_url.clone();
    let _ann = register(&url, "ann").await;
    let bob = register(&url, "bob").await;
    let a1 = new_device(&url, "ann").await;
    let _b1 = new_device(&url, "bob").await;
    let conv = a1.e2ee.create_group("g", &[bob]).await.expect("create");
    let client = a1.e2ee.client();
    let plain = client
        .send_http(conv.id, "p1", MessageKind::Text, json!({"text": "plain"}))
        .await
        .expect_err("plain text");
    assert_eq!(plain.code(), Some(ErrorCode::EncryptionRequired));
    let headless = client
        .send_http(
            conv.id,
            "p2",
            MessageKind::Encrypted,
            json!({"ciphertext": "AAAA"}),
        )
        .await
        .expect_err("no header");
    assert_eq!(headless.code(), Some(ErrorCode::EncryptionRequired));

    // A key package of another device (signed by another key) is refused.
    let other = new_device(&url, "bob").await;
    let stock: KeyPackageStock =
        reqwest_json(&app, a1.e2ee.client(), "GET", "/v1/keys/packages", None).await;
    assert!(stock.stock >= 10 && stock.last_resort, "{stock:?}");
    // Claim one of bob's other device's packages and upload it as ann's.
    let claimed: serde_json::Value = reqwest_json(
        &app,
        a1.e2ee.client(),
        "GET",
        &format!("/v1/users/{bob}/key-packages"),
        None,
    )
    .await;
    let kp = claimed["key_packages"][0]["key_package"]
        .as_str()
        .expect("a package")
        .to_owned();
    let req = UploadKeyPackagesRequest {
        key_packages: vec![kp],
        last_resort: None,
    };
    let status = raw_status(&app, a1.e2ee.client(), "/v1/keys/packages", &req).await;
    assert_eq!(status.0, 400, "{}", status.1);
    assert!(status.1.contains("invalid_key_package"), "{}", status.1);
    let garbage = UploadKeyPackagesRequest {
        key_packages: vec![B64.encode(b"not a key package")],
        last_resort: None,
    };
    let status = raw_status(&app, a1.e2ee.client(), "/v1/keys/packages", &garbage).await;
    assert_eq!(status.0, 400, "{}", status.1);
    drop(other);
}

#[tokio::test]
async fn forged_replayed_and_misaddressed_mls_messages_are_refused() {
    let app = spawn_app().await;
    let url = app.base_url.clone();
    let _ann = register(&url, "ann").await;
    let bob = register(&url, "bob").await;
    let cat = register(&url, "cat").await;
    let a1 = new_device(&url, "ann").await;
    let a2 = new_device(&url, "ann").await;
    let b1 = new_device(&url, "bob").await;
    let _c1 = new_device(&url, "cat").await;
    let conv = a1
        .e2ee
        .create_group("bad input", &[bob])
        .await
        .expect("create");
    let seq = a1
        .e2ee
        .send_text(conv.id, "the real one")
        .await
        .expect("send");
    let original = a1
        .e2ee
        .client()
        .history(conv.id, confab_sdk::HistoryQuery::default())
        .await
        .expect("history")
        .messages
        .into_iter()
        .find(|m| m.seq == seq)
        .expect("the sent message");

    // Bob's client sends, under his own name, what the server cannot tell
    // from real messages: Ann's message again (a replay) and Ann's message
    // with one byte changed (a forgery).
    let bob_http = b1.e2ee.client();
    let send = |id: &'static str, body: serde_json::Value| async move {
        bob_http
            .send_http(conv.id, id, MessageKind::Encrypted, body)
            .await
            .expect("opaque to the server")
            .seq
    };
    let replay = send("replay-1", original.body.clone()).await;
    let mut bytes = B64
        .decode(original.body["ciphertext"].as_str().expect("ciphertext"))
        .expect("base64");
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    let mut forged_body = original.body.clone();
    forged_body["ciphertext"] = json!(B64.encode(&bytes));
    let forged = send("forged-1", forged_body).await;
    a1.e2ee
        .send_text(conv.id, "still fine")
        .await
        .expect("send");

    // Every other device refuses both with a reason and shows none of
    // them as a message; the real ones around them read fine.
    for (who, d) in [("a2", &a2), ("b1", &b1)] {
        let h = d.e2ee.history(conv.id).await.expect("history");
        for (what, s) in [("replay", replay), ("forgery", forged)] {
            let m = h.iter().find(|m| m.seq == s).expect("processed");
            match &m.content {
                E2eeContent::Failed { reason } => assert!(!reason.is_empty()),
                other => panic!("{who} shows the {what} as {other:?}"),
            }
        }
        assert_eq!(
            texts(d, conv.id).await,
            ["the real one", "still fine"],
            "{who}"
        );
    }

    // What the server can tell from the MLS framing is refused there, and
    // the epoch does not move: bytes that are no MLS at all, an
    // application message labelled a commit (it would move the epoch and
    // leave every member behind), a message of another epoch than its
    // label, one for another conversation's group.
    let epoch_now = a1
        .e2ee
        .client()
        .conversation(conv.id)
        .await
        .expect("conv")
        .mls_epoch
        .expect("encrypted");
    let still = a1
        .e2ee
        .client()
        .history(conv.id, confab_sdk::HistoryQuery::after(0, 200))
        .await
        .expect("history")
        .messages
        .into_iter()
        .rev()
        .find(|m| m.body["mls"] == "application")
        .expect("an application message");
    let real = still.body["ciphertext"].clone();
    let other = a1.e2ee.create_group("other", &[bob]).await.expect("other");
    let other_seq = a1
        .e2ee
        .send_text(other.id, "elsewhere")
        .await
        .expect("send");
    let elsewhere = a1
        .e2ee
        .client()
        .history(other.id, confab_sdk::HistoryQuery::after(0, 200))
        .await
        .expect("history")
        .messages
        .into_iter()
        .find(|m| m.seq == other_seq)
        .expect("sent");
    for (what, body, says) in [
        (
            "garbage",
            json!({"ciphertext": B64.encode(b"not mls at all"), "mls": "commit", "epoch": epoch_now}),
            "not an MLS message",
        ),
        (
            "mislabelled",
            json!({"ciphertext": real, "mls": "commit", "epoch": epoch_now}),
            "the body says Commit",
        ),
        (
            "wrong epoch",
            json!({"ciphertext": real, "mls": "application", "epoch": epoch_now + 1}),
            "the body says",
        ),
        (
            "another group",
            json!({"ciphertext": elsewhere.body["ciphertext"], "mls": "application",
                   "epoch": elsewhere.body["epoch"]}),
            "not for this conversation's group",
        ),
    ] {
        let refused = b1
            .e2ee
            .client()
            .send_http(
                conv.id,
                &format!("bad-{}", what.replace(' ', "-")),
                MessageKind::Encrypted,
                body,
            )
            .await
            .expect_err(what);
        assert_eq!(refused.code(), Some(ErrorCode::BadRequest), "{what}");
        assert!(refused.to_string().contains(says), "{what}: {refused}");
    }
    let after_bad = a1.e2ee.client().conversation(conv.id).await.expect("conv");
    assert_eq!(
        after_bad.mls_epoch,
        Some(epoch_now),
        "the epoch did not move"
    );
    a1.e2ee
        .send_text(conv.id, "and on")
        .await
        .expect("the group goes on");
    assert_eq!(
        texts(&b1, conv.id).await,
        ["the real one", "still fine", "and on"]
    );

    // A Welcome addressed to a device of someone who is not a member is
    // refused by the server, and the epoch does not move.
    let before = a1
        .e2ee
        .client()
        .conversation(conv.id)
        .await
        .expect("conv")
        .mls_epoch
        .expect("encrypted");
    let cat_device = a1.e2ee.client().devices(cat).await.expect("devices")[0].device_id;
    let misaddressed = a1
        .e2ee
        .client()
        .send_http(
            conv.id,
            "welcome-1",
            MessageKind::Encrypted,
            json!({"ciphertext": "AAAA", "mls": "commit", "epoch": before,
                   "welcome": "AAAA", "welcome_devices": [cat_device]}),
        )
        .await
        .expect_err("not a member's device");
    assert_eq!(misaddressed.code(), Some(ErrorCode::BadRequest));
    let after = a1.e2ee.client().conversation(conv.id).await.expect("conv");
    assert_eq!(after.mls_epoch, Some(before));
}

async fn reqwest_json<T: serde::de::DeserializeOwned>(
    app: &TestApp,
    client: &Client,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> T {
    let token = client.session().expect("session").access_token;
    let url = format!("{}{path}", app.base_url);
    let req = match method {
        "GET" => app.http().get(url),
        _ => app.http().post(url).json(&body),
    };
    req.bearer_auth(token)
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json")
}

async fn raw_status(
    app: &TestApp,
    client: &Client,
    path: &str,
    body: &impl serde::Serialize,
) -> (u16, String) {
    let token = client.session().expect("session").access_token;
    let resp = app
        .http()
        .post(format!("{}{path}", app.base_url))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .expect("request");
    (resp.status().as_u16(), resp.text().await.expect("text"))
}

/// Every file under `dir`, as bytes.
pub(crate) fn all_bytes(dir: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(b) = std::fs::read(&p) {
                out.extend(b);
            }
        }
    }
    out
}

/// Whether `needle` occurs in `hay`.
pub(crate) fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn the_server_keeps_no_plaintext_and_survives_kill_9() {
    let data = tempfile::tempdir().expect("tempdir");
    let log = tempfile::NamedTempFile::new().expect("log");
    let mut server = spawn_logging_binary(data.path(), log.path()).await;
    let url = server.base_url.clone();
    let _ann = register(&url, "ann").await;
    let bob = register(&url, "bob").await;
    let a1 = new_device(&url, "ann").await;
    let b1 = new_device(&url, "bob").await;
    let b2 = new_device(&url, "bob").await;
    let conv = a1
        .e2ee
        .create_group("plaintext scan", &[bob])
        .await
        .expect("create");

    let secret_text = "the eagle lands at midnight 机密";
    let image_marker = b"SECRET-IMAGE-PIXELS-0123456789";
    let file_marker = b"SECRET-FILE-CONTENTS-abcdefghij";
    let mut image = vec![0xFF, 0xD8, 0xFF, 0xE0];
    image.extend_from_slice(image_marker);
    a1.e2ee.send_text(conv.id, secret_text).await.expect("text");
    a1.e2ee
        .send_attachment(
            conv.id,
            Attachment {
                kind: MessageKind::Image,
                name: "secret-photo.jpg".into(),
                mime: "image/jpeg".into(),
                data: image.clone(),
                width: Some(1),
                height: Some(1),
                duration_ms: None,
            },
        )
        .await
        .expect("image");
    let seq_file = b1
        .e2ee
        .send_attachment(
            conv.id,
            Attachment {
                kind: MessageKind::File,
                name: "secret-plans.txt".into(),
                mime: "text/plain".into(),
                data: file_marker.to_vec(),
                width: None,
                height: None,
                duration_ms: None,
            },
        )
        .await
        .expect("file");

    // Everyone reads everything, attachments included.
    for d in [&a1, &b2] {
        let h = d.e2ee.history(conv.id).await.expect("history");
        assert!(failures(&h).is_empty(), "{:?}", failures(&h));
        let mut got_file = false;
        for m in &h {
            if let E2eeContent::Message { kind, body } = &m.content {
                if kind == "file" {
                    let bytes = d.e2ee.download_attachment(body).await.expect("download");
                    assert_eq!(bytes, file_marker);
                    assert_eq!(m.seq, seq_file);
                    got_file = true;
                }
                if kind == "image" {
                    let bytes = d.e2ee.download_attachment(body).await.expect("download");
                    assert_eq!(bytes, image);
                }
            }
        }
        assert!(got_file);
    }

    // kill -9 mid-conversation: Ann sends as fast as she can and the
    // server is killed after a few acks, so the kill lands between (or
    // inside) sends. After a restart nothing acked is lost, what was in
    // flight is resent from the session dir, and everything is readable.
    let (acks, mut acked_rx) = tokio::sync::watch::channel(0usize);
    let sending = async {
        let mut acked = Vec::new();
        for i in 0..10_000 {
            let text = format!("burst {i}");
            match a1.e2ee.send_text(conv.id, &text).await {
                Ok(_) => {
                    acked.push(text);
                    let _ = acks.send(acked.len());
                }
                Err(_) => return (acked, text),
            }
        }
        panic!("the sends never failed: was the server killed?");
    };
    let killing = async {
        acked_rx.wait_for(|n| *n >= 5).await.expect("acks");
        server.child.start_kill().expect("kill -9");
        server.child.wait().await.expect("wait");
    };
    let ((acked, in_flight), ()) = tokio::join!(sending, killing);
    assert!(acked.len() >= 5);
    let restarted = spawn_logging_binary(data.path(), log.path()).await;
    // The SDK's clients keep their base URL: new clients for the new port,
    // with the same session dirs (the old E2ee values go, as a killed
    // client's would; their dirs stay).
    let reopen = |d: Device| {
        let s = d.e2ee.client().session().expect("session");
        (Client::with_session(&restarted.base_url, s), d._dir)
    };
    let (ca, da) = reopen(a1);
    let (cb, db) = reopen(b2);
    let a1 = E2ee::open(ca, da.path()).await.expect("reopen a1");
    let b2 = E2ee::open(cb, db.path()).await.expect("reopen b2");
    a1.send_text(conv.id, "after the crash")
        .await
        .expect("send");
    let texts_of = |h: &[E2eeMessage]| -> Vec<String> {
        h.iter()
            .filter_map(|m| match &m.content {
                E2eeContent::Message { kind, body } if kind == "text" => {
                    body["text"].as_str().map(str::to_owned)
                }
                _ => None,
            })
            .collect()
    };
    let mut before: Vec<String> = vec![secret_text.to_owned()];
    before.extend(acked.iter().cloned());
    let mut resent = before.clone();
    resent.push(in_flight.clone());
    resent.push("after the crash".to_owned());
    before.push("after the crash".to_owned());
    for (who, d) in [("b2", &b2), ("a1", &a1)] {
        let h = d.history(conv.id).await.expect("history");
        assert!(failures(&h).is_empty(), "{who}: {:?}", failures(&h));
        let t = texts_of(&h);
        // The send the kill interrupted is there once (resent from the
        // session dir) or not at all (it failed before it was stored);
        // every acked one is there, in order.
        assert!(
            t == before || t == resent,
            "{who} reads {t:?}, acked {acked:?}, in flight {in_flight:?}"
        );
    }
    let mut restarted = restarted;
    restarted.child.start_kill().expect("stop");
    let _ = restarted.child.wait().await;

    // Database files, blobs and the log: no plaintext anywhere.
    let mut everything = all_bytes(data.path());
    everything.extend(std::fs::read(log.path()).expect("log"));
    assert!(
        everything.len() > 10_000,
        "scanned {} bytes",
        everything.len()
    );
    for needle in [
        secret_text.as_bytes(),
        "机密".as_bytes(),
        "after the crash".as_bytes(),
        b"burst 0",
        image_marker,
        file_marker,
        b"secret-plans.txt",
        b"secret-photo.jpg",
    ] {
        assert!(
            !contains(&everything, needle),
            "found {:?} in the server's files or log",
            String::from_utf8_lossy(needle)
        );
    }
    // The scan would see them: the group's title (not encrypted) is there.
    assert!(contains(&everything, b"plaintext scan"));
}

/// The server binary with debug logging into `log`.
pub(crate) async fn spawn_logging_binary(data_dir: &Path, log: &Path) -> ServerProcess {
    use tokio::io::AsyncBufReadExt;
    let file = std::fs::OpenOptions::new()
        .append(true)
        .open(log)
        .expect("log file");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_confab"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .args([
            "--argon2-memory-kib",
            "64",
            "--argon2-iterations",
            "1",
            "--registrations-per-hour",
            "1000000",
            "--send-rate",
            "100000",
            "--send-burst",
            "100000",
        ])
        .env("CONFAB_LOG", "debug")
        .stdout(std::process::Stdio::piped())
        .stderr(file)
        .kill_on_drop(true)
        .spawn()
        .expect("spawn confab serve");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let line = tokio::time::timeout(WAIT, lines.next_line())
        .await
        .expect("server starts in time")
        .expect("read stdout")
        .expect("a line");
    let base_url = line
        .strip_prefix("confab listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    // Keep reading stdout so the child never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    ServerProcess { child, base_url }
}

#[tokio::test]
async fn search_skips_encrypted_messages() {
    let app = spawn_app().await;
    let url = app.base_url.clone();
    let _ann = register(&url, "ann").await;
    let bob = register(&url, "bob").await;
    let a1 = new_device(&url, "ann").await;
    let _b1 = new_device(&url, "bob").await;
    let conv = a1
        .e2ee
        .create_group("search", &[bob])
        .await
        .expect("create");
    a1.e2ee
        .send_text(conv.id, "findable words")
        .await
        .expect("send");
    let plain = a1
        .e2ee
        .client()
        .create_group("plain", &[bob])
        .await
        .expect("plain");
    a1.e2ee
        .client()
        .send_http(
            plain.id,
            "plain-1",
            MessageKind::Text,
            json!({"text": "findable plain"}),
        )
        .await
        .expect("send plain");
    let hits = a1
        .e2ee
        .client()
        .search_messages("findable", &Default::default())
        .await
        .expect("search");
    assert_eq!(hits.hits.len(), 1, "{hits:?}");
    assert_eq!(hits.hits[0].message.conversation_id, plain.id);
}

#[tokio::test]
async fn the_cli_creates_sends_and_reads_encrypted_groups_across_invocations() {
    let app = spawn_app().await;
    let url = app.base_url.clone();
    let dir = tempfile::tempdir().expect("tempdir");
    let ann = dir.path().join("ann.json");
    let bob = dir.path().join("bob.json");
    cli_register_and_login(&url, &ann, "ann").await;
    cli_register_and_login(&url, &bob, "bob").await;
    // An SDK device of Bob's too.
    let b2 = new_device(&url, "bob").await;

    let mut create = cli(&url, &ann);
    create.args([
        "group",
        "create",
        "cli 组",
        "--members",
        "bob",
        "--encrypted",
        "--json",
    ]);
    let conv: serde_json::Value = serde_json::from_str(cli_ok(create).await.trim()).expect("json");
    assert_eq!(conv["encrypted"], true);
    let id = conv["id"].as_i64().expect("id");
    for (who, text) in [(&ann, "你好 bob"), (&bob, "hi ann")] {
        let mut send = cli(&url, who);
        send.args(["e2ee", "send", &id.to_string(), text, "--json"]);
        cli_ok(send).await;
    }
    for who in [&ann, &bob] {
        let mut history = cli(&url, who);
        history.args(["e2ee", "history", &id.to_string(), "--json"]);
        let out = cli_ok(history).await;
        let texts: Vec<String> = out
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|m| m["content"]["type"] == "message")
            .filter_map(|m| m["content"]["body"]["text"].as_str().map(str::to_owned))
            .collect();
        assert_eq!(texts, ["你好 bob", "hi ann"], "{out}");
        assert!(!out.contains("\"failed\""), "{out}");
    }
    assert_eq!(texts(&b2, id).await, ["你好 bob", "hi ann"]);
    // The state is private.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let key = dir.path().join("ann.json.e2ee").join("device_key.json");
        let mode = std::fs::metadata(&key)
            .expect("key file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
