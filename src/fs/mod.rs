//! The filesystem core: inodes, lookup, listing, reading. No fuser types here.
//!
//! Each method takes typed arguments and returns `Result<_, fs::Error>`; the fuser adapter in
//! `fuse/` only converts and replies. The core is generic over [`ObjectStore`], so the same code
//! runs on S3 and on the in-memory twin in unit tests.
//!
//! Lookup asks S3 two things at once: HEAD `key` and LIST `key/` (one entry). Anything under
//! `key/` makes it a directory (a directory shadows a file of the same name); otherwise a HEAD
//! hit is a file (or a directory if it carries `Content-Type: application/x-directory`).
//! Answers are trusted for the metadata TTL; misses go to the negative cache for as long.
//!
//! Locks, in order: `dirs`/`files` handle maps (std, map operations only) before a handle's own
//! tokio mutex (held across awaits: a handle's reads and listings are serial by nature), before
//! the inode table (std, never across an await). A file's write state (tokio, held across its
//! uploads) before the `writers` map (std, map operations only): the map's lock is never held
//! while waiting for a state's.

pub mod error;
pub mod inode;
pub mod meta;
pub mod prefetch;
pub mod readdir;
pub mod write;

pub use error::{Error, Result};
pub use inode::{Kind, ROOT_INO};
pub use write::{RenameFlags, SetAttr};

use crate::cache::{NegativeCache, PageCache};
use crate::config::FsOptions;
use crate::store::{ObjectInfo, ObjectStore, StoreError};
use bytes::Bytes;
use inode::{Inode, InodeTable, Stat};
use prefetch::Reader;
use readdir::{DirHandle, Listed, valid_name};
use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};
use tokio::sync::Semaphore;

/// Content type marking a zero-byte object as a directory (s3fs, the S3 console).
pub const DIR_CONTENT_TYPE: &str = "application/x-directory";
/// Entries per LIST page: the S3 maximum, fewest round trips.
const LIST_PAGE: u32 = 1000;
/// At most this many hidden keys are remembered for the once-per-key warning.
const MAX_WARNED: usize = 10_000;

/// A name from the kernel, decided here: the key component it stands for, or the error.
/// Too long: ENAMETOOLONG. Not UTF-8 (S3 keys are): no such entry when looking up, EINVAL when
/// creating. `.`, `..`, `/`, NUL or empty: not a name a key can carry.
pub(crate) fn entry_name(name: &OsStr, creating: bool) -> Result<&str> {
    if name.len() > readdir::NAME_MAX {
        return Err(Error::NameTooLong);
    }
    let Some(s) = name.to_str() else {
        return Err(if creating {
            Error::InvalidArgument
        } else {
            Error::NotFound
        });
    };
    if !valid_name(s) {
        return Err(Error::InvalidName);
    }
    Ok(s)
}

/// Attributes the adapter turns into a `stat`.
#[derive(Debug, Clone, PartialEq)]
pub struct Attr {
    pub ino: u64,
    pub kind: Kind,
    pub size: u64,
    pub mtime: SystemTime,
    pub perm: u16,
    pub uid: u32,
    pub gid: u32,
}

/// One directory entry handed to the adapter's filler.
#[derive(Debug, Clone)]
pub struct DirEntry {
    pub name: String,
    pub kind: Kind,
    /// The offset of the entry after this one.
    pub next_offset: u64,
    pub attr: Attr,
}

/// Filesystem totals for `statfs`.
#[derive(Debug, Clone, Copy)]
pub struct StatFs {
    pub blocks: u64,
    pub bfree: u64,
    pub files: u64,
    pub ffree: u64,
    pub bsize: u32,
    pub namelen: u32,
}

struct FileHandle<S: ObjectStore> {
    ino: u64,
    reader: tokio::sync::Mutex<Reader<S>>,
    /// Opened for writing: holds a reference on the inode's [`write::WriteState`].
    writing: bool,
}

/// How a file is opened.
#[derive(Debug, Clone, Copy, Default)]
pub struct OpenMode {
    pub write: bool,
    pub truncate: bool,
}

