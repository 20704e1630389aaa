//! The OpenAPI 3.1 document of the HTTP API, served at
//! `GET /v1/openapi.json`.
//!
//! Nothing here is written by hand: every route is added to the router by
//! `utoipa_axum::routes!` from its handler's `#[utoipa::path]` annotation
//! (method, path, parameters, body, responses), so the router and the
//! document are made from the same source and cannot disagree. The
//! schemas are the proto crate's wire types (`ToSchema` under its
//! `openapi` feature).
//!
//! Errors are documented by code: a handler lists the codes it answers
//! with as `Errors<(code::NotFound, code::Forbidden)>` among its
//! responses; each becomes a response at the code's HTTP status whose
//! schema is `{"error": {"code", "message"}}` with `code` limited to the
//! codes listed for that status. [`finish`] adds the codes every route of
//! a kind can answer (`unauthorized` behind a bearer token, `bad_request`
//! and `message_too_large` for a JSON body, `not_found` for a malformed
//! path parameter, `unavailable` when storage is down), so a handler lists
//! only its own.

use std::collections::{BTreeMap, BTreeSet};
use std::marker::PhantomData;

use axum::body::Bytes;
use axum::http::header;
use axum::response::IntoResponse;
use axum::Extension;
use confab_proto::ErrorCode;
use serde_json::{json, Value};
use utoipa::openapi::{RefOr, Response};
use utoipa::IntoResponses;

/// The name of the bearer-token security scheme (access tokens).
pub const BEARER: &str = "bearer";
/// The name of the metrics-token security scheme (`http.metrics_token`).
pub const METRICS_TOKEN: &str = "metrics_token";
/// The extension that lists an error response's codes.
const CODES_KEY: &str = "x-error-codes";

/// One error code as a type, for [`Errors`].
pub trait Code {
    /// The code.
    const CODE: ErrorCode;
}

/// A tuple of [`Code`]s.
pub trait Codes {
    /// The codes, in order.
    fn codes() -> Vec<ErrorCode>;
}

macro_rules! codes_for_tuples {
    ($($t:ident),+) => {
        impl<$($t: Code),+> Codes for ($($t,)+) {
            fn codes() -> Vec<ErrorCode> {
                vec![$($t::CODE),+]
            }
        }
    };
}
codes_for_tuples!(A);
codes_for_tuples!(A, B);
codes_for_tuples!(A, B, C);
codes_for_tuples!(A, B, C, D);
codes_for_tuples!(A, B, C, D, E);
codes_for_tuples!(A, B, C, D, E, F);
codes_for_tuples!(A, B, C, D, E, F, G);
codes_for_tuples!(A, B, C, D, E, F, G, H);

/// The error codes as types, named like [`ErrorCode`]'s variants.
pub mod code {
    use super::Code;
    use confab_proto::ErrorCode;

    macro_rules! codes {
        ($($name:ident),+ $(,)?) => {
            $(
                #[doc = concat!("[`ErrorCode::", stringify!($name), "`].")]
                pub struct $name;
                impl Code for $name {
                    const CODE: ErrorCode = ErrorCode::$name;
                }
            )+
        };
    }
    codes!(
        BadRequest,
        BadFrame,
        InvalidUsername,
        WeakPassword,
        UsernameTaken,
        InvalidCredentials,
        Unauthorized,
        InvalidRefreshToken,
        Forbidden,
        NotFound,
        MessageTooLarge,
        RateLimited,
        Unavailable,
        Blocked,
        NotFriends,
        MediaTooLarge,
        GroupFull,
        Internal,
        OidcStateInvalid,
        OidcFailed,
        OidcCodeInvalid,
        OidcIdentityTaken,
        EncryptionRequired,
        EpochConflict,
        InvalidKeyPackage,
        KeyPackageLimit,
    );
}

/// The error responses of an operation: `Errors<(code::NotFound,)>` in a
/// `#[utoipa::path]`'s `responses(...)`.
pub struct Errors<C>(PhantomData<C>);

