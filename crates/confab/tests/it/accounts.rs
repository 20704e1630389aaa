//! Accounts: register, login, refresh with rotation and reuse detection,
//! logout, profiles and user search.

use crate::support::*;
use confab_sdk::{ErrorCode, UpdateProfileRequest};
use serde_json::json;

#[tokio::test]
async fn register_login_refresh_and_reuse_detection() {
    let app = spawn_app().await;
    let client = app.client();
    let user = client
        .register("Ann", PASSWORD, Some("Ann Lee"))
        .await
        .expect("register");
    assert_eq!(user.display_name, "Ann Lee");

    let again = client
        .register("ann", PASSWORD, None)
        .await
        .expect_err("taken");
    assert_eq!(
        again.code(),
        Some(ErrorCode::UsernameTaken),
        "case-insensitive uniqueness"
    );

    let wrong = client
        .login("ann", "wrong password", None)
        .await
        .expect_err("bad password");
    assert_eq!(wrong.code(), Some(ErrorCode::InvalidCredentials));
    let nobody = client
        .login("nobody", PASSWORD, None)
        .await
        .expect_err("no user");
    assert_eq!(nobody.code(), Some(ErrorCode::InvalidCredentials));

    let first = client
        .login("ANN", PASSWORD, None)
        .await
        .expect("login any case");
    assert_eq!(first.user.id, user.id);
    assert_eq!(client.me().await.expect("me").username, "Ann");

    let second = client.refresh().await.expect("refresh");
    assert_ne!(second.access_token, first.access_token);
    assert_ne!(second.refresh_token, first.refresh_token);
    assert_eq!(second.device_id, first.device_id);
    assert_eq!(client.me().await.expect("me with new token").id, user.id);

    // Replaying the spent refresh token revokes the whole device.
    let http = app.http();
    let replay = http
        .post(format!("{}/v1/auth/refresh", app.base_url))
        .json(&json!({"refresh_token": first.refresh_token}))
        .send()
        .await
        .expect("replay");
    assert_eq!(replay.status(), 401);
    let body: serde_json::Value = replay.json().await.expect("json");
    assert_eq!(body["error"]["code"], "invalid_refresh_token");
    let me = http
        .get(format!("{}/v1/users/me", app.base_url))
        .bearer_auth(&second.access_token)
        .send()
        .await
        .expect("me");
    assert_eq!(
        me.status(),
        401,
        "the device's current token died with the replay"
    );
    let refresh_after = http
        .post(format!("{}/v1/auth/refresh", app.base_url))
        .json(&json!({"refresh_token": second.refresh_token}))
        .send()
        .await
        .expect("refresh");
    assert_eq!(refresh_after.status(), 401, "and so did its refresh token");
}

#[tokio::test]
async fn logout_revokes_the_device_only() {
    let app = spawn_app().await;
    let (laptop, _) = app.user("ann").await;
    let phone = app.device("ann").await;
    let old = laptop.session().expect("session");
    let mut open = laptop.connect_raw().await.expect("socket");
    let mut phone_socket = phone.connect_raw().await.expect("socket");
    laptop.logout().await.expect("logout");
    assert!(
        wait_closed(&mut open, WAIT).await,
        "the logged-out device's socket closes"
    );
    assert!(
        !wait_closed(&mut phone_socket, std::time::Duration::from_millis(500)).await,
        "the other device's socket stays"
    );
    let resp = app
        .http()
        .get(format!("{}/v1/users/me", app.base_url))
        .bearer_auth(&old.access_token)
        .send()
        .await
        .expect("me");
    assert_eq!(resp.status(), 401);
    assert_eq!(
        phone.me().await.expect("other device still works").username,
        "ann"
    );
}

