use super::*;

fn log_with(n: u64, limits: AuditLimits) -> (tempfile::TempDir, AuditLog) {
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut log, opened) = AuditLog::open(dir.path(), limits).expect("opens");
    assert_eq!(opened, Opened::default());
    for i in 1..=n {
        let e =
            log.append(1_000 * i as i64, "reload", serde_json::json!({ "trigger": "signal", "i": i })).expect("append");
        assert_eq!(e.seq, i);
    }
    (dir, log)
}

fn only_file(dir: &Path) -> PathBuf {
    let files = segments(dir).expect("files");
    assert_eq!(files.len(), 1, "{files:?}");
    files[0].1.clone()
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path).expect("read").lines().map(str::to_owned).collect()
}

fn write_lines(path: &Path, lines: &[String]) {
    std::fs::write(path, lines.iter().map(|l| format!("{l}\n")).collect::<String>()).expect("write");
}

#[test]
fn an_untouched_log_verifies_and_reads_back_in_order() {
    let (dir, _log) = log_with(5, AuditLimits::default());
    let v = verify(dir.path()).expect("verify");
    assert_eq!((v.entries, v.first, v.last), (5, Some(1), Some(5)));
    assert!(v.problems.is_empty(), "{:?}", v.problems);
    let entries = read(dir.path(), 3_000).expect("read");
    assert_eq!(entries.iter().map(|e| e.seq).collect::<Vec<_>>(), [3, 4, 5]);
    assert_eq!(entries[0].prev, read(dir.path(), 0).expect("read")[1].hash, "each names the one before");
    // Reopened, the chain goes on from where it was.
    let (mut log, opened) = AuditLog::open(dir.path(), AuditLimits::default()).expect("reopens");
    assert_eq!(opened, Opened::default());
    assert_eq!(log.append(9_000, "start", serde_json::json!({})).expect("append").seq, 6);
    assert!(verify(dir.path()).expect("verify").problems.is_empty());
}

#[test]
fn a_changed_byte_in_an_old_entry_is_found() {
    let (dir, _log) = log_with(5, AuditLimits::default());
    let path = only_file(dir.path());
    let mut l = lines(&path);
    l[1] = l[1].replace("\"signal\"", "\"signaL\"");
    write_lines(&path, &l);
    let v = verify(dir.path()).expect("verify");
    assert_eq!(v.problems.len(), 1, "{:?}", v.problems);
    assert!(v.problems[0].contains(":2: entry 2 was changed"), "{:?}", v.problems);
}

#[test]
fn a_changed_entry_with_its_hash_recomputed_breaks_the_next_link() {
    let (dir, _log) = log_with(5, AuditLimits::default());
    let path = only_file(dir.path());
    let mut l = lines(&path);
    let mut e: Entry = serde_json::from_str(&l[1]).expect("entry");
    e.data["trigger"] = "control".into();
    e.hash = e.digest();
    l[1] = e.line();
    write_lines(&path, &l);
    let v = verify(dir.path()).expect("verify");
    assert!(v.problems.iter().any(|p| p.contains("entry 3 does not follow")), "{:?}", v.problems);
}

#[test]
fn a_removed_or_reordered_entry_is_found() {
    let (dir, _log) = log_with(5, AuditLimits::default());
    let path = only_file(dir.path());
    let original = lines(&path);

    let mut removed = original.clone();
    removed.remove(2);
    write_lines(&path, &removed);
    let v = verify(dir.path()).expect("verify");
    assert!(v.problems.iter().any(|p| p.contains("entry 4 follows entry 2")), "{:?}", v.problems);

    let mut swapped = original.clone();
    swapped.swap(1, 2);
    write_lines(&path, &swapped);
    assert!(!verify(dir.path()).expect("verify").problems.is_empty());

    // The last entry, or the first: HEAD knows both ends.
    write_lines(&path, &original[..4]);
    let v = verify(dir.path()).expect("verify");
    assert!(v.problems.iter().any(|p| p.contains("HEAD says 5")), "{:?}", v.problems);
    write_lines(&path, &original[1..]);
    let v = verify(dir.path()).expect("verify");
    assert!(v.problems.iter().any(|p| p.contains("removed at the start")), "{:?}", v.problems);
}

#[test]
fn files_rotate_within_the_budget_and_what_is_kept_still_verifies() {
    let limits = AuditLimits { max_bytes: 64 * 1024 };
    let (dir, log) = log_with(2_000, limits);
    let files = segments(dir.path()).expect("files");
    let total: u64 = files.iter().map(|f| f.2).sum();
    assert!(files.len() > 2 && total <= limits.max_bytes, "{} files, {total} bytes", files.len());
    let v = verify(dir.path()).expect("verify");
    assert!(v.problems.is_empty(), "{:?}", v.problems);
    assert_eq!(v.last, Some(2_000));
    assert!(v.first.is_some_and(|f| f > 1), "the oldest went: {:?}", v.first);
    assert_eq!(log.last_seq(), 2_000);
    // A whole old file removed by hand is not a rotation: HEAD says where the log begins.
    std::fs::remove_file(&files[0].1).expect("remove");
    let v = verify(dir.path()).expect("verify");
    assert!(v.problems.iter().any(|p| p.contains("removed at the start")), "{:?}", v.problems);
}

#[test]
fn a_half_written_last_line_is_cut_at_open_and_the_chain_goes_on() {
    let (dir, log) = log_with(3, AuditLimits::default());
    drop(log);
    let path = only_file(dir.path());
    let mut bytes = std::fs::read(&path).expect("read");
    bytes.extend_from_slice(b"{\"data\":{\"tri");
    std::fs::write(&path, &bytes).expect("write");
    assert!(verify(dir.path()).expect("verify").problems.iter().any(|p| p.contains("half-written")));
    let (mut log, opened) = AuditLog::open(dir.path(), AuditLimits::default()).expect("reopens");
    assert_eq!(opened.torn_bytes, 13);
    assert_eq!(log.append(5_000, "start", serde_json::json!({})).expect("append").seq, 4);
    let v = verify(dir.path()).expect("verify");
    assert!(v.problems.is_empty(), "{:?}", v.problems);
}

#[test]
fn what_a_start_queues_is_read_from_the_files_that_hold_it() {
    let limits = AuditLimits { max_bytes: 64 * 1024 };
    let (dir, mut log) = log_with(300, limits);
    assert!(segments(dir.path()).expect("files").len() > 3);
    let after = read_after(dir.path(), Some(295)).expect("read");
    assert_eq!(after.iter().map(|e| e.seq).collect::<Vec<_>>(), [296, 297, 298, 299, 300]);
    assert!(read_after(dir.path(), Some(300)).expect("read").is_empty());
    // Without a mark: what came after the last start.
    log.append(400_000, "start", serde_json::json!({})).expect("append");
    log.append(401_000, "state_export", serde_json::json!({})).expect("append");
    let since_start = read_after(dir.path(), None).expect("read");
    assert_eq!(since_start.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>(), ["state_export"]);
}
