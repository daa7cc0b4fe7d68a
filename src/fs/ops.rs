//! Operations that change the namespace: create, truncate, unlink, mkdir, rmdir. Each one asks
//! the namespace what is there, makes the change on the store (or through the writers), then
//! tells the namespace what now is.
//!
//! Directories: `mkdir` writes a `dir/` marker with `Content-Type: application/x-directory`;
//! `rmdir` refuses (ENOTEMPTY) while anything but the marker is under the prefix; removing the
//! last entry of a directory writes its marker, so the directory does not vanish with it.

use super::inode::{Inode, Kind, Stat};
use super::{Attr, Caller, DIR_CONTENT_TYPE, Error, OpenMode, Result, S3Fs, entry_name, meta};
use crate::store::{ObjectStore, PutOptions};
use bytes::Bytes;
use std::ffi::OsStr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

/// Longest key S3 stores, in bytes.
pub const MAX_KEY_LEN: usize = 1024;

impl<S: ObjectStore> S3Fs<S> {
    pub(super) fn check_writable(&self) -> Result<()> {
        if self.opts.read_only {
            Err(Error::ReadOnly)
        } else {
            Ok(())
        }
    }

    /// Creates (or truncates) `name` in `parent` and opens it for writing.
    /// `perm`: the permission bits asked for (mode & !umask); stored when not the default.
    pub async fn create(
        &self,
        parent: u64,
        name: &(impl AsRef<OsStr> + ?Sized),
        perm: u16,
    ) -> Result<(Attr, u64)> {
        self.create_as(parent, name, perm, None).await
    }

    /// [`S3Fs::create`] by process `opener` (see [`OpenMode::opener`]).
    pub async fn create_as(
        &self,
        parent: u64,
        name: &(impl AsRef<OsStr> + ?Sized),
        perm: u16,
        opener: Option<u32>,
    ) -> Result<(Attr, u64)> {
        let caller = Caller {
            pid: opener,
            ..Default::default()
        };
        self.create_by(parent, name, perm, caller).await
    }

    /// [`S3Fs::create`] by `caller`, who owns the new file.
    pub async fn create_by(
        &self,
        parent: u64,
        name: &(impl AsRef<OsStr> + ?Sized),
        perm: u16,
        caller: Caller,
    ) -> Result<(Attr, u64)> {
        self.check_writable()?;
        let name = entry_name(name.as_ref(), true)?;
        let p = self.ns.dir_inode(parent)?;
        self.check_key_len(&self.ns.child_key(&p, name))?;
        let (uid, gid, _) = self.new_owner(&p, &caller);
        let now = SystemTime::now();
        let stat = Stat {
            size: 0,
            mtime: now,
            etag: None,
            validated: Some(Instant::now()),
            meta: meta::PosixMeta {
                mode: Some(meta::file_mode(perm)),
                mtime: Some(now),
                uid,
                gid,
                ..Default::default()
            },
        };
        let inode = self.ns.added(&p, name, Kind::File, stat);
        let mode = OpenMode {
            write: true,
            truncate: true,
            opener: caller.pid,
        };
        let (fh, _) = self.open(inode.ino, mode).await?;
        Ok((self.ns.attr(&inode, &inode.stat()), fh))
    }

    /// `truncate`/`ftruncate`: through the open write state, or load, cut and upload.
    pub async fn set_size(&self, ino: u64, size: u64) -> Result<Attr> {
        self.check_writable()?;
        let inode = self.ns.inode(ino)?;
        if inode.kind == Kind::Dir {
            return Err(Error::IsDir);
        }
        self.writes
            .set_size(&inode, &self.ns.key(&inode), size)
            .await?;
        self.ns.uploaded(&inode);
        Ok(self.ns.attr(&inode, &inode.stat()))
    }

    /// Writes `dir/` if `dir` has nothing else under it, so it outlives its last entry.
    pub(super) async fn keep_dir(&self, dir: &Inode) -> Result<()> {
        if dir.ino == super::ROOT_INO {
            return Ok(());
        }
        let key = self.ns.key(dir);
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
        let p = self.ns.dir_inode(parent)?;
        let child = self.lookup_inode(parent, name).await?;
        if child.kind == Kind::Dir {
            return Err(Error::IsDir);
        }
        if self.ns.is_open(child.ino) {
            // Open descriptors keep the file: nothing is uploaded under the name any more,
            // and the object goes with the last close.
            self.writes.unlinked(child.ino).await;
            self.ns.unlinked_open(parent, name, &child);
            return self.keep_dir(&p).await;
        }
        self.store.delete(&self.ns.key(&child)).await?;
        self.ns.removed(parent, name);
        self.keep_dir(&p).await
    }

    /// Checks that `name` may be created in `parent` (writable, absent); the parent.
    pub(super) async fn new_entry(&self, parent: u64, name: &str) -> Result<Arc<Inode>> {
        self.check_writable()?;
        let p = self.ns.dir_inode(parent)?;
        self.check_key_len(&self.ns.child_key(&p, name))?;
        match self.lookup_inode(parent, name).await {
            Ok(_) => Err(Error::Exists),
            Err(Error::NotFound) => Ok(p),
            Err(e) => Err(e),
        }
    }

    /// ENAMETOOLONG for a key S3 cannot hold (1,024 bytes, a directory's trailing `/` included).
    pub(super) fn check_key_len(&self, key: &str) -> Result<()> {
        if key.len() + 1 > MAX_KEY_LEN {
            return Err(Error::NameTooLong);
        }
        Ok(())
    }

