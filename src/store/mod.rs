//! The object-store seam.
//!
//! Problem: the filesystem core must run against aws-sdk-s3 talking to any S3-compatible server,
//! and against an in-memory twin in fast unit tests, without either leaking into the other.
//!
//! Structure: [`ObjectStore`] is the whole surface the core uses (head, ranged get, one list page,
//! put, multipart upload, copy, delete, bucket check). Implementations: [`sdk::SdkStore`] (the only file that names aws
//! types) and [`memory::MemoryStore`]. Errors are one [`StoreError`] enum; the filesystem decides
//! errno from it in `fs/error.rs`.
//!
//! Tricky cases: a listing page may come from ListObjects v1 (marker = last key when the server
//! sends no `NextMarker`) or v2 (continuation token); [`ListPage::next`] hides which.

pub mod chunks;
#[cfg(test)]
pub mod faults;
pub mod http;
#[cfg(test)]
pub mod memory;
pub mod sdk;
pub mod settings;
pub mod sigv2;

pub use chunks::Chunks;

use bytes::Bytes;
use std::collections::HashMap;
use std::future::Future;
use std::time::SystemTime;

/// What a HEAD or a LIST entry tells about one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
    /// ETag as the server sent it, quotes included; `None` when the server omits it.
    pub etag: Option<String>,
    pub last_modified: Option<SystemTime>,
    /// Only from HEAD (LIST does not return it).
    pub content_type: Option<String>,
    /// User metadata (`x-amz-meta-*`, names lower-cased, prefix removed). Only from HEAD.
    pub metadata: HashMap<String, String>,
}

/// One page of a delimited listing.
#[derive(Debug, Clone, Default)]
pub struct ListPage {
    pub objects: Vec<ObjectInfo>,
    /// Common prefixes, each ending with the delimiter.
    pub prefixes: Vec<String>,
    /// Where the next page starts; `None` when this was the last page.
    pub next: Option<String>,
}

/// Options of a PUT.
#[derive(Debug, Clone, Default)]
pub struct PutOptions {
    pub content_type: Option<String>,
    pub metadata: HashMap<String, String>,
}

/// One uploaded part of a multipart upload: its number (from 1) and the ETag the server gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    pub number: u32,
    pub etag: String,
}

/// S3's multipart rules: every part but the last is at least this large.
pub const MIN_PART_SIZE: u64 = 5 << 20;
/// S3's largest part.
pub const MAX_PART_SIZE: u64 = 5 << 30;
/// S3's largest object (multipart).
pub const MAX_OBJECT_SIZE: u64 = 5 << 40;
/// S3's largest part number. Some stores allow fewer (1,000): the mount's `--max-parts`.
pub const MAX_PARTS: u32 = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no such key")]
    NotFound,
    #[error("bucket '{0}' not found")]
    NoSuchBucket(String),
    #[error("the object changed while it was being read (ETag no longer matches)")]
    PreconditionFailed,
    #[error("access denied (HTTP {status}{code}){hint}", code = fmt_code(.code), hint = fmt_hint(.message))]
    AccessDenied {
        status: u16,
        code: Option<String>,
        message: Option<String>,
    },
    #[error("cannot reach the endpoint {endpoint}: {reason}")]
    Unreachable { endpoint: String, reason: String },
    #[error("the bucket is in region {0}")]
    WrongRegion(String),
    #[error("requested range not satisfiable")]
    InvalidRange,
    #[error("the server does not implement this call ({0})")]
    NotImplemented(String),
    #[error("S3 error {status} {code}: {message}", code = .code.as_deref().unwrap_or("-"), message = .message.as_deref().unwrap_or("-"))]
    Service {
        status: u16,
        code: Option<String>,
        message: Option<String>,
    },
    #[error("{0}")]
    Other(String),
}

fn fmt_code(code: &Option<String>) -> String {
    code.as_ref().map(|c| format!(" {c}")).unwrap_or_default()
}

fn fmt_hint(message: &Option<String>) -> String {
    message
        .as_ref()
        .map(|m| format!(": {m}"))
        .unwrap_or_default()
}

