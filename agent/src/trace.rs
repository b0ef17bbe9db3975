//! `edgewatch trace`: one composite event explained from a state directory's files (so
//! beside a running agent too): the event as sent, the version of the rule that decided it
//! and when that version was loaded (the audit trail), when it was queued, published and
//! acknowledged upstream (the event log), its causes with the input messages the journal
//! holds, and its parent events, followed.
//!
//! ```text
//! id ─▶ events::find ─▶ the CloudEvent, queued/published/acked
//!         ├─ edgewatchrule ─▶ audit::read ─▶ the start or reload that loaded that version
//!         ├─ edgewatchcauses ─▶ journal::read at each arrival time ─▶ the input (same id)
//!         │                     (or events::find: a chained event's input is an event)
//!         └─ edgewatchparent ─▶ trace again (at most MAX_DEPTH deep)
//! ```

use crate::events::{self, Logged};
use edgewatch_engine::{Causes, EventId, Ref, Timestamp};
use serde::Serialize;
use std::path::Path;

/// How many parents are followed: chains are bounded by the engine's `max_chain_depth`
/// (3 by default); this bounds a damaged or hand-made log.
pub const MAX_DEPTH: usize = 16;

/// What a trace asks for: a whole id, or the first 64 bits of one (a lineage reference).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wanted {
    Id(u128),
    Prefix(u64),
}

impl Wanted {
    /// An event id as printed (`0123abcd-...`), its 32 hex digits, or the 16 of a reference
    /// (`0123abcd4567ef01`, with or without `@<ms>`).
    pub fn parse(s: &str) -> Result<Wanted, String> {
        let s = s.split_once('@').map_or(s, |(id, _)| id);
        let hex: String = s.chars().filter(|c| *c != '-').collect();
        let bad = || format!("`{s}` is not an event id (a UUID) nor the 16 hex digits of a reference");
        match hex.len() {
            32 => u128::from_str_radix(&hex, 16).map(Wanted::Id).map_err(|_| bad()),
            16 => u64::from_str_radix(&hex, 16).map(Wanted::Prefix).map_err(|_| bad()),
            _ => Err(bad()),
        }
    }

    fn accepts(self, id: u128) -> bool {
        match self {
            Wanted::Id(w) => w == id,
            Wanted::Prefix(p) => Ref { id: p, at: 0 }.is(id),
        }
    }
}

/// One event, explained.
#[derive(Debug, Serialize)]
pub struct Traced {
    pub id: String,
    /// The CloudEvent as sent.
    pub event: serde_json::Value,
    pub topic: String,
    /// Wall-clock times (RFC 3339) of its queueing upstream, its hand-over to the upstream
    /// connection and the broker's acknowledgement, as far as the event log knows.
    pub queued: String,
    pub published: Option<String>,
    pub acked: Option<String>,
    pub rule: Option<RuleVersion>,
    /// How many inputs caused it; those listed are the first and last few.
    pub inputs: u64,
    pub causes: Vec<Cause>,
    /// A chained event's parent, traced in turn (`None` past [`MAX_DEPTH`] or not found: then
    /// `parent_id` still says which).
    pub parent_id: Option<String>,
    pub parent: Option<Box<Traced>>,
}

/// The version of the rule that decided an event.
#[derive(Debug, Serialize)]
pub struct RuleVersion {
    /// `<file>#<content hash>`, as the event's `edgewatchrule` says.
    pub version: String,
    /// The audit entry that loaded that version, the last one before the event: its time,
    /// kind (`start`, `reload`), trigger and caller where known.
    pub loaded: Option<serde_json::Value>,
}

/// One input that caused an event.
#[derive(Debug, Serialize)]
pub struct Cause {
    /// `<16 hex digits>@<arrival ms>`.
    pub reference: String,
    pub arrived: String,
    /// `false` for the last ones listed when inputs between are left out.
    pub among_first: bool,
    /// The message, from the input journal (in the form `journal export` writes), when the
    /// journal is on and still holds it.
    pub message: Option<firmware_sim::RecordLine>,
    /// For a chained event's inputs, which are events: that event's id and type.
    pub event: Option<serde_json::Value>,
}

