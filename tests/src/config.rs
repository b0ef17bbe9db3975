//! Agent configurations for tests, built in code instead of TOML written by hand in each test.
//!
//! [`AgentToml::new`] starts from what most tests want: an agent `gw-test` whose state and
//! rules live in the `{state}` and `{rules}` directories that [`RunningAgent`](crate::RunningAgent)
//! fills in, no subscriptions yet, every other key at its default. Each setter names a key
//! path of the real file (`limits.queue_capacity`, `subscriptions[0].qos`, as the agent's
//! errors name them), so a test says only what it changes. The result is the TOML text
//! ([`fmt::Display`]), for an agent in this process, or a file for the binary
//! ([`AgentToml::write`]).
//!
//! Tests about the TOML text itself (parsing, unknown keys, error messages) still write it by
//! hand: there the text is the subject.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// One TOML value, as written to the right of `=`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TomlValue(String);

impl TomlValue {
    /// `text` written as it is, unquoted: `{state}` and `{rules}` (which
    /// [`RunningAgent`](crate::RunningAgent) replaces with quoted paths), or an array.
    pub fn raw(text: impl Into<String>) -> TomlValue {
        TomlValue(text.into())
    }

    fn string(s: &str) -> TomlValue {
        // A JSON string is a TOML basic string: the same quotes and escapes.
        TomlValue(serde_json::Value::from(s).to_string())
    }
}

impl From<&str> for TomlValue {
    fn from(s: &str) -> TomlValue {
        TomlValue::string(s)
    }
}

impl From<String> for TomlValue {
    fn from(s: String) -> TomlValue {
        TomlValue::string(&s)
    }
}

impl From<&String> for TomlValue {
    fn from(s: &String) -> TomlValue {
        TomlValue::string(s)
    }
}

impl From<&Path> for TomlValue {
    fn from(p: &Path) -> TomlValue {
        TomlValue::string(&p.display().to_string())
    }
}

impl From<&PathBuf> for TomlValue {
    fn from(p: &PathBuf) -> TomlValue {
        TomlValue::from(p.as_path())
    }
}

impl From<PathBuf> for TomlValue {
    fn from(p: PathBuf) -> TomlValue {
        TomlValue::from(p.as_path())
    }
}

/// An address as the string `ip:port` (`agent.metrics_listen`).
impl From<SocketAddr> for TomlValue {
    fn from(a: SocketAddr) -> TomlValue {
        TomlValue::string(&a.to_string())
    }
}

/// A duration as a humantime string (`"500ms"`, `"2s"`).
impl From<Duration> for TomlValue {
    fn from(d: Duration) -> TomlValue {
        TomlValue::string(&humantime::format_duration(d).to_string())
    }
}

impl From<bool> for TomlValue {
    fn from(b: bool) -> TomlValue {
        TomlValue(b.to_string())
    }
}

macro_rules! integers {
    ($($t:ty),*) => {$(
        impl From<$t> for TomlValue {
            fn from(n: $t) -> TomlValue {
                TomlValue(n.to_string())
            }
        }
    )*};
}
integers!(u8, u16, u32, u64, usize, i32, i64);

/// Keys of one table, in the order they were first set.
type Keys = Vec<(String, TomlValue)>;

/// An agent configuration under construction; see the module documentation.
#[derive(Debug, Clone)]
pub struct AgentToml {
    /// `[section]` (dotted for nested tables: `upstream.broker`) -> its keys, sections in the
    /// order first set, so the text reads like a hand-written file.
    tables: Vec<(String, Keys)>,
    /// The `[[subscriptions]]` entries, in order (index `i` is `subscriptions[i]`).
    subscriptions: Vec<Keys>,
    /// The `[[sinks]]` entries, in order.
    sinks: Vec<Keys>,
}

impl Default for AgentToml {
    fn default() -> Self {
        AgentToml::new()
    }
}

impl AgentToml {
    /// Agent `gw-test`, state in `{state}`, rules in `{rules}`, nothing subscribed.
    pub fn new() -> AgentToml {
        AgentToml { tables: Vec::new(), subscriptions: Vec::new(), sinks: Vec::new() }
            .set("agent.id", "gw-test")
            .set("agent.state_dir", TomlValue::raw("{state}"))
            .set("rules.dir", TomlValue::raw("{rules}"))
    }

    /// `agent.id`.
    pub fn id(self, id: &str) -> AgentToml {
        self.set("agent.id", id)
    }

    /// `source.url = "mqtt://<addr>"`.
    pub fn source(self, addr: SocketAddr) -> AgentToml {
        self.set("source.url", format!("mqtt://{addr}"))
    }

    /// `agent.state_dir` and `rules.dir` as `<dir>/state` and `<dir>/rules`: real paths, for a
    /// file the binary reads (the `{state}` and `{rules}` placeholders are not TOML).
    pub fn dirs_in(self, dir: &Path) -> AgentToml {
        self.set("agent.state_dir", dir.join("state")).set("rules.dir", dir.join("rules"))
    }

