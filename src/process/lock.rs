//! The daemon's lock: an open-file-description (OFD) write lock on `daemon.lock`.
//!
//! Readers never take it: [`probe`] asks the kernel with `F_OFD_GETLK` whether a lock is
//! held, which takes nothing. So a `tend daemon` starting up can never be refused because
//! some CLI command happened to be looking at the lock at that instant (as it could with a
//! shared `flock` taken to test it). The lock belongs to the open file, not the process:
//! it is released when the daemon's descriptor closes, however the daemon ends.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg};

/// A held lock; released when dropped (or when the process ends).
#[derive(Debug)]
pub struct Held {
    _file: File,
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

/// Takes the lock at `path` (created 0600 if missing) and writes our pid into the file.
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
    file.write_all(std::process::id().to_string().as_bytes())?;
    Ok(Some(Held { _file: file }))
}

/// True when someone holds the lock at `path`. Takes nothing.
pub fn probe(path: &Path) -> bool {
    let Ok(file) = File::open(path) else {
        return false;
    };
    let mut lock = whole_file(libc::F_WRLCK as libc::c_short);
    match fcntl(file.as_raw_fd(), FcntlArg::F_OFD_GETLK(&mut lock)) {
        Ok(_) => lock.l_type != libc::F_UNLCK as libc::c_short,
        Err(_) => false,
    }
}
