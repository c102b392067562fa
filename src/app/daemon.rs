//! `tend daemon [--foreground] | status | stop [--all] | reload`.

use std::io::Write;
use std::path::PathBuf;

use super::lifecycle::print_reports;
use super::output;
use super::session::{open_supervisor, Failure, Session};
use super::term::escape;
use crate::cli::{DaemonAction, DaemonArgs, PgArgs};
use crate::daemon::client;
use crate::daemon::protocol::{Action, Response};
use crate::error::{exit, Error};
use crate::home::Home;
use crate::record::now_ms;
use crate::service::{self, fmt_duration};

pub fn run(
    s: &mut Session,
    home: &Home,
    args: DaemonArgs,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    let overrides = pg_overrides(args.pg, args.host_id);
    let http = args.http;
    match args.action {
        None if args.foreground => {
            crate::daemon::run_foreground(home.clone(), overrides, http.as_deref(), args.bound_to)?
        }
        None => start(home, overrides, http.as_deref(), out)?,
        Some(DaemonAction::Status { json }) => match client::probe(home) {
            client::Probe::Healthy(st) => {
                if json {
                    output::json(out, &output::DaemonJson::new(Some(&st)))?;
                } else {
                    output::daemon_status(out, &st)?;
                }
            }
            client::Probe::Unhealthy { pid, problem } => {
                if json {
                    output::json(out, &output::DaemonJson::unhealthy(pid, &problem))?;
                } else {
                    writeln!(
                        out,
                        "daemon: alive but unhealthy ({}): {}",
                        pid.map_or("pid unknown".into(), |p| format!("pid {p}")),
                        escape(&problem)
                    )?;
                    writeln!(
                        out,
                        "  see {} and `tend doctor`; `tend daemon stop` still stops it",
                        home.root().join("daemon.log").display()
                    )?;
                }
                s.code = exit::FAILED;
            }
            client::Probe::NotRunning => {
                if json {
                    output::json(out, &output::DaemonJson::new(None))?;
                } else {
                    writeln!(out, "daemon: not running")?;
                }
                s.code = exit::NOT_RUNNING;
            }
        },
        Some(DaemonAction::Stop { all }) => stop(s, home, all, out)?,
        Some(DaemonAction::Reload) => {
            client::require(home, Action::Reload)?;
            writeln!(out, "daemon: reloaded")?;
        }
    }
    Ok(())
}

/// `tend daemon`: checks the settings here, so a mistake is reported by this command
/// rather than in the daemon's log, then starts it in the background.
fn start(
    home: &Home,
    overrides: crate::pg::Overrides,
    http: Option<&str>,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    let mut sup = open_supervisor(home)?;
    if let Some(s) = crate::pg::Settings::resolve(&mut sup, &overrides)? {
        s.key()?;
        crate::pg::connect::tls(s.ca_file.as_deref()).map_err(crate::error::Error::from)?;
    }
    let http = crate::daemon::http::Settings::resolve(&mut sup, http)?;
    drop(sup);
    let mut argv = overrides_argv(&overrides);
    if let Some(h) = &http {
        // Resolved here: a relative socket path is taken from this directory.
        argv.push("--http".into());
        argv.push(h.listen.to_string());
    }
    let st = client::start_background(home, &argv, overrides.url.as_deref())?;
    writeln!(
        out,
        "daemon: started (pid {}); log: {}",
        st.pid,
        home.root().join("daemon.log").display()
    )?;
    Ok(())
}

/// `tend daemon stop [--all]`: asks the daemon to exit (stopping every service first with
/// `--all`), names the services it leaves down, and waits until it has exited.
///
/// Only the lock says whether a daemon runs: one that answers errors (its database
/// broken under it) is still stopped, never reported as "not running".
fn stop(s: &mut Session, home: &Home, all: bool, out: &mut dyn Write) -> Result<(), Failure> {
    if !client::present(home) {
        writeln!(out, "daemon: not running")?;
        return Ok(());
    }
    let pid = client::lock_pid(home);
    let answer = match client::request(home, Action::Shutdown { stop_services: all })? {
        Some(answer) => answer,
        // It refused the connection: already on its way out.
        None => Response::ShuttingDown {
            reports: Vec::new(),
            left_down: Vec::new(),
        },
    };
    match answer {
        Response::ShuttingDown { reports, left_down } => {
            print_reports(s, out, &reports)?;
            for l in left_down {
                let due = (l.due_at - now_ms()).max(0) as u64;
                eprintln!(
                    "tend: {}: its automatic restart (due in {}) was not carried out; it stays \
                     down until `tend start {}` or a new daemon",
                    l.name,
                    fmt_duration(std::time::Duration::from_millis(due)),
                    l.name
                );
            }
        }
        Response::Error { message, code } => {
            eprintln!("tend: daemon: {}", escape(&message));
            s.fail_code(code);
            return Ok(());
        }
        _ => return Err(Error::unexpected_answer().into()),
    }
    let pid = pid.map_or("pid unknown".to_string(), |p| format!("pid {p}"));
    if client::wait_released(home, std::time::Duration::from_secs(30)) {
        writeln!(out, "daemon: stopped ({pid})")?;
        Ok(())
    } else {
        Err(Error::Daemon {
            message: format!("{pid} did not exit within 30 s"),
        }
        .into())
    }
}

/// The PostgreSQL options of the command line, paths made absolute.
pub fn pg_overrides(pg: PgArgs, host_id: Option<String>) -> crate::pg::Overrides {
    crate::pg::Overrides {
        url: pg.url,
        channel: pg.channel,
        host_id,
        schema: pg.schema,
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
    push("--schema", o.schema.clone());
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
