//! Rules of S3 that the embedded server (shipped) and the in-memory test store both follow:
//! listing order and paging over a sorted map, and the multipart ETag. A leaf module, so that
//! neither depends on the other.
//!
//! Listing follows S3: keys in byte order, grouped at the delimiter into common prefixes, each
//! prefix counted once toward `max_keys`, and the page token is the last key or prefix returned
//! (a ListObjects v1 marker), so a page never repeats a prefix the previous page ended with.

use md5::Digest;
use std::collections::BTreeMap;
use std::ops::Bound;

/// One listed entry before it is turned into a page.
pub enum Listed<'a, V> {
    Object(&'a str, &'a V),
    Prefix(String),
}

/// The smallest string greater than every string that starts with `s` (for seeking past a
/// common prefix). `None` when no such string exists (all bytes 0xFF does not occur in UTF-8).
fn successor(s: &str) -> Option<String> {
    let mut chars: Vec<char> = s.chars().collect();
    while let Some(c) = chars.pop() {
        if let Some(next) = char::from_u32(c as u32 + 1) {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

/// Walks `map` as S3 lists it. Returns the entries and the token for the next page.
pub fn paginate<'a, V>(
    map: &'a BTreeMap<String, V>,
    prefix: &str,
    delimiter: Option<&str>,
    start: Option<&str>,
    max_keys: usize,
) -> (Vec<Listed<'a, V>>, Option<String>) {
    let mut out = Vec::new();
    let mut lower: Bound<String> = match start {
        Some(s) if s >= prefix => Bound::Excluded(s.to_string()),
        _ => Bound::Included(prefix.to_string()),
    };
    // A token that is itself a common prefix: resume after everything below it.
    if let (Some(s), Some(d)) = (start, delimiter)
        && s.ends_with(d)
        && s.len() > prefix.len()
        && let Some(succ) = successor(s)
    {
        lower = Bound::Included(succ);
    }
    let mut last: Option<String> = None;
    'outer: loop {
        let mut iter = map.range::<String, _>((lower.clone(), Bound::Unbounded));
        loop {
            let Some((key, value)) = iter.next() else {
                break 'outer;
            };
            if !key.starts_with(prefix) {
                break 'outer;
            }
            if out.len() >= max_keys {
                return (out, last);
            }
            let rest = &key[prefix.len()..];
            if let Some(d) = delimiter.filter(|d| !d.is_empty())
                && let Some(i) = rest.find(d)
            {
                let cp = key[..prefix.len() + i + d.len()].to_string();
                last = Some(cp.clone());
                out.push(Listed::Prefix(cp.clone()));
                match successor(&cp) {
                    Some(succ) => {
                        lower = Bound::Included(succ);
                        continue 'outer;
                    }
                    None => break 'outer,
                }
            }
            last = Some(key.clone());
            out.push(Listed::Object(key, value));
        }
    }
    (out, None)
}

/// The ETag S3 gives a multipart object: MD5 of the parts' MD5s, then `-<count>` (hex, no
/// quotes).
pub fn multipart_etag(part_md5s: &[[u8; 16]]) -> String {
    let mut h = md5::Md5::new();
    for m in part_md5s {
        h.update(m);
    }
    format!("{}-{}", hex::encode(h.finalize()), part_md5s.len())
}
