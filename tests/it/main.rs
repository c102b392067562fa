//! Integration tests: the real `tend` binary, a fresh temporary state home per test,
//! real processes and real signals. One test crate with modules keeps link time down.

mod bad_input;
mod cgroups;
mod cli;
mod daemon;
mod faults;
mod forged;
mod hooks;
mod hostile;
mod http_api;
mod lifecycle;
mod log_writer;
mod logs_multi;
mod postgres;
mod races;
mod scarce;
mod services_file;
mod settings_limits;
mod siblings;
mod stop_events;
mod top;
mod up;
mod util;
mod wal;
