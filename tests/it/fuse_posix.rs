//! POSIX conformance on a real mount, one test per rule (docs/semantics.md): special files,
//! ownership, times, name limits, unlink and rename of open files, extended attributes,
//! Content-Type, outside overwrites, old-style directory objects. A local directory is the
//! reference where the rule is "as a local file system does"; s3fs-fuse reads (and writes) the
//! same objects for the interop rules.

use crate::common::*;
use std::os::unix::fs::{FileTypeExt, MetadataExt};

fn rw(a: &Area) -> Mount {
    a.mount(&["--read-write", "--metadata-ttl", "0"])
}

/// The special files each test makes: name, `mode` (type and permissions), device number.
const SPECIALS: [(&str, u32, u64); 5] = [
    ("fifo", libc::S_IFIFO | 0o640, 0),
    ("chr", libc::S_IFCHR | 0o600, 0x0103), // 1:3, /dev/null's
    ("blk", libc::S_IFBLK | 0o644, 0x0700), // 7:0, a loop device's (modes clear of the umask)
    ("sock", libc::S_IFSOCK | 0o755, 0),
    ("plain", libc::S_IFREG | 0o604, 0),
];

/// `rdev`: whether the device numbers must read back (s3fs-fuse 1.91 neither stores nor shows
/// them, even for its own devices).
fn check_specials(dir: &std::path::Path, what: &str, rdev: bool) {
    for (name, mode, dev) in SPECIALS {
        let md = std::fs::symlink_metadata(dir.join(name))
            .unwrap_or_else(|e| panic!("{what}: {name}: {e}"));
        let ft = md.file_type();
        let ok = match mode & libc::S_IFMT {
            libc::S_IFIFO => ft.is_fifo(),
            libc::S_IFCHR => ft.is_char_device(),
            libc::S_IFBLK => ft.is_block_device(),
            libc::S_IFSOCK => ft.is_socket(),
            _ => ft.is_file(),
        };
        assert!(ok, "{what}: {name} is {ft:?}");
        assert_eq!(md.mode(), mode, "{what}: {name}: mode");
        assert_eq!(md.len(), 0, "{what}: {name}: size");
        if rdev && dev != 0 {
            assert_eq!(md.rdev(), dev, "{what}: {name}: rdev");
        }
    }
}

/// mknod of FIFOs, sockets, character and block devices and plain files, and mkfifo: the
/// types, modes and device numbers read back, after a remount, and in s3fs-fuse; a FIFO on the
/// mount passes bytes; objects s3fs-fuse makes read back here.
#[test]
fn fuse_special_files_are_stored_as_s3fs_does_and_read_both_ways() {
    let a = Area::new("pspecial");
    {
        let m = rw(&a);
        for (name, mode, dev) in SPECIALS {
            mknod(&m.join(name), mode, dev).unwrap_or_else(|e| panic!("mknod {name}: {e}"));
        }
        check_specials(m.path(), "after mknod", true);
        // A FIFO works: the kernel joins a reader and a writer.
        let p = m.join("fifo");
        let w = std::thread::spawn(move || std::fs::write(p, b"through the pipe"));
        assert_eq!(std::fs::read(m.join("fifo")).unwrap(), b"through the pipe");
        w.join().unwrap().unwrap();
        // The same for `mkfifo(1)`.
        let st = std::process::Command::new("mkfifo")
            .arg(m.join("made-by-mkfifo"))
            .status()
            .unwrap();
        assert!(st.success());
        assert!(
            std::fs::symlink_metadata(m.join("made-by-mkfifo"))
                .unwrap()
                .file_type()
                .is_fifo()
        );
    }
    // On the server: a zero-byte object, the type in mode, the device number in rdev.
    let info = a.head("chr").unwrap();
    assert_eq!(info.size, 0);
    assert_eq!(
        info.metadata.get("mode").map(String::as_str),
        Some((libc::S_IFCHR | 0o600).to_string().as_str())
    );
    assert_eq!(info.metadata.get("rdev").map(String::as_str), Some("259"));
    let m = rw(&a);
    check_specials(m.path(), "after a remount", true);
    drop(m);
    // s3fs against the external server is checked in the embedded pass; it needs CopyObject
    // for attribute changes.
    if a.backend.external || gateway_lacks("CopyObject") {
        return;
    }
    let s = S3fsMount::new(&a, true);
    check_specials(s.dir.path(), "in s3fs-fuse", false);
    mknod(&s.join("from-s3fs"), libc::S_IFIFO | 0o600, 0).unwrap();
    drop(s);
    let m = rw(&a);
    let md = std::fs::symlink_metadata(m.join("from-s3fs")).unwrap();
    assert!(md.file_type().is_fifo(), "s3fs's FIFO reads as a FIFO here");
    assert_eq!(md.mode() & 0o7777, 0o600);
}

