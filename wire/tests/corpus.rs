//! Replays the `wire` fuzz corpus (`fuzz/corpus/wire/`: inputs the fuzzer found interesting,
//! and every one that ever crashed) through the same checks the fuzz target runs.

mod check {
    include!(concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/checks/wire.rs"));
}

mod replay {
    include!(concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/checks/replay.rs"));
}

#[test]
fn every_wire_corpus_input_passes_the_fuzz_checks() {
    replay::replay(concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/corpus/wire"), check::check);
}
