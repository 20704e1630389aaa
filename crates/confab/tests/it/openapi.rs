//! The OpenAPI document (`GET /v1/openapi.json`): it lists every route the
//! router has and nothing else, and Schemathesis, run against a real
//! server as a registered user, finds no 5xx and no answer that breaks it.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{spawn_app, TestApp, PASSWORD};

/// Methods an OpenAPI path item may hold that axum routes.
const METHODS: &[&str] = &["get", "post", "put", "patch", "delete", "head", "options"];

/// Every (path, method) the document lists.
fn operations(doc: &Value) -> BTreeSet<(String, String)> {
    let mut ops = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            if METHODS.contains(&method.as_str()) {
                ops.insert((path.clone(), method.clone()));
            }
        }
    }
    ops
}

/// A concrete URL path for a templated one.
fn concrete(path: &str) -> String {
    path.replace("{emoji}", "x")
        .replace("{id}", "1")
        .replace("{user_id}", "1")
        .replace("{seq}", "1")
        .replace("{provider}", "x")
}

/// Registers and logs in `name` over plain HTTP; returns the access token.
async fn token(app: &TestApp, name: &str) -> String {
    let http = app.http();
    let r = http
        .post(format!("{}/v1/auth/register", app.base_url))
        .json(&serde_json::json!({"username": name, "password": PASSWORD}))
        .send()
        .await
        .expect("register");
    assert_eq!(r.status(), 201);
    let r: Value = http
        .post(format!("{}/v1/auth/login", app.base_url))
        .json(&serde_json::json!({"username": name, "password": PASSWORD}))
        .send()
        .await
        .expect("login")
        .json()
        .await
        .expect("tokens");
    r["access_token"].as_str().expect("token").to_owned()
}

