//! What the daemon's worker asks after a child of the daemon ended: bring back the log
//! writer of a running `--log-timestamps` service when both of its processes are gone.
//!
//! A writer's two processes bring each other back (see [`crate::logwriter`]); killed
//! within the moment one takes to start the other, nobody is left to read the service's
//! pipes. The daemon looks after every child it reaps: every process of a writer it
//! started (and every one they start) is its descendant, so the last of them to die is
//! reaped by the daemon, and the look that follows finds the pipe without a reader. A
//! writer it did not start (started by `tend start` without a daemon, or by an earlier
//! daemon) ends elsewhere: for those, each look returns one live process of the writer
//! to watch by pidfd, whose end asks for the next look (by then another of its
//! processes holds the pipe, and is watched in turn, or none does). The pipe is taken
//! back from the service itself (its stdout and stderr descriptors read as well as write
//! it), and a writer is started on it as a start does.

use std::os::fd::{AsFd, AsRawFd};

use super::start::writer_config;
use super::Supervisor;
use crate::error::{PipeError, Result};
use crate::logwriter;
use crate::process::handle::{Found, Handle};
use crate::process::identity;
use crate::process::writer::{self, Writer};
use crate::record::event;
use crate::service::LogTimestamps;

/// What became of one running instance whose log writer was found gone.
#[derive(Debug)]
pub struct Revival {
    pub name: String,
    pub pid: i32,
    pub start_time: u64,
    pub outcome: Revived,
}

#[derive(Debug)]
pub enum Revived {
    /// A new writer runs; its keeper's pid.
    Started { keeper: i32 },
    /// Not now: the caller's pace (see [`Supervisor::revive_writers`]).
    Paced,
    /// Its pipe cannot be taken from the service (see [`PipeError::Denied`]): that does
    /// not change while it runs.
    Denied(String),
    /// It could not be done this time (no descriptor, no process left...): worth another
    /// try.
    Failed(String),
    /// Whether its writer runs could not be told (`why`): /proc could not be read for
    /// want of a resource (`again`: worth another look), or not at all (a service that
    /// made itself undumpable).
    Unchecked { why: String, again: bool },
}

/// What a look at the writers found (see [`Supervisor::revive_writers`]).
#[derive(Debug, Default)]
pub struct Looked {
    /// The instances whose writer was found gone, and what became of each.
    pub revivals: Vec<Revival>,
    /// A live process of each writer the daemon did not start, pinned: its end asks for
    /// the next look. `(service, handle)`.
    pub watches: Vec<(String, Handle)>,
    /// Services whose writer runs but cannot be watched (no descriptor at or below the
    /// limit given): looked at again shortly rather than on an end.
    pub unwatched: Vec<String>,
    /// A writer process ended while it was looked at: look again at once.
    pub again: bool,
}

