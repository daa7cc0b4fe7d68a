//! `s3mount serve`: an S3-compatible server on loopback, for trials, tests and benchmarks.
//!
//! s3s provides the protocol (routing, XML, SigV4/SigV2 signature checks); [`s3::Backend`] and
//! [`storage::Storage`] keep objects on disk under DIR. Buckets named with `--bucket` are created
//! at start; `--import LOCAL=BUCKET[/prefix]` copies a local tree in (skipping keys present).
//! `--emulate` refuses calls as small gateways do (`emulate.rs`).
//! `--tls-cert/--tls-key` serve HTTPS (PEM files), e.g. with a self-signed certificate.
//! The first line on stdout is `endpoint: http://ADDR` (or `https://`), so scripts and tests can read the port
//! when `--addr 127.0.0.1:0` picks a free one.

pub mod emulate;
pub mod multipart;
pub mod s3;
pub mod storage;

use crate::cli::ServeArgs;
use emulate::{Emulation, GatewayAccess, RequestLog};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use storage::{Meta, Storage};

pub const DEFAULT_ACCESS_KEY: &str = "s3mount";
pub const DEFAULT_SECRET_KEY: &str = "s3mount-secret";

/// A running server.
pub struct Running {
    pub addr: SocketAddr,
    pub task: tokio::task::JoinHandle<()>,
    /// Calls by operation, answered and refused.
    pub log: Arc<RequestLog>,
}

/// Binds `addr` and serves `storage` until the task is aborted, refusing what `emulation` says.
pub async fn start(
    storage: Arc<Storage>,
    addr: &str,
    access_key: &str,
    secret_key: &str,
    emulation: Emulation,
) -> std::io::Result<Running> {
    start_with_tls(storage, addr, access_key, secret_key, emulation, None).await
}

/// Reads a PEM certificate chain and private key into a TLS acceptor.
pub fn tls_acceptor(cert: &Path, key: &Path) -> Result<tokio_rustls::TlsAcceptor, String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("cannot read the certificate {}: {e}", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("cannot read the private key {}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(certs, key))
        .map_err(|e| format!("cannot use the certificate and key: {e}"))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// [`start`], serving HTTPS when `tls` is given.
pub async fn start_with_tls(
    storage: Arc<Storage>,
    addr: &str,
    access_key: &str,
    secret_key: &str,
    emulation: Emulation,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> std::io::Result<Running> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let log = Arc::new(RequestLog::default());
    let access = GatewayAccess {
        emulation: emulation.clone(),
        log: log.clone(),
    };
    let mut b = S3ServiceBuilder::new(s3::Backend::new(storage, emulation, log.clone()));
    b.set_auth(SimpleAuth::from_single(access_key, secret_key.to_string()));
    b.set_access(access);
    let service = b.build();
    let task = tokio::spawn(async move {
        let http = ConnBuilder::new(TokioExecutor::new());
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                continue;
            };
            let _ = socket.set_nodelay(true);
            let (http, service, tls) = (http.clone(), service.clone(), tls.clone());
            tokio::spawn(async move {
                match tls {
                    None => {
                        let _ = http.serve_connection(TokioIo::new(socket), service).await;
                    }
                    Some(tls) => {
                        // A client that rejects the certificate ends here.
                        if let Ok(stream) = tls.accept(socket).await {
                            let _ = http.serve_connection(TokioIo::new(stream), service).await;
                        }
                    }
                }
            });
        }
    });
    Ok(Running { addr, task, log })
}

/// Copies every regular file under `src` into `bucket` at `prefix + relative path`.
pub fn import_tree(
    storage: &Storage,
    src: &Path,
    bucket: &str,
    prefix: &str,
) -> std::io::Result<usize> {
    use md5::Digest;
    storage.create_bucket(bucket)?;
    let b = storage
        .bucket(bucket)
        .ok_or_else(|| std::io::Error::other("bucket vanished"))?;
    let mut count = 0;
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir)? {
            let e = e?;
            let ft = e.file_type()?;
            let path = e.path();
            if ft.is_dir() {
                stack.push(path);
                continue;
            }
            if !ft.is_file() {
                continue;
            }
            let rel = path
                .strip_prefix(src)
                .unwrap_or(&path)
                .to_string_lossy()
                .to_string();
            let key = format!("{prefix}{rel}");
            if b.get(&key).is_some() {
                continue;
            }
            let data = b.new_data_name();
            let dest = b.data_dir().join(&data);
            std::fs::copy(&path, &dest)?;
            let mut md5 = md5::Md5::new();
            let mut f = std::fs::File::open(&dest)?;
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = std::io::Read::read(&mut f, &mut buf)?;
                if n == 0 {
                    break;
                }
                md5.update(&buf[..n]);
            }
            let size = std::fs::metadata(&dest)?.len();
            b.commit(Meta {
                key,
                size,
                etag: hex::encode(md5.finalize()),
                modified_ns: std::fs::metadata(&path)?
                    .modified()?
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_nanos() as u64,
                content_type: None,
                metadata: Default::default(),
                data,
            })?;
            count += 1;
        }
    }
    Ok(count)
}

