//! The values of the settings applied to the service process between fork and exec:
//! `umask`, resource limits, `nice`, `oom_score_adj`, and the `user` and `group` it runs
//! as; and their checks against what tend itself may do, made when a definition is
//! written (the start makes them again, for real, in the new process).
//!
//! The checks are those the kernel makes, seen from tend's own process: without root
//! (the capability in question), a hard limit cannot be raised above tend's own, nice
//! cannot go below tend's own (beyond what `RLIMIT_NICE` allows), `oom_score_adj` cannot
//! go below tend's own, and a service cannot run as another user or group.

use super::values::{parse_size, Text, Value};
use crate::error::{Error, Result};

/// The file mode creation mask of the service: `022` unless set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Umask(pub u32);

impl Default for Umask {
    fn default() -> Self {
        Umask(0o022)
    }
}

impl std::fmt::Display for Umask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:03o}", self.0)
    }
}

impl Value for Umask {
    fn parse(text: &str) -> std::result::Result<Self, String> {
        let t = text.trim();
        let digits = t.strip_prefix("0o").unwrap_or(t);
        let bad = || format!("{text:?} is not an octal umask from 000 to 777 (e.g. 022, 077)");
        if digits.is_empty()
            || digits.len() > 4
            || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b))
        {
            return Err(bad());
        }
        match u32::from_str_radix(digits, 8) {
            Ok(n) if n <= 0o777 => Ok(Umask(n)),
            _ => Err(bad()),
        }
    }
    fn to_json(&self) -> serde_json::Value {
        self.to_string().into()
    }
    fn from_json(v: &serde_json::Value) -> Option<Self> {
        Self::parse(v.as_str()?).ok()
    }
    fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let Text(text) = serde::Deserialize::deserialize(d)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
    /// Only a string: TOML's integer `0o022` and `22` cannot be told apart from the
    /// decimal numbers 18 and 22 once read, and a umask is always meant in octal.
    fn from_toml(v: &toml::Value) -> std::result::Result<Self, String> {
        match v {
            toml::Value::String(s) => Self::parse(s),
            _ => Err("write the umask as an octal string, e.g. umask = \"022\"".into()),
        }
    }
}

/// `RLIM_INFINITY`: no limit.
pub const INFINITY: u64 = u64::MAX;

/// A soft and a hard limit; [`INFINITY`] for none.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rlimit {
    pub soft: u64,
    pub hard: u64,
}

fn limit_text(n: u64) -> String {
    if n == INFINITY {
        "infinity".into()
    } else {
        n.to_string()
    }
}

fn limit_json(n: u64) -> serde_json::Value {
    if n == INFINITY {
        "infinity".into()
    } else {
        n.into()
    }
}

impl std::fmt::Display for Rlimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.soft == self.hard {
            f.write_str(&limit_text(self.soft))
        } else {
            write!(f, "{}:{}", limit_text(self.soft), limit_text(self.hard))
        }
    }
}

/// A resource limit of the service (`limit_nofile` and the like): `SOFT[:HARD]`, one
/// value setting both as systemd's `LimitNOFILE=` does; `infinity` or `unlimited` for
/// none. `None`: the service inherits tend's (for open files: see
/// `crate::process::limits`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limit(pub Option<Rlimit>);

impl Limit {
    fn parse_one(text: &str) -> std::result::Result<u64, String> {
        match text.trim().to_ascii_lowercase().as_str() {
            "infinity" | "unlimited" => Ok(INFINITY),
            t => parse_size(t)
                .map_err(|_| format!("{text:?} is not a number, a size (64M) or infinity")),
        }
    }
}

