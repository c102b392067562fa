//! Process-level corners staged for real: recycled session numbers, services that leave
//! their session, what a service inherits, and a start that is honest about a service
//! that exits at once.

#[allow(unused_imports)]
use crate::util::*;
