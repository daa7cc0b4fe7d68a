//! The journal of pending uploads: what survives an unmount, SIGTERM or `kill -9`.
//!
//! Problem: a file whose bytes have not reached the server exists only in this process (in
//! memory, or in a spill file nobody else can name). If the daemon dies, the next mount must
//! find those bytes, know which key they belong to, and either finish the upload or keep them
//! where the user is told to look.
//!
//! Structure: each mount owns a session directory `<cache-dir>/sessions/<origin>-<pid>-<ns>/`,
//! created on first use and held by an exclusive `flock` on its `lock` file for the life of the
//! process (the kernel drops the lock when the process dies, however it dies). A file's spill
//! file lives there as `<stem>.data`; while its bytes are not on the server, an entry
//! `<stem>.entry` beside it (JSON: key, size, stored attributes, checksum, the ETag the upload
//! may replace) says so. The entry is written before the write that needs it is acknowledged
//! and removed once the upload succeeds; entries are replaced by rename, so a crash leaves the
//! old one or the new one, never half of one.
//!
//! States: `writing` (written since the last upload; nobody asked for an upload yet) and
//! `flushing` (a `close` or `fsync` asked for these bytes to be uploaded and it has not
//! succeeded). At the next mount of the same bucket (same endpoint) with the same cache
//! directory, a dead session's `flushing` entries are uploaded when the object is still the one
//! they would replace, and everything else is moved to `recovered/` ([`super::staging`]), with
//! its entry kept beside it in `recovered/.entries/` so `s3mount recover` can upload it later.
//! Sessions of other buckets are left for their own mounts.
//!
//! Bytes still in memory (the first `--write-buffer` bytes of a file no `close` has flushed)
//! are not on disk: like a local file system's dirty pages on a crash, `kill -9` loses them.
//! A failed upload always moves its bytes to disk and journals them before the error returns.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Format of entries; readers skip (and keep) entries of other versions.
pub const VERSION: u32 = 1;
/// Where sessions live under the cache directory.
const SESSIONS: &str = "sessions";
/// Where the entries of recovered copies live, under `recovered/`.
pub const RECOVERED_ENTRIES: &str = ".entries";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryState {
    /// Written since the last upload; no close or fsync asked for an upload yet.
    Writing,
    /// A close or fsync asked for an upload of these bytes and it has not succeeded.
    Flushing,
}

/// One pending upload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub version: u32,
    /// The server and bucket (`endpoint bucket`), never credentials.
    pub origin: String,
    pub key: String,
    pub state: EntryState,
    /// Bytes of the file.
    pub size: u64,
    /// Hex MD5 of the bytes, when known (always for a failed upload).
    pub md5: Option<String>,
    /// Stored attributes (the `x-amz-meta-*` headers an upload sends).
    pub metadata: BTreeMap<String, String>,
    /// ETag of the object these bytes replace (`None`: there was no object). An upload at
    /// recovery happens only if the object still has it.
    pub replaces: Option<String>,
    /// False when parts of the original object were never fetched (zeros stand there).
    pub complete: bool,
    /// Unix seconds of the last change of this entry.
    pub updated: u64,
    /// Why the bytes were kept (for copies in `recovered/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Entry {
    /// An entry for `key` with nothing else known yet.
    pub fn new(origin: &str, key: &str, state: EntryState) -> Self {
        Self {
            version: VERSION,
            origin: origin.to_string(),
            key: key.to_string(),
            state,
            size: 0,
            md5: None,
            metadata: BTreeMap::new(),
            replaces: None,
            complete: true,
            updated: Self::now(),
            reason: None,
        }
    }

    pub fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default()
    }
}

/// Writes `entry` to `path` whole: a temporary file renamed over it.
pub fn write_entry(path: &Path, entry: &Entry) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".entry-")
        .tempfile_in(dir)?;
    serde_json::to_writer(&mut tmp, entry).map_err(io::Error::other)?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

pub fn read_entry(path: &Path) -> io::Result<Entry> {
    let text = std::fs::read(path)?;
    serde_json::from_slice(&text).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// The entry path of a spill file `<stem>.data`.
pub fn entry_path(data: &Path) -> PathBuf {
    data.with_extension("entry")
}

/// This mount's place in the cache directory.
pub struct Journal {
    root: PathBuf,
    origin: String,
    session: OnceLock<Result<Session, String>>,
}

struct Session {
    dir: PathBuf,
    /// Holds the `flock` that marks the session alive.
    _lock: File,
}

/// Takes `lock`'s exclusive flock without waiting: false if another process holds it.
fn try_lock(lock: &File) -> io::Result<bool> {
    // SAFETY: flock on a descriptor we own; no memory is passed.
    let rc = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EWOULDBLOCK) => Ok(false),
        _ => Err(e),
    }
}

/// A short, file-name-safe tag of an origin (sessions of one bucket sort together).
fn origin_tag(origin: &str) -> String {
    use md5::Digest;
    hex::encode(&md5::Md5::digest(origin.as_bytes())[..4])
}

pub fn private_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

