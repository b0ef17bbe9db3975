//! Privacy before anything leaves: a subscription's protected fields are dropped, masked or
//! pseudonymised right after decoding (and the schema check), before the journal, the rules,
//! history, dead letters, logs and upstream see the payload.
//!
//! ```text
//! [subscriptions.privacy] (config/privacy.rs, checked with key paths) ─▶ Privacy
//! decoded payload ─▶ Schema::check ─▶ Protector::apply ─▶ re-encoded JSON ─▶ journal, event id
//!                                                      └▶ protected value ─▶ engine
//! undecodable / refused payload ─▶ dead letter without any of its bytes
//! ```
//!
//! A pseudonym is `HMAC-SHA256(period key, value)`, cut to 64 bits as 16 hex digits. The
//! period key is `HMAC-SHA256(secret, "edgewatch/pseudonym/v1/<rotation ms>/<period>")`,
//! the period being the message's arrival time divided by the rotation (UTC-aligned: `1d`
//! turns at midnight UTC); `never` uses `.../v1/never`. So values group within a period and
//! not across periods, and nobody without the secret can compute or reverse one. HMAC and
//! SHA-256 come from `ring`, already linked for TLS: no size cost.

use rhai::{Dynamic, ImmutableString, Map};

/// How one field is protected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Protect {
    /// Removed from the payload.
    Drop,
    /// Every character but the last `n` replaced by `*` (numbers become strings).
    KeepLast(usize),
    /// Every character but the first `n` replaced by `*`.
    KeepFirst(usize),
    /// A number cut (towards zero) to `n` decimals: a coordinate to about a kilometre at 2.
    Decimals(u32),
    /// A keyed hash of the value, its key changing every `rotate_ms` (`None`: never).
    Pseudonym { rotate_ms: Option<i64> },
}

/// One protected field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// As written (`gps.lat`), for messages.
    pub name: String,
    /// The levels of `name`, split once.
    path: Vec<String>,
    pub protect: Protect,
}

impl Rule {
    pub fn new(name: &str, protect: Protect) -> Rule {
        Rule { name: name.to_owned(), path: name.split('.').map(str::to_owned).collect(), protect }
    }
}

/// A subscription's protected fields.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Privacy {
    pub fields: Vec<Rule>,
}

impl Privacy {
    /// Whether `path` (a schema violation's field, `gps.lat`) is one of the protected fields
    /// or inside one, so that its value is never shown.
    pub fn covers(&self, path: &str) -> bool {
        self.fields.iter().any(|f| {
            path.strip_prefix(f.name.as_str()).is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
        })
    }
}

/// The secret pseudonyms are keyed with, and the period keys derived from it, cached: one
/// HMAC per message and field, not three.
pub struct Protector {
    secret: Option<ring::hmac::Key>,
    /// `(rotation, period)` -> period key. A handful of entries (one per rotation in use),
    /// replaced when its period turns: bounded by the configuration.
    periods: Vec<((Option<i64>, i64), ring::hmac::Key)>,
}

impl std::fmt::Debug for Protector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Protector").field("keyed", &self.secret.is_some()).finish_non_exhaustive()
    }
}

/// What [`Protector::apply`] did to one payload.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    /// Fields found and protected as declared.
    pub protected: u32,
    /// Fields that could not be protected as declared (a mask of a number on a text, for
    /// example) and were dropped instead: never passed on as they came.
    pub dropped_instead: u32,
}

impl Protector {
    /// A protector keyed with `secret` (`None`: no pseudonyms are configured; the
    /// configuration makes sure of it).
    pub fn new(secret: Option<&[u8]>) -> Protector {
        Protector { secret: secret.map(|s| ring::hmac::Key::new(ring::hmac::HMAC_SHA256, s)), periods: Vec::new() }
    }

    /// Protects `payload`'s fields as `privacy` says, for a message that arrived at
    /// `received_ms`. Absent fields are left absent; a payload that is not an object has no
    /// fields.
    pub fn apply(&mut self, privacy: &Privacy, payload: &mut Dynamic, received_ms: i64) -> Applied {
        let mut applied = Applied::default();
        let Some(mut map) = payload.write_lock::<Map>() else { return applied };
        for field in &privacy.fields {
            let Some((last, parents)) = field.path.split_last() else { continue };
            with_parent(&mut map, parents, &mut |parent| {
                let Some(value) = parent.get_mut(last.as_str()) else { return };
                let protected = match &field.protect {
                    Protect::Drop => None,
                    Protect::KeepLast(n) => masked(value, *n, true),
                    Protect::KeepFirst(n) => masked(value, *n, false),
                    Protect::Decimals(n) => decimals(value, *n),
                    Protect::Pseudonym { rotate_ms } => self.pseudonym(value, *rotate_ms, received_ms),
                };
                match protected {
                    Some(v) => {
                        *value = v;
                        applied.protected += 1;
                    }
                    None => {
                        parent.remove(last.as_str());
                        if field.protect == Protect::Drop {
                            applied.protected += 1;
                        } else {
                            applied.dropped_instead += 1;
                        }
                    }
                }
            });
        }
        applied
    }

