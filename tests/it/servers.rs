//! `s3mount check` and TLS against the embedded server: a self-signed certificate on loopback
//! fails by default with a one-line cause and fix, and works with a CA bundle (file, env, -o)
//! and with verification off.

use crate::common::*;
use std::path::Path;
use std::time::Duration;

/// An HTTPS embedded server with a fresh self-signed certificate for 127.0.0.1.
struct TlsServer {
    server: Emulated,
    cert: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl TlsServer {
    fn start() -> Self {
        let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()])
            .unwrap();
        Self::with_cert(ck.cert.pem(), ck.signing_key.serialize_pem())
    }

    /// A server whose certificate is its own CA (CA:TRUE), as `openssl req -x509` makes one.
    fn start_ca_as_server() -> Self {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params =
            rcgen::CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).unwrap();
        Self::with_cert(cert.pem(), key.serialize_pem())
    }

    fn with_cert(cert_pem: String, key_pem: String) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        std::fs::write(&cert, cert_pem).unwrap();
        std::fs::write(&key, key_pem).unwrap();
        let tls = s3mount::server::tls_acceptor(&cert, &key).unwrap();
        Self {
            server: Emulated::start_with_tls("", Some(tls)),
            cert,
            _dir: dir,
        }
    }
}

fn check(b: &Backend, home: &Path, args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let mut c = s3mount_cmd(b, home);
    c.arg("check").arg(&b.bucket).args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    let out = run_with_deadline(c, Duration::from_secs(60));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn self_signed_tls_fails_by_default_and_works_when_trusted() {
    let s = TlsServer::start();
    let home = tempfile::tempdir().unwrap();
    let cert = s.cert.to_str().unwrap();

    let (ok, _, err) = check(&s.server.backend, home.path(), &[], &[]);
    assert!(!ok, "an untrusted certificate must fail");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(err.contains("TLS certificate not trusted"), "{err}");
    assert!(
        err.contains("ca_bundle") && err.contains("verify_tls = false"),
        "{err}"
    );
    assert!(!err.contains(SECRET));

    let (ok, out, err) = check(
        &s.server.backend,
        home.path(),
        &[],
        &[("AWS_CA_BUNDLE", cert)],
    );
    assert!(ok, "AWS_CA_BUNDLE: {err}");
    assert!(
        out.contains(&format!("verified (system roots + {cert})")),
        "{out}"
    );

    let (ok, out, err) = check(&s.server.backend, home.path(), &["--no-verify-tls"], &[]);
    assert!(ok, "--no-verify-tls: {err}");
    assert!(out.contains("NOT verified"), "{out}");

    // The TOML profile's keys, as a user would write them.
    let toml = home.path().join(".config/s3mount/config.toml");
    std::fs::create_dir_all(toml.parent().unwrap()).unwrap();
    std::fs::write(&toml, "[profiles.default]\nverify_tls = false\n").unwrap();
    let (ok, _, err) = check(&s.server.backend, home.path(), &[], &[]);
    assert!(ok, "verify_tls = false in the profile: {err}");
    std::fs::write(
        &toml,
        format!("[profiles.default]\nca_bundle = \"{cert}\"\n"),
    )
    .unwrap();
    let (ok, _, err) = check(&s.server.backend, home.path(), &[], &[]);
    assert!(ok, "ca_bundle in the profile: {err}");
    std::fs::remove_file(&toml).unwrap();

    let (ok, _, err) = check(
        &s.server.backend,
        home.path(),
        &["--ca-bundle", "/nonexistent.pem"],
        &[],
    );
    assert!(
        !ok && err.contains("/nonexistent.pem") && err.contains("ca_bundle"),
        "{err}"
    );

    // A real mount over HTTPS with the bundle: write, remount, read.
    let opt = format!("ca_bundle={cert}");
    {
        let m = Mount::new(&s.server.backend, &s.server.backend.bucket, &["-o", &opt]);
        std::fs::write(m.join("over-tls"), b"encrypted in transit").unwrap();
    }
    let m = Mount::new(&s.server.backend, &s.server.backend.bucket, &["-o", &opt]);
    assert_eq!(
        std::fs::read(m.join("over-tls")).unwrap(),
        b"encrypted in transit"
    );
}

#[test]
fn check_reports_what_each_gateway_has() {
    let home = tempfile::tempdir().unwrap();
    let full = Emulated::start("");
    let (ok, out, err) = check(&full.backend, home.path(), &[], &[]);
    assert!(ok, "{err}");
    for line in [
        "signature       SigV4 (detected)",
        "HeadBucket      yes",
        "ListObjectsV2   yes",
        "CopyObject      yes",
        "multipart       yes",
    ] {
        assert!(out.contains(line), "{line} in:\n{out}");
    }
    let regional = Emulated::start("region=ap-south-1");
    let (ok, out, err) = check(&regional.backend, home.path(), &[], &[]);
    assert!(ok, "{err}");
    let line = "region          ap-south-1 (the server's; the profile says us-east-1)";
    assert!(out.contains(line), "{line} in:\n{out}");
    let seven = Emulated::start("seven-call,sigv2-only");
    let (ok, out, err) = check(&seven.backend, home.path(), &[], &[]);
    assert!(ok, "{err}");
    for line in [
        "signature       SigV2 (detected)",
        "HeadBucket      yes",
        "ListObjectsV2   no",
        "CopyObject      no",
        "multipart       no",
    ] {
        assert!(out.contains(line), "{line} in:\n{out}");
    }
    // The probe object is gone.
    assert!(
        block_on(s3mount::store::list_all(
            &s3mount::store::sdk::SdkStore::new(&{
                let mut s = settings(&seven.backend, &seven.backend.bucket);
                s.signature = Some(2);
                s
            })
            .unwrap(),
            ""
        ))
        .unwrap()
        .is_empty()
    );
    // --read-only probes nothing that writes.
    let (ok, out, _) = check(&full.backend, home.path(), &["--read-only"], &[]);
    assert!(ok && out.contains("not probed (--read-only)"), "{out}");
}

/// A self-signed certificate that is its own CA (CA:TRUE, what `openssl req -x509` makes), used
/// as the server's: trusted once it is in the CA bundle; untrusted without it, with a message
/// that says why. webpki alone refuses a CA as an end entity whatever the trust store holds.
#[test]
fn a_ca_true_self_signed_certificate_is_trusted_from_the_bundle() {
    let s = TlsServer::start_ca_as_server();
    let home = tempfile::tempdir().unwrap();
    let cert = s.cert.to_str().unwrap();
    let (ok, out, err) = check(&s.server.backend, home.path(), &["--ca-bundle", cert], &[]);
    assert!(ok, "trusted from the bundle: {out}{err}");
    let (ok, _, err) = check(&s.server.backend, home.path(), &[], &[]);
    assert!(!ok, "not trusted without the bundle");
    assert!(err.contains("TLS certificate not trusted"), "{err}");
    // Another certificate in the bundle does not make this one trusted.
    let other = TlsServer::start();
    let other_cert = other.cert.to_str().unwrap();
    let (ok, _, err) = check(
        &s.server.backend,
        home.path(),
        &["--ca-bundle", other_cert],
        &[],
    );
    assert!(!ok, "{err}");
    // Plain http to this HTTPS server: one line that says so, no Debug dump.
    let mut plain = s.server.backend.clone();
    plain.endpoint = plain.endpoint.replace("https://", "http://");
    let (ok, _, err) = check(&plain, home.path(), &[], &[]);
    assert!(!ok);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(!err.contains('}') && !err.contains("Unknown"), "{err}");
    assert!(err.contains("https://"), "names the likely fix: {err}");
}
