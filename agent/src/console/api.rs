//! The endpoints of `/api/v1`, as `openapi.json` documents them. Each checks its token
//! first, reads or asks, and answers JSON; a bad argument is a 400 that says which and why,
//! never a 5xx. Reading files (events, history) runs on the blocking pool.

use super::auth::{Denied, Need};
use super::{Api, DevicesNow, Query, RulesNow};
use crate::alarms::{Refused, Request};
use crate::events::Cursor;
use crate::history::{Resolution, Row};
use crate::reload::Trigger;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query as Params, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use edgewatch_engine::{AlarmCommandError, DeviceView, Liveness, Timestamp};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

/// The OpenAPI 3 document of this API; a test checks every response against it.
pub const OPENAPI: &str = include_str!("openapi.json");
/// Longest wait for the engine loop's answer (it answers between two inputs).
const ASK_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request body (an alarm command, a reload's `by`, a backtest's rule file).
const MAX_BODY: usize = 64 * 1024;
/// Events per page: the default and the most.
const EVENTS_PAGE: usize = 100;
const MAX_EVENTS_PAGE: usize = 1000;
/// Events shown on a device's page.
const DEVICE_EVENTS: usize = 20;
/// Most roll-ups in one history answer (a week of minutes is 10 080).
const MAX_POINTS: usize = 20_000;
/// Longest `q`, `rule`, `key` or `by` argument.
const MAX_ARG: usize = 256;
/// Live stream clients at once; more are refused (429).
const MAX_STREAMS: usize = 16;
/// A comment this often keeps an idle stream's connection (and proxies on the way) open.
const KEEPALIVE: Duration = Duration::from_secs(15);

type Answer = Result<Response, Refusal>;

/// A request refused: its status and why, answered as `{"error": "..."}`.
#[derive(Debug)]
struct Refusal {
    status: StatusCode,
    message: String,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let mut r = reply(self.status, &json!({ "error": self.message }));
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        r
    }
}

/// The page and its two assets, embedded: the console works with the gateway offline.
const INDEX: &str = include_str!("assets/index.html");
const SCRIPT: &str = include_str!("assets/app.js");
const STYLE: &str = include_str!("assets/app.css");
const ICON: &str = include_str!("assets/favicon.svg");
/// The page's policy: its own script and style only (no inline code), data from this origin.
const PAGE_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                           connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

pub(super) fn router(api: Arc<Api>) -> Router {
    Router::new()
        .route("/", get(|| asset(INDEX, "text/html; charset=utf-8")))
        .route("/app.js", get(|| asset(SCRIPT, "text/javascript; charset=utf-8")))
        .route("/app.css", get(|| asset(STYLE, "text/css; charset=utf-8")))
        .route("/favicon.svg", get(|| asset(ICON, "image/svg+xml")))
        .route("/api/v1/openapi.json", get(openapi))
        .route("/api/v1/rules", get(rules))
        .route("/api/v1/rules/:name", get(rule))
        .route("/api/v1/devices", get(devices))
        .route("/api/v1/devices/:key", get(device))
        .route("/api/v1/alarms", get(alarms))
        .route("/api/v1/alarms/:rule/:key", post(alarm_command))
        .route("/api/v1/events", get(events))
        .route("/api/v1/deadletters", get(dead_letters))
        .route("/api/v1/history/:key/:field", get(history))
        .route("/api/v1/reload", post(reload))
        .route("/api/v1/stream", get(stream))
        .route("/api/v1/backtest", post(backtest))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::map_response(secure))
        .with_state(api)
}

/// Headers on every answer: JSON is never sniffed as something else, nothing is cached (it
/// may be private), nothing may frame it or load from elsewhere.
async fn secure(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.entry(header::CONTENT_SECURITY_POLICY).or_insert(HeaderValue::from_static(
        "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    ));
    response
}

fn reply(status: StatusCode, body: &Value) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

fn ok(body: &Value) -> Answer {
    Ok(reply(StatusCode::OK, body))
}

fn fail(status: StatusCode, message: impl std::fmt::Display) -> Refusal {
    Refusal { status, message: message.to_string() }
}

fn bad(message: impl std::fmt::Display) -> Refusal {
    fail(StatusCode::BAD_REQUEST, message)
}

/// The request's token may do what `need` says.
fn allowed(api: &Api, headers: &HeaderMap, need: Need) -> Result<(), Refusal> {
    let auth = headers.get(header::AUTHORIZATION).map(HeaderValue::as_bytes);
    api.tokens.check(auth, need).map_err(|denied: Denied| {
        fail(StatusCode::from_u16(denied.status()).unwrap_or(StatusCode::UNAUTHORIZED), denied)
    })
}

/// Asks the engine loop; 503 when it is stopping or does not answer in time.
async fn ask<T>(api: &Api, make: impl FnOnce(tokio::sync::oneshot::Sender<T>) -> Query) -> Result<T, Refusal> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let asked = async {
        if !(api.ask)(make(tx)).await {
            return None;
        }
        rx.await.ok()
    };
    match tokio::time::timeout(ASK_TIMEOUT, asked).await {
        Ok(Some(answer)) => Ok(answer),
        _ => Err(fail(StatusCode::SERVICE_UNAVAILABLE, "the agent is stopping or too busy to answer; try again")),
    }
}

/// Runs file reading on the blocking pool.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, Refusal> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| fail(StatusCode::SERVICE_UNAVAILABLE, "the agent is stopping; try again"))
}