    /// The owner of a new entry in `parent` made by `caller` (`None`: the mount's), and whether
    /// `parent` is set-group-ID: then the entry takes `parent`'s group, and a new directory
    /// the bit too (POSIX, as local file systems do).
    pub(super) fn new_owner(
        &self,
        parent: &Inode,
        caller: &Caller,
    ) -> (Option<u32>, Option<u32>, bool) {
        let pa = self.ns.attr(parent, &parent.stat());
        let setgid = u32::from(pa.perm) & meta::S_ISGID != 0;
        let gid = if setgid { Some(pa.gid) } else { caller.gid };
        (caller.uid, gid, setgid)
    }

    /// `mknod(2)`: a regular file (an empty object), or a FIFO, socket or device stored as s3fs
    /// does: a zero-byte object with the type in `mode` and the device number in `rdev`.
    /// `mode`: type and permission bits (umask applied).
    pub async fn mknod(
        &self,
        parent: u64,
        name: &(impl AsRef<OsStr> + ?Sized),
        mode: u32,
        rdev: u32,
        caller: Caller,
    ) -> Result<Attr> {
        let name = entry_name(name.as_ref(), true)?;
        let t = match mode & meta::S_IFMT {
            0 => meta::S_IFREG,
            t => t,
        };
        let kind = match t {
            meta::S_IFREG => Kind::File,
            t if meta::is_special_type(t) => Kind::Special(t),
            _ => return Err(Error::InvalidArgument),
        };
        let p = self.new_entry(parent, name).await?;
        let key = self.ns.child_key(&p, name);
        let (uid, gid, _) = self.new_owner(&p, &caller);
        let now = SystemTime::now();
        let pm = meta::PosixMeta {
            mode: Some(t | (mode & 0o7777)),
            mtime: Some(now),
            uid,
            gid,
            rdev: (kind != Kind::File && (t == meta::S_IFCHR || t == meta::S_IFBLK))
                .then_some(rdev),
            ..Default::default()
        };
        let opts = PutOptions {
            content_type: None,
            metadata: pm.to_headers(&self.writes.default_meta(kind)),
        };
        let etag = self.store.put(&key, Bytes::new(), opts).await?;
        let stat = Stat {
            size: 0,
            mtime: now,
            etag,
            validated: Some(Instant::now()),
            meta: pm,
        };
        let inode = self.ns.added(&p, name, kind, stat.clone());
        Ok(self.ns.attr(&inode, &stat))
    }

    pub async fn mkdir(
        &self,
        parent: u64,
        name: &(impl AsRef<OsStr> + ?Sized),
        perm: u16,
    ) -> Result<Attr> {
        self.mkdir_by(parent, name, perm, Caller::default()).await
    }

    /// [`S3Fs::mkdir`] by `caller`, who owns the new directory.
    pub async fn mkdir_by(
        &self,
        parent: u64,
        name: &(impl AsRef<OsStr> + ?Sized),
        perm: u16,
        caller: Caller,
    ) -> Result<Attr> {
        let name = entry_name(name.as_ref(), true)?;
        let p = self.new_entry(parent, name).await?;
        let key = format!("{}/", self.ns.child_key(&p, name));
        let (uid, gid, setgid) = self.new_owner(&p, &caller);
        let mut stat = self.ns.dir_stat();
        let setgid_bit = if setgid { meta::S_ISGID } else { 0 };
        stat.meta.mode = Some(meta::dir_mode(perm) | setgid_bit);
        stat.meta.uid = uid;
        stat.meta.gid = gid;
        let opts = PutOptions {
            content_type: Some(DIR_CONTENT_TYPE.into()),
            metadata: stat.meta.to_headers(&self.writes.default_meta(Kind::Dir)),
        };
        self.store.put(&key, Bytes::new(), opts).await?;
        let d = self.ns.added(&p, name, Kind::Dir, stat.clone());
        Ok(self.ns.attr(&d, &stat))
    }

    pub async fn rmdir(&self, parent: u64, name: &(impl AsRef<OsStr> + ?Sized)) -> Result<()> {
        self.check_writable()?;
        let name = entry_name(name.as_ref(), false)?;
        let p = self.ns.dir_inode(parent)?;
        let d = self.lookup_inode(parent, name).await?;
        if d.kind != Kind::Dir {
            return Err(Error::NotDir);
        }
        let dkey = self.ns.key(&d);
        let page = self.store.list(&dkey, Some("/"), None, 2).await?;
        let others = page.prefixes.len() + page.objects.iter().filter(|o| o.key != dkey).count();
        if others > 0 {
            return Err(Error::NotEmpty);
        }
        self.store.delete(&dkey).await?;
        self.delete_old_style_dir(&dkey).await?;
        self.ns.removed(parent, name);
        self.keep_dir(&p).await
    }

    /// Deletes the directory object older tools write for `dir_key` (`dir`, no slash, zero
    /// bytes, `Content-Type: application/x-directory`), which would bring the directory back
    /// after an rmdir or a rename; a file of that name (shadowed by the directory) stays.
    pub(super) async fn delete_old_style_dir(&self, dir_key: &str) -> Result<()> {
        let key = dir_key.trim_end_matches('/');
        match self.store.head(key).await {
            Ok(i) if i.size == 0 && i.content_type.as_deref() == Some(DIR_CONTENT_TYPE) => {
                self.store.delete(key).await?;
            }
            Ok(_) | Err(crate::store::StoreError::NotFound) => {}
            Err(e) => return Err(e.into()),
        }
        Ok(())
    }

    /// The inode of `name` in `parent`, without taking a kernel reference.
    pub(super) async fn lookup_inode(&self, parent: u64, name: &str) -> Result<Arc<Inode>> {
        let writing = |ino| self.writes.is_open(ino);
        self.ns.lookup_inode(parent, name, &writing).await
    }
}
