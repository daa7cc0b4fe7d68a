//! Gateway emulation and the request log of the embedded server.
//!
//! Real S3 gateways implement a subset of the API. `--emulate` makes the embedded server refuse
//! the calls a given gateway lacks with the answer such gateways send (HTTP 501 `NotImplemented`),
//! so the mount's capability detection and fallbacks are tested against the S3 protocol itself,
//! not a mock. Switches: `no-multipart`, `list-v1` (no ListObjectsV2), `no-copy`,
//! `no-head-bucket`, `no-delete-objects`; presets: `minio-no-multipart` and `seven-call` (only
//! DeleteObject, GetObject, HeadBucket, HeadObject, ListBuckets, ListObjects v1, PutObject).
//! Besides calls: `sigv2-only` refuses SigV4-signed requests with 403 AccessDenied, as S3
//! servers that predate SigV4 (old Ceph RGW) do; `region=NAME` refuses SigV4 requests signed
//! for another region with 400 AuthorizationHeaderMalformed and an `x-amz-bucket-region` header,
//! as AWS and MinIO do. Both are checked in [`GatewayAccess`], before the call is decoded.
//!
//! The request log counts every call by operation, and separately the calls refused, so a test
//! can check that a client probes a missing call once and then stops asking.
//!
//! Lock: one std `Mutex` over the counters, held only to update or copy them.

use s3s::access::{S3Access, S3AccessContext};
use s3s::{S3Result, s3_error};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

/// Operations a switch removes.
const MULTIPART: &[&str] = &[
    "CreateMultipartUpload",
    "UploadPart",
    "CompleteMultipartUpload",
    "AbortMultipartUpload",
];

/// The only calls the seven-call gateway answers.
const SEVEN_CALLS: &[&str] = &[
    "DeleteObject",
    "GetObject",
    "HeadBucket",
    "HeadObject",
    "ListBuckets",
    "ListObjects",
    "PutObject",
];

/// Every operation the embedded server implements.
pub const ALL_OPS: &[&str] = &[
    "CreateBucket",
    "DeleteBucket",
    "HeadBucket",
    "GetBucketLocation",
    "ListBuckets",
    "HeadObject",
    "GetObject",
    "PutObject",
    "CreateMultipartUpload",
    "UploadPart",
    "CompleteMultipartUpload",
    "AbortMultipartUpload",
    "CopyObject",
    "DeleteObject",
    "DeleteObjects",
    "ListObjects",
    "ListObjectsV2",
];

/// The operations the server refuses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Emulation {
    missing: BTreeSet<&'static str>,
    /// Refuse SigV4 (`sigv2-only`).
    pub sigv2_only: bool,
    /// The buckets' region: SigV4 requests signed for another one are refused (`region=NAME`).
    pub region: Option<String>,
}

impl Emulation {
    /// Parses `--emulate a,b,...`; an unknown word is an error naming the known ones.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let mut e = Self::default();
        let missing = &mut e.missing;
        for word in spec.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            if let Some(r) = word.strip_prefix("region=") {
                e.region = Some(r.to_string());
                continue;
            }
            match word {
                "no-multipart" | "minio-no-multipart" => missing.extend(MULTIPART),
                "list-v1" => {
                    missing.insert("ListObjectsV2");
                }
                "no-copy" => {
                    missing.insert("CopyObject");
                }
                "no-head-bucket" => {
                    missing.insert("HeadBucket");
                }
                "no-delete-objects" => {
                    missing.insert("DeleteObjects");
                }
                "seven-call" => {
                    missing.extend(ALL_OPS.iter().filter(|o| !SEVEN_CALLS.contains(o)));
                }
                "sigv2-only" => e.sigv2_only = true,
                "full" | "none" => {}
                _ => {
                    return Err(format!(
                        "unknown --emulate switch '{word}': use no-multipart, list-v1, no-copy, \
                         no-head-bucket, no-delete-objects, sigv2-only, region=NAME, \
                         minio-no-multipart or seven-call"
                    ));
                }
            }
        }
        Ok(e)
    }

    pub fn refuses(&self, op: &str) -> bool {
        self.missing.contains(op)
    }

    /// What the server lacks, for the start-up line.
    pub fn missing(&self) -> Vec<String> {
        let mut out: Vec<String> = self.missing.iter().map(|s| s.to_string()).collect();
        if self.sigv2_only {
            out.push("SigV4".into());
        }
        if let Some(r) = &self.region {
            out.push(format!("requests signed for regions other than {r}"));
        }
        out
    }
}

