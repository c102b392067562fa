//! Turns a parsed command line into supervisor calls and output.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::cli::{Cli, Command, DefinitionArgs, Targets};
use crate::error::{exit, Error, Result};
use crate::home::Home;
use crate::output;
use crate::service::{self, Service};
use crate::store::now_ms;
use crate::supervisor::{fmt_duration, Changes, StartOutcome, StopOutcome, Supervisor};

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
        // Everything that can be checked without the database is checked before it is
        // opened, so bad input never even creates a state home.
        let prepared = prepare(&home, cli.command)?;
        let mut sup = Supervisor::open(home)?;
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
            Command::Start(t) => {
                for name in targets(sup, t)? {
                    match sup.start(&name) {
                        Ok(o) => self.started(out, &name, o)?,
                        Err(e) => self.fail(&e),
                    }
                    notices(sup);
                }
            }
            Command::Stop(t) => {
                for name in targets(sup, t)? {
                    match sup.stop(&name) {
                        Ok(o) => stopped(out, &name, o)?,
                        Err(e) => self.fail(&e),
                    }
                    notices(sup);
                }
            }
            Command::Restart(t) => {
                for name in targets(sup, t)? {
                    match sup.restart(&name) {
                        Ok((s, o)) => {
                            if s != StopOutcome::NotRunning {
                                stopped(out, &name, s)?;
                            }
                            self.started(out, &name, o)?;
                        }
                        Err(e) => self.fail(&e),
                    }
                    notices(sup);
                }
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

    fn started(&mut self, out: &mut dyn Write, name: &str, o: StartOutcome) -> io::Result<()> {
        match o {
            StartOutcome::Started { pid } => writeln!(out, "{name}: started (pid {pid})"),
            StartOutcome::AlreadyRunning { pid } => {
                writeln!(out, "{name}: already running (pid {pid})")
            }
            StartOutcome::ExitedAtOnce { pid } => {
                self.fail(&Error::Start {
                    service: name.to_string(),
                    message: format!(
                        "started (pid {pid}) but exited at once; see `tend logs {name}`"
                    ),
                });
                Ok(())
            }
        }
    }
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
        Command::List { .. } => Vec::new(),
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

fn stopped(out: &mut dyn Write, name: &str, o: StopOutcome) -> io::Result<()> {
    match o {
        StopOutcome::NotRunning => writeln!(out, "{name}: not running"),
        StopOutcome::Stopped {
            pid,
            killed: false,
            took,
        } => writeln!(out, "{name}: stopped (pid {pid}, {})", fmt_duration(took)),
        StopOutcome::Stopped {
            pid, killed: true, ..
        } => writeln!(
            out,
            "{name}: stopped (pid {pid} ignored the stop signal; killed)"
        ),
    }
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

/// The names a start/stop/restart applies to.
fn targets(sup: &mut Supervisor, t: Targets) -> Result<Vec<String>> {
    if t.all {
        return sup.names();
    }
    Ok(t.names)
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

fn invalid(what: &'static str) -> impl Fn(String) -> Error {
    move |message| Error::Invalid { what, message }
}

/// Builds a definition for `tend add`, resolving relative paths against the current
/// directory (so the definition means the same from wherever it is started later).
fn new_service(home: &Home, name: &str, mut def: DefinitionArgs) -> Result<Service> {
    service::validate_name(name)?;
    let argv = command_argv(&mut def)?.ok_or_else(|| Error::Invalid {
        what: "command",
        message: "no command given (use --cmd STRING or -- PROGRAM ARGS...)".into(),
    })?;
    let here = cwd()?;
    let abs = |p: Option<PathBuf>| p.map(|p| service::absolute(&here, &p));
    let stdout = abs(def.stdout).unwrap_or_else(|| home.default_log(name));
    let now = now_ms();
    Ok(Service {
        name: name.to_string(),
        argv,
        cwd: abs(def.cwd).unwrap_or_else(|| here.clone()),
        stdin: abs(def.stdin).unwrap_or_else(|| "/dev/null".into()),
        stderr: abs(def.stderr).unwrap_or_else(|| stdout.clone()),
        stdout,
        env: def
            .env
            .iter()
            .map(|kv| service::parse_env(kv))
            .collect::<Result<_>>()?,
        stop_signal: def
            .stop_signal
            .map(|s| s.parse().map_err(invalid("--stop-signal")))
            .transpose()?
            .unwrap_or_default(),
        stop_timeout: def
            .stop_timeout
            .map(|s| service::parse_duration(&s).map_err(invalid("--stop-timeout")))
            .transpose()?
            .unwrap_or(service::DEFAULT_STOP_TIMEOUT),
        restart: def
            .restart
            .map(|s| s.parse().map_err(invalid("--restart")))
            .transpose()?
            .unwrap_or_default(),
        created_at: now,
        updated_at: now,
    })
}

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
        stop_signal: def
            .stop_signal
            .map(|s| s.parse().map_err(invalid("--stop-signal")))
            .transpose()?,
        stop_timeout: def
            .stop_timeout
            .map(|s| service::parse_duration(&s).map_err(invalid("--stop-timeout")))
            .transpose()?,
        restart: def
            .restart
            .map(|s| s.parse().map_err(invalid("--restart")))
            .transpose()?,
    })
}
