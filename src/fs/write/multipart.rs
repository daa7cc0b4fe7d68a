//! Multipart upload of a file being written.
//!
//! Problem: one PutObject of a large file starts only at `close`, so writing 1 GiB costs the
//! write time plus the upload time, and PutObject stops at 5 GiB. With multipart, a sequential
//! writer's full parts upload in parallel while it is still writing, and `close` sends only the
//! last part and CompleteMultipartUpload.
//!
//! Structure: a [`Session`] is one multipart upload in progress for one file. Parts are all of one
//! size (the last may be shorter; Cloudflare R2 rejects uneven parts) and numbered from 1. Each
//! part has a version, bumped by every change to its bytes; an upload records the version it
//! read, so a part rewritten while (or after) it was uploading is simply sent again at close.
//! Part uploads run as tasks that read their bytes from the staging file without the write lock
//! and take one of the mount's [`UPLOAD_SLOTS`], which bounds the memory of part buffers.
//!
//! Tricky cases:
//! - streaming starts once the file passes the threshold and only while every write continues
//!   the previous one; a random writer uploads all parts, in parallel, at close instead;
//! - a file that outgrows `part size x max parts` stops streaming, and close starts over with a
//!   larger part size (staging still holds every byte);
//! - a file cut below the threshold, or whose headers changed (chmod while open), drops its
//!   session (abort) and uploads the simple way;
//! - CreateMultipartUpload answered NotImplemented: multipart is off for the rest of the mount
//!   and the same upload goes out as one PutObject (nothing is lost);
//! - a session is finished by every successful upload (close, fsync); writing on after an fsync
//!   starts a new one.

use super::WriteState;
use super::Writers;
use crate::fs::inode::Inode;
use crate::store::{Cap, MAX_PART_SIZE, ObjectStore, Part, PutOptions, StoreError, StoreResult};
use bytes::Bytes;
use futures::FutureExt;
use std::collections::HashMap;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use tokio::task::JoinHandle;

/// Part uploads in flight per mount. With 8 MiB parts, 64 MiB of part buffers at most; enough
/// parallel requests to fill a fast link (S3 serves each connection at ~100 MiB/s).
pub const UPLOAD_SLOTS: usize = 8;

#[derive(Default, Clone)]
struct PartState {
    version: u64,
    /// The version uploaded and the ETag the server gave it.
    done: Option<(u64, String)>,
}

struct InFlight {
    index: usize,
    version: u64,
    task: JoinHandle<StoreResult<String>>,
}

pub(super) struct Session {
    upload_id: String,
    part_size: u64,
    /// Headers the upload was created with.
    headers: HashMap<String, String>,
    parts: Vec<PartState>,
    inflight: Vec<InFlight>,
    /// Streaming: parts below this index were started during the current sequential run.
    streamed: usize,
}

/// Number of parts of `len` bytes in parts of `part_size` (one for an empty file).
fn part_count(len: u64, part_size: u64) -> u64 {
    len.div_ceil(part_size).max(1)
}

impl Session {
    /// Bytes `[start, end)` changed.
    pub fn touch(&mut self, start: u64, end: u64) {
        if end <= start {
            return;
        }
        let (first, last) = (
            (start / self.part_size) as usize,
            ((end - 1) / self.part_size) as usize,
        );
        if self.parts.len() <= last {
            self.parts.resize(last + 1, PartState::default());
        }
        for p in &mut self.parts[first..=last] {
            p.version += 1;
        }
    }

    fn clean(&self, i: usize) -> Option<&str> {
        let p = self.parts.get(i)?;
        match &p.done {
            Some((v, etag)) if *v == p.version => Some(etag),
            _ => None,
        }
    }

