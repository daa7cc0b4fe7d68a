//! The rows of docs/semantics.md that need more than a write-and-read-back to be checked: each
//! test here fails when the behaviour its row names is broken (directory markers, the closed-file
//! truncate, several writers, objects changed under a writer, Content-MD5 on every upload,
//! statfs and getattr fields, forget, the kernel cache kept across opens, EFBIG).

use crate::common::gate::Gate;
use crate::common::*;
use md5::Digest;
use s3mount::store::ObjectStore;
use std::io::Write;
use std::os::unix::fs::{FileExt, MetadataExt};

fn rw(a: &Area) -> Mount {
    a.mount(&["--metadata-ttl", "0"])
}

fn server_bytes(a: &Area, key: &str) -> Vec<u8> {
    let full = format!("{}{key}", a.prefix);
    let info = block_on(a.store.head(&full)).unwrap_or_else(|e| panic!("head {full}: {e}"));
    if info.size == 0 {
        return Vec::new();
    }
    block_on(a.store.get_range(&full, 0, info.size, None))
        .unwrap()
        .to_bytes()
        .to_vec()
}

/// Unlinking the last file of a directory that exists only as a prefix (no marker) writes the
/// directory's `dir/` marker, so the directory stays.
#[test]
fn fuse_unlink_of_the_last_file_keeps_an_implicit_directory() {
    let a = Area::new("sunl");
    a.put("implicit/only.txt", "x");
    let full = format!("{}implicit/", a.prefix);
    assert!(block_on(a.store.head(&full)).is_err(), "no marker yet");
    let m = rw(&a);
    std::fs::remove_file(m.join("implicit/only.txt")).unwrap();
    let marker = block_on(a.store.head(&full)).expect("marker written");
    assert_eq!(marker.size, 0);
    assert!(m.join("implicit").is_dir());
    assert!(names(&m.join("implicit")).is_empty());
    drop(m);
    let m = a.mount(&[]);
    assert!(m.join("implicit").is_dir(), "after a remount");
}

/// `truncate(2)` of a closed file (no open handle) cuts or extends the stored object: the bytes
/// kept are the object's, checked by MD5 on the server.
#[test]
fn fuse_truncate_of_a_closed_file_keeps_the_right_bytes() {
    let a = Area::new("strunc");
    let data = pseudo_random(3 << 20, 11);
    a.put("f.bin", data.clone());
    let m = rw(&a);
    let p = m.join("f.bin");
    let cut = (1 << 20) + 123;
    std::process::Command::new("truncate")
        .args(["-s", &cut.to_string()])
        .arg(&p)
        .status()
        .unwrap()
        .success()
        .then_some(())
        .expect("truncate");
    let got = server_bytes(&a, "f.bin");
    assert_eq!(got.len(), cut);
    assert_eq!(
        md5::Md5::digest(&got),
        md5::Md5::digest(&data[..cut]),
        "cut: the object's first bytes"
    );
    let longer = cut + 5000;
    let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
    f.set_len(longer as u64).unwrap();
    close_checked(f).unwrap();
    let got = server_bytes(&a, "f.bin");
    let mut want = data[..cut].to_vec();
    want.resize(longer, 0);
    assert!(got == want, "extended with zeros");
}

/// Two handles on one file on one mount share its bytes: each sees the other's writes, and the
/// object holds both after the closes.
#[test]
fn fuse_two_writers_on_one_file_share_its_bytes() {
    let a = Area::new("s2w");
    let m = rw(&a);
    let p = m.join("shared.txt");
    let f1 = std::fs::File::create(&p).unwrap();
    let f2 = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&p)
        .unwrap();
    f1.write_all_at(b"aaaa", 0).unwrap();
    let mut buf = [0u8; 4];
    f2.read_exact_at(&mut buf, 0).unwrap();
    assert_eq!(
        &buf, b"aaaa",
        "the second handle sees the first one's bytes"
    );
    f2.write_all_at(b"bb", 2).unwrap();
    close_checked(f1).unwrap();
    close_checked(f2).unwrap();
    assert_eq!(server_bytes(&a, "shared.txt"), b"aabb");
}

/// One key written from two mounts: the last upload wins, whole (never a mix of the two).
#[test]
fn fuse_one_key_from_two_mounts_last_upload_wins_whole() {
    let a = Area::new("s2m");
    let (m1, m2) = (rw(&a), rw(&a));
    let one = pseudo_random(300_000, 1);
    let two = pseudo_random(200_000, 2);
    let mut f1 = std::fs::File::create(m1.join("k")).unwrap();
    let mut f2 = std::fs::File::create(m2.join("k")).unwrap();
    f1.write_all(&one).unwrap();
    f2.write_all(&two).unwrap();
    close_checked(f1).unwrap();
    assert!(server_bytes(&a, "k") == one);
    close_checked(f2).unwrap();
    assert!(
        server_bytes(&a, "k") == two,
        "the later close's bytes, whole"
    );
}

