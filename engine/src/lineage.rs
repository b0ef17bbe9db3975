//! Lineage: which inputs caused a composite event, bounded and compact, so that the agent
//! can send it with every event (the CloudEvents extension `edgewatchcauses`) and
//! `edgewatch trace` can find the inputs again.
//!
//! ```text
//! Event {id, arrived} ─▶ Ref (64 bits of the id, arrival ms)
//!   ├─ threshold, filter, anomaly, forecast, handler: the triggering input
//!   ├─ window: the inputs in the window (the first and last KEEP, and their count)
//!   ├─ sequence: the input each step matched
//!   ├─ stuck: the first input of the run that stayed, and the last
//!   └─ heartbeat: the last input seen before the silence (none for a device never seen)
//! ─▶ Causes {count, refs, parent} on the Composite ─▶ "n=<count>;<ref>,<ref>,...,<ref>"
//! ```
//!
//! A chained event (a rule listening to another rule's events) names its parent, the
//! composite event it saw, and its refs are the composite events it saw.

use crate::event::{CompositeId, Event};
use std::fmt;

/// How many of the first and of the last inputs a cause list keeps: a window of thousands
/// costs the same bytes as a window of seven.
pub const KEEP: usize = 3;

/// One input: the first 64 bits of its [`crate::EventId`] (of a composite event, for a
/// chained input: the first 16 hex digits of its UUID) and when it arrived (ms since the
/// epoch). 64 bits are plenty to tell apart the inputs that arrived in the same millisecond.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Ref {
    pub id: u64,
    pub at: i64,
}

impl Ref {
    /// The reference of `event`.
    pub fn of(event: &Event) -> Ref {
        Ref { id: high(event.id.0), at: event.arrived }
    }

    /// Is this the reference of an input with this full id?
    pub fn is(&self, id: u128) -> bool {
        self.id == high(id)
    }

    /// A reference restored from state saved before lineage existed: nothing to show.
    pub fn is_unknown(&self) -> bool {
        *self == Ref::default()
    }
}

fn high(id: u128) -> u64 {
    (id >> 64) as u64
}

/// `<16 hex digits>@<arrival ms>`.
impl fmt::Display for Ref {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}@{}", self.id, self.at)
    }
}

impl std::str::FromStr for Ref {
    type Err = String;
    fn from_str(s: &str) -> Result<Ref, String> {
        let (id, at) = s.split_once('@').ok_or_else(|| format!("`{s}`: not <id>@<ms>"))?;
        let id = u64::from_str_radix(id, 16).ok().filter(|_| id.len() == 16);
        let at = at.parse::<i64>().ok();
        match (id, at) {
            (Some(id), Some(at)) => Ok(Ref { id, at }),
            _ => Err(format!("`{s}`: not <16 hex digits>@<ms>")),
        }
    }
}

/// Saved (in a window's and a sequence's state) in the same text form.
impl serde::Serialize for Ref {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Ref {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Ref, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// What caused one composite event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Causes {
    /// How many inputs: all of them, also those left out of `first` and `last`.
    pub count: u64,
    /// The first inputs, oldest first: all of them when they fit in `2 * KEEP`.
    pub first: Vec<Ref>,
    /// The last inputs, oldest first, when some between `first` and these are left out.
    pub last: Vec<Ref>,
    /// For a chained event: the composite event whose arrival made the rule emit.
    pub parent: Option<CompositeId>,
}

impl Causes {
    /// One input.
    pub fn one(r: Ref) -> Causes {
        Causes { count: 1, first: vec![r], ..Causes::default() }
    }

    /// All the inputs, oldest first: keeps the first and last [`KEEP`] and the count.
    /// References restored from state saved before lineage existed are counted, not listed.
    pub fn of<I>(refs: I) -> Causes
    where
        I: IntoIterator<Item = Ref>,
        I::IntoIter: DoubleEndedIterator + ExactSizeIterator,
    {
        let mut refs = refs.into_iter();
        let count = refs.len() as u64;
        let known = |r: &Ref| !r.is_unknown();
        if refs.len() <= 2 * KEEP {
            return Causes { count, first: refs.filter(known).collect(), ..Causes::default() };
        }
        let first = refs.by_ref().take(KEEP).filter(known).collect();
        let mut last: Vec<Ref> = refs.rev().take(KEEP).filter(known).collect();
        last.reverse();
        Causes { count, first, last, parent: None }
    }

    /// All references given, oldest first.
    pub fn refs(&self) -> impl Iterator<Item = &Ref> {
        self.first.iter().chain(&self.last)
    }

    /// The value of the `edgewatchcauses` attribute: `n=<count>;` then the refs, `,`
    /// between them and `,...,` where inputs are left out (`n=0` for none):
    /// `n=1200;0a1b2c3d4e5f6071@1733400000123,...,ffeeddccbbaa9988@1733400060001`.
    pub fn encode(&self) -> String {
        use fmt::Write as _;
        let mut out = String::with_capacity(8 + (self.first.len() + self.last.len()) * 32);
        let _ = write!(out, "n={}", self.count);
        let mut sep = ';';
        for r in &self.first {
            let _ = write!(out, "{sep}{r}");
            sep = ',';
        }
        if !self.last.is_empty() {
            let _ = write!(out, "{sep}...");
            for r in &self.last {
                let _ = write!(out, ",{r}");
            }
        }
        out
    }

