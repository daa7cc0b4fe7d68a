//! Disk storage of the embedded server: holds any key a real store holds.
//!
//! Layout under the root: `<bucket>/data/<id>` holds each object's bytes, `<bucket>/meta/<h>.json`
//! its key and headers (`h` = SHA-256 of the key, so `a//b`, `x` beside `x/`, 1,024-byte keys and
//! any byte a key may hold are fine). An in-memory `BTreeMap` index, loaded at start, answers
//! listings in key order without touching the disk.
//!
//! Every PUT writes a new data file and then swaps the index entry, so a GET streaming the old
//! version keeps reading the old bytes (its open fd) and never sees a mix.
//!
//! Lock: one std `RwLock` per bucket index, held for map operations only (never across I/O
//! awaits), so a blocking lock is fine; the bucket map has its own `RwLock`, taken first.

use serde::{Deserialize, Serialize};
use sha2::Digest;
use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Meta {
    pub key: String,
    pub size: u64,
    /// Hex MD5 (or multipart-style) ETag, without quotes.
    pub etag: String,
    /// Nanoseconds since the epoch.
    pub modified_ns: u64,
    pub content_type: Option<String>,
    #[serde(default)]
    pub metadata: HashMap<String, String>,
    /// Data file name under `data/`.
    pub data: String,
}

impl Meta {
    pub fn modified(&self) -> SystemTime {
        UNIX_EPOCH + std::time::Duration::from_nanos(self.modified_ns)
    }
}

pub struct Bucket {
    pub name: String,
    dir: PathBuf,
    pub created: SystemTime,
    pub index: RwLock<BTreeMap<String, Meta>>,
}

impl Bucket {
    pub fn data_path(&self, m: &Meta) -> PathBuf {
        self.dir.join("data").join(&m.data)
    }

    fn meta_path(&self, key: &str) -> PathBuf {
        let h = hex::encode(sha2::Sha256::digest(key.as_bytes()));
        self.dir.join("meta").join(format!("{h}.json"))
    }

    /// A fresh path for a new data file (not yet in the index).
    pub fn new_data_name(&self) -> String {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        format!(
            "{now:x}-{:x}-{:x}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        )
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// Records `meta` (its data file already written) and drops the replaced version's data.
    pub fn commit(&self, meta: Meta) -> io::Result<()> {
        let path = self.meta_path(&meta.key);
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec(&meta)?)?;
        std::fs::rename(&tmp, &path)?;
        let old = self.index.write().unwrap().insert(meta.key.clone(), meta);
        if let Some(old) = old {
            let _ = std::fs::remove_file(self.data_path(&old));
        }
        Ok(())
    }

    pub fn remove(&self, key: &str) -> io::Result<bool> {
        let old = self.index.write().unwrap().remove(key);
        let Some(old) = old else { return Ok(false) };
        let _ = std::fs::remove_file(self.meta_path(key));
        let _ = std::fs::remove_file(self.data_path(&old));
        Ok(true)
    }

    pub fn get(&self, key: &str) -> Option<Meta> {
        self.index.read().unwrap().get(key).cloned()
    }
}

pub struct Storage {
    root: PathBuf,
    buckets: RwLock<BTreeMap<String, Arc<Bucket>>>,
}

/// Bucket names this server accepts: they become directory names, so no `/`, no leading dot.
pub fn valid_bucket_name(name: &str) -> bool {
    (3..=63).contains(&name.len())
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
}

impl Storage {
    /// Opens (or creates) the root and loads every bucket's index.
    pub fn open(root: &Path) -> io::Result<Self> {
        std::fs::create_dir_all(root)?;
        let mut buckets = BTreeMap::new();
        for entry in std::fs::read_dir(root)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().to_string();
            if !entry.file_type()?.is_dir() || !valid_bucket_name(&name) {
                continue;
            }
            let b = Self::load_bucket(&entry.path(), &name)?;
            buckets.insert(name, Arc::new(b));
        }
        Ok(Self {
            root: root.to_path_buf(),
            buckets: RwLock::new(buckets),
        })
    }

    fn load_bucket(dir: &Path, name: &str) -> io::Result<Bucket> {
        std::fs::create_dir_all(dir.join("data"))?;
        std::fs::create_dir_all(dir.join("meta"))?;
        let mut index = BTreeMap::new();
        for e in std::fs::read_dir(dir.join("meta"))? {
            let p = e?.path();
            if p.extension().is_some_and(|x| x == "json")
                && let Ok(bytes) = std::fs::read(&p)
                && let Ok(m) = serde_json::from_slice::<Meta>(&bytes)
            {
                index.insert(m.key.clone(), m);
            }
        }
        let created = std::fs::metadata(dir)?
            .modified()
            .unwrap_or_else(|_| SystemTime::now());
        Ok(Bucket {
            name: name.to_string(),
            dir: dir.to_path_buf(),
            created,
            index: RwLock::new(index),
        })
    }

    pub fn bucket(&self, name: &str) -> Option<Arc<Bucket>> {
        self.buckets.read().unwrap().get(name).cloned()
    }

    pub fn buckets(&self) -> Vec<Arc<Bucket>> {
        self.buckets.read().unwrap().values().cloned().collect()
    }

    /// Creates a bucket; `Ok(false)` if it already existed.
    pub fn create_bucket(&self, name: &str) -> io::Result<bool> {
        let mut map = self.buckets.write().unwrap();
        if map.contains_key(name) {
            return Ok(false);
        }
        let b = Self::load_bucket(&self.root.join(name), name)?;
        map.insert(name.to_string(), Arc::new(b));
        Ok(true)
    }

    /// Deletes an empty bucket; `Ok(false)` if it is not empty.
    pub fn delete_bucket(&self, name: &str) -> io::Result<bool> {
        let mut map = self.buckets.write().unwrap();
        let Some(b) = map.get(name) else {
            return Ok(true);
        };
        if !b.index.read().unwrap().is_empty() {
            return Ok(false);
        }
        std::fs::remove_dir_all(&b.dir)?;
        map.remove(name);
        Ok(true)
    }
}
