//! Writes what the Debian package ships besides the binaries, generated from the CLI
//! definitions so they never drift: the man pages `s3mount(1)` (and one page per subcommand)
//! and `mount.s3mount(8)`, and shell completions for bash, zsh and fish.
//!
//! Usage: cargo run --example gen_assets -- OUT_DIR

use clap::CommandFactory;
use std::path::Path;

fn main() -> std::io::Result<()> {
    let out = std::env::args().nth(1).expect("usage: gen_assets OUT_DIR");
    let out = Path::new(&out);
    let man = out.join("man");
    std::fs::create_dir_all(&man)?;
    let cmd = s3mount::cli::Cli::command().name("s3mount");
    clap_mangen::generate_to(cmd.clone(), &man)?;
    // mount.s3mount(8): the fstab helper's own usage.
    let helper = clap::Command::new("mount.s3mount")
        .about("mount helper for s3mount file systems in /etc/fstab")
        .long_about(
            "Called by mount(8) for fstab lines of type s3mount, e.g.\n\n\
             profile1:bucket /mnt/data s3mount _netdev,allow_other,uid=1000 0 0\n\n\
             It runs `s3mount SOURCE MOUNTPOINT -o OPTIONS`; mount(8)'s own flags (-s -f -n -v) \
             are dropped. Every s3mount -o option works in the options field; _netdev, \
             x-systemd.automount and the other x-* options are mount(8)'s and systemd's. \
             See s3mount(1).",
        )
        .arg(
            clap::Arg::new("SOURCE")
                .required(true)
                .help("profile:bucket[/prefix], as for s3mount"),
        )
        .arg(
            clap::Arg::new("MOUNTPOINT")
                .required(true)
                .help("an empty directory"),
        )
        .arg(
            clap::Arg::new("OPTIONS")
                .short('o')
                .help("comma-separated mount options, passed to s3mount -o"),
        );
    let mut buf = Vec::new();
    clap_mangen::Man::new(helper)
        .section("8")
        .render(&mut buf)?;
    std::fs::write(man.join("mount.s3mount.8"), buf)?;
    let comp = out.join("completions");
    std::fs::create_dir_all(&comp)?;
    for shell in [
        clap_complete::Shell::Bash,
        clap_complete::Shell::Zsh,
        clap_complete::Shell::Fish,
    ] {
        clap_complete::generate_to(shell, &mut cmd.clone(), "s3mount", &comp)?;
    }
    Ok(())
}