/// Runs `cmd` in sh as `uid`:`gid` (no supplementary groups); its success.
fn as_user(uid: u32, gid: u32, cmd: &str) -> bool {
    std::process::Command::new("setpriv")
        .args([
            &format!("--reuid={uid}"),
            &format!("--regid={gid}"),
            "--clear-groups",
            "sh",
            "-c",
            cmd,
        ])
        .status()
        .unwrap()
        .success()
}

/// With allow_other, what another user creates is theirs (file, directory, symlink, FIFO), kept
/// across a remount; chmod and chown follow POSIX for non-root callers (the owner may chmod,
/// nobody else; only root gives a file away); under a set-group-ID directory new entries take
/// its group and new directories its setgid bit.
#[test]
fn fuse_new_entries_belong_to_their_creator() {
    use std::os::unix::fs::PermissionsExt;
    let a = Area::new("powner");
    let args = ["--read-write", "--metadata-ttl", "0", "-o", "allow_other"];
    let m = a.mount(&args);
    let d = m.join("shared");
    std::fs::create_dir(&d).unwrap();
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777)).unwrap();
    let ds = d.display();
    assert!(as_user(
        1000,
        1000,
        &format!("set -e; echo x > {ds}/f; mkdir {ds}/sub; ln -s f {ds}/l; mkfifo {ds}/p")
    ));
    let owner = |p: &str| {
        let md = std::fs::symlink_metadata(d.join(p)).unwrap();
        (md.uid(), md.gid())
    };
    for p in ["f", "sub", "l", "p"] {
        assert_eq!(owner(p), (1000, 1000), "{p}");
    }
    assert!(
        as_user(1000, 1000, &format!("chmod 600 {ds}/f")),
        "the owner may chmod"
    );
    assert!(
        !as_user(1001, 1001, &format!("chmod 644 {ds}/f")),
        "others may not"
    );
    assert!(
        !as_user(1000, 1000, &format!("chown 1001 {ds}/f")),
        "only root gives a file away"
    );
    assert_eq!(
        std::fs::metadata(d.join("f")).unwrap().mode() & 0o7777,
        0o600
    );
    // A set-group-ID directory: new entries take its group, directories its bit too.
    let g = m.join("setgid");
    std::fs::create_dir(&g).unwrap();
    std::os::unix::fs::chown(&g, None, Some(50)).unwrap();
    std::fs::set_permissions(&g, std::fs::Permissions::from_mode(0o2777)).unwrap();
    let gs = g.display();
    assert!(as_user(
        1000,
        1000,
        &format!("set -e; touch {gs}/f; mkdir {gs}/sub")
    ));
    let f = std::fs::metadata(g.join("f")).unwrap();
    assert_eq!((f.uid(), f.gid()), (1000, 50));
    let sub = std::fs::metadata(g.join("sub")).unwrap();
    assert_eq!(sub.gid(), 50);
    assert!(
        sub.mode() & 0o2000 != 0,
        "a new directory inherits the setgid bit"
    );
    drop(m);
    let m = a.mount(&args);
    let md = std::fs::symlink_metadata(m.join("shared/f")).unwrap();
    assert_eq!(
        (md.uid(), md.gid(), md.mode() & 0o7777),
        (1000, 1000, 0o600),
        "after a remount"
    );
    let md = std::fs::symlink_metadata(m.join("shared/sub")).unwrap();
    assert_eq!(
        (md.uid(), md.gid()),
        (1000, 1000),
        "a directory's owner after a remount"
    );
    let ours = std::fs::symlink_metadata(m.join("shared/f")).unwrap();
    drop(m);
    if a.backend.external || gateway_lacks("CopyObject") {
        return;
    }
    // s3fs-fuse reads the owner, mode and times we stored, and we read what it stores.
    let s = S3fsMount::new(&a, true);
    let theirs = std::fs::symlink_metadata(s.join("shared/f")).unwrap();
    assert_eq!(
        (theirs.uid(), theirs.gid(), theirs.mode()),
        (1000, 1000, ours.mode()),
        "in s3fs-fuse"
    );
    assert_eq!(theirs.mtime(), ours.mtime(), "mtime in s3fs-fuse");
    assert_eq!(theirs.ctime(), ours.ctime(), "ctime in s3fs-fuse");
    std::fs::write(s.join("by-s3fs"), "x").unwrap();
    std::os::unix::fs::chown(s.join("by-s3fs"), Some(1234), Some(4321)).unwrap();
    let theirs = std::fs::symlink_metadata(s.join("by-s3fs")).unwrap();
    drop(s);
    let m = a.mount(&args);
    let md = std::fs::symlink_metadata(m.join("by-s3fs")).unwrap();
    assert_eq!(
        (md.uid(), md.gid(), md.mtime(), md.ctime()),
        (1234, 4321, theirs.mtime(), theirs.ctime()),
        "s3fs's owner and times here"
    );
}

