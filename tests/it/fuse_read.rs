//! The read path over a real FUSE mount: listings, odd keys, ranged and sequential reads,
//! consistency when an object changes under an open handle.

use crate::common::*;
use s3mount::store::PutOptions;
use sha2::{Digest, Sha256};
use std::io::Read;
use std::os::unix::fs::FileExt;

#[test]
fn nested_listing_and_contents() {
    let a = Area::new("nested");
    a.put("top.txt", "top");
    a.put("a/b/c.txt", "deep");
    a.put("a/d.txt", "mid");
    a.put("e/", ""); // an empty directory marker
    let m = a.mount(&[]);
    assert_eq!(names(m.path()), ["a", "e", "top.txt"]);
    assert_eq!(names(&m.join("a")), ["b", "d.txt"]);
    assert_eq!(names(&m.join("a/b")), ["c.txt"]);
    assert!(names(&m.join("e")).is_empty());
    assert_eq!(
        std::fs::read_to_string(m.join("a/b/c.txt")).unwrap(),
        "deep"
    );
    let md = std::fs::metadata(m.join("a/d.txt")).unwrap();
    assert_eq!(md.len(), 3);
    assert!(md.is_file());
    assert!(std::fs::metadata(m.join("a/b")).unwrap().is_dir());
    let e = std::fs::metadata(m.join("nope")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
    // `.` and `..` are there for tools that read them (ls -a, find).
    let out = std::process::Command::new("ls")
        .arg("-a")
        .arg(m.join("a"))
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        listed.lines().any(|l| l == ".") && listed.lines().any(|l| l == ".."),
        "{listed}"
    );
}

#[test]
fn ten_thousand_keys_list_exactly() {
    let a = Area::new("many");
    let keys: Vec<String> = (0..10_000)
        .map(|i| format!("dir/file-{i:05}.txt"))
        .collect();
    a.put_many(&keys, b"x");
    let m = a.mount(&[]);
    let got = names(&m.join("dir"));
    let want: Vec<String> = (0..10_000).map(|i| format!("file-{i:05}.txt")).collect();
    assert_eq!(got.len(), 10_000);
    assert_eq!(got, want);
    // `ls` (a real tool, with its own buffer sizes) agrees.
    let out = std::process::Command::new("ls")
        .arg("-1")
        .arg(m.join("dir"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 10_000);
    // A second listing (rewinddir, fresh handle) gives the same.
    assert_eq!(names(&m.join("dir")), want);
}

#[test]
fn odd_keys_and_shadowing() {
    let a = Area::new("odd");
    a.put("with space.txt", "1");
    a.put("unicod\u{e9}-\u{6587}.txt", "2");
    a.put("100%.txt", "3");
    a.put("a+b=c&d.txt", "4");
    a.put("empty//hidden", "5"); // `empty/` + `` + `/hidden`: the empty component is hidden
    a.put("marker/", "");
    a.put("shadow", "a file shadowed by the directory");
    a.put("shadow/inner.txt", "inner");
    a.put_with(
        "typed-dir",
        "",
        PutOptions {
            content_type: Some("application/x-directory".into()),
            ..Default::default()
        },
    );
    let m = a.mount(&[]);
    let root = names(m.path());
    assert_eq!(
        root,
        [
            "100%.txt",
            "a+b=c&d.txt",
            "empty",
            "marker",
            "shadow",
            "typed-dir",
            "unicod\u{e9}-\u{6587}.txt",
            "with space.txt"
        ]
    );
    assert_eq!(
        std::fs::read_to_string(m.join("with space.txt")).unwrap(),
        "1"
    );
    assert_eq!(
        std::fs::read_to_string(m.join("unicod\u{e9}-\u{6587}.txt")).unwrap(),
        "2"
    );
    assert_eq!(std::fs::read_to_string(m.join("100%.txt")).unwrap(), "3");
    assert_eq!(std::fs::read_to_string(m.join("a+b=c&d.txt")).unwrap(), "4");
    assert!(names(&m.join("empty")).is_empty(), "a//b is hidden");
    assert!(m.join("marker").is_dir());
    assert!(
        m.join("shadow").is_dir(),
        "a directory shadows a file of the same name"
    );
    assert_eq!(names(&m.join("shadow")), ["inner.txt"]);
    assert!(std::fs::metadata(m.join("typed-dir")).unwrap().is_dir());
}

#[test]
fn random_reads_match_byte_for_byte() {
    let a = Area::new("random");
    let size = if a.backend.external {
        8 << 20
    } else {
        256 << 20
    };
    let data = pseudo_random(size, 42);
    a.put("big.bin", data.clone());
    let m = a.mount(&[]);
    let f = std::fs::File::open(m.join("big.bin")).unwrap();
    assert_eq!(f.metadata().unwrap().len(), size as u64);
    let mut x: u64 = 0x9E3779B97F4A7C15;
    for i in 0..300 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let off = (x % size as u64) as usize;
        let len = match i % 3 {
            0 => 4096,
            1 => 1 + (x >> 40) as usize % 300_000,
            _ => 1 + (x >> 20) as usize % 3_000_000,
        };
        let mut buf = vec![0u8; len];
        let n = f.read_at(&mut buf, off as u64).unwrap();
        let want = &data[off..(off + len).min(size)];
        assert_eq!(n, want.len(), "length at offset {off}");
        assert!(buf[..n] == *want, "bytes differ at offset {off} len {len}");
    }
    // The last byte and past the end.
    let mut one = [0u8; 8];
    assert_eq!(f.read_at(&mut one, size as u64 - 1).unwrap(), 1);
    assert_eq!(one[0], data[size - 1]);
    assert_eq!(f.read_at(&mut one, size as u64 + 10).unwrap(), 0);
}

