//! Resumable uploads by the tus 1.0 protocol (core, creation, termination)
//! at `/v1/media/uploads/`, so that existing tus clients work.
//!
//! An upload in progress is two files under `<data_dir>/tus/`: `<id>.json`
//! (owner, length, declared type) and `<id>.bin` (the bytes so far, fsynced
//! at the end of every `PATCH`, also an interrupted one). Its offset is the
//! size of `<id>.bin`, so an upload continues from the last committed byte
//! after a dropped connection or a server restart. When the last byte
//! arrives, the file goes through the same checks as `POST /v1/media` and
//! becomes the media item whose `media_id` is the upload's id (the last
//! segment of its `Location`; the final `PATCH` and later `HEAD`s also say
//! it in `Confab-Media-Id`).
//!
//! Uploads in progress count against the owner's quota with their declared
//! length from the moment they are created; a user may have at most
//! `media.max_open_uploads` of them, and one not written to for
//! `media.upload_expiry_s` is deleted. [`Uploads`] keeps that account for
//! this node (rebuilt from the files at start).

use std::path::PathBuf;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use confab_media::tus_headers::{
    declared_type, is_offset_content_type, is_supported_version, is_upload_id, parse_byte_count,
    OFFSET_CONTENT_TYPE, TUS_VERSION,
};
use confab_proto::ErrorCode;
use confab_proto::UserId;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{internal, new_media_id, over_quota, store_upload, too_large, Spooled};
use crate::auth::AuthUser;
use crate::error::{AppError, AppResult};
use crate::extract::ApiPath;
use crate::openapi::{code, Binary, Errors};
use crate::state::AppState;
use crate::uploads::{Busy, Refused};
use confab_proto::ErrorBody;

/// The tus routes, nested under `/v1` with the other media routes.
/// (tus clients are given the creation URL with or without the slash.)
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(discover, create))
        .routes(routes!(discover_slash, create_slash))
        .routes(routes!(status, append, terminate, discover_upload))
        .layer(DefaultBodyLimit::disable())
}

/// The id in an upload's URL.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
struct UploadId {
    /// Upload id: the last segment of the `Location` the creation gave.
    id: String,
}

/// The version header of every tus request but `OPTIONS`.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
struct TusVersion {
    /// The protocol version: `1.0.0` (any other is answered 412).
    #[param(rename = "Tus-Resumable", pattern = "^1\\.0\\.0$", example = "1.0.0")]
    tus_resumable: String,
}

/// The headers of a creation.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
struct CreateParams {
    /// The protocol version: `1.0.0` (any other is answered 412).
    #[param(rename = "Tus-Resumable", pattern = "^1\\.0\\.0$", example = "1.0.0")]
    tus_resumable: String,
    /// The upload's size in bytes (1 to `media.max_upload_bytes`; deferred
    /// lengths are not supported).
    #[param(rename = "Upload-Length", minimum = 1)]
    upload_length: u64,
    /// `key base64(value)` pairs, comma-separated; `filetype` (or
    /// `content-type`, `mimetype`) declares the type.
    #[param(rename = "Upload-Metadata")]
    upload_metadata: Option<String>,
}

/// The answer to `OPTIONS`.
#[derive(utoipa::IntoResponses)]
#[response(
    status = 204,
    description = "What this server supports",
    headers(
        ("Tus-Resumable" = String),
        ("Tus-Version" = String, description = "`1.0.0`"),
        ("Tus-Extension" = String, description = "`creation,termination`"),
        ("Tus-Max-Size" = u64, description = "`media.max_upload_bytes`"),
    )
)]
struct Discovered;

/// A request of another protocol version.
#[derive(utoipa::IntoResponses)]
#[response(
    status = 412,
    description = "`Tus-Resumable` is not `1.0.0`",
    headers(("Tus-Resumable" = String), ("Tus-Version" = String, description = "`1.0.0`"))
)]
struct WrongVersion;

/// A new upload.
#[derive(utoipa::IntoResponses)]
#[response(
    status = 201,
    description = "Created: `PATCH` its bytes to `Location`",
    headers(
        ("Tus-Resumable" = String),
        ("Location" = String, description = "`/v1/media/uploads/<id>`; `<id>` becomes the media id"),
    )
)]
struct Created;