fn times(p: &std::path::Path) -> (i64, i64, i64, i64) {
    let md = std::fs::symlink_metadata(p).unwrap();
    let ns = |s: i64, n: i64| s * 1_000_000_000 + n;
    (
        ns(md.atime(), md.atime_nsec()),
        ns(md.mtime(), md.mtime_nsec()),
        ns(md.ctime(), md.ctime_nsec()),
        md.mtime(),
    )
}

/// The time rules: a write after an explicit mtime moves mtime; atime set by utimens is kept
/// and reads do not move it; every change of data or attributes moves ctime; rename keeps
/// mtime to the nanosecond (also of an object written by another tool, with no mtime header);
/// a directory's mtime and ctime move when entries are made or removed in it. Checked with
/// the metadata TTL at 0 (every stat asks the server) and after a remount.
#[test]
fn fuse_times_follow_posix() {
    let a = Area::new("ptimes");
    a.put("foreign", "from another tool");
    let m = rw(&a);
    let f = m.join("f");
    let fs = f.display();
    sh(&format!("echo a > {fs}; touch -m -d 2001-09-09 {fs}"));
    assert_eq!(times(&f).3, 999_993_600, "explicit mtime");
    let before = times(&f);
    sh(&format!("echo b >> {fs}"));
    let after = times(&f);
    assert!(
        after.3 > 1_700_000_000,
        "a write after an explicit time moves mtime"
    );
    assert!(after.2 > before.2, "and ctime");
    // atime: set, kept, not moved by reads.
    sh(&format!("touch -a -d 2002-02-02 {fs}"));
    let t = times(&f);
    assert_eq!(t.0 / 1_000_000_000, 1_012_608_000);
    std::fs::read(&f).unwrap();
    assert_eq!(times(&f).0, t.0, "a read does not move atime");
    // chmod moves ctime, not mtime.
    let t = times(&f);
    sh(&format!("chmod 600 {fs}"));
    let u = times(&f);
    assert!(u.2 > t.2, "chmod moves ctime");
    assert_eq!(u.1, t.1, "chmod keeps mtime");
    // rename keeps mtime to the nanosecond.
    sh(&format!("touch -m -d '2003-03-03 03:03:03.123456789' {fs}"));
    let t = times(&f);
    sh(&format!("mv {fs} {}", m.join("g").display()));
    assert_eq!(times(&m.join("g")).1, t.1, "rename keeps mtime");
    let foreign = times(&m.join("foreign")).1;
    sh(&format!(
        "mv {} {}",
        m.join("foreign").display(),
        m.join("moved").display()
    ));
    assert_eq!(
        times(&m.join("moved")).1,
        foreign,
        "rename keeps a foreign object's mtime"
    );
    // A directory's mtime and ctime move with its entries.
    std::fs::create_dir(m.join("d")).unwrap();
    let d0 = times(&m.join("d"));
    std::fs::write(m.join("d/x"), "x").unwrap();
    let d1 = times(&m.join("d"));
    assert!(
        d1.1 > d0.1 && d1.2 > d0.2,
        "create moves the directory's times"
    );
    std::fs::remove_file(m.join("d/x")).unwrap();
    assert!(times(&m.join("d")).1 > d1.1, "unlink moves them");
    drop(m);
    let m = rw(&a);
    let g = times(&m.join("g"));
    assert_eq!(g.1, t.1, "mtime to the nanosecond after a remount");
    assert_eq!(g.0 / 1_000_000_000, 1_012_608_000, "atime after a remount");
    assert_eq!(times(&m.join("moved")).1, foreign);
}

