//! What the store needs to reach one bucket: endpoint, keys, region, addressing, TLS, retries,
//! timeouts and the capabilities fixed by the profile. Built by `config/` from the user's
//! sources; owned here so that `store/` depends on nothing above it.

use std::time::Duration;

/// A secret that never prints: Debug and Display show `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    /// The secret itself, for signing only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// Bucket addressing style.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Addressing {
    /// `http://host/bucket/key`
    Path,
    /// `http://bucket.host/key`
    Virtual,
    /// Path style for IP addresses, `localhost` and explicit ports; virtual otherwise.
    Auto,
}

/// Everything needed to talk to one bucket.
#[derive(Debug, Clone)]
pub struct S3Settings {
    /// Profile these settings came from (for messages).
    pub profile: String,
    /// Endpoint URL; `None` means AWS for `region`.
    pub endpoint: Option<String>,
    /// Signing region.
    pub region: String,
    /// Addressing style as configured.
    pub addressing: Addressing,
    /// Access key id (not secret; shown in messages as needed).
    pub access_key: String,
    /// Secret access key.
    pub secret_key: Secret,
    /// Session token of temporary credentials.
    pub session_token: Option<Secret>,
    /// Verify the server's TLS certificate.
    pub verify_tls: bool,
    /// PEM certificates trusted in addition to the system's (`ca_bundle`, `AWS_CA_BUNDLE`).
    pub ca_bundle: Option<std::path::PathBuf>,
    /// Signature version: `None` detect (v4, v2 when the server refuses v4), or 2 / 4.
    pub signature: Option<u8>,
    /// Attempts per request, first try included.
    pub max_retries: u32,
    /// Per attempt: how long to wait for the response headers (plus time for the request body
    /// at a slow link's rate), and for the next bytes of a response body that stalled.
    pub request_timeout: Duration,
    /// Multipart upload: `None` detect, or fixed by the profile.
    pub multipart: Option<bool>,
    /// ListObjects version: `None` detect (v2, falling back to v1), or fixed.
    pub list_version: Option<u8>,
    /// CopyObject: `None` detect, or fixed (false: copies stream GET -> PUT).
    pub copy: Option<bool>,
    /// What every object written gets (encryption, storage class, ACL), and requester pays.
    pub object: ObjectOptions,
    /// Bucket name.
    pub bucket: String,
}

/// Options of the objects a mount writes, sent with every request that needs them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObjectOptions {
    /// Server-side encryption: `AES256` (SSE-S3) or `aws:kms` (SSE-KMS).
    pub sse: Option<String>,
    /// KMS key for `aws:kms` (the bucket's default key when unset).
    pub sse_kms_key_id: Option<String>,
    /// Storage class of new objects (`STANDARD_IA`, `GLACIER_IR`, ...).
    pub storage_class: Option<String>,
    /// Canned ACL of new objects (`bucket-owner-full-control`, `private`, ...).
    pub acl: Option<String>,
    /// Send `x-amz-request-payer: requester` (requester-pays buckets).
    pub requester_pays: bool,
}

impl S3Settings {
    /// Whether requests use path-style addressing (resolving `Auto`).
    pub fn path_style(&self) -> bool {
        match self.addressing {
            Addressing::Path => true,
            Addressing::Virtual => false,
            Addressing::Auto => match &self.endpoint {
                None => self.bucket.contains('.'),
                Some(ep) => endpoint_wants_path_style(ep) || self.bucket.contains('.'),
            },
        }
    }
}

/// IPs, `localhost` and explicit ports cannot carry a bucket sub-domain.
fn endpoint_wants_path_style(endpoint: &str) -> bool {
    let Ok(uri) = endpoint.parse::<http::Uri>() else {
        return true;
    };
    let host = uri.host().unwrap_or("");
    let host = host.trim_start_matches('[').trim_end_matches(']');
    uri.port().is_some()
        || host == "localhost"
        || host.ends_with(".localhost")
        || host.parse::<std::net::IpAddr>().is_ok()
}
