//! Too few descriptors, staged for real with `ulimit -n` (or `prlimit` on a running
//! daemon): a check of a recorded instance that cannot be made is unknown, never gone.
//! Nothing is cleared, nothing is started in its place, and a later check that can be
//! made decides; and an exit is never lost for want of a descriptor.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::faults::events;
use crate::util::*;

/// `tend ARGS` with its limit on open files, soft and hard, set to `files`.
fn tend_limited(env: &Env, files: u32, args: &[&str]) -> Out {
    let mut c = Command::new("sh");
    c.arg("-c")
        .arg(r#"ulimit -n "$0" && exec "$@""#)
        .arg(files.to_string())
        .arg(TEND)
        .arg("--home")
        .arg(env.home())
        .args(args)
        .current_dir(env.work())
        .env_remove("TEND_HOME")
        .env_remove("TEND_CGROUP")
        .envs(env.vars.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null());
    run(c)
}

/// `tend daemon --foreground` with its limit on open files, soft and hard, set to
/// `files`, logging to `log`; killed (if still running) when dropped.
fn limited_daemon(env: &Env, files: u32, log: &std::path::Path) -> KillOnDrop {
    let file = std::fs::File::create(log).unwrap();
    let mut c = Command::new("sh");
    c.arg("-c")
        .arg(r#"ulimit -n "$0" && exec "$@""#)
        .arg(files.to_string())
        .arg(TEND)
        .arg("--home")
        .arg(env.home())
        .args(["daemon", "--foreground"])
        .current_dir(env.work())
        .env_remove("TEND_HOME")
        .env_remove("TEND_CGROUP")
        .envs(env.vars.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file);
    KillOnDrop(c.spawn().expect("spawn the daemon"))
}

/// Live processes by the argument after `--marker` in their command line (the fixture
/// service's), for every marker starting with `prefix`.
fn copies(prefix: &str) -> BTreeMap<String, Vec<i32>> {
    let mut out: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
        let Some(mark) = args
            .windows(2)
            .find(|w| w[0] == b"--marker")
            .map(|w| String::from_utf8_lossy(w[1]).into_owned())
        else {
            continue;
        };
        if mark.starts_with(prefix) && alive(pid) {
            out.entry(mark).or_default().push(pid);
        }
    }
    out
}

/// `tend list --json` as name -> (state, pid).
fn listed(env: &Env) -> BTreeMap<String, (String, Option<i32>)> {
    let out = env.ok(&["list", "--json"]);
    let v: Value = serde_json::from_str(&out.stdout).expect("list --json is JSON");
    v.as_array()
        .expect("an array")
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_string(),
                (
                    s["state"].as_str().unwrap().to_string(),
                    s["pid"].as_i64().map(|p| p as i32),
                ),
            )
        })
        .collect()
}

