//! Waiting until a started service is ready (`tend start --wait`): its `ready` check
//! passes, or, without one, it stays up for a grace period (supervisord's `startsecs`).
//! The instance is then marked ready in the store (`starting` → `running`). A service
//! that exits first is reported with its exit status and the end of its log.

use std::time::{Duration, Instant};

use super::instances::lookup;
use super::start::read_env_file;
use super::{StartOutcome, Supervisor};
use crate::error::Result;
use crate::policy::ExitStatus;
use crate::probe;
use crate::process::check;
use crate::process::handle::Handle;
use crate::record::now_ms;
use crate::service::probe::Check;

/// How long a service without a `ready` check must stay up for `--wait`.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(1);
/// Lines of the log shown when a service exits before it is ready.
const LOG_LINES: usize = 10;

/// Time between checks: short at first, since most services are ready within
/// milliseconds and half an interval, on average, is latency added to `start --wait`
/// (a refused connection to localhost costs microseconds); longer after.
fn interval(waited: Duration) -> Duration {
    if waited < Duration::from_millis(200) {
        Duration::from_millis(1)
    } else if waited < Duration::from_secs(2) {
        Duration::from_millis(20)
    } else {
        Duration::from_millis(100)
    }
}

impl Supervisor {
    /// Waits until `name`'s running instance is ready, up to `cap` (default: its check's
    /// timeout). `Ready` or `NotReady`; a service not running is `NotReady`.
    pub fn wait_ready(&mut self, name: &str, cap: Option<Duration>) -> Result<StartOutcome> {
        let began = Instant::now();
        let (id, svc, inst, marked, log_from) = self.store.read(|tx| {
            let (id, svc) = lookup(tx, name)?;
            let inst = tx.instance(id)?;
            Ok((
                id,
                svc,
                inst,
                tx.ready_marks()?.remove(&id),
                tx.log_from(id)?,
            ))
        })?;
        let Some(inst) = inst else {
            return Ok(StartOutcome::NotReady {
                pid: 0,
                reason: "not running".into(),
                status: None,
                log: self.log_tail(&svc),
            });
        };
        if marked.is_some() {
            return Ok(StartOutcome::Ready {
                pid: inst.pid,
                took: Duration::ZERO,
            });
        }
        let (check, limit) = match &svc.settings.ready {
            Some(p) => (p.check.clone(), p.ready_timeout()),
            None => (
                Check::Grace {
                    after: DEFAULT_GRACE,
                },
                DEFAULT_GRACE,
            ),
        };
        let limit = match (&check, cap) {
            (_, Some(c)) => c,
            // A grace period is waited out in full, whatever the timeout says.
            (Check::Grace { after }, None) => (*after).max(limit),
            (_, None) => limit,
        };
        let deadline = began + limit;
        // Pinned even if it already exited (a zombie of ours), to learn its status.
        let handle = Handle::pin(inst.pid)
            .map(|(h, _)| h)
            .filter(|h| h.start_time() == inst.start_time);
        let file_env = read_env_file(&svc)?;
        let setup =
            super::start::setup_of(&svc).map_err(|e| super::start::start_error(&svc.name, e))?;
        let env = super::start::service_env(&svc, &file_env, &setup);
        let board = self.ctx.board.clone();
        let cgroups = self.containment().root().cloned();
        let proceed = self.proceeding();
        let mut last = String::new();
        loop {
            // A caller that left (a client that gave up on the daemon) is not waited for.
            if !self.proceed() {
                return Ok(StartOutcome::NotReady {
                    pid: inst.pid,
                    reason: "no longer waited for".into(),
                    status: None,
                    log: Vec::new(),
                });
            }
            let gone = match &handle {
                Some(h) => h.exited(),
                None => true,
            };
            if gone {
                let status = match &handle {
                    Some(h) => self.fresh_exit_status(h),
                    None => None,
                };
                if self.ctx.board.is_none() {
                    // Without a daemon nobody else will ever know this status.
                    self.exit_seen(id, &inst, status.unwrap_or(ExitStatus::Unknown))?;
                }
                return Ok(StartOutcome::NotReady {
                    pid: inst.pid,
                    reason: "exited before it was ready".into(),
                    status: status.map(|s| s.to_string()),
                    log: self.log_tail(&svc),
                });
            }
            let now = Instant::now();
            let passed = match &check {
                Check::Grace { after } => {
                    let up = Duration::from_millis((now_ms() - inst.started_at).max(0) as u64);
                    if up >= *after {
                        true
                    } else {
                        // Sleeps until the grace period ends, or wakes when it exits.
                        let h = handle.as_ref().expect("checked above");
                        h.wait((*after - up).min(deadline.saturating_duration_since(now)));
                        last = "still within its grace period".into();
                        false
                    }
                }
                c => {
                    let store = std::cell::RefCell::new(&mut self.store);
                    let owned = || super::stop::sessions_elsewhere(&mut store.borrow_mut(), None);
                    let target = probe::Target {
                        cwd: &svc.settings.cwd,
                        env: &env,
                        log: &svc.settings.stdout,
                        log_from: log_from.as_ref(),
                        scope: check::Scope {
                            board: board.as_deref(),
                            cgroups: cgroups.as_ref(),
                            proceed: &proceed,
                            owned: &owned,
                            setup: &setup,
                        },
                    };
                    let left = deadline.saturating_duration_since(now);
                    match probe::run(c, &target, left.min(Duration::from_secs(5))) {
                        Ok(()) => true,
                        Err(e) => {
                            last = e;
                            false
                        }
                    }
                }
            };
            if passed {
                self.store.write(|tx| tx.mark_ready(id, &inst, now_ms()))?;
                return Ok(StartOutcome::Ready {
                    pid: inst.pid,
                    took: began.elapsed(),
                });
            }
            let now = Instant::now();
            // A grace period waited out in full ends only when the service has been up
            // that long by its recorded start (wall-clock ms): at the deadline it can
            // still lack a millisecond of it (the two clocks, rounding), which on a busy
            // machine failed a start that was fine.
            let grace_in_full = cap.is_none() && matches!(check, Check::Grace { .. });
            if now >= deadline && !grace_in_full {
                return Ok(StartOutcome::NotReady {
                    pid: inst.pid,
                    reason: format!(
                        "not ready after {}{}",
                        crate::service::fmt_duration(limit),
                        if last.is_empty() {
                            String::new()
                        } else {
                            format!(" ({last})")
                        }
                    ),
                    status: None,
                    log: Vec::new(),
                });
            }
            if let Some(h) = &handle {
                // Wakes at once if the service exits meanwhile.
                h.wait(
                    interval(began.elapsed()).min(
                        deadline
                            .saturating_duration_since(now)
                            .max(Duration::from_millis(1)),
                    ),
                );
            }
        }
    }

    /// The last lines of `name`'s log.
    pub fn log_tail_of(&mut self, name: &str) -> Result<Vec<String>> {
        let (_, svc) = self.store.read(|tx| lookup(tx, name))?;
        Ok(self.log_tail(&svc))
    }

    /// The last lines of the service's log.
    pub(super) fn log_tail(&self, svc: &crate::service::Service) -> Vec<String> {
        let mut buf = Vec::new();
        let _ = crate::logs::tail(&mut buf, &svc.settings.stdout, LOG_LINES);
        String::from_utf8_lossy(&buf)
            .lines()
            .map(String::from)
            .collect()
    }
}
