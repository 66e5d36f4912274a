//! Events a run emits, for progress bars, `--json` lines and the editor.
//!
//! The set is closed so every consumer can handle all of it. Events are sent from worker
//! threads, in the order things happen on each thread.

use std::sync::Arc;
use std::time::Duration;

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunStatus {
    /// Every planned node ran or came from the cache.
    Succeeded,
    /// A node failed; the run stopped.
    Failed,
    /// The run was cancelled.
    Cancelled,
}

impl RunStatus {
    /// Lower-case name for machine output.
    pub fn name(self) -> &'static str {
        match self {
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
        }
    }
}

/// Something that happened during a run.
#[derive(Clone, Debug)]
pub enum Event {
    /// The plan is made: `n_to_run` nodes will run, `n_cached` come from the cache.
    RunStarted {
        /// Nodes that will execute.
        n_to_run: usize,
        /// Nodes served from the cache.
        n_cached: usize,
    },
    /// Under a VRAM budget, before anything runs: what will be resident and what will stream.
    MemoryPlanned {
        /// The plan.
        plan: Arc<crate::plan::MemoryPlan>,
    },
    /// A node's outputs came from the cache (memory or disk).
    Cached {
        /// Node id.
        node: Arc<str>,
        /// Node kind.
        kind: Arc<str>,
    },
    /// A node started running.
    NodeStarted {
        /// Node id.
        node: Arc<str>,
        /// Node kind.
        kind: Arc<str>,
    },
    /// A node reports progress (for example a sampling step).
    Progress {
        /// Node id.
        node: Arc<str>,
        /// Node kind.
        kind: Arc<str>,
        /// Steps done.
        step: u64,
        /// Steps in all.
        total: u64,
    },
    /// Something went wrong that does not stop the run (the disk cache could not be written, say);
    /// sent once per kind of problem per run.
    Warning {
        /// What happened and what it costs.
        message: Arc<str>,
    },
    /// A node produced a small preview image (PNG bytes).
    Preview {
        /// Node id.
        node: Arc<str>,
        /// Node kind.
        kind: Arc<str>,
        /// PNG-encoded preview.
        png: Arc<[u8]>,
    },
    /// A node finished successfully.
    NodeFinished {
        /// Node id.
        node: Arc<str>,
        /// Node kind.
        kind: Arc<str>,
        /// Wall time the node took.
        duration: Duration,
    },
    /// A node failed; the run stops.
    NodeFailed {
        /// Node id.
        node: Arc<str>,
        /// Node kind.
        kind: Arc<str>,
        /// The error, rendered with its causes.
        error: String,
    },
    /// The run was cancelled; `node` is the node that noticed, if any.
    Cancelled {
        /// Node that observed the cancellation, if it happened inside a node.
        node: Option<Arc<str>>,
    },
    /// The run ended.
    RunFinished {
        /// How it ended.
        status: RunStatus,
        /// Wall time of the whole run.
        duration: Duration,
    },
}

/// Receives events. Implemented for closures.
pub trait EventSink: Send + Sync {
    /// Handles one event. Must not block for long: it runs on the worker that emitted it.
    fn emit(&self, event: Event);
}

impl<F: Fn(Event) + Send + Sync> EventSink for F {
    fn emit(&self, event: Event) {
        self(event);
    }
}

/// An event sink that drops everything.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoEvents;

impl EventSink for NoEvents {
    fn emit(&self, _event: Event) {}
}
