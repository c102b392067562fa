//! `tend add | edit | remove`: definitions. Everything that can be checked without the
//! database is checked before it is opened, so bad input never even creates a state home.

use std::io::{self, Write};
use std::path::PathBuf;

use super::session::{notices, open_supervisor, Failure, Session};
use crate::cli::{AddArgs, DefinitionArgs, EditArgs};
use crate::error::{io_reason, Error, Result};
use crate::home::Home;
use crate::record::now_ms;
use crate::service::{self, Changes, Defaults, Service};
use crate::supervisor::StopOutcome;

/// `tend add NAME [OPTIONS] -- PROGRAM [ARGS]`.
pub fn add(home: &Home, a: AddArgs, out: &mut dyn Write) -> Result<(), Failure> {
    let svc = new_service(home, &a.name, a.def)?;
    let mut sup = open_supervisor(home)?;
    let added = sup.add(svc);
    notices(&mut sup);
    added?;
    writeln!(out, "{}: added", a.name)?;
    Ok(())
}

/// `tend edit NAME [OPTIONS] [--unset-env KEY]...`.
pub fn edit(home: &Home, a: EditArgs, out: &mut dyn Write) -> Result<(), Failure> {
    service::validate_name(&a.name)?;
    let changes = changes(a.def, a.unset_env)?;
    let mut sup = open_supervisor(home)?;
    let edited = sup.edit(&a.name, &changes);
    notices(&mut sup);
    let (changed, running) = edited?;
    report_edit(out, &a.name, &changed, running)?;
    Ok(())
}

/// `tend remove NAME... [--stop] [--keep-logs]`: each in turn; a failure does not stop
/// the others. Once a definition is gone, its log files in `<home>/logs` are deleted
/// (unless `keep_logs`), so a new service of the same name starts with an empty log.
pub fn remove(
    s: &mut Session,
    home: &Home,
    names: Vec<String>,
    stop: bool,
    keep_logs: bool,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    for n in &names {
        service::validate_name(n)?;
    }
    let mut sup = open_supervisor(home)?;
    for name in names {
        match sup.remove(&name, stop) {
            Ok(stopped) => {
                if let StopOutcome::Stopped { pid, .. } = stopped {
                    writeln!(out, "{name}: stopped (pid {pid})")?;
                }
                if keep_logs {
                    writeln!(out, "{name}: removed")?;
                } else {
                    let deleted = delete_logs(home, &name);
                    match deleted {
                        Ok(0) => writeln!(out, "{name}: removed")?,
                        Ok(n) => writeln!(out, "{name}: removed ({n} log file(s) deleted)")?,
                        Err(e) => {
                            writeln!(out, "{name}: removed")?;
                            s.fail(&e);
                        }
                    }
                }
            }
            Err(e) => s.fail(&e),
        }
        notices(&mut sup);
    }
    Ok(())
}

/// Deletes `<home>/logs/NAME.log` and its rotated copies (`NAME.log.1`...). Only
/// files in tend's own log directory are touched: a `--stdout` elsewhere is the user's.
/// Returns how many files were deleted.
fn delete_logs(home: &Home, name: &str) -> Result<usize> {
    let dir = home.logs_dir();
    let base = format!("{name}.log");
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => {
            return Err(Error::Io {
                path: dir,
                reason: io_reason(&e),
            })
        }
    };
    let mut deleted = 0;
    for entry in entries.flatten() {
        let file = entry.file_name();
        let file = file.to_string_lossy();
        let ours = file == base.as_str()
            || file
                .strip_prefix(&base)
                .and_then(|rest| rest.strip_prefix('.'))
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        if !ours {
            continue;
        }
        match std::fs::remove_file(entry.path()) {
            Ok(()) => deleted += 1,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(Error::Io {
                    path: entry.path(),
                    reason: format!("cannot delete the log: {}", io_reason(&e)),
                })
            }
        }
    }
    Ok(deleted)
}

fn report_edit(out: &mut dyn Write, name: &str, changed: &[&str], running: bool) -> io::Result<()> {
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

fn cwd() -> Result<PathBuf> {
    std::env::current_dir().map_err(|e| Error::Invalid {
        what: "working directory",
        message: format!("cannot read the current directory: {}", io_reason(&e)),
    })
}

fn command_argv(def: &mut DefinitionArgs) -> Result<Option<Vec<String>>> {
    match (def.cmd.take(), std::mem::take(&mut def.argv)) {
        (Some(cmd), _) => Ok(Some(service::split_command(&cmd)?)),
        (None, argv) if !argv.is_empty() => Ok(Some(argv)),
        (None, _) => Ok(None),
    }
}

/// Builds a definition for `tend add`: what was given, else each setting's default;
/// relative paths are made absolute against the current directory (so the definition
/// means the same from wherever it is started later).
fn new_service(home: &Home, name: &str, def: DefinitionArgs) -> Result<Service> {
    service::validate_name(name)?;
    let c = changes(def, Vec::new())?;
    let argv = c.argv.ok_or_else(|| Error::Invalid {
        what: "command",
        message: "no command given (use --cmd STRING or -- PROGRAM ARGS...)".into(),
    })?;
    let defaults = Defaults {
        cwd: cwd()?,
        log: home.default_log(name),
    };
    let now = now_ms();
    Ok(Service {
        name: name.to_string(),
        argv,
        env: c.set_env.into_iter().collect(),
        settings: c.settings.build(&defaults),
        created_at: now,
        updated_at: now,
    })
}

/// The options of `add` / `edit` as changes; paths are made absolute against the current
/// directory.
fn changes(mut def: DefinitionArgs, unset_env: Vec<String>) -> Result<Changes> {
    let here = cwd()?;
    let mut settings = def.settings.changes()?;
    settings.absolutize(&here);
    Ok(Changes {
        argv: command_argv(&mut def)?,
        set_env: def
            .env
            .iter()
            .map(|kv| service::parse_env(kv))
            .collect::<Result<_>>()?,
        unset_env,
        settings,
    })
}