/// An object replaced on the server while a mount has it open for writing (without O_TRUNC):
/// the writer's next fetch of the old object's bytes fails with EIO (If-Match) instead of mixing
/// two versions, and nothing of the old version is uploaded over the new one.
#[test]
fn fuse_object_changed_under_an_open_writer_is_eio_not_a_mix() {
    let a = Area::new("schg");
    let old = pseudo_random(3 << 20, 3);
    a.put("f.bin", old);
    let m = rw(&a);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(m.join("f.bin"))
        .unwrap();
    // Covers part of the first 1 MiB block: that block is fetched now, the others are not.
    f.write_all_at(b"patch", 10).unwrap();
    let new = pseudo_random(3 << 20, 4);
    a.put("f.bin", new.clone());
    // Needs block 2 of the old object: refused by If-Match.
    let e = f.write_all_at(b"more", (2 << 20) + 7).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");
    let e = close_checked(f).unwrap_err();
    assert_eq!(
        e.raw_os_error(),
        Some(libc::EIO),
        "close cannot upload a mix: {e}"
    );
    assert!(
        server_bytes(&a, "f.bin") == new,
        "the other client's object stands"
    );
}

/// Every upload carries Content-MD5, so the server verifies the bytes: a single PutObject and
/// each UploadPart (the embedded server accepts its absence, so it is checked on the wire).
#[test]
fn fuse_every_upload_carries_content_md5() {
    let a = Area::new("smd5");
    let gate = Gate::start(&a.backend.endpoint);
    let m = Mount::new(
        &gate.backend(&a.backend),
        &a.source(),
        &["--multipart-threshold", "8M", "--part-size", "5M"],
    );
    let small = pseudo_random(100_000, 5);
    let big = pseudo_random(12 << 20, 6);
    std::fs::write(m.join("small.bin"), &small).unwrap();
    std::fs::write(m.join("big.bin"), &big).unwrap();
    let uploads: Vec<_> = gate
        .seen()
        .into_iter()
        .filter(|r| r.method == "PUT" && r.body_len > 0)
        .collect();
    let parts = uploads
        .iter()
        .filter(|r| r.path.contains("partNumber="))
        .count();
    if gateway_lacks("CreateMultipartUpload") {
        assert_eq!(parts, 0);
    } else {
        assert_eq!(parts, 3, "12 MiB in 5 MiB parts: {uploads:?}");
    }
    assert!(uploads.len() >= 2, "{uploads:?}");
    for r in &uploads {
        let sent = r
            .content_md5
            .as_deref()
            .unwrap_or_else(|| panic!("no Content-MD5: {r:?}"));
        assert_eq!(sent.len(), 24, "base64 of 16 bytes: {r:?}");
    }
    assert_eq!(server_bytes(&a, "small.bin"), small);
    assert!(server_bytes(&a, "big.bin") == big);
}

/// `stat` of a file and a directory: every field, not only the size.
#[test]
fn fuse_getattr_and_statfs_fields() {
    let a = Area::new("sattr");
    a.put("f.txt", "12345");
    a.put("d/x", "");
    let m = a.mount(&["--uid", "1234", "--gid", "2345"]);
    let st = std::fs::metadata(m.join("f.txt")).unwrap();
    assert_eq!(st.len(), 5);
    assert_eq!(st.mode(), libc::S_IFREG | 0o644);
    assert_eq!((st.uid(), st.gid()), (1234, 2345));
    assert_eq!(st.nlink(), 1);
    assert_eq!(st.blocks(), 1, "512-byte blocks");
    let info = a.head("f.txt").unwrap();
    let lm = info
        .last_modified
        .unwrap()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert_eq!(st.mtime(), lm, "mtime is Last-Modified");
    let d = std::fs::metadata(m.join("d")).unwrap();
    assert_eq!(d.mode(), libc::S_IFDIR | 0o755);
    assert_eq!(d.nlink(), 2);
    assert_eq!((d.uid(), d.gid()), (1234, 2345));
    let s = statvfs(m.path());
    assert_eq!(s.f_bsize, 4096);
    assert_eq!(s.f_namemax, 255);
    assert_eq!(s.f_blocks, 1 << 38, "1 PiB in 4 KiB blocks");
    assert_eq!((s.f_bfree, s.f_bavail), (s.f_blocks, s.f_blocks));
    assert!(s.f_files - s.f_ffree >= 1, "the root is an inode in use");
}

fn statvfs(p: &std::path::Path) -> libc::statvfs {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid C string and a zeroed out-struct.
    unsafe {
        let mut s: libc::statvfs = std::mem::zeroed();
        assert_eq!(libc::statvfs(c.as_ptr(), &mut s), 0);
        s
    }
}