/// What [`trace`] found.
#[derive(Debug, Serialize)]
pub struct Report {
    pub found: Option<Traced>,
    /// Damaged stretches of the files read past.
    pub damaged: Vec<String>,
}

/// Why a trace could not read its files.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error(transparent)]
    Log(#[from] crate::journal::JournalError),
}

/// Traces event `wanted` from the files under `state_dir`.
pub fn trace(state_dir: &Path, wanted: Wanted) -> Result<Report, TraceError> {
    let audit = crate::audit::read(&crate::audit::dir_in(state_dir), i64::MIN).unwrap_or_default();
    let mut damaged = Vec::new();
    let found = trace_one(state_dir, wanted, &audit, &mut damaged, 0)?;
    Ok(Report { found, damaged })
}

fn rfc3339(ms: i64) -> String {
    Timestamp(ms).to_rfc3339()
}

fn trace_one(
    state_dir: &Path,
    wanted: Wanted,
    audit: &[crate::audit::Entry],
    damaged: &mut Vec<String>,
    depth: usize,
) -> Result<Option<Traced>, TraceError> {
    let f = events::find(&events::dir_in(state_dir), |id| wanted.accepts(id))?;
    damaged.extend(f.damaged);
    let Some(Logged { queued, seq: _, topic, event, published, acked }) = f.event else { return Ok(None) };
    let attr = |name: &str| event.get(name).and_then(|v| v.as_str()).map(str::to_owned);
    let causes = attr("edgewatchcauses").and_then(|c| Causes::decode(&c).ok()).unwrap_or_default();
    let rule = attr("edgewatchrule").map(|version| {
        let loaded = loaded_by(audit, &version, queued);
        RuleVersion { version, loaded }
    });
    let mut listed = Vec::new();
    let first = causes.first.len();
    for (i, r) in causes.refs().enumerate() {
        listed.push(Cause {
            reference: r.to_string(),
            arrived: rfc3339(r.at),
            among_first: i < first,
            message: None,
            event: None,
        });
    }
    find_inputs(state_dir, &causes, &mut listed, damaged)?;
    let parent_id = attr("edgewatchparent");
    let parent = match parent_id.as_deref().map(Wanted::parse) {
        Some(Ok(p)) if depth < MAX_DEPTH => trace_one(state_dir, p, audit, damaged, depth + 1)?.map(Box::new),
        _ => None,
    };
    Ok(Some(Traced {
        id: attr("id").unwrap_or_default(),
        topic,
        queued: rfc3339(queued),
        published: published.map(rfc3339),
        acked: acked.map(rfc3339),
        rule,
        inputs: causes.count,
        causes: listed,
        parent_id,
        parent,
        event,
    }))
}

/// The causes' messages from the input journal: each is the message that arrived at its
/// time with its id. One read over the span they arrived in. Those not there may be events
/// (a chained rule's inputs): looked up in the event log.
fn find_inputs(
    state_dir: &Path,
    causes: &Causes,
    listed: &mut [Cause],
    damaged: &mut Vec<String>,
) -> Result<(), TraceError> {
    let refs: Vec<Ref> = causes.refs().copied().collect();
    let (Some(lo), Some(hi)) = (refs.iter().map(|r| r.at).min(), refs.iter().map(|r| r.at).max()) else {
        return Ok(());
    };
    let journal = crate::journal::dir_in(state_dir);
    if journal.is_dir() {
        let report = crate::journal::read(&journal, (lo, hi.saturating_add(1)), |e| {
            let crate::journal::Entry::Message { t, format, topic, payload } = e else { return };
            let id = EventId::from_content(topic, payload).0;
            for (r, c) in refs.iter().zip(listed.iter_mut()) {
                if r.at == t && r.is(id) && c.message.is_none() {
                    c.message = Some(crate::journal::message_line(t, format, topic, payload));
                }
            }
        })?;
        damaged.extend(report.damaged);
    }
    for (r, c) in refs.iter().zip(listed.iter_mut()).filter(|(_, c)| c.message.is_none()) {
        let f = events::find(&events::dir_in(state_dir), |id| r.is(id))?;
        c.event = f.event.map(|l| serde_json::json!({ "id": l.event["id"], "type": l.event["type"] }));
    }
    Ok(())
}

