//! The thin fuser adapter: kernel arguments in, core call on tokio, reply out.
//!
//! fuser 0.18 calls every method with `&self` from its session threads; each method here moves
//! its reply into a tokio task, so a slow S3 request never blocks the session threads and many
//! requests run at once. Each task carries one tracing span (op, ino, fh). Names go to the core
//! as the kernel sent them (`OsStr`); the core decides what is valid. Errors become errno only
//! through `fs::Error::errno`: this file answers none by itself.

use crate::fs::meta;
use crate::fs::{Attr, Caller, DirEntry, Error, Kind, OpenMode, RenameFlags, S3Fs, SetAttr};
use crate::store::ObjectStore;
use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    KernelConfig, LockOwner, OpenFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr,
    Request, TimeOrNow, WriteFlags,
};
use std::ffi::OsStr;
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

/// Largest write the kernel may send in one request (matters once writes land; also raises
/// `max_pages`, which lets reads be as large as the kernel's readahead allows).
const MAX_WRITE: u32 = 1 << 20;
/// Kernel requests allowed in flight in the background (readahead): enough for several files
/// reading ahead at once.
const MAX_BACKGROUND: u16 = 64;

pub struct FuseAdapter<S: ObjectStore> {
    core: Arc<S3Fs<S>>,
    rt: tokio::runtime::Handle,
    ttl: Duration,
    /// Every request's task, so that the end of the session can wait for those still running
    /// (a release retrying an upload) instead of dropping them with the runtime.
    tasks: tokio_util::task::TaskTracker,
}

impl<S: ObjectStore> FuseAdapter<S> {
    pub fn new(core: Arc<S3Fs<S>>, rt: tokio::runtime::Handle) -> Self {
        let ttl = core.options().metadata_ttl;
        Self {
            core,
            rt,
            ttl,
            tasks: tokio_util::task::TaskTracker::new(),
        }
    }

    /// The requests' tasks (to wait for them after the session ends).
    pub fn tasks(&self) -> tokio_util::task::TaskTracker {
        self.tasks.clone()
    }

