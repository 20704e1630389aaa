//! Media: uploads (`POST /v1/media`), downloads with ranges and caching
//! (`GET /v1/media/{id}`), thumbnails (`GET /v1/media/{id}/thumbnail`) and
//! the check that media messages reference the sender's own uploads.
//!
//! An upload is streamed to a temporary file while it is hashed and counted
//! (never held in memory whole; over `media.max_upload_bytes` the request is
//! answered 413 without reading the rest), sniffed, checked against the
//! declared type, cleaned (images) or measured (voice), then copied into the
//! blob store under its SHA-256 and recorded in the store. Thumbnails are
//! made in the background.

mod images;
mod sniff;
mod tus;
mod voice;

use std::fmt::Display;
use std::ops::Range;
use std::path::{Path, PathBuf};

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, FromRequest, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use confab_proto::media::UploadedMedia;
use confab_proto::{ErrorCode, UserId};
use confab_store::{MediaInsert, MediaKind, MediaRecord};
use futures_util::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::auth::AuthUser;
use crate::error::{AppError, AppResult};
use crate::extract::ApiPath;
use crate::state::AppState;

pub use images::THUMBNAIL_MAX;
pub use tus::expire_abandoned;
pub use voice::MAX_VOICE_MS;

/// `Cache-Control` of media and thumbnails: content never changes under an
/// id, and only its audience may fetch it.
const CACHE_CONTROL: &str = "private, max-age=31536000, immutable";

/// The media routes, to be nested under `/v1`.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/media",
            // The upload counts its own bytes against `max_upload_bytes`.
            post(upload).layer(DefaultBodyLimit::disable()),
        )
        .route("/media/{id}", get(download))
        .route("/media/{id}/thumbnail", get(thumbnail))
        .route("/media/{id}/info", get(info))
        .merge(tus::routes())
}

fn too_large(max: u64) -> AppError {
    AppError::new(
        ErrorCode::MediaTooLarge,
        format!("upload is over the size limit of {max} bytes"),
    )
}

fn over_quota(quota: u64, used: i64) -> AppError {
    AppError::new(
        ErrorCode::MediaTooLarge,
        format!(
            "upload quota exceeded: your uploads may take {quota} bytes in all and take {used} now"
        ),
    )
}

fn internal(what: impl Display) -> AppError {
    tracing::error!(error = %what, "media");
    AppError::new(ErrorCode::Internal, "internal error")
}

/// A blob store failure: a remote store that does not answer is
/// `unavailable` (retry), a missing blob `not_found`.
fn blob_error(e: confab_blobs::BlobError) -> AppError {
    match e {
        confab_blobs::BlobError::NotFound => AppError::not_found("media"),
        confab_blobs::BlobError::Remote(detail) => {
            tracing::warn!(%detail, "blob store unavailable");
            AppError::new(
                ErrorCode::Unavailable,
                "media storage is unavailable, try again shortly",
            )
        }
        other => internal(other),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An upload on disk, hashed and counted.
struct Spooled {
    path: tempfile::TempPath,
    size: u64,
    sha256: String,
    head: Vec<u8>,
}

async fn spool<S, E>(stream: S, max: u64, dir: &Path) -> AppResult<Spooled>
where
    S: Stream<Item = Result<Bytes, E>>,
    E: Display,
{
    tokio::fs::create_dir_all(dir).await.map_err(internal)?;
    let (file, path) = tempfile::Builder::new()
        .prefix("upload-")
        .tempfile_in(dir)
        .map_err(internal)?
        .into_parts();
    let mut file = tokio::fs::File::from_std(file);
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut head = Vec::new();
    let mut stream = std::pin::pin!(stream);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| AppError::bad_request(format!("upload interrupted: {e}")))?;
        size += chunk.len() as u64;
        if size > max {
            return Err(too_large(max));
        }
        if head.len() < sniff::SNIFF_BYTES {
            let take = (sniff::SNIFF_BYTES - head.len()).min(chunk.len());
            head.extend_from_slice(&chunk[..take]);
        }
        hasher.update(&chunk);
        file.write_all(&chunk).await.map_err(internal)?;
    }
    file.flush().await.map_err(internal)?;
    Ok(Spooled {
        path,
        size,
        sha256: hex(&hasher.finalize()),
        head,
    })
}