pub type StoreResult<T> = Result<T, StoreError>;

/// A GET body as it arrives: the network's buffers in order; an error ends it.
pub type ByteChunks = futures::stream::BoxStream<'static, StoreResult<Bytes>>;

/// A call some servers lack. Each store learns (or is told) which it has; [`ObjectStore::capability`]
/// is the one place the rest of the program asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cap {
    /// CreateMultipartUpload and the rest of multipart upload.
    Multipart,
    /// ListObjectsV2 (else ListObjects v1 with markers).
    ListV2,
    /// CopyObject (else GET -> PUT).
    Copy,
    /// HeadBucket (else a one-key listing).
    HeadBucket,
}

/// Everything the filesystem core asks of object storage. Keys are full keys in the bucket.
pub trait ObjectStore: Send + Sync + 'static {
    /// Whether the server has `cap`: `None` until a call (or the profile) settled it.
    fn capability(&self, cap: Cap) -> Option<bool>;

    /// Checks that the bucket exists and that the credentials may use it.
    fn check_bucket(&self) -> impl Future<Output = StoreResult<()>> + Send;

    /// HEAD one object; `NotFound` when absent.
    fn head(&self, key: &str) -> impl Future<Output = StoreResult<ObjectInfo>> + Send;

    /// Bytes `[start, end)` of `key` as they arrive. With `if_match`, the server must refuse
    /// (PreconditionFailed) if the object's ETag differs, so a reader never mixes two versions.
    /// The future fails for errors the answer's status carries; the stream for a body that
    /// breaks off (after the store's own resumes).
    fn get_stream(
        &self,
        key: &str,
        start: u64,
        end: u64,
        if_match: Option<&str>,
    ) -> impl Future<Output = StoreResult<ByteChunks>> + Send;

    /// [`ObjectStore::get_stream`], all of it.
    fn get_range(
        &self,
        key: &str,
        start: u64,
        end: u64,
        if_match: Option<&str>,
    ) -> impl Future<Output = StoreResult<Chunks>> + Send {
        async move {
            use futures::StreamExt;
            let mut body = self.get_stream(key, start, end, if_match).await?;
            let mut data = Chunks::default();
            while let Some(b) = body.next().await {
                data.push(b?);
            }
            Ok(data)
        }
    }

    /// One page of keys under `prefix`, grouped by `delimiter` when given, starting at `start`
    /// (a token from a previous [`ListPage::next`]). At most `max_keys` entries.
    fn list(
        &self,
        prefix: &str,
        delimiter: Option<&str>,
        start: Option<&str>,
        max_keys: u32,
    ) -> impl Future<Output = StoreResult<ListPage>> + Send;

    /// Stores `body` at `key` in one request; returns the new ETag when the server sends one.
    fn put(
        &self,
        key: &str,
        body: Bytes,
        opts: PutOptions,
    ) -> impl Future<Output = StoreResult<Option<String>>> + Send;

    /// Stores the first `len` bytes of the file at `path` in one request, streamed from disk,
    /// with `md5` sent as Content-MD5 so the server verifies what it received.
    fn put_file(
        &self,
        key: &str,
        path: &std::path::Path,
        len: u64,
        md5: [u8; 16],
        opts: PutOptions,
    ) -> impl Future<Output = StoreResult<Option<String>>> + Send;

    /// Starts a multipart upload of `key` carrying `opts`' headers; returns the upload id.
    /// `NotImplemented` when the server has no multipart upload ([`Cap::Multipart`] is then
    /// settled as missing).
    fn create_multipart(
        &self,
        key: &str,
        opts: PutOptions,
    ) -> impl Future<Output = StoreResult<String>> + Send;

    /// Uploads part `number` (from 1) with Content-MD5; returns the part's ETag.
    fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        number: u32,
        body: Bytes,
    ) -> impl Future<Output = StoreResult<String>> + Send;

    /// Joins `parts` (ascending numbers) into the object; returns its ETag when sent.
    fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: Vec<Part>,
    ) -> impl Future<Output = StoreResult<Option<String>>> + Send;

    /// Drops an unfinished upload and its parts.
    fn abort_multipart(
        &self,
        key: &str,
        upload_id: &str,
    ) -> impl Future<Output = StoreResult<()>> + Send;

    /// Server-side copy of `src` to `dst` (CopyObject). With `replace`, the copy carries these
    /// headers instead of the source's (`x-amz-metadata-directive: REPLACE`).
    fn copy(
        &self,
        src: &str,
        dst: &str,
        replace: Option<PutOptions>,
    ) -> impl Future<Output = StoreResult<Option<String>>> + Send;

    /// Deletes `key`; deleting an absent key is not an error (S3 semantics).
    fn delete(&self, key: &str) -> impl Future<Output = StoreResult<()>> + Send;
}

