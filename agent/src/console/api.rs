//! The operations of `/api/v1`, as `openapi.json` documents them. Each reads or asks, and
//! answers JSON; a bad argument is a 400 that says which and why, never a 5xx. Reading files
//! (events, history) runs on the blocking pool. The token was checked by the router.

use super::answer::{Answer, arg, ask, bad, blocking, fail, json_answer, ok, reply};
use super::{Api, DevicesNow, Query, RulesNow};
use crate::alarms::{Refused, Request};
use crate::events::Cursor;
use crate::history::{Resolution, Row};
use crate::reload::Trigger;
use bytes::Bytes;
use edgewatch_engine::{AlarmCommandError, DeviceView, Liveness, Timestamp};
use hyper::StatusCode;
use hyper::header::{self, HeaderValue};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

/// Events per page: the default and the most.
const EVENTS_PAGE: usize = 100;
const MAX_EVENTS_PAGE: usize = 1000;
/// Events shown on a device's page.
const DEVICE_EVENTS: usize = 20;
/// Most roll-ups in one history answer (a week of minutes is 10 080).
const MAX_POINTS: usize = 20_000;
/// Live stream clients at once; more are refused (429).
const MAX_STREAMS: usize = 16;
/// A comment this often keeps an idle stream's connection (and proxies on the way) open.
const KEEPALIVE: Duration = Duration::from_secs(15);

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

// ------------------------------------------------------------------------------ events

pub(super) async fn events(api: &Api, p: BTreeMap<String, String>) -> Answer {
    let arg_of = |name: &str| arg(name, p.get(name).map(String::as_str));
    let since = arg_of("since")?;
    let after: Option<Cursor> = since.map(str::parse).transpose().map_err(bad)?;
    let ty = arg_of("rule")?.map(|r| format!("edgewatch.{r}"));
    let key = arg_of("key")?.map(str::to_owned);
    let limit = match arg_of("limit")? {
        None => EVENTS_PAGE,
        Some(l) => l.parse().map_err(|_| bad("`limit` is a number"))?,
    };
    if !(1..=MAX_EVENTS_PAGE).contains(&limit) {
        return Err(bad(format!("`limit` is between 1 and {MAX_EVENTS_PAGE}")));
    }
    let Some(dir) = api.events_dir.clone() else {
        return ok(&json!({ "events": [], "next": since, "event_log": false }));
    };
    blocking(Box::new(move || {
        let keep = |e: &Value| {
            ty.as_deref().is_none_or(|t| e["type"].as_str() == Some(t))
                && key.as_deref().is_none_or(|k| e["subject"].as_str() == Some(k))
        };
        let page = crate::events::recent(&dir, after, keep, limit).map_err(|error| {
            tracing::warn!(%error, "Event log not read for the console.");
            fail(StatusCode::SERVICE_UNAVAILABLE, "the event log cannot be read now; try again")
        })?;
        let next = page.next.map(|c| c.to_string());
        ok(&json!({ "events": page.events, "next": next, "event_log": true }))
    }))
    .await
}

pub(super) fn dead_letters(api: &Api) -> Answer {
    let recent: Vec<Value> = api
        .stats
        .detail
        .recent_dead_letters
        .lock()
        .map(|r| r.iter().map(|l| serde_json::from_str(l).unwrap_or_else(|_| Value::from(&**l))).collect())
        .unwrap_or_default();
    ok(&json!({ "deadletters": recent, "total": api.stats.dead_letters.load(Relaxed) }))
}

// ----------------------------------------------------------------------------- history

pub(super) async fn history(api: &Api, (key, field): (&str, &str), p: BTreeMap<String, String>) -> Answer {
    arg("key", Some(key))?;
    arg("field", Some(field))?;
    let (key, field) = (key.to_owned(), field.to_owned());
    let res = crate::history::parse_resolution(p.get("resolution").map_or("1m", String::as_str))
        .map_err(|e| bad(format!("resolution: {e}")))?;
    let now = crate::wall_clock().millis();
    let when = |name: &str, text: Option<&str>, default: i64| {
        text.map_or(Ok(default), |t| crate::history::parse_when(t, now).map_err(|e| bad(format!("{name}: {e}"))))
    };
    let since = when("since", p.get("since").map(String::as_str), now.saturating_sub(24 * 3_600_000))?;
    // An empty range (since at or after until) has no roll-ups: an empty answer, not an error.
    let until = when("until", p.get("until").map(String::as_str), now)?.max(since);
    let dir = api.history_dir.clone();
    blocking(Box::new(move || {
        let rows = crate::history::read(&dir, &key, &field, res, since, until).map_err(|error| {
            tracing::warn!(%error, "History not read for the console.");
            fail(StatusCode::SERVICE_UNAVAILABLE, "the history cannot be read now; try again")
        })?;
        let skip = rows.len().saturating_sub(MAX_POINTS);
        let points: Vec<Row> = rows[skip..].iter().map(|(start, r)| Row::of(*start, r)).collect();
        let resolution = match res {
            Resolution::Fine => "fine",
            Resolution::Coarse => "coarse",
        };
        ok(&json!({ "key": key, "field": field, "resolution": resolution, "truncated": skip > 0, "points": points }))
    }))
    .await
}