impl Journal {
    /// `root`: the cache directory; `origin`: the server and bucket this mount writes to.
    pub fn new(root: &Path, origin: &str) -> Self {
        Self {
            root: root.to_path_buf(),
            origin: origin.to_string(),
            session: OnceLock::new(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// This session's directory, created and locked on first use. Blocking: call it from the
    /// blocking pool.
    pub fn session_dir(&self) -> io::Result<PathBuf> {
        let s = self
            .session
            .get_or_init(|| self.open_session().map_err(|e| e.to_string()));
        match s {
            Ok(s) => Ok(s.dir.clone()),
            Err(e) => Err(io::Error::other(format!(
                "cannot create a session directory under {}: {e}",
                self.root.join(SESSIONS).display()
            ))),
        }
    }

    fn open_session(&self) -> io::Result<Session> {
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let name = format!(
            "{}-{}-{}",
            origin_tag(&self.origin),
            std::process::id(),
            stamp.as_nanos()
        );
        let dir = self.root.join(SESSIONS).join(name);
        private_dir(&dir)?;
        let lock = File::create(dir.join("lock"))?;
        if !try_lock(&lock)? {
            return Err(io::Error::other(
                "the new session is locked by another process",
            ));
        }
        std::fs::write(dir.join("origin"), &self.origin)?;
        Ok(Session { dir, _lock: lock })
    }

    /// Sessions of this origin whose process is gone, each locked by the returned handle
    /// (so two mounts starting together do not both recover one). Blocking.
    pub fn dead_sessions(&self) -> io::Result<Vec<DeadSession>> {
        let dir = self.root.join(SESSIONS);
        let rd = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let own = self
            .session
            .get()
            .and_then(|s| s.as_ref().ok())
            .map(|s| s.dir.clone());
        let mut out = Vec::new();
        for d in rd {
            let path = d?.path();
            if Some(&path) == own.as_ref() || !path.is_dir() {
                continue;
            }
            let origin = std::fs::read_to_string(path.join("origin")).unwrap_or_default();
            if origin != self.origin {
                continue;
            }
            let Ok(lock) = std::fs::OpenOptions::new()
                .write(true)
                .open(path.join("lock"))
            else {
                continue;
            };
            if try_lock(&lock)? {
                out.push(DeadSession {
                    dir: path,
                    _lock: lock,
                });
            }
        }
        Ok(out)
    }
}

/// A session whose mount is gone (locked by us while we recover it).
pub struct DeadSession {
    pub dir: PathBuf,
    _lock: File,
}

/// What a dead session left: a spill file, its entry, or both.
#[derive(Debug)]
pub struct Leftover {
    pub data: Option<PathBuf>,
    pub entry: Option<io::Result<Entry>>,
    pub entry_path: PathBuf,
}

impl DeadSession {
    /// Every spill file and entry in the session. Blocking.
    pub fn leftovers(&self) -> io::Result<Vec<Leftover>> {
        let mut stems: BTreeMap<String, (bool, bool)> = BTreeMap::new();
        for d in std::fs::read_dir(&self.dir)? {
            let name = d?.file_name().to_string_lossy().into_owned();
            if let Some(stem) = name.strip_suffix(".data") {
                stems.entry(stem.to_string()).or_default().0 = true;
            } else if let Some(stem) = name.strip_suffix(".entry") {
                stems.entry(stem.to_string()).or_default().1 = true;
            }
        }
        Ok(stems
            .into_iter()
            .map(|(stem, (data, entry))| {
                let data_path = self.dir.join(format!("{stem}.data"));
                let entry_path = entry_path(&data_path);
                Leftover {
                    data: data.then_some(data_path),
                    entry: entry.then(|| read_entry(&entry_path)),
                    entry_path,
                }
            })
            .collect())
    }

    /// Removes the session once nothing in it is needed. Blocking.
    pub fn remove(self) -> io::Result<()> {
        std::fs::remove_dir_all(&self.dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: &str) -> Entry {
        Entry {
            version: VERSION,
            origin: "http://e b".into(),
            key: key.into(),
            state: EntryState::Flushing,
            size: 3,
            md5: None,
            metadata: BTreeMap::new(),
            replaces: None,
            complete: true,
            updated: Entry::now(),
            reason: None,
        }
    }

    #[test]
    fn a_live_session_is_not_dead_and_a_released_one_is() {
        let dir = tempfile::tempdir().unwrap();
        let a = Journal::new(dir.path(), "http://e b");
        let sa = a.session_dir().unwrap();
        let data = sa.join("x.data");
        std::fs::write(&data, b"abc").unwrap();
        write_entry(&entry_path(&data), &entry("k")).unwrap();
        let b = Journal::new(dir.path(), "http://e b");
        b.session_dir().unwrap();
        assert!(b.dead_sessions().unwrap().is_empty(), "a is alive");
        let other = Journal::new(dir.path(), "http://e other");
        drop(a); // its lock goes with it, as when the process dies
        assert!(other.dead_sessions().unwrap().is_empty(), "not its bucket");
        let dead = b.dead_sessions().unwrap();
        assert_eq!(dead.len(), 1);
        assert!(
            b.dead_sessions().unwrap().is_empty(),
            "locked by the recovery"
        );
        let left = dead[0].leftovers().unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].data.as_deref(), Some(data.as_path()));
        assert_eq!(left[0].entry.as_ref().unwrap().as_ref().unwrap().key, "k");
    }
}
