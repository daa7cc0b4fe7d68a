//! Configuration: raw sources (CLI, env, s3mount's TOML, AWS shared files) resolved into one
//! validated [`MountConfig`].
//!
//! Precedence, first wins: CLI flags (and `-o` options), env vars, the TOML file, the AWS files.
//! For a named profile `p1` the env vars are the same names prefixed `P1__`; the unprefixed
//! names belong to the `default` profile only, so exporting `AWS_ACCESS_KEY_ID` never leaks into
//! a profile the user named explicitly.
//!
//! Raw and resolved are kept apart: `files.rs` only parses, `resolve.rs` decides.

pub mod files;
mod resolve;

pub use resolve::{Env, resolve_mount, resolve_s3};

pub use crate::store::settings::{Addressing, ObjectOptions, S3Settings, Secret};

use std::path::PathBuf;
use std::time::Duration;

/// Filesystem behaviour options.
#[derive(Debug, Clone)]
pub struct FsOptions {
    /// Owner of every inode.
    pub uid: u32,
    /// Group of every inode.
    pub gid: u32,
    /// Permission bits of files.
    pub file_mode: u16,
    /// Permission bits of directories.
    pub dir_mode: u16,
    /// How long metadata (attributes, directory entries, negative lookups) is trusted.
    pub metadata_ttl: Duration,
    /// Bytes of file data kept in memory: the page cache and the prefetch windows together.
    pub cache_size: u64,
    /// Refuse every change (EROFS).
    pub read_only: bool,
    /// Where written files spill to disk, and where bytes of failed uploads are kept
    /// (`recovered/`).
    pub cache_dir: PathBuf,
    /// Bytes of a file being written kept in memory before it spills to `cache_dir` (while the
    /// mount's memory budget has room).
    pub write_buffer: u64,
    /// The server and bucket (`endpoint bucket`): names this mount's pending uploads in
    /// `cache_dir`, so a later mount of the same bucket finishes them. Never credentials.
    pub origin: String,
    /// HEAD every listed file for its stored mode, owner, mtime and symlink-ness (one request
    /// per entry, in parallel); off: listings show the mount's defaults until a lookup.
    pub posix_metadata: bool,
    /// Use multipart upload for files above `multipart_threshold` (when the server has it).
    pub multipart: bool,
    /// Files larger than this go up as multipart uploads, their parts sent while writing.
    pub multipart_threshold: u64,
    /// Size of every part but the last (larger when a file needs more than `max_parts`).
    pub part_size: u64,
    /// Most parts in one upload (S3 allows 10,000; some stores 1,000).
    pub max_parts: u32,
}

impl FsOptions {
    /// The share of `cache_size` for file data in flight across all open files: readers'
    /// prefetched and current parts, and writers' in-memory buffers. Half: sequential readers
    /// need a deep window, and the page cache keeps the rest.
    pub fn prefetch_budget(&self) -> u64 {
        self.cache_size / 2
    }
    /// The share of `cache_size` for the page cache.
    pub fn page_cache_size(&self) -> u64 {
        self.cache_size - self.prefetch_budget()
    }
}

/// Kernel-facing mount options.
#[derive(Debug, Clone, Default)]
pub struct FuseOptions {
    pub allow_other: bool,
    pub allow_root: bool,
    pub auto_unmount: bool,
    /// Mount over a directory that has entries (hiding them while mounted); `-o nonempty`.
    pub nonempty: bool,
    /// Other kernel flags passed through (nosuid, nodev, noexec, noatime, ...).
    pub passthrough: Vec<String>,
}

/// One fully resolved mount.
#[derive(Debug, Clone)]
pub struct MountConfig {
    pub s3: S3Settings,
    /// Key prefix mounted as the root, empty or ending with `/`.
    pub prefix: String,
    /// The SOURCE as typed (shown in /proc/mounts).
    pub source: String,
    pub mountpoint: PathBuf,
    pub fs: FsOptions,
    pub fuse: FuseOptions,
    pub foreground: bool,
    pub log_file: Option<PathBuf>,
    pub verbose: u8,
    /// Where Prometheus metrics are served (`--metrics-addr`); `None`: nowhere.
    pub metrics_addr: Option<std::net::SocketAddr>,
}

/// A configuration problem, one line naming the problem and the fix.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// Parses sizes like `512M`, `2G`, `1048576`, `64KiB`.
pub fn parse_size(s: &str) -> Result<u64, ConfigError> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| {
        ConfigError(format!(
            "bad size '{s}': use a number with an optional K, M or G suffix, e.g. 512M"
        ))
    })?;
    let mult: u64 = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        "G" | "GB" | "GIB" => 1 << 30,
        "T" | "TB" | "TIB" => 1 << 40,
        _ => {
            return Err(ConfigError(format!(
                "bad size '{s}': unknown unit '{unit}', use K, M or G"
            )));
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| ConfigError(format!("bad size '{s}': too large")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(endpoint: Option<&str>, bucket: &str) -> S3Settings {
        S3Settings {
            profile: "default".into(),
            endpoint: endpoint.map(str::to_string),
            region: "us-east-1".into(),
            addressing: Addressing::Auto,
            access_key: "a".into(),
            secret_key: Secret::new("s"),
            session_token: None,
            verify_tls: true,
            ca_bundle: None,
            signature: None,
            max_retries: 3,
            request_timeout: std::time::Duration::from_secs(30),
            multipart: None,
            list_version: None,
            copy: None,
            object: Default::default(),
            bucket: bucket.into(),
        }
    }

    #[test]
    fn auto_addressing() {
        assert!(settings(Some("http://127.0.0.1:9000"), "b").path_style());
        assert!(settings(Some("http://localhost"), "b").path_style());
        assert!(settings(Some("http://[::1]"), "b").path_style());
        assert!(settings(Some("https://s3.example.com:8443"), "b").path_style());
        assert!(!settings(Some("https://oss-cn-hangzhou.aliyuncs.com"), "b").path_style());
        assert!(settings(Some("https://s3.example.com"), "with.dots").path_style());
        assert!(!settings(None, "b").path_style());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512M").unwrap(), 512 << 20);
        assert_eq!(parse_size("2G").unwrap(), 2 << 30);
        assert_eq!(parse_size("100").unwrap(), 100);
        assert_eq!(parse_size("64KiB").unwrap(), 64 << 10);
        assert!(parse_size("12Q").unwrap_err().0.contains("unknown unit"));
        assert!(parse_size("x").is_err());
    }

    #[test]
    fn secrets_do_not_print() {
        let s = settings(None, "b");
        let shown = format!("{s:?}");
        assert!(!shown.contains("secret_key: \"s\""), "{shown}");
        assert!(shown.contains("***"));
    }
}