    /// Sets the key at `path` (`section.key`, `upstream.broker.url`, `subscriptions[1].qos`),
    /// replacing what it held.
    ///
    /// # Panics
    /// On a path without a section, or a subscription index not yet added: a bug in the test.
    pub fn set(mut self, path: &str, value: impl Into<TomlValue>) -> AgentToml {
        let value = value.into();
        let (keys, key) = self.keys_of(path);
        match keys.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => *v = value,
            None => keys.push((key, value)),
        }
        self
    }

    /// Removes the key at `path` (a path as for [`AgentToml::set`]), so its default applies.
    pub fn unset(mut self, path: &str) -> AgentToml {
        let (keys, key) = self.keys_of(path);
        keys.retain(|(k, _)| *k != key);
        self
    }

    /// Adds a `[[subscriptions]]` entry for `topic`, every other key at its default.
    pub fn subscribe(self, topic: &str) -> AgentToml {
        self.subscribe_with(topic, &[])
    }

    /// Adds a `[[subscriptions]]` entry for `topic` with more keys: `&[("format", "wire".into())]`.
    pub fn subscribe_with(mut self, topic: &str, keys: &[(&str, TomlValue)]) -> AgentToml {
        let mut entry = vec![("topic".to_owned(), TomlValue::from(topic))];
        entry.extend(keys.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
        self.subscriptions.push(entry);
        self
    }

    /// Adds a `[[sinks]]` entry named `name` of `kind` (`http`, `mqtt`) with these keys:
    /// `&[("url", url.into())]`.
    pub fn sink(mut self, name: &str, kind: &str, keys: &[(&str, TomlValue)]) -> AgentToml {
        let mut entry = vec![("name".to_owned(), TomlValue::from(name)), ("kind".to_owned(), TomlValue::from(kind))];
        entry.extend(keys.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
        self.sinks.push(entry);
        self
    }

    /// Writes the text to `file`, for the `edgewatch` binary.
    ///
    /// # Panics
    /// If the file cannot be written.
    pub fn write(&self, file: &Path) {
        std::fs::write(file, self.to_string()).unwrap_or_else(|e| panic!("cannot write {}: {e}", file.display()));
    }

    /// The keys of the table `path` names, and the key's own name.
    fn keys_of(&mut self, path: &str) -> (&mut Keys, String) {
        let (table, key) = path.rsplit_once('.').unwrap_or_else(|| panic!("`{path}`: expected `section.key`"));
        if let Some(index) = table.strip_prefix("subscriptions[").and_then(|i| i.strip_suffix(']')) {
            let i: usize = index.parse().unwrap_or_else(|_| panic!("`{path}`: not an index"));
            let n = self.subscriptions.len();
            let keys = self.subscriptions.get_mut(i).unwrap_or_else(|| panic!("`{path}`: only {n} subscriptions"));
            return (keys, key.to_owned());
        }
        let at = match self.tables.iter().position(|(t, _)| t == table) {
            Some(at) => at,
            None => {
                self.tables.push((table.to_owned(), Vec::new()));
                self.tables.len() - 1
            }
        };
        (&mut self.tables[at].1, key.to_owned())
    }
}

impl fmt::Display for AgentToml {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (table, keys) in self.tables.iter().filter(|(_, keys)| !keys.is_empty()) {
            writeln!(f, "[{table}]")?;
            for (key, TomlValue(value)) in keys {
                writeln!(f, "{key} = {value}")?;
            }
        }
        for (array, entries) in [("subscriptions", &self.subscriptions), ("sinks", &self.sinks)] {
            for keys in entries {
                writeln!(f, "[[{array}]]")?;
                for (key, TomlValue(value)) in keys {
                    writeln!(f, "{key} = {value}")?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_is_what_a_hand_written_file_would_say() {
        let addr: SocketAddr = "127.0.0.1:1883".parse().expect("addr");
        let text = AgentToml::new()
            .source(addr)
            .set("source.reconnect_max", Duration::from_millis(500))
            .subscribe("sensors/#")
            .subscribe_with("frames/#", &[("format", "wire".into())])
            .set("subscriptions[0].qos", 2)
            .set("upstream.broker.url", "mqtt://b:2")
            .set("state.durable", false)
            .id("gw-7")
            .to_string();
        assert_eq!(
            text,
            "[agent]\nid = \"gw-7\"\nstate_dir = {state}\n[rules]\ndir = {rules}\n\
             [source]\nurl = \"mqtt://127.0.0.1:1883\"\nreconnect_max = \"500ms\"\n\
             [upstream.broker]\nurl = \"mqtt://b:2\"\n[state]\ndurable = false\n\
             [[subscriptions]]\ntopic = \"sensors/#\"\nqos = 2\n\
             [[subscriptions]]\ntopic = \"frames/#\"\nformat = \"wire\"\n"
        );
    }

    #[test]
    fn the_agent_takes_it() {
        let dir = Path::new("/tmp/edgewatch-test");
        let text = AgentToml::new()
            .dirs_in(dir)
            .subscribe("a/#")
            .set("source.password_file", "/x")
            .set("source.username", "u\"q")
            .unset("source.password_file")
            .to_string();
        let config = edgewatch::Config::from_toml(&text, "t.toml", std::iter::empty()).expect("valid");
        assert_eq!(config.state_dir, dir.join("state"));
        assert_eq!(config.rules_dir, dir.join("rules"));
        assert_eq!(config.source.credentials.map(|(u, _)| u), Some("u\"q".to_owned()));
    }
}
