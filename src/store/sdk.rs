//! [`ObjectStore`] on aws-sdk-s3: the only file that names aws types.
//!
//! Choices that matter for non-AWS servers:
//! - checksums `WhenRequired` both ways: since 2025 the SDK otherwise sends CRC trailers in
//!   aws-chunked bodies, which MinIO, Ceph, OSS and small gateways reject;
//! - path or virtual-hosted addressing decided by the resolved config (auto: path style for IPs,
//!   `localhost` and explicit ports);
//! - bodies are not hashed for the signature (`UNSIGNED-PAYLOAD`): Content-MD5 already lets the
//!   server verify them, and SHA-256 of every byte on both ends cost more than the transfer (perf:
//!   70% of the embedded server's time on 8 MiB parts);
//! - a short connect timeout, so an unreachable endpoint fails the mount in seconds, not minutes;
//! - at the bucket check, a server that names another region (`x-amz-bucket-region`, or
//!   "expecting 'REGION'") gets the client rebuilt for that region, and one that refuses SigV4
//!   gets SigV2 (unless the profile fixes `signature`);
//! - TLS per the profile (`verify_tls`, `ca_bundle`; see `http.rs`);
//! - every SDK error mapped once, here, into [`StoreError`]; the message keeps the HTTP status and
//!   S3 code but never a credential.

use super::{
    Capability, Chunks, ListPage, ObjectInfo, ObjectStore, Part, PutOptions, StoreError,
    StoreResult,
};
use crate::config::S3Settings;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_smithy_types::error::display::DisplayErrorContext;
use aws_smithy_types::retry::RetryConfig;
use aws_smithy_types::timeout::TimeoutConfig;
use base64::Engine;
use bytes::Bytes;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

/// How long to wait for a TCP/TLS connection before calling the endpoint unreachable. Long
/// enough for a slow WAN, short enough that a typo in the endpoint fails the mount quickly.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What the server has, learned from its answers (one probe each, see [`Capability`]).
pub struct Caps {
    /// ListObjectsV2 (missing: an error, or a v1-shaped answer): else v1 with markers.
    pub list_v2: Capability,
    /// CopyObject: else copies stream GET -> PUT.
    pub copy: Capability,
    /// HeadBucket: else the bucket check lists one key.
    pub head_bucket: Capability,
}

/// A bucket on an S3-compatible server.
#[derive(Clone)]
pub struct SdkStore {
    /// Replaced when the bucket turns out to live in another region.
    client: Arc<RwLock<Client>>,
    settings: Arc<S3Settings>,
    http: Option<aws_smithy_runtime_api::client::http::SharedHttpClient>,
    /// Sign with SigV2 instead of SigV4 (read by the interceptor).
    sigv2: Arc<AtomicBool>,
    bucket: String,
    /// Shown in errors (never carries credentials).
    endpoint: String,
    caps: Arc<Caps>,
}

impl SdkStore {
    /// A store for `s`; fails only on an unusable `ca_bundle`.
    pub fn new(s: &S3Settings) -> Result<Self, String> {
        let http = super::http::client(s.verify_tls, s.ca_bundle.as_deref(), CONNECT_TIMEOUT)?;
        let sigv2 = Arc::new(AtomicBool::new(s.signature == Some(2)));
        let client = build_client(s, &s.region, http.clone(), sigv2.clone());
        Ok(Self {
            client: Arc::new(RwLock::new(client)),
            settings: Arc::new(s.clone()),
            http,
            sigv2,
            bucket: s.bucket.clone(),
            endpoint: s
                .endpoint
                .clone()
                .unwrap_or_else(|| format!("https://s3.{}.amazonaws.com", s.region)),
            caps: Arc::new(Caps {
                list_v2: Capability::new(
                    s.list_version.map(|v| v == 2),
                    "ListObjectsV2",
                    "listing with ListObjects v1",
                ),
                copy: Capability::new(s.copy, "CopyObject", "copies stream GET -> PUT"),
                head_bucket: Capability::new(None, "HeadBucket", "the bucket check lists one key"),
            }),
        })
    }

