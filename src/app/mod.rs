//! The command line's side of tend: turns a parsed command line into calls and output,
//! one file per family of commands, as the daemon has one room per concern.
//!
//! - [`definitions`]: `add`, `edit`, `remove`;
//! - [`lifecycle`]: `start`, `stop`, `restart`, `signal` (through the daemon when one
//!   runs);
//! - [`view`]: `list`, `status`, `events`, and `logs` for one service as written;
//! - [`logs`]: `logs` over several services, `--since`, `--json`;
//! - [`daemon`]: `daemon` and its subcommands;
//! - [`settings`]: `config`, `notify`;
//! - [`top`]: `top`, the live terminal view; [`up`]: `up`, a services file in the
//!   foreground (and as PID 1);
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
pub mod logs;
pub mod output;
pub mod session;
pub mod settings;
pub mod term;
pub mod top;
pub mod up;
pub mod view;

use std::io::{self, Write};

use crate::api::Verb;
use crate::cli::{Cli, Command, Lazy};
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
        Command::List(out) => out.json,
        Command::Status(a) => a.out.json,
        Command::Events(a) => a.out.json,
        Command::Doctor(a) => a.json,
        Command::Logs(a) => a.json,
        Command::Config(a) => matches!(a.action, ConfigAction::List { json: true }),
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
        Command::Completions(a) => return extras::completions(a.shell, out),
        Command::Man(a) => return extras::man(a.dir.as_deref(), out),
        _ => {}
    }
    // `up` derives a home of its own from its file unless one is given.
    let cli = match cli.command {
        Command::Up(Lazy(a)) => return up::run(s, cli.home.as_deref(), cli.home_from_env, a, out),
        command => Cli { command, ..cli },
    };
    let home = Home::resolve(cli.home.as_deref(), cli.home_from_env)?;
    let home = &home;
    match cli.command {
        Command::Add(Lazy(a)) => definitions::add(home, a, out),
        Command::Edit(Lazy(a)) => definitions::edit(home, a, out),
        Command::Remove(Lazy(a)) => definitions::remove(s, home, a.names, a.stop, a.keep_logs, out),
        Command::List(Lazy(how)) => view::list(home, how, out),
        Command::Status(Lazy(a)) => view::status(s, home, &a.name, a.out, out),
        Command::Logs(Lazy(a)) => logs::run(home, a, out),
        Command::Events(Lazy(a)) => view::events(home, a.name.as_deref(), a.lines, a.out, out),
        Command::Metrics(_) => view::metrics(home, out),
        Command::Apply(Lazy(a)) => apply::apply(s, home, a, out),
        Command::Export(Lazy(a)) => apply::export(home, a.names, out),
        Command::Import(Lazy(a)) => import::import(&a.path, out),
        Command::Start(Lazy(a)) => lifecycle::start(s, home, a, out),
        Command::Stop(Lazy(w)) => lifecycle::act(s, home, Verb::Stop, w, out),
        Command::Restart(Lazy(w)) => lifecycle::act(s, home, Verb::Restart, w, out),
        Command::Signal(Lazy(a)) => {
            let signal = lifecycle::parse_signal(&a.signal)?;
            lifecycle::act(s, home, Verb::Signal { signal }, a.which, out)
        }
        Command::Daemon(Lazy(args)) => daemon::run(s, home, args, out),
        Command::Notify(Lazy(args)) => settings::notify(home, args, out),
        Command::Config(Lazy(a)) => settings::config(home, a.action, out),
        Command::Doctor(Lazy(a)) => doctor::run(s, home, a.json, out),
        Command::Top(Lazy(a)) => top::run(home, &a.interval, a.fleet.then_some(a.pg)),
        Command::Fleet(Lazy(args)) => fleet::run(s, home, args, out),
        Command::Completions(_) | Command::Man(_) | Command::Up(_) => {
            unreachable!("handled above")
        }
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
