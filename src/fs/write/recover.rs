//! Finishing what a killed mount left: the journal's dead sessions, and copies in `recovered/`.
//!
//! A leftover is uploaded only when a close or fsync had asked for it (`flushing`), every byte
//! of it is there (nothing of the original object was left unfetched), its checksum matches,
//! and the object on the server is still the one it would replace (the ETag the journal kept,
//! or no object at all). Anything else, or a failed upload, becomes a copy in `recovered/` with
//! a log line naming the key, the path and why: a file half-written when the mount died is
//! never uploaded over a good object, and a newer object written by someone else is never
//! overwritten. A spill file without an entry held bytes already on the server: removed.

use super::journal::{self, Entry, EntryState, Leftover, RECOVERED_ENTRIES};
use super::staging::Staging;
use super::{WriteState, Writers};
use crate::store::{ObjectStore, StoreError};
use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};

/// What one recovery did.
#[derive(Debug, Default)]
pub struct Report {
    /// Keys uploaded.
    pub uploaded: Vec<String>,
    /// Keys kept in `recovered/` (or left there), where, and why.
    pub kept: Vec<(String, PathBuf, String)>,
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| io::Error::other(format!("recovery I/O task: {e}")))?
}

impl<S: ObjectStore> Writers<S> {
    /// Uploads or keeps what dead sessions of this bucket left in the cache directory.
    pub(crate) async fn recover(&self) -> io::Result<Report> {
        let j = self.journal.clone();
        let sessions = blocking(move || j.dead_sessions()).await?;
        let mut report = Report::default();
        for s in sessions {
            let (s, leftovers) = blocking(move || {
                let l = s.leftovers()?;
                Ok((s, l))
            })
            .await?;
            for l in leftovers {
                self.recover_leftover(l, &mut report).await;
            }
            let dir = s.dir.clone();
            if let Err(e) = blocking(move || s.remove()).await {
                tracing::warn!(dir = %dir.display(), error = %e, "a recovered session directory could not be removed");
            }
        }
        Ok(report)
    }

    async fn recover_leftover(&self, l: Leftover, report: &mut Report) {
        let Some(data) = l.data else {
            if let Some(Ok(e)) = &l.entry {
                tracing::error!(
                    key = e.key,
                    "a file being written when the mount ended had its bytes in memory only; they are lost"
                );
            }
            let _ = std::fs::remove_file(&l.entry_path);
            return;
        };
        let entry = match l.entry {
            None => {
                // Its bytes reached the server (the entry goes when the upload succeeds).
                let _ = std::fs::remove_file(&data);
                return;
            }
            Some(Ok(e)) if e.version == journal::VERSION => e,
            Some(other) => {
                let why = match other {
                    Ok(e) => format!("journal entry of unknown version {}", e.version),
                    Err(e) => format!("unreadable journal entry: {e}"),
                };
                let name = data.file_stem().unwrap_or_default().to_string_lossy();
                let e = Entry::new(
                    self.journal.origin(),
                    &format!("unknown-key-{name}"),
                    EntryState::Writing,
                );
                let len = std::fs::metadata(&data).map(|m| m.len()).unwrap_or(0);
                return self.keep_leftover(&data, len, e, why, false, report).await;
            }
        };
        let size = entry.size;
        let why = match self.upload_leftover(&data, &entry, false).await {
            Ok(()) => {
                tracing::info!(
                    key = entry.key,
                    bytes = size,
                    "uploaded a file a previous mount had not finished uploading"
                );
                report.uploaded.push(entry.key);
                return;
            }
            Err(why) => why,
        };
        self.keep_leftover(&data, size, entry, why, false, report)
            .await;
    }

