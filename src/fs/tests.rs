//! Core tests on the in-memory store: the same logic the FUSE mount runs, without the kernel.

use super::*;
use crate::store::ObjectInfo;
use crate::store::PutOptions;
use crate::store::memory::MemoryStore;
use std::time::Duration;

fn opts() -> FsOptions {
    FsOptions {
        uid: 1,
        gid: 2,
        file_mode: 0o644,
        dir_mode: 0o755,
        metadata_ttl: Duration::from_secs(60),
        cache_size: 64 << 20,
        read_only: true,
        cache_dir: std::env::temp_dir().join("s3mount-core-tests"),
        write_buffer: 1 << 20,
        origin: "test".into(),
        posix_metadata: false,
        multipart: true,
        multipart_threshold: 64 << 20,
        part_size: 8 << 20,
        max_parts: 10_000,
    }
}

async fn fs_with(keys: &[(&str, &[u8])], page: usize) -> S3Fs<MemoryStore> {
    let store = Arc::new(MemoryStore::new(page));
    for (k, v) in keys {
        store
            .put(k, Bytes::copy_from_slice(v), PutOptions::default())
            .await
            .unwrap();
    }
    S3Fs::new(store, "", opts())
}

async fn list<S: ObjectStore>(
    fs: &S3Fs<S>,
    ino: u64,
    plus: bool,
    buf: usize,
) -> Vec<(String, Kind)> {
    let fh = fs.opendir(ino).unwrap();
    let mut out = Vec::new();
    let mut offset = 0;
    loop {
        let mut batch = Vec::new();
        fs.readdir(ino, fh, offset, plus, &mut |e| {
            if batch.len() >= buf {
                return true;
            }
            batch.push((e.name.clone(), e.kind, e.next_offset));
            false
        })
        .await
        .unwrap();
        let Some(last) = batch.last() else { break };
        offset = last.2;
        out.extend(batch.into_iter().map(|(n, k, _)| (n, k)));
    }
    fs.releasedir(fh);
    out
}

#[tokio::test]
async fn readdir_pages_holds_back_and_shadows() {
    let fs = fs_with(
        &[
            ("a", b"file a"),
            ("a/inner", b"x"),
            ("b.txt", b"bb"),
            ("c/", b""),
            ("d//e", b"hidden"),
            ("sp ace", b""),
            ("uni\u{e9}", b""),
        ],
        2,
    )
    .await;
    let names = list(&fs, ROOT_INO, true, 3).await;
    assert_eq!(
        names,
        vec![
            (".".into(), Kind::Dir),
            ("..".into(), Kind::Dir),
            ("a".into(), Kind::Dir),
            ("b.txt".into(), Kind::File),
            ("c".into(), Kind::Dir),
            ("d".into(), Kind::Dir),
            ("sp ace".into(), Kind::File),
            ("uni\u{e9}".into(), Kind::File),
        ]
    );
    let d = fs.lookup(ROOT_INO, "d").await.unwrap();
    let inside = list(&fs, d.ino, false, 100).await;
    assert_eq!(inside.len(), 2, "only . and ..: {inside:?}");
}

#[tokio::test]
async fn lookup_kinds_and_negative_cache() {
    let fs = fs_with(&[("f", b"12345"), ("dir/x", b"")], 1000).await;
    let f = fs.lookup(ROOT_INO, "f").await.unwrap();
    assert_eq!((f.kind, f.size, f.perm, f.uid), (Kind::File, 5, 0o644, 1));
    let d = fs.lookup(ROOT_INO, "dir").await.unwrap();
    assert_eq!((d.kind, d.perm), (Kind::Dir, 0o755));
    assert!(matches!(
        fs.lookup(ROOT_INO, "nope").await,
        Err(Error::NotFound)
    ));
    fs.store
        .put("nope", Bytes::new(), PutOptions::default())
        .await
        .unwrap();
    assert!(
        matches!(fs.lookup(ROOT_INO, "nope").await, Err(Error::NotFound)),
        "negative cache holds for the TTL"
    );
    assert!(matches!(fs.lookup(f.ino, "x").await, Err(Error::NotDir)));
    let x = fs.lookup(d.ino, "x").await.unwrap();
    assert_eq!(x.kind, Kind::File);
}

#[tokio::test]
async fn directory_marker_with_content_type() {
    let fs = fs_with(&[], 1000).await;
    let opts = PutOptions {
        content_type: Some(DIR_CONTENT_TYPE.into()),
        ..Default::default()
    };
    fs.store.put("marker", Bytes::new(), opts).await.unwrap();
    assert_eq!(fs.lookup(ROOT_INO, "marker").await.unwrap().kind, Kind::Dir);
}

#[tokio::test]
async fn forget_bounds_inodes_after_readdirplus() {
    let keys: Vec<(String, Vec<u8>)> = (0..50).map(|i| (format!("k{i:03}"), vec![])).collect();
    let refs: Vec<(&str, &[u8])> = keys
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_slice()))
        .collect();
    let fs = fs_with(&refs, 7).await;
    let names = list(&fs, ROOT_INO, true, 10).await;
    assert_eq!(names.len(), 52);
    assert_eq!(fs.inode_count(), 51);
    for i in 2..1000 {
        fs.forget(i, 1);
    }
    assert_eq!(fs.inode_count(), 1);
    // Plain readdir takes no references.
    list(&fs, ROOT_INO, false, 10).await;
    assert_eq!(fs.inode_count(), 1);
}

