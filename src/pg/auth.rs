//! Signed NOTIFY payloads (opt-in with `--notify-key-file`).
//!
//! Any role that can connect to the database can NOTIFY any channel, so with a key
//! configured the daemon only obeys payloads of the form
//!
//! ```text
//! sig1 <unix seconds> <nonce> <64 hex digits> <payload>
//! ```
//!
//! where the hex digits are `HMAC-SHA256(key, "sig1 <unix seconds> <nonce> <payload>")`
//! and the nonce is 16 random hex digits, so that the same command sent twice in one
//! second is two different messages. A payload whose time is more than [`WINDOW`] away
//! from the daemon's clock is stale; one whose signature was already seen within the
//! window is a replay. Both are refused, as is anything unsigned or mis-signed.

use super::error::PgError;
use std::collections::HashMap;
use std::path::Path;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// How far a signed payload's time may be from the receiver's clock, in seconds.
pub const WINDOW: i64 = 30;
const PREFIX: &str = "sig1";

#[derive(Clone)]
pub struct Key(Vec<u8>);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(..)")
    }
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("unsigned payload (a notify key is configured)")]
    Unsigned,
    #[error("malformed signature envelope")]
    Malformed,
    #[error("bad signature")]
    BadSignature,
    #[error("stale: signed {} s {} (window {WINDOW} s)", age.abs(), if *age >= 0 { "ago" } else { "in the future" })]
    Stale { age: i64 },
    #[error("replayed payload")]
    Replay,
}

impl Key {
    /// Reads a key file: its bytes with surrounding whitespace removed; at least 16 bytes.
    pub fn load(path: &Path) -> Result<Key, PgError> {
        let fail = |reason: String| PgError::Key {
            path: path.to_path_buf(),
            reason,
        };
        let bytes = std::fs::read(path).map_err(|e| fail(crate::error::io_reason(&e)))?;
        let trimmed = bytes.trim_ascii();
        if trimmed.len() < 16 {
            return Err(fail("a notify key must be at least 16 bytes".into()));
        }
        Ok(Key(trimmed.to_vec()))
    }

    /// A key from bytes already in memory (tests, fuzzing).
    pub fn load_bytes(bytes: &[u8]) -> Key {
        Key(bytes.to_vec())
    }

    fn mac(&self, ts: i64, nonce: &str, payload: &str) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key size");
        mac.update(format!("{PREFIX} {ts} {nonce} ").as_bytes());
        mac.update(payload.as_bytes());
        mac
    }

    /// Wraps `payload` in a signed envelope for time `now` (unix seconds) with a fresh
    /// random nonce.
    pub fn sign(&self, payload: &str, now: i64) -> std::io::Result<String> {
        let mut bytes = [0u8; 8];
        std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut bytes)?;
        Ok(self.sign_with_nonce(payload, now, &hex(&bytes)))
    }

    fn sign_with_nonce(&self, payload: &str, now: i64, nonce: &str) -> String {
        let tag = self.mac(now, nonce, payload).finalize().into_bytes();
        format!("{PREFIX} {now} {nonce} {} {payload}", hex(&tag))
    }
}

/// Remembers signatures seen within the window, to refuse replays.
#[derive(Default)]
pub struct Replays(HashMap<String, i64>);

impl Replays {
    /// A cache holding these (signature, signed-at) pairs.
    pub fn from_seen(seen: impl IntoIterator<Item = (String, i64)>) -> Replays {
        Replays(seen.into_iter().collect())
    }
}

/// The time and the signature (lowercase hex) of a signed envelope, unverified.
pub fn envelope(signed: &str) -> Option<(i64, String)> {
    let mut parts = signed.trim_start().splitn(5, ' ');
    if parts.next() != Some(PREFIX) {
        return None;
    }
    let ts = parts.next()?.parse().ok()?;
    let _nonce = parts.next()?;
    Some((ts, parts.next()?.to_ascii_lowercase()))
}

/// Checks a signed envelope and returns the payload inside it.
pub fn verify<'a>(
    key: &Key,
    signed: &'a str,
    now: i64,
    seen: &mut Replays,
) -> Result<&'a str, AuthError> {
    let mut parts = signed.trim_start().splitn(5, ' ');
    if parts.next() != Some(PREFIX) {
        return Err(AuthError::Unsigned);
    }
    let ts: i64 = parts
        .next()
        .and_then(|t| t.parse().ok())
        .ok_or(AuthError::Malformed)?;
    let nonce = parts
        .next()
        .filter(|n| n.len() == 16 && n.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or(AuthError::Malformed)?;
    let hex = parts.next().ok_or(AuthError::Malformed)?;
    let payload = parts.next().ok_or(AuthError::Malformed)?;
    let tag = decode_hex(hex).ok_or(AuthError::Malformed)?;
    key.mac(ts, nonce, payload)
        .verify_slice(&tag)
        .map_err(|_| AuthError::BadSignature)?;
    let age = now - ts;
    if age.abs() > WINDOW {
        return Err(AuthError::Stale { age });
    }
    seen.0.retain(|_, t| (now - *t).abs() <= WINDOW);
    if seen.0.insert(hex.to_ascii_lowercase(), ts).is_some() {
        return Err(AuthError::Replay);
    }
    Ok(payload)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if s.len() != 64 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Key {
        Key(b"0123456789abcdef0123".to_vec())
    }

    #[test]
    fn round_trip() {
        let k = key();
        let signed = k.sign("restart web", 1000).unwrap();
        let mut seen = Replays::default();
        assert_eq!(verify(&k, &signed, 1010, &mut seen), Ok("restart web"));
        assert_eq!(verify(&k, &signed, 1010, &mut seen), Err(AuthError::Replay));
        // The same command signed again in the same second is a new message.
        let again = k.sign("restart web", 1000).unwrap();
        assert_ne!(again, signed);
        assert_eq!(verify(&k, &again, 1010, &mut seen), Ok("restart web"));
    }

    #[test]
    fn refusals() {
        let k = key();
        let mut seen = Replays::default();
        assert_eq!(
            verify(&k, "restart web", 0, &mut seen),
            Err(AuthError::Unsigned)
        );
        let signed = k.sign_with_nonce("restart web", 1000, "0123456789abcdef");
        assert_eq!(
            verify(&k, &signed, 1000 + WINDOW + 1, &mut seen),
            Err(AuthError::Stale { age: WINDOW + 1 })
        );
        assert_eq!(
            AuthError::Stale { age: -40 }.to_string(),
            "stale: signed 40 s in the future (window 30 s)"
        );
        let forged = signed.replace("restart web", "stop web");
        assert_eq!(
            verify(&k, &forged, 1000, &mut seen),
            Err(AuthError::BadSignature)
        );
        let other = Key(b"another key of enough length".to_vec()).sign_with_nonce(
            "restart web",
            1000,
            "0123456789abcdef",
        );
        assert_eq!(
            verify(&k, &other, 1000, &mut seen),
            Err(AuthError::BadSignature)
        );
        // Moving the timestamp breaks the signature.
        let shifted = signed.replacen("1000", "1001", 1);
        assert_eq!(
            verify(&k, &shifted, 1000, &mut seen),
            Err(AuthError::BadSignature)
        );
        assert_eq!(
            verify(&k, "sig1 x y z", 0, &mut seen),
            Err(AuthError::Malformed)
        );
        // A nonce is required.
        let no_nonce = signed.replacen(" 0123456789abcdef", "", 1);
        assert_eq!(
            verify(&k, &no_nonce, 1000, &mut seen),
            Err(AuthError::Malformed)
        );
    }
}
