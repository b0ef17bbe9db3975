//! Privacy, raw then checked: `[privacy]` (the pseudonyms' secret) and each subscription's
//! `[subscriptions.privacy]` (its protected fields) into [`crate::privacy::Privacy`].
//!
//! ```toml
//! [privacy]
//! key_file = "/etc/edgewatch/privacy.key"     # or key_env = "EDGEWATCH_PRIVACY_KEY"
//!
//! [[subscriptions]]
//! topic = "badges/#"
//! [subscriptions.privacy]
//! drop = ["phone"]
//! mask = { badge = { keep_last = 2 }, "gps.lat" = { decimals = 2 }, "gps.lon" = { decimals = 2 } }
//! pseudonymise = { owner = "1d", device = "never" }   # rotation: a duration, or "never"
//! ```
//!
//! A field that keys state (the payload's `device`, `engine.id_field`) may be dropped or
//! pseudonymised with `"never"`, never with a rotation: it would become a new device every
//! period, lose its state and leave the old one reported missing. Rules' `key` closures are
//! checked against the same list when they load (`reload.rs`).

use super::{Invalid, invalid};
use crate::privacy::{Privacy, Protect, Rule};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// `[privacy]`: where the pseudonyms' secret comes from.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPrivacyKey {
    /// A file holding the secret (at least 16 bytes; a trailing newline is not part of it).
    pub key_file: Option<PathBuf>,
    /// An environment variable holding it.
    pub key_env: Option<String>,
}

/// `[subscriptions.privacy]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPrivacy {
    #[serde(default)]
    pub drop: Vec<String>,
    #[serde(default)]
    pub mask: BTreeMap<String, RawMask>,
    /// Field -> rotation: a duration (`1d`, `12h`) or `never`.
    #[serde(default)]
    pub pseudonymise: BTreeMap<String, String>,
}

/// One mask: exactly one of these.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMask {
    pub keep_last: Option<usize>,
    pub keep_first: Option<usize>,
    pub decimals: Option<u32>,
}

/// The secret pseudonyms are keyed with.
pub type PrivacyKey = super::SecretBytes;

/// Shortest secret: 128 bits.
const MIN_KEY_BYTES: usize = 16;
/// Shortest rotation: a pseudonym that changes more often than this groups nothing.
const MIN_ROTATION_MS: i64 = 60_000;
/// Most protected fields per subscription: each is looked up on every message.
const MAX_FIELDS: usize = 64;

/// The secret, if `[privacy]` names one.
pub fn key(raw: &RawPrivacyKey) -> Result<Option<PrivacyKey>, Invalid> {
    let secret = super::secret(
        ("privacy.key_file", raw.key_file.as_deref()),
        ("privacy.key_env", raw.key_env.as_deref()),
        MIN_KEY_BYTES,
    )?;
    Ok(secret.map(PrivacyKey::from))
}

/// What keys state without any rule: the payload's `device` and the deduplication id.
pub fn key_fields(id_field: Option<&str>) -> Vec<&str> {
    std::iter::once("device").chain(id_field).collect()
}

