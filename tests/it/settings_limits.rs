//! The process settings (umask, resource limits, nice, oom_score_adj, user and group):
//! each is read back from /proc of the running service, each refusal is staged for real
//! (a CLI without the capability, a limit lowered under the start, a user removed after
//! `add`) and leaves the stored state as it was.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::util::{
    self, alive, dump, read, require_root, require_tool, run, wait_until, Env, TEND,
};

/// Generous: the machine is shared with parallel builds.
const DEADLINE: Duration = Duration::from_secs(30);

/// (soft, hard) of `resource` for this test process (the tend it runs inherits them).
fn own_limit(resource: libc::__rlimit_resource_t) -> (u64, u64) {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into a valid rlimit.
    assert_eq!(unsafe { libc::getrlimit(resource, &mut r) }, 0);
    (r.rlim_cur, r.rlim_max)
}

/// The line of /proc/PID/limits that starts with `name`: (soft, hard) as written there.
fn proc_limit(pid: i32, name: &str) -> (String, String) {
    let text = read(Path::new(&format!("/proc/{pid}/limits")));
    let line = text
        .lines()
        .find(|l| l.starts_with(name))
        .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/limits:\n{text}"));
    let fields: Vec<&str> = line[name.len()..].split_whitespace().collect();
    (fields[0].to_string(), fields[1].to_string())
}

/// The value of `key:` in /proc/PID/status.
fn proc_status(pid: i32, key: &str) -> String {
    read(Path::new(&format!("/proc/{pid}/status")))
        .lines()
        .find_map(|l| {
            l.strip_prefix(&format!("{key}:"))
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"))
}

/// Field 19 of /proc/PID/stat: the nice value.
fn proc_nice(pid: i32) -> i32 {
    let stat = read(Path::new(&format!("/proc/{pid}/stat")));
    let rest = stat.rsplit_once(')').expect("stat").1;
    rest.split_whitespace()
        .nth(16)
        .expect("nice")
        .parse()
        .expect("a number")
}

/// The environment of a process, `KEY=VALUE` each.
fn proc_environ(pid: i32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/environ"))
        .unwrap_or_default()
        .split(|&b| b == 0)
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect()
}

/// Whether this process has capability `bit` in effect.
fn has_cap(bit: u32) -> bool {
    read(Path::new("/proc/self/status"))
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|h| u64::from_str_radix(h.trim(), 16).ok())
        .is_some_and(|c| c & (1 << bit) != 0)
}

const CAP_SYS_NICE: u32 = 23;
const CAP_SYS_RESOURCE: u32 = 24;

/// `tend ARGS` for `env`, run under `wrapper` (e.g. `setpriv ...` or `prlimit ...`).
fn tend_under(env: &Env, wrapper: &[&str], args: &[&str]) -> util::Out {
    let mut c = Command::new(wrapper[0]);
    c.args(&wrapper[1..])
        .arg(TEND)
        .arg("--home")
        .arg(env.home())
        .args(args)
        .current_dir(env.work())
        .env_remove("TEND_HOME")
        .envs(env.vars.iter().map(|(k, v)| (k, v)))
        .stdin(std::process::Stdio::null());
    run(c)
}

/// The wrapper that runs tend without `CAP_SYS_RESOURCE`, as a user runs it: none when
/// this test already lacks it; `setpriv` dropping it from the bounding set as root (a
/// program root execs gets only what the bounding set keeps).
fn without_sys_resource() -> Option<Vec<&'static str>> {
    if !has_cap(CAP_SYS_RESOURCE) {
        return Some(vec!["env"]);
    }
    require_tool("setpriv").then(|| vec!["setpriv", "--bounding-set=-sys_resource"])
}