#[test]
fn sequential_read_sha256() {
    let a = Area::new("seq");
    let size = if a.backend.external {
        6 << 20
    } else {
        96 << 20
    } + 12345;
    let data = pseudo_random(size, 7);
    let want = Sha256::digest(&data);
    a.put("seq.bin", data);
    let m = a.mount(&[]);
    for _ in 0..2 {
        // The second pass exercises the caches (kernel and page cache).
        let mut f = std::fs::File::open(m.join("seq.bin")).unwrap();
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0;
        loop {
            let n = f.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            total += n;
            h.update(&buf[..n]);
        }
        assert_eq!(total, size);
        assert_eq!(h.finalize(), want);
    }
}

#[test]
fn object_replaced_under_open_handle_gives_eio() {
    let a = Area::new("replace");
    let size = if a.backend.external {
        16 << 20
    } else {
        64 << 20
    };
    let old = pseudo_random(size, 1);
    a.put("f.bin", old.clone());
    let m = a.mount(&[]);
    let f = std::fs::File::open(m.join("f.bin")).unwrap();
    let mut head = [0u8; 4096];
    f.read_at(&mut head, 0).unwrap();
    assert_eq!(head[..], old[..4096]);
    a.put("f.bin", pseudo_random(size, 2));
    let mut buf = vec![0u8; 4096];
    let err = f.read_at(&mut buf, size as u64 - 8192).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    drop(f);
    // A new open sees the new version once the metadata TTL allows; with TTL 0 at once.
    let m2 = a.mount(&["--metadata-ttl", "0"]);
    let mut f2 = std::fs::File::open(m2.join("f.bin")).unwrap();
    let mut first = [0u8; 16];
    f2.read_exact(&mut first).unwrap();
    assert_eq!(first[..], pseudo_random(16, 2)[..]);
}

#[test]
fn read_only_mount_refuses_writes() {
    let a = Area::new("ro");
    a.put("f", "x");
    let m = a.mount(&["--read-only"]);
    let e = std::fs::OpenOptions::new()
        .write(true)
        .open(m.join("f"))
        .unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS));
    let e = std::fs::write(m.join("new"), "y").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS));
    let st = nix_statfs(m.path());
    assert!(st > 1 << 40, "statfs reports large free space: {st}");
}

fn nix_statfs(p: &std::path::Path) -> u64 {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid C string and an out-struct we own.
    assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut s) }, 0);
    s.f_bavail as u64 * s.f_frsize as u64
}
