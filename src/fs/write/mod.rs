//! The write path: files being written, and the namespace changes (create, mkdir, unlink, rmdir).
//!
//! A file opened for writing gets one [`WriteState`] per inode, shared by all its write handles
//! (so two writers on one mount see each other's bytes and the last close uploads the result).
//! Its bytes live in [`staging::Staging`]; `flush` (every `close`) and `fsync` upload the whole
//! file as one PutObject with Content-MD5 when it changed. A failed upload fails that `close` or
//! `fsync`; if the last handle closes with the upload still failing, the bytes are moved to
//! `<cache-dir>/recovered/` and the log names the file.
//!
//! Opening an existing object for writing without `O_TRUNC` loads it into staging first (the
//! whole object; fetching only the needed ranges is a later refinement).
//!
//! Directories: `mkdir` writes a `dir/` marker with `Content-Type: application/x-directory`;
//! `rmdir` refuses (ENOTEMPTY) while anything but the marker is under the prefix; removing the
//! last entry of a directory writes its marker, so the directory does not vanish with it.

mod attrs;
mod rename;
pub mod staging;

pub use attrs::SetAttr;
pub use rename::{DIR_RENAME_MAX_BYTES, DIR_RENAME_MAX_OBJECTS};

use super::inode::{Inode, Kind, Stat};
use super::{Attr, DIR_CONTENT_TYPE, Error, Result, S3Fs};
use crate::store::{ObjectStore, PutOptions, StoreError};
use bytes::Bytes;
use staging::{Source, Staging};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

/// The largest object one PutObject may carry (the S3 limit). Files are uploaded in one
/// PutObject until multipart lands, so writing past it fails at write time with EFBIG.
pub const MAX_SINGLE_PUT: u64 = 5 << 30;
/// Bytes fetched per GET when loading an existing object into staging.
const LOAD_STEP: u64 = 8 << 20;

pub struct WriteState {
    key: String,
    staging: Staging,
    /// Changed since the last successful upload.
    dirty: bool,
    handles: u32,
}

impl WriteState {
    pub fn read(&self, offset: u64, len: u64) -> Result<Bytes> {
        self.staging.read_at(offset, len).map_err(io_err)
    }
}

fn io_err(e: std::io::Error) -> Error {
    Error::Store(StoreError::Other(format!("staging: {e}")))
}

impl<S: ObjectStore> S3Fs<S> {
    pub(super) fn writer(&self, ino: u64) -> Option<Arc<tokio::sync::Mutex<WriteState>>> {
        self.writers.lock().unwrap().get(&ino).cloned()
    }

    pub(super) fn check_writable(&self) -> Result<()> {
        if self.opts.read_only {
            Err(Error::ReadOnly)
        } else {
            Ok(())
        }
    }

    /// A new write state for `inode`, loaded with the object's bytes unless `truncate`.
    async fn new_state(&self, inode: &Inode, truncate: bool) -> Result<WriteState> {
        let mut staging = Staging::new(&self.opts.cache_dir, self.opts.write_buffer);
        let stat = inode.stat();
        if !truncate && stat.size > 0 {
            let mut off = 0;
            while off < stat.size {
                let end = (off + LOAD_STEP).min(stat.size);
                let c = self
                    .store
                    .get_range(&self.inodes.key(inode), off, end, stat.etag.as_deref())
                    .await?;
                staging.write_at(off, &c.to_bytes()).map_err(io_err)?;
                off = end;
            }
        }
        Ok(WriteState {
            key: self.inodes.key(inode),
            staging,
            dirty: truncate,
            handles: 0,
        })
    }

