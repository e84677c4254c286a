//! The `framewatch` binary: parse arguments, run, map errors to an exit code. Nothing else lives here.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = framewatch::cli::Cli::parse();
    match framewatch::cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
