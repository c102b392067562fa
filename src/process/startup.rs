//! What the `tend` binary does first, in place of the Rust runtime's own start.
//!
//! `main.rs` is `#![no_main]`: std's start-up (`lang_start`) would also install a
//! stack-overflow handler, whose set-up reads and parses `/proc/self/maps` to find the
//! main thread's stack (about a tenth of `tend --version`'s instructions). tend keeps
//! the two parts of that start it relies on: the standard descriptors exist, and
//! SIGPIPE is ignored. Without the handler a stack overflow is a plain SIGSEGV, with no
//! "has overflowed its stack" message.

/// Makes sure descriptors 0, 1 and 2 are open (on /dev/null if they were closed), as
/// std's start does: otherwise the database or a log file opened later could take one
/// of their numbers and receive what is printed. Then ignores SIGPIPE.
///
/// SIGPIPE ignored is what std's start leaves too, and tend depends on it: the daemon
/// writes to clients that may have gone (a signal would kill it), and the CLI reports a
/// closed stdout (`tend list | head`) as the error `EPIPE`, which it treats as success.
/// A service does not inherit it: the spawned child resets every disposition.
pub fn prepare() {
    let mut fds = [0, 1, 2].map(|fd| libc::pollfd {
        fd,
        events: 0,
        revents: 0,
    });
    // SAFETY: poll with a valid pointer to 3 pollfd structures and no timeout.
    let polled = unsafe { libc::poll(fds.as_mut_ptr(), 3, 0) } >= 0;
    for fd in fds {
        let closed = if polled {
            fd.revents & libc::POLLNVAL != 0
        } else {
            // SAFETY: F_GETFD on a descriptor number only reads its flags.
            let flags = unsafe { libc::fcntl(fd.fd, libc::F_GETFD) };
            flags == -1 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EBADF)
        };
        if closed {
            // Lowest free number first: this open takes `fd.fd` (0, 1 and 2 are checked
            // in order). A failure leaves it closed, as nothing better can be done.
            // SAFETY: open with a NUL-terminated path; the descriptor is kept for good.
            unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR) };
        }
    }
    // SAFETY: setting a disposition to SIG_IGN installs no handler; nothing else in
    // the process has started yet.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
}
