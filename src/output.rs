//! Human tables and the `--json` shapes.
//!
//! The JSON shapes are a stable interface for scripts (documented in the README):
//! fields are only ever added, never renamed or removed.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::store::{now_ms, Event};
use crate::supervisor::{fmt_duration, Status};

/// `tend status --json`, and each element of `tend list --json`.
#[derive(Serialize)]
pub struct ServiceJson<'a> {
    pub name: &'a str,
    /// `running` or `stopped`.
    pub state: &'static str,
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
            pid: i.map(|i| i.pid),
            pgid: i.map(|i| i.pgid),
            started_at: i.map(|i| rfc3339(i.started_at)),
            uptime_secs: i.map(|i| uptime(i.started_at).as_secs()),
            argv: &s.argv,
            command: s.command_line(),
            cwd: &s.cwd,
            stdin: &s.stdin,
            stdout: &s.stdout,
            stderr: &s.stderr,
            env: &s.env,
            stop_signal: s.stop_signal.name(),
            stop_timeout_ms: s.stop_timeout.as_millis() as u64,
            restart: s.restart.as_str(),
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

pub fn state(st: &Status) -> &'static str {
    if st.instance.is_some() {
        "running"
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
                state(st).to_string(),
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
        None => writeln!(out, "{} - stopped", s.name)?,
    }
    writeln!(out, "  command:  {}", s.command_line())?;
    writeln!(out, "  cwd:      {}", s.cwd.display())?;
    writeln!(out, "  stdin:    {}", s.stdin.display())?;
    writeln!(out, "  stdout:   {}", s.stdout.display())?;
    writeln!(out, "  stderr:   {}", s.stderr.display())?;
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
        s.stop_signal,
        fmt_duration(s.stop_timeout)
    )?;
    writeln!(out, "  restart:  {}", s.restart)?;
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
