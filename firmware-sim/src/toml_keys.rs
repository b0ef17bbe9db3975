//! Typed configuration from a TOML value, with errors naming the key path
//! (`subscriptions[1].format`), for the agent's configuration and the simulator's scenarios.
//!
//! toml's own value deserializer already says where an error is, as a second line
//! (`in `source.qos``), but names the table rather than the key for an unknown or missing
//! key, and no index in an array of tables. This completes it: the key is taken from the
//! message, and an index is found by deserializing again with the array cut short (only on
//! an error: a bad file costs a few more passes over a small document).
//!
//! Hand-written instead of `serde_path_to_error`, which tracks the path through a wrapper
//! around every deserializer and so compiles every configuration type a second time: it was
//! 352 KB of the 8.5 MB gateway binary (docs/benchmarks.md).

use serde::de::DeserializeOwned;

/// `T` from `value`, or (key path, message).
pub fn deserialize<T: DeserializeOwned>(value: toml::Value) -> Result<T, (String, String)> {
    let err = match T::deserialize(value.clone()) {
        Ok(t) => return Ok(t),
        Err(e) => e,
    };
    let text = err.to_string();
    let message = text.lines().next().unwrap_or_default().to_owned();
    let mut path: Vec<String> = text
        .lines()
        .find_map(|l| l.strip_prefix("in `").and_then(|l| l.strip_suffix('`')))
        .map(|p| p.split('.').map(str::to_owned).collect())
        .unwrap_or_default();
    for prefix in ["unknown field `", "missing field `"] {
        if let Some(key) = message.strip_prefix(prefix).and_then(|m| m.split('`').next()) {
            path.push(key.to_owned());
        }
    }
    let named = with_indexes::<T>(&value, &path, &message);
    Err((named, message))
}

/// `path` written out, with the index of each array of tables on it: the first element at
/// which the same error appears when the array is cut after it.
fn with_indexes<T: DeserializeOwned>(root: &toml::Value, path: &[String], message: &str) -> String {
    let mut out = String::new();
    let mut cursor: Vec<PathStep> = Vec::new();
    for key in path {
        if !out.is_empty() {
            out.push('.');
        }
        out.push_str(key);
        cursor.push(PathStep::Key(key.clone()));
        let Some(toml::Value::Array(items)) = get(root, &cursor) else { continue };
        let found = (0..items.len()).find(|&i| {
            let mut cut = root.clone();
            if let Some(toml::Value::Array(a)) = get_mut(&mut cut, &cursor) {
                a.truncate(i + 1);
            }
            matches!(T::deserialize(cut), Err(e) if e.to_string().lines().next() == Some(message))
        });
        if let Some(i) = found {
            out.push_str(&format!("[{i}]"));
            cursor.push(PathStep::Index(i));
        }
    }
    out
}

#[derive(Debug, Clone)]
enum PathStep {
    Key(String),
    Index(usize),
}

fn get<'a>(mut v: &'a toml::Value, path: &[PathStep]) -> Option<&'a toml::Value> {
    for step in path {
        v = match step {
            PathStep::Key(k) => v.as_table()?.get(k)?,
            PathStep::Index(i) => v.as_array()?.get(*i)?,
        };
    }
    Some(v)
}

fn get_mut<'a>(mut v: &'a mut toml::Value, path: &[PathStep]) -> Option<&'a mut toml::Value> {
    for step in path {
        v = match step {
            PathStep::Key(k) => v.as_table_mut()?.get_mut(k)?,
            PathStep::Index(i) => v.as_array_mut()?.get_mut(*i)?,
        };
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    // Read only by the deserializer: what the tests look at is the error.
    #[allow(dead_code)]
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Cfg {
        #[serde(default)]
        source: Src,
        #[serde(default)]
        subs: Vec<Sub>,
    }
    #[allow(dead_code)]
    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Src {
        #[serde(default)]
        qos: u8,
    }
    #[allow(dead_code)]
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Sub {
        topic: String,
        #[serde(default)]
        retry: Retry,
    }
    #[allow(dead_code)]
    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Retry {
        #[serde(default)]
        max: u32,
    }

    fn path_of(text: &str) -> (String, String) {
        let t: toml::Table = text.parse().expect("toml");
        deserialize::<Cfg>(toml::Value::Table(t)).expect_err(text)
    }

    #[test]
    fn errors_name_the_key_path_with_array_indexes() {
        assert_eq!(path_of("bogus = 1").0, "bogus");
        assert_eq!(path_of("[source]\nqoss = 1").0, "source.qoss");
        let (p, m) = path_of("[source]\nqos = 300");
        assert_eq!(p, "source.qos");
        assert!(m.contains("300"), "{m}");
        assert_eq!(path_of("[[subs]]\ntopic = \"a\"\n[[subs]]\ntopic = 5").0, "subs[1].topic");
        assert_eq!(path_of("[[subs]]\ntopic = \"a\"\n[[subs]]\ntopc = \"b\"").0, "subs[1].topc");
        assert_eq!(path_of("[[subs]]\ntopic = \"a\"\n[[subs]]\nretry = {}").0, "subs[1].topic");
        assert_eq!(path_of("[[subs]]\ntopic = \"a\"\nretry = { max = -1 }").0, "subs[0].retry.max");
    }
}
