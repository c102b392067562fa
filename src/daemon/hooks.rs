//! Hooks (`on_start`, `on_exit`, `on_failed`, `on_unhealthy`): the daemon runs them, on
//! threads of their own, never on the event loop or the worker.
//!
//! # Where events come from
//!
//! Every supervisor of the daemon tells [`Hooks::post`] of the events each of its write
//! transactions recorded, once it has committed (see [`crate::store::Store::set_sink`]);
//! a start's event is told only once its exec succeeded. So whatever records a start, an
//! exit, a `failed` mark or an `unhealthy` kill (the worker, a request, the health
//! thread, a NOTIFY) fires the hook, exactly once per recorded event. `post` only queues:
//! it takes a lock for a moment and never waits for a hook.
//!
//! # Bounded, and a storm coalesced
//!
//! - At most [`MAX_RUNNING`] hooks run at once (one thread each, started when the
//!   daemon comes up; they sleep on a condition variable when there is nothing to do).
//! - A service runs one hook at a time, in the order of its events; the services with
//!   waiting runs take turns.
//! - A service has at most [`MAX_WAITING`] runs of one hook waiting. When another event
//!   for that hook comes, it is merged into the newest waiting run of that hook: the run
//!   then carries the newest event (its id, detail, exit code...) and `merged` counts
//!   the earlier events folded into it, with `merged_first_id`/`merged_first_at` naming
//!   the oldest. So a crash loop of 1,000 exits runs `on_exit` at most
//!   `1 + MAX_WAITING + (runs that finished meanwhile)` times, never 1,000 processes at
//!   once, and the sum of `1 + merged` over the runs is exactly the number of exits.
//! - Runs still waiting when the daemon stops are not run: one `hook-failed` event per
//!   service and hook says how many, and how many events they stood for.
//!
//! # A hook's failure
//!
//! A hook that exits non-zero, is killed at its timeout, or cannot be started is recorded
//! as a `hook-failed` event of its service (with its output's start); nothing else
//! follows from it. The service is never touched.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex};

use tracing::{info, warn};

use crate::record::event;
use crate::service::hooks::HookEvent;
use crate::store::Recorded;
use crate::supervisor::hooks::HookPlan;

use super::bus::InFlight;
use super::pool::Pool;

/// Hooks that may run at once, across all services.
pub const MAX_RUNNING: usize = 4;
/// Runs of one hook of one service that may wait; more events are merged into the
/// newest waiting one.
pub const MAX_WAITING: usize = 4;

/// One run of a hook, waiting.
#[derive(Clone, Debug)]
struct Run {
    hook: HookEvent,
    /// The newest event it stands for.
    newest: Recorded,
    /// Earlier events merged into it.
    merged: u64,
    /// The oldest of them: (event id, unix ms).
    first: Option<(i64, i64)>,
}

#[derive(Default)]
struct State {
    /// Waiting runs per service, in event order.
    waiting: HashMap<String, VecDeque<Run>>,
    /// Services with a run waiting and none running, in turn.
    ready: VecDeque<String>,
    /// Services with a run in progress.
    running: std::collections::HashSet<String>,
    /// Set as the daemon stops: no new run is begun.
    closed: bool,
}

impl State {
    /// Queues the run for `rec`, merging it when the service has [`MAX_WAITING`] runs of
    /// that hook waiting. True if the service became ready.
    fn push(&mut self, hook: HookEvent, rec: Recorded) -> bool {
        let service = rec.event.service.clone();
        let queue = self.waiting.entry(service.clone()).or_default();
        let same = queue.iter().filter(|r| r.hook == hook).count();
        if same >= MAX_WAITING {
            let newest = queue
                .iter_mut()
                .rev()
                .find(|r| r.hook == hook)
                .expect("counted above");
            newest.first = Some(
                newest
                    .first
                    .unwrap_or((newest.newest.event.id, newest.newest.event.at)),
            );
            newest.merged += 1;
            newest.newest = rec;
            return false;
        }
        queue.push_back(Run {
            hook,
            newest: rec,
            merged: 0,
            first: None,
        });
        if queue.len() == 1 && !self.running.contains(&service) {
            self.ready.push_back(service);
            return true;
        }
        false
    }

