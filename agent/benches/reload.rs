//! Reload speed: a full scan of 1000 rule files, a rescan after one edit, and the time from
//! saving a file to the new rule being active in a running agent with 100 rule files.
//! `cargo bench -p edgewatch --bench reload` prints a markdown table.

use edgewatch::broker::EmbeddedBroker;
use edgewatch::reload::RuleFiles;
use edgewatch_e2e::{AgentToml, RunningAgent};
use edgewatch_engine::{Sandbox, Timestamp};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

fn rule(i: usize, v: usize) -> String {
    format!(
        "rule(\"r{i}\", #{{ on: \"sensors/{{device}}/t{i}\", window: #{{ size: \"60s\", filter: |e| e.value > 80.0 }}, \
         when: |e| e.window.count >= 3, emit: |e| #{{ v: {v}, n: e.window.count }} }});\n"
    )
}

fn write_rules(dir: &std::path::Path, n: usize) {
    std::fs::create_dir_all(dir).expect("dir");
    for i in 0..n {
        std::fs::write(dir.join(format!("r{i:04}.rhai")), rule(i, 0)).expect("write");
    }
}

fn main() {
    let mut rows: Vec<(String, String)> = Vec::new();

    // Full scan of 1000 files, then a rescan after one edit.
    let dir = tempfile::tempdir().expect("temp dir");
    write_rules(dir.path(), 1000);
    let mut files = RuleFiles::new(dir.path(), Default::default(), Arc::new(Sandbox::default()));
    let start = Instant::now();
    let scan = files.scan(Timestamp(0)).expect("scan");
    let full = start.elapsed();
    assert_eq!(scan.rules.len(), 1000);
    rows.push((
        "reload of 1000 rule files (first scan, all compiled)".into(),
        format!("{:.0} ms", full.as_secs_f64() * 1e3),
    ));
    std::fs::write(dir.path().join("r0500.rhai"), rule(500, 1)).expect("edit");
    let start = Instant::now();
    let scan = files.scan(Timestamp(1)).expect("scan");
    let one = start.elapsed();
    assert!(scan.changed);
    rows.push(("rescan of 1000 files after one edit".into(), format!("{:.1} ms", one.as_secs_f64() * 1e3)));

    // Save -> active in a running agent with 100 files.
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let broker = EmbeddedBroker::start().expect("broker");
    let latencies = rt.block_on(async {
        let rule_files: Vec<(String, String)> = (0..100).map(|i| (format!("r{i:04}.rhai"), rule(i, 0))).collect();
        let rule_refs: Vec<(&str, &str)> = rule_files.iter().map(|(n, t)| (n.as_str(), t.as_str())).collect();
        let text = AgentToml::new().id("reload").set("source.url", broker.url()).subscribe("sensors/#").to_string();
        let agent = RunningAgent::start(&text, &rule_refs).await;
        let stats = agent.stats.clone();
        let rules = agent.dir.path().join("rules");
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut latencies = Vec::new();
        for k in 0..40 {
            let before = stats.reloads.load(Relaxed);
            let start = Instant::now();
            std::fs::write(rules.join(format!("r{:04}.rhai", k % 100)), rule(k % 100, k + 1)).expect("save");
            let reloaded = async {
                while stats.reloads.load(Relaxed) == before {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            };
            tokio::time::timeout(Duration::from_secs(10), reloaded).await.expect("the reload happens");
            latencies.push(start.elapsed());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        agent.stop().await;
        latencies
    });
    let mut ms: Vec<f64> = latencies.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    ms.sort_by(f64::total_cmp);
    let pct = |p: f64| ms[((ms.len() as f64 * p) as usize).min(ms.len() - 1)];
    rows.push((
        "save -> new rule active, 100 rule files (40 saves)".into(),
        format!("p50 {:.0} ms, p99 {:.0} ms (includes the 200 ms debounce)", pct(0.5), pct(0.99)),
    ));

    println!("| case | result |");
    println!("|---|---|");
    for (c, r) in rows {
        println!("| {c} | {r} |");
    }
}
