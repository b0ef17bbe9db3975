//! Topic patterns in rules: MQTT filters (`+`, `#`) with optional named levels.
//!
//! A rule listens to `sensors/{device}/temperature`: `{device}` matches one level like `+`
//! and binds it, so the rule sees `e.device`. Matching allocates nothing; captures are
//! returned as byte ranges into the topic.

use std::fmt;

/// One level of a pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Level {
    /// Must equal this text.
    Exact(Box<str>),
    /// `+`: any one level.
    Any,
    /// `{name}`: any one level, bound to `name`.
    Named(Box<str>),
    /// `#`: this level and all below it (last level only); also matches the parent itself.
    Rest,
}

/// A compiled topic pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicPattern {
    source: Box<str>,
    levels: Vec<Level>,
}

/// Why a pattern was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    #[error("topic pattern is empty")]
    Empty,
    #[error("`#` must be the last level of a topic pattern")]
    HashNotLast,
    #[error("`+` and `#` must fill a whole level, as in `a/+/b`")]
    PartialWildcard,
    #[error("`{{{0}}}` is not a valid level name (letters, digits and `_`, not starting with a digit)")]
    BadName(String),
    #[error("level name `{0}` is used twice")]
    DuplicateName(String),
    #[error("level name `{0}` is reserved for the event's own fields")]
    ReservedName(String),
    #[error("topic pattern contains a control character")]
    ControlCharacter,
    #[error("a topic pattern binds at most {MAX_NAMES} levels")]
    TooManyNames,
}

/// Most `{name}` levels in one pattern.
pub const MAX_NAMES: usize = 8;

/// Names a rule's event already uses; a named level may not shadow them.
pub const RESERVED_FIELDS: &[&str] = &["topic", "levels", "payload", "value", "time", "key"];

impl TopicPattern {
    /// Parses `a/{name}/+/#`.
    pub fn parse(source: &str) -> Result<Self, PatternError> {
        if source.is_empty() {
            return Err(PatternError::Empty);
        }
        if source.chars().any(char::is_control) {
            return Err(PatternError::ControlCharacter);
        }
        let parts: Vec<&str> = source.split('/').collect();
        let mut levels = Vec::with_capacity(parts.len());
        let mut names: Vec<&str> = Vec::new();
        for (i, part) in parts.iter().enumerate() {
            let level = match *part {
                "+" => Level::Any,
                "#" if i + 1 == parts.len() => Level::Rest,
                "#" => return Err(PatternError::HashNotLast),
                p if p.starts_with('{') && p.ends_with('}') && p.len() >= 2 => {
                    let name = &p[1..p.len() - 1];
                    let valid = !name.is_empty()
                        && !name.starts_with(|c: char| c.is_ascii_digit())
                        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                    if !valid {
                        return Err(PatternError::BadName(name.to_owned()));
                    }
                    if RESERVED_FIELDS.contains(&name) {
                        return Err(PatternError::ReservedName(name.to_owned()));
                    }
                    if names.contains(&name) {
                        return Err(PatternError::DuplicateName(name.to_owned()));
                    }
                    names.push(name);
                    if names.len() > MAX_NAMES {
                        return Err(PatternError::TooManyNames);
                    }
                    Level::Named(name.into())
                }
                p if p.contains('+') || p.contains('#') => return Err(PatternError::PartialWildcard),
                p => Level::Exact(p.into()),
            };
            levels.push(level);
        }
        Ok(TopicPattern { source: source.into(), levels })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// The MQTT subscription filter equivalent to this pattern (`{name}` becomes `+`).
    pub fn mqtt_filter(&self) -> String {
        self.levels
            .iter()
            .map(|l| match l {
                Level::Exact(s) => s,
                Level::Any | Level::Named(_) => "+",
                Level::Rest => "#",
            })
            .collect::<Vec<_>>()
            .join("/")
    }

    /// Names bound by this pattern, in level order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.levels.iter().filter_map(|l| match l {
            Level::Named(n) => Some(&**n),
            _ => None,
        })
    }

    /// Does `topic` match? Calls `bind(name, value)` for each named level when it does.
    /// Topics starting with `$` (broker internals) only match patterns that name that level
    /// exactly, as MQTT requires.
    pub fn matches_with<'p, 't>(&'p self, topic: &'t str, mut bind: impl FnMut(&'p str, &'t str)) -> bool {
        if !self.matches(topic) {
            return false;
        }
        for (level, part) in self.levels.iter().zip(topic.split('/')) {
            if let Level::Named(name) = level {
                bind(name, part);
            }
        }
        true
    }

    /// Does `topic` match, without binding names?
    pub fn matches(&self, topic: &str) -> bool {
        let mut parts = topic.split('/');
        for (i, level) in self.levels.iter().enumerate() {
            let part = match (level, parts.next()) {
                (Level::Rest, _) => return !(i == 0 && topic.starts_with('$')),
                (_, None) => return false,
                (_, Some(part)) => part,
            };
            let ok = match level {
                Level::Exact(s) => **s == *part,
                _ => !(i == 0 && part.starts_with('$')),
            };
            if !ok {
                return false;
            }
        }
        parts.next().is_none()
    }
}

impl fmt::Display for TopicPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> TopicPattern {
        TopicPattern::parse(s).expect("valid pattern")
    }

    #[test]
    fn exact_plus_and_hash() {
        assert!(p("a/b").matches("a/b"));
        assert!(!p("a/b").matches("a/b/c"));
        assert!(!p("a/b").matches("a"));
        assert!(p("a/+/c").matches("a/x/c"));
        assert!(!p("a/+/c").matches("a/x/y"));
        assert!(p("a/#").matches("a/x/y/z"));
        assert!(p("a/#").matches("a"));
        assert!(p("#").matches("anything/at/all"));
        assert!(p("a/+").matches("a/"));
    }

    #[test]
    fn dollar_topics_need_an_exact_first_level() {
        assert!(!p("#").matches("$SYS/broker"));
        assert!(!p("+/broker").matches("$SYS/broker"));
        assert!(p("$SYS/#").matches("$SYS/broker"));
    }

    #[test]
    fn named_levels_bind() {
        let pat = p("sensors/{device}/{channel}");
        let mut got = Vec::new();
        assert!(pat.matches_with("sensors/t-01/temperature", |n, v| got.push((n.to_owned(), v))));
        assert_eq!(got, vec![("device".to_owned(), "t-01"), ("channel".to_owned(), "temperature")]);
        assert_eq!(pat.mqtt_filter(), "sensors/+/+");
    }

    #[test]
    fn rejects_bad_patterns() {
        assert_eq!(TopicPattern::parse(""), Err(PatternError::Empty));
        assert_eq!(TopicPattern::parse("a/#/b"), Err(PatternError::HashNotLast));
        assert_eq!(TopicPattern::parse("a/b+"), Err(PatternError::PartialWildcard));
        assert_eq!(TopicPattern::parse("a/{1x}"), Err(PatternError::BadName("1x".into())));
        assert_eq!(TopicPattern::parse("{a}/{a}"), Err(PatternError::DuplicateName("a".into())));
        assert_eq!(TopicPattern::parse("a/{topic}"), Err(PatternError::ReservedName("topic".into())));
    }
}
