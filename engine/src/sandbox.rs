//! The Rhai sandbox every rule runs in, and the loader that turns a rule file into rules.
//!
//! A rule file is a Rhai script whose top level calls `rule(name, #{ ... })` once per rule.
//! The script runs once, at load time, under the same limits as the rules themselves; the
//! closures it passes (`when`, `emit`, `key`, ...) are kept and called per event.
//!
//! Functions rules can call besides Rhai's standard library:
//! `lookup(table, key)`, `lookup(table, key, column)`, `lookup(table, key, column, default)`,
//! `table_keys(table)`, `now()`, `duration(text)`, `history(field, span)`,
//! `history(field, span, offset)`, `history(field, span, offset, times)`; in handlers also `emit(data)`,
//! `after(delay, name)`, `after(delay, name, data)` and `cancel(name)`. Rhai's math
//! functions also take integers (see `math`).

use crate::context::{self, TimerRequest};
use crate::declare::{self, Declared};
use crate::past::Ask;
use crate::rule::{Origin, Rule, RuleSet};
use rhai::{Dynamic, EvalAltResult, ImmutableString, Map, NativeCallContext, Position};
use std::cell::{Cell, RefCell};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Limits on what one rule call may do. Every rule runs under them, so a runaway rule is
/// stopped and reported instead of stalling the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Rhai operations per call (a loop iteration, an expression step).
    pub max_operations: u64,
    /// Nesting of function calls.
    pub max_call_levels: usize,
    /// Nesting of expressions at the top level of a file.
    pub max_expr_depth: usize,
    /// Nesting of expressions inside functions.
    pub max_fn_expr_depth: usize,
    /// Longest string a rule may build, in bytes.
    pub max_string_size: usize,
    /// Largest array a rule may build.
    pub max_array_size: usize,
    /// Largest object map a rule may build.
    pub max_map_size: usize,
    /// Wall-clock budget of one call. Operations are counted, but one operation can be
    /// expensive (sorting a 4096-item array, replacing in a 16 KiB string), so time is
    /// checked too, every [`CLOCK_EVERY_OPS`] operations. Only a rule that overruns it
    /// behaves differently on a slower machine.
    pub max_call_time: Duration,
}

/// How many operations pass between two looks at the clock in a call.
pub const CLOCK_EVERY_OPS: u64 = 1024;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_operations: 100_000,
            max_call_levels: 16,
            max_expr_depth: 64,
            max_fn_expr_depth: 32,
            max_string_size: 16 * 1024,
            max_array_size: 4096,
            max_map_size: 1024,
            max_call_time: Duration::from_millis(100),
        }
    }
}

/// A rule file that could not be loaded, with the position of the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}:{col}: {message}")]
pub struct CompileError {
    /// The file, as the caller named it.
    pub file: String,
    /// 1-based line; 0 when the problem is the file as a whole.
    pub line: usize,
    /// 1-based column; 0 when unknown.
    pub col: usize,
    /// What is wrong.
    pub message: String,
}

impl CompileError {
    fn at(file: &str, pos: Position, message: impl Into<String>) -> Self {
        CompileError {
            file: file.to_owned(),
            line: pos.line().unwrap_or(0),
            col: pos.position().unwrap_or(0),
            message: message.into(),
        }
    }
}

thread_local! {
    /// Rules declared by the file being loaded on this thread; `None` outside loading, so a
    /// rule that calls `rule()` from a predicate gets an error instead of a side effect.
    static DECLARED: RefCell<Option<Vec<Declared>>> = const { RefCell::new(None) };
    /// When the Rhai call running on this thread began (set at its first operation).
    static CALL_STARTED: Cell<Option<Instant>> = const { Cell::new(None) };
    /// Spans and offsets `history(...)` parsed, in ms: rules ask the same few with every
    /// call, and parsing `"1h"` costs several times finding it here. A short list rather
    /// than a hash map (3 KB less code); bounded by [`SPANS_KEPT`] (cleared when full), only
    /// valid texts kept.
    static SPANS: RefCell<Vec<(ImmutableString, i64)>> = const { RefCell::new(Vec::new()) };
}

