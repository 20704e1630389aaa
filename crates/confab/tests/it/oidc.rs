//! Sign-in with OpenID Connect against a real provider the test starts:
//! npm `oidc-provider` (e2e/oidc-provider.mjs) on a loopback port, with a
//! confidential client registered for the server's redirect URI. Its
//! development login form takes any account id. The provider's pages are
//! driven over HTTP (a cookie-keeping client submitting its forms), the
//! CLI as a child process, the browser app in Chromium.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use confab_sdk::proto::api::{OidcClient, OidcStartResponse};
use confab_sdk::{Client, OidcOutcome};
use confab_server::config::{OidcProviderConfig, Secret};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use confab_sdk::ErrorCode;

use crate::support::{assert_refused, cli, spawn_app_on, TestApp, WAIT};

const CLIENT_ID: &str = "confab-test";
const CLIENT_SECRET: &str = "confab-test-secret-0123456789";

/// The provider process; killed on drop.
struct Provider {
    issuer: String,
    _child: tokio::process::Child,
}

async fn start_provider(redirect_uri: &str) -> Provider {
    let root = crate::browser::repo_root();
    assert!(
        root.join("e2e/node_modules/oidc-provider/package.json")
            .exists(),
        "e2e/node_modules/oidc-provider is missing: run scripts/test (or `npm ci --prefix e2e`)"
    );
    let mut child = tokio::process::Command::new("node")
        .arg("e2e/oidc-provider.mjs")
        .current_dir(&root)
        .env("OIDC_CLIENT_ID", CLIENT_ID)
        .env("OIDC_CLIENT_SECRET", CLIENT_SECRET)
        .env("OIDC_REDIRECT_URI", redirect_uri)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("node (Node.js) on PATH: run scripts/test, which installs it");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let issuer = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.expect("provider stdout") {
            if let Some(url) = line.strip_prefix("oidc-provider listening on ") {
                return url.trim().to_owned();
            }
        }
        panic!("the provider exited before it served");
    })
    .await
    .expect("the provider starts within 30 s");
    // Keep reading, so the provider's later notices never hit a closed pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Provider {
        issuer,
        _child: child,
    }
}

/// A server offering sign-in with a freshly started provider ("local",
/// named in Chinese to show names are not ASCII-only).
struct Setup {
    app: TestApp,
    provider: Provider,
    _dir: tempfile::TempDir,
}

async fn setup() -> Setup {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let provider = start_provider(&format!("http://{addr}/v1/auth/oidc/callback")).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let issuer = provider.issuer.clone();
    let app = spawn_app_on(listener, dir.path(), move |c| {
        c.oidc.providers.push(OidcProviderConfig {
            id: "local".into(),
            name: "本地身份".into(),
            issuer,
            client_id: CLIENT_ID.into(),
            client_secret: Some(Secret::new(CLIENT_SECRET)),
            scopes: vec!["profile".into()],
        });
    })
    .await;
    Setup {
        app,
        provider,
        _dir: dir,
    }
}

/// A client for the provider's pages: keeps cookies, follows redirects
/// until the one back to Confab's callback, which it does not follow.
fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::custom(|attempt| {
            if attempt.url().path() == "/v1/auth/oidc/callback" {
                attempt.stop()
            } else if attempt.previous().len() > 20 {
                attempt.error("too many redirects")
            } else {
                attempt.follow()
            }
        }))
        .timeout(WAIT)
        .build()
        .expect("client")
}

