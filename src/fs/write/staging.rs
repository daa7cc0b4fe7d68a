//! Staging: where a file's bytes live between `write` and the upload.
//!
//! Problem: S3 takes whole objects, files are written piecewise and at random offsets, and a file
//! may be larger than memory. Bytes stay in memory up to a limit (`--write-buffer`), then spill to
//! a file under the cache directory, which holds every byte from then on. Gaps read as zeros.
//!
//! Data safety: a spill file lives in this mount's session directory of the journal
//! ([`super::journal`]), with an entry beside it while its bytes are not on the server
//! ([`Staging::record`]). When an upload fails for good, [`Staging::persist`] moves (or writes)
//! the bytes to a named file under `recovered/`, so the caller can tell the user where they are.
//!
//! Memory: bytes in memory hold permits of the mount's memory budget (KiB, shared with the
//! readers' prefetch); when the budget has none left, the file spills to disk instead of growing.
//!
//! Disk I/O (spilling, writes and reads of the spill file, hashing it, keeping it) runs on
//! tokio's blocking pool, never on an async worker: one large write must not stall unrelated
//! requests (a `stat`, another file's read) that share the workers. Bytes in memory are copied
//! in place: a memcpy does not block.

use super::journal::{self, Entry, Journal};
use bytes::Bytes;
use md5::Digest;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Bytes copied per step when hashing or copying a spilled file.
const COPY_STEP: usize = 1 << 20;

/// Runs blocking file work on the blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| io::Error::other(format!("staging I/O task: {e}")))?
}

/// `h` updated with `data`, off the async workers when `data` is large; `None` if the hashing
/// task could not run (the upload then hashes the staged bytes instead).
pub async fn hash_more(mut h: md5::Md5, data: &[u8]) -> Option<md5::Md5> {
    if data.len() < crate::store::HASH_OFF_WORKER {
        h.update(data);
        return Some(h);
    }
    let data = Bytes::copy_from_slice(data);
    tokio::task::spawn_blocking(move || {
        h.update(&data);
        h
    })
    .await
    .ok()
}

pub struct Staging {
    journal: Arc<Journal>,
    limit: u64,
    mem: Vec<u8>,
    /// The mount's memory budget (KiB) and the permits `mem`'s capacity holds.
    budget: Option<Arc<Semaphore>>,
    held: Option<OwnedSemaphorePermit>,
    /// The spill file (holds all bytes once present) and its path. Shared with part uploads,
    /// which read their bytes from it outside the write lock.
    file: Option<(Arc<File>, PathBuf)>,
    len: u64,
    /// Whether an entry for the spill file is in the journal.
    recorded: bool,
    /// Leave the spill file in place when dropped (a copy adopted from `recovered/` whose
    /// upload failed stays where the user was told it is).
    keep_file: bool,
}

/// What an upload reads from.
pub enum Source<'a> {
    /// The bytes are in memory: [`Staging::lend`] them.
    Memory,
    File(&'a Path, u64),
}

impl Staging {
    /// `journal`: where a spill file goes; `limit`: bytes kept in memory before spilling, while
    /// `budget` (KiB permits, shared by the mount) has room for them.
    pub fn new(journal: Arc<Journal>, limit: u64, budget: Option<Arc<Semaphore>>) -> Self {
        Self {
            journal,
            limit,
            mem: Vec::new(),
            budget,
            held: None,
            file: None,
            len: 0,
            recorded: false,
            keep_file: false,
        }
    }

