//! Names people type (group titles, display names) go through one
//! validation on every backend: control characters are refused with 400
//! before they reach a database, and CJK names count in characters.

use crate::support::*;
use confab_sdk::proto::api::UpdateConversationRequest;
use confab_sdk::{ErrorCode, UpdateProfileRequest};
use confab_testkit::Postgres;

fn title(t: &str) -> UpdateConversationRequest {
    UpdateConversationRequest {
        title: Some(t.to_owned()),
        ..Default::default()
    }
}

async fn names_are_checked(app: &TestApp, backend: &str) {
    let (ann, _) = app.user("ann").await;
    let (_, bob) = app.user("bob").await;
    for bad in ["a\u{0}b", "tab\there", "line\nbreak"] {
        let err = ann
            .create_group(bad, &[bob.id])
            .await
            .expect_err("control characters in a title");
        assert_eq!(
            err.code(),
            Some(ErrorCode::BadRequest),
            "{backend}: {bad:?}"
        );
        let err = ann
            .update_me(&UpdateProfileRequest {
                display_name: Some(bad.into()),
                ..Default::default()
            })
            .await
            .expect_err("control characters in a display name");
        assert_eq!(
            err.code(),
            Some(ErrorCode::BadRequest),
            "{backend}: {bad:?}"
        );
    }
    // 64 Chinese characters fit (192 bytes); 65 do not.
    let long: String = "分布式系统".chars().cycle().take(64).collect();
    let group = ann
        .create_group(&long, &[bob.id])
        .await
        .unwrap_or_else(|e| panic!("{backend}: a 64-character Chinese title: {e}"));
    assert_eq!(group.title.as_deref(), Some(long.as_str()));
    let longer = format!("{long}系");
    let err = ann
        .update_conversation(group.id, &title(&longer))
        .await
        .expect_err("65 characters");
    assert_eq!(err.code(), Some(ErrorCode::BadRequest));
    let err = ann
        .update_conversation(group.id, &title("x\u{0}"))
        .await
        .expect_err("a NUL in a new title");
    assert_eq!(err.code(), Some(ErrorCode::BadRequest), "{backend}");
    let me = ann
        .update_me(&UpdateProfileRequest {
            display_name: Some("王小明".into()),
            ..Default::default()
        })
        .await
        .expect("a Chinese display name");
    assert_eq!(me.display_name, "王小明");
}

#[tokio::test]
async fn names_are_checked_on_sqlite() {
    let app = spawn_app().await;
    names_are_checked(&app, "sqlite").await;
}

#[tokio::test]
async fn names_are_checked_on_postgres() {
    let pg = Postgres::start().await.expect("private postgres");
    let url = pg.url();
    let app = spawn_app_with(|c| c.database = Some(url)).await;
    names_are_checked(&app, "postgres").await;
}
