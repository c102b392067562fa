//! Programs that daemonize themselves (`--pidfile`, systemd's `Type=forking` with
//! `PIDFile=`): the process tend started forks the real service and exits; tend waits for
//! that, reads the pid file, and takes the pid it names as the instance's main process —
//! only if that process is in the instance's cgroup, which is the proof that it is the
//! service's and not whatever process a stale or forged pid file names.

use std::path::Path;
use std::time::{Duration, Instant};

use super::{StartOutcome, Supervisor};
use crate::error::{Error, Result, SpawnError};
use crate::policy::ExitStatus;
use crate::process::cgroup::Cgroup;
use crate::process::handle::Handle;
use crate::process::stop;
use crate::record::{event, now_ms, Instance};
use crate::service::{files, Service};

/// How long the first process may take to exit (systemd's TimeoutStartSec is 90 s; a
/// daemonizing program that takes longer is waiting on something it should not).
pub(super) const FORKING_TIMEOUT: Duration = Duration::from_secs(10);
/// How long after the first process exited the pid file may take to name the service.
const PIDFILE_WAIT: Duration = Duration::from_secs(1);
/// The most a pid file may hold: a number and a newline, with room to spare.
const PIDFILE_CAP: u64 = 4096;

/// A record of a `--pidfile` service whose first process may still be handing over to
/// the daemonized one: its exit (code 0) is the start's to handle, not an exit.
pub(super) fn handing_over(inst: &Instance) -> bool {
    inst.launching
        && now_ms() - inst.started_at < (FORKING_TIMEOUT + PIDFILE_WAIT).as_millis() as i64 + 1000
}

impl Supervisor {
    /// After the first process of a `--pidfile` service exec'd: waits for it to exit,
    /// reads the pid file and records the process it names as the instance.
    pub(super) fn follow_fork(
        &mut self,
        id: i64,
        svc: &Service,
        inst: &Instance,
        first: &Handle,
        leaf: &Cgroup,
        pidfile: &Path,
    ) -> Result<StartOutcome> {
        let fail = |message: String| Error::Start {
            service: svc.name.clone(),
            source: SpawnError::Forking(message),
        };
        if !first.wait(FORKING_TIMEOUT) {
            self.give_back(id, inst, leaf, ExitStatus::Unknown)?;
            return Err(fail(format!(
                "its first process (pid {}) did not exit within {}s; a service with \
                 --pidfile must daemonize (or drop --pidfile to run it in the foreground)",
                inst.pid,
                FORKING_TIMEOUT.as_secs()
            )));
        }
        match self.fresh_exit_status(first) {
            Some(ExitStatus::Code(0)) => {}
            other => {
                let status = other.unwrap_or(ExitStatus::Unknown);
                self.give_back(id, inst, leaf, status)?;
                return Ok(StartOutcome::ExitedAtOnce {
                    pid: inst.pid,
                    status: other.map(|s| s.to_string()),
                    stopped: false,
                });
            }
        }
        let deadline = Instant::now() + PIDFILE_WAIT;
        let named = loop {
            // Not there yet, or not yet holding a number: the program may still be
            // writing it. Anything but a regular file is refused at once, unread.
            let pid = match files::read_regular(pidfile, PIDFILE_CAP) {
                Ok(text) => String::from_utf8_lossy(&text)
                    .trim()
                    .parse::<i32>()
                    .ok()
                    .filter(|&p| p > 0),
                Err(e) if e.not_found() => None,
                Err(e) => break Err(format!("pid file {}: {e}", pidfile.display())),
            };
            match pid {
                Some(p) => break Ok(p),
                None if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
                None => {
                    break Err(format!(
                        "its first process exited but {} names no pid",
                        pidfile.display()
                    ))
                }
            }
        };
        let main = named.and_then(|p| {
            leaf.pin(p).ok_or_else(|| {
                format!(
                    "{} names pid {p}, which is not in the service's cgroup: not taken as the service",
                    pidfile.display()
                )
            })
        });
        let main = match main {
            Ok(h) => h,
            Err(message) => {
                self.give_back(id, inst, leaf, ExitStatus::Code(0))?;
                return Err(fail(message));
            }
        };
        let now = Instance {
            pid: main.pid(),
            start_time: main.start_time(),
            launching: false,
            ..inst.clone()
        };
        let name = svc.name.clone();
        let taken = self.store.write(|tx| {
            if tx.instance(id)?.as_ref() != Some(inst) {
                return Ok(false);
            }
            tx.set_instance(id, &now)?;
            let mut facts = serde_json::Map::new();
            facts.insert("pid".into(), now.pid.into());
            tx.record_facts(
                &name,
                event::START,
                &format!("pid {} (daemonized by pid {})", now.pid, inst.pid),
                facts,
            )?;
            Ok(true)
        })?;
        if !taken {
            self.give_back(id, inst, leaf, ExitStatus::Code(0))?;
            return Err(fail("its record changed while it daemonized".into()));
        }
        Ok(StartOutcome::Started { pid: now.pid })
    }

    /// A `--pidfile` start that did not hand over: whatever runs in its cgroup goes, and
    /// the exit of its first process is recorded (through the restart policy).
    fn give_back(
        &mut self,
        id: i64,
        inst: &Instance,
        leaf: &Cgroup,
        status: ExitStatus,
    ) -> Result<()> {
        let _ = stop::kill_cgroup(leaf);
        let _ = leaf.remove();
        self.exit_seen(id, inst, status)
    }
}
