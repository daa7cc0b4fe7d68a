//! The write path: files being written, and the namespace changes (create, mkdir, unlink, rmdir).
//!
//! A file opened for writing gets one [`WriteState`] per inode, shared by all its write handles
//! (so two writers on one mount see each other's bytes and the last close uploads the result).
//! Its bytes live in [`staging::Staging`]; `flush` (every `close`) and `fsync` upload the whole
//! file when it changed: as one PutObject with Content-MD5 up to `--multipart-threshold`, above it
//! as a multipart upload whose parts a sequential writer already sent while writing
//! (`multipart.rs`). A failed upload fails that `close` or `fsync`; if the last handle closes
//! with the upload still failing, the bytes are moved to `<cache-dir>/recovered/` and the log
//! names the file.
//!
//! Opening an existing object for writing without `O_TRUNC` fetches nothing up front: `base.rs`
//! fetches the blocks a write or read needs, and the rest before the upload.
//!
//! Directories: `mkdir` writes a `dir/` marker with `Content-Type: application/x-directory`;
//! `rmdir` refuses (ENOTEMPTY) while anything but the marker is under the prefix; removing the
//! last entry of a directory writes its marker, so the directory does not vanish with it.

mod attrs;
mod base;
mod multipart;
mod rename;
pub mod staging;

pub use multipart::{UPLOAD_SLOTS, upload_slots};

pub use attrs::SetAttr;
pub use rename::{DIR_RENAME_MAX_BYTES, DIR_RENAME_MAX_OBJECTS, RenameFlags};

use super::inode::{Inode, Kind, Stat};
use super::{Attr, DIR_CONTENT_TYPE, Error, Result, S3Fs, entry_name};
use crate::store::{MAX_OBJECT_SIZE, ObjectStore, PutOptions, StoreError};
use bytes::Bytes;
use md5::Digest;
use staging::{Source, Staging};
use std::ffi::OsStr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

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

impl<S: ObjectStore> S3Fs<S> {
    pub(super) fn writer(&self, ino: u64) -> Option<Arc<tokio::sync::Mutex<WriteState>>> {
        self.writers
            .lock()
            .unwrap()
            .get(&ino)
            .map(|s| s.state.clone())
    }

    pub(super) fn check_writable(&self) -> Result<()> {
        if self.opts.read_only {
            Err(Error::ReadOnly)
        } else {
            Ok(())
        }
    }

    /// A new write state for `inode`: empty with `truncate`, else over the object's bytes
    /// (fetched when needed).
    async fn new_state(&self, inode: &Inode, truncate: bool) -> Result<WriteState> {
        let mut staging = Staging::new(&self.opts.cache_dir, self.opts.write_buffer);
        let stat = inode.stat();
        let base = if !truncate && stat.size > 0 {
            staging.truncate(stat.size).await?;
            Some(base::Base::new(stat.size, stat.etag.clone()))
        } else {
            None
        };
        let mut w = WriteState::new(self.inodes.key(inode), staging, base);
        w.dirty = truncate;
        Ok(w)
    }

    /// Bytes `[offset, offset + len)` of a file being written.
    pub(super) async fn read_writing(
        &self,
        w: &tokio::sync::Mutex<WriteState>,
        offset: u64,
        len: u64,
    ) -> Result<Bytes> {
        let mut g = w.lock().await;
        self.fetch(&mut g, offset, offset + len).await?;
        Ok(g.staging.read_at(offset, len).await?)
    }