#[test]
fn limits_umask_nice_and_oom_score_adj_are_those_of_the_running_service() {
    let env = Env::new();
    let (_, nofile_hard) = own_limit(libc::RLIMIT_NOFILE);
    let (_, nproc_hard) = own_limit(libc::RLIMIT_NPROC);
    let (_, memlock_hard) = own_limit(libc::RLIMIT_MEMLOCK);
    // Below every hard limit this test has, so they pass without privilege as well.
    let nofile = format!("100:{}", nofile_hard.min(200));
    let nproc_soft = nproc_hard.min(4000);
    let nproc = format!("{nproc_soft}:{}", nproc_hard.min(5000));
    let memlock_soft = memlock_hard.min(64 * 1024);
    let memlock = format!("{}:{}", memlock_soft, memlock_hard.min(64 * 1024));
    let own_nice = proc_nice(std::process::id() as i32);
    let nice = (own_nice + 5).min(19);
    let own_oom: i32 = read(Path::new("/proc/self/oom_score_adj"))
        .trim()
        .parse()
        .unwrap();
    let oom = (own_oom + 300).min(1000);
    env.ok(&[
        "add",
        "w",
        "--umask",
        "027",
        "--limit-nofile",
        &nofile,
        "--limit-nproc",
        &nproc,
        "--limit-core",
        "0",
        "--limit-memlock",
        &memlock,
        "--nice",
        &nice.to_string(),
        "--oom-score-adj",
        &oom.to_string(),
        "--",
        "sleep",
        "300",
    ]);
    env.ok(&["start", "w"]);
    let pid = env.pid("w").expect("running");
    assert_eq!(
        proc_limit(pid, "Max open files"),
        ("100".into(), nofile_hard.min(200).to_string())
    );
    assert_eq!(
        proc_limit(pid, "Max processes"),
        (nproc_soft.to_string(), nproc_hard.min(5000).to_string())
    );
    assert_eq!(
        proc_limit(pid, "Max core file size"),
        ("0".into(), "0".into())
    );
    assert_eq!(
        proc_limit(pid, "Max locked memory").0,
        memlock_soft.to_string()
    );
    assert_eq!(proc_status(pid, "Umask"), "0027");
    assert_eq!(proc_nice(pid), nice);
    assert_eq!(
        read(Path::new(&format!("/proc/{pid}/oom_score_adj"))).trim(),
        oom.to_string()
    );

    let human = env.ok(&["status", "w"]).stdout;
    assert!(
        human.contains(&format!("umask 027, limit_nofile {nofile}")),
        "{human}"
    );
    // --json, then export and apply into a fresh home: the same settings.
    let st = env.status_json("w");
    assert_eq!(st["umask"], "027");
    assert_eq!(st["limit_nofile"]["soft"], 100);
    assert_eq!(st["limit_core"]["hard"], 0);
    assert_eq!(st["nice"], nice);
    assert_eq!(st["oom_score_adj"], oom);
    assert!(st["user"].is_null());
    let exported = env.ok(&["export"]).stdout;
    assert!(exported.contains("umask = \"027\""), "{exported}");
    let other = Env::new();
    std::fs::write(other.work().join("tend.toml"), &exported).unwrap();
    other.ok(&["apply"]);
    let again = other.status_json("w");
    for key in [
        "umask",
        "limit_nofile",
        "limit_nproc",
        "limit_core",
        "limit_memlock",
        "nice",
        "oom_score_adj",
        "user",
        "group",
    ] {
        assert_eq!(again[key], st[key], "{key} after export and apply");
    }

    // `edit` clears a limit: the next start inherits tend's.
    env.ok(&["edit", "w", "--limit-core", ""]);
    env.ok(&["restart", "w"]);
    let pid = env.pid("w").expect("running");
    let (core_soft, _) = own_limit(libc::RLIMIT_CORE);
    let shown = |n: u64| {
        if n == libc::RLIM_INFINITY {
            "unlimited".to_string()
        } else {
            n.to_string()
        }
    };
    assert_eq!(proc_limit(pid, "Max core file size").0, shown(core_soft));
}

