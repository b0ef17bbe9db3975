//! The `[console]` section: the web console and its JSON API, raw then checked.
//!
//! ```toml
//! [console]
//! listen = "127.0.0.1:9899"              # off when absent
//! read_token_file = "/etc/edgewatch/console-read.token"   # or read_token_env = "VAR"
//! write_token_file = "/etc/edgewatch/console-write.token" # or write_token_env = "VAR"
//! tls_cert_file = "/etc/edgewatch/console.crt"            # HTTPS, with tls_key_file
//! tls_key_file = "/etc/edgewatch/console.key"
//! ```
//!
//! A listener that is not loopback refuses to start without a read token: anyone on the
//! network could otherwise read the gateway's devices and events. Without a write token the
//! write operations (reload, alarm commands) are refused to everyone.

use super::{Invalid, invalid};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;

/// `[console]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConsole {
    pub listen: Option<String>,
    pub read_token_file: Option<PathBuf>,
    pub read_token_env: Option<String>,
    pub write_token_file: Option<PathBuf>,
    pub write_token_env: Option<String>,
    /// HTTPS: a PEM certificate chain and its key, both or neither.
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
}

/// A bearer token.
pub type Token = super::SecretBytes;

/// `[console]`, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleConfig {
    pub listen: SocketAddr,
    /// Needed for every read when set; `None` only on a loopback listener.
    pub read_token: Option<Token>,
    /// Needed for every write; `None`: writes are refused.
    pub write_token: Option<Token>,
    /// HTTPS, when set; plain HTTP otherwise.
    pub tls: Option<crate::tls::ServerTls>,
}

/// Shortest token: 128 bits of a random token's text.
const MIN_TOKEN_BYTES: usize = 16;

impl RawConsole {
    /// `None` when the console is off (no `listen`).
    pub fn validate(&self) -> Result<Option<ConsoleConfig>, Invalid> {
        let Some(listen) = &self.listen else {
            if self.read_token_file.is_some() || self.read_token_env.is_some() || self.write_token_file.is_some() {
                return Err(invalid("console.listen", "tokens are set but the console has no `listen` address"));
            }
            return Ok(None);
        };
        let listen: SocketAddr = listen.parse().map_err(|_| {
            invalid("console.listen", format!("`{listen}` is not an address and port like `127.0.0.1:9899`"))
        })?;
        let token = |file: &Option<PathBuf>, env: &Option<String>, which: &str| {
            let read = super::secret(
                (&format!("console.{which}_token_file"), file.as_deref()),
                (&format!("console.{which}_token_env"), env.as_deref()),
                MIN_TOKEN_BYTES,
            );
            read.map(|t| t.map(Token::from))
        };
        let read_token = token(&self.read_token_file, &self.read_token_env, "read")?;
        let write_token = token(&self.write_token_file, &self.write_token_env, "write")?;
        if read_token.is_none() && !listen.ip().is_loopback() {
            return Err(invalid(
                "console.read_token_file",
                format!(
                    "the console listens on {listen}, beyond this machine: give it a read token (`read_token_file` or `read_token_env`)"
                ),
            ));
        }
        if read_token.is_some() && read_token == write_token {
            return Err(invalid("console.write_token_file", "the write token must differ from the read token"));
        }
        let tls = match (&self.tls_cert_file, &self.tls_key_file) {
            (None, None) => None,
            (Some(cert), Some(key)) => Some(crate::tls::ServerTls::load(cert, key).map_err(|e| {
                let path = if e.file() == Some(&*cert.display().to_string()) {
                    "console.tls_cert_file"
                } else {
                    "console.tls_key_file"
                };
                invalid(path, e.to_string())
            })?),
            (Some(_), None) => {
                return Err(invalid("console.tls_key_file", "HTTPS needs the key of `tls_cert_file` too"));
            }
            (None, Some(_)) => {
                return Err(invalid("console.tls_cert_file", "HTTPS needs a certificate for `tls_key_file` too"));
            }
        };
        Ok(Some(ConsoleConfig { listen, read_token, write_token, tls }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(listen: &str) -> RawConsole {
        RawConsole { listen: Some(listen.into()), ..RawConsole::default() }
    }

    #[test]
    fn a_listener_beyond_loopback_needs_a_read_token_and_tokens_come_from_files() {
        assert_eq!(RawConsole::default().validate(), Ok(None));
        let local = raw("127.0.0.1:9899").validate().expect("loopback without a token").expect("on");
        assert_eq!((local.read_token, local.write_token), (None, None));
        let (path, message) = raw("0.0.0.0:9899").validate().expect_err("open to the network");
        assert_eq!(path, "console.read_token_file");
        assert!(message.contains("0.0.0.0:9899"), "{message}");
        assert_eq!(raw("nowhere").validate().expect_err("bad address").0, "console.listen");

        let dir = tempfile::tempdir().expect("temp dir");
        let (r, w, short) = (dir.path().join("r"), dir.path().join("w"), dir.path().join("s"));
        std::fs::write(&r, "read-token-0123456789abcdef\n").expect("writes");
        std::fs::write(&w, "write-token-0123456789abcdef").expect("writes");
        std::fs::write(&short, "short").expect("writes");
        let c = RawConsole { read_token_file: Some(r.clone()), write_token_file: Some(w), ..raw("0.0.0.0:9899") }
            .validate()
            .expect("valid")
            .expect("on");
        assert_eq!(c.read_token.as_ref().map(Token::expose), Some(&b"read-token-0123456789abcdef"[..]));
        assert!(!format!("{c:?}").contains("read-token"), "tokens stay out of Debug");
        let (path, message) =
            RawConsole { read_token_file: Some(short), ..raw("0.0.0.0:9899") }.validate().expect_err("short");
        assert_eq!(path, "console.read_token_file");
        assert!(message.contains("at least 16"), "{message}");
        let same = RawConsole { read_token_file: Some(r.clone()), write_token_file: Some(r), ..raw("127.0.0.1:1") };
        assert_eq!(same.validate().expect_err("same token").0, "console.write_token_file");
        let unset = RawConsole { read_token_env: Some("EDGEWATCH_TEST_NO_SUCH_VAR".into()), ..raw("127.0.0.1:1") };
        assert_eq!(unset.validate().expect_err("unset variable").0, "console.read_token_env");
    }
}
