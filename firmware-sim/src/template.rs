//! Device-id and topic templates: `"t-{index:03}"`, `"sensors/{device}/{channel}"`.
//!
//! Parsed once when a scenario is built; rendering is string concatenation, so a fleet of
//! 10 000 devices formats its topics once, at start.

use std::fmt;

/// A device-id template: literal text and `{index}` / `{number}` placeholders.
///
/// `{index}` is the device's index in its group (plus the group's `first_index`), `{number}`
/// the same plus one (`door-{number}` gives `door-1`, `door-2`...). Either may be zero-padded
/// to a width: `{index:03}` gives `007`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdTemplate {
    parts: Vec<IdPart>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum IdPart {
    Literal(String),
    Index { width: usize, plus_one: bool },
}

impl IdTemplate {
    /// Parses `text`; the error says which placeholder is wrong.
    pub fn parse(text: &str) -> Result<IdTemplate, String> {
        let mut parts = Vec::new();
        for piece in pieces(text)? {
            parts.push(match piece {
                Piece::Literal(s) => IdPart::Literal(s),
                Piece::Placeholder(name) => {
                    let (key, width) = match name.split_once(':') {
                        None => (name.as_str(), 0),
                        Some((key, spec)) => {
                            let width = spec
                                .strip_prefix('0')
                                .and_then(|w| w.parse::<usize>().ok())
                                .filter(|w| (1..=20).contains(w))
                                .ok_or_else(|| format!("bad width in {{{name}}}: write it like {{{key}:03}}"))?;
                            (key, width)
                        }
                    };
                    match key {
                        "index" => IdPart::Index { width, plus_one: false },
                        "number" => IdPart::Index { width, plus_one: true },
                        _ => {
                            return Err(format!(
                                "unknown placeholder {{{name}}} in an id template (expected {{index}}, {{number}}, \
                                 or either with a width such as {{index:03}})"
                            ));
                        }
                    }
                }
            });
        }
        Ok(IdTemplate { parts })
    }

    /// `{prefix}{index:03}`, the ids of the binary's one-group fleet flags: the prefix is
    /// taken literally, whatever characters it holds.
    pub fn with_prefix(prefix: &str) -> IdTemplate {
        IdTemplate { parts: vec![IdPart::Literal(prefix.to_owned()), IdPart::Index { width: 3, plus_one: false }] }
    }

    /// Whether the template has a placeholder (without one, every device gets the same id).
    pub fn has_placeholder(&self) -> bool {
        self.parts.iter().any(|p| matches!(p, IdPart::Index { .. }))
    }

    /// The id of the device with this `index`.
    pub fn render(&self, index: usize) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                IdPart::Literal(s) => out.push_str(s),
                IdPart::Index { width, plus_one } => {
                    let n = if *plus_one { index.saturating_add(1) } else { index };
                    out.push_str(&format!("{n:0width$}"));
                }
            }
        }
        out
    }
}

impl fmt::Display for IdTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for part in &self.parts {
            match part {
                IdPart::Literal(s) => f.write_str(s)?,
                IdPart::Index { width, plus_one } => {
                    let key = if *plus_one { "number" } else { "index" };
                    if *width == 0 { write!(f, "{{{key}}}")? } else { write!(f, "{{{key}:0{width}}}")? }
                }
            }
        }
        Ok(())
    }
}

/// A topic template: literal text and `{device}`, `{channel}`, `{group}` placeholders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicTemplate {
    parts: Vec<TopicPart>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum TopicPart {
    Literal(String),
    Device,
    Channel,
    Group,
}

impl TopicTemplate {
    /// Parses `text`. Literal parts may not hold `+`, `#` or NUL (MQTT wildcards are not
    /// publishable); `allow_channel` says whether `{channel}` may appear.
    pub fn parse(text: &str, allow_channel: bool) -> Result<TopicTemplate, String> {
        let mut parts = Vec::new();
        for piece in pieces(text)? {
            parts.push(match piece {
                Piece::Literal(s) => {
                    if s.contains(['+', '#', '\0']) {
                        return Err(format!("topic {text:?} may not contain '+', '#' or NUL"));
                    }
                    TopicPart::Literal(s)
                }
                Piece::Placeholder(name) => match name.as_str() {
                    "device" => TopicPart::Device,
                    "group" => TopicPart::Group,
                    "channel" if allow_channel => TopicPart::Channel,
                    "channel" => return Err(format!("topic {text:?}: {{channel}} is only for reading topics")),
                    _ => {
                        return Err(format!(
                            "unknown placeholder {{{name}}} in topic {text:?} (expected {{device}}, {{group}}{})",
                            if allow_channel { " or {channel}" } else { "" }
                        ));
                    }
                },
            });
        }
        if parts.is_empty() {
            return Err("a topic may not be empty".to_owned());
        }
        Ok(TopicTemplate { parts })
    }

