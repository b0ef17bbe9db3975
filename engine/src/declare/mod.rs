//! `rule(name, #{ ... })`: checking a rule declaration and turning it into a rule spec.
//!
//! Which keys a declaration has decides its kind; keys that do not apply to that kind are
//! errors, so a misspelt or misplaced option never silently does nothing.

mod notify;

use crate::detect::anomaly::Params;
use crate::func::Func;
use crate::past::{MAX_BUCKETS, MAX_FIELDS, PastSpec};
use crate::rule::{AnomalySpec, Baseline, Extent, ForecastSpec, HeartbeatSpec, OnFull, RuleKind, Step, WindowSpec};
use crate::topic::TopicPattern;
use rhai::{Dynamic, FnPtr, Map, Position};

/// Default bound on events in one key's window.
pub(crate) const DEFAULT_MAX_WINDOW_EVENTS: usize = 10_000;
/// Default bound on partial sequence matches per key.
pub(crate) const DEFAULT_MAX_PARTIAL: usize = 16;

/// A rule as declared, before the file's AST is attached.
pub(crate) struct Declared {
    pub(crate) name: String,
    pub(crate) pos: Position,
    pub(crate) description: Option<String>,
    pub(crate) patterns: Vec<TopicPattern>,
    pub(crate) key: Option<Func>,
    pub(crate) emit: Option<Func>,
    pub(crate) kind: RuleKind,
    pub(crate) max_keys: Option<usize>,
    /// As declared, else the kind's default.
    pub(crate) on_full: OnFull,
    /// Fields of its keys kept in history (`remember`).
    pub(crate) remember: Vec<std::sync::Arc<str>>,
    /// Fields whose past it keeps per key (`past`).
    pub(crate) past: Vec<PastSpec>,
    /// Sinks its events go to (`notify`, `act`).
    pub(crate) actions: Vec<crate::rule::ActionSpec>,
    /// Rate limit of its notifications (`every`), in ms.
    pub(crate) every_ms: Option<i64>,
    /// Escalation levels (`escalate`).
    pub(crate) escalate: Vec<crate::rule::Escalation>,
    pub(crate) inhibit: Option<crate::rule::Inhibit>,
    /// Every closure with the number of arguments it must take, checked once the AST is known.
    pub(crate) arities: Vec<(String, Func, usize)>,
}

/// Keys every rule may have.
const COMMON: &[&str] = &[
    "on",
    "key",
    "emit",
    "description",
    "max_keys",
    "on_full",
    "remember",
    "past",
    "notify",
    "act",
    "every",
    "escalate",
    "inhibit",
];

/// Kind-deciding keys, and the extra keys each kind accepts.
const KINDS: &[(&str, &[&str])] = &[
    ("heartbeat", &["heartbeat", "when"]),
    ("sequence", &["sequence", "within", "max_partial"]),
    ("window", &["window", "when", "clear"]),
    ("stuck", &["stuck"]),
    ("anomaly", &["anomaly"]),
    ("forecast", &["forecast"]),
    ("on_event", &["on_event", "on_timer", "state"]),
];
const THRESHOLD: &[&str] = &["when", "clear", "emit_clear"];
const FILTER: &[&str] = &["when"];

