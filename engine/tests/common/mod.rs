//! Test nodes and helpers shared by the engine's integration tests.
#![allow(dead_code, clippy::unwrap_used, clippy::panic, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use veetance_engine::{
    CancelToken, DataType, Event, FnNode, InputSpec, Literal, MemoryEstimate, Node, NodeCtx,
    NodeError, NodeInputs, NodeSpec, OutputSpec, Outputs, Payload, Registry, RunEnv, RunOptions,
    Session, SessionConfig, TextWidget, TypeInfo, Value, Workflow, validate,
};

/// A byte blob standing in for a tensor: encodable, so it can go to the disk cache.
#[derive(Debug)]
pub struct Blob(pub Vec<u8>);

impl Payload for Blob {
    fn size_bytes(&self) -> u64 {
        self.0.len() as u64
    }
    fn encode(&self) -> Option<Vec<u8>> {
        Some(self.0.clone())
    }
}

fn decode_blob(bytes: &[u8]) -> Result<Arc<dyn Payload>, String> {
    Ok(Arc::new(Blob(bytes.to_vec())))
}

struct HugeNode(NodeSpec);

impl Node for HugeNode {
    fn spec(&self) -> &NodeSpec {
        &self.0
    }
    fn run(&self, inputs: &NodeInputs, _ctx: &NodeCtx<'_>) -> Result<Outputs, NodeError> {
        Ok(Outputs::new().with("mib", Value::Int(inputs.int("mib")?)))
    }
    fn estimate(&self, inputs: &NodeInputs, _env: &veetance_engine::RunEnv) -> MemoryEstimate {
        let mib = inputs.opt_int("mib").ok().flatten().unwrap_or(0).max(0) as u64;
        MemoryEstimate {
            ram_bytes: mib << 20,
            ..MemoryEstimate::default()
        }
    }
}

struct ReadFileNode(NodeSpec);

impl Node for ReadFileNode {
    fn spec(&self) -> &NodeSpec {
        &self.0
    }
    fn run(&self, inputs: &NodeInputs, _ctx: &NodeCtx<'_>) -> Result<Outputs, NodeError> {
        let path = inputs.text("path")?;
        let text = std::fs::read_to_string(path)
            .map_err(|err| NodeError::with_context(format!("reading {path}"), err))?;
        Ok(Outputs::new().with("text", Value::Text(Arc::from(text))))
    }
    fn identity(
        &self,
        inputs: &NodeInputs,
        _env: &veetance_engine::RunEnv,
    ) -> Result<Option<Vec<u8>>, NodeError> {
        let path = inputs.text("path")?;
        let bytes = std::fs::read(path)
            .map_err(|err| NodeError::with_context(format!("reading {path}"), err))?;
        Ok(Some(blake3::hash(&bytes).as_bytes().to_vec()))
    }
}

/// The registry every engine test uses.
/// A stand-in for a tensor type.
pub const BLOB: DataType = DataType::new("Blob");

