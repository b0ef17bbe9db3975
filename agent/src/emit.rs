//! Composite events -> CloudEvents 1.0 (structured JSON) on their upstream topics.

use edgewatch_engine::{Composite, Dynamic};
use serde::Serialize;
use std::fmt::Write as _;

/// A CloudEvents 1.0 envelope, structured mode: of a composite event (data from a rule, a
/// `Dynamic`) or of an event about the agent itself (data built as JSON).
#[derive(Debug, Serialize)]
pub struct CloudEvent<'a, D: Serialize + ?Sized = Dynamic> {
    pub specversion: &'static str,
    /// Deterministic: the same rule, key and input give the same id, so consumers can
    /// deduplicate redeliveries.
    pub id: String,
    /// `edgewatch/<agent id>`.
    pub source: &'a str,
    /// `edgewatch.<rule>`.
    #[serde(rename = "type")]
    pub ty: String,
    /// The rule's key, usually the device.
    pub subject: &'a str,
    /// RFC 3339, from the triggering input's event time.
    pub time: String,
    pub datacontenttype: &'static str,
    /// Extension attribute: the rule and key's alarm state after the event (`normal`,
    /// `unacknowledged`, `acknowledged`, `returned_unacknowledged`), for rules that keep one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alarmstate: Option<&'static str>,
    /// Extension attribute (lineage): the inputs that caused it, bounded, in the form of
    /// [`edgewatch_engine::Causes::encode`]: `n=<count>;<id>@<arrival ms>,...`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub edgewatchcauses: Option<String>,
    /// Extension attribute: the version of the rule that decided it, `<file>#<content hash>`
    /// as the rules' status and the audit trail name it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub edgewatchrule: Option<&'a str>,
    /// Extension attribute: a chained event's parent, the event its rule saw.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub edgewatchparent: Option<String>,
    pub data: &'a D,
}

impl<'a> CloudEvent<'a> {
    /// The envelope of `event` as sent by agent `source`, decided by version `rule` of its
    /// rule (`None`: not known).
    pub fn new(event: &'a Composite, source: &'a str, rule: Option<&'a str>) -> Self {
        let ty = format!("edgewatch.{}", event.rule);
        let mut e =
            CloudEvent::envelope(event.id.to_string(), source, ty, (&event.key, event.time.to_rfc3339()), &event.data);
        e.alarmstate = event.alarm.map(|a| a.as_str());
        e.lineage(event, rule)
    }
}

impl<'a, D: Serialize + ?Sized> CloudEvent<'a, D> {
    /// With the lineage of `event` (its causes, parent) and the rule version that decided it.
    pub fn lineage(mut self, event: &Composite, rule: Option<&'a str>) -> Self {
        self.edgewatchcauses = Some(event.causes.encode());
        self.edgewatchparent = event.causes.parent.map(|p| p.to_string());
        self.edgewatchrule = rule;
        self
    }
}

impl<'a> CloudEvent<'a, serde_json::Value> {
    /// An event about the agent itself (`edgewatch.agent.<kind>`, subject the agent's id).
    pub fn about_agent(
        kind: &str,
        id: String,
        (source, agent): (&'a str, &'a str),
        time: String,
        data: &'a serde_json::Value,
    ) -> Self {
        CloudEvent::envelope(id, source, format!("edgewatch.agent.{kind}"), (agent, time), data)
    }
}

impl<'a, D: Serialize + ?Sized> CloudEvent<'a, D> {
    /// An envelope with no extension attributes: set those that apply.
    pub fn envelope(id: String, source: &'a str, ty: String, (subject, time): (&'a str, String), data: &'a D) -> Self {
        CloudEvent {
            specversion: "1.0",
            id,
            source,
            ty,
            subject,
            time,
            datacontenttype: "application/json",
            alarmstate: None,
            edgewatchcauses: None,
            edgewatchrule: None,
            edgewatchparent: None,
            data,
        }
    }
}

