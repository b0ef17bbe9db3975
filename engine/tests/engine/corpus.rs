//! Replays the `compile` fuzz corpus (`fuzz/corpus/compile/`: rule files the fuzzer found
//! interesting, and every one that ever crashed) through the same checks the fuzz target runs.

mod check {
    include!(concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/checks/compile.rs"));
}

mod replay {
    include!(concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/checks/replay.rs"));
}

#[test]
fn every_compile_corpus_input_passes_the_fuzz_checks() {
    replay::replay(concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/corpus/compile"), check::check);
}