/// A text argument: at most [`MAX_ARG`] bytes.
fn arg<'a>(name: &str, value: Option<&'a str>) -> Result<Option<&'a str>, Refusal> {
    match value {
        Some(v) if v.len() > MAX_ARG => Err(bad(format!("`{name}` is longer than {MAX_ARG} bytes"))),
        v => Ok(v),
    }
}

fn ms(t: Option<i64>) -> Value {
    t.map_or(Value::Null, |t| Timestamp(t).to_rfc3339().into())
}

async fn asset(body: &'static str, content_type: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CONTENT_SECURITY_POLICY, PAGE_POLICY)], body).into_response()
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

async fn not_found() -> Response {
    fail(StatusCode::NOT_FOUND, "no such endpoint (see /api/v1/openapi.json)").into_response()
}

// ------------------------------------------------------------------------------- rules

async fn rules(State(api): State<Arc<Api>>, headers: HeaderMap) -> Answer {
    allowed(&api, &headers, Need::Read)?;
    let now = ask(&api, Query::Rules).await?;
    ok(&rules_json(&api, now, None))
}

async fn rule(State(api): State<Arc<Api>>, headers: HeaderMap, name: Result<Path<String>, PathRejection>) -> Answer {
    allowed(&api, &headers, Need::Read)?;
    let Path(name) = name.map_err(bad)?;
    let now = ask(&api, Query::Rules).await?;
    let all = rules_json(&api, now, Some(&name));
    match all["rules"].get(0) {
        Some(r) => ok(r),
        None => {
            Err(fail(StatusCode::NOT_FOUND, format!("no rule named `{}`", name.chars().take(64).collect::<String>())))
        }
    }
}

/// The rules (or the one named `only`): the engine's view, the status document's file, hash
/// and error, and the counts of their events.
fn rules_json(api: &Api, now: RulesNow, only: Option<&str>) -> Value {
    let wall = crate::wall_clock().millis();
    let status: BTreeMap<&str, &Value> = now.status["rules"]
        .as_array()
        .map(|rules| rules.iter().filter_map(|r| Some((r["name"].as_str()?, r))).collect())
        .unwrap_or_default();
    let counts = api.stats.detail.by_rule.lock().map(|m| m.clone()).unwrap_or_default();
    let rules: Vec<Value> = now
        .rules
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
            json!({
                "name": &*r.name,
                "kind": r.kind,
                "status": state,
                "file": s["file"],
                "hash": s["hash"],
                "loaded_at": s["loaded_at"],
                "error": error,
                "keys": r.keys,
                "alarms": r.alarms,
                "active_alarms": r.active_alarms,
                "events_total": c.events,
                "events_last_hour": c.recent.total(wall),
                "last_event": ms(c.recent.last),
                "faults": c.faults,
                "value_missing": c.value_missing,
            })
        })
        .collect();
    let files: Vec<Value> = now.status["files"].as_array().cloned().unwrap_or_default();
    json!({ "updated": now.status["updated"], "rules": rules, "files": files })
}

// ----------------------------------------------------------------------------- devices

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DevicesParams {
    state: Option<String>,
    q: Option<String>,
}

