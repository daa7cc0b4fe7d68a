//! The S3 API of the embedded server, on s3s (which does routing, XML and SigV4/SigV2 checks).
//!
//! Faithful where mounts depend on it: ranged GETs with `If-Match` (412 on mismatch), ListObjects
//! v1 (`NextMarker` only with a delimiter, as AWS) and v2, HEAD of `dir/` markers, ETags in
//! listings, Content-MD5 verification on PUT and UploadPart (400 BadDigest), multipart upload
//! (`multipart.rs`). GETs stream in 1 MiB reads, so the server keeps up with the mount in
//! benchmarks.

use super::emulate::{Emulation, RequestLog};
use super::storage::{Bucket, Meta, Storage, valid_bucket_name};
use crate::s3rules::{Listed, paginate};
use base64::Engine;
use bytes::Bytes;
use futures::StreamExt;
use md5::Digest;
use s3s::dto::*;
use s3s::{S3, S3Request, S3Response, S3Result, s3_error};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncSeekExt, AsyncWriteExt};

/// Size of each read when streaming a GET body: large reads keep one stream near disk speed.
const GET_CHUNK: usize = 1 << 20;
/// Default and largest page of a listing (the S3 limit).
const MAX_LIST: usize = 1000;

pub struct Backend {
    pub storage: Arc<Storage>,
    pub uploads: super::multipart::Uploads,
    pub emulation: Emulation,
    pub log: Arc<RequestLog>,
}

impl Backend {
    pub fn new(storage: Arc<Storage>, emulation: Emulation, log: Arc<RequestLog>) -> Self {
        Self {
            storage,
            uploads: Default::default(),
            emulation,
            log,
        }
    }

    /// Logs the call; refuses it (501 NotImplemented) when the emulated gateway lacks it.
    fn gate(&self, op: &'static str) -> S3Result<()> {
        let refused = self.emulation.refuses(op);
        self.log.record(op, refused);
        if refused {
            return Err(s3_error!(
                NotImplemented,
                "{op} is not implemented by this gateway"
            ));
        }
        Ok(())
    }
}

/// Checks a received body against the request's Content-MD5 and Content-Length.
pub(super) fn check_body(
    content_md5: &Option<String>,
    content_length: Option<i64>,
    md5: [u8; 16],
    size: u64,
) -> S3Result<()> {
    if let Some(expect) = content_md5 {
        let given = base64::engine::general_purpose::STANDARD
            .decode(expect)
            .unwrap_or_default();
        if given != md5 {
            return Err(s3_error!(BadDigest, "Content-MD5 does not match the body"));
        }
    }
    if let Some(len) = content_length
        && len as u64 != size
    {
        return Err(s3_error!(IncompleteBody));
    }
    Ok(())
}

pub(super) fn io_err(e: std::io::Error) -> s3s::S3Error {
    s3_error!(e, InternalError)
}

impl Backend {
    pub(super) fn bucket(&self, name: &str) -> S3Result<Arc<Bucket>> {
        self.storage
            .bucket(name)
            .ok_or_else(|| s3_error!(NoSuchBucket))
    }

    fn object(&self, bucket: &str, key: &str) -> S3Result<(Arc<Bucket>, Meta)> {
        let b = self.bucket(bucket)?;
        let m = b.get(key).ok_or_else(|| s3_error!(NoSuchKey))?;
        Ok((b, m))
    }

    /// Streams `body` into a new data file; returns (file name, size, hex md5).
    pub async fn write_data(
        &self,
        b: &Bucket,
        body: StreamingBlob,
    ) -> S3Result<(String, u64, [u8; 16])> {
        let name = b.new_data_name();
        let path = b.data_dir().join(&name);
        let mut file = tokio::fs::File::create(&path).await.map_err(io_err)?;
        let mut md5 = md5::Md5::new();
        let mut size = 0u64;
        let mut body = body;
        while let Some(chunk) = body.next().await {
            let chunk: Bytes = chunk.map_err(|e| s3_error!(IncompleteBody, "{e}"))?;
            md5.update(&chunk);
            size += chunk.len() as u64;
            file.write_all(&chunk).await.map_err(io_err)?;
        }
        file.flush().await.map_err(io_err)?;
        Ok((name, size, md5.finalize().into()))
    }
}

