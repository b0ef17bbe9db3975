//! One rule's per-key state, bounded in number of keys.
//!
//! A rule tracks at most `max` keys. A new key at the limit is either refused (the keys
//! tracked stay) or makes room by evicting the key seen least recently, as the rule's
//! `on_full` says. Both are counted here, for the engine's once-per-interval report, and in
//! [`crate::Outputs`].
//!
//! Recency is kept only by rules that evict, so refusing rules pay nothing: a stamp per key
//! and a queue of `(key, stamp)` in the order keys were seen. A sighting appends to the
//! queue; an entry whose stamp is no longer its key's stamp is stale and skipped when
//! evicting; the queue is rebuilt from the stamps once it holds twice the live keys. A
//! sighting and an eviction each cost O(1) amortized.

use crate::FastMap;
use crate::rule::OnFull;
use std::collections::VecDeque;
use std::sync::Arc;

/// Longest key a stateful rule tracks, in bytes; longer keys are refused (and counted), so
/// the memory a rule holds is bounded by its key limit times this, plus its state.
pub(crate) const MAX_KEY_BYTES: usize = 256;

/// Evicting skips keys that may not go (a heartbeat's expected devices); it gives up and
/// refuses after this many of them in one call, so a full rule of pinned keys costs a
/// bounded amount per new key.
const MAX_PINNED_SKIPS: usize = 64;

/// How many keys a rule may track, and what happens to a new key at the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct KeyLimit {
    pub(crate) max: usize,
    pub(crate) on_full: OnFull,
}

/// Keys and their state.
#[derive(Debug)]
pub(crate) struct Keyed<S> {
    map: FastMap<Arc<str>, S>,
    limit: KeyLimit,
    /// Only when `limit.on_full` evicts.
    recency: Option<Box<Recency>>,
    /// New keys refused since the last report.
    refused: u64,
    /// Keys evicted since the last report.
    evicted: u64,
    /// Processing time of the first refusal or eviction since the last report.
    pub(crate) since: Option<i64>,
}

/// When each key was last seen.
#[derive(Debug, Default)]
struct Recency {
    clock: u64,
    stamps: FastMap<Arc<str>, u64>,
    /// Sightings, oldest first; stale ones are skipped.
    queue: VecDeque<(Arc<str>, u64)>,
}

impl Recency {
    fn saw(&mut self, key: &Arc<str>) {
        self.clock += 1;
        match self.stamps.get_mut(&**key) {
            Some(stamp) => *stamp = self.clock,
            None => {
                self.stamps.insert(key.clone(), self.clock);
            }
        }
        self.queue.push_back((key.clone(), self.clock));
    }

    /// Rebuilds the queue from the stamps of the keys still present.
    fn compact<S>(&mut self, map: &FastMap<Arc<str>, S>) {
        self.stamps.retain(|k, _| map.contains_key(k));
        let mut live: Vec<(Arc<str>, u64)> = self.stamps.iter().map(|(k, s)| (k.clone(), *s)).collect();
        live.sort_unstable_by_key(|(_, s)| *s);
        self.queue = live.into();
    }
}

impl<S> Keyed<S> {
    pub(crate) fn new(limit: KeyLimit) -> Self {
        let mut k = Keyed { map: FastMap::default(), limit, recency: None, refused: 0, evicted: 0, since: None };
        k.set_limit(limit);
        k
    }

    /// A new limit (a reload). Keys over a lower maximum stay until new keys need room.
    pub(crate) fn set_limit(&mut self, limit: KeyLimit) {
        self.limit = limit;
        match (limit.on_full, self.recency.is_some()) {
            (OnFull::EvictOldest, false) => {
                let mut r = Recency::default();
                for k in self.map.keys() {
                    r.saw(k);
                }
                self.recency = Some(Box::new(r));
            }
            (OnFull::Refuse, true) => self.recency = None,
            _ => {}
        }
    }

