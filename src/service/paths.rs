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

/// Checks that a log file can be appended to (or created), without creating it.
pub fn check_writable(what: &'static str, path: &Path) -> Result<()> {
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