impl<D: Serialize + ?Sized> CloudEvent<'_, D> {
    /// The JSON bytes to publish: what `serde_json::to_vec(self)` gives, written field by
    /// field. Written by hand because the derived form cost about 12 000 instructions an
    /// event, a sixth of all the agent spends on a message: serde_json escapes each of the 14
    /// names and values through its general path (about 330 instructions each), when the names
    /// are constants and most values (the id, the time, the constants) never need escaping.
    /// The data still goes through serde.
    /// `tests::written_by_hand_as_serde_json_would` keeps the two the same.
    pub fn to_json(&self) -> Vec<u8> {
        // Sized for a typical event at once (about 450 bytes), instead of growing from 128.
        let mut out = Vec::with_capacity(640);
        out.extend_from_slice(b"{\"specversion\":");
        put_str(&mut out, self.specversion);
        let attributes = [
            (&b",\"id\":"[..], Some(self.id.as_str())),
            (b",\"source\":", Some(self.source)),
            (b",\"type\":", Some(&self.ty)),
            (b",\"subject\":", Some(self.subject)),
            (b",\"time\":", Some(&self.time)),
            (b",\"datacontenttype\":", Some(self.datacontenttype)),
            (b",\"alarmstate\":", self.alarmstate),
            (b",\"edgewatchcauses\":", self.edgewatchcauses.as_deref()),
            (b",\"edgewatchrule\":", self.edgewatchrule),
            (b",\"edgewatchparent\":", self.edgewatchparent.as_deref()),
        ];
        for (name, value) in attributes {
            if let Some(value) = value {
                out.extend_from_slice(name);
                put_str(&mut out, value);
            }
        }
        out.extend_from_slice(b",\"data\":");
        let data = out.len();
        // Serialising a Dynamic cannot fail for values rules can build; fall back to the
        // envelope without data rather than lose the event.
        if let Err(error) = serde_json::to_writer(&mut out, self.data) {
            tracing::error!(%error, id = %self.id, "Event data is not serialisable; sending it without data.");
            out.truncate(data);
            out.extend_from_slice(b"null");
        }
        out.push(b'}');
        out
    }
}

/// `s` as a JSON string: copied as it is when nothing in it needs escaping (control
/// characters, `"` and `\\`, as serde_json escapes them), else through serde_json.
fn put_str(out: &mut Vec<u8>, s: &str) {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else if serde_json::to_writer(&mut *out, s).is_err() {
        // Writing a string into a vector cannot fail.
        out.extend_from_slice(b"null");
    }
}

/// An upstream topic with placeholders, parsed once at start.
///
/// `{prefix}` is the checked topic prefix and may span levels; `{agent}`, `{rule}` and
/// `{key}` are values from outside (a key usually comes from a device) and are always
/// confined to the one level they stand in: `/`, `+`, `#`, `%`, NUL and control characters
/// are percent-encoded, a `$` that would start the topic too, an empty value becomes `_`, and
/// a value longer than [`MAX_VALUE`] bytes is cut and given a hash suffix. So a device id
/// can never produce a wildcard, an extra level, a `$SYS` topic or another agent's topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicTemplate {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Prefix,
    Agent(String),
    Rule,
    Key,
}

/// Longest value put into one topic level, in bytes (before encoding).
pub const MAX_VALUE: usize = 128;

impl TopicTemplate {
    /// Parses `template`; errors say what is wrong with it.
    pub fn parse(template: &str) -> Result<TopicTemplate, String> {
        if template.is_empty() || template.starts_with('/') || template.ends_with('/') {
            return Err("must be non-empty and neither start nor end with `/`".into());
        }
        let mut parts = Vec::new();
        let mut rest = template;
        while let Some(open) = rest.find('{') {
            let (text, after) = rest.split_at(open);
            if !text.is_empty() {
                parts.push(Part::Text(text.to_owned()));
            }
            let close = after.find('}').ok_or_else(|| format!("`{template}`: `{{` without `}}`"))?;
            parts.push(match &after[1..close] {
                "prefix" => Part::Prefix,
                "agent" => Part::Agent(String::new()),
                "rule" => Part::Rule,
                "key" => Part::Key,
                other => {
                    return Err(format!(
                        "unknown placeholder `{{{other}}}` (use {{prefix}}, {{agent}}, {{rule}}, {{key}})"
                    ));
                }
            });
            rest = &after[close + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        for part in &parts {
            if let Part::Text(t) = part {
                if let Some(c) = t.chars().find(|c| matches!(c, '+' | '#' | '}') || c.is_control()) {
                    return Err(format!("must not contain {c:?} outside a placeholder"));
                }
                if t.contains("//") {
                    return Err("must not contain an empty level (`//`)".into());
                }
            }
        }
        if matches!(parts.first(), Some(Part::Text(t)) if t.starts_with('$')) {
            return Err("must not start with `$` (broker-internal topics)".into());
        }
        Ok(TopicTemplate { parts })
    }

    /// Fills in the agent id (known once the configuration is checked).
    pub fn with_agent(mut self, agent: &str) -> TopicTemplate {
        for part in &mut self.parts {
            if let Part::Agent(a) = part {
                *a = agent.to_owned();
            }
        }
        self
    }

    /// The topic for one event.
    pub fn render(&self, prefix: &str, rule: &str, key: &str) -> String {
        let mut out = String::with_capacity(prefix.len() + rule.len() + key.len() + 16);
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Prefix => out.push_str(prefix),
                Part::Agent(a) => push_level(&mut out, a),
                Part::Rule => push_level(&mut out, rule),
                Part::Key => push_level(&mut out, key),
            }
        }
        out
    }
}

