//! The one integration harness: an S3 server (the embedded one in-process on loopback, or an
//! external endpoint from env), real FUSE mounts of the real binary, and guards that always
//! unmount.
//!
//! External endpoint: set `S3MOUNT_TEST_ENDPOINT`, `S3MOUNT_TEST_ACCESS_KEY`,
//! `S3MOUNT_TEST_SECRET_KEY` and `S3MOUNT_TEST_BUCKET` (created if missing). Each test works under
//! its own key prefix, so tests share a bucket safely and prefix mounts are exercised on every run.

#![allow(dead_code)]

pub mod gate;
pub mod sys;

pub use sys::*;

use bytes::Bytes;
use s3mount::config::{Addressing, S3Settings, Secret};
use s3mount::server::storage::Storage;
use s3mount::store::sdk::SdkStore;
use s3mount::store::{ObjectStore, PutOptions};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

pub const ACCESS: &str = "test-access";
pub const SECRET: &str = "test-secret-do-not-print";

/// Where tests send S3 requests.
#[derive(Clone)]
pub struct Backend {
    pub endpoint: String,
    pub access: String,
    pub secret: String,
    pub bucket: String,
    /// An external server (moto, MinIO, ...) rather than the embedded one.
    pub external: bool,
}

struct Shared {
    rt: tokio::runtime::Runtime,
    backend: Backend,
    _dir: Option<tempfile::TempDir>,
}

fn shared() -> &'static Shared {
    static S: OnceLock<Shared> = OnceLock::new();
    S.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .enable_all()
            .build()
            .unwrap();
        if let Ok(ep) = std::env::var("S3MOUNT_TEST_ENDPOINT") {
            let backend = Backend {
                endpoint: ep,
                access: std::env::var("S3MOUNT_TEST_ACCESS_KEY")
                    .unwrap_or_else(|_| "testing".into()),
                secret: std::env::var("S3MOUNT_TEST_SECRET_KEY")
                    .unwrap_or_else(|_| "testing".into()),
                bucket: std::env::var("S3MOUNT_TEST_BUCKET")
                    .unwrap_or_else(|_| "s3mount-test".into()),
                external: true,
            };
            let store = SdkStore::new(&settings(&backend, &backend.bucket)).expect("store");
            rt.block_on(store.create_bucket())
                .expect("create the test bucket");
            return Shared {
                rt,
                backend,
                _dir: None,
            };
        }
        // S3MOUNT_TEST_EMULATE runs the suite against an emulated gateway (see `s3mount serve
        // --emulate`), with no flags on the mounts: they must detect what is missing.
        let emulation = s3mount::server::emulate::Emulation::parse(
            &std::env::var("S3MOUNT_TEST_EMULATE").unwrap_or_default(),
        )
        .expect("S3MOUNT_TEST_EMULATE");
        let (backend, _running, dir) = start_embedded(&rt, "test", emulation, None);
        // Statics are never dropped: remove the server's directory when the test binary exits,
        // so a pass leaves nothing behind.
        let _ = SHARED_DIR.set(dir.path().to_path_buf());
        // SAFETY: registers a plain `extern "C" fn` with no captured state.
        unsafe { libc::atexit(remove_shared_dir) };
        Shared {
            rt,
            backend,
            _dir: Some(dir),
        }
    })
}

static SHARED_DIR: OnceLock<PathBuf> = OnceLock::new();

extern "C" fn remove_shared_dir() {
    if let Some(d) = SHARED_DIR.get() {
        let _ = std::fs::remove_dir_all(d);
    }
}

/// The embedded server on loopback (HTTPS with `tls`) over a new directory holding `bucket`.
/// The server runs until its task is aborted.
pub fn start_embedded(
    rt: &tokio::runtime::Runtime,
    bucket: &str,
    emulation: s3mount::server::emulate::Emulation,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> (Backend, s3mount::server::Running, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(dir.path()).unwrap();
    storage.create_bucket(bucket).unwrap();
    let scheme = if tls.is_some() { "https" } else { "http" };
    let running = rt
        .block_on(s3mount::server::start_with_tls(
            std::sync::Arc::new(storage),
            "127.0.0.1:0",
            ACCESS,
            SECRET,
            emulation,
            tls,
        ))
        .unwrap();
    let backend = Backend {
        endpoint: format!("{scheme}://{}", running.addr),
        access: ACCESS.into(),
        secret: SECRET.into(),
        bucket: bucket.into(),
        external: false,
    };
    (backend, running, dir)
}

pub fn backend() -> Backend {
    shared().backend.clone()
}

pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    shared().rt.block_on(f)
}