#[tokio::test]
async fn read_whole_file_and_eio_on_change() {
    let data: Vec<u8> = (0..(5 << 20)).map(|i| (i % 239) as u8).collect();
    let fs = fs_with(&[("big", &data), ("unread", &data)], 1000).await;
    let a = fs.lookup(ROOT_INO, "big").await.unwrap();
    let (fh, _) = fs.open(a.ino, OpenMode::default()).await.unwrap();
    let mut got = Vec::new();
    while got.len() < data.len() {
        let b = fs.read(fh, got.len() as u64, 131072).await.unwrap();
        assert!(!b.is_empty());
        got.extend_from_slice(&b);
    }
    assert_eq!(got, data);
    assert!(fs.read(fh, data.len() as u64, 10).await.unwrap().is_empty());
    assert!(matches!(
        fs.open(
            a.ino,
            OpenMode {
                write: true,
                truncate: false,
                ..Default::default()
            }
        )
        .await,
        Err(Error::ReadOnly)
    ));
    fs.release(fh).await.unwrap();
    let (fh, keep) = fs.open(a.ino, OpenMode::default()).await.unwrap();
    assert!(keep, "unchanged object keeps the kernel cache");
    fs.release(fh).await.unwrap();

    // A handle none of whose bytes were read, the object replaced on the server before its
    // first read: it re-checks and serves the new version, wholly. One that has served bytes
    // fails instead; neither ever mixes versions.
    let u = fs.lookup(ROOT_INO, "unread").await.unwrap();
    let (fh, _) = fs.open(u.ino, OpenMode::default()).await.unwrap();
    let (served, _) = fs.open(u.ino, OpenMode::default()).await.unwrap();
    let first = fs.read(served, 0, 4096).await.unwrap();
    fs.store
        .put(
            "unread",
            Bytes::from(vec![9u8; 6 << 20]),
            PutOptions::default(),
        )
        .await
        .unwrap();
    let mut refused = 0;
    for (off, old_off) in [(0, 8192), (1 << 20, 3 << 20), ((5 << 20) - 10, 4 << 20)] {
        let b = fs.read(fh, off, 4096).await.unwrap();
        assert!(b.iter().all(|x| *x == 9), "the new version at {off}");
        // The old version where it was already fetched, else EIO; never the new bytes.
        match fs.read(served, old_off, 4096).await {
            Ok(b) => assert!(
                b.is_empty() || !b.iter().all(|x| *x == 9),
                "new bytes at {off}"
            ),
            Err(e) => {
                assert!(matches!(e, Error::Changed), "{e}");
                assert_eq!(e.errno(), libc::EIO);
                refused += 1;
            }
        }
    }
    assert!(
        refused > 0,
        "the served handle refuses what it had not fetched"
    );
    assert!(!first.iter().all(|x| *x == 9));
    fs.release(fh).await.unwrap();
    fs.release(served).await.unwrap();
}

#[tokio::test]
async fn prefix_mount_sees_only_its_subtree() {
    let store = Arc::new(MemoryStore::default());
    for k in ["top", "sub/a", "sub/b/c", "subx"] {
        store
            .put(k, Bytes::new(), PutOptions::default())
            .await
            .unwrap();
    }
    let fs = S3Fs::new(store, "sub/", opts());
    let names = list(&fs, ROOT_INO, false, 100).await;
    let names: Vec<String> = names.into_iter().map(|n| n.0).collect();
    assert_eq!(names, [".", "..", "a", "b"]);
}

mod faults {
    use super::*;
    use crate::store::faults::{FaultStore, Op};

    fn unavailable() -> StoreError {
        StoreError::Service {
            status: 503,
            code: Some("SlowDown".into()),
            message: None,
        }
    }

    async fn faulty(keys: &[(&str, Vec<u8>)]) -> S3Fs<FaultStore<MemoryStore>> {
        let mem = MemoryStore::new(3);
        for (k, v) in keys {
            mem.put(k, Bytes::from(v.clone()), PutOptions::default())
                .await
                .unwrap();
        }
        S3Fs::new(Arc::new(FaultStore::new(mem)), "", opts())
    }

    #[tokio::test]
    async fn failed_get_is_eio_and_a_retry_reads_right() {
        let data: Vec<u8> = (0..(3 << 20)).map(|i| (i % 251) as u8).collect();
        let fs = faulty(&[("f", data.clone())]).await;
        let a = fs.lookup(ROOT_INO, "f").await.unwrap();
        let (fh, _) = fs.open(a.ino, OpenMode::default()).await.unwrap();
        fs.store.fail(Op::Get, 100, unavailable);
        let e = fs.read(fh, 0, 131072).await.unwrap_err();
        assert_eq!(e.errno(), libc::EIO);
        fs.store.fail(Op::Get, 0, unavailable);
        let mut got = Vec::new();
        while got.len() < data.len() {
            let b = fs.read(fh, got.len() as u64, 131072).await.unwrap();
            got.extend_from_slice(&b);
        }
        assert_eq!(got, data);
    }

