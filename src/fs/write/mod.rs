//! The writers: files open for writing, their staging and their uploads.
//!
//! A file opened for writing gets one [`WriteState`] per inode, shared by all its write handles
//! (so two writers on one mount see each other's bytes and the last close uploads the result).
//! Its bytes live in [`staging::Staging`]; `flush` (every `close`) and `fsync` upload the whole
//! file when it changed: as one PutObject with Content-MD5 up to `--multipart-threshold`, above it
//! as a multipart upload whose parts a sequential writer already sent while writing
//! (`multipart.rs`). A failed upload fails that `close` or `fsync`, after its bytes are on disk
//! and in the journal (`journal.rs`); if the last handle closes with the upload still failing,
//! the bytes are moved to `<cache-dir>/recovered/` and the log names the file. What a killed
//! mount left in the journal is finished by the next mount ([`Writers::recover`], `recover.rs`).
//!
//! Opening an existing object for writing without `O_TRUNC` fetches nothing up front: `base.rs`
//! fetches the blocks a write or read needs, and the rest before the upload.
//!
//! The handle count of a file lives beside its state under the map's lock: a handle opened while
//! the last close is still uploading joins the state (and its close uploads the bytes) instead
//! of joining a state being torn down.

mod base;
pub mod journal;
mod multipart;
mod recover;
pub mod staging;

pub use multipart::{UPLOAD_SLOTS, upload_slots};
pub use recover::Report as RecoveryReport;

use super::inode::{Inode, Kind, Stat};
use super::meta::{self, PosixMeta};
use super::{Error, Result};
use crate::config::FsOptions;
use crate::store::{MAX_OBJECT_SIZE, ObjectStore, PutOptions, StoreError};
use bytes::Bytes;
use journal::{Entry, EntryState, Journal};
use md5::Digest;
use staging::{Source, Staging};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

/// How long the end of a session waits for a file's state that a request still holds.
const SHUTDOWN_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// The largest object one PutObject may carry (the S3 limit). Without multipart, writing past
/// it fails at write time with EFBIG.
pub const MAX_SINGLE_PUT: u64 = 5 << 30;

/// A file's write state and the write handles open on it. The count lives beside the state,
/// under the map's lock, not inside the state's lock: joining must not wait for an upload.
pub(super) struct WriterSlot {
    pub(super) state: Arc<tokio::sync::Mutex<WriteState>>,
    pub(super) handles: u32,
}

pub struct WriteState {
    key: String,
    staging: Staging,
    /// Parts of the object opened on, not yet fetched; `None` when staging holds every byte.
    base: Option<base::Base>,
    /// The multipart upload in progress, if any.
    session: Option<multipart::Session>,
    /// Every write so far continued the previous one (from `seq_start` to `seq_end`).
    streaming: bool,
    seq_start: u64,
    seq_end: u64,
    /// MD5 of bytes `0..seq_end` while the file has been written in order from empty and may
    /// still go up as one PutObject: saves the separate hashing pass before the upload.
    running_md5: Option<md5::Md5>,
    /// Changed since the last successful upload.
    dirty: bool,
    /// ETag of the object an upload replaces (seen at open, then of our last upload): the
    /// journal keeps it, so a recovery never overwrites a newer object.
    replaces: Option<String>,
    /// What the journal holds for this file's spill file.
    journaled: Option<EntryState>,
    /// The last multipart upload failed because the server no longer knows it.
    upload_forgotten: bool,
    /// Unlinked while open: reads and writes go on, nothing is uploaded.
    unlinked: bool,
    /// Stored attributes as of the last upload or journal entry (for entries made where the
    /// inode is not at hand).
    headers: BTreeMap<String, String>,
}

impl WriteState {
    fn new(key: String, staging: Staging, base: Option<base::Base>) -> Self {
        let len = staging.len();
        Self {
            key,
            staging,
            base,
            session: None,
            streaming: true,
            seq_start: len,
            seq_end: len,
            running_md5: (len == 0).then(md5::Md5::new),
            dirty: false,
            replaces: None,
            journaled: None,
            upload_forgotten: false,
            unlinked: false,
            headers: BTreeMap::new(),
        }
    }

