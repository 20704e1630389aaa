//! Media: uploading files and bytes (`POST /v1/media`), downloading them
//! (`GET /v1/media/{id}`), and sending image and file messages.
//!
//! Uploads and downloads stream: a file is never read into memory whole.
//! They use their own HTTP client without the 30 s request timeout of the
//! JSON calls (large files take longer), and refresh an expired access
//! token once like every other call.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use confab_proto::media::UploadedMedia;
use confab_proto::{ConversationId, ErrorCode, MessageKind};
use futures_util::StreamExt;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::client::Client;
use crate::error::{Error, Result};
use confab_proto::api::SendMessageResponse;

/// Called with the bytes moved so far.
pub type Progress = Arc<dyn Fn(u64) + Send + Sync>;

/// Chunk size for streaming files.
const CHUNK: usize = 256 * 1024;

/// A client for large transfers: no overall timeout, only connect and read
/// timeouts; trusting what `client` trusts.
fn media_http(client: &Client) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .read_timeout(Duration::from_secs(60));
    if let Some(t) = client.trust() {
        builder = t.apply(builder);
    }
    builder.build().unwrap_or_else(|_| reqwest::Client::new())
}

/// A content type guessed from a file name, for the `Content-Type` of an
/// upload (the server checks images and audio against their bytes).
pub fn guess_content_type(path: &Path) -> &'static str {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    match ext.as_str() {
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "ogg" | "opus" => "audio/ogg",
        "weba" => "audio/webm",
        "m4a" => "audio/mp4",
        _ => "application/octet-stream",
    }
}

async fn file_body(path: &Path, progress: Option<Progress>) -> Result<(reqwest::Body, u64)> {
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|e| Error::InvalidInput(format!("{}: {e}", path.display())))?;
    let size = file
        .metadata()
        .await
        .map_err(|e| Error::InvalidInput(format!("{}: {e}", path.display())))?
        .len();
    let stream = futures_util::stream::unfold((file, 0u64), move |(mut file, sent)| {
        let progress = progress.clone();
        async move {
            let mut buf = vec![0u8; CHUNK];
            match file.read(&mut buf).await {
                Ok(0) => None,
                Ok(n) => {
                    buf.truncate(n);
                    let sent = sent + n as u64;
                    if let Some(p) = &progress {
                        p(sent);
                    }
                    Some((Ok::<_, std::io::Error>(buf), (file, sent)))
                }
                Err(e) => Some((Err(e), (file, sent))),
            }
        }
    });
    Ok((reqwest::Body::wrap_stream(stream), size))
}

impl Client {
    fn token(&self) -> Result<String> {
        self.session()
            .map(|s| s.access_token)
            .ok_or(Error::NoSession)
    }