/// The first `<form ... action="...">` of a page, made absolute.
fn form_action(page: &str, base: &reqwest::Url) -> reqwest::Url {
    let re = regex::Regex::new(r#"<form[^>]*action="([^"]+)""#).expect("regex");
    let action = re
        .captures(page)
        .unwrap_or_else(|| panic!("no form on the provider's page: {page}"))[1]
        .replace("&amp;", "&");
    base.join(&action).expect("form action")
}

/// The hidden inputs of a page's form (e.g. the provider's `prompt`).
fn hidden_fields(page: &str) -> Vec<(String, String)> {
    let re =
        regex::Regex::new(r#"<input type="hidden" name="([^"]+)" value="([^"]*)""#).expect("regex");
    re.captures_iter(page)
        .map(|c| (c[1].to_owned(), c[2].to_owned()))
        .collect()
}

/// Signs in at the provider as `account` (its login form, then its
/// consent form) and returns the redirect back to Confab's callback.
async fn sign_in_at_provider(authorization_url: &str, account: &str) -> String {
    let http = browser();
    let login_page = http.get(authorization_url).send().await.expect("authorize");
    let base = login_page.url().clone();
    let page = login_page.text().await.expect("login page");
    assert!(page.contains("name=\"login\""), "not a login form: {page}");
    let mut fields = hidden_fields(&page);
    fields.push(("login".into(), account.into()));
    fields.push(("password".into(), "anything".into()));
    let mut resp = http
        .post(form_action(&page, &base))
        .form(&fields)
        .send()
        .await
        .expect("login");
    // Then the consent form (once per client and account), then back to us.
    for _ in 0..3 {
        if resp.status().is_redirection() {
            let location = resp
                .headers()
                .get("location")
                .and_then(|v| v.to_str().ok())
                .expect("location")
                .to_owned();
            return resp
                .url()
                .join(&location)
                .expect("callback url")
                .to_string();
        }
        let base = resp.url().clone();
        let page = resp.text().await.expect("page");
        resp = http
            .post(form_action(&page, &base))
            .form(&hidden_fields(&page))
            .send()
            .await
            .expect("confirm");
    }
    panic!("the provider never redirected back");
}

/// GETs the callback like a browser would, without following its redirect.
async fn callback(url: &str) -> reqwest::Response {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
        .get(url)
        .send()
        .await
        .expect("callback")
}

/// The code on the CLI's callback page.
async fn code_from_page(resp: reqwest::Response) -> String {
    assert_eq!(resp.status(), 200, "callback answered {}", resp.status());
    let page = resp.text().await.expect("page");
    let re = regex::Regex::new(r#"<pre id="oidc-code">([A-Za-z0-9_-]+)</pre>"#).expect("regex");
    re.captures(&page)
        .unwrap_or_else(|| panic!("no code on the page: {page}"))[1]
        .to_owned()
}

async fn error_code(resp: reqwest::Response) -> (u16, String) {
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.expect("json error");
    (
        status,
        body["error"]["code"].as_str().unwrap_or("").to_owned(),
    )
}

/// Start (as the CLI would), sign in at the provider, return the code.
async fn cli_flow(client: &Client, account: &str) -> (OidcStartResponse, String) {
    let start = client
        .oidc_start("local", OidcClient::Cli)
        .await
        .expect("start");
    let back = sign_in_at_provider(&start.authorization_url, account).await;
    let code = code_from_page(callback(&back).await).await;
    (start, code)
}

#[tokio::test]
async fn first_sign_in_picks_a_username_and_the_next_lands_in_the_same_account() {
    let s = setup().await;
    let providers = s.app.client().oidc_providers().await.expect("providers");
    assert_eq!(providers.len(), 1);
    assert_eq!(
        (providers[0].id.as_str(), providers[0].name.as_str()),
        ("local", "本地身份")
    );

    // First sign-in of a provider account with a Chinese name.
    let client = s.app.client();
    let (start, code) = cli_flow(&client, "王小明").await;
    let offer = match client.oidc_exchange(&code, &start.flow, Some("test")).await {
        Ok(OidcOutcome::SignupRequired(offer)) => offer,
        other => panic!("expected a signup, got {other:?}"),
    };
    assert_eq!(offer.display_name, "王小明");
    assert_eq!(
        offer.suggested_username, None,
        "no valid username in a CJK name"
    );
    // The code was single-use.
    let again = client.oidc_exchange(&code, &start.flow, None).await;
    assert_refused(again, 401, ErrorCode::OidcCodeInvalid, "again");
    // A taken username keeps the signup token for another try.
    let (_taken, _) = s.app.user("taken").await;
    let refused = client
        .oidc_signup(&offer.signup_token, "taken", None, None)
        .await;
    assert_refused(refused, 409, ErrorCode::UsernameTaken, "refused");
    let session = client
        .oidc_signup(&offer.signup_token, "xiaoming", None, Some("test"))
        .await
        .expect("signup");
    assert_eq!(session.user.username, "xiaoming");
    assert_eq!(session.user.display_name, "王小明");
    // The signup token is spent.
    let twice = s
        .app
        .client()
        .oidc_signup(&offer.signup_token, "xiaoming2", None, None)
        .await;
    assert_refused(twice, 401, ErrorCode::OidcCodeInvalid, "twice");
    // The new account works: it can chat.
    let me = client.me().await.expect("me");
    assert_eq!(me.id, session.user.id);

    // Second sign-in: same account, no signup.
    let other = s.app.client();
    let (start, code) = cli_flow(&other, "王小明").await;
    match other.oidc_exchange(&code, &start.flow, None).await {
        Ok(OidcOutcome::SignedIn(again)) => {
            assert_eq!(again.user.id, session.user.id);
            assert_ne!(again.device_id, session.device_id, "a new device");
        }
        other => panic!("expected a sign-in, got {other:?}"),
    }
    // A different provider account is a different person.
    let (start, code) = cli_flow(&other, "someone_else").await;
    match other.oidc_exchange(&code, &start.flow, None).await {
        Ok(OidcOutcome::SignupRequired(offer)) => {
            assert_eq!(offer.suggested_username.as_deref(), Some("someone_else"));
        }
        other => panic!("expected a signup, got {other:?}"),
    }
    // An OIDC-only account has no password that works.
    let login = s.app.client().login("xiaoming", "!oidc", None).await;
    assert_refused(login, 401, ErrorCode::InvalidCredentials, "login");
}

#[tokio::test]
async fn a_password_account_links_a_provider_and_then_signs_in_with_it() {
    let s = setup().await;
    let (alice, alice_user) = s.app.user("alice").await;
    let start = alice
        .oidc_link_start("local", OidcClient::Web)
        .await
        .expect("link start");
    let back = sign_in_at_provider(&start.authorization_url, "alice-at-idp").await;
    // The web client's callback sends the browser to the app with the
    // code in the fragment, never in a query or a token.
    let resp = callback(&back).await;
    assert_eq!(resp.status(), 303);
    let location = resp.headers()["location"]
        .to_str()
        .expect("ascii")
        .to_owned();
    let code = location
        .strip_prefix("/#oidc_code=")
        .unwrap_or_else(|| panic!("unexpected redirect {location}"));
    match alice.oidc_exchange(code, &start.flow, None).await {
        Ok(OidcOutcome::Linked(linked)) => {
            assert_eq!(linked.provider, "local");
            assert_eq!(linked.user.id, alice_user.id);
        }
        other => panic!("expected a link, got {other:?}"),
    }
    let listed: Value = s
        .app
        .http()
        .get(format!("{}/v1/auth/oidc/identities", s.app.base_url))
        .bearer_auth(alice.session().expect("session").access_token)
        .send()
        .await
        .expect("identities")
        .json()
        .await
        .expect("json");
    assert_eq!(listed["identities"][0]["provider"], "local");
    assert_eq!(listed["identities"][0]["subject"], "alice-at-idp");
    assert_eq!(
        listed["identities"][0]["issuer"],
        s.provider.issuer.as_str()
    );

    // Signing in with the provider now lands in alice's account.
    let fresh = s.app.client();
    let (start, code) = cli_flow(&fresh, "alice-at-idp").await;
    match fresh.oidc_exchange(&code, &start.flow, None).await {
        Ok(OidcOutcome::SignedIn(session)) => assert_eq!(session.user.id, alice_user.id),
        other => panic!("expected a sign-in, got {other:?}"),
    }
    // Bob cannot link the same provider account to his.
    let (bob, _) = s.app.user("bob").await;
    let start = bob
        .oidc_link_start("local", OidcClient::Cli)
        .await
        .expect("link start");
    let back = sign_in_at_provider(&start.authorization_url, "alice-at-idp").await;
    let code = code_from_page(callback(&back).await).await;
    let taken = bob.oidc_exchange(&code, &start.flow, None).await;
    assert_refused(taken, 409, ErrorCode::OidcIdentityTaken, "taken");
    // Linking needs a signed-in caller.
    let anonymous = s
        .app
        .http()
        .post(format!("{}/v1/auth/oidc/local/link", s.app.base_url))
        .json(&json!({}))
        .send()
        .await
        .expect("link");
    assert_eq!(error_code(anonymous).await, (401, "unauthorized".into()));
}

#[tokio::test]
async fn forged_replayed_and_tampered_sign_ins_are_refused() {
    let s = setup().await;
    let base = &s.app.base_url;
    // A state the server never made.
    let forged = callback(&format!("{base}/v1/auth/oidc/callback?state=forged&code=x")).await;
    assert_eq!(error_code(forged).await, (400, "oidc_state_invalid".into()));
    let none = callback(&format!("{base}/v1/auth/oidc/callback")).await;
    assert_eq!(error_code(none).await, (400, "oidc_state_invalid".into()));

    // A real sign-in, then the same redirect replayed: the state is spent.
    let client = s.app.client();
    let start = client
        .oidc_start("local", OidcClient::Cli)
        .await
        .expect("start");
    let back = sign_in_at_provider(&start.authorization_url, "mallory").await;
    let code = code_from_page(callback(&back).await).await;
    let replay = callback(&back).await;
    assert_eq!(error_code(replay).await, (400, "oidc_state_invalid".into()));
    // The one-time code without the flow secret of the client that started
    // the sign-in is refused, and spent.
    let stolen = s
        .app
        .client()
        .oidc_exchange(&code, "not-the-flow", None)
        .await;
    assert_refused(stolen, 401, ErrorCode::OidcCodeInvalid, "stolen");
    let late = client.oidc_exchange(&code, &start.flow, None).await;
    assert_refused(late, 401, ErrorCode::OidcCodeInvalid, "late");

    // An ID token with another nonce than the one sent: the provider signs
    // what it was asked for, and the server refuses it.
    let start = client
        .oidc_start("local", OidcClient::Cli)
        .await
        .expect("start");
    let mut url = reqwest::Url::parse(&start.authorization_url).expect("url");
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .map(|(k, v)| {
            let v = if k == "nonce" {
                "another-nonce".into()
            } else {
                v.into_owned()
            };
            (k.into_owned(), v)
        })
        .collect();
    assert!(
        pairs.iter().any(|(k, _)| k == "nonce"),
        "the request carries a nonce"
    );
    assert!(
        pairs
            .iter()
            .any(|(k, v)| k == "code_challenge_method" && v == "S256"),
        "the request uses PKCE"
    );
    url.query_pairs_mut().clear().extend_pairs(&pairs);
    let back = sign_in_at_provider(url.as_str(), "mallory").await;
    assert_eq!(
        error_code(callback(&back).await).await,
        (401, "oidc_failed".into())
    );

    // A different PKCE challenge: the provider refuses the code exchange.
    let start = client
        .oidc_start("local", OidcClient::Cli)
        .await
        .expect("start");
    let mut url = reqwest::Url::parse(&start.authorization_url).expect("url");
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .map(|(k, v)| {
            let v = if k == "code_challenge" {
                "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM".into()
            } else {
                v.into_owned()
            };
            (k.into_owned(), v)
        })
        .collect();
    url.query_pairs_mut().clear().extend_pairs(&pairs);
    let back = sign_in_at_provider(url.as_str(), "mallory").await;
    assert_eq!(
        error_code(callback(&back).await).await,
        (401, "oidc_failed".into())
    );

    // The provider's own refusal, for the web app: back to the app with
    // the error in the fragment.
    let start = client
        .oidc_start("local", OidcClient::Web)
        .await
        .expect("start");
    let state = reqwest::Url::parse(&start.authorization_url)
        .expect("url")
        .query_pairs()
        .find(|(k, _)| k == "state")
        .map(|(_, v)| v.into_owned())
        .expect("state");
    let denied = callback(&format!(
        "{base}/v1/auth/oidc/callback?state={state}&error=access_denied"
    ))
    .await;
    assert_eq!(denied.status(), 303);
    assert_eq!(denied.headers()["location"], "/#oidc_error=oidc_failed");

    // Unknown providers.
    let unknown = s
        .app
        .http()
        .post(format!("{base}/v1/auth/oidc/nope/start"))
        .json(&json!({}))
        .send()
        .await
        .expect("start");
    assert_eq!(error_code(unknown).await, (404, "not_found".into()));
}

#[tokio::test]
async fn the_cli_logs_in_with_the_provider_by_a_pasted_code() {
    let s = setup().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let session = dir.path().join("session.json");
    let login = |username: Option<&'static str>| {
        let mut cmd = cli(&s.app.base_url, &session);
        cmd.args(["login", "--oidc", "local"])
            .args(username)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        cmd
    };
    for (round, username) in [(1, Some("cli_user")), (2, None)] {
        let mut child = login(username).spawn().expect("confab login");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let url = tokio::time::timeout(WAIT, async {
            while let Some(line) = stdout.next_line().await.expect("stdout") {
                if line.starts_with("http://") {
                    return line;
                }
            }
            panic!("the CLI printed no URL");
        })
        .await
        .expect("URL within the wait");
        let back = sign_in_at_provider(&url, "cli-person").await;
        let code = code_from_page(callback(&back).await).await;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin
            .write_all(format!("{code}\n").as_bytes())
            .await
            .expect("paste");
        drop(stdin);
        let rest = tokio::time::timeout(Duration::from_secs(30), async {
            let mut rest = String::new();
            while let Ok(Some(line)) = stdout.next_line().await {
                rest.push_str(&line);
                rest.push('\n');
            }
            rest
        })
        .await
        .expect("the CLI finishes");
        let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
            .await
            .expect("the CLI finishes")
            .expect("output");
        let text = format!("{rest}{}", String::from_utf8_lossy(&out.stderr));
        assert!(
            out.status.success(),
            "round {round}: {:?} {text}",
            out.status
        );
        assert!(
            text.contains("logged in as cli_user"),
            "round {round}: {text}"
        );
    }
    // The saved session is a working one.
    let saved: confab_sdk::Session =
        serde_json::from_str(&std::fs::read_to_string(&session).expect("session file"))
            .expect("session json");
    let me = Client::with_session(&s.app.base_url, saved)
        .me()
        .await
        .expect("me");
    assert_eq!(me.username, "cli_user");
    assert_eq!(me.display_name, "cli-person");
}

#[tokio::test]
async fn people_sign_in_with_the_provider_in_a_real_browser_and_chat() {
    let s = setup().await;
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("e2e-oidc");
    crate::browser::run_e2e_with(&s.app.base_url, &out, &["e2e/oidc.test.mjs"], &[]).await;
}
