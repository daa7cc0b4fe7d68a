//! Every bad input gets one clear line naming the problem and the fix: no panic, no hang, no
//! secret in the output. Runs against the embedded server.

use crate::common::*;
use std::process::Command;
use std::time::Duration;

/// Runs `s3mount ARGS` with the backend's keys (or `env` overrides) and returns (exit ok, stderr).
fn run(b: &Backend, args: &[&str], env: &[(&str, Option<&str>)]) -> (bool, String) {
    let (code, err) = run_code(b, args, env);
    (code == Some(0), err)
}

/// [`run`], with the exit code.
fn run_code(b: &Backend, args: &[&str], env: &[(&str, Option<&str>)]) -> (Option<i32>, String) {
    let home = tempfile::tempdir().unwrap();
    let mut c = s3mount_cmd(b, home.path());
    c.args(args);
    for (k, v) in env {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    let out = run_with_deadline(c, Duration::from_secs(90));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!err.contains("panicked"), "panic: {err}");
    assert!(
        !err.contains(SECRET) && !err.contains(&b.secret),
        "secret leaked: {err}"
    );
    (out.status.code(), err)
}

fn fails_with(b: &Backend, args: &[&str], env: &[(&str, Option<&str>)], needle: &str) {
    let (ok, err) = run(b, args, env);
    assert!(!ok, "expected failure for {args:?}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(err.starts_with("s3mount: error: "), "{err}");
    assert!(err.contains(needle), "expected '{needle}' in: {err}");
}

/// Each kind of failure has its own exit code (docs/troubleshooting.md), so scripts and systemd
/// can tell a typo from an outage.
#[test]
fn exit_codes_tell_the_kind_of_failure() {
    let server = local_backend();
    let b = server.backend.clone();
    let mnt = tempfile::tempdir().unwrap();
    let m = mnt.path().to_str().unwrap();
    let missing = mnt.path().join("missing");
    let cases: [(&[&str], i32, &str); 5] = [
        (&["nope:bkt", m], 2, "unknown profile"),
        (
            &[&b.bucket, m, "-o", "no_such_option"],
            2,
            "unknown mount option",
        ),
        (&[&b.bucket, missing.to_str().unwrap()], 3, "does not exist"),
        (&["no-such-bucket-here", m], 4, "not found"),
        (
            &[&b.bucket, m, "--endpoint", "http://127.0.0.1:1"],
            4,
            "cannot reach",
        ),
    ];
    for (args, code, needle) in cases {
        let (got, err) = run_code(&b, args, &[]);
        assert_eq!(got, Some(code), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    let home = tempfile::tempdir().unwrap();
    let mut c = s3mount_cmd(&b, home.path());
    c.args(["serve", "--addr", "256.0.0.1:1"]);
    let out = run_with_deadline(c, Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(6), "serve on a bad address");
    let mut c = s3mount_cmd(&b, home.path());
    c.args(["serve", "--bucket", "b1", "--addr", "127.0.0.1:0"]);
    let out = run_with_deadline(c, Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(2), "serve with a bad bucket name");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("use 3 to 63 characters"),
        "names the length: {err}"
    );
}

/// An embedded server of the test's own (these tests are about the CLI, not the shared
/// backend, so they run the same whatever `S3MOUNT_TEST_ENDPOINT` says).
fn local_backend() -> Emulated {
    Emulated::start("")
}

#[test]
fn bad_inputs_name_the_problem_and_the_fix() {
    let server = local_backend();
    let b = server.backend.clone();
    let mnt = tempfile::tempdir().unwrap();
    let m = mnt.path().to_str().unwrap();
    let src = b.bucket.clone();

    fails_with(&b, &["nope:bkt", m], &[], "unknown profile 'nope'");
    fails_with(
        &b,
        &[&src, m],
        &[("AWS_ACCESS_KEY_ID", None), ("AWS_SECRET_ACCESS_KEY", None)],
        "has no access key and secret",
    );
    fails_with(
        &b,
        &["no-such-bucket-here", m],
        &[],
        "bucket 'no-such-bucket-here' not found",
    );
    fails_with(
        &b,
        &[&src, m],
        &[("AWS_SECRET_ACCESS_KEY", Some("wrong-secret"))],
        "access denied (HTTP 403)",
    );
    // A port nobody listens on: bind one, then close it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    fails_with(
        &b,
        &[&src, m, "--endpoint", &format!("http://127.0.0.1:{port}")],
        &[],
        "cannot reach endpoint",
    );
    fails_with(
        &b,
        &[&src, "/nonexistent/dir"],
        &[],
        "does not exist: create it",
    );
    let file = mnt.path().join("afile");
    std::fs::write(&file, "").unwrap();
    fails_with(&b, &[&src, file.to_str().unwrap()], &[], "not a directory");
    fails_with(
        &b,
        &[&src, m, "-o", "frobnicate"],
        &[],
        "unknown mount option 'frobnicate'",
    );
    fails_with(&b, &[&src, m, "--cache-size", "12Q"], &[], "bad size '12Q'");
    fails_with(&b, &["s3+://x", m], &[], "bad source");
    fails_with(
        &b,
        &[&src, m, "--endpoint", "ftp://host"],
        &[],
        "bad endpoint",
    );
}

#[test]
fn mountpoint_already_mounted_is_busy() {
    let server = local_backend();
    let b = server.backend.clone();
    let a = Area::with_backend("busy", b.clone());
    a.put("f", "x");
    let m = a.mount(&[]);
    fails_with(
        &b,
        &[&a.source(), m.path().to_str().unwrap()],
        &[],
        "is busy",
    );
    // The first mount is unharmed.
    assert_eq!(std::fs::read_to_string(m.join("f")).unwrap(), "x");
}

#[test]
fn profiles_from_aws_files_and_prefixed_env() {
    let server = local_backend();
    let b = server.backend.clone();
    let a = Area::with_backend("profiles", b.clone());
    a.put("hello.txt", "hi");
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(home.path().join(".aws")).unwrap();
    std::fs::write(
        home.path().join(".aws/credentials"),
        format!(
            "[p1]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
            b.access, b.secret
        ),
    )
    .unwrap();
    std::fs::write(
        home.path().join(".aws/config"),
        format!("[profile p1]\nregion = us-east-1\ns3 =\n  addressing_style = path\n  endpoint_url = {}\n", b.endpoint),
    )
    .unwrap();
    let mnt = tempfile::tempdir().unwrap();
    let mut c = Command::new(bin());
    c.env_clear()
        .env("HOME", home.path())
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .arg(format!("p1:{}", a.source()))
        .arg(mnt.path());
    let out = run_with_deadline(c, Duration::from_secs(60));
    let guard = MountGuard(mnt.path().to_path_buf());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(mnt.path().join("hello.txt")).unwrap(),
        "hi"
    );
    drop(guard);

    // Prefixed env beats the files: a wrong key in env makes the same mount fail.
    let mut c = Command::new(bin());
    c.env_clear()
        .env("HOME", home.path())
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("P1__AWS_SECRET_ACCESS_KEY", "wrong")
        .arg(format!("p1:{}", a.source()))
        .arg(mnt.path());
    let out = run_with_deadline(c, Duration::from_secs(60));
    let _guard = MountGuard(mnt.path().to_path_buf());
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("access denied"));
}

