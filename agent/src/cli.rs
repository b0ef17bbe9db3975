//! The command line, as clap reads it: the subcommands, their arguments and their help.

use crate::state_cli::StateAction;
use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::time::Duration;
use tracing_subscriber::filter::Targets;

/// Complex-event processing for IoT gateways: MQTT sensor messages in, Rhai rules,
/// CloudEvents out.
#[derive(Debug, Parser)]
#[command(name = "edgewatch", version, about)]
pub(crate) struct Cli {
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "EDGEWATCH_LOG_FORMAT")]
    pub(crate) log_format: LogFormat,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the agent with a configuration file.
    Run {
        /// The TOML configuration.
        #[arg(long, short, env = "EDGEWATCH_CONFIG")]
        config: PathBuf,
    },
    /// Run a simulated fleet and the shipped rules on a broker, printing the events.
    ///
    /// Everything stays under a private topic tree (edgewatch-demo/<nonce>/), so a broker
    /// shared with an agent in production is safe to use.
    Demo {
        /// The broker: mqtt://host:port. Default: an embedded one (source builds), or
        /// mqtt://127.0.0.1:1883 (the packages, which leave the embedded broker out).
        #[arg(long)]
        broker: Option<String>,
        /// How long to run.
        #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
        duration: Duration,
        /// Simulated devices.
        #[arg(long, default_value_t = 20)]
        devices: usize,
        /// Rules directory (default: ./rules if present, else the built-in rules).
        #[arg(long)]
        rules: Option<PathBuf>,
        /// Seed of the simulated fleet.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Serve the console here during the demo (another port when it is taken), or `off`.
        #[arg(long, default_value = "127.0.0.1:9899", value_parser = console_addr)]
        console: ConsoleAddr,
    },
    /// Compile rule files and report errors as file:line:col; exit 1 on any error.
    Check {
        /// A rule file or a directory of them.
        path: PathBuf,
        /// Also check the rules against this configuration: the sinks they name (`notify`,
        /// `act`) and the fields their `key` reads (`privacy`).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Run the golden tests of a rules directory (<dir>/tests/<case>/in.jsonl -> out.jsonl).
    Test {
        /// The rules directory.
        #[arg(default_value = "rules")]
        path: PathBuf,
        /// Write the actual output as the expected output.
        #[arg(long)]
        bless: bool,
    },
    /// Look at, export or import the agent's durable state (with the agent stopped).
    State {
        #[command(subcommand)]
        action: StateAction,
        /// The agent's configuration (for the state directory).
        #[arg(long, short, env = "EDGEWATCH_CONFIG", global = true)]
        config: Option<PathBuf>,
    },
    /// Print a series' history, a row per period: start, count, avg, min, max, stddev, first,
    /// last. Reads the files only: works while the agent runs.
    History {
        /// The series' key (usually the device).
        key: String,
        /// The field.
        field: String,
        /// From: a duration before now (7d, 90m) or a UTC time (2026-12-04T10:00:00Z).
        #[arg(long, default_value = "24h")]
        since: String,
        /// Until (excluded), like --since. Default: now.
        #[arg(long)]
        until: Option<String>,
        /// fine (1m) or coarse (1h).
        #[arg(long, default_value = "fine", value_parser = edgewatch::history::parse_resolution)]
        resolution: edgewatch::history::Resolution,
        /// csv or json (a JSON object per line).
        #[arg(long, default_value = "csv")]
        format: edgewatch::history::Format,
        /// The agent's configuration (for the state directory).
        #[arg(long, short, env = "EDGEWATCH_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Compare a candidate rule set with the running one (or --baseline) over the same
    /// inputs: the journal's (--since) or a recording's (--events). Per rule: events on each
    /// side, the first differences, the keys that differ. Never touches the agent's state.
    Backtest(crate::journal_cli::BacktestArgs),
    /// The audit trail: what was done to the agent (starts, reloads, alarm commands, state
    /// export and import), hash-chained. `audit verify` checks the chain.
    Audit(crate::audit_cli::AuditArgs),
    /// One composite event explained: the event, the rule version that decided it and when
    /// it was loaded, when it was published and acknowledged upstream, its causes (with the
    /// input messages the journal holds) and its parents. Works beside a running agent.
    Trace {
        /// The event's id, or the 16 hex digits of a reference from `edgewatchcauses`.
        id: String,
        /// text, or json (one object, the parents nested).
        #[arg(long, value_enum, default_value = "text")]
        format: crate::audit_cli::Format,
        /// The agent's configuration (for the state directory).
        #[arg(long, short, env = "EDGEWATCH_CONFIG")]
        config: Option<PathBuf>,
    },
    /// The input journal: export a time range as a recording.
    Journal {
        #[command(subcommand)]
        action: crate::journal_cli::JournalAction,
        /// The agent's configuration (for the state directory).
        #[arg(long, short, env = "EDGEWATCH_CONFIG", global = true)]
        config: Option<PathBuf>,
    },
    /// Run recorded events through rules under virtual time; print composite events as JSON lines.
    Replay {
        /// A rules directory or one rule file.
        #[arg(long)]
        rules: PathBuf,
        /// The recording (JSON lines, as `firmware-sim --record` and `journal export` write;
        /// `-` for stdin). Read and answered line by line.
        #[arg(long)]
        events: PathBuf,
    },
}

/// `RUST_LOG` as `Targets`: empty directives are skipped (`info,` means `info`, not `error`),
/// and span or field filters are refused rather than read as a target named `[span]`.
/// `edgewatch demo --console`: an address, or `off`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConsoleAddr(pub(crate) Option<std::net::SocketAddr>);

fn console_addr(text: &str) -> Result<ConsoleAddr, String> {
    if text == "off" {
        return Ok(ConsoleAddr(None));
    }
    text.parse()
        .map(|a| ConsoleAddr(Some(a)))
        .map_err(|_| format!("`{text}`: an address and port like 127.0.0.1:9899, or off"))
}

pub(crate) fn rust_log(spec: &str) -> Result<Targets, String> {
    let directives: Vec<&str> = spec.split(',').map(str::trim).filter(|d| !d.is_empty()).collect();
    if let Some(d) = directives.iter().find(|d| d.contains(['[', '{'])) {
        return Err(format!("`{d}`: span and field filters are not supported"));
    }
    directives.join(",").parse::<Targets>().map_err(|e| e.to_string())
}
