//! What native functions see while a rule runs: the tables, the current time, the buffers
//! that `emit(...)` and `after(...)` write to, and the past of the rule's current key that
//! `history(...)` reads.
//!
//! The engine is single-threaded per instance and never re-entrant, so the context lives in
//! a thread-local that the engine fills before calling a rule and drains afterwards.

use crate::past::{KeyPast, PastSpec, RulePast};
use crate::tables::Tables;
use rhai::{Dynamic, ImmutableString};
use std::cell::RefCell;
use std::sync::Arc;

/// A timer a handler asked for.
#[derive(Debug, Clone)]
pub(crate) enum TimerRequest {
    After { delay_ms: i64, name: ImmutableString, data: Dynamic },
    Cancel { name: ImmutableString },
}

#[derive(Debug, Default)]
pub(crate) struct CallContext {
    pub(crate) tables: Arc<Tables>,
    pub(crate) now: i64,
    /// `emit(...)` is allowed (custom handlers only).
    pub(crate) handler: bool,
    pub(crate) emitted: Vec<Dynamic>,
    pub(crate) timers: Vec<TimerRequest>,
    /// The past of the key being evaluated, lent for the call (see [`enter_past`]); `None`
    /// for rules without `past`, and in `key` (which runs before the key is known).
    pub(crate) past: Option<PastCall>,
}

/// A rule's past for one key, moved here for the length of a call, so `history(...)` reads
/// it without the ring being copied.
#[derive(Debug)]
pub(crate) struct PastCall {
    /// The rule's declaration, to resolve and check `history(field, ...)`.
    pub(crate) specs: Arc<[PastSpec]>,
    pub(crate) state: KeyPast,
    /// Event time the spans end at: the event's, or a timer's deadline.
    pub(crate) at: i64,
}

thread_local! {
    static CONTEXT: RefCell<CallContext> = RefCell::new(CallContext::default());
}

pub(crate) fn with<R>(f: impl FnOnce(&mut CallContext) -> R) -> R {
    CONTEXT.with(|c| f(&mut c.borrow_mut()))
}

/// Sets what the next rule calls see.
pub(crate) fn enter(tables: &Arc<Tables>, now: i64) {
    with(|c| {
        if !Arc::ptr_eq(&c.tables, tables) {
            c.tables = tables.clone();
        }
        c.now = now;
    });
}

/// Lends `key`'s past (if the rule keeps one) to the calls that follow, spans ending at
/// event time `at`. Every `enter_past` is followed by [`leave_past`] with the same key.
pub(crate) fn enter_past(past: Option<&mut RulePast>, key: &str, at: i64) {
    let Some(p) = past else { return };
    let state = p.keys.get_mut(key).map(std::mem::take).unwrap_or_default();
    with(|c| c.past = Some(PastCall { specs: Arc::clone(&p.specs), state, at }));
}

/// Takes back what [`enter_past`] lent.
pub(crate) fn leave_past(past: Option<&mut RulePast>, key: &str) {
    // Rules without a past lent nothing: the thread-local is not touched for them.
    let Some(p) = past else { return };
    let Some(call) = with(|c| c.past.take()) else { return };
    if let Some(slot) = p.keys.get_mut(key) {
        *slot = call.state;
    }
}
