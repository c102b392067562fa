//! Human tables and the `--json` shapes.
//!
//! The JSON shapes are a stable interface for scripts (documented in the README):
//! fields are only ever added, never renamed or removed.

use std::io::{self, Write};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::record::{now_ms, Event};
use crate::service::fmt_duration;
use crate::state::State;
use crate::supervisor::Status;

/// `tend status --json`, and each element of `tend list --json`: identity and state,
/// the command, the environment, every setting of the table (by its `json` name, in
/// table order), then the restart bookkeeping.
pub struct ServiceJson<'a>(&'a Status);

impl<'a> ServiceJson<'a> {
    pub fn new(st: &'a Status) -> Self {
        ServiceJson(st)
    }
}

impl Serialize for ServiceJson<'_> {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let st = self.0;
        let s = &st.service;
        let i = st.instance.as_ref();
        let rt = &st.runtime;
        let mut m = ser.serialize_map(None)?;
        m.serialize_entry("name", &s.name)?;
        m.serialize_entry("state", st.state.name())?;
        m.serialize_entry("waiting_for_daemon", &st.state.waiting_for_daemon())?;
        m.serialize_entry("pid", &i.map(|i| i.pid))?;
        m.serialize_entry("pgid", &i.map(|i| i.pgid))?;
        m.serialize_entry("started_at", &i.map(|i| rfc3339(i.started_at)))?;
        m.serialize_entry("uptime_secs", &i.map(|i| uptime(i.started_at).as_secs()))?;
        m.serialize_entry("argv", &s.argv)?;
        m.serialize_entry("command", &s.command_line())?;
        m.serialize_entry("env", &s.env)?;
        for (key, value) in s.settings.json() {
            m.serialize_entry(key, &value)?;
        }
        m.serialize_entry("restarts", &rt.restarts)?;
        m.serialize_entry("last_exit", &rt.last_exit)?;
        m.serialize_entry("last_exit_at", &rt.last_exit_at.map(rfc3339))?;
        m.serialize_entry("next_retry_at", &rt.next_retry_at.map(rfc3339_millis))?;
        m.serialize_entry("failed_reason", &rt.failed)?;
        m.serialize_entry("created_at", &rfc3339(s.created_at))?;
        m.serialize_entry("updated_at", &rfc3339(s.updated_at))?;
        m.end()
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
                st.state.label().to_string(),
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
    let pgid = st.instance.as_ref().map_or(0, |i| i.pgid);
    match &st.state {
        State::Running { pid, since } => {
            writeln!(
                out,
                "{} - running (pid {pid}, process group {pgid})",
                s.name
            )?;
            writeln!(
                out,
                "  since:    {} ({} ago)",
                rfc3339(*since),
                fmt_uptime(uptime(*since))
            )?;
        }
        State::Stopping { pid } => {
            writeln!(
                out,
                "{} - stopping (pid {pid}, process group {pgid})",
                s.name
            )?;
        }
        State::Stopped => writeln!(out, "{} - stopped", s.name)?,
        State::Failed { reason } => {
            writeln!(out, "{} - failed", s.name)?;
            writeln!(
                out,
                "  failed:   {reason} (`tend start {}` clears it)",
                s.name
            )?;
        }
        State::Backoff { until, supervised } => {
            writeln!(out, "{} - {}", s.name, st.state.label())?;
            if *supervised {
                writeln!(out, "  retry at: {}", rfc3339_millis(*until))?;
            } else {
                writeln!(
                    out,
                    "  retry at: {} (no daemon runs to carry it out: `tend daemon`, or `tend start {}`)",
                    rfc3339_millis(*until),
                    s.name
                )?;
            }
        }
    }
    let rt = &st.runtime;
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
