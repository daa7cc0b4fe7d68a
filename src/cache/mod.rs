//! Caches of file data and of lookups, both moka, both bounded.
//!
//! - [`PageCache`]: 1 MiB blocks of object data keyed by (object identity, block index), bounded
//!   in bytes. The identity hashes key and ETag together, so a changed object never serves old
//!   blocks, and blocks survive the inode being forgotten and looked up again.
//! - [`NegativeCache`]: names recently found absent, expiring after the metadata TTL, so tools
//!   that probe for many missing files (shells, git, python imports) do not cost a LIST+HEAD each.

use crate::store::Chunks;
use bytes::{Bytes, BytesMut};
use moka::sync::Cache;
use std::hash::{Hash, Hasher};
use std::time::Duration;

/// Cache block size. Parts of sequential reads are aligned to it, so each full block of a part
/// can be stored; 1 MiB matches the largest kernel read request.
pub const BLOCK: u64 = 1 << 20;

/// Identity of one version of one object.
pub fn object_id(key: &str, etag: Option<&str>) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    etag.hash(&mut h);
    h.finish()
}

#[derive(Clone)]
pub struct PageCache {
    blocks: Cache<(u64, u64), Chunks>,
}

impl PageCache {
    pub fn new(bytes: u64) -> Self {
        Self {
            blocks: Cache::builder()
                .max_capacity(bytes)
                .weigher(|_, v: &Chunks| v.len().try_into().unwrap_or(u32::MAX))
                .build(),
        }
    }

    /// Stores the full blocks inside `[start, start + data.len())`; a block cut by the end of
    /// the object (`size`) counts as full. Blocks share the part's buffers (no copy): a buffer
    /// is freed once every block using it is evicted, so memory can exceed the weighed size by
    /// at most the buffers straddling an evicted and a kept block.
    pub fn insert_range(&self, id: u64, start: u64, data: &Chunks, size: u64) {
        let end = start + data.len();
        let mut b = start.div_ceil(BLOCK) * BLOCK;
        while b < end {
            let block_end = (b + BLOCK).min(size);
            if block_end > end {
                break;
            }
            self.blocks
                .insert((id, b / BLOCK), data.sub(b - start, block_end - start));
            b += BLOCK;
        }
    }

    /// `[offset, end)` if every block of it is cached.
    pub fn get_range(&self, id: u64, offset: u64, end: u64) -> Option<Bytes> {
        let got = self.get_range_inner(id, offset, end);
        let m = crate::metrics::global();
        let counter = if got.is_some() {
            &m.page_cache_hits
        } else {
            &m.page_cache_misses
        };
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        got
    }

    fn get_range_inner(&self, id: u64, offset: u64, end: u64) -> Option<Bytes> {
        let first = offset / BLOCK;
        let last = (end - 1) / BLOCK;
        if first == last {
            let blk = self.blocks.get(&(id, first))?;
            let base = first * BLOCK;
            return (end - base <= blk.len()).then(|| blk.slice(offset - base, end - base));
        }
        let mut out = BytesMut::with_capacity((end - offset) as usize);
        for i in first..=last {
            let blk = self.blocks.get(&(id, i))?;
            let bs = i * BLOCK;
            let from = offset.max(bs) - bs;
            let to = end.min(bs + blk.len()) - bs;
            if from > to {
                return None;
            }
            out.extend_from_slice(&blk.slice(from, to));
        }
        (out.len() as u64 == end - offset).then(|| out.freeze())
    }

    /// Bytes held (approximate until moka runs its pending tasks).
    pub fn weighted_size(&self) -> u64 {
        self.blocks.run_pending_tasks();
        self.blocks.weighted_size()
    }
}

/// Names known to be absent: (parent inode, name).
#[derive(Clone)]
pub struct NegativeCache {
    names: Cache<(u64, String), ()>,
}

/// Most remembered absent names; each costs ~100 bytes.
const NEGATIVE_ENTRIES: u64 = 100_000;

impl NegativeCache {
    pub fn new(ttl: Duration) -> Self {
        Self {
            names: Cache::builder()
                .max_capacity(NEGATIVE_ENTRIES)
                .time_to_live(ttl.max(Duration::from_millis(1)))
                .build(),
        }
    }
    pub fn insert(&self, parent: u64, name: &str) {
        self.names.insert((parent, name.to_string()), ());
    }
    pub fn contains(&self, parent: u64, name: &str) -> bool {
        self.names.contains_key(&(parent, name.to_string()))
    }
    pub fn remove(&self, parent: u64, name: &str) {
        self.names.invalidate(&(parent, name.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_round_trip_and_partial_coverage_misses() {
        let c = PageCache::new(64 << 20);
        let size = 3 * BLOCK + 10;
        let data: Bytes = (0..size)
            .map(|i| (i % 253) as u8)
            .collect::<Vec<_>>()
            .into();
        // A part from the middle of block 0 to the end: block 0 is not whole, 1..3 are.
        c.insert_range(7, 100, &data.slice(100..).into(), size);
        assert!(c.get_range(7, 0, 10).is_none());
        let got = c.get_range(7, BLOCK, 3 * BLOCK + 10).unwrap();
        assert_eq!(got, data.slice(BLOCK as usize..));
        let got = c.get_range(7, BLOCK + 5, BLOCK + 9).unwrap();
        assert_eq!(got, data.slice((BLOCK + 5) as usize..(BLOCK + 9) as usize));
        assert!(c.get_range(8, BLOCK, BLOCK + 1).is_none(), "other identity");
    }

    #[test]
    fn capacity_is_in_bytes() {
        let c = PageCache::new(4 * BLOCK);
        let data: Bytes = vec![1u8; (16 * BLOCK) as usize].into();
        c.insert_range(1, 0, &data.into(), 16 * BLOCK);
        assert!(c.weighted_size() <= 4 * BLOCK);
    }
}
