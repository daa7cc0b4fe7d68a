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
    fn apply_meta(&self, inode: &Inode, ch: &SetAttr) -> Stat {
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
        } else if st.meta.mtime.is_none() {
            // The CopyObject that stores the change gives the object a new Last-Modified:
            // mtime is kept by storing it.
            st.meta.mtime = Some(st.mtime);
        }
        if ch.atime.is_some() {
            st.meta.atime = ch.atime;
        }
        // Every change of attributes moves ctime.
        st.meta.ctime = Some(SystemTime::now());
        inode.set_stat(st.clone());
        st
    }

    /// Attribute changes alone: on the open file's next upload, else a CopyObject onto itself.
    async fn set_attrs(&self, ino: u64, ch: &SetAttr) -> Result<Attr> {
        self.check_writable()?;
        let inode = self.ns.inode(ino)?;
        let st = self.apply_meta(&inode, ch);
        if inode.ino == super::ROOT_INO {
            return Ok(self.ns.attr(&inode, &st));
        }
        if self.writes.mark_dirty(ino).await {
            return Ok(self.ns.attr(&inode, &st));
        }
        let key = self.ns.key(&inode);
        let ours = self.writes.upload_headers(&inode);
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
                ] {
                    headers.remove(k);
                }
                headers.extend(ours);
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
                let opts = PutOptions {
                    content_type: Some(DIR_CONTENT_TYPE.into()),
                    metadata: ours,
                };
                self.store.put(&key, Bytes::new(), opts).await?;
            }
            Err(e) => return Err(e.into()),
        }
        Ok(self.ns.attr(&inode, &inode.stat()))
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
