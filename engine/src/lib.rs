//! Veetance engine: values, node specs, the workflow format, validation, the executor, the
//! output cache, the model pool and run events.
//!
//! The flow is ground truth → derived state: a RON [`Workflow`] (the only type read back from
//! text) is [`validate`]d against a [`Registry`] into a [`Graph`] plus [`Diagnostic`]s; a
//! [`Session`] runs a graph, memoizing every pure node's outputs under a [`Fingerprint`] so that
//! changing one input re-runs exactly the nodes downstream of it.
//!
//! The engine knows no model, no specific node and no UI. Models and tensors are opaque
//! [`Object`]s; the node crate gives them meaning.

#![forbid(unsafe_code)]

pub mod cache;
pub mod cancel;
pub mod diagnostic;
pub mod event;
pub mod exec;
pub mod graph;
pub mod node;
pub mod overrides;
pub mod plan;
pub mod pool;
pub mod registry;
pub mod spec;
mod suggest;
pub mod value;
pub mod workflow;

pub use cache::{DiskCache, Fingerprint, MemoryCache, NodeOutputs};
pub use cancel::CancelToken;
pub use diagnostic::{Code, Diagnostic, Severity, Span};
pub use event::{Event, EventSink, NoEvents, RunStatus};
pub use exec::{
    Budgets, NodeReport, Outcome, PlanError, RunOptions, RunReport, Session, SessionConfig,
    WrittenFile, format_bytes, memory_plan,
};
pub use graph::{Graph, GraphNode, Slot, Validation, validate};
pub use node::{
    FnNode, Kind, MemoryEstimate, Node, NodeCtx, NodeError, NodeInputs, NodeKind, Outputs, RunEnv,
};
pub use plan::{CannotFit, MemoryPlan, ModelPart, NodeNeed, PartPlan, PartUse, Placement};
pub use pool::{ModelPool, available_memory_bytes};
pub use registry::{Decoder, Registry, RegistryError, TypeInfo};
pub use spec::{InputSpec, NodeSpec, OutputSpec, Purity, TextWidget};
pub use value::{DataType, Literal, Object, Payload, Value};
pub use workflow::{
    FORMAT_VERSION, InputMap, InputValue, NodeMap, SourceMap, Workflow, WorkflowNode,
};
