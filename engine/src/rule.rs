//! Compiled rules and the rule set the engine runs.

use crate::sandbox::{CompileError, Sandbox};
use crate::topic::TopicPattern;
use rhai::{AST, FnPtr};
use std::fmt;
use std::sync::Arc;

/// Where a rule was declared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The rule file, as the loader named it.
    pub file: Arc<str>,
    /// Line of the `rule(...)` call.
    pub line: usize,
    /// Column of the `rule(...)` call.
    pub col: usize,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.col)
    }
}

/// What a rule does with the events it listens to. Each kind is evaluated natively by the
/// engine; Rhai is called only for the rule's predicates and payload builders.
#[derive(Debug, Clone)]
pub(crate) enum RuleKind {
    /// Stateless: every matching event for which `when` holds emits one composite event.
    Filter {
        /// Predicate; absent means every event matches.
        when: Option<FnPtr>,
        /// Builds the composite event's data; absent means the triggering payload.
        emit: Option<FnPtr>,
    },
}

impl RuleKind {
    /// A short name of the kind, for listings.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            RuleKind::Filter { .. } => "filter",
        }
    }
}

/// One compiled rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Unique across the rule set; names the composite events (`edgewatch.<name>`).
    pub name: Arc<str>,
    /// Where it was declared, for error messages.
    pub origin: Origin,
    /// Free text from the rule's `description`.
    pub description: Option<String>,
    /// Topics it listens to.
    pub patterns: Vec<TopicPattern>,
    /// Derives the key from an event; absent means the default key (see [`crate::Engine`]).
    pub(crate) key: Option<FnPtr>,
    pub(crate) kind: RuleKind,
    /// The compiled file the rule's closures live in; shared by all rules of the file.
    pub(crate) ast: Arc<AST>,
}

impl Rule {
    /// The kind of rule, as a word (`filter`, ...).
    pub fn kind(&self) -> &'static str {
        self.kind.name()
    }

    /// Does this rule listen to `topic`?
    pub fn listens_to(&self, topic: &str) -> bool {
        self.patterns.iter().any(|p| p.matches(topic))
    }
}

/// All rules the engine runs, in load order (files sorted by name, rules in file order).
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    rules: Vec<Arc<Rule>>,
}

impl RuleSet {
    /// Compiles every `(file name, source)` pair. A file that fails is left out whole and
    /// reported; the others still load. A rule name used by an earlier file is an error in
    /// the later one.
    pub fn compile<'a>(
        sandbox: &Sandbox,
        files: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> (RuleSet, Vec<CompileError>) {
        let mut set = RuleSet::default();
        let mut errors = Vec::new();
        for (file, source) in files {
            match sandbox.compile_file(file, source) {
                Ok(rules) => {
                    if let Some(dup) = rules.iter().find(|r| set.get(&r.name).is_some()) {
                        let first = set.get(&dup.name).map(|r| r.origin.to_string()).unwrap_or_default();
                        errors.push(CompileError {
                            file: file.to_owned(),
                            line: dup.origin.line,
                            col: dup.origin.col,
                            message: format!("rule `{}` is already declared at {first}", dup.name),
                        });
                        continue;
                    }
                    set.rules.extend(rules.into_iter().map(Arc::new));
                }
                Err(e) => errors.push(e),
            }
        }
        (set, errors)
    }

    /// The rules, in evaluation order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Rule>> {
        self.rules.iter()
    }

    /// The rule with this name.
    pub fn get(&self, name: &str) -> Option<&Arc<Rule>> {
        self.rules.iter().find(|r| &*r.name == name)
    }

    /// How many rules there are.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Are there none?
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The MQTT filters that cover every rule's topics, deduplicated.
    pub fn mqtt_filters(&self) -> Vec<String> {
        let mut v: Vec<String> = self.rules.iter().flat_map(|r| r.patterns.iter().map(|p| p.mqtt_filter())).collect();
        v.sort();
        v.dedup();
        v
    }
}
