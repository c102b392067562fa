//! start / stop / restart / signal over several services, producing one report per
//! service. The CLI calls this when no daemon runs; the daemon calls it for a control
//! request or a NOTIFY. Same function, same result, whoever asks.

use crate::daemon::protocol::{Outcome, Report, Selection, Verb};
use crate::error::Result;
use crate::supervisor::Supervisor;

/// Applies `verb` to the selected services, each in turn; one failing does not stop the
/// others. `proceed` is asked before each service: when it says no (the caller went
/// away), the rest are not acted on.
pub fn act(
    sup: &mut Supervisor,
    verb: Verb,
    selection: &Selection,
    proceed: &dyn Fn() -> bool,
) -> Result<Vec<Report>> {
    let names = match selection {
        Selection::All => sup.names()?,
        Selection::Names { names } => names.clone(),
    };
    let mut reports = Vec::with_capacity(names.len());
    for name in names {
        if !proceed() {
            break;
        }
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
