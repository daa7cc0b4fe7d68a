//! Directory listings: S3 pages -> directory entries.
//!
//! Problem: a delimited LIST interleaves objects and common prefixes in key order, page by page.
//! A directory shadows a file of the same name (`x` and `x/...`), but `x` and `x/` are not
//! adjacent (`x-y` and `x.txt` sort between them) and may fall on different pages.
//!
//! Structure: [`Merger`] takes pages in order and emits entries. A file is held back until the
//! listing has passed the place where `x/` would sort, then released (or dropped if `x/` came).
//! Names that cannot be file names (empty component, `.`, `..`, NUL, over 255 bytes) are skipped
//! and reported through `on_invalid`, once per key by the caller's choice.
//!
//! [`DirHandle`] keeps what one open directory has listed so far, so the kernel can resume at any
//! offset; offset 0 restarts the listing (rewinddir).

use super::inode::Kind;
use crate::store::{ListPage, ObjectInfo};
use std::collections::BTreeMap;
use std::time::SystemTime;

/// The longest file name Linux accepts.
pub const NAME_MAX: usize = 255;

/// One listed child.
#[derive(Debug, Clone, PartialEq)]
pub struct Listed {
    pub name: String,
    pub kind: Kind,
    pub size: u64,
    pub mtime: Option<SystemTime>,
    pub etag: Option<String>,
    /// Stored POSIX attributes, when a HEAD fetched them (`--posix-metadata`).
    pub meta: Option<super::meta::PosixMeta>,
}

/// Whether `name` can be a directory entry.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains('\0')
        && !name.contains('/')
        && name.len() <= NAME_MAX
}

pub struct Merger {
    prefix: String,
    held: BTreeMap<String, Listed>,
}

impl Merger {
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_string(),
            held: BTreeMap::new(),
        }
    }

    /// Feeds one page; appends released entries to `out`.
    pub fn push_page(
        &mut self,
        page: ListPage,
        out: &mut Vec<Listed>,
        on_invalid: &mut dyn FnMut(&str),
    ) {
        enum Item {
            Obj(ObjectInfo),
            Pre,
        }
        let mut items: Vec<(String, Item)> = page
            .objects
            .into_iter()
            .map(|o| (o.key.clone(), Item::Obj(o)))
            .chain(page.prefixes.into_iter().map(|p| (p, Item::Pre)))
            .collect();
        items.sort_by(|a, b| a.0.cmp(&b.0));
        for (key, item) in items {
            self.release_before(&key, out);
            let Some(rest) = key.strip_prefix(&self.prefix) else {
                continue;
            };
            match item {
                Item::Pre => {
                    let name = rest.strip_suffix('/').unwrap_or(rest);
                    if !valid_name(name) {
                        on_invalid(&key);
                        continue;
                    }
                    self.held.remove(name);
                    out.push(Listed {
                        name: name.to_string(),
                        kind: Kind::Dir,
                        size: 0,
                        mtime: None,
                        etag: None,
                        meta: None,
                    });
                }
                Item::Obj(o) => {
                    if rest.is_empty() {
                        continue; // this directory's own marker
                    }
                    if !valid_name(rest) {
                        on_invalid(&key);
                        continue;
                    }
                    self.held.insert(
                        rest.to_string(),
                        Listed {
                            name: rest.to_string(),
                            kind: Kind::File,
                            size: o.size,
                            mtime: o.last_modified,
                            etag: o.etag,
                            meta: None,
                        },
                    );
                }
            }
        }
    }

    /// Releases held files whose would-be directory key `prefix + name + "/"` sorts before `key`.
    fn release_before(&mut self, key: &str, out: &mut Vec<Listed>) {
        while let Some((name, _)) = self.held.first_key_value() {
            let dir_key = format!("{}{}/", self.prefix, name);
            if dir_key.as_str() >= key {
                break;
            }
            let (_, e) = self.held.pop_first().unwrap();
            out.push(e);
        }
    }

    /// The listing ended: everything held is a file.
    pub fn finish(&mut self, out: &mut Vec<Listed>) {
        out.extend(std::mem::take(&mut self.held).into_values());
    }
}

/// State of one open directory.
pub struct DirHandle {
    pub ino: u64,
    /// Entries listed so far (without `.` and `..`).
    pub entries: Vec<Listed>,
    pub merger: Merger,
    /// Token of the next page; `None` with `started` set means the listing is complete.
    pub next: Option<String>,
    pub started: bool,
    /// The next page, already requested while the kernel consumes this one.
    pub pending: Option<tokio::task::JoinHandle<crate::store::StoreResult<ListPage>>>,
    /// When the pending page's LIST was sent.
    pub pending_at: std::time::Instant,
}

impl Drop for DirHandle {
    fn drop(&mut self) {
        if let Some(p) = self.pending.take() {
            p.abort();
        }
    }
}

impl DirHandle {
    pub fn new(ino: u64, prefix: &str) -> Self {
        Self {
            ino,
            entries: Vec::new(),
            merger: Merger::new(prefix),
            next: None,
            started: false,
            pending: None,
            pending_at: std::time::Instant::now(),
        }
    }

    pub fn restart(&mut self, prefix: &str) {
        *self = Self::new(self.ino, prefix);
    }

    pub fn complete(&self) -> bool {
        self.started && self.next.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(key: &str) -> ObjectInfo {
        ObjectInfo {
            key: key.into(),
            size: 3,
            etag: None,
            last_modified: None,
            content_type: None,
            metadata: Default::default(),
        }
    }

    fn names(v: &[Listed]) -> Vec<(String, Kind)> {
        let mut n: Vec<_> = v.iter().map(|l| (l.name.clone(), l.kind)).collect();
        n.sort_by(|a, b| a.0.cmp(&b.0));
        n
    }

    #[test]
    fn directory_shadows_file_across_pages() {
        let mut m = Merger::new("d/");
        let mut out = Vec::new();
        let mut bad = Vec::new();
        m.push_page(
            ListPage {
                objects: vec![obj("d/"), obj("d/x"), obj("d/x-y")],
                prefixes: vec![],
                next: Some("t".into()),
            },
            &mut out,
            &mut |k| bad.push(k.to_string()),
        );
        assert!(out.iter().all(|l| l.name != "x"), "x is held back");
        m.push_page(
            ListPage {
                objects: vec![obj("d/z")],
                prefixes: vec!["d/x/".into(), "d//".into()],
                next: None,
            },
            &mut out,
            &mut |k| bad.push(k.to_string()),
        );
        m.finish(&mut out);
        assert_eq!(
            names(&out),
            [
                ("x".to_string(), Kind::Dir),
                ("x-y".to_string(), Kind::File),
                ("z".to_string(), Kind::File)
            ]
        );
        assert_eq!(bad, ["d//"]);
    }

    #[test]
    fn invalid_names_are_hidden() {
        let long = "n".repeat(256);
        let mut m = Merger::new("");
        let mut out = Vec::new();
        let mut bad = 0;
        m.push_page(
            ListPage {
                objects: vec![obj("."), obj(".."), obj("ok"), obj(&long)],
                prefixes: vec!["../".into()],
                next: None,
            },
            &mut out,
            &mut |_| bad += 1,
        );
        m.finish(&mut out);
        assert_eq!(names(&out), [("ok".to_string(), Kind::File)]);
        assert_eq!(bad, 4);
    }
}