/// `tend status`/`list`/`start` run with so few descriptors that the database opens but
/// the look at /proc does not: the instance is `unknown` with the reason (status exit 4),
/// a start refuses and starts nothing, the record is never cleared; every limit from one
/// too low to open anything up to plenty is tried, and with descriptors again the same
/// instance runs and a start leaves it be.
#[test]
fn a_check_that_cannot_be_made_is_unknown_and_starts_nothing() {
    let env = Env::new();
    let mark = format!("scarce-cli-{}", std::process::id());
    env.add_fixture("web", &[], &["--marker", &mark]);
    env.ok(&["start", "web"]);
    let pid = env.pid("web").expect("running");
    let before = dump(&env.db());
    let (mut unknown, mut refused) = (Vec::new(), Vec::new());
    for files in 4..=32 {
        let st = tend_limited(&env, files, &["status", "web", "--json"]);
        match st.code {
            0 | 4 => {
                let v: Value = serde_json::from_str(&st.stdout).expect("status --json is JSON");
                assert_eq!(v["pid"].as_i64(), Some(pid as i64), "limit {files}: {v}");
                if st.code == 4 {
                    assert_eq!(v["state"], "unknown", "limit {files}: {v}");
                    let why = v["unknown_reason"].as_str().unwrap_or_default();
                    assert!(why.contains("too many open files"), "limit {files}: {v}");
                    unknown.push(files);
                } else {
                    assert_eq!(v["state"], "running", "limit {files}: {v}");
                }
            }
            // Not even the database (or the boot id) could be opened: said so, plainly.
            1 | 6 => assert!(
                st.stderr.starts_with("tend: ") && st.stderr.lines().count() == 1,
                "limit {files}: {st:?}"
            ),
            _ => panic!("limit {files}: status: {st:?}"),
        }
        let start = tend_limited(&env, files, &["start", "web"]);
        match start.code {
            0 => assert!(
                start
                    .stdout
                    .contains(&format!("web: already running (pid {pid})")),
                "limit {files}: {start:?}"
            ),
            1 if start.stderr.contains("cannot tell") => {
                assert!(
                    start
                        .stderr
                        .contains(&format!("web: cannot tell whether pid {pid} still runs"))
                        && start.stderr.contains("too many open files")
                        && start.stderr.contains("not started"),
                    "limit {files}: {start:?}"
                );
                refused.push(files);
            }
            1 | 6 => assert!(
                start.stderr.starts_with("tend: ") && start.stderr.lines().count() == 1,
                "limit {files}: {start:?}"
            ),
            _ => panic!("limit {files}: start: {start:?}"),
        }
        assert_eq!(
            copies(&mark).remove(&mark),
            Some(vec![pid]),
            "limit {files}: only the first copy may run; events:\n{}",
            env.tend(&["events", "web"]).stdout
        );
    }
    assert!(
        !unknown.is_empty() && !refused.is_empty(),
        "no limit made the check fail (unknown at {unknown:?}, start refused at {refused:?}): \
         the test did not stage what it is about"
    );
    // `list` says it as well, with the reason in its JSON.
    let list = tend_limited(&env, unknown[0], &["list"]);
    assert!(
        list.code == 0
            && list
                .stdout
                .lines()
                .any(|l| l.starts_with("web ") && l.contains("unknown"))
            && list.stderr.contains(&format!(
                "web: cannot tell whether pid {pid} still runs (cannot read /proc/"
            )),
        "{list:?}"
    );
    let list = tend_limited(&env, unknown[0], &["list", "--json"]);
    assert!(
        list.stdout
            .contains("\"unknown_reason\": \"cannot read /proc/"),
        "{list:?}"
    );
    assert_eq!(dump(&env.db()), before, "nothing stored may change");
    let out = env.ok(&["start", "web"]);
    assert!(
        out.stdout
            .contains(&format!("web: already running (pid {pid})")),
        "{out:?}"
    );
    assert_eq!(copies(&mark).remove(&mark), Some(vec![pid]));
    assert!(
        !events(&env, "web")
            .iter()
            .any(|(k, _)| k == "stale-cleared" || k == "exit"),
        "{:?}",
        events(&env, "web")
    );
}