/// Most span texts [`SPANS`] keeps.
const SPANS_KEPT: usize = 16;

/// The sandboxed script engine shared by all rules.
pub struct Sandbox {
    engine: rhai::Engine,
    limits: Limits,
}

impl fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sandbox").field("limits", &self.limits).finish_non_exhaustive()
    }
}

impl Default for Sandbox {
    fn default() -> Self {
        Sandbox::new(Limits::default())
    }
}

type NativeResult<T> = Result<T, Box<EvalAltResult>>;

fn runtime_error(ctx: &NativeCallContext<'_>, msg: String) -> Box<EvalAltResult> {
    EvalAltResult::ErrorRuntime(msg.into(), ctx.call_position()).into()
}

impl Sandbox {
    /// A script engine with the given limits, no `eval`, no modules (rhai's `no_module`: no
    /// `import` at all, so no file access through it), and `print`/`debug`
    /// routed to the log.
    pub fn new(limits: Limits) -> Self {
        let mut engine = rhai::Engine::new();
        engine
            .set_max_operations(limits.max_operations)
            .set_max_call_levels(limits.max_call_levels)
            .set_max_expr_depths(limits.max_expr_depth, limits.max_fn_expr_depth)
            .set_max_string_size(limits.max_string_size)
            .set_max_array_size(limits.max_array_size)
            .set_max_map_size(limits.max_map_size)
            .set_strict_variables(true)
            .disable_symbol("eval");
        let budget = limits.max_call_time;
        engine.on_progress(move |ops| {
            // Each call counts its operations from 1.
            if ops == 1 {
                CALL_STARTED.set(Some(Instant::now()));
                return None;
            }
            if ops % CLOCK_EVERY_OPS != 0 {
                return None;
            }
            let took = CALL_STARTED.get()?.elapsed();
            (took > budget).then(|| {
                Dynamic::from(format!(
                    "Stopped after {} ms: over the time budget of {} ms",
                    took.as_millis(),
                    budget.as_millis()
                ))
            })
        });
        engine.on_print(|text| tracing::info!(target: "edgewatch::rule", text, "Rule printed."));
        engine.on_debug(|text, source, pos| {
            tracing::debug!(target: "edgewatch::rule", text, source, %pos, "Rule debug output.");
        });
        register_functions(&mut engine);
        crate::math::register(&mut engine);
        Sandbox { engine, limits }
    }

