//! The HTTP(S) client under the SDK: one hyper client over rustls for every profile.
//!
//! Why not the SDK's default client: its connection pool keeps every connection it ever opened
//! until the idle timeout (a burst of 200 lookups left 400 idle connections and ~50 MiB of
//! their buffers in the daemon), and its trust store cannot pin a certificate. Here:
//!
//! - the pool keeps at most [`POOL_IDLE_PER_HOST`] idle connections;
//! - trust: the system's roots, plus the certificates of `ca_bundle` (or `AWS_CA_BUNDLE`), as
//!   the AWS CLI and boto do for private CAs. A bundle certificate presented as the server's
//!   own certificate is trusted as is (still checked for the host name): that is what a
//!   self-signed certificate made by `openssl req -x509` (CA:TRUE) needs, which webpki alone
//!   refuses as "a CA used as an end entity";
//! - `verify_tls = false`: any certificate is accepted (the handshake's signatures are still
//!   checked, so the channel is encrypted, but the server is not authenticated).

use aws_smithy_runtime_api::client::connection::{CaptureSmithyConnection, ConnectionMetadata};
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
    SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::retry::ErrorKind;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector as TcpConnector;
use hyper_util::client::legacy::connect::capture_connection;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Idle connections kept per server: enough for the mount's parallel parts and prefetch (16
/// parts in flight per reader, 8 upload slots), few enough that their buffers stay small.
pub const POOL_IDLE_PER_HOST: usize = 32;
/// Largest read buffer of a connection. Body chunks are slices of these buffers, so a part's
/// bytes keep whole buffers alive: hyper's default (~400 KiB) left parts holding up to twice
/// their size; 128 KiB costs no measurable throughput.
const READ_BUF_MAX: usize = 128 << 10;
/// How long an idle connection is kept.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// The client for these TLS settings.
pub fn client(
    verify_tls: bool,
    ca_bundle: Option<&Path>,
    connect_timeout: Duration,
) -> Result<Option<SharedHttpClient>, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier: Arc<dyn ServerCertVerifier> = if verify_tls {
        let pinned = match ca_bundle {
            Some(path) => read_bundle(path)?,
            None => Vec::new(),
        };
        let mut roots = RootCertStore::empty();
        roots.add_parsable_certificates(native_roots().iter().cloned());
        roots.add_parsable_certificates(pinned.iter().cloned());
        let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .map_err(|e| match ca_bundle {
                Some(p) => format!("cannot use the CA bundle {}: {e}", p.display()),
                None => format!("no trusted root certificates on this system ({e}); set ca_bundle / AWS_CA_BUNDLE"),
            })?;
        Arc::new(Trusting { webpki, pinned })
    } else {
        Arc::new(AcceptAny(provider.clone()))
    };
    Ok(Some(SharedHttpClient::new(Hyper::new(
        provider,
        verifier,
        connect_timeout,
    ))))
}

/// The system's root certificates, read once per process.
fn native_roots() -> &'static [CertificateDer<'static>] {
    static ROOTS: OnceLock<Vec<CertificateDer<'static>>> = OnceLock::new();
    ROOTS.get_or_init(|| rustls_native_certs::load_native_certs().certs)
}

fn read_bundle(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = std::fs::read(path).map_err(|e| {
        format!(
            "cannot read the CA bundle {}: {e}; fix ca_bundle / AWS_CA_BUNDLE",
            path.display()
        )
    })?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("the CA bundle {} is not valid PEM ({e}); point ca_bundle / AWS_CA_BUNDLE at a PEM file", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "the CA bundle {} holds no PEM certificate; point ca_bundle / AWS_CA_BUNDLE at a PEM file",
            path.display()
        ));
    }
    Ok(certs)
}

/// The hyper client, with the verifier the profile asks for.
#[derive(Clone, Debug)]
struct Hyper {
    client: Client<hyper_rustls::HttpsConnector<TcpConnector>, SdkBody>,
}

impl Hyper {
    fn new(
        provider: Arc<CryptoProvider>,
        verifier: Arc<dyn ServerCertVerifier>,
        connect_timeout: Duration,
    ) -> Self {
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("aws-lc-rs supports the default TLS versions")
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        let mut tcp = TcpConnector::new();
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(Some(connect_timeout));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(config)
            .https_or_http()
            .enable_http1()
            .wrap_connector(tcp);
        let client = Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .pool_max_idle_per_host(POOL_IDLE_PER_HOST)
            .http1_max_buf_size(READ_BUF_MAX)
            .build(https);
        Self { client }
    }
}

