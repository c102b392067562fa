//! `tend logs`: the last lines of a service's log files, and following them.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How often `--follow` looks for new output. tail(1) without inotify uses one second;
/// a tenth keeps an interactive follow feeling live at negligible cost.
const FOLLOW_INTERVAL: Duration = Duration::from_millis(100);

/// The log files of a service worth reading: stdout's, and stderr's when it differs.
/// Character devices (/dev/null) and other non-regular files are skipped.
pub fn files(stdout: &Path, stderr: &Path) -> Vec<PathBuf> {
    let mut out = vec![stdout.to_path_buf()];
    if stderr != stdout {
        out.push(stderr.to_path_buf());
    }
    out.retain(|p| std::fs::metadata(p).map_or(true, |m| m.is_file()));
    out
}

/// `NAME.log.N`: the N-th newest rotated backup of `path`.
pub fn backup(path: &Path, n: u32) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

/// Writes the last `n` lines of `path`, reaching back into its rotated backups
/// (`path.1`, `path.2`, ...) when the current file holds fewer lines. Returns the current
/// file's length, where a follow continues.
pub fn tail(out: &mut dyn Write, path: &Path, n: usize) -> io::Result<u64> {
    let mut parts = Vec::new();
    let mut need = n;
    let mut current_len = 0;
    for i in 0..=crate::service::LOG_BACKUPS {
        let p = if i == 0 {
            path.to_path_buf()
        } else {
            backup(path, i)
        };
        let mut f = match File::open(&p) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if i == 0 {
                    continue;
                }
                break;
            }
            Err(e) => return Err(e),
        };
        let len = f.metadata()?.len();
        if i == 0 {
            current_len = len;
        }
        if need == 0 {
            break;
        }
        let (start, found) = tail_start(&mut f, len, need)?;
        parts.push((f, start, len));
        need -= found;
        if need == 0 {
            break;
        }
    }
    for (mut f, start, len) in parts.into_iter().rev() {
        f.seek(SeekFrom::Start(start))?;
        io::copy(&mut (&mut f).take(len - start), out)?;
    }
    Ok(current_len)
}

