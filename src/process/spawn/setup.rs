//! The process settings of a service (umask, resource limits, nice, oom_score_adj, user
//! and groups), resolved in the parent before the fork into plain numbers the child can
//! apply with raw system calls only (see `child.rs`).

use nix::errno::Errno;

use crate::error::{SpawnError, Stage};
use crate::service::execution::{can_change_identity, find_group, find_user, Resource, Rlimit};

/// Who the service runs as, resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    /// The user's name as given (or the group's, when only a group is), for errors.
    pub name: String,
    pub uid: libc::uid_t,
    pub gid: libc::gid_t,
    /// The supplementary groups, the primary one included.
    pub groups: Vec<libc::gid_t>,
    /// HOME, USER, LOGNAME and SHELL from the user's passwd entry (none for a group
    /// alone).
    pub env: Vec<(String, String)>,
}

/// What the service process is given between fork and exec besides its program, stdio
/// and working directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Setup {
    pub umask: u32,
    pub limits: Vec<(Resource, Rlimit)>,
    pub nice: Option<i32>,
    pub oom_score_adj: Option<i32>,
    /// `None`: tend's own user and groups.
    pub credentials: Option<Credentials>,
}

impl Default for Setup {
    /// What every process tend starts got before these settings: umask 022, the rest
    /// inherited.
    fn default() -> Self {
        Setup {
            umask: 0o022,
            limits: Vec::new(),
            nice: None,
            oom_score_adj: None,
            credentials: None,
        }
    }
}

impl Credentials {
    /// Resolves `user` and `group` (names or numbers) with the system's databases. The
    /// user's supplementary groups are its groups in the group database (as `initgroups`
    /// gives them, which is what supervisord and systemd's `User=` do), with `group` (or
    /// the user's primary group) first. A group alone replaces tend's groups by that one.
    /// `None`: nothing to change (neither given, or they name tend's own user and group).
    /// Refused when tend does not run as root and they name someone else.
    pub fn resolve(
        user: Option<&str>,
        group: Option<&str>,
    ) -> Result<Option<Credentials>, SpawnError> {
        let refused = |setting, reason| SpawnError::Refused { setting, reason };
        let g = group
            .map(|g| find_group(g).map_err(|r| refused("group", r)))
            .transpose()?;
        let creds = match user {
            Some(u) => {
                let pw = find_user(u).map_err(|r| refused("user", r))?;
                let gid = g.as_ref().map_or(pw.gid, |g| g.gid);
                let name = std::ffi::CString::new(pw.name.as_bytes())
                    .map_err(|_| SpawnError::Nul("the user name".into()))?;
                let mut groups: Vec<libc::gid_t> = nix::unistd::getgrouplist(&name, gid)
                    .map_err(|e| {
                        refused(
                            "user",
                            format!("cannot list the groups of {u}: {}", e.desc()),
                        )
                    })?
                    .into_iter()
                    .map(|g| g.as_raw())
                    .collect();
                groups.retain(|&x| x != gid.as_raw());
                groups.insert(0, gid.as_raw());
                groups.dedup();
                Credentials {
                    name: u.to_string(),
                    uid: pw.uid.as_raw(),
                    gid: gid.as_raw(),
                    groups,
                    env: vec![
                        ("HOME".into(), pw.dir.to_string_lossy().into_owned()),
                        ("USER".into(), pw.name.clone()),
                        ("LOGNAME".into(), pw.name.clone()),
                        ("SHELL".into(), pw.shell.to_string_lossy().into_owned()),
                    ],
                }
            }
            None => match g {
                Some(g) => Credentials {
                    name: group.unwrap_or_default().to_string(),
                    uid: nix::unistd::geteuid().as_raw(),
                    gid: g.gid.as_raw(),
                    groups: vec![g.gid.as_raw()],
                    env: Vec::new(),
                },
                None => return Ok(None),
            },
        };
        if can_change_identity() {
            return Ok(Some(creds));
        }
        // Without root nothing can change: fine if nothing has to.
        if creds.uid != nix::unistd::geteuid().as_raw() {
            return Err(refused(
                "user",
                format!(
                    "running a service as {} needs tend to run as root",
                    creds.name
                ),
            ));
        }
        if creds.gid != nix::unistd::getegid().as_raw() {
            return Err(refused(
                "group",
                format!(
                    "running a service with group {} needs tend to run as root",
                    group.unwrap_or(&creds.name)
                ),
            ));
        }
        Ok(Some(Credentials {
            // Our own: keep the groups we have (setgroups needs privilege), set the
            // environment.
            groups: Vec::new(),
            ..creds
        }))
    }
}

impl Setup {
    /// The stage of the child that sets `r`.
    pub(super) fn stage(r: Resource) -> Stage {
        match r {
            Resource::Nofile => Stage::LimitNofile,
            Resource::Nproc => Stage::LimitNproc,
            Resource::Core => Stage::LimitCore,
            Resource::Memlock => Stage::LimitMemlock,
        }
    }

    /// The error for a failed stage of the child: the setting and its value when the
    /// stage applies one of these settings.
    pub(super) fn error(&self, stage: Stage, errno: Errno, program: &str) -> SpawnError {
        let setting = |setting, value: String| SpawnError::Setting {
            setting,
            value,
            errno,
        };
        let limit = |r: Resource| {
            let v = self
                .limits
                .iter()
                .find(|(x, _)| *x == r)
                .map_or_else(String::new, |(_, l)| l.to_string());
            setting(r.setting(), v)
        };
        let creds = self.credentials.as_ref();
        let num = |v: Option<i32>| v.map_or_else(String::new, |n| n.to_string());
        match stage {
            Stage::LimitNofile => limit(Resource::Nofile),
            Stage::LimitNproc => limit(Resource::Nproc),
            Stage::LimitCore => limit(Resource::Core),
            Stage::LimitMemlock => limit(Resource::Memlock),
            Stage::Nice => setting("nice", num(self.nice)),
            Stage::OomScoreAdj => setting("oom_score_adj", num(self.oom_score_adj)),
            Stage::Groups => setting(
                "the supplementary groups",
                creds.map_or_else(String::new, |c| format!("{:?}", c.groups)),
            ),
            Stage::Group => setting(
                "group",
                creds.map_or_else(String::new, |c| format!("gid {}", c.gid)),
            ),
            Stage::User => setting(
                "user",
                creds.map_or_else(String::new, |c| format!("{} (uid {})", c.name, c.uid)),
            ),
            stage => SpawnError::Child {
                stage,
                errno,
                program: program.to_string(),
            },
        }
    }

    /// Whether the limit on open files is set here (then the daemon's handing on of its
    /// own original limit does not apply: an explicit limit wins).
    pub(super) fn sets_nofile(&self) -> bool {
        self.limits.iter().any(|(r, _)| *r == Resource::Nofile)
    }
}

/// A resource's number for prlimit64(2).
pub(super) fn resource_number(r: Resource) -> libc::c_int {
    (match r {
        Resource::Nofile => libc::RLIMIT_NOFILE,
        Resource::Nproc => libc::RLIMIT_NPROC,
        Resource::Core => libc::RLIMIT_CORE,
        Resource::Memlock => libc::RLIMIT_MEMLOCK,
    }) as libc::c_int
}