/// The daemon raises its own soft limit on open files and hands its original one to the
/// services it starts; an explicit `limit_nofile` wins over both. The daemon is started
/// with a soft limit below its hard one, so the three differ.
#[test]
fn an_explicit_limit_nofile_wins_over_the_daemons() {
    if !require_tool("prlimit") {
        return;
    }
    let env = Env::new();
    let (_, hard) = own_limit(libc::RLIMIT_NOFILE);
    if hard < 4096 {
        util::not_run("a hard limit on open files of at least 4096");
        return;
    }
    env.ok(&[
        "add",
        "given",
        "--limit-nofile",
        "1000:2000",
        "--",
        "sleep",
        "300",
    ]);
    env.ok(&["add", "inherited", "--", "sleep", "300"]);
    let out = tend_under(&env, &["prlimit", "--nofile=512:4096"], &["daemon"]);
    assert_eq!(out.code, 0, "{out:?}");
    env.ok(&["start", "given", "inherited"]);
    let given = env.pid("given").expect("running");
    let inherited = env.pid("inherited").expect("running");
    let daemon = env.daemon_pid().expect("the daemon runs");
    for pid in [given, inherited] {
        let ppid = read(Path::new(&format!("/proc/{pid}/stat")))
            .rsplit_once(')')
            .and_then(|(_, r)| r.split_whitespace().nth(1).map(str::to_string));
        assert_eq!(ppid, Some(daemon.to_string()), "started by the daemon");
    }
    assert_eq!(proc_limit(daemon, "Max open files").0, "4096", "raised");
    assert_eq!(
        proc_limit(given, "Max open files"),
        ("1000".into(), "2000".into())
    );
    assert_eq!(
        proc_limit(inherited, "Max open files"),
        ("512".into(), "4096".into())
    );
}

#[test]
fn user_and_group_are_those_of_the_running_service_and_it_still_logs_and_stops() {
    if !require_root("user_and_group", "run a service as another user") {
        return;
    }
    let env = Env::new();
    let account = TempAccount::new();
    let Some(account) = account else {
        util::not_run("useradd/groupadd are missing");
        return;
    };
    // The user's groups come from the group database: its primary one, replaced by
    // `--group` on the second service, and its supplementary one in both.
    // Its `cmd` readiness check runs as the same user: it passes only then.
    let ready = format!("cmd='test $(id -u) = {}' timeout=30s", account.uid);
    env.ok(&[
        "add",
        "u",
        "--user",
        &account.user,
        "--ready",
        &ready,
        "--cwd",
        "/",
        "--",
        "sh",
        "-c",
        "echo as-$USER-in-$HOME; exec sleep 300",
    ]);
    env.ok(&[
        "add",
        "g",
        "--user",
        &account.user,
        "--group",
        &account.other,
        "--log-timestamps",
        "on",
        "--cwd",
        "/",
        "--",
        "sh",
        "-c",
        "echo stamped-$LOGNAME; exec sleep 300",
    ]);
    let uid = account.uid.to_string();
    let all4 = |n: &str| format!("{n}\t{n}\t{n}\t{n}");
    // A group alone: tend's user, that group and no other.
    env.ok(&[
        "add",
        "go",
        "--group",
        &account.other,
        "--cwd",
        "/",
        "--",
        "sleep",
        "300",
    ]);
    env.ok(&["start", "--wait=60s", "u", "g", "go"]);
    let go = env.pid("go").expect("running");
    assert_eq!(proc_status(go, "Uid"), all4("0"));
    assert_eq!(proc_status(go, "Gid"), all4(&account.other_gid.to_string()));
    assert_eq!(proc_status(go, "Groups"), account.other_gid.to_string());
    assert_eq!(
        env.status_json("u")["state"],
        "running",
        "ready as the user"
    );
    let u = env.pid("u").expect("running");
    let g = env.pid("g").expect("running");
    let ids = |pid| {
        (
            proc_status(pid, "Uid"),
            proc_status(pid, "Gid"),
            proc_status(pid, "Groups"),
        )
    };

    let (uids, gids, groups) = ids(u);
    assert_eq!(uids, all4(&uid));
    assert_eq!(gids, all4(&account.primary_gid.to_string()));
    let mut listed: Vec<u32> = groups
        .split_whitespace()
        .map(|g| g.parse().unwrap())
        .collect();
    listed.sort_unstable();
    let mut want = vec![account.primary_gid, account.supp_gid];
    want.sort_unstable();
    assert_eq!(listed, want, "the user's groups from /etc/group");
    let (uids, gids, groups) = ids(g);
    assert_eq!(uids, all4(&uid));
    assert_eq!(gids, all4(&account.other_gid.to_string()));
    let mut listed: Vec<u32> = groups
        .split_whitespace()
        .map(|g| g.parse().unwrap())
        .collect();
    listed.sort_unstable();
    let mut want = vec![account.other_gid, account.supp_gid];
    want.sort_unstable();
    assert_eq!(listed, want);
    let environ = proc_environ(u);
    for var in [
        format!("USER={}", account.user),
        format!("LOGNAME={}", account.user),
        "HOME=/nonexistent".to_string(),
    ] {
        assert!(environ.contains(&var), "{var} in {environ:?}");
    }
    // The log files are root's and opened by tend: the service writes through them,
    // and so does the log writer that runs as tend.
    let want_u = format!("as-{}-in-/nonexistent", account.user);
    let want_g = format!("stamped-{}", account.user);
    assert!(
        wait_until(DEADLINE, || read(&env.log_path("u")).contains(&want_u)
            && read(&env.log_path("g")).contains(&want_g)),
        "logs: {:?} {:?}",
        read(&env.log_path("u")),
        read(&env.log_path("g"))
    );
    env.ok(&["stop", "u", "g", "go"]);
    assert!(wait_until(DEADLINE, || !alive(u)
        && !alive(g)
        && !alive(go)));
}

