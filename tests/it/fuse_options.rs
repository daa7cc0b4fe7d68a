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
    for s in &writes {
        assert!(
            has(s, "x-amz-server-side-encryption", "AES256"),
            "{} {}",
            s.method,
            s.path
        );
        assert!(
            has(s, "x-amz-storage-class", "STANDARD_IA"),
            "{} {}",
            s.method,
            s.path
        );
        assert!(
            has(s, "x-amz-acl", "bucket-owner-full-control"),
            "{} {}",
            s.method,
            s.path
        );
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
