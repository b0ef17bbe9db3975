//! The operations of `/api/v1` that ask the engine loop, as `openapi.json` documents them:
//! rules, devices and alarms, and alarm commands. Each asks through the loop's queue and
//! answers JSON; a bad argument is a 400 that says which and why, never a 5xx. The token was
//! checked by the router.

use super::answer::{Answer, arg, ask, bad, blocking, fail, json_answer, ok};
use super::{Api, DevicesNow, Query, RulesNow};
use crate::alarms::{Refused, Request};
use bytes::Bytes;
use edgewatch_engine::{AlarmCommandError, DeviceView, Liveness, Timestamp};
use hyper::StatusCode;
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// Events shown on a device's page.
const DEVICE_EVENTS: usize = 20;

// ------------------------------------------------------------------------------- rules

pub(super) async fn rules(api: &Api) -> Answer {
    let now = ask(api, Query::Rules).await?;
    let counts = api.stats.detail.by_rule.lock().map(|m| m.clone()).unwrap_or_default();
    let answer = RulesAnswer {
        updated: &now.status["updated"],
        rules: rule_rows(&now, &counts, None),
        files: now.status["files"].as_array().map_or(&[], Vec::as_slice),
    };
    Ok(json_answer(&answer))
}

pub(super) async fn rule(api: &Api, name: &str) -> Answer {
    let now = ask(api, Query::Rules).await?;
    let counts = api.stats.detail.by_rule.lock().map(|m| m.clone()).unwrap_or_default();
    match rule_rows(&now, &counts, Some(name)).first() {
        Some(r) => Ok(json_answer(r)),
        None => {
            Err(fail(StatusCode::NOT_FOUND, format!("no rule named `{}`", name.chars().take(64).collect::<String>())))
        }
    }
}

/// `GET /api/v1/rules`.
#[derive(serde::Serialize)]
struct RulesAnswer<'a> {
    updated: &'a Value,
    rules: Vec<RuleRow<'a>>,
    files: &'a [Value],
}

/// One rule: the engine's view, the status document's file, hash and error, the counts of
/// its events.
#[derive(serde::Serialize)]
struct RuleRow<'a> {
    name: &'a str,
    kind: &'static str,
    status: &'static str,
    file: &'a Value,
    hash: &'a Value,
    loaded_at: &'a Value,
    error: Option<&'a str>,
    keys: usize,
    alarms: usize,
    active_alarms: usize,
    events_total: u64,
    events_last_hour: u64,
    last_event: Option<String>,
    faults: u64,
    value_missing: u64,
}

/// The rules (or the one named `only`).
fn rule_rows<'a>(
    now: &'a RulesNow,
    counts: &std::collections::HashMap<std::sync::Arc<str>, crate::telemetry::RuleCounts>,
    only: Option<&str>,
) -> Vec<RuleRow<'a>> {
    let wall = crate::wall_clock().millis();
    let status: BTreeMap<&str, &Value> = now.status["rules"]
        .as_array()
        .map(|rules| rules.iter().filter_map(|r| Some((r["name"].as_str()?, r))).collect())
        .unwrap_or_default();
    now.rules
        .iter()
        .filter(|r| only.is_none_or(|n| *r.name == *n))
        .map(|r| {
            let s = status.get(&*r.name).copied().unwrap_or(&Value::Null);
            let c = counts.get(&r.name).copied().unwrap_or_default();
            let error = s["error"].as_str();
            let state = if r.disabled {
                "disabled"
            } else if error.is_some() {
                "error"
            } else {
                "running"
            };
            RuleRow {
                name: &r.name,
                kind: r.kind,
                status: state,
                file: &s["file"],
                hash: &s["hash"],
                loaded_at: &s["loaded_at"],
                error,
                keys: r.keys,
                alarms: r.alarms,
                active_alarms: r.active_alarms,
                events_total: c.events,
                events_last_hour: c.recent.total(wall),
                last_event: rfc(c.recent.last),
                faults: c.faults,
                value_missing: c.value_missing,
            }
        })
        .collect()
}

// ----------------------------------------------------------------------------- devices

/// One key over every heartbeat rule: its worst state, the rules' views, its active alarms.
/// Serialized as it is (no intermediate JSON values): 10 000 of them are one answer.
#[derive(serde::Serialize)]
struct DeviceRow<'a> {
    key: &'a str,
    state: &'static str,
    last_seen: Option<String>,
    missing_since: Option<String>,
    downtime_ms: Option<i64>,
    active_alarms: usize,
    rules: Vec<RuleLiveness<'a>>,
}

