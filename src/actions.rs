//! start / stop / restart over several services, producing one report per service.
//! The CLI calls this when no daemon runs; the daemon calls it for a control request.
//! Same function, same result, whoever asks.

use crate::daemon::protocol::{Outcome, Report, Verb};
use crate::error::Result;
use crate::supervisor::Supervisor;

/// Applies `verb` to `names` (or every service with `all`), each in turn; one failing
/// does not stop the others.
pub fn act(sup: &mut Supervisor, verb: Verb, names: &[String], all: bool) -> Result<Vec<Report>> {
    let names = if all { sup.names()? } else { names.to_vec() };
    let mut reports = Vec::with_capacity(names.len());
    for name in names {
        let result = match verb {
            Verb::Start => sup.start(&name).map(|outcome| Outcome::Start { outcome }),
            Verb::Stop => sup.stop(&name).map(|outcome| Outcome::Stop { outcome }),
            Verb::Restart => sup
                .restart(&name)
                .map(|(stop, start)| Outcome::Restart { stop, start }),
            Verb::Signal { signal } => sup
                .signal(&name, signal)
                .map(|outcome| Outcome::Signal { outcome }),
        };
        reports.push(Report {
            name,
            result: result.unwrap_or_else(|e| Outcome::Error {
                message: e.to_string(),
                code: e.exit_code(),
            }),
            notices: sup.take_notices(),
        });
    }
    Ok(reports)
}