    /// Joins (or starts) the write state of `inode` for one more handle. The handle is counted
    /// under the map lock, so a last close that is uploading sees it and keeps the state.
    pub(super) async fn attach_writer(&self, inode: &Inode, truncate: bool) -> Result<()> {
        let joined = self.join_writer(inode.ino);
        let w = match joined {
            Some(w) => w,
            None => {
                let state = self.new_state(inode, truncate).await?;
                let fresh = Arc::new(tokio::sync::Mutex::new(state));
                let mut map = self.writers.lock().unwrap();
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
                if let Some(s) = self.writers.lock().unwrap().get_mut(&inode.ino) {
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
        let mut map = self.writers.lock().unwrap();
        let slot = map.get_mut(&ino)?;
        slot.handles += 1;
        Some(slot.state.clone())
    }

    /// A write handle closed. The last one uploads what is unsaved, then forgets the state,
    /// unless a handle opened meanwhile: that one then owns the bytes (and its close uploads
    /// them), so nothing is torn down under it. A failed upload with no handle left moves the
    /// bytes to `recovered/`.
    pub(super) async fn detach_writer(&self, ino: u64) -> Result<()> {
        let w = {
            let mut map = self.writers.lock().unwrap();
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
        let res = match self.inodes.get(ino) {
            Some(inode) => self.upload(&inode, &mut g).await,
            None => Ok(()),
        };
        let last = {
            let mut map = self.writers.lock().unwrap();
            let idle = map
                .get(&ino)
                .is_some_and(|s| s.handles == 0 && Arc::ptr_eq(&s.state, &w));
            if idle {
                map.remove(&ino);
            }
            idle
        };
        if let (true, Err(e)) = (last, &res) {
            self.drop_session(&mut g).await;
            if let Err(fe) = self.fetch_all(&mut g).await {
                tracing::warn!(key = g.key, error = %fe, "parts of the original object could not be fetched; the kept copy has zeros there");
            }
            let empty = WriteState::new(String::new(), Staging::new(&self.opts.cache_dir, 0), None);
            let state = std::mem::replace(&mut *g, empty);
            match state.staging.persist(&state.key).await {
                Ok(p) => tracing::error!(
                    key = state.key,
                    error = %e,
                    kept = %p.display(),
                    "upload failed; the file's bytes are kept on local disk"
                ),
                Err(pe) => tracing::error!(key = state.key, error = %e, persist_error = %pe,
                    "upload failed and the bytes could not be kept"),
            }
        }
        res
    }

    fn note_size(&self, inode: &Inode, size: u64) {
        let mut st = inode.stat();
        st.size = size;
        st.mtime = SystemTime::now();
        st.validated = Some(Instant::now());
        inode.set_stat(st);
    }

    /// Uploads the whole file if it changed: multipart above the threshold (when the server
    /// has it), else one PutObject.
    pub(super) async fn upload(&self, inode: &Inode, w: &mut WriteState) -> Result<()> {
        if !w.dirty {
            return Ok(());
        }
        let len = w.staging.len();
        let headers = self.upload_headers(inode);
        let mut etag = None;
        let mut sent = false;
        if self.multipart_enabled() && len > self.opts.multipart_threshold {
            match self.upload_multipart(w, headers.clone()).await {
                Ok(e) => (etag, sent) = (e, true),
                // Refused by the server: the same bytes go out as one PutObject below.
                Err(Error::Store(StoreError::NotImplemented(_))) if len <= MAX_SINGLE_PUT => {}
                Err(e) => return Err(e),
            }
        } else if w.session.is_some() {
            self.drop_session(w).await;
        }
        if !sent {
            self.fetch_all(w).await?;
            let opts = PutOptions {
                content_type: None,
                metadata: headers,
            };
            etag = match w.staging.source() {
                Source::Memory(b) => self.store.put(&w.key, b, opts).await?,
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
        w.dirty = false;
        // Some servers omit the ETag on PUT: ask, so later reads carry If-Match.
        let etag = match etag {
            Some(e) => Some(e),
            None => self.store.head(&w.key).await.ok().and_then(|i| i.etag),
        };
        inode.set_stat(Stat {
            size: len,
            mtime: SystemTime::now(),
            etag,
            validated: Some(Instant::now()),
            meta: inode.stat().meta,
        });
        self.negative.remove(inode.parent(), &inode.name());
        Ok(())
    }

    /// The largest file this mount can upload now.
    fn max_file_size(&self) -> u64 {
        if self.multipart_enabled() {
            MAX_OBJECT_SIZE
        } else {
            MAX_SINGLE_PUT
        }
    }

    /// Writes through handle `fh`.
    pub async fn write(&self, fh: u64, offset: u64, data: &[u8]) -> Result<u32> {
        let ino = self.handle_ino(fh)?;
        let end = offset + data.len() as u64;
        if end > self.max_file_size() {
            return Err(Error::TooBig);
        }
        let w = self.writer(ino).ok_or(Error::BadHandle)?;
        let inode = self.inodes.get(ino);
        let mut g = w.lock().await;
        self.prepare_overwrite(&mut g, offset, end).await?;
        g.staging.write_at(offset, data).await?;
        g.dirty = true;
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
    pub async fn flush(&self, fh: u64) -> Result<()> {
        let ino = self.handle_ino(fh)?;
        let (Some(w), Some(inode)) = (self.writer(ino), self.inodes.get(ino)) else {
            return Ok(());
        };
        let mut g = w.lock().await;
        self.upload(&inode, &mut g).await
    }

    fn handle_ino(&self, fh: u64) -> Result<u64> {
        self.files
            .lock()
            .unwrap()
            .get(&fh)
            .map(|h| h.ino)
            .ok_or(Error::BadHandle)
    }

    /// Creates (or truncates) `name` in `parent` and opens it for writing.
    /// `perm`: the permission bits asked for (mode & !umask); stored when not the default.
    pub async fn create(
        &self,
        parent: u64,
        name: &(impl AsRef<OsStr> + ?Sized),
        perm: u16,
    ) -> Result<(Attr, u64)> {
        self.check_writable()?;
        let name = entry_name(name.as_ref(), true)?;
        let p = self.dir_inode(parent)?;
        let stat = Stat {
            size: 0,
            mtime: SystemTime::now(),
            etag: None,
            validated: Some(Instant::now()),
            meta: super::meta::PosixMeta {
                mode: Some(super::meta::file_mode(perm)),
                ..Default::default()
            },
        };
        let inode = self.inodes.upsert(&p, name, Kind::File, stat.clone(), true);
        self.negative.remove(parent, name);
        let (fh, _) = self
            .open(
                inode.ino,
                super::OpenMode {
                    write: true,
                    truncate: true,
                },
            )
            .await?;
        Ok((self.attr(&inode, &inode.stat()), fh))
    }

    /// `truncate`/`ftruncate`: through the open write state, or load, cut and upload.
    pub async fn set_size(&self, ino: u64, size: u64) -> Result<Attr> {
        self.check_writable()?;
        let inode = self.inodes.get(ino).ok_or(Error::NotFound)?;
        if inode.kind == Kind::Dir {
            return Err(Error::IsDir);
        }
        if size > self.max_file_size() {
            return Err(Error::TooBig);
        }
        if let Some(w) = self.writer(ino) {
            w.lock().await.truncate(size).await?;
        } else {
            let mut state = self.new_state(&inode, size == 0).await?;
            state.truncate(size).await?;
            self.upload(&inode, &mut state).await?;
        }
        self.note_size(&inode, size);
        Ok(self.attr(&inode, &inode.stat()))
    }

    /// Writes `dir/` if `dir` has nothing else under it, so it outlives its last entry.
    pub(super) async fn keep_dir(&self, dir: &Inode) -> Result<()> {
        if dir.ino == super::ROOT_INO {
            return Ok(());
        }
        let key = self.inodes.key(dir);
        let page = self.store.list(&key, Some("/"), None, 1).await?;
        if page.objects.is_empty() && page.prefixes.is_empty() {
            let opts = PutOptions {
                content_type: Some(DIR_CONTENT_TYPE.into()),
                ..Default::default()
            };
            self.store.put(&key, Bytes::new(), opts).await?;
        }
        Ok(())
    }

    pub async fn unlink(&self, parent: u64, name: &(impl AsRef<OsStr> + ?Sized)) -> Result<()> {
        self.check_writable()?;
        let name = entry_name(name.as_ref(), false)?;
        let p = self.dir_inode(parent)?;
        let child = self.lookup_inode(parent, name).await?;
        if child.kind == Kind::Dir {
            return Err(Error::IsDir);
        }
        self.store.delete(&self.inodes.key(&child)).await?;
        self.inodes.detach(parent, name);
        self.negative.insert(parent, name);
        self.keep_dir(&p).await
    }

    /// Checks that `name` may be created in `parent` (writable, valid, absent); the parent.
    pub(super) async fn new_entry(&self, parent: u64, name: &str) -> Result<Arc<Inode>> {
        self.check_writable()?;
        let p = self.dir_inode(parent)?;
        match self.lookup_inode(parent, name).await {
            Ok(_) => Err(Error::Exists),
            Err(Error::NotFound) => Ok(p),
            Err(e) => Err(e),
        }
    }

    pub async fn mkdir(
        &self,
        parent: u64,
        name: &(impl AsRef<OsStr> + ?Sized),
        perm: u16,
    ) -> Result<Attr> {
        let name = entry_name(name.as_ref(), true)?;
        let p = self.new_entry(parent, name).await?;
        let key = format!("{}{}/", self.inodes.key(&p), name);
        let mut stat = self.dir_stat();
        stat.meta.mode = Some(super::meta::dir_mode(perm));
        let opts = PutOptions {
            content_type: Some(DIR_CONTENT_TYPE.into()),
            metadata: stat.meta.to_headers(&self.default_meta(Kind::Dir)),
        };
        self.store.put(&key, Bytes::new(), opts).await?;
        self.negative.remove(parent, name);
        let d = self.inodes.upsert(&p, name, Kind::Dir, stat.clone(), true);
        Ok(self.attr(&d, &stat))
    }

    pub async fn rmdir(&self, parent: u64, name: &(impl AsRef<OsStr> + ?Sized)) -> Result<()> {
        self.check_writable()?;
        let name = entry_name(name.as_ref(), false)?;
        let p = self.dir_inode(parent)?;
        let d = self.lookup_inode(parent, name).await?;
        if d.kind != Kind::Dir {
            return Err(Error::NotDir);
        }
        let dkey = self.inodes.key(&d);
        let page = self.store.list(&dkey, Some("/"), None, 2).await?;
        let others = page.prefixes.len() + page.objects.iter().filter(|o| o.key != dkey).count();
        if others > 0 {
            return Err(Error::NotEmpty);
        }
        self.store.delete(&dkey).await?;
        self.inodes.detach(parent, name);
        self.negative.insert(parent, name);
        self.keep_dir(&p).await
    }

    /// The inode of `name` in `parent`, without taking a kernel reference.
    pub(super) async fn lookup_inode(&self, parent: u64, name: &str) -> Result<Arc<Inode>> {
        let a = self.lookup(parent, name).await?;
        let inode = self.inodes.get(a.ino).ok_or(Error::NotFound);
        self.inodes.forget(a.ino, 1);
        inode
    }
}
