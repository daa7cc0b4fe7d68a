//! The on-S3 POSIX metadata format, shared with s3fs-fuse, rclone and goofys.
//!
//! Headers (user metadata, names without the `x-amz-meta-` prefix):
//! - `mtime`: seconds since the epoch, with a 9-digit fraction only when non-zero (as s3fs
//!   writes). Read leniently: integer, float with any fraction (rclone), RFC 3339.
//! - `mode`: the full `st_mode` in decimal (33188 = regular file 0644). A value that makes no
//!   sense as decimal but does as octal is read as octal (rclone `--metadata` writes octal).
//! - `uid`, `gid`: decimal.
//! - symlinks: the body is the target and `mode` has `S_IFLNK` (s3fs); geesefs' header
//!   `--symlink-target` is read too.
//! - special files (FIFO, socket, character and block device): a zero-byte object, the type in
//!   `mode`, the device number in `rdev` (decimal, the kernel's encoding), as s3fs writes them.
//! - `xattr`: extended attributes as s3fs-fuse stores them: `{"name":"base64 of the value",...}`,
//!   percent-encoded.
//! - `atime`, `ctime`: as `mtime` (s3fs). Absent, `ctime` is the object's `Last-Modified` (every
//!   change of data or attributes writes the object anew) and `atime` is `mtime`.
//!
//! Writing emits only what differs from the mount's defaults, so untouched objects stay plain.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub const MTIME: &str = "mtime";
pub const MODE: &str = "mode";
pub const UID: &str = "uid";
pub const GID: &str = "gid";
pub const ATIME: &str = "atime";
pub const CTIME: &str = "ctime";
pub const RDEV: &str = "rdev";
pub const XATTR: &str = "xattr";
/// geesefs' symlink header (`x-amz-meta---symlink-target`).
pub const GEESEFS_SYMLINK: &str = "--symlink-target";

pub const S_IFMT: u32 = 0o170_000;
pub const S_IFREG: u32 = 0o100_000;
pub const S_IFDIR: u32 = 0o040_000;
pub const S_IFLNK: u32 = 0o120_000;
pub const S_IFIFO: u32 = 0o010_000;
pub const S_IFCHR: u32 = 0o020_000;
pub const S_IFBLK: u32 = 0o060_000;
pub const S_IFSOCK: u32 = 0o140_000;
pub const S_ISGID: u32 = 0o2000;

/// Whether `t` (the `S_IFMT` bits) is a FIFO, socket or device.
pub fn is_special_type(t: u32) -> bool {
    matches!(t, S_IFIFO | S_IFCHR | S_IFBLK | S_IFSOCK)
}

/// POSIX attributes an object's headers carry; `None` where a header is absent or unreadable.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PosixMeta {
    pub mtime: Option<SystemTime>,
    /// Full `st_mode` (type and permission bits).
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub atime: Option<SystemTime>,
    pub ctime: Option<SystemTime>,
    /// Device number of a character or block device.
    pub rdev: Option<u32>,
    /// Extended attributes (`None`: no header; written only when some are set).
    pub xattrs: Option<std::collections::BTreeMap<String, Vec<u8>>>,
    /// Symlink target from a header (geesefs); s3fs symlinks keep it in the body instead.
    pub symlink_target: Option<String>,
}

impl PosixMeta {
    /// Reads the headers (names lower-cased, prefix removed).
    pub fn parse(h: &HashMap<String, String>) -> Self {
        Self {
            mtime: h.get(MTIME).and_then(|v| parse_mtime(v)),
            mode: h.get(MODE).and_then(|v| parse_mode(v)),
            uid: h.get(UID).and_then(|v| v.trim().parse().ok()),
            gid: h.get(GID).and_then(|v| v.trim().parse().ok()),
            atime: h.get(ATIME).and_then(|v| parse_mtime(v)),
            ctime: h.get(CTIME).and_then(|v| parse_mtime(v)),
            rdev: h.get(RDEV).and_then(|v| v.trim().parse().ok()),
            xattrs: h.get(XATTR).map(|v| parse_xattrs(v)),
            symlink_target: h.get(GEESEFS_SYMLINK).cloned(),
        }
    }