    /// Records finished part uploads (all of them with `wait`); the first error seen.
    async fn reap(&mut self, wait: bool) -> Option<StoreError> {
        let mut first_err = None;
        let mut keep = Vec::new();
        for mut f in std::mem::take(&mut self.inflight) {
            let res = if wait {
                Some((&mut f.task).await)
            } else {
                (&mut f.task).now_or_never()
            };
            let Some(res) = res else {
                keep.push(f);
                continue;
            };
            match res.unwrap_or_else(|e| Err(StoreError::Other(format!("part upload: {e}")))) {
                Ok(etag) => {
                    if self.parts.len() <= f.index {
                        self.parts.resize(f.index + 1, PartState::default());
                    }
                    self.parts[f.index].done = Some((f.version, etag));
                }
                Err(e) => {
                    tracing::debug!(part = f.index + 1, error = %e, "part upload failed");
                    first_err.get_or_insert(e);
                }
            }
        }
        self.inflight = keep;
        first_err
    }
}

impl<S: ObjectStore> Writers<S> {
    /// Multipart allowed now: configured on, and the server has not refused it.
    pub(super) fn multipart_enabled(&self) -> bool {
        self.opts.multipart && self.store.capability(Cap::Multipart) != Some(false)
    }

    /// The part size for a file of `len` bytes: the configured one, or larger when the file
    /// would need more than `max_parts` parts (rounded up to whole MiB).
    fn part_size_for(&self, len: u64) -> u64 {
        let min = len.div_ceil(u64::from(self.opts.max_parts));
        self.opts
            .part_size
            .max(min.div_ceil(1 << 20) << 20)
            .min(MAX_PART_SIZE)
    }

    async fn start_session(
        &self,
        w: &mut WriteState,
        part_size: u64,
        headers: HashMap<String, String>,
    ) -> StoreResult<()> {
        let opts = PutOptions {
            content_type: crate::fs::meta::content_type(&w.key),
            metadata: headers.clone(),
        };
        let upload_id = self.store.create_multipart(&w.key, opts).await?;
        w.session = Some(Session {
            upload_id,
            part_size,
            headers,
            parts: Vec::new(),
            inflight: Vec::new(),
            streamed: w.seq_start.div_ceil(part_size) as usize,
        });
        Ok(())
    }

    /// Ends the session without completing it: waits for its part uploads, then aborts.
    pub(super) async fn drop_session(&self, w: &mut WriteState) {
        if let Some(mut s) = w.session.take() {
            s.reap(true).await;
            if let Err(e) = self.store.abort_multipart(&w.key, &s.upload_id).await {
                tracing::warn!(key = w.key, error = %e, "aborting a multipart upload failed");
            }
        }
    }

    /// Starts uploading part `index` (`len` bytes) of the session.
    async fn spawn_part(
        &self,
        w: &mut WriteState,
        index: usize,
        len: u64,
    ) -> crate::fs::Result<()> {
        let file = w.staging.shared_file().await?;
        let Some(s) = w.session.as_mut() else {
            return Ok(());
        };
        if s.parts.len() <= index {
            s.parts.resize(index + 1, PartState::default());
        }
        let version = s.parts[index].version;
        let off = index as u64 * s.part_size;
        let (store, slots) = (self.store.clone(), self.upload_slots.clone());
        let (key, id) = (w.key.clone(), s.upload_id.clone());
        let task = tokio::spawn(async move {
            let _slot = slots
                .acquire_owned()
                .await
                .map_err(|_| StoreError::Other("shutting down".into()))?;
            let body = tokio::task::spawn_blocking(move || {
                let mut buf = vec![0u8; len as usize];
                file.read_exact_at(&mut buf, off).map(|_| Bytes::from(buf))
            })
            .await
            .map_err(|e| StoreError::Other(format!("reading a part: {e}")))?
            .map_err(|e| StoreError::Other(format!("reading a part from staging: {e}")))?;
            store.upload_part(&key, &id, index as u32 + 1, body).await
        });
        s.inflight.push(InFlight {
            index,
            version,
            task,
        });
        Ok(())
    }