    /// flush (`Some(thread)`: a close by that thread's process) and fsync (`None`): upload the
    /// file behind `fh` if it changed, and reply.
    fn upload_and_reply(
        &self,
        span: tracing::Span,
        (op, ino): (&'static str, INodeNo),
        fh: FileHandle,
        closer: Option<u32>,
        reply: ReplyEmpty,
    ) {
        let core = self.core.clone();
        self.spawn(span, async move {
            let res = match closer {
                Some(tid) => core.flush_from(fh.0, || process_of(tid)).await,
                None => core.flush(fh.0).await,
            };
            match res {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(errno(&core, op, ino.0, None, &e)),
            }
        });
    }

    /// Runs `f` on tokio inside a span for this request.
    fn spawn<F>(&self, span: tracing::Span, f: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        self.tasks.spawn_on(f.instrument(span), &self.rt);
    }
}

/// The process (thread group) of the thread the kernel names in a request: the kernel sends
/// the thread's id, and a process may open in one thread and close in another. Falls back to
/// the thread's id when /proc does not say (the thread has exited).
fn process_of(tid: u32) -> u32 {
    std::fs::read_to_string(format!("/proc/{tid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Tgid:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(tid)
}

fn file_attr(a: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(a.ino),
        size: a.size,
        blocks: a.size.div_ceil(512),
        atime: a.atime,
        mtime: a.mtime,
        ctime: a.ctime,
        crtime: a.mtime,
        kind: file_type(a.kind),
        perm: a.perm,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: a.rdev,
        blksize: 4096,
        flags: 0,
    }
}

/// A value or list for getxattr/listxattr: its size when asked for the size (`size` 0), else
/// the bytes, or ERANGE when they do not fit.
fn reply_xattr(reply: ReplyXattr, size: u32, bytes: &[u8]) {
    if size == 0 {
        reply.size(bytes.len() as u32);
    } else if bytes.len() > size as usize {
        reply.error(Errno::from_i32(libc::ERANGE));
    } else {
        reply.data(bytes);
    }
}

fn at(t: TimeOrNow) -> std::time::SystemTime {
    match t {
        TimeOrNow::SpecificTime(t) => t,
        TimeOrNow::Now => std::time::SystemTime::now(),
    }
}

/// The requesting user and group: they own what the request creates.
fn caller(req: &Request) -> Caller {
    Caller {
        pid: None,
        uid: Some(req.uid()),
        gid: Some(req.gid()),
    }
}

fn file_type(k: Kind) -> FileType {
    match k {
        Kind::Dir => FileType::Directory,
        Kind::File => FileType::RegularFile,
        Kind::Symlink => FileType::Symlink,
        Kind::Special(meta::S_IFIFO) => FileType::NamedPipe,
        Kind::Special(meta::S_IFSOCK) => FileType::Socket,
        Kind::Special(meta::S_IFCHR) => FileType::CharDevice,
        Kind::Special(_) => FileType::BlockDevice,
    }
}

/// Gives the heap's free pages back to the kernel (glibc keeps them for reuse) once the mount
/// has had no open file for [`IDLE_TRIM_DELAY`]: the daemon's RSS returns towards its baseline
/// when the reading and writing is over, and a script opening files one after another does not
/// pay for a trim at every close.
fn return_free_memory_when_idle<S: ObjectStore>(core: Arc<S3Fs<S>>) {
    use std::sync::atomic::{AtomicBool, Ordering};
    static PENDING: AtomicBool = AtomicBool::new(false);
    if PENDING.swap(true, Ordering::AcqRel) {
        return;
    }
    tokio::spawn(async move {
        tokio::time::sleep(IDLE_TRIM_DELAY).await;
        PENDING.store(false, Ordering::Release);
        if core.open_files() == 0 {
            // SAFETY: malloc_trim only returns free memory; any thread may call it at any time.
            unsafe { libc::malloc_trim(0) };
        }
    });
}

/// How long the mount stays without open files before its free heap goes back to the kernel.
const IDLE_TRIM_DELAY: std::time::Duration = std::time::Duration::from_millis(500);

/// Logs at the error's own level, naming the operation and the file (the object key), and
/// converts it. The key is looked up only for a line that is logged.
fn errno<S: ObjectStore>(
    core: &S3Fs<S>,
    op: &str,
    ino: u64,
    name: Option<&OsStr>,
    e: &Error,
) -> Errno {
    if e.is_expected() {
        if tracing::enabled!(tracing::Level::DEBUG) {
            tracing::debug!(op, file = %core.describe(ino, name), error = %e);
        }
    } else {
        tracing::warn!(op, file = %core.describe(ino, name), error = %e, "{op} failed");
    }
    Errno::from_i32(e.errno())
}

impl<S: ObjectStore> Filesystem for FuseAdapter<S> {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let _ = config.set_max_write(MAX_WRITE);
        let _ = config.set_max_background(MAX_BACKGROUND);
        let _ = config.add_capabilities(fuser::InitFlags::FUSE_DO_READDIRPLUS);
        let _ = config.add_capabilities(fuser::InitFlags::FUSE_READDIRPLUS_AUTO);
        let _ = config.add_capabilities(fuser::InitFlags::FUSE_PARALLEL_DIROPS);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let core = self.core.clone();
        let ttl = self.ttl;
        let name = name.to_owned();
        let span = tracing::debug_span!("lookup", ino = parent.0, name = ?name);
        self.spawn(span, async move {
            match core.lookup(parent.0, &name).await {
                Ok(a) => reply.entry(&ttl, &file_attr(&a), Generation(0)),
                Err(e) => reply.error(errno(&core, "lookup", parent.0, Some(&name), &e)),
            }
        });
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.core.forget(ino.0, nlookup);
    }

    // batch_forget: fuser 0.18 keeps `ForgetOne` private, so its default, which calls
    // `forget` for each node, is the implementation.

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let core = self.core.clone();
        let ttl = self.ttl;
        self.spawn(tracing::debug_span!("getattr", ino = ino.0), async move {
            match core.getattr(ino.0).await {
                Ok(a) => reply.attr(&ttl, &file_attr(&a)),
                Err(e) => reply.error(errno(&core, "getattr", ino.0, None, &e)),
            }
        });
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let core = self.core.clone();
        let write = flags.0 & libc::O_ACCMODE != libc::O_RDONLY;
        let mode = OpenMode {
            write,
            truncate: flags.0 & libc::O_TRUNC != 0,
            // Only writers need it (flush uploads); reads skip the /proc look-up.
            opener: write.then(|| process_of(req.pid())),
        };
        self.spawn(tracing::debug_span!("open", ino = ino.0), async move {
            match core.open(ino.0, mode).await {
                Ok((fh, keep)) => {
                    let f = if keep {
                        FopenFlags::FOPEN_KEEP_CACHE
                    } else {
                        FopenFlags::empty()
                    };
                    reply.opened(FileHandle(fh), f)
                }
                Err(e) => reply.error(errno(&core, "open", ino.0, None, &e)),
            }
        });
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let core = self.core.clone();
        let span = tracing::trace_span!("read", ino = ino.0, fh = fh.0, offset, size);
        self.spawn(span, async move {
            match core.read(fh.0, offset, size).await {
                Ok(b) => reply.data(&b),
                Err(e) => reply.error(errno(&core, "read", ino.0, None, &e)),
            }
        });
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let core = self.core.clone();
        self.spawn(tracing::debug_span!("release", fh = fh.0), async move {
            let res = core.release(fh.0).await;
            if core.open_files() == 0 {
                return_free_memory_when_idle(core.clone());
            }
            match res {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(errno(&core, "release", ino.0, None, &e)),
            }
        });
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let core = self.core.clone();
        let data = data.to_vec();
        let span = tracing::trace_span!("write", ino = ino.0, fh = fh.0, offset);
        self.spawn(span, async move {
            match core.write(fh.0, offset, &data).await {
                Ok(n) => reply.written(n),
                Err(e) => reply.error(errno(&core, "write", ino.0, None, &e)),
            }
        });
    }