fn temp_dir(state: &AppState) -> PathBuf {
    state.config.data_dir.join("tmp-uploads")
}

/// `POST /v1/media`: a raw body with its `Content-Type`, or a
/// `multipart/form-data` form whose first file part is the upload.
pub async fn upload(
    State(state): State<AppState>,
    who: AuthUser,
    req: Request,
) -> AppResult<(StatusCode, Json<UploadedMedia>)> {
    let media = &state.config.media;
    let max = media.max_upload_bytes;
    let declared = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(sniff::essence)
        .unwrap_or_default();
    let length = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    // Resumable uploads in progress count with their declared length.
    let used = state.store.media_usage(who.user_id).await?.saturating_add(
        state
            .uploads
            .pending_bytes(who.user_id)
            .min(i64::MAX as u64) as i64,
    );
    if let Some(len) = length {
        if declared != "multipart/form-data" && len > max {
            return Err(too_large(max));
        }
        let at_least = if declared == "multipart/form-data" {
            len.saturating_sub(4096)
        } else {
            len
        };
        if used.max(0) as u64 + at_least.min(max) > media.user_quota_bytes {
            return Err(over_quota(media.user_quota_bytes, used));
        }
    }
    let dir = temp_dir(&state);
    let (spooled, declared) = if declared == "multipart/form-data" {
        let mut form = axum::extract::Multipart::from_request(req, &state)
            .await
            .map_err(|e| AppError::bad_request(format!("unreadable form: {e}")))?;
        loop {
            let field = form
                .next_field()
                .await
                .map_err(|e| AppError::bad_request(format!("unreadable form: {e}")))?
                .ok_or_else(|| AppError::bad_request("the form has no file part"))?;
            if field.file_name().is_none() {
                continue;
            }
            let part_type = field.content_type().map(sniff::essence).unwrap_or_default();
            break (spool(field, max, &dir).await?, part_type);
        }
    } else {
        (
            spool(req.into_body().into_data_stream(), max, &dir).await?,
            declared,
        )
    };
    let record = store_upload(&state, who.user_id, spooled, &declared, None).await?;
    Ok((StatusCode::CREATED, Json(record)))
}

/// Sniffs, checks, cleans and stores a spooled upload.
async fn store_upload(
    state: &AppState,
    owner: UserId,
    mut spooled: Spooled,
    declared: &str,
    id: Option<String>,
) -> AppResult<UploadedMedia> {
    // An end-to-end encrypted attachment is opaque: never sniffed, decoded,
    // thumbnailed or cleaned (its bytes are ciphertext anyway).
    let sniffed = if declared == sniff::ENCRYPTED_MIME {
        sniff::Sniffed {
            mime: sniff::ENCRYPTED_MIME,
            kind: MediaKind::File,
        }
    } else {
        sniff::sniff(&spooled.head)
    };
    if sniff::claims_media(declared) && !sniff::agrees(declared, &sniffed) {
        return Err(AppError::bad_request(format!(
            "declared type {declared} does not match the content ({})",
            sniffed.mime
        )));
    }
    let mut width = None;
    let mut height = None;
    let mut duration_ms = None;
    let mut is_image = false;
    let media = &state.config.media;
    match sniffed.kind {
        MediaKind::Image => {
            let mime = sniffed.mime;
            let path = spooled.path.to_path_buf();
            let tmp = temp_dir(state);
            // A tus upload arrives from its own folder: this one may be new.
            tokio::fs::create_dir_all(&tmp).await.map_err(internal)?;
            let max_pixels = media.max_image_pixels;
            let cleaned =
                parse_within_budget(state, move || images::clean(&path, mime, max_pixels, &tmp))
                    .await?
                    .map_err(image_error)?;
            width = Some(cleaned.width);
            height = Some(cleaned.height);
            if let Some(new_path) = cleaned.replaced {
                let hashed = hash_file(new_path.to_path_buf()).await?;
                spooled.path = new_path;
                spooled.size = hashed.size;
                spooled.sha256 = hashed.sha256;
            }
            is_image = true;
        }
        MediaKind::Voice => {
            let path = spooled.path.to_path_buf();
            let mime = sniffed.mime;
            let d = parse_within_budget(state, move || voice::duration_ms(&path, mime))
                .await?
                .map_err(|e| match e.kind() {
                    std::io::ErrorKind::InvalidData => {
                        AppError::bad_request(format!("unreadable voice note: {e}"))
                    }
                    _ => internal(e),
                })?;
            if let Some(d) = d {
                if d == 0 || d > MAX_VOICE_MS {
                    return Err(AppError::bad_request(format!(
                        "voice notes last from 1 ms to 15 minutes; this one says {d} ms"
                    )));
                }
            }
            duration_ms = d;
        }
        MediaKind::File => {}
    }
    state
        .blobs
        .put_file(&spooled.sha256, &spooled.path)
        .await
        .map_err(blob_error)?;
    let id = id.unwrap_or_else(new_media_id);
    let record = MediaRecord {
        id: id.clone(),
        owner_id: owner,
        sha256: spooled.sha256.clone(),
        size: spooled.size as i64,
        mime: sniffed.mime.to_string(),
        kind: sniffed.kind,
        width: width.map(i64::from),
        height: height.map(i64::from),
        duration_ms: duration_ms.map(|d| d as i64),
        thumbnail: false,
        created_at: crate::clock::now_millis(),
    };
    let quota = state.config.media.user_quota_bytes;
    if let MediaInsert::OverQuota { used } = state
        .store
        .insert_media(&record, quota.min(i64::MAX as u64) as i64)
        .await?
    {
        return Err(over_quota(quota, used));
    }
    if is_image {
        // The file stays until the thumbnail is made from it.
        tokio::spawn(make_thumbnail(state.clone(), record.clone(), spooled.path));
    }
    Ok(UploadedMedia {
        media_id: id,
        size: spooled.size,
        mime: record.mime,
        sha256: record.sha256,
        kind: record.kind.as_str().to_string(),
        width,
        height,
        duration_ms,
    })
}

