//! The `tend` binary: parse the command line, run it, exit with its code.
//!
//! `#![no_main]`: tend starts from the C `main` rather than through std's runtime start,
//! whose stack-overflow handler cost every command a parse of `/proc/self/maps`;
//! [`tend::process::startup::prepare`] does the parts of that start tend relies on.
//! `std::env::args` still works: on Linux std takes the arguments from glibc itself.

// Not under `cargo test`, which builds this file as a test program with a main of its own.
#![cfg_attr(not(test), no_main)]

#[cfg(not(test))]
#[no_mangle]
extern "C" fn main(
    _argc: std::ffi::c_int,
    _argv: *const *const std::ffi::c_char,
) -> std::ffi::c_int {
    tend::process::startup::prepare();
    // A panic ends the process with 101 after its message, as under std's own start
    // (unwinding out of this `extern "C"` function would abort instead).
    let code = std::panic::catch_unwind(run).unwrap_or(101);
    // Flushes stdout, as std's start does on return, then exits.
    std::process::exit(code.into())
}

#[cfg(not(test))]
fn run() -> u8 {
    // The log writer of a `--log-timestamps` service: a mode of this binary that tend
    // starts with exactly `tend log-writer ...`, kept out of the command line's
    // subcommands (and so out of help, completions and man pages): not for people.
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == tend::logwriter::MODE) {
        return tend::logwriter::main(&args[2..]);
    }
    match tend::cli::Cli::parse_args() {
        Ok(cli) => tend::app::run(cli),
        Err(e) => tend::app::usage_error(&e),
    }
}