    fn client(&self) -> Client {
        self.client.read().unwrap().clone()
    }

    /// The region requests are signed for now: the profile's, or the one the server named.
    pub fn region(&self) -> String {
        let client = self.client.read().unwrap();
        client
            .config()
            .region()
            .map(|r| r.to_string())
            .unwrap_or_default()
    }

    /// Whether requests are signed with SigV2.
    pub fn uses_sigv2(&self) -> bool {
        self.sigv2.load(Ordering::Relaxed)
    }

    /// Signs for `region` from now on.
    fn switch_region(&self, region: &str) {
        tracing::warn!(
            "bucket '{}' lives in region {region}, not {}: signing for {region} (set region = \"{region}\" in the profile to skip this)",
            self.bucket,
            self.region()
        );
        let client = build_client(
            &self.settings,
            region,
            self.http.clone(),
            self.sigv2.clone(),
        );
        *self.client.write().unwrap() = client;
    }

    /// HeadBucket, else a one-key listing where the server lacks HeadBucket.
    async fn check_once(&self) -> StoreResult<()> {
        let head = || async {
            match self
                .client()
                .head_bucket()
                .bucket(&self.bucket)
                .send()
                .await
            {
                Ok(_) => Ok(()),
                Err(e) => match self.map_err(e) {
                    StoreError::NotFound => Err(StoreError::NoSuchBucket(self.bucket.clone())),
                    other => Err(other),
                },
            }
        };
        if self.caps.head_bucket.call(head).await?.is_some() {
            return Ok(());
        }
        match self.list("", None, None, 1).await {
            Ok(_) => Ok(()),
            Err(StoreError::NotFound) => Err(StoreError::NoSuchBucket(self.bucket.clone())),
            Err(e) => Err(e),
        }
    }

