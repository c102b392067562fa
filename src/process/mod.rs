//! The only module with `fork`, `exec`, raw signals and `unsafe`.
//!
//! - [`spawn`]: double fork, `setsid`, stdio redirection, exec with an error pipe.
//! - [`identity`]: `(pid, start time, boot id)` identity and liveness checks.
//! - [`stop`]: stop signal to the process group, bounded wait, SIGKILL, confirmation.
//! - [`reap`]: child subreaper and reaping, for the daemon.

pub mod identity;
pub mod reap;
pub mod spawn;
pub mod stop;
