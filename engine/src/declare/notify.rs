//! The keys of a rule that say where its events go besides upstream and how its alarm
//! treats them: `notify`, `act`, `escalate`, `inhibit` (`every` is one duration, read in
//! the parent).

use super::{Decl, duration_ms, sub_map};
use rhai::{Dynamic, Map};

/// What a rule's declaration says about its notifications.
pub(super) struct Notices {
    pub(super) actions: Vec<crate::rule::ActionSpec>,
    pub(super) every_ms: Option<i64>,
    pub(super) escalate: Vec<crate::rule::Escalation>,
    pub(super) inhibit: Option<crate::rule::Inhibit>,
}

/// `notify`, `act`, `every`, `escalate` and `inhibit` of rule `name`; the last three need
/// one of the first two.
pub(super) fn notices(d: &mut Decl<'_>, def: &Map, name: &str) -> Result<Notices, String> {
    let actions = actions(d, def)?;
    let needs_sinks = |key: &str, does: &str| match def.get(key) {
        Some(_) if actions.is_empty() => Err(format!("`{key}` {does}: it needs `notify` or `act`")),
        v => Ok(v),
    };
    let every_ms = match needs_sinks("every", "limits notifications")? {
        None => None,
        Some(v) => Some(duration_ms(v).map_err(|m| format!("`every` {m}"))?),
    };
    let escalate = match needs_sinks("escalate", "follows notifications")? {
        None => Vec::new(),
        Some(v) => escalations(v)?,
    };
    let inhibit = match needs_sinks("inhibit", "holds notifications back")? {
        None => None,
        Some(v) => Some(inhibit(name, v)?),
    };
    Ok(Notices { actions, every_ms, escalate, inhibit })
}

/// A sink's name: as `[[sinks]] name` allows.
fn sink_name(what: &str, v: &Dynamic) -> Result<std::sync::Arc<str>, String> {
    let name = v.clone().into_string().map_err(|t| format!("`{what}` names sinks by string, not {t}"))?;
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        return Err(format!(
            "`{what}`: sink name `{name}` must be non-empty and use only letters, digits, `_` and `-`"
        ));
    }
    Ok(name.into())
}

/// `notify: "pager"` or `["pager", "chat"]`; `act: #{ sink: "valves", data: |ev| ... }` or a
/// list of them. A sink named twice is an error: one event, one action per sink.
fn actions(d: &mut Decl<'_>, def: &Map) -> Result<Vec<crate::rule::ActionSpec>, String> {
    let mut out: Vec<crate::rule::ActionSpec> = Vec::new();
    match def.get("notify") {
        None => {}
        Some(v) if v.is_array() => {
            for item in v.clone().into_array().unwrap_or_default() {
                out.push(crate::rule::ActionSpec { sink: sink_name("notify", &item)?, data: None });
            }
        }
        Some(v) => out.push(crate::rule::ActionSpec { sink: sink_name("notify", v)?, data: None }),
    }
    let acts = match def.get("act") {
        None => Vec::new(),
        Some(v) if v.is_array() => v.clone().into_array().unwrap_or_default(),
        Some(v) => vec![v.clone()],
    };
    for act in &acts {
        let m = sub_map("act", Some(act), &["sink", "data"])?;
        let sink = m.get("sink").ok_or("`act` needs `sink` (the configured sink's name)")?;
        let sink = sink_name("act.sink", sink)?;
        let mut ad = Decl { def: &m, arities: Vec::new() };
        let data = ad.func("data", 1).map_err(|e| format!("act: {e}"))?;
        d.arities.append(&mut ad.arities);
        out.push(crate::rule::ActionSpec { sink, data });
    }
    if let Some(twice) = out.iter().enumerate().find(|(i, a)| out[..*i].iter().any(|b| b.sink == a.sink)) {
        return Err(format!("sink `{}` is named twice in `notify`/`act`", twice.1.sink));
    }
    Ok(out)
}

/// `escalate: #{ after: "15m", to: ["oncall"] }` or a list of them, later levels later.
fn escalations(v: &Dynamic) -> Result<Vec<crate::rule::Escalation>, String> {
    let items = if v.is_array() { v.clone().into_array().unwrap_or_default() } else { vec![v.clone()] };
    let mut out: Vec<crate::rule::Escalation> = Vec::new();
    for item in &items {
        let m = sub_map("escalate", Some(item), &["after", "to"])?;
        let after = m.get("after").ok_or("`escalate` needs `after` (how long unacknowledged)")?;
        let after_ms = duration_ms(after).map_err(|e| format!("`escalate.after` {e}"))?;
        if out.last().is_some_and(|l| l.after_ms >= after_ms) || after_ms <= 0 {
            return Err("`escalate` levels need growing, positive `after`s".into());
        }
        let to = match m.get("to") {
            None => return Err("`escalate` needs `to` (sinks)".into()),
            Some(t) if t.is_array() => {
                t.clone().into_array().unwrap_or_default().iter().map(|s| sink_name("escalate.to", s)).collect()
            }
            Some(t) => sink_name("escalate.to", t).map(|s| vec![s]),
        }?;
        out.push(crate::rule::Escalation { after_ms, to });
    }
    if out.len() > usize::from(u8::MAX) {
        return Err("`escalate` has too many levels".into());
    }
    Ok(out)
}

/// `inhibit: #{ by: "hub-offline", parent: "devices.hub", hold: "2m" }`.
fn inhibit(name: &str, v: &Dynamic) -> Result<crate::rule::Inhibit, String> {
    let m = sub_map("inhibit", Some(v), &["by", "parent", "hold"])?;
    let by = match m.get("by") {
        Some(b) if b.is_string() => b.to_string(),
        Some(b) => return Err(format!("`inhibit.by` names a rule by string, not {}", b.type_name())),
        None => return Err("`inhibit` needs `by` (the parent's rule)".into()),
    };
    if by == name {
        return Err("`inhibit.by` names the rule itself".into());
    }
    let parent = m.get("parent").map(|p| p.to_string()).unwrap_or_default();
    let Some((table, column)) = parent.split_once('.').filter(|(t, c)| !t.is_empty() && !c.is_empty()) else {
        return Err(format!("`inhibit.parent` is a lookup table and column, such as \"devices.hub\", not `{parent}`"));
    };
    let hold_ms = match m.get("hold") {
        None => 0,
        Some(h) => duration_ms(h).map_err(|e| format!("`inhibit.hold` {e}"))?,
    };
    Ok(crate::rule::Inhibit { by: by.into(), table: table.into(), column: column.into(), hold_ms })
}