    /// After a write: a sequential writer past the threshold uploads its full parts now.
    /// The upload headers are computed only when a session starts (not on every write).
    pub(super) async fn stream_parts(&self, w: &mut WriteState, inode: &Inode) {
        let len = w.staging.len();
        if !w.streaming || !self.multipart_enabled() || len <= self.opts.multipart_threshold {
            return;
        }
        if w.session.is_none()
            && let Err(e) = self
                .start_session(
                    w,
                    self.opts.part_size,
                    without_times(&self.upload_headers(inode)),
                )
                .await
        {
            tracing::debug!(key = w.key, error = %e, "no streaming upload for this file");
            w.streaming = false;
            return;
        }
        let Some(s) = w.session.as_mut() else { return };
        if let Some(e) = s.reap(false).await {
            tracing::debug!(key = w.key, error = %e, "a part will be sent again at close");
        }
        let (ps, from) = (s.part_size, s.streamed);
        let full = (len / ps) as usize;
        if full > self.opts.max_parts as usize {
            w.streaming = false; // close picks a larger part size
            return;
        }
        for i in from..full {
            if let Err(e) = self.spawn_part(w, i, ps).await {
                tracing::debug!(key = w.key, error = %e, "streaming stopped");
                w.streaming = false;
                return;
            }
        }
        if let Some(s) = w.session.as_mut() {
            s.streamed = s.streamed.max(full);
        }
    }

    /// Uploads the whole file through a multipart upload (continuing the streaming session when
    /// it fits), then completes it. Returns the object's ETag when the server sends one.
    pub(super) async fn upload_multipart(
        &self,
        w: &mut WriteState,
        headers: HashMap<String, String>,
    ) -> crate::fs::Result<Option<String>> {
        let len = w.staging.len();
        if let Some(s) = &w.session
            && (part_count(len, s.part_size) > u64::from(self.opts.max_parts)
                || s.headers != headers)
        {
            self.drop_session(w).await;
        }
        if w.session.is_none() {
            self.start_session(w, self.part_size_for(len), headers)
                .await?;
        }
        self.fetch_all(w).await?;
        let s = w.session.as_mut().expect("session started above");
        s.reap(true).await;
        let ps = s.part_size;
        let n = part_count(len, ps) as usize;
        for i in 0..n {
            if w.session.as_ref().is_some_and(|s| s.clean(i).is_none()) {
                let plen = ps.min(len - i as u64 * ps);
                self.spawn_part(w, i, plen).await?;
            }
        }
        let s = w.session.as_mut().expect("session kept while uploading");
        if let Some(e) = s.reap(true).await {
            return Err(self.failed(w, e).await);
        }
        let parts: Option<Vec<Part>> = (0..n)
            .map(|i| {
                s.clean(i).map(|etag| Part {
                    number: i as u32 + 1,
                    etag: etag.to_string(),
                })
            })
            .collect();
        let parts =
            parts.ok_or_else(|| StoreError::Other("a part changed during upload".into()))?;
        let id = s.upload_id.clone();
        match self.store.complete_multipart(&w.key, &id, parts).await {
            Ok(etag) => {
                w.session = None;
                Ok(etag)
            }
            Err(e) => Err(self.failed(w, e).await),
        }
    }

    /// A part upload or the completion failed. The session stays, so the next flush sends only
    /// what is missing and completes, unless the server no longer knows the upload
    /// (NoSuchUpload: restarted, expired, aborted): then it is dropped, and the upload starts
    /// over at once in a new one (`Writers::send`).
    async fn failed(&self, w: &mut WriteState, e: StoreError) -> crate::fs::Error {
        let forgotten = match &e {
            StoreError::NotFound => true,
            StoreError::Service { code, .. } => code.as_deref() == Some("NoSuchUpload"),
            _ => false,
        };
        if forgotten {
            self.drop_session(w).await;
            w.upload_forgotten = true;
            return crate::fs::Error::Store(StoreError::Other(
                "the server no longer knows the multipart upload (NoSuchUpload)".into(),
            ));
        }
        e.into()
    }
}

/// The headers of a multipart upload: without the mtime and ctime that writes move. They are
/// sent when the upload starts, while writes go on; stored then, they would be older than the
/// file. The object's Last-Modified (its completion) stands for both instead.
pub(super) fn without_times(h: &HashMap<String, String>) -> HashMap<String, String> {
    let mut h = h.clone();
    h.remove(crate::fs::meta::MTIME);
    h.remove(crate::fs::meta::CTIME);
    h
}

/// Shares the per-mount upload slots.
pub fn upload_slots() -> Arc<tokio::sync::Semaphore> {
    Arc::new(tokio::sync::Semaphore::new(UPLOAD_SLOTS))
}
