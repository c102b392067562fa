//! The `tend` binary: parse the command line, run it, exit with its code.

use clap::Parser;

fn main() -> std::process::ExitCode {
    std::process::ExitCode::from(tend::app::run(tend::cli::Cli::parse()))
}