pub(crate) fn declare(name: &str, def: &Map, pos: Position) -> Result<Declared, String> {
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        return Err(format!("rule name `{name}` must be non-empty and use only letters, digits, `_` and `-`"));
    }
    let err = |m: String| format!("rule `{name}`: {m}");
    let mut d = Decl { def, arities: Vec::new() };

    // Which kind is it?
    let kinds: Vec<&str> = KINDS.iter().map(|(k, _)| *k).filter(|k| def.contains_key(*k)).collect();
    if kinds.len() > 1 {
        return Err(err(format!("a rule has one kind, but this one has `{}` and `{}`", kinds[0], kinds[1])));
    }
    let is_threshold = kinds.is_empty() && (def.contains_key("clear") || def.contains_key("emit_clear"));
    let (kind_name, extra): (&str, &[&str]) = match kinds.first() {
        Some(k) => (k, KINDS.iter().find(|(n, _)| n == k).map(|(_, e)| *e).unwrap_or(&[])),
        None if is_threshold => ("threshold", THRESHOLD),
        None => ("filter", FILTER),
    };
    if let Some(unknown) = def.keys().find(|k| !COMMON.contains(&k.as_str()) && !extra.contains(&k.as_str())) {
        let known = KINDS.iter().any(|(_, e)| e.contains(&unknown.as_str())) || THRESHOLD.contains(&unknown.as_str());
        return Err(err(if known {
            format!(
                "`{unknown}` does not apply to a {kind_name} rule (it has: {})",
                [COMMON, extra].concat().join(", ")
            )
        } else {
            format!("unknown key `{unknown}` (expected one of: {})", [COMMON, extra].concat().join(", "))
        }));
    }

    let patterns = match def.get("on") {
        None => return Err(err("missing `on` (the topics it listens to)".into())),
        Some(on) => parse_patterns(on).map_err(&err)?,
    };
    let key = d.func("key", 1).map_err(&err)?;
    let emit = d.func("emit", 1).map_err(&err)?;
    let description = match def.get("description") {
        None => None,
        Some(v) if v.is_string() => Some(v.to_string()),
        Some(v) => return Err(err(format!("`description` must be a string, not {}", v.type_name()))),
    };
    let max_keys = match def.get("max_keys") {
        None => None,
        Some(v) => Some(positive_int(v).map_err(|m| err(format!("`max_keys` {m}")))?),
    };
    let remember = match def.get("remember") {
        None => Vec::new(),
        Some(v) => parse_fields(v).map_err(|m| err(format!("`remember` {m}")))?,
    };
    let past = match def.get("past") {
        None => Vec::new(),
        Some(v) => parse_past(v).map_err(&err)?,
    };
    let notify::Notices { actions, every_ms, escalate, inhibit } = notify::notices(&mut d, def, name).map_err(&err)?;
    let on_full = match def.get("on_full").map(|v| (v, v.to_string())) {
        None => None,
        Some((v, s)) if v.is_string() && s == "refuse" => Some(OnFull::Refuse),
        Some((v, s)) if v.is_string() && s == "evict_oldest" => Some(OnFull::EvictOldest),
        Some((v, s)) => {
            let shown = if v.is_string() { format!("\"{s}\"") } else { v.type_name().to_owned() };
            return Err(err(format!("`on_full` must be \"refuse\" or \"evict_oldest\", not {shown}")));
        }
    };

    let kind = match kind_name {
        "filter" => RuleKind::Filter { when: d.func("when", 1).map_err(&err)? },
        "threshold" => RuleKind::Threshold {
            when: d.required("when", 1, "a threshold rule needs `when`").map_err(&err)?,
            clear: d.func("clear", 1).map_err(&err)?,
            emit_clear: d.func("emit_clear", 1).map_err(&err)?,
        },
        "window" => RuleKind::Window {
            spec: window(&mut d, def.get("window")).map_err(&err)?,
            when: d.func("when", 1).map_err(&err)?,
            clear: d.func("clear", 1).map_err(&err)?,
        },
        "stuck" => {
            let s = sub_map("stuck", def.get("stuck"), &["unchanged", "tolerance", "value"]).map_err(&err)?;
            let for_ms = match s.get("unchanged") {
                Some(v) => duration_ms(v).map_err(|m| err(format!("`stuck.unchanged` {m}")))?,
                None => return Err(err("`stuck` needs `unchanged` (how long unchanged means stuck)".into())),
            };
            let tolerance = match s.get("tolerance") {
                None => 0.0,
                Some(v) => number(v)
                    .filter(|t| *t >= 0.0)
                    .ok_or_else(|| err("`stuck.tolerance` must be a number >= 0".into()))?,
            };
            let mut sd = Decl { def: &s, arities: Vec::new() };
            let value = sd.func("value", 1).map_err(|m| err(format!("stuck: {m}")))?;
            d.arities.append(&mut sd.arities);
            RuleKind::Stuck { for_ms, tolerance, value }
        }
        "anomaly" => RuleKind::Anomaly { spec: anomaly(&mut d, def.get("anomaly"), &past).map_err(&err)? },
        "forecast" => RuleKind::Forecast { spec: forecast(&mut d, def.get("forecast")).map_err(&err)? },
        "sequence" => sequence(&mut d, def).map_err(&err)?,
        "heartbeat" => RuleKind::Heartbeat {
            spec: heartbeat(&mut d, def.get("heartbeat")).map_err(&err)?,
            when: d.func("when", 1).map_err(&err)?,
        },
        _ => {
            let on_event = d.required("on_event", 1, "").map_err(&err)?;
            let on_timer = d.func("on_timer", 2).map_err(&err)?;
            let init = match def.get("state") {
                None => Dynamic::from_map(Map::new()),
                Some(v) if v.is_map() => v.clone(),
                Some(v) => return Err(err(format!("`state` must be an object map, not {}", v.type_name()))),
            };
            RuleKind::Handler { on_event, on_timer, init }
        }
    };
    // A heartbeat's keys are the fleet it watches: the least recently seen is the one that
    // went silent, so it refuses new keys rather than evict; every other kind evicts.
    let on_full = on_full.unwrap_or(match kind {
        RuleKind::Heartbeat { .. } => OnFull::Refuse,
        _ => OnFull::EvictOldest,
    });
    Ok(Declared {
        name: name.to_owned(),
        pos,
        description,
        patterns,
        key,
        emit,
        kind,
        max_keys,
        on_full,
        remember,
        past,
        actions,
        every_ms,
        escalate,
        inhibit,
        arities: d.arities,
    })
}

