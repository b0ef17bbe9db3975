//! [`Recorder`]: the open roll-ups of every remembered series, folded reading by reading and
//! closed when processing time passes the end of their period.
//!
//! A series is (key, field). Each has at most one open roll-up per resolution. A reading
//! opens the period its event time falls in; a reading of a later period closes the open
//! one first. A reading of an earlier period (the gateway's clock jumped back) closes the
//! open one early and reopens the earlier period: the two records of that period then
//! carry different `opened` stamps and a reader merges them, so nothing is mixed or lost.
//! Processing time closes periods nobody feeds any more: at `start + period + lateness`.
//!
//! Closing is a scan of the series when the earliest end passes (once a fine period, so
//! once a minute by default): O(series) per minute, nothing per reading.

use super::rollup::{get_varint, put_varint, unzigzag, zigzag};
use super::{Closed, HistoryConfig, Resolution, Rollup, RollupError, Skip};
use crate::FastMap;
use crate::output::{Outputs, Touched};
use std::sync::Arc;

/// An open roll-up.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Open {
    /// Start of its period (event time).
    pub start: i64,
    /// Processing time it was opened at (see [`Closed::opened`]).
    pub opened: i64,
    pub rollup: Rollup,
}

/// The open roll-ups of one series.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SeriesState {
    pub fine: Option<Open>,
    pub coarse: Option<Open>,
}

impl SeriesState {
    fn slot(&mut self, res: Resolution) -> &mut Option<Open> {
        match res {
            Resolution::Fine => &mut self.fine,
            Resolution::Coarse => &mut self.coarse,
        }
    }

    /// The saved form, written with every reading, raw bytes (snapshots carry them as
    /// base64, see `Store::snapshot`):
    /// ```text
    /// u8 flags: 1 fine open, 2 coarse open, 4 always; then for each open one, fine first:
    /// zigzag varint start, zigzag varint opened - start, the roll-up's compact encoding
    /// ```
    /// about 60 bytes for both. It was JSON with 14 floats, about 200 bytes: formatting them
    /// cost about 6 700 instructions a reading (callgrind). Then base64 of the same with
    /// `opened` whole (flag 4 clear), about 100 bytes: sled writes about ten bytes for each
    /// byte of state. [`SeriesState::decode`] still reads both (JSON starts with `{`, base64
    /// with a letter, digit, `+` or `/`, never a byte below 8).
    pub fn encode(&self) -> Vec<u8> {
        // Room for both at their largest: never grown.
        let mut bin = Vec::with_capacity(1 + 2 * (2 * 10 + Rollup::ENCODED_MAX));
        bin.push(RAW | u8::from(self.fine.is_some()) | u8::from(self.coarse.is_some()) << 1);
        for o in [self.fine, self.coarse].into_iter().flatten() {
            put_varint(&mut bin, zigzag(o.start));
            put_varint(&mut bin, zigzag(o.opened.wrapping_sub(o.start)));
            o.rollup.encode(&mut bin);
        }
        bin
    }

    pub fn decode(bytes: &[u8]) -> Result<SeriesState, RollupError> {
        use base64::Engine as _;
        if bytes.first() == Some(&b'{') {
            let saved: serde_json::Value = serde_json::from_slice(bytes).map_err(|_| RollupError::NOT_JSON)?;
            return Ok(SeriesState { fine: Open::from_json(&saved["f"])?, coarse: Open::from_json(&saved["c"])? });
        }
        let decoded;
        let bin = match bytes.first() {
            Some(f) if *f < 8 => bytes,
            _ => {
                let text = base64::engine::general_purpose::STANDARD_NO_PAD.decode(bytes);
                decoded = text.map_err(|_| RollupError::NOT_JSON)?;
                &decoded
            }
        };
        let flags = *bin.first().ok_or(RollupError("truncated"))?;
        if flags >= 8 {
            return Err(RollupError("bad header"));
        }
        let mut at = 1;
        let mut read = |present: bool| -> Result<Option<Open>, RollupError> {
            if !present {
                return Ok(None);
            }
            let start = unzigzag(get_varint(bin, &mut at)?);
            let opened = unzigzag(get_varint(bin, &mut at)?);
            let opened = if flags & RAW != 0 { start.wrapping_add(opened) } else { opened };
            let (rollup, used) = Rollup::decode(bin.get(at..).ok_or(RollupError("truncated"))?)?;
            at += used;
            Ok(Some(Open { start, opened, rollup }))
        };
        let state = SeriesState { fine: read(flags & 1 != 0)?, coarse: read(flags & 2 != 0)? };
        if at != bin.len() {
            return Err(RollupError("bad header"));
        }
        Ok(state)
    }
}

/// The flag of [`SeriesState::encode`]'s raw form: `opened` as a difference from `start`.
const RAW: u8 = 4;