    /// The `S_IFMT` bits of a FIFO, socket or device, if the mode says one.
    pub fn special_type(&self) -> Option<u32> {
        self.mode
            .map(|m| m & S_IFMT)
            .filter(|t| is_special_type(*t))
    }

    /// Whether the object is a symlink (s3fs mode bits or the geesefs header).
    pub fn is_symlink(&self) -> bool {
        self.symlink_target.is_some() || self.mode.is_some_and(|m| m & S_IFMT == S_IFLNK)
    }

    /// Whether the mode says directory.
    pub fn is_dir(&self) -> bool {
        self.mode.is_some_and(|m| m & S_IFMT == S_IFDIR)
    }

    /// Permission bits, if stored.
    pub fn perm(&self) -> Option<u16> {
        self.mode.map(|m| (m & 0o7777) as u16)
    }

    /// Headers to write: only the fields that differ from `defaults`.
    pub fn to_headers(&self, defaults: &PosixMeta) -> HashMap<String, String> {
        let mut h = HashMap::new();
        if let Some(t) = self.mtime
            && Some(t) != defaults.mtime
        {
            h.insert(MTIME.to_string(), format_mtime(t));
        }
        if let Some(m) = self.mode
            && Some(m) != defaults.mode
        {
            h.insert(MODE.to_string(), m.to_string());
        }
        if let Some(u) = self.uid
            && Some(u) != defaults.uid
        {
            h.insert(UID.to_string(), u.to_string());
        }
        if let Some(g) = self.gid
            && Some(g) != defaults.gid
        {
            h.insert(GID.to_string(), g.to_string());
        }
        for (name, t) in [(ATIME, self.atime), (CTIME, self.ctime)] {
            if let Some(t) = t {
                h.insert(name.to_string(), format_mtime(t));
            }
        }
        if let Some(r) = self.rdev
            && r != 0
        {
            h.insert(RDEV.to_string(), r.to_string());
        }
        if let Some(x) = &self.xattrs
            && !x.is_empty()
        {
            h.insert(XATTR.to_string(), format_xattrs(x));
        }
        h
    }
}

/// s3fs-fuse's `xattr` header: `{"name":"base64",...}`, percent-encoded. Pairs that do not
/// parse are skipped (s3fs does the same).
pub fn parse_xattrs(v: &str) -> std::collections::BTreeMap<String, Vec<u8>> {
    use base64::Engine;
    let text = crate::s3rules::percent_decode(v.trim(), false);
    let body = text.trim().trim_start_matches('{').trim_end_matches('}');
    let mut out = std::collections::BTreeMap::new();
    for pair in body.split(',') {
        let Some((k, val)) = pair.split_once(':') else {
            continue;
        };
        let unquote = |s: &str| {
            let s = s.trim();
            s.strip_prefix('"')?.strip_suffix('"').map(str::to_string)
        };
        let (Some(k), Some(val)) = (unquote(k), unquote(val)) else {
            continue;
        };
        if let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(val) {
            out.insert(k, bytes);
        }
    }
    out
}

/// The `xattr` header for `x` (see [`parse_xattrs`]).
pub fn format_xattrs(x: &std::collections::BTreeMap<String, Vec<u8>>) -> String {
    use base64::Engine;
    let pairs: Vec<String> = x
        .iter()
        .map(|(k, v)| {
            format!(
                "\"{k}\":\"{}\"",
                base64::engine::general_purpose::STANDARD.encode(v)
            )
        })
        .collect();
    crate::s3rules::percent_encode(&format!("{{{}}}", pairs.join(",")), false)
}

/// The Content-Type a file named like `key` is uploaded with, from its extension (as s3fs-fuse
/// and rclone do, so a bucket served over HTTP shows pages and images); `None` for names
/// without a known extension (the server's default, binary).
pub fn content_type(key: &str) -> Option<String> {
    let name = key.rsplit('/').next().unwrap_or(key);
    name.contains('.')
        .then(|| mime_guess::from_path(name).first_raw().map(str::to_string))
        .flatten()
}

