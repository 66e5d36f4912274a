//! `veetance bench engine`: the engine's own overhead on a synthetic graph of trivial nodes.
//!
//! Numbers are for a validated graph: `parse_ms` is RON text to workflow, `validate_ms` is
//! workflow to graph, the run timings are executions of the graph in one session (so the
//! cached and partial runs see the first run's cache). `partial_run_ms` changes the constant at
//! the head of one chain; `partial_total_ms` adds the re-validation that an edit implies.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context as _, Result, bail};
use serde_json::json;
use veetance_engine::{
    CancelToken, DataType, FnNode, InputSpec, InputValue, Literal, NoEvents, NodeSpec, OutputSpec,
    Outputs, Registry, RunEnv, RunOptions, RunStatus, Session, SessionConfig, Value, Workflow,
    validate,
};

use clap::{Args, ValueEnum};

/// `veetance bench engine`'s options.
#[derive(Debug, Args)]
pub struct EngineArgs {
    /// Number of nodes.
    #[arg(long, default_value_t = 10_000)]
    pub nodes: usize,
    /// Graph shape: `wide` (N/10 independent chains of 10) or `chain` (one chain of N).
    #[arg(long, value_enum, default_value_t = Shape::Wide)]
    pub shape: Shape,
    /// Worker threads.
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
}

/// The synthetic graph's shape.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Shape {
    /// N/10 independent chains of 10.
    Wide,
    /// One chain of N.
    Chain,
}

fn bench_registry() -> Result<Registry, veetance_engine::RegistryError> {
    let mut registry = Registry::new();
    registry.register(FnNode::new(
        NodeSpec::new("Const", "bench", "An integer constant.")
            .input(InputSpec::new("value", DataType::INT).default_value(Literal::Int(0)))
            .output(OutputSpec::new("value", DataType::INT, "The constant.")),
        |inputs, _| Ok(Outputs::new().with("value", Value::Int(inputs.int("value")?))),
    ))?;
    registry.register(FnNode::new(
        NodeSpec::new("Add", "bench", "a + b.")
            .input(InputSpec::new("a", DataType::INT))
            .input(InputSpec::new("b", DataType::INT).default_value(Literal::Int(1)))
            .output(OutputSpec::new("sum", DataType::INT, "a + b")),
        |inputs, _| {
            let sum = inputs.int("a")?.wrapping_add(inputs.int("b")?);
            Ok(Outputs::new().with("sum", Value::Int(sum)))
        },
    ))?;
    registry.register(FnNode::new(
        NodeSpec::new(
            "Sink",
            "bench",
            "Consumes a value (an effect, so it always runs).",
        )
        .effect()
        .input(InputSpec::new("value", DataType::INT)),
        |inputs, _| {
            std::hint::black_box(inputs.int("value")?);
            Ok(Outputs::new())
        },
    ))?;
    Ok(registry)
}

/// RON text of the synthetic graph, and the id of the first chain's head constant.
/// Largest synthetic graph.
const MAX_NODES: usize = 1_000_000;

fn synthetic_workflow(n_nodes: usize, shape: Shape) -> (String, String) {
    let chain_len = match shape {
        Shape::Wide => 10,
        Shape::Chain => n_nodes.max(3),
    };
    let n_chains = (n_nodes / chain_len).max(1);
    let mut text = String::with_capacity(n_nodes * 96);
    text.push_str("Workflow(\n    version: 1,\n    name: \"bench\",\n    nodes: {\n");
    for chain in 0..n_chains {
        text.push_str(&format!(
            "        \"c{chain}_0\": Node(kind: \"Const\", inputs: {{\"value\": Int({chain})}}),\n"
        ));
        for step in 1..chain_len - 1 {
            let (prev, port) = if step == 1 {
                (0, "value")
            } else {
                (step - 1, "sum")
            };
            text.push_str(&format!(
                "        \"c{chain}_{step}\": Node(kind: \"Add\", inputs: {{\"a\": Link(\"c{chain}_{prev}\", \"{port}\"), \"b\": Int(1)}}),\n"
            ));
        }
        let last = chain_len - 2;
        text.push_str(&format!(
            "        \"c{chain}_{}\": Node(kind: \"Sink\", inputs: {{\"value\": Link(\"c{chain}_{last}\", \"{}\")}}),\n",
            chain_len - 1,
            if last == 0 { "value" } else { "sum" }
        ));
    }
    text.push_str("    },\n)\n");
    (text, "c0_0".to_owned())
}

fn ms(started: Instant) -> f64 {
    (started.elapsed().as_secs_f64() * 1e6).round() / 1e3
}

/// Runs the benchmark and prints one JSON line.
pub fn run(args: &EngineArgs) -> Result<ExitCode> {
    // About 1 KB of memory per node across the text, the workflow and the graph: a million
    // nodes is a gigabyte, the most a benchmark on a user's machine should take.
    if !(3..=MAX_NODES).contains(&args.nodes) {
        bail!("--nodes must be between 3 and {MAX_NODES}");
    }
    let registry = Arc::new(bench_registry()?);
    let (text, head) = synthetic_workflow(args.nodes, args.shape);

    let started = Instant::now();
    let workflow = Workflow::parse(&text)
        .map_err(|d| anyhow::anyhow!("synthetic workflow does not parse: {d:?}"))?;
    let parse_ms = ms(started);
    let n_nodes = workflow.nodes.0.len();

    let started = Instant::now();
    let validation = validate(&workflow, &registry, Some(&text));
    let validate_ms = ms(started);
    let graph = validation
        .graph
        .context("synthetic workflow does not validate")?;

    let session = Session::new(
        registry.clone(),
        &SessionConfig {
            memory_cache_bytes: 1 << 30,
            disk_cache_dir: None,
            workers: args.workers.max(1),
            ..SessionConfig::default()
        },
    );
    let env = RunEnv::new("out");
    let options = RunOptions::default();
    let cancel = CancelToken::new();
    let timed_run = |graph: &veetance_engine::Graph| -> Result<f64> {
        let started = Instant::now();
        let report = session.run(graph, &env, &options, &NoEvents, &cancel)?;
        let elapsed = ms(started);
        if report.status != RunStatus::Succeeded {
            bail!("benchmark run did not succeed: {:?}", report.failure());
        }
        Ok(elapsed)
    };
    let first_run_ms = timed_run(&graph)?;
    let cached_run_ms = timed_run(&graph)?;

    let mut changed = workflow;
    let head_node = changed
        .nodes
        .0
        .get_mut(&head)
        .context("head node missing")?;
    head_node
        .inputs
        .0
        .insert("value".to_owned(), InputValue::Int(-1));
    let started = Instant::now();
    let changed_graph = validate(&changed, &registry, None)
        .graph
        .context("changed workflow does not validate")?;
    let revalidate_ms = ms(started);
    let partial_run_ms = timed_run(&changed_graph)?;

    let result = json!({
        "shape": match args.shape { Shape::Wide => "wide", Shape::Chain => "chain" },
        "nodes": n_nodes,
        "workers": args.workers,
        "parse_ms": parse_ms,
        "validate_ms": validate_ms,
        "first_run_ms": first_run_ms,
        "cached_run_ms": cached_run_ms,
        "partial_run_ms": partial_run_ms,
        "partial_total_ms": ((revalidate_ms + partial_run_ms) * 1e3).round() / 1e3,
        "per_node_overhead_us": (first_run_ms * 1e3 / n_nodes as f64 * 1e3).round() / 1e3,
    });
    crate::print_line(result)?;
    Ok(ExitCode::SUCCESS)
}
