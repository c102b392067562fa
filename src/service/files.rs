//! Reading a file on a service's behalf: its env file, its pid file, the log its `log`
//! readiness check searches, a services file or Procfile given to `apply` or `import`.
//!
//! Whoever can write the path decides what is there, and tend must neither hang nor
//! swell because of it. `open()` of a FIFO blocks until a writer comes (with signals
//! held off in a start, only SIGKILL would end it), a terminal or serial line may block
//! too, and `/dev/zero` or a huge file read whole takes all the memory there is. So every
//! such file is opened with `O_NONBLOCK` (which returns at once for a FIFO and changes
//! nothing for a regular file), refused unless `fstat` says it is a regular file, and
//! read up to a cap. The flag stays on while reading: the few regular files of `/proc`
//! and tracefs that wait for data (`/proc/kmsg`, `trace_pipe`) then answer "try again"
//! instead of waiting.

use std::fs::{File, Metadata};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// Why a file was not read.
#[derive(Debug)]
pub enum ReadError {
    /// It could not be opened or read (`NotFound` among others).
    Io(std::io::Error),
    /// It is not a regular file: what it is (`a FIFO (named pipe)`).
    NotRegular(&'static str),
    /// It holds more than the cap.
    TooLarge { cap: u64 },
}

impl ReadError {
    /// There is no such file (yet).
    pub fn not_found(&self) -> bool {
        matches!(self, ReadError::Io(e) if e.kind() == std::io::ErrorKind::NotFound)
    }
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Io(e) => f.write_str(&crate::error::io_reason(e)),
            ReadError::NotRegular(what) => write!(f, "it is {what}, not a regular file"),
            ReadError::TooLarge { cap } => write!(
                f,
                "it is larger than {}, more than such a file holds",
                fmt_size(*cap)
            ),
        }
    }
}

/// What a file that is not a regular one is, in words.
fn kind(meta: &Metadata) -> Option<&'static str> {
    let t = meta.file_type();
    Some(if t.is_file() {
        return None;
    } else if t.is_fifo() {
        "a FIFO (named pipe)"
    } else if t.is_dir() {
        "a directory"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "not a file"
    })
}

/// Opens `path` for reading without blocking, only if it is a regular file (a symbolic
/// link is followed: what it names is what counts). The descriptor keeps `O_NONBLOCK`.
pub fn open_regular(path: &Path) -> Result<(File, Metadata), ReadError> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(ReadError::Io)?;
    let meta = file.metadata().map_err(ReadError::Io)?;
    if let Some(what) = kind(&meta) {
        return Err(ReadError::NotRegular(what));
    }
    Ok((file, meta))
}

/// The whole of the regular file `path`, if it holds at most `cap` bytes. At most
/// `cap + 1` bytes are ever read, whatever its size says (a file in /proc says 0).
pub fn read_regular(path: &Path, cap: u64) -> Result<Vec<u8>, ReadError> {
    let (file, meta) = open_regular(path)?;
    if meta.len() > cap {
        return Err(ReadError::TooLarge { cap });
    }
    let mut buf = Vec::with_capacity(meta.len() as usize + 1);
    file.take(cap + 1)
        .read_to_end(&mut buf)
        .map_err(ReadError::Io)?;
    if buf.len() as u64 > cap {
        return Err(ReadError::TooLarge { cap });
    }
    Ok(buf)
}

/// `1 MiB`, `4 KiB`, `17 bytes`.
fn fmt_size(n: u64) -> String {
    match n {
        n if n >= 1 << 20 && n % (1 << 20) == 0 => format!("{} MiB", n >> 20),
        n if n >= 1 << 10 && n % (1 << 10) == 0 => format!("{} KiB", n >> 10),
        n => format!("{n} bytes"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regular_small_file_is_read_and_others_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"A=1\n").unwrap();
        assert_eq!(read_regular(&p, 4).unwrap(), b"A=1\n");
        assert!(matches!(
            read_regular(&p, 3),
            Err(ReadError::TooLarge { cap: 3 })
        ));
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let e = read_regular(&fifo, 10).unwrap_err();
        assert_eq!(
            e.to_string(),
            "it is a FIFO (named pipe), not a regular file"
        );
        assert!(matches!(
            read_regular(Path::new("/dev/zero"), 10),
            Err(ReadError::NotRegular("a character device"))
        ));
        assert!(matches!(
            read_regular(dir.path(), 10),
            Err(ReadError::NotRegular("a directory"))
        ));
        assert!(read_regular(&dir.path().join("none"), 10)
            .unwrap_err()
            .not_found());
        assert_eq!(fmt_size(1 << 20), "1 MiB");
        assert_eq!(fmt_size(4096), "4 KiB");
        assert_eq!(fmt_size(17), "17 bytes");
    }
}
