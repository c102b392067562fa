//! Stopping a service (its stop signal to every process proven to be its own, wait,
//! SIGKILL; see [`crate::process::stop`]), sending it a signal, restarting it.

use std::collections::BTreeSet;
use std::path::Path;

use super::instances::{lookup, own_cgroup, record_exit};
use super::{Exit, SignalOutcome, StartOutcome, StopOutcome, Supervisor, Then, STATUS_WAIT};
use crate::error::{Error, Result};
use crate::policy::ExitStatus;
use crate::process::cgroup::Cgroup;
use crate::process::handle::Handle;
use crate::process::identity;
use crate::process::stop::{self, Leftovers, Reaper, Recorded};
use crate::record::event;
use crate::service::{fmt_duration, Service};
use crate::state;
use crate::store::Store;

impl Supervisor {
    /// Stops the service if it runs: its stop signal to every process proven to be the
    /// service's, wait, SIGKILL. A person's stop also cancels a pending automatic restart
    /// and clears `failed`.
    pub fn stop(&mut self, name: &str) -> Result<StopOutcome> {
        let (id, svc, inst) = self.store.write(|tx| {
            let (id, svc) = lookup(tx, name)?;
            let inst = tx.instance(id)?;
            if let Some(i) = &inst {
                // Before any signal: whoever sees the exit must know it was asked for.
                tx.mark_stopping(id, i)?;
            }
            let rt = tx.runtime(id)?;
            let after = state::stop_requested(&rt);
            if after != rt {
                tx.set_runtime(id, &after)?;
            }
            Ok((id, svc, inst))
        })?;
        let Some(mut inst) = inst else {
            self.kill_leftovers_of(name, None)?;
            return Ok(StopOutcome::NotRunning);
        };
        let cgroup = own_cgroup(name, &inst);
        let was_stopping = inst.stopping;
        inst.stopping = true;
        // Is it a child of ours? Then the daemon's loop reaps it and posts its status.
        let me = std::process::id() as i32;
        let our_child = self.ctx.board.is_some()
            && identity::stat(inst.pid)
                .ok()
                .flatten()
                .is_some_and(|s| s.ppid == me && s.start_time == inst.start_time);
        // The wait happens outside any transaction: a 10 s stop must not hold the
        // database lock against every other tend command.
        let target = Recorded {
            pid: inst.pid,
            session: inst.pgid,
            start_time: inst.start_time,
            boot_id: &inst.boot_id,
            cgroup: inst.cgroup.as_deref().map(Path::new),
        };
        let reaper = self.reaper();
        let store = &mut self.store;
        let mut owned = || sessions_elsewhere(store, Some((inst.pid, inst.start_time)));
        let outcome = stop::stop(
            &target,
            &self.boot_id,
            svc.settings.stop_signal.0,
            svc.settings.stop_timeout,
            reaper.map(|pid| Reaper {
                pid,
                owned_elsewhere: &mut owned,
            }),
            cgroup.as_ref(),
        )
        .map_err(|source| Error::Stop {
            service: name.to_string(),
            source,
        })?;
        let (kind, detail, result) = match &outcome {
            stop::Ended::Unknown(reason) => {
                // Nothing was signalled and nothing is known: the record goes back to
                // how it was, for a stop that can check it.
                if !was_stopping {
                    self.store.write(|tx| tx.unmark_stopping(id, &inst))?;
                }
                return Err(Error::LivenessUnknown {
                    service: name.to_string(),
                    pid: inst.pid,
                    reason: reason.clone(),
                    what: "nothing signalled",
                });
            }
            stop::Ended::Stale(why) => (
                event::STALE,
                format!("pid {}: {why}; not signalled", inst.pid),
                StopOutcome::NotRunning,
            ),
            stop::Ended::AlreadyExited => (
                event::EXIT,
                format!("pid {} had exited (status unknown)", inst.pid),
                StopOutcome::NotRunning,
            ),
            stop::Ended::Stopped(s) => (
                event::STOP,
                stop_detail(&svc, inst.pid, inst.pgid, s),
                StopOutcome::Stopped {
                    pid: inst.pid,
                    killed: s.killed,
                    took: s.took,
                    others: s.others,
                    left_session: s.left_session,
                    left_alone: s.left_alone,
                },
            ),
        };
        if kind != event::STOP {
            self.notices
                .push(format!("{name}: {detail}; record cleared"));
            // The main process was gone already, but its cgroup may not be empty.
            self.kill_leftovers_of(name, cgroup.as_ref())?;
        } else if let Some(cg) = &cgroup {
            let _ = super::containment::release(cg);
            self.tidy_home_cgroup(cg);
        }
        let status = match (&self.ctx.board, kind == event::STOP && our_child) {
            (Some(board), true) => board
                .wait_for(inst.pid, inst.start_time, STATUS_WAIT)
                .map(ExitStatus::from_wait),
            _ => None,
        };
        self.store.write(|tx| {
            // Whoever clears the record writes the events: one exit, one stop.
            if tx
                .instance(id)?
                .is_some_and(|i| i.pid == inst.pid && i.start_time == inst.start_time)
            {
                if kind == event::STOP {
                    record_exit(
                        tx,
                        id,
                        &svc,
                        &inst,
                        status.unwrap_or(ExitStatus::Unknown),
                        Then::Nothing,
                    )?;
                } else {
                    tx.clear_instance(id, &inst)?;
                }
                return tx.record(name, kind, &detail);
            }
            // Cleared already: by another stop of this instance, which wrote both
            // events, or by the daemon's worker, which recorded the exit but knows
            // nothing of the stop. The stop goes on record once (a stop's detail
            // begins with the pid; the instance's start time tells it from an earlier
            // one's).
            if kind == event::STOP
                && !tx.has_event(
                    name,
                    event::STOP,
                    inst.started_at,
                    &format!("pid {}:", inst.pid),
                )?
            {
                tx.record(name, kind, &detail)?;
            }
            Ok(())
        })?;
        Ok(result)
    }