    /// [`Self::check_once`], trying SigV2 when the server refuses SigV4 and the profile leaves
    /// the signature to detection. Keeps SigV4 (and its error) when SigV2 fails too, so wrong
    /// keys are reported as such.
    async fn check_signature(&self) -> StoreResult<()> {
        let err = match self.check_once().await {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        let refused = matches!(
            err,
            StoreError::AccessDenied { .. } | StoreError::Service { status: 400, .. }
        );
        if self.settings.signature.is_some() || !refused {
            return Err(err);
        }
        self.sigv2.store(true, Ordering::Relaxed);
        match self.check_once().await {
            Ok(()) => {
                tracing::warn!(
                    "the server refused SigV4 ({err}) and accepts SigV2: signing with SigV2 (set signature = \"v2\" in the profile to skip the probe)"
                );
                Ok(())
            }
            Err(_) => {
                self.sigv2.store(false, Ordering::Relaxed);
                Err(err)
            }
        }
    }
    /// What the server was found (or configured) to have so far.
    pub fn caps(&self) -> &Caps {
        &self.caps
    }

    async fn list_v2(
        &self,
        prefix: &str,
        delimiter: Option<&str>,
        start: Option<&str>,
        max_keys: u32,
    ) -> StoreResult<ListPage> {
        let out = self
            .client()
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .set_delimiter(delimiter.map(str::to_string))
            .set_continuation_token(start.map(str::to_string))
            .max_keys(max_keys as i32)
            .send()
            .await
            .map_err(|e| self.map_err(e))?;
        let truncated = out.is_truncated() == Some(true);
        if truncated && out.next_continuation_token().is_none() {
            // A v1-shaped answer: the server ignored `list-type=2`.
            return Err(StoreError::NotImplemented("ListObjectsV2".into()));
        }
        Ok(ListPage {
            objects: out.contents().iter().filter_map(object_info).collect(),
            prefixes: prefixes(out.common_prefixes()),
            next: truncated
                .then(|| out.next_continuation_token().map(str::to_string))
                .flatten(),
        })
    }

    /// ListObjects v1: the token is a marker. `NextMarker` comes only with a delimiter; without
    /// it the last key (or common prefix) returned is the marker.
    async fn list_v1(
        &self,
        prefix: &str,
        delimiter: Option<&str>,
        start: Option<&str>,
        max_keys: u32,
    ) -> StoreResult<ListPage> {
        let out = self
            .client()
            .list_objects()
            .bucket(&self.bucket)
            .prefix(prefix)
            .set_delimiter(delimiter.map(str::to_string))
            .set_marker(start.map(str::to_string))
            .max_keys(max_keys as i32)
            .send()
            .await
            .map_err(|e| self.map_err(e))?;
        let objects: Vec<ObjectInfo> = out.contents().iter().filter_map(object_info).collect();
        let prefixes = prefixes(out.common_prefixes());
        let next = if out.is_truncated() == Some(true) {
            out.next_marker().map(str::to_string).or_else(|| {
                let last_key = objects.last().map(|o| o.key.clone());
                last_key.max(prefixes.last().cloned())
            })
        } else {
            None
        };
        Ok(ListPage {
            objects,
            prefixes,
            next,
        })
    }

    /// A copy for servers without CopyObject: the GET body streams into the PUT.
    async fn copy_streamed(
        &self,
        src: &str,
        dst: &str,
        replace: Option<PutOptions>,
    ) -> StoreResult<Option<String>> {
        let got = self
            .client()
            .get_object()
            .bucket(&self.bucket)
            .key(src)
            .send()
            .await
            .map_err(|e| self.map_err(e))?;
        let opts = replace.unwrap_or_else(|| PutOptions {
            content_type: got.content_type().map(str::to_string),
            metadata: got.metadata().cloned().unwrap_or_default(),
        });
        let out = self
            .client()
            .put_object()
            .bucket(&self.bucket)
            .key(dst)
            .content_length(got.content_length().unwrap_or(0))
            .set_content_type(opts.content_type)
            .set_metadata((!opts.metadata.is_empty()).then_some(opts.metadata))
            .body(got.body)
            .customize()
            .disable_payload_signing()
            .send()
            .await
            .map_err(|e| self.map_err(e))?;
        Ok(out.e_tag().map(str::to_string))
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// Creates the bucket (for tests and the demo; the mount never creates buckets).
    pub async fn create_bucket(&self) -> StoreResult<()> {
        match self
            .client()
            .create_bucket()
            .bucket(&self.bucket)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(
                    e.code(),
                    Some("BucketAlreadyOwnedByYou" | "BucketAlreadyExists")
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(self.map_err(e)),
        }
    }

    /// One PutObject of `len` bytes with Content-Length and Content-MD5, so the server verifies
    /// what it received.
    async fn put_body(
        &self,
        key: &str,
        body: ByteStream,
        len: u64,
        md5: [u8; 16],
        opts: PutOptions,
    ) -> StoreResult<Option<String>> {
        let out = self
            .client()
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_length(len as i64)
            .content_md5(content_md5(&md5))
            .set_content_type(opts.content_type)
            .set_metadata((!opts.metadata.is_empty()).then_some(opts.metadata))
            .body(body)
            .customize()
            .disable_payload_signing()
            .send()
            .await
            .map_err(|e| self.map_err(e))?;
        Ok(out.e_tag().map(str::to_string))
    }

    fn map_err<E>(&self, err: SdkError<E, aws_sdk_s3::config::http::HttpResponse>) -> StoreError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        match &err {
            SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) => StoreError::Unreachable {
                endpoint: self.endpoint.clone(),
                reason: short_reason(&format!("{}", DisplayErrorContext(&err))),
            },
            _ => {
                let status = err.raw_response().map(|r| r.status().as_u16()).unwrap_or(0);
                let code = err.code().map(str::to_string);
                let message = err.message().map(str::to_string);
                if let Some(region) = named_region(&err, message.as_deref())
                    && region != self.region()
                {
                    return StoreError::WrongRegion(region);
                }
                match (status, code.as_deref()) {
                    (_, Some("NoSuchBucket")) => StoreError::NoSuchBucket(self.bucket.clone()),
                    (404, _) => StoreError::NotFound,
                    (412, _) | (_, Some("PreconditionFailed")) => StoreError::PreconditionFailed,
                    (416, _) => StoreError::InvalidRange,
                    (403, _) | (401, _) => StoreError::AccessDenied {
                        status,
                        code,
                        message,
                    },
                    (501, _) | (405, _) | (_, Some("NotImplemented")) => {
                        StoreError::NotImplemented(code.unwrap_or_else(|| status.to_string()))
                    }
                    (0, _) => {
                        StoreError::Other(short_reason(&format!("{}", DisplayErrorContext(&err))))
                    }
                    _ => StoreError::Service {
                        status,
                        code,
                        message,
                    },
                }
            }
        }
    }
}