/// POSIX unlink and rename of open files, beside a local directory doing the same: a
/// descriptor opened before the unlink keeps reading and writing the same bytes and fstat
/// shows nlink 0; the name never comes back (the metadata TTL is 0: every lookup asks the
/// server); nothing is uploaded under the old name, and its object is gone after the last
/// close. A descriptor follows its file through a rename.
#[test]
fn fuse_unlinked_and_renamed_open_files_keep_their_bytes() {
    use std::io::{Read, Seek, SeekFrom, Write};
    let a = Area::new("punlink");
    let m = rw(&a);
    let local = tempfile::tempdir().unwrap();
    for dir in [m.path(), local.path()] {
        let what = dir.display().to_string();
        let f = dir.join("f");
        std::fs::write(&f, "hello").unwrap();
        let mut w = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&f)
            .unwrap();
        let mut r = std::fs::File::open(&f).unwrap();
        std::fs::remove_file(&f).unwrap();
        assert_eq!(
            w.metadata().unwrap().nlink(),
            0,
            "{what}: nlink after unlink"
        );
        assert!(
            std::fs::symlink_metadata(&f).is_err(),
            "{what}: the name is gone"
        );
        w.seek(SeekFrom::End(0)).unwrap();
        w.write_all(b" world").unwrap();
        let mut s = String::new();
        r.read_to_string(&mut s).unwrap();
        assert!(
            s.starts_with("hello"),
            "{what}: a reader opened before: {s}"
        );
        let mut s = String::new();
        w.seek(SeekFrom::Start(0)).unwrap();
        w.read_to_string(&mut s).unwrap();
        assert_eq!(s, "hello world", "{what}: the writer reads its own bytes");
        w.sync_all().unwrap();
        drop(w);
        assert!(
            std::fs::symlink_metadata(&f).is_err(),
            "{what}: not back after close"
        );
        drop(r);
        assert!(!names(dir).contains(&"f".to_string()), "{what}: not listed");
        // Rename of an open file: the descriptor follows it.
        let g = dir.join("g");
        std::fs::write(&g, "moving bytes").unwrap();
        let mut r = std::fs::File::open(&g).unwrap();
        std::fs::rename(&g, dir.join("h")).unwrap();
        let mut s = String::new();
        r.read_to_string(&mut s).unwrap();
        assert_eq!(s, "moving bytes", "{what}: read after a rename");
    }
    assert!(
        a.head("f").is_err(),
        "the unlinked file's object is gone and nothing was uploaded under its name"
    );
}

