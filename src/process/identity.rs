//! Process identity and liveness.
//!
//! A PID alone is not an identity: PIDs are recycled. A process tend started is
//! `(pid, start time, boot id)`; the start time comes from field 22 of /proc/PID/stat
//! (clock ticks after boot, fixed for the life of the process, unchanged by exec) and the
//! boot id from /proc/sys/kernel/random/boot_id. Only when all three match is the process
//! ours, and only then may it be signalled. An instance that was started in a cgroup of
//! its own has a fourth part: its main process is in that cgroup (or below it). Nothing
//! can be born in a service's cgroup but the service's own processes, so a process
//! outside it is someone else, whatever its numbers say.
//!
//! A check has four answers, not three: besides alive, exited and stale (the record
//! names someone else, or an earlier boot), a check that could not be made at all (out
//! of descriptors or memory, /proc not readable) is [`Liveness::Unknown`]. Unknown
//! proves nothing either way: the record stands, nothing is signalled, nothing is
//! started in its place, and a later check that can be made decides.

use std::io;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sys::signal::kill;
use nix::unistd::Pid;

/// The fields of /proc/PID/stat that tend uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stat {
    pub state: u8,
    pub ppid: i32,
    pub pgrp: i32,
    pub session: i32,
    pub start_time: u64,
}

impl Stat {
    /// A zombie (`Z`) or dead (`X`) process has exited; it only waits to be reaped.
    pub fn exited(&self) -> bool {
        matches!(self.state, b'Z' | b'X')
    }
}

/// Whether process `pid` descends from `ancestor` (its parent's parent..., by /proc):
/// false once the chain reaches pid 1 or a process that is gone, or after 64 steps.
pub fn descends_from(pid: i32, ancestor: i32) -> bool {
    let mut p = pid;
    for _ in 0..64 {
        match stat(p) {
            Ok(Some(st)) if st.ppid == ancestor => return true,
            Ok(Some(st)) if st.ppid > 1 => p = st.ppid,
            _ => return false,
        }
    }
    false
}

/// Reads /proc/PID/stat. `Ok(None)` when the process does not exist.
///
/// `tend list` reads this once per running service, so it costs one open, one read and
/// one close: the kernel writes the whole line on the first read when the buffer holds
/// it, and a line that ends in its newline is complete, so no second read is needed to
/// see the end of the file.
pub fn stat(pid: i32) -> io::Result<Option<Stat>> {
    let mut buf = [0u8; 1024];
    let path = format!("/proc/{pid}/stat");
    let n = match std::fs::File::open(&path) {
        Ok(mut f) => read_line(&mut f, &mut buf)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    // A process can exit between open and read: the kernel then returns ESRCH / 0 bytes.
    if n == 0 {
        return Ok(None);
    }
    parse_stat(&buf[..n])
        .map(Some)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("unparsable {path}")))
}