impl Value for Limit {
    fn parse(text: &str) -> std::result::Result<Self, String> {
        let t = text.trim();
        if t.is_empty() || t == "none" {
            return Ok(Limit(None));
        }
        let (soft, hard) = match t.split_once(':') {
            Some((s, h)) => (Self::parse_one(s)?, Self::parse_one(h)?),
            None => {
                let n = Self::parse_one(t)?;
                (n, n)
            }
        };
        if soft > hard {
            return Err(format!(
                "the soft limit {} is above the hard limit {}",
                limit_text(soft),
                limit_text(hard)
            ));
        }
        Ok(Limit(Some(Rlimit { soft, hard })))
    }
    fn to_json(&self) -> serde_json::Value {
        match self.0 {
            None => serde_json::Value::Null,
            Some(r) => {
                serde_json::json!({ "soft": limit_json(r.soft), "hard": limit_json(r.hard) })
            }
        }
    }
    fn from_json(v: &serde_json::Value) -> Option<Self> {
        if v.is_null() {
            return Some(Limit(None));
        }
        let one = |x: &serde_json::Value| match x {
            serde_json::Value::String(s) if s == "infinity" => Some(INFINITY),
            x => x.as_u64(),
        };
        let soft = one(v.get("soft")?)?;
        let hard = one(v.get("hard")?)?;
        (soft <= hard).then_some(Limit(Some(Rlimit { soft, hard })))
    }
    fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let v = <serde_json::Value as serde::Deserialize>::deserialize(d)?;
        Self::from_json(&v).ok_or_else(|| serde::de::Error::custom(format!("invalid limit {v}")))
    }
    fn to_toml(&self) -> Option<toml::Value> {
        self.0.map(|r| toml::Value::String(r.to_string()))
    }
}

/// A number within a range, or unset (inherited): `nice`, `oom_score_adj`.
macro_rules! ranged {
    ($(#[doc = $doc:literal])* $name:ident, $min:literal, $max:literal, $what:literal) => {
        $(#[doc = $doc])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct $name(pub Option<i32>);

        impl $name {
            pub const MIN: i32 = $min;
            pub const MAX: i32 = $max;
        }

        impl Value for $name {
            fn parse(text: &str) -> std::result::Result<Self, String> {
                match text.trim() {
                    "" | "none" => Ok($name(None)),
                    t => match t.parse::<i32>() {
                        Ok(n) if ($min..=$max).contains(&n) => Ok($name(Some(n))),
                        _ => Err(format!(
                            concat!("{:?} is not ", $what, " from {} to {}"),
                            text, $min, $max
                        )),
                    },
                }
            }
            fn to_json(&self) -> serde_json::Value {
                match self.0 {
                    Some(n) => n.into(),
                    None => serde_json::Value::Null,
                }
            }
            fn from_json(v: &serde_json::Value) -> Option<Self> {
                match v {
                    serde_json::Value::Null => Some($name(None)),
                    v => v
                        .as_i64()
                        .filter(|n| ($min..=$max).contains(n))
                        .map(|n| $name(Some(n as i32))),
                }
            }
            fn deserialize<'de, D: serde::Deserializer<'de>>(
                d: D,
            ) -> std::result::Result<Self, D::Error> {
                match <Option<i64> as serde::Deserialize>::deserialize(d)? {
                    None => Ok($name(None)),
                    Some(n) if ($min..=$max).contains(&n) => Ok($name(Some(n as i32))),
                    Some(n) => Err(serde::de::Error::custom(format!("{n} is out of range"))),
                }
            }
        }
    };
}

ranged!(
    /// The nice value of the service, -20 (first) to 19 (last); unset: tend's own.
    Nice,
    -20,
    19,
    "a nice value"
);
ranged!(
    /// `/proc/PID/oom_score_adj` of the service, -1000 (never killed by the OOM killer)
    /// to 1000 (killed first); unset: tend's own.
    OomScoreAdj,
    -1000,
    1000,
    "an oom_score_adj"
);

/// A user or group name, or a number; unset: tend's own. Resolved against the system's
/// databases (`/etc/passwd`, `/etc/group`, NSS) when written and again at each start.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Account(pub Option<String>);

impl Value for Account {
    fn parse(text: &str) -> std::result::Result<Self, String> {
        let t = text.trim();
        if t.is_empty() {
            return Ok(Account(None));
        }
        // What useradd and groupadd accept, loosely: no separator of the databases'
        // lines, no space, no control character; a name starting with '-' would read as
        // an option in the tools that manage them.
        let valid = t.len() <= 256
            && !t.starts_with('-')
            && t.chars()
                .all(|c| !c.is_whitespace() && !c.is_control() && c != ':' && c != ',');
        if !valid {
            return Err(format!("{text:?} is not a user or group name"));
        }
        Ok(Account(Some(t.to_string())))
    }
    fn to_json(&self) -> serde_json::Value {
        match &self.0 {
            Some(s) => s.as_str().into(),
            None => serde_json::Value::Null,
        }
    }
    fn from_json(v: &serde_json::Value) -> Option<Self> {
        match v {
            serde_json::Value::Null => Some(Account(None)),
            v => Self::parse(v.as_str()?).ok(),
        }
    }
    fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        <Option<String> as serde::Deserialize>::deserialize(d).map(Account)
    }
}

/// The capabilities these settings need (capabilities(7)).
pub const CAP_SETGID: u32 = 6;
pub const CAP_SETUID: u32 = 7;
pub const CAP_SYS_NICE: u32 = 23;
pub const CAP_SYS_RESOURCE: u32 = 24;

/// Whether tend's process has capability `bit` in effect. Root usually has all, but not
/// always (a container may drop `CAP_SYS_RESOURCE`): the kernel checks capabilities,
/// so the checks here do too.
pub fn has_capability(bit: u32) -> bool {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return nix::unistd::geteuid().is_root();
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << bit) != 0)
}

