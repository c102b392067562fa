//! `tend logs`: the last lines of a service's log files, and following them; [`stream`]
//! reads many services' files as timestamped lines.

pub mod stream;

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How often `--follow` looks for new output. tail(1) without inotify uses one second;
/// a tenth keeps an interactive follow feeling live at negligible cost.
pub const FOLLOW_INTERVAL: Duration = Duration::from_millis(100);

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
/// (`path.1`, `path.2`, ...) when the current file holds fewer lines: the backups and the
/// file are read as one stream, since a rotation may split a line between them. Returns
/// the current file's length, where a follow continues.
pub fn tail(out: &mut dyn Write, path: &Path, n: usize) -> io::Result<u64> {
    let mut files: Vec<(File, u64)> = Vec::new();
    for i in (1..=crate::service::LOG_BACKUPS).rev() {
        match open_log(&backup(path, i)) {
            Ok(f) => {
                let len = f.metadata()?.len();
                files.push((f, len));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    let current_len = match open_log(path) {
        Ok(f) => {
            let len = f.metadata()?.len();
            files.push((f, len));
            len
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
        Err(e) => return Err(e),
    };
    let (first, offset) = tail_start(&mut files, n)?;
    for (i, (f, len)) in files.iter_mut().enumerate().skip(first) {
        let start = if i == first { offset } else { 0 };
        f.seek(SeekFrom::Start(start))?;
        io::copy(&mut (&mut *f).take(*len - start), out)?;
    }
    Ok(current_len)
}

/// Opens a log file to read it, without waiting on it: a FIFO or a device put in its
/// place is refused (see [`crate::service::files`]).
fn open_log(path: &Path) -> io::Result<File> {
    use crate::service::files::{open_regular, ReadError};
    match open_regular(path) {
        Ok((f, _)) => Ok(f),
        Err(ReadError::Io(e)) => Err(e),
        Err(other) => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{}: {other}", path.display()),
        )),
    }
}

/// Rotates `path`: `path.N-1` becomes `path.N` (the oldest is dropped), and the file's
/// content moves to `path.1` while the service keeps writing to it (it holds the file
/// open with O_APPEND and is never interrupted).
///
/// The move is lossless where the file system can collapse a range (ext4, XFS): the
/// whole blocks at the start of the file are copied to `path.1` and then cut out of the
/// file in one atomic `fallocate(FALLOC_FL_COLLAPSE_RANGE)`, so whatever the service
/// writes meanwhile stays in the file. Only the partial last block stays behind, which is
/// why a file smaller than one block (4 KiB) is not rotated. Elsewhere it falls back to
/// copy and truncate, which loses what is written between the last copy pass and the
/// truncation.
pub fn rotate(path: &Path, backups: u32) -> io::Result<bool> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::MetadataExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)?;
    let meta = file.metadata()?;
    let block = meta.blksize().max(512);
    let whole = meta.len() / block * block;
    if whole == 0 {
        return Ok(false);
    }
    for i in (1..backups.max(1)).rev() {
        match std::fs::rename(backup(path, i), backup(path, i + 1)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    let mut dst = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(backup(path, 1))?;
    let mut src = &file;
    src.seek(SeekFrom::Start(0))?;
    let copied = io::copy(&mut src.take(whole), &mut dst)?;
    if copied == whole {
        let collapse = nix::fcntl::FallocateFlags::FALLOC_FL_COLLAPSE_RANGE;
        match nix::fcntl::fallocate(file.as_raw_fd(), collapse, 0, whole as i64) {
            Ok(()) => return Ok(true),
            Err(nix::errno::Errno::EOPNOTSUPP | nix::errno::Errno::EINVAL) => {}
            Err(e) => return Err(e.into()),
        }
    }
    // No collapse here: copy the rest as it grows, then truncate.
    let mut copied = copied;
    for _ in 0..3 {
        let len = file.metadata()?.len();
        if len <= copied {
            break;
        }
        src.seek(SeekFrom::Start(copied))?;
        copied += io::copy(&mut src.take(len - copied), &mut dst)?;
    }
    file.set_len(0)?;
    Ok(true)
}

/// Where the last `n` lines of the stream `files` (oldest first) begin: (file index,
/// offset). Read backwards in blocks, so a large log costs only what is printed.
fn tail_start(files: &mut [(File, u64)], n: usize) -> io::Result<(usize, u64)> {
    if n == 0 {
        return Ok((files.len(), 0));
    }
    const BLOCK: u64 = 8192;
    let mut buf = vec![0u8; BLOCK as usize];
    let mut newlines = 0;
    // A newline that ends the whole stream ends the last line; it does not start one.
    let mut last_byte = true;
    for fi in (0..files.len()).rev() {
        let (f, len) = &mut files[fi];
        let mut pos = *len;
        while pos > 0 {
            let size = BLOCK.min(pos);
            pos -= size;
            f.seek(SeekFrom::Start(pos))?;
            f.read_exact(&mut buf[..size as usize])?;
            for i in (0..size as usize).rev() {
                if std::mem::take(&mut last_byte) && buf[i] == b'\n' {
                    continue;
                }
                if buf[i] == b'\n' {
                    newlines += 1;
                    if newlines == n {
                        return Ok((fi, pos + i as u64 + 1));
                    }
                }
            }
        }
    }
    Ok((0, 0))
}

/// Follows `paths` from the given offsets, printing what is appended, until writing to
/// `out` fails (a closed pipe ends it quietly). A file that shrinks or is replaced (a
/// rotation, a truncation) is read again from its start.
pub fn follow(out: &mut dyn Write, paths: &[PathBuf], mut offsets: Vec<u64>) -> io::Result<()> {
    // The file each path named when last read, kept open: when the path comes to name
    // another file (a rotation by rename, as the log writer does), what was appended to
    // the old one after the last round is read from it before switching.
    let mut open: Vec<Option<File>> = paths.iter().map(|p| File::open(p).ok()).collect();
    let mut last_printed: Option<usize> = None;
    loop {
        let mut wrote = false;
        for (i, path) in paths.iter().enumerate() {
            let Ok(meta) = std::fs::metadata(path) else {
                continue;
            };
            let same = match &open[i] {
                Some(f) => f
                    .metadata()
                    .is_ok_and(|m| m.ino() == meta.ino() && m.dev() == meta.dev()),
                None => false,
            };
            if !same {
                if let Some(mut old) = open[i].take() {
                    let end = old.metadata()?.len();
                    if end > offsets[i] {
                        if paths.len() > 1 && last_printed != Some(i) {
                            writeln!(out, "==> {} <==", path.display())?;
                            last_printed = Some(i);
                        }
                        old.seek(SeekFrom::Start(offsets[i]))?;
                        io::copy(&mut (&mut old).take(end - offsets[i]), out)?;
                        wrote = true;
                    }
                }
                open[i] = Some(File::open(path)?);
                offsets[i] = 0;
            } else if meta.len() < offsets[i] {
                // Rotated in place: the first bytes moved to NAME.1 (collapse) or all of
                // them did (truncate). Continue where the moved part ended.
                let moved = std::fs::metadata(backup(path, 1)).map_or(0, |m| m.len());
                offsets[i] = offsets[i].saturating_sub(moved).min(meta.len());
            }
            if meta.len() <= offsets[i] {
                continue;
            }
            let f = open[i].as_mut().expect("opened above");
            f.seek(SeekFrom::Start(offsets[i]))?;
            if paths.len() > 1 && last_printed != Some(i) {
                writeln!(out, "==> {} <==", path.display())?;
                last_printed = Some(i);
            }
            let copied = io::copy(&mut f.take(meta.len() - offsets[i]), out)?;
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

    fn lines(from: usize, to: usize) -> String {
        (from..to).map(|i| format!("line {i:04}\n")).collect()
    }

    fn append(p: &Path, text: &str) {
        use std::io::Write as _;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(p)
            .unwrap();
        f.write_all(text.as_bytes()).unwrap();
    }

    fn concat(p: &Path) -> String {
        let mut all = String::new();
        for i in (1..=crate::service::LOG_BACKUPS).rev() {
            all.push_str(&std::fs::read_to_string(backup(p, i)).unwrap_or_default());
        }
        all + &std::fs::read_to_string(p).unwrap()
    }

    #[test]
    fn rotation_keeps_every_byte_and_tail_reads_across() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log");
        // Below one block: left alone.
        append(&p, &lines(0, 10));
        assert!(!rotate(&p, 3).unwrap());
        assert!(!backup(&p, 1).exists());

        append(&p, &lines(10, 1000));
        assert!(rotate(&p, 3).unwrap());
        assert_eq!(concat(&p), lines(0, 1000));
        assert_eq!(std::fs::metadata(backup(&p, 1)).unwrap().len() % 4096, 0);
        append(&p, &lines(1000, 2000));
        assert!(rotate(&p, 3).unwrap());
        assert!(backup(&p, 2).exists());
        assert_eq!(concat(&p), lines(0, 2000));

        let mut out = Vec::new();
        tail(&mut out, &p, 3).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), lines(1997, 2000));
        // Reaching back through the backups, across lines split by a rotation.
        let mut out = Vec::new();
        tail(&mut out, &p, 1500).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), lines(500, 2000));

        // Only LOG_BACKUPS backups are kept.
        for k in 0..4 {
            append(&p, &lines(2000 + k * 1000, 3000 + k * 1000));
            assert!(rotate(&p, 3).unwrap());
        }
        assert!(backup(&p, 3).exists());
        assert!(!backup(&p, 4).exists());
        let mut out = Vec::new();
        tail(&mut out, &p, 2).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), lines(5998, 6000));
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
