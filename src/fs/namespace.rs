//! The namespace: the inode table, lookups and their negative cache, directory listings and
//! `forget`. It owns these and their locks; the rest of the core asks through its methods.
//!
//! Lookup asks S3 two things at once: HEAD `key` and LIST `key/` (one entry). Anything under
//! `key/` makes it a directory (a directory shadows a file of the same name); otherwise a HEAD
//! hit is a file (or a directory if it carries `Content-Type: application/x-directory`).
//! Answers are trusted for the metadata TTL; misses go to the negative cache for as long.
//!
//! Locks, in order: the `dirs` handle map (std, map operations only) before a directory
//! handle's tokio mutex (held across awaits: one handle's listing is serial by nature), before
//! the inode table (std, never across an await; see `inode.rs`). The negative cache (moka) and
//! the warned set (std, insert only) take no other lock.

use super::inode::{Inode, InodeTable, Kind, Stat};
use super::readdir::{self, DirHandle, Listed};
use super::{Attr, DIR_CONTENT_TYPE, DirEntry, Error, Result, StatFs, meta};
use crate::cache::NegativeCache;
use crate::config::FsOptions;
use crate::store::{ObjectInfo, ObjectStore, StoreError};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

/// Entries per LIST page: the S3 maximum, fewest round trips.
const LIST_PAGE: u32 = 1000;
/// At most this many hidden keys are remembered for the once-per-key warning.
const MAX_WARNED: usize = 10_000;

/// Whether an inode is open for writing (asked of the writers by the caller).
pub(super) type Writing<'a> = &'a (dyn Fn(u64) -> bool + Sync);

pub(super) struct Namespace<S: ObjectStore> {
    store: Arc<S>,
    opts: Arc<FsOptions>,
    inodes: InodeTable,
    negative: NegativeCache,
    dirs: Mutex<HashMap<u64, Arc<tokio::sync::Mutex<DirHandle>>>>,
    warned: Mutex<HashSet<String>>,
    mount_time: SystemTime,
    /// Objects of files unlinked while open, by key: the inode, and when the object was
    /// deleted (after its last handle closed). Hidden from lookups until deleted, and from
    /// listings sent before it was deleted (a LIST in flight may still carry it) (std, map
    /// operations only).
    deferred: Mutex<HashMap<String, (u64, Option<Instant>)>>,
}

impl<S: ObjectStore> Namespace<S> {
    pub(super) fn new(store: Arc<S>, prefix: &str, opts: Arc<FsOptions>) -> Self {
        let now = SystemTime::now();
        Self {
            store,
            inodes: InodeTable::new(prefix, now),
            negative: NegativeCache::new(opts.metadata_ttl),
            dirs: Mutex::new(HashMap::new()),
            warned: Mutex::new(HashSet::new()),
            mount_time: now,
            deferred: Mutex::new(HashMap::new()),
            opts,
        }
    }

    /// Inodes held (root included).
    pub(super) fn len(&self) -> usize {
        self.inodes.len()
    }

    pub(super) fn inode(&self, ino: u64) -> Result<Arc<Inode>> {
        self.inodes.get(ino).ok_or(Error::NotFound)
    }

    /// The object key of `inode` (a directory's ends with `/`).
    pub(super) fn key(&self, inode: &Inode) -> String {
        self.inodes.key(inode)
    }

    /// The key `name` would have in directory `parent`.
    pub(super) fn child_key(&self, parent: &Inode, name: &str) -> String {
        format!("{}{name}", self.inodes.key(parent))
    }

    /// `name` now exists in `parent` (created here): in the table with a kernel reference.
    pub(super) fn added(&self, parent: &Inode, name: &str, kind: Kind, stat: Stat) -> Arc<Inode> {
        self.negative.remove(parent.ino, name);
        // A new file at the name of one unlinked while open: its upload replaces the object,
        // which must then not be deleted when the old one's last handle closes.
        self.forget_deferred(|| self.child_key(parent, name));
        self.touch_dir(parent.ino);
        self.inodes.upsert(parent, name, kind, stat, true)
    }

    /// `name` is gone from `parent` (removed here).
    pub(super) fn removed(&self, parent: u64, name: &str) {
        self.inodes.detach(parent, name);
        self.negative.insert(parent, name);
        self.touch_dir(parent);
    }

    /// `ino` moved from `parent/name` to `newparent/newname`.
    pub(super) fn renamed(&self, ino: u64, from: (u64, &str), to: (u64, &str)) {
        self.inodes.rename(ino, to.0, to.1);
        self.negative.remove(to.0, to.1);
        self.negative.insert(from.0, from.1);
        if let Some(i) = self.inodes.get(ino) {
            // The object now at the new name replaced any unlinked one's there.
            self.forget_deferred(|| self.inodes.key(&i));
        }
        self.touch_dir(from.0);
        self.touch_dir(to.0);
        if let Some(i) = self.inodes.get(ino) {
            let mut st = i.stat();
            st.meta.ctime = Some(SystemTime::now());
            i.set_stat(st);
        }
    }

