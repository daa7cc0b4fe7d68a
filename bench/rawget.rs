//! Raw S3 reference client for the benchmarks: the same SDK and server as the mount, no FUSE.
//! Endpoint and keys from BENCH_ENDPOINT, BENCH_ACCESS_KEY, BENCH_SECRET_KEY, BENCH_BUCKET.
//!
//! rawget populate-big KEY MIB | put-multipart KEY MIB PART_MIB CONC | populate-many PREFIX N |
//!        get-single KEY | get-parallel KEY PART_MIB CONC | random KEY N BYTES CONC | list PREFIX
//! Prints one line: `<what> seconds=<s> mib_s=<MiB/s> ops_s=<ops/s>`.

use aws_sdk_s3::Client;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::primitives::ByteStream;
use futures::StreamExt;
use std::time::Instant;

fn client() -> (Client, String) {
    let env = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("{k} not set"));
    let conf = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(env("BENCH_ENDPOINT"))
        .force_path_style(true)
        .credentials_provider(Credentials::new(
            env("BENCH_ACCESS_KEY"),
            env("BENCH_SECRET_KEY"),
            None,
            None,
            "bench",
        ))
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
        .build();
    (Client::from_conf(conf), env("BENCH_BUCKET"))
}

async fn size_of(c: &Client, b: &str, key: &str) -> u64 {
    c.head_object()
        .bucket(b)
        .key(key)
        .send()
        .await
        .unwrap()
        .content_length()
        .unwrap() as u64
}

async fn get(c: &Client, b: &str, key: &str, range: Option<String>) -> u64 {
    let out = c
        .get_object()
        .bucket(b)
        .key(key)
        .set_range(range)
        .send()
        .await
        .unwrap();
    let mut body = out.body;
    let mut n = 0u64;
    let mut chunks = 0u64;
    while let Some(chunk) = body.next().await {
        n += chunk.unwrap().len() as u64;
        chunks += 1;
    }
    if std::env::var_os("RAWGET_CHUNKS").is_some() {
        eprintln!("{chunks} chunks, {} bytes average", n / chunks.max(1));
    }
    n
}

fn report(what: &str, start: Instant, bytes: u64, ops: u64) {
    let s = start.elapsed().as_secs_f64();
    println!(
        "{what} seconds={s:.3} mib_s={:.1} ops_s={:.1}",
        bytes as f64 / (1 << 20) as f64 / s,
        ops as f64 / s
    );
}

/// A temp file of `mib` MiB of pseudo-random (incompressible) bytes.
fn random_file(mib: usize) -> std::path::PathBuf {
    use std::io::Write;
    let path = std::env::temp_dir().join(format!("rawget-{}", std::process::id()));
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    let mut x: u64 = 0x2545F4914F6CDD1D;
    let mut buf = vec![0u8; 1 << 20];
    for _ in 0..mib {
        for ch in buf.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ch.copy_from_slice(&x.to_le_bytes());
        }
        f.write_all(&buf).unwrap();
    }
    path
}