/// `st_mode` of a regular file with `perm`.
pub fn file_mode(perm: u16) -> u32 {
    S_IFREG | u32::from(perm)
}

/// `st_mode` of a directory with `perm`.
pub fn dir_mode(perm: u16) -> u32 {
    S_IFDIR | u32::from(perm)
}

/// `st_mode` of a symlink (permission bits 0777, as Linux shows them).
pub fn symlink_mode() -> u32 {
    S_IFLNK | 0o777
}

/// Seconds, with a 9-digit fraction only when non-zero (s3fs's format).
pub fn format_mtime(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    if d.subsec_nanos() == 0 {
        d.as_secs().to_string()
    } else {
        format!("{}.{:09}", d.as_secs(), d.subsec_nanos())
    }
}

/// Integer or fractional seconds (any number of digits), or RFC 3339.
pub fn parse_mtime(v: &str) -> Option<SystemTime> {
    let v = v.trim();
    if v.contains('-') && v.contains('T') {
        return parse_rfc3339(v);
    }
    let (secs, frac) = v.split_once('.').unwrap_or((v, ""));
    let secs: u64 = secs.parse().ok()?;
    if !frac.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let mut digits: String = frac.chars().take(9).collect();
    while digits.len() < 9 {
        digits.push('0');
    }
    let nanos: u32 = digits.parse().ok()?;
    Some(UNIX_EPOCH + Duration::new(secs, nanos))
}