    /// The pseudonym of `value` in the period of `at_ms`; `None` without a secret (refused by
    /// the configuration, so never in practice: the field is then dropped, not shown).
    fn pseudonym(&mut self, value: &Dynamic, rotate_ms: Option<i64>, at_ms: i64) -> Option<Dynamic> {
        if value.is_unit() {
            return Some(Dynamic::UNIT);
        }
        let period = rotate_ms.map_or(0, |r| at_ms.div_euclid(r.max(1)));
        let key = match self.periods.iter().position(|(k, _)| k.0 == rotate_ms) {
            Some(i) if self.periods[i].0.1 == period => &self.periods[i].1,
            found => {
                let secret = self.secret.as_ref()?;
                let label = match rotate_ms {
                    Some(r) => format!("edgewatch/pseudonym/v1/{r}/{period}"),
                    None => "edgewatch/pseudonym/v1/never".to_owned(),
                };
                let key =
                    ring::hmac::Key::new(ring::hmac::HMAC_SHA256, ring::hmac::sign(secret, label.as_bytes()).as_ref());
                let i = match found {
                    Some(i) => {
                        self.periods[i] = ((rotate_ms, period), key);
                        i
                    }
                    None => {
                        self.periods.push(((rotate_ms, period), key));
                        self.periods.len() - 1
                    }
                };
                &self.periods[i].1
            }
        };
        let tag = match value.read_lock::<ImmutableString>() {
            Some(s) => ring::hmac::sign(key, s.as_bytes()),
            None => ring::hmac::sign(key, serde_json::to_string(value).unwrap_or_default().as_bytes()),
        };
        Some(Dynamic::from(firmware_sim::record::hex(&tag.as_ref()[..8])))
    }
}

/// Calls `f` with the object holding the last level of a path whose other levels are
/// `parents`, if they all are objects.
fn with_parent(map: &mut Map, parents: &[String], f: &mut dyn FnMut(&mut Map)) {
    let Some((first, rest)) = parents.split_first() else { return f(map) };
    if let Some(mut inner) = map.get_mut(first.as_str()).and_then(|v| v.write_lock::<Map>()) {
        with_parent(&mut inner, rest, f);
    }
}

/// `value` as text with all but `keep` characters (at its end, or its start) replaced by
/// `*`; `None` for what has no text form (objects, arrays).
fn masked(value: &Dynamic, keep: usize, at_end: bool) -> Option<Dynamic> {
    if value.is_unit() {
        return Some(Dynamic::UNIT);
    }
    if value.is_map() || value.is_array() {
        return None;
    }
    let text = value.to_string();
    let len = text.chars().count();
    let shown = keep.min(len);
    let out: String = text
        .chars()
        .enumerate()
        .map(|(i, c)| if (at_end && i >= len - shown) || (!at_end && i < shown) { c } else { '*' })
        .collect();
    Some(Dynamic::from(out))
}