/// Checks one subscription's privacy (`path` is `subscriptions[i]`); `keyed` says whether
/// a secret is configured, `key_fields` which fields key state.
pub fn validate(path: &str, raw: RawPrivacy, keyed: bool, key_fields: &[&str]) -> Result<Privacy, Invalid> {
    let mut fields: Vec<Rule> = Vec::new();
    let mut add = |key: String, name: &str, protect: Protect| -> Result<(), Invalid> {
        if name.is_empty() || name.split('.').any(str::is_empty) {
            return Err(invalid(&key, "a field is a name, or a dotted path into nested objects (`gps.lat`)"));
        }
        if let Some(other) = fields.iter().find(|f| f.name == name) {
            return Err(invalid(&key, format!("`{name}` is protected twice (also {:?})", other.protect)));
        }
        fields.push(Rule::new(name, protect));
        Ok(())
    };
    for (i, name) in raw.drop.iter().enumerate() {
        add(format!("{path}.privacy.drop[{i}]"), name, Protect::Drop)?;
    }
    for (name, m) in &raw.mask {
        let key = format!("{path}.privacy.mask.{name}");
        let protect = match (m.keep_last, m.keep_first, m.decimals) {
            (Some(n), None, None) => Protect::KeepLast(n),
            (None, Some(n), None) => Protect::KeepFirst(n),
            (None, None, Some(n)) if n <= 15 => Protect::Decimals(n),
            (None, None, Some(_)) => return Err(invalid(&key, "`decimals` is at most 15")),
            _ => return Err(invalid(&key, "give exactly one of `keep_last`, `keep_first` or `decimals`")),
        };
        add(key, name, protect)?;
    }
    for (name, rotation) in &raw.pseudonymise {
        let key = format!("{path}.privacy.pseudonymise.{name}");
        if !keyed {
            return Err(invalid(&key, "pseudonyms need a secret: set `privacy.key_file` or `privacy.key_env`"));
        }
        let rotate_ms = match rotation.as_str() {
            "never" => None,
            text => {
                let d = humantime::parse_duration(text)
                    .map_err(|e| invalid(&key, format!("`{text}` is not a duration like `1d` or `never`: {e}")))?;
                let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
                if ms < MIN_ROTATION_MS {
                    return Err(invalid(&key, "a rotation is at least 1m (or `never`)"));
                }
                if key_fields.contains(&name.as_str()) {
                    return Err(invalid(
                        &key,
                        format!(
                            "`{name}` keys device state and cannot rotate: a new pseudonym each period would be \
                             a new device, its state lost and the old one reported missing. Use \"never\", or drop it"
                        ),
                    ));
                }
                Some(ms)
            }
        };
        add(key, name, Protect::Pseudonym { rotate_ms })?;
    }
    if fields.len() > MAX_FIELDS {
        return Err(invalid(&format!("{path}.privacy"), format!("at most {MAX_FIELDS} protected fields")));
    }
    Ok(Privacy { fields })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(toml_text: &str) -> RawPrivacy {
        toml::from_str(toml_text).expect("parses")
    }

    #[test]
    fn each_protection_is_read_and_each_mistake_names_its_key() {
        let p = validate(
            "subscriptions[0]",
            raw(r#"
                drop = ["phone"]
                mask = { badge = { keep_last = 2 }, "gps.lat" = { decimals = 2 } }
                pseudonymise = { owner = "1d", device = "never" }
            "#),
            true,
            &key_fields(None),
        )
        .expect("valid");
        let got: Vec<_> = p.fields.iter().map(|f| (f.name.as_str(), f.protect.clone())).collect();
        assert_eq!(
            got,
            [
                ("phone", Protect::Drop),
                ("badge", Protect::KeepLast(2)),
                ("gps.lat", Protect::Decimals(2)),
                ("device", Protect::Pseudonym { rotate_ms: None }),
                ("owner", Protect::Pseudonym { rotate_ms: Some(86_400_000) }),
            ]
        );

        let err = |text: &str, keyed: bool| {
            validate("subscriptions[1]", raw(text), keyed, &key_fields(Some("msg_id"))).expect_err("refused")
        };
        assert_eq!(err(r#"pseudonymise = { owner = "1d" }"#, false).0, "subscriptions[1].privacy.pseudonymise.owner");
        assert_eq!(err(r#"mask = { a = { keep_last = 1, decimals = 2 } }"#, true).0, "subscriptions[1].privacy.mask.a");
        assert_eq!(err(r#"pseudonymise = { owner = "daily" }"#, true).0, "subscriptions[1].privacy.pseudonymise.owner");
        assert_eq!(err(r#"pseudonymise = { owner = "10s" }"#, true).0, "subscriptions[1].privacy.pseudonymise.owner");
        assert_eq!(err(r#"drop = ["a", "gps."]"#, true).0, "subscriptions[1].privacy.drop[1]");
        let twice = err(
            r#"drop = ["a"]
            mask = { a = { keep_last = 1 } }"#,
            true,
        );
        assert_eq!(twice.0, "subscriptions[1].privacy.mask.a");
    }

    #[test]
    fn a_field_that_keys_state_may_be_dropped_or_pseudonymised_for_good_but_not_rotated() {
        let check = |text: &str| validate("subscriptions[0]", raw(text), true, &key_fields(Some("msg_id")));
        for field in ["device", "msg_id"] {
            let (path, message) = check(&format!(r#"pseudonymise = {{ {field} = "1d" }}"#)).expect_err("refused");
            assert_eq!(path, format!("subscriptions[0].privacy.pseudonymise.{field}"));
            assert!(message.contains(&format!("`{field}` keys device state and cannot rotate")), "{message}");
            check(&format!(r#"pseudonymise = {{ {field} = "never" }}"#)).expect("a fixed pseudonym keys as well");
            check(&format!(r#"drop = ["{field}"]"#)).expect("dropped is allowed");
        }
    }

    #[test]
    fn the_secret_comes_from_a_file_or_the_environment_and_is_long_enough() {
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("k");
        std::fs::write(&file, "0123456789abcdef0123\n").expect("write");
        let k = key(&RawPrivacyKey { key_file: Some(file.clone()), key_env: None }).expect("ok").expect("a key");
        assert_eq!(k.expose(), b"0123456789abcdef0123", "without the newline");
        assert_eq!(format!("{k:?}"), "\"<redacted>\"");
        std::fs::write(&file, "short\n").expect("write");
        let (path, message) = key(&RawPrivacyKey { key_file: Some(file), key_env: None }).expect_err("refused");
        assert_eq!(path, "privacy.key_file");
        assert!(message.contains("5 bytes") && !message.contains("short"), "{message}");
        let (path, _) = key(&RawPrivacyKey { key_file: None, key_env: Some("EDGEWATCH_TEST_NO_SUCH_VAR".into()) })
            .expect_err("refused");
        assert_eq!(path, "privacy.key_env");
    }
}
