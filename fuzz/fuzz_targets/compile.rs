//! Fuzz target `compile`: see `../checks/compile.rs` for what it checks (the same code replays the
//! corpus in the regular tests).
#![no_main]

mod check {
    include!("../checks/compile.rs");
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