impl HttpConnector for Hyper {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let client = self.client.clone();
        HttpConnectorFuture::new(async move {
            let mut request = request
                .try_into_http1x()
                .map_err(|e| ConnectorError::user(e.into()))?;
            // Lets the SDK poison (not reuse) a connection whose request timed out.
            let captured = capture_connection(&mut request);
            if let Some(smithy) = request.extensions().get::<CaptureSmithyConnection>() {
                smithy.set_connection_retriever(move || {
                    captured.connection_metadata().as_ref()?;
                    let captured = captured.clone();
                    Some(
                        ConnectionMetadata::builder()
                            .proxied(false)
                            .poison_fn(move || {
                                if let Some(c) = captured.connection_metadata().as_ref() {
                                    c.poison();
                                }
                            })
                            .build(),
                    )
                });
            }
            let op = crate::metrics::operation(
                request.method().as_str(),
                request.uri().query().unwrap_or(""),
                request.headers().contains_key("x-amz-copy-source"),
            );
            let sent = request
                .headers()
                .get("content-length")
                .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
                .unwrap_or(0);
            let started = std::time::Instant::now();
            let m = crate::metrics::global();
            let response = match client.request(request).await {
                Ok(r) => r,
                Err(e) => {
                    m.request(op, None, started.elapsed());
                    return Err(classify(e));
                }
            };
            m.request(op, Some(response.status().as_u16()), started.elapsed());
            m.bytes_written
                .fetch_add(sent, std::sync::atomic::Ordering::Relaxed);
            if op == "GetObject" {
                let got = response
                    .headers()
                    .get("content-length")
                    .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
                    .unwrap_or(0);
                m.bytes_read
                    .fetch_add(got, std::sync::atomic::Ordering::Relaxed);
            }
            HttpResponse::try_from(response.map(SdkBody::from_body_1_x))
                .map_err(|e| ConnectorError::other(e.into(), None))
        })
    }
}

/// What kind of failure a hyper error is, for the SDK's retry decision: a connection that
/// could not be made, was reset or closed, or broke off mid-answer is transient (retried);
/// a request the client itself refused is not.
fn classify(e: hyper_util::client::legacy::Error) -> ConnectorError {
    let connect = e.is_connect();
    let boxed: Box<dyn std::error::Error + Send + Sync> = Box::new(e);
    let mut hyper_err = None;
    let mut io_err = false;
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(boxed.as_ref());
    while let Some(err) = next {
        if let Some(h) = err.downcast_ref::<hyper::Error>() {
            hyper_err.get_or_insert(h);
        }
        io_err |= err.is::<std::io::Error>();
        next = err.source();
    }
    let (timeout, user, transient, incomplete) = match hyper_err {
        Some(h) => (
            h.is_timeout(),
            h.is_user(),
            h.is_closed() || h.is_canceled(),
            h.is_incomplete_message(),
        ),
        None => (false, false, false, false),
    };
    if timeout {
        ConnectorError::timeout(boxed)
    } else if user {
        ConnectorError::user(boxed)
    } else if connect || transient || io_err {
        ConnectorError::io(boxed)
    } else if incomplete {
        ConnectorError::other(boxed, Some(ErrorKind::TransientError))
    } else {
        ConnectorError::other(boxed, None)
    }
}

impl HttpClient for Hyper {
    fn http_connector(
        &self,
        _settings: &HttpConnectorSettings,
        _components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        SharedHttpConnector::new(self.clone())
    }
}

/// The system's roots and the bundle's CAs (webpki), and the bundle's certificates pinned: a
/// server presenting one of them exactly is trusted for the names it carries.
#[derive(Debug)]
struct Trusting {
    webpki: Arc<WebPkiServerVerifier>,
    pinned: Vec<CertificateDer<'static>>,
}

impl ServerCertVerifier for Trusting {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self
            .pinned
            .iter()
            .any(|c| c.as_ref() == end_entity.as_ref())
        {
            let parsed = rustls::server::ParsedCertificate::try_from(end_entity)?;
            rustls::client::verify_server_name(&parsed, server_name)?;
            return Ok(ServerCertVerified::assertion());
        }
        self.webpki
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// Accepts every certificate; still verifies the handshake signatures with the provider.
#[derive(Debug)]
struct AcceptAny(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