/// A number cut towards zero to `n` decimals; integers are already whole. `None` for what
/// is not a number.
fn decimals(value: &Dynamic, n: u32) -> Option<Dynamic> {
    if value.is_unit() || value.is_int() {
        return Some(value.clone());
    }
    let x = value.as_float().ok()?;
    let scale = 10f64.powi(i32::try_from(n).unwrap_or(i32::MAX));
    let cut = (x * scale).trunc() / scale;
    Some(Dynamic::from_float(if cut.is_finite() { cut } else { x.trunc() }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400_000;

    fn decode(json: &str) -> Dynamic {
        crate::decode::decode(crate::decode::Format::Json, json.as_bytes(), 1 << 16).expect("valid JSON")
    }

    fn protect(p: &Privacy, json: &str, at: i64) -> (serde_json::Value, Applied) {
        let mut protector = Protector::new(Some(b"0123456789abcdef0123456789abcdef"));
        let mut v = decode(json);
        let applied = protector.apply(p, &mut v, at);
        (serde_json::to_value(&v).expect("json"), applied)
    }

    fn privacy(fields: &[(&str, Protect)]) -> Privacy {
        Privacy { fields: fields.iter().map(|(n, p)| Rule::new(n, p.clone())).collect() }
    }

    #[test]
    fn fields_are_dropped_masked_and_cut_and_the_rest_is_untouched() {
        let p = privacy(&[
            ("phone", Protect::Drop),
            ("badge", Protect::KeepLast(2)),
            ("plate", Protect::KeepFirst(3)),
            ("gps.lat", Protect::Decimals(2)),
            ("gps.lon", Protect::Decimals(2)),
            ("pin", Protect::KeepLast(0)),
            ("absent", Protect::Drop),
        ]);
        let (v, applied) = protect(
            &p,
            r#"{"device":"d1","t":21.5,"phone":"+33 6 12 34 56 78","badge":"AB-12345","plate":"GE-123-XY",
                "gps":{"lat":46.204391,"lon":-6.143158},"pin":1234}"#,
            0,
        );
        assert_eq!(
            v,
            serde_json::json!({"device":"d1","t":21.5,"badge":"******45","plate":"GE-******",
                "gps":{"lat":46.20,"lon":-6.14},"pin":"****"})
        );
        assert_eq!(applied, Applied { protected: 6, dropped_instead: 0 });
    }

    #[test]
    fn a_field_that_cannot_be_protected_as_declared_is_dropped_not_passed_on() {
        let p = privacy(&[("lat", Protect::Decimals(2)), ("badge", Protect::KeepLast(2))]);
        let (v, applied) = protect(&p, r#"{"lat":"46.204391","badge":{"id":"AB-12345"},"t":1}"#, 0);
        assert_eq!(v, serde_json::json!({"t":1}));
        assert_eq!(applied, Applied { protected: 0, dropped_instead: 2 });
    }

    #[test]
    fn a_pseudonym_groups_within_its_period_and_changes_at_the_rotation_boundary() {
        let p = privacy(&[("owner", Protect::Pseudonym { rotate_ms: Some(DAY) })]);
        let owner = |json: &str, at: i64| protect(&p, json, at).0["owner"].as_str().expect("a string").to_owned();
        let alice = r#"{"owner":"alice"}"#;
        let morning = owner(alice, 3 * DAY + 1);
        assert_eq!(morning.len(), 16);
        assert!(morning.chars().all(|c| c.is_ascii_hexdigit()), "{morning}");
        assert_eq!(owner(alice, 4 * DAY - 1), morning, "the same day: the same pseudonym");
        assert_ne!(owner(r#"{"owner":"bob"}"#, 3 * DAY + 1), morning, "another person: another pseudonym");
        assert_ne!(owner(alice, 4 * DAY), morning, "midnight UTC: a new day, a new pseudonym");
        assert_eq!(owner(alice, 4 * DAY), owner(alice, 5 * DAY - 1));

        let fixed = privacy(&[("owner", Protect::Pseudonym { rotate_ms: None })]);
        let never = |at| protect(&fixed, alice, at).0["owner"].clone();
        assert_eq!(never(0), never(400 * DAY), "a pseudonym that never rotates");
        assert_ne!(never(0).as_str(), Some(morning.as_str()));
    }

    #[test]
    fn a_pseudonym_depends_on_the_secret_and_numbers_are_pseudonymised_too() {
        let p = privacy(&[("id", Protect::Pseudonym { rotate_ms: None })]);
        let mut a = Protector::new(Some(b"first secret, long enough......."));
        let mut b = Protector::new(Some(b"second secret, long enough......"));
        let (mut x, mut y) = (decode(r#"{"id":4711}"#), decode(r#"{"id":4711}"#));
        a.apply(&p, &mut x, 0);
        b.apply(&p, &mut y, 0);
        let (x, y) = (x.to_string(), y.to_string());
        assert!(!x.contains("4711") && !y.contains("4711"), "{x} {y}");
        assert_ne!(x, y, "another secret, another pseudonym");
    }

    /// The key derivation and the cut, pinned against HMAC-SHA256 computed independently
    /// (Python: `hmac.new(hmac.new(secret, label, sha256).digest(), b"alice", sha256)`), so a
    /// change of either is seen: pseudonyms kept downstream would stop matching.
    #[test]
    fn the_pseudonym_is_the_documented_hmac() {
        let p = privacy(&[("owner", Protect::Pseudonym { rotate_ms: Some(DAY) })]);
        let (v, _) = protect(&p, r#"{"owner":"alice"}"#, 20_000 * DAY + 5);
        assert_eq!(v["owner"], PINNED);
    }
    const PINNED: &str = "cae1c648da5c36b6";

    #[test]
    fn a_violation_inside_a_protected_field_is_covered() {
        let p = privacy(&[("gps", Protect::Drop), ("owner", Protect::KeepLast(1))]);
        assert!(p.covers("gps") && p.covers("gps.lat") && p.covers("owner"));
        assert!(!p.covers("gpsx") && !p.covers("ownerless") && !p.covers("t"));
    }
}