/// A daemon whose limit on open files (soft and hard: it raises its soft limit to the
/// hard one) is 100, beside 120 running services it must adopt: no service gets a second
/// copy and no record is cleared over the watched window; a service it could not watch
/// that then dies is still noticed and restarted (once); once the pressure is gone (a
/// daemon with the usual limit), every service is adopted.
#[test]
fn a_daemon_short_of_descriptors_clears_nothing_and_starts_no_second_copy() {
    const SERVICES: usize = 120;
    const WINDOW: Duration = Duration::from_secs(3);
    let env = Env::new();
    let tag = format!("scarce-d-{}-", std::process::id());
    let mut file = String::new();
    for i in 0..SERVICES {
        file.push_str(&format!(
            "[services.s{i:03}]\ncmd = \"{FIXTURE} --marker {tag}s{i:03}\"\n\n"
        ));
    }
    std::fs::write(env.work().join("tend.toml"), file).unwrap();
    env.ok(&["apply"]);
    env.ok(&["start", "--all"]);
    let first = listed(&env);
    assert_eq!(first.len(), SERVICES);
    assert!(
        first
            .values()
            .all(|(state, pid)| state == "running" && pid.is_some()),
        "{first:?}"
    );
    let pid_of = |name: &str| first[name].1.unwrap();

    // In the foreground, a child of the test: whether or not it ever answers.
    let log = env.work().join("daemon-100.log");
    let mut daemon = limited_daemon(&env, 100, &log);
    // It says it is ready once its first adoption pass is done (then it answers
    // requests): whatever it does to the records, it has done or begun by then. Watched
    // for WINDOW after that (or after 30 s, if it never says so).
    let ready = wait_until(Duration::from_secs(30), || {
        read(&log).contains("daemon ready")
    });
    let mut wrong = None;
    let seen = wait_until(WINDOW, || {
        let running = copies(&tag);
        wrong = first.iter().find_map(|(name, (_, pid))| {
            let got = running.get(&format!("{tag}{name}"));
            (got != Some(&vec![pid.unwrap()])).then(|| (name.clone(), got.cloned()))
        });
        wrong.is_some()
    });
    if let Some((name, got)) = wrong.filter(|_| seen) {
        panic!(
            "{name}: processes {got:?}, not just the recorded one; events:\n{}\ndaemon log:\n{}",
            env.tend(&["events", &name]).stdout,
            read(&log)
        );
    }
    assert!(ready, "the daemon did not come up:\n{}", read(&log));
    assert_eq!(listed(&env), first, "every record as it was");
    for name in first.keys() {
        let kinds: Vec<String> = events(&env, name).into_iter().map(|(k, _)| k).collect();
        assert!(
            !kinds
                .iter()
                .any(|k| k == "stale-cleared" || k == "exit" || k == "restart"),
            "{name}: {kinds:?}"
        );
    }

    // Those it could not watch, it said so about, and it looks at them again: one that
    // dies now is found dead and restarted, once.
    let status = env.ok(&["daemon", "status", "--json"]);
    let v: Value = serde_json::from_str(&status.stdout).unwrap();
    let unwatched_count = v["services_unwatched"].as_u64().unwrap_or(0);
    assert!(
        unwatched_count > 0
            && v["services_adopted"].as_u64().unwrap_or(0) + unwatched_count == SERVICES as u64,
        "{}",
        status.stdout
    );
    let log = read(&log);
    let unwatched: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("not adopted yet"))
        .filter_map(|l| l.split("service=").nth(1)?.split_whitespace().next())
        .collect();
    assert!(
        !unwatched.is_empty(),
        "the daemon adopted every service with 100 descriptors: the test did not stage \
         what it is about\ndaemon.log:\n{log}"
    );
    let victim = unwatched[0];
    let old = pid_of(victim);
    // SAFETY: kill on the pid of a service this test started, checked alive just above.
    unsafe {
        libc::kill(old, libc::SIGKILL);
    }
    let new = env.wait_new_pid(victim, old);
    // Recorded before it execs: wait until the new process runs the program, then
    // there is exactly that one copy.
    let mut found = None;
    assert!(
        wait_until(Duration::from_secs(20), || {
            found = copies(&tag).remove(&format!("{tag}{victim}"));
            found.as_ref().is_some_and(|c| c.contains(&new))
        }),
        "{victim}: the restarted instance {new} never ran the program ({found:?})"
    );
    assert_eq!(found, Some(vec![new]), "{victim}: restarted once");

    // The pressure gone: a daemon with the usual limit adopts every one.
    env.ok(&["daemon", "stop"]);
    assert!(daemon.0.wait().unwrap().success());
    env.ok(&["daemon"]);
    let adopted = wait_until(Duration::from_secs(30), || {
        let out = env.ok(&["daemon", "status", "--json"]);
        let v: Value = serde_json::from_str(&out.stdout).unwrap();
        v["services_adopted"].as_u64() == Some(SERVICES as u64)
    });
    assert!(
        adopted,
        "{}\ndaemon.log:\n{}",
        env.ok(&["daemon", "status"]).stdout,
        env.daemon_log()
    );
    let running = copies(&tag);
    for name in first.keys() {
        let want = if name == victim { new } else { pid_of(name) };
        assert_eq!(
            running.get(&format!("{tag}{name}")),
            Some(&vec![want]),
            "{name}"
        );
    }
}

/// The lowest descriptor number process `pid` does not have open: the one its next
/// `open` would get.
fn lowest_free_fd(pid: i32) -> i32 {
    let open: std::collections::BTreeSet<i32> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    (0..).find(|n| !open.contains(n)).unwrap()
}

/// Sets the soft limit on open files of process `pid`; returns the limit it had.
fn set_soft_nofile(pid: i32, soft: u64) -> libc::rlimit {
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: prlimit reads its own argument and fills `old`; both are valid rlimits.
    let r = unsafe {
        libc::prlimit(
            pid,
            libc::RLIMIT_NOFILE,
            std::ptr::null(),
            &mut old as *mut libc::rlimit,
        )
    };
    assert_eq!(r, 0, "prlimit (get) of {pid}");
    let new = libc::rlimit {
        rlim_cur: soft,
        rlim_max: old.rlim_max,
    };
    // SAFETY: as above; `new` is a valid rlimit.
    let r = unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, &new, std::ptr::null_mut()) };
    assert_eq!(r, 0, "prlimit (set) of {pid}");
    old
}

