//! In-memory object store: the twin of the S3 store for fast unit tests of the core (compiled
//! for tests only). It lists with the same rules as the embedded server (`s3rules.rs`), so
//! both page as S3 does.

use super::{
    ByteChunks, Cap, Capability, ListPage, MIN_PART_SIZE, ObjectInfo, ObjectStore, Part,
    PutOptions, StoreError, StoreResult,
};
use crate::s3rules::{Listed, multipart_etag, paginate};
use bytes::Bytes;
use futures::StreamExt;
use md5::Digest;
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::SystemTime;

#[derive(Clone)]
struct Stored {
    data: Bytes,
    etag: String,
    modified: SystemTime,
    opts: PutOptions,
}

/// An unfinished multipart upload.
struct Upload {
    key: String,
    opts: PutOptions,
    /// Body and MD5 (the part's ETag) by part number.
    parts: BTreeMap<u32, (Bytes, [u8; 16])>,
}

/// A bucket held in memory. `page_size` caps every listing page (to exercise paging in tests).
/// Multipart follows the strictest stores: parts but the last at least 5 MiB and all of one size
/// (Cloudflare R2); `without_multipart` answers NotImplemented, as small gateways do.
pub struct MemoryStore {
    objects: Mutex<BTreeMap<String, Stored>>,
    uploads: Mutex<HashMap<String, Upload>>,
    multipart: bool,
    /// Learned from the first CreateMultipartUpload, as a server's is.
    multipart_cap: Capability,
    page_size: usize,
}

/// Bytes per buffer of a GET body: the body arrives in pieces, as from a network.
const GET_PIECE: usize = 64 << 10;

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new(1000)
    }
}

impl MemoryStore {
    pub fn new(page_size: usize) -> Self {
        Self {
            objects: Mutex::new(BTreeMap::new()),
            uploads: Mutex::new(HashMap::new()),
            multipart: true,
            multipart_cap: Capability::new(None, "multipart upload", "one PutObject"),
            page_size: page_size.max(1),
        }
    }

    /// A store that refuses multipart upload (NotImplemented).
    pub fn without_multipart(mut self) -> Self {
        self.multipart = false;
        self
    }

    /// Forgets every unfinished multipart upload, as a restarted server does.
    pub fn forget_uploads(&self) {
        self.uploads.lock().unwrap().clear();
    }

    /// Unfinished multipart uploads (to check that none leak).
    pub fn open_uploads(&self) -> usize {
        self.uploads.lock().unwrap().len()
    }

    fn upload_err(code: &str, message: &str) -> StoreError {
        StoreError::Service {
            status: 400,
            code: Some(code.into()),
            message: Some(message.into()),
        }
    }

    fn info(key: &str, s: &Stored, full: bool) -> ObjectInfo {
        ObjectInfo {
            key: key.to_string(),
            size: s.data.len() as u64,
            etag: Some(s.etag.clone()),
            last_modified: Some(s.modified),
            content_type: if full {
                s.opts.content_type.clone()
            } else {
                None
            },
            metadata: if full {
                s.opts.metadata.clone()
            } else {
                Default::default()
            },
        }
    }
}

impl ObjectStore for MemoryStore {
    fn capability(&self, cap: Cap) -> Option<bool> {
        match cap {
            Cap::Multipart => self.multipart_cap.known(),
            Cap::ListV2 | Cap::Copy | Cap::HeadBucket => Some(true),
        }
    }

    async fn check_bucket(&self) -> StoreResult<()> {
        Ok(())
    }

    async fn head(&self, key: &str) -> StoreResult<ObjectInfo> {
        let map = self.objects.lock().unwrap();
        map.get(key)
            .map(|s| Self::info(key, s, true))
            .ok_or(StoreError::NotFound)
    }

    async fn get_stream(
        &self,
        key: &str,
        start: u64,
        end: u64,
        if_match: Option<&str>,
    ) -> StoreResult<ByteChunks> {
        let map = self.objects.lock().unwrap();
        let s = map.get(key).ok_or(StoreError::NotFound)?;
        if let Some(tag) = if_match
            && tag != s.etag
        {
            return Err(StoreError::PreconditionFailed);
        }
        let len = s.data.len() as u64;
        if start >= len && len > 0 {
            return Err(StoreError::InvalidRange);
        }
        let data = s.data.slice(start.min(len) as usize..end.min(len) as usize);
        let pieces: Vec<StoreResult<Bytes>> = (0..data.len())
            .step_by(GET_PIECE)
            .map(|i| Ok(data.slice(i..(i + GET_PIECE).min(data.len()))))
            .collect();
        Ok(futures::stream::iter(pieces).boxed())
    }

