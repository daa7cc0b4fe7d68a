//! The write path over a real FUSE mount (read-write is the default): bytes written read back,
//! on the mount and on the server (size, MD5, ETag shape, headers) through multipart and single
//! PUT; namespace changes; a failed upload fails `close` and keeps the bytes on local disk.

use crate::common::*;
use md5::Digest;
use s3mount::store::ObjectStore;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::time::Duration;

fn rw(a: &Area) -> Mount {
    a.mount(&["--read-write", "--metadata-ttl", "0"])
}

/// Size and MD5 of the object as the server holds it.
fn server_md5(a: &Area, key: &str) -> (u64, [u8; 16]) {
    let full = format!("{}{key}", a.prefix);
    let info = block_on(a.store.head(&full)).unwrap();
    let data = block_on(a.store.get_range(&full, 0, info.size.max(1), None))
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    (
        info.size,
        md5::Md5::digest(&data[..info.size as usize]).into(),
    )
}

#[test]
fn written_files_read_back_here_and_on_the_server() {
    let a = Area::new("wr");
    let m = rw(&a);
    let big = if a.backend.external {
        8 << 20
    } else {
        100 << 20
    };
    for (name, data) in [
        ("small.txt", b"hello world\n".to_vec()),
        ("empty", Vec::new()),
        ("big.bin", pseudo_random(big, 3)),
    ] {
        std::fs::write(m.join(name), &data).unwrap();
        assert_eq!(
            std::fs::read(m.join(name)).unwrap(),
            data,
            "{name} on the mount"
        );
        let (size, md5) = server_md5(&a, name);
        assert_eq!(size, data.len() as u64, "{name} size on the server");
        assert_eq!(
            md5,
            <[u8; 16]>::from(md5::Md5::digest(&data)),
            "{name} MD5 on the server"
        );
    }
    drop(m);
    // A new mount reads what the first wrote.
    let m = a.mount(&[]);
    assert_eq!(
        std::fs::read(m.join("small.txt")).unwrap(),
        b"hello world\n"
    );
    assert_eq!(std::fs::metadata(m.join("empty")).unwrap().len(), 0);
}

/// The multipart path (a file above the threshold) and the single-PUT path (`--no-multipart`),
/// both checked on the server: size, MD5 of the body, ETag shape, the mode header. The mounts use
/// no `--read-write`: it is the default.
#[test]
fn multipart_and_single_put_uploads_checked_on_the_server() {
    use std::os::unix::fs::OpenOptionsExt;
    let a = Area::new("wmp");
    let data = pseudo_random(21 << 20, 9);
    let want_md5 = <[u8; 16]>::from(md5::Md5::digest(&data));
    let cases: [(&[&str], &str, Option<u32>); 2] = [
        (
            &["--multipart-threshold", "8M", "--part-size", "5M"],
            "mp.bin",
            Some(5),
        ),
        (
            &["--multipart-threshold", "8M", "--no-multipart"],
            "single.bin",
            None,
        ),
    ];
    for (flags, name, parts) in cases {
        let m = a.mount(flags);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(m.join(name))
            .unwrap();
        for c in data.chunks(1 << 20) {
            f.write_all(c).unwrap();
        }
        f.sync_all().unwrap();
        drop(f);
        assert_eq!(
            std::fs::read(m.join(name)).unwrap(),
            data,
            "{name} on the mount"
        );
        drop(m);
        let info = a.head(name).unwrap();
        assert_eq!(
            server_md5(&a, name),
            (data.len() as u64, want_md5),
            "{name}"
        );
        let etag = info.etag.clone().unwrap_or_default();
        // A gateway without multipart gets the same bytes in one PutObject.
        let parts = parts.filter(|_| !gateway_lacks("CreateMultipartUpload"));
        match parts {
            Some(n) => assert!(etag.ends_with(&format!("-{n}\"")), "{name}: {etag}"),
            None => assert_eq!(etag.trim_matches('"'), hex::encode(want_md5), "{name}"),
        }
        assert_eq!(
            info.metadata.get("mode").map(String::as_str),
            Some("33152"),
            "{name}: mode 0600 stored as s3fs does"
        );
    }
}

