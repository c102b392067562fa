//! What `tend top` shows, apart from how it is drawn: one row per service made from the
//! supervisor's [`Status`] and a usage sample, the CPU rate between two samples, the
//! filter, the selection (kept by name, so a refresh that reorders or hides rows does not
//! move it), and which columns fit a width.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::app::output::fmt_uptime;
use crate::app::term::escape_owned;
use crate::record::now_ms;
use crate::state::State;
use ratatui::widgets::TableState;

use crate::pg::fleet::operator::HostView;
use crate::supervisor::Status as Listed;

/// A line of the status bar: what the last action did, or why a refresh failed.
pub struct Status {
    pub text: String,
    pub error: bool,
}

/// Everything a frame is drawn from.
pub struct View {
    pub interval: Duration,
    pub rows: Vec<Row>,
    pub selection: Selection,
    /// Where the table is scrolled to, kept between frames.
    pub table: TableState,
    /// Typing a filter after `/`.
    pub editing: bool,
    pub log_open: bool,
    /// The selected service's log: (service, lines).
    pub log: Option<(String, Vec<String>)>,
    pub status: Option<Status>,
    /// Actions sent and not answered yet.
    pub pending: usize,
    /// A daemon watches this home.
    pub daemon: bool,
    /// Fleet mode: every host's services, as published in PostgreSQL.
    pub fleet: bool,
    /// Colour states and errors (`NO_COLOR` unset, `TERM` not `dumb`).
    pub color: bool,
}

impl View {
    pub fn new(interval: Duration) -> View {
        View {
            interval,
            rows: Vec::new(),
            selection: Selection::default(),
            table: TableState::default(),
            editing: false,
            log_open: false,
            log: None,
            status: None,
            pending: 0,
            daemon: false,
            fleet: false,
            color: crate::app::term::Term::stdout(true).color,
        }
    }
}

/// One service as a row.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Row {
    pub name: String,
    /// As `tend list` says it, shortened to fit a column (`restarting (no daemon)` is
    /// `restarting`; the header says whether a daemon runs).
    pub state: String,
    pub pid: Option<i32>,
    pub started_at: Option<i64>,
    pub restarts: u32,
    /// `code 1 (3m ago)`.
    pub last_exit: Option<String>,
    /// Percent of one CPU since the previous sample; `None` on the first sample of an
    /// instance or when nothing could be read.
    pub cpu: Option<f64>,
    /// Bytes: the cgroup's `memory.current`, else the RSS of the process tree.
    pub memory: Option<u64>,
    /// CPU and memory come from a cgroup (else from /proc).
    pub cgroup: bool,
    /// Where stdout and stderr go: the log pane reads them (which of them are files is
    /// looked at only then, not for every row at every refresh).
    pub stdout: PathBuf,
    pub stderr: PathBuf,
    /// Fleet mode: the host the service runs on, and how long ago it was heard from.
    pub host: Option<String>,
    pub seen: Option<String>,
}

/// CPU time seen at the previous sample of each instance, to turn totals into a rate.
#[derive(Default)]
pub struct Sampler {
    /// (name, pid) → (CPU µs, when read).
    previous: HashMap<(String, i32), (u64, Instant)>,
}

impl Sampler {
    /// Rows for `statuses` (sorted by name, as the supervisor lists them), reading the
    /// usage of each running instance that has no cgroup from /proc.
    pub fn rows(&mut self, statuses: &[Listed], now: Instant) -> Vec<Row> {
        let mut next = HashMap::with_capacity(statuses.len());
        let rows = statuses
            .iter()
            .map(|st| {
                let mut row = Row::from_status(st);
                let Some(pid) = row.pid else {
                    return row;
                };
                let tree = || crate::process::usage::tree(pid);
                let usage = match st.cgroup.as_ref().filter(|c| c.path.is_some()) {
                    Some(cg) => {
                        row.cgroup = true;
                        // Without the memory controller a cgroup counts CPU only: the
                        // memory is then the process tree's.
                        let memory = cg
                            .usage
                            .memory_current
                            .or_else(|| tree().map(|t| t.rss_bytes));
                        cg.usage.cpu_usec.map(|cpu| (cpu, memory))
                    }
                    None => tree().map(|t| (t.cpu_usec, Some(t.rss_bytes))),
                };
                if let Some((cpu_usec, memory)) = usage {
                    row.memory = memory;
                    let key = (row.name.clone(), pid);
                    if let Some(&(before, at)) = self.previous.get(&key) {
                        row.cpu = cpu_percent(before, cpu_usec, now.saturating_duration_since(at));
                    }
                    next.insert(key, (cpu_usec, now));
                }
                row
            })
            .collect();
        // Instances that are gone are forgotten.
        self.previous = next;
        rows
    }
}

