//! Gateways that lack calls (the embedded server's `--emulate` presets): a mount with no
//! capability flags must work on each, and must ask for a missing call once, then use its
//! fallback (checked in the server's request log).

use crate::common::*;
use std::os::unix::fs::PermissionsExt;

/// Everything the write and read paths use that a gateway may lack: a multipart-sized file,
/// listing, directory and file rename (copy), chmod (metadata-only copy), unlink, rmdir. Then a
/// second mount reads it all back.
fn workload(b: &Backend) {
    let flags = ["--multipart-threshold", "8M", "--part-size", "5M"];
    let big = pseudo_random(21 << 20, 11);
    {
        let m = Mount::new(b, &b.bucket, &flags);
        std::fs::write(m.join("big.bin"), &big).unwrap();
        std::fs::create_dir(m.join("d")).unwrap();
        for name in ["a", "b", "c"] {
            std::fs::write(m.join(&format!("d/{name}")), name).unwrap();
        }
        std::fs::rename(m.join("d"), m.join("e")).unwrap();
        std::fs::rename(m.join("big.bin"), m.join("e/big.bin")).unwrap();
        std::fs::set_permissions(m.join("e/a"), std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::remove_file(m.join("e/c")).unwrap();
        std::fs::create_dir(m.join("gone")).unwrap();
        std::fs::remove_dir(m.join("gone")).unwrap();
        assert_eq!(names(m.path()), vec!["e"]);
        assert_eq!(names(&m.join("e")), vec!["a", "b", "big.bin"]);
    }
    let m = Mount::new(b, &b.bucket, &[]);
    // Looked up before any listing: listings carry no stored mode (docs/semantics.md).
    let mode = std::fs::metadata(m.join("e/a"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "chmod kept");
    assert_eq!(names(&m.join("e")), vec!["a", "b", "big.bin"]);
    assert!(
        std::fs::read(m.join("e/big.bin")).unwrap() == big,
        "big.bin"
    );
    assert_eq!(std::fs::read(m.join("e/b")).unwrap(), b"b");
    let mode = std::fs::metadata(m.join("e/a"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "chmod kept without CopyObject");
}

/// Each missing call was asked for at most once per mount process, and its fallback was used.
fn probed_once(g: &Emulated, missing: &[&str], mounts: u64) {
    for op in missing {
        assert_eq!(g.log.answered(op), 0, "{op} is missing on this gateway");
        let refused = g.log.refused(op);
        assert!(
            (1..=mounts).contains(&refused),
            "{op}: refused {refused} times over {mounts} mounts (one probe each at most)"
        );
    }
}

#[test]
fn seven_call_gateway() {
    let g = Emulated::start("seven-call");
    workload(&g.backend);
    // ListObjectsV2 is probed by both mounts; multipart and copy only by the first (the second
    // writes nothing).
    probed_once(&g, &["ListObjectsV2"], 2);
    probed_once(&g, &["CreateMultipartUpload", "CopyObject"], 1);
    for op in ["UploadPart", "CompleteMultipartUpload", "DeleteObjects"] {
        assert_eq!(
            g.log.refused(op) + g.log.answered(op),
            0,
            "{op} never asked"
        );
    }
    assert!(g.log.answered("ListObjects") > 0);
}

#[test]
fn gateway_without_multipart() {
    let g = Emulated::start("minio-no-multipart");
    workload(&g.backend);
    probed_once(&g, &["CreateMultipartUpload"], 1);
    assert_eq!(g.log.refused("ListObjectsV2"), 0);
    assert!(
        g.log.answered("CopyObject") > 0,
        "copy used where the server has it"
    );
}

/// A server that predates SigV4 (old Ceph RGW): the mount finds SigV2 at its bucket check, with
/// one refused SigV4 request per mount, and the server verifies every SigV2 signature (s3s
/// checks them; a wrong one would be refused, not ignored).
#[test]
fn sigv2_only_gateway() {
    let g = Emulated::start("sigv2-only");
    workload(&g.backend);
    let refused = g.log.refused("SigV4");
    assert!(
        (1..=2).contains(&refused),
        "SigV4 refused {refused} times over 2 mounts (one probe each)"
    );
    assert!(
        g.log.answered("SigV2") > 20,
        "requests went signed with SigV2"
    );
    assert!(g.log.answered("UploadPart") > 0, "multipart under SigV2");
    assert!(g.log.answered("CopyObject") > 0, "copy under SigV2");
}

/// A bucket in another region than the profile's: the mount follows `x-amz-bucket-region` once.
#[test]
fn bucket_in_another_region() {
    let g = Emulated::start("region=eu-west-1");
    let m = Mount::new(&g.backend, &g.backend.bucket, &[]);
    std::fs::write(m.join("f"), b"regional").unwrap();
    drop(m);
    let m = Mount::new(&g.backend, &g.backend.bucket, &[]);
    assert_eq!(std::fs::read(m.join("f")).unwrap(), b"regional");
    assert_eq!(g.log.refused("WrongRegion"), 2, "one redirect per mount");
}
