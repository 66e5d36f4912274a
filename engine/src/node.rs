//! The `Node` trait and what a node sees while it runs: typed inputs, a context for progress,
//! cancellation, previews and files, and the outputs it returns.

use std::error::Error as StdError;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::cancel::CancelToken;
use crate::event::{Event, EventSink};
use crate::pool::ModelPool;
use crate::spec::NodeSpec;
use crate::value::{DataType, Object, Payload, Value};

/// Why a node did not produce outputs.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// An input was missing or of an unexpected shape.
    #[error("input `{input}`: {message}")]
    Input {
        /// Input port name.
        input: String,
        /// What was wrong.
        message: String,
    },
    /// The node noticed that the run was cancelled.
    #[error("cancelled")]
    Cancelled,
    /// The node panicked; this is a bug in the node.
    #[error("panicked: {0}")]
    Panicked(String),
    /// The node's outputs did not match its spec; this is a bug in the node.
    #[error("returned outputs that do not match its spec: {0}")]
    BadOutputs(String),
    /// Anything else, with a message for people.
    #[error("{0}")]
    Message(String),
    /// An error from a library, with context.
    #[error("{context}")]
    Source {
        /// What the node was doing.
        context: String,
        /// The underlying error.
        #[source]
        source: Box<dyn StdError + Send + Sync>,
    },
}

impl NodeError {
    /// An error with a message.
    pub fn msg(message: impl Into<String>) -> NodeError {
        NodeError::Message(message.into())
    }

    /// Wraps a library error with what the node was doing.
    pub fn with_context(
        context: impl Into<String>,
        source: impl Into<Box<dyn StdError + Send + Sync>>,
    ) -> NodeError {
        NodeError::Source {
            context: context.into(),
            source: source.into(),
        }
    }

    fn input(input: &str, message: impl Into<String>) -> NodeError {
        NodeError::Input {
            input: input.to_owned(),
            message: message.into(),
        }
    }
}

/// Memory a node expects to need at its peak, in bytes, and what the memory planner
/// ([`crate::plan`]) needs to know about the models it makes or computes with.
#[derive(Clone, Debug, Default)]
pub struct MemoryEstimate {
    /// Host memory.
    pub ram_bytes: u64,
    /// Accelerator memory of the node's own (activations, workspaces, outputs), not counting
    /// the model parts in `uses`.
    pub vram_bytes: u64,
    /// Model parts this node makes (a loader), for the planner to place.
    pub parts: Vec<crate::plan::ModelPart>,
    /// Model parts this node computes with.
    pub uses: Vec<crate::plan::PartUse>,
    /// Stand-ins for outputs, by output name, that downstream nodes' estimates read as their
    /// inputs (a loader's model sizes, a sampler's latent size); the executor passes them on
    /// along the links.
    pub outputs: Vec<(String, Value)>,
}

/// A kind of node: its spec and its behaviour.
///
/// Contract: a [`crate::Purity::Pure`] node's outputs depend only on its inputs (randomness
/// only from an explicit seed), and any file it reads is named by [`Node::identity`].
pub trait Node: Send + Sync {
    /// The spec, the single source of truth for ports and docs.
    fn spec(&self) -> &NodeSpec;

    /// Runs the node.
    fn run(&self, inputs: &NodeInputs, ctx: &NodeCtx<'_>) -> Result<Outputs, NodeError>;

    /// Peak memory for these inputs. Literal inputs are present, and linked ones where the
    /// upstream node's estimate gave a stand-in ([`MemoryEstimate::outputs`]).
    fn estimate(&self, _inputs: &NodeInputs, _env: &RunEnv) -> MemoryEstimate {
        MemoryEstimate::default()
    }

    /// The identity of the files this node would read (for example a content hash, or size and
    /// modification time), mixed into the cache key so an edited file is never served stale.
    /// Only literal inputs are present; `env` says where names and relative paths resolve.
    fn identity(&self, _inputs: &NodeInputs, _env: &RunEnv) -> Result<Option<Vec<u8>>, NodeError> {
        Ok(None)
    }
}

/// A node kind written as a type: its spec and behaviour as associated functions, so a node is
/// one `impl` block. [`Kind`] turns it into a [`Node`] ([`crate::Registry::register_kind`]).
pub trait NodeKind: Send + Sync + 'static {
    /// The spec, the single source of truth for ports and docs.
    fn spec() -> NodeSpec;

