//! What native functions see while a rule runs: the tables, the current time, and the
//! buffers that `emit(...)` and `after(...)` write to.
//!
//! The engine is single-threaded per instance and never re-entrant, so the context lives in
//! a thread-local that the engine fills before calling a rule and drains afterwards.

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