    #[tokio::test]
    async fn failed_list_is_eio_and_a_restart_lists_all() {
        let keys: Vec<(String, Vec<u8>)> = (0..10).map(|i| (format!("k{i}"), vec![1])).collect();
        let refs: Vec<(&str, Vec<u8>)> =
            keys.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
        let fs = faulty(&refs).await;
        let fh = fs.opendir(ROOT_INO).unwrap();
        // The first page succeeds, the second fails.
        let mut seen = 0;
        fs.readdir(ROOT_INO, fh, 0, false, &mut |_| {
            seen += 1;
            seen > 4
        })
        .await
        .unwrap();
        fs.store.fail(Op::List, 1, unavailable);
        let mut n = 0;
        let e = fs
            .readdir(ROOT_INO, fh, 4, false, &mut |_| {
                n += 1;
                false
            })
            .await;
        // The second page was requested (and served) before the fault was armed; the third
        // is asked for after, and fails.
        assert_eq!(e.unwrap_err().errno(), libc::EIO);
        assert!(n >= 3, "entries before the failure still arrive: {n}");
        fs.releasedir(fh);
        let names = super::list(&fs, ROOT_INO, false, 100).await;
        assert_eq!(names.len(), 12);
    }

    #[tokio::test]
    async fn failed_head_is_eio_not_a_cached_miss() {
        let fs = faulty(&[("f", b"abc".to_vec())]).await;
        fs.store.fail(Op::Head, 1, unavailable);
        let e = fs.lookup(ROOT_INO, "f").await.unwrap_err();
        assert_eq!(e.errno(), libc::EIO);
        let a = fs.lookup(ROOT_INO, "f").await.unwrap();
        assert_eq!(a.size, 3);
        assert_eq!(fs.store.calls(Op::Head), 2);
    }
}

mod writes {
    use super::*;
    use crate::store::faults::{FaultStore, Op};

    fn rw_opts(cache: &std::path::Path) -> FsOptions {
        FsOptions {
            read_only: false,
            cache_dir: cache.to_path_buf(),
            write_buffer: 8,
            origin: "test".into(),
            ..opts()
        }
    }

    /// The checks the kernel usually makes before rename reaches us, made here too (a name the
    /// kernel had not looked up, another client's object): NOREPLACE, EXCHANGE, into its own
    /// subtree; and EXDEV past the directory limits, with nothing copied.
    #[tokio::test]
    async fn rename_flags_subtree_and_limits() {
        let cache = tempfile::tempdir().unwrap();
        let store = Arc::new(MemoryStore::default());
        for k in ["a", "b", "d/x", "d/sub/y"] {
            store
                .put(k, Bytes::from_static(b"1"), PutOptions::default())
                .await
                .unwrap();
        }
        let fs = S3Fs::new(store.clone(), "", rw_opts(cache.path()));
        let noreplace = RenameFlags {
            noreplace: true,
            exchange: false,
        };
        let e = fs
            .rename(ROOT_INO, "a", ROOT_INO, "b", noreplace)
            .await
            .unwrap_err();
        assert_eq!(e.errno(), libc::EEXIST);
        let exchange = RenameFlags {
            noreplace: false,
            exchange: true,
        };
        let e = fs
            .rename(ROOT_INO, "a", ROOT_INO, "b", exchange)
            .await
            .unwrap_err();
        assert_eq!(e.errno(), libc::EINVAL);
        let d = fs.lookup(ROOT_INO, "d").await.unwrap();
        let sub = fs.lookup(d.ino, "sub").await.unwrap();
        let e = fs
            .rename(ROOT_INO, "d", sub.ino, "moved", RenameFlags::default())
            .await
            .unwrap_err();
        assert_eq!(e.errno(), libc::EINVAL, "into its own subtree");
        assert!(store.head("d/x").await.is_ok(), "nothing moved");

        let keys: Vec<String> = (0..=crate::fs::DIR_RENAME_MAX_OBJECTS)
            .map(|i| format!("many/k{i}"))
            .collect();
        for k in &keys {
            store
                .put(k, Bytes::new(), PutOptions::default())
                .await
                .unwrap();
        }
        let e = fs
            .rename(ROOT_INO, "many", ROOT_INO, "moved", RenameFlags::default())
            .await
            .unwrap_err();
        assert_eq!(e.errno(), libc::EXDEV, "past the object limit");
        assert!(
            crate::store::list_all(&*store, "moved/")
                .await
                .unwrap()
                .is_empty(),
            "nothing copied"
        );
        assert_eq!(
            crate::store::list_all(&*store, "many/")
                .await
                .unwrap()
                .len(),
            keys.len()
        );
    }

    /// A flush from a process other than the opener (a forked child closing its inherited
    /// descriptor) uploads nothing; the opener's close does.
    #[tokio::test]
    async fn flush_from_another_process_does_not_upload() {
        let cache = tempfile::tempdir().unwrap();
        let store = Arc::new(FaultStore::new(MemoryStore::default()));
        let fs = S3Fs::new(store.clone(), "", rw_opts(cache.path()));
        let (_, fh) = fs.create_as(ROOT_INO, "f", 0o644, Some(100)).await.unwrap();
        fs.write(fh, 0, b"half").await.unwrap();
        fs.flush_from(fh, || 200).await.unwrap();
        assert_eq!(store.calls(Op::Put), 0, "the child's close uploads nothing");
        fs.write(fh, 4, b" and the rest").await.unwrap();
        fs.flush_from(fh, || 100).await.unwrap();
        assert_eq!(store.calls(Op::Put), 1);
        fs.release(fh).await.unwrap();
        let got = store.inner().get_range("f", 0, 17, None).await.unwrap();
        assert_eq!(&got.to_bytes()[..], b"half and the rest");
    }