    /// The file was cut or extended to `len`.
    async fn truncate(&mut self, len: u64) -> Result<()> {
        let old = self.staging.len();
        self.staging.truncate(len).await?;
        if let Some(b) = &mut self.base {
            b.truncate(len);
        }
        if let Some(s) = &mut self.session {
            s.touch(old.min(len), old.max(len));
        }
        if len == 0 {
            self.streaming = true;
            (self.seq_start, self.seq_end) = (0, 0);
            self.running_md5 = Some(md5::Md5::new());
        } else if len != self.seq_end {
            self.streaming = false;
            self.running_md5 = None;
        }
        self.dirty = true;
        Ok(())
    }
}

/// The writers: every file open for writing, its staging and its uploads.
///
/// Lock order: a file's write state (tokio, held across its uploads) before the `states` map
/// (std, map operations only, never held while waiting for a state). Part uploads take one of
/// the mount's `upload_slots` (a semaphore) without holding a state.
pub(crate) struct Writers<S: ObjectStore> {
    store: Arc<S>,
    opts: Arc<FsOptions>,
    /// Files being written, by inode: one staging shared by all write handles of the inode.
    states: Mutex<HashMap<u64, WriterSlot>>,
    /// Part uploads in flight across the mount ([`UPLOAD_SLOTS`]).
    upload_slots: Arc<tokio::sync::Semaphore>,
    /// This mount's spill files and pending uploads in the cache directory.
    journal: Arc<Journal>,
    /// The mount's memory budget (KiB) that in-memory write buffers draw from.
    budget: Arc<tokio::sync::Semaphore>,
}

impl<S: ObjectStore> Writers<S> {
    pub(crate) fn new(
        store: Arc<S>,
        opts: Arc<FsOptions>,
        budget: Arc<tokio::sync::Semaphore>,
    ) -> Self {
        Self {
            journal: Arc::new(Journal::new(&opts.cache_dir, &opts.origin)),
            store,
            opts,
            states: Mutex::new(HashMap::new()),
            upload_slots: upload_slots(),
            budget,
        }
    }

    fn staging(&self) -> Staging {
        Staging::new(
            self.journal.clone(),
            self.opts.write_buffer,
            Some(self.budget.clone()),
        )
    }

    /// The journal entry for `w` as it stands.
    fn entry(&self, w: &WriteState, state: EntryState) -> Entry {
        let mut e = Entry::new(self.journal.origin(), &w.key, state);
        e.size = w.staging.len();
        e.metadata = w.headers.clone();
        e.replaces = w.replaces.clone();
        e.complete = w.base.is_none();
        e
    }

    /// Puts `w` in the journal as `state` (if its bytes are on disk and the journal does not
    /// say so already). A spill file whose bytes the journal does not vouch for is lost to a
    /// crash, so a failure here fails the operation.
    async fn journal(
        &self,
        w: &mut WriteState,
        inode: Option<&Inode>,
        state: EntryState,
    ) -> Result<()> {
        if !w.staging.spilled() || w.journaled == Some(state) {
            return Ok(());
        }
        if let Some(inode) = inode {
            w.headers = self.upload_headers(inode).into_iter().collect();
        }
        let e = self.entry(w, state);
        w.staging.record(e).await?;
        w.journaled = Some(state);
        Ok(())
    }

    /// What the mount shows without headers: nothing is written for these values. A symlink
    /// has no default mode: its `S_IFLNK` mode is what makes it a symlink, so it is always
    /// written.
    pub(crate) fn default_meta(&self, kind: Kind) -> PosixMeta {
        PosixMeta {
            mode: match kind {
                Kind::Dir => Some(meta::dir_mode(self.opts.dir_mode)),
                // The type bits are what make these what they are: always written.
                Kind::Symlink | Kind::Special(_) => None,
                Kind::File => Some(meta::file_mode(self.opts.file_mode)),
            },
            uid: Some(self.opts.uid),
            gid: Some(self.opts.gid),
            ..Default::default()
        }
    }

    /// Headers for an upload of `inode`: its stored attributes where they differ from defaults.
    pub(crate) fn upload_headers(&self, inode: &Inode) -> HashMap<String, String> {
        inode.stat().meta.to_headers(&self.default_meta(inode.kind))
    }