#[test]
fn random_offset_writes_match_a_local_file() {
    let a = Area::new("wrand");
    let m = a.mount(&[
        "--read-write",
        "--metadata-ttl",
        "0",
        "--write-buffer",
        "1M",
    ]);
    let local_dir = tempfile::tempdir().unwrap();
    let local = local_dir.path().join("f");
    let mut files = [
        std::fs::File::create(&local).unwrap(),
        std::fs::File::create(m.join("f")).unwrap(),
    ];
    let mut x: u64 = 77;
    for i in 0..300 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let off = x % (4 << 20);
        let len = 1 + (x >> 40) as usize % 70_000;
        let data = vec![(i % 253) as u8; len];
        for f in &mut files {
            f.write_all_at(&data, off).unwrap();
        }
        if i == 150 {
            for f in &mut files {
                f.set_len(1 << 20).unwrap();
            }
        }
    }
    drop(files);
    let want = std::fs::read(&local).unwrap();
    assert_eq!(std::fs::read(m.join("f")).unwrap(), want);
    let (size, md5) = server_md5(&a, "f");
    assert_eq!(size, want.len() as u64);
    assert_eq!(md5, <[u8; 16]>::from(md5::Md5::digest(&want)));
}

#[test]
fn append_truncate_and_overwrite() {
    let a = Area::new("wapp");
    a.put("existing.txt", "0123456789");
    let m = rw(&a);
    let p = m.join("existing.txt");
    let mut f = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
    f.write_all(b"abc").unwrap();
    drop(f);
    assert_eq!(std::fs::read(&p).unwrap(), b"0123456789abc");
    // Overwrite in the middle, keep the rest.
    let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
    f.write_all_at(b"XY", 3).unwrap();
    drop(f);
    assert_eq!(std::fs::read(&p).unwrap(), b"012XY56789abc");
    // Truncate down and up (a closed file).
    let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
    f.set_len(4).unwrap();
    drop(f);
    assert_eq!(std::fs::read(&p).unwrap(), b"012X");
    assert_eq!(
        server_md5(&a, "existing.txt"),
        (4, md5::Md5::digest(b"012X").into())
    );
    std::process::Command::new("truncate")
        .args(["-s", "6"])
        .arg(&p)
        .status()
        .unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), b"012X\0\0");
    assert_eq!(
        server_md5(&a, "existing.txt"),
        (6, md5::Md5::digest(b"012X\0\0").into()),
        "a closed file cut and extended on the server"
    );
    // O_TRUNC replaces.
    std::fs::write(&p, "new").unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), b"new");
    assert_eq!(
        server_md5(&a, "existing.txt"),
        (3, md5::Md5::digest(b"new").into())
    );
}

#[test]
fn readers_see_a_file_while_it_is_written() {
    let a = Area::new("wconc");
    let m = rw(&a);
    let p = m.join("growing.log");
    let mut w = std::fs::File::create(&p).unwrap();
    w.write_all(b"first line\n").unwrap();
    assert_eq!(
        std::fs::metadata(&p).unwrap().len(),
        11,
        "size visible before close"
    );
    assert_eq!(std::fs::read(&p).unwrap(), b"first line\n");
    w.write_all(b"second\n").unwrap();
    let mut r = std::fs::File::open(&p).unwrap();
    r.seek(SeekFrom::Start(11)).unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut r, &mut rest).unwrap();
    assert_eq!(rest, "second\n");
    drop(w);
    assert_eq!(
        server_md5(&a, "growing.log"),
        (18, md5::Md5::digest(b"first line\nsecond\n").into())
    );
}

#[test]
fn mkdir_rmdir_unlink() {
    let a = Area::new("wdirs");
    let m = rw(&a);
    std::fs::create_dir(m.join("d")).unwrap();
    let e = std::fs::create_dir(m.join("d")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EEXIST));
    let full = format!("{}d/", a.prefix);
    let marker = block_on(a.store.head(&full)).unwrap();
    assert_eq!(
        marker.content_type.as_deref(),
        Some("application/x-directory")
    );
    std::fs::write(m.join("d/f"), "x").unwrap();
    let e = std::fs::remove_dir(m.join("d")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENOTEMPTY));
    std::fs::remove_file(m.join("d/f")).unwrap();
    assert!(m.join("d").is_dir(), "the directory outlives its last file");
    assert!(names(&m.join("d")).is_empty());
    std::fs::remove_dir(m.join("d")).unwrap();
    assert!(!m.join("d").exists());
    assert!(block_on(a.store.head(&full)).is_err(), "marker removed");
    let e = std::fs::remove_file(m.join("nope")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
}