struct MountGuard(std::path::PathBuf);
impl Drop for MountGuard {
    fn drop(&mut self) {
        if s3mount::run::is_mountpoint(&self.0) {
            unmount(&self.0);
        }
    }
}

#[test]
fn serve_command_prints_endpoint_and_serves() {
    let src = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(src.path().join("sub")).unwrap();
    std::fs::write(src.path().join("sub/a.txt"), "imported").unwrap();
    let served = Served::start(
        "imp",
        &[
            "--bucket".into(),
            "made".into(),
            "--import".into(),
            format!("{}=imp", src.path().display()),
        ],
    );
    let be = served.backend.clone();
    let m = Mount::new(&be, "imp", &[]);
    assert_eq!(
        std::fs::read_to_string(m.join("sub/a.txt")).unwrap(),
        "imported"
    );
    let made = Mount::new(
        &Backend {
            bucket: "made".into(),
            ..be.clone()
        },
        "made",
        &[],
    );
    assert!(names(made.path()).is_empty());
}

#[test]
fn fstab_helper_passes_options_and_drops_mount_flags() {
    let server = local_backend();
    let b = server.backend.clone();
    let a = Area::with_backend("helper", b.clone());
    a.put("f.txt", "via fstab");
    let home = tempfile::tempdir().unwrap();
    let mnt = tempfile::tempdir().unwrap();
    let helper = concat!(env!("CARGO_MANIFEST_DIR"), "/mount-helper/mount.s3mount");
    let mut c = s3mount_cmd(&b, home.path());
    // As mount(8) calls it: SOURCE DIR -n -o OPTIONS.
    c.env("S3MOUNT_BIN", bin())
        .arg(helper)
        .arg(a.source())
        .arg(mnt.path())
        .args(["-n", "-o", "_netdev,ro,file_mode=600"]);
    let mut sh = Command::new("sh");
    sh.env_clear();
    for (k, v) in c.get_envs() {
        if let Some(v) = v {
            sh.env(k, v);
        }
    }
    sh.args(c.get_args());
    let out = run_with_deadline(sh, Duration::from_secs(60));
    let _guard = MountGuard(mnt.path().to_path_buf());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    use std::os::unix::fs::PermissionsExt;
    let md = std::fs::metadata(mnt.path().join("f.txt")).unwrap();
    assert_eq!(md.permissions().mode() & 0o777, 0o600);
    assert_eq!(
        std::fs::read_to_string(mnt.path().join("f.txt")).unwrap(),
        "via fstab"
    );
}