/// A fresh media id: 16 random bytes, base64url (22 characters), starting
/// with a letter or digit: one starting with `-` reads as an option when a
/// user pastes it into a command line (`confab download -Xy…`).
fn new_media_id() -> String {
    loop {
        let id =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 16]>());
        if id.starts_with(|c: char| c.is_ascii_alphanumeric()) {
            return id;
        }
    }
}

fn thumbnail_key(sha256: &str) -> String {
    format!("{sha256}.thumb")
}

/// Makes and stores an image's thumbnail (once per content) from the
/// upload's file, then marks the record.
async fn make_thumbnail(state: AppState, record: MediaRecord, file: tempfile::TempPath) {
    let key = thumbnail_key(&record.sha256);
    let result: Result<(), String> = async {
        if state
            .blobs
            .head(&key)
            .await
            .map_err(|e| e.to_string())?
            .is_none()
        {
            let mime = record.mime.clone();
            let max_pixels = state.config.media.max_image_pixels;
            let path = file.to_path_buf();
            let thumb =
                parse_within_budget(&state, move || images::thumbnail(&path, &mime, max_pixels))
                    .await
                    .map_err(|e| e.0.message)?
                    .map_err(|e| e.to_string())?;
            let stream = futures_util::stream::once(async move { Ok(Bytes::from(thumb)) });
            state
                .blobs
                .put_stream(&key, stream.boxed())
                .await
                .map_err(|e| e.to_string())?;
        }
        state
            .store
            .set_media_thumbnail(&record.id)
            .await
            .map_err(|e| e.to_string())
    }
    .await;
    drop(file);
    if let Err(e) = result {
        tracing::warn!(media = %record.id, error = %e, "thumbnail not made");
    }
}

/// Runs a parser or decoder on a blocking thread, one of at most
/// `media.max_concurrent_decodes` at once, and gives up on it after
/// `media.parse_timeout_ms` (the upload is refused; the parsers themselves
/// are bounded, so the thread ends too).
async fn parse_within_budget<T, F>(state: &AppState, work: F) -> AppResult<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let budget = std::time::Duration::from_millis(state.config.media.parse_timeout_ms);
    let _slot = state
        .media_decodes
        .acquire()
        .await
        .map_err(|_| AppError::new(ErrorCode::Unavailable, "server is shutting down"))?;
    match tokio::time::timeout(budget, tokio::task::spawn_blocking(work)).await {
        Ok(Ok(done)) => Ok(done),
        Ok(Err(e)) => Err(internal(e)),
        Err(_) => {
            crate::metrics::media_parse_timeout();
            Err(AppError::bad_request(format!(
                "the file could not be read within {} ms",
                budget.as_millis()
            )))
        }
    }
}

