//! Hooks, as the daemon's hook runners ask for them: which command runs for an event of
//! a service (its own hook, else the home's default), and running one as a check command
//! runs ([`check::run_helper`]: a session and a cgroup leaf of its own, killed whole at
//! its timeout), with the event on its stdin.

use std::path::PathBuf;
use std::time::Duration;

use super::instances::lookup;
use super::Supervisor;
use crate::error::{Error, Result};
use crate::process::{cgroup, check, spawn};
use crate::service::hooks::{HookEvent, DEFAULT_HOOK_TIMEOUT};
use crate::service::Value;

/// A hook to run: what, for how long at most, where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HookPlan {
    pub cmd: String,
    pub timeout: Duration,
    /// The service's working directory; the home's where the service is gone or its
    /// directory is.
    pub cwd: PathBuf,
    /// The command is the home's default (`tend config hooks.*`), not the service's.
    pub home_default: bool,
    /// For the service's own hook: the service, whose process settings (user, group,
    /// umask, limits) the hook runs with, as its checks do. The home's default runs as
    /// tend does.
    pub service: Option<Box<crate::service::Service>>,
}

impl Supervisor {
    /// The hook that runs for `event` of service `name`, as defined now: the service's
    /// own, else the home's default; `None` when neither is set. A service removed since
    /// the event has only the home's default.
    pub fn hook_for(&mut self, name: &str, event: HookEvent) -> Result<Option<HookPlan>> {
        let home_root = self.home.root().to_path_buf();
        self.store.read(|tx| {
            let svc = match lookup(tx, name) {
                Ok((_, svc)) => Some(svc),
                Err(Error::UnknownService(_)) => None,
                Err(e) => return Err(e),
            };
            let own = svc.as_ref().and_then(|s| {
                let h = match event {
                    HookEvent::Start => &s.settings.on_start,
                    HookEvent::Exit => &s.settings.on_exit,
                    HookEvent::Failed => &s.settings.on_failed,
                    HookEvent::Unhealthy => &s.settings.on_unhealthy,
                };
                h.0.clone()
            });
            let (cmd, home_default) = match own {
                Some(c) => (c, false),
                None => match tx.config(crate::config::hook_key(event))? {
                    Some(c) if !c.trim().is_empty() => (c, true),
                    _ => return Ok(None),
                },
            };
            let timeout = match svc.as_ref().and_then(|s| s.settings.hook_timeout.0) {
                Some(t) => t,
                None => tx
                    .config(crate::config::HOOKS_TIMEOUT)?
                    .and_then(|v| crate::service::hooks::HookTimeout::parse(&v).ok())
                    .and_then(|t| t.0)
                    .unwrap_or(DEFAULT_HOOK_TIMEOUT),
            };
            let cwd = svc
                .as_ref()
                .map(|s| s.settings.cwd.clone())
                .filter(|d| d.is_dir())
                .unwrap_or_else(|| home_root.clone());
            Ok(Some(HookPlan {
                cmd,
                timeout,
                cwd,
                home_default,
                service: svc.filter(|_| !home_default).map(Box::new),
            }))
        })
    }

    /// Runs a hook: `sh -c` in its own session and (with containment) its own leaf of
    /// the home's `hooks` cgroup, with tend's environment plus `vars`, `input` on stdin;
    /// killed whole at its timeout or once it ended. Never touches the service.
    pub fn run_hook(
        &mut self,
        plan: &HookPlan,
        vars: &[(String, String)],
        input: &[u8],
    ) -> std::result::Result<check::Ran, crate::error::SpawnError> {
        // The service's user gone since: the hook is not run (never as tend instead).
        let setup = match &plan.service {
            Some(svc) => super::start::setup_of(svc)?,
            None => spawn::Setup::default(),
        };
        let env = spawn::merged_env(vars.iter().map(|(k, v)| (k, v)));
        let board = self.ctx.board.clone();
        let cgroups = self.containment().root().cloned();
        let proceed = self.proceeding();
        let store = std::cell::RefCell::new(&mut self.store);
        let owned = || super::stop::sessions_elsewhere(&mut store.borrow_mut(), None);
        check::run_helper(
            &plan.cmd,
            &plan.cwd,
            &env,
            plan.timeout,
            &check::Scope {
                board: board.as_deref(),
                cgroups: cgroups.as_ref(),
                proceed: &proceed,
                owned: &owned,
                setup: &setup,
            },
            check::Helper {
                group: cgroup::HOOKS,
                input: Some(input),
            },
        )
    }

    /// Kills what hooks of a tend process that died were running (their cgroup
    /// leaves), where there is containment: a daemon does this as it comes up.
    pub fn sweep_hooks(&mut self) {
        if let Some(root) = self.containment().root().cloned() {
            root.sweep_helpers(cgroup::HOOKS);
        }
    }
}
