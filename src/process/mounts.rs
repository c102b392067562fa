//! Where the cgroup2 file system is mounted, for the cgroup module and for the identity
//! check of an instance with a cgroup (which may not depend on the cgroup module: that
//! one pins processes through handles, which check identities).

use std::path::PathBuf;
use std::sync::OnceLock;

/// The mount point of the cgroup2 file system (`/sys/fs/cgroup`, or
/// `/sys/fs/cgroup/unified` on a hybrid system), from /proc/self/mountinfo. Kept once
/// found; not found (no such mount, or /proc/self/mountinfo unreadable, say for want of a
/// descriptor) is looked for again next time.
pub fn cgroup2_mount() -> Option<PathBuf> {
    static MOUNT: OnceLock<PathBuf> = OnceLock::new();
    if let Some(m) = MOUNT.get() {
        return Some(m.clone());
    }
    let found = find_cgroup2_mount()?;
    Some(MOUNT.get_or_init(|| found).clone())
}

fn find_cgroup2_mount() -> Option<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    text.lines().find_map(|line| {
        let (pre, post) = line.split_once(" - ")?;
        let fstype = post.split_whitespace().next()?;
        let mount_point = pre.split_whitespace().nth(4)?;
        (fstype == "cgroup2").then(|| PathBuf::from(unescape(mount_point)))
    })
}

/// mountinfo escapes spaces and the like as `\ooo`.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes() {
        assert_eq!(unescape("/a\\040b"), "/a b");
    }
}
