//! The inode table: kernel inode numbers <-> object keys.
//!
//! Problem: the kernel names files by inode number and remembers them until it sends `forget`;
//! S3 has only keys. Each (parent, name) gets one inode while the kernel holds a reference
//! (`lookup_count` > 0) or a handle is open; `forget` drops it so the table stays bounded by
//! what the kernel caches, not by the bucket size.
//!
//! Tricky cases: a name that was a file and is now a directory (or the reverse) gets a new
//! inode, so the kernel never sees an inode change type; the root is never forgotten.
//!
//! Lock: one std `Mutex` over the maps. It is held for map operations only, never across an
//! await, so a blocking mutex is cheaper than tokio's. Per-inode attributes sit behind their own
//! std `Mutex` (taken after the table lock when both are needed).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

pub const ROOT_INO: u64 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    /// An s3fs-style symlink: the body is the target, `mode` has `S_IFLNK`.
    Symlink,
    /// A FIFO, socket or device (its `S_IFMT` bits): a zero-byte object whose `mode` says
    /// which (s3fs). The kernel serves its opens; the mount stores only its attributes.
    Special(u32),
}

/// What S3 told us about an inode, and when.
#[derive(Debug, Clone)]
pub struct Stat {
    pub size: u64,
    pub mtime: SystemTime,
    pub etag: Option<String>,
    /// When this was last confirmed by the server; `None`: never (must be fetched).
    pub validated: Option<Instant>,
    /// POSIX attributes stored in the object's headers (known after a HEAD, or set here).
    pub meta: super::meta::PosixMeta,
}

/// Where an inode sits in the tree; changed by rename.
#[derive(Debug, Clone)]
pub struct Loc {
    pub parent: u64,
    pub name: String,
}

#[derive(Debug)]
pub struct Inode {
    pub ino: u64,
    pub kind: Kind,
    pub stat: Mutex<Stat>,
    loc: Mutex<Loc>,
    /// Unlinked while open: no name, `nlink` 0; its object goes when the last handle closes.
    pub unlinked: std::sync::atomic::AtomicBool,
}

impl Inode {
    pub fn parent(&self) -> u64 {
        self.loc.lock().unwrap().parent
    }
    pub fn name(&self) -> String {
        self.loc.lock().unwrap().name.clone()
    }
    pub fn stat(&self) -> Stat {
        self.stat.lock().unwrap().clone()
    }
    pub fn set_stat(&self, s: Stat) {
        *self.stat.lock().unwrap() = s;
    }
}

struct Entry {
    inode: Arc<Inode>,
    lookups: u64,
    open_handles: u64,
}

struct Maps {
    by_ino: HashMap<u64, Entry>,
    by_name: HashMap<(u64, String), u64>,
    next_ino: u64,
    /// Key prefix of the root (the mounted prefix).
    root_key: String,
}

pub struct InodeTable {
    maps: Mutex<Maps>,
}

impl InodeTable {
    pub fn new(root_key: &str, root_mtime: SystemTime) -> Self {
        let root = Arc::new(Inode {
            ino: ROOT_INO,
            loc: Mutex::new(Loc {
                parent: ROOT_INO,
                name: String::new(),
            }),
            kind: Kind::Dir,
            unlinked: Default::default(),
            stat: Mutex::new(Stat {
                size: 0,
                mtime: root_mtime,
                etag: None,
                validated: Some(Instant::now()),
                meta: Default::default(),
            }),
        });
        let mut by_ino = HashMap::new();
        by_ino.insert(
            ROOT_INO,
            Entry {
                inode: root,
                lookups: 1,
                open_handles: 0,
            },
        );
        Self {
            maps: Mutex::new(Maps {
                by_ino,
                by_name: HashMap::new(),
                next_ino: ROOT_INO + 1,
                root_key: root_key.to_string(),
            }),
        }
    }

    pub fn get(&self, ino: u64) -> Option<Arc<Inode>> {
        self.maps
            .lock()
            .unwrap()
            .by_ino
            .get(&ino)
            .map(|e| e.inode.clone())
    }

    /// The inode already known for `name` in `parent`, if any.
    pub fn child(&self, parent: u64, name: &str) -> Option<Arc<Inode>> {
        let m = self.maps.lock().unwrap();
        let ino = m.by_name.get(&(parent, name.to_string()))?;
        m.by_ino.get(ino).map(|e| e.inode.clone())
    }

