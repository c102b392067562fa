//! CPU time and resident memory of a process and its descendants, from /proc: what
//! `tend top` shows for a service that has no cgroup (a cgroup's own counters are read
//! by [`super::cgroup::Cgroup::usage`]).
//!
//! Descendants are found through `/proc/PID/task/TID/children`, so a helper that was
//! double-forked away (re-parented to init or to a subreaper) is not counted: only a
//! cgroup catches those.

use std::sync::OnceLock;

/// What a tree of processes uses, summed over its live members.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TreeUsage {
    /// User plus system CPU time, in microseconds (the unit of cgroup's `cpu.stat`).
    pub cpu_usec: u64,
    /// Resident set size, in bytes.
    pub rss_bytes: u64,
    /// How many processes were counted.
    pub processes: usize,
}

/// A tree can hold at most this many processes before the walk stops: a fork bomb under
/// a service must not make `tend top` itself spin.
const MAX_PROCESSES: usize = 4096;

/// Usage of `pid` and every process below it. `None` when `pid` is gone.
pub fn tree(pid: i32) -> Option<TreeUsage> {
    let mut total = TreeUsage::default();
    let mut todo = vec![pid];
    let mut first = true;
    while let Some(p) = todo.pop() {
        match one(p) {
            Some((cpu, rss)) => {
                total.cpu_usec += cpu;
                total.rss_bytes += rss;
                total.processes += 1;
            }
            None if first => return None,
            None => {}
        }
        first = false;
        if total.processes >= MAX_PROCESSES {
            break;
        }
        todo.extend(super::handle::children(p));
    }
    Some(total)
}

/// (CPU µs, RSS bytes) of one process, from its stat line.
fn one(pid: i32) -> Option<(u64, u64)> {
    let line = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
    let (ticks, pages) = parse(&line)?;
    let hz = clock_ticks().max(1);
    Some((ticks * 1_000_000 / hz, pages * page_size()))
}

/// utime + stime (fields 14 and 15, in clock ticks) and rss (field 24, in pages) of a
/// stat line. Fields are counted from the last `)`: the command name may hold anything.
pub fn parse(line: &[u8]) -> Option<(u64, u64)> {
    let close = line.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(line.get(close + 2..)?).ok()?;
    // rest starts at field 3.
    let mut fields = rest.split_ascii_whitespace();
    let utime: u64 = fields.nth(14 - 3)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    let rss: i64 = fields.nth(24 - 16)?.parse().ok()?;
    Some((utime + stime, rss.max(0) as u64))
}

fn clock_ticks() -> u64 {
    static HZ: OnceLock<u64> = OnceLock::new();
    // SAFETY: sysconf only reads a configuration value; it has no pointer arguments.
    *HZ.get_or_init(|| match unsafe { libc::sysconf(libc::_SC_CLK_TCK) } {
        n if n > 0 => n as u64,
        _ => 100,
    })
}

fn page_size() -> u64 {
    static PAGE: OnceLock<u64> = OnceLock::new();
    // SAFETY: as above, a read of a configuration value.
    *PAGE.get_or_init(|| match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
        n if n > 0 => n as u64,
        _ => 4096,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cpu_and_rss_past_a_strange_name() {
        // Fields 3.. of a real line, behind a name holding a space and a parenthesis.
        let line = b"4242 (we ird) x) S 1 4242 4242 0 -1 4194560 120 0 0 0 7 5 0 0 20 0 1 0 \
                     9999 12345678 321 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0";
        assert_eq!(parse(line), Some((12, 321)));
        assert_eq!(parse(b"garbage"), None);
    }

    #[test]
    fn own_tree_is_seen_and_a_missing_pid_is_not() {
        let me = tree(std::process::id() as i32).expect("this process exists");
        assert!(me.processes >= 1 && me.rss_bytes > 0);
        assert_eq!(tree(i32::MAX), None);
    }
}
