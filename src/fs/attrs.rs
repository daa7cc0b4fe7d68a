//! Stored POSIX attributes (chmod, chown, utimens) and symlinks, in the on-S3 format of
//! `fs/meta.rs`.
//!
//! A change to a file being written rides on its next upload. A change to a stored object is a
//! CopyObject onto itself with `x-amz-metadata-directive: REPLACE`, keeping the object's other
//! headers (content type, foreign user metadata). A directory's attributes live on its `dir/`
//! marker, written if the directory was implicit. The root's cannot be stored (no object): they
//! are accepted and not kept.

use super::inode::{Inode, Kind, Stat};
use super::meta::{self, PosixMeta};
use super::{Attr, DIR_CONTENT_TYPE, Error, Result, S3Fs, entry_name};
use crate::store::{ObjectStore, PutOptions, StoreError};
use bytes::Bytes;
use std::ffi::OsStr;
use std::time::{Instant, SystemTime};

/// The one namespace of extended attributes stored (`user.`); the rest are the kernel's.
const XATTR_NS: &str = "user.";
/// S3's limit on user metadata, names and values together, in bytes.
pub const MAX_USER_METADATA: usize = 2048;

/// A change of stored attributes: ctime moves to now, and mtime is pinned (stored), since the
/// CopyObject that stores the change gives the object a new Last-Modified.
fn attributes_changed(st: &mut Stat) {
    st.meta.mtime.get_or_insert(st.mtime);
    st.meta.ctime = Some(SystemTime::now());
}

/// E2BIG if `headers` (user metadata, names without the prefix) pass S3's limit.
fn check_metadata_size(headers: &std::collections::HashMap<String, String>) -> Result<()> {
    let size: usize = headers.iter().map(|(k, v)| k.len() + v.len()).sum();
    if size > MAX_USER_METADATA {
        tracing::warn!(
            size,
            "extended attributes refused: S3 keeps at most 2 KiB of user metadata per object"
        );
        return Err(Error::MetadataFull);
    }
    Ok(())
}

/// The changes one `setattr` asks for, applied together: as one upload (size with or without
/// attributes), one CopyObject (attributes of a stored object), or on the open file's next
/// upload.
#[derive(Debug, Clone, Default)]
pub struct SetAttr {
    pub size: Option<u64>,
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub mtime: Option<SystemTime>,
    pub atime: Option<SystemTime>,
}

impl SetAttr {
    /// Whether stored attributes (not the size) change.
    fn changes_meta(&self) -> bool {
        self.mode.is_some()
            || self.uid.is_some()
            || self.gid.is_some()
            || self.mtime.is_some()
            || self.atime.is_some()
    }
}

impl<S: ObjectStore> S3Fs<S> {
    /// `setattr`: every change it carries, applied at once.
    pub async fn setattr(&self, ino: u64, ch: SetAttr) -> Result<Attr> {
        match (ch.size, ch.changes_meta()) {
            (None, false) => self.getattr(ino).await,
            (Some(size), false) => self.set_size(ino, size).await,
            (None, true) => self.set_attrs(ino, &ch).await,
            (Some(size), true) => {
                // The new attributes go into the inode first, so the one upload that the size
                // change makes carries them (or the open file's next upload does).
                self.check_writable()?;
                let inode = self.ns.inode(ino)?;
                if inode.kind == Kind::Dir {
                    return Err(Error::IsDir);
                }
                self.apply_meta(&inode, &ch);
                self.set_size(ino, size).await
            }
        }
    }

    /// Records the attribute changes of `ch` in the inode.
    fn apply_meta(&self, inode: &Inode, ch: &SetAttr) {
        let mut st = inode.stat();
        let kind_bits = match inode.kind {
            Kind::Dir => meta::dir_mode(0),
            Kind::Symlink => meta::symlink_mode() & !0o7777,
            Kind::File => meta::file_mode(0),
            Kind::Special(t) => t,
        };
        if let Some(m) = ch.mode {
            st.meta.mode = Some(kind_bits | (m & 0o7777));
        }
        if ch.uid.is_some() {
            st.meta.uid = ch.uid;
        }
        if ch.gid.is_some() {
            st.meta.gid = ch.gid;
        }
        if ch.mtime.is_some() {
            st.meta.mtime = ch.mtime;
        }
        if ch.atime.is_some() {
            st.meta.atime = ch.atime;
        }
        attributes_changed(&mut st);
        inode.set_stat(st);
    }

