//! Command-line definitions (clap derive): one variant per subcommand.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "tend",
    version,
    about = "Keep services running without root: daemonize, watch and stop them.",
    propagate_version = true
)]
pub struct Cli {
    /// State home (database and default logs). Default: $XDG_STATE_HOME/tend or
    /// ~/.local/state/tend.
    #[arg(long, global = true, env = "TEND_HOME", value_name = "DIR")]
    pub home: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Define a service: `tend add NAME [OPTIONS] -- PROGRAM [ARGS...]` or `--cmd STRING`.
    Add(AddArgs),
    /// Change a definition; takes effect at the next start.
    Edit(EditArgs),
    /// Delete definitions (refused while running unless --stop).
    #[command(visible_alias = "rm")]
    Remove {
        #[arg(required = true, value_name = "NAME")]
        names: Vec<String>,
        /// Stop a running service first.
        #[arg(long)]
        stop: bool,
    },
    /// Show all services: name, state, pid, uptime, command.
    #[command(visible_alias = "ls")]
    List {
        #[arg(long)]
        json: bool,
    },
    /// Show one service in detail. Exit 0 running, 3 not running, 4 unknown service.
    Status {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Start services (no-op for one already running).
    Start(Targets),
    /// Stop services: stop signal to the process group, SIGKILL after the timeout.
    Stop(Targets),
    /// Stop (if running) and start services.
    Restart(Targets),
    /// Print the end of a service's log, and follow it with -f.
    Logs {
        name: String,
        /// Number of lines to print.
        #[arg(short = 'n', long, default_value_t = 20, value_name = "N")]
        lines: usize,
        /// Keep printing what is appended (Ctrl-C to end).
        #[arg(short, long)]
        follow: bool,
    },
    /// Show the event history (start, stop, exit seen, stale record cleared, changes).
    Events {
        /// Only this service's events.
        name: Option<String>,
        /// Number of most recent events to show.
        #[arg(short = 'n', long, default_value_t = 50, value_name = "N")]
        lines: u32,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct Targets {
    /// Service names.
    #[arg(
        required_unless_present = "all",
        conflicts_with = "all",
        value_name = "NAME"
    )]
    pub names: Vec<String>,
    /// Every defined service.
    #[arg(long)]
    pub all: bool,
}

/// Options shared by `add` and `edit`.
#[derive(Debug, Args)]
pub struct DefinitionArgs {
    /// The command as one string, split with shell-word rules (no shell runs it).
    #[arg(long, value_name = "STRING", conflicts_with = "argv")]
    pub cmd: Option<String>,
    /// Working directory (default for add: the current directory).
    #[arg(long, value_name = "DIR")]
    pub cwd: Option<PathBuf>,
    /// File to read stdin from (default /dev/null).
    #[arg(short = 'i', long, value_name = "PATH")]
    pub stdin: Option<PathBuf>,
    /// File stdout appends to (default <home>/logs/NAME.log).
    #[arg(short = 'o', long, value_name = "PATH")]
    pub stdout: Option<PathBuf>,
    /// File stderr appends to (default: the same file as stdout).
    #[arg(short = 'e', long, value_name = "PATH")]
    pub stderr: Option<PathBuf>,
    /// Environment variable for the service (repeatable).
    #[arg(long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Signal sent first by stop (default TERM).
    #[arg(long, value_name = "SIGNAL")]
    pub stop_signal: Option<String>,
    /// Time between the stop signal and SIGKILL: 10, 10s, 500ms (default 10s).
    #[arg(long, value_name = "DURATION")]
    pub stop_timeout: Option<String>,
    /// What the daemon does when the service exits: never, on-failure (default), always.
    #[arg(long, value_name = "POLICY")]
    pub restart: Option<String>,
    /// The program and its arguments, after `--`.
    #[arg(last = true, value_name = "PROGRAM [ARGS]")]
    pub argv: Vec<String>,
}

#[derive(Debug, Args)]
pub struct AddArgs {
    pub name: String,
    #[command(flatten)]
    pub def: DefinitionArgs,
}

#[derive(Debug, Args)]
pub struct EditArgs {
    pub name: String,
    #[command(flatten)]
    pub def: DefinitionArgs,
    /// Remove an environment variable (repeatable).
    #[arg(long = "unset-env", value_name = "KEY")]
    pub unset_env: Vec<String>,
}