    fn flush(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        self.upload_and_reply(
            tracing::debug_span!("flush", ino = ino.0, fh = fh.0),
            ("flush", ino),
            fh,
            Some(req.pid()),
            reply,
        );
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        // The same as a close's flush: upload the whole file if it changed.
        self.upload_and_reply(
            tracing::debug_span!("fsync", ino = ino.0, fh = fh.0),
            ("fsync", ino),
            fh,
            None,
            reply,
        );
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let core = self.core.clone();
        let ttl = self.ttl;
        let name = name.to_owned();
        let caller = Caller {
            pid: Some(process_of(req.pid())),
            ..caller(req)
        };
        self.spawn(
            tracing::debug_span!("create", ino = parent.0, name = ?name),
            async move {
                let perm = (mode & !umask & 0o7777) as u16;
                match core.create_by(parent.0, &name, perm, caller).await {
                    Ok((a, fh)) => reply.created(
                        &ttl,
                        &file_attr(&a),
                        Generation(0),
                        FileHandle(fh),
                        FopenFlags::empty(),
                    ),
                    Err(e) => reply.error(errno(&core, "create", parent.0, Some(&name), &e)),
                }
            },
        );
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<std::time::SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<std::time::SystemTime>,
        _chgtime: Option<std::time::SystemTime>,
        _bkuptime: Option<std::time::SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let core = self.core.clone();
        let ttl = self.ttl;
        self.spawn(tracing::debug_span!("setattr", ino = ino.0), async move {
            let ch = SetAttr {
                size,
                mode,
                uid,
                gid,
                mtime: mtime.map(at),
                atime: atime.map(at),
            };
            match core.setattr(ino.0, ch).await {
                Ok(a) => reply.attr(&ttl, &file_attr(&a)),
                Err(e) => reply.error(errno(&core, "setattr", ino.0, None, &e)),
            }
        });
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let core = self.core.clone();
        let ttl = self.ttl;
        let name = name.to_owned();
        let mode = mode & !(umask & 0o7777);
        let caller = caller(req);
        self.spawn(
            tracing::debug_span!("mknod", ino = parent.0, name = ?name),
            async move {
                match core.mknod(parent.0, &name, mode, rdev, caller).await {
                    Ok(a) => reply.entry(&ttl, &file_attr(&a), Generation(0)),
                    Err(e) => reply.error(errno(&core, "mknod", parent.0, Some(&name), &e)),
                }
            },
        );
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let core = self.core.clone();
        let ttl = self.ttl;
        let name = name.to_owned();
        let perm = (mode & !umask & 0o7777) as u16;
        let caller = caller(req);
        self.spawn(
            tracing::debug_span!("mkdir", ino = parent.0, name = ?name),
            async move {
                match core.mkdir_by(parent.0, &name, perm, caller).await {
                    Ok(a) => reply.entry(&ttl, &file_attr(&a), Generation(0)),
                    Err(e) => reply.error(errno(&core, "mkdir", parent.0, Some(&name), &e)),
                }
            },
        );
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: fuser::RenameFlags,
        reply: ReplyEmpty,
    ) {
        let core = self.core.clone();
        let (name, newname) = (name.to_owned(), newname.to_owned());
        let span = tracing::debug_span!("rename", ino = parent.0, name = ?name, to = ?newname);
        self.spawn(span, async move {
            let flags = RenameFlags {
                noreplace: flags.bits() & libc::RENAME_NOREPLACE != 0,
                exchange: flags.bits() & libc::RENAME_EXCHANGE != 0,
            };
            match core
                .rename(parent.0, &name, newparent.0, &newname, flags)
                .await
            {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(errno(&core, "rename", parent.0, Some(&name), &e)),
            }
        });
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &std::path::Path,
        reply: ReplyEntry,
    ) {
        let core = self.core.clone();
        let ttl = self.ttl;
        let (name, target) = (link_name.to_owned(), target.to_owned());
        let caller = caller(req);
        self.spawn(
            tracing::debug_span!("symlink", ino = parent.0, name = ?name),
            async move {
                match core.symlink_by(parent.0, &name, &target, caller).await {
                    Ok(a) => reply.entry(&ttl, &file_attr(&a), Generation(0)),
                    Err(e) => reply.error(errno(&core, "symlink", parent.0, Some(&name), &e)),
                }
            },
        );
    }