#[test]
fn failed_upload_fails_close_and_keeps_the_bytes() {
    // A server of its own, which it can stop, whatever the shared backend is.
    let cache = tempfile::tempdir().unwrap();
    let mut server = Served::start("fail", &["--bucket".into(), "fail".into()]);
    let be = server.backend.clone();
    let m = Mount::new(
        &be,
        "fail",
        &[
            "--read-write",
            "--cache-dir",
            cache.path().to_str().unwrap(),
        ],
    );
    let mut f = std::fs::File::create(m.join("precious.txt")).unwrap();
    f.write_all(b"do not lose me").unwrap();
    server.kill();
    // close() reports the failed upload.
    let fd = std::os::fd::IntoRawFd::into_raw_fd(f);
    // SAFETY: closing the fd we own, once.
    let rc = unsafe { libc::close(fd) };
    assert_eq!(rc, -1, "close must fail when the upload fails");
    // The bytes are kept under <cache-dir>/recovered once the handle is released.
    let kept = wait_recovered(cache.path(), 1, Duration::from_secs(120), &m.log()).remove(0);
    assert!(kept.to_string_lossy().ends_with("precious.txt"), "{kept:?}");
    assert_eq!(std::fs::read(&kept).unwrap(), b"do not lose me");
}

fn renameat2(from: &std::path::Path, to: &std::path::Path, flags: u32) -> std::io::Result<()> {
    let a = std::ffi::CString::new(from.as_os_str().as_encoded_bytes()).unwrap();
    let b = std::ffi::CString::new(to.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: valid C strings; AT_FDCWD with absolute paths.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            flags,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[test]
fn rename_files_and_directories() {
    let a = Area::new("wren");
    a.put("tree/a.txt", "A");
    a.put("tree/sub/b.txt", "B");
    a.put("x.txt", "X");
    a.put("y.txt", "Y");
    let m = rw(&a);
    // A file, to a new name and over an existing file.
    std::fs::rename(m.join("x.txt"), m.join("x2.txt")).unwrap();
    assert!(!m.join("x.txt").exists());
    assert_eq!(std::fs::read_to_string(m.join("x2.txt")).unwrap(), "X");
    std::fs::rename(m.join("x2.txt"), m.join("y.txt")).unwrap();
    assert_eq!(std::fs::read_to_string(m.join("y.txt")).unwrap(), "X");
    // RENAME_NOREPLACE and RENAME_EXCHANGE.
    std::fs::write(m.join("z.txt"), "Z").unwrap();
    let e = renameat2(&m.join("z.txt"), &m.join("y.txt"), libc::RENAME_NOREPLACE).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EEXIST));
    let e = renameat2(&m.join("z.txt"), &m.join("y.txt"), libc::RENAME_EXCHANGE).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EINVAL));
    // A directory with nested content, into another directory.
    std::fs::create_dir(m.join("dest")).unwrap();
    std::fs::rename(m.join("tree"), m.join("dest/moved")).unwrap();
    assert!(!m.join("tree").exists());
    assert_eq!(
        std::fs::read_to_string(m.join("dest/moved/a.txt")).unwrap(),
        "A"
    );
    assert_eq!(
        std::fs::read_to_string(m.join("dest/moved/sub/b.txt")).unwrap(),
        "B"
    );
    let e = std::fs::rename(m.join("dest"), m.join("dest/moved/inside")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EINVAL));
    // On the server: old keys gone, new keys there.
    let keys: Vec<String> = block_on(s3mount::store::list_all(&a.store, &a.prefix))
        .unwrap()
        .into_iter()
        .map(|o| o.key[a.prefix.len()..].to_string())
        .collect();
    assert!(
        keys.contains(&"dest/moved/sub/b.txt".to_string()),
        "{keys:?}"
    );
    assert!(!keys.iter().any(|k| k.starts_with("tree/")), "{keys:?}");
    // A file renamed while open for writing lands under its new name.
    let mut f = std::fs::File::create(m.join("open.txt")).unwrap();
    f.write_all(b"before").unwrap();
    std::fs::rename(m.join("open.txt"), m.join("renamed.txt")).unwrap();
    f.write_all(b" after").unwrap();
    drop(f);
    assert_eq!(
        std::fs::read_to_string(m.join("renamed.txt")).unwrap(),
        "before after"
    );
    assert_eq!(
        server_md5(&a, "renamed.txt"),
        (12, md5::Md5::digest(b"before after").into())
    );
}

