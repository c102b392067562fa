//! The `tend` binary: parse the command line, run it, exit with its code.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    match tend::cli::Cli::try_parse() {
        Ok(cli) => ExitCode::from(tend::app::run(cli)),
        Err(e) => ExitCode::from(tend::app::usage_error(&e)),
    }
}
