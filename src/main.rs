//! The `tend` binary: parse the command line, run it, exit with its code.

use std::process::ExitCode;

fn main() -> ExitCode {
    // The log writer of a `--log-timestamps` service: a mode of this binary that tend
    // starts with exactly `tend log-writer ...`, kept out of the command line's
    // subcommands (and so out of help, completions and man pages): not for people.
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == tend::logwriter::MODE) {
        return ExitCode::from(tend::logwriter::main(&args[2..]));
    }
    match tend::cli::Cli::parse_args() {
        Ok(cli) => ExitCode::from(tend::app::run(cli)),
        Err(e) => ExitCode::from(tend::app::usage_error(&e)),
    }
}
