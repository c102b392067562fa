//! `tend metrics` and the daemon's `GET /metrics`: what tend knows, in the Prometheus
//! text exposition format (version 0.0.4).
//!
//! Names follow Prometheus conventions: a `tend_` prefix, base units (seconds, bytes),
//! `_total` for counters, one family per name with its `# HELP` and `# TYPE` lines, and
//! label values escaped as the format requires (`\\`, `\"`, `\n`). A state is a family of
//! 0/1 gauges, one per state a service can be in, so a query never has to know the
//! names it did not see.
//!
//! Service figures come from the same look as `tend list --json` (the same identity
//! check); CPU time and memory from the instance's cgroup where it has one, otherwise
//! from its main process and the processes below it (which misses what was
//! double-forked away). The daemon's counters are kept in [`COUNTERS`], process-wide:
//! one daemon per process.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::supervisor::Status;

/// Every state a service can be in, as `tend list --json` names them (a service being
/// stopped is `running` until it has exited).
pub const STATES: &[&str] = &[
    "running",
    "starting",
    "stopped",
    "restarting",
    "failed",
    "unknown",
];

/// The daemon's counters since it started. Each transport adds to its own.
#[derive(Default)]
pub struct Counters {
    /// Requests carried out for the CLI on the control socket.
    pub socket_requests: AtomicU64,
    /// HTTP requests answered (any status).
    pub http_requests: AtomicU64,
    /// Automatic restarts the daemon carried out (its restart policy).
    pub restarts: AtomicU64,
    /// Quick-mode NOTIFY payloads carried out.
    pub notify_taken: AtomicU64,
    /// Quick-mode NOTIFY payloads refused (bad signature, replay, unknown service...).
    pub notify_refused: AtomicU64,
    /// Fleet commands this host carried out.
    pub fleet_done: AtomicU64,
    /// Fleet commands this host took but could not carry out (reported failed).
    pub fleet_failed: AtomicU64,
}

/// The daemon's counters: there is one daemon per process.
pub static COUNTERS: Counters = Counters {
    socket_requests: AtomicU64::new(0),
    http_requests: AtomicU64::new(0),
    restarts: AtomicU64::new(0),
    notify_taken: AtomicU64::new(0),
    notify_refused: AtomicU64::new(0),
    fleet_done: AtomicU64::new(0),
    fleet_failed: AtomicU64::new(0),
};

/// Adds one to a counter.
pub fn count(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// The counters' values at one moment, as the daemon reports them in its status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CounterValues {
    pub socket_requests: u64,
    pub http_requests: u64,
    pub restarts: u64,
    pub notify_taken: u64,
    pub notify_refused: u64,
    pub fleet_done: u64,
    pub fleet_failed: u64,
}

impl Counters {
    pub fn values(&self) -> CounterValues {
        let v = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CounterValues {
            socket_requests: v(&self.socket_requests),
            http_requests: v(&self.http_requests),
            restarts: v(&self.restarts),
            notify_taken: v(&self.notify_taken),
            notify_refused: v(&self.notify_refused),
            fleet_done: v(&self.fleet_done),
            fleet_failed: v(&self.fleet_failed),
        }
    }
}

/// What the daemon adds to the services' figures.
#[derive(Clone, Copy, Debug)]
pub struct DaemonFigures {
    /// Unix ms.
    pub started_at: i64,
    pub counters: CounterValues,
}

/// CPU time and memory of one running instance, where known.
#[derive(Clone, Copy, Debug, Default)]
pub struct Usage {
    pub cpu_usec: Option<u64>,
    pub memory_bytes: Option<u64>,
}

/// The usage of `st`'s running instance: its cgroup's counters where it has them, else
/// its main process and the processes below it.
pub fn usage_of(st: &Status) -> Usage {
    let Some(inst) = st.instance.as_ref().filter(|_| st.state.is_running()) else {
        return Usage::default();
    };
    let cg = st.cgroup.as_ref().map(|c| &c.usage);
    let mut u = Usage {
        cpu_usec: cg.and_then(|c| c.cpu_usec),
        memory_bytes: cg.and_then(|c| c.memory_current),
    };
    if u.cpu_usec.is_none() || u.memory_bytes.is_none() {
        if let Some(t) = crate::process::usage::tree(inst.pid) {
            u.cpu_usec = u.cpu_usec.or(Some(t.cpu_usec));
            u.memory_bytes = u.memory_bytes.or(Some(t.rss_bytes));
        }
    }
    u
}

