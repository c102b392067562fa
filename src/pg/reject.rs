//! Rejected NOTIFY payloads, coalesced: anyone who can connect to the database can send
//! any number of them, and one event plus one log line each would let a flood fill the
//! event history and the daemon's log. A burst (rejections less than [`QUIET`] apart, for
//! at most [`MAX_BURST`]) becomes one `rejected` event and one log line, with a count.
//! Pure bookkeeping: the executor asks [`Rejections::due`] when to write.

use std::time::{Duration, Instant};

/// A burst ends after this long without a rejection.
pub const QUIET: Duration = Duration::from_secs(1);
/// A flood that never pauses is still summed up this often.
pub const MAX_BURST: Duration = Duration::from_secs(60);

#[derive(Debug)]
struct Burst {
    started: Instant,
    last_at: Instant,
    count: u64,
    /// The service named by every rejection of the burst, or `-` when they differ.
    service: String,
    first: String,
    last: String,
}

/// What to record for a finished burst.
#[derive(Debug, PartialEq, Eq)]
pub struct Summary {
    pub service: String,
    pub count: u64,
    /// One line: the reason itself for a single rejection, else a count with the first
    /// and last reasons.
    pub detail: String,
}

#[derive(Debug, Default)]
pub struct Rejections {
    burst: Option<Burst>,
}

impl Rejections {
    /// Notes one rejection at `now`.
    pub fn add(&mut self, now: Instant, service: &str, why: String) {
        match &mut self.burst {
            Some(b) => {
                b.count += 1;
                b.last_at = now;
                if b.service != service {
                    b.service = "-".into();
                }
                b.last = why;
            }
            None => {
                self.burst = Some(Burst {
                    started: now,
                    last_at: now,
                    count: 1,
                    service: service.to_string(),
                    first: why.clone(),
                    last: why,
                })
            }
        }
    }

    /// When the current burst will be due, if there is one.
    pub fn deadline(&self) -> Option<Instant> {
        self.burst
            .as_ref()
            .map(|b| (b.last_at + QUIET).min(b.started + MAX_BURST))
    }

    /// The summary of the current burst if it is over at `now` (or `force`, at the end).
    pub fn due(&mut self, now: Instant, force: bool) -> Option<Summary> {
        let over = self.deadline().is_some_and(|d| now >= d);
        if !(over || force) {
            return None;
        }
        let b = self.burst.take()?;
        let detail = if b.count == 1 {
            b.first
        } else {
            let secs = b.last_at.duration_since(b.started).as_secs_f64();
            format!(
                "{} payloads rejected in {secs:.1}s; first: {}; last: {}",
                b.count, b.first, b.last
            )
        };
        Some(Summary {
            service: b.service,
            count: b.count,
            detail,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_one_summary_with_a_count() {
        let t0 = Instant::now();
        let mut r = Rejections::default();
        assert_eq!(r.due(t0, false), None);
        for i in 0..10_000u64 {
            r.add(t0 + Duration::from_micros(i * 10), "-", format!("bad {i}"));
        }
        assert_eq!(r.due(t0 + Duration::from_millis(500), false), None);
        let s = r
            .due(t0 + Duration::from_millis(100) + QUIET, false)
            .expect("due after a quiet second");
        assert_eq!(s.count, 10_000);
        assert!(
            s.detail.starts_with("10000 payloads rejected"),
            "{}",
            s.detail
        );
        assert!(s.detail.contains("first: bad 0; last: bad 9999"));
        assert_eq!(r.due(t0 + MAX_BURST * 2, false), None);
    }

    #[test]
    fn a_lone_rejection_keeps_its_reason_and_service() {
        let t0 = Instant::now();
        let mut r = Rejections::default();
        r.add(t0, "web", "unknown service web".into());
        let s = r.due(t0 + QUIET, false).unwrap();
        assert_eq!(
            s,
            Summary {
                service: "web".into(),
                count: 1,
                detail: "unknown service web".into()
            }
        );
    }

    #[test]
    fn a_flood_that_never_pauses_is_summed_up_every_max_burst() {
        let t0 = Instant::now();
        let mut r = Rejections::default();
        let mut summaries = 0;
        let mut t = t0;
        while t < t0 + MAX_BURST * 3 {
            r.add(t, "a", "x".into());
            if r.due(t, false).is_some() {
                summaries += 1;
            }
            t += Duration::from_millis(100);
        }
        assert_eq!(
            summaries, 2,
            "one summary per MAX_BURST of continuous flood"
        );
        r.add(t, "b", "y".into());
        assert_eq!(r.due(t, true).unwrap().service, "-");
    }
}