/// What is kept about an upload in progress (`<id>.json`).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Meta {
    owner: UserId,
    length: u64,
    declared: String,
}

/// Deletes abandoned uploads every so often until `shutdown`.
pub async fn expire_abandoned(state: AppState) {
    let expiry = Duration::from_secs(state.config.media.upload_expiry_s.max(1));
    let every = (expiry / 4).clamp(Duration::from_secs(1), Duration::from_secs(600));
    let dir = dir(&state);
    loop {
        tokio::select! {
            _ = state.shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let uploads = state.uploads.clone();
        let d = dir.clone();
        if let Ok(n) = tokio::task::spawn_blocking(move || uploads.expire(&d, expiry)).await {
            if n > 0 {
                tracing::info!(uploads = n, "abandoned resumable uploads deleted");
                crate::metrics::uploads_expired(n);
            }
        }
    }
}

fn dir(state: &AppState) -> PathBuf {
    state.config.data_dir.join("tus")
}

fn paths(state: &AppState, id: &str) -> AppResult<(PathBuf, PathBuf)> {
    if !is_upload_id(id) {
        return Err(AppError::not_found("upload"));
    }
    let d = dir(state);
    Ok((d.join(format!("{id}.json")), d.join(format!("{id}.bin"))))
}

fn tus_headers(out: &mut HeaderMap) {
    out.insert(
        HeaderName::from_static("tus-resumable"),
        HeaderValue::from_static(TUS_VERSION),
    );
}

fn set(out: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        out.insert(HeaderName::from_static(name), v);
    }
}

/// The answer to a request of another protocol version, if it is one.
fn wrong_version(headers: &HeaderMap) -> Option<Response> {
    let v = headers
        .get("tus-resumable")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if is_supported_version(v) {
        return None;
    }
    let mut out = HeaderMap::new();
    tus_headers(&mut out);
    set(&mut out, "tus-version", TUS_VERSION);
    Some((StatusCode::PRECONDITION_FAILED, out).into_response())
}

fn error_with_tus(e: AppError) -> Response {
    let mut r = e.into_response();
    tus_headers(r.headers_mut());
    r
}

/// `OPTIONS /v1/media/uploads/`.
#[utoipa::path(
    options,
    path = "/media/uploads/",
    tag = "uploads",
    responses(Discovered)
)]
async fn discover_slash(state: State<AppState>) -> Response {
    discover(state).await
}

/// `OPTIONS /v1/media/uploads/{id}`.
#[utoipa::path(
    options,
    path = "/media/uploads/{id}",
    tag = "uploads",
    params(UploadId),
    responses(Discovered)
)]
async fn discover_upload(state: State<AppState>) -> Response {
    discover(state).await
}

/// `OPTIONS`: what this server supports.
#[utoipa::path(
    options,
    path = "/media/uploads",
    tag = "uploads",
    responses(Discovered)
)]
async fn discover(State(state): State<AppState>) -> Response {
    let mut out = HeaderMap::new();
    tus_headers(&mut out);
    set(&mut out, "tus-version", TUS_VERSION);
    set(&mut out, "tus-extension", "creation,termination");
    set(
        &mut out,
        "tus-max-size",
        &state.config.media.max_upload_bytes.to_string(),
    );
    (StatusCode::NO_CONTENT, out).into_response()
}

/// The declared type from `Upload-Metadata` (`filetype`, `content-type`
/// or `mimetype`, base64 values as the protocol says).
fn declared_in(headers: &HeaderMap) -> String {
    headers
        .get("upload-metadata")
        .and_then(|v| v.to_str().ok())
        .map(declared_type)
        .unwrap_or_default()
}

/// `POST /v1/media/uploads/` (with the slash).
#[utoipa::path(
    post,
    path = "/media/uploads/",
    tag = "uploads",
    security(("bearer" = [])),
    params(CreateParams),
    responses(Created, WrongVersion, Errors<(code::BadRequest, code::MediaTooLarge, code::RateLimited)>),
)]
async fn create_slash(state: State<AppState>, who: AuthUser, headers: HeaderMap) -> Response {
    create(state, who, headers).await
}

