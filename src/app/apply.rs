//! `tend apply` and `tend export`: definitions from and to a service file. The plan is
//! computed and printed first; running services to remove are stopped (through the
//! daemon when one runs), then every definition changes in one transaction, then, with
//! `--restart-changed`, the running services that changed are restarted.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::lifecycle;
use super::session::{notices, open_supervisor, Failure, Session};
use crate::api::Verb;
use crate::cli::{ApplyArgs, Which};
use crate::error::{io_reason, Error, Result};
use crate::home::Home;
use crate::record::now_ms;
use crate::service::{self, file};
use crate::supervisor::apply::{PlanItem, Step};

/// Reads and parses a service file; relative paths in it are taken against its
/// directory. Returns the parsed file and its absolute path (the owner mark).
fn read_file(home: &Home, path: &Path) -> Result<(file::ServiceFile, String)> {
    read_file_as(home, path, false)
}

/// [`read_file`]; with `procfile`, the file is a Procfile (`tend up -f Procfile`).
pub fn read_file_as(
    home: &Home,
    path: &Path,
    procfile: bool,
) -> Result<(file::ServiceFile, String)> {
    let here = std::env::current_dir().map_err(|e| Error::Io {
        path: ".".into(),
        reason: io_reason(&e),
    })?;
    let abs = service::absolute(&here, path);
    let text = service::file::read(&abs).map_err(|reason| Error::Io {
        path: path.to_path_buf(),
        reason,
    })?;
    let dir = abs
        .parent()
        .map_or_else(|| PathBuf::from("/"), Path::to_path_buf);
    let text = if procfile {
        super::import::procfile_as_toml(&path.display().to_string(), &dir, &text)?
    } else {
        text
    };
    let parsed = file::parse(
        &path.display().to_string(),
        &dir,
        &text,
        &|n| home.default_log(n),
        now_ms(),
    )?;
    Ok((parsed, abs.display().to_string()))
}

/// `tend apply [-f FILE] [--dry-run] [--prune] [--restart-changed]`.
pub fn apply(
    s: &mut Session,
    home: &Home,
    a: ApplyArgs,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    let (f, owner) = read_file(home, &a.file)?;
    let mut sup = open_supervisor(home)?;
    let planned = sup.plan_apply(&f, &owner, a.prune);
    notices(&mut sup);
    let planned = planned?;
    print_plan(out, &planned, a.restart_changed)?;
    if a.dry_run {
        writeln!(out, "dry run: nothing changed")?;
        return Ok(());
    }
    let running_removed: Vec<String> = planned
        .iter()
        .filter(|p| p.step == Step::Remove { running: true })
        .map(|p| p.name.clone())
        .collect();
    drop(sup);
    if !running_removed.is_empty() {
        let before = s.code;
        lifecycle::act(s, home, Verb::Stop, which(running_removed), out)?;
        if s.code != before {
            return Ok(());
        }
    }
    let mut sup = open_supervisor(home)?;
    let done = sup.apply(&f, &owner, a.prune);
    notices(&mut sup);
    let done = done?;
    drop(sup);
    let count = |want: fn(&Step) -> bool| done.iter().filter(|p| want(&p.step)).count();
    writeln!(
        out,
        "applied {}: {} added, {} changed, {} removed, {} unchanged",
        f.name,
        count(|s| *s == Step::Add),
        count(|s| matches!(s, Step::Change { .. })),
        count(|s| matches!(s, Step::Remove { .. })),
        count(|s| *s == Step::Same),
    )?;
    let restart: Vec<String> = done
        .iter()
        .filter(|p| matches!(p.step, Step::Change { running: true, .. }))
        .map(|p| p.name.clone())
        .collect();
    if a.restart_changed && !restart.is_empty() {
        lifecycle::act(s, home, Verb::Restart, which(restart), out)?;
    }
    Ok(())
}

fn which(names: Vec<String>) -> Which {
    Which { names, all: false }
}

fn print_plan(
    out: &mut dyn Write,
    plan: &[PlanItem],
    restart_changed: bool,
) -> std::io::Result<()> {
    for p in plan {
        let name = &p.name;
        let mut line = match &p.step {
            Step::Add => format!("{name}: add"),
            Step::Same => format!("{name}: unchanged"),
            Step::Change { fields, running } => {
                let mut l = format!("{name}: change {}", fields.join(", "));
                if *running {
                    l.push_str(if restart_changed {
                        "; running: restarted"
                    } else {
                        "; running: keeps the old definition until `tend restart` \
                         (or apply --restart-changed)"
                    });
                }
                l
            }
            Step::Remove { running } => {
                format!(
                    "{name}: remove{}",
                    if *running {
                        " (running: stopped first)"
                    } else {
                        ""
                    }
                )
            }
        };
        if let Some(from) = &p.taken_from {
            match from {
                None => line.push_str(" (taken over: it was added by hand)"),
                Some(f) => line.push_str(&format!(" (taken over from {f})")),
            }
        }
        writeln!(out, "{line}")?;
    }
    Ok(())
}

/// `tend export [NAME...]`: definitions as a service file that `tend apply` reads back
/// to the same definitions.
pub fn export(home: &Home, names: Vec<String>, out: &mut dyn Write) -> Result<(), Failure> {
    for n in &names {
        service::validate_name(n)?;
    }
    let mut sup = open_supervisor(home)?;
    let all = sup.services()?;
    for n in &names {
        if !all.iter().any(|s| &s.name == n) {
            return Err(Error::UnknownService(n.clone()).into());
        }
    }
    let chosen: Vec<_> = all
        .into_iter()
        .filter(|s| names.is_empty() || names.contains(&s.name))
        .collect();
    out.write_all(file::export(&chosen, &|n| home.default_log(n)).as_bytes())?;
    Ok(())
}
