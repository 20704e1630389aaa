//! Abuse limits on accounts (issue 15): failed logins slow down per
//! account and per address with `Retry-After`, registrations are limited
//! per address, unknown users and wrong passwords answer alike, and
//! `X-Forwarded-For` counts only behind a trusted proxy.

use serde_json::{json, Value};

use crate::support::*;

async fn login(
    app: &TestApp,
    username: &str,
    password: &str,
    forwarded: Option<&str>,
) -> (u16, Option<String>, Value) {
    let mut req = reqwest::Client::new()
        .post(format!("{}/v1/auth/login", app.base_url))
        .json(&json!({"username": username, "password": password}));
    if let Some(f) = forwarded {
        req = req.header("x-forwarded-for", f);
    }
    let resp = req.send().await.expect("login");
    let status = resp.status().as_u16();
    let retry = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = resp.json().await.unwrap_or(Value::Null);
    (status, retry, body)
}

#[tokio::test]
async fn wrong_passwords_lock_the_account_but_not_its_neighbours() {
    let app = spawn_app_with(|c| {
        c.auth.login_free_failures = 3;
        c.auth.address_free_failures = 100;
    })
    .await;
    app.user("ann").await;
    app.user("bob").await;
    // Unknown user and wrong password: the same answer.
    let (s1, _, unknown) = login(&app, "nobody", "wrong password", None).await;
    let (s2, _, wrong) = login(&app, "ann", "wrong password", None).await;
    assert_eq!((s1, s2), (401, 401));
    assert_eq!(unknown, wrong, "no user enumeration");
    for _ in 0..2 {
        login(&app, "ann", "wrong password", None).await;
    }
    // The third failure locks the account: even the right password waits.
    let (status, retry, body) = login(&app, "ann", PASSWORD, None).await;
    assert_eq!(status, 429);
    assert_eq!(body["error"]["code"], "rate_limited");
    let secs: u64 = retry.expect("Retry-After").parse().expect("seconds");
    assert!(secs >= 1);
    // Another account from the same address is not locked out.
    let (status, _, _) = login(&app, "bob", PASSWORD, None).await;
    assert_eq!(status, 200);
    // An unknown account is throttled exactly like a real one.
    for _ in 0..3 {
        login(&app, "ghost", "wrong password", None).await;
    }
    let (status, retry, _) = login(&app, "ghost", "wrong password", None).await;
    assert_eq!(status, 429);
    assert!(retry.is_some());
}

#[tokio::test]
async fn registrations_are_limited_per_address() {
    let app = spawn_app_with(|c| c.auth.registrations_per_hour = 3).await;
    let register = |name: String| {
        let url = format!("{}/v1/auth/register", app.base_url);
        async move {
            reqwest::Client::new()
                .post(url)
                .json(&json!({"username": name, "password": PASSWORD}))
                .send()
                .await
                .expect("register")
        }
    };
    for i in 0..3 {
        assert_eq!(register(format!("user{i}")).await.status(), 201);
    }
    let refused = register("user3".into()).await;
    assert_eq!(refused.status(), 429);
    assert!(refused.headers().get("retry-after").is_some());
    let body: Value = refused.json().await.expect("body");
    assert_eq!(body["error"]["code"], "rate_limited");
}

#[tokio::test]
async fn forwarded_addresses_count_only_behind_trusted_proxies() {
    // Loopback is the trusted proxy here: each forwarded client has its own
    // allowance.
    let app = spawn_app_with(|c| {
        c.auth.login_free_failures = 100;
        c.auth.address_free_failures = 2;
        c.http.trusted_proxies = vec!["127.0.0.0/8".parse().expect("net")];
    })
    .await;
    app.user("ann").await;
    for _ in 0..2 {
        login(&app, "ann", "wrong", Some("198.51.100.1")).await;
    }
    let (status, _, _) = login(&app, "ann", PASSWORD, Some("198.51.100.1")).await;
    assert_eq!(status, 429, "that client's address is locked");
    let (status, _, _) = login(&app, "ann", PASSWORD, Some("198.51.100.2")).await;
    assert_eq!(status, 200, "another client behind the same proxy is not");

    // Without trust, a forged header changes nothing: the peer is counted.
    let app = spawn_app_with(|c| {
        c.auth.login_free_failures = 100;
        c.auth.address_free_failures = 2;
    })
    .await;
    app.user("ann").await;
    login(&app, "ann", "wrong", Some("198.51.100.1")).await;
    login(&app, "ann", "wrong", Some("198.51.100.2")).await;
    let (status, _, _) = login(&app, "ann", PASSWORD, Some("198.51.100.3")).await;
    assert_eq!(status, 429);
}