    async fn list(
        &self,
        prefix: &str,
        delimiter: Option<&str>,
        start: Option<&str>,
        max_keys: u32,
    ) -> StoreResult<ListPage> {
        let map = self.objects.lock().unwrap();
        let max = (max_keys as usize).min(self.page_size);
        let (entries, next) = paginate(&map, prefix, delimiter, start, max);
        let mut page = ListPage {
            next,
            ..Default::default()
        };
        for e in entries {
            match e {
                Listed::Object(k, s) => page.objects.push(Self::info(k, s, false)),
                Listed::Prefix(p) => page.prefixes.push(p),
            }
        }
        Ok(page)
    }

    async fn put(&self, key: &str, body: Bytes, opts: PutOptions) -> StoreResult<Option<String>> {
        let etag = format!("\"{}\"", hex::encode(md5::Md5::digest(&body)));
        let stored = Stored {
            data: body,
            etag: etag.clone(),
            modified: SystemTime::now(),
            opts,
        };
        self.objects.lock().unwrap().insert(key.to_string(), stored);
        Ok(Some(etag))
    }

    async fn put_file(
        &self,
        key: &str,
        path: &std::path::Path,
        len: u64,
        md5: [u8; 16],
        opts: PutOptions,
    ) -> StoreResult<Option<String>> {
        let path = path.to_path_buf();
        let body = tokio::task::spawn_blocking(move || {
            std::fs::read(path).map(|mut v| {
                v.truncate(len as usize);
                Bytes::from(v)
            })
        })
        .await
        .map_err(|e| StoreError::Other(format!("reading staged data: {e}")))?
        .map_err(|e| StoreError::Other(format!("reading staged data: {e}")))?;
        // As S3 does with Content-MD5: a digest that does not match the body is refused.
        if <[u8; 16]>::from(md5::Md5::digest(&body)) != md5 {
            return Err(StoreError::Service {
                status: 400,
                code: Some("BadDigest".into()),
                message: Some("the Content-MD5 does not match the body".into()),
            });
        }
        self.put(key, body, opts).await
    }

    async fn create_multipart(&self, key: &str, opts: PutOptions) -> StoreResult<String> {
        let create = || async {
            if self.multipart {
                Ok(())
            } else {
                Err(StoreError::NotImplemented("NotImplemented".into()))
            }
        };
        if self.multipart_cap.call(create).await?.is_none() {
            return Err(StoreError::NotImplemented("CreateMultipartUpload".into()));
        }
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let id = format!(
            "upload-{}",
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let up = Upload {
            key: key.to_string(),
            opts,
            parts: BTreeMap::new(),
        };
        self.uploads.lock().unwrap().insert(id.clone(), up);
        Ok(id)
    }

    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        number: u32,
        body: Bytes,
    ) -> StoreResult<String> {
        let mut ups = self.uploads.lock().unwrap();
        let up = ups
            .get_mut(upload_id)
            .filter(|u| u.key == key)
            .ok_or_else(|| Self::upload_err("NoSuchUpload", upload_id))?;
        if !(1..=super::MAX_PARTS).contains(&number) {
            return Err(Self::upload_err("InvalidArgument", "part number"));
        }
        let md5: [u8; 16] = md5::Md5::digest(&body).into();
        up.parts.insert(number, (body, md5));
        Ok(format!("\"{}\"", hex::encode(md5)))
    }