fn image_error(e: images::ImageError) -> AppError {
    match e {
        images::ImageError::TooLarge { .. } => {
            AppError::new(ErrorCode::MediaTooLarge, e.to_string())
        }
        images::ImageError::Unreadable(m) => AppError::bad_request(m),
        images::ImageError::Io(e) => internal(e),
    }
}

/// A file hashed: its size, SHA-256 (hex) and first bytes (for sniffing).
struct Hashed {
    size: u64,
    sha256: String,
    head: Vec<u8>,
}

/// Hashes a file in pieces off the async workers (the resumable upload's
/// finished file, an image rewritten without its metadata).
async fn hash_file(path: PathBuf) -> AppResult<Hashed> {
    tokio::task::spawn_blocking(move || -> std::io::Result<Hashed> {
        use std::io::Read;
        let mut f = std::fs::File::open(&path)?;
        let mut hasher = Sha256::new();
        let mut head = Vec::new();
        let mut buf = vec![0u8; 256 * 1024];
        let mut size = 0u64;
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            if head.len() < sniff::SNIFF_BYTES {
                let take = (sniff::SNIFF_BYTES - head.len()).min(n);
                head.extend_from_slice(&buf[..take]);
            }
            size += n as u64;
            hasher.update(&buf[..n]);
        }
        Ok(Hashed {
            size,
            sha256: hex(&hasher.finalize()),
            head,
        })
    })
    .await
    .map_err(internal)?
    .map_err(internal)
}

/// The record of media `id` if `user` may fetch it; `not_found` otherwise.
async fn readable(state: &AppState, id: &str, user: UserId) -> AppResult<MediaRecord> {
    let record = state.store.media(id).await?;
    match record {
        Some(r) if state.store.can_read_media(id, user).await? => Ok(r),
        _ => Err(AppError::not_found("media")),
    }
}

/// Types shown inline; everything else is an attachment.
fn inline_type(mime: &str) -> bool {
    matches!(
        mime,
        "image/jpeg"
            | "image/png"
            | "image/gif"
            | "image/webp"
            | "audio/ogg"
            | "audio/webm"
            | "audio/mp4"
    )
}

/// Whether `If-None-Match` names this entity tag.
fn matches_etag(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == "*" || t == etag)
}

/// A single `bytes=` range: `None` when absent or not one we serve
/// (several ranges: the whole body is sent), `Some(Err)` when it lies
/// outside the content.
fn parse_range(headers: &HeaderMap, size: u64) -> Option<Result<Range<u64>, ()>> {
    let spec = headers.get(header::RANGE)?.to_str().ok()?;
    let spec = spec.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (a, b) = (a.trim(), b.trim());
    let range = if a.is_empty() {
        let n: u64 = b.parse().ok()?;
        if n == 0 {
            return Some(Err(()));
        }
        size.saturating_sub(n)..size
    } else {
        let start: u64 = a.parse().ok()?;
        let end = if b.is_empty() {
            size
        } else {
            let last: u64 = b.parse().ok()?;
            if last < start {
                return None;
            }
            (last + 1).min(size)
        };
        start..end
    };
    if range.start >= size || range.start >= range.end {
        return Some(Err(()));
    }
    Some(Ok(range))
}