    /// Files open for writing, and the bytes they stage (states busy uploading are skipped).
    pub(crate) fn pending(&self) -> (u64, u64) {
        let states: Vec<_> = self
            .states
            .lock()
            .unwrap()
            .values()
            .map(|s| s.state.clone())
            .collect();
        let staged = states
            .iter()
            .filter_map(|s| s.try_lock().ok().map(|g| g.staging.len()))
            .sum();
        (states.len() as u64, staged)
    }

    /// Uploads holding one of the mount's upload slots.
    pub(crate) fn uploads_in_flight(&self) -> u64 {
        (UPLOAD_SLOTS - self.upload_slots.available_permits()) as u64
    }

    /// Whether `ino` is open for writing.
    pub(crate) fn is_open(&self, ino: u64) -> bool {
        self.states.lock().unwrap().contains_key(&ino)
    }

    fn writer(&self, ino: u64) -> Option<Arc<tokio::sync::Mutex<WriteState>>> {
        self.states
            .lock()
            .unwrap()
            .get(&ino)
            .map(|s| s.state.clone())
    }

    /// A new write state for `inode`: empty with `truncate`, else over the object's bytes
    /// (fetched when needed).
    async fn new_state(&self, inode: &Inode, key: &str, truncate: bool) -> Result<WriteState> {
        let mut staging = self.staging();
        let stat = inode.stat();
        let base = if !truncate && stat.size > 0 {
            staging.truncate(stat.size).await?;
            Some(base::Base::new(stat.size, stat.etag.clone()))
        } else {
            None
        };
        let mut w = WriteState::new(key.to_string(), staging, base);
        w.dirty = truncate;
        w.replaces = stat.etag.clone();
        Ok(w)
    }

    /// Bytes `[offset, offset + len)` of `ino` if it is being written.
    pub(crate) async fn read(&self, ino: u64, offset: u64, len: u64) -> Option<Result<Bytes>> {
        let w = self.writer(ino)?;
        let mut g = w.lock().await;
        if let Err(e) = self.fetch(&mut g, offset, offset + len).await {
            return Some(Err(e));
        }
        Some(g.staging.read_at(offset, len).await.map_err(Error::from))
    }

    /// Joins (or starts) the write state of `inode` for one more handle. The handle is counted
    /// under the map lock, so a last close that is uploading sees it and keeps the state.
    pub(crate) async fn attach(&self, inode: &Inode, key: &str, truncate: bool) -> Result<()> {
        let joined = self.join_writer(inode.ino);
        let w = match joined {
            Some(w) => w,
            None => {
                let state = self.new_state(inode, key, truncate).await?;
                let fresh = Arc::new(tokio::sync::Mutex::new(state));
                let mut map = self.states.lock().unwrap();
                match map.get_mut(&inode.ino) {
                    // Another open raced us: join its state instead of ours.
                    Some(slot) => {
                        slot.handles += 1;
                        slot.state.clone()
                    }
                    None => {
                        map.insert(
                            inode.ino,
                            WriterSlot {
                                state: fresh,
                                handles: 1,
                            },
                        );
                        if truncate {
                            self.note_size(inode, 0);
                        }
                        return Ok(());
                    }
                }
            }
        };
        if truncate {
            if let Err(e) = w.lock().await.truncate(0).await {
                if let Some(s) = self.states.lock().unwrap().get_mut(&inode.ino) {
                    s.handles -= 1;
                }
                return Err(e);
            }
            self.note_size(inode, 0);
        }
        Ok(())
    }

    /// One more handle on an existing write state.
    fn join_writer(&self, ino: u64) -> Option<Arc<tokio::sync::Mutex<WriteState>>> {
        let mut map = self.states.lock().unwrap();
        let slot = map.get_mut(&ino)?;
        slot.handles += 1;
        Some(slot.state.clone())
    }

    /// A write handle closed. The last one uploads what is unsaved, then forgets the state,
    /// unless a handle opened meanwhile: that one then owns the bytes (and its close uploads
    /// them), so nothing is torn down under it. A failed upload with no handle left moves the
    /// bytes to `recovered/`.
    pub(crate) async fn detach(&self, ino: u64, inode: Option<Arc<Inode>>) -> Result<()> {
        let w = {
            let mut map = self.states.lock().unwrap();
            let Some(slot) = map.get_mut(&ino) else {
                return Ok(());
            };
            slot.handles = slot.handles.saturating_sub(1);
            if slot.handles > 0 {
                return Ok(());
            }
            slot.state.clone()
        };
        let mut g = w.lock().await;
        let res = match &inode {
            Some(inode) => self.upload(inode, &mut g).await,
            None => Ok(()),
        };
        let last = {
            let mut map = self.states.lock().unwrap();
            let idle = map
                .get(&ino)
                .is_some_and(|s| s.handles == 0 && Arc::ptr_eq(&s.state, &w));
            if idle {
                map.remove(&ino);
            }
            idle
        };
        if let (true, Err(e)) = (last, &res) {
            self.keep_unsaved(&mut g, &e.to_string()).await;
        }
        res
    }