    pub(crate) fn limit(&self) -> KeyLimit {
        self.limit
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    pub(crate) fn contains_key(&self, key: &str) -> bool {
        self.map.contains_key(key)
    }

    pub(crate) fn get(&self, key: &str) -> Option<&S> {
        self.map.get(key)
    }

    /// The state of `key`, without counting as a sighting (a timer, not the device).
    pub(crate) fn get_mut(&mut self, key: &str) -> Option<&mut S> {
        self.map.get_mut(key)
    }

    pub(crate) fn keys(&self) -> impl Iterator<Item = &Arc<str>> {
        self.map.keys()
    }

    /// Every key with its state, in no order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&Arc<str>, &S)> {
        self.map.iter()
    }

    /// `key` as stored (shared, not copied), with its state.
    pub(crate) fn get_key_value(&self, key: &str) -> Option<(&Arc<str>, &S)> {
        self.map.get_key_value(key)
    }

    /// Tracks `key` (restored state, an expected device), whatever the limit.
    pub(crate) fn insert(&mut self, key: Arc<str>, state: S) {
        if let Some(r) = &mut self.recency {
            r.saw(&key);
        }
        self.map.insert(key, state);
    }

    pub(crate) fn remove(&mut self, key: &str) -> Option<S> {
        if let Some(r) = &mut self.recency {
            r.stamps.remove(key);
        }
        self.map.remove(key)
    }

    /// A sighting of `key` (an event for it): returns the shared key if it is tracked.
    pub(crate) fn saw(&mut self, key: &str) -> Option<Arc<str>> {
        let (k, _) = self.map.get_key_value(key)?;
        let k = k.clone();
        if let Some(r) = &mut self.recency {
            r.saw(&k);
            if r.queue.len() > 2 * self.map.len() + 64 {
                r.compact(&self.map);
            }
        }
        Some(k)
    }

    /// Room for one new key: `true` if there is (evicted keys, if any, are appended to
    /// `evicted`), `false` if the key is refused. Keys for which `pinned` holds are never
    /// evicted.
    pub(crate) fn make_room(&mut self, pinned: &dyn Fn(&str) -> bool, evicted: &mut Vec<Arc<str>>, now: i64) -> bool {
        if self.map.len() < self.limit.max {
            return true;
        }
        if let Some(r) = &mut self.recency {
            let mut skipped = 0;
            while self.map.len() >= self.limit.max && skipped < MAX_PINNED_SKIPS {
                let Some((key, stamp)) = r.queue.pop_front() else { break };
                if r.stamps.get(&*key) != Some(&stamp) {
                    continue; // seen again since
                }
                if !self.map.contains_key(&*key) {
                    r.stamps.remove(&*key); // went away by itself
                    continue;
                }
                if pinned(&key) {
                    skipped += 1;
                    r.saw(&key);
                    continue;
                }
                r.stamps.remove(&*key);
                self.map.remove(&*key);
                self.evicted += 1;
                self.since.get_or_insert(now);
                evicted.push(key);
            }
        }
        if self.map.len() >= self.limit.max {
            self.count_refused(now);
            return false;
        }
        true
    }

    /// A new key was refused at `now`.
    pub(crate) fn count_refused(&mut self, now: i64) {
        self.refused += 1;
        self.since.get_or_insert(now);
    }

