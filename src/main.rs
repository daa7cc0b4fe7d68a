//! Entry point: parse, dispatch, print one-line errors, and decide the exit code. The codes are
//! listed in docs/troubleshooting.md; clap answers bad usage itself with 2.

use clap::Parser;
use s3mount::cli::{Cli, Command};
use s3mount::run::MountError;
use s3mount::server::ServeError;
use std::process::ExitCode;

/// Exit codes: 1 anything else, 2 bad usage or configuration, 3 the mount point, 4 the store
/// (unreachable, credentials refused, bucket missing), 5 FUSE (cannot mount), 6 a resource of
/// `serve` (directory, address).
fn mount_code(e: &MountError) -> u8 {
    match e {
        MountError::Config(_) => 2,
        MountError::Mountpoint(_) => 3,
        MountError::Store(_) => 4,
        MountError::Fuse(_) => 5,
        MountError::System(_) => 1,
    }
}

fn serve_code(e: &ServeError) -> u8 {
    match e {
        ServeError::Usage(_) => 2,
        ServeError::Resource(_) => 6,
        ServeError::System(_) => 1,
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let res = match cli.command {
        Some(Command::Serve(args)) => {
            s3mount::server::serve_main(args).map_err(|e| (e.to_string(), serve_code(&e)))
        }
        Some(Command::Check(args)) => {
            s3mount::check::check_main(args).map_err(|e| (e.to_string(), mount_code(&e)))
        }
        Some(Command::Recover(args)) => {
            s3mount::recover::recover_main(args).map_err(|e| (e.to_string(), mount_code(&e)))
        }
        None => s3mount::run::mount_main(cli.mount).map_err(|e| (e.to_string(), mount_code(&e))),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err((msg, code)) => {
            eprintln!("s3mount: error: {msg}");
            ExitCode::from(code)
        }
    }
}