/// Rotates `path` by copy and truncate: `path.N-1` becomes `path.N` (the oldest is
/// dropped), a copy of `path` becomes `path.1`, and `path` is truncated to zero. The
/// service keeps its descriptor (opened with O_APPEND, so its next write lands at the new
/// end) and is never interrupted. Output written between the last copy pass and the
/// truncation is lost; the copy is repeated while the file grows to keep that window to
/// microseconds.
pub fn rotate(path: &Path, backups: u32) -> io::Result<()> {
    if backups == 0 {
        return std::fs::OpenOptions::new()
            .write(true)
            .open(path)?
            .set_len(0);
    }
    for i in (1..backups).rev() {
        match std::fs::rename(backup(path, i), backup(path, i + 1)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    let mut src = File::open(path)?;
    let mut dst = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(backup(path, 1))?;
    let mut copied = io::copy(&mut src, &mut dst)?;
    for _ in 0..3 {
        let len = src.metadata()?.len();
        if len <= copied {
            break;
        }
        copied += io::copy(&mut (&mut src).take(len - copied), &mut dst)?;
    }
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)?
        .set_len(0)
}

/// The offset where the last `n` lines begin and how many lines were found, read
/// backwards in blocks so a large log costs only as much as the lines printed.
fn tail_start(f: &mut File, len: u64, n: usize) -> io::Result<(u64, usize)> {
    if n == 0 {
        return Ok((len, 0));
    }
    const BLOCK: u64 = 8192;
    let mut buf = vec![0u8; BLOCK as usize];
    let mut pos = len;
    let mut newlines = 0;
    // A trailing newline ends the last line; it does not start a new one.
    let mut skip_last = true;
    while pos > 0 {
        let size = BLOCK.min(pos);
        pos -= size;
        f.seek(SeekFrom::Start(pos))?;
        f.read_exact(&mut buf[..size as usize])?;
        for i in (0..size as usize).rev() {
            if buf[i] == b'\n' {
                if skip_last && pos + i as u64 == len - 1 {
                    continue;
                }
                newlines += 1;
                if newlines == n {
                    return Ok((pos + i as u64 + 1, n));
                }
            }
        }
        skip_last = false;
    }
    // Reached the start: every line counts, the first one included.
    let lines = if len == 0 { 0 } else { newlines + 1 };
    Ok((0, lines.min(n)))
}

/// Follows `paths` from the given offsets, printing what is appended, until writing to
/// `out` fails (a closed pipe ends it quietly). A file that shrinks or is replaced (a
/// rotation, a truncation) is read again from its start.
pub fn follow(out: &mut dyn Write, paths: &[PathBuf], mut offsets: Vec<u64>) -> io::Result<()> {
    let mut inodes: Vec<Option<u64>> = paths
        .iter()
        .map(|p| std::fs::metadata(p).ok().map(|m| m.ino()))
        .collect();
    let mut last_printed: Option<usize> = None;
    loop {
        let mut wrote = false;
        for (i, path) in paths.iter().enumerate() {
            let Ok(meta) = std::fs::metadata(path) else {
                continue;
            };
            if inodes[i] != Some(meta.ino()) || meta.len() < offsets[i] {
                inodes[i] = Some(meta.ino());
                offsets[i] = 0;
            }
            if meta.len() == offsets[i] {
                continue;
            }
            let mut f = File::open(path)?;
            f.seek(SeekFrom::Start(offsets[i]))?;
            if paths.len() > 1 && last_printed != Some(i) {
                writeln!(out, "==> {} <==", path.display())?;
                last_printed = Some(i);
            }
            let copied = io::copy(&mut (&mut f).take(meta.len() - offsets[i]), out)?;
            offsets[i] += copied;
            wrote = true;
        }
        if wrote {
            out.flush()?;
        }
        std::thread::sleep(FOLLOW_INTERVAL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tail_of(content: &str, n: usize) -> String {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log");
        std::fs::write(&p, content).unwrap();
        let mut out = Vec::new();
        tail(&mut out, &p, n).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn tails_across_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log");
        std::fs::write(&p, "a\nb\n").unwrap();
        rotate(&p, 3).unwrap();
        std::fs::write(&p, "c\nd\n").unwrap();
        rotate(&p, 3).unwrap();
        std::fs::write(&p, "e\n").unwrap();
        assert_eq!(std::fs::read_to_string(backup(&p, 2)).unwrap(), "a\nb\n");
        assert_eq!(std::fs::read_to_string(backup(&p, 1)).unwrap(), "c\nd\n");
        let mut out = Vec::new();
        tail(&mut out, &p, 4).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "b\nc\nd\ne\n");
        let mut out = Vec::new();
        tail(&mut out, &p, 100).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "a\nb\nc\nd\ne\n");
        // The oldest backup is dropped past the limit.
        rotate(&p, 3).unwrap();
        for _ in 0..2 {
            std::fs::write(&p, "x\n").unwrap();
            rotate(&p, 3).unwrap();
        }
        assert!(!backup(&p, 4).exists());
        assert_eq!(std::fs::read_to_string(backup(&p, 3)).unwrap(), "e\n");
    }

    #[test]
    fn tails() {
        assert_eq!(tail_of("a\nb\nc\n", 2), "b\nc\n");
        assert_eq!(tail_of("a\nb\nc", 2), "b\nc");
        assert_eq!(tail_of("a\nb\nc\n", 10), "a\nb\nc\n");
        assert_eq!(tail_of("a\nb\nc\n", 0), "");
        assert_eq!(tail_of("", 3), "");
        let big: String = (0..5000).map(|i| format!("line {i}\n")).collect();
        assert_eq!(tail_of(&big, 2), "line 4998\nline 4999\n");
    }
}
