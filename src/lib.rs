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
//!   processes by identity before acting on them, and records events.
//! - [`process`] is the only module with `fork`, `exec` and `unsafe`: the double fork
//!   with an exec-error pipe ([`process::spawn`]), the `(pid, start time, boot id)`
//!   identity check ([`process::identity`]) and process-group stop
//!   ([`process::stop`]).
//! - [`output`] renders tables and the stable `--json` shapes; [`logs`] tails and
//!   follows log files.
//!
//! A start runs entirely inside one `BEGIN IMMEDIATE` transaction (check, spawn,
//! record), so concurrent starts of one service start exactly one instance. A stop
//! signals and waits outside any transaction and then clears the record only if it is
//! still the one it stopped.

#![deny(clippy::undocumented_unsafe_blocks)]
#![deny(unsafe_op_in_unsafe_fn)]

pub mod actions;
pub mod app;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod error;
pub mod home;
pub mod logs;
pub mod output;
pub mod pg;
pub mod policy;
pub mod process;
pub mod service;
pub mod store;
pub mod supervisor;

pub use error::{Error, Result};