    /// The next run to carry out, its service marked running.
    fn next(&mut self) -> Option<(String, Run)> {
        let service = self.ready.pop_front()?;
        let queue = self.waiting.get_mut(&service)?;
        let run = queue.pop_front()?;
        if queue.is_empty() {
            self.waiting.remove(&service);
        }
        self.running.insert(service.clone());
        Some((service, run))
    }

    /// `service`'s run is over: its next one, if any, takes its turn. True if so.
    fn done(&mut self, service: &str) -> bool {
        self.running.remove(service);
        if self.waiting.contains_key(service) {
            self.ready.push_back(service.to_string());
            return true;
        }
        false
    }
}

/// The daemon's hook runners.
pub struct Hooks {
    state: Mutex<State>,
    wake: Condvar,
}

impl Hooks {
    /// Starts [`MAX_RUNNING`] runner threads. `pool`: supervisors whose context ends a
    /// running hook once the daemon is going away (and tells no sink: a `hook-failed`
    /// event never runs a hook). `in_flight`: a run counts in the daemon's work in
    /// progress, so a shutdown waits until the hook it interrupts has been killed.
    pub fn start(pool: Arc<Pool>, in_flight: Arc<InFlight>) -> crate::error::Result<Arc<Hooks>> {
        let hooks = Arc::new(Hooks {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
        });
        for i in 0..MAX_RUNNING {
            let (h, p, f) = (hooks.clone(), pool.clone(), in_flight.clone());
            std::thread::Builder::new()
                .name(format!("tend-hook-{i}"))
                .stack_size(512 * 1024)
                .spawn(move || h.runner(&p, &f))
                .map_err(|e| crate::error::Error::Daemon {
                    message: format!("cannot start a hook thread: {e}"),
                })?;
        }
        Ok(hooks)
    }

    /// Takes the events a transaction committed; queues a run for each that has a hook
    /// kind. Never waits for a hook.
    pub fn post(&self, recorded: Vec<Recorded>) {
        let mut woke = 0;
        {
            let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            if st.closed {
                return;
            }
            for rec in recorded {
                if let Some(hook) = HookEvent::of_kind(&rec.event.kind) {
                    woke += usize::from(st.push(hook, rec));
                }
            }
        }
        for _ in 0..woke {
            self.wake.notify_one();
        }
    }

    /// No new run begins; the runs still waiting are recorded as not run (one
    /// `hook-failed` event per service).
    pub fn close(&self, pool: &Arc<Pool>) {
        let waiting = {
            let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            st.closed = true;
            st.ready.clear();
            std::mem::take(&mut st.waiting)
        };
        self.wake.notify_all();
        if waiting.is_empty() {
            return;
        }
        let Ok(mut sup) = pool.get() else { return };
        for (service, runs) in waiting {
            for hook in HookEvent::ALL {
                let of_hook: Vec<&Run> = runs.iter().filter(|r| r.hook == hook).collect();
                if of_hook.is_empty() {
                    continue;
                }
                let events: u64 = of_hook.iter().map(|r| 1 + r.merged).sum();
                not_carried_out(&mut sup, &service, hook, of_hook.len(), events);
            }
        }
    }

    fn runner(&self, pool: &Arc<Pool>, in_flight: &Arc<InFlight>) {
        loop {
            let (service, run) = {
                let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
                loop {
                    if st.closed {
                        return;
                    }
                    if let Some(next) = st.next() {
                        break next;
                    }
                    st = self.wake.wait(st).unwrap_or_else(|p| p.into_inner());
                }
            };
            match in_flight.enter_always() {
                Some(_ticket) => carry_out(pool, &service, &run),
                // The daemon is going away: not run, and said so.
                None => {
                    if let Ok(mut sup) = pool.get() {
                        not_carried_out(&mut sup, &service, run.hook, 1, 1 + run.merged);
                    }
                    return;
                }
            }
            let more = {
                let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
                st.done(&service)
            };
            if more {
                self.wake.notify_one();
            }
        }
    }
}