    /// Runs the node.
    fn run(inputs: &NodeInputs, ctx: &NodeCtx<'_>) -> Result<Outputs, NodeError>;

    /// Peak memory for these inputs (see [`Node::estimate`]).
    fn estimate(_inputs: &NodeInputs, _env: &RunEnv) -> MemoryEstimate {
        MemoryEstimate::default()
    }

    /// The identity of the files this node would read (see [`Node::identity`]).
    fn identity(_inputs: &NodeInputs, _env: &RunEnv) -> Result<Option<Vec<u8>>, NodeError> {
        Ok(None)
    }
}

/// A [`NodeKind`] as a [`Node`]: its spec, built once.
pub struct Kind<K: NodeKind> {
    spec: NodeSpec,
    kind: std::marker::PhantomData<fn() -> K>,
}

impl<K: NodeKind> Kind<K> {
    /// The node of kind `K`.
    pub fn new() -> Kind<K> {
        Kind {
            spec: K::spec(),
            kind: std::marker::PhantomData,
        }
    }
}

impl<K: NodeKind> Default for Kind<K> {
    fn default() -> Kind<K> {
        Kind::new()
    }
}

impl<K: NodeKind> Node for Kind<K> {
    fn spec(&self) -> &NodeSpec {
        &self.spec
    }

    fn run(&self, inputs: &NodeInputs, ctx: &NodeCtx<'_>) -> Result<Outputs, NodeError> {
        K::run(inputs, ctx)
    }

    fn estimate(&self, inputs: &NodeInputs, env: &RunEnv) -> MemoryEstimate {
        K::estimate(inputs, env)
    }

    fn identity(&self, inputs: &NodeInputs, env: &RunEnv) -> Result<Option<Vec<u8>>, NodeError> {
        K::identity(inputs, env)
    }
}

/// The inputs of one node invocation, in spec order. Empty optional inputs are `None`.
#[derive(Debug)]
pub struct NodeInputs<'a> {
    spec: &'a NodeSpec,
    values: Vec<Option<Value>>,
}

impl<'a> NodeInputs<'a> {
    /// Inputs for `spec`; `values` is in the spec's input order.
    pub fn new(spec: &'a NodeSpec, values: Vec<Option<Value>>) -> NodeInputs<'a> {
        NodeInputs { spec, values }
    }

    /// The value of input `name`, if set.
    pub fn get(&self, name: &str) -> Option<&Value> {
        let (idx, _) = self.spec.input_named(name)?;
        self.values.get(idx)?.as_ref()
    }

    fn required(&self, name: &str) -> Result<&Value, NodeError> {
        self.get(name)
            .ok_or_else(|| NodeError::input(name, "is not set"))
    }

    /// A required integer input.
    pub fn int(&self, name: &str) -> Result<i64, NodeError> {
        self.opt_int(name)?
            .ok_or_else(|| NodeError::input(name, "is not set"))
    }

    /// An optional integer input.
    pub fn opt_int(&self, name: &str) -> Result<Option<i64>, NodeError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Int(v)) => Ok(Some(*v)),
            Some(other) => Err(type_error(name, DataType::INT, other)),
        }
    }

    /// A required float input.
    pub fn float(&self, name: &str) -> Result<f64, NodeError> {
        self.opt_float(name)?
            .ok_or_else(|| NodeError::input(name, "is not set"))
    }

    /// An optional float input.
    pub fn opt_float(&self, name: &str) -> Result<Option<f64>, NodeError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Float(v)) => Ok(Some(*v)),
            Some(other) => Err(type_error(name, DataType::FLOAT, other)),
        }
    }

    /// A required boolean input.
    pub fn bool(&self, name: &str) -> Result<bool, NodeError> {
        match self.required(name)? {
            Value::Bool(v) => Ok(*v),
            other => Err(type_error(name, DataType::BOOL, other)),
        }
    }

    /// A required text input.
    pub fn text(&self, name: &str) -> Result<&str, NodeError> {
        self.opt_text(name)?
            .ok_or_else(|| NodeError::input(name, "is not set"))
    }

    /// An optional text input.
    pub fn opt_text(&self, name: &str) -> Result<Option<&str>, NodeError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Text(v)) => Ok(Some(v)),
            Some(other) => Err(type_error(name, DataType::TEXT, other)),
        }
    }

    /// A required object input holding a `T`.
    pub fn object<T: Payload>(&self, name: &str) -> Result<Arc<T>, NodeError> {
        self.opt_object(name)?
            .ok_or_else(|| NodeError::input(name, "is not connected"))
    }

    /// An optional object input holding a `T`.
    pub fn opt_object<T: Payload>(&self, name: &str) -> Result<Option<Arc<T>>, NodeError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Object(object)) => object.downcast_arc::<T>().map(Some).ok_or_else(|| {
                NodeError::input(
                    name,
                    format!(
                        "holds a {} of an unexpected representation ({})",
                        object.data_type(),
                        std::any::type_name::<T>()
                    ),
                )
            }),
            Some(other) => Err(NodeError::input(
                name,
                format!("expected an object, got {}", other.data_type()),
            )),
        }
    }
}

