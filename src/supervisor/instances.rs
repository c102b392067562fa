//! What becomes of a recorded instance: looked up, found alive, or cleared with its exit
//! recorded and the restart policy's decision applied. Shared by every path that touches
//! a record (start, stop, status, the daemon's worker).

use std::time::Duration;

use super::{Exit, Seer, Then};
use crate::error::{Error, Result};
use crate::policy::{self, Decision, ExitStatus};
use crate::process::cgroup::Cgroup;
use crate::process::identity;
use crate::record::{event, now_ms, Instance};
use crate::service::{fmt_duration, Service};
use crate::state;
use crate::store::Tx;

/// Clears the instance, records the exit and, unless it was asked for, what the restart
/// policy decides.
pub(super) fn record_exit(
    tx: &Tx,
    id: i64,
    svc: &Service,
    inst: &Instance,
    status: ExitStatus,
    then: Then,
) -> Result<Exit> {
    let now = now_ms();
    let cgroup = own_cgroup(&svc.name, inst);
    // A SIGKILL in a cgroup whose memory.events counts an OOM kill was the kernel's doing
    // (the instance's cgroup is its own, so any count there is this instance's).
    let status = match (&status, &cgroup) {
        (ExitStatus::Signal(libc::SIGKILL), Some(cg)) if cg.oom_kills().is_some_and(|n| n > 0) => {
            ExitStatus::OomKilled
        }
        _ => status,
    };
    tx.clear_instance(id, inst)?;
    let before = tx.runtime(id)?;
    let requested = inst.stopping;
    tx.record_facts(
        &svc.name,
        event::EXIT,
        &format!(
            "pid {}: {status}{}",
            inst.pid,
            if requested { " (stop requested)" } else { "" }
        ),
        exit_facts(inst.pid, status, requested),
    )?;
    let decision = if requested || then == Then::Nothing {
        Decision::Leave
    } else {
        let uptime = Duration::from_millis((now - inst.started_at).max(0) as u64);
        policy::decide(svc, &before, status, uptime, now)
    };
    let (rt, retry_at) = state::exited(&before, status, &decision, now);
    match &decision {
        Decision::Leave => {}
        Decision::Restart { delay } => tx.record(
            &svc.name,
            event::BACKOFF,
            &format!("restart {} in {}", rt.restarts + 1, fmt_duration(*delay)),
        )?,
        Decision::Fail { reason } => tx.record(&svc.name, event::FAILED, reason)?,
    }
    tx.set_runtime(id, &rt)?;
    Ok(Exit {
        name: svc.name.clone(),
        pgid: inst.pgid,
        cgroup: cgroup.map(|c| c.path.display().to_string()),
        requested,
        decision,
        retry_at,
    })
}

/// What an exit event tells a program (a hook's JSON): the pid, and `exit_code` or
/// `signal` (a name without `SIG`), or neither when the status is unknown.
fn exit_facts(
    pid: i32,
    status: ExitStatus,
    requested: bool,
) -> serde_json::Map<String, serde_json::Value> {
    let mut f = serde_json::Map::new();
    f.insert("pid".into(), pid.into());
    match status {
        ExitStatus::Code(c) => {
            f.insert("exit_code".into(), c.into());
        }
        ExitStatus::Signal(s) => {
            let name = nix::sys::signal::Signal::try_from(s)
                .map(|sig| crate::service::StopSignal(sig).name().to_string())
                .unwrap_or_else(|_| s.to_string());
            f.insert("signal".into(), name.into());
        }
        ExitStatus::OomKilled => {
            f.insert("signal".into(), "KILL".into());
            f.insert("oom_killed".into(), true.into());
        }
        ExitStatus::Unknown => {}
    }
    f.insert("stop_requested".into(), requested.into());
    f
}

/// The instance's cgroup if it is one of service `name`'s (`.../NAME.service/LEAF`, where
/// tend creates them): only such a cgroup may be emptied as what the service left
/// behind. A record naming any other cgroup (forged, say, to name another service's
/// instance) is never the reason that cgroup is killed.
pub(super) fn own_cgroup(name: &str, inst: &Instance) -> Option<Cgroup> {
    let path = std::path::Path::new(inst.cgroup.as_deref()?);
    let parent = path.parent()?.file_name()?;
    (path.is_absolute() && parent.to_str() == Some(&format!("{name}.service")))
        .then(|| Cgroup::at(path))
}

pub(super) fn lookup(tx: &Tx, name: &str) -> Result<(i64, Service)> {
    tx.service(name)?
        .ok_or_else(|| Error::UnknownService(name.to_string()))
}

/// What a look at a service's recorded instance found.
#[derive(Debug)]
pub(super) enum Live {
    /// None is recorded (a dead or stale one has just been cleared, or is left for the
    /// daemon).
    None,
    Alive(Instance),
    /// Whether it still runs could not be checked (the reason says why): the record
    /// stands as it is, and nobody may act as if it were gone.
    Unknown(Instance, String),
}

impl Live {
    /// An instance that runs or may run: alive, or unknown.
    pub(super) fn may_run(&self) -> bool {
        !matches!(self, Live::None)
    }

    /// The live instance, for a caller that must not act on a guess: an unknown one is
    /// an error saying what was not done.
    pub(super) fn known(self, service: &str, what: &'static str) -> Result<Option<Instance>> {
        match self {
            Live::None => Ok(None),
            Live::Alive(i) => Ok(Some(i)),
            Live::Unknown(i, reason) => Err(Error::LivenessUnknown {
                service: service.to_string(),
                pid: i.pid,
                reason,
                what,
            }),
        }
    }
}

/// The service's instance if it is alive (or may be). A dead or stale record is cleared,
/// logged, noted and put through the restart policy (`then`), unless a daemon watches:
/// then an exit is left for it, since it knows the status. A record whose check could not
/// be made is left exactly as it is. Must run in a write transaction.
pub(super) fn live_instance(
    tx: &Tx,
    id: i64,
    svc: &Service,
    seer: &Seer,
    then: Then,
    notes: &mut Vec<String>,
) -> Result<Live> {
    let Some(inst) = tx.instance(id)? else {
        return Ok(Live::None);
    };
    let name = &svc.name;
    match seer.check(&inst) {
        identity::Liveness::Alive => Ok(Live::Alive(inst)),
        identity::Liveness::Unknown(why) => Ok(Live::Unknown(inst, why)),
        identity::Liveness::Exited if seer.defer => Ok(Live::None),
        // A self-daemonizing service's first process has exited and its start is taking
        // the daemonized process as the instance: still starting, not an exit.
        identity::Liveness::Exited if super::forking::handing_over(&inst) => Ok(Live::Alive(inst)),
        identity::Liveness::Exited => {
            let status = seer.status(&inst);
            let seen = match status {
                ExitStatus::Unknown => format!("pid {} is gone (exit status unknown)", inst.pid),
                s => format!("pid {} exited ({s})", inst.pid),
            };
            record_exit(tx, id, svc, &inst, status, then)?;
            notes.push(format!("{name}: {seen}; record cleared"));
            Ok(Live::None)
        }
        identity::Liveness::Stale(why) => {
            let detail = format!("pid {}: {why}; not signalled", inst.pid);
            tx.record(name, event::STALE, &detail)?;
            record_exit(tx, id, svc, &inst, ExitStatus::Unknown, then)?;
            notes.push(format!("{name}: {detail}; record cleared"));
            Ok(Live::None)
        }
    }
}
