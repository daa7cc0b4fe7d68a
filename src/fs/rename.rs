//! rename(2) on S3: CopyObject then DeleteObject, per object.
//!
//! A file is one copy and one delete (an open writer uploads first and then follows the new
//! name). A directory is a copy and a delete of every object under its prefix: not atomic (a
//! crash midway leaves both names, each with part of the objects; nothing is lost) and bounded:
//! past [`DIR_RENAME_MAX_OBJECTS`] objects or [`DIR_RENAME_MAX_BYTES`] bytes it answers EXDEV,
//! which makes `mv` fall back to copying file by file itself.
//!
//! Flags: `RENAME_NOREPLACE` gives EEXIST when the target exists; `RENAME_EXCHANGE` is not
//! supported (EINVAL): two objects cannot be swapped atomically on S3.

use super::inode::Kind;
use super::{Error, Result, S3Fs, entry_name, meta};
use crate::store::ObjectStore;
use futures::StreamExt;
use std::ffi::OsStr;

/// Most objects a directory rename copies before answering EXDEV.
pub const DIR_RENAME_MAX_OBJECTS: usize = 10_000;
/// Most bytes a directory rename copies before answering EXDEV.
pub const DIR_RENAME_MAX_BYTES: u64 = 50 << 30;
/// What `renameat2` flags ask for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RenameFlags {
    /// `RENAME_NOREPLACE`: fail with EEXIST if the target exists.
    pub noreplace: bool,
    /// `RENAME_EXCHANGE`: swap the two names (not possible on S3: EINVAL).
    pub exchange: bool,
}

/// Copies (then deletes) in flight during a directory rename.
const RENAME_PARALLEL: usize = 16;

impl<S: ObjectStore> S3Fs<S> {
    pub async fn rename(
        &self,
        parent: u64,
        name: &(impl AsRef<OsStr> + ?Sized),
        newparent: u64,
        newname: &(impl AsRef<OsStr> + ?Sized),
        flags: RenameFlags,
    ) -> Result<()> {
        self.check_writable()?;
        if flags.exchange {
            return Err(Error::InvalidArgument);
        }
        let name = entry_name(name.as_ref(), false)?;
        let newname = entry_name(newname.as_ref(), true)?;
        let p = self.ns.dir_inode(parent)?;
        let np = self.ns.dir_inode(newparent)?;
        let src = self.lookup_inode(parent, name).await?;
        let dst = match self.lookup_inode(newparent, newname).await {
            Ok(d) => Some(d),
            Err(Error::NotFound) => None,
            Err(e) => return Err(e),
        };
        if let Some(d) = &dst {
            if flags.noreplace {
                return Err(Error::Exists);
            }
            if d.ino == src.ino {
                return Ok(());
            }
        }
        let src_key = self.ns.key(&src);
        let new_parent_key = self.ns.key(&np);
        match src.kind {
            Kind::File | Kind::Symlink | Kind::Special(_) => {
                if dst.as_ref().is_some_and(|d| d.kind == Kind::Dir) {
                    return Err(Error::IsDir);
                }
                let new_key = format!("{new_parent_key}{newname}");
                self.check_key_len(&new_key)?;
                self.writes.move_key(&src, &new_key).await?;
                let st = src.stat();
                let mtime = st.meta.mtime.unwrap_or(st.mtime);
                let etag =
                    copy_keeping_mtime(&*self.store, &src_key, &new_key, mtime, true).await?;
                if self.ns.is_open(src.ino) {
                    // Open descriptors follow the file to its new name.
                    let etag = match etag {
                        Some(e) => Some(e),
                        None => self.store.head(&new_key).await.ok().and_then(|i| i.etag),
                    };
                    self.reads
                        .relocate(src.ino, &new_key, etag.as_deref())
                        .await;
                    let mut st = src.stat();
                    st.etag = etag;
                    src.set_stat(st);
                }
                self.store.delete(&src_key).await?;
                let mut st = src.stat();
                st.meta.mtime = Some(mtime);
                src.set_stat(st);
            }
            Kind::Dir => {
                let new_prefix = format!("{new_parent_key}{newname}/");
                if new_prefix.starts_with(&src_key) {
                    return Err(Error::InvalidArgument); // into its own subtree
                }
                if let Some(d) = &dst {
                    if d.kind != Kind::Dir {
                        return Err(Error::NotDir);
                    }
                    let dkey = self.ns.key(d);
                    let page = self.store.list(&dkey, None, None, 2).await?;
                    if page.objects.iter().any(|o| o.key != dkey) {
                        return Err(Error::NotEmpty);
                    }
                }
                self.rename_prefix(&src_key, &new_prefix).await?;
                self.delete_old_style_dir(&src_key).await?;
            }
        }
        self.ns
            .renamed(src.ino, (parent, name), (newparent, newname));
        self.keep_dir(&p).await
    }