impl Open {
    /// One half of the JSON form saved before the compact one, `[start, opened, count, sum,
    /// sumsq, min, max, first, last]` or absent: still read. Through `Value`, which the
    /// engine reads anyway, rather than a derived struct: the gateway binary is at its budget.
    fn from_json(v: &serde_json::Value) -> Result<Option<Open>, RollupError> {
        if v.is_null() {
            return Ok(None);
        }
        let a = v.as_array().filter(|a| a.len() == 9).ok_or(RollupError::NOT_JSON)?;
        let int = |i: usize| a[i].as_i64().ok_or(RollupError::NOT_JSON);
        let num = |i: usize| a[i].as_f64().ok_or(RollupError::NOT_JSON);
        let count = a[2].as_u64().ok_or(RollupError::NOT_JSON)?;
        let rollup =
            Rollup { count, sum: num(3)?, sumsq: num(4)?, min: num(5)?, max: num(6)?, first: num(7)?, last: num(8)? };
        Ok((count > 0).then_some(Open { start: int(0)?, opened: int(1)?, rollup }))
    }
}

/// A key's series: (field, open roll-ups) each.
type Fields = Vec<(Arc<str>, SeriesState)>;

/// The open roll-ups of all series.
#[derive(Debug, Default)]
pub struct Recorder {
    /// key -> (the key again, so that one lookup yields it; (field, state) of each field):
    /// a device has a handful of fields, so a short list each.
    series: FastMap<Arc<str>, (Arc<str>, Fields)>,
    /// Series with some open roll-up.
    count: usize,
    /// Earliest processing time at which some open roll-up is due to close (`i64::MAX`:
    /// none). A lower bound: closing rescans.
    next_close: i64,
}

impl Recorder {
    pub fn new() -> Recorder {
        Recorder { series: FastMap::default(), count: 0, next_close: i64::MAX }
    }

    /// Series with an open roll-up.
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// When [`Recorder::close_due`] next has work.
    pub fn next_close(&self) -> Option<i64> {
        (self.next_close != i64::MAX).then_some(self.next_close)
    }

    /// Folds reading `v` of `field` of `key`, timed `time` (event time), at processing time
    /// `now`. `Err` says why it was not folded (the caller counts it).
    #[allow(clippy::too_many_arguments)] // called from one place, the engine's history hook
    pub fn fold(
        &mut self,
        cfg: &HistoryConfig,
        lateness_ms: i64,
        key: &str,
        field: &Arc<str>,
        time: i64,
        v: f64,
        now: i64,
        out: &mut Outputs,
    ) -> Result<(), Skip> {
        if !v.is_finite() {
            return Err(Skip::NonFinite);
        }
        if time > now.saturating_add(cfg.max_future_ms) || time < now.saturating_sub(cfg.max_past_ms) {
            return Err(Skip::OutOfRange);
        }
        let full = self.count >= cfg.max_series;
        // One lookup for a known key (the value holds the key too, for the outputs).
        let (key, fields) = match self.series.get_mut(key) {
            Some(v) => v,
            None if full => return Err(Skip::Full),
            None => {
                let k: Arc<str> = Arc::from(key);
                self.series.entry(Arc::clone(&k)).or_insert((k, Vec::new()))
            }
        };
        let key = &*key;
        let idx = match fields.iter().position(|(f, _)| f == field) {
            Some(i) => i,
            // The key existed (a new one returned above), so nothing was created.
            None if full => return Err(Skip::Full),
            None => {
                fields.push((Arc::clone(field), SeriesState::default()));
                self.count += 1;
                fields.len() - 1
            }
        };
        let state = &mut fields[idx].1;
        for res in Resolution::ALL {
            let period = period_ms(cfg, res);
            let start = time.div_euclid(period) * period;
            let slot = state.slot(res);
            match slot {
                Some(o) if o.start == start => o.rollup.fold(v),
                _ => {
                    if let Some(o) = slot.take() {
                        out.closed.push(closed(key, field, res, o));
                    }
                    *slot = Some(Open { start, opened: now, rollup: Rollup::of(v) });
                    self.next_close = self.next_close.min(start + period + lateness_ms);
                }
            }
        }
        out.touched.push(Touched::Series { key: Arc::clone(key), field: Arc::clone(field) });
        Ok(())
    }