    /// One `setattr` with a size and attributes is one upload carrying both, never an upload
    /// and then a copy (two requests, not atomic together).
    #[tokio::test]
    async fn setattr_of_size_and_mode_is_one_upload() {
        let cache = tempfile::tempdir().unwrap();
        let store = Arc::new(FaultStore::new(MemoryStore::default()));
        store
            .inner()
            .put(
                "f",
                Bytes::from_static(b"0123456789"),
                PutOptions::default(),
            )
            .await
            .unwrap();
        let fs = S3Fs::new(store.clone(), "", rw_opts(cache.path()));
        let a = fs.lookup(1, "f").await.unwrap();
        let (puts, copies) = (store.calls(Op::Put), store.calls(Op::Copy));
        let ch = crate::fs::SetAttr {
            size: Some(4),
            mode: Some(0o600),
            ..Default::default()
        };
        let got = fs.setattr(a.ino, ch).await.unwrap();
        assert_eq!((got.size, got.perm), (4, 0o600));
        assert_eq!(store.calls(Op::Put) - puts, 1, "one upload");
        assert_eq!(store.calls(Op::Copy) - copies, 0, "no copy after it");
        let info = store.inner().head("f").await.unwrap();
        assert_eq!(info.size, 4);
        assert_eq!(
            info.metadata.get(crate::fs::meta::MODE).map(String::as_str),
            Some("33152"),
            "the upload carries the new mode (0100600)"
        );
    }