/// Waits until `cond` holds, checking every 50 ms, failing after `deadline`.
fn wait_until(deadline: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !cond() {
        assert!(start.elapsed() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn foreground_mount_unmounts_on_sigterm() {
    let mut fg = Foreground::start("fg");
    assert_eq!(std::fs::read_to_string(fg.mnt.join("f")).unwrap(), "x");
    fg.signal(libc::SIGTERM);
    let status = fg.exit("s3mount -f exits after SIGTERM");
    assert!(status.success(), "{status:?}");
    assert!(!s3mount::run::is_mountpoint(&fg.mnt), "unmounted");
}

/// `s3mount SOURCE MNT -f` of a fresh area holding `f` ("x") on a server of its own, running
/// once the mount is live; its log (stderr) goes to `log`. Unmounted (if still mounted) on drop.
struct Foreground {
    child: Option<std::process::Child>,
    /// The mount point, canonical.
    mnt: std::path::PathBuf,
    log: std::path::PathBuf,
    // Dropped in this order: unmount, then the directories, then the server.
    _guard: MountGuard,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
    _server: Emulated,
}

impl Foreground {
    fn start(name: &str) -> Self {
        let server = local_backend();
        let a = Area::with_backend(name, server.backend.clone());
        a.put("f", "x");
        let home = tempfile::tempdir().unwrap();
        let mnt = tempfile::tempdir().unwrap();
        let guard = MountGuard(mnt.path().to_path_buf());
        let log = home.path().join("stderr.log");
        let mut c = s3mount_cmd(&server.backend, home.path());
        c.arg(a.source()).arg(mnt.path()).arg("-f");
        let child = c
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let canon = std::fs::canonicalize(mnt.path()).unwrap();
        wait_until(Duration::from_secs(60), "the mount", || {
            s3mount::run::is_mountpoint(&canon)
        });
        Self {
            child: Some(child),
            mnt: canon,
            log,
            _guard: guard,
            _dirs: (home, mnt),
            _server: server,
        }
    }

    fn signal(&self, sig: i32) {
        let pid = self.child.as_ref().unwrap().id() as i32;
        // SAFETY: signalling the child we spawned.
        unsafe { libc::kill(pid, sig) };
    }

    /// The exit status, which must come within 30 s (`what` names the expectation).
    fn exit(&mut self, what: &str) -> std::process::ExitStatus {
        wait_exit(self.child.take().unwrap(), what)
    }
}

/// The exit status of `child`, which must come within 30 s (`what` names the expectation).
fn wait_exit(mut child: std::process::Child, what: &str) -> std::process::ExitStatus {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait()));
    rx.recv_timeout(Duration::from_secs(30))
        .expect(what)
        .unwrap()
}

/// The shipped binary carries no test double: the in-memory and fault-injecting stores are
/// compiled for unit tests only (the binary the tests run is built as shipped, without
/// `cfg(test)`).
#[test]
fn the_binary_has_no_test_stores() {
    let bytes = std::fs::read(bin()).unwrap();
    let has = |needle: &str| bytes.windows(needle.len()).any(|w| w == needle.as_bytes());
    assert!(
        has("SdkStore"),
        "positive control: the real store's symbols are there"
    );
    for name in ["MemoryStore", "FaultStore"] {
        assert!(!has(name), "{name} is in {}", bin());
    }
}

/// SIGTERM while a file is open cannot unmount at once (the mount is busy). It is not
/// forgotten: the mount goes away once the last file closes, without another signal.
#[test]
fn sigterm_while_busy_unmounts_once_the_last_file_closes() {
    let mut fg = Foreground::start("fgbusy");
    let open = std::fs::File::open(fg.mnt.join("f")).unwrap();
    fg.signal(libc::SIGTERM);
    // Still serving while the file is open.
    let mut s = String::new();
    std::io::Read::read_to_string(&mut &open, &mut s).unwrap();
    assert_eq!(s, "x");
    assert!(s3mount::run::is_mountpoint(&fg.mnt), "busy: still mounted");
    drop(open);
    let status = fg.exit("s3mount -f exits once the last file closed");
    assert!(status.success(), "{status:?}");
    assert!(!s3mount::run::is_mountpoint(&fg.mnt), "unmounted");
}

/// A plain unmount logs nothing alarming (fuser's own second unmount of a file system the kernel
/// already let go answered EINVAL and logged "Failed to umount filesystem" every time).
#[test]
fn a_plain_unmount_logs_no_failure() {
    let mut fg = Foreground::start("fgquiet");
    assert_eq!(std::fs::read_to_string(fg.mnt.join("f")).unwrap(), "x");
    unmount(&fg.mnt);
    let status = fg.exit("s3mount -f exits after the unmount");
    assert!(status.success(), "{status:?}");
    let text = std::fs::read_to_string(&fg.log).unwrap();
    assert!(
        !text.contains("WARN") && !text.contains("ERROR"),
        "an unmount logged a warning:\n{text}"
    );
}

/// Smaller bad inputs, each one line naming the problem (and never a secret): a mount point
/// with files in it, a broken section header or line in ~/.aws files, an option carrying a
/// secret, a port out of range.
#[test]
fn smaller_bad_inputs_name_the_problem() {
    let server = local_backend();
    let b = server.backend.clone();
    let mnt = tempfile::tempdir().unwrap();
    // Unmounts if a case below mounts after all.
    let _guard = MountGuard(mnt.path().to_path_buf());
    let m = mnt.path().to_str().unwrap();
    std::fs::write(mnt.path().join("local.txt"), "mine").unwrap();
    let (code, err) = run_code(&b, &[&b.bucket, m], &[]);
    assert_eq!(code, Some(3), "{err}");
    assert!(
        err.contains("is not empty") && err.contains("nonempty"),
        "{err}"
    );
    std::fs::remove_file(mnt.path().join("local.txt")).unwrap();

    let (code, err) = run_code(
        &b,
        &[&b.bucket, m, "-o", "secret_access_key=TOPSECRET123"],
        &[],
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("secret_access_key"), "{err}");
    assert!(
        !err.contains("TOPSECRET123"),
        "the value is never echoed: {err}"
    );

    let (code, err) = run_code(
        &b,
        &[&b.bucket, m, "--endpoint", "http://127.0.0.1:99999"],
        &[],
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("bad endpoint") && err.contains("port"),
        "{err}"
    );

    for (file, text, needle) in [
        ("config", "[profile p1\nregion = us-east-1\n", "config:1"),
        (
            "credentials",
            "[p1]\nAKIDEXAMPLESECRETLINE\n",
            "credentials:2",
        ),
    ] {
        let home = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(home.path().join(".aws")).unwrap();
        std::fs::write(home.path().join(".aws").join(file), text).unwrap();
        let mut c = s3mount_cmd(&b, home.path());
        c.arg(format!("p1:{}", b.bucket)).arg(m);
        let out = run_with_deadline(c, Duration::from_secs(30));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{file}: {err}");
        assert!(err.contains(needle), "{file}: names file and line: {err}");
        assert!(
            !err.contains("AKIDEXAMPLESECRETLINE"),
            "{file}: no line echoed: {err}"
        );
    }
}