/// Records that `runs` runs of `hook` of `service`, standing for `events` events, were
/// not carried out as the daemon stopped: only if that hook is defined (an event without
/// a hook was never going to run anything).
fn not_carried_out(
    sup: &mut crate::supervisor::Supervisor,
    service: &str,
    hook: HookEvent,
    runs: usize,
    events: u64,
) {
    if !matches!(sup.hook_for(service, hook), Ok(Some(_))) {
        return;
    }
    let detail = format!(
        "{}: {runs} run(s) not carried out ({events} event(s)): the daemon stopped",
        hook.key()
    );
    let _ = sup.record(service, event::HOOK_FAILED, &detail);
}

/// Runs one hook (if the service or the home has one for it) and records its failure.
fn carry_out(pool: &Arc<Pool>, service: &str, run: &Run) {
    let mut sup = match pool.get() {
        Ok(s) => s,
        Err(e) => {
            warn!(service, hook = run.hook.key(), error = %e, "hook not run: the database cannot be opened");
            return;
        }
    };
    let plan = match sup.hook_for(service, run.hook) {
        Ok(Some(p)) => p,
        Ok(None) => return,
        Err(e) => {
            warn!(service, hook = run.hook.key(), error = %e, "hook not run: its definition cannot be read");
            return;
        }
    };
    let input = payload(run, &plan);
    let vars = environment(run);
    let failure = match sup.run_hook(&plan, &vars, input.as_bytes()) {
        Err(e) => Some(format!("{}: cannot start: {e}", run.hook.key())),
        Ok(ran) if ran.timed_out => Some(format!(
            "{}: killed at its timeout of {}{}",
            run.hook.key(),
            crate::service::fmt_duration(plan.timeout),
            output_tail(&ran.output)
        )),
        Ok(ran) if ran.withdrawn => Some(format!(
            "{}: ended early ({} event(s)): the daemon is stopping",
            run.hook.key(),
            1 + run.merged
        )),
        Ok(ran) if ran.status.is_some_and(|s| s == 0) => None,
        Ok(ran) => Some(format!(
            "{}: {}{}",
            run.hook.key(),
            match ran.status.map(crate::policy::ExitStatus::from_wait) {
                Some(s) => format!("exited ({s})"),
                None => "ended (status unknown)".to_string(),
            },
            output_tail(&ran.output)
        )),
    };
    match failure {
        None => info!(
            service,
            hook = run.hook.key(),
            event = run.newest.event.id,
            merged = run.merged,
            "hook ran"
        ),
        Some(detail) => {
            warn!(service, detail = %detail, "hook failed");
            if let Err(e) = sup.record(service, event::HOOK_FAILED, &detail) {
                warn!(service, error = %e, "cannot record a hook's failure");
            }
        }
    }
}

/// `: <output>`, when there is some.
fn output_tail(output: &str) -> String {
    if output.is_empty() {
        String::new()
    } else {
        format!(": {output}")
    }
}

/// The event as one JSON object (a hook's stdin): what was recorded, what the recorder
/// knew (`pid`, `exit_code` or `signal`...), and how many earlier events were merged
/// into this run.
fn payload(run: &Run, plan: &HookPlan) -> String {
    let e = &run.newest.event;
    let mut m = serde_json::Map::new();
    m.insert("event".into(), run.hook.word().into());
    m.insert("hook".into(), run.hook.key().into());
    m.insert("service".into(), e.service.as_str().into());
    m.insert("instance".into(), 0.into());
    m.insert("kind".into(), e.kind.as_str().into());
    m.insert("id".into(), e.id.into());
    m.insert("at".into(), e.at.into());
    m.insert("detail".into(), e.detail.as_str().into());
    for (k, v) in &run.newest.facts {
        m.insert(k.clone(), v.clone());
    }
    m.insert("merged".into(), run.merged.into());
    if let Some((id, at)) = run.first {
        m.insert("merged_first_id".into(), id.into());
        m.insert("merged_first_at".into(), at.into());
    }
    m.insert("home_default".into(), plan.home_default.into());
    serde_json::Value::Object(m).to_string()
}