/// Runs `f` on the harness's runtime; the handle aborts it.
pub fn spawn<F>(f: F) -> tokio::task::AbortHandle
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    shared().rt.spawn(f).abort_handle()
}

pub fn settings(b: &Backend, bucket: &str) -> S3Settings {
    S3Settings {
        object: Default::default(),
        profile: "test".into(),
        endpoint: Some(b.endpoint.clone()),
        region: "us-east-1".into(),
        addressing: Addressing::Path,
        access_key: b.access.clone(),
        secret_key: Secret::new(b.secret.clone()),
        session_token: None,
        verify_tls: true,
        max_retries: 3,
        request_timeout: std::time::Duration::from_secs(30),
        multipart: None,
        list_version: None,
        copy: None,
        ca_bundle: None,
        signature: None,
        bucket: bucket.into(),
    }
}

/// A unique key prefix for one test, ending with `/`.
pub fn unique_prefix(name: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{name}-{}-{}/",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A test's corner of the bucket: puts go under its prefix.
pub struct Area {
    pub backend: Backend,
    pub store: SdkStore,
    pub prefix: String,
}

impl Area {
    pub fn new(name: &str) -> Self {
        Self::with_backend(name, backend())
    }

    /// An area on `backend` (a server of the test's own).
    pub fn with_backend(name: &str, backend: Backend) -> Self {
        let store = SdkStore::new(&settings(&backend, &backend.bucket)).expect("store");
        // As a mount does: finds the signature (and region) the server wants.
        block_on(store.check_bucket()).expect("bucket check");
        Self {
            backend,
            store,
            prefix: unique_prefix(name),
        }
    }

    pub fn put(&self, key: &str, data: impl Into<Bytes>) -> String {
        let full = format!("{}{key}", self.prefix);
        block_on(self.store.put(&full, data.into(), PutOptions::default()))
            .unwrap_or_else(|e| panic!("put {full}: {e}"))
            .unwrap_or_default()
    }

    /// HEAD of `key` under the area.
    pub fn head(
        &self,
        key: &str,
    ) -> Result<s3mount::store::ObjectInfo, s3mount::store::StoreError> {
        block_on(self.store.head(&format!("{}{key}", self.prefix)))
    }

    /// The object's bytes (empty if there is none).
    pub fn get(&self, key: &str) -> Vec<u8> {
        let full = format!("{}{key}", self.prefix);
        block_on(async {
            let size = match self.store.head(&full).await {
                Ok(i) => i.size,
                Err(_) => return Vec::new(),
            };
            self.store
                .get_range(&full, 0, size, None)
                .await
                .map(|c| c.to_bytes().to_vec())
                .unwrap_or_default()
        })
    }

    pub fn put_with(&self, key: &str, data: impl Into<Bytes>, opts: PutOptions) {
        let full = format!("{}{key}", self.prefix);
        block_on(self.store.put(&full, data.into(), opts)).unwrap();
    }

    /// Puts many small objects, 32 at a time.
    pub fn put_many(&self, keys: &[String], body: &'static [u8]) {
        use futures::StreamExt;
        block_on(async {
            futures::stream::iter(keys.iter().map(|k| {
                let full = format!("{}{k}", self.prefix);
                let store = &self.store;
                async move {
                    store
                        .put(&full, Bytes::from_static(body), PutOptions::default())
                        .await
                }
            }))
            .buffer_unordered(32)
            .for_each(|r| async move {
                r.unwrap();
            })
            .await;
        });
    }

    /// `bucket/prefix` as a SOURCE for the mount command.
    pub fn source(&self) -> String {
        format!(
            "{}/{}",
            self.backend.bucket,
            self.prefix.trim_end_matches('/')
        )
    }

    pub fn mount(&self, extra: &[&str]) -> Mount {
        Mount::new(&self.backend, &self.source(), extra)
    }
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_s3mount")
}

/// The mount command with a clean environment: only the test backend's keys, and a HOME with no
/// AWS files, so the machine's own configuration never leaks in.
pub fn s3mount_cmd(b: &Backend, home: &Path) -> Command {
    let mut c = Command::new(bin());
    c.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("AWS_ACCESS_KEY_ID", &b.access)
        .env("AWS_SECRET_ACCESS_KEY", &b.secret)
        .env("AWS_ENDPOINT_URL", &b.endpoint)
        .stdin(Stdio::null());
    c
}

/// Runs a command to completion with a deadline, so a hang fails the test instead of the run.
pub fn run_with_deadline(mut c: Command, deadline: Duration) -> Output {
    let child = c
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(deadline) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            // SAFETY: kill on a pid we spawned; at worst it already exited.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            panic!("command did not finish within {deadline:?}: {c:?}");
        }
    }
}