pub struct S3Fs<S: ObjectStore> {
    store: Arc<S>,
    opts: FsOptions,
    inodes: InodeTable,
    negative: NegativeCache,
    pages: PageCache,
    prefetch_budget: Arc<Semaphore>,
    files: Mutex<HashMap<u64, Arc<FileHandle<S>>>>,
    dirs: Mutex<HashMap<u64, Arc<tokio::sync::Mutex<DirHandle>>>>,
    /// Files being written, by inode: one staging shared by all write handles of the inode.
    writers: Mutex<HashMap<u64, write::WriterSlot>>,
    /// Part uploads in flight across the mount ([`write::UPLOAD_SLOTS`]).
    upload_slots: Arc<Semaphore>,
    next_fh: AtomicU64,
    warned: Mutex<HashSet<String>>,
    mount_time: SystemTime,
}

impl<S: ObjectStore> S3Fs<S> {
    /// `prefix` is the key prefix mounted as the root: empty or ending with `/`.
    pub fn new(store: Arc<S>, prefix: &str, opts: FsOptions) -> Self {
        let now = SystemTime::now();
        let kib = (opts.prefetch_budget() / 1024).min(Semaphore::MAX_PERMITS as u64) as usize;
        Self {
            store,
            inodes: InodeTable::new(prefix, now),
            negative: NegativeCache::new(opts.metadata_ttl),
            pages: PageCache::new(opts.page_cache_size()),
            prefetch_budget: Arc::new(Semaphore::new(kib)),
            files: Mutex::new(HashMap::new()),
            dirs: Mutex::new(HashMap::new()),
            writers: Mutex::new(HashMap::new()),
            upload_slots: write::upload_slots(),
            next_fh: AtomicU64::new(1),
            warned: Mutex::new(HashSet::new()),
            mount_time: now,
            opts,
        }
    }

    pub fn options(&self) -> &FsOptions {
        &self.opts
    }

    /// Inodes held (root included); for tests of forget.
    pub fn inode_count(&self) -> usize {
        self.inodes.len()
    }

    fn attr(&self, inode: &Inode, stat: &Stat) -> Attr {
        Attr {
            ino: inode.ino,
            kind: inode.kind,
            size: stat.size,
            mtime: stat.meta.mtime.unwrap_or(stat.mtime),
            perm: match inode.kind {
                Kind::Symlink => 0o777,
                _ => stat.meta.perm().unwrap_or(match inode.kind {
                    Kind::Dir => self.opts.dir_mode,
                    _ => self.opts.file_mode,
                }),
            },
            uid: stat.meta.uid.unwrap_or(self.opts.uid),
            gid: stat.meta.gid.unwrap_or(self.opts.gid),
        }
    }

    fn fresh(&self, stat: &Stat) -> bool {
        stat.validated
            .is_some_and(|t| t.elapsed() < self.opts.metadata_ttl)
    }

    fn dir_inode(&self, ino: u64) -> Result<Arc<Inode>> {
        let inode = self.inodes.get(ino).ok_or(Error::NotFound)?;
        if inode.kind != Kind::Dir {
            return Err(Error::NotDir);
        }
        Ok(inode)
    }

    fn file_stat(&self, info: &ObjectInfo) -> Stat {
        Stat {
            size: info.size,
            mtime: info.last_modified.unwrap_or(self.mount_time),
            etag: info.etag.clone(),
            validated: Some(Instant::now()),
            meta: meta::PosixMeta::parse(&info.metadata),
        }
    }

    fn dir_stat(&self) -> Stat {
        Stat {
            size: 0,
            mtime: self.mount_time,
            etag: None,
            validated: Some(Instant::now()),
            meta: Default::default(),
        }
    }

    fn warn_invalid(&self, key: &str) {
        let mut w = self.warned.lock().unwrap();
        if w.len() < MAX_WARNED && w.insert(key.to_string()) {
            tracing::warn!(key, "hiding an object whose key is not a valid file name");
        }
    }