    fn setxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let core = self.core.clone();
        let (name, value) = (name.to_owned(), value.to_vec());
        let (create, replace) = (
            flags & libc::XATTR_CREATE != 0,
            flags & libc::XATTR_REPLACE != 0,
        );
        self.spawn(tracing::debug_span!("setxattr", ino = ino.0), async move {
            match core.setxattr(ino.0, &name, &value, create, replace).await {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(errno(&core, "setxattr", ino.0, None, &e)),
            }
        });
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let core = self.core.clone();
        let name = name.to_owned();
        self.spawn(tracing::trace_span!("getxattr", ino = ino.0), async move {
            match core.getxattr(ino.0, &name).await {
                Ok(v) => reply_xattr(reply, size, &v),
                Err(e) => reply.error(errno(&core, "getxattr", ino.0, None, &e)),
            }
        });
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let core = self.core.clone();
        self.spawn(tracing::debug_span!("listxattr", ino = ino.0), async move {
            match core.listxattr(ino.0).await {
                Ok(names) => {
                    let mut buf = Vec::new();
                    for n in names {
                        buf.extend_from_slice(n.as_bytes());
                        buf.push(0);
                    }
                    reply_xattr(reply, size, &buf)
                }
                Err(e) => reply.error(errno(&core, "listxattr", ino.0, None, &e)),
            }
        });
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let core = self.core.clone();
        let name = name.to_owned();
        self.spawn(
            tracing::debug_span!("removexattr", ino = ino.0),
            async move {
                match core.removexattr(ino.0, &name).await {
                    Ok(()) => reply.ok(),
                    Err(e) => reply.error(errno(&core, "removexattr", ino.0, None, &e)),
                }
            },
        );
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let core = self.core.clone();
        self.spawn(tracing::debug_span!("readlink", ino = ino.0), async move {
            match core.readlink(ino.0).await {
                Ok(t) => reply.data(&t),
                Err(e) => reply.error(errno(&core, "readlink", ino.0, None, &e)),
            }
        });
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        _newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        match self.core.link(ino.0, newname) {
            Ok(a) => reply.entry(&self.ttl, &file_attr(&a), Generation(0)),
            Err(e) => reply.error(errno(&self.core, "link", ino.0, None, &e)),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let core = self.core.clone();
        let name = name.to_owned();
        self.spawn(
            tracing::debug_span!("unlink", ino = parent.0, name = ?name),
            async move {
                match core.unlink(parent.0, &name).await {
                    Ok(()) => reply.ok(),
                    Err(e) => reply.error(errno(&core, "unlink", parent.0, Some(&name), &e)),
                }
            },
        );
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let core = self.core.clone();
        let name = name.to_owned();
        self.spawn(
            tracing::debug_span!("rmdir", ino = parent.0, name = ?name),
            async move {
                match core.rmdir(parent.0, &name).await {
                    Ok(()) => reply.ok(),
                    Err(e) => reply.error(errno(&core, "rmdir", parent.0, Some(&name), &e)),
                }
            },
        );
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.core.opendir(ino.0) {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(errno(&self.core, "opendir", ino.0, None, &e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let core = self.core.clone();
        let span = tracing::debug_span!("readdir", ino = ino.0, fh = fh.0, offset);
        self.spawn(span, async move {
            let mut fill = |e: &DirEntry| {
                reply.add(
                    INodeNo(e.attr.ino),
                    e.next_offset,
                    file_type(e.kind),
                    &e.name,
                )
            };
            let res = core.readdir(ino.0, fh.0, offset, false, &mut fill).await;
            match res {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(errno(&core, "readdir", ino.0, None, &e)),
            }
        });
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let core = self.core.clone();
        let ttl = self.ttl;
        let span = tracing::debug_span!("readdirplus", ino = ino.0, fh = fh.0, offset);
        self.spawn(span, async move {
            let mut fill = |e: &DirEntry| {
                reply.add(
                    INodeNo(e.attr.ino),
                    e.next_offset,
                    &e.name,
                    &ttl,
                    &file_attr(&e.attr),
                    Generation(0),
                )
            };
            let res = core.readdir(ino.0, fh.0, offset, true, &mut fill).await;
            match res {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(errno(&core, "readdirplus", ino.0, None, &e)),
            }
        });
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.core.releasedir(fh.0);
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let s = self.core.statfs();
        reply.statfs(
            s.blocks, s.bfree, s.bfree, s.files, s.ffree, s.bsize, s.namelen, s.bsize,
        );
    }
}
