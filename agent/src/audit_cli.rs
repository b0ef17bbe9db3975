//! `edgewatch audit [verify]`: list or verify the audit trail of a state directory; and
//! `edgewatch trace <id>`, which reads it with the event log and the journal. Both read
//! files only, so they work beside a running agent too.

use clap::{Args, Subcommand, ValueEnum};
use edgewatch::Config;
use std::process::ExitCode;

#[derive(Debug, Args)]
pub struct AuditArgs {
    #[command(subcommand)]
    pub action: Option<AuditAction>,
    /// From: a duration before now (7d, 90m) or a UTC time (2026-12-04T10:00:00Z). Default:
    /// everything kept.
    #[arg(long)]
    pub since: Option<String>,
    /// text (one line per entry) or json (each entry as stored, a JSON object per line).
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    /// The agent's configuration (for the state directory).
    #[arg(long, short, env = "EDGEWATCH_CONFIG", global = true)]
    pub config: Option<std::path::PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum AuditAction {
    /// Check the hash chain: every entry's hash, each link to the one before, no gap, no
    /// reordering, both ends. Exit 0 if intact, 1 if not (each break printed).
    Verify,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

/// Runs the command on `config`'s state directory.
pub fn run(args: &AuditArgs, config: &Config) -> anyhow::Result<ExitCode> {
    let dir = edgewatch::audit::dir_in(&config.state_dir);
    if let Some(AuditAction::Verify) = args.action {
        let v = edgewatch::audit::verify(&dir)?;
        for problem in &v.problems {
            println!("{problem}");
        }
        let range = match (v.first, v.last) {
            (Some(a), Some(b)) => format!("entries {a} to {b}"),
            _ => "no entries".to_owned(),
        };
        if v.problems.is_empty() {
            println!("{}: {} entries ({range}), chain intact", dir.display(), v.entries);
            return Ok(ExitCode::SUCCESS);
        }
        println!("{}: {} entries ({range}), {} problem(s)", dir.display(), v.entries, v.problems.len());
        return Ok(ExitCode::from(1));
    }
    let now = edgewatch::wall_clock().millis();
    let since = match &args.since {
        None => i64::MIN,
        Some(s) => match edgewatch::history::parse_range(s, None, now) {
            Ok((since, _)) => since,
            Err(e) => {
                eprintln!("edgewatch: {e}");
                return Ok(ExitCode::from(2));
            }
        },
    };
    let entries = edgewatch::audit::read(&dir, since)?;
    let mut out = std::io::stdout().lock();
    for e in &entries {
        use std::io::Write as _;
        match args.format {
            Format::Json => writeln!(out, "{}", e.line())?,
            Format::Text => writeln!(out, "#{:<6} {}  {:<14} {}", e.seq, e.time, e.kind, e.data)?,
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `edgewatch trace <id>`: exit 0 with the trace, 1 if the event log does not hold the event,
/// 2 for an id that is not one.
pub fn trace(id: &str, format: Format, config: &Config) -> anyhow::Result<ExitCode> {
    let wanted = match edgewatch::trace::Wanted::parse(id) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("edgewatch: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    let report = edgewatch::trace::trace(&config.state_dir, wanted)?;
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Format::Text => print!("{}", edgewatch::trace::text(&report)),
    }
    if report.found.is_none() {
        let dir = edgewatch::events::dir_in(&config.state_dir);
        eprintln!(
            "edgewatch: event {id} is not in the event log ({}): older than its limits, or never sent",
            dir.display()
        );
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}
