//! Secrets given as a file or an environment variable (the privacy key, the console's tokens):
//! read once when the configuration is checked, never shown.

use super::{Invalid, invalid};
use std::fmt;

/// A secret read from a file or an environment variable (a privacy key, a console token):
/// never shown by `Debug` or in errors.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretBytes(Vec<u8>);

impl SecretBytes {
    /// The secret itself, for the one place that needs it.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl From<Vec<u8>> for SecretBytes {
    fn from(bytes: Vec<u8>) -> SecretBytes {
        SecretBytes(bytes)
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"<redacted>\"")
    }
}

/// A secret given as a file or an environment variable (at most one of them), at least
/// `min` bytes long; `(key path, value)` of each. A trailing newline of a file is not part of
/// it. Errors name the file or variable, never the content. `None`: neither is given.
pub(super) fn secret(
    (file_path, file): (&str, Option<&std::path::Path>),
    (env_path, env): (&str, Option<&str>),
    min: usize,
) -> Result<Option<Vec<u8>>, Invalid> {
    let (path, bytes) = match (file, env) {
        (Some(_), Some(_)) => return Err(invalid(file_path, format!("give one of `{file_path}` or `{env_path}`"))),
        (None, None) => return Ok(None),
        (Some(file), None) => {
            let bytes =
                std::fs::read(file).map_err(|e| invalid(file_path, format!("cannot read {}: {e}", file.display())))?;
            let end = bytes.iter().rposition(|b| !matches!(b, b'\r' | b'\n')).map_or(0, |i| i + 1);
            (file_path, bytes[..end].to_vec())
        }
        (None, Some(var)) => match std::env::var(var) {
            Ok(s) => (env_path, s.into_bytes()),
            Err(_) => return Err(invalid(env_path, format!("environment variable `{var}` is not set"))),
        },
    };
    if bytes.len() < min {
        return Err(invalid(
            path,
            format!(
                "the secret is {} bytes; at least {min} are needed (`head -c 32 /dev/urandom | base64`)",
                bytes.len()
            ),
        ));
    }
    Ok(Some(bytes))
}