    /// Closes the roll-ups whose period ended `lateness_ms` or more before `now`.
    pub fn close_due(&mut self, cfg: &HistoryConfig, lateness_ms: i64, now: i64, out: &mut Outputs) {
        if now < self.next_close {
            return;
        }
        let mut next = i64::MAX;
        let mut emptied = 0;
        for (key, fields) in self.series.values_mut() {
            fields.retain_mut(|(field, state)| {
                let mut changed = false;
                for res in Resolution::ALL {
                    let end_of = |o: &Open| o.start + period_ms(cfg, res) + lateness_ms;
                    let slot = state.slot(res);
                    match slot.as_ref().map(end_of) {
                        Some(end) if end <= now => {
                            if let Some(o) = slot.take() {
                                out.closed.push(closed(key, field, res, o));
                                changed = true;
                            }
                        }
                        Some(end) => next = next.min(end),
                        None => {}
                    }
                }
                if changed {
                    out.touched.push(Touched::Series { key: Arc::clone(key), field: Arc::clone(field) });
                }
                let keep = state.fine.is_some() || state.coarse.is_some();
                emptied += usize::from(!keep);
                keep
            });
        }
        self.series.retain(|_, (_, fields)| !fields.is_empty());
        self.count -= emptied;
        self.next_close = next;
    }

    /// The open roll-ups of a series, saved; `None` once it has none (delete it).
    pub fn export(&self, key: &str, field: &str) -> Option<Vec<u8>> {
        let (_, fields) = self.series.get(key)?;
        fields.iter().find(|(f, _)| &**f == field).map(|(_, s)| s.encode())
    }

    /// Every series, for `export_all`.
    pub fn names(&self) -> Vec<(Arc<str>, Arc<str>)> {
        let mut v: Vec<_> = self
            .series
            .iter()
            .flat_map(|(k, (_, fs))| fs.iter().map(|(f, _)| (Arc::clone(k), Arc::clone(f))))
            .collect();
        v.sort();
        v
    }

    /// Restores a series saved by [`Recorder::export`].
    pub fn import(
        &mut self,
        cfg: &HistoryConfig,
        lateness_ms: i64,
        key: Arc<str>,
        field: Arc<str>,
        bytes: &[u8],
    ) -> Result<(), RollupError> {
        let state = SeriesState::decode(bytes)?;
        for res in Resolution::ALL {
            if let Some(o) = [&state.fine, &state.coarse][res as usize] {
                self.next_close = self.next_close.min(o.start + period_ms(cfg, res) + lateness_ms);
            }
        }
        let (_, fields) = self.series.entry(Arc::clone(&key)).or_insert_with(|| (key, Vec::new()));
        match fields.iter_mut().find(|(f, _)| *f == field) {
            Some((_, s)) => *s = state,
            None => {
                fields.push((field, state));
                self.count += 1;
            }
        }
        Ok(())
    }

    /// The open roll-ups of a series.
    pub fn get(&self, key: &str, field: &str) -> Option<&SeriesState> {
        self.series.get(key)?.1.iter().find(|(f, _)| &**f == field).map(|(_, s)| s)
    }
}

fn period_ms(cfg: &HistoryConfig, res: Resolution) -> i64 {
    match res {
        Resolution::Fine => cfg.fine_ms,
        Resolution::Coarse => cfg.coarse_ms,
    }
}

