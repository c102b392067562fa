//! The `tend` binary: parse the command line, run it, exit with its code.

use std::process::ExitCode;

fn main() -> ExitCode {
    match tend::cli::Cli::parse_args() {
        Ok(cli) => ExitCode::from(tend::app::run(cli)),
        Err(e) => ExitCode::from(tend::app::usage_error(&e)),
    }
}