    /// Moves the bytes of a file whose upload failed to `recovered/` and says where, in the log.
    async fn keep_unsaved(&self, g: &mut WriteState, why: &str) {
        self.drop_session(g).await;
        if let Err(fe) = self.fetch_all(g).await {
            tracing::warn!(key = g.key, error = %fe, "parts of the original object could not be fetched; the kept copy has zeros there");
        }
        let empty = WriteState::new(
            String::new(),
            Staging::new(self.journal.clone(), 0, None),
            None,
        );
        let mut entry = self.entry(g, EntryState::Flushing);
        entry.reason = Some(why.to_string());
        entry.md5 = g.staging.md5().await.ok().map(hex::encode);
        let state = std::mem::replace(g, empty);
        match state.staging.persist(entry).await {
            Ok(p) => tracing::error!(
                key = state.key,
                error = why,
                kept = %p.display(),
                "upload failed; the file's bytes are kept on local disk"
            ),
            Err(pe) => tracing::error!(key = state.key, error = why, persist_error = %pe,
                "upload failed and the bytes could not be kept"),
        }
    }

    /// The session ended: every state still here has no handle that will release it. The
    /// unsaved ones (changed since their last successful upload) are kept on local disk.
    pub(crate) async fn shutdown(&self) {
        let states: Vec<_> = self
            .states
            .lock()
            .unwrap()
            .drain()
            .map(|(_, slot)| slot.state)
            .collect();
        for w in states {
            // A state still locked here belongs to a request that outlived the drain: its
            // upload is still running and its spill file (if any) stays in the cache directory.
            let Ok(mut g) = tokio::time::timeout(SHUTDOWN_LOCK_WAIT, w.lock()).await else {
                tracing::warn!(
                    "a file was still uploading at exit; its staged bytes stay in the cache directory"
                );
                continue;
            };
            if g.dirty {
                self.keep_unsaved(&mut g, "the mount ended before the file was uploaded")
                    .await;
            }
        }
    }

    /// A write or truncate: the size, and mtime and ctime moved to now (also after an
    /// explicit time: `touch -d 2001-09-09 f; echo b >> f` leaves mtime at now). Both are
    /// stored with the upload (`x-amz-meta-mtime`/`-ctime`, to the nanosecond).
    fn note_size(&self, inode: &Inode, size: u64) {
        let mut st = inode.stat();
        let now = SystemTime::now();
        st.size = size;
        st.mtime = now;
        st.meta.mtime = Some(now);
        st.meta.ctime = Some(now);
        st.validated = Some(Instant::now());
        inode.set_stat(st);
    }

    /// Uploads the whole file if it changed: multipart above the threshold (when the server
    /// has it), else one PutObject.
    async fn upload(&self, inode: &Inode, w: &mut WriteState) -> Result<()> {
        if !w.dirty || w.unlinked {
            return Ok(());
        }
        let len = w.staging.len();
        let headers = self.upload_headers(inode);
        w.headers = headers.clone().into_iter().collect();
        // A crash from here on leaves an entry the next mount uploads.
        self.journal(w, None, EntryState::Flushing).await?;
        let etag = self.send(w, headers).await?;
        w.dirty = false;
        // Some servers omit the ETag on PUT: ask, so later reads carry If-Match.
        let etag = match etag {
            Some(e) => Some(e),
            None => self.store.head(&w.key).await.ok().and_then(|i| i.etag),
        };
        w.replaces = etag.clone();
        if w.journaled.take().is_some()
            && let Err(e) = w.staging.unrecord().await
        {
            tracing::warn!(key = w.key, error = %e, "uploaded, but its journal entry could not be removed (the next mount will find the object already replaced and keep a copy)");
        }
        inode.set_stat(Stat {
            size: len,
            mtime: SystemTime::now(),
            etag,
            validated: Some(Instant::now()),
            meta: inode.stat().meta,
        });
        Ok(())
    }