    /// Staging over an existing file of `len` bytes (a leftover of a dead session, or a copy in
    /// `recovered/`). `keep_file`: the file stays when the staging is dropped.
    pub fn adopt(
        journal: Arc<Journal>,
        path: &Path,
        len: u64,
        keep_file: bool,
    ) -> io::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)?;
        let mut s = Self::new(journal, 0, None);
        s.file = Some((Arc::new(file), path.to_path_buf()));
        s.len = len;
        s.recorded = !keep_file;
        s.keep_file = keep_file;
        Ok(s)
    }

    /// Room in memory for `end` bytes, from the budget: false if the budget has none (the
    /// caller spills). Capacity grows by doubling (up to the limit), each step paid for.
    fn reserve(&mut self, end: u64) -> bool {
        let cap = self.mem.capacity() as u64;
        if end <= cap {
            return true;
        }
        let target = end.max(cap.saturating_mul(2)).min(self.limit.max(end));
        if let Some(budget) = &self.budget {
            let held = self.held.as_ref().map_or(0, |p| p.num_permits()) as u64;
            let need = target.div_ceil(1024).saturating_sub(held);
            let Ok(more) = budget
                .clone()
                .try_acquire_many_owned(need.min(u32::MAX as u64) as u32)
            else {
                return false;
            };
            match &mut self.held {
                Some(p) => p.merge(more),
                None => self.held = Some(more),
            }
        }
        self.mem
            .reserve_exact((target as usize).saturating_sub(self.mem.len()));
        true
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether the bytes are on disk.
    pub fn spilled(&self) -> bool {
        self.file.is_some()
    }

    async fn spill(&mut self) -> io::Result<()> {
        let (journal, mem, len) = (
            self.journal.clone(),
            std::mem::take(&mut self.mem),
            self.len,
        );
        let (file, path) = blocking(move || {
            let dir = journal.session_dir()?;
            let tmp = tempfile::Builder::new()
                .prefix("staging-")
                .suffix(".data")
                .tempfile_in(&dir)?;
            let (file, path) = tmp.keep().map_err(|e| e.error)?;
            file.write_all_at(&mem, 0)?;
            file.set_len(len)?;
            Ok((file, path))
        })
        .await?;
        self.file = Some((Arc::new(file), path));
        self.held = None; // the memory went back with `mem`
        Ok(())
    }

    /// Moves the bytes to disk (a failed upload must not leave them only in memory).
    pub async fn to_disk(&mut self) -> io::Result<()> {
        if self.file.is_none() {
            self.spill().await?;
        }
        Ok(())
    }

    /// Writes (or replaces) the journal entry of the spill file: these bytes are not on the
    /// server. Does nothing while the bytes are in memory.
    pub async fn record(&mut self, entry: Entry) -> io::Result<()> {
        let Some((_, path)) = &self.file else {
            return Ok(());
        };
        let path = journal::entry_path(path);
        blocking(move || journal::write_entry(&path, &entry)).await?;
        self.recorded = true;
        Ok(())
    }

    /// Whether the journal holds an entry for these bytes.
    pub fn recorded(&self) -> bool {
        self.recorded
    }

    /// Removes the journal entry: the bytes are on the server.
    pub async fn unrecord(&mut self) -> io::Result<()> {
        let Some((_, path)) = &self.file else {
            return Ok(());
        };
        if !self.recorded {
            return Ok(());
        }
        let path = journal::entry_path(path);
        blocking(move || match std::fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        })
        .await?;
        self.recorded = false;
        Ok(())
    }

    /// The spill file (spilling now if the bytes are in memory), for readers outside the lock.
    pub async fn shared_file(&mut self) -> io::Result<Arc<File>> {
        if self.file.is_none() {
            self.spill().await?;
        }
        Ok(self.file.as_ref().map(|(f, _)| f.clone()).unwrap())
    }

    /// Writes `data` at `off`; a gap before it reads as zeros.
    pub async fn write_at(&mut self, off: u64, data: &[u8]) -> io::Result<()> {
        self.write_inner(off, data, || Bytes::copy_from_slice(data))
            .await
    }

    /// [`Staging::write_at`] of bytes already owned: a write to the spill file hands them to
    /// the blocking pool without a copy.
    pub async fn write_bytes(&mut self, off: u64, data: Bytes) -> io::Result<()> {
        let owned = data.clone();
        self.write_inner(off, &data, move || owned).await
    }

    /// `owned()` gives the bytes to send to the blocking pool when the file is spilled.
    async fn write_inner(
        &mut self,
        off: u64,
        data: &[u8],
        owned: impl FnOnce() -> Bytes,
    ) -> io::Result<()> {
        let end = off + data.len() as u64;
        if self.file.is_none() && (end > self.limit || !self.reserve(end)) {
            self.spill().await?;
        }
        match &self.file {
            Some((f, _)) => {
                let (f, data) = (f.clone(), owned());
                blocking(move || f.write_all_at(&data, off)).await?
            }
            None => {
                if self.mem.len() < end as usize {
                    self.mem.resize(end as usize, 0);
                }
                self.mem[off as usize..end as usize].copy_from_slice(data);
            }
        }
        self.len = self.len.max(end);
        Ok(())
    }

    /// Sets the length: shorter drops bytes, longer adds zeros.
    pub async fn truncate(&mut self, len: u64) -> io::Result<()> {
        if self.file.is_none() && (len > self.limit || !self.reserve(len)) {
            self.spill().await?;
        }
        match &self.file {
            Some((f, _)) => {
                let f = f.clone();
                blocking(move || f.set_len(len)).await?
            }
            None => self.mem.resize(len as usize, 0),
        }
        self.len = len;
        Ok(())
    }

    /// Bytes `[off, off + len)`, clipped at the end.
    pub async fn read_at(&self, off: u64, len: u64) -> io::Result<Bytes> {
        let end = (off + len).min(self.len);
        if off >= end {
            return Ok(Bytes::new());
        }
        match &self.file {
            Some((f, _)) => {
                let f = f.clone();
                blocking(move || {
                    let mut buf = vec![0u8; (end - off) as usize];
                    f.read_exact_at(&mut buf, off)?;
                    Ok(buf.into())
                })
                .await
            }
            None => Ok(Bytes::copy_from_slice(
                &self.mem[off as usize..end as usize],
            )),
        }
    }

    /// MD5 of all bytes (for Content-MD5).
    pub async fn md5(&self) -> io::Result<[u8; 16]> {
        let (file, len) = match &self.file {
            Some((f, _)) => (f.clone(), self.len),
            // In memory: at most `--write-buffer` bytes; hashed here, as a write copies them.
            None => return Ok(md5::Md5::digest(&self.mem).into()),
        };
        blocking(move || {
            let mut h = md5::Md5::new();
            let mut buf = vec![0u8; COPY_STEP];
            let mut off = 0;
            while off < len {
                let n = (len - off).min(COPY_STEP as u64) as usize;
                file.read_exact_at(&mut buf[..n], off)?;
                h.update(&buf[..n]);
                off += n as u64;
            }
            Ok(h.finalize().into())
        })
        .await
    }

    /// What an upload should send.
    pub fn source(&self) -> Source<'_> {
        match &self.file {
            Some((_, p)) => Source::File(p, self.len),
            None => Source::Memory,
        }
    }

    /// The bytes in memory, for an upload, without a copy; [`Staging::restore`] gives them
    /// back (the upload's clones dropped, they become the buffer again, still uncopied).
    pub fn lend(&mut self) -> Bytes {
        Bytes::from(std::mem::take(&mut self.mem))
    }

    pub fn restore(&mut self, b: Bytes) {
        self.mem = match b.try_into_mut() {
            Ok(m) => m.into(),
            Err(b) => b.to_vec(),
        };
    }

    /// Keeps the bytes after a failed upload: `recovered/<name>` under the cache directory,
    /// with `entry` (what they are) in `recovered/.entries/<name>.json`. Returns the path to
    /// tell the user.
    pub async fn persist(mut self, entry: Entry) -> io::Result<PathBuf> {
        let dir = self.journal.root().join("recovered");
        let (file, mem) = (self.file.take(), std::mem::take(&mut self.mem));
        let recorded = std::mem::take(&mut self.recorded);
        if self.keep_file {
            // A copy already in `recovered/`: it stays where it is.
            if let Some((_, p)) = file {
                return Ok(p);
            }
        }
        blocking(move || {
            let journal_entry = file.as_ref().map(|(_, p)| journal::entry_path(p));
            let dest = Self::keep(&dir, &entry.key, file, mem)?;
            let name = dest.file_name().unwrap_or_default().to_string_lossy();
            let entries = dir.join(journal::RECOVERED_ENTRIES);
            journal::private_dir(&entries)?;
            journal::write_entry(&entries.join(format!("{name}.json")), &entry)?;
            if let (true, Some(p)) = (recorded, journal_entry) {
                let _ = std::fs::remove_file(p);
            }
            Ok(dest)
        })
        .await
    }

    fn keep(
        dir: &Path,
        name: &str,
        file: Option<(Arc<File>, PathBuf)>,
        mem: Vec<u8>,
    ) -> io::Result<PathBuf> {
        use std::os::unix::fs::PermissionsExt;
        // Only this user may read what others wrote through the mount.
        journal::private_dir(dir)?;
        let base = recovered_name(name);
        // The bytes go into a file of their own first (the spill file, or a new one for bytes
        // in memory), which then gets its name by a hard link: a name no other copy has
        // (link never replaces), and a copy that appears complete, never half-written.
        let tmp = match file {
            Some((_, p)) => p,
            None => {
                use std::io::Write;
                // Beside `recovered/` (same file system), so that only whole copies are in it.
                let mut t = tempfile::Builder::new()
                    .prefix("recovering-")
                    .tempfile_in(dir.parent().unwrap_or(dir))?;
                t.write_all(&mem)?;
                t.as_file().sync_all()?;
                let (_, p) = t.keep().map_err(|e| e.error)?;
                p
            }
        };
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
        let mut n = 1u32;
        let dest = loop {
            let dest = match n {
                1 => dir.join(&base),
                n => dir.join(format!("{base}.{n}")),
            };
            match std::fs::hard_link(&tmp, &dest) {
                Ok(()) => break dest,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => n += 1,
                Err(e) => return Err(e),
            }
        };
        std::fs::remove_file(&tmp)?;
        Ok(dest)
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        // One or two unlinks (the file's pages are freed by the kernel, not here): cheap enough
        // to run where the state is dropped.
        if let Some((_, p)) = self.file.take() {
            if self.recorded {
                let _ = std::fs::remove_file(journal::entry_path(&p));
            }
            if !self.keep_file {
                let _ = std::fs::remove_file(p);
            }
        }
    }
}