/// Whether tend may take another identity for a service: root (`CAP_SETUID` and
/// `CAP_SETGID`).
pub fn can_change_identity() -> bool {
    has_capability(CAP_SETUID) && has_capability(CAP_SETGID)
}

/// Finds a user by name, or by number when the text is one.
pub fn find_user(name: &str) -> std::result::Result<nix::unistd::User, String> {
    let found = match name.parse::<u32>() {
        Ok(uid) => nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)),
        Err(_) => nix::unistd::User::from_name(name),
    };
    match found {
        Ok(Some(u)) => Ok(u),
        Ok(None) => Err(format!("no such user {name:?}")),
        Err(e) => Err(format!("cannot look up user {name:?}: {}", e.desc())),
    }
}

/// Finds a group by name, or by number when the text is one.
pub fn find_group(name: &str) -> std::result::Result<nix::unistd::Group, String> {
    let found = match name.parse::<u32>() {
        Ok(gid) => nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(gid)),
        Err(_) => nix::unistd::Group::from_name(name),
    };
    match found {
        Ok(Some(g)) => Ok(g),
        Ok(None) => Err(format!("no such group {name:?}")),
        Err(e) => Err(format!("cannot look up group {name:?}: {}", e.desc())),
    }
}

/// `--user`: it exists, and is tend's own user unless tend runs as root.
pub fn check_user(a: &Account) -> Result<()> {
    let Some(name) = &a.0 else { return Ok(()) };
    let invalid = |message: String| Error::Invalid {
        what: "--user",
        message,
    };
    let user = find_user(name).map_err(invalid)?;
    if !can_change_identity() && user.uid != nix::unistd::geteuid() {
        return Err(invalid(format!(
            "running a service as {name} needs tend to run as root"
        )));
    }
    Ok(())
}

/// `--group`: it exists, and is tend's own group unless tend runs as root.
pub fn check_group(a: &Account) -> Result<()> {
    let Some(name) = &a.0 else { return Ok(()) };
    let invalid = |message: String| Error::Invalid {
        what: "--group",
        message,
    };
    let group = find_group(name).map_err(invalid)?;
    if !can_change_identity() && group.gid != nix::unistd::getegid() {
        return Err(invalid(format!(
            "running a service with group {name} needs tend to run as root"
        )));
    }
    Ok(())
}

/// The resources tend sets, by the setting's name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resource {
    Nofile,
    Nproc,
    Core,
    Memlock,
}