    /// An entry of directory `ino` was made, removed or renamed: its mtime and ctime move, as
    /// a local file system's do. Kept for the mount's life, not stored (a marker rewrite per
    /// change would double the requests of every create).
    fn touch_dir(&self, ino: u64) {
        if let Some(d) = self.inodes.get(ino) {
            let now = SystemTime::now();
            let mut st = d.stat();
            st.meta.mtime = Some(now);
            st.meta.ctime = Some(now);
            d.set_stat(st);
        }
    }

    /// `inode`'s object exists on the server now (after its upload).
    pub(super) fn uploaded(&self, inode: &Inode) {
        self.negative.remove(inode.parent(), &inode.name());
    }

    /// A handle opened on / closed for `ino` (keeps it in the table while open).
    pub(super) fn open_handle(&self, ino: u64) {
        self.inodes.open_handle(ino);
    }

    /// A handle of `ino` closed. If it was the last of a file unlinked while open, the key
    /// of its object, which the caller now deletes (then [`Namespace::deleted_deferred`]: it
    /// stays hidden until the object is gone).
    pub(super) fn close_handle(&self, ino: u64) -> Option<String> {
        if self.inodes.close_handle(ino) > 0 {
            return None;
        }
        let d = self.deferred.lock().unwrap();
        d.iter()
            .find(|(_, (i, gone))| *i == ino && gone.is_none())
            .map(|(k, _)| k.clone())
    }

    /// The object of a file unlinked while open is deleted (or could not be): lookups see
    /// what the server says of `key` from now on; listings sent before now still hide it.
    pub(super) fn deleted_deferred(&self, key: &str, ino: u64) {
        /// Longest a LIST may be in flight: entries older than this are forgotten.
        const LIST_IN_FLIGHT: std::time::Duration = std::time::Duration::from_secs(120);
        let mut d = self.deferred.lock().unwrap();
        if let Some(e) = d.get_mut(key)
            && e.0 == ino
        {
            e.1 = Some(Instant::now());
        }
        d.retain(|_, (_, gone)| gone.is_none_or(|t| t.elapsed() < LIST_IN_FLIGHT));
    }

    /// Whether a listing sent at `sent` must hide `key`.
    fn hidden_in_listing(
        d: &HashMap<String, (u64, Option<Instant>)>,
        key: &str,
        sent: Instant,
    ) -> bool {
        d.get(key)
            .is_some_and(|(_, gone)| gone.is_none_or(|t| sent < t))
    }

    /// Whether `ino` has open handles.
    pub(super) fn is_open(&self, ino: u64) -> bool {
        self.inodes.open_handles(ino) > 0
    }

    /// `name` in `parent` (inode `inode`, open) is unlinked: it leaves the namespace now, and
    /// its object stays, hidden, until the last handle closes (POSIX: open descriptors keep
    /// the file).
    pub(super) fn unlinked_open(&self, parent: u64, name: &str, inode: &Inode) {
        let key = self.inodes.key(inode);
        inode
            .unlinked
            .store(true, std::sync::atomic::Ordering::Release);
        self.deferred.lock().unwrap().insert(key, (inode.ino, None));
        self.removed(parent, name);
    }

    /// The object at `key()` is replaced: an unlinked open file's there must not be deleted
    /// at its last close. The key is built only when some file is unlinked while open.
    fn forget_deferred(&self, key: impl FnOnce() -> String) {
        let mut d = self.deferred.lock().unwrap();
        if !d.is_empty() {
            d.remove(&key());
        }
    }

    fn is_deferred(&self, key: &str) -> bool {
        self.deferred
            .lock()
            .unwrap()
            .get(key)
            .is_some_and(|(_, gone)| gone.is_none())
    }

    pub(super) fn attr(&self, inode: &Inode, stat: &Stat) -> Attr {
        let mtime = stat.meta.mtime.unwrap_or(stat.mtime);
        Attr {
            ino: inode.ino,
            kind: inode.kind,
            size: stat.size,
            mtime,
            atime: stat.meta.atime.unwrap_or(mtime),
            // Every change writes the object anew: without a header, its Last-Modified.
            // A stored ctime older than the object's Last-Modified is stale (a later copy).
            ctime: stat
                .meta
                .ctime
                .map_or(stat.mtime, |c| c.max(stat.mtime))
                .max(mtime),
            perm: match inode.kind {
                Kind::Symlink => 0o777,
                _ => stat.meta.perm().unwrap_or(match inode.kind {
                    Kind::Dir => self.opts.dir_mode,
                    _ => self.opts.file_mode,
                }),
            },
            uid: stat.meta.uid.unwrap_or(self.opts.uid),
            gid: stat.meta.gid.unwrap_or(self.opts.gid),
            rdev: stat.meta.rdev.unwrap_or(0),
            nlink: match inode.kind {
                _ if inode.unlinked.load(std::sync::atomic::Ordering::Acquire) => 0,
                Kind::Dir => 2,
                _ => 1,
            },
        }
    }