    /// Records `name` in `parent` with `kind` and `stat`; reuses the inode when the kind is
    /// unchanged. `lookup` adds one kernel reference (lookup, readdirplus, create).
    pub fn upsert(
        &self,
        parent: &Inode,
        name: &str,
        kind: Kind,
        stat: Stat,
        lookup: bool,
    ) -> Arc<Inode> {
        let mut m = self.maps.lock().unwrap();
        let name_key = (parent.ino, name.to_string());
        if let Some(&ino) = m.by_name.get(&name_key)
            && let Some(e) = m.by_ino.get_mut(&ino)
        {
            if e.inode.kind == kind {
                let mut stat = stat;
                if kind == Kind::Dir {
                    // A directory's times moved by entries made here live only in memory
                    // (`Namespace::touch_dir`): a fresh lookup does not turn them back.
                    let old = e.inode.stat();
                    stat.meta.mtime = stat.meta.mtime.max(old.meta.mtime);
                    stat.meta.ctime = stat.meta.ctime.max(old.meta.ctime);
                }
                e.inode.set_stat(stat);
                if lookup {
                    e.lookups += 1;
                }
                return e.inode.clone();
            }
            // The name changed type: detach the old inode; it lives on until forgotten.
            m.by_name.remove(&name_key);
        }
        let ino = m.next_ino;
        m.next_ino += 1;
        let inode = Arc::new(Inode {
            ino,
            loc: Mutex::new(Loc {
                parent: parent.ino,
                name: name.to_string(),
            }),
            kind,
            unlinked: Default::default(),
            stat: Mutex::new(stat),
        });
        m.by_ino.insert(
            ino,
            Entry {
                inode: inode.clone(),
                lookups: u64::from(lookup),
                open_handles: 0,
            },
        );
        m.by_name.insert(name_key, ino);
        inode
    }

    /// Drops `name` from `parent` (it is gone on the server); the inode stays until forgotten.
    pub fn detach(&self, parent: u64, name: &str) {
        let mut m = self.maps.lock().unwrap();
        m.by_name.remove(&(parent, name.to_string()));
    }

    /// The kernel dropped `n` references.
    pub fn forget(&self, ino: u64, n: u64) {
        if ino == ROOT_INO {
            return;
        }
        let mut m = self.maps.lock().unwrap();
        let Some(e) = m.by_ino.get_mut(&ino) else {
            return;
        };
        e.lookups = e.lookups.saturating_sub(n);
        Self::maybe_remove(&mut m, ino);
    }

    /// One more kernel reference (an entry accepted by readdirplus).
    pub fn add_lookup(&self, ino: u64) {
        if let Some(e) = self.maps.lock().unwrap().by_ino.get_mut(&ino) {
            e.lookups += 1;
        }
    }

    pub fn open_handle(&self, ino: u64) {
        if let Some(e) = self.maps.lock().unwrap().by_ino.get_mut(&ino) {
            e.open_handles += 1;
        }
    }

    /// One handle of `ino` closed; the handles still open on it.
    pub fn close_handle(&self, ino: u64) -> u64 {
        let mut m = self.maps.lock().unwrap();
        let left = match m.by_ino.get_mut(&ino) {
            Some(e) => {
                e.open_handles = e.open_handles.saturating_sub(1);
                e.open_handles
            }
            None => 0,
        };
        Self::maybe_remove(&mut m, ino);
        left
    }

    /// Handles open on `ino`.
    pub fn open_handles(&self, ino: u64) -> u64 {
        self.maps
            .lock()
            .unwrap()
            .by_ino
            .get(&ino)
            .map_or(0, |e| e.open_handles)
    }

    fn maybe_remove(m: &mut Maps, ino: u64) {
        let Some(e) = m.by_ino.get(&ino) else { return };
        if e.lookups > 0 || e.open_handles > 0 || ino == ROOT_INO {
            return;
        }
        let inode = e.inode.clone();
        m.by_ino.remove(&ino);
        let name_key = (inode.parent(), inode.name());
        if m.by_name.get(&name_key) == Some(&ino) {
            m.by_name.remove(&name_key);
        }
    }

