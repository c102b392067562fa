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

/// Writes the last `n` lines of `path` (nothing if it does not exist yet).
pub fn tail(out: &mut dyn Write, path: &Path, n: usize) -> io::Result<u64> {
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let len = f.metadata()?.len();
    let start = tail_start(&mut f, len, n)?;
    f.seek(SeekFrom::Start(start))?;
    io::copy(&mut (&mut f).take(len - start), out)?;
    Ok(len)
}

/// The offset where the last `n` lines begin, found by reading backwards in blocks so a
/// large log costs only as much as the lines printed.
fn tail_start(f: &mut File, len: u64, n: usize) -> io::Result<u64> {
    if n == 0 {
        return Ok(len);
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
                    return Ok(pos + i as u64 + 1);
                }
            }
        }
        skip_last = false;
    }
    Ok(0)
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
