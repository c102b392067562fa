//! The report pipe between the new processes and tend: fixed-size records (written
//! atomically, below `PIPE_BUF`), and the gate's go byte.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use nix::errno::Errno;

use crate::error::Stage;

pub const TAG_PID: u32 = 1;
pub const TAG_ERROR: u32 = 2;
pub const TAG_READY: u32 = 3;
pub const RECORD: usize = 12;
/// The byte that opens the gate; anything else (or end of file) means "do not run".
pub const GO: u8 = b'G';

pub enum Record {
    Pid(i32),
    Ready(i32),
    Error(Stage, Errno),
}

/// Reads one fixed-size record; `None` at end of file (every write end closed: the
/// intermediate exited and the service exec'd or exited).
pub fn read_record(fd: &OwnedFd) -> io::Result<Option<Record>> {
    loop {
        let mut rec = [0u8; RECORD];
        let mut got = 0;
        while got < RECORD {
            // SAFETY: reading into the unfilled part of a valid, writable buffer.
            let n =
                unsafe { libc::read(fd.as_raw_fd(), rec[got..].as_mut_ptr().cast(), RECORD - got) };
            match n {
                0 if got == 0 => return Ok(None),
                0 => return Err(io::Error::from(io::ErrorKind::UnexpectedEof)),
                n if n > 0 => got += n as usize,
                _ if Errno::last() == Errno::EINTR => continue,
                _ => return Err(io::Error::last_os_error()),
            }
        }
        let word = |i: usize| u32::from_ne_bytes(rec[i..i + 4].try_into().expect("4 bytes"));
        match word(0) {
            TAG_PID => return Ok(Some(Record::Pid(word(4) as i32))),
            TAG_READY => return Ok(Some(Record::Ready(word(4) as i32))),
            TAG_ERROR => {
                if let Some(stage) = Stage::from_u32(word(4)) {
                    return Ok(Some(Record::Error(stage, Errno::from_raw(word(8) as i32))));
                }
            }
            _ => {}
        }
    }
}

/// Writes one record; async-signal-safe.
///
/// # Safety
/// Only async-signal-safe calls; `fd` may be any descriptor (a failed write is ignored).
pub unsafe fn send(fd: RawFd, tag: u32, a: u32, b: u32) {
    let mut rec = [0u8; RECORD];
    rec[0..4].copy_from_slice(&tag.to_ne_bytes());
    rec[4..8].copy_from_slice(&a.to_ne_bytes());
    rec[8..12].copy_from_slice(&b.to_ne_bytes());
    // SAFETY: a 12-byte write from a valid buffer; below PIPE_BUF, so it is atomic.
    // Nothing to do on failure: the parent is gone or will see end of file.
    unsafe { libc::write(fd, rec.as_ptr().cast(), RECORD) };
}
