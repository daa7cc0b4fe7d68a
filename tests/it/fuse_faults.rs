//! The mount under a hostile server, through the fault gate (`common/gate.rs`) on loopback: a
//! server that accepts requests and never answers, bodies cut in the middle, uploads refused.
//! Reads fail with EIO instead of hanging; writes fail their `close` and keep the bytes; nothing
//! is ever silently lost.

use crate::common::gate::{Action, Gate};
use crate::common::*;
use s3mount::store::ObjectStore;
use std::io::Write;
use std::time::Duration;

/// Per-attempt timeout of these mounts, in seconds: short, so a silent server costs the test
/// seconds (three attempts with backoff), not minutes.
const TIMEOUT: &str = "1";
/// Longest any one operation here may take before the test calls it a hang.
const HANG: Duration = Duration::from_secs(60);

/// Runs `f` on a thread; its result, or a panic naming `what` if it did not return in [`HANG`].
fn within<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(HANG)
        .unwrap_or_else(|_| panic!("{what} hung for more than {HANG:?}"))
}

fn gated(a: &Area, gate: &Gate, extra: &[&str]) -> Mount {
    let mut args = vec!["--request-timeout", TIMEOUT];
    args.extend_from_slice(extra);
    Mount::new(&gate.backend(&a.backend), &a.source(), &args)
}

#[test]
fn fuse_read_from_a_server_that_never_answers_fails_with_eio() {
    let a = Area::new("fstall");
    let data = pseudo_random(1 << 20, 5);
    a.put("f.bin", data.clone());
    let gate = Gate::start(&a.backend.endpoint);
    let m = gated(&a, &gate, &[]);
    assert_eq!(std::fs::metadata(m.join("f.bin")).unwrap().len(), 1 << 20);
    gate.rule("GET", Action::Stall, None);
    let p = m.join("f.bin");
    let err = within("a read from a silent server", move || std::fs::read(p)).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    assert!(gate.count("GET") >= 2, "the silent GET was retried");
    // The log line names the operation and the file.
    let log = m.log();
    assert!(
        log.lines()
            .any(|l| l.contains("WARN") && l.contains("read failed") && l.contains("f.bin")),
        "{log}"
    );
    // The server answers again: the same file reads whole.
    gate.clear();
    assert_eq!(std::fs::read(m.join("f.bin")).unwrap(), data);
}

#[test]
fn fuse_a_body_cut_once_is_resumed_and_one_cut_every_time_fails_with_eio() {
    let a = Area::new("fcut");
    let data = pseudo_random(3 << 20, 6);
    a.put("f.bin", data.clone());
    a.put("g.bin", data.clone());
    let gate = Gate::start(&a.backend.endpoint);
    let m = gated(&a, &gate, &["--metadata-ttl", "0"]);
    // One GET breaks off after 100 KB: the rest is asked for again, the bytes are right.
    gate.rule("GET", Action::CutBody(100_000), Some(1));
    let p = m.join("f.bin");
    let got = within("a read of a cut body", move || std::fs::read(p)).unwrap();
    assert!(got == data, "bytes differ after a resumed body");
    let gets = gate.count("GET");
    // Every GET breaks off: the read fails, it does not hang or return short bytes. One read
    // with O_DIRECT (no kernel readahead or page cache: one request to the mount) of a file
    // not read before (nothing of it cached), so the time is the mount's own: the GET and its
    // resumes, each cut.
    gate.rule("GET", Action::CutBody(10_000), None);
    let p = m.join("g.bin");
    let err = within("a read of bodies that always break off", move || {
        use std::os::unix::fs::{FileExt, OpenOptionsExt};
        let f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECT)
            .open(p)?;
        let mut buf = vec![0u8; 1 << 20];
        f.read_at(&mut buf, 1 << 20)
    })
    .unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    assert!(gate.count("GET") > gets + 1, "resumed before failing");
}

#[test]
fn fuse_an_upload_to_a_server_that_never_answers_fails_close_and_keeps_the_bytes() {
    let a = Area::new("fput");
    let gate = Gate::start(&a.backend.endpoint);
    let cache = tempfile::tempdir().unwrap();
    let m = gated(&a, &gate, &["--cache-dir", cache.path().to_str().unwrap()]);
    gate.rule("PUT", Action::Stall, None);
    let p = m.join("precious.bin");
    let data = pseudo_random(100_000, 7);
    let bytes = data.clone();
    let closed = within("close of an upload to a silent server", move || {
        let mut f = std::fs::File::create(p).unwrap();
        f.write_all(&bytes).unwrap();
        close_checked(f)
    });
    let err = closed.expect_err("close must fail when the upload cannot finish");
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    // The handle's release tries once more, then keeps the bytes under recovered/.
    let kept = wait_recovered(cache.path(), 1, HANG, &m.log()).remove(0);
    assert!(kept.to_string_lossy().ends_with("precious.bin"), "{kept:?}");
    assert!(
        std::fs::read(&kept).unwrap() == data,
        "recovered bytes differ"
    );
}

