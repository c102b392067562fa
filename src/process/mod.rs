//! The only module with `fork`, `exec`, signals and `unsafe`.
//!
//! - [`handle`]: a pidfd plus the identity it was opened for; every signal tend sends
//!   goes through one.
//! - [`spawn`]: double fork, `setsid`, stdio redirection, a gate that holds the new
//!   process before exec until its record is committed, exec with an error pipe.
//! - [`identity`]: `(pid, start time, boot id)` and /proc parsing.
//! - [`stop`]: which processes are proven to be a service's, and stopping them.
//! - [`reap`]: child subreaper, reaping, and the board of reaped exit statuses.
//! - [`signals`]: signal masks around a start.
//! - [`startup`]: what the binary does first (standard descriptors, SIGPIPE ignored).
//! - [`lock`]: the daemon's lock, which readers probe without taking.
//! - [`limits`]: the limit on open files: the daemon's raised, the services' as given.
//! - [`memory`]: the daemon's heap: one arena, free pages given back.
//! - [`init`]: `tend up` as PID 1 (reaping any child) and the daemon tied to its life.
//! - [`mounts`]: where the cgroup2 file system is mounted.
//! - [`usage`]: CPU time and memory of a process tree, for a service without a cgroup.
//! - [`writer`]: the pipes to a service's log writer, and starting the writer outside
//!   the service's kill scope; taking a pipe back from a running service for a writer
//!   started in place of one that is gone.

pub mod cgroup;
pub mod check;
pub mod handle;
pub mod identity;
pub mod init;
pub mod limits;
pub mod lock;
pub mod memory;
pub mod mounts;
pub mod reap;
pub mod signals;
pub mod spawn;
pub mod startup;
pub mod stop;
pub mod usage;
pub mod writer;
