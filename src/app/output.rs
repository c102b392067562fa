//! Human tables and the `--json` shapes.
//!
//! The JSON shapes are a stable interface for scripts (documented in the README):
//! fields are only ever added, never renamed or removed.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::record::{now_ms, Event};
use crate::service::fmt_duration;
use crate::supervisor::Status;

/// `tend status --json`, and each element of `tend list --json`.
#[derive(Serialize)]
pub struct ServiceJson<'a> {
    pub name: &'a str,
    /// `running`, `stopped`, `restarting` or `failed`.
    pub state: &'static str,
    /// `restarting`, but no daemon runs to carry the restart out.
    pub waiting_for_daemon: bool,
    pub pid: Option<i32>,
    pub pgid: Option<i32>,
    /// RFC 3339, UTC.
    pub started_at: Option<String>,
    pub uptime_secs: Option<u64>,
    pub argv: &'a [String],
    pub command: String,
    pub cwd: &'a std::path::Path,
    pub stdin: &'a std::path::Path,
    pub stdout: &'a std::path::Path,
    pub stderr: &'a std::path::Path,
    pub env: &'a BTreeMap<String, String>,
    pub stop_signal: &'static str,
    pub stop_timeout_ms: u64,
    pub restart: &'static str,
    pub autostart: bool,
    pub restart_delay_ms: u64,
    pub start_limit: u32,
    pub start_limit_interval_ms: u64,
    pub log_max_bytes: u64,
    /// Automatic restarts since a person last started it.
    pub restarts: u32,
    /// `code N`, `signal NAME` or `unknown`; null if never seen to exit.
    pub last_exit: Option<&'a str>,
    pub last_exit_at: Option<String>,
    /// When a pending automatic restart is due.
    pub next_retry_at: Option<String>,
    /// Why the daemon gave up on it (state `failed`).
    pub failed_reason: Option<&'a str>,
    pub created_at: String,
    pub updated_at: String,
}

impl<'a> ServiceJson<'a> {
    pub fn new(st: &'a Status) -> Self {
        let s = &st.service;
        let i = st.instance.as_ref();
        ServiceJson {
            name: &s.name,
            state: state(st),
            waiting_for_daemon: waiting_for_daemon(st),
            pid: i.map(|i| i.pid),
            pgid: i.map(|i| i.pgid),
            started_at: i.map(|i| rfc3339(i.started_at)),
            uptime_secs: i.map(|i| uptime(i.started_at).as_secs()),
            argv: &s.argv,
            command: s.command_line(),
            cwd: &s.settings.cwd,
            stdin: &s.settings.stdin,
            stdout: &s.settings.stdout,
            stderr: &s.settings.stderr,
            env: &s.env,
            stop_signal: s.settings.stop_signal.name(),
            stop_timeout_ms: s.settings.stop_timeout.as_millis() as u64,
            restart: s.settings.restart.as_str(),
            autostart: s.settings.autostart,
            restart_delay_ms: s.settings.restart_delay.as_millis() as u64,
            start_limit: s.settings.start_limit,
            start_limit_interval_ms: s.settings.start_limit_interval.as_millis() as u64,
            log_max_bytes: s.settings.log_max_bytes,
            restarts: st.runtime.restarts,
            last_exit: st.runtime.last_exit.as_deref(),
            last_exit_at: st.runtime.last_exit_at.map(rfc3339),
            next_retry_at: st.runtime.next_retry_at.map(rfc3339_millis),
            failed_reason: st.runtime.failed.as_deref(),
            created_at: rfc3339(s.created_at),
            updated_at: rfc3339(s.updated_at),
        }
    }
}

/// One element of `tend events --json`.
#[derive(Serialize)]
pub struct EventJson<'a> {
    pub id: i64,
    /// RFC 3339 with milliseconds, UTC.
    pub time: String,
    pub service: &'a str,
    pub kind: &'a str,
    pub detail: &'a str,
}

/// `running`, `stopped`, `restarting` (an automatic restart is pending) or `failed`
/// (the daemon gave up after hitting the start limit).
/// `tend daemon status --json`.
#[derive(Serialize)]
pub struct DaemonJson {
    pub running: bool,
    pub pid: Option<i32>,
    pub started_at: Option<String>,
    pub uptime_secs: Option<u64>,
    pub version: Option<String>,
    /// Services with a running instance.
    pub services_running: Option<usize>,
    /// Of those, adopted ones (watched by pidfd, exit status unknown).
    pub services_adopted: Option<usize>,
    pub pending_restarts: Option<usize>,
    /// PostgreSQL control: null when not configured (or no daemon runs).
    pub postgres: Option<PgJson>,
}