// ------------------------------------------------------------------------------ stream

/// `GET /api/v1/stream`: Server-Sent Events (see `feed`) until the client leaves or the agent
/// stops. Read with `fetch`, which can send the token (`EventSource` cannot send headers).
pub(super) fn stream(api: &Api) -> Answer {
    use http_body_util::BodyExt;
    use tokio::sync::broadcast::error::RecvError;
    let Some(watch) = api.feed.watch(MAX_STREAMS) else {
        return Err(fail(StatusCode::TOO_MANY_REQUESTS, format!("{MAX_STREAMS} live streams are open already")));
    };
    let hello: Bytes = "retry: 3000\nevent: hello\ndata: {}\n\n".into();
    let frames =
        futures_util::stream::unfold((watch, api.stop.clone(), Some(hello)), |(mut watch, stop, first)| async move {
            if let Some(first) = first {
                return Some((Ok::<_, std::convert::Infallible>(first), (watch, stop, None)));
            }
            let frame: Bytes = tokio::select! {
                () = stop.cancelled() => return None,
                () = tokio::time::sleep(KEEPALIVE) => ": keepalive\n\n".into(),
                r = watch.rx.recv() => match r {
                    Ok(chunk) => chunk,
                    Err(RecvError::Lagged(n)) => format!("event: lagged\ndata: {{\"missed\":{n}}}\n\n").into(),
                    Err(RecvError::Closed) => return None,
                },
            };
            Some((Ok(frame), (watch, stop, None)))
        });
    let frames = futures_util::StreamExt::map(frames, |f| f.map(hyper::body::Frame::data));
    let mut r = hyper::Response::new(http_body_util::StreamBody::new(frames).boxed_unsync());
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    Ok(r)
}

// ---------------------------------------------------------------------------- backtest

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BacktestBody {
    /// A candidate rule file's text.
    rules: String,
    since: Option<String>,
    until: Option<String>,
}

/// `POST /api/v1/backtest`: what a candidate rule file would have said over the journal,
/// beside the running rules (see `backtest`).
pub(super) async fn backtest(api: &Api, body: Bytes) -> Answer {
    use super::backtest::BacktestError;
    let b: BacktestBody = serde_json::from_slice(&body)
        .map_err(|e| bad(format!("the body is {{\"rules\": \"<a rule file>\", \"since\": \"24h\"}}: {e}")))?;
    let now = crate::wall_clock().millis();
    let since = b.since.unwrap_or_else(|| "24h".to_owned());
    for (name, value) in [("since", Some(&since)), ("until", b.until.as_ref())] {
        if let Some(v) = value {
            crate::history::parse_when(v, now).map_err(|e| bad(format!("{name}: {e}")))?;
        }
    }
    let Some(backtester) = api.backtester.clone() else {
        return Err(fail(StatusCode::CONFLICT, "backtests need the agent run as `edgewatch run --config <file>`"));
    };
    let Ok(permit) = api.backtests.clone().try_acquire_owned() else {
        return Err(fail(StatusCode::TOO_MANY_REQUESTS, "a backtest is running; try again when it is done"));
    };
    let (rules, until) = (b.rules, b.until);
    blocking(Box::new(move || {
        let _one = permit;
        match backtester.run(&rules, &since, until.as_deref()) {
            Ok(report) => ok(&json!({ "report": report })),
            Err(BacktestError::Refused(said)) => Err(bad(said)),
            Err(e @ BacktestError::Failed(_)) => Err(fail(StatusCode::UNPROCESSABLE_ENTITY, e)),
        }
    }))
    .await
}

// ------------------------------------------------------------------------------ reload

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReloadBody {
    by: Option<String>,
}

pub(super) fn reload(api: &Api, body: Bytes) -> Answer {
    let body: ReloadBody = if body.is_empty() {
        ReloadBody::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| bad(format!("the body is `{{\"by\": \"...\"}}` or empty: {e}")))?
    };
    arg("by", body.by.as_deref())?;
    // A full queue already holds a rescan, which will read the same files.
    let _ = api.reload.try_send(Trigger::Console { by: body.by });
    Ok(reply(StatusCode::ACCEPTED, &json!({ "ok": true })))
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