    /// Looks `name` up in `parent`; one more kernel reference on success.
    pub async fn lookup(&self, parent: u64, name: &(impl AsRef<OsStr> + ?Sized)) -> Result<Attr> {
        let name = entry_name(name.as_ref(), false)?;
        let p = self.dir_inode(parent)?;
        if let Some(c) = self.inodes.child(parent, name) {
            let stat = c.stat();
            // A file being written exists here before it exists on the server.
            if self.fresh(&stat) || self.writer(c.ino).is_some() {
                let c = self.inodes.upsert(&p, name, c.kind, stat.clone(), true);
                return Ok(self.attr(&c, &stat));
            }
        }
        if self.negative.contains(parent, name) {
            return Err(Error::NotFound);
        }
        let key = format!("{}{}", self.inodes.key(&p), name);
        let dir_prefix = format!("{key}/");
        let (head, list) = tokio::join!(
            self.store.head(&key),
            self.store.list(&dir_prefix, Some("/"), None, 1)
        );
        let list = list?;
        let (kind, stat) = if !list.objects.is_empty() || !list.prefixes.is_empty() {
            let mut stat = self.dir_stat();
            // The directory's own marker sorts first: its headers hold the stored attributes.
            if list.objects.first().is_some_and(|o| o.key == dir_prefix)
                && let Ok(info) = self.store.head(&dir_prefix).await
            {
                stat.meta = meta::PosixMeta::parse(&info.metadata);
            }
            (Kind::Dir, stat)
        } else {
            match head {
                Ok(info) if info.content_type.as_deref() == Some(DIR_CONTENT_TYPE) => {
                    (Kind::Dir, self.dir_stat())
                }
                Ok(info) => {
                    let stat = self.file_stat(&info);
                    let kind = if stat.meta.is_symlink() {
                        Kind::Symlink
                    } else {
                        Kind::File
                    };
                    (kind, stat)
                }
                Err(StoreError::NotFound) => {
                    self.inodes.detach(parent, name);
                    self.negative.insert(parent, name);
                    return Err(Error::NotFound);
                }
                Err(e) => return Err(e.into()),
            }
        };
        let c = self.inodes.upsert(&p, name, kind, stat.clone(), true);
        Ok(self.attr(&c, &stat))
    }

    pub fn forget(&self, ino: u64, n: u64) {
        self.inodes.forget(ino, n);
    }

    pub async fn getattr(&self, ino: u64) -> Result<Attr> {
        let inode = self.inodes.get(ino).ok_or(Error::NotFound)?;
        let stat = inode.stat();
        if inode.kind == Kind::Dir || self.fresh(&stat) || self.writer(ino).is_some() {
            return Ok(self.attr(&inode, &stat));
        }
        let stat = self.revalidate(&inode).await?;
        Ok(self.attr(&inode, &stat))
    }

