//! `tend list | status | logs | events`: looking, never acting (though a look clears a
//! record that no longer describes a live process).

use std::io::{self, Write};
use std::path::Path;

use super::output;
use super::session::{notices, open_supervisor, Failure, Session};
use crate::error::{exit, io_reason, Error};
use crate::home::Home;
use crate::service;

pub fn list(home: &Home, json: bool, out: &mut dyn Write) -> Result<(), Failure> {
    let mut sup = open_supervisor(home)?;
    let rows = sup.list()?;
    notices(&mut sup);
    if json {
        let items: Vec<_> = rows.iter().map(output::ServiceJson::new).collect();
        output::json(out, &items)?;
    } else {
        output::list_table(out, &rows)?;
    }
    Ok(())
}

/// Exit 0 running, 3 not running (LSB), 4 unknown service.
pub fn status(
    s: &mut Session,
    home: &Home,
    name: &str,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    service::validate_name(name)?;
    let mut sup = open_supervisor(home)?;
    let st = sup.status(name)?;
    notices(&mut sup);
    if json {
        output::json(out, &output::ServiceJson::new(&st))?;
    } else {
        output::status_detail(out, &st)?;
    }
    if !st.state.is_running() {
        s.code = exit::NOT_RUNNING;
    }
    Ok(())
}

pub fn logs(
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
            set.stdout.display()
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
    Ok(())
}

pub fn events(
    home: &Home,
    name: Option<&str>,
    lines: u32,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    if let Some(n) = name {
        service::validate_name(n)?;
    }
    let mut sup = open_supervisor(home)?;
    let events = sup.events(name, lines)?;
    if json {
        output::events_json(out, &events)?;
    } else {
        output::events_table(out, &events)?;
    }
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
