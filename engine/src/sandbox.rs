//! The Rhai sandbox every rule runs in, and the loader that turns a rule file into rules.
//!
//! A rule file is a Rhai script whose top level calls `rule(name, #{ ... })` once per rule.
//! The script runs once, at load time, under the same limits as the rules themselves; the
//! closures it passes (`when`, `emit`, `key`) are kept and called per event.

use crate::rule::{Origin, Rule, RuleKind};
use crate::topic::TopicPattern;
use rhai::{Dynamic, EvalAltResult, FnPtr, Map, NativeCallContext, Position};
use std::cell::RefCell;
use std::fmt;
use std::sync::Arc;

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
}

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

/// A rule as declared by `rule(...)`, before the file's AST is attached.
struct Declared {
    name: String,
    pos: Position,
    description: Option<String>,
    patterns: Vec<TopicPattern>,
    key: Option<FnPtr>,
    kind: RuleKind,
}

thread_local! {
    /// Rules declared by the file being loaded on this thread; `None` outside loading, so a
    /// rule that calls `rule()` from a predicate gets an error instead of a side effect.
    static DECLARED: RefCell<Option<Vec<Declared>>> = const { RefCell::new(None) };
}

/// The keys `rule(name, #{...})` accepts.
const RULE_KEYS: &[&str] = &["on", "when", "emit", "key", "description"];

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

impl Sandbox {
    /// A script engine with the given limits, no `eval`, no modules, and `print`/`debug`
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
            .set_max_modules(0)
            .set_module_resolver(rhai::module_resolvers::DummyModuleResolver::new())
            .set_strict_variables(true)
            .disable_symbol("eval");
        engine.on_print(|text| tracing::info!(target: "edgewatch::rule", text, "Rule printed."));
        engine.on_debug(|text, source, pos| {
            tracing::debug!(target: "edgewatch::rule", text, source, %pos, "Rule debug output.");
        });
        engine.register_fn("rule", declare_rule);
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
                kind: d.kind,
                ast: ast.clone(),
            });
        }
        Ok(rules)
    }
}

/// The innermost position and a message without Rhai's own position suffix.
pub(crate) fn describe(err: &EvalAltResult) -> (Position, String) {
    let inner = err.unwrap_inner();
    let pos = if inner.position().is_none() { err.position() } else { inner.position() };
    let message = match inner {
        EvalAltResult::ErrorRuntime(value, _) => value.to_string(),
        other => {
            let text = other.to_string();
            let suffix = format!(" ({})", other.position());
            text.strip_suffix(&suffix).map(str::to_owned).unwrap_or(text)
        }
    };
    (pos, message)
}

/// `rule(name, #{ on: ..., when: ..., emit: ..., key: ... })`, callable only while a file loads.
fn declare_rule(ctx: NativeCallContext<'_>, name: &str, def: Map) -> Result<(), Box<EvalAltResult>> {
    let pos = ctx.call_position();
    let fail = |msg: String| -> Box<EvalAltResult> { EvalAltResult::ErrorRuntime(msg.into(), pos).into() };

    let loading = DECLARED.with(|d| d.borrow().is_some());
    if !loading {
        return Err(fail("`rule(...)` may only be called at the top level of a rule file".into()));
    }
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        return Err(fail(format!("rule name `{name}` must be non-empty and use only letters, digits, `_` and `-`")));
    }
    if let Some(unknown) = def.keys().find(|k| !RULE_KEYS.contains(&k.as_str())) {
        return Err(fail(format!(
            "rule `{name}`: unknown key `{unknown}` (expected one of: {})",
            RULE_KEYS.join(", ")
        )));
    }

    let patterns = match def.get("on") {
        None => return Err(fail(format!("rule `{name}`: missing `on` (the topics it listens to)"))),
        Some(on) => parse_patterns(name, on).map_err(fail)?,
    };
    let func = |key: &str| -> Result<Option<FnPtr>, Box<EvalAltResult>> {
        match def.get(key) {
            None => Ok(None),
            Some(v) if v.is_fnptr() => Ok(v.clone().try_cast::<FnPtr>()),
            Some(v) => {
                Err(fail(format!("rule `{name}`: `{key}` must be a function such as `|e| ...`, not {}", v.type_name())))
            }
        }
    };
    let when = func("when")?;
    let emit = func("emit")?;
    let key = func("key")?;
    let description = match def.get("description") {
        None => None,
        Some(v) if v.is_string() => Some(v.to_string()),
        Some(v) => return Err(fail(format!("rule `{name}`: `description` must be a string, not {}", v.type_name()))),
    };

    let declared =
        Declared { name: name.to_owned(), pos, description, patterns, key, kind: RuleKind::Filter { when, emit } };
    DECLARED.with(|d| {
        if let Some(list) = d.borrow_mut().as_mut() {
            list.push(declared);
        }
    });
    Ok(())
}

fn parse_patterns(rule: &str, on: &Dynamic) -> Result<Vec<TopicPattern>, String> {
    let texts: Vec<String> = if on.is_string() {
        vec![on.to_string()]
    } else if on.is_array() {
        let arr = on.clone().into_array().unwrap_or_default();
        let mut v = Vec::with_capacity(arr.len());
        for item in arr {
            if !item.is_string() {
                return Err(format!(
                    "rule `{rule}`: `on` must list topic patterns as strings, found {}",
                    item.type_name()
                ));
            }
            v.push(item.to_string());
        }
        v
    } else {
        return Err(format!("rule `{rule}`: `on` must be a topic pattern or a list of them, not {}", on.type_name()));
    };
    if texts.is_empty() {
        return Err(format!("rule `{rule}`: `on` lists no topic pattern"));
    }
    texts
        .iter()
        .map(|t| TopicPattern::parse(t).map_err(|e| format!("rule `{rule}`: topic pattern `{t}`: {e}")))
        .collect()
}
