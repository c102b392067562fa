//! Turns a parsed command line into supervisor calls and output.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::api::{Outcome, Report, Selection, Verb};
use crate::cli::{
    Cli, Command, ConfigAction, DaemonAction, DaemonArgs, DefinitionArgs, NotifyArgs, PgArgs,
    Targets,
};
use crate::daemon::protocol::{Action, Response};
use crate::error::{exit, Error, Result};
use crate::home::Home;
use crate::output;
use crate::record::now_ms;
use crate::service::fmt_duration;
use crate::service::{self, Service};
use crate::supervisor::{Changes, Context, SignalOutcome, StartOutcome, StopOutcome, Supervisor};

/// Runs one command. Errors are printed as one line on stderr; the return value is the
/// process exit code (see the README).
pub fn run(cli: Cli) -> u8 {
    let stdout = io::stdout();
    let mut out = stdout.lock();
    let mut ctx = Ctx { code: exit::OK };
    let result = ctx
        .dispatch(cli, &mut out)
        .and_then(|()| out.flush().map_err(Failure::Output));
    match result {
        Ok(()) => ctx.code,
        // `tend list | head -1`: the reader is gone, which is not an error of ours.
        Err(Failure::Output(e)) if e.kind() == io::ErrorKind::BrokenPipe => ctx.code,
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

fn report(e: &Error) {
    eprintln!("tend: {e}");
}

enum Failure {
    Tend(Error),
    Output(io::Error),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::Tend(e)
    }
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Self {
        Failure::Output(e)
    }
}

struct Ctx {
    /// Exit code so far; commands over several services keep going after one fails and
    /// exit with the first failure's code.
    code: u8,
}

impl Ctx {
    fn fail(&mut self, e: &Error) {
        report(e);
        if self.code == exit::OK {
            self.code = e.exit_code();
        }
    }

    fn dispatch(&mut self, cli: Cli, out: &mut dyn Write) -> Result<(), Failure> {
        let home = Home::resolve(cli.home.as_deref())?;
        let command = match cli.command {
            Command::Daemon(args) => return self.daemon(&home, args, out),
            Command::Start(t) => return self.act(&home, Verb::Start, t, out),
            Command::Stop(t) => return self.act(&home, Verb::Stop, t, out),
            Command::Restart(t) => return self.act(&home, Verb::Restart, t, out),
            Command::Signal { signal, targets } => {
                let sig = parse_signal(&signal)?;
                return self.act(&home, Verb::Signal { signal: sig }, targets, out);
            }
            Command::Notify(args) => return notify(&home, args, out),
            Command::Config { action } => return config(&home, action, out),
            other => other,
        };
        // Everything that can be checked without the database is checked before it is
        // opened, so bad input never even creates a state home.
        let prepared = prepare(&home, command)?;
        let mut sup = open_supervisor(&home)?;
        let result = self.command(&mut sup, prepared, out);
        notices(&mut sup);
        result
    }

    fn command(
        &mut self,
        sup: &mut Supervisor,
        prepared: Prepared,
        out: &mut dyn Write,
    ) -> Result<(), Failure> {
        let command = match prepared {
            Prepared::Add(svc) => {
                let name = svc.name.clone();
                sup.add(svc)?;
                writeln!(out, "{name}: added")?;
                return Ok(());
            }
            Prepared::Edit(name, changes) => {
                let (changed, running) = sup.edit(&name, &changes)?;
                edited(out, &name, &changed, running)?;
                return Ok(());
            }
            Prepared::Other(c) => c,
        };
        match command {
            Command::Add(_) | Command::Edit(_) => unreachable!("prepared above"),
            Command::Remove { names, stop } => {
                for name in names {
                    match sup.remove(&name, stop) {
                        Ok(stopped) => {
                            if let StopOutcome::Stopped { pid, .. } = stopped {
                                writeln!(out, "{name}: stopped (pid {pid})")?;
                            }
                            writeln!(out, "{name}: removed")?;
                        }
                        Err(e) => self.fail(&e),
                    }
                    notices(sup);
                }
            }
            Command::List { json } => {
                let rows = sup.list()?;
                notices(sup);
                if json {
                    let items: Vec<_> = rows.iter().map(output::ServiceJson::new).collect();
                    output::json(out, &items)?;
                } else {
                    output::list_table(out, &rows)?;
                }
            }
            Command::Status { name, json } => {
                let st = sup.status(&name)?;
                notices(sup);
                if json {
                    output::json(out, &output::ServiceJson::new(&st))?;
                } else {
                    output::status_detail(out, &st)?;
                }
                if st.instance.is_none() {
                    self.code = exit::NOT_RUNNING;
                }
            }
            Command::Start(_)
            | Command::Stop(_)
            | Command::Restart(_)
            | Command::Signal { .. }
            | Command::Daemon(_)
            | Command::Notify(_)
            | Command::Config { .. } => {
                unreachable!("dispatched before the database is opened")
            }
            Command::Logs {
                name,
                lines,
                follow,
            } => {
                let st = sup.status(&name)?;
                notices(sup);
                let files = crate::logs::files(&st.service.stdout, &st.service.stderr);
                if files.is_empty() {
                    eprintln!(
                        "tend: {name}: output goes to {}, not to a file; nothing to show",
                        st.service.stdout.display()
                    );
                    return Ok(());
                }
                let mut offsets = Vec::new();
                for (i, f) in files.iter().enumerate() {
                    if files.len() > 1 {
                        if i > 0 {
                            writeln!(out)?;
                        }
                        writeln!(out, "==> {} <==", f.display())?;
                    }
                    offsets.push(crate::logs::tail(out, f, lines).map_err(|e| log_err(f, e))?);
                }
                if follow {
                    out.flush()?;
                    crate::logs::follow(out, &files, offsets)?;
                }
            }
            Command::Events { name, lines, json } => {
                let events = sup.events(name.as_deref(), lines)?;
                if json {
                    output::events_json(out, &events)?;
                } else {
                    output::events_table(out, &events)?;
                }
            }
        }
        Ok(())
    }

    /// start / stop / restart: through the daemon when one runs (it stays the parent of
    /// what it starts), else right here. Either way the same [`crate::actions::act`] runs.
    fn act(
        &mut self,
        home: &Home,
        verb: Verb,
        t: Targets,
        out: &mut dyn Write,
    ) -> Result<(), Failure> {
        for n in &t.names {
            service::validate_name(n)?;
        }
        let selection = if t.all {
            Selection::All
        } else {
            Selection::Names {
                names: t.names.clone(),
            }
        };
        let action = Action::Act {
            verb,
            selection: selection.clone(),
        };
        let reports = match crate::daemon::client::request(home, action)? {
            Some(Response::Reports { reports }) => reports,
            Some(Response::Error { message, code }) => {
                eprintln!("tend: {message}");
                self.code = code;
                return Ok(());
            }
            Some(other) => {
                return Err(Error::Daemon {
                    message: format!("unexpected answer: {other:?}"),
                }
                .into())
            }
            None => {
                // No daemon took it: act here, the same way.
                let mut sup = open_supervisor(home)?;
                crate::api::act(&mut sup, verb, &selection, &|| true)?
            }
        };
        self.reports(out, &reports)
    }

    /// Prints per-service results; failures go to stderr and set the exit code.
    fn reports(&mut self, out: &mut dyn Write, reports: &[Report]) -> Result<(), Failure> {
        for r in reports {
            let name = &r.name;
            match &r.result {
                Outcome::Start { outcome } => self.started(out, name, outcome)?,
                Outcome::Stop { outcome } => stopped(out, name, outcome)?,
                Outcome::Restart { stop, start } => {
                    if *stop != StopOutcome::NotRunning {
                        stopped(out, name, stop)?;
                    }
                    self.started(out, name, start)?;
                }
                Outcome::Signal { outcome } => match outcome {
                    SignalOutcome::Sent { pid, signal } => {
                        writeln!(out, "{name}: sent {signal} (pid {pid})")?
                    }
                    SignalOutcome::NotRunning => {
                        self.fail(&Error::Start {
                            service: name.clone(),
                            message: "not running; no signal sent".into(),
                        });
                    }
                },
                Outcome::Error { message, code } => {
                    eprintln!("tend: {message}");
                    if self.code == exit::OK {
                        self.code = *code;
                    }
                }
            }
            for n in &r.notices {
                eprintln!("tend: {n}");
            }
        }
        Ok(())
    }

    fn started(&mut self, out: &mut dyn Write, name: &str, o: &StartOutcome) -> io::Result<()> {
        match o {
            StartOutcome::Started { pid } => writeln!(out, "{name}: started (pid {pid})"),
            StartOutcome::AlreadyRunning { pid } => {
                writeln!(out, "{name}: already running (pid {pid})")
            }
            StartOutcome::NotDue => Ok(()),
            StartOutcome::ExitedAtOnce { pid, status } => {
                let how = match status {
                    Some(s) => format!(" ({s})"),
                    None => String::new(),
                };
                self.fail(&Error::Start {
                    service: name.to_string(),
                    message: format!(
                        "started (pid {pid}) but exited at once{how}; see `tend logs {name}`"
                    ),
                });
                Ok(())
            }
        }
    }

    /// `tend daemon [--foreground] | status | stop [--all] | reload`.
    fn daemon(
        &mut self,
        home: &Home,
        args: DaemonArgs,
        out: &mut dyn Write,
    ) -> Result<(), Failure> {
        let overrides = pg_overrides(args.pg, args.host_id);
        match args.action {
            None if args.foreground => crate::daemon::run_foreground(home.clone(), overrides)?,
            None => {
                // Check the settings here, so a mistake is reported by this command
                // rather than in the daemon's log.
                let mut sup = Supervisor::open(home.clone())?;
                if let Some(s) = crate::pg::Settings::resolve(&mut sup, &overrides)? {
                    s.key()?;
                    crate::pg::connect::tls(s.ca_file.as_deref()).map_err(|message| {
                        Error::Invalid {
                            what: "postgres TLS",
                            message,
                        }
                    })?;
                }
                drop(sup);
                let s = crate::daemon::client::start_background(
                    home,
                    &overrides_argv(&overrides),
                    overrides.url.as_deref(),
                )?;
                writeln!(
                    out,
                    "daemon: started (pid {}); log: {}",
                    s.pid,
                    home.root().join("daemon.log").display()
                )?;
            }
            Some(DaemonAction::Status { json }) => {
                match crate::daemon::client::request(home, Action::Status)? {
                    Some(Response::Status(s)) => {
                        if json {
                            output::json(out, &output::DaemonJson::new(Some(&s)))?;
                        } else {
                            output::daemon_status(out, &s)?;
                        }
                    }
                    Some(other) => {
                        return Err(Error::Daemon {
                            message: format!("unexpected answer: {other:?}"),
                        }
                        .into())
                    }
                    None => {
                        if json {
                            output::json(out, &output::DaemonJson::new(None))?;
                        } else {
                            writeln!(out, "daemon: not running")?;
                        }
                        self.code = exit::NOT_RUNNING;
                    }
                }
            }
            Some(DaemonAction::Stop { all }) => {
                let status = match crate::daemon::client::request(home, Action::Status)? {
                    Some(Response::Status(s)) => s,
                    _ => {
                        writeln!(out, "daemon: not running")?;
                        return Ok(());
                    }
                };
                match crate::daemon::client::require(home, Action::Shutdown { stop_services: all })?
                {
                    Response::ShuttingDown { reports, left_down } => {
                        self.reports(out, &reports)?;
                        for l in left_down {
                            let due = (l.due_at - now_ms()).max(0) as u64;
                            eprintln!(
                                "tend: {}: its automatic restart (due in {}) was not carried \
                                 out; it stays down until `tend start {}` or a new daemon",
                                l.name,
                                fmt_duration(std::time::Duration::from_millis(due)),
                                l.name
                            );
                        }
                    }
                    Response::Error { message, code } => {
                        eprintln!("tend: {message}");
                        self.code = code;
                        return Ok(());
                    }
                    _ => {}
                }
                if crate::daemon::client::wait_exit(&status, std::time::Duration::from_secs(30)) {
                    writeln!(out, "daemon: stopped (pid {})", status.pid)?;
                } else {
                    return Err(Error::Daemon {
                        message: format!("pid {} did not exit within 30 s", status.pid),
                    }
                    .into());
                }
            }
            Some(DaemonAction::Reload) => {
                crate::daemon::client::require(home, Action::Reload)?;
                writeln!(out, "daemon: reloaded")?;
            }
        }
        Ok(())
    }
}

fn parse_signal(s: &str) -> Result<i32> {
    match s.to_ascii_uppercase().trim_start_matches("SIG") {
        "KILL" => return Ok(libc::SIGKILL),
        "STOP" => return Ok(libc::SIGSTOP),
        _ => {}
    }
    s.parse::<service::StopSignal>()
        .map(|s| s.0 as i32)
        .map_err(|message| Error::Invalid {
            what: "signal",
            message,
        })
}

fn pg_overrides(pg: PgArgs, host_id: Option<String>) -> crate::pg::Overrides {
    crate::pg::Overrides {
        url: pg.url,
        channel: pg.channel,
        host_id,
        ca_file: pg.ca_file.map(absolute_here),
        key_file: pg.notify_key_file.map(absolute_here),
    }
}

fn absolute_here(p: PathBuf) -> PathBuf {
    let here = std::env::current_dir().unwrap_or_else(|_| "/".into());
    service::absolute(&here, &p)
}

/// The overrides as `tend daemon --foreground` arguments, for the background daemon.
fn overrides_argv(o: &crate::pg::Overrides) -> Vec<String> {
    let mut argv = Vec::new();
    let mut push = |flag: &str, v: Option<String>| {
        if let Some(v) = v {
            argv.push(flag.to_string());
            argv.push(v);
        }
    };
    // The URL goes through the environment (see `start_background`): it may hold a
    // password, and any user can read a process's arguments.
    push("--channel", o.channel.clone());
    push("--host-id", o.host_id.clone());
    push(
        "--ca-file",
        o.ca_file.as_ref().map(|p| p.to_string_lossy().into_owned()),
    );
    push(
        "--notify-key-file",
        o.key_file
            .as_ref()
            .map(|p| p.to_string_lossy().into_owned()),
    );
    argv
}

/// `tend notify ACTION NAME... [--host H]`: one NOTIFY, signed when a key is configured.
fn notify(home: &Home, args: NotifyArgs, out: &mut dyn Write) -> Result<(), Failure> {
    let mut words = vec![args.action.to_ascii_lowercase()];
    let signal = if words[0] == "signal" {
        let mut names = args.names.clone();
        let sig = names.pop();
        (names, sig)
    } else {
        (args.names.clone(), None)
    };
    for n in &signal.0 {
        service::validate_name(n)?;
        words.push(match &args.host {
            Some(h) => format!("{n}@{h}"),
            None => n.clone(),
        });
    }
    words.extend(signal.1);
    let payload = words.join(" ");
    // Never send what a daemon would refuse.
    crate::pg::payload::parse(&payload).map_err(|e| Error::Invalid {
        what: "notify",
        message: e.to_string(),
    })?;
    let mut sup = Supervisor::open(home.clone())?;
    let settings = crate::pg::Settings::resolve(&mut sup, &pg_overrides(args.pg, None))?
        .ok_or_else(|| Error::Invalid {
            what: "notify",
            message: "no PostgreSQL URL: use --postgres URL or `tend config set postgres.url URL`"
                .into(),
        })?;
    crate::pg::notify(&settings, &payload)?;
    writeln!(
        out,
        "notified {} on channel {}: {payload}",
        settings.display_url(),
        settings.channel
    )?;
    Ok(())
}

/// `tend config set|get|unset|list`.
fn config(home: &Home, action: ConfigAction, out: &mut dyn Write) -> Result<(), Failure> {
    use crate::config as cfg;
    if let ConfigAction::Set { key, value } = &action {
        cfg::validate(key, value)?;
    }
    let mut sup = Supervisor::open(home.clone())?;
    match action {
        ConfigAction::Set { key, value } => {
            let value = cfg::validate(&key, &value)?;
            sup.config_set(&key, Some(&value))?;
            writeln!(out, "{key} = {}", cfg::display(&key, &value))?;
        }
        ConfigAction::Get { key } => match sup.config_get(&key)? {
            Some(v) => writeln!(out, "{}", cfg::display(&key, &v))?,
            None => {
                return Err(Error::Invalid {
                    what: "config",
                    message: format!("{key} is not set"),
                }
                .into())
            }
        },
        ConfigAction::Unset { key } => {
            sup.config_set(&key, None)?;
            writeln!(out, "{key}: unset")?;
        }
        ConfigAction::List => {
            let set = sup.config_all()?;
            for (k, what) in cfg::KEYS {
                match set.iter().find(|(sk, _)| sk == k) {
                    Some((_, v)) => writeln!(out, "{k} = {}", cfg::display(k, v))?,
                    None => writeln!(out, "# {k}: {what}")?,
                }
            }
        }
    }
    Ok(())
}

/// A command with everything checked that can be checked before opening the database.
enum Prepared {
    Add(Service),
    Edit(String, Changes),
    Other(Command),
}

fn prepare(home: &Home, command: Command) -> Result<Prepared> {
    let command = match command {
        Command::Add(a) => return Ok(Prepared::Add(new_service(home, &a.name, a.def)?)),
        Command::Edit(a) => {
            service::validate_name(&a.name)?;
            return Ok(Prepared::Edit(a.name, changes(a.def, a.unset_env)?));
        }
        other => other,
    };
    let names: Vec<&String> = match &command {
        Command::Add(_) | Command::Edit(_) => Vec::new(),
        Command::Remove { names, .. } => names.iter().collect(),
        Command::Status { name, .. } | Command::Logs { name, .. } => vec![name],
        Command::Events { name, .. } => name.iter().collect(),
        Command::Start(t) | Command::Stop(t) | Command::Restart(t) => t.names.iter().collect(),
        Command::List { .. }
        | Command::Daemon(_)
        | Command::Signal { .. }
        | Command::Notify(_)
        | Command::Config { .. } => Vec::new(),
    };
    for n in names {
        service::validate_name(n)?;
    }
    Ok(Prepared::Other(command))
}

fn edited(out: &mut dyn Write, name: &str, changed: &[&str], running: bool) -> io::Result<()> {
    if changed.is_empty() {
        writeln!(out, "{name}: no changes")
    } else if running {
        writeln!(
            out,
            "{name}: changed {}; the running instance keeps the old definition until \
             `tend restart {name}`",
            changed.join(", ")
        )
    } else {
        writeln!(out, "{name}: changed {}", changed.join(", "))
    }
}

fn stopped(out: &mut dyn Write, name: &str, o: &StopOutcome) -> io::Result<()> {
    match *o {
        StopOutcome::NotRunning => writeln!(out, "{name}: not running"),
        StopOutcome::Stopped {
            pid,
            killed,
            took,
            others,
            left_session,
            left_alone,
        } => {
            let mut line = if killed {
                format!("{name}: stopped (pid {pid} ignored the stop signal; killed")
            } else {
                format!("{name}: stopped (pid {pid}, {}", fmt_duration(took))
            };
            if others > 0 {
                line.push_str(&format!("; {others} other process(es)"));
            }
            line.push(')');
            writeln!(out, "{line}")?;
            if left_session {
                eprintln!(
                    "tend: {name}: pid {pid} had left the session tend created for it; it was \
                     stopped through its own handle"
                );
            }
            if left_alone > 0 {
                eprintln!(
                    "tend: {name}: {left_alone} process(es) in the service's old session/group \
                     number could not be proven to be its own (the number may have been \
                     reused) and were left alone"
                );
            }
            Ok(())
        }
    }
}

/// Opens the supervisor for a command the CLI carries out itself, telling it whether a
/// daemon watches this home (then exits are left for the daemon to record).
fn open_supervisor(home: &Home) -> Result<Supervisor> {
    Supervisor::open_with(
        home.clone(),
        Context {
            daemon_watching: crate::daemon::client::present(home),
            board: None,
        },
    )
}

fn notices(sup: &mut Supervisor) {
    for n in sup.take_notices() {
        eprintln!("tend: {n}");
    }
}

fn log_err(path: &Path, e: io::Error) -> Failure {
    if e.kind() == io::ErrorKind::BrokenPipe {
        return Failure::Output(e);
    }
    Failure::Tend(Error::Io {
        path: path.to_path_buf(),
        reason: crate::error::io_reason(&e),
    })
}

fn cwd() -> Result<PathBuf> {
    std::env::current_dir().map_err(|e| Error::Invalid {
        what: "working directory",
        message: format!(
            "cannot read the current directory: {}",
            crate::error::io_reason(&e)
        ),
    })
}

fn command_argv(def: &mut DefinitionArgs) -> Result<Option<Vec<String>>> {
    match (def.cmd.take(), std::mem::take(&mut def.argv)) {
        (Some(cmd), _) => Ok(Some(service::split_command(&cmd)?)),
        (None, argv) if !argv.is_empty() => Ok(Some(argv)),
        (None, _) => Ok(None),
    }
}

/// Parses an optional option value with `parse`, naming the option in the error.
fn opt<T>(
    value: Option<String>,
    what: &'static str,
    parse: impl Fn(&str) -> std::result::Result<T, String>,
) -> Result<Option<T>> {
    value
        .map(|v| parse(&v).map_err(|message| Error::Invalid { what, message }))
        .transpose()
}

/// Builds a definition for `tend add`, resolving relative paths against the current
/// directory (so the definition means the same from wherever it is started later).
fn new_service(home: &Home, name: &str, def: DefinitionArgs) -> Result<Service> {
    service::validate_name(name)?;
    let c = changes(def, Vec::new())?;
    let argv = c.argv.ok_or_else(|| Error::Invalid {
        what: "command",
        message: "no command given (use --cmd STRING or -- PROGRAM ARGS...)".into(),
    })?;
    let stdout = c.stdout.unwrap_or_else(|| home.default_log(name));
    let now = now_ms();
    Ok(Service {
        name: name.to_string(),
        argv,
        cwd: match c.cwd {
            Some(d) => d,
            None => cwd()?,
        },
        stdin: c.stdin.unwrap_or_else(|| "/dev/null".into()),
        stderr: c.stderr.unwrap_or_else(|| stdout.clone()),
        stdout,
        env: c.set_env.into_iter().collect(),
        stop_signal: c.stop_signal.unwrap_or_default(),
        stop_timeout: c.stop_timeout.unwrap_or(service::DEFAULT_STOP_TIMEOUT),
        restart: c.restart.unwrap_or_default(),
        autostart: c.autostart.unwrap_or(false),
        restart_delay: c.restart_delay.unwrap_or(service::DEFAULT_RESTART_DELAY),
        start_limit: c.start_limit.unwrap_or(service::DEFAULT_START_LIMIT),
        start_limit_interval: c
            .start_limit_interval
            .unwrap_or(service::DEFAULT_START_LIMIT_INTERVAL),
        log_max_bytes: c.log_max_bytes.unwrap_or(service::DEFAULT_LOG_MAX_BYTES),
        created_at: now,
        updated_at: now,
    })
}

/// The options of `add` / `edit` as changes; paths are made absolute against the current
/// directory.
fn changes(mut def: DefinitionArgs, unset_env: Vec<String>) -> Result<Changes> {
    let here = cwd()?;
    let abs = |p: Option<PathBuf>| p.map(|p| service::absolute(&here, &p));
    Ok(Changes {
        argv: command_argv(&mut def)?,
        cwd: abs(def.cwd),
        stdin: abs(def.stdin),
        stdout: abs(def.stdout),
        stderr: abs(def.stderr),
        set_env: def
            .env
            .iter()
            .map(|kv| service::parse_env(kv))
            .collect::<Result<_>>()?,
        unset_env,
        stop_signal: opt(def.stop_signal, "--stop-signal", str::parse)?,
        stop_timeout: opt(def.stop_timeout, "--stop-timeout", service::parse_duration)?,
        restart: opt(def.restart, "--restart", str::parse)?,
        autostart: match (def.autostart, def.no_autostart) {
            (true, _) => Some(true),
            (_, true) => Some(false),
            _ => None,
        },
        restart_delay: opt(
            def.restart_delay,
            "--restart-delay",
            service::parse_duration,
        )?,
        start_limit: def.start_limit,
        start_limit_interval: opt(
            def.start_limit_interval,
            "--start-limit-interval",
            service::parse_duration,
        )?,
        log_max_bytes: opt(def.log_max_size, "--log-max-size", service::parse_size)?,
    })
}