/// The audit entry that loaded rule version `version` (`<file>#<hash>`): the last `start`
/// or `reload` at or before `before` (ms) that ran it.
fn loaded_by(audit: &[crate::audit::Entry], version: &str, before: i64) -> Option<serde_json::Value> {
    let (file, hash) = version.rsplit_once('#')?;
    let loads = |e: &crate::audit::Entry| match e.kind.as_str() {
        "start" => e.data["rules"]["files"][file].as_str() == Some(hash),
        "reload" => e.data["changes"]
            .as_array()
            .is_some_and(|cs| cs.iter().any(|c| c["file"] == file && c["new"] == hash && c["loaded"] == true)),
        _ => false,
    };
    let e = audit.iter().rev().find(|e| e.t <= before && loads(e))?;
    Some(serde_json::json!({
        "time": e.time, "kind": e.kind, "audit_seq": e.seq,
        "trigger": e.data.get("trigger"), "by": e.data.get("by"),
    }))
}

/// The report for people.
pub fn text(report: &Report) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let mut next = report.found.as_ref();
    let mut depth = 0;
    while let Some(t) = next {
        let pad = "  ".repeat(depth);
        let e = &t.event;
        let s = |k: &str| e[k].as_str().unwrap_or("-").to_owned();
        let _ = writeln!(out, "{pad}event     {}  {}  subject {}  time {}", t.id, s("type"), s("subject"), s("time"));
        if let Some(r) = &t.rule {
            let loaded = r.loaded.as_ref().map_or_else(
                || "(no audit entry loading it)".to_owned(),
                |l| {
                    let how = [&l["kind"], &l["trigger"], &l["by"]]
                        .iter()
                        .filter_map(|v| v.as_str())
                        .collect::<Vec<_>>()
                        .join(", ");
                    format!("loaded {} ({how}; audit #{})", l["time"].as_str().unwrap_or("?"), l["audit_seq"])
                },
            );
            let _ = writeln!(out, "{pad}rule      {}  {loaded}", r.version);
        }
        let _ = writeln!(out, "{pad}upstream  {}  queued {}", t.topic, t.queued);
        let _ = writeln!(
            out,
            "{pad}          published {}  acknowledged {}",
            t.published.as_deref().unwrap_or("not yet (as far as the log knows)"),
            t.acked.as_deref().unwrap_or("not yet (as far as the log knows)")
        );
        let _ = writeln!(out, "{pad}causes    {} input(s)", t.inputs);
        let mut shown_gap = false;
        for c in &t.causes {
            if !c.among_first && !shown_gap {
                shown_gap = true;
                let _ = writeln!(out, "{pad}  ... {} more", t.inputs.saturating_sub(t.causes.len() as u64));
            }
            let what = match (&c.message, &c.event) {
                (Some(m), _) => serde_json::to_string(m).unwrap_or_default(),
                (None, Some(ev)) => format!("event {} {}", ev["id"].as_str().unwrap_or("?"), ev["type"]),
                (None, None) => "(not in the input journal)".to_owned(),
            };
            let _ = writeln!(out, "{pad}  {}  {}  {what}", c.reference, c.arrived);
        }
        if let Some(p) = &t.parent_id {
            let followed = if t.parent.is_some() { "" } else { " (not in the event log)" };
            let _ = writeln!(out, "{pad}parent    {p}{followed}");
        }
        next = t.parent.as_deref();
        depth += 1;
    }
    for d in &report.damaged {
        let _ = writeln!(out, "damaged: {d}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_references_parse_and_nothing_else_does() {
        let id = "01234567-89ab-8def-9011-223344556677";
        assert_eq!(Wanted::parse(id), Ok(Wanted::Id(0x0123_4567_89ab_8def_9011_2233_4455_6677)));
        assert_eq!(Wanted::parse("0123456789ab8def@1733400000000"), Ok(Wanted::Prefix(0x0123_4567_89ab_8def)));
        assert!(Wanted::Prefix(0x0123_4567_89ab_8def).accepts(0x0123_4567_89ab_8def_9011_2233_4455_6677));
        for bad in ["", "xyz", "0123", "g123456789ab8def"] {
            assert!(Wanted::parse(bad).is_err(), "{bad}");
        }
    }
}
