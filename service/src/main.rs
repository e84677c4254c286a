//! The `framewatch` binary: parse arguments, run, map errors to an exit code. Nothing else lives here.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::fmt::writer::BoxMakeWriter;

fn main() -> ExitCode {
    let cli = framewatch::cli::Cli::parse();
    // Logs go to stderr, coloured only on a terminal; RUST_LOG=debug (or framewatch=debug) for more. A command
    // that draws on the terminal (the demo's screen) names a file instead, so no log line lands in its frame.
    let (writer, ansi) = match cli.log_file() {
        Some(path) => match std::fs::File::create(&path) {
            Ok(file) => (BoxMakeWriter::new(std::sync::Mutex::new(file)), false),
            Err(e) => {
                eprintln!("error: cannot create the log file {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
        },
        None => (BoxMakeWriter::new(std::io::stderr), std::io::stderr().is_terminal()),
    };
    let logs = tracing_subscriber::fmt()
        .with_writer(writer)
        .with_ansi(ansi)
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