fn type_error(name: &str, expected: DataType, got: &Value) -> NodeError {
    NodeError::input(
        name,
        format!("expected {expected}, got {}", got.data_type()),
    )
}

/// What a node returns: values by output name. The executor checks them against the spec.
#[derive(Debug, Default)]
pub struct Outputs {
    values: Vec<(String, Value)>,
}

impl Outputs {
    /// No outputs.
    pub fn new() -> Outputs {
        Outputs::default()
    }

    /// Adds output `name`.
    pub fn with(mut self, name: &str, value: Value) -> Outputs {
        self.values.push((name.to_owned(), value));
        self
    }

    /// Adds an object output `name` of `data_type`.
    pub fn with_object<P: Payload>(self, name: &str, data_type: DataType, payload: P) -> Outputs {
        self.with(name, Value::Object(Object::new(data_type, payload)))
    }

    /// Orders the values as the spec's outputs, checking names and types.
    pub fn into_spec_order(self, spec: &NodeSpec) -> Result<Vec<Value>, NodeError> {
        let mut ordered: Vec<Option<Value>> = vec![None; spec.outputs.len()];
        for (name, value) in self.values {
            let Some((idx, output)) = spec.output_named(&name) else {
                return Err(NodeError::BadOutputs(format!("unknown output `{name}`")));
            };
            if !output.data_type.accepts(value.data_type()) {
                return Err(NodeError::BadOutputs(format!(
                    "output `{name}` should be {} but is {}",
                    output.data_type,
                    value.data_type()
                )));
            }
            if let Some(slot) = ordered.get_mut(idx) {
                *slot = Some(value);
            }
        }
        ordered
            .into_iter()
            .zip(&spec.outputs)
            .map(|(value, output)| {
                value.ok_or_else(|| {
                    NodeError::BadOutputs(format!("output `{}` is missing", output.name))
                })
            })
            .collect()
    }
}