/// A user that exists only for one test: `tl<pid>` with a primary group, a
/// supplementary one, and another group for `--group`; all removed on drop.
struct TempAccount {
    user: String,
    uid: u32,
    primary: String,
    primary_gid: u32,
    supp: String,
    supp_gid: u32,
    other: String,
    other_gid: u32,
}

impl TempAccount {
    fn new() -> Option<TempAccount> {
        if !require_tool("useradd") || !require_tool("groupadd") {
            return None;
        }
        let tag = format!("{}{}", std::process::id(), rand_suffix());
        let names = [
            format!("tlp{tag}"),
            format!("tls{tag}"),
            format!("tlo{tag}"),
            format!("tlu{tag}"),
        ];
        let mut a = TempAccount {
            user: names[3].clone(),
            uid: 0,
            primary: names[0].clone(),
            primary_gid: 0,
            supp: names[1].clone(),
            supp_gid: 0,
            other: names[2].clone(),
            other_gid: 0,
        };
        for g in &names[..3] {
            let st = Command::new("groupadd").arg(g).status().unwrap();
            assert!(st.success(), "groupadd {g}");
        }
        let st = Command::new("useradd")
            .args(["-M", "-d", "/nonexistent", "-s", "/bin/sh", "-g"])
            .arg(&a.primary)
            .arg("-G")
            .arg(&a.supp)
            .arg(&a.user)
            .status()
            .unwrap();
        assert!(st.success(), "useradd {}", a.user);
        let id = |args: &[&str]| -> u32 {
            let out = Command::new("id").args(args).output().unwrap();
            String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
        };
        a.uid = id(&["-u", &a.user]);
        a.primary_gid = id(&["-g", &a.user]);
        let gid_of = |g: &str| -> u32 {
            let out = Command::new("getent").args(["group", g]).output().unwrap();
            String::from_utf8_lossy(&out.stdout)
                .split(':')
                .nth(2)
                .unwrap()
                .trim()
                .parse()
                .unwrap()
        };
        a.supp_gid = gid_of(&a.supp);
        a.other_gid = gid_of(&a.other);
        Some(a)
    }
}

impl Drop for TempAccount {
    fn drop(&mut self) {
        let _ = Command::new("userdel").arg(&self.user).status();
        for g in [&self.primary, &self.supp, &self.other] {
            let _ = Command::new("groupdel").arg(g).status();
        }
    }
}

fn rand_suffix() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos()
        % 10_000
}