    /// The limits this sandbox enforces.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub(crate) fn engine(&self) -> &rhai::Engine {
        &self.engine
    }

    /// Compiles one rule file: parses it, runs its top level once to collect the rules it
    /// declares, and checks each declaration. `file` names the file in errors.
    pub fn compile_file(&self, file: &str, source: &str) -> Result<Vec<Rule>, CompileError> {
        let mut ast =
            self.engine.compile(source).map_err(|e| CompileError::at(file, e.position(), e.err_type().to_string()))?;
        ast.set_source(file);

        DECLARED.with(|d| *d.borrow_mut() = Some(Vec::new()));
        let ran = self.engine.run_ast(&ast);
        let declared = DECLARED.with(|d| d.borrow_mut().take()).unwrap_or_default();
        if let Err(err) = ran {
            let (pos, message) = describe(&err);
            return Err(CompileError::at(file, pos, message));
        }

        let ast = Arc::new(ast);
        let file: Arc<str> = file.into();
        let mut rules: Vec<Rule> = Vec::with_capacity(declared.len());
        for d in declared {
            if rules.iter().any(|r| *r.name == *d.name) {
                return Err(CompileError::at(
                    &file,
                    d.pos,
                    format!("rule `{}` is declared twice in this file", d.name),
                ));
            }
            for (what, f, arity) in &d.arities {
                if !f.resolves_in(&ast, *arity) {
                    let found = f.arity_in(&ast).map(|n| format!("it takes {n}")).unwrap_or_else(|| {
                        "it is not a function of this file (use a closure such as `|e| ...`)".to_owned()
                    });
                    let params = if *arity == 1 { "1 parameter".to_owned() } else { format!("{arity} parameters") };
                    return Err(CompileError::at(
                        &file,
                        d.pos,
                        format!("rule `{}`: `{what}` must take {params}, but {found}", d.name),
                    ));
                }
            }
            rules.push(Rule {
                name: d.name.into(),
                origin: Origin {
                    file: file.clone(),
                    line: d.pos.line().unwrap_or(0),
                    col: d.pos.position().unwrap_or(0),
                },
                description: d.description,
                patterns: d.patterns,
                key: d.key,
                emit: d.emit,
                kind: d.kind,
                max_keys: d.max_keys,
                on_full: d.on_full,
                remember: d.remember,
                past: d.past.into(),
                actions: d.actions,
                every_ms: d.every_ms,
                escalate: d.escalate,
                inhibit: d.inhibit,
                ast: ast.clone(),
            });
        }
        Ok(rules)
    }
}

/// Deepest nesting of arrays and maps in a value a rule keeps (handler state, timer data) or
/// emits. Rhai bounds how much data a value holds but not how deep it nests.
pub const MAX_DATA_DEPTH: usize = 64;

/// Checks a value a rule hands back to keep or emit against the sandbox's limits, in total
/// as Rhai counts them (array items, map entries and string bytes, nested values included),
/// and its nesting against [`MAX_DATA_DEPTH`]. Rhai checks sizes as a script runs, but not
/// all in-place changes (`m[k] = v` on a map argument, `this`), so what survives a call is
/// checked here.
pub(crate) fn check_data(engine: &rhai::Engine, value: &Dynamic) -> Result<(), String> {
    let limit = |n: usize| if n == 0 { usize::MAX } else { n };
    let mut left = [limit(engine.max_array_size()), limit(engine.max_map_size()), limit(engine.max_string_size())];
    walk(value, 0, &mut left).map_err(|what| match what {
        Over::Depth => format!("nested deeper than {MAX_DATA_DEPTH} levels"),
        Over::Size(i) => {
            let (what, max) = [
                ("array items", engine.max_array_size()),
                ("map entries", engine.max_map_size()),
                ("string bytes", engine.max_string_size()),
            ][i];
            format!("holds more than {max} {what}")
        }
    })
}

enum Over {
    Depth,
    /// Index into the budget: arrays, maps, strings.
    Size(usize),
}

fn walk(v: &Dynamic, depth: usize, left: &mut [usize; 3]) -> Result<(), Over> {
    let mut take = |i: usize, n: usize| match left[i].checked_sub(n) {
        Some(rest) => {
            left[i] = rest;
            Ok(())
        }
        None => Err(Over::Size(i)),
    };
    // The `is_*` checks first: the `as_*` accessors name the actual type in their error,
    // which costs more than the check, and most values are neither.
    let (string, blob, array, map) = (v.is_string(), v.is_blob(), v.is_array(), v.is_map());
    if string {
        return v.as_immutable_string_ref().map_or(Ok(()), |s| take(2, s.len()));
    }
    if blob {
        return v.read_lock::<rhai::Blob>().map_or(Ok(()), |b| take(0, b.len()));
    }
    if depth >= MAX_DATA_DEPTH && (array || map) {
        return Err(Over::Depth);
    }
    if array {
        if let Ok(a) = v.as_array_ref() {
            take(0, a.len())?;
            return a.iter().try_for_each(|x| walk(x, depth + 1, left));
        }
    }
    if map {
        if let Ok(m) = v.as_map_ref() {
            take(1, m.len())?;
            return m.values().try_for_each(|x| walk(x, depth + 1, left));
        }
    }
    Ok(())
}

