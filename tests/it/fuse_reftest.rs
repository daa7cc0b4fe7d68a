//! Reference-model test: random sequences of create/write/truncate/rename/unlink/mkdir/rmdir
//! applied to the mount and to a local directory must give the same outcomes (success or the
//! same errno) and, at the end, the same tree and bytes.

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
    ]
}

fn apply(root: &Path, op: &Op) -> Result<(), i32> {
    let j = |p: &str| root.join(p);
    let r: std::io::Result<()> = match op {
        Op::Create(p, d) => std::fs::File::create(j(p)).and_then(|mut f| f.write_all(d)),
        Op::Write(p, o, d) => std::fs::OpenOptions::new()
            .write(true)
            .open(j(p))
            .and_then(|f| f.write_all_at(d, *o)),
        Op::Truncate(p, l) => std::fs::OpenOptions::new()
            .write(true)
            .open(j(p))
            .and_then(|f| f.set_len(*l)),
        Op::Rename(a, b) => std::fs::rename(j(a), j(b)),
        Op::Unlink(p) => std::fs::remove_file(j(p)),
        Op::Mkdir(p) => std::fs::create_dir(j(p)),
        Op::Rmdir(p) => std::fs::remove_dir(j(p)),
    };
    r.map_err(|e| e.raw_os_error().unwrap_or(-1))
}

/// (relative path, Some(bytes) for files / None for directories), sorted.
fn tree(root: &Path) -> Vec<(PathBuf, Option<Vec<u8>>)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().to_path_buf();
            if p.is_dir() {
                out.push((rel, None));
                stack.push(p);
            } else {
                out.push((rel, Some(std::fs::read(&p).unwrap())));
            }
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