    /// The object key of a file, or the key prefix (ending with `/`, empty for an unprefixed
    /// root) of a directory, derived from the names up to the root, so a renamed directory's
    /// descendants follow it.
    pub fn key(&self, inode: &Inode) -> String {
        let m = self.maps.lock().unwrap();
        let mut parts = Vec::new();
        let mut cur = inode.loc.lock().unwrap().clone();
        let mut ino = inode.ino;
        while ino != ROOT_INO {
            parts.push(cur.name.clone());
            ino = cur.parent;
            match m.by_ino.get(&ino) {
                Some(e) if ino != ROOT_INO => cur = e.inode.loc.lock().unwrap().clone(),
                _ => break,
            }
        }
        let mut key = m.root_key.clone();
        for p in parts.iter().rev() {
            key.push_str(p);
            key.push('/');
        }
        if inode.kind != Kind::Dir {
            key.pop();
        }
        key
    }

    /// Moves `ino` to `name` in `parent`; whatever held that name is detached.
    pub fn rename(&self, ino: u64, parent: u64, name: &str) {
        let mut m = self.maps.lock().unwrap();
        let Some(e) = m.by_ino.get(&ino) else { return };
        let inode = e.inode.clone();
        let old = inode.loc.lock().unwrap().clone();
        if m.by_name.get(&(old.parent, old.name.clone())) == Some(&ino) {
            m.by_name.remove(&(old.parent, old.name));
        }
        *inode.loc.lock().unwrap() = Loc {
            parent,
            name: name.to_string(),
        };
        m.by_name.insert((parent, name.to_string()), ino);
    }

    /// Inodes currently in the table (root included).
    pub fn len(&self) -> usize {
        self.maps.lock().unwrap().by_ino.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stat() -> Stat {
        Stat {
            size: 1,
            mtime: SystemTime::UNIX_EPOCH,
            etag: None,
            validated: None,
            meta: Default::default(),
        }
    }

    #[test]
    fn forget_bounds_the_table() {
        let t = InodeTable::new("", SystemTime::UNIX_EPOCH);
        let root = t.get(ROOT_INO).unwrap();
        let a = t.upsert(&root, "a", Kind::File, stat(), true);
        let again = t.upsert(&root, "a", Kind::File, stat(), true);
        assert_eq!(a.ino, again.ino);
        assert_eq!(t.len(), 2);
        t.forget(a.ino, 1);
        assert_eq!(t.len(), 2, "one reference left");
        t.open_handle(a.ino);
        t.forget(a.ino, 1);
        assert_eq!(t.len(), 2, "an open handle keeps it");
        t.close_handle(a.ino);
        assert_eq!(t.len(), 1);
        assert!(t.child(ROOT_INO, "a").is_none());
        t.forget(ROOT_INO, 100);
        assert!(t.get(ROOT_INO).is_some());
    }

    #[test]
    fn rename_moves_descendant_keys() {
        let t = InodeTable::new("", SystemTime::UNIX_EPOCH);
        let root = t.get(ROOT_INO).unwrap();
        let a = t.upsert(&root, "a", Kind::Dir, stat(), true);
        let f = t.upsert(&a, "f", Kind::File, stat(), true);
        let b = t.upsert(&root, "b", Kind::Dir, stat(), true);
        assert_eq!(t.key(&f), "a/f");
        t.rename(a.ino, b.ino, "moved");
        assert_eq!(t.key(&a), "b/moved/");
        assert_eq!(t.key(&f), "b/moved/f");
        assert!(t.child(ROOT_INO, "a").is_none());
        assert_eq!(t.child(b.ino, "moved").unwrap().ino, a.ino);
        assert_eq!(t.key(&root), "");
    }

    #[test]
    fn kind_change_gets_a_new_inode() {
        let t = InodeTable::new("p/", SystemTime::UNIX_EPOCH);
        let root = t.get(ROOT_INO).unwrap();
        let f = t.upsert(&root, "x", Kind::File, stat(), true);
        assert_eq!(t.key(&f), "p/x");
        let d = t.upsert(&root, "x", Kind::Dir, stat(), true);
        assert_ne!(f.ino, d.ino);
        assert_eq!(t.key(&d), "p/x/");
        assert_eq!(t.child(ROOT_INO, "x").unwrap().ino, d.ino);
        t.forget(f.ino, 1);
        assert_eq!(
            t.child(ROOT_INO, "x").unwrap().ino,
            d.ino,
            "old inode's forget leaves the new name"
        );
    }
}
