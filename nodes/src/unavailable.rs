//! Nodes whose implementation is not built yet: the spec is real (validation, docs and the
//! editor use it), running fails with an explicit error.

use veetance_engine::{Node, NodeCtx, NodeError, NodeInputs, NodeSpec, Outputs};

/// A node that validates like the real one but refuses to run, naming what is missing.
pub struct Unavailable {
    spec: NodeSpec,
    missing: &'static str,
}

impl Unavailable {
    /// A node with `spec` that fails with `missing` when run.
    pub fn new(spec: NodeSpec, missing: &'static str) -> Unavailable {
        Unavailable { spec, missing }
    }
}

impl Node for Unavailable {
    fn spec(&self) -> &NodeSpec {
        &self.spec
    }

    fn run(&self, _inputs: &NodeInputs, _ctx: &NodeCtx<'_>) -> Result<Outputs, NodeError> {
        Err(NodeError::msg(format!(
            "{} cannot run in this build: {}",
            self.spec.kind, self.missing
        )))
    }
}