    /// Reads [`Causes::encode`]'s form back (the parent is a separate attribute).
    pub fn decode(s: &str) -> Result<Causes, String> {
        let (count, refs) = s.split_once(';').unwrap_or((s, ""));
        let count = count
            .strip_prefix("n=")
            .and_then(|n| n.parse::<u64>().ok())
            .ok_or_else(|| format!("`{s}`: does not begin with n=<count>"))?;
        let mut c = Causes { count, ..Causes::default() };
        let mut after_gap = false;
        for r in refs.split(',').filter(|r| !r.is_empty()) {
            if r == "..." {
                after_gap = true;
                continue;
            }
            let r = r.parse()?;
            if after_gap { c.last.push(r) } else { c.first.push(r) }
        }
        Ok(c)
    }
}

/// The causes of something that goes on for many inputs (a sequence's steps, a stuck
/// value's run), kept as they come: the first and last [`KEEP`] and the count, in bounded
/// space however long it runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Trail {
    count: u64,
    first: Vec<Ref>,
    last: std::collections::VecDeque<Ref>,
}

impl Trail {
    /// One more input.
    pub fn push(&mut self, r: Ref) {
        self.count += 1;
        if self.first.len() < KEEP {
            self.first.push(r);
        } else {
            if self.last.len() == KEEP {
                self.last.pop_front();
            }
            self.last.push_back(r);
        }
    }

    /// The inputs so far, as causes.
    pub fn causes(&self) -> Causes {
        let whole = self.count <= (self.first.len() + self.last.len()) as u64;
        let (mut first, last) = (self.first.clone(), self.last.iter().copied());
        if whole {
            first.extend(last);
            return Causes { count: self.count, first, ..Causes::default() };
        }
        Causes { count: self.count, first, last: last.collect(), parent: None }
    }

    /// The trail [`Trail::causes`] came from (what state saves).
    fn from_causes(c: Causes) -> Trail {
        let (mut first, mut last) = (c.first, c.last);
        if last.is_empty() && first.len() > KEEP {
            last = first.split_off(KEEP);
        }
        Trail { count: c.count, first, last: last.into() }
    }
}

/// Saved in the text form of its causes (`n=3;...`): compact, and one format to read.
impl serde::Serialize for Trail {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.causes().encode())
    }
}

impl<'de> serde::Deserialize<'de> for Trail {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Trail, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Causes::decode(&s).map(Trail::from_causes).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(i: u64) -> Ref {
        Ref { id: 0x1000 + i, at: 1_733_400_000_000 + i as i64 }
    }

    #[test]
    fn a_long_list_keeps_its_ends_and_its_count_and_reads_back() {
        let c = Causes::of((0..1200).map(r).collect::<Vec<_>>());
        assert_eq!(c.count, 1200);
        assert_eq!((c.first.clone(), c.last.clone()), (vec![r(0), r(1), r(2)], vec![r(1197), r(1198), r(1199)]));
        let text = c.encode();
        assert!(text.starts_with("n=1200;0000000000001000@1733400000000,"), "{text}");
        assert!(text.contains("@1733400000002,...,00000000000014ad@"), "{text}");
        assert_eq!(Causes::decode(&text), Ok(c));
        // A bounded number of bytes, however many inputs.
        assert!(text.len() <= 8 + 20 + 6 * 31 + 4, "{} bytes", text.len());
    }

    #[test]
    fn short_lists_are_whole_and_unknown_refs_are_only_counted() {
        let c = Causes::of((0..6).map(r).collect::<Vec<_>>());
        assert!(!c.encode().contains("..."));
        assert_eq!(Causes::decode(&c.encode()), Ok(c));
        let c = Causes::of(vec![Ref::default(), r(1)]);
        assert_eq!((c.count, c.first.clone()), (2, vec![r(1)]));
        assert_eq!(Causes::of(Vec::new()).encode(), "n=0");
        assert_eq!(Causes::decode("n=0"), Ok(Causes::default()));
    }

    #[test]
    fn a_trail_keeps_what_a_list_of_all_would() {
        for n in [0, 1, 5, 6, 7, 100] {
            let mut t = Trail::default();
            (0..n).for_each(|i| t.push(r(i)));
            assert_eq!(t.causes(), Causes::of((0..n).map(r).collect::<Vec<_>>()), "{n} inputs");
            let saved = serde_json::to_string(&t).expect("saves");
            let mut back: Trail = serde_json::from_str(&saved).expect("restores");
            assert_eq!(back, t, "{saved}");
            // And it goes on as the original would.
            back.push(r(n));
            t.push(r(n));
            assert_eq!(back.causes(), t.causes());
        }
    }

    #[test]
    fn malformed_lists_are_refused() {
        for bad in ["", "n=x", "3;a@1", "n=1;zz@1", "n=1;0000000000000001", "n=1;01@5"] {
            assert!(Causes::decode(bad).is_err(), "{bad}");
        }
    }
}
