//! The `framewatch` binary: parse arguments, run, map errors to an exit code. Nothing else lives here.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = framewatch::cli::Cli::parse();
    // Logs go to stderr, coloured only on a terminal; RUST_LOG=debug (or framewatch=debug) for more.
    let logs = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()));
    match cli.log_format() {
        framewatch::config::LogFormat::Json => logs.json().init(),
        framewatch::config::LogFormat::Text => logs.init(),
    }
    match framewatch::cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
