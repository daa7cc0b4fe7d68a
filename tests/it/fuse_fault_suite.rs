//! The fault suite: one mixed workload on a real mount (create, write, overwrite in the middle,
//! append, read back) through the fault gate, which faults a deterministic share of every kind
//! of request at once: 503 SlowDown on uploads and HEADs, NoSuchUpload on multipart
//! completions, GET bodies reset in the middle, connections reset without an answer (a killed
//! server). A local directory takes the same operations as the reference.
//!
//! What must hold: reads return the reference's bytes or an error, never other bytes; a close
//! that succeeded left the reference's bytes on the server; a close that failed left them on
//! the server (a later retry) or in `recovered/` once the mount is gone: zero bytes lost. And
//! since each rule faults every N-th request of its kind (N >= 3), no request is faulted on all
//! its attempts: retries, resumes and restarts absorb every fault, and the application sees no
//! error at all. The totals (requests, faulted, retries, bytes verified, errors the application saw, bytes
//! lost) are printed for the record.

use crate::common::gate::{Action, Gate};
use crate::common::*;
use std::collections::{BTreeMap, HashMap};
use std::io::{Seek, SeekFrom, Write};
use std::time::Duration;

/// File sizes: empty, tiny, in memory, spilled, and multipart (above the 5 MiB threshold).
const SIZES: [usize; 8] = [
    0,
    1,
    4096,
    100_000,
    1 << 20,
    3 << 20,
    (6 << 20) + 123,
    11 << 20,
];

/// What one file should hold: every version a reader may see (the last one the application
/// wrote, and the one before if that close failed).
struct Expect {
    versions: Vec<Vec<u8>>,
    close_failed: bool,
}

#[test]
fn fuse_fault_suite_loses_nothing_under_a_share_of_every_fault() {
    let a = Area::new("fsuite");
    let gate = Gate::start(&a.backend.endpoint);
    let cache = tempfile::tempdir().unwrap();
    let reference = tempfile::tempdir().unwrap();
    let c = cache.path().to_str().unwrap();
    let m = Mount::new(
        &gate.backend(&a.backend),
        &a.source(),
        &[
            "--request-timeout",
            "2",
            "--cache-dir",
            c,
            "--multipart-threshold",
            "5M",
            "--part-size",
            "5M",
            "--write-buffer",
            "2M",
            "--metadata-ttl",
            "0",
        ],
    );
    gate.rule_every("*", None, Action::Reset, 13);
    gate.rule_every("PUT", None, Action::SlowDown, 4);
    gate.rule_every("POST", Some("uploadId="), Action::NoSuchUpload, 3);
    gate.rule_every("GET", None, Action::ResetBody(40_000), 4);
    gate.rule_every("HEAD", None, Action::SlowDown, 5);

    let mut app_errors = 0usize;
    let mut files: BTreeMap<String, Expect> = BTreeMap::new();
    // Writes: each file whole, then a patch in the middle and an append on some.
    for (i, &size) in SIZES.iter().enumerate() {
        let name = format!("f{i}");
        let data = pseudo_random(size, 100 + i as u64);
        std::fs::write(reference.path().join(&name), &data).unwrap();
        let mut f = std::fs::File::create(m.join(&name)).unwrap();
        let res = f.write_all(&data).and_then(|()| close_checked(f));
        if let Err(e) = &res {
            eprintln!("{name}: write or close failed: {e}");
        }
        let ok = res.is_ok();
        app_errors += usize::from(!ok);
        files.insert(
            name,
            Expect {
                versions: vec![data],
                close_failed: !ok,
            },
        );
    }
    for i in [3, 5, 7] {
        let name = format!("f{i}");
        let patch = pseudo_random(5000, 200 + i as u64);
        let tail = pseudo_random(1000, 300 + i as u64);
        let at = (SIZES[i] / 2) as u64;
        let edit = |p: &std::path::Path| -> std::io::Result<()> {
            let mut f = std::fs::OpenOptions::new().write(true).open(p)?;
            f.seek(SeekFrom::Start(at))?;
            f.write_all(&patch)?;
            f.seek(SeekFrom::End(0))?;
            f.write_all(&tail)?;
            close_checked(f)
        };
        edit(&reference.path().join(&name)).unwrap();
        let res = edit(&m.join(&name));
        if let Err(e) = &res {
            eprintln!("{name}: edit failed: {e}");
        }
        let ok = res.is_ok();
        app_errors += usize::from(!ok);
        let e = files.get_mut(&name).unwrap();
        e.versions
            .insert(0, std::fs::read(reference.path().join(&name)).unwrap());
        e.close_failed |= !ok;
        if ok {
            e.versions.truncate(1);
        }
    }
    // Reads: fresh opens of every file; any bytes returned must be a version written.
    let mut verified = 0usize;
    for (name, e) in &files {
        match std::fs::read(m.join(name)) {
            Ok(got) => {
                assert!(
                    e.versions.contains(&got),
                    "{name}: read {} bytes that are no version written",
                    got.len()
                );
                verified += got.len();
            }
            Err(err) => {
                eprintln!("{name}: read failed: {err}");
                assert_eq!(err.raw_os_error(), Some(libc::EIO), "{name}: {err}");
                app_errors += 1;
            }
        }
    }
    let log = m.log();
    if std::env::var_os("S3MOUNT_SUITE_LOG").is_some() {
        eprintln!("{log}");
    }
    drop(m); // unmount: what is not on the server goes to recovered/
    gate.clear();

    // Nothing lost: the last version of every file is on the server or in recovered/.
    let kept = |want: &[u8]| {
        std::fs::read_dir(cache.path().join("recovered"))
            .map(|d| {
                d.filter_map(|e| std::fs::read(e.ok()?.path()).ok())
                    .any(|b| b == want)
            })
            .unwrap_or(false)
    };
    let mut lost = 0usize;
    for (name, e) in &files {
        let want = &e.versions[0];
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            if a.get(name) == *want || kept(want) {
                break;
            }
            if std::time::Instant::now() > deadline {
                lost += want.len();
                eprintln!(
                    "{name}: {} bytes lost (close failed: {})",
                    want.len(),
                    e.close_failed
                );
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        if !e.close_failed {
            assert!(
                a.get(name) == *want,
                "{name}: a successful close left other bytes on the server"
            );
        }
    }

    let seen = gate.seen();
    let faulted = seen.iter().filter(|s| s.action != Action::Pass).count();
    // A faulted request was retried if the same call (method and path) came again later.
    let mut last: HashMap<(&str, &str), usize> = HashMap::new();
    for (i, s) in seen.iter().enumerate() {
        last.insert((&s.method, &s.path), i);
    }
    let retries = seen
        .iter()
        .enumerate()
        .filter(|(i, s)| {
            s.action != Action::Pass && last[&(s.method.as_str(), s.path.as_str())] > *i
        })
        .count();
    let written: usize = files.values().map(|e| e.versions[0].len()).sum();
    eprintln!(
        "fault suite totals: requests {} | faulted {faulted} | retries {retries} | bytes written {written} | bytes verified {verified} | errors the application saw {app_errors} | bytes lost {lost}",
        seen.len()
    );
    assert!(faulted > 0, "the gate faulted nothing");
    assert!(retries > 0, "nothing was retried");
    assert_eq!(app_errors, 0, "faults reached the application\n{log}");
    assert!(verified > 0, "nothing was read back");
    assert_eq!(lost, 0, "bytes lost\n{log}");
}