/// Escapes a label value: backslash, double quote and line feed.
pub fn escape_label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// One metric family being written: its header once, then its samples.
struct Family<'a> {
    out: &'a mut String,
}

impl<'a> Family<'a> {
    fn new(out: &'a mut String, name: &str, kind: &str, help: &str) -> Family<'a> {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        Family { out }
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape_label(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {}", number(value));
    }
}

/// A sample value as the format writes it: integers without a fraction.
fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// The exit code or signal number of `last_exit` (`code N`, `signal NAME`).
fn last_exit(s: &str) -> (Option<i32>, Option<i32>) {
    if let Some(code) = s.strip_prefix("code ") {
        return (code.trim().parse().ok(), None);
    }
    if let Some(sig) = s.strip_prefix("signal ") {
        // Any signal, not only those a stop may use (`StopSignal` refuses KILL).
        let sig = sig.trim();
        let number = sig.parse::<i32>().ok().or_else(|| {
            let full = if sig.starts_with("SIG") {
                sig.to_string()
            } else {
                format!("SIG{sig}")
            };
            full.parse::<nix::sys::signal::Signal>()
                .ok()
                .map(|s| s as i32)
        });
        return (None, number);
    }
    (None, None)
}

/// The whole exposition: every service of `rows` (with `usage`, in the same order),
/// then the daemon's own figures when one runs.
pub fn render(rows: &[(Status, Usage)], daemon: Option<&DaemonFigures>) -> String {
    let mut out = String::new();
    let name_of = |st: &Status| st.service.name.clone();

    let mut f = Family::new(
        &mut out,
        "tend_service_up",
        "gauge",
        "1 when the service has a running instance, else 0.",
    );
    for (st, _) in rows {
        f.sample(
            "tend_service_up",
            &[("service", &name_of(st))],
            st.state.is_running() as u8 as f64,
        );
    }

    let mut f = Family::new(
        &mut out,
        "tend_service_state",
        "gauge",
        "1 for the state the service is in, 0 for the others.",
    );
    for (st, _) in rows {
        let name = name_of(st);
        for s in STATES {
            f.sample(
                "tend_service_state",
                &[("service", &name), ("state", s)],
                (st.state.name() == *s) as u8 as f64,
            );
        }
    }

    let mut f = Family::new(
        &mut out,
        "tend_service_restarts_total",
        "counter",
        "Automatic restarts since the service was last started by hand.",
    );
    for (st, _) in rows {
        f.sample(
            "tend_service_restarts_total",
            &[("service", &name_of(st))],
            st.runtime.restarts as f64,
        );
    }

    let mut f = Family::new(
        &mut out,
        "tend_service_last_exit_code",
        "gauge",
        "Exit code of the service's last exit, when it exited with one.",
    );
    for (st, _) in rows {
        if let (Some(code), _) = last_exit(st.runtime.last_exit.as_deref().unwrap_or("")) {
            f.sample(
                "tend_service_last_exit_code",
                &[("service", &name_of(st))],
                code as f64,
            );
        }
    }

    let mut f = Family::new(
        &mut out,
        "tend_service_last_exit_signal",
        "gauge",
        "Number of the signal that ended the service's last exit, when a signal did.",
    );
    for (st, _) in rows {
        if let (_, Some(sig)) = last_exit(st.runtime.last_exit.as_deref().unwrap_or("")) {
            f.sample(
                "tend_service_last_exit_signal",
                &[("service", &name_of(st))],
                sig as f64,
            );
        }
    }

    let mut f = Family::new(
        &mut out,
        "tend_service_start_time_seconds",
        "gauge",
        "Unix time the running instance started.",
    );
    for (st, _) in rows {
        if let Some(i) = st.instance.as_ref().filter(|_| st.state.is_running()) {
            f.sample(
                "tend_service_start_time_seconds",
                &[("service", &name_of(st))],
                i.started_at as f64 / 1000.0,
            );
        }
    }

    let mut f = Family::new(
        &mut out,
        "tend_service_cpu_seconds_total",
        "counter",
        "CPU time (user and system) of the running instance.",
    );
    for (st, u) in rows {
        if let Some(us) = u.cpu_usec {
            f.sample(
                "tend_service_cpu_seconds_total",
                &[("service", &name_of(st))],
                us as f64 / 1e6,
            );
        }
    }

    let mut f = Family::new(
        &mut out,
        "tend_service_memory_bytes",
        "gauge",
        "Memory of the running instance: its cgroup's memory.current, or the resident \
         size of its processes.",
    );
    for (st, u) in rows {
        if let Some(b) = u.memory_bytes {
            f.sample(
                "tend_service_memory_bytes",
                &[("service", &name_of(st))],
                b as f64,
            );
        }
    }

    let mut f = Family::new(
        &mut out,
        "tend_daemon_up",
        "gauge",
        "1 when a daemon supervises this home.",
    );
    f.sample("tend_daemon_up", &[], daemon.is_some() as u8 as f64);
    let Some(d) = daemon else {
        return out;
    };
    let now = crate::record::now_ms();
    let mut f = Family::new(
        &mut out,
        "tend_daemon_start_time_seconds",
        "gauge",
        "Unix time the daemon started.",
    );
    f.sample(
        "tend_daemon_start_time_seconds",
        &[],
        d.started_at as f64 / 1000.0,
    );
    let mut f = Family::new(
        &mut out,
        "tend_daemon_uptime_seconds",
        "gauge",
        "Seconds since the daemon started.",
    );
    f.sample(
        "tend_daemon_uptime_seconds",
        &[],
        ((now - d.started_at).max(0) / 1000) as f64,
    );
    let c = d.counters;
    let mut f = Family::new(
        &mut out,
        "tend_daemon_requests_total",
        "counter",
        "Requests the daemon served, by transport.",
    );
    f.sample(
        "tend_daemon_requests_total",
        &[("transport", "socket")],
        c.socket_requests as f64,
    );
    f.sample(
        "tend_daemon_requests_total",
        &[("transport", "http")],
        c.http_requests as f64,
    );
    let mut f = Family::new(
        &mut out,
        "tend_daemon_restarts_total",
        "counter",
        "Automatic restarts the daemon carried out.",
    );
    f.sample("tend_daemon_restarts_total", &[], c.restarts as f64);
    let mut f = Family::new(
        &mut out,
        "tend_daemon_notify_commands_total",
        "counter",
        "Quick-mode NOTIFY commands, by result.",
    );
    f.sample(
        "tend_daemon_notify_commands_total",
        &[("result", "taken")],
        c.notify_taken as f64,
    );
    f.sample(
        "tend_daemon_notify_commands_total",
        &[("result", "refused")],
        c.notify_refused as f64,
    );
    let mut f = Family::new(
        &mut out,
        "tend_daemon_fleet_commands_total",
        "counter",
        "Fleet commands this host took, by result.",
    );
    f.sample(
        "tend_daemon_fleet_commands_total",
        &[("result", "done")],
        c.fleet_done as f64,
    );
    f.sample(
        "tend_daemon_fleet_commands_total",
        &[("result", "failed")],
        c.fleet_failed as f64,
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label(r#"a\b"c"#), r#"a\\b\"c"#);
        assert_eq!(escape_label("x\ny"), "x\\ny");
    }

    #[test]
    fn exits_are_read() {
        assert_eq!(last_exit("code 3"), (Some(3), None));
        assert_eq!(last_exit("signal KILL"), (None, Some(9)));
        assert_eq!(last_exit("signal SIGTERM"), (None, Some(15)));
        assert_eq!(last_exit("signal STOP"), (None, Some(19)));
        assert_eq!(last_exit("unknown"), (None, None));
    }

    #[test]
    fn without_services_or_daemon() {
        let text = render(&[], None);
        assert!(text.contains("# TYPE tend_service_up gauge\n"), "{text}");
        assert!(text.ends_with("tend_daemon_up 0\n"), "{text}");
    }
}
