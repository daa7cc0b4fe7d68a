//! Command-line arguments exactly as typed. No defaults are decided here beyond clap's parsing;
//! `config::resolve` turns these plus files and env into one `MountConfig`.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "s3mount",
    version,
    about = "Mount an S3-compatible bucket as a local directory",
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub mount: MountArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the embedded S3-compatible server (for trials and tests; loopback by default).
    Serve(ServeArgs),
    /// Resolve SOURCE's profile, probe the server and print what it supports, then exit.
    Check(CheckArgs),
    /// Upload the bytes that mounts of SOURCE could not upload (pending in --cache-dir or kept
    /// in its recovered/), listing what stays and why.
    Recover(RecoverArgs),
}

#[derive(Debug, Args, Clone)]
pub struct RecoverArgs {
    /// The bucket the bytes belong to, as for mounting: `profile:bucket`, `s3://bucket`, ...
    pub source: String,
    /// Only list what is pending or kept; upload nothing.
    #[arg(long)]
    pub list: bool,
    /// Also upload copies of files that were still being written, and replace objects that
    /// changed on the server since (normally kept, never overwritten).
    #[arg(long)]
    pub force: bool,
    /// The cache directory the mounts used (default as for mounting).
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// Mount options, comma-separated, as for mounting (profile=, endpoint=, ...).
    #[arg(short = 'o', value_name = "OPTS")]
    pub options: Vec<String>,
    #[command(flatten)]
    pub s3: S3Args,
}

impl RecoverArgs {
    /// The same settings as mount arguments (the mount point is not used).
    pub fn to_mount_args(&self) -> MountArgs {
        MountArgs {
            source: Some(self.source.clone()),
            mountpoint: Some(PathBuf::from("/")),
            options: self.options.clone(),
            cache_dir: self.cache_dir.clone(),
            s3: self.s3.clone(),
            ..Default::default()
        }
    }
}

#[derive(Debug, Args, Clone)]
pub struct CheckArgs {
    /// What to check, as for mounting: `profile:bucket[/prefix]`, `s3://bucket`, ...
    pub source: String,
    /// Probe only read calls (no test object is written and deleted).
    #[arg(long)]
    pub read_only: bool,
    /// Mount options, comma-separated, as for mounting (profile=, endpoint=, signature=, ...).
    #[arg(short = 'o', value_name = "OPTS")]
    pub options: Vec<String>,
    #[command(flatten)]
    pub s3: S3Args,
    /// Log the probes to stderr (-v info, -vv debug).
    #[arg(short = 'v', long = "verbose", action = clap::ArgAction::Count)]
    pub verbose: u8,
}

impl CheckArgs {
    /// The same settings as mount arguments (the mount point is not used).
    pub fn to_mount_args(&self) -> MountArgs {
        MountArgs {
            source: Some(self.source.clone()),
            mountpoint: Some(PathBuf::from("/")),
            read_only: self.read_only,
            options: self.options.clone(),
            s3: self.s3.clone(),
            ..Default::default()
        }
    }
}

#[derive(Debug, Args, Default, Clone)]
pub struct MountArgs {
    /// What to mount: `bucket`, `profile:bucket[/prefix]`, `s3://bucket/prefix` or
    /// `s3+profile://bucket/prefix`.
    #[arg(required = true)]
    pub source: Option<String>,
    /// An existing empty directory to mount on.
    #[arg(required = true)]
    pub mountpoint: Option<PathBuf>,
    /// Stay in the foreground (logs to stderr) instead of daemonizing.
    #[arg(short = 'f', long)]
    pub foreground: bool,
    /// Mount options, comma-separated (the fstab form): ro, allow_other, uid=N, ...
    #[arg(short = 'o', value_name = "OPTS")]
    pub options: Vec<String>,
    /// Mount read-only (EROFS on every change); also `-o ro`.
    #[arg(long)]
    pub read_only: bool,
    /// Allow changes (the default); also `-o rw`. See docs/semantics.md.
    #[arg(long, conflicts_with = "read_only")]
    pub read_write: bool,
    /// Directory for spilled writes and for the bytes of failed uploads (default:
    /// $XDG_CACHE_HOME/s3mount, or /var/cache/s3mount for root).
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// HEAD every listed file for its stored mode/owner/mtime/symlink (one request each, in
    /// parallel); also `-o posix_metadata`.
    #[arg(long)]
    pub posix_metadata: bool,
    /// Bytes of a file being written held in memory before spilling to --cache-dir (e.g. 64M).
    #[arg(long)]
    pub write_buffer: Option<String>,
    /// Files larger than this are uploaded as multipart uploads, parts sent while writing
    /// (default 64M).
    #[arg(long)]
    pub multipart_threshold: Option<String>,
    /// Size of multipart parts, all equal but the last (default 8M; at least 5M).
    #[arg(long)]
    pub part_size: Option<String>,
    /// Most parts per upload (default 10000; some stores allow 1000).
    #[arg(long)]
    pub max_parts: Option<u32>,
    /// Upload every file in one PutObject (files up to 5 GiB); also `-o no_multipart`.
    #[arg(long)]
    pub no_multipart: bool,
    #[command(flatten)]
    pub s3: S3Args,
    /// Owner of every file (default: the mounting user).
    #[arg(long)]
    pub uid: Option<u32>,
    /// Group of every file (default: the mounting user's group).
    #[arg(long)]
    pub gid: Option<u32>,
    /// Permission bits of files, octal (default 644).
    #[arg(long)]
    pub file_mode: Option<String>,
    /// Permission bits of directories, octal (default 755).
    #[arg(long)]
    pub dir_mode: Option<String>,
    /// How long (seconds) metadata and negative lookups are trusted before asking S3 again.
    #[arg(long)]
    pub metadata_ttl: Option<String>,
    /// Memory for file data (page cache and prefetch together), e.g. 512M, 2G.
    #[arg(long)]
    pub cache_size: Option<String>,
    /// Where the daemon writes its log (default: ~/.cache/s3mount/s3mount.log).
    #[arg(long)]
    pub log_file: Option<PathBuf>,
    /// Serve Prometheus metrics on this address (e.g. 127.0.0.1:9100, path /metrics); also
    /// `-o metrics_addr=`.
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics_addr: Option<String>,
    /// More logging (-v info, -vv debug, -vvv trace).
    #[arg(short = 'v', long = "verbose", action = clap::ArgAction::Count)]
    pub verbose: u8,
}