/// One heartbeat rule's view of a key.
#[derive(serde::Serialize)]
struct RuleLiveness<'a> {
    rule: &'a str,
    state: &'static str,
    last_seen: Option<String>,
    missing_since: Option<String>,
}

fn rfc(t: Option<i64>) -> Option<String> {
    t.map(|t| Timestamp(t).to_rfc3339())
}

/// The worst state of a key over its heartbeat rules.
fn worst(views: &[&DeviceView]) -> Liveness {
    views.iter().map(|v| v.state).max_by_key(|s| s.severity()).unwrap_or(Liveness::Up)
}

fn device_row<'a>(key: &'a str, views: &[&'a DeviceView], active_alarms: usize, now: i64) -> DeviceRow<'a> {
    let missing_since = views.iter().filter_map(|v| v.missing_since).min();
    DeviceRow {
        key,
        state: worst(views).as_str(),
        last_seen: rfc(views.iter().filter_map(|v| v.last_seen).max()),
        missing_since: rfc(missing_since),
        downtime_ms: missing_since.map(|s| now.saturating_sub(s).max(0)),
        active_alarms,
        rules: views
            .iter()
            .map(|v| RuleLiveness {
                rule: &v.rule,
                state: v.state.as_str(),
                last_seen: rfc(v.last_seen),
                missing_since: rfc(v.missing_since),
            })
            .collect(),
    }
}

/// Keys with their views, and the number of active alarms per key, from one answer.
fn by_key(now: &DevicesNow) -> (BTreeMap<&str, Vec<&DeviceView>>, BTreeMap<&str, usize>) {
    let mut keys: BTreeMap<&str, Vec<&DeviceView>> = BTreeMap::new();
    for d in &now.devices {
        keys.entry(&d.key).or_default().push(d);
    }
    let mut alarms: BTreeMap<&str, usize> = BTreeMap::new();
    for a in now.alarms.iter().filter(|a| a.alarm.condition.is_active()) {
        *alarms.entry(&a.key).or_default() += 1;
    }
    (keys, alarms)
}

pub(super) async fn devices(api: &Api, p: BTreeMap<String, String>) -> Answer {
    let q = arg("q", p.get("q").map(String::as_str))?;
    let wanted = match p.get("state").map(String::as_str) {
        None => None,
        Some(s @ ("up" | "missing" | "flapping" | "never_seen")) => Some(s),
        Some(_) => return Err(bad("`state` is one of up, missing, flapping, never_seen")),
    };
    let now = ask(api, |reply| Query::Devices { key: None, reply }).await?;
    let (keys, alarms) = by_key(&now);
    let mut counts: BTreeMap<&str, usize> = ["up", "missing", "flapping", "never_seen"].map(|s| (s, 0)).into();
    let mut list = Vec::new();
    for (key, views) in &keys {
        let state = worst(views).as_str();
        *counts.entry(state).or_default() += 1;
        if wanted.is_none_or(|w| w == state) && q.is_none_or(|q| key.contains(q)) {
            list.push(device_row(key, views, alarms.get(key).copied().unwrap_or(0), now.now));
        }
    }
    #[derive(serde::Serialize)]
    struct Devices<'a> {
        counts: BTreeMap<&'a str, usize>,
        total: usize,
        devices: Vec<DeviceRow<'a>>,
    }
    Ok(json_answer(&Devices { counts, total: keys.len(), devices: list }))
}

pub(super) async fn device(api: &Api, key: &str) -> Answer {
    arg("key", Some(key))?;
    let key = key.to_owned();
    let now = ask(api, |reply| Query::Devices { key: Some(key.clone()), reply }).await?;
    let (keys, active) = by_key(&now);
    let views = keys.get(key.as_str()).cloned().unwrap_or_default();
    let row = device_row(&key, &views, active.get(key.as_str()).copied().unwrap_or(0), now.now);
    let mut d = serde_json::to_value(&row).unwrap_or_default();
    d["alarms"] = serde_json::to_value(alarm_rows(&now.alarms)).unwrap_or_default();
    if let Some(sparkplug) = &now.sparkplug {
        d["sparkplug"] = sparkplug.clone();
    }
    let known = !views.is_empty() || !now.alarms.is_empty() || d.get("sparkplug").is_some();
    let (events_dir, history_dir) = (api.events_dir.clone(), api.history_dir.clone());
    blocking(Box::new(move || {
        let events = events_dir.and_then(|dir| {
            crate::events::recent(&dir, None, |e| e["subject"].as_str() == Some(&key), DEVICE_EVENTS).ok()
        });
        let events = events.map(|p| p.events).unwrap_or_default();
        let fields: Vec<String> = crate::history::series(&history_dir)
            .map(|s| s.into_iter().filter(|(k, _)| *k == key).map(|(_, f)| f).collect())
            .unwrap_or_default();
        if !known && events.is_empty() && fields.is_empty() {
            return Err(fail(StatusCode::NOT_FOUND, "no rule, alarm, event or history knows this key"));
        }
        d["events"] = serde_json::to_value(&events).unwrap_or_default();
        d["history_fields"] = fields.into();
        ok(&d)
    }))
    .await
}