    /// HEADs a file inode again and records what the server says.
    async fn revalidate(&self, inode: &Inode) -> Result<Stat> {
        match self.store.head(&self.inodes.key(inode)).await {
            Ok(info) => {
                let stat = self.file_stat(&info);
                inode.set_stat(stat.clone());
                Ok(stat)
            }
            Err(StoreError::NotFound) => {
                self.inodes.detach(inode.parent(), &inode.name());
                Err(Error::NotFound)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Opens a file for reading. Returns the handle and whether the kernel may keep the pages
    /// it cached from an earlier open (true when the object is unchanged since then).
    pub async fn open(&self, ino: u64, mode: OpenMode) -> Result<(u64, bool)> {
        let inode = self.inodes.get(ino).ok_or(Error::NotFound)?;
        if inode.kind == Kind::Dir {
            return Err(Error::IsDir);
        }
        if mode.write {
            if self.opts.read_only {
                return Err(Error::ReadOnly);
            }
            self.attach_writer(&inode, mode.truncate).await?;
        }
        let before = inode.stat();
        // A file being written is what its staging says, not what the server has (yet).
        let stat = if self.fresh(&before) || self.writer(ino).is_some() {
            before.clone()
        } else {
            self.revalidate(&inode).await?
        };
        let keep_cache = before.etag.is_some() && before.etag == stat.etag;
        let reader = Reader::new(
            self.store.clone(),
            &self.inodes.key(&inode),
            stat.etag.as_deref(),
            stat.size,
            self.prefetch_budget.clone(),
        )
        .with_cache(self.pages.clone());
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.inodes.open_handle(ino);
        self.files.lock().unwrap().insert(
            fh,
            Arc::new(FileHandle {
                ino,
                reader: tokio::sync::Mutex::new(reader),
                writing: mode.write,
            }),
        );
        // A file being written is served from its staging; the kernel must not keep pages.
        Ok((fh, keep_cache && !mode.write))
    }

    pub async fn read(&self, fh: u64, offset: u64, size: u32) -> Result<Bytes> {
        let h = self
            .files
            .lock()
            .unwrap()
            .get(&fh)
            .cloned()
            .ok_or(Error::BadHandle)?;
        if let Some(w) = self.writer(h.ino) {
            return self.read_writing(&w, offset, u64::from(size)).await;
        }
        let res = {
            let mut r = h.reader.lock().await;
            match r.begin(offset, u64::from(size)) {
                prefetch::Step::Done(b) => Ok(b),
                prefetch::Step::Sequential { offset, end } => r.read_sequential(offset, end).await,
                prefetch::Step::Random(fetch) => {
                    drop(r);
                    fetch.run().await
                }
            }
        };
        res.map_err(|e| {
            match Arc::try_unwrap(e).unwrap_or_else(|a| StoreError::Other(a.to_string())) {
                StoreError::PreconditionFailed => Error::Changed,
                other => Error::from(other),
            }
        })
    }

    /// Closes a handle; the last write handle of a file uploads what is still unsaved.
    pub async fn release(&self, fh: u64) -> Result<()> {
        let h = self.files.lock().unwrap().remove(&fh);
        let Some(h) = h else { return Ok(()) };
        let res = if h.writing {
            self.detach_writer(h.ino).await
        } else {
            Ok(())
        };
        self.inodes.close_handle(h.ino);
        res
    }

    pub fn opendir(&self, ino: u64) -> Result<u64> {
        let inode = self.dir_inode(ino)?;
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.dirs.lock().unwrap().insert(
            fh,
            Arc::new(tokio::sync::Mutex::new(DirHandle::new(
                ino,
                &self.inodes.key(&inode),
            ))),
        );
        Ok(fh)
    }

    pub fn releasedir(&self, fh: u64) {
        self.dirs.lock().unwrap().remove(&fh);
    }

    /// Fills entries from `offset` until `fill` reports the buffer full (that entry is held
    /// back for the next call). With `plus`, each entry the kernel accepted is a lookup.
    pub async fn readdir(
        &self,
        ino: u64,
        fh: u64,
        offset: u64,
        plus: bool,
        fill: &mut (dyn FnMut(&DirEntry) -> bool + Send),
    ) -> Result<()> {
        let dir = self.dir_inode(ino)?;
        let h = self
            .dirs
            .lock()
            .unwrap()
            .get(&fh)
            .cloned()
            .ok_or(Error::BadHandle)?;
        let mut h = h.lock().await;
        if offset == 0 {
            h.restart(&self.inodes.key(&dir));
        }
        let mut i = offset as usize;
        loop {
            let entry = match i {
                0 | 1 => {
                    let (name, target) = if i == 0 {
                        (".", dir.clone())
                    } else {
                        ("..", self.inodes.get(dir.parent()).unwrap_or(dir.clone()))
                    };
                    let attr = self.attr(&target, &target.stat());
                    DirEntry {
                        name: name.into(),
                        kind: Kind::Dir,
                        next_offset: i as u64 + 1,
                        attr,
                    }
                }
                _ => {
                    while i - 2 >= h.entries.len() && !h.complete() {
                        self.next_page(&mut h).await?;
                    }
                    let Some(l) = h.entries.get(i - 2).cloned() else {
                        return Ok(());
                    };
                    // What a HEAD told us (stored mode, owner, mtime, symlink) stays while the
                    // object is unchanged; LIST does not carry it.
                    let known = self
                        .inodes
                        .child(dir.ino, &l.name)
                        .filter(|_| l.meta.is_none())
                        .filter(|c| match l.kind {
                            Kind::Dir => c.kind == Kind::Dir,
                            _ => {
                                c.kind != Kind::Dir
                                    && c.stat().etag.is_some()
                                    && c.stat().etag == l.etag
                            }
                        });
                    let (kind, stat) = match (&known, l.kind) {
                        (Some(c), _) => (c.kind, c.stat()),
                        (None, k @ (Kind::File | Kind::Symlink)) => (
                            k,
                            Stat {
                                size: l.size,
                                mtime: l.mtime.unwrap_or(self.mount_time),
                                etag: l.etag.clone(),
                                validated: Some(Instant::now()),
                                meta: l.meta.clone().unwrap_or_default(),
                            },
                        ),
                        (None, k) => (k, self.dir_stat()),
                    };
                    let child = self.inodes.upsert(&dir, &l.name, kind, stat.clone(), false);
                    let e = DirEntry {
                        name: l.name.clone(),
                        kind,
                        next_offset: i as u64 + 1,
                        attr: self.attr(&child, &stat),
                    };
                    let full = fill(&e);
                    if plus && !full {
                        // Accepted by a readdirplus: the kernel now holds a reference.
                        self.inodes.add_lookup(child.ino);
                    } else {
                        // Not referenced by the kernel: drop it unless something else holds it.
                        self.inodes.forget(child.ino, 0);
                    }
                    if full {
                        return Ok(());
                    }
                    i += 1;
                    continue;
                }
            };
            if fill(&entry) {
                return Ok(());
            }
            i += 1;
        }
    }

    async fn next_page(&self, h: &mut DirHandle) -> Result<()> {
        let dir = self.dir_inode(h.ino)?;
        let prefix = self.inodes.key(&dir);
        let page = match h.pending.take() {
            Some(p) => p
                .await
                .map_err(|e| StoreError::Other(format!("LIST task failed: {e}")))??,
            None => {
                self.store
                    .list(&prefix, Some("/"), h.next.as_deref(), LIST_PAGE)
                    .await?
            }
        };
        h.started = true;
        h.next = page.next.clone();
        // Ask for the page after this one now, so its round trip overlaps the kernel
        // consuming this one.
        if let Some(token) = h.next.clone() {
            let (store, prefix) = (self.store.clone(), prefix.clone());
            h.pending = Some(tokio::spawn(async move {
                store
                    .list(&prefix, Some("/"), Some(&token), LIST_PAGE)
                    .await
            }));
        }
        let mut out: Vec<Listed> = Vec::new();
        h.merger
            .push_page(page, &mut out, &mut |k| self.warn_invalid(k));
        if h.next.is_none() {
            h.merger.finish(&mut out);
        }
        self.resolve_empty_objects(&prefix, &mut out).await;
        for l in &out {
            self.negative.remove(h.ino, &l.name);
        }
        h.entries.extend(out);
        Ok(())
    }

    /// LIST carries no headers. A zero-byte object may be a directory written by another tool
    /// (`Content-Type: application/x-directory`), so those few are HEADed; with
    /// `--posix-metadata` every file is, in parallel, for its stored mode, owner, mtime and
    /// symlink-ness.
    async fn resolve_empty_objects(&self, prefix: &str, out: &mut [Listed]) {
        use futures::StreamExt;
        /// HEADs in flight at once for one listing page.
        const PARALLEL_HEADS: usize = 16;
        let all = self.opts.posix_metadata;
        let wanted: Vec<usize> = (0..out.len())
            .filter(|&i| out[i].kind == Kind::File && (all || out[i].size == 0))
            .collect();
        let heads: Vec<(usize, Option<ObjectInfo>)> =
            futures::stream::iter(wanted.into_iter().map(|i| {
                let key = format!("{prefix}{}", out[i].name);
                async move { (i, self.store.head(&key).await.ok()) }
            }))
            .buffer_unordered(PARALLEL_HEADS)
            .collect()
            .await;
        for (i, info) in heads {
            let Some(info) = info else { continue };
            if info.content_type.as_deref() == Some(DIR_CONTENT_TYPE) {
                out[i].kind = Kind::Dir;
                continue;
            }
            let m = meta::PosixMeta::parse(&info.metadata);
            if m.is_symlink() {
                out[i].kind = Kind::Symlink;
            }
            out[i].etag = info.etag.or(out[i].etag.take());
            out[i].meta = Some(m);
        }
    }

    pub fn statfs(&self) -> StatFs {
        // S3 has no capacity: report a petabyte free so tools that check space proceed.
        const BLOCKS: u64 = 1 << 38; // 2^38 blocks of 4 KiB = 1 PiB
        StatFs {
            blocks: BLOCKS,
            bfree: BLOCKS,
            files: 1 << 40,
            ffree: 1 << 40,
            bsize: 4096,
            namelen: readdir::NAME_MAX as u32,
        }
    }

    /// Verifies the bucket before mounting (credentials, existence, reachability).
    pub async fn check(&self) -> std::result::Result<(), StoreError> {
        self.store.check_bucket().await
    }
}

#[cfg(test)]
mod tests;