/// One SDK client for `s`, signing for `region`.
fn build_client(
    s: &S3Settings,
    region: &str,
    http: Option<aws_smithy_runtime_api::client::http::SharedHttpClient>,
    sigv2: Arc<AtomicBool>,
) -> Client {
    let creds = Credentials::new(
        s.access_key.clone(),
        s.secret_key.expose().to_string(),
        s.session_token.as_ref().map(|t| t.expose().to_string()),
        None,
        "s3mount",
    );
    let mut b = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(region.to_string()))
        .credentials_provider(creds)
        .interceptor(super::sigv2::SigV2::new(
            &s.access_key,
            &s.secret_key,
            &s.bucket,
            sigv2,
        ))
        .force_path_style(s.path_style())
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
        .retry_config(RetryConfig::standard().with_max_attempts(s.max_retries.max(1)))
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(CONNECT_TIMEOUT)
                .build(),
        );
    if let Some(ep) = &s.endpoint {
        b = b.endpoint_url(ep.clone());
    }
    if let Some(http) = http {
        b = b.http_client(http);
    }
    Client::from_conf(b.build())
}

/// The region an error answer says the bucket is in: the `x-amz-bucket-region` header (AWS,
/// MinIO), else MinIO's and AWS's "... expecting 'REGION'" message.
fn named_region<E>(
    err: &SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
    message: Option<&str>,
) -> Option<String> {
    let status = err.raw_response()?.status().as_u16();
    if !matches!(status, 301 | 400 | 403) {
        return None;
    }
    if let Some(r) = err
        .raw_response()?
        .headers()
        .get("x-amz-bucket-region")
        .filter(|r| !r.is_empty())
    {
        return Some(r.to_string());
    }
    let m = message?;
    let rest = m.split_once("expecting '")?.1;
    Some(rest.split_once('\'')?.0.to_string()).filter(|r| !r.is_empty())
}

/// A CompleteMultipartUpload the SDK could not parse although the server answered 200 without an
/// `<Error>`: some servers name the root element differently (moto, some gateways send
/// `CompleteMultipartUploadResponse`). The upload is complete; the ETag is read from the body.
fn completed_anyway<E>(
    err: &SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) -> Option<Option<String>> {
    let raw = err.raw_response()?;
    if raw.status().as_u16() != 200 {
        return None;
    }
    let body = std::str::from_utf8(raw.body().bytes()?).ok()?;
    if body.contains("<Error>") || !body.contains("CompleteMultipartUpload") {
        return None;
    }
    let etag = body
        .split_once("<ETag>")
        .and_then(|(_, rest)| rest.split_once("</ETag>"))
        .map(|(e, _)| e.replace("&quot;", "\"").replace("&#34;", "\""));
    Some(etag)
}