async fn serve_blob(
    state: &AppState,
    headers: &HeaderMap,
    key: &str,
    sha256: &str,
    size: u64,
    mime: &str,
    attachment_name: Option<&str>,
) -> AppResult<Response> {
    let etag = format!("\"{sha256}\"");
    let mut out = HeaderMap::new();
    let set = |h: &mut HeaderMap, k: header::HeaderName, v: &str| {
        if let Ok(v) = HeaderValue::from_str(v) {
            h.insert(k, v);
        }
    };
    set(&mut out, header::ETAG, &etag);
    set(&mut out, header::CACHE_CONTROL, CACHE_CONTROL);
    set(&mut out, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(
        &mut out,
        header::CONTENT_SECURITY_POLICY,
        "default-src 'none'; sandbox",
    );
    set(&mut out, header::ACCEPT_RANGES, "bytes");
    if matches_etag(headers, &etag) {
        return Ok((StatusCode::NOT_MODIFIED, out).into_response());
    }
    let (served_type, disposition) = match attachment_name {
        Some(name) => (mime, format!("attachment; filename=\"{name}\"")),
        None => (mime, "inline".to_string()),
    };
    set(&mut out, header::CONTENT_TYPE, served_type);
    set(&mut out, header::CONTENT_DISPOSITION, &disposition);
    let (status, range) = match parse_range(headers, size) {
        None => (StatusCode::OK, None),
        Some(Ok(r)) => (StatusCode::PARTIAL_CONTENT, Some(r)),
        Some(Err(())) => {
            set(&mut out, header::CONTENT_RANGE, &format!("bytes */{size}"));
            return Ok((StatusCode::RANGE_NOT_SATISFIABLE, out).into_response());
        }
    };
    let length = match &range {
        Some(r) => {
            set(
                &mut out,
                header::CONTENT_RANGE,
                &format!("bytes {}-{}/{size}", r.start, r.end - 1),
            );
            r.end - r.start
        }
        None => size,
    };
    set(&mut out, header::CONTENT_LENGTH, &length.to_string());
    let stream = state.blobs.get(key, range).await.map_err(blob_error)?;
    Ok((status, out, Body::from_stream(stream)).into_response())
}

/// `GET /v1/media/{id}`: the bytes, to the uploader and to members who can
/// see a message referencing them; `Range`, `ETag`/`If-None-Match`.
pub async fn download(
    State(state): State<AppState>,
    who: AuthUser,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
) -> AppResult<Response> {
    let r = readable(&state, &id, who.user_id).await?;
    let attachment = (r.kind == MediaKind::File || !inline_type(&r.mime)).then_some(r.id.as_str());
    serve_blob(
        &state,
        &headers,
        &r.sha256,
        &r.sha256,
        r.size as u64,
        &r.mime,
        attachment,
    )
    .await
}

/// `GET /v1/media/{id}/info`: the upload answer again (same access rule as
/// the bytes), e.g. after a tus upload.
pub async fn info(
    State(state): State<AppState>,
    who: AuthUser,
    ApiPath(id): ApiPath<String>,
) -> AppResult<Json<UploadedMedia>> {
    let r = readable(&state, &id, who.user_id).await?;
    Ok(Json(UploadedMedia {
        media_id: r.id,
        size: r.size as u64,
        mime: r.mime,
        sha256: r.sha256,
        kind: r.kind.as_str().to_string(),
        width: r.width.map(|w| w as u32),
        height: r.height.map(|h| h as u32),
        duration_ms: r.duration_ms.map(|d| d as u64),
    }))
}

/// `GET /v1/media/{id}/thumbnail`: a JPEG at most 320 px on its longest
/// side; 404 until it is made (and for anything but images).
pub async fn thumbnail(
    State(state): State<AppState>,
    who: AuthUser,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
) -> AppResult<Response> {
    let r = readable(&state, &id, who.user_id).await?;
    if !r.thumbnail {
        return Err(AppError::not_found("thumbnail (not made yet)"));
    }
    let key = thumbnail_key(&r.sha256);
    let size = state
        .blobs
        .head(&key)
        .await
        .map_err(blob_error)?
        .ok_or_else(|| AppError::not_found("thumbnail"))?;
    // The thumbnail's tag: derived from the content it was made from.
    let tag = format!("{}-thumb", r.sha256);
    serve_blob(&state, &headers, &key, &tag, size, "image/jpeg", None).await
}

#[cfg(test)]
mod tests {
    #[test]
    fn media_ids_never_look_like_options() {
        for _ in 0..2_000 {
            let id = super::new_media_id();
            assert_eq!(id.len(), 22);
            assert!(id.starts_with(|c: char| c.is_ascii_alphanumeric()), "{id}");
        }
    }
}