#[test]
fn chmod_chown_utimens_and_symlinks_survive_a_remount() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let a = Area::new("wmeta");
    let m = rw(&a);
    std::fs::write(m.join("f"), "data").unwrap();
    std::fs::set_permissions(m.join("f"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::chown(m.join("f"), Some(1234), Some(5678)).unwrap();
    let st = std::process::Command::new("touch")
        .args(["-m", "-d", "2021-02-03T04:05:06.5Z"])
        .arg(m.join("f"))
        .status()
        .unwrap();
    assert!(st.success());
    std::fs::create_dir(m.join("d")).unwrap();
    std::fs::set_permissions(m.join("d"), std::fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::symlink("f", m.join("link")).unwrap();
    std::os::unix::fs::symlink("../elsewhere/x", m.join("d/rel")).unwrap();
    let e = std::fs::hard_link(m.join("f"), m.join("hard")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EPERM));
    drop(m);

    let m = a.mount(&[]);
    let md = std::fs::metadata(m.join("f")).unwrap();
    assert_eq!(md.permissions().mode() & 0o7777, 0o600);
    assert_eq!((md.uid(), md.gid()), (1234, 5678));
    assert_eq!(md.mtime(), 1612325106);
    assert_eq!(md.mtime_nsec(), 500_000_000);
    assert_eq!(std::fs::read_to_string(m.join("f")).unwrap(), "data");
    assert_eq!(
        std::fs::metadata(m.join("d")).unwrap().permissions().mode() & 0o7777,
        0o700
    );
    assert_eq!(
        std::fs::read_link(m.join("link")).unwrap().to_str(),
        Some("f")
    );
    assert_eq!(
        std::fs::read_to_string(m.join("link")).unwrap(),
        "data",
        "follows the link"
    );
    assert_eq!(
        std::fs::read_link(m.join("d/rel")).unwrap().to_str(),
        Some("../elsewhere/x")
    );
    assert!(
        std::fs::symlink_metadata(m.join("link"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    // On the server, in s3fs's format.
    let info = a.head("f").unwrap();
    assert_eq!(info.metadata.get("mode").map(String::as_str), Some("33152"));
    assert_eq!(info.metadata.get("uid").map(String::as_str), Some("1234"));
    assert_eq!(
        info.metadata.get("mtime").map(String::as_str),
        Some("1612325106.500000000")
    );
    let link = a.head("link").unwrap();
    assert_eq!(link.metadata.get("mode").map(String::as_str), Some("41471"));
}

#[test]
fn s3fs_and_rclone_headers_read_right() {
    use s3mount::store::PutOptions;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let a = Area::new("interop");
    let hdr = |pairs: &[(&str, &str)]| PutOptions {
        content_type: None,
        metadata: pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    };
    a.put_with(
        "s3fs.txt",
        "s",
        hdr(&[
            ("mtime", "1600000000"),
            ("mode", "33261"),
            ("uid", "7"),
            ("gid", "8"),
        ]),
    );
    a.put_with(
        "rclone.txt",
        "r",
        hdr(&[("mtime", "1600000000.25"), ("mode", "100640")]),
    );
    a.put_with("s3fs-link", "s3fs.txt", hdr(&[("mode", "41471")]));
    let m = a.mount(&[]);
    let s = std::fs::metadata(m.join("s3fs.txt")).unwrap();
    assert_eq!(
        (s.permissions().mode() & 0o7777, s.uid(), s.gid(), s.mtime()),
        (0o755, 7, 8, 1600000000)
    );
    let r = std::fs::metadata(m.join("rclone.txt")).unwrap();
    assert_eq!(
        (r.permissions().mode() & 0o7777, r.mtime(), r.mtime_nsec()),
        (0o640, 1600000000, 250_000_000)
    );
    assert_eq!(
        std::fs::read_link(m.join("s3fs-link")).unwrap().to_str(),
        Some("s3fs.txt")
    );
}

#[test]
fn our_headers_read_right_in_s3fs() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let a = Area::new("tos3fs");
    {
        let m = rw(&a);
        std::fs::write(m.join("f"), "ours").unwrap();
        std::fs::set_permissions(m.join("f"), std::fs::Permissions::from_mode(0o640)).unwrap();
        let st = std::process::Command::new("touch")
            .args(["-m", "-d", "@1500000000"])
            .arg(m.join("f"))
            .status()
            .unwrap();
        assert!(st.success());
    }
    let s = S3fsMount::new(&a, false);
    let md = std::fs::metadata(s.join("f")).unwrap();
    assert_eq!(md.permissions().mode() & 0o7777, 0o640);
    assert_eq!(md.mtime(), 1500000000);
    assert_eq!(std::fs::read_to_string(s.join("f")).unwrap(), "ours");
}

#[test]
fn git_clone_tar_and_cp_give_identical_trees() {
    let a = Area::new("tools");
    let m = a.mount(&["--read-write"]);
    let work = tempfile::tempdir().unwrap();
    let w = work.path().display().to_string();
    let mnt = m.path().display().to_string();
    // A small repository with history, a nested tree, an executable and a symlink.
    sh(&format!(
        "set -e; cd {w} && mkdir -p src/tree/deep && cd src && git init -q . && \
         git config user.email t@e && git config user.name t && \
         echo one > a.txt && printf '#!/bin/sh\\necho hi\\n' > run.sh && chmod 755 run.sh && \
         ln -s a.txt link && head -c 300000 /dev/urandom > tree/deep/blob.bin && \
         for i in $(seq 1 40); do echo $i > tree/f$i; done && \
         git add -A && git commit -qm one && echo two >> a.txt && git commit -qam two"
    ));
    sh(&format!("cd {w} && tar cf src.tar -C src ."));
    // git clone into the mount.
    sh(&format!("git clone -q {w}/src {mnt}/clone"));
    sh(&format!("diff -r --exclude=.git {w}/src {mnt}/clone"));
    sh(&format!(
        "cd {mnt}/clone && git status --porcelain | (! grep .) && git log --oneline | wc -l | grep -qx 2"
    ));
    // tar x into the mount.
    sh(&format!(
        "mkdir {mnt}/untar && tar xf {w}/src.tar -C {mnt}/untar"
    ));
    sh(&format!("diff -r {w}/src {mnt}/untar"));
    // cp -r into the mount.
    sh(&format!("cp -r {w}/src {mnt}/copy"));
    sh(&format!("diff -r {w}/src {mnt}/copy"));
    // And the trees survive a remount (with stored attributes in listings, for the symlink).
    drop(m);
    let m = a.mount(&["--posix-metadata"]);
    let mnt = m.path().display().to_string();
    sh(&format!(
        "diff -r {w}/src {mnt}/untar && diff -r {w}/src {mnt}/copy"
    ));
    sh(&format!(
        "test -x {mnt}/untar/run.sh && test -L {mnt}/untar/link"
    ));
}

/// Several threads open, write and close one file while others open it. A new handle must never
/// join a write state that the last close is tearing down (every write on it would fail with
/// EBADF), and every record written reaches the object.
#[test]
fn concurrent_open_write_close_of_one_file() {
    let a = Area::new("wrace");
    let m = rw(&a);
    let p = m.join("shared.bin");
    std::fs::write(&p, b"").unwrap();
    const THREADS: usize = 6;
    const ROUNDS: usize = 25;
    const REC: usize = 16;
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let p = p.clone();
            std::thread::spawn(move || -> Result<(), String> {
                for i in 0..ROUNDS {
                    let f = std::fs::OpenOptions::new()
                        .write(true)
                        .open(&p)
                        .map_err(|e| format!("open {t}/{i}: {e}"))?;
                    let rec = format!("{t:02}:{i:03}:{:08}\n", t * ROUNDS + i);
                    let off = ((t * ROUNDS + i) * REC) as u64;
                    f.write_all_at(rec.as_bytes(), off)
                        .map_err(|e| format!("write {t}/{i}: {e}"))?;
                    close_checked(f).map_err(|e| format!("close {t}/{i}: {e}"))?;
                }
                Ok(())
            })
        })
        .collect();
    let errors: Vec<String> = workers
        .into_iter()
        .filter_map(|w| w.join().unwrap().err())
        .collect();
    assert!(errors.is_empty(), "failed: {errors:?}\n{}", m.log());
    let mut want = Vec::new();
    for n in 0..THREADS * ROUNDS {
        let (t, i) = (n / ROUNDS, n % ROUNDS);
        want.extend_from_slice(format!("{t:02}:{i:03}:{n:08}\n").as_bytes());
    }
    assert_eq!(std::fs::read(&p).unwrap(), want, "on the mount");
    drop(m);
    let m = a.mount(&[]);
    assert_eq!(
        std::fs::read(m.join("shared.bin")).unwrap(),
        want,
        "after a remount"
    );
}

/// Names over 255 bytes are ENAMETOOLONG (not ENOENT), for lookups and for creates.
#[test]
fn fuse_names_over_255_bytes_are_enametoolong() {
    let a = Area::new("wlong");
    let m = rw(&a);
    let ok = "x".repeat(255);
    std::fs::write(m.join(&ok), b"fits").unwrap();
    assert_eq!(std::fs::read(m.join(&ok)).unwrap(), b"fits");
    let long = "x".repeat(256);
    let e = std::fs::metadata(m.join(&long)).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENAMETOOLONG), "stat: {e}");
    let e = std::fs::File::create(m.join(&long)).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENAMETOOLONG), "create: {e}");
    let e = std::fs::create_dir(m.join(&"é".repeat(128))).unwrap_err();
    assert_eq!(
        e.raw_os_error(),
        Some(libc::ENAMETOOLONG),
        "mkdir of 256 bytes: {e}"
    );
}

