//! Streaming reads: ranged GETs with a growing prefetch window.
//!
//! Problem: the kernel reads a file in 128 KiB–1 MiB requests; one GET per request is slow, and
//! fetching far ahead wastes memory and bandwidth on random readers.
//!
//! Structure: each open file has a [`Reader`] with a queue of parts (ranged GETs spawned on
//! tokio, several in flight). A read that continues the previous one (allowing a small seek
//! either way) is sequential: the window ahead of it starts at [`INITIAL_WINDOW`] and doubles
//! on every sequential read up to [`MAX_WINDOW`]. Any other read is random: the queue is
//! dropped and only the requested bytes are fetched.
//!
//! Memory: parts hold permits of one semaphore shared by the whole mount (in KiB, shared with
//! the writers' in-memory buffers), so memory is bounded per mount, not per file. When the
//! budget is spent, the part a read needs shrinks to that read's own bytes and waits for a
//! permit of the mount's read reserve (a second, smaller semaphore). Reserve permits are held
//! only while a read's own bytes are fetched and handed over (a part wholly consumed leaves the
//! queue when its read returns), so waiting for one cannot deadlock, and a mount whose budget
//! idle handles hold still makes progress.
//!
//! Consistency: every GET carries `If-Match` with the ETag seen at open, so a reader gets bytes
//! of one version or an error, never a mix.
//!
//! Streaming: a part's GET body is consumed as it arrives (a task appends the network's
//! buffers to the part's progress); a read waits only until its own bytes are there, so the
//! first bytes of a 4 MiB part are served while the rest is still on the wire.

use crate::cache::{BLOCK, PageCache};
use crate::store::{Chunks, ObjectStore, StoreError};
use bytes::{Bytes, BytesMut};
use std::collections::VecDeque;
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

/// First window after a sequential start: absorbs the kernel's own readahead (128 KiB–1 MiB)
/// without over-fetching small files.
pub const INITIAL_WINDOW: u64 = 1 << 20;
/// Largest window per file: 16 parts of 4 MiB in flight saturate a loopback or 10 GbE link.
pub const MAX_WINDOW: u64 = 64 << 20;
/// Largest single GET: big enough to amortise request latency, small enough that the first
/// bytes arrive early and 16 parts run in parallel (4 MiB measured ahead of 2 and 8 MiB here).
pub const MAX_PART: u64 = 4 << 20;
/// A forward seek up to this far still counts as sequential (skipped bytes are discarded).
pub const SEEK_FORWARD_TOLERANCE: u64 = 4 << 20;
/// A backward seek up to this far still counts as sequential (the kernel may deliver
/// concurrent readahead requests slightly out of order).
pub const SEEK_BACK_TOLERANCE: u64 = 1 << 20;

/// What a part's GET has delivered so far. The fetch task appends buffers as they arrive;
/// readers wait only for the bytes they need, not for the whole part.
#[derive(Default)]
struct Progress {
    data: Chunks,
    /// `Some` once the GET ended: `Ok` with every byte, or the error that cut it.
    done: Option<Result<(), Arc<StoreError>>>,
}

struct Part {
    start: u64,
    end: u64,
    progress: tokio::sync::watch::Receiver<Progress>,
    task: JoinHandle<()>,
    _permit: Option<OwnedSemaphorePermit>,
}

impl Part {
    /// Bytes `[from, to)` of the part (offsets within it), once they have arrived.
    async fn bytes(&mut self, from: u64, to: u64) -> Result<Bytes, Arc<StoreError>> {
        loop {
            {
                let p = self.progress.borrow_and_update();
                if p.data.len() >= to {
                    return Ok(p.data.slice(from, to));
                }
                match &p.done {
                    Some(Err(e)) => return Err(e.clone()),
                    Some(Ok(())) => {
                        return Err(Arc::new(StoreError::Other(format!(
                            "the GET ended after {} of {} bytes",
                            p.data.len(),
                            self.end - self.start
                        ))));
                    }
                    None => {}
                }
            }
            if self.progress.changed().await.is_err() {
                // The task ended without a last word (it panicked or was aborted).
                let p = self.progress.borrow();
                if p.done.is_none() {
                    return Err(Arc::new(StoreError::Other("GET task failed".into())));
                }
            }
        }
    }

