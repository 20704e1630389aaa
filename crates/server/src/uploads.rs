//! The resumable uploads in progress on this node, as the quota sees them:
//! who owns each, its declared length, and whether a `PATCH` is writing to
//! it. Rebuilt from the upload files at start; `media/tus.rs` serves the
//! protocol and keeps this account up to date.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use confab_proto::UserId;
use serde::Deserialize;

/// The part of an upload's `<id>.json` this account needs.
#[derive(Deserialize)]
struct Meta {
    owner: UserId,
    length: u64,
}

/// The uploads in progress on this node: owner, declared length, and
/// whether a `PATCH` is running (one at a time per upload).
#[derive(Default)]
pub struct Uploads {
    open: Mutex<HashMap<String, Open>>,
}

struct Open {
    owner: UserId,
    length: u64,
    busy: bool,
}

/// Why an upload could not be created.
pub(crate) enum Refused {
    TooMany(usize),
    OverQuota { pending: u64 },
}

impl Uploads {
    /// The account of the uploads whose files are in `dir` (at start).
    pub fn load(dir: &Path) -> Uploads {
        let uploads = Uploads::default();
        let Ok(entries) = std::fs::read_dir(dir) else {
            return uploads;
        };
        let mut open = uploads.lock();
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            let (Some(id), Ok(bytes)) = (
                path.file_stem().and_then(|s| s.to_str()).map(str::to_owned),
                std::fs::read(&path),
            ) else {
                continue;
            };
            if let Ok(meta) = serde_json::from_slice::<Meta>(&bytes) {
                open.insert(
                    id,
                    Open {
                        owner: meta.owner,
                        length: meta.length,
                        busy: false,
                    },
                );
            }
        }
        drop(open);
        uploads
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Open>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reserves room for a new upload of `length` bytes by `owner`, whose
    /// finished uploads take `used` bytes.
    pub(crate) fn reserve(
        &self,
        id: &str,
        owner: UserId,
        length: u64,
        used: u64,
        limits: &crate::config::MediaConfig,
    ) -> Result<(), Refused> {
        let mut open = self.lock();
        let (count, pending) = open
            .values()
            .filter(|o| o.owner == owner)
            .fold((0usize, 0u64), |(n, sum), o| {
                (n + 1, sum.saturating_add(o.length))
            });
        if count >= limits.max_open_uploads {
            return Err(Refused::TooMany(limits.max_open_uploads));
        }
        if used.saturating_add(pending).saturating_add(length) > limits.user_quota_bytes {
            return Err(Refused::OverQuota { pending });
        }
        open.insert(
            id.to_owned(),
            Open {
                owner,
                length,
                busy: false,
            },
        );
        Ok(())
    }

    pub(crate) fn forget(&self, id: &str) {
        self.lock().remove(id);
    }

    /// Bytes `owner`'s uploads in progress will take.
    pub fn pending_bytes(&self, owner: UserId) -> u64 {
        self.lock()
            .values()
            .filter(|o| o.owner == owner)
            .map(|o| o.length)
            .sum()
    }

    /// Deletes the uploads in `dir` not written to for `expiry` (and not
    /// being written now); returns how many.
    pub fn expire(&self, dir: &Path, expiry: Duration) -> u64 {
        let now = SystemTime::now();
        let stale: Vec<String> = {
            let open = self.lock();
            open.iter()
                .filter(|(_, o)| !o.busy)
                .filter(|(id, _)| {
                    let bin = dir.join(format!("{id}.bin"));
                    let modified = std::fs::metadata(&bin).and_then(|m| m.modified());
                    match modified {
                        Ok(t) => now.duration_since(t).unwrap_or_default() > expiry,
                        Err(_) => true,
                    }
                })
                .map(|(id, _)| id.clone())
                .collect()
        };
        let mut n = 0;
        for id in stale {
            let mut open = self.lock();
            if open.get(&id).is_some_and(|o| !o.busy) {
                open.remove(&id);
                drop(open);
                let _ = std::fs::remove_file(dir.join(format!("{id}.json")));
                let _ = std::fs::remove_file(dir.join(format!("{id}.bin")));
                n += 1;
            }
        }
        n
    }
}

/// A running `PATCH` of one upload.
pub(crate) struct Busy {
    uploads: Arc<Uploads>,
    id: String,
}

impl Busy {
    /// Marks the upload busy; `None` when a `PATCH` runs already or the
    /// upload is not open here.
    pub(crate) fn take(uploads: &Arc<Uploads>, id: &str) -> Option<Busy> {
        let mut open = uploads.lock();
        let o = open.get_mut(id)?;
        if o.busy {
            return None;
        }
        o.busy = true;
        Some(Busy {
            uploads: uploads.clone(),
            id: id.to_owned(),
        })
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        if let Some(o) = self.uploads.lock().get_mut(&self.id) {
            o.busy = false;
        }
    }
}