pub(super) struct Decl<'a> {
    def: &'a Map,
    arities: Vec<(String, Func, usize)>,
}

impl Decl<'_> {
    fn func(&mut self, key: &str, arity: usize) -> Result<Option<Func>, String> {
        match self.def.get(key) {
            None => Ok(None),
            Some(v) => {
                let f = as_func(key, v)?;
                self.arities.push((key.to_owned(), f.clone(), arity));
                Ok(Some(f))
            }
        }
    }

    fn required(&mut self, key: &str, arity: usize, why: &str) -> Result<Func, String> {
        self.func(key, arity)?.ok_or_else(|| if why.is_empty() { format!("missing `{key}`") } else { why.to_owned() })
    }
}

fn as_func(key: &str, v: &Dynamic) -> Result<Func, String> {
    if v.is_fnptr() {
        if let Some(p) = v.clone().try_cast::<FnPtr>() {
            return Ok(Func::new(p));
        }
    }
    Err(format!("`{key}` must be a function such as `|e| ...`, not {}", v.type_name()))
}

pub(super) fn sub_map(what: &str, v: Option<&Dynamic>, keys: &[&str]) -> Result<Map, String> {
    let Some(v) = v else { return Ok(Map::new()) };
    let m = v.clone().try_cast::<Map>().ok_or_else(|| format!("`{what}` must be an object map `#{{...}}`"))?;
    if let Some(unknown) = m.keys().find(|k| !keys.contains(&k.as_str())) {
        return Err(format!("unknown key `{what}.{unknown}` (expected one of: {})", keys.join(", ")));
    }
    Ok(m)
}

fn window(d: &mut Decl<'_>, v: Option<&Dynamic>) -> Result<WindowSpec, String> {
    let w = sub_map("window", v, &["size", "count", "tumbling", "filter", "value", "max_events"])?;
    let extent = match (w.get("size"), w.get("count")) {
        (Some(s), None) => Extent::Time(duration_ms(s).map_err(|m| format!("`window.size` {m}"))?),
        (None, Some(c)) => Extent::Count(positive_int(c).map_err(|m| format!("`window.count` {m}"))?),
        _ => return Err("`window` needs exactly one of `size` (a duration) or `count` (a number of events)".into()),
    };
    let tumbling = match w.get("tumbling") {
        None => false,
        Some(b) => b.as_bool().map_err(|_| "`window.tumbling` must be true or false".to_owned())?,
    };
    let max_events = match w.get("max_events") {
        None => DEFAULT_MAX_WINDOW_EVENTS,
        Some(v) => positive_int(v).map_err(|m| format!("`window.max_events` {m}"))?,
    };
    if let Extent::Count(n) = extent {
        if n > max_events {
            return Err(format!("`window.count` ({n}) is over `window.max_events` ({max_events})"));
        }
    }
    let mut wd = Decl { def: &w, arities: Vec::new() };
    let filter = wd.func("filter", 1).map_err(|m| format!("window: {m}"))?;
    let value = wd.func("value", 1).map_err(|m| format!("window: {m}"))?;
    d.arities.append(&mut wd.arities);
    Ok(WindowSpec { extent, tumbling, filter, value, max_events })
}