/// `POST /v1/media/uploads/`: creates an upload of `Upload-Length` bytes.
#[utoipa::path(
    post,
    path = "/media/uploads",
    tag = "uploads",
    security(("bearer" = [])),
    params(CreateParams),
    responses(Created, WrongVersion, Errors<(code::BadRequest, code::MediaTooLarge, code::RateLimited)>),
)]
async fn create(State(state): State<AppState>, who: AuthUser, headers: HeaderMap) -> Response {
    if let Some(r) = wrong_version(&headers) {
        return r;
    }
    match create_inner(&state, who.user_id, &headers).await {
        Ok(r) => r,
        Err(e) => error_with_tus(e),
    }
}

async fn create_inner(state: &AppState, owner: UserId, headers: &HeaderMap) -> AppResult<Response> {
    let length: u64 = headers
        .get("upload-length")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_byte_count)
        .ok_or_else(|| {
            AppError::bad_request("Upload-Length is required (deferred lengths are not supported)")
        })?;
    let media = &state.config.media;
    if length > media.max_upload_bytes {
        return Err(too_large(media.max_upload_bytes));
    }
    if length == 0 {
        return Err(AppError::bad_request("an upload needs at least one byte"));
    }
    let used = state.store.media_usage(owner).await?;
    let id = new_media_id();
    match state
        .uploads
        .reserve(&id, owner, length, used.max(0) as u64, media)
    {
        Ok(()) => {}
        Err(Refused::TooMany(max)) => {
            return Err(AppError::new(
                ErrorCode::RateLimited,
                format!(
                "you have {max} uploads in progress: finish or cancel one (DELETE its URL) first"
            ),
            ))
        }
        Err(Refused::OverQuota { pending }) => {
            return Err(over_quota(
                media.user_quota_bytes,
                used.saturating_add(pending.min(i64::MAX as u64) as i64),
            ))
        }
    }
    let created = write_new(state, &id, owner, length, headers).await;
    if created.is_err() {
        state.uploads.forget(&id);
    }
    created
}

/// Writes a reserved upload's files and answers `201 Created`.
async fn write_new(
    state: &AppState,
    id: &str,
    owner: UserId,
    length: u64,
    headers: &HeaderMap,
) -> AppResult<Response> {
    let (meta_path, bin_path) = paths(state, id)?;
    tokio::fs::create_dir_all(dir(state))
        .await
        .map_err(internal)?;
    let meta = Meta {
        owner,
        length,
        declared: declared_in(headers),
    };
    let json = serde_json::to_vec(&meta).map_err(internal)?;
    tokio::fs::File::create(&bin_path)
        .await
        .map_err(internal)?
        .sync_all()
        .await
        .map_err(internal)?;
    let mut f = tokio::fs::File::create(&meta_path)
        .await
        .map_err(internal)?;
    f.write_all(&json).await.map_err(internal)?;
    f.sync_all().await.map_err(internal)?;
    let mut out = HeaderMap::new();
    tus_headers(&mut out);
    set(&mut out, "location", &format!("/v1/media/uploads/{id}"));
    Ok((StatusCode::CREATED, out).into_response())
}