/// A service the daemon started (its child) is killed while the daemon has no
/// descriptor free: its soft limit set, from outside, to the lowest descriptor number it
/// does not use, so that its next `open` fails (EMFILE). Reading the zombie's start time
/// needs one: the daemon reaps the exit anyway and records it (`exit`, `signal KILL`),
/// rather than losing it.
#[test]
fn an_exit_is_recorded_when_no_descriptor_is_free() {
    let env = Env::new();
    env.add_fixture("victim", &["--restart", "never"], &["--marker", "victim"]);
    crate::faults::start_daemon(&env);
    env.ok(&["start", "victim"]);
    let pid = env.pid("victim").expect("running");
    let daemon = env.daemon_pid().expect("the daemon runs");
    // The daemon idle: its descriptors the same twice over 200 ms.
    let mut last = lowest_free_fd(daemon);
    assert!(
        wait_until(Duration::from_secs(10), || {
            let now = lowest_free_fd(daemon);
            let same = now == last;
            last = now;
            same && !wait_until(Duration::from_millis(200), || lowest_free_fd(daemon) != now)
        }),
        "the daemon's descriptors kept changing"
    );
    let old = set_soft_nofile(daemon, last as u64);
    // SAFETY: kill on the pid of the service this test started, checked running above.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
    let recorded = wait_until(Duration::from_secs(20), || {
        crate::faults::events(&env, "victim")
            .iter()
            .any(|(k, d)| k == "exit" && d == &format!("pid {pid}: signal KILL"))
    });
    set_soft_nofile(daemon, old.rlim_cur);
    assert!(
        recorded,
        "the exit was not recorded; events: {:?}\ndaemon.log:\n{}",
        crate::faults::events(&env, "victim"),
        env.daemon_log()
    );
    assert!(
        !env.daemon_log().contains("could not be read"),
        "{}",
        env.daemon_log()
    );
}

/// The (soft, hard) limit on open files of process `pid`, from /proc/PID/limits.
fn nofile_of(pid: i32) -> (String, String) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("a Max open files line");
    let mut f = line["Max open files".len()..].split_whitespace();
    (f.next().unwrap().into(), f.next().unwrap().into())
}

/// A daemon started with a soft limit below its hard one raises its own soft limit to
/// the hard one (it holds a descriptor per adopted service); a service it starts gets
/// the soft limit the daemon was given, as a `tend start` from the same shell would.
#[test]
fn the_daemon_raises_its_limit_but_services_get_the_one_it_was_given() {
    let env = Env::new();
    let file = env.work().join("limit");
    env.ok(&[
        "add",
        "probe",
        "--",
        "sh",
        "-c",
        &format!(
            "ulimit -Sn > {}.tmp && mv {0}.tmp {0} && exec sleep 1000",
            file.display()
        ),
    ]);
    let (_, hard) = nofile_of(std::process::id() as i32);
    let soft = match hard.parse::<u64>() {
        Ok(h) if h < 64 => {
            eprintln!("not run: the hard limit on open files here is {h}");
            return;
        }
        Ok(h) => (h / 2).min(256),
        Err(_) => 256, // unlimited
    };
    let mut c = Command::new("sh");
    c.arg("-c")
        .arg(r#"ulimit -Sn "$0" && exec "$@""#)
        .arg(soft.to_string())
        .arg(TEND)
        .arg("--home")
        .arg(env.home())
        .arg("daemon")
        .current_dir(env.work())
        .env_remove("TEND_HOME")
        .env_remove("TEND_CGROUP")
        .envs(env.vars.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null());
    let out = run(c);
    assert_eq!(out.code, 0, "{out:?}");
    let daemon = env.daemon_pid().expect("the daemon runs");
    let (dsoft, dhard) = nofile_of(daemon);
    assert_eq!(
        dsoft, dhard,
        "the daemon's soft limit is raised to its hard one"
    );
    env.ok(&["start", "probe"]);
    assert!(
        wait_until(Duration::from_secs(20), || file.exists()),
        "the service did not write its limit"
    );
    assert_eq!(read(&file).trim(), soft.to_string());
}
