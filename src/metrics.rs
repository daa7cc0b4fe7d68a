//! `--metrics-addr 127.0.0.1:PORT`: Prometheus text on `GET /metrics`.
//!
//! Counters live in one process-wide [`Metrics`] (atomics and small maps): the HTTP client
//! records every S3 request it sends (by operation and status, with a latency histogram and
//! the bytes of bodies), the page cache its hits and misses. Gauges are read from the mount
//! when scraped (inodes, open handles, files being written, uploads in flight). The endpoint
//! is a minimal HTTP/1.1 responder on loopback by default: one request per connection.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// Latency buckets, in seconds (Prometheus `le`).
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

#[derive(Default)]
pub struct Metrics {
    /// Requests by (operation, HTTP status; `None`: no answer).
    requests: Mutex<BTreeMap<(&'static str, Option<u16>), u64>>,
    latency: Mutex<BTreeMap<&'static str, Histogram>>,
    pub bytes_read: AtomicU64,
    pub bytes_written: AtomicU64,
    pub page_cache_hits: AtomicU64,
    pub page_cache_misses: AtomicU64,
}

/// The process's metrics.
pub fn global() -> &'static Metrics {
    static M: OnceLock<Metrics> = OnceLock::new();
    M.get_or_init(Metrics::default)
}

/// The S3 operation an HTTP request is, from its method, query and headers.
pub fn operation(method: &str, query: &str, copy_source: bool) -> &'static str {
    let has = |k: &str| {
        query
            .split('&')
            .any(|p| p == k || p.starts_with(&format!("{k}=")))
    };
    match method {
        "GET" if has("list-type") || has("prefix") || has("delimiter") || has("marker") => {
            "ListObjects"
        }
        "GET" if has("uploads") => "ListMultipartUploads",
        "GET" => "GetObject",
        "HEAD" => "HeadObject",
        "PUT" if has("partNumber") => "UploadPart",
        "PUT" if copy_source => "CopyObject",
        "PUT" => "PutObject",
        "POST" if has("uploads") => "CreateMultipartUpload",
        "POST" if has("uploadId") => "CompleteMultipartUpload",
        "POST" if has("delete") => "DeleteObjects",
        "DELETE" if has("uploadId") => "AbortMultipartUpload",
        "DELETE" => "DeleteObject",
        _ => "Other",
    }
}

impl Metrics {
    /// One request sent: its operation, outcome (`None`: no answer) and time to answer.
    pub fn request(&self, op: &'static str, status: Option<u16>, took: Duration) {
        *self
            .requests
            .lock()
            .unwrap()
            .entry((op, status))
            .or_default() += 1;
        let secs = took.as_secs_f64();
        let mut l = self.latency.lock().unwrap();
        let h = l.entry(op).or_default();
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                h.counts[i] += 1;
            }
        }
        h.count += 1;
        h.sum += secs;
    }

    /// The Prometheus text, with the mount's gauges.
    pub fn render(&self, gauges: &[(&str, &str, u64)]) -> String {
        use std::fmt::Write;
        let mut o = String::new();
        o.push_str("# HELP s3mount_requests_total S3 requests sent, by operation and HTTP status.\n# TYPE s3mount_requests_total counter\n");
        for ((op, st), n) in self.requests.lock().unwrap().iter() {
            let st = st.map_or("error".to_string(), |s| s.to_string());
            let _ = writeln!(
                o,
                "s3mount_requests_total{{op=\"{op}\",status=\"{st}\"}} {n}"
            );
        }
        o.push_str("# HELP s3mount_request_seconds Time to the answer's headers, by operation.\n# TYPE s3mount_request_seconds histogram\n");
        for (op, h) in self.latency.lock().unwrap().iter() {
            for (i, b) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    o,
                    "s3mount_request_seconds_bucket{{op=\"{op}\",le=\"{b}\"}} {}",
                    h.counts[i]
                );
            }
            let _ = writeln!(
                o,
                "s3mount_request_seconds_bucket{{op=\"{op}\",le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(o, "s3mount_request_seconds_sum{{op=\"{op}\"}} {}", h.sum);
            let _ = writeln!(
                o,
                "s3mount_request_seconds_count{{op=\"{op}\"}} {}",
                h.count
            );
        }
        let counters = [
            (
                "s3mount_read_bytes_total",
                "Bytes of object bodies received.",
                &self.bytes_read,
            ),
            (
                "s3mount_written_bytes_total",
                "Bytes of request bodies sent.",
                &self.bytes_written,
            ),
            (
                "s3mount_page_cache_hits_total",
                "Reads served from the page cache.",
                &self.page_cache_hits,
            ),
            (
                "s3mount_page_cache_misses_total",
                "Reads the page cache could not serve.",
                &self.page_cache_misses,
            ),
        ];
        for (name, help, v) in counters {
            let _ = writeln!(
                o,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                v.load(Ordering::Relaxed)
            );
        }
        for (name, help, v) in gauges {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        }
        o
    }
}

/// Serves `GET /metrics` on `listener` until the process ends; `gauges` is asked at each
/// scrape.
pub async fn serve(
    listener: tokio::net::TcpListener,
    gauges: impl Fn() -> Vec<(&'static str, &'static str, u64)> + Send + Sync + 'static,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let gauges = std::sync::Arc::new(gauges);
    while let Ok((mut conn, _)) = listener.accept().await {
        let gauges = gauges.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let mut got = 0;
            while got < buf.len() {
                match tokio::time::timeout(Duration::from_secs(5), conn.read(&mut buf[got..])).await
                {
                    Ok(Ok(0)) | Err(_) | Ok(Err(_)) => return,
                    Ok(Ok(n)) => got += n,
                }
                if buf[..got].windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
            let head = String::from_utf8_lossy(&buf[..got]);
            let path = head.split_whitespace().nth(1).unwrap_or("");
            let (status, body) = if head.starts_with("GET ") && (path == "/metrics" || path == "/")
            {
                ("200 OK", global().render(&gauges()))
            } else {
                ("404 Not Found", "GET /metrics\n".to_string())
            };
            let answer = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = conn.write_all(answer.as_bytes()).await;
            let _ = conn.shutdown().await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_from_requests() {
        assert_eq!(
            operation("GET", "list-type=2&prefix=a%2F", false),
            "ListObjects"
        );
        assert_eq!(operation("GET", "", false), "GetObject");
        assert_eq!(
            operation("PUT", "partNumber=1&uploadId=x", false),
            "UploadPart"
        );
        assert_eq!(operation("PUT", "", true), "CopyObject");
        assert_eq!(operation("POST", "uploads", false), "CreateMultipartUpload");
        assert_eq!(
            operation("POST", "uploadId=x", false),
            "CompleteMultipartUpload"
        );
        assert_eq!(
            operation("DELETE", "uploadId=x", false),
            "AbortMultipartUpload"
        );
        let m = Metrics::default();
        m.request("GetObject", Some(200), Duration::from_millis(3));
        m.request("GetObject", None, Duration::from_secs(20));
        let text = m.render(&[("s3mount_inodes", "Inodes held.", 7)]);
        assert!(text.contains("s3mount_requests_total{op=\"GetObject\",status=\"200\"} 1"));
        assert!(text.contains("s3mount_requests_total{op=\"GetObject\",status=\"error\"} 1"));
        assert!(text.contains("s3mount_request_seconds_bucket{op=\"GetObject\",le=\"0.005\"} 1"));
        assert!(text.contains("s3mount_request_seconds_count{op=\"GetObject\"} 2"));
        assert!(text.contains("s3mount_inodes 7"));
    }
}
