//! What every command shares: the exit code so far, how failures are reported, opening the
//! supervisor with what the CLI knows about the daemon, printing notices.

use std::io;

use crate::error::{exit, Error, Result};
use crate::home::Home;
use crate::supervisor::{Context, Supervisor};

/// Why a command stopped: an error of tend's, or its output could not be written.
pub enum Failure {
    Tend(Error),
    Output(io::Error),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::Tend(e)
    }
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Self {
        Failure::Output(e)
    }
}

/// One command's run.
pub struct Session {
    /// Exit code so far; commands over several services keep going after one fails and
    /// exit with the first failure's code.
    pub code: u8,
}

impl Session {
    pub fn new() -> Session {
        Session { code: exit::OK }
    }

    /// Reports `e` on stderr and remembers its exit code, unless an earlier failure's.
    pub fn fail(&mut self, e: &Error) {
        report(e);
        self.fail_code(e.exit_code());
    }

    /// Remembers `code` unless an earlier failure's.
    pub fn fail_code(&mut self, code: u8) {
        if self.code == exit::OK {
            self.code = code;
        }
    }
}

impl Default for Session {
    fn default() -> Self {
        Session::new()
    }
}

/// One `tend:` line on stderr (control characters escaped: it names user input).
pub fn report(e: &Error) {
    eprintln!("tend: {}", super::term::escape(&e.to_string()));
}

/// Opens the supervisor for a command the CLI carries out itself, telling it whether a
/// daemon watches this home (then exits are left for the daemon to record). Every
/// command that opens the database comes here: it refuses while a daemon runs whose
/// database files are not the ones on disk (see `daemon::client::check_beside`), rather
/// than read or write beside it.
pub fn open_supervisor(home: &Home) -> Result<Supervisor> {
    let daemon = crate::daemon::client::check_beside(home)?;
    Supervisor::open_with(
        home.clone(),
        Context {
            daemon_watching: daemon.is_some(),
            board: None,
            containment: None,
            exits: None,
            proceed: None,
            files: None,
            events: None,
        },
    )
}

/// Prints the supervisor's notices (stale records cleared, warnings) on stderr.
pub fn notices(sup: &mut Supervisor) {
    for n in sup.take_notices() {
        eprintln!("tend: {}", super::term::escape(&n));
    }
}