/// A cache directory that is full makes the write that spills fail with ENOSPC, as a local
/// disk would, not with EIO.
#[test]
fn fuse_a_full_cache_dir_is_enospc() {
    let a = Area::new("wnospc");
    let cache = tempfile::tempdir().unwrap();
    let tmpfs = TmpfsGuard::mount(cache.path(), "256k");
    let m = a.mount(&[
        "--cache-dir",
        tmpfs.0.to_str().unwrap(),
        "--write-buffer",
        "64K",
    ]);
    let mut f = std::fs::File::create(m.join("big.bin")).unwrap();
    let chunk = vec![7u8; 64 << 10];
    let err = (0..16)
        .find_map(|_| f.write_all(&chunk).err())
        .expect("writing 1 MiB through a 256 KiB cache dir must fail");
    assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
}

/// A tmpfs of a given size mounted on a directory; unmounted on drop.
struct TmpfsGuard(std::path::PathBuf);

impl TmpfsGuard {
    fn mount(dir: &std::path::Path, size: &str) -> Self {
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .unwrap()
            .success();
        assert!(ok, "mount a tmpfs on {}", dir.display());
        Self(dir.to_path_buf())
    }
}

impl Drop for TmpfsGuard {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Failed uploads of keys whose recovered names would collide (`q/a`, `q_a`), and of a
/// 255-byte UTF-8 name, each keep their own bytes under `recovered/`, readable only by the
/// mount's user.
#[test]
fn fuse_recovered_copies_never_collide_and_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let cache = tempfile::tempdir().unwrap();
    let mut server = Served::start("coll", &["--bucket".into(), "coll".into()]);
    let be = server.backend.clone();
    let m = Mount::new(
        &be,
        "coll",
        &["--cache-dir", cache.path().to_str().unwrap()],
    );
    std::fs::create_dir(m.join("q")).unwrap();
    let long = "é".repeat(127) + "x"; // 255 bytes
    let names = ["q/a".to_string(), "q_a".to_string(), long];
    let files: Vec<_> = names
        .iter()
        .map(|n| {
            let mut f = std::fs::File::create(m.join(n)).unwrap();
            f.write_all(format!("bytes of {n}").as_bytes()).unwrap();
            f
        })
        .collect();
    server.kill();
    for f in files {
        assert!(
            close_checked(f).is_err(),
            "close fails when the upload fails"
        );
    }
    let found = wait_recovered(
        cache.path(),
        names.len(),
        Duration::from_secs(120),
        &m.log(),
    );
    let recovered = cache.path().join("recovered");
    let mut bodies: Vec<String> = found
        .iter()
        .map(|p| {
            let mode = std::fs::metadata(p).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{p:?}");
            std::fs::read_to_string(p).unwrap()
        })
        .collect();
    bodies.sort();
    let mut want: Vec<String> = names.iter().map(|n| format!("bytes of {n}")).collect();
    want.sort();
    assert_eq!(bodies, want, "each file's own bytes, none overwritten");
    let dir_mode = std::fs::metadata(&recovered).unwrap().permissions().mode();
    assert_eq!(dir_mode & 0o777, 0o700);
}
