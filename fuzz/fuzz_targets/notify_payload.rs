//! Coverage-guided fuzzing of what arrives over NOTIFY: the payload parser and the
//! signature check. Run with `cargo fuzz run notify_payload` (see README).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(cmd) = tend::pg::payload::parse(&text) {
        for t in &cmd.targets {
            assert!(tend::service::validate_name(&t.service).is_ok());
        }
        let _ = cmd.services_for("host-1");
    }
    let key = tend::pg::auth::Key::load_bytes(b"fuzzing-key-0123456789");
    let mut seen = tend::pg::auth::Replays::default();
    let _ = tend::pg::auth::verify(&key, &text, 0, &mut seen);
});
