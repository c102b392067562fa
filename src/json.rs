//! The JSON shapes every transport serves: `tend list|status|events --json`, and the
//! daemon's HTTP API, which must answer with exactly what the CLI prints.
//!
//! They are a stable interface for scripts: fields are only ever added, never renamed or
//! removed.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::record::{now_ms, Event};
use crate::supervisor::Status;

/// `tend status --json`, and each element of `tend list --json`: identity and state,
/// the command, the environment, every setting of the table (by its `json` name, in
/// table order), then the restart bookkeeping.
pub struct ServiceJson<'a>(&'a Status);

impl<'a> ServiceJson<'a> {
    pub fn new(st: &'a Status) -> Self {
        ServiceJson(st)
    }
}

impl Serialize for ServiceJson<'_> {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let st = self.0;
        let s = &st.service;
        let i = st.instance.as_ref();
        let rt = &st.runtime;
        let mut m = ser.serialize_map(None)?;
        m.serialize_entry("name", &s.name)?;
        m.serialize_entry("state", st.state.name())?;
        m.serialize_entry("waiting_for_daemon", &st.state.waiting_for_daemon())?;
        m.serialize_entry("unknown_reason", &st.state.unknown_reason())?;
        m.serialize_entry("pid", &i.map(|i| i.pid))?;
        m.serialize_entry("pgid", &i.map(|i| i.pgid))?;
        m.serialize_entry("started_at", &i.map(|i| rfc3339(i.started_at)))?;
        m.serialize_entry("uptime_secs", &i.map(|i| uptime(i.started_at).as_secs()))?;
        m.serialize_entry("argv", &s.argv)?;
        m.serialize_entry("command", &s.command_line())?;
        m.serialize_entry("env", &s.env)?;
        for (key, value) in s.settings.json() {
            m.serialize_entry(key, &value)?;
        }
        m.serialize_entry("restarts", &rt.restarts)?;
        m.serialize_entry("last_exit", &rt.last_exit)?;
        m.serialize_entry("last_exit_at", &rt.last_exit_at.map(rfc3339))?;
        m.serialize_entry("next_retry_at", &rt.next_retry_at.map(rfc3339_millis))?;
        m.serialize_entry("failed_reason", &rt.failed)?;
        m.serialize_entry("cgroup", &st.cgroup)?;
        m.serialize_entry("created_at", &rfc3339(s.created_at))?;
        m.serialize_entry("updated_at", &rfc3339(s.updated_at))?;
        m.end()
    }
}

/// One element of `tend events --json`.
#[derive(Serialize)]
pub struct EventJson<'a> {
    pub id: i64,
    /// RFC 3339 with milliseconds, UTC.
    pub time: String,
    pub service: &'a str,
    pub kind: &'a str,
    pub detail: &'a str,
}

/// What a command given `--json` prints on stdout when it fails (besides its `tend:`
/// line on stderr and its exit code): `{"error": {"message": "...", "code": 4}}`.
#[derive(Serialize)]
pub struct ErrorJson {
    pub error: ErrorBody,
}

#[derive(Serialize)]
pub struct ErrorBody {
    pub message: String,
    /// The exit code (see the README's table).
    pub code: u8,
}

impl ErrorJson {
    pub fn new(e: &crate::error::Error) -> ErrorJson {
        ErrorJson {
            error: ErrorBody {
                message: e.to_string(),
                code: e.exit_code(),
            },
        }
    }
}

impl<'a> EventJson<'a> {
    pub fn new(e: &'a Event) -> EventJson<'a> {
        EventJson {
            id: e.id,
            time: rfc3339_millis(e.at),
            service: &e.service,
            kind: &e.kind,
            detail: &e.detail,
        }
    }
}

pub fn rfc3339(ms: i64) -> String {
    humantime::format_rfc3339_seconds(system_time(ms)).to_string()
}

pub fn rfc3339_millis(ms: i64) -> String {
    humantime::format_rfc3339_millis(system_time(ms)).to_string()
}

fn system_time(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64)
}

pub fn uptime(started_ms: i64) -> Duration {
    Duration::from_millis((now_ms() - started_ms).max(0) as u64)
}