    /// Every byte, if the GET completed.
    fn complete(&self) -> Option<Chunks> {
        let p = self.progress.borrow();
        matches!(p.done, Some(Ok(()))).then(|| p.data.clone())
    }
}

impl Drop for Part {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// How [`Reader::begin`] will serve a read.
pub enum Step<S: ObjectStore> {
    Done(Bytes),
    Random(RandomFetch<S>),
    Sequential { offset: u64, end: u64 },
}

/// One ranged GET for a random read, runnable without the reader.
pub struct RandomFetch<S: ObjectStore> {
    store: Arc<S>,
    key: Arc<str>,
    etag: Option<Arc<str>>,
    offset: u64,
    end: u64,
    budget: Arc<Semaphore>,
    reserve: Option<(Arc<Semaphore>, u32)>,
}

/// Permits for `kib` of a read's own bytes: from the budget if it has them, else from the
/// reserve (waiting; at most all of it), else none (no reserve: unbounded, for tests).
async fn read_permit(
    budget: &Arc<Semaphore>,
    reserve: &Option<(Arc<Semaphore>, u32)>,
    kib: u32,
) -> Option<OwnedSemaphorePermit> {
    if let Ok(p) = budget.clone().try_acquire_many_owned(kib) {
        return Some(p);
    }
    let (r, total) = reserve.as_ref()?;
    r.clone().acquire_many_owned(kib.min(*total)).await.ok()
}

impl<S: ObjectStore> RandomFetch<S> {
    pub async fn run(self) -> Result<Bytes, Arc<StoreError>> {
        let kib = (self.end - self.offset).div_ceil(1024) as u32;
        let _permit = read_permit(&self.budget, &self.reserve, kib).await;
        self.store
            .get_range(&self.key, self.offset, self.end, self.etag.as_deref())
            .await
            .map(|c| c.to_bytes())
            .map_err(Arc::new)
    }
}

/// The read state of one open file.
pub struct Reader<S: ObjectStore> {
    store: Arc<S>,
    key: Arc<str>,
    etag: Option<Arc<str>>,
    size: u64,
    budget: Arc<Semaphore>,
    /// The mount's read reserve and its size in KiB (`None`: reads past the budget go
    /// unpermitted).
    reserve: Option<(Arc<Semaphore>, u32)>,
    queue: VecDeque<Part>,
    /// End of the last spawned part.
    queued_end: u64,
    /// Where a sequential reader would read next.
    next_offset: u64,
    window: u64,
    /// Where consumed parts go, under this object version's identity.
    cache: Option<(PageCache, u64)>,
    /// Ranged GETs sent (for tests and stats).
    pub gets: u64,
}

fn align_up(x: u64) -> u64 {
    x.div_ceil(BLOCK) * BLOCK
}

impl<S: ObjectStore> Reader<S> {
    pub fn new(
        store: Arc<S>,
        key: &str,
        etag: Option<&str>,
        size: u64,
        budget: Arc<Semaphore>,
    ) -> Self {
        Self {
            store,
            key: key.into(),
            etag: etag.map(Into::into),
            size,
            budget,
            reserve: None,
            queue: VecDeque::new(),
            queued_end: 0,
            next_offset: 0,
            window: INITIAL_WINDOW,
            cache: None,
            gets: 0,
        }
    }

    /// Another version of the object, before anything was read: `etag`, `size`.
    pub fn reopen(&mut self, key: &str, etag: Option<&str>, size: u64) {
        self.size = size;
        self.relocate(key, etag);
        self.next_offset = 0;
    }