/// Why `s3mount serve` failed; the kind decides the exit code (in `main.rs`).
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A bad argument: bucket name, `--import`, `--emulate`, TLS files.
    #[error("{0}")]
    Usage(String),
    /// The directory, an import, or the listening address.
    #[error("{0}")]
    Resource(String),
    /// This machine: threads, signals.
    #[error("{0}")]
    System(String),
}

pub fn serve_main(args: ServeArgs) -> Result<(), ServeError> {
    let level = match args.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level)),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let access_key = args
        .access_key
        .or_else(|| std::env::var("S3MOUNT_SERVE_ACCESS_KEY").ok())
        .unwrap_or_else(|| DEFAULT_ACCESS_KEY.into());
    let secret_key = args
        .secret_key
        .or_else(|| std::env::var("S3MOUNT_SERVE_SECRET_KEY").ok())
        .unwrap_or_else(|| DEFAULT_SECRET_KEY.into());
    let dir: PathBuf = match args.dir {
        Some(d) => d,
        None => {
            let d = std::env::temp_dir().join(format!("s3mount-serve-{}", std::process::id()));
            eprintln!("s3mount serve: storing objects in {}", d.display());
            d
        }
    };
    let storage = Storage::open(&dir).map_err(|e| {
        ServeError::Resource(format!(
            "cannot use {} as the server's directory: {e}",
            dir.display()
        ))
    })?;
    for b in &args.buckets {
        if !(3..=63).contains(&b.len()) {
            return Err(ServeError::Usage(format!(
                "bad bucket name '{b}': use 3 to 63 characters (it has {})",
                b.len()
            )));
        }
        if !storage::valid_bucket_name(b) {
            return Err(ServeError::Usage(format!(
                "bad bucket name '{b}': use letters, digits, '-', '.' or '_', not starting with '.'"
            )));
        }
        storage
            .create_bucket(b)
            .map_err(|e| ServeError::Resource(format!("cannot create bucket '{b}': {e}")))?;
    }
    for imp in &args.imports {
        let (src, dest) = imp.rsplit_once('=').ok_or_else(|| {
            ServeError::Usage(format!(
                "bad --import '{imp}': use LOCAL_DIR=BUCKET[/prefix]"
            ))
        })?;
        let (bucket, prefix) = dest.split_once('/').unwrap_or((dest, ""));
        let prefix = prefix.trim_matches('/');
        let prefix = if prefix.is_empty() {
            String::new()
        } else {
            format!("{prefix}/")
        };
        let n = import_tree(&storage, Path::new(src), bucket, &prefix)
            .map_err(|e| ServeError::Resource(format!("cannot import {src} into {bucket}: {e}")))?;
        eprintln!("s3mount serve: imported {n} files from {src} into {bucket}/{prefix}");
    }
    let spec = (args.emulate.clone()).or_else(|| std::env::var("S3MOUNT_SERVE_EMULATE").ok());
    let emulation = Emulation::parse(spec.as_deref().unwrap_or("")).map_err(ServeError::Usage)?;
    if !emulation.missing().is_empty() {
        eprintln!(
            "s3mount serve: emulating a gateway without {}",
            emulation.missing().join(", ")
        );
    }
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(c), Some(k)) => Some(tls_acceptor(c, k).map_err(ServeError::Usage)?),
        (None, None) => None,
        _ => {
            return Err(ServeError::Usage(
                "--tls-cert and --tls-key go together".into(),
            ));
        }
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let rt = tokio::runtime::Runtime::new()
        .map_err(|e| ServeError::System(format!("cannot start tokio: {e}")))?;
    rt.block_on(async move {
        let running = start_with_tls(
            Arc::new(storage),
            &args.addr,
            &access_key,
            &secret_key,
            emulation,
            tls,
        )
        .await
        .map_err(|e| {
            ServeError::Resource(format!(
                "cannot listen on {}: {e}; pick another --addr",
                args.addr
            ))
        })?;
        let mut out = std::io::stdout();
        let _ = writeln!(out, "endpoint: {scheme}://{}", running.addr);
        let _ = out.flush();
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(|e| ServeError::System(e.to_string()))?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            _ = term.recv() => {},
        }
        running.task.abort();
        Ok(())
    })
}