    /// After an instance's main process exited on its own (`exit`, its record cleared):
    /// kills whatever else of it still runs, before a new instance competes with it for
    /// ports and files. Only processes proven to be its own are signalled (see
    /// [`stop::kill_leftovers`]; `witnesses`: handles still held on its processes).
    pub fn clean_up_after(&mut self, exit: &Exit, witnesses: Vec<Handle>) -> Leftovers {
        let cg = exit.cgroup.as_deref().map(Cgroup::at);
        let reaper = self.reaper();
        let store = &mut self.store;
        // Its own record is cleared: every recorded session is another instance's.
        let mut owned = || sessions_elsewhere(store, None);
        let left = stop::kill_leftovers(
            exit.pgid,
            witnesses,
            reaper.map(|pid| Reaper {
                pid,
                owned_elsewhere: &mut owned,
            }),
            cg.as_ref(),
        );
        if let Some(cg) = &cg {
            if left.survived == 0 {
                let _ = super::containment::release(cg);
            }
        }
        left
    }

    /// Kills what is left in the service's cgroups when no instance of it runs (`cgroup`:
    /// the last instance's, when known; else every instance cgroup of the service under
    /// this process's containment), with a notice and an event.
    fn kill_leftovers_of(&mut self, name: &str, cgroup: Option<&Cgroup>) -> Result<()> {
        let (leaves, svc_cg): (Vec<Cgroup>, _) = match cgroup {
            Some(c) => (vec![c.clone()], None),
            // Leaves a tend process created a moment ago may belong to a start in
            // progress (one that has not recorded its instance yet): left to it.
            None => match self.containment().root() {
                Some(r) => {
                    let svc_cg = r.service(name);
                    let leaves = svc_cg
                        .children()
                        .into_iter()
                        .filter(|l| !crate::process::cgroup::creator_alive(l))
                        .collect();
                    (leaves, Some(svc_cg))
                }
                None => return Ok(()),
            },
        };
        let mut killed = 0;
        let mut last = None;
        for leaf in leaves {
            killed += stop::kill_cgroup(&leaf).map_err(|source| Error::Stop {
                service: name.to_string(),
                source,
            })?;
            let _ = super::containment::release(&leaf);
            last = Some(leaf);
        }
        // No instance runs: the service's cgroup goes too, unless a start in progress has
        // a leaf in it (then rmdir refuses).
        if let Some(svc_cg) = svc_cg {
            let _ = svc_cg.remove_empty();
        }
        if let Some(leaf) = &last {
            self.tidy_home_cgroup(leaf);
        }
        if killed > 0 {
            let detail = format!("killed {killed} leftover process(es) in its cgroup");
            self.notices.push(format!("{name}: {detail}"));
            self.store
                .write(|tx| tx.record(name, event::STOP, &detail))?;
        }
        Ok(())
    }