fn anomaly(d: &mut Decl<'_>, v: Option<&Dynamic>, past: &[PastSpec]) -> Result<AnomalySpec, String> {
    let a = sub_map("anomaly", v, &["value", "learn", "sensitivity", "daily", "report", "baseline"])?;
    let baseline = match a.get("baseline").map(|v| (v.is_string(), v.to_string())) {
        None => None,
        Some((true, b)) if b == "daily" || b == "weekly" => {
            let period_ms = if b == "daily" { 86_400_000 } else { 7 * 86_400_000 };
            let [spec] = past else {
                return Err(format!(
                    "`anomaly.baseline` reads the rule's `past`, which must keep exactly one field (such as `past: #{{ temperature: \"{}\" }}`)",
                    if b == "daily" { "7d by 1h" } else { "28d by 1h" }
                ));
            };
            if spec.every_ms > 3_600_000 || period_ms % spec.every_ms != 0 || spec.span_ms < 2 * period_ms {
                return Err(format!(
                    "`anomaly.baseline: \"{b}\"` needs `past.{}` to span at least two {} in buckets of at most an hour that divide a day, not {}",
                    spec.field,
                    if b == "daily" { "days" } else { "weeks" },
                    spec.describe()
                ));
            }
            Some(Baseline {
                field: spec.field.clone(),
                every_ms: spec.every_ms,
                period_ms,
                times: spec.span_ms / period_ms,
            })
        }
        Some((_, b)) => return Err(format!("`anomaly.baseline` must be \"daily\" or \"weekly\", not {b}")),
    };
    let mut params = Params::default();
    if let Some(v) = a.get("learn") {
        params.learn = u32::try_from(positive_int(v).map_err(|m| format!("`anomaly.learn` {m} (readings)"))?)
            .map_err(|_| "`anomaly.learn` is too large".to_owned())?;
    }
    if let Some(v) = a.get("sensitivity") {
        params.sensitivity = number(v)
            .filter(|s| (0.0..=1.0).contains(s))
            .ok_or_else(|| format!("`anomaly.sensitivity` must be a number from 0 to 1, not {v}"))?;
    }
    if let Some(v) = a.get("daily") {
        params.daily = v.as_bool().map_err(|_| "`anomaly.daily` must be true or false".to_owned())?;
    }
    let every = match a.get("report").map(|v| (v.is_string(), v.to_string())) {
        None => false,
        Some((true, r)) if r == "episodes" => false,
        Some((true, r)) if r == "every" => true,
        Some((_, r)) => return Err(format!("`anomaly.report` must be \"episodes\" or \"every\", not {r}")),
    };
    let mut ad = Decl { def: &a, arities: Vec::new() };
    let value = ad.func("value", 1).map_err(|m| format!("anomaly: {m}"))?;
    d.arities.extend(ad.arities.into_iter().map(|(k, f, a)| (format!("anomaly.{k}"), f, a)));
    Ok(AnomalySpec { value, params, every, baseline })
}