/// user.* extended attributes: set, get, list, remove, XATTR_CREATE/REPLACE, binary values,
/// kept after a remount and read both ways with s3fs-fuse; E2BIG past S3's 2 KiB of user
/// metadata; other namespaces refused (ENOTSUP) and `security.capability` answered ENODATA.
#[test]
fn fuse_user_xattrs_are_stored_as_s3fs_does() {
    let a = Area::new("pxattr");
    let binary: Vec<u8> = vec![0, 1, 2, b',', b':', b'"', 255, b'{'];
    {
        let m = rw(&a);
        let f = m.join("f");
        std::fs::write(&f, "x").unwrap();
        set_xattr(&f, "user.a", b"one", 0).unwrap();
        set_xattr(&f, "user.bin", &binary, 0).unwrap();
        assert_eq!(get_xattr(&f, "user.a").unwrap(), b"one");
        assert_eq!(get_xattr(&f, "user.bin").unwrap(), binary);
        assert_eq!(list_xattr(&f), ["user.a", "user.bin"]);
        let e = set_xattr(&f, "user.a", b"two", libc::XATTR_CREATE).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EEXIST));
        let e = set_xattr(&f, "user.none", b"x", libc::XATTR_REPLACE).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENODATA));
        set_xattr(&f, "user.gone", b"soon", 0).unwrap();
        remove_xattr(&f, "user.gone").unwrap();
        let e = get_xattr(&f, "user.gone").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENODATA));
        let e = get_xattr(&f, "security.capability").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENODATA));
        let e = set_xattr(&f, "trusted.x", b"x", 0).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EOPNOTSUPP));
        let e = set_xattr(&f, "user.big", &[b'z'; 3000], 0).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::E2BIG));
        assert_eq!(std::fs::read(&f).unwrap(), b"x", "the data is untouched");
        // A directory and a file being written keep them too.
        std::fs::create_dir(m.join("d")).unwrap();
        set_xattr(&m.join("d"), "user.dir", b"yes", 0).unwrap();
        let mut w = std::fs::File::create(m.join("w")).unwrap();
        std::io::Write::write_all(&mut w, b"open").unwrap();
        set_xattr(&m.join("w"), "user.w", b"while open", 0).unwrap();
        drop(w);
    }
    let m = rw(&a);
    assert_eq!(
        list_xattr(&m.join("f")),
        ["user.a", "user.bin"],
        "after a remount"
    );
    assert_eq!(get_xattr(&m.join("f"), "user.bin").unwrap(), binary);
    assert_eq!(get_xattr(&m.join("d"), "user.dir").unwrap(), b"yes");
    assert_eq!(get_xattr(&m.join("w"), "user.w").unwrap(), b"while open");
    drop(m);
    if a.backend.external || gateway_lacks("CopyObject") {
        return;
    }
    let s = S3fsMount::new(&a, true);
    assert_eq!(
        get_xattr(&s.join("f"), "user.bin").unwrap(),
        binary,
        "s3fs reads ours"
    );
    set_xattr(&s.join("f"), "user.s3fs", b"from s3fs", 0).unwrap();
    drop(s);
    let m = rw(&a);
    assert_eq!(
        get_xattr(&m.join("f"), "user.s3fs").unwrap(),
        b"from s3fs",
        "we read s3fs's"
    );
    assert_eq!(get_xattr(&m.join("f"), "user.a").unwrap(), b"one");
}

fn content_type(a: &Area, key: &str) -> Option<String> {
    a.head(key).unwrap().content_type
}

/// Content-Type from the file name's extension on upload (small and multipart files), and
/// again on a rename that changes it; a name without a known extension gets the server's
/// default.
#[test]
fn fuse_content_type_follows_the_extension() {
    let a = Area::new("pctype");
    let m = a.mount(&[
        "--read-write",
        "--multipart-threshold",
        "5M",
        "--part-size",
        "5M",
    ]);
    std::fs::write(m.join("index.html"), "<p>hi</p>").unwrap();
    std::fs::write(m.join("pic.png"), [137u8, 80, 78, 71]).unwrap();
    std::fs::write(m.join("big.json"), vec![b' '; 6 << 20]).unwrap();
    std::fs::write(m.join("noext"), "x").unwrap();
    std::fs::rename(m.join("pic.png"), m.join("notes.txt")).unwrap();
    drop(m);
    assert_eq!(content_type(&a, "index.html").as_deref(), Some("text/html"));
    assert_eq!(
        content_type(&a, "big.json").as_deref(),
        Some("application/json")
    );
    assert_eq!(content_type(&a, "notes.txt").as_deref(), Some("text/plain"));
    assert_ne!(content_type(&a, "noext").as_deref(), Some("text/plain"));
}

