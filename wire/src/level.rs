//! One MQTT topic level: the check every name that becomes a level goes through.
//!
//! Device ids, channel and group names in the simulator, the agent's id and the levels of its
//! topic prefix all end up as one level of a topic. Both ends depend on this crate, so the
//! rule lives here once instead of once per crate (it was written five times, with different
//! sets of forbidden characters).

use core::fmt;

/// Why a name cannot stand as one MQTT topic level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LevelError {
    /// An empty level: `a//b` is legal MQTT, but never what a name means.
    Empty,
    /// `/` (a level separator), `+` or `#` (wildcards), or a control character (U+0000 is
    /// forbidden by MQTT, the others "should not" be used).
    Forbidden(char),
}

impl fmt::Display for LevelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LevelError::Empty => f.write_str("must not be empty"),
            LevelError::Forbidden(c) => write!(f, "must not contain {c:?}: it is used as one MQTT topic level"),
        }
    }
}

impl core::error::Error for LevelError {}

/// Checks that `name` can be one topic level as it is: non-empty, without `/`, `+`, `#` or
/// control characters. The first offending character is named in the error.
pub fn check_topic_level(name: &str) -> Result<(), LevelError> {
    if name.is_empty() {
        return Err(LevelError::Empty);
    }
    match name.chars().find(|c| matches!(c, '/' | '+' | '#') || c.is_control()) {
        Some(c) => Err(LevelError::Forbidden(c)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels() {
        for ok in ["gw-1", "t-001", "temperature", "größe", "$x", "a b", "%2F"] {
            assert_eq!(check_topic_level(ok), Ok(()), "{ok}");
        }
        assert_eq!(check_topic_level(""), Err(LevelError::Empty));
        for (bad, c) in [("a/b", '/'), ("+", '+'), ("x#", '#'), ("nul\0", '\0'), ("tab\t", '\t'), ("\u{7f}", '\u{7f}')]
        {
            assert_eq!(check_topic_level(bad), Err(LevelError::Forbidden(c)), "{bad:?}");
        }
    }

    #[test]
    fn messages() {
        assert_eq!(std::format!("{}", LevelError::Empty), "must not be empty");
        assert_eq!(
            std::format!("{}", LevelError::Forbidden('/')),
            "must not contain '/': it is used as one MQTT topic level"
        );
    }
}