    /// The object moved (a rename: the same bytes under `key`, now with `etag`): later reads
    /// fetch from there.
    pub fn relocate(&mut self, key: &str, etag: Option<&str>) {
        self.reset(self.next_offset);
        self.key = key.into();
        self.etag = etag.map(Into::into);
        if let Some((_, id)) = &mut self.cache {
            *id = crate::cache::object_id(&self.key, self.etag.as_deref());
        }
    }

    /// Reads past the budget wait for `reserve` (`kib` permits in all).
    pub fn with_reserve(mut self, reserve: Arc<Semaphore>, kib: u32) -> Self {
        self.reserve = Some((reserve, kib));
        self
    }

    /// Sends consumed parts to `cache` and serves reads from it first.
    pub fn with_cache(mut self, cache: PageCache) -> Self {
        let id = crate::cache::object_id(&self.key, self.etag.as_deref());
        self.cache = Some((cache, id));
        self
    }

    /// A part leaves the queue: keep its bytes in the page cache if it completed.
    fn retire(&self, p: Part) {
        if let (Some((cache, id)), Some(b)) = (&self.cache, p.complete()) {
            cache.insert_range(*id, p.start, &b, self.size);
        }
    }

    fn spawn(&mut self, start: u64, end: u64, permit: Option<OwnedSemaphorePermit>) -> Part {
        use futures::StreamExt;
        let store = self.store.clone();
        let key = self.key.clone();
        let etag = self.etag.clone();
        self.gets += 1;
        let (tx, rx) = tokio::sync::watch::channel(Progress::default());
        let task = tokio::spawn(async move {
            let mut body = match store.get_stream(&key, start, end, etag.as_deref()).await {
                Ok(b) => b,
                Err(e) => {
                    tx.send_modify(|p| p.done = Some(Err(Arc::new(e))));
                    return;
                }
            };
            while let Some(b) = body.next().await {
                match b {
                    Ok(b) => tx.send_modify(|p| p.data.push(b)),
                    Err(e) => {
                        tx.send_modify(|p| p.done = Some(Err(Arc::new(e))));
                        return;
                    }
                }
            }
            tx.send_modify(|p| p.done = Some(Ok(())));
        });
        Part {
            start,
            end,
            progress: rx,
            task,
            _permit: permit,
        }
    }

    fn reset(&mut self, offset: u64) {
        while let Some(p) = self.queue.pop_front() {
            self.retire(p);
        }
        self.queued_end = offset;
        self.window = INITIAL_WINDOW;
    }

    /// Reads `[offset, offset + len)`, clipped at the end of the object.
    pub async fn read(&mut self, offset: u64, len: u64) -> Result<Bytes, Arc<StoreError>> {
        match self.begin(offset, len) {
            Step::Done(b) => Ok(b),
            Step::Random(f) => f.run().await,
            Step::Sequential { offset, end } => self.read_sequential(offset, end).await,
        }
    }

    /// Decides how to serve a read, updating the sequential state. A [`Step::Random`] fetch
    /// needs nothing from the reader, so the caller can run it without holding the reader's
    /// lock and random readers of one file proceed in parallel.
    pub fn begin(&mut self, offset: u64, len: u64) -> Step<S> {
        let end = offset.saturating_add(len).min(self.size);
        if offset >= end {
            return Step::Done(Bytes::new());
        }
        if let Some((cache, id)) = &self.cache
            && let Some(b) = cache.get_range(*id, offset, end)
        {
            self.next_offset = end;
            return Step::Done(b);
        }
        let sequential = offset == 0
            || (offset + SEEK_BACK_TOLERANCE >= self.next_offset
                && offset <= self.next_offset + SEEK_FORWARD_TOLERANCE);
        self.next_offset = end;
        if !sequential {
            self.reset(end);
            self.gets += 1;
            return Step::Random(RandomFetch {
                store: self.store.clone(),
                key: self.key.clone(),
                etag: self.etag.clone(),
                offset,
                end,
                budget: self.budget.clone(),
                reserve: self.reserve.clone(),
            });
        }
        Step::Sequential { offset, end }
    }