#[derive(Serialize)]
pub struct PgJson {
    /// `connecting`, `connected` or `reconnecting`.
    pub state: String,
    pub since: String,
    pub last_error: Option<String>,
    /// Without the password.
    pub url: String,
    pub channel: String,
    pub host_id: String,
    pub received: u64,
}

impl DaemonJson {
    pub fn new(s: Option<&crate::api::DaemonStatus>) -> DaemonJson {
        DaemonJson {
            running: s.is_some(),
            pid: s.map(|s| s.pid),
            started_at: s.map(|s| rfc3339(s.started_at)),
            uptime_secs: s.map(|s| uptime(s.started_at).as_secs()),
            version: s.map(|s| s.version.clone()),
            services_running: s.map(|s| s.running),
            services_adopted: s.map(|s| s.adopted),
            pending_restarts: s.map(|s| s.pending_restarts),
            postgres: s.and_then(|s| s.postgres.as_ref()).map(|p| PgJson {
                state: p.state.clone(),
                since: rfc3339_millis(p.since),
                last_error: p.last_error.clone(),
                url: p.url.clone(),
                channel: p.channel.clone(),
                host_id: p.host_id.clone(),
                received: p.received,
            }),
        }
    }
}

/// `tend daemon status`.
pub fn daemon_status(out: &mut dyn Write, s: &crate::api::DaemonStatus) -> io::Result<()> {
    writeln!(out, "daemon: running (pid {}, tend {})", s.pid, s.version)?;
    writeln!(
        out,
        "  since:    {} ({} ago)",
        rfc3339(s.started_at),
        fmt_uptime(uptime(s.started_at))
    )?;
    writeln!(
        out,
        "  services: {} running ({} adopted), {} restart(s) pending",
        s.running, s.adopted, s.pending_restarts
    )?;
    writeln!(out, "  home:     {}", s.home.display())?;
    match &s.postgres {
        None => writeln!(out, "  postgres: not configured"),
        Some(p) => {
            writeln!(
                out,
                "  postgres: {} since {} ({} ago)",
                p.state,
                rfc3339(p.since),
                fmt_uptime(uptime(p.since))
            )?;
            writeln!(
                out,
                "            {} channel {} as host {}; {} notification(s) received",
                p.url, p.channel, p.host_id, p.received
            )?;
            if let Some(e) = &p.last_error {
                writeln!(out, "            last error: {e}")?;
            }
            Ok(())
        }
    }
}

/// A restart is pending that no daemon will carry out until one is started.
pub fn waiting_for_daemon(st: &Status) -> bool {
    state(st) == "restarting" && !st.daemon
}

/// The state as a person reads it: `restarting (no daemon)` when nobody will restart it.
pub fn state_label(st: &Status) -> String {
    if waiting_for_daemon(st) {
        "restarting (no daemon)".to_string()
    } else {
        state(st).to_string()
    }
}

pub fn state(st: &Status) -> &'static str {
    if st.instance.is_some() {
        "running"
    } else if st.runtime.failed.is_some() {
        "failed"
    } else if st.runtime.next_retry_at.is_some() {
        "restarting"
    } else {
        "stopped"
    }
}

pub fn rfc3339(ms: i64) -> String {
    humantime::format_rfc3339_seconds(system_time(ms)).to_string()
}

fn rfc3339_millis(ms: i64) -> String {
    humantime::format_rfc3339_millis(system_time(ms)).to_string()
}

fn system_time(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64)
}

fn uptime(started_ms: i64) -> Duration {
    Duration::from_millis((now_ms() - started_ms).max(0) as u64)
}

/// `45s`, `3m12s`, `5h03m`, `2d04h`.
pub fn fmt_uptime(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        3600..=86399 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{:02}h", s / 86400, (s % 86400) / 3600),
    }
}

pub fn json<T: Serialize + ?Sized>(out: &mut dyn Write, value: &T) -> io::Result<()> {
    serde_json::to_writer_pretty(&mut *out, value)?;
    writeln!(out)
}

