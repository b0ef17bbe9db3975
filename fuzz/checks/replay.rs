// Shared by the corpus replay tests of the agent, engine and wire crates (included with
// `include!`): every file of `fuzz/corpus/<target>/` through that target's `check`.

/// Runs `check` on every input in `dir`; fails naming the first input that panics.
pub fn replay(dir: &str, check: impl Fn(&[u8]) + std::panic::RefUnwindSafe) {
    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(dir)
        .expect("the corpus is in the repository")
        .map(|e| e.expect("readable directory").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(files.len() >= 10, "{dir}: only {} inputs", files.len());
    for path in files {
        let bytes = std::fs::read(&path).expect("readable input");
        let ran = std::panic::catch_unwind(|| check(&bytes));
        assert!(ran.is_ok(), "{} fails the checks", path.display());
    }
}