/// Settings of one run that nodes may read.
#[derive(Clone, Debug)]
pub struct RunEnv {
    /// Where relative output paths resolve.
    pub out_dir: PathBuf,
    /// The workflow as actually run (overrides applied), as RON text, for embedding in outputs.
    pub workflow_ron: Arc<str>,
    /// Device preference from the command line: `auto`, `cpu` or `cuda`.
    pub device: String,
    /// Folders searched for model names (`VEETANCE_MODELS`, `--models-dir`), in order.
    pub model_dirs: Vec<PathBuf>,
    /// Where loaded models live between nodes and runs.
    pub pool: Arc<ModelPool>,
    /// The VRAM budget of the run (`--vram-budget`, the editor's slider): a hard limit on the
    /// GPU memory models and nodes allocate, planned for by [`crate::plan`].
    pub vram_budget_bytes: Option<u64>,
    /// Models placed on the GPU under a memory plan (their resident layers), kept between
    /// nodes and runs; keys start with the model part's key.
    pub placed: Arc<ModelPool>,
    /// Folders inside which nodes may read files, or `None` for anywhere. Set for workflows that
    /// came inside a picture (untrusted): see [`RunEnv::check_read`] and docs/security.md.
    pub read_roots: Option<Vec<PathBuf>>,
    /// The folder of the workflow file being run (or of the picture it came in), where the
    /// relative paths it names are looked up first ([`RunEnv::input_path`]); `None` when it has
    /// no file.
    pub workflow_dir: Option<PathBuf>,
}

impl RunEnv {
    /// A run environment writing under `out_dir`, with an empty model pool.
    pub fn new(out_dir: impl Into<PathBuf>) -> RunEnv {
        RunEnv {
            out_dir: out_dir.into(),
            workflow_ron: Arc::from(""),
            device: "auto".to_owned(),
            model_dirs: Vec::new(),
            pool: Arc::new(ModelPool::default()),
            vram_budget_bytes: None,
            placed: Arc::new(ModelPool::new(u64::MAX)),
            read_roots: None,
            workflow_dir: None,
        }
    }

    /// The folder of a workflow `file`, for [`RunEnv::workflow_dir`] (`None` for a bare file
    /// name: the current directory is where it is looked up anyway).
    pub fn folder_of(file: &Path) -> Option<PathBuf> {
        file.parent()
            .filter(|dir| !dir.as_os_str().is_empty())
            .map(Path::to_path_buf)
    }

    /// Where a path a workflow names is read from: a relative path is looked up in the
    /// workflow's folder first, so a workflow works from any current directory, and is taken
    /// as given (the current directory) when nothing is there, as a path typed in `--set`
    /// expects. Absolute paths are as given.
    pub fn input_path(&self, path: impl AsRef<Path>) -> PathBuf {
        let path = path.as_ref();
        if path.is_relative()
            && let Some(dir) = &self.workflow_dir
        {
            let beside = dir.join(path);
            if beside.exists() {
                return beside;
            }
        }
        path.to_path_buf()
    }

    /// Whether a node may read `path` under the run's read policy: anywhere without one,
    /// otherwise only inside a root (after resolving `..` and symbolic links, so neither leads
    /// out). A path that does not exist is let through: reading it fails on its own.
    pub fn check_read(&self, path: &Path) -> Result<(), NodeError> {
        let Some(roots) = &self.read_roots else {
            return Ok(());
        };
        let Ok(resolved) = path.canonicalize() else {
            return Ok(());
        };
        let inside = roots.iter().any(|root| {
            root.canonicalize()
                .is_ok_and(|root| resolved.starts_with(root))
        });
        if inside {
            return Ok(());
        }
        let shown: Vec<String> = roots.iter().map(|r| r.display().to_string()).collect();
        Err(NodeError::msg(format!(
            "reading {} is not allowed: a workflow from a picture reads only inside {} (add a folder with --allow-read DIR, or lift the limit with --trust if you trust the picture)",
            path.display(),
            shown.join(", ")
        )))
    }
}

/// What a running node may use besides its inputs.
pub struct NodeCtx<'a> {
    pub(crate) node: &'a Arc<str>,
    pub(crate) kind: &'a Arc<str>,
    pub(crate) cancel: &'a CancelToken,
    pub(crate) events: &'a dyn EventSink,
    pub(crate) env: &'a RunEnv,
    pub(crate) memory_plan: Option<&'a crate::plan::MemoryPlan>,
}