/// Finds a number that JSON cannot carry (NaN, ±infinity) in a value a rule emits, which
/// would otherwise go out silently as `null`. The error names its path from `root`, as a
/// rule would write it (`data.a.b[1]`) and what it is, such as "`data.ratio` is NaN".
pub(crate) fn check_finite(root: &str, value: &Dynamic) -> Result<(), String> {
    // Every emitted event is checked and almost none has one: look first, name the path only
    // when there is something to name.
    if !any_non_finite(value, 0) {
        return Ok(());
    }
    let mut path = root.to_owned();
    find_non_finite(value, &mut path, 0).map_or(Ok(()), |what| Err(format!("`{path}` is {what}")))
}

/// Whether there is a non-finite number under `v`, without building a path.
fn any_non_finite(v: &Dynamic, depth: usize) -> bool {
    if v.is_float() {
        return v.as_float().is_ok_and(|x| !x.is_finite());
    }
    if depth > MAX_DATA_DEPTH {
        return false;
    }
    if v.is_array() {
        return v.as_array_ref().is_ok_and(|a| a.iter().any(|x| any_non_finite(x, depth + 1)));
    }
    if v.is_map() {
        return v.as_map_ref().is_ok_and(|m| m.values().any(|x| any_non_finite(x, depth + 1)));
    }
    false
}

/// What the first non-finite number under `v` is; `path` is left pointing at it.
fn find_non_finite(v: &Dynamic, path: &mut String, depth: usize) -> Option<&'static str> {
    if let Ok(x) = v.as_float() {
        return match x {
            x if x.is_nan() => Some("NaN"),
            x if x == f64::INFINITY => Some("infinite"),
            x if x == f64::NEG_INFINITY => Some("-infinite"),
            _ => None,
        };
    }
    // Deeper values were refused by `check_data` already; this bounds the recursion anyway.
    if depth > MAX_DATA_DEPTH {
        return None;
    }
    let len = path.len();
    if let Ok(a) = v.as_array_ref() {
        for (i, x) in a.iter().enumerate() {
            path.push_str(&format!("[{i}]"));
            if let Some(what) = find_non_finite(x, path, depth + 1) {
                return Some(what);
            }
            path.truncate(len);
        }
    } else if let Ok(m) = v.as_map_ref() {
        for (k, x) in m.iter() {
            let plain = k.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if plain {
                path.push('.');
                path.push_str(k);
            } else {
                path.push_str(&format!("[{k:?}]"));
            }
            if let Some(what) = find_non_finite(x, path, depth + 1) {
                return Some(what);
            }
            path.truncate(len);
        }
    }
    None
}

/// The innermost position and a message without Rhai's own position suffix.
pub(crate) fn describe(err: &EvalAltResult) -> (Position, String) {
    let inner = err.unwrap_inner();
    let pos = if inner.position().is_none() { err.position() } else { inner.position() };
    let message = match inner {
        EvalAltResult::ErrorRuntime(value, _) | EvalAltResult::ErrorTerminated(value, _) => {
            // A bare `throw` throws `()`, which prints as nothing.
            Some(value.to_string()).filter(|t| !t.is_empty()).unwrap_or_else(|| "`throw` without a message".to_owned())
        }
        other => {
            let text = other.to_string();
            let suffix = format!(" ({})", other.position());
            text.strip_suffix(&suffix).map(str::to_owned).unwrap_or(text)
        }
    };
    (pos, message)
}