fn check_if_match(cond: &Option<ETagCondition>, m: &Meta) -> S3Result<()> {
    match cond {
        Some(ETagCondition::ETag(tag)) if tag.value() != m.etag => {
            Err(s3_error!(PreconditionFailed, "ETag does not match"))
        }
        _ => Ok(()),
    }
}

pub(super) fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64
}

fn list_object(m: &Meta) -> Object {
    Object {
        key: Some(m.key.clone()),
        size: Some(m.size as i64),
        e_tag: Some(ETag::Strong(m.etag.clone())),
        last_modified: Some(Timestamp::from(m.modified())),
        storage_class: Some(ObjectStorageClass::from_static(
            ObjectStorageClass::STANDARD,
        )),
        ..Default::default()
    }
}

/// One listing page as (objects, prefixes, next token).
fn list_page(
    b: &Bucket,
    prefix: &str,
    delimiter: Option<&str>,
    start: Option<&str>,
    max_keys: Option<i32>,
) -> (Vec<Object>, Vec<CommonPrefix>, Option<String>) {
    let max = max_keys.map_or(MAX_LIST, |m| (m.max(0) as usize).min(MAX_LIST));
    let index = b.index.read().unwrap();
    let (entries, next) = paginate(&index, prefix, delimiter, start, max);
    let mut objects = Vec::new();
    let mut prefixes = Vec::new();
    for e in entries {
        match e {
            Listed::Object(_, m) => objects.push(list_object(m)),
            Listed::Prefix(p) => prefixes.push(CommonPrefix { prefix: Some(p) }),
        }
    }
    (objects, prefixes, next)
}