impl<C: Codes> IntoResponses for Errors<C> {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        let codes: BTreeSet<ErrorCode> = C::codes().into_iter().collect();
        error_responses(&codes)
            .into_iter()
            .map(|(status, v)| {
                let response: Response =
                    serde_json::from_value(v).expect("an error response is a valid Response");
                (status, RefOr::T(response))
            })
            .collect()
    }
}

/// One response per HTTP status for `codes`, as JSON.
fn error_responses(codes: &BTreeSet<ErrorCode>) -> BTreeMap<String, Value> {
    let mut by_status: BTreeMap<u16, Vec<ErrorCode>> = BTreeMap::new();
    for c in codes {
        by_status.entry(c.http_status()).or_default().push(*c);
    }
    by_status
        .into_iter()
        .map(|(status, codes)| (status.to_string(), error_response(&codes)))
        .collect()
}

/// An error response whose `code` is one of `codes`.
fn error_response(codes: &[ErrorCode]) -> Value {
    let names: Vec<&str> = codes.iter().map(|c| c.as_str()).collect();
    let listed: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
    json!({
        "description": format!("Error {}", listed.join(", ")),
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {
                        "error": {
                            "type": "object",
                            "required": ["code", "message"],
                            "properties": {
                                "code": {"type": "string", "enum": names},
                                "message": {"type": "string"}
                            }
                        }
                    }
                }
            }
        },
        CODES_KEY: names,
    })
}

/// Operations that touch no storage and so never answer `unavailable`.
const NEVER_UNAVAILABLE: &[&str] = &["/healthz", "/readyz", "/metrics", "/v1/openapi.json"];

/// Completes the document the router collected: title, the security
/// schemes, the shared `ErrorBody` schema, and the error codes implied by
/// an operation's kind (see the module doc). Returns it as JSON.
pub fn finish(api: utoipa::openapi::OpenApi) -> Value {
    let mut doc = serde_json::to_value(&api).expect("the document serializes");
    doc["openapi"] = json!("3.1.0");
    doc["info"] = json!({
        "title": "Confab HTTP API",
        "version": env!("CARGO_PKG_VERSION"),
        "description": "The HTTP API of a Confab node (see docs/protocol.md). Errors are \
            `{\"error\": {\"code\", \"message\"}}`; each operation lists the codes it can \
            answer with. Authenticated operations take `Authorization: Bearer <access_token>` \
            from `POST /v1/auth/login`. The WebSocket protocol spoken after `GET /v1/ws` is \
            described in docs/protocol.md.",
        "license": {"name": "MIT OR Apache-2.0", "identifier": "MIT OR Apache-2.0"},
    });
    let components = doc
        .as_object_mut()
        .expect("the document is an object")
        .entry("components")
        .or_insert_with(|| json!({}));
    components["securitySchemes"] = json!({
        BEARER: {
            "type": "http",
            "scheme": "bearer",
            "description": "An access token from `POST /v1/auth/login` or `/v1/auth/refresh`."
        },
        METRICS_TOKEN: {
            "type": "http",
            "scheme": "bearer",
            "description": "The node's `http.metrics_token`."
        }
    });
    if let Some(paths) = doc["paths"].as_object_mut() {
        for (path, item) in paths.iter_mut() {
            let Some(item) = item.as_object_mut() else {
                continue;
            };
            for (method, op) in item.iter_mut() {
                imply_errors(path, method, op);
            }
        }
    }
    doc
}

