//! A fault-injecting wrapper around any [`ObjectStore`], for tests of error paths: make the next
//! N calls of one kind fail with a chosen error, and count the calls that reached the store.
//!
//! Lock: one std `Mutex` over the fault plan, held only to read and update it (never across the
//! inner store's await).

use super::{
    ByteChunks, Cap, ListPage, ObjectInfo, ObjectStore, Part, PutOptions, StoreError, StoreResult,
};
use bytes::Bytes;
use futures::StreamExt;
use std::collections::HashMap;
use std::sync::Mutex;

/// The calls a fault can target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    CheckBucket,
    Head,
    Get,
    List,
    Put,
    /// CreateMultipartUpload.
    CreateMultipart,
    UploadPart,
    CompleteMultipart,
    AbortMultipart,
    Copy,
    Delete,
}

/// Builds the error to inject (errors are not `Clone`).
pub type MakeError = fn() -> StoreError;

pub struct FaultStore<S: ObjectStore> {
    inner: S,
    plan: Mutex<HashMap<Op, (u32, MakeError)>>,
    calls: Mutex<HashMap<Op, u64>>,
    /// GET bodies deliver this many buffers, then nothing more (a body that stalls).
    stall_after: Mutex<Option<usize>>,
}

impl<S: ObjectStore> FaultStore<S> {
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            plan: Mutex::new(HashMap::new()),
            calls: Mutex::new(HashMap::new()),
            stall_after: Mutex::new(None),
        }
    }

    /// From now on every GET body delivers `buffers` buffers and then stalls forever.
    pub fn stall_bodies_after(&self, buffers: usize) {
        *self.stall_after.lock().unwrap() = Some(buffers);
    }

    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// The next `times` calls of `op` fail with `make()`.
    pub fn fail(&self, op: Op, times: u32, make: MakeError) {
        self.plan.lock().unwrap().insert(op, (times, make));
    }

    /// Calls of `op` so far (failed ones included).
    pub fn calls(&self, op: Op) -> u64 {
        self.calls.lock().unwrap().get(&op).copied().unwrap_or(0)
    }

    fn enter(&self, op: Op) -> StoreResult<()> {
        *self.calls.lock().unwrap().entry(op).or_default() += 1;
        let mut plan = self.plan.lock().unwrap();
        if let Some((left, make)) = plan.get_mut(&op)
            && *left > 0
        {
            *left -= 1;
            return Err(make());
        }
        Ok(())
    }
}

impl<S: ObjectStore> ObjectStore for FaultStore<S> {
    fn capability(&self, cap: Cap) -> Option<bool> {
        self.inner.capability(cap)
    }

    async fn check_bucket(&self) -> StoreResult<()> {
        self.enter(Op::CheckBucket)?;
        self.inner.check_bucket().await
    }

    async fn head(&self, key: &str) -> StoreResult<ObjectInfo> {
        self.enter(Op::Head)?;
        self.inner.head(key).await
    }

    async fn get_stream(
        &self,
        key: &str,
        start: u64,
        end: u64,
        if_match: Option<&str>,
    ) -> StoreResult<ByteChunks> {
        self.enter(Op::Get)?;
        let body = self.inner.get_stream(key, start, end, if_match).await?;
        let stall = *self.stall_after.lock().unwrap();
        Ok(match stall {
            Some(n) => body.take(n).chain(futures::stream::pending()).boxed(),
            None => body,
        })
    }

    async fn list(
        &self,
        prefix: &str,
        delimiter: Option<&str>,
        start: Option<&str>,
        max_keys: u32,
    ) -> StoreResult<ListPage> {
        self.enter(Op::List)?;
        self.inner.list(prefix, delimiter, start, max_keys).await
    }

    async fn put(&self, key: &str, body: Bytes, opts: PutOptions) -> StoreResult<Option<String>> {
        self.enter(Op::Put)?;
        self.inner.put(key, body, opts).await
    }

    async fn put_file(
        &self,
        key: &str,
        path: &std::path::Path,
        len: u64,
        md5: [u8; 16],
        opts: PutOptions,
    ) -> StoreResult<Option<String>> {
        self.enter(Op::Put)?;
        self.inner.put_file(key, path, len, md5, opts).await
    }

    async fn create_multipart(&self, key: &str, opts: PutOptions) -> StoreResult<String> {
        self.enter(Op::CreateMultipart)?;
        self.inner.create_multipart(key, opts).await
    }

    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        number: u32,
        body: Bytes,
    ) -> StoreResult<String> {
        self.enter(Op::UploadPart)?;
        self.inner.upload_part(key, upload_id, number, body).await
    }

    async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: Vec<Part>,
    ) -> StoreResult<Option<String>> {
        self.enter(Op::CompleteMultipart)?;
        self.inner.complete_multipart(key, upload_id, parts).await
    }

    async fn abort_multipart(&self, key: &str, upload_id: &str) -> StoreResult<()> {
        self.enter(Op::AbortMultipart)?;
        self.inner.abort_multipart(key, upload_id).await
    }

    async fn copy(
        &self,
        src: &str,
        dst: &str,
        replace: Option<PutOptions>,
    ) -> StoreResult<Option<String>> {
        self.enter(Op::Copy)?;
        self.inner.copy(src, dst, replace).await
    }

    async fn delete(&self, key: &str) -> StoreResult<()> {
        self.enter(Op::Delete)?;
        self.inner.delete(key).await
    }
}