#[tokio::test]
async fn password_change_logs_out_the_other_devices() {
    let app = spawn_app().await;
    let (laptop, _) = app.user("ann").await;
    let phone = app.device("ann").await;
    let wrong = laptop
        .change_password("not it", "new password 1")
        .await
        .expect_err("wrong");
    assert_eq!(wrong.code(), Some(ErrorCode::InvalidCredentials));
    let weak = laptop
        .change_password(PASSWORD, "short")
        .await
        .expect_err("weak");
    assert_eq!(weak.code(), Some(ErrorCode::WeakPassword));
    let phone_session = phone.session().expect("session");
    laptop
        .change_password(PASSWORD, "new password 1")
        .await
        .expect("change");
    assert_eq!(
        laptop.me().await.expect("this device stays").username,
        "ann"
    );
    let resp = app
        .http()
        .post(format!("{}/v1/auth/refresh", app.base_url))
        .json(&json!({"refresh_token": phone_session.refresh_token}))
        .send()
        .await
        .expect("refresh");
    assert_eq!(resp.status(), 401, "the other device is logged out");
    let old = app
        .client()
        .login("ann", PASSWORD, None)
        .await
        .expect_err("old password");
    assert_eq!(old.code(), Some(ErrorCode::InvalidCredentials));
    app.client()
        .login("ann", "new password 1", None)
        .await
        .expect("new password");
}

#[tokio::test]
async fn a_connection_whose_device_is_logged_out_ends() {
    let app = spawn_app().await;
    let (ann, _) = app.user("ann").await;
    let mut conn = connect(&ann).await;
    // Log the same device out through another client holding its session.
    let same_device =
        confab_sdk::Client::with_session(&app.base_url, ann.session().expect("session"));
    same_device.logout().await.expect("logout");
    let err = conn
        .wait_for(WAIT, |e| matches!(e, confab_sdk::Event::Error(_)))
        .await
        .expect("told why");
    assert!(
        matches!(&err, confab_sdk::Event::Error(e) if e.code == ErrorCode::InvalidRefreshToken),
        "{err:?}"
    );
    let end =
        tokio::time::timeout(WAIT, async { while conn.next_event().await.is_some() {} }).await;
    assert!(
        end.is_ok(),
        "the connection stops instead of retrying forever"
    );
}

