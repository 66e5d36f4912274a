//! Cooperative cancellation: a flag checked between nodes and handed to nodes for per-step
//! checks.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// A shared cancellation flag. Cloning shares the flag.
#[derive(Clone, Debug, Default)]
pub struct CancelToken {
    cancelled: Arc<AtomicBool>,
}

impl CancelToken {
    /// A token that is not cancelled.
    pub fn new() -> CancelToken {
        CancelToken::default()
    }

    /// Asks every holder to stop at its next check.
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::SeqCst);
    }

    /// Whether cancellation was asked for.
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed)
    }

    /// The shared flag itself, for code that knows no engine (model code checks it between
    /// transformer blocks and decoder tiles, so that cancelling takes effect within a second).
    pub fn flag(&self) -> Arc<AtomicBool> {
        self.cancelled.clone()
    }
}
