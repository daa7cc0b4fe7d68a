//! The HTTPS client under the SDK when the profile changes how the server's certificate is
//! checked.
//!
//! - Default: the SDK's own client (rustls, the system's roots).
//! - `ca_bundle` (or `AWS_CA_BUNDLE`): the SDK's client with the bundle's certificates trusted in
//!   addition to the system's, as the AWS CLI and boto do for private CAs.
//! - `verify_tls = false`: a hyper client over rustls that accepts any certificate (signatures of
//!   the handshake are still checked, so the channel is encrypted, but the server is not
//!   authenticated). The SDK's client has no such switch, hence this small connector.

use aws_smithy_http_client::tls::{self, TlsContext, TrustStore};
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
    SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector as TcpConnector;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// The client for these TLS settings; `None` keeps the SDK's default.
pub fn client(
    verify_tls: bool,
    ca_bundle: Option<&Path>,
    connect_timeout: Duration,
) -> Result<Option<SharedHttpClient>, String> {
    if !verify_tls {
        return Ok(Some(SharedHttpClient::new(Insecure::new(connect_timeout))));
    }
    let Some(path) = ca_bundle else {
        return Ok(None);
    };
    let pem = std::fs::read(path).map_err(|e| {
        format!(
            "cannot read the CA bundle {}: {e}; fix ca_bundle / AWS_CA_BUNDLE",
            path.display()
        )
    })?;
    if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
        return Err(format!(
            "the CA bundle {} holds no PEM certificate; point ca_bundle / AWS_CA_BUNDLE at a PEM file",
            path.display()
        ));
    }
    let ctx = TlsContext::builder()
        .with_trust_store(
            TrustStore::empty()
                .with_native_roots(true)
                .with_pem_certificate(pem),
        )
        .build()
        .map_err(|e| format!("cannot use the CA bundle {}: {e}", path.display()))?;
    Ok(Some(
        aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(
                tls::rustls_provider::CryptoMode::AwsLc,
            ))
            .tls_context(ctx)
            .build_https(),
    ))
}

/// HTTPS without authenticating the server (`verify_tls = false`); plain HTTP as usual.
#[derive(Clone, Debug)]
struct Insecure {
    client: Client<hyper_rustls::HttpsConnector<TcpConnector>, SdkBody>,
}

impl Insecure {
    fn new(connect_timeout: Duration) -> Self {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("aws-lc-rs supports the default TLS versions")
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
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
            .pool_idle_timeout(Duration::from_secs(90))
            .build(https);
        Self { client }
    }
}

impl HttpConnector for Insecure {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let client = self.client.clone();
        HttpConnectorFuture::new(async move {
            let request = request
                .try_into_http1x()
                .map_err(|e| ConnectorError::user(e.into()))?;
            let response = client.request(request).await.map_err(|e| {
                if e.is_connect() {
                    ConnectorError::io(e.into())
                } else {
                    ConnectorError::other(e.into(), None)
                }
            })?;
            HttpResponse::try_from(response.map(SdkBody::from_body_1_x))
                .map_err(|e| ConnectorError::other(e.into(), None))
        })
    }
}

impl HttpClient for Insecure {
    fn http_connector(
        &self,
        _settings: &HttpConnectorSettings,
        _components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        SharedHttpConnector::new(self.clone())
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
