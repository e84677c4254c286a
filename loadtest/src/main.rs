//! The `framewatch-loadtest` binary: parse, run, report errors. The work is in the library.

use clap::Parser;

fn main() -> anyhow::Result<()> {
    framewatch_loadtest::run(framewatch_loadtest::Cli::parse())
}
