//! tend: a userspace process supervisor.
//!
//! # The house
//!
//! The database is the truth: every definition, running instance and event lives in one
//! SQLite file in the state home; a command reads it, acts, and writes back in a
//! transaction. Dependencies run one way, down (`tests/architecture.rs` checks it);
//! `ARCHITECTURE.md` draws the whole house.
//!
//! - **Transports**: [`cli`] and [`app`] (the command line, one file per command family),
//!   [`daemon`] (event loop, worker, control socket; [`daemon::client`] is the CLI's
//!   side), [`pg`] (NOTIFY control).
//! - **Vocabulary**: [`api`]: verbs, a selection, per-service reports, the daemon's
//!   status, and [`api::act`], which every transport calls.
//! - **Core**: [`supervisor`] (the one code path), [`state`] (a service's state and its
//!   transitions, pure), [`policy`] (the restart policy, pure).
//! - **Mechanisms**: [`store`] (all SQL), [`process`] (all fork, exec, signals and
//!   `unsafe`), [`logs`], [`logwriter`] (the `--log-timestamps` writer), [`probe`] (running one readiness or health check).
//! - **Base**: [`service`] (a definition and the table of its settings), [`record`],
//!   [`home`], [`config`], [`error`].
//!
//! # The path of a start
//!
//! `tend start web` → [`app`] asks [`daemon::client::present`] whether a daemon holds
//! the home's lock. If one does, the request goes over the control socket and a request
//! thread of the daemon runs the rest; otherwise the CLI does. Either way [`api::act`]
//! calls [`supervisor::Supervisor::start`]: a read transaction checks that no live
//! instance exists; [`process::spawn`] forks the new process, which sets itself up and
//! waits at a gate; one write transaction records the instance (re-checking that no other
//! start won); the gate opens and the program is exec'd. If anything fails before the
//! gate opens, or the caller dies, the held process exits without running anything.
//!
//! # The path of a `tend apply`
//!
//! [`app::apply`] reads the file; [`service::file`] parses it (toml + serde; every key a
//! row of the settings table, errors with file and line); [`supervisor::Supervisor::apply`]
//! checks every definition, requirements and cycles, computes the plan and carries it out
//! in one write transaction. With `start --wait`, [`api::act_with`] starts in dependency
//! order ([`service::graph`]) and [`supervisor::Supervisor::wait_ready`] runs the `ready`
//! check ([`probe`]) until it passes or the service exits.
//!
//! # The path of a crash restart
//!
//! The service exits → the daemon (a child subreaper) gets SIGCHLD → its event loop reaps
//! the child, posts the status on the exit board and hands the exit to the worker → the
//! worker records it with the policy's decision ([`policy::decide`], [`state::exited`])
//! in one transaction, kills what the service left behind (only processes proven to be
//! its own) and restarts it, at once or when the loop's timer is due.
//!
//! # The path of a `tend up`
//!
//! [`app::up`] applies the file to a state home of its own, starts that home's daemon as
//! its child, tied to it ([`process::init::die_with_parent`]: the daemon gets SIGTERM
//! when `up` ends, however it ends, and then stops every service before it exits),
//! starts the services through it, and follows their logs ([`app::logs`]) until the
//! daemon has exited. As PID 1 it also reaps every orphan ([`process::init::reap_any`]).
//! The daemon's [`daemon::watch`] thread restarts services whose `watch` files change.
//!
//! # The path of a hook
//!
//! A daemon's supervisors tell [`daemon::hooks`] of the events each write transaction
//! recorded, once it has committed ([`store::Store::set_sink`]; a start's only once its
//! exec succeeded). A `start`, `restart`, `exit`, `failed` or `unhealthy` event queues a
//! run (a storm is merged into the newest waiting run, with a count); one of four hook
//! threads finds the service's hook (or the home's, in `tend config`) and runs it as a
//! check command is run ([`process::check`]), the event as JSON on stdin; a failure is a
//! `hook-failed` event and nothing more.
//!
//! # The path of a NOTIFY
//!
//! `NOTIFY tend, 'restart web'` → the listener thread ([`pg::listener`]) receives it on
//! its dedicated connection → the executor thread authenticates and parses it
//! ([`pg::auth`], [`pg::payload`]; a daemon that joined a fleet refuses unsigned
//! payloads, [`pg::quick`]), records a `notify` event and calls [`api::act`], exactly as
//! a CLI request would.

#![deny(clippy::undocumented_unsafe_blocks)]
#![deny(unsafe_op_in_unsafe_fn)]

pub mod api;
pub mod app;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod error;
pub mod fleet;
pub mod home;
pub mod json;
pub mod logs;
pub mod logwriter;
pub mod metrics;

pub mod pg;
pub mod policy;
pub mod probe;
pub mod process;
pub mod record;
pub mod service;
pub mod state;
pub mod store;
pub mod supervisor;

pub use error::{Error, Result};