/// Adds the codes an operation answers because of what it is, and
/// regroups its error responses by status.
fn imply_errors(path: &str, method: &str, op: &mut Value) {
    let Some(responses) = op.get("responses").and_then(Value::as_object) else {
        return;
    };
    let mut codes: BTreeSet<ErrorCode> = BTreeSet::new();
    let mut taken: BTreeSet<String> = BTreeSet::new();
    for (status, r) in responses {
        match r.get(CODES_KEY).and_then(Value::as_array) {
            Some(listed) => codes.extend(
                listed
                    .iter()
                    .filter_map(|c| serde_json::from_value::<ErrorCode>(c.clone()).ok()),
            ),
            None => {
                taken.insert(status.clone());
            }
        }
    }
    let secured = op
        .get("security")
        .and_then(Value::as_array)
        .is_some_and(|s| s.iter().any(|r| r.get(BEARER).is_some()));
    if secured {
        codes.insert(ErrorCode::Unauthorized);
    }
    let json_body = op
        .pointer("/requestBody/content/application~1json")
        .is_some();
    if json_body {
        codes.insert(ErrorCode::BadRequest);
        codes.insert(ErrorCode::MessageTooLarge);
    }
    let params = op.get("parameters").and_then(Value::as_array);
    let has = |place: &str| {
        params.is_some_and(|ps| ps.iter().any(|p| p.get("in") == Some(&json!(place))))
    };
    if has("path") && method != "options" {
        codes.insert(ErrorCode::NotFound);
    }
    if has("query") {
        codes.insert(ErrorCode::BadRequest);
    }
    // tus discovery (`OPTIONS`) reads only the configuration.
    if !NEVER_UNAVAILABLE.contains(&path) && method != "options" {
        codes.insert(ErrorCode::Unavailable);
    }
    // A HEAD answer has no body: its errors are statuses only.
    let head = method == "head";
    let Some(responses) = op.get_mut("responses").and_then(Value::as_object_mut) else {
        return;
    };
    responses.retain(|_, r| r.get(CODES_KEY).is_none());
    for (status, mut response) in error_responses(&codes) {
        if taken.contains(&status) {
            continue;
        }
        if head {
            if let Some(r) = response.as_object_mut() {
                r.remove("content");
            }
        }
        responses.insert(status, response);
    }
}

/// The finished document, ready to serve.
#[derive(Clone)]
pub struct Document(pub Bytes);

/// `GET /v1/openapi.json`: this document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "meta",
    responses((status = 200, description = "The OpenAPI 3.1 document of this API", content_type = "application/json", body = Object)),
)]
pub async fn document(Extension(doc): Extension<Document>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], doc.0)
}

/// Raw bytes in a request or response body (`type: string, format:
/// binary`).
#[derive(utoipa::ToSchema)]
#[schema(value_type = String, format = Binary)]
pub struct Binary(#[allow(dead_code)] Vec<u8>);

/// The form of a multipart upload (`POST /v1/media`): the first part
/// with a file name is the upload.
#[derive(utoipa::ToSchema)]
pub struct UploadForm {
    /// The file, with a file name and (optionally) its type.
    #[allow(dead_code)]
    #[schema(value_type = String, format = Binary)]
    file: Vec<u8>,
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    #[test]
    fn every_operation_lists_its_error_codes_at_their_statuses() {
        let doc = crate::openapi();
        if let Ok(path) = std::env::var("CONFAB_DUMP_OPENAPI") {
            std::fs::write(path, serde_json::to_vec_pretty(&doc).expect("json")).expect("write");
        }
        let paths = doc["paths"].as_object().expect("paths");
        assert!(paths.len() > 30, "{}", paths.len());
        for (path, item) in paths {
            for (method, op) in item.as_object().expect("item") {
                let responses = op["responses"].as_object().expect("responses");
                for (status, r) in responses {
                    let Some(codes) = r.get(super::CODES_KEY).and_then(Value::as_array) else {
                        continue;
                    };
                    for c in codes {
                        let code: confab_proto::ErrorCode =
                            serde_json::from_value(c.clone()).expect("a known code");
                        assert_eq!(
                            code.http_status().to_string(),
                            *status,
                            "{method} {path}: {code} under {status}"
                        );
                    }
                }
                // tus discovery (`OPTIONS`) answers from the configuration
                // alone and cannot fail.
                if path != "/healthz" && path != "/v1/openapi.json" && method != "options" {
                    assert!(
                        responses
                            .keys()
                            .any(|s| s.starts_with('4') || s.starts_with('5')),
                        "{method} {path} documents no error"
                    );
                }
            }
        }
    }
}
