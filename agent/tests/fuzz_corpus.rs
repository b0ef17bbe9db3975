//! Replays the `decode` and `sparkplug` fuzz corpora (`fuzz/corpus/<target>/`: inputs the fuzzer
//! found interesting, and every one that ever crashed) through the same checks the fuzz targets
//! run.

mod check {
    include!(concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/checks/decode.rs"));
}

mod sparkplug {
    include!(concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/checks/sparkplug.rs"));
}

mod replay {
    include!(concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/checks/replay.rs"));
}

#[test]
fn every_decode_corpus_input_passes_the_fuzz_checks() {
    replay::replay(concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/corpus/decode"), check::check);
}

#[test]
fn every_sparkplug_corpus_input_passes_the_fuzz_checks() {
    replay::replay(concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/corpus/sparkplug"), sparkplug::check);
}
