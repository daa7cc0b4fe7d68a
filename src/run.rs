//! Wiring a mount: resolve, check, daemonize, mount, wait for unmount or a signal.
//!
//! Daemonizing: the process forks before any thread exists (tokio and fuser start threads, and
//! fork keeps only the calling one). The child does all the work, mount included, and reports
//! through a pipe: `OK` once the mount is live, or the one-line error. The parent waits on the
//! pipe and exits 0 or prints the error and exits 1, so `s3mount` returns only when the mount
//! is usable or has failed, as `mount` does.

use crate::config::{ConfigError, MountConfig, resolve_mount};
use crate::fs::S3Fs;
use crate::fuse::FuseAdapter;
use crate::store::StoreError;
use crate::store::sdk::SdkStore;
use std::io::{BufRead, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::Path;
use std::time::Duration;

/// Why a mount (or `check`) failed: each variant one line naming the problem and the fix. The
/// kind decides the exit code (in `main.rs`); the daemon sends both to the waiting parent.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// Arguments, profile, files or environment.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The mount point: missing, not a directory, busy, a dead mount.
    #[error("{0}")]
    Mountpoint(String),
    /// The store refused or did not answer the bucket check (or a probe of `check`).
    #[error("{0}")]
    Store(String),
    /// The kernel side: /dev/fuse, fusermount3, permissions.
    #[error("{0}")]
    Fuse(String),
    /// This machine: fork, pipe, threads.
    #[error("{0}")]
    System(String),
}

impl MountError {
    /// The word that names the kind on the daemon's status pipe.
    fn kind(&self) -> &'static str {
        match self {
            MountError::Config(_) => "config",
            MountError::Mountpoint(_) => "mountpoint",
            MountError::Store(_) => "store",
            MountError::Fuse(_) => "fuse",
            MountError::System(_) => "system",
        }
    }

    /// Rebuilds an error the daemon reported as `ERR <kind> <message>`.
    fn from_status(kind: &str, msg: &str) -> Self {
        let msg = msg.to_string();
        match kind {
            "config" => MountError::Config(ConfigError(msg)),
            "mountpoint" => MountError::Mountpoint(msg),
            "store" => MountError::Store(msg),
            "fuse" => MountError::Fuse(msg),
            _ => MountError::System(msg),
        }
    }
}

/// How often a signalled unmount that found the mount busy is tried again.
const UNMOUNT_RETRY: Duration = Duration::from_millis(500);

/// Longest the bucket check may take before the mount gives up (retries included).
const CHECK_TIMEOUT: Duration = Duration::from_secs(30);

/// Turns a failed bucket check into one line naming the problem and the fix.
pub fn explain_store_error(cfg: &MountConfig, e: &StoreError) -> String {
    let s3 = &cfg.s3;
    let ep = s3
        .endpoint
        .clone()
        .unwrap_or_else(|| format!("AWS S3 ({})", s3.region));
    match e {
        StoreError::NoSuchBucket(b) => format!(
            "bucket '{b}' not found at {ep}: check the bucket name in '{}' or create the bucket",
            cfg.source
        ),
        StoreError::AccessDenied { status, .. } => format!(
            "access denied (HTTP {status}) to bucket '{}' at {ep}: check the access key and secret of profile '{}'{}",
            s3.bucket,
            s3.profile,
            match s3.signature {
                Some(v) => format!(", and its signature = v{v} (auto detects SigV2/SigV4)"),
                None => String::new(),
            }
        ),
        StoreError::Unreachable { reason, .. } if reason.starts_with("TLS") => format!(
            "cannot reach endpoint {ep}: {reason}: add the server's CA certificate with ca_bundle = \"/path/ca.pem\" in profile '{}' (or AWS_CA_BUNDLE / --ca-bundle), or set verify_tls = false (--no-verify-tls) for a test server",
            s3.profile
        ),
        StoreError::Unreachable { reason, .. } => format!(
            "cannot reach endpoint {ep} ({reason}): check the endpoint of profile '{}' and that the server is running",
            s3.profile
        ),
        StoreError::Service { status: 400, .. } => format!(
            "the server at {ep} refused bucket '{}' (HTTP 400 Bad Request): check the bucket name (3-63 letters, digits, '.', '-') and the addressing style",
            s3.bucket
        ),
        StoreError::Service { status: 301, .. } => format!(
            "bucket '{}' lives in another region: set the profile's region (or the endpoint of that region)",
            s3.bucket
        ),
        StoreError::WrongRegion(r) => format!(
            "bucket '{}' lives in region {r}: set region = \"{r}\" in profile '{}' (or --region {r})",
            s3.bucket, s3.profile
        ),
        other => format!("cannot use bucket '{}' at {ep}: {other}", s3.bucket),
    }
}