/// `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`.
fn parse_rfc3339(v: &str) -> Option<SystemTime> {
    let (date, rest) = v.split_once(['T', 't'])?;
    let mut d = date.splitn(3, '-');
    let (y, mo, da): (i64, i64, i64) = (
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
    );
    let (time, offset_secs) = if let Some(t) = rest.strip_suffix(['Z', 'z']) {
        (t, 0i64)
    } else {
        let i = rest.rfind(['+', '-'])?;
        let (t, off) = rest.split_at(i);
        let sign = if off.starts_with('-') { -1 } else { 1 };
        let (oh, om) = off[1..].split_once(':')?;
        (
            t,
            sign * (oh.parse::<i64>().ok()? * 3600 + om.parse::<i64>().ok()? * 60),
        )
    };
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let mut p = hms.splitn(3, ':');
    let (h, mi, s): (i64, i64, i64) = (
        p.next()?.parse().ok()?,
        p.next()?.parse().ok()?,
        p.next()?.parse().ok()?,
    );
    let days = days_from_civil(y, mo, da);
    let secs = days * 86_400 + h * 3600 + mi * 60 + s - offset_secs;
    let mut digits: String = frac.chars().take(9).collect();
    while digits.len() < 9 {
        digits.push('0');
    }
    let nanos: u32 = digits.parse().ok()?;
    u64::try_from(secs)
        .ok()
        .map(|s| UNIX_EPOCH + Duration::new(s, nanos))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Decimal `st_mode`, or octal when the decimal reading has no valid file type but the octal
/// one does (rclone writes e.g. `100644`).
pub fn parse_mode(v: &str) -> Option<u32> {
    let v = v.trim();
    let valid = |m: u32| {
        (matches!(m & S_IFMT, S_IFREG | S_IFDIR | S_IFLNK) || is_special_type(m & S_IFMT))
            && m <= 0o177_777
    };
    let dec = v.parse::<u32>().ok();
    if let Some(m) = dec
        && valid(m)
    {
        return Some(m);
    }
    if let Ok(m) = u32::from_str_radix(v, 8)
        && valid(m)
    {
        return Some(m);
    }
    // Permission bits only (some tools): treat as a regular file's.
    dec.filter(|m| *m <= 0o7777).map(|m| S_IFREG | m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn s3fs_headers() {
        let m = PosixMeta::parse(&h(&[
            ("mtime", "1700000000"),
            ("mode", "33188"),
            ("uid", "1000"),
            ("gid", "1001"),
        ]));
        assert_eq!(
            m.mtime,
            Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000))
        );
        assert_eq!(m.mode, Some(0o100644));
        assert_eq!(m.perm(), Some(0o644));
        assert_eq!((m.uid, m.gid), (Some(1000), Some(1001)));
        assert!(!m.is_symlink() && !m.is_dir());
        let link = PosixMeta::parse(&h(&[("mode", "41471")])); // 0o120777
        assert!(link.is_symlink());
    }

    #[test]
    fn rclone_headers_float_mtime_and_octal_mode() {
        let m = PosixMeta::parse(&h(&[("mtime", "1700000000.123456"), ("mode", "100640")]));
        assert_eq!(
            m.mtime,
            Some(UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_000))
        );
        assert_eq!(m.mode, Some(0o100640));
        let d = PosixMeta::parse(&h(&[("mode", "040755")]));
        assert!(d.is_dir());
    }

    #[test]
    fn rfc3339_mtime() {
        let want = UNIX_EPOCH + Duration::new(1_700_000_000, 500_000_000);
        assert_eq!(parse_mtime("2023-11-14T22:13:20.5Z"), Some(want));
        assert_eq!(parse_mtime("2023-11-15T00:13:20.5+02:00"), Some(want));
        assert_eq!(parse_mtime("garbage"), None);
        assert_eq!(parse_mtime("12.3x"), None);
    }

    #[test]
    fn geesefs_symlink() {
        let m = PosixMeta::parse(&h(&[("--symlink-target", "../x")]));
        assert!(m.is_symlink());
        assert_eq!(m.symlink_target.as_deref(), Some("../x"));
    }

    /// Special files as s3fs-fuse writes them (decimal mode with the type bits; `rdev`), and
    /// `atime`/`ctime` as `mtime`.
    #[test]
    fn special_files_and_times_round_trip() {
        let h = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<HashMap<_, _>>()
        };
        let m = PosixMeta::parse(&h(&[
            ("mode", "8576"),
            ("rdev", "259"),
            ("ctime", "1796143514"),
        ]));
        assert_eq!(m.special_type(), Some(S_IFCHR));
        assert_eq!(m.rdev, Some(259));
        assert_eq!(
            m.ctime,
            Some(UNIX_EPOCH + Duration::from_secs(1_796_143_514))
        );
        assert_eq!(
            PosixMeta::parse(&h(&[("mode", "4480")])).special_type(),
            Some(S_IFIFO)
        );
        assert_eq!(
            PosixMeta::parse(&h(&[("mode", "33188")])).special_type(),
            None
        );
        let back = PosixMeta::parse(&m.to_headers(&PosixMeta::default()));
        assert_eq!(back, PosixMeta { mtime: None, ..m });
    }

    #[test]
    fn write_round_trip_only_what_differs() {
        let t = UNIX_EPOCH + Duration::new(1_700_000_000, 42);
        let m = PosixMeta {
            mtime: Some(t),
            mode: Some(file_mode(0o600)),
            uid: Some(0),
            gid: Some(5),
            ..Default::default()
        };
        let defaults = PosixMeta {
            uid: Some(0),
            gid: Some(0),
            mode: Some(file_mode(0o644)),
            ..Default::default()
        };
        let hdr = m.to_headers(&defaults);
        assert_eq!(
            hdr.get("mtime").map(String::as_str),
            Some("1700000000.000000042")
        );
        assert_eq!(hdr.get("mode").map(String::as_str), Some("33152"));
        assert!(!hdr.contains_key("uid"), "same as default");
        assert_eq!(hdr.get("gid").map(String::as_str), Some("5"));
        let back = PosixMeta::parse(&hdr);
        assert_eq!(
            (back.mtime, back.mode, back.gid),
            (Some(t), Some(0o100600), Some(5))
        );
        assert_eq!(format_mtime(UNIX_EPOCH + Duration::from_secs(7)), "7");
    }
}
