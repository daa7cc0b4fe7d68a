//! The object a file was opened on, fetched into staging only where it is needed.
//!
//! Problem: opening a 10 GiB object to append a line, or to patch a header, must not download
//! 10 GiB before the first write returns. Staging starts as a sparse copy of the object's length;
//! [`Base`] remembers which 1 MiB blocks still hold no bytes of the object. A write fetches only
//! the blocks it covers partly (the ones it covers wholly are overwritten anyway); a read fetches
//! what it reads; the upload fetches the rest (nothing to fetch for untouched objects, which are
//! not uploaded at all).
//!
//! Every fetch carries `If-Match` with the ETag seen at open, so a file never mixes two versions
//! of the object: if it changed on the server, the operation fails with EIO.
//!
//! Truncation shortens the base: bytes past the new length never come back from the object (a
//! later extension reads zeros, as POSIX says).

use super::WriteState;
use super::Writers;
use crate::fs::Result;
use crate::store::ObjectStore;
use futures::StreamExt;

/// Granularity of fetching: large enough that a small write costs one modest GET, small enough
/// that it does not fetch much it does not need.
const BLOCK: u64 = 1 << 20;
/// Most bytes in one GET when fetching runs of blocks.
const RUN_MAX: u64 = 8 << 20;
/// GETs in flight when fetching the rest of the object before an upload.
const FETCH_PARALLEL: usize = 4;

pub(super) struct Base {
    /// ETag at open (every fetch is conditional on it).
    etag: Option<String>,
    /// Bytes of the object still part of the file: its size, less any truncation.
    len: u64,
    /// Per block: still to fetch.
    missing: Vec<bool>,
}

impl Base {
    pub fn new(size: u64, etag: Option<String>) -> Self {
        Self {
            etag,
            len: size,
            missing: vec![true; size.div_ceil(BLOCK) as usize],
        }
    }

    fn blocks(&self, start: u64, end: u64) -> std::ops::Range<usize> {
        let end = end.min(self.len);
        if start >= end {
            return 0..0;
        }
        (start / BLOCK) as usize..end.div_ceil(BLOCK) as usize
    }

    /// Missing runs of blocks within `[start, end)`, as byte ranges of at most [`RUN_MAX`].
    fn runs(&self, start: u64, end: u64) -> Vec<(u64, u64)> {
        let mut out: Vec<(u64, u64)> = Vec::new();
        for b in self.blocks(start, end) {
            if !self.missing[b] {
                continue;
            }
            let (s, e) = (b as u64 * BLOCK, ((b as u64 + 1) * BLOCK).min(self.len));
            match out.last_mut() {
                Some(last) if last.1 == s && e - last.0 <= RUN_MAX => last.1 = e,
                _ => out.push((s, e)),
            }
        }
        out
    }

    /// `[start, end)` is about to be overwritten: blocks it covers wholly need no fetch.
    /// Returns the partly covered blocks that still need one (at most two: the edges).
    pub fn overwrite(&mut self, start: u64, end: u64) -> Vec<(u64, u64)> {
        let mut edges = Vec::new();
        for b in self.blocks(start, end) {
            let (s, e) = (b as u64 * BLOCK, ((b as u64 + 1) * BLOCK).min(self.len));
            if !self.missing[b] {
                continue;
            }
            if start <= s && end >= e {
                self.missing[b] = false;
            } else {
                edges.push((s, e));
            }
        }
        edges
    }

    /// The file was cut to `len` bytes.
    pub fn truncate(&mut self, len: u64) {
        self.len = self.len.min(len);
        self.missing.truncate(self.len.div_ceil(BLOCK) as usize);
    }

    pub fn complete(&self) -> bool {
        !self.missing.iter().any(|m| *m)
    }
}

impl<S: ObjectStore> Writers<S> {
    /// Fetches the missing parts of `ranges` from the object into staging.
    async fn fetch_ranges(&self, w: &mut WriteState, ranges: Vec<(u64, u64)>) -> Result<()> {
        let Some(base) = &w.base else { return Ok(()) };
        if ranges.is_empty() {
            return Ok(());
        }
        let etag = base.etag.clone();
        let key = w.key.clone();
        let mut results = futures::stream::iter(ranges)
            .map(|(s, e)| {
                let (key, etag) = (&key, etag.as_deref());
                async move { (s, e, self.store.get_range(key, s, e, etag).await) }
            })
            .buffered(FETCH_PARALLEL);
        while let Some((s, e, got)) = results.next().await {
            let bytes = got?.to_bytes();
            w.staging.write_bytes(s, bytes).await?;
            if let Some(base) = &mut w.base {
                for b in base.blocks(s, e) {
                    base.missing[b] = false;
                }
            }
        }
        if w.base.as_ref().is_some_and(Base::complete) {
            w.base = None;
        }
        Ok(())
    }

    /// Makes `[start, end)` of staging hold the object's bytes (for a read through the writer).
    pub(super) async fn fetch(&self, w: &mut WriteState, start: u64, end: u64) -> Result<()> {
        let runs = match &w.base {
            Some(b) => b.runs(start, end),
            None => return Ok(()),
        };
        self.fetch_ranges(w, runs).await
    }

    /// Before a write of `[start, end)`: fetches the blocks it covers partly.
    pub(super) async fn prepare_overwrite(
        &self,
        w: &mut WriteState,
        start: u64,
        end: u64,
    ) -> Result<()> {
        let edges = match &mut w.base {
            Some(b) => b.overwrite(start, end),
            None => return Ok(()),
        };
        self.fetch_ranges(w, edges).await
    }

    /// Before an upload: fetches everything still missing.
    pub(super) async fn fetch_all(&self, w: &mut WriteState) -> Result<()> {
        self.fetch(w, 0, u64::MAX).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_fetch_only_partly_covered_blocks() {
        let mut b = Base::new(5 * BLOCK + 10, None);
        // Wholly covers blocks 1 and 2, partly 0 and 3.
        let edges = b.overwrite(BLOCK / 2, 3 * BLOCK + 1);
        assert_eq!(edges, vec![(0, BLOCK), (3 * BLOCK, 4 * BLOCK)]);
        assert!(!b.missing[1] && !b.missing[2] && b.missing[0] && b.missing[3]);
        // An append past the end fetches nothing.
        assert!(b.overwrite(5 * BLOCK + 10, 6 * BLOCK).is_empty());
        // The short last block is one range up to the object's end.
        assert_eq!(
            b.runs(4 * BLOCK, u64::MAX),
            vec![(4 * BLOCK, 5 * BLOCK + 10)]
        );
    }

    #[test]
    fn runs_merge_up_to_the_limit_and_truncate_drops_blocks() {
        let mut b = Base::new(20 * BLOCK, None);
        let runs = b.runs(0, u64::MAX);
        assert_eq!(runs.len(), 3, "8 + 8 + 4 MiB: {runs:?}");
        assert!(runs.iter().all(|(s, e)| e - s <= RUN_MAX));
        b.truncate(BLOCK + 5);
        assert_eq!(b.runs(0, u64::MAX), vec![(0, BLOCK + 5)]);
        b.overwrite(0, BLOCK + 5);
        assert!(b.complete());
    }
}