/// Runs the bucket check `check` within [`CHECK_TIMEOUT`]; a failure or silence becomes the
/// one-line cause and fix.
pub(crate) async fn check_in_time(
    cfg: &MountConfig,
    check: impl Future<Output = Result<(), StoreError>>,
) -> Result<(), MountError> {
    match tokio::time::timeout(CHECK_TIMEOUT, check).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(MountError::Store(explain_store_error(cfg, &e))),
        Err(_) => Err(MountError::Store(explain_store_error(
            cfg,
            &StoreError::Unreachable {
                endpoint: String::new(),
                reason: format!("no answer in {}s", CHECK_TIMEOUT.as_secs()),
            },
        ))),
    }
}

/// Checks the mount point: exists, is a directory, is not already a mount.
pub fn check_mountpoint(p: &Path) -> Result<(), MountError> {
    check_mountpoint_msg(p).map_err(MountError::Mountpoint)
}

fn check_mountpoint_msg(p: &Path) -> Result<(), String> {
    let shown = p.display();
    match std::fs::metadata(p) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(format!(
                "mountpoint {shown} does not exist: create it with `mkdir -p {shown}`"
            ));
        }
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => {
            return Err(format!(
                "mountpoint {shown} is a dead FUSE mount: clean it up with `fusermount3 -uz {shown}`"
            ));
        }
        Err(e) => return Err(format!("cannot use mountpoint {shown}: {e}")),
        Ok(m) if !m.is_dir() => {
            return Err(format!(
                "mountpoint {shown} is not a directory: choose a directory"
            ));
        }
        Ok(_) => {}
    }
    let canon =
        std::fs::canonicalize(p).map_err(|e| format!("cannot use mountpoint {shown}: {e}"))?;
    if is_mountpoint(&canon) {
        return Err(format!(
            "mountpoint {shown} is busy: something is already mounted there; unmount it first (`fusermount3 -u {shown}`) or choose another directory"
        ));
    }
    Ok(())
}

/// A mount point with entries would hide them while mounted: refused unless `-o nonempty`.
fn check_empty(p: &Path) -> Result<(), MountError> {
    let has_entries = std::fs::read_dir(p)
        .map(|mut d| d.next().is_some())
        .unwrap_or(false);
    if has_entries {
        return Err(MountError::Mountpoint(format!(
            "mountpoint {} is not empty (its files would be hidden while mounted): choose an empty directory, or add -o nonempty",
            p.display()
        )));
    }
    Ok(())
}

/// Whether `p` (canonical) is listed as a mount point in /proc/self/mountinfo.
pub fn is_mountpoint(p: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = p.to_string_lossy();
    info.lines().any(|l| {
        l.split(' ')
            .nth(4)
            .is_some_and(|mp| unescape_mountinfo(mp) == want)
    })
}

