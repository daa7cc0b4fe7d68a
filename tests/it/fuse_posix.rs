//! POSIX conformance on a real mount, one test per rule (docs/semantics.md): special files,
//! ownership, times, name limits, unlink and rename of open files, extended attributes,
//! Content-Type, outside overwrites, old-style directory objects. A local directory is the
//! reference where the rule is "as a local file system does"; s3fs-fuse reads (and writes) the
//! same objects for the interop rules.

use crate::common::*;
use s3mount::store::ObjectStore;
use std::os::unix::fs::{FileTypeExt, MetadataExt};

fn rw(a: &Area) -> Mount {
    a.mount(&["--read-write", "--metadata-ttl", "0"])
}

fn mknod(path: &std::path::Path, mode: u32, dev: u64) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path; mknod has no other memory arguments.
    let rc = unsafe { libc::mknod(c.as_ptr(), mode, dev as libc::dev_t) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
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
    let info = block_on(a.store.head(&format!("{}chr", a.prefix))).unwrap();
    assert_eq!(info.size, 0);
    assert_eq!(
        info.metadata.get("mode").map(String::as_str),
        Some((libc::S_IFCHR | 0o600).to_string().as_str())
    );
    assert_eq!(info.metadata.get("rdev").map(String::as_str), Some("259"));
    let m = rw(&a);
    check_specials(m.path(), "after a remount", true);
    drop(m);
    if a.backend.external {
        return; // s3fs against the external server is checked in the embedded pass
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