/// The daemon forgets inodes the kernel forgets: `df -i` (inodes in use) grows with a listing
/// and falls back when the kernel drops its caches.
#[test]
fn fuse_forget_returns_inodes() {
    let a = Area::new("sforget");
    let keys: Vec<String> = (0..500).map(|i| format!("many/f{i:03}")).collect();
    a.put_many(&keys, b"x");
    let m = a.mount(&[]);
    let used = |m: &Mount| {
        let s = statvfs(m.path());
        s.f_files - s.f_ffree
    };
    let before = used(&m);
    for e in std::fs::read_dir(m.join("many")).unwrap() {
        std::fs::metadata(e.unwrap().path()).unwrap();
    }
    let listed = used(&m);
    assert!(listed >= before + 500, "{before} -> {listed}");
    // Drop the kernel's dentries and inodes: it sends FORGET for each.
    std::fs::write("/proc/sys/vm/drop_caches", "2").unwrap();
    let start = std::time::Instant::now();
    while used(&m) > before + 10 {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(30),
            "inodes still held: {}",
            used(&m)
        );
        std::fs::write("/proc/sys/vm/drop_caches", "2").unwrap();
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Reopening an unchanged file keeps the kernel's page cache: the second read sends no GET.
#[test]
fn fuse_reopen_of_an_unchanged_file_reads_from_the_kernel_cache() {
    let a = Area::new("skeep");
    let data = pseudo_random(2 << 20, 8);
    a.put("f.bin", data.clone());
    let gate = Gate::start(&a.backend.endpoint);
    let m = Mount::new(&gate.backend(&a.backend), &a.source(), &[]);
    // A descriptor held open throughout pins the inode, so a parallel test's drop_caches cannot
    // evict it (and its pages) between the two opens; each read below opens anew.
    let _pin = std::fs::File::open(m.join("f.bin")).unwrap();
    assert!(std::fs::read(m.join("f.bin")).unwrap() == data);
    let gets = gate.count("GET");
    assert!(gets > 0);
    assert!(std::fs::read(m.join("f.bin")).unwrap() == data);
    assert_eq!(gate.count("GET"), gets, "no GET for the second read");
}

/// Past 5 GiB without multipart, writes and truncates fail with EFBIG at once (the limit of one
/// PutObject), on a real mount.
#[test]
fn fuse_efbig_past_the_single_put_limit() {
    let a = Area::new("sefbig");
    let m = a.mount(&["--no-multipart"]);
    let f = std::fs::File::create(m.join("huge")).unwrap();
    let e = f.set_len((5 << 30) + 1).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EFBIG), "truncate: {e}");
    let e = f.write_all_at(b"x", 5 << 30).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EFBIG), "write: {e}");
    f.write_all_at(b"fits", 0).unwrap();
    close_checked(f).unwrap();
}

/// Renaming a directory over a non-empty one is ENOTEMPTY; over an empty one it replaces it.
#[test]
fn fuse_rename_over_a_non_empty_directory_is_enotempty() {
    let a = Area::new("sren");
    let m = rw(&a);
    std::fs::create_dir_all(m.join("src/sub")).unwrap();
    std::fs::write(m.join("src/sub/f"), "x").unwrap();
    std::fs::create_dir_all(m.join("full")).unwrap();
    std::fs::write(m.join("full/g"), "y").unwrap();
    std::fs::create_dir(m.join("empty")).unwrap();
    let e = std::fs::rename(m.join("src"), m.join("full")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENOTEMPTY), "{e}");
    assert_eq!(std::fs::read_to_string(m.join("full/g")).unwrap(), "y");
    std::fs::rename(m.join("src"), m.join("empty")).unwrap();
    assert_eq!(std::fs::read_to_string(m.join("empty/sub/f")).unwrap(), "x");
    assert!(!m.join("src").exists());
}

/// A child process started while a file is open for writing inherits the descriptor and closes
/// it (at exec or exit); the kernel sends a flush for that close. It must not upload the
/// half-written file: the object appears once, whole, at the writer's own close.
#[test]
fn fuse_a_forked_child_closing_an_inherited_descriptor_does_not_upload() {
    let a = Area::new("sfork");
    let gate = Gate::start(&a.backend.endpoint);
    let m = Mount::new(&gate.backend(&a.backend), &a.source(), &[]);
    let mut f = std::fs::File::create(m.join("half.bin")).unwrap();
    f.write_all(b"first half, ").unwrap();
    let puts = gate.count("PUT");
    // fork + exec: the child holds a copy of every descriptor until exec closes it.
    assert!(
        std::process::Command::new("true")
            .status()
            .unwrap()
            .success()
    );
    assert_eq!(gate.count("PUT"), puts, "the child's close uploaded");
    f.write_all(b"second half").unwrap();
    close_checked(f).unwrap();
    assert_eq!(
        gate.count("PUT"),
        puts + 1,
        "one upload, at the writer's close"
    );
    assert_eq!(server_bytes(&a, "half.bin"), b"first half, second half");
}