    /// Serves a sequential read from the queue, extending the window.
    pub async fn read_sequential(
        &mut self,
        offset: u64,
        end: u64,
    ) -> Result<Bytes, Arc<StoreError>> {
        // Drop parts wholly behind the read.
        while self.queue.front().is_some_and(|p| p.end <= offset) {
            let p = self.queue.pop_front().unwrap();
            self.retire(p);
        }
        let keep = match self.queue.front() {
            Some(p) => p.start <= offset,
            None => self.queued_end == offset,
        };
        if !keep {
            self.reset(offset);
        }
        // The bytes this read needs come first: a part of the window's size while the budget
        // has room for it, else only this read's bytes, without a permit (bounded by the reads
        // in flight, so a mount whose budget idle handles hold still makes progress).
        if self.queued_end < end {
            let full =
                align_up((self.queued_end + self.window.min(MAX_PART)).max(end)).min(self.size);
            let kib = (full - self.queued_end).div_ceil(1024) as u32;
            let (part_end, permit) = match self.budget.clone().try_acquire_many_owned(kib) {
                Ok(p) => (full, Some(p)),
                Err(_) => {
                    let kib = (end - self.queued_end).div_ceil(1024) as u32;
                    (end, read_permit(&self.budget, &self.reserve, kib).await)
                }
            };
            let p = self.spawn(self.queued_end, part_end, permit);
            self.queue.push_back(p);
            self.queued_end = part_end;
        }
        // Then the window ahead, as far as the mount's budget allows.
        let target = align_up(end.saturating_add(self.window)).min(self.size);
        while self.queued_end < target {
            let part_end = align_up(self.queued_end + MAX_PART.min(self.window)).min(target);
            let kib = (part_end - self.queued_end).div_ceil(1024) as u32;
            let Ok(permit) = self.budget.clone().try_acquire_many_owned(kib) else {
                break;
            };
            let p = self.spawn(self.queued_end, part_end, Some(permit));
            self.queue.push_back(p);
            self.queued_end = part_end;
        }
        self.window = (self.window * 2).min(MAX_WINDOW);

        let res = self.assemble(offset, end).await;
        // Parts this read consumed to their end leave now (their permits with them), not at
        // the next read: an idle handle holds only bytes nobody has read yet.
        while self.queue.front().is_some_and(|p| p.end <= end) {
            let p = self.queue.pop_front().unwrap();
            self.retire(p);
        }
        if res.is_err() {
            // A failed part cannot be awaited again: start over, so a retry of the read
            // issues fresh GETs (a changed object keeps failing through If-Match).
            self.reset(end);
            self.next_offset = 0;
        }
        res
    }