    /// The MD5 kept while a file is written in order (no hashing pass before a single PUT)
    /// must match the bytes whatever the writer does; the memory store refuses a wrong
    /// Content-MD5 as S3 does (BadDigest).
    #[tokio::test]
    async fn running_md5_matches_every_write_pattern() {
        let cache = tempfile::tempdir().unwrap();
        let store = Arc::new(MemoryStore::default());
        let fs = S3Fs::new(store.clone(), "", rw_opts(cache.path()));
        type Step = (&'static str, &'static [(u64, &'static [u8])], Option<u64>);
        // (name, writes in order, then an optional truncate), flushed after each step.
        let cases: &[&[Step]] = &[
            &[("in order", &[(0, b"0123456789"), (10, b"abcdefghij")], None)],
            &[("rewrite middle", &[(0, b"0123456789abc"), (3, b"XY")], None)],
            &[("gap", &[(0, b"0123456789"), (20, b"tail")], None)],
            &[
                ("append after flush", &[(0, b"first part..")], None),
                ("", &[(12, b"second part")], None),
            ],
            &[
                ("cut to zero, again", &[(0, b"discarded bytes")], Some(0)),
                ("", &[(0, b"kept after the cut")], None),
            ],
            &[("cut then append", &[(0, b"0123456789abcdef")], Some(12))],
            &[
                ("", &[(0, b"0123456789abcdef")], Some(12)),
                ("", &[(12, b"++")], None),
            ],
        ];
        for (i, steps) in cases.iter().enumerate() {
            let name = format!("f{i}");
            let (attr, fh) = fs.create(ROOT_INO, &name, 0o644).await.unwrap();
            let mut model: Vec<u8> = Vec::new();
            for (what, writes, cut) in steps.iter() {
                for (off, data) in writes.iter() {
                    fs.write(fh, *off, data).await.unwrap();
                    let end = *off as usize + data.len();
                    if model.len() < end {
                        model.resize(end, 0);
                    }
                    model[*off as usize..end].copy_from_slice(data);
                }
                if let Some(len) = cut {
                    fs.set_size(attr.ino, *len).await.unwrap();
                    model.truncate(*len as usize);
                }
                fs.flush(fh)
                    .await
                    .unwrap_or_else(|e| panic!("case {i} {what}: {e}"));
                let got = store.get_range(&name, 0, 1 << 20, None).await.unwrap();
                assert_eq!(got.to_bytes(), model, "case {i} {what}");
            }
            fs.release(fh).await.unwrap();
        }
    }

    #[tokio::test]
    async fn create_write_flush_uploads_once() {
        let cache = tempfile::tempdir().unwrap();
        let store = Arc::new(FaultStore::new(MemoryStore::default()));
        let fs = S3Fs::new(store.clone(), "p/", rw_opts(cache.path()));
        let (a, fh) = fs.create(ROOT_INO, "f", 0o644).await.unwrap();
        assert_eq!(a.size, 0);
        fs.write(fh, 0, b"spills past eight bytes").await.unwrap();
        fs.write(fh, 4, b"S").await.unwrap();
        assert_eq!(
            &fs.read(fh, 0, 100).await.unwrap()[..],
            b"spilSs past eight bytes"
        );
        fs.flush(fh).await.unwrap();
        fs.flush(fh).await.unwrap();
        assert_eq!(
            store.calls(Op::Put),
            1,
            "a second flush without changes uploads nothing"
        );
        fs.release(fh).await.unwrap();
        let got = store.inner().get_range("p/f", 0, 100, None).await.unwrap();
        assert_eq!(&got.to_bytes()[..], b"spilSs past eight bytes");
        assert!(spill_files(cache.path()).is_empty(), "spill file removed");
    }

    /// Spill files and journal entries in every session directory under `cache`.
    fn spill_files(cache: &std::path::Path) -> Vec<std::path::PathBuf> {
        let mut out = Vec::new();
        let Ok(sessions) = std::fs::read_dir(cache.join("sessions")) else {
            return out;
        };
        for s in sessions {
            for f in std::fs::read_dir(s.unwrap().path()).unwrap() {
                let p = f.unwrap().path();
                if p.extension().is_some_and(|x| x == "data" || x == "entry") {
                    out.push(p);
                }
            }
        }
        out
    }

    #[tokio::test]
    async fn failed_upload_errors_and_keeps_bytes() {
        let cache = tempfile::tempdir().unwrap();
        let store = Arc::new(FaultStore::new(MemoryStore::default()));
        let fs = S3Fs::new(store.clone(), "", rw_opts(cache.path()));
        let (_, fh) = fs.create(ROOT_INO, "keep.txt", 0o644).await.unwrap();
        fs.write(fh, 0, b"important").await.unwrap();
        store.fail(Op::Put, 2, || StoreError::Service {
            status: 500,
            code: None,
            message: None,
        });
        assert_eq!(fs.flush(fh).await.unwrap_err().errno(), libc::EIO);
        assert_eq!(fs.release(fh).await.unwrap_err().errno(), libc::EIO);
        let kept: Vec<_> = std::fs::read_dir(cache.path().join("recovered"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_file())
            .collect();
        assert_eq!(kept.len(), 1);
        assert_eq!(std::fs::read(&kept[0]).unwrap(), b"important");
        // What the copy is, for `s3mount recover`: beside it in recovered/.entries.
        let name = kept[0].file_name().unwrap().to_string_lossy();
        let entry = crate::fs::write::journal::read_entry(
            &cache.path().join(format!("recovered/.entries/{name}.json")),
        )
        .unwrap();
        assert_eq!((entry.key.as_str(), entry.size), ("keep.txt", 9));
        assert!(
            spill_files(cache.path()).is_empty(),
            "nothing left in the journal"
        );
    }

    /// What a killed mount left (a dead session: its lock released) is finished by the next
    /// mount of the bucket: an asked-for upload over an unchanged object goes up; a
    /// half-written file, or one whose object changed since, goes to `recovered/`; a spill
    /// file without an entry (its bytes were uploaded) is removed; another bucket's session
    /// is left alone.
    #[tokio::test]
    async fn the_next_mount_finishes_or_keeps_what_a_killed_one_left() {
        use crate::fs::write::journal::{self, Entry, EntryState, Journal};
        let cache = tempfile::tempdir().unwrap();
        let store = Arc::new(MemoryStore::default());
        for k in ["old", "changed"] {
            store
                .put(k, Bytes::from_static(b"v1"), PutOptions::default())
                .await
                .unwrap();
        }
        let etag = |k: &'static str| {
            let store = store.clone();
            async move { store.head(k).await.unwrap().etag }
        };
        let (old_etag, changed_etag) = (etag("old").await, etag("changed").await);
        let dead = Journal::new(cache.path(), "test");
        let other = Journal::new(cache.path(), "elsewhere");
        let leave = |j: &Journal, stem: &str, body: &[u8], e: Option<Entry>| {
            let data = j.session_dir().unwrap().join(format!("{stem}.data"));
            std::fs::write(&data, body).unwrap();
            if let Some(mut e) = e {
                e.size = body.len() as u64;
                journal::write_entry(&journal::entry_path(&data), &e).unwrap();
            }
        };
        let entry = |key: &str, state, replaces: Option<String>| {
            let mut e = Entry::new("test", key, state);
            e.replaces = replaces;
            e
        };
        leave(
            &dead,
            "a",
            b"new file",
            Some(entry("new", EntryState::Flushing, None)),
        );
        leave(
            &dead,
            "b",
            b"v2 of old",
            Some(entry("old", EntryState::Flushing, old_etag)),
        );
        leave(
            &dead,
            "c",
            b"half",
            Some(entry("half", EntryState::Writing, None)),
        );
        store
            .put("changed", Bytes::from_static(b"v1b"), PutOptions::default())
            .await
            .unwrap();
        leave(
            &dead,
            "d",
            b"mine",
            Some(entry("changed", EntryState::Flushing, changed_etag)),
        );
        leave(&dead, "e", b"saved", None);
        leave(
            &other,
            "f",
            b"other bucket",
            Some(entry("x", EntryState::Flushing, None)),
        );
        drop(dead);
        drop(other);

        let fs = S3Fs::new(store.clone(), "", rw_opts(cache.path()));
        let report = fs.recover_pending().await.unwrap();
        let mut up = report.uploaded.clone();
        up.sort();
        assert_eq!(up, ["new", "old"]);
        let get = |k: &'static str| {
            let store = store.clone();
            async move { store.get_range(k, 0, 100, None).await.unwrap().to_bytes() }
        };
        assert_eq!(&get("new").await[..], b"new file");
        assert_eq!(&get("old").await[..], b"v2 of old");
        assert_eq!(
            &get("changed").await[..],
            b"v1b",
            "a newer object is not overwritten"
        );
        assert!(
            store.head("half").await.is_err(),
            "a half-written file is not uploaded"
        );
        let mut kept: Vec<_> = report
            .kept
            .iter()
            .map(|(k, p, _)| (k.clone(), std::fs::read(p).unwrap()))
            .collect();
        kept.sort();
        assert_eq!(
            kept,
            [
                ("changed".to_string(), b"mine".to_vec()),
                ("half".to_string(), b"half".to_vec())
            ]
        );
        let left = spill_files(cache.path());
        assert_eq!(
            left.len(),
            2,
            "only the other bucket's session is left: {left:?}"
        );
        assert!(
            left.iter()
                .all(|p| std::fs::read_to_string(p).unwrap().contains("other")
                    || p.extension().unwrap() == "entry")
        );

        // `s3mount recover --force`: the kept copies go up (the user asks for it).
        let listed = fs.recover_kept(true, false).await.unwrap();
        assert_eq!(listed.kept.len(), 2);
        let again = fs.recover_kept(false, false).await.unwrap();
        assert!(again.uploaded.is_empty(), "not without force: {again:?}");
        let forced = fs.recover_kept(false, true).await.unwrap();
        let mut up = forced.uploaded.clone();
        up.sort();
        assert_eq!(up, ["changed", "half"]);
        assert_eq!(&get("changed").await[..], b"mine");
        assert!(fs.recover_kept(true, false).await.unwrap().kept.is_empty());
    }

    #[tokio::test]
    async fn directories() {
        let cache = tempfile::tempdir().unwrap();
        let fs = S3Fs::new(Arc::new(MemoryStore::default()), "", rw_opts(cache.path()));
        let d = fs.mkdir(ROOT_INO, "d", 0o755).await.unwrap();
        assert!(matches!(
            fs.mkdir(ROOT_INO, "d", 0o755).await,
            Err(Error::Exists)
        ));
        let (_, fh) = fs.create(d.ino, "f", 0o644).await.unwrap();
        fs.release(fh).await.unwrap();
        assert!(matches!(
            fs.rmdir(ROOT_INO, "d").await,
            Err(Error::NotEmpty)
        ));
        fs.unlink(d.ino, "f").await.unwrap();
        assert_eq!(fs.lookup(ROOT_INO, "d").await.unwrap().kind, Kind::Dir);
        fs.rmdir(ROOT_INO, "d").await.unwrap();
        assert!(matches!(
            fs.lookup(ROOT_INO, "d").await,
            Err(Error::NotFound)
        ));
        let single = S3Fs::new(
            Arc::new(MemoryStore::default()),
            "",
            FsOptions {
                multipart: false,
                ..rw_opts(cache.path())
            },
        );
        let (_, fh) = single.create(ROOT_INO, "huge", 0o644).await.unwrap();
        let past = crate::fs::write::MAX_SINGLE_PUT;
        assert_eq!(
            single.write(fh, past - 1, b"xy").await.unwrap_err().errno(),
            libc::EFBIG
        );
        single.release(fh).await.unwrap();
        let ro = S3Fs::new(Arc::new(MemoryStore::default()), "", opts());
        assert!(matches!(
            ro.mkdir(ROOT_INO, "x", 0o755).await,
            Err(Error::ReadOnly)
        ));
    }
}

mod multipart {
    use super::*;
    use crate::store::faults::{FaultStore, Op};

    const MIB: u64 = 1 << 20;

    /// 5 MiB parts (the S3 minimum) above a 6 MiB threshold, spilling past 1 MiB.
    fn mp_opts(cache: &std::path::Path) -> FsOptions {
        FsOptions {
            read_only: false,
            cache_dir: cache.to_path_buf(),
            write_buffer: MIB,
            origin: "test".into(),
            multipart_threshold: 6 * MIB,
            part_size: 5 * MIB,
            ..opts()
        }
    }

    fn bytes(len: u64, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i.wrapping_mul(2654435761) >> 7) as u8 ^ seed)
            .collect()
    }