/// Reads until the buffer holds a whole line (it ends in `\n`), the file ends or the
/// buffer is full.
fn read_line(f: &mut std::fs::File, buf: &mut [u8]) -> io::Result<usize> {
    use std::io::Read;
    let mut n = 0;
    loop {
        match f.read(&mut buf[n..]) {
            Ok(0) => return Ok(n),
            Ok(k) => {
                n += k;
                if n == buf.len() || buf[n - 1] == b'\n' {
                    return Ok(n);
                }
            }
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return Ok(0),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Parses the stat line. The command name (field 2) is in parentheses and may itself
/// contain spaces and parentheses, so fields are counted from the last `)`.
pub fn parse_stat(line: &[u8]) -> Option<Stat> {
    let close = line.iter().rposition(|&b| b == b')')?;
    // rest starts at field 3 (state).
    let mut fields = line
        .get(close + 2..)?
        .split(|b| b.is_ascii_whitespace())
        .filter(|f| !f.is_empty());
    let state = *fields.next()?.first()?;
    let ppid = int(fields.next()?)?;
    let pgrp = int(fields.next()?)?;
    let session = int(fields.next()?)?;
    // field 22 is the 19th after the state.
    let start_time = uint(fields.nth(22 - 7)?)?;
    Some(Stat {
        state,
        ppid,
        pgrp,
        session,
        start_time,
    })
}

/// A decimal field, read as `str::parse::<u64>` reads it (an optional `+`, then digits)
/// but straight from the bytes.
fn uint(f: &[u8]) -> Option<u64> {
    let digits = f.strip_prefix(b"+").unwrap_or(f);
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &b| {
        if b.is_ascii_digit() {
            n.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        } else {
            None
        }
    })
}

/// A decimal i32 field as `str::parse::<i32>` reads it (an optional sign, then digits).
fn int(f: &[u8]) -> Option<i32> {
    match f.split_first()? {
        (b'-', digits) if !digits.starts_with(b"+") => {
            i32::try_from(-i64::try_from(uint(digits)?).ok()?).ok()
        }
        _ => i32::try_from(uint(f)?).ok(),
    }
}

/// This boot's id; a record from another boot can never be a live process. Read once
/// per process (it cannot change while the process lives).
pub fn boot_id() -> io::Result<String> {
    static BOOT_ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    if let Some(id) = BOOT_ID.get() {
        return Ok(id.clone());
    }
    let id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")?
        .trim()
        .to_string();
    Ok(BOOT_ID.get_or_init(|| id).clone())
}

/// What became of a recorded process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Liveness {
    /// The process is ours and has not exited.
    Alive,
    /// The process has exited (gone, or a zombie waiting to be reaped).
    Exited,
    /// The record cannot describe a live process of ours: the PID now belongs to another
    /// process, the process is outside the instance's cgroup, or the record is from an
    /// earlier boot. The reason says which.
    Stale(String),
    /// The check could not be made (too many open files, out of memory, /proc not
    /// readable...): the process may or may not be ours and alive. The reason says why.
    Unknown(String),
}

/// Checks `(pid, start_time, boot_id)` against the running system, and, for an instance
/// with a cgroup, that the process is in it.
pub fn check(
    pid: i32,
    start_time: u64,
    recorded_boot: &str,
    current_boot: &str,
    cgroup: Option<&Path>,
) -> Liveness {
    if recorded_boot != current_boot {
        return Liveness::Stale("recorded before the last reboot".into());
    }
    if pid <= 0 {
        return Liveness::Stale(format!("invalid pid {pid}"));
    }
    // EPERM: a process with this pid exists but we may not signal it. That alone does
    // not make it someone else (a service may have changed its user ids): its start
    // time decides, as for any other.
    if kill(Pid::from_raw(pid), None) == Err(Errno::ESRCH) {
        return Liveness::Exited;
    }
    // Membership first: the stat read afterwards, if it still finds the recorded
    // process, proves that the membership read was about that process too. A membership
    // that could not be read matters only if the process is found alive.
    let inside = match cgroup.map(|cg| membership(pid, cg)).transpose() {
        Ok(Some(None)) => return Liveness::Exited,
        Ok(m) => Ok(m.flatten()),
        Err(e) => Err(e),
    };
    match stat(pid) {
        Ok(None) => Liveness::Exited,
        Ok(Some(s)) if s.start_time != start_time => Liveness::Stale(format!(
            "pid {pid} now belongs to another process (start time {} != recorded {start_time})",
            s.start_time
        )),
        Ok(Some(s)) if s.exited() => Liveness::Exited,
        Ok(Some(_)) => match inside {
            Ok(Some(Membership::Outside { cgroup, actual })) => {
                Liveness::Stale(outside(&cgroup, &actual))
            }
            Ok(_) => Liveness::Alive,
            Err(why) => Liveness::Unknown(why),
        },
        Err(e) => Liveness::Unknown(format!(
            "cannot read /proc/{pid}/stat: {}",
            crate::error::io_reason(&e)
        )),
    }
}

/// Where a process is, against the cgroup its record names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Membership {
    /// In the cgroup or below it.
    Inside,
    /// Somewhere else: `actual`.
    Outside { cgroup: PathBuf, actual: PathBuf },
}

/// Whether process `pid` is in `cgroup` (or below it), from /proc/PID/cgroup. `Ok(None)`
/// when there is no such process; `Err` (the reason) when it could not be read. Only
/// meaningful if the process is shown to be the same one after the read.
pub fn membership(pid: i32, cgroup: &Path) -> Result<Option<Membership>, String> {
    let path = format!("/proc/{pid}/cgroup");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        // Read after the process was reaped (it existed at open).
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return Ok(None),
        Err(e) => {
            return Err(format!(
                "cannot read {path}: {}",
                crate::error::io_reason(&e)
            ))
        }
    };
    // Empty: nothing to go by (the process is exiting); its stat will say so.
    if text.is_empty() {
        return Ok(None);
    }
    let rel = text
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .ok_or_else(|| format!("{path} names no cgroup v2"))?;
    let rel = Path::new(rel.trim());
    let mount = super::mounts::cgroup2_mount();
    if within(cgroup, rel, mount.as_deref()) {
        return Ok(Some(Membership::Inside));
    }
    let rel = rel.strip_prefix("/").unwrap_or(rel);
    Ok(Some(Membership::Outside {
        cgroup: cgroup.to_path_buf(),
        actual: match mount {
            Some(m) => m.join(rel),
            None => Path::new("/").join(rel),
        },
    }))
}

/// Whether the cgroup `rel` (as /proc/PID/cgroup names it: from the root of the
/// hierarchy) is the cgroup `recorded` (its directory on a cgroup2 mount) or below it.
/// `mount`: where this process sees the cgroup2 file system.
fn within(recorded: &Path, rel: &Path, mount: Option<&Path>) -> bool {
    let names = |p: &Path| -> Vec<std::ffi::OsString> {
        p.components()
            .filter(|c| !matches!(c, std::path::Component::RootDir))
            .map(|c| c.as_os_str().to_os_string())
            .collect()
    };
    let rel = names(rel);
    if let Some(tail) = mount.and_then(|m| recorded.strip_prefix(m).ok()) {
        return rel.starts_with(&names(tail));
    }
    // This process sees the file system elsewhere, or nowhere (a mount namespace of its
    // own, such as `ip netns exec` makes). The recorded path is a mount point followed by
    // the cgroup's path in the hierarchy, so the cgroup is the tail of it that begins
    // with `rel`'s first name: a tail of the recorded path, named from the root, that
    // `rel` is or is below. (Another cgroup could only match by being created, by root,
    // with the names of the recorded path's directories above the mount point.)
    let recorded = names(recorded);
    (0..recorded.len()).any(|k| rel.starts_with(&recorded[k..]))
}

