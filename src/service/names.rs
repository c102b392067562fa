//! Service names: `[A-Za-z0-9][A-Za-z0-9._-]{0,63}`. A leaf, so every part of a
//! definition can check a name without depending on the definition itself.

use crate::error::{Error, Result};

/// Longest service name accepted (64 characters, as in `[A-Za-z0-9][A-Za-z0-9._-]{0,63}`).
pub const MAX_NAME_LEN: usize = 64;

/// Checks a service name against `[A-Za-z0-9][A-Za-z0-9._-]{0,63}`.
pub fn validate_name(name: &str) -> Result<()> {
    let reason = if name.is_empty() {
        Some("it is empty")
    } else if name.len() > MAX_NAME_LEN {
        Some("it is longer than 64 characters")
    } else if !name.as_bytes()[0].is_ascii_alphanumeric() {
        Some("it must start with a letter or digit")
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        Some("only letters, digits, '.', '_' and '-' are allowed")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(Error::InvalidName {
            name: name.to_string(),
            reason,
        }),
        None => Ok(()),
    }
}
