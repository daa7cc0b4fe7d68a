//! Reference-model test: random sequences of create/write/truncate/rename/unlink/mkdir/rmdir,
//! mkfifo, user xattrs set and removed, and a file unlinked while open (then written and read
//! through its descriptor) applied to the mount and to a local directory must give the same
//! outcomes (success or the same errno, the same bytes read) and, at the end, the same tree:
//! types, bytes and extended attributes.

use crate::common::*;
use proptest::prelude::*;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
enum Op {
    Create(String, Vec<u8>),
    Write(String, u64, Vec<u8>),
    Truncate(String, u64),
    Rename(String, String),
    Unlink(String),
    Mkdir(String),
    Rmdir(String),
    Mkfifo(String),
    SetXattr(String, &'static str, Vec<u8>),
    RemoveXattr(String, &'static str),
    /// Open, unlink, write through the descriptor, read it all back.
    UnlinkOpen(String, Vec<u8>),
}

fn xattr_name() -> impl Strategy<Value = &'static str> {
    prop_oneof![Just("user.a"), Just("user.b")]
}

/// A small namespace, so operations collide often.
fn path() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("a".to_string()),
        Just("b".to_string()),
        Just("d".to_string()),
        Just("d/a".to_string()),
        Just("d/e".to_string()),
        Just("d/e/b".to_string()),
        Just("e".to_string()),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (path(), prop::collection::vec(any::<u8>(), 0..3000)).prop_map(|(p, d)| Op::Create(p, d)),
        (
            path(),
            0u64..5000,
            prop::collection::vec(any::<u8>(), 1..2000)
        )
            .prop_map(|(p, o, d)| Op::Write(p, o, d)),
        (path(), 0u64..4000).prop_map(|(p, l)| Op::Truncate(p, l)),
        (path(), path()).prop_map(|(a, b)| Op::Rename(a, b)),
        path().prop_map(Op::Unlink),
        path().prop_map(Op::Mkdir),
        path().prop_map(Op::Rmdir),
        path().prop_map(Op::Mkfifo),
        (
            path(),
            xattr_name(),
            prop::collection::vec(any::<u8>(), 0..40)
        )
            .prop_map(|(p, n, v)| Op::SetXattr(p, n, v)),
        (path(), xattr_name()).prop_map(|(p, n)| Op::RemoveXattr(p, n)),
        (path(), prop::collection::vec(any::<u8>(), 1..500))
            .prop_map(|(p, d)| Op::UnlinkOpen(p, d)),
    ]
}

/// The user extended attributes of `p` (names and values, sorted).
fn xattrs(p: &Path) -> Vec<(String, Vec<u8>)> {
    list_xattr(p)
        .into_iter()
        .filter(|n| n.starts_with("user."))
        .map(|n| {
            let v = get_xattr(p, &n).unwrap();
            (n, v)
        })
        .collect()
}

/// The outcome of `op` under `root`: the bytes it read (if it reads), or the errno.
fn apply(root: &Path, op: &Op) -> Result<Vec<u8>, i32> {
    use std::io::{Read, Seek, SeekFrom};
    let j = |p: &str| root.join(p);
    let r: std::io::Result<Vec<u8>> = match op {
        Op::Mkfifo(p) => mknod(&j(p), libc::S_IFIFO | 0o644, 0).map(|()| Vec::new()),
        Op::SetXattr(p, n, v) => set_xattr(&j(p), n, v, 0).map(|()| Vec::new()),
        Op::RemoveXattr(p, n) => remove_xattr(&j(p), n).map(|()| Vec::new()),
        Op::UnlinkOpen(p, d) => (|| {
            if !std::fs::symlink_metadata(j(p))?.is_file() {
                // Opening a FIFO would wait for a writer; a directory is not a file.
                return Err(std::io::Error::from_raw_os_error(libc::EISDIR));
            }
            let mut f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(j(p))?;
            std::fs::remove_file(j(p))?;
            f.seek(SeekFrom::End(0))?;
            f.write_all(d)?;
            f.seek(SeekFrom::Start(0))?;
            let mut all = Vec::new();
            f.read_to_end(&mut all)?;
            Ok(all)
        })(),
        _ => apply_plain(root, op).map(|()| Vec::new()),
    };
    r.map_err(|e| e.raw_os_error().unwrap_or(-1))
}