    /// Copies every object under `from` to `to` (same suffix), then deletes the originals.
    async fn rename_prefix(&self, from: &str, to: &str) -> Result<()> {
        let mut keys = Vec::new();
        let mut bytes = 0u64;
        let mut start: Option<String> = None;
        loop {
            let page = self.store.list(from, None, start.as_deref(), 1000).await?;
            for o in page.objects {
                bytes += o.size;
                let lm = o.last_modified.unwrap_or(std::time::UNIX_EPOCH);
                keys.push((o.key, lm));
            }
            if keys.len() > DIR_RENAME_MAX_OBJECTS || bytes > DIR_RENAME_MAX_BYTES {
                tracing::warn!(
                    from,
                    objects = keys.len(),
                    bytes,
                    "directory too large to rename on S3; answering EXDEV so the caller copies"
                );
                return Err(Error::CrossDevice);
            }
            match page.next {
                Some(n) => start = Some(n),
                None => break,
            }
        }
        let (store, to_owned, cut) = (self.store.clone(), to.to_string(), from.len());
        let copies: Vec<_> =
            futures::stream::iter(keys.clone().into_iter().map(move |(src, lm)| {
                let store = store.clone();
                let dst = format!("{to_owned}{}", &src[cut..]);
                // The same names below a new prefix: their types do not change.
                async move { copy_keeping_mtime(&*store, &src, &dst, lm, false).await }
            }))
            .buffer_unordered(RENAME_PARALLEL)
            .collect()
            .await;
        for c in copies {
            c?;
        }
        if !keys.iter().any(|(k, _)| k == from) {
            // An implicit directory: make sure the new one exists even if it is empty.
            let opts = crate::store::PutOptions {
                content_type: Some(super::DIR_CONTENT_TYPE.into()),
                ..Default::default()
            };
            self.store.put(to, bytes::Bytes::new(), opts).await?;
        }
        let store = self.store.clone();
        let deletes: Vec<_> = futures::stream::iter(keys.into_iter().map(move |(k, _)| {
            let store = store.clone();
            async move { store.delete(&k).await }
        }))
        .buffer_unordered(RENAME_PARALLEL)
        .collect()
        .await;
        for d in deletes {
            d?;
        }
        Ok(())
    }
}

/// Copies `src` to `dst` so that the copy keeps `mtime` (a copy gets a new Last-Modified) and
/// has the Content-Type of `dst`'s extension: as it is when the object already stores its
/// mtime (`x-amz-meta-mtime`) and type; else with the headers replaced by the same ones plus
/// `mtime` and the type. `retype`: `dst`'s extension may differ from `src`'s.
async fn copy_keeping_mtime<S: ObjectStore>(
    store: &S,
    src: &str,
    dst: &str,
    mtime: std::time::SystemTime,
    retype: bool,
) -> crate::store::StoreResult<Option<String>> {
    let info = store.head(src).await?;
    let content_type = match retype.then(|| meta::content_type(dst)).flatten() {
        Some(t) => Some(t),
        None => info.content_type.clone(),
    };
    if info.metadata.contains_key(meta::MTIME) && content_type == info.content_type {
        return store.copy(src, dst, None).await;
    }
    let mut metadata = info.metadata;
    metadata
        .entry(meta::MTIME.to_string())
        .or_insert_with(|| meta::format_mtime(mtime));
    let opts = crate::store::PutOptions {
        content_type,
        metadata,
    };
    store.copy(src, dst, Some(opts)).await
}