fn unescape_mountinfo(s: &str) -> String {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8)
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn log_path(cfg: &MountConfig) -> std::path::PathBuf {
    if let Some(p) = &cfg.log_file {
        return p.clone();
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("s3mount").join("s3mount.log")
}

fn init_logging(cfg: &MountConfig) {
    let level = match cfg.verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    // The SDK logs an ERROR for each retried request whose connection it cannot poison;
    // harmless (the connection is dropped with the failed request), and one per fault.
    const POISONING: &str = "aws_smithy_runtime::client::http::connection_poisoning";
    // fuser::session warns at every unmount: its own second unmount of a file system the
    // kernel already let go (EINVAL). The session ends only once the kernel unmounted, so the
    // line is noise; its real errors are logged at error level.
    let filter = tracing_subscriber::EnvFilter::try_from_env("S3MOUNT_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!(
            "s3mount={level},fuser::session=error,{POISONING}=off,warn"
        ))
    });
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if cfg.foreground && cfg.log_file.is_none() {
        use std::io::IsTerminal;
        let _ = builder
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(std::io::stderr)
            .try_init();
    } else {
        let path = log_path(cfg);
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        match std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
        {
            Ok(f) => {
                let _ = builder
                    .with_ansi(false)
                    .with_writer(std::sync::Mutex::new(f))
                    .try_init();
            }
            Err(_) => {
                let _ = builder.with_writer(std::io::stderr).try_init();
            }
        }
    }
}

/// `s3mount SOURCE MOUNTPOINT`: returns the message of a failure.
pub fn mount_main(args: crate::cli::MountArgs) -> Result<(), MountError> {
    let cfg = resolve_mount(&args, &crate::config::Env::from_process())?;
    check_mountpoint(&cfg.mountpoint)?;
    if !cfg.fuse.nonempty {
        check_empty(&cfg.mountpoint)?;
    }
    if cfg.foreground {
        return serve_mount(cfg, None);
    }
    let mut fds = [0; 2];
    // SAFETY: pipe writes two fds into the array we own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(MountError::System(format!(
            "cannot create a pipe: {}",
            std::io::Error::last_os_error()
        )));
    }
    // SAFETY: the fds were just created and are owned here only.
    let (rd, wr) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: no other thread exists yet (nothing above starts one), so fork is sound.
    match unsafe { libc::fork() } {
        -1 => Err(MountError::System(format!(
            "cannot fork: {}",
            std::io::Error::last_os_error()
        ))),
        0 => {
            drop(rd);
            // SAFETY: setsid has no preconditions; detaches from the terminal's session.
            unsafe { libc::setsid() };
            let mut status = std::fs::File::from(wr);
            let res = serve_mount(cfg, Some(&mut status));
            if let Err(e) = &res {
                let _ = writeln!(status, "ERR {} {e}", e.kind());
            }
            std::process::exit(if res.is_ok() { 0 } else { 1 });
        }
        _child => {
            drop(wr);
            // One line: `OK`, or `ERR <kind> <message>`. The daemon keeps its end open while it
            // runs, so read a line, not to EOF.
            let mut msg = String::new();
            let _ = std::io::BufReader::new(std::fs::File::from(rd)).read_line(&mut msg);
            let msg = msg.trim();
            if msg == "OK" {
                Ok(())
            } else if let Some((kind, text)) =
                msg.strip_prefix("ERR ").and_then(|m| m.split_once(' '))
            {
                Err(MountError::from_status(kind, text))
            } else {
                Err(MountError::System(format!(
                    "the s3mount daemon exited before the mount was ready; see {}",
                    log_path(&resolve_mount(&args, &crate::config::Env::from_process())?).display()
                )))
            }
        }
    }
}