impl Resource {
    pub fn setting(self) -> &'static str {
        match self {
            Resource::Nofile => "limit_nofile",
            Resource::Nproc => "limit_nproc",
            Resource::Core => "limit_core",
            Resource::Memlock => "limit_memlock",
        }
    }

    fn option(self) -> &'static str {
        match self {
            Resource::Nofile => "--limit-nofile",
            Resource::Nproc => "--limit-nproc",
            Resource::Core => "--limit-core",
            Resource::Memlock => "--limit-memlock",
        }
    }

    fn nix(self) -> nix::sys::resource::Resource {
        use nix::sys::resource::Resource as R;
        match self {
            Resource::Nofile => R::RLIMIT_NOFILE,
            Resource::Nproc => R::RLIMIT_NPROC,
            Resource::Core => R::RLIMIT_CORE,
            Resource::Memlock => R::RLIMIT_MEMLOCK,
        }
    }

    /// This process's (soft, hard) limit.
    pub fn current(self) -> Option<(u64, u64)> {
        nix::sys::resource::getrlimit(self.nix()).ok()
    }
}

/// A resource limit: within what the kernel allows at all, and without root not above
/// tend's own hard limit (only a privileged process may raise a hard limit).
pub fn check_limit(resource: Resource, l: &Limit) -> Result<()> {
    let Some(r) = l.0 else { return Ok(()) };
    let invalid = |message: String| Error::Invalid {
        what: resource.option(),
        message,
    };
    if resource == Resource::Nofile {
        // The kernel refuses a limit on open files above fs.nr_open, root or not.
        let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
            .ok()
            .and_then(|t| t.trim().parse::<u64>().ok());
        if let Some(max) = nr_open.filter(|&max| r.hard > max) {
            return Err(invalid(format!(
                "{} is above the kernel's most open files per process (fs.nr_open = {max})",
                limit_text(r.hard)
            )));
        }
    }
    if !has_capability(CAP_SYS_RESOURCE) {
        if let Some((_, hard)) = resource.current() {
            if r.hard > hard {
                return Err(invalid(format!(
                    "the hard limit {} is above tend's own ({}); raising it needs root \
                     (CAP_SYS_RESOURCE)",
                    limit_text(r.hard),
                    limit_text(hard)
                )));
            }
        }
    }
    Ok(())
}

/// A field of /proc/self/stat after the command (the third field is index 0).
fn own_stat_field(index: usize) -> Option<i64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split(' ').nth(index)?.parse().ok()
}

/// Without root, a nice value below tend's own only within `RLIMIT_NICE` (as the kernel
/// allows it: down to 20 - the soft limit).
pub fn check_nice(n: &Nice) -> Result<()> {
    let Some(n) = n.0 else { return Ok(()) };
    if has_capability(CAP_SYS_NICE) {
        return Ok(());
    }
    // Field 19 of stat: nice.
    let own = own_stat_field(16).unwrap_or(0);
    let allowed = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NICE)
        .map(|(soft, _)| 20 - soft.min(40) as i64)
        .unwrap_or(20);
    if i64::from(n) < own && i64::from(n) < allowed {
        return Err(Error::Invalid {
            what: "--nice",
            message: format!(
                "{n} is below tend's own nice value ({own}); that needs root (CAP_SYS_NICE)"
            ),
        });
    }
    Ok(())
}