    type Fs = S3Fs<FaultStore<MemoryStore>>;

    fn new_fs(store: MemoryStore, o: FsOptions) -> (Fs, Arc<FaultStore<MemoryStore>>) {
        let store = Arc::new(FaultStore::new(store));
        (S3Fs::new(store.clone(), "", o), store)
    }

    async fn stored(fs: &Fs, key: &str) -> (Vec<u8>, ObjectInfo) {
        let info = fs.store.head(key).await.unwrap();
        let body = fs.store.get_range(key, 0, info.size, None).await.unwrap();
        (body.to_bytes().to_vec(), info)
    }

    async fn write_all(fs: &Fs, fh: u64, data: &[u8], order: impl Iterator<Item = usize>) {
        for i in order {
            let c = &data[i * MIB as usize..((i + 1) * MIB as usize).min(data.len())];
            fs.write(fh, i as u64 * MIB, c).await.unwrap();
        }
    }

    #[tokio::test]
    async fn a_sequential_writer_sends_parts_while_writing() {
        let cache = tempfile::tempdir().unwrap();
        let (fs, store) = new_fs(MemoryStore::default(), mp_opts(cache.path()));
        let data = bytes(23 * MIB, 1);
        let (_, fh) = fs.create(ROOT_INO, "big", 0o600).await.unwrap();
        write_all(&fs, fh, &data, 0..23).await;
        // The four full parts were handed to upload tasks during the writes; wait (bounded)
        // for them to reach the store before close.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while store.calls(Op::UploadPart) < 4 && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(
            store.calls(Op::UploadPart),
            4,
            "full parts sent before close"
        );
        fs.release(fh).await.unwrap();
        assert_eq!(store.calls(Op::UploadPart), 5, "each part sent once");
        assert_eq!(store.calls(Op::CreateMultipart), 1);
        assert_eq!(store.calls(Op::CompleteMultipart), 1);
        assert_eq!(store.calls(Op::Put), 0);
        let (body, info) = stored(&fs, "big").await;
        assert!(body == data, "object bytes match what was written");
        assert!(info.etag.unwrap().ends_with("-5\""));
        assert_eq!(info.metadata.get("mode").map(String::as_str), Some("33152"));
        assert_eq!(store.inner().open_uploads(), 0);
    }

    #[tokio::test]
    async fn random_writes_upload_every_part_at_close_and_rewrites_resend() {
        let cache = tempfile::tempdir().unwrap();
        let (fs, store) = new_fs(MemoryStore::default(), mp_opts(cache.path()));
        let mut data = bytes(17 * MIB, 2);
        let (_, fh) = fs.create(ROOT_INO, "rnd", 0o644).await.unwrap();
        write_all(&fs, fh, &data, (0..17).rev()).await;
        fs.flush(fh).await.unwrap();
        assert_eq!(store.calls(Op::UploadPart), 4);
        assert!(stored(&fs, "rnd").await.0 == data);
        // Rewrite a few bytes of part 2 only: after an fsync-like flush, a new session sends
        // all parts again; the old object stays whole until complete.
        fs.write(fh, 6 * MIB, b"patch").await.unwrap();
        data[6 * MIB as usize..6 * MIB as usize + 5].copy_from_slice(b"patch");
        fs.release(fh).await.unwrap();
        assert!(stored(&fs, "rnd").await.0 == data);
        assert_eq!(store.inner().open_uploads(), 0);
    }

    #[tokio::test]
    async fn a_part_rewritten_after_it_was_sent_is_sent_again() {
        let cache = tempfile::tempdir().unwrap();
        let (fs, store) = new_fs(MemoryStore::default(), mp_opts(cache.path()));
        let mut data = bytes(16 * MIB, 3);
        let (_, fh) = fs.create(ROOT_INO, "rw", 0o644).await.unwrap();
        write_all(&fs, fh, &data, 0..16).await;
        fs.write(fh, 1, b"XY").await.unwrap();
        data[1..3].copy_from_slice(b"XY");
        fs.release(fh).await.unwrap();
        assert!(stored(&fs, "rw").await.0 == data);
        // Parts 1-3 streamed, part 1 again (rewritten), part 4 (the tail) at close.
        assert_eq!(store.calls(Op::UploadPart), 5);
    }

    #[tokio::test]
    async fn refused_multipart_falls_back_to_one_put_and_is_not_asked_again() {
        let cache = tempfile::tempdir().unwrap();
        let (fs, store) = new_fs(
            MemoryStore::default().without_multipart(),
            mp_opts(cache.path()),
        );
        for name in ["a", "b"] {
            let data = bytes(12 * MIB, 4);
            let (_, fh) = fs.create(ROOT_INO, name, 0o644).await.unwrap();
            write_all(&fs, fh, &data, 0..12).await;
            fs.release(fh).await.unwrap();
            assert!(stored(&fs, name).await.0 == data);
        }
        assert_eq!(store.calls(Op::CreateMultipart), 1, "one probe per mount");
        assert_eq!(store.calls(Op::Put), 2);
    }

    #[tokio::test]
    async fn failed_parts_and_completion_are_retried_by_the_next_flush() {
        let cache = tempfile::tempdir().unwrap();
        let (fs, store) = new_fs(MemoryStore::default(), mp_opts(cache.path()));
        let data = bytes(11 * MIB, 5);
        let (_, fh) = fs.create(ROOT_INO, "retry", 0o644).await.unwrap();
        store.fail(Op::UploadPart, 1, || StoreError::Other("boom".into()));
        write_all(&fs, fh, &data, 0..11).await;
        store.fail(Op::CompleteMultipart, 1, || {
            StoreError::Other("boom".into())
        });
        assert_eq!(fs.flush(fh).await.unwrap_err().errno(), libc::EIO);
        // 11 MiB in 5 MiB parts: 3 parts, one of which failed once. The first flush sent the
        // failed one again and failed at completion; the retry sends no part again.
        let parts_after_first = store.calls(Op::UploadPart);
        assert_eq!(parts_after_first, 4, "3 parts + the failed one once more");
        fs.flush(fh).await.unwrap();
        assert_eq!(
            store.calls(Op::UploadPart),
            parts_after_first,
            "the retry re-sends nothing"
        );
        fs.release(fh).await.unwrap();
        assert!(stored(&fs, "retry").await.0 == data);
        assert_eq!(
            store.inner().open_uploads(),
            0,
            "the failed upload was aborted"
        );
    }

    /// A server that forgot the upload (NoSuchUpload) does not fail the flush: the upload
    /// starts over at once, from the staged bytes, in a new upload (never the dead id). If it
    /// forgets that one too, the flush fails with EIO (not ENOENT) and the next flush starts
    /// over again.
    #[tokio::test]
    async fn a_forgotten_upload_is_started_over() {
        let cache = tempfile::tempdir().unwrap();
        let (fs, store) = new_fs(MemoryStore::default(), mp_opts(cache.path()));
        let data = bytes(11 * MIB, 7);
        let (_, fh) = fs.create(ROOT_INO, "again", 0o644).await.unwrap();
        write_all(&fs, fh, &data, 0..11).await;
        store.inner().forget_uploads();
        let creates = store.calls(Op::CreateMultipart);
        fs.flush(fh).await.unwrap();
        assert_eq!(
            store.calls(Op::CreateMultipart),
            creates + 1,
            "a new upload"
        );
        assert!(stored(&fs, "again").await.0 == data);

        let (_, fh2) = fs.create(ROOT_INO, "twice", 0o644).await.unwrap();
        write_all(&fs, fh2, &data, 0..11).await;
        store.fail(Op::CompleteMultipart, 2, || StoreError::Service {
            status: 404,
            code: Some("NoSuchUpload".into()),
            message: None,
        });
        let e = fs.flush(fh2).await.unwrap_err();
        assert_eq!(e.errno(), libc::EIO, "{e}");
        fs.flush(fh2).await.unwrap();
        fs.release(fh2).await.unwrap();
        fs.release(fh).await.unwrap();
        assert!(stored(&fs, "twice").await.0 == data);
        assert_eq!(store.inner().open_uploads(), 0, "dead uploads aborted");
    }

    #[tokio::test]
    async fn cut_below_the_threshold_drops_the_session_and_puts_once() {
        let cache = tempfile::tempdir().unwrap();
        let (fs, store) = new_fs(MemoryStore::default(), mp_opts(cache.path()));
        let data = bytes(12 * MIB, 6);
        let (a, fh) = fs.create(ROOT_INO, "cut", 0o644).await.unwrap();
        write_all(&fs, fh, &data, 0..12).await;
        fs.set_size(a.ino, 1000).await.unwrap();
        fs.release(fh).await.unwrap();
        assert!(stored(&fs, "cut").await.0 == data[..1000]);
        assert_eq!(store.calls(Op::Put), 1);
        assert_eq!(store.calls(Op::CompleteMultipart), 0);
        assert_eq!(store.inner().open_uploads(), 0);
    }

    #[tokio::test]
    async fn too_many_parts_picks_a_larger_equal_part_size() {
        let cache = tempfile::tempdir().unwrap();
        let o = FsOptions {
            max_parts: 2,
            ..mp_opts(cache.path())
        };
        let (fs, store) = new_fs(MemoryStore::default(), o);
        let data = bytes(23 * MIB, 7);
        let (_, fh) = fs.create(ROOT_INO, "wide", 0o644).await.unwrap();
        write_all(&fs, fh, &data, 0..23).await;
        fs.release(fh).await.unwrap();
        let (body, info) = stored(&fs, "wide").await;
        assert!(body == data);
        assert!(info.etag.unwrap().ends_with("-2\""), "two 12 MiB parts");
        assert_eq!(store.inner().open_uploads(), 0);
    }

    #[tokio::test]
    async fn opening_an_object_for_writing_fetches_only_what_it_needs() {
        let cache = tempfile::tempdir().unwrap();
        let (fs, store) = new_fs(MemoryStore::default(), mp_opts(cache.path()));
        let mut data = bytes(10 * MIB + 100, 8);
        fs.store
            .put("obj", Bytes::from(data.clone()), PutOptions::default())
            .await
            .unwrap();
        let ino = fs.lookup(ROOT_INO, "obj").await.unwrap().ino;
        let mode = OpenMode {
            write: true,
            truncate: false,
            ..Default::default()
        };
        let (fh, _) = fs.open(ino, mode).await.unwrap();
        assert_eq!(store.calls(Op::Get), 0, "open fetches nothing");
        // Append: nothing to fetch (the old bytes are fetched only for the upload).
        fs.write(fh, data.len() as u64, b"tail").await.unwrap();
        data.extend_from_slice(b"tail");
        assert_eq!(store.calls(Op::Get), 0);
        // A write covering whole blocks fetches nothing; one inside a block fetches it.
        fs.write(fh, MIB, &vec![9u8; MIB as usize]).await.unwrap();
        data[MIB as usize..2 * MIB as usize].fill(9);
        assert_eq!(store.calls(Op::Get), 0);
        fs.write(fh, 3 * MIB + 7, b"mid").await.unwrap();
        data[3 * MIB as usize + 7..3 * MIB as usize + 10].copy_from_slice(b"mid");
        assert_eq!(store.calls(Op::Get), 1);
        let got = fs.read(fh, 3 * MIB, 16).await.unwrap();
        assert_eq!(&got[..], &data[3 * MIB as usize..3 * MIB as usize + 16]);
        fs.release(fh).await.unwrap();
        assert!(
            stored(&fs, "obj").await.0 == data,
            "the rest was fetched before upload"
        );
    }
}