/// A live mount; dropping it unmounts (lazily if busy), so a failed test leaves no dead mount.
pub struct Mount {
    pub dir: tempfile::TempDir,
    home: tempfile::TempDir,
}

impl Mount {
    pub fn new(b: &Backend, source: &str, extra: &[&str]) -> Self {
        // The guard exists before the mount command runs: if the command fails, times out or
        // the test panics, dropping it still unmounts whatever got mounted.
        let m = Self {
            dir: tempfile::tempdir().unwrap(),
            home: tempfile::tempdir().unwrap(),
        };
        let mut c = s3mount_cmd(b, m.home.path());
        c.arg(source).arg(m.dir.path()).args(extra);
        // S3MOUNT_TEST_MOUNT_ARGS: flags every mount on the external endpoint gets (e.g.
        // `--list-version 1`); not the emulated gateways, whose tests are about detection.
        if let (true, Ok(more)) = (b.external, std::env::var("S3MOUNT_TEST_MOUNT_ARGS")) {
            c.args(more.split_whitespace());
        }
        let out = run_with_deadline(c, Duration::from_secs(60));
        assert!(
            out.status.success(),
            "mount failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        m
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn join(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    /// The pid of the daemon serving this mount (found by its command line).
    pub fn daemon_pid(&self) -> i32 {
        let want = self.dir.path().to_string_lossy().into_owned();
        std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
            .find(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                    let args: Vec<_> = c.split(|b| *b == 0).collect();
                    args.first().is_some_and(|a| a.ends_with(b"s3mount"))
                        && args.contains(&want.as_bytes())
                })
            })
            .expect("the mount's daemon")
    }

    /// The daemon's log (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.home.path().join(".cache/s3mount/s3mount.log"))
            .unwrap_or_default()
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        unmount(self.dir.path());
    }
}

/// Unmounts `p` (lazily if busy). A mount that cannot be removed fails the test (or, while a
/// test is already failing, is reported on stderr), never silently.
pub fn unmount(p: &Path) {
    let canon = match std::fs::canonicalize(p) {
        Ok(c) => c,
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => {
            // A dead FUSE mount (its daemon died): detach it.
            let _ = Command::new("umount").arg("-l").arg(p).status();
            return;
        }
        Err(_) => return,
    };
    if !s3mount::run::is_mountpoint(&canon) {
        return;
    }
    let ok = Command::new("fusermount3")
        .arg("-u")
        .arg(p)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
        || Command::new("umount")
            .arg("-l")
            .arg(p)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    if !ok && s3mount::run::is_mountpoint(&canon) {
        let msg = format!("could not unmount {}", p.display());
        if std::thread::panicking() {
            eprintln!("{msg}");
        } else {
            panic!("{msg}");
        }
    }
}

