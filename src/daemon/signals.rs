//! The daemon's signals and systemd: handlers that only wake the event loop (through a
//! socket pair), and `sd_notify` for a `Type=notify` unit.

use std::io::Read;
use std::os::unix::net::UnixStream;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use tracing::warn;

use crate::error::{Error, Result};

/// Tells systemd (Type=notify) about readiness; a no-op outside systemd.
pub fn sd_notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(sock) = std::os::unix::net::UnixDatagram::unbound() else {
        return;
    };
    let bytes = path.as_encoded_bytes();
    let sent = if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(name)
            .and_then(|addr| sock.send_to_addr(state.as_bytes(), &addr))
    } else {
        sock.send_to(state.as_bytes(), &path)
    };
    if let Err(e) = sent {
        warn!(error = %e, "sd_notify failed");
    }
}

/// Signal handlers that only set a flag and wake the loop through a socket pair.
pub struct Signals {
    pub read: UnixStream,
    pub chld: Arc<AtomicBool>,
    pub term: Arc<AtomicBool>,
    pub hup: Arc<AtomicBool>,
}

impl Signals {
    pub fn register() -> Result<Signals> {
        use signal_hook::consts::{SIGCHLD, SIGHUP, SIGINT, SIGTERM};
        let fail = |e: std::io::Error| Error::Daemon {
            message: format!("cannot install signal handlers: {e}"),
        };
        let (read, write) = UnixStream::pair().map_err(fail)?;
        read.set_nonblocking(true).map_err(fail)?;
        write.set_nonblocking(true).map_err(fail)?;
        let s = Signals {
            read,
            chld: Arc::new(AtomicBool::new(false)),
            term: Arc::new(AtomicBool::new(false)),
            hup: Arc::new(AtomicBool::new(false)),
        };
        for (sig, flag) in [
            (SIGCHLD, &s.chld),
            (SIGTERM, &s.term),
            (SIGINT, &s.term),
            (SIGHUP, &s.hup),
        ] {
            signal_hook::flag::register(sig, flag.clone()).map_err(fail)?;
            signal_hook::low_level::pipe::register(sig, write.try_clone().map_err(fail)?)
                .map_err(fail)?;
        }
        Ok(s)
    }
}

pub fn drain(mut s: &UnixStream) {
    let mut buf = [0u8; 256];
    while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
}