/// Waits until the server refuses an access token (its lifetime ran out).
/// Expiry is a wall-clock time on the server with nothing to subscribe to,
/// so this asks `/v1/users/me` (bypassing the SDK's refresh) every 50 ms.
async fn wait_until_refused(app: &TestApp, access_token: &str) {
    let http = app.http();
    let url = format!("{}/v1/users/me", app.base_url);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let resp = http
            .get(&url)
            .bearer_auth(access_token)
            .send()
            .await
            .expect("GET /v1/users/me");
        if resp.status() == 401 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the access token is still accepted after {WAIT:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn expired_access_tokens_are_refreshed_by_the_sdk() {
    let app = spawn_app_with(|c| c.auth.access_ttl_s = 1).await;
    let (ann, _) = app.user("ann").await;
    let (bob, bob_user) = app.user("bob").await;
    let conv = direct(&ann, &bob_user).await;
    let before = ann.session().expect("session");
    wait_until_refused(&app, &before.access_token).await;
    // HTTP: a 401 `unauthorized` makes the SDK refresh once and retry.
    assert_eq!(ann.me().await.expect("me after expiry").username, "ann");
    let after = ann.session().expect("session");
    assert_ne!(after.access_token, before.access_token);
    assert_ne!(after.refresh_token, before.refresh_token);
    // WebSocket: the upgrade is refused with 401, the SDK refreshes and
    // connects, and messages flow.
    wait_until_refused(&app, &after.access_token).await;
    let mut b = connect(&bob).await;
    let a = connect(&ann).await;
    a.send_text(conv.id, "still here").await.expect("send");
    assert_eq!(b.next_message(WAIT).await.expect("bob").seq, 1);
}

#[tokio::test]
async fn registration_rules_answer_with_their_codes() {
    let app = spawn_app().await;
    let c = app.client();
    let cases = [
        ("ab", PASSWORD, ErrorCode::InvalidUsername),
        ("has space", PASSWORD, ErrorCode::InvalidUsername),
        (&"x".repeat(33), PASSWORD, ErrorCode::InvalidUsername),
        ("goodname", "short", ErrorCode::WeakPassword),
    ];
    for (name, pw, code) in cases {
        let err = c.register(name, pw, None).await.expect_err(name);
        assert_eq!(err.code(), Some(code), "{name}");
        assert_eq!(err.status(), Some(400), "{name}");
    }
}

#[tokio::test]
async fn profiles_and_search() {
    let app = spawn_app().await;
    let (ann, ann_user) = app.user("ann").await;
    app.user("anna").await;
    app.user("bob").await;
    let found = ann.search_users("AN").await.expect("search");
    let names: Vec<_> = found.iter().map(|u| u.username.as_str()).collect();
    assert_eq!(names, vec!["ann", "anna"]);

    let patch = UpdateProfileRequest {
        display_name: Some("Ann!".into()),
        status_text: Some(Some("on holiday".into())),
        ..Default::default()
    };
    let me = ann.update_me(&patch).await.expect("patch");
    assert_eq!(me.display_name, "Ann!");
    assert_eq!(me.status_text.as_deref(), Some("on holiday"));
    let clear = UpdateProfileRequest {
        status_text: Some(None),
        ..Default::default()
    };
    let me = ann.update_me(&clear).await.expect("clear");
    assert_eq!(me.status_text, None);
    assert_eq!(me.display_name, "Ann!", "fields not named stay");
    assert_eq!(
        ann.user(ann_user.id).await.expect("by id").display_name,
        "Ann!"
    );
    let missing = ann.user(999_999).await.expect_err("missing");
    assert_eq!(missing.code(), Some(ErrorCode::NotFound));

    // Several profiles in one request (member lists), unknown ids left out.
    let bob = &ann.search_users("bob").await.expect("bob")[0];
    let some = ann
        .users(&[bob.id, 999_999, ann_user.id, bob.id])
        .await
        .expect("by ids");
    let names: Vec<_> = some.iter().map(|u| u.username.as_str()).collect();
    assert_eq!(names, vec!["ann", "bob"]);
    let too_many: Vec<i64> = (1..=101).collect();
    for bad in [&[][..], &too_many[..]] {
        let e = ann.users(bad).await.expect_err("bad ids");
        assert_eq!(e.code(), Some(ErrorCode::BadRequest));
    }
    let token = ann.session().expect("session").access_token;
    for query in ["ids=1,x", "q=an&ids=1", ""] {
        let r = app
            .http()
            .get(format!("{}/v1/users?{query}", app.base_url))
            .bearer_auth(&token)
            .send()
            .await
            .expect("GET");
        assert_eq!(r.status(), 400, "{query}");
    }
}

#[tokio::test]
async fn http_errors_have_the_json_shape() {
    let app = spawn_app().await;
    let http = app.http();
    let cases = [
        (
            http.get(format!("{}/v1/users/me", app.base_url)),
            401,
            "unauthorized",
        ),
        (
            http.get(format!("{}/v1/users/me", app.base_url))
                .bearer_auth("garbage"),
            401,
            "unauthorized",
        ),
        (
            http.get(format!("{}/v1/nope", app.base_url)),
            404,
            "not_found",
        ),
        (
            http.post(format!("{}/v1/auth/register", app.base_url))
                .header("content-type", "application/json")
                .body("{not json"),
            400,
            "bad_request",
        ),
        (
            http.post(format!("{}/v1/auth/register", app.base_url))
                .header("content-type", "application/json")
                .body(format!(
                    r#"{{"username":"x","password":"{}"}}"#,
                    "p".repeat(2 << 20)
                )),
            413,
            "message_too_large",
        ),
    ];
    for (req, status, code) in cases {
        let resp = req.send().await.expect("send");
        assert_eq!(resp.status().as_u16(), status, "{code}");
        let body: serde_json::Value = resp.json().await.expect("json error body");
        assert_eq!(body["error"]["code"], code);
        assert!(body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
    }
}