impl Row {
    fn from_status(st: &Listed) -> Row {
        let set = &st.service.settings;
        let rt = &st.runtime;
        let now = now_ms();
        let last_exit = rt.last_exit.as_ref().map(|e| match rt.last_exit_at {
            Some(at) => format!(
                "{} ({} ago)",
                escape_owned(e.clone()),
                fmt_uptime(Duration::from_millis((now - at).max(0) as u64))
            ),
            None => escape_owned(e.clone()),
        });
        let state = match st.state {
            State::Backoff { .. } => "restarting",
            ref s => s.label(),
        }
        .to_string();
        Row {
            name: escape_owned(st.service.name.clone()),
            state,
            pid: st.instance.as_ref().map(|i| i.pid),
            started_at: st.instance.as_ref().map(|i| i.started_at),
            restarts: rt.restarts,
            last_exit,
            cpu: None,
            memory: None,
            cgroup: false,
            stdout: set.stdout.clone(),
            stderr: set.stderr.clone(),
            host: None,
            seen: None,
        }
    }

    /// What identifies the row across refreshes: the name, and in fleet mode the host.
    pub fn key(&self) -> String {
        match &self.host {
            Some(h) => format!("{h}/{}", self.name),
            None => self.name.clone(),
        }
    }

    /// How long the instance has run, as `tend list` shows it.
    pub fn uptime(&self) -> Option<String> {
        self.started_at
            .map(|at| fmt_uptime(Duration::from_millis((now_ms() - at).max(0) as u64)))
    }
}

/// Fleet mode: one row per service of every host, as the hosts last published them
/// (a host without services gets one row of its own, `-`).
pub fn fleet_rows(hosts: &[HostView]) -> Vec<Row> {
    let mut rows = Vec::new();
    for h in hosts {
        let ago = fmt_uptime(Duration::from_millis(h.age_ms.max(0) as u64));
        let seen = if h.stale {
            format!("{ago} ago STALE")
        } else {
            format!("{ago} ago")
        };
        let row = |name: String, state: String| Row {
            name,
            state,
            host: Some(escape_owned(h.host.clone())),
            seen: Some(seen.clone()),
            ..Row::default()
        };
        if h.services.is_empty() {
            rows.push(row("-".into(), "-".into()));
        }
        for v in &h.services {
            let mut r = row(escape_owned(v.name.clone()), escape_owned(v.state.clone()));
            r.pid = v.pid;
            r.started_at = v.since;
            rows.push(r);
        }
    }
    rows
}

/// Percent of one CPU: CPU time used between two samples over the wall time between them.
/// `None` when no time passed or the counter went back (a new instance with the same pid).
pub fn cpu_percent(before_usec: u64, now_usec: u64, elapsed: Duration) -> Option<f64> {
    let wall = elapsed.as_micros() as f64;
    if wall <= 0.0 || now_usec < before_usec {
        return None;
    }
    Some((now_usec - before_usec) as f64 * 100.0 / wall)
}

/// `512K`, `12.3M`, `1.5G`: memory in binary units, short enough for a column.
pub fn fmt_bytes(b: u64) -> String {
    const K: f64 = 1024.0;
    let b = b as f64;
    if b < K * K {
        format!("{:.0}K", b / K)
    } else if b < K * K * K {
        format!("{:.1}M", b / (K * K))
    } else {
        format!("{:.1}G", b / (K * K * K))
    }
}

/// A column of the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Col {
    Host,
    Name,
    State,
    Pid,
    Uptime,
    Restarts,
    LastExit,
    Cpu,
    Memory,
    Seen,
}

impl Col {
    pub const ALL: [Col; 8] = [
        Col::Name,
        Col::State,
        Col::Pid,
        Col::Uptime,
        Col::Restarts,
        Col::LastExit,
        Col::Cpu,
        Col::Memory,
    ];

    pub fn title(self) -> &'static str {
        match self {
            Col::Host => "HOST",
            Col::Seen => "LAST SEEN",
            Col::Name => "NAME",
            Col::State => "STATE",
            Col::Pid => "PID",
            Col::Uptime => "UPTIME",
            Col::Restarts => "RESTARTS",
            Col::LastExit => "LAST EXIT",
            Col::Cpu => "CPU%",
            Col::Memory => "MEM",
        }
    }

    /// Width of the column; the name's is its least, it takes what is left.
    pub fn width(self) -> u16 {
        match self {
            Col::Host => 12,
            Col::Seen => 16,
            Col::Name => 10,
            Col::State => 10,
            Col::Pid => 8,
            Col::Uptime => 7,
            Col::Restarts => 8,
            Col::LastExit => 20,
            Col::Cpu => 6,
            Col::Memory => 7,
        }
    }
}