fn apply_plain(root: &Path, op: &Op) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let j = |p: &str| root.join(p);
    // O_NONBLOCK: opening a FIFO for writing fails (ENXIO) instead of waiting for a reader;
    // regular files ignore it.
    let open = |p: &str, create: bool| {
        std::fs::OpenOptions::new()
            .write(true)
            .create(create)
            .truncate(create)
            .custom_flags(libc::O_NONBLOCK)
            .open(j(p))
    };
    match op {
        Op::Create(p, d) => open(p, true).and_then(|mut f| f.write_all(d)),
        Op::Write(p, o, d) => open(p, false).and_then(|f| f.write_all_at(d, *o)),
        Op::Truncate(p, l) => open(p, false).and_then(|f| f.set_len(*l)),
        Op::Rename(a, b) => std::fs::rename(j(a), j(b)),
        Op::Unlink(p) => std::fs::remove_file(j(p)),
        Op::Mkdir(p) => std::fs::create_dir(j(p)),
        Op::Rmdir(p) => std::fs::remove_dir(j(p)),
        _ => unreachable!("handled by apply"),
    }
}

/// What the final tree holds at a path.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Node {
    Dir,
    File(Vec<u8>),
    Fifo,
}

/// (relative path, what is there, its user xattrs), sorted.
#[allow(clippy::type_complexity)]
fn tree(root: &Path) -> Vec<(PathBuf, Node, Vec<(String, Vec<u8>)>)> {
    use std::os::unix::fs::FileTypeExt;
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().to_path_buf();
            let ft = std::fs::symlink_metadata(&p)
                .unwrap_or_else(|e| panic!("{} is listed but not found: {e}", rel.display()))
                .file_type();
            let node = if ft.is_dir() {
                stack.push(p.clone());
                Node::Dir
            } else if ft.is_fifo() {
                Node::Fifo
            } else {
                Node::File(std::fs::read(&p).unwrap())
            };
            out.push((rel, node, xattrs(&p)));
        }
    }
    out.sort();
    out
}

#[test]
fn op_sequences_match_a_local_directory() {
    let a = Area::new("reftest");
    let m = a.mount(&["--read-write", "--write-buffer", "2K"]);
    let local = tempfile::tempdir().unwrap();
    let cases = if a.backend.external { 8 } else { 32 };
    let n = std::sync::atomic::AtomicU32::new(0);
    let (ok, failed) = (
        std::sync::atomic::AtomicU32::new(0),
        std::sync::atomic::AtomicU32::new(0),
    );
    // A fixed seed: the same sequences every run, so a failure reproduces.
    let mut runner = proptest::test_runner::TestRunner::new_with_rng(
        ProptestConfig {
            cases,
            failure_persistence: None,
            ..ProptestConfig::default()
        },
        proptest::test_runner::TestRng::deterministic_rng(
            proptest::test_runner::RngAlgorithm::ChaCha,
        ),
    );
    runner
        .run(&prop::collection::vec(op(), 1..25), |ops| {
            let name = format!(
                "case{}",
                n.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            );
            let (mine, theirs) = (m.join(&name), local.path().join(&name));
            // Start from a small tree, so most operations have somewhere to land.
            for root in [&mine, &theirs] {
                std::fs::create_dir_all(root.join("d/e")).unwrap();
                std::fs::write(root.join("a"), b"seed").unwrap();
            }
            for (i, op) in ops.iter().enumerate() {
                let want = apply(&theirs, op);
                let got = apply(&mine, op);
                let counter = if want.is_ok() { &ok } else { &failed };
                counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                prop_assert_eq!(got, want, "step {} {:?} of {:?}", i, op, ops);
            }
            prop_assert_eq!(tree(&mine), tree(&theirs), "final tree after {:?}", ops);
            Ok(())
        })
        .unwrap();
    // The sequences exercised both outcomes, so the comparison meant something.
    let (ok, failed) = (ok.into_inner(), failed.into_inner());
    eprintln!("reference model: {ok} operations succeeded, {failed} failed, on both sides alike");
    assert!(
        ok >= cases && failed >= cases / 2,
        "ok {ok}, failed {failed}"
    );
}
