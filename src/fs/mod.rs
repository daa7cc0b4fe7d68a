//! The filesystem core: a thin orchestrator over three components that own their state and
//! locks. No fuser types here.
//!
//! - [`namespace::Namespace`]: the inode table, lookups and the negative cache, listings,
//!   `forget`;
//! - [`reads::Reads`]: open handles and the reads of stored objects (prefetch, page cache);
//! - [`write::Writers`]: files open for writing, staging, uploads.
//!
//! Each method here takes typed arguments, asks the components, and returns
//! `Result<_, fs::Error>`; the fuser adapter in `fuse/` only converts and replies. Operations
//! that change the namespace are in `ops.rs`, `attrs.rs` and `rename.rs`. The core is generic
//! over [`ObjectStore`], so the same code runs on S3 and on the in-memory twin in unit tests.
//!
//! Lock order across components: the core holds no lock of its own; a component never calls
//! another while holding one of its locks, so each component's own order (written where its
//! locks are declared) is the whole order.

mod attrs;
pub mod error;
pub mod inode;
pub mod meta;
mod namespace;
mod ops;
pub mod prefetch;
pub mod readdir;
mod reads;
mod rename;
pub mod write;

pub use attrs::SetAttr;
pub use error::{Error, Result};
pub use inode::{Kind, ROOT_INO};
pub use rename::{DIR_RENAME_MAX_BYTES, DIR_RENAME_MAX_OBJECTS, RenameFlags};

use crate::config::FsOptions;
use crate::store::{ObjectStore, StoreError};
use bytes::Bytes;
use namespace::Namespace;
use readdir::valid_name;
use reads::{Opened, Reads};
use std::ffi::OsStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;
use write::Writers;

/// Content type marking a zero-byte object as a directory (s3fs, the S3 console).
pub const DIR_CONTENT_TYPE: &str = "application/x-directory";

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
    pub atime: SystemTime,
    pub ctime: SystemTime,
    pub perm: u16,
    pub uid: u32,
    pub gid: u32,
    /// Device number (character and block devices).
    pub rdev: u32,
    /// Links: 2 for a directory, 1 for the rest, 0 once unlinked while open.
    pub nlink: u32,
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

/// Who asks for a new entry: its process (see [`OpenMode::opener`]) and its user and group,
/// who own what it creates (`None`: the mount's owner, `-o uid=`/`gid=`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Caller {
    pub pid: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

/// How a file is opened.
#[derive(Debug, Clone, Copy, Default)]
pub struct OpenMode {
    pub write: bool,
    pub truncate: bool,
    /// The process that opens it (`None`: not known). A `flush` from another process (a
    /// forked child closing the descriptor it inherited) does not upload; see [`S3Fs::flush_from`].
    pub opener: Option<u32>,
}

pub struct S3Fs<S: ObjectStore> {
    store: Arc<S>,
    opts: Arc<FsOptions>,
    ns: Namespace<S>,
    reads: Reads<S>,
    writes: Writers<S>,
    /// File and directory handles share one number space.
    next_fh: AtomicU64,
}

impl<S: ObjectStore> S3Fs<S> {
    /// `prefix` is the key prefix mounted as the root: empty or ending with `/`.
    pub fn new(store: Arc<S>, prefix: &str, opts: FsOptions) -> Self {
        let opts = Arc::new(opts);
        // One budget for the mount's file data in flight: prefetched and fetched parts of the
        // readers, and the writers' in-memory buffers (KiB permits).
        // A quarter of it is the read reserve: what reads wait for once the rest is spent.
        let kib = (opts.prefetch_budget() / 1024).min(u32::MAX as u64 / 2);
        let reserve = (kib / 4).max(1);
        let budget = Arc::new(tokio::sync::Semaphore::new((kib - reserve) as usize));
        Self {
            ns: Namespace::new(store.clone(), prefix, opts.clone()),
            reads: Reads::new(store.clone(), &opts, budget.clone(), reserve as u32),
            writes: Writers::new(store.clone(), opts.clone(), budget),
            next_fh: AtomicU64::new(1),
            store,
            opts,
        }
    }

    pub fn options(&self) -> &FsOptions {
        &self.opts
    }

