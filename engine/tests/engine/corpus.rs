//! Replays the `compile` fuzz corpus (`fuzz/corpus/compile/`: rule files the fuzzer found
//! interesting, and every one that ever crashed) through the same checks the fuzz target runs.

mod check {
    include!(concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/checks/compile.rs"));
}

#[test]
fn every_compile_corpus_input_passes_the_fuzz_checks() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/corpus/compile");
    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(dir)
        .expect("the corpus is in the repository")
        .map(|e| e.expect("readable directory").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(files.len() >= 10, "{dir}: only {} inputs", files.len());
    for path in files {
        let bytes = std::fs::read(&path).expect("readable input");
        let ran = std::panic::catch_unwind(|| check::check(&bytes));
        assert!(ran.is_ok(), "{} fails the checks", path.display());
    }
}