/// `TEND_SERVICE`, `TEND_EVENT`, `TEND_INSTANCE`, `TEND_EXIT_CODE` or `TEND_SIGNAL`
/// (when known), `TEND_PID`, `TEND_EVENT_ID`, `TEND_MERGED`.
fn environment(run: &Run) -> Vec<(String, String)> {
    let e = &run.newest.event;
    let mut vars = vec![
        ("TEND_SERVICE".to_string(), e.service.clone()),
        ("TEND_EVENT".to_string(), run.hook.word().to_string()),
        ("TEND_INSTANCE".to_string(), "0".to_string()),
        ("TEND_EVENT_ID".to_string(), e.id.to_string()),
        ("TEND_MERGED".to_string(), run.merged.to_string()),
    ];
    let facts = &run.newest.facts;
    for (key, var) in [
        ("exit_code", "TEND_EXIT_CODE"),
        ("signal", "TEND_SIGNAL"),
        ("pid", "TEND_PID"),
    ] {
        if let Some(v) = facts.get(key) {
            let text = match v {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            vars.push((var.to_string(), text));
        }
    }
    vars
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Event;

    fn rec(id: i64, service: &str, kind: &str) -> Recorded {
        Recorded {
            event: Event {
                id,
                at: id * 10,
                service: service.into(),
                kind: kind.into(),
                detail: String::new(),
            },
            facts: serde_json::Map::new(),
        }
    }

    #[test]
    fn a_storm_is_merged_and_counted() {
        let mut st = State::default();
        for id in 1..=1000 {
            st.push(HookEvent::Exit, rec(id, "web", "exit"));
        }
        st.push(HookEvent::Failed, rec(1001, "web", "failed"));
        let runs: Vec<Run> = st.waiting["web"].iter().cloned().collect();
        assert_eq!(runs.len(), MAX_WAITING + 1);
        // Every event is in exactly one run.
        let events: u64 = runs.iter().map(|r| 1 + r.merged).sum();
        assert_eq!(events, 1001);
        let last_exit = &runs[MAX_WAITING - 1];
        assert_eq!(last_exit.newest.event.id, 1000);
        assert_eq!(
            last_exit.first,
            Some((MAX_WAITING as i64, MAX_WAITING as i64 * 10))
        );
        assert_eq!(runs[MAX_WAITING].hook, HookEvent::Failed);
    }

    #[test]
    fn one_run_per_service_at_a_time_in_turn() {
        let mut st = State::default();
        assert!(st.push(HookEvent::Start, rec(1, "a", "start")));
        assert!(!st.push(HookEvent::Exit, rec(2, "a", "exit")));
        assert!(st.push(HookEvent::Exit, rec(3, "b", "exit")));
        let (s1, r1) = st.next().unwrap();
        assert_eq!((s1.as_str(), r1.newest.event.id), ("a", 1));
        let (s2, _) = st.next().unwrap();
        assert_eq!(s2, "b");
        // `a` is running: its next run waits.
        assert!(st.next().is_none());
        assert!(st.done("a"));
        assert_eq!(st.next().unwrap().1.newest.event.id, 2);
        assert!(!st.done("b"));
    }

    #[test]
    fn payload_and_environment_carry_the_facts() {
        let mut r = rec(7, "web", "exit");
        r.facts.insert("pid".into(), 42.into());
        r.facts.insert("exit_code".into(), 3.into());
        let run = Run {
            hook: HookEvent::Exit,
            newest: r,
            merged: 2,
            first: Some((5, 50)),
        };
        let plan = HookPlan {
            cmd: "true".into(),
            timeout: std::time::Duration::from_secs(1),
            cwd: "/".into(),
            home_default: false,
            service: None,
        };
        let v: serde_json::Value = serde_json::from_str(&payload(&run, &plan)).unwrap();
        assert_eq!(v["event"], "exit");
        assert_eq!(v["exit_code"], 3);
        assert_eq!(v["merged"], 2);
        assert_eq!(v["merged_first_id"], 5);
        let env = environment(&run);
        assert!(env.contains(&("TEND_EXIT_CODE".into(), "3".into())));
        assert!(env.contains(&("TEND_PID".into(), "42".into())));
        assert!(!env.iter().any(|(k, _)| k == "TEND_SIGNAL"));
    }
}