/// One key over every heartbeat rule: its worst state, the rules' views, its active alarms.
fn device_json(key: &str, views: &[&DeviceView], active_alarms: usize, now: i64) -> Value {
    let worst = views.iter().max_by_key(|v| v.state.severity());
    let state = worst.map_or(Liveness::Up, |v| v.state);
    let last_seen = views.iter().filter_map(|v| v.last_seen).max();
    let missing_since = views.iter().filter_map(|v| v.missing_since).min();
    let rules: Vec<Value> = views
        .iter()
        .map(|v| {
            json!({ "rule": &*v.rule, "state": v.state.as_str(), "last_seen": ms(v.last_seen), "missing_since": ms(v.missing_since) })
        })
        .collect();
    json!({
        "key": key,
        "state": state.as_str(),
        "last_seen": ms(last_seen),
        "missing_since": ms(missing_since),
        "downtime_ms": missing_since.map(|s| now.saturating_sub(s).max(0)),
        "active_alarms": active_alarms,
        "rules": rules,
    })
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

async fn devices(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    params: Result<Params<DevicesParams>, QueryRejection>,
) -> Answer {
    allowed(&api, &headers, Need::Read)?;
    let Params(p) = params.map_err(bad)?;
    let q = arg("q", p.q.as_deref())?;
    let wanted = match p.state.as_deref() {
        None => None,
        Some(s @ ("up" | "missing" | "flapping" | "never_seen")) => Some(s),
        Some(_) => return Err(bad("`state` is one of up, missing, flapping, never_seen")),
    };
    let now = ask(&api, |reply| Query::Devices { key: None, reply }).await?;
    let (keys, alarms) = by_key(&now);
    let mut counts: BTreeMap<&str, usize> = ["up", "missing", "flapping", "never_seen"].map(|s| (s, 0)).into();
    let mut list = Vec::new();
    for (key, views) in &keys {
        let d = device_json(key, views, alarms.get(key).copied().unwrap_or(0), now.now);
        let state = views.iter().map(|v| v.state).max_by_key(|s| s.severity()).unwrap_or(Liveness::Up).as_str();
        *counts.entry(state).or_default() += 1;
        if wanted.is_none_or(|w| w == state) && q.is_none_or(|q| key.contains(q)) {
            list.push(d);
        }
    }
    ok(&json!({ "counts": counts, "total": keys.len(), "devices": list }))
}

async fn device(State(api): State<Arc<Api>>, headers: HeaderMap, key: Result<Path<String>, PathRejection>) -> Answer {
    allowed(&api, &headers, Need::Read)?;
    let Path(key) = key.map_err(bad)?;
    arg("key", Some(&key))?;
    let now = ask(&api, |reply| Query::Devices { key: Some(key.clone()), reply }).await?;
    let (keys, active) = by_key(&now);
    let views = keys.get(key.as_str()).cloned().unwrap_or_default();
    let (events_dir, history_dir, k) = (api.events_dir.clone(), api.history_dir.clone(), key.clone());
    let (events, fields) = blocking(move || {
        let events = events_dir.and_then(|dir| {
            crate::events::recent(&dir, None, |e| e["subject"].as_str() == Some(&k), DEVICE_EVENTS).ok()
        });
        let fields: Vec<String> = crate::history::series(&history_dir)
            .map(|s| s.into_iter().filter(|(key, _)| *key == k).map(|(_, f)| f).collect())
            .unwrap_or_default();
        (events.map(|p| p.events).unwrap_or_default(), fields)
    })
    .await?;
    if views.is_empty() && now.alarms.is_empty() && events.is_empty() && fields.is_empty() {
        return Err(fail(StatusCode::NOT_FOUND, "no rule, alarm, event or history knows this key"));
    }
    let mut d = device_json(&key, &views, active.get(key.as_str()).copied().unwrap_or(0), now.now);
    d["alarms"] = now.alarms.iter().map(alarm_json).collect();
    d["events"] = serde_json::to_value(&events).unwrap_or_default();
    d["history_fields"] = fields.into();
    ok(&d)
}

// ------------------------------------------------------------------------------ alarms

fn alarm_json(a: &edgewatch_engine::AlarmView) -> Value {
    json!({
        "rule": &*a.rule,
        "key": &*a.key,
        "state": a.alarm.condition.as_str(),
        "active": a.alarm.condition.is_active(),
        "since": ms(a.alarm.since),
        "snoozed_until": ms(a.alarm.shelved_until),
        "out_of_service": a.alarm.out_of_service,
        "escalated": a.alarm.escalated,
    })
}

async fn alarms(State(api): State<Arc<Api>>, headers: HeaderMap) -> Answer {
    allowed(&api, &headers, Need::Read)?;
    let now = ask(&api, |reply| Query::Devices { key: None, reply }).await?;
    let list: Vec<Value> = now.alarms.iter().map(alarm_json).collect();
    ok(&json!({ "alarms": list }))
}

/// `POST /api/v1/alarms/{rule}/{key}` with `{"action": "ack" | "snooze" | ..., "for": "30m",
/// "by": "...", "note": "..."}`: the control topic's command, read by the same parser.
async fn alarm_command(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    path: Result<Path<(String, String)>, PathRejection>,
    body: Bytes,
) -> Answer {
    allowed(&api, &headers, Need::Write)?;
    let Path((rule, key)) = path.map_err(bad)?;
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
    let result = ask(&api, |reply| Query::Alarm { request, command, reply }).await?;
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventsParams {
    since: Option<String>,
    rule: Option<String>,
    key: Option<String>,
    limit: Option<usize>,
}

async fn events(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    params: Result<Params<EventsParams>, QueryRejection>,
) -> Answer {
    allowed(&api, &headers, Need::Read)?;
    let Params(p) = params.map_err(bad)?;
    let after: Option<Cursor> = p.since.as_deref().map(str::parse).transpose().map_err(bad)?;
    let ty = arg("rule", p.rule.as_deref())?.map(|r| format!("edgewatch.{r}"));
    let key = arg("key", p.key.as_deref())?.map(str::to_owned);
    let limit = p.limit.unwrap_or(EVENTS_PAGE);
    if !(1..=MAX_EVENTS_PAGE).contains(&limit) {
        return Err(bad(format!("`limit` is between 1 and {MAX_EVENTS_PAGE}")));
    }
    let Some(dir) = api.events_dir.clone() else {
        return ok(&json!({ "events": [], "next": p.since, "event_log": false }));
    };
    let page = blocking(move || {
        let keep = |e: &Value| {
            ty.as_deref().is_none_or(|t| e["type"].as_str() == Some(t))
                && key.as_deref().is_none_or(|k| e["subject"].as_str() == Some(k))
        };
        crate::events::recent(&dir, after, keep, limit)
    })
    .await?
    .map_err(|error| {
        tracing::warn!(%error, "Event log not read for the console.");
        fail(StatusCode::SERVICE_UNAVAILABLE, "the event log cannot be read now; try again")
    })?;
    let next = page.next.map(|c| c.to_string());
    ok(&json!({ "events": page.events, "next": next, "event_log": true }))
}

async fn dead_letters(State(api): State<Arc<Api>>, headers: HeaderMap) -> Answer {
    allowed(&api, &headers, Need::Read)?;
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryParams {
    since: Option<String>,
    until: Option<String>,
    resolution: Option<String>,
}

async fn history(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    path: Result<Path<(String, String)>, PathRejection>,
    params: Result<Params<HistoryParams>, QueryRejection>,
) -> Answer {
    allowed(&api, &headers, Need::Read)?;
    let Path((key, field)) = path.map_err(bad)?;
    let Params(p) = params.map_err(bad)?;
    arg("key", Some(&key))?;
    arg("field", Some(&field))?;
    let res = crate::history::parse_resolution(p.resolution.as_deref().unwrap_or("1m"))
        .map_err(|e| bad(format!("resolution: {e}")))?;
    let now = crate::wall_clock().millis();
    let when = |name: &str, text: Option<&str>, default: i64| {
        text.map_or(Ok(default), |t| crate::history::parse_when(t, now).map_err(|e| bad(format!("{name}: {e}"))))
    };
    let since = when("since", p.since.as_deref(), now.saturating_sub(24 * 3_600_000))?;
    // An empty range (since at or after until) has no roll-ups: an empty answer, not an error.
    let until = when("until", p.until.as_deref(), now)?.max(since);
    let dir = api.history_dir.clone();
    let (k, f) = (key.clone(), field.clone());
    let rows = blocking(move || crate::history::read(&dir, &k, &f, res, since, until)).await?.map_err(|error| {
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
}

// ------------------------------------------------------------------------------ stream

/// `GET /api/v1/stream`: Server-Sent Events (see `feed`) until the client leaves or the agent
/// stops. Read with `fetch`, which can send the token (`EventSource` cannot send headers).
async fn stream(State(api): State<Arc<Api>>, headers: HeaderMap) -> Answer {
    use tokio::sync::broadcast::error::RecvError;
    allowed(&api, &headers, Need::Read)?;
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
                    Ok(frame) => Bytes::copy_from_slice(frame.as_bytes()),
                    Err(RecvError::Lagged(n)) => format!("event: lagged\ndata: {{\"missed\":{n}}}\n\n").into(),
                    Err(RecvError::Closed) => return None,
                },
            };
            Some((Ok(frame), (watch, stop, None)))
        });
    let headers = [(header::CONTENT_TYPE, "text/event-stream"), (header::CACHE_CONTROL, "no-store")];
    Ok((headers, axum::body::Body::from_stream(frames)).into_response())
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
async fn backtest(State(api): State<Arc<Api>>, headers: HeaderMap, body: Bytes) -> Answer {
    use super::backtest::BacktestError;
    allowed(&api, &headers, Need::Write)?;
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
    let result = blocking(move || {
        let _one = permit;
        backtester.run(&rules, &since, until.as_deref())
    })
    .await?;
    match result {
        Ok(report) => ok(&json!({ "report": report })),
        Err(BacktestError::Refused(said)) => Err(bad(said)),
        Err(e @ BacktestError::Failed(_)) => Err(fail(StatusCode::UNPROCESSABLE_ENTITY, e)),
    }
}

// ------------------------------------------------------------------------------ reload

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReloadBody {
    by: Option<String>,
}

async fn reload(State(api): State<Arc<Api>>, headers: HeaderMap, body: Bytes) -> Answer {
    allowed(&api, &headers, Need::Write)?;
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
