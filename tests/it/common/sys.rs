//! System calls the tests make that std has no wrapper for (mknod, extended attributes), and
//! a shell one-liner. Paths are not followed when they are symlinks (the `l*` calls).

use std::ffi::CString;
use std::io;
use std::path::Path;

pub fn cpath(p: &Path) -> CString {
    use std::os::unix::ffi::OsStrExt;
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

pub fn mknod(path: &Path, mode: u32, dev: u64) -> io::Result<()> {
    // SAFETY: a valid NUL-terminated path; mknod has no other memory arguments.
    check(unsafe { libc::mknod(cpath(path).as_ptr(), mode, dev as libc::dev_t) })
}

pub fn set_xattr(p: &Path, name: &str, value: &[u8], flags: i32) -> io::Result<()> {
    let n = CString::new(name).unwrap();
    // SAFETY: valid C strings and a buffer of the given length.
    check(unsafe {
        libc::lsetxattr(
            cpath(p).as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            flags,
        )
    })
}

pub fn get_xattr(p: &Path, name: &str) -> io::Result<Vec<u8>> {
    let n = CString::new(name).unwrap();
    let mut buf = vec![0u8; 65536];
    // SAFETY: valid C strings and a buffer of the given length.
    let rc = unsafe {
        libc::lgetxattr(
            cpath(p).as_ptr(),
            n.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(rc as usize);
    Ok(buf)
}

pub fn remove_xattr(p: &Path, name: &str) -> io::Result<()> {
    let n = CString::new(name).unwrap();
    // SAFETY: valid C strings.
    check(unsafe { libc::lremovexattr(cpath(p).as_ptr(), n.as_ptr()) })
}

/// The names of `p`'s extended attributes, sorted.
pub fn list_xattr(p: &Path) -> Vec<String> {
    let mut buf = vec![0u8; 65536];
    // SAFETY: a valid C string and a buffer of the given length.
    let rc = unsafe { libc::llistxattr(cpath(p).as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    assert!(rc >= 0, "{}: {}", p.display(), io::Error::last_os_error());
    buf.truncate(rc as usize);
    let mut v: Vec<String> = buf
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect();
    v.sort();
    v
}

/// Runs a shell command, failing the test with its output when it fails.
pub fn sh(cmd: &str) {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{cmd}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