/// Percent-encodes a key for `x-amz-copy-source` (everything but unreserved bytes and `/`).
fn encode_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Picks the root cause out of the SDK's long error chain.
fn short_reason(full: &str) -> String {
    const KNOWN: [(&str, &str); 10] = [
        ("Connection refused", "connection refused"),
        ("dns error", "host name not found"),
        ("failed to lookup address", "host name not found"),
        ("timed out", "connection timed out"),
        (
            "UnknownIssuer",
            "TLS certificate not trusted (unknown issuer)",
        ),
        (
            "NotValidForName",
            "TLS certificate is for another host name",
        ),
        ("Expired", "TLS certificate expired"),
        ("certificate", "TLS certificate not trusted"),
        (
            "InvalidContentType",
            "TLS handshake failed: is the endpoint plain http://?",
        ),
        ("Network is unreachable", "network unreachable"),
    ];
    for (needle, said) in KNOWN {
        if full.contains(needle) {
            return said.to_string();
        }
    }
    full.rsplit(": ").next().unwrap_or(full).to_string()
}

fn object_info(o: &aws_sdk_s3::types::Object) -> Option<ObjectInfo> {
    Some(ObjectInfo {
        key: o.key()?.to_string(),
        size: o.size().unwrap_or(0).max(0) as u64,
        etag: o.e_tag().map(str::to_string),
        last_modified: to_system_time(o.last_modified()),
        content_type: None,
        metadata: Default::default(),
    })
}

fn prefixes(p: &[aws_sdk_s3::types::CommonPrefix]) -> Vec<String> {
    p.iter()
        .filter_map(|p| p.prefix().map(str::to_string))
        .collect()
}

/// The Content-MD5 header value of a body with this MD5.
fn content_md5(md5: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(md5)
}

fn to_system_time(t: Option<&aws_smithy_types::DateTime>) -> Option<SystemTime> {
    t.and_then(|t| SystemTime::try_from(*t).ok())
}

impl ObjectStore for SdkStore {
    async fn check_bucket(&self) -> StoreResult<()> {
        match self.check_signature().await {
            Err(StoreError::WrongRegion(region)) if region != self.region() => {
                self.switch_region(&region);
                self.check_signature().await?;
            }
            other => other?,
        }
        // Settle ListObjectsV2 now (one cheap request), so the first `ls` does not pay for the
        // probe. Best effort: keys allowed to list only under a prefix get AccessDenied here,
        // and the capability is then learned by the first real listing.
        if self.caps.list_v2.known().is_none() {
            let _ = self.list("", Some("/"), None, 1).await;
        }
        Ok(())
    }

