//! tend: a userspace process supervisor.
//!
//! # Theory of operation
//!
//! The database is the truth. Every definition, every running instance and every event
//! lives in one SQLite file in the state home ([`home`], [`store`]). A command reads the
//! truth, acts, and writes back inside a transaction; nothing important lives only in
//! memory.
//!
//! - [`cli`] defines the command line; [`app`] turns it into calls and output; `main` is
//!   a few lines around [`app::run`].
//! - [`supervisor`] is the one code path for add / edit / remove / start / stop /
//!   restart / status / list. It validates definitions ([`service`]), checks recorded
//!   processes by identity before acting on them, records events, and applies the
//!   restart policy ([`policy`], a pure function) to every exit it records.
//! - [`actions`] applies a verb to several services; the CLI, the daemon's request
//!   server and the NOTIFY executor all call it.
//! - [`process`] is the only module with `fork`, `exec`, signals and `unsafe`: the double
//!   fork with a gate before exec ([`process::spawn`]), pidfd handles
//!   ([`process::handle`]), the proof of which processes are a service's and stopping
//!   them ([`process::stop`]), reaping ([`process::reap`]) and the daemon lock.
//! - [`daemon`] is the resident daemon: an event loop that never waits on the database,
//!   a worker for exits and restarts, a request server, log rotation; [`daemon::client`]
//!   is the CLI's side of it.
//! - [`pg`] listens for NOTIFY commands (for the daemon) and sends them (`tend notify`);
//!   [`config`] holds the settings they use.
//! - [`output`] renders tables and the stable `--json` shapes; [`logs`] tails and
//!   follows log files.
//!
//! # The path of a start
//!
//! `tend start web` → [`app`] asks [`daemon::client`] whether a daemon holds the home's
//! lock. If one does, the request goes over the control socket and a request thread of
//! the daemon runs the rest; otherwise the CLI does. Either way [`actions::act`] calls
//! [`supervisor::Supervisor::start`]: a read transaction checks that no live instance
//! exists; [`process::spawn`] forks the new process, which sets itself up and waits at a
//! gate; one write transaction records the instance (re-checking that no other start
//! won); the gate opens and the program is exec'd. If anything fails before the gate
//! opens, or the caller dies, the held process exits without running anything.
//!
//! # The path of a crash restart
//!
//! The service exits → the daemon (a child subreaper) gets SIGCHLD → its event loop reaps
//! the child, posts the status on the exit board and hands the exit to the worker → the
//! worker records it and the policy's decision ([`policy::decide`]) in one transaction,
//! kills what the service left behind (only processes proven to be its own) and tells
//! the loop the new pending restarts → when the timer is due, the loop hands the restart
//! to the worker, which starts the service as above.
//!
//! # The path of a NOTIFY
//!
//! `NOTIFY tend, 'restart web'` → the listener thread ([`pg::listener`]) receives it on
//! its dedicated connection → the executor thread authenticates and parses it
//! ([`pg::payload`], [`pg::auth`]), records a `notify` event and calls
//! [`actions::act`], exactly as a CLI request would.

#![deny(clippy::undocumented_unsafe_blocks)]
#![deny(unsafe_op_in_unsafe_fn)]

pub mod api;
pub mod app;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod error;
pub mod home;
pub mod logs;

pub mod pg;
pub mod policy;
pub mod process;
pub mod record;
pub mod service;
pub mod state;
pub mod store;
pub mod supervisor;

pub use error::{Error, Result};