    /// Attribute changes alone: on the open file's next upload, else a CopyObject onto itself.
    async fn set_attrs(&self, ino: u64, ch: &SetAttr) -> Result<Attr> {
        self.check_writable()?;
        let inode = self.ns.inode(ino)?;
        self.apply_meta(&inode, ch);
        self.store_meta(&inode).await?;
        Ok(self.ns.attr(&inode, &inode.stat()))
    }

    /// Stores `inode`'s attributes as they are in memory: on the open file's next upload, else
    /// a CopyObject onto itself (a directory's on its marker, written if implicit).
    async fn store_meta(&self, inode: &Inode) -> Result<()> {
        if inode.ino == super::ROOT_INO || self.writes.mark_dirty(inode.ino).await {
            return Ok(());
        }
        let key = self.ns.key(inode);
        let ours = self.writes.upload_headers(inode);
        match self.store.head(&key).await {
            Ok(info) => {
                let mut headers = info.metadata.clone();
                for k in [
                    meta::MTIME,
                    meta::MODE,
                    meta::UID,
                    meta::GID,
                    meta::ATIME,
                    meta::CTIME,
                    meta::XATTR,
                ] {
                    headers.remove(k);
                }
                headers.extend(ours);
                check_metadata_size(&headers)?;
                let opts = PutOptions {
                    content_type: info.content_type.clone(),
                    metadata: headers,
                };
                let etag = self.store.copy(&key, &key, Some(opts)).await?;
                let mut st = inode.stat();
                st.etag = etag.or(st.etag);
                st.validated = Some(Instant::now());
                inode.set_stat(st);
            }
            Err(StoreError::NotFound) if inode.kind == Kind::Dir => {
                check_metadata_size(&ours)?;
                let opts = PutOptions {
                    content_type: Some(DIR_CONTENT_TYPE.into()),
                    metadata: ours,
                };
                self.store.put(&key, Bytes::new(), opts).await?;
            }
            Err(e) => return Err(e.into()),
        }
        Ok(())
    }

    /// `getxattr`: the value of `name` (ENODATA if unset). `security.*` and `system.*` names
    /// are answered at once, without a request: the kernel asks for `security.capability` at
    /// every write.
    pub async fn getxattr(&self, ino: u64, name: &OsStr) -> Result<Vec<u8>> {
        let name = name.to_str().ok_or(Error::NoAttribute)?;
        if !name.starts_with(XATTR_NS) {
            return Err(Error::NoAttribute);
        }
        let st = self.xattr_stat(ino).await?;
        st.meta
            .xattrs
            .and_then(|mut x| x.remove(name))
            .ok_or(Error::NoAttribute)
    }

    /// `listxattr`: the names set.
    pub async fn listxattr(&self, ino: u64) -> Result<Vec<String>> {
        let st = self.xattr_stat(ino).await?;
        Ok(st
            .meta
            .xattrs
            .map(|x| x.into_keys().collect())
            .unwrap_or_default())
    }

    /// `setxattr` of a `user.*` name (others: ENOTSUP), stored in s3fs's `xattr` header with
    /// the rest of the attributes; E2BIG past S3's 2 KiB of user metadata. `create`/`replace`:
    /// XATTR_CREATE (EEXIST if set) and XATTR_REPLACE (ENODATA if not).
    pub async fn setxattr(
        &self,
        ino: u64,
        name: &OsStr,
        value: &[u8],
        create: bool,
        replace: bool,
    ) -> Result<()> {
        self.check_writable()?;
        let name = name.to_str().ok_or(Error::NotSupported)?;
        if !name.starts_with(XATTR_NS) || name.len() == XATTR_NS.len() {
            return Err(Error::NotSupported);
        }
        let inode = self.ns.inode(ino)?;
        let mut st = self.xattr_stat(ino).await?;
        let x = st.meta.xattrs.get_or_insert_with(Default::default);
        match (x.contains_key(name), create, replace) {
            (true, true, _) => return Err(Error::Exists),
            (false, _, true) => return Err(Error::NoAttribute),
            _ => {}
        }
        let old = inode.stat();
        x.insert(name.to_string(), value.to_vec());
        self.change_xattrs(&inode, old, st).await
    }

