//! Blobs in an S3-compatible object store.

use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use futures_util::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::path::Path as ObjectPath;
use object_store::{GetOptions, GetRange, ObjectStore, PutPayload, WriteMultipart};
use tokio::io::AsyncReadExt;

use crate::{check_key, BlobError, BlobStore, ByteStream, Result};

/// Objects up to this size are written with one PUT; larger ones with a
/// multipart upload.
const SINGLE_PUT_MAX: u64 = 8 * 1024 * 1024;

/// Parts uploaded at once in a multipart upload.
const PARTS_IN_FLIGHT: usize = 4;

/// An S3 bucket (or a prefix in one): objects `<prefix>/<key>`.
#[derive(Debug, Clone)]
pub struct S3Blobs {
    store: Arc<dyn ObjectStore>,
    prefix: String,
}

fn remote(e: object_store::Error) -> BlobError {
    match e {
        object_store::Error::NotFound { .. } => BlobError::NotFound,
        other => BlobError::Remote(other.to_string()),
    }
}

impl S3Blobs {
    /// Opens `s3://bucket/prefix`. Region, endpoint and credentials come
    /// from the `AWS_*` environment variables (`AWS_ENDPOINT_URL`,
    /// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, …), then
    /// `overrides` (object_store's `aws_*` keys) on top. Plain-HTTP
    /// endpoints (test servers such as moto or MinIO) are allowed.
    pub fn from_url(url: &str, overrides: &[(&str, &str)]) -> Result<S3Blobs> {
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| BlobError::Remote(format!("not an s3:// url: {url}")))?;
        let (bucket, prefix) = match rest.split_once('/') {
            Some((b, p)) => (b, p.trim_matches('/')),
            None => (rest, ""),
        };
        if bucket.is_empty() {
            return Err(BlobError::Remote(format!("no bucket in {url}")));
        }
        let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
        for (k, v) in overrides {
            let key: AmazonS3ConfigKey = k
                .parse()
                .map_err(|e: object_store::Error| BlobError::Remote(e.to_string()))?;
            builder = builder.with_config(key, *v);
        }
        let http_endpoint = builder
            .get_config_value(&AmazonS3ConfigKey::Endpoint)
            .is_some_and(|e| e.starts_with("http://"));
        if http_endpoint {
            builder = builder.with_allow_http(true);
        }
        if builder
            .get_config_value(&AmazonS3ConfigKey::Region)
            .is_none()
        {
            builder = builder.with_region("us-east-1");
        }
        let store = builder.build().map_err(remote)?;
        Ok(S3Blobs {
            store: Arc::new(store),
            prefix: prefix.to_string(),
        })
    }

    fn path_of(&self, key: &str) -> Result<ObjectPath> {
        check_key(key)?;
        Ok(if self.prefix.is_empty() {
            ObjectPath::from(key)
        } else {
            ObjectPath::from(format!("{}/{key}", self.prefix))
        })
    }
}

#[async_trait]
impl BlobStore for S3Blobs {
    async fn put_file(&self, key: &str, path: &Path) -> Result<()> {
        let location = self.path_of(key)?;
        if self.head(key).await?.is_some() {
            return Ok(());
        }
        let mut f = tokio::fs::File::open(path).await?;
        let size = f.metadata().await?.len();
        if size <= SINGLE_PUT_MAX {
            let mut buf = Vec::with_capacity(size as usize);
            f.read_to_end(&mut buf).await?;
            self.store
                .put(&location, PutPayload::from(buf))
                .await
                .map_err(remote)?;
            return Ok(());
        }
        let stream = tokio_util::io::ReaderStream::with_capacity(f, 1024 * 1024).boxed();
        self.put_stream(key, stream).await
    }

    async fn put_stream(&self, key: &str, mut stream: ByteStream) -> Result<()> {
        let location = self.path_of(key)?;
        if self.head(key).await?.is_some() {
            return Ok(());
        }
        let upload = self.store.put_multipart(&location).await.map_err(remote)?;
        let mut writer = WriteMultipart::new(upload);
        let result: Result<()> = async {
            while let Some(chunk) = stream.try_next().await? {
                writer
                    .wait_for_capacity(PARTS_IN_FLIGHT)
                    .await
                    .map_err(remote)?;
                writer.put(chunk);
            }
            Ok(())
        }
        .await;
        match result {
            Ok(()) => {
                writer.finish().await.map_err(remote)?;
                Ok(())
            }
            Err(e) => {
                let _ = writer.abort().await;
                Err(e)
            }
        }
    }

    async fn head(&self, key: &str) -> Result<Option<u64>> {
        match self.store.head(&self.path_of(key)?).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(remote(e)),
        }
    }

    async fn get(&self, key: &str, range: Option<Range<u64>>) -> Result<ByteStream> {
        let location = self.path_of(key)?;
        let mut opts = GetOptions::default();
        if let Some(r) = range {
            let size = self.head(key).await?.ok_or(BlobError::NotFound)?;
            if r.start >= r.end || r.start >= size {
                return Err(BlobError::BadRange);
            }
            opts.range = Some(GetRange::Bounded(r.start..r.end.min(size)));
        }
        let got = self.store.get_opts(&location, opts).await.map_err(remote)?;
        Ok(got
            .into_stream()
            .map_err(|e| std::io::Error::other(e.to_string()))
            .boxed())
    }

    async fn delete(&self, key: &str) -> Result<()> {
        match self.store.delete(&self.path_of(key)?).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(remote(e)),
        }
    }
}