    /// `{prefix}/{device}/{leaf}`, or `{device}/{leaf}` for an empty prefix: the topics of the
    /// binary's one-group fleet flags, with `prefix` and `leaf` taken literally.
    pub fn legacy(prefix: &str, leaf: Option<&str>) -> TopicTemplate {
        let mut parts = Vec::new();
        if !prefix.is_empty() {
            parts.push(TopicPart::Literal(format!("{prefix}/")));
        }
        parts.push(TopicPart::Device);
        match leaf {
            Some(leaf) => parts.push(TopicPart::Literal(format!("/{leaf}"))),
            None => {
                parts.push(TopicPart::Literal("/".to_owned()));
                parts.push(TopicPart::Channel);
            }
        }
        TopicTemplate { parts }
    }

    /// This template with `prefix` and a `/` in front (`prefix` taken literally).
    pub fn prefixed(&self, prefix: &str) -> TopicTemplate {
        let mut parts = Vec::with_capacity(self.parts.len() + 1);
        parts.push(TopicPart::Literal(format!("{prefix}/")));
        parts.extend(self.parts.iter().cloned());
        TopicTemplate { parts }
    }

    /// Whether `{channel}` appears: then each channel of a reading has its own topic.
    pub fn has_channel(&self) -> bool {
        self.parts.contains(&TopicPart::Channel)
    }

    /// The topic for one device (and channel, where the template names one).
    pub fn render(&self, device: &str, channel: &str, group: &str) -> String {
        let mut out = String::new();
        for part in &self.parts {
            out.push_str(match part {
                TopicPart::Literal(s) => s,
                TopicPart::Device => device,
                TopicPart::Channel => channel,
                TopicPart::Group => group,
            });
        }
        out
    }
}

impl fmt::Display for TopicTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for part in &self.parts {
            f.write_str(match part {
                TopicPart::Literal(s) => s,
                TopicPart::Device => "{device}",
                TopicPart::Channel => "{channel}",
                TopicPart::Group => "{group}",
            })?;
        }
        Ok(())
    }
}

enum Piece {
    Literal(String),
    Placeholder(String),
}

/// Splits `text` into literal runs and `{...}` placeholders.
fn pieces(text: &str) -> Result<Vec<Piece>, String> {
    let mut out = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        match rest.find(['{', '}']) {
            None => {
                out.push(Piece::Literal(rest.to_owned()));
                break;
            }
            Some(i) => {
                if i > 0 {
                    out.push(Piece::Literal(rest[..i].to_owned()));
                }
                if rest[i..].starts_with('}') {
                    return Err(format!("unmatched '}}' in {text:?}"));
                }
                let after = &rest[i + 1..];
                let close = after.find('}').ok_or_else(|| format!("unclosed '{{' in {text:?}"))?;
                out.push(Piece::Placeholder(after[..close].to_owned()));
                rest = &after[close + 1..];
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_templates() {
        let t = IdTemplate::parse("t-{index:03}").expect("valid");
        assert_eq!(t.render(7), "t-007");
        assert_eq!(t.render(1234), "t-1234");
        assert_eq!(IdTemplate::parse("door-{number}").expect("valid").render(0), "door-1");
        assert_eq!(IdTemplate::parse("{index}").expect("valid").render(42), "42");
        assert_eq!(t.to_string(), "t-{index:03}");
        assert!(!IdTemplate::parse("gateway").expect("valid").has_placeholder());
        for bad in ["t-{idx}", "t-{index:3}", "t-{index", "t-}", "t-{index:0x}"] {
            assert!(IdTemplate::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(IdTemplate::with_prefix("a{b-").render(3), "a{b-003");
    }

    #[test]
    fn topic_templates() {
        let t = TopicTemplate::parse("sensors/{device}/{channel}", true).expect("valid");
        assert!(t.has_channel());
        assert_eq!(t.render("t-001", "temperature", "g"), "sensors/t-001/temperature");
        assert_eq!(t.to_string(), "sensors/{device}/{channel}");
        assert!(TopicTemplate::parse("sensors/{device}/{channel}", false).is_err());
        assert!(TopicTemplate::parse("sensors/+/{device}", true).is_err());
        assert!(TopicTemplate::parse("sensors/{dev}", true).is_err());
        assert!(TopicTemplate::parse("", true).is_err());
        assert_eq!(TopicTemplate::parse("{group}/{device}", false).expect("valid").render("d", "", "doors"), "doors/d");
        assert_eq!(TopicTemplate::legacy("", Some("heartbeat")).render("t-1", "", ""), "t-1/heartbeat");
        assert_eq!(TopicTemplate::legacy("a/b", None).render("t-1", "temp", ""), "a/b/t-1/temp");
    }
}
