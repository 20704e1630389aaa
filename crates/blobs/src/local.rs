//! Blobs as files under a directory.

use std::io::SeekFrom;
use std::ops::Range;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use futures_util::{StreamExt, TryStreamExt};
use tokio::fs;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio_util::io::ReaderStream;

use crate::{check_key, BlobError, BlobStore, ByteStream, Result};

/// Content-addressed files: `<dir>/<key[0..2]>/<key>`. A put writes a
/// temporary file in `<dir>/tmp`, fsyncs it and renames it into place, so a
/// reader never sees a partial blob and a crash leaves at most a stray
/// temporary file.
#[derive(Debug, Clone)]
pub struct LocalBlobs {
    dir: PathBuf,
}

impl LocalBlobs {
    /// Uses `dir` (made if missing).
    pub async fn open(dir: &Path) -> Result<LocalBlobs> {
        fs::create_dir_all(dir.join("tmp")).await?;
        Ok(LocalBlobs {
            dir: dir.to_path_buf(),
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path_of(&self, key: &str) -> Result<PathBuf> {
        check_key(key)?;
        let shard: String = key.chars().take(2).collect();
        Ok(self.dir.join(shard).join(key))
    }

    fn temp_path(&self) -> PathBuf {
        let n: u64 = rand::random();
        self.dir.join("tmp").join(format!("{n:016x}.part"))
    }

    async fn commit_temp(&self, tmp: &Path, key: &str) -> Result<()> {
        let dest = self.path_of(key)?;
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent).await?;
        }
        fs::rename(tmp, &dest).await?;
        if let Some(parent) = dest.parent() {
            // Make the rename durable too (best effort: not every platform
            // can open a directory for syncing).
            if let Ok(d) = fs::File::open(parent).await {
                let _ = d.sync_all().await;
            }
        }
        Ok(())
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        Ok(fs::try_exists(self.path_of(key)?).await?)
    }
}

#[async_trait]
impl BlobStore for LocalBlobs {
    async fn put_file(&self, key: &str, path: &Path) -> Result<()> {
        if self.exists(key).await? {
            return Ok(());
        }
        let tmp = self.temp_path();
        let result = async {
            fs::copy(path, &tmp).await?;
            fs::File::open(&tmp).await?.sync_all().await?;
            self.commit_temp(&tmp, key).await
        }
        .await;
        if result.is_err() {
            let _ = fs::remove_file(&tmp).await;
        }
        result
    }

    async fn put_stream(&self, key: &str, mut stream: ByteStream) -> Result<()> {
        if self.exists(key).await? {
            return Ok(());
        }
        let tmp = self.temp_path();
        let result = async {
            let mut f = fs::File::create(&tmp).await?;
            while let Some(chunk) = stream.try_next().await? {
                f.write_all(&chunk).await?;
            }
            f.flush().await?;
            f.sync_all().await?;
            drop(f);
            self.commit_temp(&tmp, key).await
        }
        .await;
        if result.is_err() {
            let _ = fs::remove_file(&tmp).await;
        }
        result
    }

    async fn head(&self, key: &str) -> Result<Option<u64>> {
        match fs::metadata(self.path_of(key)?).await {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn get(&self, key: &str, range: Option<Range<u64>>) -> Result<ByteStream> {
        let mut f = match fs::File::open(self.path_of(key)?).await {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(BlobError::NotFound),
            Err(e) => return Err(e.into()),
        };
        let size = f.metadata().await?.len();
        let Some(range) = range else {
            return Ok(ReaderStream::new(f).boxed());
        };
        if range.start >= range.end || range.start >= size {
            return Err(BlobError::BadRange);
        }
        let end = range.end.min(size);
        f.seek(SeekFrom::Start(range.start)).await?;
        Ok(ReaderStream::new(f.take(end - range.start)).boxed())
    }

    async fn delete(&self, key: &str) -> Result<()> {
        match fs::remove_file(self.path_of(key)?).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}