/// Mounts and serves until unmounted. `ready` gets `OK` once the mount is live (daemon mode).
fn serve_mount(cfg: MountConfig, ready: Option<&mut std::fs::File>) -> Result<(), MountError> {
    init_logging(&cfg);
    // A daemon's stderr is /dev/null: a panic (a bug) goes to the log instead.
    std::panic::set_hook(Box::new(|info| tracing::error!("panic: {info}")));
    tune_malloc();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("s3mount-io")
        .build()
        .map_err(|e| MountError::System(format!("cannot start the async runtime: {e}")))?;
    let store = SdkStore::new(&cfg.s3).map_err(|e| MountError::Config(ConfigError(e)))?;
    let core = std::sync::Arc::new(S3Fs::new(
        std::sync::Arc::new(store),
        &cfg.prefix,
        cfg.fs.clone(),
    ));
    rt.block_on(check_in_time(&cfg, core.check()))?;
    // What a killed mount of this bucket left in the cache directory, before anything else
    // can change those objects.
    match rt.block_on(core.recover_pending()) {
        Ok(r) if r.uploaded.is_empty() && r.kept.is_empty() => {}
        Ok(r) => tracing::warn!(
            uploaded = r.uploaded.len(),
            kept = r.kept.len(),
            "finished the uploads of a previous mount that ended abruptly (kept copies are in {}/recovered)",
            cfg.fs.cache_dir.display()
        ),
        Err(e) => {
            tracing::error!(cache_dir = %cfg.fs.cache_dir.display(), error = %e, "cannot look for the pending uploads of previous mounts; run `s3mount recover` later")
        }
    }

    let mut options = vec![
        fuser::MountOption::FSName(cfg.source.clone()),
        fuser::MountOption::Subtype("s3mount".into()),
        fuser::MountOption::DefaultPermissions,
        fuser::MountOption::NoDev,
        fuser::MountOption::NoSuid,
    ];
    if cfg.fs.read_only {
        options.push(fuser::MountOption::RO);
    }
    if cfg.fuse.auto_unmount {
        options.push(fuser::MountOption::AutoUnmount);
    }
    for p in &cfg.fuse.passthrough {
        options.push(fuser::MountOption::CUSTOM(p.clone()));
    }
    let mut fcfg = fuser::Config::default();
    fcfg.mount_options = options;
    fcfg.acl = if cfg.fuse.allow_other {
        fuser::SessionACL::All
    } else if cfg.fuse.allow_root {
        fuser::SessionACL::RootAndOwner
    } else {
        fuser::SessionACL::Owner
    };
    // Replies are sent from tokio tasks, so few session threads suffice to keep the queue moving.
    fcfg.n_threads = Some(2);
    fcfg.clone_fd = true;
    if let Some(addr) = cfg.metrics_addr {
        let listener = std::net::TcpListener::bind(addr)
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .map_err(|e| {
                MountError::Config(ConfigError(format!(
                    "cannot serve metrics on {addr}: {e}; pick a free address with --metrics-addr"
                )))
            })?;
        let gauges = core.clone();
        rt.spawn(async move {
            match tokio::net::TcpListener::from_std(listener) {
                Ok(l) => crate::metrics::serve(l, move || gauges.gauges()).await,
                Err(e) => tracing::error!(error = %e, "metrics endpoint failed"),
            }
        });
        tracing::info!(%addr, "serving metrics on /metrics");
    }
    let adapter = FuseAdapter::new(core.clone(), rt.handle().clone());
    let tasks = adapter.tasks();
    let mut session = fuser::Session::new(adapter, &cfg.mountpoint, &fcfg).map_err(|e| {
        MountError::Fuse(format!(
            "cannot mount on {}: {e}; check that /dev/fuse exists and fuse3 is installed",
            cfg.mountpoint.display()
        ))
    })?;
    tracing::info!(source = %cfg.source, mountpoint = %cfg.mountpoint.display(), "mounted");
    let mut unmounter = session.unmount_callable();
    let mountpoint = cfg.mountpoint.clone();
    rt.spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::hangup()),
        ) else {
            return;
        };
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
            _ = hup.recv() => {},
        }
        tracing::info!("signal received: unmounting");
        // A busy mount (a file still open) refuses to unmount: the request stands, and is
        // tried again until the last file has closed. fuser's unmounter gives up its mount
        // after one try, so the retries unmount the path themselves.
        if let Err(e) = unmounter.unmount() {
            tracing::warn!(error = %e, "cannot unmount yet (files open?): unmounting once they are closed");
            while let Err(e) = unmount_path(&mountpoint) {
                tracing::debug!(error = %e, "still busy");
                tokio::time::sleep(UNMOUNT_RETRY).await;
            }
        }
    });
    if let Some(w) = ready {
        let _ = writeln!(w, "OK");
        let _ = w.flush();
        detach_stdio();
    }
    let ended = session.run();
    // Unmounted (or the kernel went away): requests still running, such as a release retrying
    // an upload, finish before the process ends; then the bytes of every file whose upload
    // never succeeded are kept on local disk.
    tasks.close();
    let drain = drain_deadline(&cfg);
    if !tasks.is_empty() {
        tracing::warn!(
            running = tasks.len(),
            "unmounted with requests still running (uploads): waiting up to {}s for them",
            drain.as_secs()
        );
    }
    let drained = rt.block_on(async { tokio::time::timeout(drain, tasks.wait()).await });
    if drained.is_err() {
        tracing::warn!(
            running = tasks.len(),
            "requests still running {}s after the unmount; keeping what is unsaved",
            drain.as_secs()
        );
    }
    rt.block_on(core.shutdown());
    rt.shutdown_timeout(Duration::from_secs(1));
    ended.map_err(|e| MountError::Fuse(format!("the FUSE session ended with an error: {e}")))?;
    Ok(())
}