/// A hard limit above tend's own, without the privilege to raise it: refused by `add`
/// with the reason; and when `add` allowed it but the start runs with a lower limit, the
/// new process cannot set it, the program never runs and nothing is recorded.
#[test]
fn raising_a_hard_limit_without_privilege_is_refused_and_nothing_runs() {
    let Some(wrapper) = without_sys_resource() else {
        return;
    };
    let env = Env::new();
    let (_, hard) = own_limit(libc::RLIMIT_NOFILE);
    let nr_open: u64 = read(Path::new("/proc/sys/fs/nr_open"))
        .trim()
        .parse()
        .unwrap();
    if hard >= nr_open {
        util::not_run("the hard limit on open files is already the kernel's most");
        return;
    }
    env.ok(&["add", "keep", "--", "sleep", "300"]);
    let before = dump(&env.db());
    let above = format!("64:{}", hard + 1);
    let out = tend_under(
        &env,
        &wrapper,
        &["add", "w", "--limit-nofile", &above, "--", "true"],
    );
    assert_eq!(out.code, 2, "{out:?}");
    assert_eq!(out.stderr.lines().count(), 1, "{out:?}");
    assert!(
        out.stderr
            .starts_with("tend: invalid --limit-nofile: the hard limit")
            && out.stderr.contains("needs root"),
        "{out:?}"
    );
    let out = tend_under(&env, &wrapper, &["edit", "keep", "--limit-nofile", &above]);
    assert_eq!(out.code, 2, "{out:?}");
    assert_eq!(
        dump(&env.db()),
        before,
        "a refused add or edit changes nothing"
    );

    // Allowed when written; the start runs with a lower hard limit.
    let marker = env.work().join("ran");
    let cmd = format!("touch {}; exec sleep 300", marker.display());
    env.ok(&[
        "add",
        "w",
        "--limit-nofile",
        "64:512",
        "--",
        "sh",
        "-c",
        &cmd,
    ]);
    let before = dump(&env.db());
    let mut lowered = vec!["prlimit", "--nofile=64:256"];
    lowered.extend(&wrapper);
    let out = tend_under(&env, &lowered, &["start", "w"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr
            .contains("w: cannot set limit_nofile to 64:512: operation not permitted"),
        "{out:?}"
    );
    assert!(env.pid("w").is_none());
    assert_eq!(
        dump(&env.db()),
        before,
        "a start refused before exec records nothing"
    );
    // Over a window: the program never ran.
    assert!(util::holds_for(Duration::from_millis(300), || !marker.exists()));
}

/// Lowering nice or oom_score_adj below tend's own without the privilege: refused by
/// `add` and `edit`, nothing stored.
#[test]
fn lowering_nice_or_oom_score_adj_without_privilege_is_refused() {
    // As a user, none is needed; as root, tend runs without CAP_SYS_NICE and
    // CAP_SYS_RESOURCE (dropped from the bounding set, so the tend root execs lacks them).
    let wrapper: Vec<&str> = if has_cap(CAP_SYS_RESOURCE) || has_cap(CAP_SYS_NICE) {
        if !require_tool("setpriv") {
            return;
        }
        vec!["setpriv", "--bounding-set=-sys_resource,-sys_nice"]
    } else {
        vec!["env"]
    };
    let env = Env::new();
    env.ok(&["add", "keep", "--", "sleep", "300"]);
    let before = dump(&env.db());
    let own_oom: i32 = read(Path::new("/proc/self/oom_score_adj"))
        .trim()
        .parse()
        .unwrap();
    let own_nice = proc_nice(std::process::id() as i32);
    // RLIMIT_NICE lets a user go down to 20 - its soft limit.
    let (nice_soft, _) = own_limit(libc::RLIMIT_NICE);
    let floor = 20 - nice_soft.min(40) as i32;
    let nice = own_nice.min(floor) - 1;
    let mut tried = 0;
    if own_oom > -1000 {
        let out = tend_under(
            &env,
            &wrapper,
            &[
                "edit",
                "keep",
                "--oom-score-adj",
                &(own_oom - 1).to_string(),
            ],
        );
        assert_eq!(out.code, 2, "{out:?}");
        assert_eq!(
            out.stderr.trim(),
            format!(
                "tend: invalid --oom-score-adj: {} is below tend's own ({own_oom}); lowering \
                 it needs root (CAP_SYS_RESOURCE)",
                own_oom - 1
            )
        );
        tried += 1;
    }
    if nice >= -20 {
        let out = tend_under(
            &env,
            &wrapper,
            &["add", "w", "--nice", &nice.to_string(), "--", "true"],
        );
        assert_eq!(out.code, 2, "{out:?}");
        assert!(
            out.stderr.starts_with("tend: invalid --nice: ")
                && out.stderr.contains("needs root (CAP_SYS_NICE)"),
            "{out:?}"
        );
        tried += 1;
    }
    if tried == 0 {
        util::not_run("nice and oom_score_adj are already the lowest");
    }
    assert_eq!(dump(&env.db()), before, "refused: nothing stored");
}

#[test]
fn another_user_without_root_and_unknown_users_are_refused() {
    let env = Env::new();
    env.ok(&["add", "keep", "--", "sleep", "300"]);
    let before = dump(&env.db());
    for (args, what, says) in [
        (
            vec!["--user", "no-such-user-tend"],
            "--user",
            "no such user \"no-such-user-tend\"",
        ),
        (
            vec!["--group", "no-such-group-tend"],
            "--group",
            "no such group \"no-such-group-tend\"",
        ),
    ] {
        let mut a = vec!["edit", "keep"];
        a.extend(&args);
        let out = env.tend(&a);
        assert_eq!(out.code, 2, "{out:?}");
        assert_eq!(
            out.stderr.trim(),
            format!("tend: invalid {what}: {says}"),
            "{out:?}"
        );
    }
    // Another user, as a tend that cannot change identity: as a user, or as root
    // without CAP_SETUID and CAP_SETGID.
    let wrapper: Vec<&str> = if has_cap(7) {
        if !require_tool("setpriv") {
            return;
        }
        vec!["setpriv", "--bounding-set=-setuid,-setgid"]
    } else {
        vec!["env"]
    };
    // SAFETY: geteuid has no preconditions.
    let other = if unsafe { libc::geteuid() } == 0 {
        "tendtest"
    } else {
        "root"
    };
    let out = tend_under(&env, &wrapper, &["edit", "keep", "--user", other]);
    assert_eq!(out.code, 2, "{out:?}");
    assert_eq!(
        out.stderr.trim(),
        format!("tend: invalid --user: running a service as {other} needs tend to run as root")
    );
    assert_eq!(dump(&env.db()), before, "refused edits change nothing");
}

/// The user is resolved again at each start: one removed after `add` refuses the start
/// before any fork, naming it.
#[test]
fn a_user_removed_after_add_refuses_the_start() {
    if !require_root("user_removed", "create and remove a user") {
        return;
    }
    let Some(account) = TempAccount::new() else {
        return;
    };
    let env = Env::new();
    env.ok(&[
        "add",
        "w",
        "--user",
        &account.user,
        "--cwd",
        "/",
        "--",
        "sleep",
        "300",
    ]);
    let user = account.user.clone();
    drop(account);
    let before = dump(&env.db());
    let out = env.tend(&["start", "w"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert_eq!(
        out.stderr.trim(),
        format!("tend: w: user: no such user \"{user}\"")
    );
    assert_eq!(dump(&env.db()), before);
}

#[test]
fn values_out_of_range_are_refused_with_the_option_named() {
    let env = Env::new();
    env.ok(&["add", "keep", "--", "sleep", "300"]);
    let before = dump(&env.db());
    for (option, value, says) in [
        ("--nice", "20", "not a nice value from -20 to 19"),
        ("--nice", "-21", "not a nice value from -20 to 19"),
        (
            "--oom-score-adj",
            "1001",
            "not an oom_score_adj from -1000 to 1000",
        ),
        ("--umask", "888", "not an octal umask"),
        ("--umask", "1777", "not an octal umask"),
        (
            "--limit-nofile",
            "10:5",
            "the soft limit 10 is above the hard limit 5",
        ),
        (
            "--limit-core",
            "lots",
            "not a number, a size (64M) or infinity",
        ),
        (
            "--limit-nofile",
            "infinity",
            "above the kernel's most open files",
        ),
        ("--user", "a:b", "not a user or group name"),
    ] {
        let out = env.tend(&["edit", "keep", option, value]);
        assert_eq!(out.code, 2, "{option} {value}: {out:?}");
        assert_eq!(out.stderr.lines().count(), 1, "{out:?}");
        assert!(
            out.stderr.starts_with(&format!("tend: invalid {option}: "))
                && out.stderr.contains(says),
            "{option} {value}: {out:?}"
        );
    }
    // In a services file: a umask must be a string (TOML's 0o022 reads as 18).
    std::fs::write(
        env.work().join("tend.toml"),
        "[services.keep]\ncmd = \"sleep 300\"\numask = 0o022\n",
    )
    .unwrap();
    let out = env.tend(&["apply"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("umask"), "{out:?}");
    assert_eq!(dump(&env.db()), before);
}

#[test]
fn supervisord_user_umask_minfds_and_minprocs_are_imported() {
    let env = Env::new();
    std::fs::write(
        env.work().join("supervisord.conf"),
        "[supervisord]\nlogfile=/tmp/x\nminfds=4096\nminprocs=300\numask=077\n\n\
         [program:api]\ncommand=sleep 30\nuser=tendtest\numask=002\n\n\
         [program:jobs]\ncommand=sleep 30\n",
    )
    .unwrap();
    let out = env.ok(&["import", "supervisord.conf"]);
    assert!(
        out.stderr.contains("[supervisord] logfile = /tmp/x"),
        "{out:?}"
    );
    let file: toml::Table = toml::from_str(&out.stdout).unwrap();
    let svc = |n: &str| file["services"][n].as_table().unwrap().clone();
    let api = svc("api");
    assert_eq!(api["user"].as_str(), Some("tendtest"));
    assert_eq!(api["umask"].as_str(), Some("002"), "the program's own wins");
    assert_eq!(api["limit_nofile"].as_str(), Some("4096"));
    assert_eq!(api["limit_nproc"].as_str(), Some("300"));
    let jobs = svc("jobs");
    assert_eq!(jobs["umask"].as_str(), Some("077"));
    assert!(!jobs.contains_key("user"));
    // A bad value is refused when the file is applied, naming it.
    std::fs::write(
        env.work().join("bad.conf"),
        "[program:api]\ncommand=sleep 30\numask=9\n",
    )
    .unwrap();
    let out = env.ok(&["import", "bad.conf"]);
    std::fs::write(env.work().join("bad.toml"), &out.stdout).unwrap();
    let out = env.tend(&["apply", "-f", "bad.toml"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("umask"), "{out:?}");
}

/// A working directory the user may not enter fails the start before anything runs; a
/// program only root may execute fails at exec, and the start's record is taken back.
/// Each names what failed; neither leaves a trace in the stored state.
#[test]
fn a_directory_or_program_the_user_may_not_use_fails_the_start_cleanly() {
    if !require_root("user_refusals", "run a service as another user") {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    let closed = env.work().join("closed");
    std::fs::create_dir(&closed).unwrap();
    std::fs::set_permissions(&closed, std::fs::Permissions::from_mode(0o700)).unwrap();
    let closed = closed.to_str().unwrap();
    env.ok(&[
        "add", "c", "--user", "tendtest", "--cwd", closed, "--", "sleep", "300",
    ]);
    let bin = tempfile::tempdir().unwrap();
    std::fs::set_permissions(bin.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let prog = bin.path().join("prog");
    std::fs::write(&prog, "#!/bin/sh\nexec sleep 300\n").unwrap();
    std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o700)).unwrap();
    env.ok(&[
        "add",
        "p",
        "--user",
        "tendtest",
        "--cwd",
        "/",
        "--",
        prog.to_str().unwrap(),
    ]);
    let before = dump(&env.db());
    let out = env.tend(&["start", "c"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert_eq!(
        out.stderr.trim(),
        "tend: c: cannot enter the working directory: permission denied"
    );
    let out = env.tend(&["start", "p"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert_eq!(
        out.stderr.trim(),
        format!(
            "tend: p: cannot execute {}: permission denied",
            prog.display()
        )
    );
    assert!(env.pid("c").is_none() && env.pid("p").is_none());
    assert_eq!(dump(&env.db()), before);
}