fn forecast(d: &mut Decl<'_>, v: Option<&Dynamic>) -> Result<ForecastSpec, String> {
    let f = sub_map("forecast", v, &["value", "below", "above", "horizon", "window", "confidence", "learn"])?;
    let (threshold, below) = match (f.get("below"), f.get("above")) {
        (Some(v), None) => (v, true),
        (None, Some(v)) => (v, false),
        _ => return Err("`forecast` needs exactly one of `below` or `above` (the threshold warned about)".into()),
    };
    let which = if below { "below" } else { "above" };
    let threshold = number(threshold)
        .filter(|t| t.is_finite())
        .ok_or_else(|| format!("`forecast.{which}` must be a number, not {threshold}"))?;
    let horizon_ms = match f.get("horizon") {
        Some(v) => duration_ms(v).map_err(|m| format!("`forecast.horizon` {m}"))?,
        None => return Err("`forecast` needs `horizon` (how far ahead to warn, such as \"24h\")".into()),
    };
    let window_ms = match f.get("window") {
        None => horizon_ms,
        Some(v) => duration_ms(v).map_err(|m| format!("`forecast.window` {m}"))?,
    };
    let learn_ms = match f.get("learn") {
        None => window_ms / 2,
        Some(v) => duration_ms(v).map_err(|m| format!("`forecast.learn` {m}"))?,
    };
    let confidence = match f.get("confidence") {
        None => 0.8,
        Some(v) => number(v)
            .filter(|c| (0.0..=1.0).contains(c))
            .ok_or_else(|| format!("`forecast.confidence` must be a number from 0 to 1, not {v}"))?,
    };
    let mut fd = Decl { def: &f, arities: Vec::new() };
    let value = fd.func("value", 1).map_err(|m| format!("forecast: {m}"))?;
    d.arities.extend(fd.arities.into_iter().map(|(k, f, a)| (format!("forecast.{k}"), f, a)));
    Ok(ForecastSpec { value, window_ms, threshold, below, horizon_ms, confidence, learn_ms })
}

fn sequence(d: &mut Decl<'_>, def: &Map) -> Result<RuleKind, String> {
    let Some(steps) = def.get("sequence").and_then(|v| v.clone().try_cast::<rhai::Array>()) else {
        return Err("`sequence` must be a list of steps `[#{ when: |e| ... }, ...]`".into());
    };
    let within_ms = match def.get("within") {
        Some(v) => duration_ms(v).map_err(|m| format!("`within` {m}"))?,
        None => return Err("a sequence needs `within` (how long the whole sequence may take)".into()),
    };
    let max_partial = match def.get("max_partial") {
        None => DEFAULT_MAX_PARTIAL,
        Some(v) => positive_int(v).map_err(|m| format!("`max_partial` {m}"))?,
    };
    let mut out = Vec::with_capacity(steps.len());
    for (i, s) in steps.iter().enumerate() {
        let what = format!("sequence[{i}]");
        let m = sub_map(&what, Some(s), &["name", "when", "times", "absent"])?;
        let name: rhai::ImmutableString = match m.get("name") {
            None => format!("step{i}").into(),
            Some(n) if n.is_string() => n.to_string().into(),
            Some(_) => return Err(format!("`{what}.name` must be a string")),
        };
        if out.iter().any(|s: &Step| s.name == name) {
            return Err(format!("`{what}.name`: step name `{name}` is used twice"));
        }
        let mut sd = Decl { def: &m, arities: Vec::new() };
        let when = sd.required("when", 1, &format!("`{what}` needs `when`"))?;
        d.arities.extend(sd.arities.into_iter().map(|(k, f, a)| (format!("{what}.{k}"), f, a)));
        let times = match m.get("times") {
            None => 1,
            Some(v) => u32::try_from(positive_int(v).map_err(|e| format!("`{what}.times` {e}"))?)
                .map_err(|_| format!("`{what}.times` is too large"))?,
        };
        let absent = match m.get("absent") {
            None => false,
            Some(b) => b.as_bool().map_err(|_| format!("`{what}.absent` must be true or false"))?,
        };
        if absent && times != 1 {
            return Err(format!("`{what}`: an absent step cannot have `times`"));
        }
        out.push(Step { name, when, times, absent });
    }
    match out.first() {
        None => return Err("`sequence` lists no step".into()),
        Some(s) if s.absent => {
            return Err("the first step of a sequence cannot be `absent`: nothing would start it".into());
        }
        _ => {}
    }
    Ok(RuleKind::Sequence { steps: out, within_ms, max_partial })
}