    /// Sends signal number `signal` to the service's main process (identity-checked).
    pub fn signal(&mut self, name: &str, signal: i32) -> Result<SignalOutcome> {
        let sig = nix::sys::signal::Signal::try_from(signal).map_err(|_| Error::Invalid {
            what: "signal",
            message: format!("unknown signal number {signal}"),
        })?;
        let sig_name = sig.as_str().trim_start_matches("SIG").to_string();
        let inst = self.store.read(|tx| {
            let (id, _) = lookup(tx, name)?;
            tx.instance(id)
        })?;
        let Some(inst) = inst else {
            return Ok(SignalOutcome::NotRunning);
        };
        let target = Recorded {
            pid: inst.pid,
            session: inst.pgid,
            start_time: inst.start_time,
            boot_id: &inst.boot_id,
            cgroup: inst.cgroup.as_deref().map(Path::new),
        };
        let outcome = stop::signal(&target, &self.boot_id, sig).map_err(|source| Error::Stop {
            service: name.to_string(),
            source,
        })?;
        match outcome {
            stop::Signalled::Delivered => {
                self.store.write(|tx| {
                    tx.record(
                        name,
                        event::SIGNAL,
                        &format!("{sig_name} sent to pid {}", inst.pid),
                    )
                })?;
                Ok(SignalOutcome::Sent {
                    pid: inst.pid,
                    signal: sig_name,
                })
            }
            stop::Signalled::Unknown(reason) => Err(Error::LivenessUnknown {
                service: name.to_string(),
                pid: inst.pid,
                reason,
                what: "nothing signalled",
            }),
            stop::Signalled::AlreadyExited | stop::Signalled::Stale(_) => {
                // Cleared (or left for the daemon) exactly as `status` would.
                self.clear_dead(name)?;
                Ok(SignalOutcome::NotRunning)
            }
        }
    }

    /// Stops (if running) and starts again.
    pub fn restart(&mut self, name: &str) -> Result<(StopOutcome, StartOutcome)> {
        let stopped = self.stop(name)?;
        let started = self.start(name)?;
        Ok((stopped, started))
    }
}

/// The sessions of the home's recorded instances but `except` (`(pid, start_time)`),
/// read now; `None` when they cannot be read.
pub(super) fn sessions_elsewhere(
    store: &mut Store,
    except: Option<(i32, u64)>,
) -> Option<BTreeSet<i32>> {
    store
        .read(|tx| tx.sessions_except(except))
        .ok()
        .map(|v| v.into_iter().collect())
}

/// The detail of a `stop` event. It begins with `pid PID:`, by which a concurrent stop
/// of the same instance finds it (see [`Supervisor::stop`]).
pub(super) fn stop_detail(svc: &Service, pid: i32, session: i32, s: &stop::Stopped) -> String {
    let mut d = if s.killed {
        format!(
            "pid {pid}: no exit within {} of {}; killed with KILL",
            fmt_duration(svc.settings.stop_timeout),
            svc.settings.stop_signal
        )
    } else {
        format!("pid {pid}: exited on {}", svc.settings.stop_signal)
    };
    if s.others > 0 {
        d.push_str(&format!(
            "; {} other process(es) of the service stopped",
            s.others
        ));
    }
    if s.left_session {
        d.push_str(&format!(
            "; it had left session {session} (setsid), so it was stopped on its own with \
             whatever was proven to be the service's"
        ));
    }
    if s.left_alone > 0 {
        d.push_str(&format!(
            "; {} process(es) now in session/group {session} not proven to be the \
             service's (the number was reused?): left alone",
            s.left_alone
        ));
    }
    d
}