/// The `tend list` table.
pub fn list_table(out: &mut dyn Write, rows: &[Status]) -> io::Result<()> {
    let cells: Vec<[String; 5]> = rows
        .iter()
        .map(|st| {
            let i = st.instance.as_ref();
            [
                st.service.name.clone(),
                state_label(st),
                i.map_or("-".into(), |i| i.pid.to_string()),
                i.map_or("-".into(), |i| fmt_uptime(uptime(i.started_at))),
                st.service.command_line(),
            ]
        })
        .collect();
    let header = ["NAME", "STATE", "PID", "UPTIME", "COMMAND"].map(String::from);
    let mut width = [0usize; 4];
    for row in std::iter::once(&header).chain(&cells) {
        for (w, cell) in width.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut buf = String::with_capacity(64 * (cells.len() + 1));
    for row in std::iter::once(&header).chain(&cells) {
        for (w, cell) in width.iter().zip(row) {
            buf.push_str(cell);
            for _ in cell.chars().count()..*w + 2 {
                buf.push(' ');
            }
        }
        buf.push_str(&row[4]);
        buf.push('\n');
    }
    out.write_all(buf.as_bytes())
}

/// The `tend status` detail view.
pub fn status_detail(out: &mut dyn Write, st: &Status) -> io::Result<()> {
    let s = &st.service;
    match &st.instance {
        Some(i) => {
            writeln!(
                out,
                "{} - running (pid {}, process group {})",
                s.name, i.pid, i.pgid
            )?;
            writeln!(
                out,
                "  since:    {} ({} ago)",
                rfc3339(i.started_at),
                fmt_uptime(uptime(i.started_at))
            )?;
        }
        None => writeln!(out, "{} - {}", s.name, state_label(st))?,
    }
    let rt = &st.runtime;
    if let Some(reason) = &rt.failed {
        writeln!(
            out,
            "  failed:   {reason} (`tend start {}` clears it)",
            s.name
        )?;
    }
    if let Some(at) = rt.next_retry_at {
        if st.daemon {
            writeln!(out, "  retry at: {}", rfc3339_millis(at))?;
        } else {
            writeln!(
                out,
                "  retry at: {} (no daemon runs to carry it out: `tend daemon`, or `tend start {}`)",
                rfc3339_millis(at),
                s.name
            )?;
        }
    }
    if let (Some(exit), Some(at)) = (&rt.last_exit, rt.last_exit_at) {
        writeln!(out, "  last exit: {exit} at {}", rfc3339(at))?;
    }
    if rt.restarts > 0 {
        writeln!(out, "  restarts: {}", rt.restarts)?;
    }
    writeln!(out, "  command:  {}", s.command_line())?;
    writeln!(out, "  cwd:      {}", s.settings.cwd.display())?;
    writeln!(out, "  stdin:    {}", s.settings.stdin.display())?;
    writeln!(out, "  stdout:   {}", s.settings.stdout.display())?;
    writeln!(out, "  stderr:   {}", s.settings.stderr.display())?;
    if !s.env.is_empty() {
        let env: Vec<String> = s
            .env
            .iter()
            .map(|(k, v)| shell_words::quote(&format!("{k}={v}")).into_owned())
            .collect();
        writeln!(out, "  env:      {}", env.join(" "))?;
    }
    writeln!(
        out,
        "  stop:     {}, then KILL after {}",
        s.settings.stop_signal,
        fmt_duration(s.settings.stop_timeout)
    )?;
    writeln!(
        out,
        "  restart:  {} (first delay {}, start limit {}{})",
        s.settings.restart,
        fmt_duration(s.settings.restart_delay),
        s.settings.start_limit,
        if s.settings.start_limit > 0 {
            format!(" in {}", fmt_duration(s.settings.start_limit_interval))
        } else {
            " = none".to_string()
        }
    )?;
    if s.settings.autostart {
        writeln!(out, "  autostart: yes")?;
    }
    Ok(())
}

/// The `tend events` table.
pub fn events_table(out: &mut dyn Write, events: &[Event]) -> io::Result<()> {
    let width = events
        .iter()
        .map(|e| e.service.len())
        .max()
        .unwrap_or(7)
        .max(7);
    let kind_width = events
        .iter()
        .map(|e| e.kind.len())
        .max()
        .unwrap_or(4)
        .max(4);
    writeln!(
        out,
        "{:<24}  {:<width$}  {:<kind_width$}  DETAIL",
        "TIME", "SERVICE", "EVENT"
    )?;
    for e in events {
        writeln!(
            out,
            "{:<24}  {:<width$}  {:<kind_width$}  {}",
            rfc3339_millis(e.at),
            e.service,
            e.kind,
            e.detail
        )?;
    }
    Ok(())
}

pub fn events_json(out: &mut dyn Write, events: &[Event]) -> io::Result<()> {
    let items: Vec<EventJson> = events
        .iter()
        .map(|e| EventJson {
            id: e.id,
            time: rfc3339_millis(e.at),
            service: &e.service,
            kind: &e.kind,
            detail: &e.detail,
        })
        .collect();
    json(out, &items)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uptime_format() {
        assert_eq!(fmt_uptime(Duration::from_secs(45)), "45s");
        assert_eq!(fmt_uptime(Duration::from_secs(192)), "3m12s");
        assert_eq!(fmt_uptime(Duration::from_secs(5 * 3600 + 180)), "5h03m");
        assert_eq!(
            fmt_uptime(Duration::from_secs(2 * 86400 + 4 * 3600)),
            "2d04h"
        );
    }
}