fn register_functions(engine: &mut rhai::Engine) {
    // rule(name, #{...}): only while a file loads.
    engine.register_fn("rule", |ctx: NativeCallContext<'_>, name: &str, def: Map| -> NativeResult<()> {
        let loading = DECLARED.with(|d| d.borrow().is_some());
        if !loading {
            return Err(runtime_error(&ctx, "`rule(...)` may only be called at the top level of a rule file".into()));
        }
        let declared = declare::declare(name, &def, ctx.call_position()).map_err(|m| runtime_error(&ctx, m))?;
        DECLARED.with(|d| {
            if let Some(list) = d.borrow_mut().as_mut() {
                list.push(declared);
            }
        });
        Ok(())
    });

    // Lookup tables.
    fn row(ctx: &NativeCallContext<'_>, table: &str, key: &str) -> NativeResult<Dynamic> {
        context::with(|c| match c.tables.get(table) {
            None => Err(runtime_error(ctx, format!("no lookup table named `{table}`"))),
            Some(t) => Ok(t.get(key).map(|r| Dynamic::from_map(r.clone())).unwrap_or(Dynamic::UNIT)),
        })
    }
    engine.register_fn("lookup", |ctx: NativeCallContext<'_>, table: &str, key: &str| row(&ctx, table, key));
    engine.register_fn("lookup", |ctx: NativeCallContext<'_>, table: &str, key: &str, column: &str| {
        let r = row(&ctx, table, key)?;
        Ok::<_, Box<EvalAltResult>>(r.read_lock::<Map>().and_then(|m| m.get(column).cloned()).unwrap_or(Dynamic::UNIT))
    });
    engine.register_fn(
        "lookup",
        |ctx: NativeCallContext<'_>, table: &str, key: &str, column: &str, default: Dynamic| {
            let r = row(&ctx, table, key)?;
            let v = r.read_lock::<Map>().and_then(|m| m.get(column).cloned());
            Ok::<_, Box<EvalAltResult>>(v.unwrap_or(default))
        },
    );
    engine.register_fn("table_keys", |ctx: NativeCallContext<'_>, table: &str| {
        context::with(|c| match c.tables.get(table) {
            None => Err(runtime_error(&ctx, format!("no lookup table named `{table}`"))),
            Some(t) => Ok(t.keys().map(|k| Dynamic::from(k.to_owned())).collect::<rhai::Array>()),
        })
    });

    // Time.
    engine.register_fn("now", || context::with(|c| c.now));
    engine.register_fn("duration", |ctx: NativeCallContext<'_>, text: &str| {
        declare::duration_ms(&Dynamic::from(text.to_owned())).map_err(|m| runtime_error(&ctx, format!("duration: {m}")))
    });

    // The rule's past (`past`), for the key being evaluated.
    fn history(
        ctx: &NativeCallContext<'_>,
        field: &str,
        span: &Dynamic,
        offset: Option<&Dynamic>,
        times: i64,
    ) -> NativeResult<Dynamic> {
        let ms = |v: &Dynamic, what: &str| -> NativeResult<i64> {
            let text = v.as_immutable_string_ref().ok().map(|s| s.clone());
            let known = |t: &ImmutableString| SPANS.with_borrow(|m| m.iter().find(|(k, _)| k == t).map(|(_, ms)| *ms));
            if let Some(ms) = text.as_ref().and_then(known) {
                return Ok(ms);
            }
            let ms = declare::duration_ms(v).map_err(|m| runtime_error(ctx, format!("history: the {what} {m}")))?;
            if let Some(t) = text {
                SPANS.with_borrow_mut(|m| {
                    if m.len() >= SPANS_KEPT {
                        m.clear();
                    }
                    m.push((t, ms));
                });
            }
            Ok(ms)
        };
        let ask = Ask {
            span_ms: ms(span, "span")?,
            offset_ms: offset.map(|o| ms(o, "offset")).transpose()?.unwrap_or(0),
            times,
        };
        context::with(|c| {
            let Some(call) = &c.past else {
                return Err(runtime_error(
                    ctx,
                    "history: no past here: the rule declares no `past`, or this is its `key` (which runs before the key's past is known)".into(),
                ));
            };
            let summary = call.state.history(&call.specs, field, ask, call.at).map_err(|m| runtime_error(ctx, m))?;
            Ok(summary.to_dynamic())
        })
    }
    engine.register_fn("history", |ctx: NativeCallContext<'_>, field: &str, span: Dynamic| {
        history(&ctx, field, &span, None, 1)
    });
    engine.register_fn("history", |ctx: NativeCallContext<'_>, field: &str, span: Dynamic, offset: Dynamic| {
        history(&ctx, field, &span, Some(&offset), 1)
    });
    engine.register_fn(
        "history",
        |ctx: NativeCallContext<'_>, field: &str, span: Dynamic, offset: Dynamic, times: i64| {
            history(&ctx, field, &span, Some(&offset), times)
        },
    );

    // Handlers.
    fn in_handler(ctx: &NativeCallContext<'_>, what: &str) -> NativeResult<()> {
        if context::with(|c| c.handler) {
            Ok(())
        } else {
            Err(runtime_error(ctx, format!("`{what}(...)` can only be called from `on_event` or `on_timer`")))
        }
    }
    engine.register_fn("emit", |ctx: NativeCallContext<'_>, data: Dynamic| {
        in_handler(&ctx, "emit")?;
        context::with(|c| {
            if c.emitted.len() >= 64 {
                return Err(runtime_error(&ctx, "more than 64 `emit` calls in one call".into()));
            }
            c.emitted.push(data);
            Ok(())
        })
    });
    fn after(ctx: &NativeCallContext<'_>, delay: Dynamic, name: ImmutableString, data: Dynamic) -> NativeResult<()> {
        in_handler(ctx, "after")?;
        let delay_ms = declare::duration_ms(&delay).map_err(|m| runtime_error(ctx, format!("after: delay {m}")))?;
        context::with(|c| c.timers.push(TimerRequest::After { delay_ms, name, data }));
        Ok(())
    }
    engine.register_fn("after", |ctx: NativeCallContext<'_>, delay: Dynamic, name: ImmutableString| {
        after(&ctx, delay, name, Dynamic::UNIT)
    });
    engine.register_fn("after", |ctx: NativeCallContext<'_>, delay: Dynamic, name: ImmutableString, data: Dynamic| {
        after(&ctx, delay, name, data)
    });
    engine.register_fn("cancel", |ctx: NativeCallContext<'_>, name: ImmutableString| {
        in_handler(&ctx, "cancel")?;
        context::with(|c| c.timers.push(TimerRequest::Cancel { name }));
        Ok::<_, Box<EvalAltResult>>(())
    });
}