    /// Sends the whole file (multipart above the threshold when the server has it, else one
    /// PutObject) with `headers`; the object's ETag when the server gives one.
    async fn send(
        &self,
        w: &mut WriteState,
        headers: HashMap<String, String>,
    ) -> Result<Option<String>> {
        let len = w.staging.len();
        let mut etag = None;
        let mut sent = false;
        if self.multipart_enabled() && len > self.opts.multipart_threshold {
            let mut restarted = false;
            loop {
                match self
                    .upload_multipart(w, multipart::without_times(&headers))
                    .await
                {
                    Ok(e) => (etag, sent) = (e, true),
                    // Refused by the server: the same bytes go out as one PutObject below.
                    Err(Error::Store(StoreError::NotImplemented(_))) if len <= MAX_SINGLE_PUT => {}
                    // The server forgot the upload (restarted, expired): once more, from the
                    // staged bytes, in a new upload.
                    Err(e) if std::mem::take(&mut w.upload_forgotten) && !restarted => {
                        tracing::warn!(key = w.key, error = %e, "starting the upload over from the staged bytes");
                        restarted = true;
                        continue;
                    }
                    Err(e) => return Err(e),
                }
                break;
            }
        } else if w.session.is_some() {
            self.drop_session(w).await;
        }
        if !sent {
            self.fetch_all(w).await?;
            // Whole-file uploads share the mount's upload slots with part uploads: 64 files
            // closed at once do not hold 64 request bodies and connections in memory.
            let _slot = self.upload_slots.acquire().await.ok();
            let opts = PutOptions {
                content_type: meta::content_type(&w.key),
                metadata: headers,
            };
            etag = match w.staging.source() {
                Source::Memory => {
                    // Lent, not copied: the upload and staging share the bytes.
                    let b = w.staging.lend();
                    let res = self.store.put(&w.key, b.clone(), opts).await;
                    w.staging.restore(b);
                    res?
                }
                Source::File(path, len) => {
                    let md5 = match &w.running_md5 {
                        Some(h) if w.streaming && w.seq_start == 0 && w.seq_end == len => {
                            h.clone().finalize().into()
                        }
                        _ => w.staging.md5().await?,
                    };
                    self.store.put_file(&w.key, path, len, md5, opts).await?
                }
            };
        }
        Ok(etag)
    }

    /// The largest file this mount can upload now.
    pub(crate) fn max_file_size(&self) -> u64 {
        if self.multipart_enabled() {
            MAX_OBJECT_SIZE
        } else {
            MAX_SINGLE_PUT
        }
    }

    /// Writes `data` at `offset` of `ino` (open for writing).
    pub(crate) async fn write(
        &self,
        ino: u64,
        inode: Option<Arc<Inode>>,
        offset: u64,
        data: &[u8],
    ) -> Result<u32> {
        let end = offset + data.len() as u64;
        if end > self.max_file_size() {
            return Err(Error::TooBig);
        }
        let w = self.writer(ino).ok_or(Error::BadHandle)?;
        let mut g = w.lock().await;
        self.prepare_overwrite(&mut g, offset, end).await?;
        g.staging.write_at(offset, data).await?;
        g.dirty = true;
        if !g.unlinked {
            self.journal(&mut g, inode.as_deref(), EntryState::Writing)
                .await?;
        }
        if let Some(s) = &mut g.session {
            s.touch(offset, end);
        }
        if g.streaming && offset == g.seq_end {
            g.seq_end = end;
            if end > self.opts.multipart_threshold && self.multipart_enabled() {
                // Multipart hashes each part instead.
                g.running_md5 = None;
            } else if let Some(h) = g.running_md5.take() {
                g.running_md5 = staging::hash_more(h, data).await;
            }
        } else {
            g.streaming = false;
            g.running_md5 = None;
        }
        let len = g.staging.len();
        if let Some(inode) = &inode {
            self.stream_parts(&mut g, inode).await;
            drop(g);
            self.note_size(inode, len);
        }
        Ok(data.len() as u32)
    }

