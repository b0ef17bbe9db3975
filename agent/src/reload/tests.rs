use super::*;
use edgewatch_engine::Limits;

const GOOD: &str = r#"rule("a", #{ on: "sensors/#", when: |e| e.value > 1 });"#;

fn files(dir: &Path) -> RuleFiles {
    RuleFiles::new(dir, BTreeMap::new(), Arc::new(Sandbox::new(Limits::default())))
}

fn new_errors(files: &mut RuleFiles) -> Vec<(String, bool)> {
    let scan = files.scan(Timestamp(0)).expect("the directory is readable");
    scan.errors.iter().map(|e| (e.message.clone(), e.previous_kept)).collect()
}

/// Issue 14: every reload reported (logged and counted) again the errors of files that
/// were broken but unchanged, and said "previous version keeps running" of new files
/// that never had one. Each distinct broken content is reported once.
#[test]
fn each_broken_version_is_reported_once_saying_whether_a_previous_version_runs() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = |name: &str| dir.path().join(name);
    std::fs::write(path("a.rhai"), GOOD).expect("write");
    let mut files = files(dir.path());
    assert_eq!(new_errors(&mut files), []);

    // A new file, broken: not loaded, no previous version. Reported once.
    std::fs::write(path("b.rhai"), "rule(\"b\", #{ on: ").expect("write");
    let errors = new_errors(&mut files);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].0.contains("b.rhai:"), "{errors:?}");
    assert!(!errors[0].1, "b never compiled: no previous version");
    assert_eq!(new_errors(&mut files), [], "unchanged: not reported again");

    // A good file broken: its previous version keeps running. b is not reported again.
    std::fs::write(path("a.rhai"), "rule(\"a\", #{ on: 7 ").expect("write");
    let errors = new_errors(&mut files);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].0.contains("a.rhai:") && errors[0].1, "{errors:?}");
    assert_eq!(new_errors(&mut files), []);

    // Another broken version of b is a new error, still with nothing to fall back on.
    std::fs::write(path("b.rhai"), "rule(\"b\", #{ on: \"x/#\", when: |e| e. });").expect("write");
    let errors = new_errors(&mut files);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].0.contains("b.rhai:") && !errors[0].1, "{errors:?}");

    // Errors outside the rule files (a broken table, a duplicate name) are also reported once.
    std::fs::create_dir(path("tables")).expect("mkdir");
    std::fs::write(path("tables/devices.csv"), "device,a\nx\n\"").expect("write");
    std::fs::write(path("c.rhai"), GOOD).expect("write");
    let errors = new_errors(&mut files);
    assert_eq!(errors.len(), 2, "the table and the duplicate `a`: {errors:?}");
    assert_eq!(new_errors(&mut files), []);

    // The status still shows every current error.
    let scan = files.scan(Timestamp(0)).expect("readable");
    let status = scan.status.to_string();
    assert!(status.contains("a.rhai:") && status.contains("b.rhai:"), "{status}");
}

fn names(scan: &Scan) -> Vec<String> {
    let mut v: Vec<String> = scan.rules.iter().map(|r| r.name.to_string()).collect();
    v.sort();
    v
}

/// Issue 15: `check` dropped the whole later file on a duplicate rule name, the agent
/// only the clashing rule, so `check` could pass a directory the agent loaded otherwise.
/// A file is the unit of failure everywhere: the later file is an error, whole, with
/// `file:line:col`, and keeps its previous version when that clashes with nothing.
#[test]
fn a_name_declared_twice_fails_the_later_file_whole_and_check_agrees() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = |name: &str| dir.path().join(name);
    std::fs::write(path("a.rhai"), GOOD).expect("write");
    std::fs::write(path("b.rhai"), r#"rule("b", #{ on: "x/#", when: |e| true });"#).expect("write");
    let mut files = files(dir.path());
    assert_eq!(names(&files.scan(Timestamp(0)).expect("scan")), ["a", "b"]);

    // b now declares `a` too: b is refused whole and its previous version runs.
    let clashing = "rule(\"b\", #{ on: \"x/#\", when: |e| true });\nrule(\"c\", #{ on: \"y/#\", when: |e| true });\nrule(\"a\", #{ on: \"z/#\", when: |e| true });";
    std::fs::write(path("b.rhai"), clashing).expect("write");
    let scan = files.scan(Timestamp(1)).expect("scan");
    assert_eq!(names(&scan), ["a", "b"], "not c: the later file fails whole");
    let errors: Vec<&ScanError> = scan.errors.iter().collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].message.contains("b.rhai:3:1") && errors[0].message.contains("already declared"), "{errors:?}");
    assert!(errors[0].previous_kept, "{errors:?}");

    // `check` (the tools' loader) says the same of the same directory from scratch: the
    // later file is an error with its position, and none of it loads.
    let loaded = load(Arc::new(Sandbox::new(Limits::default())), dir.path()).expect("loads");
    let loaded_names: Vec<&str> = loaded.rules.iter().map(|r| &*r.name).collect();
    assert_eq!(loaded_names, ["a"], "at first load the later file has no previous version");
    assert_eq!(loaded.errors.len(), 1, "{:?}", loaded.errors);
    assert_eq!((loaded.errors[0].line, loaded.errors[0].col), (3, 1));
    assert!(loaded.errors[0].file.ends_with("b.rhai"));

    // The clash goes (a renames its rule): b's latest version, unchanged on disk, runs.
    std::fs::write(path("a.rhai"), GOOD.replace("\"a\"", "\"a2\"")).expect("write");
    let scan = files.scan(Timestamp(2)).expect("scan");
    assert_eq!(names(&scan), ["a", "a2", "b", "c"]);
    assert!(scan.status.to_string().contains("b.rhai"), "{}", scan.status);
}

/// Issue 20, privacy: a key made of a pseudonym that rotates would be a new device every
/// period. A rule whose `key` reads such a field does not load, at its position; other
/// rules, and keys on other fields, do.
#[test]
fn a_rule_keyed_on_a_rotating_pseudonym_is_refused_at_its_position() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        dir.path().join("k.rhai"),
        "rule(\"ok\", #{ on: \"b/#\", key: |e| e.payload.site, when: |e| e.value > 1 });\n\
         rule(\"by-owner\", #{ on: \"b/#\", key: |e| e.payload.owner, when: |e| e.value > 1 });\n",
    )
    .expect("write");
    let against = Against { sinks: Vec::new(), rotating: vec!["owner".into()] };
    let mut keyed = files(dir.path()).against(against);
    let scan = keyed.scan(Timestamp(0)).expect("scan");
    assert_eq!(scan.errors.len(), 1, "{:?}", scan.errors);
    let message = &scan.errors[0].message;
    assert!(message.contains("k.rhai:2:"), "{message}");
    assert!(message.contains("`key` reads `owner`"), "{message}");

    let mut fixed = files(dir.path()).against(Against { sinks: Vec::new(), rotating: vec!["badge".into()] });
    let scan = fixed.scan(Timestamp(0)).expect("scan");
    assert!(scan.errors.is_empty(), "{:?}", scan.errors);
    assert_eq!(scan.rules.len(), 2);
}
