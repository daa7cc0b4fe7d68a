//! The reader: open file handles and what serves their reads of stored objects (the prefetcher
//! of each handle, the mount's page cache and its prefetch budget).
//!
//! A file open for writing is read from its staging by the writers instead; this component
//! serves the bytes of the object the handle opened.
//!
//! Locks, in order: the `files` handle map (std, map operations only) before a handle's reader
//! (tokio, held across awaits: a handle's sequential reads are serial by nature; a random read
//! runs without it, so random readers of one file proceed in parallel). The page cache (moka)
//! and the budget semaphore take no other lock.

use super::prefetch::{self, Reader};
use super::{Error, Result};
use crate::cache::PageCache;
use crate::config::FsOptions;
use crate::store::{ObjectStore, StoreError};
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::Semaphore;

/// One open file.
pub(super) struct FileHandle<S: ObjectStore> {
    pub(super) ino: u64,
    reader: tokio::sync::Mutex<Reader<S>>,
    /// Opened for writing: holds a handle on the inode's write state.
    pub(super) writing: bool,
    /// The process that opened it, when known.
    pub(super) opener: Option<u32>,
    /// Bytes of it were returned: from then on it never moves to another version.
    pub(super) served: std::sync::atomic::AtomicBool,
}

/// What a handle opened: the object's key and version.
pub(super) struct Opened<'a> {
    pub(super) ino: u64,
    pub(super) key: &'a str,
    pub(super) etag: Option<&'a str>,
    pub(super) size: u64,
    pub(super) writing: bool,
    pub(super) opener: Option<u32>,
}

pub(super) struct Reads<S: ObjectStore> {
    store: Arc<S>,
    pages: PageCache,
    /// Memory of the whole mount for file data in flight (prefetch, reads, write buffers), in
    /// KiB: shared with the writers.
    budget: Arc<Semaphore>,
    /// Reads past the budget wait for this (KiB; its size beside it).
    reserve: (Arc<Semaphore>, u32),
    files: Mutex<HashMap<u64, Arc<FileHandle<S>>>>,
}

impl<S: ObjectStore> Reads<S> {
    pub(super) fn new(
        store: Arc<S>,
        opts: &FsOptions,
        budget: Arc<Semaphore>,
        reserve_kib: u32,
    ) -> Self {
        Self {
            store,
            pages: PageCache::new(opts.page_cache_size()),
            budget,
            reserve: (Arc::new(Semaphore::new(reserve_kib as usize)), reserve_kib),
            files: Mutex::new(HashMap::new()),
        }
    }

    /// Handle `h`, which has returned nothing yet, reads `key`'s version `etag` of `size`
    /// bytes from now on (the object was replaced before its first read).
    pub(super) async fn reopen(&self, h: &FileHandle<S>, key: &str, etag: Option<&str>, size: u64) {
        h.reader.lock().await.reopen(key, etag, size);
    }

    /// The object of `ino` moved to `key` (a rename): its handles read from there.
    pub(super) async fn relocate(&self, ino: u64, key: &str, etag: Option<&str>) {
        let handles: Vec<_> = self
            .files
            .lock()
            .unwrap()
            .values()
            .filter(|h| h.ino == ino)
            .cloned()
            .collect();
        for h in handles {
            h.reader.lock().await.relocate(key, etag);
        }
    }

    /// File handles open.
    pub(super) fn open_count(&self) -> usize {
        self.files.lock().unwrap().len()
    }

    /// Records handle `fh` on `o`.
    pub(super) fn open(&self, fh: u64, o: Opened<'_>) {
        let reader = Reader::new(
            self.store.clone(),
            o.key,
            o.etag,
            o.size,
            self.budget.clone(),
        )
        .with_reserve(self.reserve.0.clone(), self.reserve.1)
        .with_cache(self.pages.clone());
        self.files.lock().unwrap().insert(
            fh,
            Arc::new(FileHandle {
                ino: o.ino,
                reader: tokio::sync::Mutex::new(reader),
                writing: o.writing,
                opener: o.opener,
                served: Default::default(),
            }),
        );
    }

    pub(super) fn handle(&self, fh: u64) -> Result<Arc<FileHandle<S>>> {
        self.files
            .lock()
            .unwrap()
            .get(&fh)
            .cloned()
            .ok_or(Error::BadHandle)
    }

    /// Forgets handle `fh`; what it was, if it was open.
    pub(super) fn close(&self, fh: u64) -> Option<Arc<FileHandle<S>>> {
        self.files.lock().unwrap().remove(&fh)
    }

    /// Bytes `[offset, offset + size)` of the object `h` opened.
    pub(super) async fn read(&self, h: &FileHandle<S>, offset: u64, size: u32) -> Result<Bytes> {
        let res = {
            let mut r = h.reader.lock().await;
            match r.begin(offset, u64::from(size)) {
                prefetch::Step::Done(b) => Ok(b),
                prefetch::Step::Sequential { offset, end } => r.read_sequential(offset, end).await,
                prefetch::Step::Random(fetch) => {
                    drop(r);
                    fetch.run().await
                }
            }
        };
        res.map_err(|e| {
            match Arc::try_unwrap(e).unwrap_or_else(|a| StoreError::Other(a.to_string())) {
                StoreError::PreconditionFailed => Error::Changed,
                other => Error::from(other),
            }
        })
    }
}