// Compiling files into a rule set lives here, with the compiler: `rule` is plain data and
// imports nothing that imports it back.
impl RuleSet {
    /// Compiles every `(file name, source)` pair. A file that fails is left out whole and
    /// reported; the others still load. A rule name used by an earlier file is an error in
    /// the later one.
    pub fn compile<'a>(
        sandbox: &Sandbox,
        files: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> (RuleSet, Vec<CompileError>) {
        let mut rules: Vec<Arc<Rule>> = Vec::new();
        let mut errors = Vec::new();
        for (file, source) in files {
            match sandbox.compile_file(file, source) {
                Ok(compiled) => {
                    let first = |name: &str| rules.iter().find(|r| &*r.name == name).map(|r| r.origin.to_string());
                    if let Some((dup, first)) = compiled.iter().find_map(|r| first(&r.name).map(|f| (r, f))) {
                        errors.push(CompileError {
                            file: file.to_owned(),
                            line: dup.origin.line,
                            col: dup.origin.col,
                            message: format!("rule `{}` is already declared at {first}", dup.name),
                        });
                        continue;
                    }
                    rules.extend(compiled.into_iter().map(Arc::new));
                }
                Err(e) => errors.push(e),
            }
        }
        (RuleSet::from_rules(rules).0, errors)
    }
}
