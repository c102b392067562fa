//! Human tables and the `--json` shapes.
//!
//! The JSON shapes are a stable interface for scripts (documented in the README):
//! fields are only ever added, never renamed or removed.

use std::io::{self, Write};
use std::time::Duration;

use serde::Serialize;

use super::term::{escape, escape_owned, Term};
pub use crate::json::{rfc3339, ErrorJson, EventJson, ServiceJson};
use crate::json::{rfc3339_millis, uptime};
use crate::record::Event;
use crate::service::fmt_duration;
use crate::state::State;
use crate::supervisor::Status;

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
    /// Recorded instances the daemon does not watch yet: their check could not be made,
    /// or it is short of descriptors (looked at again every 5 s).
    pub services_unwatched: Option<usize>,
    pub pending_restarts: Option<usize>,
    /// `cgroup PATH` or `process-group (why)`; null when no daemon runs.
    pub containment: Option<String>,
    /// PostgreSQL control: null when not configured (or no daemon runs).
    pub postgres: Option<PgJson>,
    /// Where the HTTP API listens; null when it is off (or no daemon runs).
    pub http: Option<String>,
    /// False when a daemon holds the lock but answers errors (or nothing usable); null
    /// when none runs.
    pub healthy: Option<bool>,
    /// What went wrong with an unhealthy daemon.
    pub error: Option<String>,
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
    /// Fleet wake-ups received on this host's channel, claim attempts, sweeps.
    pub fleet_wakeups: u64,
    pub fleet_claims: u64,
    pub fleet_sweeps: u64,
    /// Which quick-mode payloads are obeyed.
    pub quick_mode: String,
    /// The fleet beside the quick mode.
    pub fleet: Option<FleetJson>,
}