/// `<unix time, ns>-<hash of the key>-<the key's end>`: readable, unique per key, and within the
/// 255 bytes a file name may have whatever the key's length.
fn recovered_name(key: &str) -> String {
    /// Bytes of the key kept in the name (its end: the file's own name is there).
    const KEY_PART: usize = 200;
    let safe: String = key
        .chars()
        .map(|c| if c == '/' || c == '\0' { '_' } else { c })
        .collect();
    let mut cut = safe.len().saturating_sub(KEY_PART);
    while !safe.is_char_boundary(cut) {
        cut += 1;
    }
    let hash = md5::Md5::digest(key.as_bytes());
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!(
        "{}.{:09}-{}-{}",
        stamp.as_secs(),
        stamp.subsec_nanos(),
        hex::encode(&hash[..4]),
        &safe[cut..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn journal(dir: &Path) -> Arc<Journal> {
        Arc::new(Journal::new(dir, "test"))
    }

    fn entry(key: &str) -> Entry {
        Entry::new("test", key, journal::EntryState::Flushing)
    }

    fn apply(model: &mut Vec<u8>, off: usize, data: &[u8]) {
        if model.len() < off + data.len() {
            model.resize(off + data.len(), 0);
        }
        model[off..off + data.len()].copy_from_slice(data);
    }

    #[tokio::test]
    async fn random_writes_across_the_spill_match_a_model() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Staging::new(journal(dir.path()), 64 << 10, None);
        let mut model = Vec::new();
        let mut x: u64 = 12345;
        for i in 0..200 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let off = (x % (200 << 10)) as usize;
            let len = 1 + (x >> 32) as usize % 5000;
            let data = vec![(i % 251) as u8; len];
            s.write_at(off as u64, &data).await.unwrap();
            apply(&mut model, off, &data);
            if i == 100 {
                s.truncate(50_000).await.unwrap();
                model.truncate(50_000);
            }
        }
        assert!(s.spilled());
        assert_eq!(s.len(), model.len() as u64);
        assert_eq!(&s.read_at(0, s.len()).await.unwrap()[..], &model[..]);
        assert_eq!(
            s.md5().await.unwrap(),
            <[u8; 16]>::from(md5::Md5::digest(&model))
        );
        s.truncate(model.len() as u64 + 10).await.unwrap();
        assert_eq!(
            &s.read_at(model.len() as u64, 100).await.unwrap()[..],
            &[0u8; 10]
        );
    }

    #[tokio::test]
    async fn small_files_stay_in_memory_and_spill_files_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Staging::new(journal(dir.path()), 1 << 20, None);
        s.write_at(0, b"hello").await.unwrap();
        s.write_at(7, b"!").await.unwrap();
        assert!(!s.spilled());
        assert_eq!(&s.read_at(0, 100).await.unwrap()[..], b"hello\0\0!");
        assert!(matches!(s.source(), Source::Memory));
        let lent = s.lend();
        assert_eq!(&lent[..], b"hello\0\0!");
        let at = lent.as_ptr();
        s.restore(lent);
        assert_eq!(s.mem.as_ptr(), at, "given back without a copy");
        assert_eq!(&s.read_at(0, 100).await.unwrap()[..], b"hello\0\0!");
        let j = journal(dir.path());
        let mut big = Staging::new(j.clone(), 4, None);
        big.write_at(0, b"spilled").await.unwrap();
        assert!(big.spilled());
        assert!(matches!(big.source(), Source::File(_, 7)));
        big.record(entry("k")).await.unwrap();
        let session = j.session_dir().unwrap();
        let names = |d: &Path| -> Vec<String> {
            let mut v: Vec<_> = std::fs::read_dir(d)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".data") || n.ends_with(".entry"))
                .collect();
            v.sort();
            v
        };
        assert_eq!(names(&session).len(), 2, "spill file and its entry");
        drop(big);
        assert!(names(&session).is_empty(), "spill file and entry removed");
    }

    /// In-memory bytes take permits of the mount's budget; with none left, the file spills.
    #[tokio::test]
    async fn memory_past_the_budget_spills() {
        let dir = tempfile::tempdir().unwrap();
        let budget = Arc::new(Semaphore::new(64)); // 64 KiB
        let mut a = Staging::new(journal(dir.path()), 1 << 20, Some(budget.clone()));
        a.write_at(0, &[1u8; 40 << 10]).await.unwrap();
        assert!(!a.spilled());
        assert!(budget.available_permits() <= 24);
        let mut b = Staging::new(journal(dir.path()), 1 << 20, Some(budget.clone()));
        b.write_at(0, &[2u8; 40 << 10]).await.unwrap();
        assert!(b.spilled(), "no room left in the budget");
        a.write_at(40 << 10, &[3u8; 100 << 10]).await.unwrap();
        assert!(a.spilled(), "growing past the budget spills");
        assert_eq!(
            budget.available_permits(),
            64,
            "spilled files hold no memory"
        );
        assert_eq!(&a.read_at(0, 1).await.unwrap()[..], &[1]);
        assert_eq!(&a.read_at(50 << 10, 1).await.unwrap()[..], &[3]);
    }

    #[tokio::test]
    async fn persist_keeps_the_bytes_under_recovered() {
        let dir = tempfile::tempdir().unwrap();
        for limit in [1 << 20, 2] {
            let mut s = Staging::new(journal(dir.path()), limit, None);
            s.write_at(0, b"precious").await.unwrap();
            let p = s.persist(entry("dir/file.txt")).await.unwrap();
            assert!(p.starts_with(dir.path().join("recovered")));
            assert!(
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .ends_with("dir_file.txt")
            );
            assert_eq!(std::fs::read(&p).unwrap(), b"precious");
        }
    }

    /// Recovered copies never overwrite each other: keys that map to the same file name
    /// (`q/a`, `q_a`) and one key kept twice in the same second get distinct files; a
    /// 255-byte UTF-8 name is kept (its file name fits); each copy is 0600 in a 0700 directory.
    #[tokio::test]
    async fn persist_never_collides_fits_any_name_and_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let long = "é".repeat(127); // 254 bytes
        let mut kept = Vec::new();
        for (i, key) in ["q/a", "q_a", "q/a", &format!("d/{long}")]
            .into_iter()
            .enumerate()
        {
            for limit in [1 << 20, 2] {
                let mut s = Staging::new(journal(dir.path()), limit, None);
                let body = format!("{i}-{limit}-{key}");
                s.write_at(0, body.as_bytes()).await.unwrap();
                let p = s.persist(entry(key)).await.unwrap();
                assert!(p.file_name().unwrap().len() <= 255, "{p:?}");
                let mode = std::fs::metadata(&p).unwrap().permissions().mode();
                assert_eq!(mode & 0o777, 0o600, "{p:?}");
                kept.push((p, body));
            }
        }
        let rec = dir.path().join("recovered");
        let mode = std::fs::metadata(&rec).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        let names: std::collections::HashSet<_> = kept.iter().map(|(p, _)| p.clone()).collect();
        assert_eq!(names.len(), kept.len(), "every copy has its own file");
        for (p, body) in &kept {
            assert_eq!(std::fs::read_to_string(p).unwrap(), *body, "{p:?}");
        }
    }
}