/// Bodies at least this large are hashed on the blocking pool: MD5 runs at ~500 MiB/s, so an
/// 8 MiB part would hold an async worker for ~16 ms; below it, the hop costs more than it saves.
pub const HASH_OFF_WORKER: usize = 256 << 10;

/// MD5 of `body` (for Content-MD5), off the async workers when it is large.
pub async fn md5_of(body: &Bytes) -> [u8; 16] {
    use md5::Digest;
    if body.len() < HASH_OFF_WORKER {
        return md5::Md5::digest(body).into();
    }
    let b = body.clone();
    match tokio::task::spawn_blocking(move || md5::Md5::digest(&b).into()).await {
        Ok(d) => d,
        Err(_) => md5::Md5::digest(body).into(),
    }
}

/// Lists every key under `prefix` (no delimiter), following pages. For tests and tools.
pub async fn list_all<S: ObjectStore>(store: &S, prefix: &str) -> StoreResult<Vec<ObjectInfo>> {
    let mut out = Vec::new();
    let mut start: Option<String> = None;
    loop {
        let page = store.list(prefix, None, start.as_deref(), 1000).await?;
        out.extend(page.objects);
        match page.next {
            Some(n) => start = Some(n),
            None => return Ok(out),
        }
    }
}

/// A server capability learned from its answers. Unknown until a call settles it (or fixed by
/// configuration); while unknown, calls go one at a time, so concurrent requests do not each ask
/// the server for a call it lacks: one probe, then the fallback.
pub struct Capability {
    /// 0 unknown, 1 present, 2 missing.
    state: std::sync::atomic::AtomicU8,
    probe: tokio::sync::Mutex<()>,
    /// What is missing and what is done instead (logged once).
    what: &'static str,
    fallback: &'static str,
}

impl Capability {
    pub fn new(fixed: Option<bool>, what: &'static str, fallback: &'static str) -> Self {
        let state = match fixed {
            None => 0,
            Some(true) => 1,
            Some(false) => 2,
        };
        Self {
            state: state.into(),
            probe: tokio::sync::Mutex::new(()),
            what,
            fallback,
        }
    }

    /// `None` while unknown.
    pub fn known(&self) -> Option<bool> {
        match self.state.load(std::sync::atomic::Ordering::Acquire) {
            1 => Some(true),
            2 => Some(false),
            _ => None,
        }
    }

    fn set(&self, present: bool) {
        let new = if present { 1 } else { 2 };
        let old = self.state.swap(new, std::sync::atomic::Ordering::AcqRel);
        if !present && old != 2 {
            tracing::warn!(
                "the server has no {}: {} from now on",
                self.what,
                self.fallback
            );
        }
    }

    /// Runs `call` unless the server lacks it; `Ok(None)` means "lacks it: use the fallback".
    /// A NotImplemented answer settles the capability as missing.
    pub async fn call<T, F>(&self, call: impl FnOnce() -> F) -> StoreResult<Option<T>>
    where
        F: Future<Output = StoreResult<T>>,
    {
        let _probe = match self.known() {
            Some(false) => return Ok(None),
            Some(true) => None,
            None => Some(self.probe.lock().await),
        };
        if self.known() == Some(false) {
            return Ok(None);
        }
        match call().await {
            Ok(v) => {
                self.set(true);
                Ok(Some(v))
            }
            Err(StoreError::NotImplemented(_)) => {
                self.set(false);
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }
}
