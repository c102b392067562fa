//! `tend list | status | logs | events`: looking, never acting (though a look clears a
//! record that no longer describes a live process).

use std::io::{self, Write};
use std::path::Path;

use super::output;
use super::session::{notices, open_supervisor, Failure, Session};
use super::term::{escape, Term};
use crate::cli::OutputArgs;
use crate::error::{exit, io_reason, Error};
use crate::home::Home;
use crate::service;

pub fn list(home: &Home, how: OutputArgs, out: &mut dyn Write) -> Result<(), Failure> {
    let mut sup = open_supervisor(home)?;
    // The table shows no usage; `--json` has it in each service's `cgroup`.
    let rows = if how.json {
        sup.list()?
    } else {
        sup.list_brief()?
    };
    notices(&mut sup);
    if how.json {
        let items: Vec<_> = rows.iter().map(output::ServiceJson::new).collect();
        output::json(out, &items)?;
    } else {
        output::list_table(out, &rows, &Term::stdout(how.wide))?;
    }
    Ok(())
}

/// Exit 0 running, 3 not running (LSB), 4 unknown service or (LSB) status unknown: whether
/// the recorded instance runs could not be checked.
pub fn status(
    s: &mut Session,
    home: &Home,
    name: &str,
    how: OutputArgs,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    service::validate_name(name)?;
    let mut sup = open_supervisor(home)?;
    let st = sup.status(name)?;
    notices(&mut sup);
    if how.json {
        output::json(out, &output::ServiceJson::new(&st))?;
    } else {
        output::status_detail(out, &st, &Term::stdout(how.wide))?;
    }
    if st.state.unknown_reason().is_some() {
        s.code = exit::STATUS_UNKNOWN;
    } else if !st.state.is_running() {
        s.code = exit::NOT_RUNNING;
    }
    Ok(())
}

pub(super) fn logs(
    home: &Home,
    name: &str,
    lines: usize,
    follow: bool,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    service::validate_name(name)?;
    let mut sup = open_supervisor(home)?;
    let st = sup.status(name)?;
    notices(&mut sup);
    let set = &st.service.settings;
    let files = crate::logs::files(&set.stdout, &set.stderr);
    if files.is_empty() {
        eprintln!(
            "tend: {name}: output goes to {}, not to a file; nothing to show",
            escape(&set.stdout.to_string_lossy())
        );
        return Ok(());
    }
    let mut offsets = Vec::new();
    for (i, f) in files.iter().enumerate() {
        if files.len() > 1 {
            if i > 0 {
                writeln!(out)?;
            }
            writeln!(out, "==> {} <==", escape(&f.to_string_lossy()))?;
        }
        offsets.push(crate::logs::tail(out, f, lines).map_err(|e| log_err(f, e))?);
    }
    if follow {
        out.flush()?;
        crate::logs::follow(out, &files, offsets)?;
    }
    Ok(())
}

pub fn events(
    home: &Home,
    name: Option<&str>,
    lines: u32,
    how: OutputArgs,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    if let Some(n) = name {
        service::validate_name(n)?;
    }
    let mut sup = open_supervisor(home)?;
    let events = sup.events(name, lines)?;
    if how.json {
        output::events_json(out, &events)?;
    } else {
        output::events_table(out, &events, &Term::stdout(how.wide))?;
    }
    Ok(())
}

/// `tend metrics`: the services as this command sees them (the same look as `list
/// --json`), and the counters of the daemon when one answers.
pub fn metrics(home: &Home, out: &mut dyn Write) -> Result<(), Failure> {
    let mut sup = open_supervisor(home)?;
    let rows = sup.list()?;
    notices(&mut sup);
    let rows: Vec<_> = rows
        .into_iter()
        .map(|st| {
            let u = crate::metrics::usage_of(&st);
            (st, u)
        })
        .collect();
    // A daemon that does not answer is reported as not up: its counters are unknown.
    let daemon =
        crate::daemon::client::status(home)
            .ok()
            .flatten()
            .map(|s| crate::metrics::DaemonFigures {
                started_at: s.started_at,
                counters: s.counters,
            });
    out.write_all(crate::metrics::render(&rows, daemon.as_ref()).as_bytes())?;
    Ok(())
}

fn log_err(path: &Path, e: io::Error) -> Failure {
    if e.kind() == io::ErrorKind::BrokenPipe {
        return Failure::Output(e);
    }
    Failure::Tend(Error::Io {
        path: path.to_path_buf(),
        reason: io_reason(&e),
    })
}