/// How long the end of a session waits for requests still running: enough for an upload that
/// retries every attempt to its timeout (attempts x timeout, twice: a close's flush and its
/// release), plus a margin for backoff.
fn drain_deadline(cfg: &MountConfig) -> Duration {
    let attempts = cfg.s3.max_retries.max(1) + 1;
    cfg.s3.request_timeout * attempts * 2 + Duration::from_secs(30)
}

/// Unmounts `p` (not lazily: fails with EBUSY while files are open). As root with umount2,
/// else through fusermount3.
fn unmount_path(p: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(p.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
    // SAFETY: a valid C string; umount2 only reads it.
    if unsafe { libc::umount2(c.as_ptr(), 0) } == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    if err.raw_os_error() != Some(libc::EPERM) {
        return Err(err);
    }
    let ok = std::process::Command::new("fusermount3")
        .arg("-u")
        .arg("-q")
        .arg(p)
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok { Ok(()) } else { Err(err) }
}

/// Keeps freed receive buffers in the heap instead of returning them to the kernel at once:
/// every GET fills megabytes of fresh buffers, and with glibc's defaults each one is a new
/// mmap whose pages fault in and are zeroed (measured at ~8% of the mount's CPU). Bounded:
/// memory above the trim threshold still goes back.
fn tune_malloc() {
    /// Allocations below this come from the heap (glibc's ceiling is 32 MiB).
    const MMAP_THRESHOLD: i32 = 32 << 20;
    /// Free heap above this is returned to the kernel.
    const TRIM_THRESHOLD: i32 = 128 << 20;
    // SAFETY: mallopt only changes allocator tuning; called before the runtime starts threads.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
    }
}

/// Points stdin/stdout/stderr at /dev/null once the daemon no longer reports to the terminal.
fn detach_stdio() {
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        use std::os::fd::AsRawFd;
        for fd in 0..3 {
            // SAFETY: dup2 onto the standard fds, with a valid open fd as source.
            unsafe { libc::dup2(null.as_raw_fd(), fd) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape_mountinfo("/mnt/a\\040b"), "/mnt/a b");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
    }

    #[test]
    fn mountpoint_checks() {
        let d = tempfile::tempdir().unwrap();
        let missing = d.path().join("nope");
        assert!(
            check_mountpoint(&missing)
                .unwrap_err()
                .to_string()
                .contains("does not exist")
        );
        let file = d.path().join("f");
        std::fs::write(&file, b"").unwrap();
        assert!(
            check_mountpoint(&file)
                .unwrap_err()
                .to_string()
                .contains("not a directory")
        );
        assert!(check_mountpoint(d.path()).is_ok());
        assert!(
            check_mountpoint(Path::new("/proc"))
                .unwrap_err()
                .to_string()
                .contains("busy")
        );
    }
}
