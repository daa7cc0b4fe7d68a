//! Gateway emulation and the request log of the embedded server.
//!
//! Real S3 gateways implement a subset of the API. `--emulate` makes the embedded server refuse
//! the calls a given gateway lacks with the answer such gateways send (HTTP 501 `NotImplemented`),
//! so the mount's capability detection and fallbacks are tested against the S3 protocol itself,
//! not a mock. Switches: `no-multipart`, `list-v1` (no ListObjectsV2), `no-copy`,
//! `no-head-bucket`, `no-delete-objects`; presets: `minio-no-multipart` and `seven-call` (only
//! DeleteObject, GetObject, HeadBucket, HeadObject, ListBuckets, ListObjects v1, PutObject).
//!
//! The request log counts every call by operation, and separately the calls refused, so a test
//! can check that a client probes a missing call once and then stops asking.
//!
//! Lock: one std `Mutex` over the counters, held only to update or copy them.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

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
}

impl Emulation {
    /// Parses `--emulate a,b,...`; an unknown word is an error naming the known ones.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let mut missing = BTreeSet::new();
        for word in spec.split(',').map(str::trim).filter(|w| !w.is_empty()) {
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
                "full" | "none" => {}
                _ => {
                    return Err(format!(
                        "unknown --emulate switch '{word}': use no-multipart, list-v1, no-copy, \
                         no-head-bucket, no-delete-objects, minio-no-multipart or seven-call"
                    ));
                }
            }
        }
        Ok(Self { missing })
    }

    pub fn refuses(&self, op: &str) -> bool {
        self.missing.contains(op)
    }

    /// The refused operations, for the start-up line.
    pub fn missing(&self) -> Vec<&'static str> {
        self.missing.iter().copied().collect()
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
        assert!(Emulation::parse("no-such").unwrap_err().contains("no-such"));
        assert_eq!(Emulation::parse("").unwrap(), Emulation::default());
    }
}