fn heartbeat(d: &mut Decl<'_>, v: Option<&Dynamic>) -> Result<HeartbeatSpec, String> {
    let keys = ["timeout", "timeout_of", "expected", "timeout_column", "grace", "offline", "flap", "sparkplug"];
    let h = sub_map("heartbeat", v, &keys)?;
    let sparkplug = match h.get("sparkplug") {
        None => false,
        Some(v) => v.as_bool().map_err(|_| "`heartbeat.sparkplug` must be true or false".to_owned())?,
    };
    let timeout_ms = match h.get("timeout") {
        Some(v) => duration_ms(v).map_err(|m| format!("`heartbeat.timeout` {m}"))?,
        // Sparkplug nodes report by exception: their births and deaths say when they come and go.
        None if sparkplug => crate::rule::NO_TIMEOUT_MS,
        None => return Err("`heartbeat` needs `timeout` (or `sparkplug: true`)".into()),
    };
    if timeout_ms > i64::from(u32::MAX) {
        return Err("`heartbeat.timeout` must be at most 49 days".into());
    }
    let string = |k: &str| -> Result<Option<String>, String> {
        match h.get(k) {
            None => Ok(None),
            Some(v) if v.is_string() => Ok(Some(v.to_string())),
            Some(_) => Err(format!("`heartbeat.{k}` must be a string")),
        }
    };
    let expected = string("expected")?;
    let timeout_column = string("timeout_column")?;
    if timeout_column.is_some() && expected.is_none() {
        return Err("`heartbeat.timeout_column` needs `heartbeat.expected` (the table it is a column of)".into());
    }
    let grace_ms = match h.get("grace") {
        None => timeout_ms,
        Some(v) => duration_ms(v).map_err(|m| format!("`heartbeat.grace` {m}"))?,
    };
    let flap = match h.get("flap") {
        None => None,
        Some(f) => {
            let f = sub_map("heartbeat.flap", Some(f), &["window", "max"])?;
            let window = f.get("window").ok_or("`heartbeat.flap` needs `window`")?;
            let window = duration_ms(window).map_err(|m| format!("`heartbeat.flap.window` {m}"))?;
            let max = f.get("max").ok_or("`heartbeat.flap` needs `max` (transitions reported before suppressing)")?;
            let max = u32::try_from(positive_int(max).map_err(|m| format!("`heartbeat.flap.max` {m}"))?)
                .map_err(|_| "`heartbeat.flap.max` is too large".to_owned())?;
            Some((window, max))
        }
    };
    let mut hd = Decl { def: &h, arities: Vec::new() };
    let timeout_of = hd.func("timeout_of", 1).map_err(|m| format!("heartbeat: {m}"))?;
    let offline = hd.func("offline", 1).map_err(|m| format!("heartbeat: {m}"))?;
    d.arities.extend(hd.arities.into_iter().map(|(k, f, a)| (format!("heartbeat.{k}"), f, a)));
    Ok(HeartbeatSpec { timeout_ms, timeout_of, expected, timeout_column, grace_ms, offline, sparkplug, flap })
}

/// A field name or a list of them (`"temperature"`, `["temperature", "humidity"]`).
fn parse_fields(v: &Dynamic) -> Result<Vec<std::sync::Arc<str>>, String> {
    let items = if v.is_string() {
        vec![v.clone()]
    } else {
        v.clone().into_array().map_err(|t| format!("must be a field name or a list of them, not {t}"))?
    };
    let mut fields: Vec<std::sync::Arc<str>> = Vec::with_capacity(items.len());
    for item in items {
        if !item.is_string() || item.to_string().is_empty() {
            return Err(format!("must list field names as non-empty strings, found {}", item.type_name()));
        }
        let f: std::sync::Arc<str> = item.to_string().into();
        if !fields.contains(&f) {
            fields.push(f);
        }
    }
    Ok(fields)
}

