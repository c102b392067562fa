//! The daemon's lock: an open-file-description (OFD) write lock on `daemon.lock`.
//!
//! Readers never take it: [`probe`] asks the kernel with `F_OFD_GETLK` whether a lock is
//! held, which takes nothing. So a `tend daemon` starting up can never be refused because
//! some CLI command happened to be looking at the lock at that instant (as it could with a
//! shared `flock` taken to test it). The lock belongs to the open file, not the process:
//! it is released when the daemon's descriptor closes, however the daemon ends.
//!
//! The file is also where the daemon says what others must know about it: its pid on
//! the first line, then lines it adds with [`Held::note`]. They are only ever appended,
//! so a reader sees a prefix of them; the next daemon starts the file afresh.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg};

/// A held lock; released when dropped (or when the process ends).
#[derive(Debug)]
pub struct Held {
    file: File,
}

impl Held {
    /// Adds `line` to the lock file (a newline in it becomes a space: one line each).
    pub fn note(&self, line: &str) -> io::Result<()> {
        let mut line = line.replace('\n', " ");
        line.push('\n');
        // The file's offset is at its end: only this descriptor writes it, in turn.
        (&self.file).write_all(line.as_bytes())
    }
}

fn whole_file(kind: libc::c_short) -> libc::flock {
    libc::flock {
        l_type: kind,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: 0,
        l_len: 0,
        l_pid: 0,
    }
}

/// Takes the lock at `path` (created 0600 if missing) and writes our pid into the file,
/// replacing what an earlier holder wrote.
/// `Ok(None)`: someone else holds it.
pub fn acquire(path: &Path) -> io::Result<Option<Held>> {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)?;
    let lock = whole_file(libc::F_WRLCK as libc::c_short);
    match fcntl(file.as_raw_fd(), FcntlArg::F_OFD_SETLK(&lock)) {
        Ok(_) => {}
        Err(Errno::EAGAIN) | Err(Errno::EACCES) => return Ok(None),
        Err(e) => return Err(io::Error::from_raw_os_error(e as i32)),
    }
    file.set_len(0)?;
    file.write_all(format!("{}\n", std::process::id()).as_bytes())?;
    Ok(Some(Held { file }))
}

/// True when someone holds the lock at `path`. Takes nothing.
pub fn probe(path: &Path) -> bool {
    File::open(path).is_ok_and(|f| held(&f))
}

/// What the lock file at `path` says, when someone holds the lock (see [`probe`]): one
/// open, one `F_OFD_GETLK`, one read of at most [`NOTES_MAX`] bytes (its holder's notes
/// are a few short lines; a line cut short is the reader's to ignore).
pub fn read_if_held(path: &Path) -> Option<String> {
    let mut file = File::open(path).ok()?;
    if !held(&file) {
        return None;
    }
    let mut buf = [0u8; NOTES_MAX];
    // Unreadable text is read as nothing: the lock is what says a daemon runs.
    let n = file.read(&mut buf).unwrap_or(0);
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// How much of the lock file [`read_if_held`] reads.
pub const NOTES_MAX: usize = 1024;

fn held(file: &File) -> bool {
    let mut lock = whole_file(libc::F_WRLCK as libc::c_short);
    match fcntl(file.as_raw_fd(), FcntlArg::F_OFD_GETLK(&mut lock)) {
        Ok(_) => lock.l_type != libc::F_UNLCK as libc::c_short,
        Err(_) => false,
    }
}