    /// Joins (or starts) the write state of `inode` for one more handle.
    pub(super) async fn attach_writer(&self, inode: &Inode, truncate: bool) -> Result<()> {
        if let Some(w) = self.writer(inode.ino) {
            let mut w = w.lock().await;
            w.handles += 1;
            if truncate {
                w.staging.truncate(0).map_err(io_err)?;
                w.dirty = true;
                self.note_size(inode, 0);
            }
            return Ok(());
        }
        let mut state = self.new_state(inode, truncate).await?;
        state.handles = 1;
        if truncate {
            self.note_size(inode, 0);
        }
        let arc = Arc::new(tokio::sync::Mutex::new(state));
        // Another open may have raced us: then join its state instead of ours.
        let existing = {
            let mut map = self.writers.lock().unwrap();
            match map.get(&inode.ino) {
                Some(e) => Some(e.clone()),
                None => {
                    map.insert(inode.ino, arc);
                    None
                }
            }
        };
        if let Some(e) = existing {
            e.lock().await.handles += 1;
        }
        Ok(())
    }

    /// The last write handle closed: upload if needed, then forget the state.
    pub(super) async fn detach_writer(&self, ino: u64) -> Result<()> {
        let Some(w) = self.writer(ino) else {
            return Ok(());
        };
        let mut g = w.lock().await;
        g.handles = g.handles.saturating_sub(1);
        if g.handles > 0 {
            return Ok(());
        }
        let res = match self.inodes.get(ino) {
            Some(inode) => self.upload(&inode, &mut g).await,
            None => Ok(()),
        };
        self.writers.lock().unwrap().remove(&ino);
        if let Err(e) = &res {
            let state = std::mem::replace(
                &mut *g,
                WriteState {
                    key: String::new(),
                    staging: Staging::new(&self.opts.cache_dir, 0),
                    dirty: false,
                    handles: 0,
                },
            );
            match state.staging.persist(&state.key) {
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

    /// Uploads the whole file as one PutObject if it changed.
    pub(super) async fn upload(&self, inode: &Inode, w: &mut WriteState) -> Result<()> {
        if !w.dirty {
            return Ok(());
        }
        let len = w.staging.len();
        let opts = PutOptions {
            content_type: None,
            metadata: self.upload_headers(inode),
        };
        let etag = match w.staging.source() {
            Source::Memory(b) => self.store.put(&w.key, b, opts).await?,
            Source::File(path, len) => {
                let md5 = w.staging.md5().map_err(io_err)?;
                self.store.put_file(&w.key, path, len, md5, opts).await?
            }
        };
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

    /// Writes through handle `fh`.
    pub async fn write(&self, fh: u64, offset: u64, data: &[u8]) -> Result<u32> {
        let ino = self.handle_ino(fh)?;
        if offset + data.len() as u64 > MAX_SINGLE_PUT {
            return Err(Error::TooBig);
        }
        let w = self.writer(ino).ok_or(Error::BadHandle)?;
        let mut g = w.lock().await;
        g.staging.write_at(offset, data).map_err(io_err)?;
        g.dirty = true;
        let len = g.staging.len();
        drop(g);
        if let Some(inode) = self.inodes.get(ino) {
            self.note_size(&inode, len);
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
    pub async fn create(&self, parent: u64, name: &str, perm: u16) -> Result<(Attr, u64)> {
        self.check_writable()?;
        if !super::readdir::valid_name(name) {
            return Err(Error::InvalidName);
        }
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
        if size > MAX_SINGLE_PUT {
            return Err(Error::TooBig);
        }
        if let Some(w) = self.writer(ino) {
            let mut g = w.lock().await;
            g.staging.truncate(size).map_err(io_err)?;
            g.dirty = true;
        } else {
            let mut state = self.new_state(&inode, size == 0).await?;
            state.staging.truncate(size).map_err(io_err)?;
            state.dirty = true;
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

    pub async fn unlink(&self, parent: u64, name: &str) -> Result<()> {
        self.check_writable()?;
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
        if !super::readdir::valid_name(name) {
            return Err(Error::InvalidName);
        }
        let p = self.dir_inode(parent)?;
        match self.lookup_inode(parent, name).await {
            Ok(_) => Err(Error::Exists),
            Err(Error::NotFound) => Ok(p),
            Err(e) => Err(e),
        }
    }

    pub async fn mkdir(&self, parent: u64, name: &str, perm: u16) -> Result<Attr> {
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

    pub async fn rmdir(&self, parent: u64, name: &str) -> Result<()> {
        self.check_writable()?;
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
