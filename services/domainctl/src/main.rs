//! `domainctl`: see the library for the commands.
#![forbid(unsafe_code)]

/// glibc malloc was a third of the profile under load (many small JSON allocations).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;
use std::io::{IsTerminal, Write};

#[tokio::main]
async fn main() {
    let cli = match domainctl::Cli::try_parse() {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    let progress = std::io::stderr().is_terminal();
    let out = domainctl::run(cli, progress).await;
    let _ = std::io::stdout().write_all(out.stdout.as_bytes());
    let _ = std::io::stderr().write_all(out.stderr.as_bytes());
    let _ = std::io::stdout().flush();
    std::process::exit(out.code);
}