/// One multipart upload of the file at `path`: parts of `part` bytes, `conc` in flight, each
/// read from the file just before it is sent.
async fn put_multipart(
    c: &Client,
    b: &str,
    key: &str,
    path: &std::path::Path,
    part: u64,
    conc: usize,
) {
    use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
    use std::os::unix::fs::FileExt;
    let len = std::fs::metadata(path).unwrap().len();
    let file = std::sync::Arc::new(std::fs::File::open(path).unwrap());
    let id = c
        .create_multipart_upload()
        .bucket(b)
        .key(key)
        .send()
        .await
        .unwrap()
        .upload_id
        .unwrap();
    let parts: Vec<CompletedPart> = futures::stream::iter(0..len.div_ceil(part))
        .map(|i| {
            let (file, id) = (file.clone(), id.clone());
            async move {
                let n = part.min(len - i * part) as usize;
                let mut buf = vec![0u8; n];
                file.read_exact_at(&mut buf, i * part).unwrap();
                let out = c
                    .upload_part()
                    .bucket(b)
                    .key(key)
                    .upload_id(id)
                    .part_number(i as i32 + 1)
                    .body(ByteStream::from(buf))
                    .customize()
                    .disable_payload_signing()
                    .send()
                    .await
                    .unwrap();
                CompletedPart::builder()
                    .part_number(i as i32 + 1)
                    .set_e_tag(out.e_tag)
                    .build()
            }
        })
        .buffered(conc)
        .collect()
        .await;
    let t = Instant::now();
    c.complete_multipart_upload()
        .bucket(b)
        .key(key)
        .upload_id(id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(parts))
                .build(),
        )
        .send()
        .await
        .unwrap();
    if std::env::var_os("RAWGET_TIMES").is_some() {
        eprintln!("complete took {:.3}s", t.elapsed().as_secs_f64());
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (c, b) = client();
    let a = |i: usize| args[i].clone();
    match args[0].as_str() {
        "populate-big" => {
            let mib: usize = a(2).parse().unwrap();
            // Pseudo-random, incompressible, written by one PUT from a temp file.
            let path = random_file(mib);
            let start = Instant::now();
            let body = ByteStream::from_path(&path).await.unwrap();
            c.put_object()
                .bucket(&b)
                .key(a(1))
                .body(body)
                .send()
                .await
                .unwrap();
            report("put", start, (mib as u64) << 20, 1);
            std::fs::remove_file(path).unwrap();
        }
        "put-multipart" => {
            let mib: usize = a(2).parse().unwrap();
            let part = a(3).parse::<u64>().unwrap() << 20;
            let conc: usize = a(4).parse().unwrap();
            let path = random_file(mib);
            let start = Instant::now();
            put_multipart(&c, &b, &a(1), &path, part, conc).await;
            report("put-multipart", start, (mib as u64) << 20, 1);
            std::fs::remove_file(path).unwrap();
        }
        "populate-many" => {
            let n: usize = a(2).parse().unwrap();
            let prefix = a(1);
            let start = Instant::now();
            futures::stream::iter((0..n).map(|i| {
                let c = c.clone();
                let b = b.clone();
                let key = format!("{prefix}file-{i:06}");
                async move {
                    c.put_object()
                        .bucket(b)
                        .key(key)
                        .body(ByteStream::from_static(b"x"))
                        .send()
                        .await
                        .unwrap();
                }
            }))
            .buffer_unordered(32)
            .collect::<Vec<_>>()
            .await;
            report("populate", start, n as u64, n as u64);
        }
        "get-single" => {
            let start = Instant::now();
            let n = get(&c, &b, &a(1), None).await;
            report("get-single", start, n, 1);
        }
        "get-parallel" => {
            let key = a(1);
            let part: u64 = a(2).parse::<u64>().unwrap() << 20;
            let conc: usize = a(3).parse().unwrap();
            let size = size_of(&c, &b, &key).await;
            let start = Instant::now();
            let total: u64 = futures::stream::iter((0..size.div_ceil(part)).map(|i| {
                let (c, b, key) = (c.clone(), b.clone(), key.clone());
                let s = i * part;
                let e = (s + part).min(size) - 1;
                async move { get(&c, &b, &key, Some(format!("bytes={s}-{e}"))).await }
            }))
            .buffered(conc)
            .fold(0, |acc, n| async move { acc + n })
            .await;
            report("get-parallel", start, total, size.div_ceil(part));
        }
        "random" => {
            let key = a(1);
            let n: u64 = a(2).parse().unwrap();
            let len: u64 = a(3).parse().unwrap();
            let conc: usize = a(4).parse().unwrap();
            let size = size_of(&c, &b, &key).await;
            let start = Instant::now();
            let total: u64 =
                futures::stream::iter(
                    (0..n).map(|i| {
                        let (c, b, key) = (c.clone(), b.clone(), key.clone());
                        let s = (i.wrapping_mul(0x9E3779B97F4A7C15) % (size - len)) / 4096 * 4096;
                        async move {
                            get(&c, &b, &key, Some(format!("bytes={s}-{}", s + len - 1))).await
                        }
                    }),
                )
                .buffer_unordered(conc)
                .fold(0, |acc, n| async move { acc + n })
                .await;
            report("random", start, total, n);
        }
        "list" => {
            let start = Instant::now();
            let mut token = None;
            let mut n = 0u64;
            let mut pages = 0u64;
            loop {
                let out = c
                    .list_objects_v2()
                    .bucket(&b)
                    .prefix(a(1))
                    .delimiter("/")
                    .set_continuation_token(token)
                    .send()
                    .await
                    .unwrap();
                n += out.contents().len() as u64;
                pages += 1;
                token = out.next_continuation_token().map(str::to_string);
                if token.is_none() {
                    break;
                }
            }
            report(&format!("list keys={n}"), start, 0, pages);
        }
        other => panic!("unknown command {other}"),
    }
}
