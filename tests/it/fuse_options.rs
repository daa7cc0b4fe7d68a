//! Object options of a profile (issue 12): server-side encryption, storage class, canned ACL
//! and requester pays reach every request that needs them, as the fault gate records them:
//! single PUTs, multipart uploads, copies (rename), and GETs and HEADs for requester pays.

use crate::common::gate::Gate;
use crate::common::*;

#[test]
fn fuse_object_options_reach_every_request() {
    let a = Area::new("oopts");
    let gate = Gate::start(&a.backend.endpoint);
    let m = Mount::new(
        &gate.backend(&a.backend),
        &a.source(),
        &[
            "--read-write",
            "--sse",
            "AES256",
            "--storage-class",
            "STANDARD_IA",
            "--acl",
            "bucket-owner-full-control",
            "--requester-pays",
            "--multipart-threshold",
            "5M",
            "--part-size",
            "5M",
        ],
    );
    std::fs::write(m.join("small.txt"), "small").unwrap();
    let big = pseudo_random(11 << 20, 3);
    std::fs::write(m.join("big.bin"), &big).unwrap();
    std::fs::rename(m.join("small.txt"), m.join("moved.txt")).unwrap();
    assert_eq!(std::fs::read(m.join("moved.txt")).unwrap(), b"small");
    drop(m);
    let seen = gate.seen();
    let has = |s: &crate::common::gate::Seen, k: &str, v: &str| {
        s.headers.iter().any(|(hk, hv)| hk == k && hv == v)
    };
    let writes: Vec<_> = seen
        .iter()
        .filter(|s| {
            (s.method == "PUT" && !s.path.contains("partNumber="))
                || (s.method == "POST" && s.path.contains("uploads"))
        })
        .collect();
    let copies = writes
        .iter()
        .filter(|s| s.headers.iter().any(|(k, _)| k == "x-amz-copy-source"))
        .count();
    let creates = writes.iter().filter(|s| s.method == "POST").count();
    assert!(
        copies >= 1 && creates >= 1 && writes.len() >= 3,
        "{writes:?}"
    );
    let wanted = [
        ("x-amz-server-side-encryption", "AES256"),
        ("x-amz-storage-class", "STANDARD_IA"),
        ("x-amz-acl", "bucket-owner-full-control"),
    ];
    for s in &writes {
        for (k, v) in wanted {
            assert!(has(s, k, v), "{k} on {} {}", s.method, s.path);
        }
    }
    let objects: Vec<_> = seen
        .iter()
        .filter(|s| ["GET", "HEAD", "PUT", "POST", "DELETE"].contains(&s.method.as_str()))
        .filter(|s| s.path.contains(&a.prefix.trim_end_matches('/').to_string()))
        .collect();
    assert!(!objects.is_empty());
    for s in &objects {
        assert!(
            has(s, "x-amz-request-payer", "requester"),
            "{} {}",
            s.method,
            s.path
        );
    }
}

/// A bad value is a one-line configuration error naming the fix.
#[test]
fn bad_object_options_name_the_fix() {
    let a = Area::new("oopts-bad");
    let home = tempfile::tempdir().unwrap();
    let mnt = tempfile::tempdir().unwrap();
    for (args, want) in [
        (&["--sse", "rot13"][..], "use AES256 (SSE-S3) or aws:kms"),
        (&["--sse-kms-key-id", "k"][..], "add --sse aws:kms"),
    ] {
        let mut c = s3mount_cmd(&a.backend, home.path());
        c.arg(a.source()).arg(mnt.path()).args(args);
        let out = run_with_deadline(c, std::time::Duration::from_secs(60));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(
            err.contains(want) && err.trim().lines().count() == 1,
            "{err}"
        );
    }
}

fn scrape(addr: &str) -> String {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    c.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut s = String::new();
    c.read_to_string(&mut s).unwrap();
    assert!(s.starts_with("HTTP/1.1 200"), "{s}");
    s
}

/// The value of the sample `name` (with its labels as written) in Prometheus text.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// `--metrics-addr` serves Prometheus text: requests by operation and status, latency
/// histograms, bytes read and written, page-cache hits and misses, and the mount's gauges.
#[test]
fn fuse_metrics_count_what_the_mount_does() {
    let a = Area::new("ometrics");
    let data = pseudo_random(3 << 20, 9);
    a.put("in.bin", data.clone());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let m = a.mount(&["--read-write", "--metrics-addr", &addr]);
    std::fs::write(m.join("out.bin"), vec![7u8; 1 << 20]).unwrap();
    assert!(std::fs::read(m.join("in.bin")).unwrap() == data);
    let f = std::fs::File::open(m.join("in.bin")).unwrap();
    let text = scrape(&addr);
    drop(f);
    let get = |n: &str| sample(&text, n).unwrap_or_else(|| panic!("no {n} in\n{text}"));
    assert!(get("s3mount_requests_total{op=\"PutObject\",status=\"200\"}") >= 1.0);
    assert!(get("s3mount_requests_total{op=\"GetObject\",status=\"206\"}") >= 1.0);
    assert!(get("s3mount_request_seconds_count{op=\"GetObject\"}") >= 1.0);
    assert!(get("s3mount_written_bytes_total") >= (1 << 20) as f64);
    assert!(get("s3mount_read_bytes_total") >= (3 << 20) as f64);
    assert!(get("s3mount_page_cache_misses_total") >= 1.0);
    assert!(get("s3mount_open_handles") >= 1.0, "the open file");
    assert!(get("s3mount_inodes") >= 3.0);
    assert!(text.contains("# TYPE s3mount_request_seconds histogram"));
}

/// A metrics address that is not IP:PORT is a one-line configuration error.
#[test]
fn a_bad_metrics_address_names_the_fix() {
    let a = Area::new("ometrics-bad");
    let home = tempfile::tempdir().unwrap();
    let mnt = tempfile::tempdir().unwrap();
    let mut c = s3mount_cmd(&a.backend, home.path());
    c.arg(a.source())
        .arg(mnt.path())
        .args(["--metrics-addr", "localhost"]);
    let out = run_with_deadline(c, std::time::Duration::from_secs(60));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("use IP:PORT"), "{err}");
}
