//! Entry point: parse, dispatch, print one-line errors with an exit code.

use clap::Parser;
use s3mount::cli::{Cli, Command};
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let res = match cli.command {
        Some(Command::Serve(args)) => s3mount::server::serve_main(args),
        Some(Command::Check(args)) => s3mount::check::check_main(args),
        None => s3mount::run::mount_main(cli.mount),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("s3mount: error: {msg}");
            ExitCode::FAILURE
        }
    }
}
