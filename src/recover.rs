//! `s3mount recover SOURCE`: uploads what mounts of SOURCE's bucket could not, from the cache
//! directory: pending uploads that killed mounts left in the journal, then the copies kept in
//! `recovered/`. Each line printed names a key; what stays is listed with its path and why.
//! `--list` uploads nothing. The rules are the mount's (fs/write/recover.rs): nothing replaces
//! an object that changed since, and half-written files stay, unless `--force`.

use crate::cli::RecoverArgs;
use crate::config::{ConfigError, resolve_mount};
use crate::fs::S3Fs;
use crate::run::{MountError, check_in_time};
use crate::store::sdk::SdkStore;
use std::sync::Arc;

pub fn recover_main(args: RecoverArgs) -> Result<(), MountError> {
    let cfg = resolve_mount(&args.to_mount_args(), &crate::config::Env::from_process())?;
    let store = SdkStore::new(&cfg.s3).map_err(|e| MountError::Config(ConfigError(e)))?;
    let rt = tokio::runtime::Runtime::new()
        .map_err(|e| MountError::System(format!("cannot start tokio: {e}")))?;
    let core = S3Fs::new(Arc::new(store), &cfg.prefix, cfg.fs.clone());
    rt.block_on(check_in_time(&cfg, core.check()))?;
    let io = |e: std::io::Error| {
        MountError::System(format!(
            "cannot read the cache directory {}: {e}",
            cfg.fs.cache_dir.display()
        ))
    };
    let mut uploaded = Vec::new();
    let mut kept = Vec::new();
    if !args.list {
        let r = rt.block_on(core.recover_pending()).map_err(io)?;
        uploaded.extend(r.uploaded);
    }
    let r = rt
        .block_on(core.recover_kept(args.list, args.force))
        .map_err(io)?;
    uploaded.extend(r.uploaded);
    kept.extend(r.kept);
    for k in &uploaded {
        println!("uploaded  {k}");
    }
    for (k, p, why) in &kept {
        println!("kept      {k}  {}  ({why})", p.display());
    }
    if uploaded.is_empty() && kept.is_empty() {
        println!(
            "nothing to recover for {} in {}",
            cfg.s3.bucket,
            cfg.fs.cache_dir.display()
        );
    }
    match (args.list, kept.len()) {
        (false, n) if n > 0 => Err(MountError::System(format!(
            "{n} file(s) stay in {}/recovered (reasons above); --force uploads them anyway",
            cfg.fs.cache_dir.display()
        ))),
        _ => Ok(()),
    }
}
