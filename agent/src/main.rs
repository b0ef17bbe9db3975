//! The `edgewatch` command: its arguments (`cli`), logging, the runtime, and each subcommand.

mod audit_cli;
mod cli;
mod journal_cli;
mod signals;
mod state_cli;

use anyhow::Context;
use clap::Parser;
use cli::{Cli, Command, LogFormat, rust_log};
use edgewatch::{Agent, AgentError, Config};
use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// Logs to stderr, filtered by `RUST_LOG` when it is set: comma-separated `target=level`
/// directives and a bare default level (`info,edgewatch::agent=debug`). Span and field
/// filters are not supported (tracing-subscriber's `Targets`, not its `EnvFilter`: the regex
/// engine that one needs is a few hundred KB of the gateway binary).
fn init_logging(format: LogFormat, default: &str) {
    let fallback = || default.parse::<Targets>().unwrap_or_else(|_| Targets::new().with_default(LevelFilter::WARN));
    let mut rejected = None;
    let filter = match std::env::var("RUST_LOG") {
        Ok(spec) if !spec.trim().is_empty() => rust_log(&spec).unwrap_or_else(|error| {
            rejected = Some((spec, error));
            fallback()
        }),
        _ => fallback(),
    };
    // Colour only on a terminal, and never with `NO_COLOR` set (to anything but empty,
    // https://no-color.org): a file, a pipe or the journal gets plain text.
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    let ansi = !no_color && std::io::stderr().is_terminal();
    let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(ansi);
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        LogFormat::Text => registry.with(layer).init(),
        LogFormat::Json => registry.with(layer.json()).init(),
    }
    if let Some((spec, error)) = rejected {
        tracing::warn!(rust_log = %spec, %error, default, "RUST_LOG not understood (only `target=level` directives); logging at the default.");
    }
}

/// No transparent huge pages for this process (and the backtests it starts). Debian's arm64
/// kernel turns them on for every mapping (`CONFIG_TRANSPARENT_HUGEPAGE_ALWAYS`): each thread's
/// stack and each allocator arena the agent touches then takes a whole 2 MiB page. Measured on
/// that kernel (`.ci/arm-idle-rss`), idle RSS was 35 MB with them and 9 MB without. The
/// process-wide flag is set before any thread starts; a kernel without THP refuses it harmlessly.
fn small_pages() {
    #[cfg(target_os = "linux")]
    let _ = rustix::thread::disable_transparent_huge_pages(true);
}