fn closed(key: &Arc<str>, field: &Arc<str>, resolution: Resolution, o: Open) -> Closed {
    Closed {
        key: Arc::clone(key),
        field: Arc::clone(field),
        resolution,
        start: o.start,
        opened: o.opened,
        rollup: o.rollup,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn open() -> impl Strategy<Value = Option<Open>> {
        let value = prop_oneof![
            (-100_000i64..100_000).prop_map(|n| n as f64 / 100.0),
            any::<f64>().prop_filter("finite", |v| v.is_finite()),
        ];
        prop::option::of((any::<i64>(), any::<i64>(), prop::collection::vec(value, 1..10)).prop_map(
            |(start, opened, vs)| {
                let mut rollup = Rollup::of(vs[0]);
                vs[1..].iter().for_each(|v| rollup.fold(*v));
                Open { start, opened, rollup }
            },
        ))
    }

    proptest! {
        /// Saved with every reading and read back at start: bit for bit.
        #[test]
        fn a_series_state_comes_back_as_saved(fine in open(), coarse in open()) {
            let state = SeriesState { fine, coarse };
            let bytes = state.encode();
            prop_assert!(bytes[0] < 8, "raw, never read as text");
            let back = SeriesState::decode(&bytes).expect("decodes");
            // The form saved before (base64, `opened` whole) too.
            prop_assert_eq!(&SeriesState::decode(&saved_before(&state)).expect("decodes"), &back);
            for (a, b) in [(back.fine, state.fine), (back.coarse, state.coarse)] {
                prop_assert_eq!(a.map(|o| (o.start, o.opened, o.rollup.count)), b.map(|o| (o.start, o.opened, o.rollup.count)));
                let bits = |o: Option<Open>| o.map(|o| [o.rollup.sum, o.rollup.sumsq, o.rollup.min, o.rollup.max, o.rollup.first, o.rollup.last].map(f64::to_bits));
                prop_assert_eq!(bits(a), bits(b));
            }
        }

        #[test]
        fn decoding_anything_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..120)) {
            let _ = SeriesState::decode(&bytes);
        }

        /// A recorder saved after every reading (as the agent commits its batches) and
        /// restored from what was saved at random points (a SIGKILL) holds what one never
        /// stopped holds, and closes the same roll-ups, bit for bit: through late readings,
        /// readings of earlier and later periods, and a clock that jumps back.
        #[test]
        fn restored_at_any_point_it_goes_on_as_if_never_stopped(
            steps in prop::collection::vec((-30_000i64..200_000, -20_000i64..90_000, 0u8..3, any::<bool>(), 0u8..8), 1..150),
        ) {
            let cfg = HistoryConfig { fine_ms: 60_000, coarse_ms: 300_000, ..HistoryConfig::default() };
            let lateness = 1_000;
            let field: Arc<str> = "temperature".into();
            let (mut live, mut restarted) = (Recorder::new(), Recorder::new());
            let (mut a, mut b) = (Outputs::default(), Outputs::default());
            let mut store: std::collections::BTreeMap<String, Vec<u8>> = Default::default();
            let mut now = 1_764_000_000_000i64;
            for (i, (advance, age, k, close, restart)) in steps.into_iter().enumerate() {
                now += advance;
                let key = format!("k{k}");
                let v = (i % 37) as f64 / 4.0 - 3.0;
                if close {
                    live.close_due(&cfg, lateness, now, &mut a);
                    restarted.close_due(&cfg, lateness, now, &mut b);
                }
                let folded = live.fold(&cfg, lateness, &key, &field, now - age, v, now, &mut a);
                prop_assert_eq!(folded, restarted.fold(&cfg, lateness, &key, &field, now - age, v, now, &mut b));
                for t in b.touched.drain(..) {
                    let Touched::Series { key, field } = t else { panic!("not a series: {t:?}") };
                    match restarted.export(&key, &field) {
                        Some(bytes) => store.insert(key.to_string(), bytes),
                        None => store.remove(&*key),
                    };
                }
                if restart == 0 {
                    restarted = Recorder::new();
                    for (key, bytes) in &store {
                        restarted.import(&cfg, lateness, key.as_str().into(), Arc::clone(&field), bytes).expect("imports");
                    }
                    prop_assert_eq!(restarted.len(), live.len());
                }
                prop_assert_eq!(restarted.get(&key, &field), live.get(&key, &field));
            }
            now += 2 * cfg.coarse_ms;
            live.close_due(&cfg, lateness, now, &mut a);
            restarted.close_due(&cfg, lateness, now, &mut b);
            prop_assert!(live.is_empty() && restarted.is_empty());
            let sorted = |closed: &[Closed]| {
                let mut v: Vec<_> = closed.iter().map(|c| (c.key.to_string(), c.resolution, c.start, c.opened, format!("{:?}", c.rollup))).collect();
                v.sort();
                v
            };
            prop_assert_eq!(sorted(&a.closed), sorted(&b.closed));
        }
    }

    /// The base64 form saved before the raw one.
    fn saved_before(state: &SeriesState) -> Vec<u8> {
        use base64::Engine as _;
        let mut bin = vec![u8::from(state.fine.is_some()) | u8::from(state.coarse.is_some()) << 1];
        for o in [state.fine, state.coarse].into_iter().flatten() {
            put_varint(&mut bin, zigzag(o.start));
            put_varint(&mut bin, zigzag(o.opened));
            o.rollup.encode(&mut bin);
        }
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(bin).into_bytes()
    }

    /// Saved by an agent before the compact form: still restored.
    #[test]
    fn the_json_saved_before_is_still_read() {
        let json =
            br#"{"f":[60000,61000,2,43.0,925.0,21.5,21.5,21.5,21.5],"c":[0,61000,2,43.0,925.0,21.5,21.5,21.5,21.5]}"#;
        let state = SeriesState::decode(json).expect("decodes");
        let fine = state.fine.expect("fine");
        assert_eq!((fine.start, fine.opened, fine.rollup.count, fine.rollup.sum), (60_000, 61_000, 2, 43.0));
        assert_eq!(state.coarse.map(|c| c.start), Some(0));
        assert!(SeriesState::decode(b"{\"f\":1}").is_err());
        assert!(SeriesState::decode(b"!!").is_err());
    }

    #[test]
    fn a_typical_state_is_under_70_bytes() {
        let mut rollup = Rollup::of(21.5);
        rollup.fold(21.75);
        let fine = Open { start: 1_764_000_000_000, opened: 1_764_000_001_234, rollup };
        let coarse = Open { start: 1_763_998_200_000, ..fine };
        let n = SeriesState { fine: Some(fine), coarse: Some(coarse) }.encode().len();
        assert!(n <= 70, "{n} bytes");
    }
}