    /// Moves a leftover to `recovered/` (or, `in_place`, leaves a copy there) and says so.
    async fn keep_leftover(
        &self,
        data: &Path,
        len: u64,
        mut entry: Entry,
        why: String,
        in_place: bool,
        report: &mut Report,
    ) {
        let staging = match Staging::adopt(self.journal.clone(), data, len, in_place) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(key = entry.key, path = %data.display(), error = %e, "a leftover of a previous mount cannot be opened; it stays where it is");
                return;
            }
        };
        entry.reason = Some(why.clone());
        match staging.persist(entry.clone()).await {
            Ok(p) => {
                tracing::error!(key = entry.key, kept = %p.display(), reason = why, "a file a previous mount did not upload is kept on local disk; `s3mount recover` uploads it");
                report.kept.push((entry.key, p, why));
            }
            Err(e) => {
                tracing::error!(key = entry.key, path = %data.display(), error = %e, "a leftover of a previous mount could not be moved to recovered/; it stays where it is")
            }
        }
    }

    /// Uploads the bytes at `data` as `entry` says, if it is safe; else why not. `force`:
    /// replace the object even if it changed since (the user asked for it).
    async fn upload_leftover(&self, data: &Path, entry: &Entry, force: bool) -> Result<(), String> {
        if entry.state != EntryState::Flushing {
            return Err("the file was being written when the mount ended (no close or fsync had asked for an upload)".into());
        }
        if !entry.complete {
            return Err(
                "parts of the original object were never fetched (zeros stand there)".into(),
            );
        }
        let len = std::fs::metadata(data).map_err(|e| e.to_string())?.len();
        if len != entry.size {
            return Err(format!(
                "the file has {len} bytes, the journal says {}",
                entry.size
            ));
        }
        let mut w = WriteState::new(
            entry.key.clone(),
            Staging::adopt(self.journal.clone(), data, len, true).map_err(|e| e.to_string())?,
            None,
        );
        w.streaming = false;
        w.running_md5 = None;
        w.dirty = true;
        if let Some(want) = &entry.md5 {
            let got = w.staging.md5().await.map_err(|e| e.to_string())?;
            if hex::encode(got) != *want {
                return Err("its bytes do not match the checksum in the journal".into());
            }
        }
        if !force {
            let now = match self.store.head(&entry.key).await {
                Ok(info) => info.etag,
                Err(StoreError::NotFound) => None,
                Err(e) => return Err(format!("cannot check the object on the server: {e}")),
            };
            if now != entry.replaces {
                return Err(format!(
                    "the object changed on the server since (ETag {}, expected {})",
                    now.as_deref().unwrap_or("none"),
                    entry.replaces.as_deref().unwrap_or("none")
                ));
            }
        }
        let headers: HashMap<String, String> = entry.metadata.clone().into_iter().collect();
        self.send(&mut w, headers)
            .await
            .map_err(|e| format!("upload failed: {e}"))?;
        // Uploaded: the bytes and their entry go.
        let _ = std::fs::remove_file(data);
        let _ = std::fs::remove_file(journal::entry_path(data));
        Ok(())
    }

    /// Uploads the copies in `recovered/` that belong to this bucket (`s3mount recover`);
    /// `list_only` reports them without uploading. Copies that cannot go up stay.
    pub(crate) async fn recover_kept(&self, list_only: bool, force: bool) -> io::Result<Report> {
        let dir = self.journal.root().join("recovered");
        let entries = dir.join(RECOVERED_ENTRIES);
        let found = blocking(move || {
            let mut out = Vec::new();
            let rd = match std::fs::read_dir(&entries) {
                Ok(rd) => rd,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
                Err(e) => return Err(e),
            };
            for d in rd {
                let p = d?.path();
                let Some(name) = p
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.strip_suffix(".json"))
                else {
                    continue;
                };
                let data = dir.join(name);
                if let (Ok(e), true) = (journal::read_entry(&p), data.exists()) {
                    out.push((data, p, e));
                }
            }
            out.sort_by(|a, b| a.0.cmp(&b.0));
            Ok(out)
        })
        .await?;
        let mut report = Report::default();
        for (data, entry_file, mut e) in found {
            if e.origin != self.journal.origin() {
                continue;
            }
            let why = e.reason.clone().unwrap_or_default();
            if list_only {
                report.kept.push((e.key, data, why));
                continue;
            }
            // The user asks for the upload now; `force` also takes half-written files.
            if force {
                e.state = EntryState::Flushing;
            }
            e.size = std::fs::metadata(&data).map(|m| m.len()).unwrap_or(e.size);
            match self.upload_leftover(&data, &e, force).await {
                Ok(()) => {
                    let _ = std::fs::remove_file(&entry_file);
                    report.uploaded.push(e.key);
                }
                Err(why) => report.kept.push((e.key, data, why)),
            }
        }
        Ok(report)
    }
}