// ------------------------------------------------------------------------------ alarms

/// One alarm that is not idle.
#[derive(serde::Serialize)]
struct AlarmRow<'a> {
    rule: &'a str,
    key: &'a str,
    state: &'static str,
    active: bool,
    since: Option<String>,
    snoozed_until: Option<String>,
    out_of_service: bool,
    escalated: u8,
}

fn alarm_rows(alarms: &[edgewatch_engine::AlarmView]) -> Vec<AlarmRow<'_>> {
    alarms
        .iter()
        .map(|a| AlarmRow {
            rule: &a.rule,
            key: &a.key,
            state: a.alarm.condition.as_str(),
            active: a.alarm.condition.is_active(),
            since: rfc(a.alarm.since),
            snoozed_until: rfc(a.alarm.shelved_until),
            out_of_service: a.alarm.out_of_service,
            escalated: a.alarm.escalated,
        })
        .collect()
}

pub(super) async fn alarms(api: &Api) -> Answer {
    let now = ask(api, |reply| Query::Devices { key: None, reply }).await?;
    #[derive(serde::Serialize)]
    struct Alarms<'a> {
        alarms: Vec<AlarmRow<'a>>,
    }
    Ok(json_answer(&Alarms { alarms: alarm_rows(&now.alarms) }))
}

/// `POST /api/v1/alarms/{rule}/{key}` with `{"action": "ack" | "snooze" | ..., "for": "30m",
/// "by": "...", "note": "..."}`: the control topic's command, read by the same parser.
pub(super) async fn alarm_command(api: &Api, (rule, key): (String, String), body: Bytes) -> Answer {
    let mut command: serde_json::Map<String, Value> = serde_json::from_slice(&body)
        .map_err(|e| bad(format!("the body is not a JSON object like {{\"action\": \"ack\"}}: {e}")))?;
    for field in ["rule", "key"] {
        if command.contains_key(field) {
            return Err(bad(format!("`{field}` is in the path, not the body")));
        }
    }
    // The document's form of `for`, whatever the action: a count and one unit.
    if let Some(d) = command.get("for").and_then(Value::as_str).filter(|d| !simple_duration(d)) {
        return Err(bad(format!(
            "`for`: `{}` is not like 30m (seconds, minutes, hours or days, at most 31d)",
            d.chars().take(32).collect::<String>()
        )));
    }
    command.insert("rule".into(), rule.into());
    command.insert("key".into(), key.into());
    let command = Value::Object(command);
    let request = Request::parse(command.to_string().as_bytes(), crate::wall_clock().millis())
        .map_err(|(_, error)| bad(error))?;
    let result = ask(api, |reply| Query::Alarm { request, command, reply }).await?;
    match result {
        Ok(state) => ok(&json!({ "ok": true, "alarmstate": state.as_str() })),
        Err(Refused::Engine(AlarmCommandError::UnknownRule(_))) => {
            Err(fail(StatusCode::NOT_FOUND, result_error(&result)))
        }
        Err(_) => Err(fail(StatusCode::CONFLICT, result_error(&result))),
    }
}

/// `for` as the document has it: 1-9999 s or m, 1-99 h, 1-31 d.
fn simple_duration(d: &str) -> bool {
    let split = d.find(|c: char| !c.is_ascii_digit()).unwrap_or(d.len());
    let (n, unit) = d.split_at(split);
    let max = match unit {
        "s" | "m" => 9999,
        "h" => 99,
        "d" => 31,
        _ => return false,
    };
    !n.starts_with('0') && n.parse::<u32>().is_ok_and(|n| (1..=max).contains(&n))
}

fn result_error<T>(r: &Result<T, Refused>) -> String {
    r.as_ref().err().map(ToString::to_string).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_snooze_is_a_count_and_one_unit() {
        for ok in ["30m", "1s", "9999m", "99h", "31d"] {
            assert!(super::simple_duration(ok), "{ok}");
        }
        for bad in ["", "m", "0m", "05m", "32d", "100h", "1h 30m", "6h*", "-1m", "1w", "99999s"] {
            assert!(!super::simple_duration(bad), "{bad}");
        }
    }
}
