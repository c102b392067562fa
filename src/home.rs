//! The state home: where the database and the default logs live.
//!
//! Resolution order: `--home DIR`, `$TEND_HOME`, `$XDG_STATE_HOME/tend`,
//! `~/.local/state/tend`. The directory is created with mode 0700 so other users on a
//! shared host cannot read command lines, environments or logs.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use crate::error::{io_reason, Error, Result};

#[derive(Clone, Debug)]
pub struct Home {
    root: PathBuf,
}

impl Home {
    /// Resolves the home without creating it. `explicit` is `--home` or `$TEND_HOME`
    /// (clap merges the two; `from_env` says which). A relative `--home` is made absolute
    /// once, here, against the current directory (like any path argument); a relative
    /// `TEND_HOME` is refused, since it would name a different home in every directory a
    /// command runs in.
    pub fn resolve(explicit: Option<&Path>, from_env: bool) -> Result<Home> {
        if let Some(p) = explicit.filter(|p| !p.as_os_str().is_empty() && !p.is_absolute()) {
            if from_env {
                return Err(Error::Invalid {
                    what: "TEND_HOME",
                    message: format!(
                        "{:?} is a relative path, which would name another home in every \
                         directory; use an absolute one (export TEND_HOME=\"$PWD/{}\")",
                        p,
                        p.display()
                    ),
                });
            }
        }
        let cwd = || {
            std::env::current_dir().map_err(|e| Error::Home {
                path: PathBuf::from("."),
                reason: format!("cannot read the current directory: {}", io_reason(&e)),
            })
        };
        let nonempty = |var: &str| std::env::var_os(var).filter(|v| !v.is_empty());
        let root = if let Some(p) = explicit.filter(|p| !p.as_os_str().is_empty()) {
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                cwd()?.join(p)
            }
        } else if let Some(xdg) = nonempty("XDG_STATE_HOME").map(PathBuf::from) {
            // The XDG spec says relative values must be ignored.
            if xdg.is_absolute() {
                xdg.join("tend")
            } else {
                Self::from_home_dir()?
            }
        } else {
            Self::from_home_dir()?
        };
        Ok(Home { root })
    }

    fn from_home_dir() -> Result<PathBuf> {
        match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
            Some(h) => Ok(PathBuf::from(h).join(".local/state/tend")),
            None => Err(Error::Home {
                path: PathBuf::from("~/.local/state/tend"),
                reason: "HOME is not set; use --home or TEND_HOME".into(),
            }),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn db_path(&self) -> PathBuf {
        self.root.join("tend.db")
    }

    pub fn logs_dir(&self) -> PathBuf {
        self.root.join("logs")
    }

    pub fn default_log(&self, name: &str) -> PathBuf {
        self.logs_dir().join(format!("{name}.log"))
    }

    /// Refuses a home that users other than its owner may write (as ssh refuses such a
    /// `~/.ssh`): whoever can write it can replace the database, and with it the
    /// commands tend runs. A missing home is fine (it is created 0700).
    pub fn check_mode(&self) -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let Ok(meta) = std::fs::metadata(&self.root) else {
            return Ok(());
        };
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o022 != 0 {
            return Err(Error::Home {
                path: self.root.clone(),
                reason: format!(
                    "writable by {} (mode {mode:04o}); anyone who can write it can replace \
                     the database and the commands it holds: fix with `chmod go-w {}`",
                    if mode & 0o002 != 0 {
                        "others"
                    } else {
                        "the group"
                    },
                    shell_words::quote(&self.root.to_string_lossy())
                ),
            });
        }
        Ok(())
    }

    /// Creates the home and its `logs/` directory (0700) if missing, and refuses a home
    /// that others may write (see [`Home::check_mode`]).
    pub fn ensure(&self) -> Result<()> {
        self.check_mode()?;
        for dir in [self.root.clone(), self.logs_dir()] {
            if dir.is_dir() {
                continue;
            }
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .map_err(|e| Error::Home {
                    path: dir.clone(),
                    reason: format!("cannot create directory: {}", io_reason(&e)),
                })?;
        }
        Ok(())
    }
}