/// The S3 side's settings given on the command line (or as `-o` options), overriding the
/// profile's. Shared by mounting and `check`.
#[derive(Debug, Args, Default, Clone)]
pub struct S3Args {
    /// Multipart upload: auto (detect), on, off (same as --no-multipart).
    #[arg(long)]
    pub multipart: Option<String>,
    /// ListObjects version: auto (v2, falling back to v1 when the server lacks it), 1 or 2.
    #[arg(long)]
    pub list_version: Option<String>,
    /// Server-side CopyObject for rename and metadata changes: auto (detect), on, off (GET -> PUT).
    #[arg(long)]
    pub copy: Option<String>,
    /// Request signature: auto (SigV4, SigV2 when the server refuses it), v4 or v2.
    #[arg(long)]
    pub signature: Option<String>,
    /// PEM file of CA certificates to trust besides the system's (also $AWS_CA_BUNDLE).
    #[arg(long)]
    pub ca_bundle: Option<String>,
    /// Do not check the server's TLS certificate (self-signed test servers only).
    #[arg(long)]
    pub no_verify_tls: bool,
    /// Profile to use when SOURCE names none (default: $AWS_PROFILE, then `default`).
    #[arg(long)]
    pub profile: Option<String>,
    /// Endpoint URL, overriding the profile's.
    #[arg(long)]
    pub endpoint: Option<String>,
    /// Signing region, overriding the profile's.
    #[arg(long)]
    pub region: Option<String>,
    /// `path`, `virtual` or `auto`.
    #[arg(long)]
    pub addressing_style: Option<String>,
    /// Seconds to wait per request attempt for the server's answer, and for more bytes of a
    /// body that stalled, before retrying (default 30); also `-o request_timeout=`.
    #[arg(long, value_name = "SECONDS")]
    pub request_timeout: Option<String>,
    /// Server-side encryption of objects written: `AES256` (SSE-S3) or `aws:kms` (SSE-KMS);
    /// also `-o sse=`.
    #[arg(long)]
    pub sse: Option<String>,
    /// KMS key id for `--sse aws:kms` (default: the bucket's key); also `-o sse_kms_key_id=`.
    #[arg(long)]
    pub sse_kms_key_id: Option<String>,
    /// Storage class of objects written (e.g. STANDARD_IA); also `-o storage_class=`.
    #[arg(long)]
    pub storage_class: Option<String>,
    /// Canned ACL of objects written (e.g. bucket-owner-full-control); also `-o acl=`.
    #[arg(long)]
    pub acl: Option<String>,
    /// The bucket is requester-pays: every request says so; also `-o requester_pays`.
    #[arg(long)]
    pub requester_pays: bool,
}

#[derive(Debug, Args, Clone)]
pub struct ServeArgs {
    /// Directory holding the buckets (created if missing; default: a new temporary directory).
    pub dir: Option<PathBuf>,
    /// Address to listen on; port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:9000")]
    pub addr: String,
    /// Behave like a gateway that lacks calls (answered 501 NotImplemented): comma-separated
    /// no-multipart, list-v1, no-copy, no-head-bucket, no-delete-objects, or the presets
    /// minio-no-multipart and seven-call (also $S3MOUNT_SERVE_EMULATE).
    #[arg(long)]
    pub emulate: Option<String>,
    /// Access key clients must sign with (default: $S3MOUNT_SERVE_ACCESS_KEY or `s3mount`).
    #[arg(long)]
    pub access_key: Option<String>,
    /// Secret key (default: $S3MOUNT_SERVE_SECRET_KEY or `s3mount-secret`). Prefer the env var:
    /// arguments are visible in `ps`.
    #[arg(long)]
    pub secret_key: Option<String>,
    /// Serve HTTPS with this PEM certificate (chain); needs --tls-key.
    #[arg(long)]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long)]
    pub tls_key: Option<PathBuf>,
    /// Create this bucket at start (repeatable).
    #[arg(long = "bucket")]
    pub buckets: Vec<String>,
    /// Copy a local directory tree into a bucket at start: `LOCAL_DIR=BUCKET[/prefix]`.
    #[arg(long = "import", value_name = "DIR=BUCKET")]
    pub imports: Vec<String>,
    /// More logging (-v info, -vv debug).
    #[arg(short = 'v', long = "verbose", action = clap::ArgAction::Count)]
    pub verbose: u8,
}