/// The upload `id` of `owner`, with its offset; `None` when it finished
/// already (then the media item exists).
async fn load(state: &AppState, id: &str, owner: UserId) -> AppResult<Option<(Meta, u64)>> {
    let (meta_path, bin_path) = paths(state, id)?;
    match tokio::fs::read(&meta_path).await {
        Ok(bytes) => {
            let meta: Meta = serde_json::from_slice(&bytes).map_err(internal)?;
            if meta.owner != owner {
                return Err(AppError::not_found("upload"));
            }
            let offset = tokio::fs::metadata(&bin_path)
                .await
                .map(|m| m.len())
                .map_err(|_| AppError::not_found("upload"))?;
            Ok(Some((meta, offset)))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => match state.store.media(id).await? {
            Some(m) if m.owner_id == owner => Ok(None),
            _ => Err(AppError::not_found("upload")),
        },
        Err(e) => Err(internal(e)),
    }
}

/// `HEAD /v1/media/uploads/{id}`: how far the upload got.
#[utoipa::path(
    head,
    path = "/media/uploads/{id}",
    tag = "uploads",
    security(("bearer" = [])),
    params(UploadId, TusVersion),
    responses(
        (status = 200, description = "The upload's progress (`Cache-Control: no-store`)", headers(
            ("Tus-Resumable" = String),
            ("Upload-Offset" = u64, description = "Bytes received and committed"),
            ("Upload-Length" = u64, description = "Bytes declared"),
            ("Confab-Media-Id" = String, description = "Once complete: the media id"),
        )),
        WrongVersion,
    ),
)]
async fn status(
    State(state): State<AppState>,
    who: AuthUser,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = wrong_version(&headers) {
        return r;
    }
    let mut out = HeaderMap::new();
    tus_headers(&mut out);
    set(&mut out, "cache-control", "no-store");
    match load(&state, &id, who.user_id).await {
        Ok(Some((meta, offset))) => {
            set(&mut out, "upload-offset", &offset.to_string());
            set(&mut out, "upload-length", &meta.length.to_string());
            (StatusCode::OK, out).into_response()
        }
        Ok(None) => match state.store.media(&id).await {
            Ok(Some(m)) => {
                set(&mut out, "upload-offset", &m.size.to_string());
                set(&mut out, "upload-length", &m.size.to_string());
                set(&mut out, "confab-media-id", &m.id);
                (StatusCode::OK, out).into_response()
            }
            _ => (StatusCode::NOT_FOUND, out).into_response(),
        },
        // HEAD answers carry no body.
        Err(e) => {
            let code = StatusCode::from_u16(e.0.code.http_status())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            (code, out).into_response()
        }
    }
}

/// `PATCH /v1/media/uploads/{id}`: appends the body at `Upload-Offset`.
#[utoipa::path(
    patch,
    path = "/media/uploads/{id}",
    tag = "uploads",
    security(("bearer" = [])),
    params(UploadId, TusVersion,
        ("Upload-Offset" = u64, Header, description = "Where this body starts: the upload's offset now"),
    ),
    request_body(content = Binary, content_type = "application/offset+octet-stream", description = "The next bytes"),
    responses(
        (status = 204, description = "Appended and committed; the last byte makes the media item", headers(
            ("Tus-Resumable" = String),
            ("Upload-Offset" = u64, description = "The new offset"),
            ("Confab-Media-Id" = String, description = "When this was the last byte: the media id"),
        )),
        (status = 409, description = "`Upload-Offset` is not the upload's offset (`bad_request`)", body = ErrorBody),
        (status = 415, description = "`Content-Type` is not `application/offset+octet-stream` (`bad_request`)", body = ErrorBody),
        (status = 423, description = "Another `PATCH` of this upload is running (`bad_request`)", body = ErrorBody),
        WrongVersion,
        Errors<(code::BadRequest, code::MediaTooLarge)>,
    ),
)]
async fn append(
    State(state): State<AppState>,
    who: AuthUser,
    ApiPath(id): ApiPath<String>,
    req: Request,
) -> Response {
    if let Some(r) = wrong_version(req.headers()) {
        return r;
    }
    match append_inner(&state, who.user_id, &id, req).await {
        Ok(r) => r,
        Err(e) => error_with_tus(e),
    }
}

