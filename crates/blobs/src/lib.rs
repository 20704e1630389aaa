//! Confab blob storage: the bytes of uploaded media, content-addressed.
//!
//! A blob is stored under a key that the caller derives from its content
//! (the server uses the lower-case hex SHA-256 of the bytes, and
//! `<sha256>.thumb` for thumbnails), so identical content is stored once and
//! a stored blob never changes. Two backends sit behind [`BlobStore`]:
//!
//! - [`LocalBlobs`]: files under a directory (`<dir>/<key[0..2]>/<key>`),
//!   written to a temporary file, fsynced and renamed into place;
//! - [`S3Blobs`]: an S3-compatible object store through the `object_store`
//!   crate, selected with `s3://bucket/prefix`; endpoint and credentials
//!   come from the usual `AWS_*` environment variables.
//!
//! [`open`] picks the backend from a location string.

mod local;
mod s3;

use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::stream::BoxStream;

pub use local::LocalBlobs;
pub use s3::S3Blobs;

/// A stream of blob bytes.
pub type ByteStream = BoxStream<'static, std::io::Result<Bytes>>;

/// Why a blob operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// No blob under that key.
    #[error("no such blob")]
    NotFound,
    /// The key is not a valid blob key (see [`check_key`]).
    #[error("invalid blob key {0:?}")]
    InvalidKey(String),
    /// The requested byte range lies outside the blob.
    #[error("range not satisfiable")]
    BadRange,
    /// Local file IO failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The object store failed.
    #[error("object store: {0}")]
    Remote(String),
}

/// Blob operation result.
pub type Result<T> = std::result::Result<T, BlobError>;

/// Where blobs live. Keys are content-derived: putting a key that already
/// exists is a cheap no-op (the content is the same by construction).
#[async_trait]
pub trait BlobStore: Send + Sync + 'static {
    /// Stores the file at `path` under `key` (copied; the file stays).
    async fn put_file(&self, key: &str, path: &Path) -> Result<()>;
    /// Stores the bytes of `stream` under `key`.
    async fn put_stream(&self, key: &str, stream: ByteStream) -> Result<()>;
    /// The size of the blob, or `None` if there is none.
    async fn head(&self, key: &str) -> Result<Option<u64>>;
    /// The blob's bytes, or those of `range` (end exclusive, clamped to the
    /// blob's end). `NotFound` if there is no blob; `BadRange` if the range
    /// is empty or starts at or past the end.
    async fn get(&self, key: &str, range: Option<Range<u64>>) -> Result<ByteStream>;
    /// Deletes the blob; deleting a missing one is not an error.
    async fn delete(&self, key: &str) -> Result<()>;

    /// Convenience: a small blob's whole content in memory.
    async fn get_bytes(&self, key: &str) -> Result<Vec<u8>> {
        use futures_util::TryStreamExt;
        let mut s = self.get(key, None).await?;
        let mut out = Vec::new();
        while let Some(chunk) = s.try_next().await? {
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }
}

/// Keys are 1 to 128 characters of `[A-Za-z0-9._-]`, not starting with a
/// dot: safe as a file name and as an object name.
pub fn check_key(key: &str) -> Result<()> {
    let ok = !key.is_empty()
        && key.len() <= 128
        && !key.starts_with('.')
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(BlobError::InvalidKey(key.to_string()))
    }
}

/// Opens the blob store named by `location`: `s3://bucket/prefix` for
/// [`S3Blobs`] (configured from `AWS_*` environment variables), anything
/// else a directory for [`LocalBlobs`] (made if missing).
pub async fn open(location: &str) -> Result<Arc<dyn BlobStore>> {
    if location.starts_with("s3://") {
        Ok(Arc::new(S3Blobs::from_url(location, &[])?))
    } else {
        Ok(Arc::new(LocalBlobs::open(Path::new(location)).await?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        assert!(check_key("ab12").is_ok());
        assert!(check_key("e3b0c442.thumb").is_ok());
        for bad in ["", ".x", "a/b", "../x", "a b", &"a".repeat(129)] {
            assert!(check_key(bad).is_err(), "{bad}");
        }
    }
}
