//! `s3mount check SOURCE`: resolves the profile as a mount would, checks the bucket (finding the
//! region and signature the server wants), probes each capability the mount adapts to, prints
//! one line per finding and exits. A failure is the same one-line cause and fix a mount prints.
//!
//! Write probes (CopyObject, multipart) put a 1-byte object `.s3mount-check-PID` under the
//! prefix, copy it, start and abort a multipart upload, and delete both objects; `--read-only`
//! skips them.

use crate::cli::CheckArgs;
use crate::config::ConfigError;
use crate::config::{Addressing, resolve_mount};
use crate::run::{MountError, check_in_time, explain_store_error};
use crate::store::sdk::SdkStore;
use crate::store::{Cap, ObjectStore, PutOptions, StoreError};
use bytes::Bytes;

pub fn check_main(args: CheckArgs) -> Result<(), MountError> {
    if args.verbose > 0 {
        let level = if args.verbose > 1 { "debug" } else { "info" };
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(format!(
                "s3mount={level},warn"
            )))
            .with_writer(std::io::stderr)
            .try_init();
    }
    let cfg = resolve_mount(&args.to_mount_args(), &crate::config::Env::from_process())?;
    let s3 = &cfg.s3;
    let store = SdkStore::new(s3).map_err(|e| MountError::Config(ConfigError(e)))?;
    let rt = tokio::runtime::Runtime::new()
        .map_err(|e| MountError::System(format!("cannot start tokio: {e}")))?;
    rt.block_on(check_in_time(&cfg, store.check_bucket()))?;
    let row = |k: &str, v: &str| println!("{k:<15} {v}");
    row("profile", &s3.profile);
    row(
        "endpoint",
        s3.endpoint.as_deref().unwrap_or("AWS S3 (from the region)"),
    );
    let prefix = if cfg.prefix.is_empty() {
        String::new()
    } else {
        format!(" (prefix {})", cfg.prefix)
    };
    row("bucket", &format!("{}{prefix}: found", s3.bucket));
    let addressing = match (s3.addressing, s3.path_style()) {
        (Addressing::Auto, true) => "path (auto)",
        (Addressing::Auto, false) => "virtual-hosted (auto)",
        (_, true) => "path",
        (_, false) => "virtual-hosted",
    };
    row("addressing", addressing);
    let region = store.region();
    row(
        "region",
        &if region == s3.region {
            region
        } else {
            format!("{region} (the server's; the profile says {})", s3.region)
        },
    );
    let how = if s3.signature.is_some() {
        "set in the profile"
    } else {
        "detected"
    };
    let sig = if store.uses_sigv2() { "SigV2" } else { "SigV4" };
    row("signature", &format!("{sig} ({how})"));
    let tls = match (&s3.endpoint, s3.verify_tls, &s3.ca_bundle) {
        (Some(ep), _, _) if ep.starts_with("http://") => "none (http)".to_string(),
        (_, false, _) => "NOT verified (verify_tls = false)".to_string(),
        (_, true, Some(b)) => format!("verified (system roots + {})", b.display()),
        (_, true, None) => "verified (system roots)".to_string(),
    };
    row("tls", &tls);

    let yes_no = |v: Option<bool>, fallback: &str| match v {
        Some(true) => "yes".to_string(),
        Some(false) => format!("no: {fallback}"),
        None => "not probed".to_string(),
    };
    row(
        "HeadBucket",
        &yes_no(
            store.capability(Cap::HeadBucket),
            "the bucket check lists one key",
        ),
    );
    let listed = rt.block_on(store.list(&cfg.prefix, Some("/"), None, 1));
    listed.map_err(|e| MountError::Store(explain_store_error(&cfg, &e)))?;
    row(
        "ListObjectsV2",
        &yes_no(store.capability(Cap::ListV2), "ListObjects v1 with markers"),
    );
    if cfg.fs.read_only {
        row("writes", "not probed (--read-only)");
        return Ok(());
    }
    let (copy, multipart) = rt.block_on(probe_writes(&store, &cfg.prefix))?;
    row("writes", "yes (PutObject, DeleteObject)");
    row(
        "CopyObject",
        &yes_no(copy, "rename and metadata changes copy GET -> PUT"),
    );
    row(
        "multipart",
        &match (multipart, s3.multipart) {
            (_, Some(false)) => {
                "off (set in the profile): single PutObject, files up to 5 GiB".into()
            }
            (m, _) => yes_no(m, "single PutObject per file, files up to 5 GiB"),
        },
    );
    row(
        "checksums",
        "Content-MD5 on every body; no aws-chunked or x-amz-checksum-* sent",
    );
    Ok(())
}

/// Writes, copies and deletes a 1-byte object, and starts and aborts a multipart upload.
/// Returns (CopyObject present, multipart present).
async fn probe_writes(
    store: &SdkStore,
    prefix: &str,
) -> Result<(Option<bool>, Option<bool>), MountError> {
    let key = format!("{prefix}.s3mount-check-{}", std::process::id());
    let copy_key = format!("{key}-copy");
    let denied = |e: StoreError| {
        MountError::Store(match e {
        StoreError::AccessDenied { .. } => {
            "writes denied: the keys are read-only; mount with --read-only (or check with --read-only)".to_string()
        }
        e => format!("cannot write the probe object {key}: {e}"),
    })
    };
    store
        .put(&key, Bytes::from_static(b"x"), PutOptions::default())
        .await
        .map_err(denied)?;
    let copied = store.copy(&key, &copy_key, None).await;
    match store.create_multipart(&key, PutOptions::default()).await {
        Ok(id) => {
            let _ = store.abort_multipart(&key, &id).await;
        }
        Err(StoreError::NotImplemented(_)) => {}
        Err(e) => tracing::warn!("multipart probe failed: {e}"),
    }
    let multipart = store.capability(Cap::Multipart);
    let _ = store.delete(&copy_key).await;
    store
        .delete(&key)
        .await
        .map_err(|e| MountError::Store(format!("cannot delete the probe object {key}: {e}")))?;
    copied.map_err(|e| MountError::Store(format!("cannot copy the probe object {key}: {e}")))?;
    Ok((store.capability(Cap::Copy), multipart))
}
