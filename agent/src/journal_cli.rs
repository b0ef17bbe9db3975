//! `edgewatch backtest` and `edgewatch journal export`: reading the input journal (or a
//! recording) while the agent runs, never its state.

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use edgewatch::Config;
use edgewatch::backtest::Backtest;
use edgewatch_engine::Engine;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, Subcommand)]
pub enum JournalAction {
    /// Write the journaled inputs of a time range as a recording (JSON lines) on stdout, for
    /// `edgewatch replay`, `backtest --events` or a golden test's in.jsonl.
    Export {
        /// From: a duration before now (1h, 90m) or a UTC time (2026-12-04T10:00:00Z).
        #[arg(long, default_value = "1h")]
        since: String,
        /// Until (excluded), like --since. Default: now.
        #[arg(long)]
        until: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ReportFormat {
    Table,
    Json,
}

/// `edgewatch backtest`'s arguments.
#[derive(Debug, Args)]
pub struct BacktestArgs {
    /// The candidate rules: a directory or one rule file.
    #[arg(long)]
    rules: PathBuf,
    /// The baseline rules. Default: the rules the agent runs (`rules.dir` of --config).
    #[arg(long)]
    baseline: Option<PathBuf>,
    /// Inputs from the journal since: a duration before now (24h, 90m) or a UTC time.
    #[arg(long, default_value = "24h", conflicts_with = "events")]
    since: String,
    /// Until (excluded), like --since. Default: now.
    #[arg(long, conflicts_with = "events")]
    until: Option<String>,
    /// Inputs from a recording (JSON lines, `-` for stdin) instead of the journal.
    #[arg(long)]
    events: Option<PathBuf>,
    /// Start both rule sets from this state export (`edgewatch state export`), not empty.
    #[arg(long)]
    state: Option<PathBuf>,
    /// table or json.
    #[arg(long, value_enum, default_value = "table")]
    format: ReportFormat,
    /// Differing events listed per rule.
    #[arg(long, default_value_t = 5)]
    show: usize,
    /// Exit with 1 when the candidate differs from the baseline.
    #[arg(long)]
    exit_code: bool,
    /// The agent's configuration: the journal, the baseline rules, the engine settings.
    #[arg(long, short, env = "EDGEWATCH_CONFIG")]
    config: Option<PathBuf>,
    /// Most memory this backtest may take, in MiB (its data, beyond which allocations fail
    /// and it stops). The console runs backtests with a limit, beside the agent.
    #[arg(long)]
    max_memory_mb: Option<u64>,
    /// Most CPU seconds this backtest may take.
    #[arg(long)]
    max_cpu_s: Option<u64>,
}

fn now() -> i64 {
    edgewatch::wall_clock().millis()
}

/// `edgewatch journal export`.
pub fn export(action: JournalAction, config: &Config) -> anyhow::Result<ExitCode> {
    let JournalAction::Export { since, until } = action;
    let range = match edgewatch::history::parse_range(&since, until.as_deref(), now()) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("edgewatch: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    let dir = edgewatch::journal::dir_in(&config.state_dir);
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let report = edgewatch::journal::export(&dir, range, &mut out)?;
    std::io::Write::flush(&mut out)?;
    for d in &report.damaged {
        eprintln!("edgewatch: damaged journal skipped: {d}");
    }
    eprintln!("edgewatch: {} inputs from {} segment(s) in {}", report.records, report.segments, dir.display());
    if report.segments == 0 && config.journal.is_none() {
        eprintln!("edgewatch: the journal is off: turn it on with `[journal] enabled = true`");
    }
    Ok(ExitCode::SUCCESS)
}

/// An engine for one side: its rules (every compile error printed as `file:line:col`, as
/// `check` does, before anything runs), the agent's engine settings, and the start state.
fn side(
    rules: &Path,
    config: Option<&Config>,
    state: &[(edgewatch_engine::Touched, Vec<u8>)],
) -> Result<Engine, ExitCode> {
    let engine_config = config.map_or_else(edgewatch::replay::default_engine_config, |c| c.engine.clone());
    let mut engine = match edgewatch::replay::engine_for(rules, engine_config) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("{e}");
            eprintln!("edgewatch: {}: rules do not compile; nothing was run", rules.display());
            return Err(ExitCode::from(1));
        }
    };
    let refused = state.iter().filter(|(what, bytes)| engine.import(what, bytes).is_err()).count();
    if refused > 0 {
        eprintln!("edgewatch: {}: {refused} saved state(s) did not fit these rules and start empty", rules.display());
    }
    Ok(engine)
}

/// `edgewatch backtest`.
pub fn backtest(args: BacktestArgs) -> anyhow::Result<ExitCode> {
    if let Some(mb) = args.max_memory_mb {
        let bytes = mb.saturating_mul(1024 * 1024);
        rlimit::setrlimit(rlimit::Resource::DATA, bytes, bytes).context("--max-memory-mb")?;
    }
    if let Some(s) = args.max_cpu_s {
        rlimit::setrlimit(rlimit::Resource::CPU, s, s).context("--max-cpu-s")?;
    }
    let config = match &args.config {
        Some(path) => match Config::load(path) {
            Ok(c) => Some(c),
            Err(error) => {
                eprintln!("edgewatch: configuration rejected: {error}");
                return Ok(ExitCode::from(2));
            }
        },
        None => None,
    };
    let baseline = match (&args.baseline, &config) {
        (Some(b), _) => b.clone(),
        (None, Some(c)) => c.rules_dir.clone(),
        (None, None) => {
            eprintln!(
                "edgewatch: `backtest` needs --baseline, or --config (or EDGEWATCH_CONFIG) for the agent's rules"
            );
            return Ok(ExitCode::from(2));
        }
    };
    let state = match &args.state {
        Some(file) => edgewatch::store::read_snapshot(file)?.engine_state(),
        None => Vec::new(),
    };
    let (candidate, base) = match (side(&args.rules, config.as_ref(), &state), side(&baseline, config.as_ref(), &state))
    {
        (Ok(c), Ok(b)) => (c, b),
        (Err(code), _) | (_, Err(code)) => return Ok(code),
    };
    let bt = Backtest::new(base, candidate, args.show);
    let report = match (&args.events, &config) {
        (Some(events), _) => run_recording(bt, events)?,
        (None, Some(config)) => {
            let range = match edgewatch::history::parse_range(&args.since, args.until.as_deref(), now()) {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("edgewatch: {e}");
                    return Ok(ExitCode::from(2));
                }
            };
            let dir = edgewatch::journal::dir_in(&config.state_dir);
            let (report, read) =
                edgewatch::backtest::run_journal(bt, &dir, range, (&config.decode_limits(), &config.sparkplug.limits))?;
            for d in &read.damaged {
                eprintln!("edgewatch: damaged journal skipped: {d}");
            }
            if read.segments == 0 {
                eprintln!("edgewatch: no journal in {} (is `[journal] enabled = true`?)", dir.display());
            }
            report
        }
        (None, None) => {
            eprintln!(
                "edgewatch: `backtest` reads the journal with --config (or EDGEWATCH_CONFIG), or a recording with --events"
            );
            return Ok(ExitCode::from(2));
        }
    };
    match args.format {
        ReportFormat::Table => print!("{}", report.table()),
        ReportFormat::Json => println!("{}", serde_json::to_string_pretty(&report)?),
    }
    Ok(if args.exit_code && !report.identical { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

/// A recording file, or stdin for `-`, buffered.
pub fn recording_reader(path: &Path) -> anyhow::Result<Box<dyn std::io::BufRead>> {
    if path.as_os_str() == "-" {
        return Ok(Box::new(std::io::BufReader::new(std::io::stdin())));
    }
    let file = std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(Box::new(std::io::BufReader::with_capacity(1 << 16, file)))
}

fn run_recording(mut bt: Backtest, events: &Path) -> anyhow::Result<edgewatch::backtest::Report> {
    let input = recording_reader(events)?;
    let mut reader = edgewatch::replay::Reader::default();
    for step in edgewatch::replay::Lines::new(input, &events.display().to_string()) {
        let step = step?;
        reader.each(&step, |input| bt.step(step.t, input));
    }
    Ok(bt.finish(None))
}
