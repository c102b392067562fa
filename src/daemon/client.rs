//! The CLI's side of the control socket.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use super::protocol::{Action, Request, Response, MAX_MESSAGE, VERSION};
use crate::error::{Error, Result};
use crate::home::Home;

pub fn socket_path(home: &Home) -> PathBuf {
    home.root().join("daemon.sock")
}

pub fn lock_path(home: &Home) -> PathBuf {
    home.root().join("daemon.lock")
}

/// True when a daemon holds this home's lock. Cheap (an open and a flock), so the CLI can
/// ask before every command.
pub fn daemon_holds_lock(home: &Home) -> bool {
    let Ok(file) = std::fs::File::open(lock_path(home)) else {
        return false;
    };
    match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockSharedNonblock) {
        Ok(_) => false,
        Err((_, errno)) => errno == nix::errno::Errno::EWOULDBLOCK,
    }
}

/// Sends one request to the daemon of `home`. `Ok(None)`: no daemon is listening, and
/// the caller acts itself.
pub fn request(home: &Home, action: Action) -> Result<Option<Response>> {
    let path = socket_path(home);
    let fail = |message: String| Error::Daemon { message };
    let mut stream = match UnixStream::connect(&path) {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None)
        }
        Err(e) => {
            return Err(fail(format!(
                "cannot connect to {}: {}",
                path.display(),
                crate::error::io_reason(&e)
            )))
        }
    };
    let mut line = serde_json::to_string(&Request {
        version: VERSION,
        action,
    })
    .expect("requests always serialize");
    line.push('\n');
    stream.write_all(line.as_bytes()).map_err(|e| {
        fail(format!(
            "sending the request: {}",
            crate::error::io_reason(&e)
        ))
    })?;
    let mut reply = String::new();
    let n = BufReader::new((&stream).take(MAX_MESSAGE))
        .read_line(&mut reply)
        .map_err(|e| {
            fail(format!(
                "reading the answer: {}",
                crate::error::io_reason(&e)
            ))
        })?;
    if n == 0 || !reply.ends_with('\n') {
        return Err(fail(
            "the daemon closed the connection without answering (did it die? see \
             `tend daemon status`); the request may or may not have been carried out"
                .into(),
        ));
    }
    serde_json::from_str(&reply)
        .map(Some)
        .map_err(|e| fail(format!("unreadable answer from the daemon: {e}")))
}