    /// Runs `attempt` with the access token, and once more after a refresh
    /// when the token had expired.
    async fn with_token<T, F, Fut>(&self, attempt: F) -> Result<T>
    where
        F: Fn(String) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let token = self.token()?;
        match attempt(token.clone()).await {
            Err(e) if e.status() == Some(401) && e.code() == Some(ErrorCode::Unauthorized) => {
                let fresh = self.refresh_if_stale(&token).await?;
                attempt(fresh.access_token).await
            }
            other => other,
        }
    }

    /// Uploads `data` with the given `Content-Type`.
    pub async fn upload_bytes(&self, data: Vec<u8>, content_type: &str) -> Result<UploadedMedia> {
        let url = format!("{}/v1/media", self.base_url());
        let http = media_http(self);
        self.with_token(|token| {
            let req = http
                .post(&url)
                .bearer_auth(token)
                .header(reqwest::header::CONTENT_TYPE, content_type)
                .body(data.clone());
            async move { json_answer(req.send().await?).await }
        })
        .await
    }

    /// Uploads the file at `path`, streaming it; `content_type` defaults to
    /// a guess from the extension. `progress` sees the bytes sent so far.
    pub async fn upload_file(
        &self,
        path: &Path,
        content_type: Option<&str>,
        progress: Option<Progress>,
    ) -> Result<UploadedMedia> {
        let url = format!("{}/v1/media", self.base_url());
        let content_type = content_type.unwrap_or_else(|| guess_content_type(path));
        let http = media_http(self);
        self.with_token(|token| {
            let http = http.clone();
            let url = url.clone();
            let progress = progress.clone();
            async move {
                let (body, size) = file_body(path, progress).await?;
                let resp = http
                    .post(url)
                    .bearer_auth(token)
                    .header(reqwest::header::CONTENT_TYPE, content_type)
                    .header(reqwest::header::CONTENT_LENGTH, size)
                    .body(body)
                    .send()
                    .await?;
                json_answer(resp).await
            }
        })
        .await
    }

    /// A media item's bytes, in memory (for small items).
    pub async fn media_bytes(&self, media_id: &str) -> Result<Vec<u8>> {
        let url = format!("{}/v1/media/{media_id}", self.base_url());
        let http = media_http(self);
        self.with_token(|token| {
            let req = http.get(&url).bearer_auth(token);
            async move {
                let resp = req.send().await?;
                let status = resp.status();
                let bytes = resp.bytes().await?.to_vec();
                if status.is_success() {
                    Ok(bytes)
                } else {
                    Err(Error::from_http_body(status.as_u16(), &bytes))
                }
            }
        })
        .await
    }

    /// A media item's thumbnail (images; `not_found` until it is made).
    pub async fn media_thumbnail(&self, media_id: &str) -> Result<Vec<u8>> {
        self.media_bytes(&format!("{media_id}/thumbnail")).await
    }

    /// Downloads a media item into the file at `path`, streaming. If
    /// `<path>.part` is left from an interrupted download, it continues
    /// from where that stopped (`Range`). Returns the size.
    pub async fn download_media(
        &self,
        media_id: &str,
        path: &Path,
        progress: Option<Progress>,
    ) -> Result<u64> {
        let url = format!("{}/v1/media/{media_id}", self.base_url());
        let mut part = path.as_os_str().to_owned();
        part.push(".part");
        let part = std::path::PathBuf::from(part);
        let io = |e: std::io::Error| Error::InvalidInput(format!("{}: {e}", part.display()));
        let have = tokio::fs::metadata(&part)
            .await
            .map(|m| m.len())
            .unwrap_or(0);
        let http = media_http(self);
        let resp = self
            .with_token(|token| {
                let mut req = http.get(&url).bearer_auth(token);
                if have > 0 {
                    req = req.header(reqwest::header::RANGE, format!("bytes={have}-"));
                }
                async move {
                    let resp = req.send().await?;
                    if resp.status().is_success() {
                        Ok(resp)
                    } else {
                        let status = resp.status().as_u16();
                        let bytes = resp.bytes().await?;
                        Err(Error::from_http_body(status, &bytes))
                    }
                }
            })
            .await;
        let resp = match resp {
            // The part file is already whole.
            Err(e) if e.status() == Some(416) && have > 0 => {
                tokio::fs::rename(&part, path).await.map_err(io)?;
                return Ok(have);
            }
            other => other?,
        };
        let resumed = resp.status() == reqwest::StatusCode::PARTIAL_CONTENT;
        let mut file = if resumed {
            tokio::fs::OpenOptions::new()
                .append(true)
                .open(&part)
                .await
                .map_err(io)?
        } else {
            tokio::fs::File::create(&part).await.map_err(io)?
        };
        let mut done = if resumed { have } else { 0 };
        let mut body = resp.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk?;
            file.write_all(&chunk).await.map_err(io)?;
            done += chunk.len() as u64;
            if let Some(p) = &progress {
                p(done);
            }
        }
        file.flush().await.map_err(io)?;
        file.sync_all().await.map_err(io)?;
        drop(file);
        tokio::fs::rename(&part, path).await.map_err(io)?;
        Ok(done)
    }

    /// Sends an `image` message for an uploaded image.
    pub async fn send_image(
        &self,
        id: ConversationId,
        media: &UploadedMedia,
        caption: Option<&str>,
    ) -> Result<SendMessageResponse> {
        let mut body = json!({
            "media_id": media.media_id,
            "width": media.width.unwrap_or(0),
            "height": media.height.unwrap_or(0),
        });
        if let Some(c) = caption {
            body["caption"] = json!(c);
        }
        self.send_http(id, &crate::new_client_msg_id(), MessageKind::Image, body)
            .await
    }

    /// Sends a `file` message for an uploaded file, under `name`.
    pub async fn send_file(
        &self,
        id: ConversationId,
        media: &UploadedMedia,
        name: &str,
    ) -> Result<SendMessageResponse> {
        let body = json!({
            "media_id": media.media_id,
            "name": name,
            "size": media.size,
            "mime": media.mime,
        });
        self.send_http(id, &crate::new_client_msg_id(), MessageKind::File, body)
            .await
    }
}

async fn json_answer(resp: reqwest::Response) -> Result<UploadedMedia> {
    let status = resp.status();
    let bytes = resp.bytes().await?;
    if status.is_success() {
        serde_json::from_slice(&bytes).map_err(|e| Error::Decode(format!("/v1/media: {e}")))
    } else {
        Err(Error::from_http_body(status.as_u16(), &bytes))
    }
}

