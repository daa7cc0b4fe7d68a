//! Rules of S3 that the embedded server (shipped) and the in-memory test store both follow:
//! listing order and paging over a sorted map, and the multipart ETag; and percent-encoding as
//! S3 clients write it (query strings, s3fs's `xattr` header). A leaf module, so that none of
//! its users depends on another.
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

/// Percent-encodes every byte of `s` but the unreserved ones (`A-Za-z0-9-_.~`), and `/` when
/// `keep_slash` (a key in a path).
pub fn percent_encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'_' | b'.' | b'~')
            || (keep_slash && b == b'/')
        {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Percent-decodes `s` (`%XX`; a `%` not followed by two hex digits stays as it is);
/// `plus_as_space`: a query string's `+` is a space (not in header values).
pub fn percent_decode(s: &str, plus_as_space: bool) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (
            b[i],
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (b'+', _, _) if plus_as_space => {
                out.push(b' ');
                i += 1;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