    async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: Vec<Part>,
    ) -> StoreResult<Option<String>> {
        let mut ups = self.uploads.lock().unwrap();
        let up = ups
            .get(upload_id)
            .filter(|u| u.key == key)
            .ok_or_else(|| Self::upload_err("NoSuchUpload", upload_id))?;
        if parts.is_empty() || parts.windows(2).any(|w| w[0].number >= w[1].number) {
            return Err(Self::upload_err("InvalidPartOrder", "parts must ascend"));
        }
        let mut bodies = Vec::new();
        let mut md5s = Vec::new();
        for p in &parts {
            match up.parts.get(&p.number) {
                Some((b, m)) if p.etag == format!("\"{}\"", hex::encode(m)) => {
                    bodies.push(b.clone());
                    md5s.push(*m);
                }
                _ => return Err(Self::upload_err("InvalidPart", "unknown part or ETag")),
            }
        }
        let (last, rest) = bodies.split_last().unwrap();
        if rest.iter().any(|b| (b.len() as u64) < MIN_PART_SIZE) {
            return Err(Self::upload_err("EntityTooSmall", "part under 5 MiB"));
        }
        if rest.iter().any(|b| b.len() != rest[0].len())
            || rest.first().is_some_and(|f| last.len() > f.len())
        {
            return Err(Self::upload_err("InvalidPart", "parts of unequal size"));
        }
        let mut data = Vec::with_capacity(bodies.iter().map(|b| b.len()).sum());
        for b in &bodies {
            data.extend_from_slice(b);
        }
        let etag = format!("\"{}\"", multipart_etag(&md5s));
        let up = ups.remove(upload_id).unwrap();
        let stored = Stored {
            data: data.into(),
            etag: etag.clone(),
            modified: SystemTime::now(),
            opts: up.opts,
        };
        self.objects.lock().unwrap().insert(key.to_string(), stored);
        Ok(Some(etag))
    }

    async fn abort_multipart(&self, _key: &str, upload_id: &str) -> StoreResult<()> {
        self.uploads.lock().unwrap().remove(upload_id);
        Ok(())
    }

    async fn copy(
        &self,
        src: &str,
        dst: &str,
        replace: Option<PutOptions>,
    ) -> StoreResult<Option<String>> {
        let mut map = self.objects.lock().unwrap();
        let mut s = map.get(src).cloned().ok_or(StoreError::NotFound)?;
        if let Some(opts) = replace {
            s.opts = opts;
        }
        s.modified = SystemTime::now();
        let etag = s.etag.clone();
        map.insert(dst.to_string(), s);
        Ok(Some(etag))
    }

    async fn delete(&self, key: &str) -> StoreResult<()> {
        self.objects.lock().unwrap().remove(key);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(page: &ListPage) -> Vec<String> {
        let mut v: Vec<String> = page.objects.iter().map(|o| o.key.clone()).collect();
        v.extend(page.prefixes.iter().cloned());
        v.sort();
        v
    }

    #[tokio::test]
    async fn delimited_listing_pages_without_repeating_prefixes() {
        let store = MemoryStore::new(2);
        for k in ["a", "a-b", "a/1", "a/2", "b/x/y", "c", "d/"] {
            store
                .put(k, Bytes::new(), PutOptions::default())
                .await
                .unwrap();
        }
        let mut all = Vec::new();
        let mut start = None;
        loop {
            let page = store
                .list("", Some("/"), start.as_deref(), 1000)
                .await
                .unwrap();
            assert!(page.objects.len() + page.prefixes.len() <= 2);
            all.extend(names(&page));
            match page.next {
                Some(n) => start = Some(n),
                None => break,
            }
        }
        assert_eq!(all, ["a", "a-b", "a/", "b/", "c", "d/"]);
    }

    #[tokio::test]
    async fn listing_under_prefix_and_full_listing() {
        let store = MemoryStore::new(1000);
        for k in ["p/a", "p/b/c", "pq", "p/"] {
            store
                .put(k, Bytes::new(), PutOptions::default())
                .await
                .unwrap();
        }
        let page = store.list("p/", Some("/"), None, 1000).await.unwrap();
        assert_eq!(names(&page), ["p/", "p/a", "p/b/"]);
        let all = list_all_keys(&store).await;
        assert_eq!(all, ["p/", "p/a", "p/b/c", "pq"]);
    }

    async fn list_all_keys(store: &MemoryStore) -> Vec<String> {
        crate::store::list_all(store, "")
            .await
            .unwrap()
            .into_iter()
            .map(|o| o.key)
            .collect()
    }

    #[tokio::test]
    async fn if_match_refuses_a_changed_object() {
        let store = MemoryStore::default();
        let etag = store
            .put("k", Bytes::from_static(b"one"), PutOptions::default())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            &store
                .get_range("k", 0, 3, Some(&etag))
                .await
                .unwrap()
                .to_bytes()[..],
            b"one"
        );
        store
            .put("k", Bytes::from_static(b"two"), PutOptions::default())
            .await
            .unwrap();
        assert!(matches!(
            store.get_range("k", 0, 3, Some(&etag)).await,
            Err(StoreError::PreconditionFailed)
        ));
    }
}
