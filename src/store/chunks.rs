//! [`Chunks`]: object bytes as the network delivered them, without gluing them together.
//!
//! A ranged GET arrives as a sequence of buffers (hyper's reads). Copying them into one
//! contiguous buffer costs a full memcpy of every byte read; keeping the list lets a kernel read
//! that falls inside one buffer be answered with a zero-copy slice, and only reads that straddle
//! buffers pay a copy of their own bytes.

use bytes::{Bytes, BytesMut};

#[derive(Debug, Clone, Default)]
pub struct Chunks {
    segs: Vec<Bytes>,
    /// `starts[i]` = offset of `segs[i]` within the whole.
    starts: Vec<u64>,
    len: u64,
}

impl Chunks {
    pub fn push(&mut self, b: Bytes) {
        if b.is_empty() {
            return;
        }
        self.starts.push(self.len);
        self.len += b.len() as u64;
        self.segs.push(b);
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Index of the segment holding byte `off` (`off < len`).
    fn seg_of(&self, off: u64) -> usize {
        self.starts.partition_point(|&s| s <= off) - 1
    }

    /// Bytes `[from, to)` (clipped to the length): a zero-copy slice when they lie in one segment.
    pub fn slice(&self, from: u64, to: u64) -> Bytes {
        let to = to.min(self.len);
        if from >= to {
            return Bytes::new();
        }
        let i = self.seg_of(from);
        let s = self.starts[i];
        if to <= s + self.segs[i].len() as u64 {
            return self.segs[i].slice((from - s) as usize..(to - s) as usize);
        }
        let mut out = BytesMut::with_capacity((to - from) as usize);
        let mut j = i;
        while j < self.segs.len() && self.starts[j] < to {
            let s = self.starts[j];
            let a = from.max(s) - s;
            let b = to.min(s + self.segs[j].len() as u64) - s;
            out.extend_from_slice(&self.segs[j][a as usize..b as usize]);
            j += 1;
        }
        out.freeze()
    }

    /// The sub-range `[from, to)` as its own `Chunks`, sharing the buffers (no copy).
    pub fn sub(&self, from: u64, to: u64) -> Chunks {
        let to = to.min(self.len);
        let mut out = Chunks::default();
        if from >= to {
            return out;
        }
        let mut j = self.seg_of(from);
        while j < self.segs.len() && self.starts[j] < to {
            let s = self.starts[j];
            let a = from.max(s) - s;
            let b = to.min(s + self.segs[j].len() as u64) - s;
            out.push(self.segs[j].slice(a as usize..b as usize));
            j += 1;
        }
        out
    }

    /// All bytes in one buffer (copies unless there is a single segment).
    pub fn to_bytes(&self) -> Bytes {
        self.slice(0, self.len)
    }
}

impl From<Bytes> for Chunks {
    fn from(b: Bytes) -> Self {
        let mut c = Chunks::default();
        c.push(b);
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_within_and_across_segments() {
        let mut c = Chunks::default();
        for part in [&b"hello"[..], b"", b" wor", b"ld!"] {
            c.push(Bytes::copy_from_slice(part));
        }
        assert_eq!(c.len(), 12);
        assert_eq!(&c.slice(0, 5)[..], b"hello");
        assert_eq!(&c.slice(3, 9)[..], b"lo wor");
        assert_eq!(&c.slice(8, 100)[..], b"rld!");
        assert!(c.slice(12, 20).is_empty());
        let s = c.sub(4, 10);
        assert_eq!(s.len(), 6);
        assert_eq!(&s.to_bytes()[..], b"o worl");
        assert_eq!(&s.slice(1, 3)[..], b" w");
    }
}