    /// `close` (flush) and `fsync`: upload now if the file changed.
    pub(crate) async fn flush(&self, inode: &Inode) -> Result<()> {
        let Some(w) = self.writer(inode.ino) else {
            return Ok(());
        };
        let mut g = w.lock().await;
        let res = self.upload(inode, &mut g).await;
        if res.is_err() {
            self.secure(&mut g).await;
        }
        res
    }

    /// After a failed upload that the caller is told about: the bytes go to disk and into the
    /// journal as asked-for, so neither an unmount nor `kill -9` loses them.
    async fn secure(&self, w: &mut WriteState) {
        let res = match w.staging.to_disk().await {
            Ok(()) => {
                let mut e = self.entry(w, EntryState::Flushing);
                e.md5 = w.staging.md5().await.ok().map(hex::encode);
                w.staging.record(e).await.map_err(Error::from)
            }
            Err(e) => Err(e.into()),
        };
        match res {
            Ok(()) => w.journaled = Some(EntryState::Flushing),
            Err(e) => {
                tracing::error!(key = w.key, error = %e, "the bytes of a failed upload could not be put in the journal; they are in memory only until the last close")
            }
        }
    }

    /// Cuts or extends `inode` to `size`: through its open write state, else by loading,
    /// cutting and uploading the object (its stored attributes as `inode` holds them).
    pub(crate) async fn set_size(&self, inode: &Inode, key: &str, size: u64) -> Result<()> {
        if size > self.max_file_size() {
            return Err(Error::TooBig);
        }
        if let Some(mut g) = self.live_state(inode.ino).await {
            g.truncate(size).await?;
            self.journal(&mut g, Some(inode), EntryState::Writing)
                .await?;
        } else {
            let mut state = self.new_state(inode, key, size == 0).await?;
            state.truncate(size).await?;
            self.upload(inode, &mut state).await?;
        }
        self.note_size(inode, size);
        Ok(())
    }

    /// `ino` was unlinked while open: it keeps its bytes for its handles and uploads nothing
    /// (its bytes of the object are fetched first: the object goes at the last close, but a
    /// new file may replace it sooner).
    pub(crate) async fn unlinked(&self, ino: u64) {
        let Some(w) = self.writer(ino) else { return };
        let mut g = w.lock().await;
        if let Err(e) = self.fetch_all(&mut g).await {
            tracing::warn!(key = g.key, error = %e, "a file unlinked while open: parts of it could not be fetched");
        }
        self.drop_session(&mut g).await;
        g.unlinked = true;
        g.dirty = false;
        if let Err(e) = g.staging.unrecord().await {
            tracing::warn!(key = g.key, error = %e, "its journal entry could not be removed");
        }
        g.journaled = None;
    }

    /// Marks an open file changed (its attributes changed): `false` if it is not open.
    ///
    /// A state no handle holds any more is being torn down by its last release (uploading,
    /// then forgotten): a change marked there would never be uploaded. Then the caller stores
    /// the change itself, after that upload (never racing it): see [`Writers::live_state`].
    pub(crate) async fn mark_dirty(&self, ino: u64) -> bool {
        match self.live_state(ino).await {
            Some(mut g) if !g.unlinked => {
                g.dirty = true;
                true
            }
            _ => false,
        }
    }

    /// The locked write state of `ino` if a handle still holds it. A state being torn down by
    /// its last release is waited for (its upload finishes) and not returned: the file is
    /// closed, and changes go to its object.
    async fn live_state(&self, ino: u64) -> Option<tokio::sync::OwnedMutexGuard<WriteState>> {
        let w = {
            let map = self.states.lock().unwrap();
            map.get(&ino)?.state.clone()
        };
        let g = w.clone().lock_owned().await;
        let held = self
            .states
            .lock()
            .unwrap()
            .get(&ino)
            .is_some_and(|s| s.handles > 0 && Arc::ptr_eq(&s.state, &w));
        held.then_some(g)
    }

    /// Before a rename of an open file: uploads it, fetches what it still needs of the old
    /// object, and writes to `new_key` from then on.
    pub(crate) async fn move_key(&self, inode: &Inode, new_key: &str) -> Result<()> {
        let Some(w) = self.writer(inode.ino) else {
            return Ok(());
        };
        let mut g = w.lock().await;
        self.upload(inode, &mut g).await?;
        self.fetch_all(&mut g).await?; // nothing may depend on the old key
        g.key = new_key.to_string();
        Ok(())
    }
}
