//! The command line's side of tend: turns a parsed command line into calls and output,
//! one file per family of commands, as the daemon has one room per concern.
//!
//! - [`definitions`]: `add`, `edit`, `remove`;
//! - [`lifecycle`]: `start`, `stop`, `restart`, `signal` (through the daemon when one
//!   runs);
//! - [`view`]: `list`, `status`, `logs`, `events`;
//! - [`daemon`]: `daemon` and its subcommands;
//! - [`settings`]: `config`, `notify`;
//! - [`output`]: tables and the stable `--json` shapes; [`session`]: what they share.

pub mod daemon;
pub mod definitions;
pub mod lifecycle;
pub mod output;
pub mod session;
pub mod settings;
pub mod view;

use std::io::{self, Write};

use crate::api::Verb;
use crate::cli::{Cli, Command};
use crate::error::exit;
use crate::home::Home;
use session::{report, Failure, Session};

/// Runs one command. Errors are printed as one line on stderr; the return value is the
/// process exit code (see the README).
pub fn run(cli: Cli) -> u8 {
    let stdout = io::stdout();
    let mut out = stdout.lock();
    let mut s = Session::new();
    let result =
        dispatch(&mut s, cli, &mut out).and_then(|()| out.flush().map_err(Failure::Output));
    match result {
        Ok(()) => s.code,
        // `tend list | head -1`: the reader is gone, which is not an error of ours.
        Err(Failure::Output(e)) if e.kind() == io::ErrorKind::BrokenPipe => s.code,
        Err(Failure::Output(e)) => {
            eprintln!("tend: writing output: {e}");
            exit::FAILED
        }
        Err(Failure::Tend(e)) => {
            report(&e);
            e.exit_code()
        }
    }
}

/// Reports a command-line parse error as one `tend:` line (exit 2); `--help` and
/// `--version` print as clap renders them (exit 0).
pub fn usage_error(e: &clap::Error) -> u8 {
    use clap::error::ErrorKind;
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        let _ = e.print();
        return exit::OK;
    }
    if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        let _ = e.print();
        return exit::USAGE;
    }
    let text = e.render().to_string();
    let first = text
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("invalid arguments")
        .trim_start_matches("error: ");
    eprintln!("tend: {first} (see `tend --help`)");
    exit::USAGE
}

fn dispatch(s: &mut Session, cli: Cli, out: &mut dyn Write) -> Result<(), Failure> {
    let home = Home::resolve(cli.home.as_deref())?;
    let home = &home;
    match cli.command {
        Command::Add(a) => definitions::add(home, a, out),
        Command::Edit(a) => definitions::edit(home, a, out),
        Command::Remove { names, stop } => definitions::remove(s, home, names, stop, out),
        Command::List { json } => view::list(home, json, out),
        Command::Status { name, json } => view::status(s, home, &name, json, out),
        Command::Logs {
            name,
            lines,
            follow,
        } => view::logs(home, &name, lines, follow, out),
        Command::Events { name, lines, json } => {
            view::events(home, name.as_deref(), lines, json, out)
        }
        Command::Start(w) => lifecycle::act(s, home, Verb::Start, w, out),
        Command::Stop(w) => lifecycle::act(s, home, Verb::Stop, w, out),
        Command::Restart(w) => lifecycle::act(s, home, Verb::Restart, w, out),
        Command::Signal { signal, which } => {
            let signal = lifecycle::parse_signal(&signal)?;
            lifecycle::act(s, home, Verb::Signal { signal }, which, out)
        }
        Command::Daemon(args) => daemon::run(s, home, args, out),
        Command::Notify(args) => settings::notify(home, args, out),
        Command::Config { action } => settings::config(home, action, out),
    }
}
