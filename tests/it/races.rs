//! tend itself interrupted or obstructed at the worst moment: SIGINT and SIGKILL during a
//! start, a commit that fails after the spawn, a database in the wrong journal mode, a
//! daemon SIGKILLed during restarts, `tend daemon` beside a loop of readers.

#[allow(unused_imports)]
use crate::util::*;