/// Appends `value` so that it stays inside one topic level.
fn push_level(out: &mut String, value: &str) {
    if value.is_empty() {
        out.push('_');
        return;
    }
    let (value, cut) = if value.len() > MAX_VALUE {
        let mut end = MAX_VALUE;
        while !value.is_char_boundary(end) {
            end -= 1;
        }
        (&value[..end], Some(xxhash_rust::xxh3::xxh3_64(value.as_bytes())))
    } else {
        (value, None)
    };
    for c in value.chars() {
        let at_start = out.is_empty();
        if matches!(c, '/' | '+' | '#' | '%') || c.is_control() || (c == '$' && at_start) {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                let _ = write!(out, "%{b:02X}");
            }
        } else {
            out.push(c);
        }
    }
    if let Some(hash) = cut {
        let _ = write!(out, "~{hash:016x}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgewatch_engine::{CompositeId, Timestamp};

    fn default_template() -> TopicTemplate {
        TopicTemplate::parse("{prefix}/events/{rule}").expect("default")
    }

    #[test]
    fn templates_fill_in_and_reject_syntax() {
        let t = TopicTemplate::parse("alerts/{agent}/{rule}/{key}").expect("parse").with_agent("gw-1");
        assert_eq!(t.render("edgewatch/gw-1", "overheat", "t-01"), "alerts/gw-1/overheat/t-01");
        assert_eq!(default_template().render("edgewatch/gw-1", "overheat", "t-01"), "edgewatch/gw-1/events/overheat");
        for bad in
            ["", "/a/{rule}", "a/{rule}/", "a/+/{rule}", "a/#", "a/{device}", "a/{rule", "$SYS/{rule}", "a//{key}"]
        {
            assert!(TopicTemplate::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn hostile_keys_stay_in_their_level() {
        let t = TopicTemplate::parse("{key}/alerts/{rule}").expect("parse");
        assert_eq!(t.render("p", "r", "a/b"), "a%2Fb/alerts/r");
        assert_eq!(t.render("p", "r", "+"), "%2B/alerts/r");
        assert_eq!(t.render("p", "r", "#"), "%23/alerts/r");
        assert_eq!(t.render("p", "r", "$SYS"), "%24SYS/alerts/r");
        assert_eq!(t.render("p", "r", "x\0y\n"), "x%00y%0A/alerts/r");
        assert_eq!(t.render("p", "r", ""), "_/alerts/r");
        assert_eq!(t.render("p", "r", "100%"), "100%25/alerts/r");
        // Encoding is one-to-one: a key that looks encoded does not collide with the raw one.
        assert_ne!(t.render("p", "r", "a%2Fb"), t.render("p", "r", "a/b"));
        let long = "x".repeat(10_000);
        let topic = t.render("p", "r", &long);
        assert!(topic.len() < MAX_VALUE + 40, "{}", topic.len());
        assert_ne!(topic, t.render("p", "r", &"x".repeat(9_999)), "cut values keep apart by hash");
    }

    proptest::proptest! {
        #[test]
        fn any_key_gives_exactly_the_template_levels(key in "\\PC*|[/+#$%\\x00-\\x1f]{0,20}", rule in "[a-z/+#]{0,10}") {
            let t = TopicTemplate::parse("edgewatch/gw-1/{rule}/{key}/events").expect("parse");
            let topic = t.render("p", &rule, &key);
            proptest::prop_assert_eq!(topic.split('/').count(), 5, "{}", topic);
            proptest::prop_assert!(!topic.contains(['+', '#']) && !topic.chars().any(char::is_control), "{}", topic);
            proptest::prop_assert!(topic.starts_with("edgewatch/gw-1/"));
        }
    }

    /// What lineage adds to an event, in bytes (docs/operations.md, "Lineage", quotes these).
    #[test]
    fn lineage_costs_a_bounded_number_of_bytes() {
        use edgewatch_engine::{Causes, Ref};
        let r = |i: u64| Ref { id: u64::MAX - i, at: 1_764_928_800_000 + i as i64 };
        let mut c = Composite {
            id: CompositeId(u128::MAX),
            input: edgewatch_engine::EventId(1),
            rule: "overheat".into(),
            key: "t-01".into(),
            time: Timestamp(1_764_928_800_000),
            data: Dynamic::from_int(1),
            alarm: None,
            causes: Causes::default(),
        };
        let bare = |c: &Composite| {
            let mut e = CloudEvent::new(c, "edgewatch/gw-1", None);
            (e.edgewatchcauses, e.edgewatchparent) = (None, None);
            e.to_json().len()
        };
        let path = "/etc/edgewatch/rules/overheat.rhai#0123456789abcdef";
        assert_eq!(path.len(), 34 + 17);
        let with = |c: &Composite| CloudEvent::new(c, "edgewatch/gw-1", Some(path)).to_json().len();
        c.causes = Causes::one(r(0));
        let rule = 19 + 34 + 17;
        assert_eq!(with(&c) - bare(&c), 55 + rule, "one input");
        c.causes = Causes::of((0..100_000).map(r).collect::<Vec<_>>());
        assert_eq!(with(&c) - bare(&c), 219 + rule, "the first and last three of 100 000");
        c.causes.count = u64::MAX;
        assert_eq!(with(&c) - bare(&c), 233 + rule, "the most a count can take: 20 digits");
        c.causes.parent = Some(CompositeId(7));
        assert_eq!(with(&c) - bare(&c), 233 + rule + 57, "and a parent");
    }

    /// The hand-written envelope is byte for byte what serde_json makes of the struct, with
    /// strings that need escaping in every attribute that can carry one, every optional
    /// attribute on and off, and data that cannot be serialised.
    #[test]
    fn written_by_hand_as_serde_json_would() {
        struct Unserialisable;
        impl Serialize for Unserialisable {
            fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
                Err(serde::ser::Error::custom("no"))
            }
        }
        let mut data = edgewatch_engine::Map::new();
        data.insert("say \"hi\"\n".into(), Dynamic::from("tab\there, é, \u{1}".to_owned()));
        data.insert("celsius".into(), Dynamic::from_float(85.5));
        let data = Dynamic::from_map(data);
        let odd = "a \"quoted\" \\ key\u{7f}\u{1f} ü";
        let mut checked = 0;
        for (subject, source, rule) in [("t-01", "edgewatch/gw-1", None), (odd, odd, Some(odd))] {
            let mut e = CloudEvent::envelope(
                "id-1".into(),
                source,
                format!("edgewatch.{subject}"),
                (subject, "now".into()),
                &data,
            );
            for (alarm, causes, parent) in
                [(None, None, None), (Some("acknowledged"), Some(odd.to_owned()), Some("p\"1".to_owned()))]
            {
                (e.alarmstate, e.edgewatchcauses, e.edgewatchrule, e.edgewatchparent) = (alarm, causes, rule, parent);
                let expected = serde_json::to_vec(&e).expect("serialisable");
                assert_eq!(String::from_utf8_lossy(&e.to_json()), String::from_utf8_lossy(&expected));
                checked += 1;
            }
        }
        assert_eq!(checked, 4);
        let e = CloudEvent::envelope("id-2".into(), "s", "t".into(), (odd, "now".into()), &Unserialisable);
        let bare = CloudEvent::envelope("id-2".into(), "s", "t".into(), (odd, "now".into()), &());
        assert_eq!(e.to_json(), serde_json::to_vec(&bare).expect("serialisable"), "data left out, event kept");
        let agent = serde_json::json!({"reason": "a \"b\"", "n": [1, 2.5, null]});
        let e = CloudEvent::about_agent("started", "id-3".into(), ("edgewatch/gw-1", "gw-1"), "now".into(), &agent);
        assert_eq!(e.to_json(), serde_json::to_vec(&e).expect("serialisable"));
    }

    #[test]
    fn envelope_fields() {
        let mut data = edgewatch_engine::Map::new();
        data.insert("celsius".into(), Dynamic::from_float(85.5));
        let c = Composite {
            id: CompositeId(0x0123_4567_89ab_8def_9011_2233_4455_6677),
            input: edgewatch_engine::EventId(1),
            rule: "overheat".into(),
            key: "t-01".into(),
            time: Timestamp(1_732_170_000_123),
            data: data.into(),
            alarm: None,
            causes: edgewatch_engine::Causes {
                count: 2,
                first: vec![edgewatch_engine::Ref { id: 0xab, at: 1_732_170_000_000 }],
                last: vec![edgewatch_engine::Ref { id: 0xcd, at: 1_732_170_000_123 }],
                parent: Some(CompositeId(7)),
            },
        };
        let json: serde_json::Value = serde_json::from_slice(
            &CloudEvent::new(&c, "edgewatch/gw-1", Some("rules/heat.rhai#00000000000000ff")).to_json(),
        )
        .expect("json");
        assert_eq!(
            json,
            serde_json::json!({
                "specversion": "1.0",
                "id": "01234567-89ab-8def-9011-223344556677",
                "source": "edgewatch/gw-1",
                "type": "edgewatch.overheat",
                "subject": "t-01",
                "time": "2024-11-21T06:20:00.123Z",
                "datacontenttype": "application/json",
                "edgewatchcauses": "n=2;00000000000000ab@1732170000000,...,00000000000000cd@1732170000123",
                "edgewatchrule": "rules/heat.rhai#00000000000000ff",
                "edgewatchparent": "00000000-0000-0000-0000-000000000007",
                "data": {"celsius": 85.5}
            })
        );
    }
}
