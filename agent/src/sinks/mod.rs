//! Sinks: where rules' actions go besides upstream (issue 19, in progress on this branch:
//! see docs/design/actions.md). So far the per-sink queue's bookkeeping ([`queue`]).

pub mod queue;