#[async_trait::async_trait]
impl S3 for Backend {
    async fn create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        self.gate("CreateBucket")?;
        let name = &req.input.bucket;
        if !valid_bucket_name(name) {
            return Err(s3_error!(InvalidBucketName));
        }
        if !self.storage.create_bucket(name).map_err(io_err)? {
            return Err(s3_error!(BucketAlreadyOwnedByYou));
        }
        Ok(S3Response::new(CreateBucketOutput::default()))
    }

    async fn delete_bucket(
        &self,
        req: S3Request<DeleteBucketInput>,
    ) -> S3Result<S3Response<DeleteBucketOutput>> {
        self.gate("DeleteBucket")?;
        self.bucket(&req.input.bucket)?;
        if !self
            .storage
            .delete_bucket(&req.input.bucket)
            .map_err(io_err)?
        {
            return Err(s3_error!(BucketNotEmpty));
        }
        Ok(S3Response::new(DeleteBucketOutput::default()))
    }

    async fn head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        self.gate("HeadBucket")?;
        self.bucket(&req.input.bucket)?;
        Ok(S3Response::new(HeadBucketOutput::default()))
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        self.gate("GetBucketLocation")?;
        self.bucket(&req.input.bucket)?;
        Ok(S3Response::new(GetBucketLocationOutput::default()))
    }

    async fn list_buckets(
        &self,
        _req: S3Request<ListBucketsInput>,
    ) -> S3Result<S3Response<ListBucketsOutput>> {
        self.gate("ListBuckets")?;
        let buckets = self
            .storage
            .buckets()
            .iter()
            .map(|b| s3s::dto::Bucket {
                name: Some(b.name.clone()),
                creation_date: Some(Timestamp::from(b.created)),
                ..Default::default()
            })
            .collect();
        Ok(S3Response::new(ListBucketsOutput {
            buckets: Some(buckets),
            ..Default::default()
        }))
    }

    async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        self.gate("HeadObject")?;
        let (_, m) = self.object(&req.input.bucket, &req.input.key)?;
        check_if_match(&req.input.if_match, &m)?;
        Ok(S3Response::new(HeadObjectOutput {
            content_length: Some(m.size as i64),
            e_tag: Some(ETag::Strong(m.etag.clone())),
            last_modified: Some(Timestamp::from(m.modified())),
            content_type: m.content_type.clone(),
            metadata: (!m.metadata.is_empty()).then(|| m.metadata.clone()),
            accept_ranges: Some("bytes".into()),
            ..Default::default()
        }))
    }

    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        self.gate("GetObject")?;
        let input = req.input;
        let (b, m) = self.object(&input.bucket, &input.key)?;
        check_if_match(&input.if_match, &m)?;
        let (start, end, content_range) = match &input.range {
            None => (0, m.size, None),
            Some(r) => {
                let rg = r.check(m.size)?;
                let cr = format!("bytes {}-{}/{}", rg.start, rg.end - 1, m.size);
                (rg.start, rg.end, Some(cr))
            }
        };
        let mut file = tokio::fs::File::open(b.data_path(&m))
            .await
            .map_err(io_err)?;
        if start > 0 {
            file.seek(std::io::SeekFrom::Start(start))
                .await
                .map_err(io_err)?;
        }
        let len = end - start;
        let reader = tokio::io::AsyncReadExt::take(file, len);
        let stream = tokio_util::io::ReaderStream::with_capacity(reader, GET_CHUNK);
        Ok(S3Response::new(GetObjectOutput {
            body: Some(StreamingBlob::wrap(stream)),
            content_length: Some(len as i64),
            content_range,
            e_tag: Some(ETag::Strong(m.etag.clone())),
            last_modified: Some(Timestamp::from(m.modified())),
            content_type: m.content_type.clone(),
            metadata: (!m.metadata.is_empty()).then(|| m.metadata.clone()),
            accept_ranges: Some("bytes".into()),
            ..Default::default()
        }))
    }

    async fn put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        self.gate("PutObject")?;
        let input = req.input;
        let b = self.bucket(&input.bucket)?;
        if let Some(ETagCondition::Any) = &input.if_none_match
            && b.get(&input.key).is_some()
        {
            return Err(s3_error!(PreconditionFailed, "Object already exists"));
        }
        let body = input.body.ok_or_else(|| s3_error!(IncompleteBody))?;
        let (data, size, md5) = self.write_data(&b, body).await?;
        if let Err(e) = check_body(&input.content_md5, input.content_length, md5, size) {
            let _ = std::fs::remove_file(b.data_dir().join(&data));
            return Err(e);
        }
        let etag = hex::encode(md5);
        let meta = Meta {
            key: input.key,
            size,
            etag: etag.clone(),
            modified_ns: now_ns(),
            content_type: input.content_type,
            metadata: input.metadata.unwrap_or_default(),
            data,
        };
        b.commit(meta).map_err(io_err)?;
        Ok(S3Response::new(PutObjectOutput {
            e_tag: Some(ETag::Strong(etag)),
            ..Default::default()
        }))
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        self.gate("CreateMultipartUpload")?;
        self.mp_create(req).await
    }

    async fn upload_part(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        self.gate("UploadPart")?;
        self.mp_upload_part(req).await
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        self.gate("CompleteMultipartUpload")?;
        self.mp_complete(req).await
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        self.gate("AbortMultipartUpload")?;
        self.mp_abort(req).await
    }

    async fn copy_object(
        &self,
        req: S3Request<CopyObjectInput>,
    ) -> S3Result<S3Response<CopyObjectOutput>> {
        self.gate("CopyObject")?;
        let i = req.input;
        let CopySource::Bucket { bucket, key, .. } = &i.copy_source else {
            return Err(s3_error!(NotImplemented, "only bucket copy sources"));
        };
        let (src_b, src) = self.object(bucket, key)?;
        let dst_b = self.bucket(&i.bucket)?;
        // Data files never change once written, so the copy can share them by hard link.
        let data = dst_b.new_data_name();
        let dest = dst_b.data_dir().join(&data);
        if std::fs::hard_link(src_b.data_path(&src), &dest).is_err() {
            std::fs::copy(src_b.data_path(&src), &dest).map_err(io_err)?;
        }
        let replace =
            i.metadata_directive.as_ref().map(|d| d.as_str()) == Some(MetadataDirective::REPLACE);
        let meta = Meta {
            key: i.key,
            size: src.size,
            etag: src.etag.clone(),
            modified_ns: now_ns(),
            content_type: if replace {
                i.content_type
            } else {
                src.content_type.clone()
            },
            metadata: if replace {
                i.metadata.unwrap_or_default()
            } else {
                src.metadata.clone()
            },
            data,
        };
        let modified = meta.modified();
        dst_b.commit(meta).map_err(io_err)?;
        Ok(S3Response::new(CopyObjectOutput {
            copy_object_result: Some(CopyObjectResult {
                e_tag: Some(ETag::Strong(src.etag)),
                last_modified: Some(Timestamp::from(modified)),
                ..Default::default()
            }),
            ..Default::default()
        }))
    }

    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        self.gate("DeleteObject")?;
        let b = self.bucket(&req.input.bucket)?;
        b.remove(&req.input.key).map_err(io_err)?;
        Ok(S3Response::new(DeleteObjectOutput::default()))
    }

    async fn delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        self.gate("DeleteObjects")?;
        let b = self.bucket(&req.input.bucket)?;
        let mut deleted = Vec::new();
        for o in req.input.delete.objects {
            b.remove(&o.key).map_err(io_err)?;
            deleted.push(DeletedObject {
                key: Some(o.key),
                ..Default::default()
            });
        }
        Ok(S3Response::new(DeleteObjectsOutput {
            deleted: Some(deleted),
            ..Default::default()
        }))
    }

    async fn list_objects(
        &self,
        req: S3Request<ListObjectsInput>,
    ) -> S3Result<S3Response<ListObjectsOutput>> {
        self.gate("ListObjects")?;
        let i = req.input;
        let b = self.bucket(&i.bucket)?;
        let prefix = i.prefix.clone().unwrap_or_default();
        let (objects, prefixes, next) = list_page(
            &b,
            &prefix,
            i.delimiter.as_deref(),
            i.marker.as_deref(),
            i.max_keys,
        );
        Ok(S3Response::new(ListObjectsOutput {
            name: Some(i.bucket),
            prefix: i.prefix,
            marker: i.marker,
            max_keys: Some(i.max_keys.unwrap_or(MAX_LIST as i32)),
            is_truncated: Some(next.is_some()),
            // As AWS: NextMarker only when a delimiter was given.
            next_marker: next.filter(|_| i.delimiter.is_some()),
            contents: Some(objects),
            common_prefixes: Some(prefixes),
            delimiter: i.delimiter,
            ..Default::default()
        }))
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        self.gate("ListObjectsV2")?;
        let i = req.input;
        let b = self.bucket(&i.bucket)?;
        let prefix = i.prefix.clone().unwrap_or_default();
        let start = match (&i.continuation_token, &i.start_after) {
            (Some(t), _) => Some(t.as_str()),
            (None, Some(s)) => Some(s.as_str()),
            _ => None,
        };
        let (objects, prefixes, next) =
            list_page(&b, &prefix, i.delimiter.as_deref(), start, i.max_keys);
        Ok(S3Response::new(ListObjectsV2Output {
            name: Some(i.bucket),
            prefix: i.prefix,
            key_count: Some((objects.len() + prefixes.len()) as i32),
            max_keys: Some(i.max_keys.unwrap_or(MAX_LIST as i32)),
            is_truncated: Some(next.is_some()),
            next_continuation_token: next,
            continuation_token: i.continuation_token,
            start_after: i.start_after,
            contents: Some(objects),
            common_prefixes: Some(prefixes),
            delimiter: i.delimiter,
            ..Default::default()
        }))
    }
}