/// The reason of a record whose process is outside the instance's cgroup.
pub fn outside(cgroup: &Path, actual: &Path) -> String {
    format!(
        "not in the instance's cgroup {} (it is in {}), so not the service",
        cgroup.display(),
        actual.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_with_parens_and_spaces() {
        let line = b"4242 (a) b (c)) S 1 4241 4241 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 987654 1000 100 18446744073709551615";
        let s = parse_stat(line).unwrap();
        assert_eq!(s.state, b'S');
        assert_eq!(s.ppid, 1);
        assert_eq!(s.pgrp, 4241);
        assert_eq!(s.session, 4241);
        assert_eq!(s.start_time, 987654);
    }

    #[test]
    fn fields_parse_like_str_parse() {
        for f in [
            "0",
            "42",
            "+7",
            "-1",
            "-2147483648",
            "2147483647",
            "2147483648",
            "",
            "-",
            "+",
            "-+1",
            "+-1",
            "1a",
            "4294967296",
            "18446744073709551615",
            "18446744073709551616",
        ] {
            assert_eq!(int(f.as_bytes()), f.parse::<i32>().ok(), "{f:?} as i32");
            assert_eq!(uint(f.as_bytes()), f.parse::<u64>().ok(), "{f:?} as u64");
        }
    }

    #[test]
    fn reads_own_stat_whole() {
        let me = std::process::id() as i32;
        let text = std::fs::read(format!("/proc/{me}/stat")).unwrap();
        let s = stat(me).unwrap().unwrap();
        assert_eq!(Some(s), parse_stat(&text));
        assert_eq!(stat(i32::MAX).unwrap(), None);
    }

    #[test]
    fn own_process_is_alive() {
        let me = std::process::id() as i32;
        let s = stat(me).unwrap().unwrap();
        let boot = boot_id().unwrap();
        assert_eq!(check(me, s.start_time, &boot, &boot, None), Liveness::Alive);
        assert!(matches!(
            check(me, s.start_time + 1, &boot, &boot, None),
            Liveness::Stale(_)
        ));
        assert!(matches!(
            check(me, s.start_time, "other-boot", &boot, None),
            Liveness::Stale(_)
        ));
    }

    #[test]
    fn within_a_recorded_cgroup() {
        let rec = Path::new("/sys/fs/cgroup/tend-1/web.service/run-1");
        let m = Some(Path::new("/sys/fs/cgroup"));
        for mount in [m, None, Some(Path::new("/elsewhere"))] {
            assert!(within(rec, Path::new("/tend-1/web.service/run-1"), mount));
            assert!(within(
                rec,
                Path::new("/tend-1/web.service/run-1/sub"),
                mount
            ));
            assert!(!within(rec, Path::new("/"), mount), "{mount:?}");
            assert!(!within(rec, Path::new("/tend-1/web.service"), mount));
            assert!(!within(rec, Path::new("/tend-1/web.service/run-2"), mount));
            assert!(!within(
                rec,
                Path::new("/user.slice/tend-1/web.service/run-1"),
                mount
            ));
            assert!(!within(rec, Path::new("/../../x"), mount));
        }
        // Seen where it was recorded, only the exact place counts.
        assert!(!within(
            rec,
            Path::new("/fs/cgroup/tend-1/web.service/run-1"),
            m
        ));
    }

    /// A process outside the cgroup its record names is not the instance, whatever its
    /// numbers say; inside it (or below it), it is.
    #[test]
    fn membership_is_part_of_the_identity() {
        let me = std::process::id() as i32;
        let Some(own) = std::fs::read_to_string("/proc/self/cgroup")
            .ok()
            .and_then(|t| {
                t.lines()
                    .find_map(|l| l.strip_prefix("0::"))
                    .map(String::from)
            })
        else {
            return;
        };
        let Some(mount) = super::super::mounts::cgroup2_mount() else {
            return;
        };
        let own = mount.join(own.trim().trim_start_matches('/'));
        let s = stat(me).unwrap().unwrap();
        let boot = boot_id().unwrap();
        assert_eq!(
            check(me, s.start_time, &boot, &boot, Some(&own)),
            Liveness::Alive
        );
        // Below the recorded cgroup is in it (when there is a cgroup above ours).
        if let Some(parent) = own.parent().filter(|_| own != mount) {
            assert_eq!(
                check(me, s.start_time, &boot, &boot, Some(parent)),
                Liveness::Alive
            );
        }
        let elsewhere = own.join("not-here");
        assert!(matches!(
            check(me, s.start_time, &boot, &boot, Some(&elsewhere)),
            Liveness::Stale(why) if why.contains("not in the instance's cgroup")
        ));
    }
}