#[tokio::test]
async fn the_document_is_served_without_auth_and_is_the_routers() {
    let app = spawn_app().await;
    let r = app
        .http()
        .get(format!("{}/v1/openapi.json", app.base_url))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-type"].to_str().expect("type"),
        "application/json"
    );
    let served: Value = r.json().await.expect("json");
    assert_eq!(served["openapi"], "3.1.0");
    assert_eq!(served, confab_server::openapi());
    // The router's own list (what `routes()` registered) is what is served.
    let registered = confab_server::routes().into_openapi();
    let registered = serde_json::to_value(&registered).expect("json");
    assert_eq!(operations(&registered), operations(&served));
    // Bearer security, the error shape and the codes are there.
    assert_eq!(
        served["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    let taken = &served["paths"]["/v1/auth/register"]["post"]["responses"]["409"];
    assert_eq!(
        taken["content"]["application/json"]["schema"]["properties"]["error"]["properties"]["code"]
            ["enum"],
        serde_json::json!(["username_taken"])
    );
    assert!(served["paths"]["/v1/ws"]["get"]["responses"]["101"].is_object());
    app.stop().await;
}

/// Every documented operation exists on the live router (it is neither
/// answered 405 nor by the fallback's "no such endpoint"), and on each
/// documented path every method the document does not list is 405.
#[tokio::test]
async fn every_route_is_documented_and_every_documented_route_exists() {
    let app = spawn_app().await;
    let bearer = format!("Bearer {}", token(&app, "routes").await);
    let doc = confab_server::openapi();
    let ops = operations(&doc);
    let paths: BTreeSet<&String> = ops.iter().map(|(p, _)| p).collect();
    assert!(ops.len() >= 50, "only {} operations documented", ops.len());
    let http = app.http();
    for path in paths {
        let url = format!("{}{}", app.base_url, concrete(path));
        for method in METHODS {
            let documented = ops.contains(&(path.clone(), (*method).to_owned()));
            // axum answers HEAD wherever GET is routed.
            if *method == "head" && !documented && ops.contains(&(path.clone(), "get".to_owned())) {
                continue;
            }
            let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
            let r = http
                .request(m, &url)
                .header("authorization", &bearer)
                .header("tus-resumable", "1.0.0")
                .send()
                .await
                .expect("request");
            let status = r.status().as_u16();
            let body = r.text().await.unwrap_or_default();
            if documented {
                assert_ne!(status, 405, "{method} {path} is documented but not routed");
                assert!(
                    !body.contains("no such endpoint"),
                    "{method} {path} is documented but reached the fallback"
                );
            } else {
                assert_eq!(
                    status, 405,
                    "{method} {path} answers {status} but is not documented: {body}"
                );
            }
        }
    }
    app.stop().await;
}

/// Paths outside the document are not routed: the router is built only
/// from `routes!` (utoipa-axum), which documents what it routes. A plain
/// `.route(` in the server would add an undocumented route, so none may
/// appear but the metrics router of the separate metrics address.
#[test]
fn the_server_adds_no_route_outside_the_documented_router() {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../server/src");
    let mut offenders = Vec::new();
    let mut stack = vec![src];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("read");
            for (n, line) in text.lines().enumerate() {
                let plain = [".route(", ".route_service(", ".nest_service("]
                    .iter()
                    .any(|p| line.contains(p));
                let metrics_address = line.contains(r#".route("/metrics", get(health::metrics))"#);
                if plain && !metrics_address && !line.trim_start().starts_with("//") {
                    offenders.push(format!("{}:{}: {}", path.display(), n + 1, line.trim()));
                }
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "routes added outside utoipa-axum's routes! (undocumented): {offenders:#?}"
    );
}

/// Schemathesis (PyPI, pinned in scripts/test) against a real server as a
/// registered user: every operation is called with data generated from the
/// document, and every answer must be no 5xx, a documented status with a
/// documented content type, and a body that fits the documented schema
/// (error codes included: each error response lists its codes).
///
/// Left out, because running them would end the run's own session or
/// cannot be exercised over plain HTTP: `POST /v1/auth/logout` and
/// `POST /v1/auth/password` (they revoke the token every later request
/// uses), and `GET /v1/ws` (a WebSocket upgrade).
#[tokio::test]
async fn schemathesis_finds_no_server_error_and_no_schema_mismatch() {
    let app = spawn_app().await;
    let bearer = token(&app, "schemathesis").await;
    let started = Instant::now();
    let report = tempfile::tempdir().expect("tempdir");
    // As a module of the python3 that has it, wherever pip put its script.
    let mut cmd = tokio::process::Command::new("python3");
    cmd.args(["-m", "schemathesis.cli", "run"])
        .arg(format!("{}/v1/openapi.json", app.base_url))
        .args(["--url", app.base_url.as_str()])
        .arg("-H")
        .arg(format!("Authorization: Bearer {bearer}"))
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
        ])
        .args(["--exclude-path", "/v1/auth/logout"])
        .args(["--exclude-path", "/v1/auth/password"])
        .args(["--exclude-path", "/v1/ws"])
        // Bounded and repeatable: a few cases per operation, one seed.
        .args(["--phases", "examples,coverage,fuzzing"])
        .args(["--max-examples", "30"])
        .args(["--seed", "20261204"])
        .args(["--workers", "2"])
        .args(["--request-timeout", "20"])
        .args(["--no-shrink"])
        .arg("--report-dir")
        .arg(report.path())
        // Its cache (`.schemathesis/`, crashes to replay) goes in the temp
        // dir too: every run starts clean and the source tree is left alone.
        .current_dir(report.path())
        // tus' `application/offset+octet-stream` bodies (a hooks module).
        .env("SCHEMATHESIS_HOOKS", "schemathesis_hooks")
        .env(
            "PYTHONPATH",
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it"),
        )
        .env("NO_COLOR", "1")
        .env("SCHEMATHESIS_TELEMETRY", "false")
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(600), cmd.output())
        .await
        .expect("schemathesis finishes within 10 minutes")
        .expect("schemathesis runs (scripts/test installs it: pip install schemathesis)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!(
        "schemathesis took {:.0} s\n{stdout}\n{}",
        started.elapsed().as_secs_f64(),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "schemathesis found problems (see above)"
    );
    // It tested the operations, not nothing.
    assert!(
        stdout.contains("API Operations") || stdout.contains("operations"),
        "no summary in schemathesis' output"
    );
    app.stop().await;
}
