//! Building the SDK client for one bucket, and the bucket check that settles region and
//! signature.
//!
//! Timeouts, so that no request hangs (a server may accept a connection and never answer):
//! - connect: [`CONNECT_TIMEOUT`];
//! - per attempt, until the response headers: the profile's `request_timeout`, plus time for the
//!   request body at [`MIN_BODY_RATE`] for uploads ([`SdkStore::body_timeout`]), and
//!   [`LONG_CALL_FACTOR`] times it for calls that answer only once the server has assembled an
//!   object (CopyObject, CompleteMultipartUpload);
//! - a body that delivers nothing for `request_timeout` (either way) fails: the SDK's stalled
//!   stream protection;
//! - each attempt that times out is retried with the SDK's backoff, up to `max_retries`.

use super::SdkStore;
use crate::store::settings::S3Settings;
use crate::store::{ObjectStore, StoreError, StoreResult};
use aws_sdk_s3::Client;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
    StalledStreamProtectionConfig,
};
use aws_smithy_types::retry::RetryConfig;
use aws_smithy_types::timeout::TimeoutConfig;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// How long to wait for a TCP/TLS connection before calling the endpoint unreachable. Long
/// enough for a slow WAN, short enough that a typo in the endpoint fails the mount quickly.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The slowest upload an attempt is given time for: 1 MiB/s (a 5 GiB PutObject may take 85
/// minutes before it counts as hung; an 8 MiB part 8 s more than the request timeout).
const MIN_BODY_RATE: f64 = (1u64 << 20) as f64;
/// CopyObject and CompleteMultipartUpload answer when the server has written the whole object:
/// seconds to minutes for large ones on AWS. They get this many request timeouts.
pub(super) const LONG_CALL_FACTOR: u32 = 10;

/// Connect and per-attempt timeouts.
fn timeouts(attempt: Duration) -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .operation_attempt_timeout(attempt)
        .build()
}

impl SdkStore {
    /// A per-request override for an upload of `len` bytes: the request timeout plus the
    /// body's time at [`MIN_BODY_RATE`].
    pub(super) fn body_timeout(&self, len: u64) -> aws_sdk_s3::config::Builder {
        let t = self.settings.request_timeout;
        let attempt = t + Duration::from_secs_f64(len as f64 / MIN_BODY_RATE);
        aws_sdk_s3::config::Builder::default().timeout_config(timeouts(attempt))
    }

    /// A per-request override for CopyObject and CompleteMultipartUpload.
    pub(super) fn long_call_timeout(&self) -> aws_sdk_s3::config::Builder {
        let t = self.settings.request_timeout;
        aws_sdk_s3::config::Builder::default().timeout_config(timeouts(t * LONG_CALL_FACTOR))
    }

    /// Signs for `region` from now on.
    pub(super) fn switch_region(&self, region: &str) {
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
    pub(super) async fn check_once(&self) -> StoreResult<()> {
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
    pub(super) async fn check_signature(&self) -> StoreResult<()> {
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
}

/// One SDK client for `s`, signing for `region`.
pub(super) fn build_client(
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
        .interceptor(crate::store::sigv2::SigV2::new(
            &s.access_key,
            &s.secret_key,
            &s.bucket,
            sigv2,
        ))
        .force_path_style(s.path_style())
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
        .retry_config(RetryConfig::standard().with_max_attempts(s.max_retries.max(1)))
        .timeout_config(timeouts(s.request_timeout))
        .stalled_stream_protection(
            StalledStreamProtectionConfig::enabled()
                .grace_period(s.request_timeout)
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