    /// Refused and evicted since the last call, and when the first of them happened.
    pub(crate) fn take_counts(&mut self) -> (u64, u64, i64) {
        let since = self.since.take().unwrap_or(0);
        (std::mem::take(&mut self.refused), std::mem::take(&mut self.evicted), since)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl<S> Keyed<S> {
        fn take_counts_only(&mut self) -> (u64, u64) {
            let (r, e, _) = self.take_counts();
            (r, e)
        }
    }

    fn keyed(max: usize, on_full: OnFull) -> Keyed<u32> {
        Keyed::new(KeyLimit { max, on_full })
    }

    /// Adds `key` as the engine does: room first, then the key, then a sighting.
    fn see(k: &mut Keyed<u32>, key: &str, pinned: &dyn Fn(&str) -> bool) -> (bool, Vec<Arc<str>>) {
        let mut evicted = Vec::new();
        if !k.contains_key(key) {
            if !k.make_room(pinned, &mut evicted, 0) {
                return (false, evicted);
            }
            k.insert(Arc::from(key), 0);
        }
        k.saw(key);
        (true, evicted)
    }

    const NONE: &dyn Fn(&str) -> bool = &|_| false;

    #[test]
    fn refusing_keeps_the_first_keys() {
        let mut k = keyed(2, OnFull::Refuse);
        assert!(see(&mut k, "a", NONE).0 && see(&mut k, "b", NONE).0);
        assert!(!see(&mut k, "c", NONE).0);
        assert!(see(&mut k, "a", NONE).0, "a known key is always served");
        assert_eq!((k.len(), k.take_counts_only()), (2, (1, 0)));
        assert!(k.recency.is_none(), "refusing rules keep no recency");
    }

    #[test]
    fn evicting_forgets_the_least_recently_seen() {
        let mut k = keyed(3, OnFull::EvictOldest);
        for key in ["a", "b", "c"] {
            see(&mut k, key, NONE);
        }
        see(&mut k, "a", NONE); // b is now the oldest
        let (ok, gone) = see(&mut k, "d", NONE);
        assert!(ok);
        assert_eq!(gone, [Arc::from("b")]);
        let (_, gone) = see(&mut k, "e", NONE);
        assert_eq!(gone, [Arc::from("c")]);
        assert!(k.contains_key("a") && k.contains_key("d") && k.contains_key("e"));
        assert_eq!(k.take_counts_only(), (0, 2));
    }

    #[test]
    fn a_stream_of_new_keys_cycles_through_itself_and_keeps_the_active_ones() {
        let mut k = keyed(100, OnFull::EvictOldest);
        for i in 0..100_000 {
            // Ten devices report every tenth message; the rest is a new id each time.
            if i % 10 == 0 {
                for d in 0..10 {
                    see(&mut k, &format!("dev-{d}"), NONE);
                }
            }
            see(&mut k, &format!("junk-{i}"), NONE);
            assert!(k.len() <= 100);
        }
        assert!((0..10).all(|d| k.contains_key(&format!("dev-{d}"))), "active devices stay");
        let r = k.recency.as_ref().expect("evicting");
        assert!(r.queue.len() <= 2 * 100 + 64 + 1 && r.stamps.len() <= 100, "recency stays bounded");
    }

    #[test]
    fn pinned_keys_are_never_evicted_and_a_full_rule_of_them_refuses() {
        let pinned: &dyn Fn(&str) -> bool = &|key| key.starts_with("fleet");
        let mut k = keyed(3, OnFull::EvictOldest);
        see(&mut k, "fleet-1", pinned);
        see(&mut k, "junk-1", pinned);
        see(&mut k, "fleet-2", pinned);
        let (ok, gone) = see(&mut k, "junk-2", pinned);
        assert!(ok);
        assert_eq!(gone, [Arc::from("junk-1")]);
        let (ok, gone) = see(&mut k, "fleet-3", pinned);
        assert!(ok && gone == [Arc::from("junk-2")]);
        let (ok, gone) = see(&mut k, "junk-3", pinned);
        assert!(!ok && gone.is_empty(), "only pinned keys left: refused");
        assert_eq!(k.take_counts_only(), (1, 2));
    }

    #[test]
    fn keys_removed_by_the_rule_and_limit_changes_are_handled() {
        let mut k = keyed(2, OnFull::EvictOldest);
        see(&mut k, "a", NONE);
        see(&mut k, "b", NONE);
        k.remove("a");
        let (ok, gone) = see(&mut k, "c", NONE);
        assert!(ok && gone.is_empty(), "room without evicting");
        // Lowering the limit evicts down to it at the next new key.
        k.set_limit(KeyLimit { max: 1, on_full: OnFull::EvictOldest });
        let (ok, gone) = see(&mut k, "d", NONE);
        assert!(ok);
        assert_eq!(gone.len(), 2);
        // Switching to refuse, then back: recency is rebuilt from the keys present.
        k.set_limit(KeyLimit { max: 1, on_full: OnFull::Refuse });
        assert!(!see(&mut k, "e", NONE).0);
        k.set_limit(KeyLimit { max: 1, on_full: OnFull::EvictOldest });
        let (ok, gone) = see(&mut k, "e", NONE);
        assert!(ok && gone == [Arc::from("d")]);
    }
}
