//! Paths in a definition: made absolute, and checked against the file system before
//! anything is stored.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Makes `p` absolute against `base` without touching the file system.
pub fn absolute(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

/// Checks that `dir` is an existing directory.
pub fn check_cwd(dir: &Path) -> Result<()> {
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(Error::Invalid {
            what: "working directory",
            message: format!("{} is not a directory", dir.display()),
        }),
        Err(e) => Err(Error::Invalid {
            what: "working directory",
            message: format!("{}: {}", dir.display(), crate::error::io_reason(&e)),
        }),
    }
}

/// Why a file of this type cannot be a service's stdin, stdout or stderr, if it cannot.
/// Opening a FIFO blocks until another process opens its other end (and a serial line
/// until its carrier is up), so tend would hang in `add` or `start`: FIFOs, sockets, block
/// devices and character devices other than the memory devices (`/dev/null`,
/// `/dev/zero`, `/dev/full`, `/dev/urandom`...) and pseudo-terminals are refused.
pub fn stdio_refusal(meta: &std::fs::Metadata) -> Option<&'static str> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let t = meta.file_type();
    if t.is_fifo() {
        Some("it is a FIFO (named pipe), whose opening blocks until a reader or writer comes; use a regular file")
    } else if t.is_socket() {
        Some("it is a socket; use a regular file")
    } else if t.is_block_device() {
        Some("it is a block device; use a regular file")
    } else if t.is_char_device() {
        let major = nix::sys::stat::major(meta.rdev());
        // 1: /dev/null, /dev/zero, /dev/full, /dev/random, /dev/urandom; 136-143: ptys.
        if major == 1 || (136..=143).contains(&major) {
            None
        } else {
            Some("it is a device that may block when opened; use a regular file, /dev/null or a terminal")
        }
    } else {
        None
    }
}

/// Refuses a path [`stdio_refusal`] refuses, without opening it.
fn check_kind(what: &'static str, path: &Path) -> Result<()> {
    match std::fs::metadata(path) {
        Ok(m) => match stdio_refusal(&m) {
            Some(why) => Err(Error::Invalid {
                what,
                message: format!("{}: {why}", path.display()),
            }),
            None => Ok(()),
        },
        Err(_) => Ok(()),
    }
}

/// Checks that a log file can be appended to (or created), without creating it.
pub fn check_writable(what: &'static str, path: &Path) -> Result<()> {
    check_kind(what, path)?;
    let fail = |reason: String| Error::Invalid {
        what,
        message: format!("{} is not writable: {reason}", path.display()),
    };
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => Err(fail("it is a directory".into())),
        Ok(_) => std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .map(drop)
            .map_err(|e| fail(crate::error::io_reason(&e))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let parent = path.parent().unwrap_or(Path::new("/"));
            match std::fs::metadata(parent) {
                Ok(m) if m.is_dir() => nix::unistd::access(parent, nix::unistd::AccessFlags::W_OK)
                    .map_err(|e| fail(format!("directory {}: {e}", parent.display()))),
                Ok(_) => Err(fail(format!("{} is not a directory", parent.display()))),
                Err(e) => Err(fail(format!(
                    "directory {}: {}",
                    parent.display(),
                    crate::error::io_reason(&e)
                ))),
            }
        }
        Err(e) => Err(fail(crate::error::io_reason(&e))),
    }
}

/// Checks that stdin can be opened for reading.
pub fn check_readable(path: &Path) -> Result<()> {
    check_kind("stdin", path)?;
    std::fs::File::open(path)
        .map(drop)
        .map_err(|e| Error::Invalid {
            what: "stdin",
            message: format!(
                "{} is not readable: {}",
                path.display(),
                crate::error::io_reason(&e)
            ),
        })
}