/// A new handle opened while the last close of a file is still uploading (here: retrying an
/// upload the server refuses) joins the file's write state instead of a state being torn down:
/// its writes succeed, and its close uploads every byte, the failed close's included.
#[test]
fn fuse_open_during_the_last_close_upload_joins_the_file() {
    let a = Area::new("fjoin");
    let gate = Gate::start(&a.backend.endpoint);
    let cache = tempfile::tempdir().unwrap();
    let m = gated(&a, &gate, &["--cache-dir", cache.path().to_str().unwrap()]);
    let p = m.join("joined.txt");
    gate.rule("PUT", Action::SlowDown, None);
    let mut f = std::fs::File::create(&p).unwrap();
    f.write_all(b"first ").unwrap();
    let err = close_checked(f).expect_err("the upload is refused");
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    // close() has returned; the release that follows uploads again: wait until it has sent a PUT,
    // then open the file while that upload is still being retried.
    let puts = gate.count("PUT");
    gate.wait_for("PUT", puts + 1, HANG);
    let mut g = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
    gate.clear();
    g.write_all(b"second\n").expect("a write on the new handle");
    close_checked(g).expect("the new handle's close uploads");
    let full = format!("{}joined.txt", a.prefix);
    let info = block_on(a.store.head(&full)).unwrap();
    let body = block_on(s3mount::store::ObjectStore::get_range(
        &a.store, &full, 0, info.size, None,
    ))
    .unwrap()
    .to_bytes();
    assert_eq!(&body[..], b"first second\n");
    assert!(
        std::fs::read_dir(cache.path().join("recovered")).map_or(true, |mut d| d.next().is_none()),
        "nothing to recover: the bytes were uploaded"
    );
}

/// A close that failed, then at once an unmount (or a SIGTERM): the release that retries the
/// upload is still running when the session ends. The daemon waits for it, and the bytes end up
/// on local disk (`recovered/`), never dropped with the process.
#[test]
fn fuse_unmount_or_sigterm_right_after_a_failed_close_keeps_the_bytes() {
    for how in ["unmount", "sigterm"] {
        let a = Area::new("fumnt");
        let gate = Gate::start(&a.backend.endpoint);
        let cache = tempfile::tempdir().unwrap();
        let m = gated(&a, &gate, &["--cache-dir", cache.path().to_str().unwrap()]);
        gate.rule("PUT", Action::SlowDown, None);
        let data = pseudo_random(3 << 20, 12);
        let mut f = std::fs::File::create(m.join("last.bin")).unwrap();
        f.write_all(&data).unwrap();
        assert!(close_checked(f).is_err(), "the upload is refused");
        match how {
            "unmount" => unmount(m.path()),
            _ => {
                let pid = m.daemon_pid();
                // SAFETY: signalling the daemon of this test's mount.
                unsafe { libc::kill(pid, libc::SIGTERM) };
            }
        }
        let log = format!("{how}\n{}", m.log());
        let kept = wait_recovered(cache.path(), 1, HANG, &log).remove(0);
        assert!(
            std::fs::read(&kept).unwrap() == data,
            "{how}: recovered bytes differ"
        );
    }
}

/// `kill -9` of the daemon right after failed closes (a spilled file and a small one staged in
/// memory) and while a file is being written: the next mount with the same cache directory
/// uploads the files whose close had asked for it, keeps the half-written one in `recovered/`
/// (its log names key and path) and uploads nothing over it; `s3mount recover --force` then
/// uploads that one.
#[test]
fn fuse_kill_9_during_and_after_writes_then_the_next_mount_recovers() {
    let a = Area::new("fkill");
    let gate = Gate::start(&a.backend.endpoint);
    let cache = tempfile::tempdir().unwrap();
    let c = cache.path().to_str().unwrap().to_string();
    let args = ["--cache-dir", c.as_str(), "--write-buffer", "1M"];
    let m = gated(&a, &gate, &args);
    let (closed, small, half) = (
        pseudo_random(3 << 20, 21),
        pseudo_random(1000, 22),
        pseudo_random(2 << 20, 23),
    );
    // Open and half written: 2 MiB of it on disk past the 1 MiB buffer.
    let mut h = std::fs::File::create(m.join("half.bin")).unwrap();
    h.write_all(&half).unwrap();
    // Uploads are refused: each close fails. A second write handle stays open on each file,
    // so the daemon dies with the close's bytes not uploaded (no last close has moved them
    // to recovered/ yet).
    gate.rule("PUT", Action::SlowDown, None);
    let mut held = Vec::new();
    for (name, data) in [("closed.bin", &closed), ("small.txt", &small)] {
        let open = || {
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .open(m.join(name))
                .unwrap()
        };
        held.push(open());
        let mut f = open();
        f.write_all(data).unwrap();
        assert!(close_checked(f).is_err(), "{name}: the close fails");
    }
    let pid = m.daemon_pid();
    // SAFETY: killing the daemon of this test's mount.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    drop((h, held)); // on a dead mount
    drop(m);
    gate.clear();

    let m2 = gated(&a, &gate, &args);
    assert!(
        a.get("closed.bin") == closed,
        "the failed close's bytes were uploaded"
    );
    assert!(
        a.get("small.txt") == small,
        "the in-memory file's bytes were uploaded"
    );
    assert!(
        !m2.join("half.bin").exists(),
        "a half-written file is not uploaded"
    );
    let kept = wait_recovered(cache.path(), 1, HANG, &m2.log());
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert!(
        std::fs::read(&kept[0]).unwrap() == half,
        "kept bytes differ"
    );
    let log = m2.log();
    let name = kept[0].file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        log.lines()
            .any(|l| l.contains("half.bin") && l.contains(&name)),
        "the log names key and path:\n{log}"
    );
    drop(m2);

    let recover = |extra: &[&str]| {
        let home = tempfile::tempdir().unwrap();
        let mut cmd = s3mount_cmd(&gate.backend(&a.backend), home.path());
        cmd.arg("recover")
            .arg(a.source())
            .args(["--cache-dir", &c])
            .args(extra);
        run_with_deadline(cmd, HANG)
    };
    let out = recover(&["--list"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("half.bin"), "{text}");
    let out = recover(&[]);
    assert!(
        !out.status.success(),
        "half-written files stay without --force"
    );
    let out = recover(&["--force"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(a.get("half.bin") == half, "recover --force uploaded it");
    assert!(!kept[0].exists(), "an uploaded copy is removed");
}