    /// `removexattr`.
    pub async fn removexattr(&self, ino: u64, name: &OsStr) -> Result<()> {
        self.check_writable()?;
        let name = name.to_str().ok_or(Error::NoAttribute)?;
        let inode = self.ns.inode(ino)?;
        let mut st = self.xattr_stat(ino).await?;
        if st
            .meta
            .xattrs
            .as_mut()
            .and_then(|x| x.remove(name))
            .is_none()
        {
            return Err(Error::NoAttribute);
        }
        let old = inode.stat();
        self.change_xattrs(&inode, old, st).await
    }

    /// Stores `st`'s extended attributes; on failure the inode keeps `old`'s.
    async fn change_xattrs(&self, inode: &Inode, old: Stat, mut st: Stat) -> Result<()> {
        let headers = st.meta.to_headers(&self.writes.default_meta(inode.kind));
        check_metadata_size(&headers)?;
        attributes_changed(&mut st);
        inode.set_stat(st);
        if let Err(e) = self.store_meta(inode).await {
            inode.set_stat(old);
            return Err(e);
        }
        Ok(())
    }

    /// `ino`'s attributes with its stored extended attributes known (a HEAD if they may be
    /// stale: a listing does not carry them).
    async fn xattr_stat(&self, ino: u64) -> Result<Stat> {
        let inode = self.ns.inode(ino)?;
        let st = inode.stat();
        if inode.ino == super::ROOT_INO || self.writes.is_open(ino) || self.ns.fresh(&st) {
            return Ok(st);
        }
        self.ns.revalidate(&inode).await
    }

    /// Creates a symlink: the body is the target, `mode` has `S_IFLNK` (s3fs's format).
    pub async fn symlink(
        &self,
        parent: u64,
        name: &(impl AsRef<OsStr> + ?Sized),
        target: &std::path::Path,
    ) -> Result<Attr> {
        self.symlink_by(parent, name, target, super::Caller::default())
            .await
    }

    /// [`S3Fs::symlink`] by `caller`, who owns the link.
    pub async fn symlink_by(
        &self,
        parent: u64,
        name: &(impl AsRef<OsStr> + ?Sized),
        target: &std::path::Path,
        caller: super::Caller,
    ) -> Result<Attr> {
        let name = entry_name(name.as_ref(), true)?;
        let target = target.to_str().ok_or(Error::InvalidArgument)?;
        let p = self.new_entry(parent, name).await?;
        let key = self.ns.child_key(&p, name);
        let (uid, gid, _) = self.new_owner(&p, &caller);
        let owner = PosixMeta {
            mode: Some(meta::symlink_mode()),
            uid,
            gid,
            ..Default::default()
        };
        let headers = owner.to_headers(&self.writes.default_meta(Kind::Symlink));
        let opts = PutOptions {
            content_type: None,
            metadata: headers.clone(),
        };
        let etag = self
            .store
            .put(&key, Bytes::copy_from_slice(target.as_bytes()), opts)
            .await?;
        let stat = Stat {
            size: target.len() as u64,
            mtime: SystemTime::now(),
            etag,
            validated: Some(Instant::now()),
            meta: PosixMeta::parse(&headers),
        };
        let l = self.ns.added(&p, name, Kind::Symlink, stat.clone());
        Ok(self.ns.attr(&l, &stat))
    }

    /// `link(2)`: S3 cannot store a second name for one object.
    pub fn link(&self, ino: u64, newname: &OsStr) -> Result<Attr> {
        tracing::warn!(ino, name = ?newname,
            "hard links cannot be stored on S3: refused with EPERM (use a copy or a symlink)");
        Err(Error::NotPermitted)
    }

    pub async fn readlink(&self, ino: u64) -> Result<Bytes> {
        let inode = self.ns.inode(ino)?;
        if inode.kind != Kind::Symlink {
            return Err(Error::InvalidArgument);
        }
        let st = inode.stat();
        if let Some(t) = st.meta.symlink_target {
            return Ok(Bytes::from(t));
        }
        let key = self.ns.key(&inode);
        let body = self.store.get_range(&key, 0, st.size.max(1), None).await?;
        Ok(body.to_bytes())
    }
}