async fn append_inner(
    state: &AppState,
    owner: UserId,
    id: &str,
    req: Request,
) -> AppResult<Response> {
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !is_offset_content_type(content_type) {
        let mut r = AppError::bad_request(format!("Content-Type must be {OFFSET_CONTENT_TYPE}"))
            .into_response();
        *r.status_mut() = StatusCode::UNSUPPORTED_MEDIA_TYPE;
        return Ok(r);
    }
    let claimed: u64 = req
        .headers()
        .get("upload-offset")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_byte_count)
        .ok_or_else(|| AppError::bad_request("Upload-Offset is required"))?;
    // Loaded first: an upload that is not ours (or finished) says so.
    if load(state, id, owner).await?.is_none() {
        return Err(AppError::bad_request("this upload is complete"));
    }
    let Some(_busy) = Busy::take(&state.uploads, id) else {
        let mut r = AppError::new(
            ErrorCode::BadRequest,
            "another PATCH of this upload is running",
        )
        .into_response();
        *r.status_mut() = StatusCode::LOCKED;
        return Ok(r);
    };
    // The offset again, now that no other PATCH can move it.
    let Some((meta, offset)) = load(state, id, owner).await? else {
        return Err(AppError::bad_request("this upload is complete"));
    };
    if claimed != offset {
        let mut r = AppError::bad_request(format!(
            "Upload-Offset {claimed} does not match the upload's offset {offset}"
        ))
        .into_response();
        *r.status_mut() = StatusCode::CONFLICT;
        return Ok(r);
    }
    let (_, bin_path) = paths(state, id)?;
    let mut file = tokio::fs::OpenOptions::new()
        .append(true)
        .open(&bin_path)
        .await
        .map_err(internal)?;
    let remaining = meta.length - offset;
    let mut written = 0u64;
    let mut body = req.into_body().into_data_stream();
    let mut failure = None;
    while let Some(chunk) = body.next().await {
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => {
                failure = Some(AppError::bad_request(format!("upload interrupted: {e}")));
                break;
            }
        };
        let room = (remaining - written).min(chunk.len() as u64) as usize;
        if let Err(e) = file.write_all(&chunk[..room]).await {
            failure = Some(internal(e));
            break;
        }
        written += room as u64;
        if room < chunk.len() {
            failure = Some(AppError::bad_request(format!(
                "more bytes than Upload-Length ({})",
                meta.length
            )));
            break;
        }
    }
    // What arrived is committed, also when the connection dropped: the
    // client continues from here.
    file.flush().await.map_err(internal)?;
    file.sync_all().await.map_err(internal)?;
    drop(file);
    if let Some(e) = failure {
        return Err(e);
    }
    let offset = offset + written;
    let mut out = HeaderMap::new();
    tus_headers(&mut out);
    set(&mut out, "upload-offset", &offset.to_string());
    if offset == meta.length {
        let uploaded = finish(state, id, &meta).await?;
        set(&mut out, "confab-media-id", &uploaded);
    }
    Ok((StatusCode::NO_CONTENT, out).into_response())
}

/// Turns a complete upload into a media item with the upload's id.
async fn finish(state: &AppState, id: &str, meta: &Meta) -> AppResult<String> {
    let (meta_path, bin_path) = paths(state, id)?;
    let hash_path = bin_path.clone();
    let hashed = super::hash_file(hash_path).await?;
    // From here the bytes are the media pipeline's: the temporary path
    // removes them when done, whatever the outcome.
    let spooled = Spooled {
        path: tempfile::TempPath::try_from_path(bin_path).map_err(internal)?,
        size: meta.length,
        sha256: hashed.sha256,
        head: hashed.head,
    };
    let _ = tokio::fs::remove_file(&meta_path).await;
    // Its bytes now count as media (or are gone if refused).
    state.uploads.forget(id);
    let uploaded = store_upload(
        state,
        meta.owner,
        spooled,
        &meta.declared,
        Some(id.to_owned()),
    )
    .await?;
    Ok(uploaded.media_id)
}

/// `DELETE /v1/media/uploads/{id}`: abandons an upload.
#[utoipa::path(
    delete,
    path = "/media/uploads/{id}",
    tag = "uploads",
    security(("bearer" = [])),
    params(UploadId, TusVersion),
    responses(
        (status = 204, description = "Abandoned: its bytes are deleted", headers(("Tus-Resumable" = String))),
        WrongVersion,
    ),
)]
async fn terminate(
    State(state): State<AppState>,
    who: AuthUser,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = wrong_version(&headers) {
        return r;
    }
    let result = async {
        if load(&state, &id, who.user_id).await?.is_none() {
            return Err(AppError::not_found("upload in progress"));
        }
        let (meta_path, bin_path) = paths(&state, &id)?;
        let _ = tokio::fs::remove_file(&meta_path).await;
        let _ = tokio::fs::remove_file(&bin_path).await;
        state.uploads.forget(&id);
        Ok(())
    }
    .await;
    match result {
        Ok(()) => {
            let mut out = HeaderMap::new();
            tus_headers(&mut out);
            (StatusCode::NO_CONTENT, out).into_response()
        }
        Err(e) => error_with_tus(e),
    }
}
