//! Who may do what: a request's `Authorization: Bearer <token>` against the read and write
//! tokens of `[console]`. A plain function of the header and the tokens, tested here.
//!
//! - Reads need the read token (or the write token, which may do everything); a loopback
//!   console without a read token lets every local reader in.
//! - Writes need the write token; a console without one refuses every write.
//! - No token, or a wrong one: 401. The read token on a write: 403.
//!
//! Tokens travel in a header only, never in a cookie or a URL (which land in logs and
//! history), so no other site can make a browser send them: there is no CSRF to defend.

use crate::config::Token;

/// What an endpoint needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    Read,
    Write,
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// 401: no token, or not one of ours.
    #[error("this needs a token: send `Authorization: Bearer <token>`")]
    NoToken,
    #[error("the token is not valid here")]
    WrongToken,
    /// 403: a valid token that may not do this.
    #[error("writes need the write token; this one may only read")]
    ReadOnly,
    #[error("writes are off: `[console]` has no write token")]
    WritesOff,
}

impl Denied {
    /// 401 or 403.
    pub fn status(self) -> u16 {
        match self {
            Denied::NoToken | Denied::WrongToken => 401,
            Denied::ReadOnly | Denied::WritesOff => 403,
        }
    }
}

/// The console's two tokens.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    pub read: Option<Token>,
    pub write: Option<Token>,
}

impl Tokens {
    /// Whether a request with this `Authorization` header value may do what `need` says.
    pub fn check(&self, authorization: Option<&[u8]>, need: Need) -> Result<(), Denied> {
        let presented = authorization.and_then(bearer);
        let is = |t: &Option<Token>| match (t, presented) {
            (Some(t), Some(p)) => same(t.expose(), p),
            _ => false,
        };
        let (read, write) = (is(&self.read), is(&self.write));
        let refused = if presented.is_none() { Denied::NoToken } else { Denied::WrongToken };
        match need {
            Need::Read if self.read.is_none() || read || write => Ok(()),
            Need::Read => Err(refused),
            Need::Write if write => Ok(()),
            Need::Write if self.write.is_none() => Err(Denied::WritesOff),
            Need::Write if read => Err(Denied::ReadOnly),
            Need::Write => Err(refused),
        }
    }
}

/// The token of a `Bearer` header value (the scheme's case does not matter).
fn bearer(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at_checked(7)?;
    scheme.eq_ignore_ascii_case(b"bearer ").then(|| rest.trim_ascii()).filter(|t| !t.is_empty())
}

/// Equal, in a time that does not depend on where they differ: both are hashed first (so the
/// lengths do not show either), then every byte of the digests is compared. Hand-written:
/// ring's `constant_time` module is deprecated and these are six lines.
fn same(a: &[u8], b: &[u8]) -> bool {
    let (a, b) = (ring::digest::digest(&ring::digest::SHA256, a), ring::digest::digest(&ring::digest::SHA256, b));
    a.as_ref().iter().zip(b.as_ref()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(s: &str) -> Option<Token> {
        Some(Token::from(s.as_bytes().to_vec()))
    }

    #[test]
    fn reads_and_writes_need_their_tokens_and_say_401_or_403() {
        let (r, w) = (token("read-0123456789abcdef"), token("write-0123456789abcdef"));
        let both = Tokens { read: r.clone(), write: w.clone() };
        let h = |s: &'static str| Some(s.as_bytes());
        use Need::{Read, Write};
        assert_eq!(both.check(None, Read), Err(Denied::NoToken));
        assert_eq!(both.check(h("Bearer nope-nope-nope-nope"), Read), Err(Denied::WrongToken));
        assert_eq!(both.check(h("Basic cmVhZA=="), Read), Err(Denied::NoToken));
        assert_eq!(both.check(h("Bearer read-0123456789abcdef"), Read), Ok(()));
        assert_eq!(both.check(h("bearer  write-0123456789abcdef "), Read), Ok(()), "write may read");
        assert_eq!(both.check(h("Bearer read-0123456789abcdef"), Write), Err(Denied::ReadOnly));
        assert_eq!(both.check(h("Bearer write-0123456789abcdef"), Write), Ok(()));
        assert_eq!(both.check(h("Bearer read-0123456789abcdeX"), Read), Err(Denied::WrongToken));
        assert_eq!(both.check(None, Write), Err(Denied::NoToken));
        // Loopback without tokens: reads are open, writes are off.
        let open = Tokens::default();
        assert_eq!(open.check(None, Read), Ok(()));
        assert_eq!(open.check(h("Bearer anything-at-all-really"), Write), Err(Denied::WritesOff));
        // A write token alone: reads open (loopback), writes need it.
        let write_only = Tokens { read: None, write: w };
        assert_eq!(write_only.check(None, Read), Ok(()));
        assert_eq!(write_only.check(None, Write), Err(Denied::NoToken));
        assert_eq!([Denied::NoToken, Denied::ReadOnly].map(Denied::status), [401, 403]);
        assert!(same(b"abc", b"abc") && !same(b"abc", b"abd") && !same(b"abc", b"abcd"));
    }
}
