use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    // One TLS provider for the whole process, before any client is built (see docs/ARCHITECTURE.md).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = phananh::cli::Cli::parse();
    phananh::commands::main(cli)
}