impl Supervisor {
    /// Starts a log writer for every running instance of a `--log-timestamps` service
    /// whose stdout pipe no writer process holds any more, on that very pipe (and
    /// stderr's, when it has its own): the service keeps its pid and its output, and what
    /// it wrote meanwhile, waiting in the pipe, is read by the new writer, which writes
    /// `tend: log writer restarted` first. A writer found alive is left alone.
    ///
    /// The look and the start are not one step: only one thread may call this (the
    /// daemon's worker), or two could start two writers on one pipe. Starts of services
    /// are no danger: a start records its instance only once its own writer runs.
    ///
    /// `may(pid, start_time)`: whether a writer may be started for that instance now
    /// (asked right before the start; false: [`Revived::Paced`]). `max_fd`: the highest
    /// descriptor a watch may take (see [`Looked::unwatched`]). `Err`: the database
    /// could not be read.
    pub fn revive_writers(
        &mut self,
        may: &mut dyn FnMut(i32, u64) -> bool,
        max_fd: i32,
    ) -> Result<Looked> {
        let recorded = self.store.read(|tx| tx.recorded())?;
        let boot = self.boot_id.clone();
        let mut looked = Looked::default();
        let mut candidates = Vec::new();
        for (_, svc, inst) in recorded {
            if svc.settings.log_timestamps == LogTimestamps::Off {
                continue;
            }
            let revival = |outcome| Revival {
                name: svc.name.clone(),
                pid: inst.pid,
                start_time: inst.start_time,
                outcome,
            };
            // Pinned and identity-checked, as every use of a recorded instance is: what is
            // read of its descriptors, and taken, is this very process's.
            let cgroup = inst.cgroup.as_deref().map(std::path::Path::new);
            let h = match Handle::open(inst.pid, inst.start_time, &inst.boot_id, &boot, cgroup) {
                Found::Alive(h) => h,
                // Not known to run: looked at again later.
                Found::Unknown(why) => {
                    looked
                        .revivals
                        .push(revival(Revived::Unchecked { why, again: true }));
                    continue;
                }
                // Its exit is recorded where exits are.
                Found::Exited | Found::Stale(_) => continue,
            };
            match writer::output_pipes(inst.pid) {
                Ok(Some(pipes)) => candidates.push((svc, h, pipes)),
                // Its stdout is not (or no longer) a log writer's pipe.
                Ok(None) => {}
                Err(e) => {
                    let why = format!(
                        "cannot read /proc/{}/fd: {}",
                        inst.pid,
                        crate::error::io_reason(&e)
                    );
                    // A service that made itself undumpable: that does not change.
                    let again = !matches!(e.raw_os_error(), Some(libc::EACCES | libc::EPERM));
                    looked
                        .revivals
                        .push(revival(Revived::Unchecked { why, again }));
                }
            }
        }
        if candidates.is_empty() {
            return Ok(looked);
        }
        let held = match writer::held_pipes(logwriter::MODE) {
            Ok(held) => held,
            // Unknown is not gone: none is started, and all are looked at again.
            Err(e) => {
                let why = format!(
                    "cannot tell which log writers run (reading /proc: {})",
                    crate::error::io_reason(&e)
                );
                looked
                    .revivals
                    .extend(candidates.into_iter().map(|(svc, h, _)| Revival {
                        name: svc.name,
                        pid: h.pid(),
                        start_time: h.start_time(),
                        outcome: Revived::Unchecked {
                            why: why.clone(),
                            again: true,
                        },
                    }));
                return Ok(looked);
            }
        };
        let me = self.reaper();
        for (svc, h, pipes) in candidates {
            if let Some(holders) = held.get(&pipes.out) {
                // The daemon's own descendants end as its children: it looks then.
                if me.is_some_and(|me| holders.iter().all(|&p| identity::descends_from(p, me))) {
                    continue;
                }
                match writer::pin_holder(holders, pipes.out) {
                    Some(w) if w.as_fd().as_raw_fd() > max_fd => looked.unwatched.push(svc.name),
                    Some(w) => looked.watches.push((svc.name, w)),
                    // Gone since: whether another holds the pipe is for a new look.
                    None => looked.again = true,
                }
                continue;
            }
            let outcome = self.revive(&svc, &h, pipes, may);
            // The service ended meanwhile: nothing to bring back, nothing to say.
            if matches!(outcome, Revived::Failed(_)) && h.exited() {
                continue;
            }
            looked.revivals.push(Revival {
                name: svc.name.clone(),
                pid: h.pid(),
                start_time: h.start_time(),
                outcome,
            });
        }
        Ok(looked)
    }

    /// Starts a writer on the pipes of `h`, the instance of `svc`, if `may` allows, and
    /// records it.
    fn revive(
        &mut self,
        svc: &crate::service::Service,
        h: &Handle,
        pipes: writer::OutputPipes,
        may: &mut dyn FnMut(i32, u64) -> bool,
    ) -> Revived {
        let taken = writer::read_end(h, 1, pipes.out).and_then(|out| {
            let err = pipes
                .err
                .map(|ino| writer::read_end(h, 2, ino))
                .transpose()?;
            Ok((out, err))
        });
        let (out, err) = match taken {
            Ok(ends) => ends,
            Err(e @ PipeError::Denied { .. }) => return Revived::Denied(e.to_string()),
            Err(e) => return Revived::Failed(e.to_string()),
        };
        // Asked only now: a pipe that cannot be taken is no start to count.
        if !may(h.pid(), h.start_time()) {
            return Revived::Paced;
        }
        let cfg = writer_config(svc, err.is_some(), self.writers_cgroup());
        let started = match Writer::spawn_on(out, err, &cfg.to_restarted_args()) {
            Ok(w) => w,
            Err(e) => return Revived::Failed(e.to_string()),
        };
        let keeper = started.keeper_pid().unwrap_or(0);
        started.keep();
        let detail = format!(
            "pid {}: its log writer was gone (both processes); a new one was started on its \
             pipes (pid {keeper})",
            h.pid()
        );
        if let Err(e) = self.record(&svc.name, event::LOG_WRITER, &detail) {
            self.notices.push(format!(
                "{}: the new log writer could not be recorded as an event: {e}",
                svc.name
            ));
        }
        Revived::Started { keeper }
    }
}
