//! `POST /api/v1/backtest`: a candidate rule file over the input journal, beside the rules
//! the agent runs, by `edgewatch backtest` in a child process with its own memory and CPU
//! limits, so that a heavy one cannot take the agent past its unit's `MemoryMax`.
//!
//! ```text
//! rules (text) ─▶ <temp>/candidate.rhai ─▶ edgewatch backtest --rules ... --config <the agent's>
//!                  --format json --max-memory-mb 256 --max-cpu-s 60   (one at a time, 120 s at most)
//!   exit 0 ─▶ its report    exit 1, 2 ─▶ what it said (compile errors at candidate.rhai:line:col)
//!   killed (a limit) ─▶ said so
//! ```

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The child's memory (its data, in MiB) and CPU seconds.
const MEMORY_MB: u64 = 256;
const CPU_S: u64 = 60;
/// Killed past this, whatever it is doing.
const WALL: Duration = Duration::from_secs(120);
/// Most report bytes read back.
const MAX_REPORT: u64 = 8 << 20;

/// What runs a backtest: the program (this `edgewatch`) and the agent's configuration file.
#[derive(Debug, Clone)]
pub struct Backtester {
    pub program: PathBuf,
    pub config: PathBuf,
}

/// Why a backtest gave no report.
#[derive(Debug, thiserror::Error)]
pub enum BacktestError {
    /// It refused the input: the candidate does not compile, a bad time range. What it said.
    #[error("{0}")]
    Refused(String),
    /// A limit stopped it, or it could not run.
    #[error("{0}")]
    Failed(String),
}

impl Backtester {
    /// This process's program when it is `edgewatch` (an embedding program, or a test binary,
    /// cannot run `backtest`), `EDGEWATCH_PROGRAM` if set, and the configuration `file`.
    pub fn find(file: Option<&Path>) -> Option<Backtester> {
        let program = match std::env::var_os("EDGEWATCH_PROGRAM") {
            Some(p) => PathBuf::from(p),
            None => std::env::current_exe().ok().filter(|p| p.file_stem().is_some_and(|s| s == "edgewatch"))?,
        };
        Some(Backtester { program, config: file?.to_owned() })
    }

    /// Runs `rules` over the journal's inputs in `since..until` (as `--since`/`--until` take
    /// them); blocks (call it on the blocking pool).
    pub fn run(&self, rules: &str, since: &str, until: Option<&str>) -> Result<serde_json::Value, BacktestError> {
        let failed = |what: &str, e: std::io::Error| BacktestError::Failed(format!("{what}: {e}"));
        let dir = tempfile::tempdir().map_err(|e| failed("temp dir", e))?;
        let candidate = dir.path().join("candidate.rhai");
        std::fs::write(&candidate, rules).map_err(|e| failed("candidate", e))?;
        let (out, err) = (dir.path().join("report.json"), dir.path().join("said.txt"));
        let file = |p: &Path| std::fs::File::create(p).map_err(|e| failed("output", e));
        let mut cmd = Command::new(&self.program);
        cmd.arg("backtest").arg("--rules").arg(&candidate).arg("--config").arg(&self.config);
        cmd.args(["--since", since, "--format", "json"]);
        if let Some(until) = until {
            cmd.args(["--until", until]);
        }
        cmd.args(["--max-memory-mb", &MEMORY_MB.to_string(), "--max-cpu-s", &CPU_S.to_string()]);
        let mut child = cmd
            .env("RUST_LOG", "error")
            .stdin(Stdio::null())
            .stdout(file(&out)?)
            .stderr(file(&err)?)
            .spawn()
            .map_err(|e| failed(&format!("cannot run {}", self.program.display()), e))?;
        let started = Instant::now();
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if started.elapsed() > WALL => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(BacktestError::Failed(format!("stopped after {WALL:?}")));
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(50)),
                Err(e) => return Err(failed("waiting", e)),
            }
        };
        // Messages name the temporary file: say `candidate.rhai` instead.
        let said = std::fs::read_to_string(&err)
            .unwrap_or_default()
            .replace(&candidate.display().to_string(), "candidate.rhai");
        let said: String = said.trim().chars().take(4096).collect();
        match status.code() {
            Some(0) => {
                let size = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
                if size > MAX_REPORT {
                    return Err(BacktestError::Failed(format!("the report is {size} bytes, over {MAX_REPORT}")));
                }
                let text = std::fs::read(&out).map_err(|e| failed("report", e))?;
                serde_json::from_slice(&text).map_err(|e| BacktestError::Failed(format!("the report is not JSON: {e}")))
            }
            Some(_) => Err(BacktestError::Refused(said)),
            None => Err(BacktestError::Failed(format!(
                "the backtest was stopped by its limits ({MEMORY_MB} MiB, {CPU_S} s of CPU){}",
                if said.is_empty() { String::new() } else { format!(": {said}") }
            ))),
        }
    }
}