/// Authentication rules of the emulated server, checked after the signature is verified.
pub struct GatewayAccess {
    pub emulation: Emulation,
    pub log: Arc<RequestLog>,
}

#[async_trait::async_trait]
impl S3Access for GatewayAccess {
    async fn check(&self, cx: &mut S3AccessContext<'_>) -> S3Result<()> {
        if cx.credentials().is_none() {
            return Err(s3_error!(AccessDenied, "Signature is required"));
        }
        let auth = cx
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let v4 = auth.starts_with("AWS4-")
            || cx
                .uri()
                .query()
                .is_some_and(|q| q.contains("X-Amz-Algorithm"));
        if v4 && self.emulation.sigv2_only {
            self.log.record("SigV4", true);
            return Err(s3_error!(
                AccessDenied,
                "this server accepts only Signature Version 2"
            ));
        }
        if let (true, Some(region)) = (v4, &self.emulation.region) {
            // Credential=AK/DATE/REGION/s3/aws4_request
            let signed = auth
                .split("Credential=")
                .nth(1)
                .and_then(|c| c.split('/').nth(2))
                .unwrap_or("");
            if signed != region {
                self.log.record("WrongRegion", true);
                let mut err = s3_error!(
                    AuthorizationHeaderMalformed,
                    "the region '{signed}' is wrong; expecting '{region}'"
                );
                let mut h = http::HeaderMap::new();
                h.insert(
                    "x-amz-bucket-region",
                    http::HeaderValue::from_str(region).map_err(|_| s3_error!(InternalError))?,
                );
                err.set_headers(h);
                return Err(err);
            }
        }
        if !v4 {
            self.log.record("SigV2", false);
        }
        Ok(())
    }
}

/// Calls by operation: (answered, refused).
#[derive(Default)]
pub struct RequestLog {
    counts: Mutex<BTreeMap<&'static str, (u64, u64)>>,
}

impl RequestLog {
    pub fn record(&self, op: &'static str, refused: bool) {
        let mut c = self.counts.lock().unwrap();
        let e = c.entry(op).or_default();
        if refused {
            e.1 += 1;
        } else {
            e.0 += 1;
        }
    }

    /// Calls of `op` answered.
    pub fn answered(&self, op: &str) -> u64 {
        self.counts.lock().unwrap().get(op).map_or(0, |e| e.0)
    }

    /// Calls of `op` refused as not implemented.
    pub fn refused(&self, op: &str) -> u64 {
        self.counts.lock().unwrap().get(op).map_or(0, |e| e.1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_and_switches() {
        let seven = Emulation::parse("seven-call").unwrap();
        for op in SEVEN_CALLS {
            assert!(!seven.refuses(op), "{op}");
        }
        for op in ["ListObjectsV2", "CopyObject", "UploadPart", "DeleteObjects"] {
            assert!(seven.refuses(op), "{op}");
        }
        let e = Emulation::parse("list-v1, no-copy").unwrap();
        assert_eq!(e.missing(), vec!["CopyObject", "ListObjectsV2"]);
        let e = Emulation::parse("sigv2-only,region=eu-west-1").unwrap();
        assert!(e.sigv2_only);
        assert_eq!(e.region.as_deref(), Some("eu-west-1"));
        assert!(Emulation::parse("no-such").unwrap_err().contains("no-such"));
        assert_eq!(Emulation::parse("").unwrap(), Emulation::default());
    }
}
