//! Every SDK error mapped once into [`StoreError`]. Messages keep the HTTP status and S3 code,
//! never a credential; a transport failure or timeout becomes `Unreachable` with the root cause
//! picked out of the SDK's long error chain.

use super::SdkStore;
use crate::store::StoreError;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_types::error::display::DisplayErrorContext;

impl SdkStore {
    pub(super) fn map_err<E>(
        &self,
        err: SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
    ) -> StoreError
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
pub(super) fn completed_anyway<E>(
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

/// Picks the root cause out of the SDK's long error chain.
pub(super) fn short_reason(full: &str) -> String {
    const KNOWN: [(&str, &str); 15] = [
        ("Connection refused", "connection refused"),
        (
            "invalid HTTP version parsed",
            "the server does not speak plain HTTP: is the endpoint https://?",
        ),
        ("Connection reset", "connection reset by the server"),
        (
            "connection closed before message completed",
            "the server closed the connection before its answer was complete",
        ),
        ("IncompleteMessage", "the server's answer broke off"),
        (
            "CaUsedAsEndEntity",
            "TLS certificate not trusted (a CA certificate, CA:TRUE, used as the server's: put that very certificate in ca_bundle to trust it)",
        ),
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
    // The chain's last message, without the Debug form of the error the SDK appends in
    // parentheses (which ends as `Unknown } }))`).
    let chain = strip_debug_tail(full);
    let last = chain.rsplit(": ").next().unwrap_or(chain).trim();
    if last.is_empty() {
        chain.trim().to_string()
    } else {
        last.to_string()
    }
}

/// `text` without a final parenthesized group that is a Debug dump (has `{` or `(` inside).
fn strip_debug_tail(text: &str) -> &str {
    let t = text.trim_end();
    if !t.ends_with(')') {
        return t;
    }
    let mut depth = 0i32;
    for (i, c) in t.char_indices().rev() {
        match c {
            ')' => depth += 1,
            '(' => {
                depth -= 1;
                if depth == 0 {
                    let inner = &t[i + 1..t.len() - 1];
                    return if inner.contains('{') || inner.contains('(') {
                        t[..i].trim_end()
                    } else {
                        t
                    };
                }
            }
            _ => {}
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reason_is_the_chain_end_without_the_debug_dump() {
        let full = "dispatch failure: other: some new failure (DispatchFailure(DispatchFailure { source: ConnectorError { kind: Other(None), source: Custom { kind: Unknown } }))";
        assert_eq!(short_reason(full), "some new failure");
        let full = "dispatch failure: io error: tcp connect error: No route to host (os error 113) (DispatchFailure(X { a: 1 }))";
        assert_eq!(short_reason(full), "No route to host (os error 113)");
        assert_eq!(
            short_reason("io error: connection closed before message completed (Foo(Bar))"),
            "the server closed the connection before its answer was complete"
        );
    }
}