impl<'a> NodeCtx<'a> {
    /// A context for calling a node directly (tests, tools).
    pub fn new(
        node: &'a Arc<str>,
        kind: &'a Arc<str>,
        cancel: &'a CancelToken,
        events: &'a dyn EventSink,
        env: &'a RunEnv,
    ) -> NodeCtx<'a> {
        NodeCtx {
            node,
            kind,
            cancel,
            events,
            env,
            memory_plan: None,
        }
    }

    /// The same context with the run's memory plan (the executor sets it under a VRAM budget).
    pub fn with_memory_plan(self, plan: Option<&'a crate::plan::MemoryPlan>) -> NodeCtx<'a> {
        NodeCtx {
            memory_plan: plan,
            ..self
        }
    }

    /// The run's memory plan: where each model part lives. `None` without a VRAM budget.
    pub fn memory_plan(&self) -> Option<&crate::plan::MemoryPlan> {
        self.memory_plan
    }

    /// The id of the running node.
    pub fn node_id(&self) -> &str {
        self.node
    }

    /// Reports progress: `step` of `total` done.
    pub fn progress(&self, step: u64, total: u64) {
        self.events.emit(Event::Progress {
            node: self.node.clone(),
            kind: self.kind.clone(),
            step,
            total,
        });
    }

    /// Sends a small PNG preview to whoever watches the run.
    pub fn preview(&self, png: Arc<[u8]>) {
        self.events.emit(Event::Preview {
            node: self.node.clone(),
            kind: self.kind.clone(),
            png,
        });
    }

    /// Whether the run was cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// The run's cancellation flag, for model code that checks it inside long operations.
    pub fn cancel_flag(&self) -> std::sync::Arc<std::sync::atomic::AtomicBool> {
        self.cancel.flag()
    }

    /// Returns `Err(NodeError::Cancelled)` if the run was cancelled; call it between steps.
    pub fn check_cancelled(&self) -> Result<(), NodeError> {
        if self.cancel.is_cancelled() {
            Err(NodeError::Cancelled)
        } else {
            Ok(())
        }
    }

    /// The run's settings.
    pub fn env(&self) -> &RunEnv {
        self.env
    }

    /// Resolves an output path under the run's output directory (`--out`). Outputs never land
    /// outside it: an absolute path, a `..` component, or a path that names no file (`""`,
    /// `"."`) is an error, so that a workflow from a stranger's picture cannot write elsewhere.
    pub fn output_path(&self, path: &str) -> Result<PathBuf, NodeError> {
        use std::path::Component;
        let refuse = |why: &str| {
            NodeError::msg(format!(
                "output path `{path}` {why}; outputs are written under the output folder ({}), so give a relative path such as `pictures/cat`",
                self.env.out_dir.display()
            ))
        };
        let mut names = 0usize;
        for component in Path::new(path).components() {
            match component {
                Component::Normal(_) => names += 1,
                Component::CurDir => {}
                Component::ParentDir => return Err(refuse("leaves the output folder (`..`)")),
                Component::RootDir | Component::Prefix(_) => {
                    return Err(refuse("is absolute"));
                }
            }
        }
        if names == 0 {
            return Err(refuse("names no file"));
        }
        Ok(self.env.out_dir.join(path))
    }
}

type RunFn = dyn Fn(&NodeInputs, &NodeCtx<'_>) -> Result<Outputs, NodeError> + Send + Sync;

/// A node made of a spec and a closure: for tests, benchmarks and small utility nodes.
pub struct FnNode {
    spec: NodeSpec,
    run: Box<RunFn>,
}

impl FnNode {
    /// A node that runs `run`.
    pub fn new(
        spec: NodeSpec,
        run: impl Fn(&NodeInputs, &NodeCtx<'_>) -> Result<Outputs, NodeError> + Send + Sync + 'static,
    ) -> FnNode {
        FnNode {
            spec,
            run: Box::new(run),
        }
    }
}

impl Node for FnNode {
    fn spec(&self) -> &NodeSpec {
        &self.spec
    }

    fn run(&self, inputs: &NodeInputs, ctx: &NodeCtx<'_>) -> Result<Outputs, NodeError> {
        (self.run)(inputs, ctx)
    }
}