/// Another client replaces an object after this mount looked it up: a fresh open reads the
/// new version (re-checked when the old one is refused), not EIO, and never a mix.
#[test]
fn fuse_a_fresh_open_after_an_outside_overwrite_reads_the_new_object() {
    let a = Area::new("poutside");
    a.put("f", "version 1");
    let m = a.mount(&["--read-write", "--metadata-ttl", "60"]);
    assert_eq!(std::fs::metadata(m.join("f")).unwrap().len(), 9);
    a.put("f", "version 2");
    assert_eq!(std::fs::read_to_string(m.join("f")).unwrap(), "version 2");
}

/// Directory objects of older tools (`dir`, no slash, Content-Type application/x-directory):
/// rmdir, rename and chmod work and stick across a remount.
#[test]
fn fuse_old_style_directory_objects_can_be_removed_renamed_and_chmoded() {
    use std::os::unix::fs::PermissionsExt;
    let a = Area::new("poldir");
    let dir = s3mount::store::PutOptions {
        content_type: Some("application/x-directory".into()),
        ..Default::default()
    };
    for d in ["gone", "moved", "modes"] {
        a.put_with(d, Vec::<u8>::new(), dir.clone());
    }
    {
        let m = rw(&a);
        for d in ["gone", "moved", "modes"] {
            assert!(std::fs::metadata(m.join(d)).unwrap().is_dir(), "{d}");
        }
        std::fs::remove_dir(m.join("gone")).unwrap();
        std::fs::rename(m.join("moved"), m.join("there")).unwrap();
        std::fs::set_permissions(m.join("modes"), std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    let m = rw(&a);
    let mut n = names(m.path());
    n.sort();
    assert_eq!(n, ["modes", "there"], "nothing comes back");
    assert!(std::fs::metadata(m.join("there")).unwrap().is_dir());
    assert_eq!(
        std::fs::metadata(m.join("modes"))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777,
        0o700
    );
}

/// Name limits: statfs reports 255-byte names; past S3's 1,024-byte keys, creating anything
/// (file, directory, symlink, FIFO) or renaming onto such a path is ENAMETOOLONG.
#[test]
fn fuse_keys_past_1024_bytes_are_enametoolong() {
    let a = Area::new("pkeylen");
    let m = rw(&a);
    // SAFETY: statvfs on a valid path into a zeroed struct.
    let mut sv: libc::statvfs = unsafe { std::mem::zeroed() };
    assert_eq!(
        unsafe { libc::statvfs(cpath(m.path()).as_ptr(), &mut sv) },
        0
    );
    assert_eq!(sv.f_namemax, 255);
    let seg = "d".repeat(240);
    let mut p = m.path().to_path_buf();
    let mut key_len = a.prefix.len();
    while key_len + seg.len() + 1 + 100 < 1024 {
        p.push(&seg);
        std::fs::create_dir(&p).unwrap();
        key_len += seg.len() + 1;
    }
    // One more directory, so that 150 bytes of key are left.
    let last = "e".repeat(1024 - key_len - 150 - 1);
    p.push(&last);
    std::fs::create_dir(&p).unwrap();
    key_len += last.len() + 1;
    let long = p.join("x".repeat(1024 - key_len + 1));
    let too_long = |r: std::io::Result<()>, what: &str| {
        assert_eq!(
            r.unwrap_err().raw_os_error(),
            Some(libc::ENAMETOOLONG),
            "{what}"
        );
    };
    assert!(long.file_name().unwrap().len() <= 255);
    too_long(std::fs::write(&long, "x"), "file");
    too_long(std::fs::create_dir(&long), "directory");
    too_long(std::os::unix::fs::symlink("t", &long), "symlink");
    too_long(mknod(&long, libc::S_IFIFO | 0o644, 0), "fifo");
    std::fs::write(m.join("short"), "x").unwrap();
    too_long(std::fs::rename(m.join("short"), &long), "rename");
    // Just under the limit works.
    std::fs::write(p.join("y".repeat(1024 - key_len - 2)), "ok").unwrap();
}