/// Which columns are dropped first when the terminal is narrow: the history before the
/// present, and the name and state never.
const DROP_ORDER: [Col; 7] = [
    Col::Seen,
    Col::LastExit,
    Col::Restarts,
    Col::Uptime,
    Col::Pid,
    Col::Memory,
    Col::Cpu,
];

/// The columns of fleet mode: what the hosts publish (no CPU or memory).
const FLEET: [Col; 6] = [
    Col::Host,
    Col::Name,
    Col::State,
    Col::Pid,
    Col::Uptime,
    Col::Seen,
];

/// The columns that fit `width` cells (one cell between columns), in display order.
pub fn columns(width: u16, fleet: bool) -> Vec<Col> {
    let mut cols = if fleet {
        FLEET.to_vec()
    } else {
        Col::ALL.to_vec()
    };
    let need = |cols: &[Col]| -> u32 {
        cols.iter().map(|c| u32::from(c.width())).sum::<u32>() + cols.len() as u32 - 1
    };
    for drop in DROP_ORDER {
        if need(&cols) <= u32::from(width) {
            break;
        }
        cols.retain(|c| *c != drop);
    }
    cols
}

/// The filter (`/`), the selection and the rows it lets through.
#[derive(Default)]
pub struct Selection {
    pub filter: String,
    /// The selected row, by [`Row::key`].
    pub name: Option<String>,
}

impl Selection {
    /// Rows whose name (or host) contains the filter (case-insensitive).
    pub fn visible<'a>(&self, rows: &'a [Row]) -> Vec<&'a Row> {
        let f = self.filter.to_lowercase();
        rows.iter()
            .filter(|r| f.is_empty() || r.key().to_lowercase().contains(&f))
            .collect()
    }

    /// Index of the selection among `visible`; the first row when the selected one is
    /// gone or hidden (and the selection follows it).
    pub fn index(&mut self, visible: &[&Row]) -> Option<usize> {
        if visible.is_empty() {
            return None;
        }
        let i = self
            .name
            .as_ref()
            .and_then(|n| visible.iter().position(|r| &r.key() == n))
            .unwrap_or(0);
        self.name = Some(visible[i].key());
        Some(i)
    }

    /// Moves the selection by `delta` rows within `visible`, stopping at the ends.
    pub fn step(&mut self, visible: &[&Row], delta: isize) {
        if let Some(i) = self.index(visible) {
            let j = (i as isize + delta).clamp(0, visible.len() as isize - 1) as usize;
            self.name = Some(visible[j].key());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str) -> Row {
        Row {
            name: name.into(),
            ..Row::default()
        }
    }

    #[test]
    fn cpu_rate_between_samples() {
        let s = Duration::from_secs(1);
        assert_eq!(cpu_percent(0, 500_000, s), Some(50.0));
        assert_eq!(cpu_percent(0, 2_000_000, s), Some(200.0));
        assert_eq!(cpu_percent(10, 5, s), None);
        assert_eq!(cpu_percent(0, 5, Duration::ZERO), None);
    }

    #[test]
    fn bytes_are_short() {
        assert_eq!(fmt_bytes(512 * 1024), "512K");
        assert_eq!(fmt_bytes(12 * 1024 * 1024 + 300 * 1024), "12.3M");
        assert_eq!(fmt_bytes(3 << 30), "3.0G");
    }

    #[test]
    fn columns_drop_history_first_and_never_name_or_state() {
        assert_eq!(columns(200, false), Col::ALL.to_vec());
        assert_eq!(
            columns(40, false),
            vec![Col::Name, Col::State, Col::Cpu, Col::Memory]
        );
        assert_eq!(columns(60, false).len(), 6);
        assert_eq!(columns(5, false), vec![Col::Name, Col::State]);
        assert_eq!(columns(0, false), vec![Col::Name, Col::State]);
        assert_eq!(columns(200, true), FLEET.to_vec());
        assert_eq!(columns(40, true), vec![Col::Host, Col::Name, Col::State]);
    }

    #[test]
    fn selection_follows_the_name_through_filter_and_refresh() {
        let rows = vec![row("api"), row("web"), row("worker")];
        let mut sel = Selection::default();
        let all = sel.visible(&rows);
        assert_eq!(sel.index(&all), Some(0));
        sel.step(&all, 1);
        assert_eq!(sel.name.as_deref(), Some("web"));
        sel.step(&all, 5);
        assert_eq!(sel.name.as_deref(), Some("worker"));
        sel.filter = "W".into();
        let some = sel.visible(&rows);
        assert_eq!(some.len(), 2);
        assert_eq!(sel.index(&some), Some(1));
        sel.filter = "nothing".into();
        let none = sel.visible(&rows);
        assert_eq!(sel.index(&none), None);
        sel.filter = "api".into();
        let one = sel.visible(&rows);
        assert_eq!(sel.index(&one), Some(0));
        assert_eq!(sel.name.as_deref(), Some("api"));
    }
}