    /// The key of inode `ino` (with `name`: of that entry in it), for log lines.
    pub fn describe(&self, ino: u64, name: Option<&std::ffi::OsStr>) -> String {
        let key = match self.ns.inode(ino) {
            Ok(i) => self.ns.key(&i),
            Err(_) => return format!("inode {ino}"),
        };
        match name {
            Some(n) => format!("{key}{}", n.to_string_lossy()),
            None if key.is_empty() => "/".into(),
            None => key,
        }
    }

    /// The mount's gauges for metrics: (name, help, value).
    pub fn gauges(&self) -> Vec<(&'static str, &'static str, u64)> {
        let (writing, staged) = self.writes.pending();
        vec![
            (
                "s3mount_inodes",
                "Inodes the mount holds.",
                self.inode_count() as u64,
            ),
            (
                "s3mount_open_handles",
                "Open file handles.",
                self.open_files() as u64,
            ),
            ("s3mount_files_writing", "Files open for writing.", writing),
            (
                "s3mount_staged_bytes",
                "Bytes of files open for writing, staged locally.",
                staged,
            ),
            (
                "s3mount_uploads_in_flight",
                "Part and whole-file uploads sending now.",
                self.writes.uploads_in_flight(),
            ),
        ]
    }

    /// File handles open (reading or writing).
    pub fn open_files(&self) -> usize {
        self.reads.open_count()
    }

    /// Inodes held (root included); for tests of forget.
    pub fn inode_count(&self) -> usize {
        self.ns.len()
    }

    fn new_fh(&self) -> u64 {
        self.next_fh.fetch_add(1, Ordering::Relaxed)
    }

    /// Looks `name` up in `parent`; one more kernel reference on success.
    pub async fn lookup(&self, parent: u64, name: &(impl AsRef<OsStr> + ?Sized)) -> Result<Attr> {
        let name = entry_name(name.as_ref(), false)?;
        let writing = |ino| self.writes.is_open(ino);
        self.ns.lookup(parent, name, &writing).await
    }

    pub fn forget(&self, ino: u64, n: u64) {
        self.ns.forget(ino, n);
    }

    pub async fn getattr(&self, ino: u64) -> Result<Attr> {
        let writing = |ino| self.writes.is_open(ino);
        self.ns.getattr(ino, &writing).await
    }

    /// Opens a file. Returns the handle and whether the kernel may keep the pages it cached
    /// from an earlier open (true when the object is unchanged since then).
    pub async fn open(&self, ino: u64, mode: OpenMode) -> Result<(u64, bool)> {
        let inode = self.ns.inode(ino)?;
        if inode.kind == Kind::Dir {
            return Err(Error::IsDir);
        }
        let key = self.ns.key(&inode);
        if mode.write {
            self.check_writable()?;
            self.writes.attach(&inode, &key, mode.truncate).await?;
        }
        let before = inode.stat();
        // A file being written is what its staging says, not what the server has (yet).
        let stat = if self.ns.fresh(&before) || self.writes.is_open(ino) {
            before.clone()
        } else {
            self.ns.revalidate(&inode).await?
        };
        let keep_cache = before.etag.is_some() && before.etag == stat.etag;
        let fh = self.new_fh();
        self.ns.open_handle(ino);
        self.reads.open(
            fh,
            Opened {
                ino,
                key: &key,
                etag: stat.etag.as_deref(),
                size: stat.size,
                writing: mode.write,
                opener: mode.opener,
            },
        );
        // A file being written is served from its staging; the kernel must not keep pages.
        Ok((fh, keep_cache && !mode.write))
    }

    pub async fn read(&self, fh: u64, offset: u64, size: u32) -> Result<Bytes> {
        use std::sync::atomic::Ordering;
        let h = self.reads.handle(fh)?;
        if let Some(r) = self.writes.read(h.ino, offset, u64::from(size)).await {
            return r;
        }
        let res = match self.reads.read(&h, offset, size).await {
            // Replaced by another client after we last looked, before this handle returned
            // a byte: re-check and read the new version (never a mix of two).
            Err(Error::Changed) if !h.served.load(Ordering::Acquire) => {
                let inode = self.ns.inode(h.ino)?;
                let st = self.ns.revalidate(&inode).await?;
                let key = self.ns.key(&inode);
                self.reads
                    .reopen(&h, &key, st.etag.as_deref(), st.size)
                    .await;
                self.reads.read(&h, offset, size).await
            }
            r => r,
        };
        if res.is_ok() {
            h.served.store(true, Ordering::Release);
        }
        res
    }