pub fn registry() -> Registry {
    let mut registry = Registry::new();
    registry
        .register_type(
            TypeInfo::new(BLOB, "Bytes standing in for a latent.", [200, 120, 220])
                .decoder(decode_blob),
        )
        .unwrap();
    registry
        .register(FnNode::new(
            NodeSpec::new("Number", "math", "A constant.")
                .input(InputSpec::new("value", DataType::INT).default_value(Literal::Int(0)))
                .output(OutputSpec::new("value", DataType::INT, "The constant.")),
            |inputs, _| Ok(Outputs::new().with("value", Value::Int(inputs.int("value")?))),
        ))
        .unwrap();
    registry
        .register(FnNode::new(
            NodeSpec::new("Add", "math", "Adds two integers.")
                .input(InputSpec::new("a", DataType::INT))
                .input(InputSpec::new("b", DataType::INT).default_value(Literal::Int(0)))
                .output(OutputSpec::new("sum", DataType::INT, "a + b")),
            |inputs, _| {
                let sum = inputs.int("a")?.wrapping_add(inputs.int("b")?);
                Ok(Outputs::new().with("sum", Value::Int(sum)))
            },
        ))
        .unwrap();
    registry
        .register(FnNode::new(
            NodeSpec::new("Scale", "math", "Multiplies by a factor.")
                .input(InputSpec::new("x", DataType::INT))
                .input(
                    InputSpec::new("factor", DataType::FLOAT)
                        .default_value(Literal::Float(1.0))
                        .range(0.0, 10.0),
                )
                .output(OutputSpec::new("y", DataType::FLOAT, "x * factor")),
            |inputs, _| {
                let y = inputs.int("x")? as f64 * inputs.float("factor")?;
                Ok(Outputs::new().with("y", Value::Float(y)))
            },
        ))
        .unwrap();
    registry
        .register(FnNode::new(
            NodeSpec::new("Format", "text", "Formats a text.")
                .input(InputSpec::new("text", DataType::TEXT).widget(TextWidget::Multiline))
                .input(
                    InputSpec::new("style", DataType::TEXT)
                        .default_value(Literal::Text("plain".into()))
                        .choices(&["plain", "shout"]),
                )
                .output(OutputSpec::new(
                    "text",
                    DataType::TEXT,
                    "The formatted text.",
                )),
            |inputs, _| {
                let text = inputs.text("text")?;
                let out = if inputs.text("style")? == "shout" {
                    text.to_uppercase()
                } else {
                    text.to_owned()
                };
                Ok(Outputs::new().with("text", Value::Text(Arc::from(out))))
            },
        ))
        .unwrap();
    registry
        .register(FnNode::new(
            NodeSpec::new("MakeBlob", "data", "Makes a latent-like blob from a seed.")
                .input(InputSpec::new("seed", DataType::INT))
                .input(
                    InputSpec::new("len", DataType::INT)
                        .default_value(Literal::Int(16))
                        .range(0.0, 1e6),
                )
                .output(OutputSpec::new("blob", BLOB, "Bytes.")),
            |inputs, _| {
                let seed = inputs.int("seed")?;
                let len = inputs.int("len")? as usize;
                let bytes = (0..len)
                    .map(|i| (seed as usize).wrapping_add(i) as u8)
                    .collect();
                Ok(Outputs::new().with_object("blob", BLOB, Blob(bytes)))
            },
        ))
        .unwrap();
    registry
        .register(FnNode::new(
            NodeSpec::new("BlobSum", "data", "Sums a blob's bytes.")
                .input(InputSpec::new("blob", BLOB))
                .output(OutputSpec::new("sum", DataType::INT, "Sum of bytes.")),
            |inputs, _| {
                let blob = inputs.object::<Blob>("blob")?;
                let sum: i64 = blob.0.iter().map(|b| i64::from(*b)).sum();
                Ok(Outputs::new().with("sum", Value::Int(sum)))
            },
        ))
        .unwrap();
    registry
        .register(FnNode::new(
            NodeSpec::new("Print", "output", "Prints a value (an effect).")
                .effect()
                .input(InputSpec::new("value", DataType::INT).optional())
                .input(InputSpec::new("text", DataType::TEXT).optional())
                .input(InputSpec::new("y", DataType::FLOAT).optional()),
            |_, _| Ok(Outputs::new()),
        ))
        .unwrap();
    registry
        .register(FnNode::new(
            NodeSpec::new("Panic", "test", "Panics.")
                .input(InputSpec::new("x", DataType::INT))
                .output(OutputSpec::new("y", DataType::INT, "never")),
            |_, _| panic!("deliberate test panic"),
        ))
        .unwrap();
    registry
        .register(FnNode::new(
            NodeSpec::new("Fail", "test", "Fails with an error.")
                .input(InputSpec::new("x", DataType::INT))
                .output(OutputSpec::new("y", DataType::INT, "never")),
            |_, _| Err(NodeError::msg("the disk is full")),
        ))
        .unwrap();
    registry
        .register(FnNode::new(
            NodeSpec::new(
                "Slow",
                "test",
                "Counts steps slowly, checking for cancellation.",
            )
            .input(InputSpec::new("x", DataType::INT))
            .input(InputSpec::new("steps", DataType::INT).default_value(Literal::Int(5)))
            .output(OutputSpec::new("y", DataType::INT, "x")),
            |inputs, ctx| {
                let steps = inputs.int("steps")? as u64;
                for step in 0..steps {
                    ctx.check_cancelled()?;
                    std::thread::sleep(Duration::from_millis(20));
                    ctx.progress(step + 1, steps);
                }
                Ok(Outputs::new().with("y", Value::Int(inputs.int("x")?)))
            },
        ))
        .unwrap();
    registry
        .register(HugeNode(
            NodeSpec::new("Huge", "test", "Claims to need a lot of memory.")
                .input(InputSpec::new("mib", DataType::INT))
                .output(OutputSpec::new("mib", DataType::INT, "mib")),
        ))
        .unwrap();
    registry
        .register(ReadFileNode(
            NodeSpec::new("ReadFile", "io", "Reads a text file.")
                .input(InputSpec::new("path", DataType::TEXT).widget(TextWidget::Path))
                .output(OutputSpec::new("text", DataType::TEXT, "The file's text.")),
        ))
        .unwrap();
    registry
}

/// Parses and validates, panicking with the rendered diagnostics on failure.
pub fn graph(source: &str) -> veetance_engine::Graph {
    let workflow = Workflow::parse(source).unwrap_or_else(|d| panic!("{d:?}"));
    let validation = validate(&workflow, &registry(), Some(source));
    match validation.graph {
        Some(graph) => graph,
        None => panic!(
            "{}",
            veetance_engine::diagnostic::render(&validation.diagnostics, source, "test.ron")
        ),
    }
}

/// Collects events as one line each: `ran NODE`, `cached NODE`, `failed NODE: ...`.
#[derive(Clone, Default)]
pub struct Trace(pub Arc<Mutex<Vec<String>>>);

impl Trace {
    pub fn sink(&self) -> impl Fn(Event) + Send + Sync + use<> {
        let lines = self.0.clone();
        move |event| {
            let line = match event {
                Event::NodeStarted { node, .. } => format!("ran {node}"),
                Event::Cached { node, .. } => format!("cached {node}"),
                Event::NodeFailed { node, error, .. } => format!("failed {node}: {error}"),
                Event::Cancelled { node } => {
                    format!("cancelled {}", node.as_deref().unwrap_or("-"))
                }
                _ => return,
            };
            lines.lock().unwrap().push(line);
        }
    }

    /// The lines so far, sorted (parallel branches may interleave), then cleared.
    pub fn take_sorted(&self) -> String {
        let mut lines = std::mem::take(&mut *self.0.lock().unwrap());
        lines.sort();
        lines.join("\n")
    }
}

/// A session over the test registry.
pub fn session(disk: Option<&std::path::Path>) -> Session {
    Session::new(
        Arc::new(registry()),
        &SessionConfig {
            disk_cache_dir: disk.map(|d| d.to_path_buf()),
            workers: 2,
            ..SessionConfig::default()
        },
    )
}

/// Runs `source` in `session` and returns the sorted trace.
pub fn run_trace(session: &Session, source: &str) -> String {
    let trace = Trace::default();
    let sink = trace.sink();
    let report = session
        .run(
            &graph(source),
            &RunEnv::new("out"),
            &RunOptions::default(),
            &sink,
            &CancelToken::new(),
        )
        .unwrap();
    let _ = report;
    trace.take_sorted()
}