/// `past: #{ temperature: "7d by 1h", ... }`: per field, a span and a bucket width.
fn parse_past(v: &Dynamic) -> Result<Vec<PastSpec>, String> {
    let Some(map) = v.read_lock::<Map>().map(|m| m.clone()) else {
        return Err(format!(
            "`past` must be an object map of fields to \"<span> by <every>\" (#{{ temperature: \"7d by 1h\" }}), not {}",
            v.type_name()
        ));
    };
    if map.is_empty() {
        return Err("`past` names no field".into());
    }
    if map.len() > MAX_FIELDS {
        return Err(format!("`past` names {} fields; at most {MAX_FIELDS}", map.len()));
    }
    let mut specs = Vec::with_capacity(map.len());
    for (field, spec) in &map {
        if field.is_empty() {
            return Err("`past` names an empty field".into());
        }
        let what = format!("`past.{field}`");
        if !spec.is_string() {
            return Err(format!("{what} must be text such as \"7d by 1h\", not {}", spec.type_name()));
        }
        let text = spec.to_string();
        let Some((span, every)) = text.split_once(" by ") else {
            return Err(format!("{what}: `{text}` is not \"<span> by <every>\", such as \"7d by 1h\""));
        };
        let ms = |t: &str, which: &str| {
            duration_ms(&Dynamic::from(t.trim().to_owned())).map_err(|m| format!("{what}: the {which} {m}"))
        };
        let (span_ms, every_ms) = (ms(span, "span")?, ms(every, "bucket width")?);
        if span_ms % every_ms != 0 {
            return Err(format!("{what}: the span {} is not a whole number of {} buckets", span.trim(), every.trim()));
        }
        let buckets = span_ms / every_ms;
        if buckets > MAX_BUCKETS {
            return Err(format!(
                "{what}: `{text}` is {buckets} buckets, more than {MAX_BUCKETS}; shorten the span or widen the buckets"
            ));
        }
        specs.push(PastSpec { field: field.as_str().into(), span_ms, every_ms });
    }
    Ok(specs)
}

fn parse_patterns(on: &Dynamic) -> Result<Vec<TopicPattern>, String> {
    let texts: Vec<String> = if on.is_string() {
        vec![on.to_string()]
    } else if on.is_array() {
        let arr = on.clone().into_array().unwrap_or_default();
        let mut v = Vec::with_capacity(arr.len());
        for item in arr {
            if !item.is_string() {
                return Err(format!("`on` must list topic patterns as strings, found {}", item.type_name()));
            }
            v.push(item.to_string());
        }
        v
    } else {
        return Err(format!("`on` must be a topic pattern or a list of them, not {}", on.type_name()));
    };
    if texts.is_empty() {
        return Err("`on` lists no topic pattern".into());
    }
    texts.iter().map(|t| TopicPattern::parse(t).map_err(|e| format!("topic pattern `{t}`: {e}"))).collect()
}

/// A duration: text such as `"30s"`, `"1m 30s"`, `"500ms"`, or whole milliseconds.
pub(crate) fn duration_ms(v: &Dynamic) -> Result<i64, String> {
    // Borrowed, not formatted: `history(...)` reads its span with every call.
    let ms = if let Ok(s) = v.as_immutable_string_ref() {
        let text = s.as_str();
        let d =
            humantime::parse_duration(text).map_err(|e| format!("`{text}` is not a duration ({e}); try \"30s\""))?;
        i64::try_from(d.as_millis()).map_err(|_| format!("`{text}` is too long"))?
    } else if let Ok(i) = v.as_int() {
        i
    } else {
        return Err(format!("must be a duration such as \"30s\" or a number of milliseconds, not {}", v.type_name()));
    };
    if ms <= 0 {
        return Err("must be longer than zero".into());
    }
    Ok(ms)
}

fn positive_int(v: &Dynamic) -> Result<usize, String> {
    match v.as_int() {
        Ok(i) if i > 0 => usize::try_from(i).map_err(|_| "is too large".to_owned()),
        _ => Err("must be a whole number above zero".into()),
    }
}

/// A Rhai number as f64.
pub(crate) fn number(v: &Dynamic) -> Option<f64> {
    v.as_float().ok().or_else(|| v.as_int().ok().map(|i| i as f64))
}