#[derive(Serialize)]
pub struct FleetJson {
    /// `looking`, `joined`, `no fleet` or `reconnecting`.
    pub state: String,
    pub since: String,
    pub schema: String,
    pub host_id: String,
    pub joined_once: bool,
    pub last_sweep: Option<String>,
    pub last_error: Option<String>,
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
            services_unwatched: s.map(|s| s.unwatched),
            pending_restarts: s.map(|s| s.pending_restarts),
            containment: s.map(|s| s.containment.clone()),
            postgres: s.and_then(|s| s.postgres.as_ref()).map(|p| PgJson {
                state: p.state.clone(),
                since: rfc3339_millis(p.since),
                last_error: p.last_error.clone(),
                url: p.url.clone(),
                channel: p.channel.clone(),
                host_id: p.host_id.clone(),
                received: p.received,
                fleet_wakeups: p.fleet_wakeups,
                fleet_claims: p.fleet_claims,
                fleet_sweeps: p.fleet_sweeps,
                quick_mode: p.quick_mode.clone(),
                fleet: p.fleet.as_ref().map(|f| FleetJson {
                    state: f.state.clone(),
                    since: rfc3339_millis(f.since),
                    schema: f.schema.clone(),
                    host_id: f.host_id.clone(),
                    joined_once: f.joined_once,
                    last_sweep: f.last_sweep.map(rfc3339_millis),
                    last_error: f.last_error.clone(),
                }),
            }),
            http: s.and_then(|s| s.http.clone()),
            healthy: s.map(|_| true),
            error: None,
        }
    }

    /// A daemon that holds the lock but does not answer its status.
    pub fn unhealthy(pid: Option<i32>, problem: &str) -> DaemonJson {
        DaemonJson {
            running: true,
            pid,
            healthy: Some(false),
            error: Some(problem.to_string()),
            ..DaemonJson::new(None)
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
    let unwatched = match s.unwatched {
        0 => String::new(),
        n => format!(", {n} not watched yet: see `tend doctor`"),
    };
    writeln!(
        out,
        "  services: {} running ({} adopted{unwatched}), {} restart(s) pending",
        s.running, s.adopted, s.pending_restarts
    )?;
    writeln!(out, "  home:     {}", escape(&s.home.to_string_lossy()))?;
    writeln!(out, "  contain:  {}", escape(&s.containment))?;
    writeln!(
        out,
        "  http:     {}",
        s.http.as_deref().map_or("off".into(), escape)
    )?;
    match &s.postgres {
        None => writeln!(out, "  postgres: not configured"),
        Some(p) => {
            writeln!(
                out,
                "  postgres: {} since {} ({} ago)",
                escape(&p.state),
                rfc3339(p.since),
                fmt_uptime(uptime(p.since))
            )?;
            writeln!(
                out,
                "            {} channel {} as host {}; {} notification(s) received",
                escape(&p.url),
                p.channel,
                escape(&p.host_id),
                p.received
            )?;
            writeln!(
                out,
                "            fleet: {} wake-up(s), {} claim attempt(s), {} sweep(s)",
                p.fleet_wakeups, p.fleet_claims, p.fleet_sweeps
            )?;
            if let Some(e) = &p.last_error {
                writeln!(out, "            last error: {}", escape(e))?;
            }
            writeln!(out, "  quick:    {}", escape(&p.quick_mode))?;
            if let Some(f) = &p.fleet {
                let sweep = match f.last_sweep {
                    Some(t) => format!("last sweep {} ago", fmt_uptime(uptime(t))),
                    None => "no sweep yet".into(),
                };
                writeln!(
                    out,
                    "  fleet:    {} (schema {}, host {}) since {} ({} ago); {sweep}",
                    escape(&f.state),
                    f.schema,
                    escape(&f.host_id),
                    rfc3339(f.since),
                    fmt_uptime(uptime(f.since)),
                )?;
                if let Some(e) = &f.last_error {
                    writeln!(out, "            last error: {}", escape(e))?;
                }
            }
            Ok(())
        }
    }
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
    // Whole, then written at once: stdout is line-buffered, and serde_json writes a pretty
    // document piece by piece, so writing straight to it cost a write(2) per line (about
    // 60 per service in `tend list --json`).
    let mut text = serde_json::to_vec_pretty(value)?;
    text.push(b'\n');
    out.write_all(&text)
}

/// The `tend list` table; "no services" when there are none.
pub fn list_table(out: &mut dyn Write, rows: &[Status], term: &Term) -> io::Result<()> {
    if rows.is_empty() {
        return writeln!(
            out,
            "no services (define one with `tend add NAME -- PROGRAM [ARGS...]`)"
        );
    }
    let cells: Vec<[String; 5]> = rows
        .iter()
        .map(|st| {
            let i = st.instance.as_ref();
            [
                escape(&st.service.name).into_owned(),
                st.state.label().to_string(),
                i.map_or("-".into(), |i| i.pid.to_string()),
                i.map_or("-".into(), |i| fmt_uptime(uptime(i.started_at))),
                escape_owned(st.service.command_line()),
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
    // Piped (no width, no colour): rows go straight into the buffer, as fast as before.
    let as_is = term.width.is_none() && !term.color;
    for (n, row) in std::iter::once(&header).chain(&cells).enumerate() {
        let start = buf.len();
        for (w, cell) in width.iter().zip(row) {
            buf.push_str(cell);
            for _ in cell.chars().count()..*w + 2 {
                buf.push(' ');
            }
        }
        buf.push_str(&row[4]);
        if as_is {
            buf.push('\n');
            continue;
        }
        let plain = buf.split_off(start);
        let line = term.fit(&plain);
        // Colour the state cell of a data row, only when the cut left it whole.
        let state_at = width[0] + 2;
        let state_end = state_at + width[1] + 2;
        if n > 0 && term.color && line.chars().count() >= state_end {
            let head: String = line.chars().take(state_at).collect();
            let tail: String = line.chars().skip(state_end).collect();
            buf.push_str(&head);
            buf.push_str(&term.state(&row[1], width[1] + 2));
            buf.push_str(&tail);
        } else {
            buf.push_str(&line);
        }
        buf.push('\n');
    }
    out.write_all(buf.as_bytes())
}

/// Width of the labels of `tend status` (the longest, `last exit:`, plus a space).
const LABEL: usize = 11;

/// One `  label: value` line of `tend status`, cut to the terminal's width.
fn field(out: &mut dyn Write, term: &Term, label: &str, value: &str) -> io::Result<()> {
    let line = format!("  {:<LABEL$}{value}", format!("{label}:"));
    writeln!(out, "{}", term.fit(&line))
}

/// The `tend status` detail view.
pub fn status_detail(out: &mut dyn Write, st: &Status, term: &Term) -> io::Result<()> {
    let s = &st.service;
    let name = escape(&s.name);
    let pgid = st.instance.as_ref().map_or(0, |i| i.pgid);
    let label = st.state.label();
    let head = |extra: String| format!("{name} - {}{extra}", term.state(label, 0));
    match &st.state {
        State::Running { pid, since } => {
            writeln!(
                out,
                "{}",
                head(format!(" (pid {pid}, process group {pgid})"))
            )?;
            field(
                out,
                term,
                "since",
                &format!("{} ({} ago)", rfc3339(*since), fmt_uptime(uptime(*since))),
            )?;
        }
        State::Stopping { pid } => {
            writeln!(
                out,
                "{}",
                head(format!(" (pid {pid}, process group {pgid})"))
            )?;
        }
        State::Starting { pid, since } => {
            writeln!(
                out,
                "{}",
                head(format!(": not ready yet (pid {pid}, process group {pgid})"))
            )?;
            field(
                out,
                term,
                "since",
                &format!("{} ({} ago)", rfc3339(*since), fmt_uptime(uptime(*since))),
            )?;
        }
        State::Unknown { pid, since, reason } => {
            writeln!(
                out,
                "{}",
                head(format!(
                    ": whether it still runs could not be checked (pid {pid}, process group {pgid})"
                ))
            )?;
            field(
                out,
                term,
                "unknown",
                &format!(
                    "{}; the record is kept, nothing is done to it until a check can be made",
                    escape(reason)
                ),
            )?;
            field(
                out,
                term,
                "since",
                &format!("{} ({} ago)", rfc3339(*since), fmt_uptime(uptime(*since))),
            )?;
        }
        State::Stopped => writeln!(out, "{}", head(String::new()))?,
        State::Failed { reason } => {
            writeln!(out, "{}", head(String::new()))?;
            field(
                out,
                term,
                "failed",
                &format!("{} (`tend start {name}` clears it)", escape(reason)),
            )?;
        }
        State::Backoff { until, supervised } => {
            writeln!(out, "{}", head(String::new()))?;
            let at = rfc3339_millis(*until);
            if *supervised {
                field(out, term, "retry at", &at)?;
            } else {
                field(
                    out,
                    term,
                    "retry at",
                    &format!(
                        "{at} (no daemon runs to carry it out: `tend daemon`, or `tend start {name}`)"
                    ),
                )?;
            }
        }
    }
    if let Some(cg) = &st.cgroup {
        cgroup_detail(out, cg, term)?;
    }
    let rt = &st.runtime;
    if let (Some(exit), Some(at)) = (&rt.last_exit, rt.last_exit_at) {
        field(
            out,
            term,
            "last exit",
            &format!("{} at {}", escape(exit), rfc3339(at)),
        )?;
    }
    if rt.restarts > 0 {
        field(out, term, "restarts", &rt.restarts.to_string())?;
    }
    let path = |p: &std::path::Path| escape(&p.to_string_lossy()).into_owned();
    field(out, term, "command", &escape(&s.command_line()))?;
    field(out, term, "cwd", &path(&s.settings.cwd))?;
    field(out, term, "stdin", &path(&s.settings.stdin))?;
    field(out, term, "stdout", &path(&s.settings.stdout))?;
    field(out, term, "stderr", &path(&s.settings.stderr))?;
    if !s.env.is_empty() {
        let env: Vec<String> = s
            .env
            .iter()
            .map(|(k, v)| escape(&shell_words::quote(&format!("{k}={v}"))).into_owned())
            .collect();
        field(out, term, "env", &env.join(" "))?;
    }
    field(
        out,
        term,
        "stop",
        &format!(
            "{}, then KILL after {}",
            s.settings.stop_signal,
            fmt_duration(s.settings.stop_timeout)
        ),
    )?;
    field(
        out,
        term,
        "restart",
        &format!(
            "{} (first delay {}, start limit {}{})",
            s.settings.restart,
            fmt_duration(s.settings.restart_delay),
            s.settings.start_limit,
            if s.settings.start_limit > 0 {
                format!(" in {}", fmt_duration(s.settings.start_limit_interval))
            } else {
                " = none".to_string()
            }
        ),
    )?;
    if s.settings.autostart {
        field(out, term, "autostart", "yes")?;
    }
    let process = process_settings(&s.settings);
    if !process.is_empty() {
        field(out, term, "process", &escape(&process.join(", ")))?;
    }
    Ok(())
}

/// The process settings that differ from what a service gets by default, as `tend
/// status` shows them: `user app, umask 027, limit_nofile 1024:4096, nice 5`.
fn process_settings(s: &crate::service::Settings) -> Vec<String> {
    use crate::service::execution::Umask;
    let mut out = Vec::new();
    if let Some(u) = &s.user.0 {
        out.push(format!("user {u}"));
    }
    if let Some(g) = &s.group.0 {
        out.push(format!("group {g}"));
    }
    if s.umask != Umask::default() {
        out.push(format!("umask {}", s.umask));
    }
    for (name, l) in [
        ("limit_nofile", s.limit_nofile),
        ("limit_nproc", s.limit_nproc),
        ("limit_core", s.limit_core),
        ("limit_memlock", s.limit_memlock),
    ] {
        if let Some(r) = l.0 {
            out.push(format!("{name} {r}"));
        }
    }
    if let Some(n) = s.nice.0 {
        out.push(format!("nice {n}"));
    }
    if let Some(n) = s.oom_score_adj.0 {
        out.push(format!("oom_score_adj {n}"));
    }
    out
}

/// The cgroup lines of `tend status`: where, how much, and what an earlier instance left.
fn cgroup_detail(
    out: &mut dyn Write,
    cg: &crate::supervisor::CgroupView,
    term: &Term,
) -> io::Result<()> {
    if let Some(path) = &cg.path {
        field(out, term, "cgroup", &escape(path))?;
        let u = &cg.usage;
        let cpu = u
            .cpu_usec
            .map_or("n/a".to_string(), |us| format!("{:.3}s", us as f64 / 1e6));
        let mem = match (u.memory_current, u.memory_peak) {
            (Some(c), Some(p)) => format!("{} (peak {})", fmt_bytes(c), fmt_bytes(p)),
            (Some(c), None) => fmt_bytes(c),
            _ => "n/a (no memory controller)".to_string(),
        };
        field(out, term, "usage", &format!("cpu {cpu}, memory {mem}"))?;
    }
    if !cg.leftovers.is_empty() {
        let pids: Vec<String> = cg.leftovers.iter().map(|p| p.to_string()).collect();
        field(
            out,
            term,
            "leftover",
            &format!(
                "{} process(es) of an earlier instance still run (pid {}); killed at the next start or stop",
                cg.leftovers.len(),
                pids.join(", ")
            ),
        )?;
    }
    Ok(())
}

fn fmt_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "K", "M", "G"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n}B")
    } else {
        format!("{v:.1}{}", UNITS[i])
    }
}

/// The `tend events` table.
pub fn events_table(out: &mut dyn Write, events: &[Event], term: &Term) -> io::Result<()> {
    let rows: Vec<[String; 4]> = events
        .iter()
        .map(|e| {
            [
                rfc3339_millis(e.at),
                escape(&e.service).into_owned(),
                escape(&e.kind).into_owned(),
                escape(&e.detail).into_owned(),
            ]
        })
        .collect();
    let width = rows
        .iter()
        .map(|r| r[1].chars().count())
        .max()
        .unwrap_or(7)
        .max(7);
    let kind_width = rows
        .iter()
        .map(|r| r[2].chars().count())
        .max()
        .unwrap_or(5)
        .max(5);
    let header = format!(
        "{:<24}  {:<width$}  {:<kind_width$}  DETAIL",
        "TIME", "SERVICE", "EVENT"
    );
    writeln!(out, "{}", term.fit(&header))?;
    for [at, service, kind, detail] in &rows {
        let line = format!("{at:<24}  {service:<width$}  {kind:<kind_width$}  {detail}");
        writeln!(out, "{}", term.fit(&line))?;
    }
    Ok(())
}

pub fn events_json(out: &mut dyn Write, events: &[Event]) -> io::Result<()> {
    let items: Vec<EventJson> = events.iter().map(EventJson::new).collect();
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