/// Without root, an `oom_score_adj` below tend's own is refused.
pub fn check_oom_score_adj(v: &OomScoreAdj) -> Result<()> {
    let Some(v) = v.0 else { return Ok(()) };
    if has_capability(CAP_SYS_RESOURCE) {
        return Ok(());
    }
    let own: i32 = std::fs::read_to_string("/proc/self/oom_score_adj")
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0);
    if v < own {
        return Err(Error::Invalid {
            what: "--oom-score-adj",
            message: format!(
                "{v} is below tend's own ({own}); lowering it needs root (CAP_SYS_RESOURCE)"
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn umask_is_octal_text() {
        assert_eq!(Umask::parse("022"), Ok(Umask(0o022)));
        assert_eq!(Umask::parse("0077"), Ok(Umask(0o077)));
        assert_eq!(Umask::parse("0o7"), Ok(Umask(0o7)));
        assert!(Umask::parse("8").is_err());
        assert!(Umask::parse("1777").is_err());
        assert!(Umask::parse("").is_err());
        assert_eq!(Umask(0o2).to_string(), "002");
        assert!(Umask::from_toml(&toml::Value::Integer(18)).is_err());
    }

    #[test]
    fn limits_take_one_or_two_values() {
        let l = |s, h| Ok(Limit(Some(Rlimit { soft: s, hard: h })));
        assert_eq!(Limit::parse("1024"), l(1024, 1024));
        assert_eq!(Limit::parse("1024:4096"), l(1024, 4096));
        assert_eq!(Limit::parse("64M:infinity"), l(64 << 20, INFINITY));
        assert_eq!(Limit::parse("unlimited"), l(INFINITY, INFINITY));
        assert_eq!(Limit::parse(""), Ok(Limit(None)));
        assert!(Limit::parse("4096:1024").is_err());
        assert!(Limit::parse("x").is_err());
        assert!(Limit::parse("1:2:3").is_err());
        let v = Limit::parse("10:infinity").unwrap();
        assert_eq!(Limit::from_json(&v.to_json()), Some(v));
        assert_eq!(v.to_toml(), Some(toml::Value::String("10:infinity".into())));
        assert_eq!(Limit::from_toml(&toml::Value::Integer(5)), l(5, 5));
    }

    #[test]
    fn ranged_values_refuse_what_is_out_of_range() {
        assert_eq!(Nice::parse("-20"), Ok(Nice(Some(-20))));
        assert!(Nice::parse("20").is_err());
        assert!(Nice::parse("-21").is_err());
        assert_eq!(Nice::parse(""), Ok(Nice(None)));
        assert_eq!(OomScoreAdj::parse("-1000"), Ok(OomScoreAdj(Some(-1000))));
        assert!(OomScoreAdj::parse("1001").is_err());
        assert_eq!(
            OomScoreAdj::from_json(&serde_json::json!(500)),
            Some(OomScoreAdj(Some(500)))
        );
        assert_eq!(OomScoreAdj::from_json(&serde_json::json!(5000)), None);
    }

    proptest::proptest! {
        /// Whatever is typed, parsing answers (no panic); a limit read back from what
        /// the store, `--json` and `export` write is the same limit.
        #[test]
        fn limits_round_trip(soft in proptest::prelude::any::<u64>(),
                             hard in proptest::prelude::any::<u64>(),
                             text in ".{0,40}") {
            let _ = Limit::parse(&text);
            let _ = Umask::parse(&text);
            let _ = Nice::parse(&text);
            let (soft, hard) = (soft.min(hard), soft.max(hard));
            let l = Limit(Some(Rlimit { soft, hard }));
            proptest::prop_assert_eq!(Limit::from_json(&l.to_json()), Some(l));
            let toml = l.to_toml().expect("a set limit is exported");
            proptest::prop_assert_eq!(Limit::from_toml(&toml), Ok(l));
        }

        #[test]
        fn umasks_round_trip(mask in 0u32..=0o777) {
            let u = Umask(mask);
            proptest::prop_assert_eq!(Umask::from_toml(&u.to_toml().unwrap()), Ok(u));
            proptest::prop_assert_eq!(Umask::from_json(&u.to_json()), Some(u));
        }
    }

    #[test]
    fn account_names() {
        assert_eq!(
            Account::parse("www-data"),
            Ok(Account(Some("www-data".into())))
        );
        assert_eq!(Account::parse("1000"), Ok(Account(Some("1000".into()))));
        assert_eq!(Account::parse(""), Ok(Account(None)));
        for bad in ["a:b", "a b", "-x", "a,b", "a\nb"] {
            assert!(Account::parse(bad).is_err(), "{bad:?}");
        }
    }
}