    /// Writes through handle `fh`.
    pub async fn write(&self, fh: u64, offset: u64, data: &[u8]) -> Result<u32> {
        let ino = self.reads.handle(fh)?.ino;
        let inode = self.ns.inode(ino).ok();
        self.writes.write(ino, inode, offset, data).await
    }

    /// `close(2)` of a descriptor of `fh` by process `closer()`: uploads now if the file
    /// changed, so the close reports the outcome, unless the closer is not the process that
    /// opened the handle. The kernel flushes at every close of every copy of a descriptor, also
    /// when a forked child exits or execs: uploading then would send a half-written file (and
    /// the opener's later writes again). What such a flush skips is uploaded by the opener's
    /// close, `fsync` or the last release. `closer` is called only for handles opened for
    /// writing (the close of a read-only file needs no look-up of its process).
    pub async fn flush_from(&self, fh: u64, closer: impl FnOnce() -> u32) -> Result<()> {
        let h = self.reads.handle(fh)?;
        if let Some(opener) = h.opener {
            let pid = closer();
            if pid != opener {
                tracing::debug!(fh, pid, opener, "flush from another process: no upload");
                return Ok(());
            }
        }
        self.flush(fh).await
    }

    /// `fsync` (and a close by the opener): upload now if the file changed.
    pub async fn flush(&self, fh: u64) -> Result<()> {
        let ino = self.reads.handle(fh)?.ino;
        let Ok(inode) = self.ns.inode(ino) else {
            return Ok(());
        };
        self.writes.flush(&inode).await?;
        self.ns.uploaded(&inode);
        Ok(())
    }

    /// Closes a handle; the last write handle of a file uploads what is still unsaved.
    pub async fn release(&self, fh: u64) -> Result<()> {
        let Some(h) = self.reads.close(fh) else {
            return Ok(());
        };
        let res = if h.writing {
            let inode = self.ns.inode(h.ino).ok();
            let res = self.writes.detach(h.ino, inode.clone()).await;
            if let (Ok(()), Some(inode)) = (&res, &inode) {
                self.ns.uploaded(inode);
            }
            res
        } else {
            Ok(())
        };
        if let Some(key) = self.ns.close_handle(h.ino) {
            // The last handle of a file unlinked while open.
            if let Err(e) = self.store.delete(&key).await {
                tracing::warn!(key, error = %e, "the object of a file unlinked while open could not be deleted");
            }
            self.ns.deleted_deferred(&key, h.ino);
        }
        res
    }

    pub fn opendir(&self, ino: u64) -> Result<u64> {
        let fh = self.new_fh();
        self.ns.opendir(ino, fh)?;
        Ok(fh)
    }

    pub fn releasedir(&self, fh: u64) {
        self.ns.releasedir(fh);
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
        self.ns.readdir(ino, fh, offset, plus, fill).await
    }

    pub fn statfs(&self) -> StatFs {
        self.ns.statfs()
    }

    /// The session ended: keeps on local disk the bytes of every file still open for writing
    /// whose last upload did not succeed (its release never came, or came too late).
    /// Uploads or keeps what killed mounts of this bucket left in the cache directory (run
    /// before serving requests).
    pub async fn recover_pending(&self) -> std::io::Result<write::RecoveryReport> {
        self.writes.recover().await
    }

    /// Uploads the copies in `recovered/` of this bucket (`list_only`: only lists them;
    /// `force`: also half-written files and objects changed since).
    pub async fn recover_kept(
        &self,
        list_only: bool,
        force: bool,
    ) -> std::io::Result<write::RecoveryReport> {
        self.writes.recover_kept(list_only, force).await
    }

    pub async fn shutdown(&self) {
        self.writes.shutdown().await;
    }

    /// Verifies the bucket before mounting (credentials, existence, reachability).
    pub async fn check(&self) -> std::result::Result<(), StoreError> {
        self.store.check_bucket().await
    }
}

#[cfg(test)]
mod tests;
