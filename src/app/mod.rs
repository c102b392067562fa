//! The command line's side of tend: turns a parsed command line into calls and output,
//! one file per family of commands, as the daemon has one room per concern.
//!
//! - [`definitions`]: `add`, `edit`, `remove`;
//! - [`lifecycle`]: `start`, `stop`, `restart`, `signal` (through the daemon when one
//!   runs);
//! - [`view`]: `list`, `status`, `logs`, `events`;
//! - [`daemon`]: `daemon` and its subcommands;
//! - [`settings`]: `config`, `notify`;
//! - [`doctor`]: `doctor`; [`extras`]: `completions`, `man`;
//! - [`output`]: tables and the stable `--json` shapes; [`session`]: what they share.

pub mod apply;
pub mod daemon;
pub mod definitions;
pub mod doctor;
pub mod extras;
pub mod fleet;
pub mod import;
pub mod lifecycle;
pub mod output;
pub mod session;
pub mod settings;
pub mod term;
pub mod view;

use std::io::{self, Write};

use crate::api::Verb;
use crate::cli::{Cli, Command};
use crate::error::exit;
use crate::home::Home;
use session::{report, Failure, Session};

/// Runs one command. Errors are printed as one line on stderr; the return value is the
/// process exit code (see the README). A command given `--json` that fails also prints
/// `{"error": {"message": ..., "code": N}}` on stdout, so a JSON reader always gets JSON.
pub fn run(cli: Cli) -> u8 {
    let stdout = io::stdout();
    let mut out = stdout.lock();
    let mut s = Session::new();
    let json = wants_json(&cli.command);
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
            if json {
                let _ =
                    output::json(&mut out, &output::ErrorJson::new(&e)).and_then(|()| out.flush());
            }
            e.exit_code()
        }
    }
}

fn wants_json(c: &Command) -> bool {
    use crate::cli::{ConfigAction, DaemonAction};
    match c {
        Command::List { out } | Command::Status { out, .. } | Command::Events { out, .. } => {
            out.json
        }
        Command::Doctor { json } => *json,
        Command::Config {
            action: ConfigAction::List { json },
        } => *json,
        Command::Daemon(d) => matches!(d.action, Some(DaemonAction::Status { json: true })),
        _ => false,
    }
}

/// Reports a command-line parse error as clap renders it (what is missing, "a similar
/// subcommand exists", the usage line), on one line with `tend:` in place of clap's
/// `error:` (exit 2);
/// `--help` and `--version` print as clap renders them (exit 0).
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
    eprintln!("tend: {}", one_line(&e.render().to_string()));
    exit::USAGE
}

/// clap's rendering on one line: the problem with what is missing, then its tips and
/// the usage, separated by `; ` (`--help` text and blank lines left out).
fn one_line(rendered: &str) -> String {
    let mut head = String::new();
    let mut rest: Vec<String> = Vec::new();
    for line in rendered.lines() {
        let l = line.trim();
        if l.is_empty() || l.starts_with("For more information") {
            continue;
        }
        if head.is_empty() {
            head = l.strip_prefix("error: ").unwrap_or(l).to_string();
        } else if let Some(usage) = l.strip_prefix("Usage: ") {
            rest.push(format!("usage: {usage}"));
        } else if line.starts_with("  ") && !l.starts_with("tip:") && rest.is_empty() {
            // The missing arguments, one per indented line under the head.
            let sep = if head.ends_with(':') { " " } else { ", " };
            head.push_str(sep);
            head.push_str(l);
        } else {
            rest.push(l.to_string());
        }
    }
    if head.is_empty() {
        head = "invalid arguments".into();
    }
    std::iter::once(head)
        .chain(rest)
        .collect::<Vec<_>>()
        .join("; ")
}

fn dispatch(s: &mut Session, cli: Cli, out: &mut dyn Write) -> Result<(), Failure> {
    // Commands that need no state home.
    match &cli.command {
        Command::Completions { shell } => return extras::completions(*shell, out),
        Command::Man { dir } => return extras::man(dir.as_deref(), out),
        _ => {}
    }
    let home = Home::resolve(cli.home.as_deref(), cli.home_from_env)?;
    let home = &home;
    match cli.command {
        Command::Add(a) => definitions::add(home, a, out),
        Command::Edit(a) => definitions::edit(home, a, out),
        Command::Remove {
            names,
            stop,
            keep_logs,
        } => definitions::remove(s, home, names, stop, keep_logs, out),
        Command::List { out: how } => view::list(home, how, out),
        Command::Status { name, out: how } => view::status(s, home, &name, how, out),
        Command::Logs {
            name,
            lines,
            follow,
        } => view::logs(home, &name, lines, follow, out),
        Command::Events {
            name,
            lines,
            out: how,
        } => view::events(home, name.as_deref(), lines, how, out),
        Command::Apply(a) => apply::apply(s, home, a, out),
        Command::Export { names } => apply::export(home, names, out),
        Command::Import { path } => import::import(&path, out),
        Command::Start(a) => lifecycle::start(s, home, a, out),
        Command::Stop(w) => lifecycle::act(s, home, Verb::Stop, w, out),
        Command::Restart(w) => lifecycle::act(s, home, Verb::Restart, w, out),
        Command::Signal { signal, which } => {
            let signal = lifecycle::parse_signal(&signal)?;
            lifecycle::act(s, home, Verb::Signal { signal }, which, out)
        }
        Command::Daemon(args) => daemon::run(s, home, args, out),
        Command::Notify(args) => settings::notify(home, args, out),
        Command::Config { action } => settings::config(home, action, out),
        Command::Doctor { json } => doctor::run(s, home, json, out),
        Command::Fleet(args) => fleet::run(s, home, args, out),
        Command::Completions { .. } | Command::Man { .. } => unreachable!("handled above"),
    }
}

#[cfg(test)]
mod tests {
    use super::one_line;

    #[test]
    fn clap_errors_on_one_line() {
        let missing = "error: the following required arguments were not provided:\n  <NAME>\n  \
                       <SIGNAL>\n\nUsage: tend add <NAME>\n\nFor more information, try '--help'.\n";
        assert_eq!(
            one_line(missing),
            "the following required arguments were not provided: <NAME>, <SIGNAL>; usage: \
             tend add <NAME>"
        );
        let typo = "error: unrecognized subcommand 'lsit'\n\n  tip: a similar subcommand \
                    exists: 'list'\n\nUsage: tend [OPTIONS] <COMMAND>\n";
        assert_eq!(
            one_line(typo),
            "unrecognized subcommand 'lsit'; tip: a similar subcommand exists: 'list'; usage: \
             tend [OPTIONS] <COMMAND>"
        );
    }
}