    async fn head(&self, key: &str) -> StoreResult<ObjectInfo> {
        let out = self
            .client()
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| self.map_err(e))?;
        Ok(ObjectInfo {
            key: key.to_string(),
            size: out.content_length().unwrap_or(0).max(0) as u64,
            etag: out.e_tag().map(str::to_string),
            last_modified: to_system_time(out.last_modified()),
            content_type: out.content_type().map(str::to_string),
            metadata: out
                .metadata()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
                        .collect()
                })
                .unwrap_or_default(),
        })
    }

    async fn get_range(
        &self,
        key: &str,
        start: u64,
        end: u64,
        if_match: Option<&str>,
    ) -> StoreResult<Chunks> {
        if end <= start {
            return Ok(Chunks::default());
        }
        let out = self
            .client()
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .range(format!("bytes={}-{}", start, end - 1))
            .set_if_match(if_match.map(str::to_string))
            .send()
            .await
            .map_err(|e| self.map_err(e))?;
        // Keep the buffers as they arrive: no copy into one contiguous buffer.
        let mut body = out.body;
        let mut data = Chunks::default();
        while let Some(b) = body.next().await {
            data.push(b.map_err(|e| StoreError::Other(format!("reading the body of {key}: {e}")))?);
        }
        Ok(data)
    }

    async fn list(
        &self,
        prefix: &str,
        delimiter: Option<&str>,
        start: Option<&str>,
        max_keys: u32,
    ) -> StoreResult<ListPage> {
        let v2 = || self.list_v2(prefix, delimiter, start, max_keys);
        if let Some(page) = self.caps.list_v2.call(v2).await? {
            return Ok(page);
        }
        self.list_v1(prefix, delimiter, start, max_keys).await
    }

    async fn put(&self, key: &str, body: Bytes, opts: PutOptions) -> StoreResult<Option<String>> {
        use md5::Digest;
        let md5: [u8; 16] = md5::Md5::digest(&body).into();
        let len = body.len() as u64;
        self.put_body(key, ByteStream::from(body), len, md5, opts)
            .await
    }

    async fn put_file(
        &self,
        key: &str,
        path: &std::path::Path,
        len: u64,
        md5: [u8; 16],
        opts: PutOptions,
    ) -> StoreResult<Option<String>> {
        let body = ByteStream::read_from()
            .path(path)
            .length(aws_sdk_s3::primitives::Length::Exact(len))
            .build()
            .await
            .map_err(|e| {
                StoreError::Other(format!("reading staged data {}: {e}", path.display()))
            })?;
        self.put_body(key, body, len, md5, opts).await
    }

    async fn create_multipart(&self, key: &str, opts: PutOptions) -> StoreResult<String> {
        let out = self
            .client()
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .set_content_type(opts.content_type)
            .set_metadata((!opts.metadata.is_empty()).then_some(opts.metadata))
            .send()
            .await
            .map_err(|e| self.map_err(e))?;
        out.upload_id()
            .map(str::to_string)
            .ok_or_else(|| StoreError::Other("CreateMultipartUpload answered no upload id".into()))
    }

    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        number: u32,
        body: Bytes,
    ) -> StoreResult<String> {
        use md5::Digest;
        let md5 = md5::Md5::digest(&body);
        let out = self
            .client()
            .upload_part()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .part_number(number as i32)
            .content_length(body.len() as i64)
            .content_md5(content_md5(&md5))
            .body(ByteStream::from(body))
            .customize()
            .disable_payload_signing()
            .send()
            .await
            .map_err(|e| self.map_err(e))?;
        out.e_tag()
            .map(str::to_string)
            .ok_or_else(|| StoreError::Other(format!("UploadPart {number} answered no ETag")))
    }

    async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: Vec<Part>,
    ) -> StoreResult<Option<String>> {
        use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
        let parts = parts
            .into_iter()
            .map(|p| {
                CompletedPart::builder()
                    .part_number(p.number as i32)
                    .e_tag(p.etag)
                    .build()
            })
            .collect();
        let out = self
            .client()
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await;
        match out {
            Ok(out) => Ok(out.e_tag().map(str::to_string)),
            Err(e) => match completed_anyway(&e) {
                Some(etag) => Ok(etag),
                None => Err(self.map_err(e)),
            },
        }
    }

    async fn abort_multipart(&self, key: &str, upload_id: &str) -> StoreResult<()> {
        self.client()
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .send()
            .await
            .map_err(|e| self.map_err(e))?;
        Ok(())
    }

    async fn copy(
        &self,
        src: &str,
        dst: &str,
        replace: Option<PutOptions>,
    ) -> StoreResult<Option<String>> {
        let server_side = || self.copy_object(src, dst, replace.clone());
        if let Some(etag) = self.caps.copy.call(server_side).await? {
            return Ok(etag);
        }
        self.copy_streamed(src, dst, replace).await
    }

    async fn delete(&self, key: &str) -> StoreResult<()> {
        self.client()
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| self.map_err(e))?;
        Ok(())
    }
}

impl SdkStore {
    /// CopyObject (server-side).
    async fn copy_object(
        &self,
        src: &str,
        dst: &str,
        replace: Option<PutOptions>,
    ) -> StoreResult<Option<String>> {
        let mut req = self
            .client()
            .copy_object()
            .bucket(&self.bucket)
            .key(dst)
            .copy_source(format!("{}/{}", self.bucket, encode_key(src)));
        if let Some(opts) = replace.clone() {
            req = req
                .metadata_directive(aws_sdk_s3::types::MetadataDirective::Replace)
                .set_content_type(opts.content_type)
                .set_metadata((!opts.metadata.is_empty()).then_some(opts.metadata));
        }
        let out = req.send().await.map_err(|e| self.map_err(e))?;
        Ok(out
            .copy_object_result()
            .and_then(|r| r.e_tag())
            .map(str::to_string))
    }
}