/// Standard base64 (for tus `Upload-Metadata` values).
fn base64(data: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Bytes per tus `PATCH`: each one is committed by the server, so an
/// interrupted upload loses at most the part of one in flight.
const TUS_CHUNK: u64 = 4 * 1024 * 1024;

fn header_str(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

impl Client {
    /// The upload answer of an existing media item (its uploader or a
    /// member who can see it).
    pub async fn media_info(&self, media_id: &str) -> Result<UploadedMedia> {
        self.call(
            reqwest::Method::GET,
            &format!("/v1/media/{media_id}/info"),
            &[],
            None::<&()>,
        )
        .await
    }

    /// Uploads the file at `path` by tus (`/v1/media/uploads/`) in 4 MiB
    /// `PATCH`es. With `resume` (an upload URL from an earlier, interrupted
    /// run) it continues from the server's offset; otherwise (or when that
    /// upload is gone) it creates a new upload and tells `on_created` its
    /// URL, to be saved for a later resume.
    pub async fn upload_resumable(
        &self,
        path: &Path,
        content_type: Option<&str>,
        resume: Option<&str>,
        on_created: &(dyn Fn(&str) + Send + Sync),
        progress: Option<Progress>,
    ) -> Result<UploadedMedia> {
        let io = |e: std::io::Error| Error::InvalidInput(format!("{}: {e}", path.display()));
        let size = tokio::fs::metadata(path).await.map_err(io)?.len();
        let content_type = content_type.unwrap_or_else(|| guess_content_type(path));
        let http = media_http(self);
        let base = self.base_url().to_owned();
        let absolute = |loc: &str| {
            if loc.starts_with("http://") || loc.starts_with("https://") {
                loc.to_owned()
            } else {
                format!("{base}{loc}")
            }
        };
        // Where the upload stands: (url, offset), or done with a media id.
        let mut state: Option<(String, u64)> = None;
        if let Some(url) = resume {
            let resp = self
                .with_token(|token| {
                    let req = http
                        .head(url)
                        .bearer_auth(token)
                        .header("tus-resumable", "1.0.0");
                    async move { Ok(req.send().await?) }
                })
                .await?;
            if resp.status().is_success() {
                if let Some(id) = header_str(&resp, "confab-media-id") {
                    return self.media_info(&id).await;
                }
                let offset = header_str(&resp, "upload-offset").and_then(|o| o.parse().ok());
                let length: Option<u64> =
                    header_str(&resp, "upload-length").and_then(|o| o.parse().ok());
                if let (Some(offset), Some(length)) = (offset, length) {
                    if length == size {
                        state = Some((url.to_owned(), offset));
                    }
                }
            }
        }
        let (url, mut offset) = match state {
            Some(s) => s,
            None => {
                let name = path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let metadata = format!(
                    "filetype {},filename {}",
                    base64(content_type.as_bytes()),
                    base64(name.as_bytes())
                );
                let create = format!("{base}/v1/media/uploads/");
                let resp = self
                    .with_token(|token| {
                        let req = http
                            .post(&create)
                            .bearer_auth(token)
                            .header("tus-resumable", "1.0.0")
                            .header("upload-length", size.to_string())
                            .header("upload-metadata", metadata.clone());
                        async move {
                            let resp = req.send().await?;
                            if resp.status().is_success() {
                                Ok(resp)
                            } else {
                                let status = resp.status().as_u16();
                                let bytes = resp.bytes().await?;
                                Err(Error::from_http_body(status, &bytes))
                            }
                        }
                    })
                    .await?;
                let loc = header_str(&resp, "location")
                    .ok_or_else(|| Error::Decode("tus create without Location".into()))?;
                let url = absolute(&loc);
                on_created(&url);
                (url, 0)
            }
        };
        let mut file = tokio::fs::File::open(path).await.map_err(io)?;
        let mut media_id = None;
        while offset < size {
            use tokio::io::AsyncSeekExt;
            let n = TUS_CHUNK.min(size - offset);
            file.seek(std::io::SeekFrom::Start(offset))
                .await
                .map_err(io)?;
            let mut buf = vec![0u8; n as usize];
            file.read_exact(&mut buf).await.map_err(io)?;
            let resp = self
                .with_token(|token| {
                    let req = http
                        .patch(&url)
                        .bearer_auth(token)
                        .header("tus-resumable", "1.0.0")
                        .header("content-type", "application/offset+octet-stream")
                        .header("upload-offset", offset.to_string())
                        .body(buf.clone());
                    async move {
                        let resp = req.send().await?;
                        if resp.status().is_success() {
                            Ok(resp)
                        } else {
                            let status = resp.status().as_u16();
                            let bytes = resp.bytes().await?;
                            Err(Error::from_http_body(status, &bytes))
                        }
                    }
                })
                .await?;
            offset = header_str(&resp, "upload-offset")
                .and_then(|o| o.parse().ok())
                .ok_or_else(|| Error::Decode("tus PATCH without Upload-Offset".into()))?;
            if let Some(p) = &progress {
                p(offset);
            }
            media_id = header_str(&resp, "confab-media-id").or(media_id);
        }
        let id = media_id
            .or_else(|| url.rsplit('/').next().map(str::to_owned))
            .unwrap_or_default();
        self.media_info(&id).await
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_matches_the_standard() {
        assert_eq!(super::base64(b""), "");
        assert_eq!(super::base64(b"f"), "Zg==");
        assert_eq!(super::base64(b"fo"), "Zm8=");
        assert_eq!(super::base64(b"foo"), "Zm9v");
        assert_eq!(super::base64(b"image/png"), "aW1hZ2UvcG5n");
    }
}