/// Deterministic pseudo-random bytes (xorshift), so failures reproduce.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Sorted names in a directory.
pub fn names(p: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(p)
        .unwrap_or_else(|e| panic!("read_dir {}: {e}", p.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// A `s3mount serve` process of its own (for tests that stop the server or use the CLI),
/// with keys `k`/`s`; killed on drop.
pub struct Served {
    pub backend: Backend,
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl Served {
    /// Starts `s3mount serve DIR --addr 127.0.0.1:0 EXTRA...`; `bucket` names the backend's.
    pub fn start(bucket: &str, extra: &[String]) -> Self {
        use std::io::BufRead;
        let dir = tempfile::tempdir().unwrap();
        let child = Command::new(bin())
            .arg("serve")
            .arg(dir.path())
            .args(["--addr", "127.0.0.1:0"])
            .args(extra)
            .env("S3MOUNT_SERVE_ACCESS_KEY", "k")
            .env("S3MOUNT_SERVE_SECRET_KEY", "s")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Killed on drop from here on, also if the line below never comes.
        let mut served = Self {
            backend: Backend {
                endpoint: String::new(),
                access: "k".into(),
                secret: "s".into(),
                bucket: bucket.into(),
                external: false,
            },
            child,
            _dir: dir,
        };
        let mut line = String::new();
        std::io::BufReader::new(served.child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        served.backend.endpoint = line
            .trim()
            .strip_prefix("endpoint: ")
            .expect("`endpoint:` line first")
            .to_string();
        served
    }

    /// Stops the server now.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.kill();
    }
}

/// An embedded server of its own, in process, emulating a gateway (`s3mount serve --emulate`),
/// with its request log. Stops when dropped.
pub struct Emulated {
    pub backend: Backend,
    pub log: std::sync::Arc<s3mount::server::emulate::RequestLog>,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Emulated {
    pub fn start(spec: &str) -> Self {
        Self::start_with_tls(spec, None)
    }

    /// [`Emulated::start`], serving HTTPS with `tls`.
    pub fn start_with_tls(spec: &str, tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
        let emulation = s3mount::server::emulate::Emulation::parse(spec).unwrap();
        let (backend, running, dir) = start_embedded(&shared().rt, "gateway", emulation, tls);
        Self {
            backend,
            log: running.log,
            task: running.task,
            _dir: dir,
        }
    }
}

impl Drop for Emulated {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Whether the shared embedded server emulates a gateway without `op` (S3MOUNT_TEST_EMULATE).
pub fn gateway_lacks(op: &str) -> bool {
    !backend().external
        && s3mount::server::emulate::Emulation::parse(
            &std::env::var("S3MOUNT_TEST_EMULATE").unwrap_or_default(),
        )
        .is_ok_and(|e| e.refuses(op))
}

/// `close(2)` with its result (std's `drop` ignores it).
pub fn close_checked(f: std::fs::File) -> std::io::Result<()> {
    let fd = std::os::fd::IntoRawFd::into_raw_fd(f);
    // SAFETY: closing the fd we own, once.
    if unsafe { libc::close(fd) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Waits (up to `deadline`) until `<cache>/recovered` holds `n` files; their paths. `context`
/// (e.g. the daemon's log) goes into the failure message.
pub fn wait_recovered(cache: &Path, n: usize, deadline: Duration, context: &str) -> Vec<PathBuf> {
    let recovered = cache.join("recovered");
    let start = std::time::Instant::now();
    loop {
        let found: Vec<PathBuf> = std::fs::read_dir(&recovered)
            .map(|d| {
                d.map(|e| e.unwrap().path())
                    .filter(|p| p.is_file())
                    .collect()
            })
            .unwrap_or_default();
        if found.len() >= n {
            return found;
        }
        assert!(
            start.elapsed() < deadline,
            "{} of {n} recovered files after {deadline:?}: the bytes were lost\n{context}",
            found.len()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// An s3fs-fuse mount of `a`'s prefix (read-write or read-only), unmounted on drop.
pub struct S3fsMount {
    pub dir: tempfile::TempDir,
    _home: tempfile::TempDir,
}

impl S3fsMount {
    pub fn new(a: &Area, writable: bool) -> Self {
        use std::os::unix::fs::PermissionsExt;
        let b = &a.backend;
        assert!(
            Command::new("s3fs").arg("--version").output().is_ok(),
            "s3fs-fuse is needed for the interop tests: apt-get install s3fs (tests/run-all.sh does)"
        );
        let m = Self {
            dir: tempfile::tempdir().unwrap(),
            _home: tempfile::tempdir().unwrap(),
        };
        let pw = m._home.path().join("passwd");
        std::fs::write(&pw, format!("{}:{}\n", b.access, b.secret)).unwrap();
        std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
        let out = Command::new("s3fs")
            .arg(format!("{}:/{}", b.bucket, a.prefix.trim_end_matches('/')))
            .arg(m.dir.path())
            .arg("-o")
            .arg(format!(
                "url={},use_path_request_style,passwd_file={},{},stat_cache_expire=1,use_xattr",
                b.endpoint,
                pw.display(),
                if writable { "rw" } else { "ro" }
            ))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let canon = std::fs::canonicalize(m.dir.path()).unwrap();
        let start = std::time::Instant::now();
        while !s3mount::run::is_mountpoint(&canon) {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "s3fs did not mount"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        m
    }

    pub fn join(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }
}

impl Drop for S3fsMount {
    fn drop(&mut self) {
        unmount(self.dir.path());
    }
}