    pub(super) fn fresh(&self, stat: &Stat) -> bool {
        stat.validated
            .is_some_and(|t| t.elapsed() < self.opts.metadata_ttl)
    }

    pub(super) fn dir_inode(&self, ino: u64) -> Result<Arc<Inode>> {
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

    pub(super) fn dir_stat(&self) -> Stat {
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
    /// `writing(ino)`: whether the file is open for writing (then it exists here before it
    /// exists on the server, and its attributes are the writer's).
    pub(super) async fn lookup(
        &self,
        parent: u64,
        name: &str,
        writing: Writing<'_>,
    ) -> Result<Attr> {
        let p = self.dir_inode(parent)?;
        if let Some(c) = self.inodes.child(parent, name) {
            let stat = c.stat();
            // A file being written exists here before it exists on the server.
            if self.fresh(&stat) || writing(c.ino) {
                let c = self.inodes.upsert(&p, name, c.kind, stat.clone(), true);
                return Ok(self.attr(&c, &stat));
            }
        }
        if self.negative.contains(parent, name) {
            return Err(Error::NotFound);
        }
        let key = self.child_key(&p, name);
        // Past S3's key length nothing can exist (the server would answer 400, not 404).
        if self.is_deferred(&key) || key.len() + 1 > super::ops::MAX_KEY_LEN {
            return Err(Error::NotFound);
        }
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
                    } else if let Some(t) = stat.meta.special_type() {
                        Kind::Special(t)
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

    pub(super) fn forget(&self, ino: u64, n: u64) {
        self.inodes.forget(ino, n);
    }

    pub(super) async fn getattr(&self, ino: u64, writing: Writing<'_>) -> Result<Attr> {
        let inode = self.inode(ino)?;
        let stat = inode.stat();
        if inode.kind == Kind::Dir || self.fresh(&stat) || writing(ino) {
            return Ok(self.attr(&inode, &stat));
        }
        let stat = self.revalidate(&inode).await?;
        Ok(self.attr(&inode, &stat))
    }

    /// HEADs a file inode again and records what the server says.
    pub(super) async fn revalidate(&self, inode: &Inode) -> Result<Stat> {
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

    /// Opens directory `ino` as handle `fh` (numbered by the caller: one number space for
    /// files and directories).
    pub(super) fn opendir(&self, ino: u64, fh: u64) -> Result<()> {
        let inode = self.dir_inode(ino)?;
        self.dirs.lock().unwrap().insert(
            fh,
            Arc::new(tokio::sync::Mutex::new(DirHandle::new(
                ino,
                &self.inodes.key(&inode),
            ))),
        );
        Ok(())
    }

    pub(super) fn releasedir(&self, fh: u64) {
        self.dirs.lock().unwrap().remove(&fh);
    }

    /// Fills entries from `offset` until `fill` reports the buffer full (that entry is held
    /// back for the next call). With `plus`, each entry the kernel accepted is a lookup.
    pub(super) async fn readdir(
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
        let mut sent = Instant::now();
        let page = match h.pending.take() {
            Some(p) => {
                sent = h.pending_at;
                p.await
                    .map_err(|e| StoreError::Other(format!("LIST task failed: {e}")))??
            }
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
            h.pending_at = Instant::now();
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
        {
            let d = self.deferred.lock().unwrap();
            if !d.is_empty() {
                out.retain(|l| {
                    l.kind == Kind::Dir
                        || !Self::hidden_in_listing(&d, &format!("{prefix}{}", l.name), sent)
                });
            }
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
            } else if let Some(t) = m.special_type() {
                // Special files are zero-byte objects: always HEADed here, so a listing
                // shows them as what they are.
                out[i].kind = Kind::Special(t);
            }
            out[i].etag = info.etag.or(out[i].etag.take());
            out[i].meta = Some(m);
        }
    }

    pub(super) fn statfs(&self) -> StatFs {
        // S3 has no capacity: report a petabyte free so tools that check space proceed.
        const BLOCKS: u64 = 1 << 38; // 2^38 blocks of 4 KiB = 1 PiB
        /// Inodes: no limit either; `df -i` shows as used the inodes the mount holds now.
        const FILES: u64 = 1 << 40;
        StatFs {
            blocks: BLOCKS,
            bfree: BLOCKS,
            files: FILES,
            ffree: FILES - self.inodes.len() as u64,
            bsize: 4096,
            namelen: readdir::NAME_MAX as u32,
        }
    }

    /// The inode of `name` in `parent`, without taking a kernel reference.
    pub(super) async fn lookup_inode(
        &self,
        parent: u64,
        name: &str,
        writing: Writing<'_>,
    ) -> Result<Arc<Inode>> {
        let a = self.lookup(parent, name, writing).await?;
        let inode = self.inode(a.ino);
        self.inodes.forget(a.ino, 1);
        inode
    }
}
