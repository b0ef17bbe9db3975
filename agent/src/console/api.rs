//! The operations of `/api/v1` that read files or start work, as `openapi.json` documents
//! them: events, dead letters, history, the live stream, backtests and reloads (what the
//! engine loop holds is asked in `live`). Each answers JSON; a bad argument is a 400 that
//! says which and why, never a 5xx. Reading files runs on the blocking pool. The token was
//! checked by the router.

use super::Api;
use super::answer::{Answer, arg, bad, blocking, fail, ok, reply};
use crate::events::Cursor;
use crate::history::{Resolution, Row};
use crate::reload::Trigger;
use bytes::Bytes;
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
/// Most roll-ups in one history answer (a week of minutes is 10 080).
const MAX_POINTS: usize = 20_000;
/// Live stream clients at once; more are refused (429).
const MAX_STREAMS: usize = 16;
/// A comment this often keeps an idle stream's connection (and proxies on the way) open.
const KEEPALIVE: Duration = Duration::from_secs(15);

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
