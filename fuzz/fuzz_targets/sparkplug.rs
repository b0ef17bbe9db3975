//! Fuzz target `sparkplug`: see `../checks/sparkplug.rs` for what it checks (the same code
//! replays the corpus in the regular tests).
#![no_main]

mod check {
    include!("../checks/sparkplug.rs");
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