    /// Copies (or slices) `[offset, end)` out of the queued parts, waiting for them.
    async fn assemble(&mut self, offset: u64, end: u64) -> Result<Bytes, Arc<StoreError>> {
        let mut out: Option<BytesMut> = None;
        let mut single: Option<Bytes> = None;
        for p in self.queue.iter_mut() {
            if p.end <= offset {
                continue;
            }
            if p.start >= end {
                break;
            }
            let (pstart, pend) = (p.start, p.end);
            let slice = p
                .bytes(offset.max(pstart) - pstart, end.min(pend) - pstart)
                .await?;
            match (&mut out, &single) {
                (None, None) => single = Some(slice),
                (None, Some(first)) => {
                    let mut buf = BytesMut::with_capacity((end - offset) as usize);
                    buf.extend_from_slice(first);
                    buf.extend_from_slice(&slice);
                    out = Some(buf);
                }
                (Some(buf), _) => buf.extend_from_slice(&slice),
            }
        }
        Ok(match out {
            Some(b) => b.freeze(),
            None => single.unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::PutOptions;
    use crate::store::memory::MemoryStore;

    async fn setup(len: usize) -> (Arc<MemoryStore>, Vec<u8>, String) {
        let store = Arc::new(MemoryStore::default());
        let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
        let etag = store
            .put("f", Bytes::from(data.clone()), PutOptions::default())
            .await
            .unwrap()
            .unwrap();
        (store, data, etag)
    }

    #[tokio::test]
    async fn sequential_reads_grow_the_window_and_match() {
        let (store, data, etag) = setup(40 << 20).await;
        let mut r = Reader::new(
            store,
            "f",
            Some(&etag),
            data.len() as u64,
            Arc::new(Semaphore::new(1 << 20)),
        );
        let mut off = 0;
        while off < data.len() {
            let b = r.read(off as u64, 128 << 10).await.unwrap();
            assert_eq!(&b[..], &data[off..(off + (128 << 10)).min(data.len())]);
            off += b.len();
        }
        // 320 kernel-sized reads; the growing window turns them into far fewer GETs.
        assert!(r.gets < 20, "gets = {}", r.gets);
    }

    #[tokio::test]
    async fn random_reads_fetch_only_what_they_need() {
        let (store, data, etag) = setup(16 << 20).await;
        let mut r = Reader::new(
            store,
            "f",
            Some(&etag),
            data.len() as u64,
            Arc::new(Semaphore::new(1 << 20)),
        );
        for off in [10 << 20, 3 << 20, 12 << 20, 5000] {
            let b = r.read(off as u64, 4096).await.unwrap();
            assert_eq!(&b[..], &data[off..off + 4096]);
        }
        assert_eq!(r.gets, 4);
        assert!(r.queue.is_empty(), "random reads prefetch nothing");
    }

    #[tokio::test]
    async fn zero_budget_still_progresses() {
        let (store, data, etag) = setup(4 << 20).await;
        let mut r = Reader::new(
            store,
            "f",
            Some(&etag),
            data.len() as u64,
            Arc::new(Semaphore::new(0)),
        );
        let mut got = Vec::new();
        while got.len() < data.len() {
            let b = r.read(got.len() as u64, 128 << 10).await.unwrap();
            got.extend_from_slice(&b);
            // Nothing is fetched past what the reads asked for: without budget, a part is
            // one read's bytes.
            let held: u64 = r.queue.iter().map(|p| p.end - p.start).sum();
            assert!(held <= 128 << 10, "{held} bytes held without a permit");
        }
        assert_eq!(got, data);
    }

    /// A read needs only its own bytes: it is served while the rest of its part is still on
    /// the wire (here: never arrives).
    #[tokio::test]
    async fn reads_are_served_as_the_body_arrives() {
        use crate::store::faults::FaultStore;
        let (mem, data, etag) = setup(8 << 20).await;
        let store = Arc::new(FaultStore::new(Arc::try_unwrap(mem).ok().unwrap()));
        store.stall_bodies_after(2); // two 64 KiB buffers, then silence
        let mut r = Reader::new(
            store,
            "f",
            Some(&etag),
            data.len() as u64,
            Arc::new(Semaphore::new(1 << 20)),
        );
        let got = tokio::time::timeout(std::time::Duration::from_secs(10), r.read(0, 100_000))
            .await
            .expect("served before the part completed")
            .unwrap();
        assert_eq!(&got[..], &data[..100_000]);
    }

    #[tokio::test]
    async fn changed_object_fails_instead_of_mixing() {
        let (store, data, etag) = setup(8 << 20).await;
        let mut r = Reader::new(
            store.clone(),
            "f",
            Some(&etag),
            data.len() as u64,
            Arc::new(Semaphore::new(0)),
        );
        r.read(0, 4096).await.unwrap();
        store
            .put("f", Bytes::from(vec![0u8; 8 << 20]), PutOptions::default())
            .await
            .unwrap();
        let err = r.read(6 << 20, 4096).await.unwrap_err();
        assert!(matches!(*err, StoreError::PreconditionFailed));
    }
}