fn main() -> ExitCode {
    small_pages();
    let cli = Cli::parse();
    let quiet_default = if cfg!(feature = "embedded-broker") { "warn,rumqttd=off" } else { "warn" };
    match cli.command {
        Command::Run { config: path } => {
            init_logging(cli.log_format, "info,rumqttc=warn");
            let config = match Config::load(&path) {
                Ok(c) => c,
                Err(error) => {
                    eprintln!("edgewatch: configuration rejected: {error}");
                    return ExitCode::from(2);
                }
            };
            let result = agent_runtime(config.threads).and_then(|rt| rt.block_on(run(config)));
            // A rules directory that cannot be read is the configuration's fault: exit 2.
            if let Some(AgentError::RulesDir(error)) = result.as_ref().err().and_then(|e| e.downcast_ref()) {
                eprintln!("edgewatch: configuration rejected: {}: `rules.dir`: {error}", origin(&path, "rules.dir"));
                return ExitCode::from(2);
            }
            report(result)
        }
        Command::Demo { broker, duration, devices, rules, seed, console } => {
            init_logging(cli.log_format, quiet_default);
            let opts = edgewatch::demo::DemoOptions { broker, duration, devices, rules, seed, console: console.0 };
            report(runtime().and_then(|rt| {
                rt.block_on(async {
                    let mut out = std::io::stdout();
                    edgewatch::demo::run(opts, &mut out, signals::shutdown().cancelled_owned())
                        .await
                        .context("demo failed")?;
                    Ok(())
                })
            }))
        }
        Command::Test { path, bless } => {
            init_logging(cli.log_format, quiet_default);
            match golden(&path, bless) {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::from(1),
                Err(e) => report(Err(e)),
            }
        }
        Command::State { action, config } => {
            init_logging(cli.log_format, quiet_default);
            let config = match state_config("state", config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            report(runtime().and_then(|rt| rt.block_on(state_cli::state_command(action, config))))
        }
        Command::History { key, field, since, until, resolution, format, config } => {
            init_logging(cli.log_format, quiet_default);
            let config = match state_config("history", config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let now = edgewatch_engine::Timestamp::from_system_time(std::time::SystemTime::now()).millis();
            let (since, until) = match edgewatch::history::parse_range(&since, until.as_deref(), now) {
                Ok(range) => range,
                Err(e) => {
                    eprintln!("edgewatch: {e}");
                    return ExitCode::from(2);
                }
            };
            let dir = edgewatch::history::dir_in(&config.state_dir);
            let series = (key.as_str(), field.as_str(), resolution);
            let printed = edgewatch::history::show(&dir, series, (since, until), format, &mut std::io::stdout().lock());
            match printed {
                Ok(0) => {
                    let (from, to) = (edgewatch_engine::Timestamp(since), edgewatch_engine::Timestamp(until));
                    eprintln!(
                        "edgewatch: no {} history of {key} {field} from {from} to {to} in {}",
                        resolution.as_str(),
                        dir.display()
                    );
                }
                Ok(_) => {}
                Err(e) => return report(Err(e.into())),
            }
            ExitCode::SUCCESS
        }
        Command::Backtest(args) => {
            init_logging(cli.log_format, quiet_default);
            journal_cli::backtest(args).unwrap_or_else(|e| report(Err(e)))
        }
        Command::Audit(args) => {
            init_logging(cli.log_format, quiet_default);
            let config = match state_config("audit", args.config.clone()) {
                Ok(c) => c,
                Err(code) => return code,
            };
            audit_cli::run(&args, &config).unwrap_or_else(|e| report(Err(e)))
        }
        Command::Trace { id, format, config } => {
            init_logging(cli.log_format, quiet_default);
            let config = match state_config("trace", config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            audit_cli::trace(&id, format, &config).unwrap_or_else(|e| report(Err(e)))
        }
        Command::Journal { action, config } => {
            init_logging(cli.log_format, quiet_default);
            let config = match state_config("journal", config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            journal_cli::export(action, &config).unwrap_or_else(|e| report(Err(e)))
        }
        Command::Replay { rules, events } => {
            init_logging(cli.log_format, quiet_default);
            report(replay(&rules, &events))
        }
        Command::Check { path, config } => {
            init_logging(cli.log_format, quiet_default);
            let sinks = match config.map(|c| Config::load(&c)) {
                None => None,
                Some(Ok(c)) => Some(edgewatch::reload::Against::config(&c)),
                Some(Err(error)) => {
                    eprintln!("edgewatch: configuration rejected: {error}");
                    return ExitCode::from(2);
                }
            };
            match check(&path, sinks) {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::from(1),
                Err(e) => report(Err(e)),
            }
        }
    }
}

/// The configuration a command that reads the state directory names; exit 2 without one.
fn state_config(command: &str, path: Option<PathBuf>) -> Result<Config, ExitCode> {
    let Some(path) = path else {
        eprintln!("edgewatch: `{command}` needs --config (or EDGEWATCH_CONFIG) to find the state directory");
        return Err(ExitCode::from(2));
    };
    Config::load(&path).map_err(|error| {
        eprintln!("edgewatch: configuration rejected: {error}");
        ExitCode::from(2)
    })
}

/// Where the key `key` (`rules.dir`) of the configuration came from, as configuration errors
/// name it: its environment variable when that is set, else the file.
fn origin(file: &std::path::Path, key: &str) -> String {
    let var = format!("{}{}", edgewatch::config::ENV_PREFIX, key.replace('.', "__").to_ascii_uppercase());
    if std::env::var_os(&var).is_some() { format!("environment variable {var}") } else { file.display().to_string() }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the async runtime")
}

/// The running agent's runtime: `agent.threads = 1` (the default) runs every task on this
/// thread. Messages then pass from task to task without waking another thread: at 10k msg/s
/// that took the agent from 46 to 41 µs of CPU per message (docs/benchmarks.md). sled keeps
/// its own flusher threads either way.
fn agent_runtime(threads: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut builder = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(threads);
        b
    };
    builder.enable_all().build().context("cannot start the async runtime")
}

fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("edgewatch: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn run(config: Config) -> anyhow::Result<()> {
    let agent = Agent::new(config).await.context("cannot start the agent")?;
    agent.run(signals::shutdown(), signals::reloads()).await.context("agent failed")?;
    Ok(())
}

/// Compiles every rule file under `path`; prints `file:line:col: message` per error.
fn check(path: &std::path::Path, against: Option<edgewatch::reload::Against>) -> anyhow::Result<bool> {
    let sandbox = std::sync::Arc::new(edgewatch_engine::Sandbox::default());
    let loaded = edgewatch::reload::load_checked(sandbox, path, against)?;
    for error in &loaded.errors {
        println!("{error}");
    }
    println!(
        "{}: {} file(s), {} rule(s), {} error(s)",
        path.display(),
        loaded.files,
        loaded.rules.len(),
        loaded.errors.len()
    );
    Ok(loaded.errors.is_empty())
}

/// `edgewatch test`: runs every golden case; prints a diff per failure.
fn golden(rules: &std::path::Path, bless: bool) -> anyhow::Result<bool> {
    let cases = edgewatch::replay::cases(rules);
    if cases.is_empty() {
        anyhow::bail!(
            "no golden cases under {}/tests/ (each is a directory with in.jsonl and out.jsonl)",
            rules.display()
        );
    }
    let (mut passed, mut failed) = (0, 0);
    for case in &cases {
        let result = edgewatch::replay::run_case(rules, case, bless)?;
        match result.diff {
            None => {
                passed += 1;
                println!("{} {}", if bless { "blessed" } else { "ok     " }, result.name);
            }
            Some(diff) => {
                failed += 1;
                println!("FAILED  {}\n{diff}", result.name);
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    Ok(failed == 0)
}

/// `edgewatch replay`: streams the recording (`-` for stdin) and its output, so a recording
/// of any length runs in the engine's memory alone.
fn replay(rules: &std::path::Path, events: &std::path::Path) -> anyhow::Result<()> {
    use std::io::Write;
    let mut engine = edgewatch::replay::engine_for(rules, edgewatch::replay::default_engine_config())?;
    let input = journal_cli::recording_reader(events)?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut outputs = edgewatch_engine::Outputs::default();
    let mut failed = None;
    let mut reader = edgewatch::replay::Reader::default();
    for step in edgewatch::replay::Lines::new(input, &events.display().to_string()) {
        let step = step?;
        reader.each(&step, |input| {
            edgewatch::replay::feed(&mut engine, step.t, input, &mut outputs);
            edgewatch::replay::output_lines(step.t, input, &outputs, true, |line| {
                if failed.is_none() {
                    failed = writeln!(out, "{line}").err();
                }
            });
        });
        if let Some(e) = failed.take() {
            return Err(e.into());
        }
    }
    out.flush()?;
    Ok(())
}
