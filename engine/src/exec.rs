//! The executor: plans a run (what is needed, what is cached, whether it fits the memory
//! budget), then runs the rest in topological order with independent branches in parallel.
//!
//! Planning is demand driven. Starting from the targets (effect nodes, or the nodes nothing
//! reads from), a node whose fingerprint is cached is served from the cache and its inputs are
//! not even looked at; otherwise it runs and its linked inputs are needed in turn. So a change
//! of seed re-runs the sampler and what follows it, and nothing upstream.
//!
//! Scheduling uses a fixed set of scoped worker threads (the calling thread is one of them)
//! around one mutex-protected ready queue. A worker that finishes a node takes the next ready
//! node itself and wakes others only for the extra work it made ready, so a long chain runs
//! on one thread without handoffs.

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use crate::cache::{DiskCache, Fingerprint, MemoryCache, NodeOutputs};
use crate::cancel::CancelToken;
use crate::event::{Event, EventSink, RunStatus};
use crate::graph::{Graph, GraphNode, Slot};
use crate::node::{MemoryEstimate, NodeCtx, NodeError, NodeInputs, RunEnv};
use crate::plan::MemoryPlan;
use crate::registry::Registry;
use crate::spec::Purity;
use crate::value::Value;

/// Settings that live as long as a session.
#[derive(Clone, Debug)]
pub struct SessionConfig {
    /// Bytes the in-memory output cache may hold.
    pub memory_cache_bytes: u64,
    /// Where outputs persist across processes; `None` disables the disk cache.
    pub disk_cache_dir: Option<PathBuf>,
    /// The disk cache is trimmed to this many bytes after every run, least recently used first.
    pub disk_cache_max_bytes: u64,
    /// Nodes that may run at the same time.
    pub workers: usize,
}

impl Default for SessionConfig {
    fn default() -> SessionConfig {
        SessionConfig {
            memory_cache_bytes: 4 << 30,
            disk_cache_dir: None,
            disk_cache_max_bytes: DEFAULT_DISK_CACHE_MAX_BYTES,
            workers: 2,
        }
    }
}

/// The disk cache's default size limit.
pub const DEFAULT_DISK_CACHE_MAX_BYTES: u64 = 10 << 30;

/// Memory limits a plan must fit.
#[derive(Clone, Copy, Debug, Default)]
pub struct Budgets {
    /// Host memory per node, in bytes.
    pub ram_bytes: Option<u64>,
    /// Accelerator memory per node, in bytes.
    pub vram_bytes: Option<u64>,
}

/// Settings of one run.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Node ids whose outputs are wanted; `None` means every effect node (or, if there are
    /// none, every node nothing reads from).
    pub targets: Option<Vec<String>>,
    /// Memory limits.
    pub budgets: Budgets,
}

/// Why a run was refused before anything ran.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// A node's memory estimate exceeds a budget.
    #[error(
        "node `{node}` ({kind}) needs an estimated {} of {resource} but the budget is {}; \
         lower its width/height or batch, load the model in a smaller dtype, or raise --{}-budget",
        format_bytes(*needed_bytes), format_bytes(*budget_bytes), resource.to_lowercase()
    )]
    OverBudget {
        /// Node id.
        node: String,
        /// Node kind.
        kind: String,
        /// `RAM` or `VRAM`.
        resource: &'static str,
        /// Estimated need.
        needed_bytes: u64,
        /// The budget.
        budget_bytes: u64,
    },
    /// A requested target does not exist.
    #[error("no node `{0}` to run")]
    UnknownTarget(String),
    /// A node does not fit the VRAM budget even with every model layer streamed.
    #[error(transparent)]
    CannotFit(#[from] crate::plan::CannotFit),
}

/// Formats a byte count for people, in binary units (`1.5 GiB`).
pub fn format_bytes(bytes: u64) -> String {
    bytesize::ByteSize::b(bytes).display().iec().to_string()
}

/// What happened to one node in a run.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// It ran.
    Ran {
        /// Wall time.
        duration: Duration,
    },
    /// Its outputs came from the cache.
    Cached,
    /// It failed.
    Failed {
        /// The error, rendered with causes.
        error: String,
    },
    /// It was cancelled while running.
    Cancelled,
    /// It was planned but did not run (the run stopped first).
    NotRun,
}

/// One node's line in a run report.
#[derive(Clone, Debug)]
pub struct NodeReport {
    /// Node id.
    pub node: Arc<str>,
    /// Node kind.
    pub kind: Arc<str>,
    /// What happened.
    pub outcome: Outcome,
}

/// A file a node's `files` output names.
#[derive(Debug, Clone, PartialEq)]
pub struct WrittenFile {
    /// The node that wrote it.
    pub node: Arc<str>,
    /// Where it is.
    pub path: String,
    /// The node's output came from the cache: an earlier run wrote the file.
    pub cached: bool,
}

/// The result of a run that was planned.
#[derive(Debug)]
pub struct RunReport {
    /// How the run ended.
    pub status: RunStatus,
    /// Needed nodes, in topological order.
    pub nodes: Vec<NodeReport>,
    /// Wall time.
    pub duration: Duration,
    outputs: Vec<Option<NodeOutputs>>,
    ids: Vec<Arc<str>>,
    specs_outputs: Vec<Vec<String>>,
}

impl RunReport {
    /// The value of `node`'s output `output`, if the node ran or was cached in this run.
    pub fn output(&self, node: &str, output: &str) -> Option<&Value> {
        let idx = self.ids.iter().position(|id| id.as_ref() == node)?;
        let out_idx = self
            .specs_outputs
            .get(idx)?
            .iter()
            .position(|o| o == output)?;
        self.outputs.get(idx)?.as_ref()?.get(out_idx)
    }

    /// Every file named by a `files` output (Export, SaveLatent, SaveConditioning) of a node
    /// that ran or was cached, in run order: what the CLI's summary and the editor's status bar
    /// list.
    pub fn written_files(&self) -> Vec<WrittenFile> {
        self.nodes
            .iter()
            .filter(|n| matches!(n.outcome, Outcome::Ran { .. } | Outcome::Cached))
            .filter_map(|n| {
                let Some(Value::Text(text)) = self.output(&n.node, "files") else {
                    return None;
                };
                let cached = matches!(n.outcome, Outcome::Cached);
                Some(
                    text.lines()
                        .filter(|line| !line.is_empty())
                        .map(|path| WrittenFile {
                            node: n.node.clone(),
                            path: path.to_owned(),
                            cached,
                        })
                        .collect::<Vec<_>>(),
                )
            })
            .flatten()
            .collect()
    }

    /// The first failure, as (node, error).
    pub fn failure(&self) -> Option<(&str, &str)> {
        self.nodes.iter().find_map(|n| match &n.outcome {
            Outcome::Failed { error } => Some((n.node.as_ref(), error.as_str())),
            _ => None,
        })
    }
}

/// Caches and settings shared by every run of a process (a CLI invocation, the editor).
pub struct Session {
    registry: Arc<Registry>,
    memory: Mutex<MemoryCache>,
    disk: Option<DiskCache>,
    disk_max_bytes: u64,
    workers: usize,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("disk", &self.disk)
            .field("workers", &self.workers)
            .finish()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nodes run outside every lock, and updates under a lock cannot panic halfway, so a
    // poisoned lock still holds consistent data.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[derive(Clone)]
enum Plan {
    Unneeded,
    Cached(NodeOutputs),
    Run,
}

enum Stop {
    Failed,
    Cancelled,
}

struct Sched {
    ready: VecDeque<usize>,
    waiting_on: Vec<u32>,
    in_flight: usize,
    done: usize,
    stop: Option<Stop>,
}

struct Shared<'a> {
    graph: &'a Graph,
    session: &'a Session,
    env: &'a RunEnv,
    events: &'a dyn EventSink,
    cancel: &'a CancelToken,
    fingerprints: &'a [Option<Fingerprint>],
    consumers: &'a [Vec<usize>],
    outputs: Vec<OnceLock<NodeOutputs>>,
    outcomes: Vec<Mutex<Outcome>>,
    sched: Mutex<Sched>,
    wake: Condvar,
    to_run: usize,
    /// Where model parts live, under a VRAM budget.
    memory_plan: Option<&'a MemoryPlan>,
    /// Set once a disk-cache write has failed (and been reported) in this run.
    disk_write_failed: std::sync::atomic::AtomicBool,
}

impl Session {
    /// A session using `registry` (for decoding disk-cached objects).
    pub fn new(registry: Arc<Registry>, config: &SessionConfig) -> Session {
        Session {
            registry,
            memory: Mutex::new(MemoryCache::new(config.memory_cache_bytes)),
            disk: config.disk_cache_dir.clone().map(DiskCache::new),
            disk_max_bytes: config.disk_cache_max_bytes,
            workers: config.workers.max(1),
        }
    }

    /// The registry nodes come from.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// Trims the disk cache (if any) to at most `max_bytes`, least recently used first.
    /// Returns the bytes removed.
    pub fn trim_disk_cache(&self, max_bytes: u64) -> u64 {
        self.disk.as_ref().map_or(0, |disk| disk.trim(max_bytes))
    }

    /// Bytes held by the in-memory cache.
    pub fn memory_cache_bytes(&self) -> u64 {
        lock(&self.memory).used_bytes()
    }

    /// Runs what `options` asks for. Errors only when the run is refused before starting;
    /// node failures and cancellation are reported in the [`RunReport`].
    pub fn run(
        &self,
        graph: &Graph,
        env: &RunEnv,
        options: &RunOptions,
        events: &dyn EventSink,
        cancel: &CancelToken,
    ) -> Result<RunReport, PlanError> {
        let started = Instant::now();
        let n_nodes = graph.len();
        let needed = needed_nodes(graph, options)?;

        // Fingerprints in topological order, so every link's source is hashed first.
        let mut fingerprints: Vec<Option<Fingerprint>> = vec![None; n_nodes];
        let mut identity_failure: Option<(usize, NodeError)> = None;
        for &idx in &graph.order {
            if !needed.get(idx).copied().unwrap_or(false) {
                continue;
            }
            let Some(node) = graph.nodes.get(idx) else {
                continue;
            };
            match fingerprint(node, &fingerprints, env) {
                Ok(fp) => {
                    if let Some(slot) = fingerprints.get_mut(idx) {
                        *slot = Some(fp);
                    }
                }
                Err(err) => {
                    identity_failure = Some((idx, err));
                    break;
                }
            }
        }
        if let Some((idx, err)) = identity_failure {
            return Ok(self.fail_before_start(graph, idx, err, events, started));
        }

        let plan = self.plan(graph, options, &fingerprints)?;
        let to_run: Vec<usize> = graph
            .order
            .iter()
            .copied()
            .filter(|idx| matches!(plan.get(*idx), Some(Plan::Run)))
            .collect();
        let memory_plan = check_budgets(graph, &needed, &to_run, &options.budgets, env)?;
        if let Some(plan) = &memory_plan {
            events.emit(Event::MemoryPlanned {
                plan: Arc::new(plan.clone()),
            });
        }

        let n_cached = plan.iter().filter(|p| matches!(p, Plan::Cached(_))).count();
        events.emit(Event::RunStarted {
            n_to_run: to_run.len(),
            n_cached,
        });
        let outputs: Vec<OnceLock<NodeOutputs>> = (0..n_nodes).map(|_| OnceLock::new()).collect();
        let mut outcomes: Vec<Mutex<Outcome>> = Vec::with_capacity(n_nodes);
        for &idx in &graph.order {
            if let (Some(Plan::Cached(values)), Some(node)) = (plan.get(idx), graph.nodes.get(idx))
            {
                if let Some(cell) = outputs.get(idx) {
                    let _ = cell.set(values.clone());
                }
                events.emit(Event::Cached {
                    node: node.id.clone(),
                    kind: node.kind.clone(),
                });
            }
        }
        for idx in 0..n_nodes {
            let outcome = match plan.get(idx) {
                Some(Plan::Cached(_)) => Outcome::Cached,
                _ => Outcome::NotRun,
            };
            outcomes.push(Mutex::new(outcome));
        }

        // Which planned nodes each planned node feeds, and how many planned inputs each waits on.
        let mut consumers: Vec<Vec<usize>> = vec![Vec::new(); n_nodes];
        let mut waiting_on: Vec<u32> = vec![0; n_nodes];
        for &idx in &to_run {
            let Some(node) = graph.nodes.get(idx) else {
                continue;
            };
            let mut sources: Vec<usize> = node
                .inputs
                .iter()
                .filter_map(|slot| match slot {
                    Slot::Link { from, .. } if matches!(plan.get(*from), Some(Plan::Run)) => {
                        Some(*from)
                    }
                    _ => None,
                })
                .collect();
            sources.sort_unstable();
            sources.dedup();
            if let Some(count) = waiting_on.get_mut(idx) {
                *count = sources.len() as u32;
            }
            for from in sources {
                if let Some(list) = consumers.get_mut(from) {
                    list.push(idx);
                }
            }
        }
        let ready: VecDeque<usize> = to_run
            .iter()
            .copied()
            .filter(|idx| waiting_on.get(*idx) == Some(&0))
            .collect();

        let shared = Shared {
            graph,
            session: self,
            env,
            events,
            cancel,
            fingerprints: &fingerprints,
            consumers: &consumers,
            outputs,
            outcomes,
            sched: Mutex::new(Sched {
                ready,
                waiting_on,
                in_flight: 0,
                done: 0,
                stop: None,
            }),
            wake: Condvar::new(),
            to_run: to_run.len(),
            memory_plan: memory_plan.as_ref(),
            disk_write_failed: std::sync::atomic::AtomicBool::new(false),
        };
        if cancel.is_cancelled() {
            lock(&shared.sched).stop = Some(Stop::Cancelled);
        }
        let n_workers = self.workers.min(to_run.len()).max(1);
        std::thread::scope(|scope| {
            for _ in 1..n_workers {
                scope.spawn(|| worker(&shared));
            }
            worker(&shared);
        });

        let sched = shared
            .sched
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner);
        let status = match sched.stop {
            Some(Stop::Failed) => RunStatus::Failed,
            Some(Stop::Cancelled) => RunStatus::Cancelled,
            None => RunStatus::Succeeded,
        };
        if status == RunStatus::Cancelled {
            let noticed = shared.outcomes.iter().enumerate().find_map(|(idx, o)| {
                (*lock(o) == Outcome::Cancelled).then(|| graph.nodes.get(idx).map(|n| n.id.clone()))
            });
            events.emit(Event::Cancelled {
                node: noticed.flatten(),
            });
        }
        // Keep the disk cache within its limit, least recently used entries first.
        self.trim_disk_cache(self.disk_max_bytes);
        let duration = started.elapsed();
        events.emit(Event::RunFinished { status, duration });
        let outcomes: Vec<Outcome> = shared
            .outcomes
            .into_iter()
            .map(|m| m.into_inner().unwrap_or_else(PoisonError::into_inner))
            .collect();
        let outputs: Vec<Option<NodeOutputs>> = shared
            .outputs
            .into_iter()
            .map(OnceLock::into_inner)
            .collect();
        Ok(self.report(graph, &plan, outcomes, outputs, status, duration))
    }

    fn report(
        &self,
        graph: &Graph,
        plan: &[Plan],
        outcomes: Vec<Outcome>,
        outputs: Vec<Option<NodeOutputs>>,
        status: RunStatus,
        duration: Duration,
    ) -> RunReport {
        let nodes = graph
            .order
            .iter()
            .filter(|idx| !matches!(plan.get(**idx), Some(Plan::Unneeded) | None))
            .filter_map(|idx| {
                let node = graph.nodes.get(*idx)?;
                Some(NodeReport {
                    node: node.id.clone(),
                    kind: node.kind.clone(),
                    outcome: outcomes.get(*idx).cloned().unwrap_or(Outcome::NotRun),
                })
            })
            .collect();
        RunReport {
            status,
            nodes,
            duration,
            outputs,
            ids: graph.nodes.iter().map(|n| n.id.clone()).collect(),
            specs_outputs: graph
                .nodes
                .iter()
                .map(|n| {
                    n.node
                        .spec()
                        .outputs
                        .iter()
                        .map(|o| o.name.clone())
                        .collect()
                })
                .collect(),
        }
    }

    fn fail_before_start(
        &self,
        graph: &Graph,
        idx: usize,
        err: NodeError,
        events: &dyn EventSink,
        started: Instant,
    ) -> RunReport {
        let error = render_error(&err);
        events.emit(Event::RunStarted {
            n_to_run: 0,
            n_cached: 0,
        });
        let mut outcomes = vec![Outcome::NotRun; graph.len()];
        let mut plan = vec![Plan::Unneeded; graph.len()];
        if let Some(node) = graph.nodes.get(idx) {
            events.emit(Event::NodeFailed {
                node: node.id.clone(),
                kind: node.kind.clone(),
                error: error.clone(),
            });
            if let (Some(outcome), Some(p)) = (outcomes.get_mut(idx), plan.get_mut(idx)) {
                *outcome = Outcome::Failed { error };
                *p = Plan::Run;
            }
        }
        let duration = started.elapsed();
        events.emit(Event::RunFinished {
            status: RunStatus::Failed,
            duration,
        });
        self.report(
            graph,
            &plan,
            outcomes,
            vec![None; graph.len()],
            RunStatus::Failed,
            duration,
        )
    }

    fn plan(
        &self,
        graph: &Graph,
        options: &RunOptions,
        fingerprints: &[Option<Fingerprint>],
    ) -> Result<Vec<Plan>, PlanError> {
        let mut plan = vec![Plan::Unneeded; graph.len()];
        let mut stack = targets(graph, options)?;
        let mut memory = lock(&self.memory);
        while let Some(idx) = stack.pop() {
            if !matches!(plan.get(idx), Some(Plan::Unneeded)) {
                continue;
            }
            let Some(node) = graph.nodes.get(idx) else {
                continue;
            };
            let cached = match (
                node.node.spec().purity,
                fingerprints.get(idx).copied().flatten(),
            ) {
                (Purity::Pure, Some(fp)) => memory.get(&fp).or_else(|| {
                    let disk = self.disk.as_ref()?;
                    let values: NodeOutputs = disk.load(&fp, &self.registry)?.into();
                    let spec = node.node.spec();
                    // An entry whose shape no longer matches the spec is stale: ignore it.
                    let matches_spec = values.len() == spec.outputs.len()
                        && values
                            .iter()
                            .zip(&spec.outputs)
                            .all(|(v, o)| o.data_type.accepts(v.data_type()));
                    if !matches_spec {
                        return None;
                    }
                    memory.insert(fp, values.clone());
                    Some(values)
                }),
                _ => None,
            };
            let entry = match cached {
                Some(values) => Plan::Cached(values),
                None => {
                    for slot in &node.inputs {
                        if let Slot::Link { from, .. } = slot {
                            stack.push(*from);
                        }
                    }
                    Plan::Run
                }
            };
            if let Some(p) = plan.get_mut(idx) {
                *p = entry;
            }
        }
        Ok(plan)
    }
}

/// Every node's estimate, in graph order: literal inputs, and linked inputs where the upstream
/// estimate left a stand-in. `None` for nodes not in `needed`.
fn estimates(graph: &Graph, needed: &[bool], env: &RunEnv) -> Vec<Option<MemoryEstimate>> {
    let mut all: Vec<Option<MemoryEstimate>> = vec![None; graph.len()];
    for &idx in &graph.order {
        if !needed.get(idx).copied().unwrap_or(false) {
            continue;
        }
        let Some(node) = graph.nodes.get(idx) else {
            continue;
        };
        let values: Vec<Option<Value>> = node
            .inputs
            .iter()
            .map(|slot| match slot {
                Slot::Literal(value) => Some(value.clone()),
                Slot::Link { from, output } => {
                    let name = graph
                        .nodes
                        .get(*from)
                        .and_then(|n| n.node.spec().outputs.get(*output))
                        .map(|o| o.name.as_str())?;
                    all.get(*from)?
                        .as_ref()?
                        .outputs
                        .iter()
                        .find(|(n, _)| n == name)
                        .map(|(_, v)| v.clone())
                }
                Slot::Empty => None,
            })
            .collect();
        let estimate = node
            .node
            .estimate(&NodeInputs::new(node.node.spec(), values), env);
        if let Some(slot) = all.get_mut(idx) {
            *slot = Some(estimate);
        }
    }
    all
}

/// Checks the RAM budget per node and, under a VRAM budget, plans where model parts live
/// ([`crate::plan`]): parts made by any needed node (a cached loader's model is still used),
/// needs of the nodes that run.
fn check_budgets(
    graph: &Graph,
    needed: &[bool],
    to_run: &[usize],
    budgets: &Budgets,
    env: &RunEnv,
) -> Result<Option<MemoryPlan>, PlanError> {
    if budgets.ram_bytes.is_none() && budgets.vram_bytes.is_none() {
        return Ok(None);
    }
    let estimates = estimates(graph, needed, env);
    let mut parts = Vec::new();
    for estimate in estimates.iter().flatten() {
        for part in &estimate.parts {
            if !parts
                .iter()
                .any(|p: &crate::plan::ModelPart| p.key == part.key)
            {
                parts.push(part.clone());
            }
        }
    }
    let mut needs = Vec::new();
    for &idx in to_run {
        let (Some(node), Some(Some(estimate))) = (graph.nodes.get(idx), estimates.get(idx)) else {
            continue;
        };
        if let Some(budget_bytes) = budgets.ram_bytes
            && estimate.ram_bytes > budget_bytes
        {
            return Err(PlanError::OverBudget {
                node: node.id.to_string(),
                kind: node.kind.to_string(),
                resource: "RAM",
                needed_bytes: estimate.ram_bytes,
                budget_bytes,
            });
        }
        if estimate.vram_bytes > 0 || !estimate.uses.is_empty() {
            needs.push(crate::plan::NodeNeed {
                node: node.id.to_string(),
                kind: node.kind.to_string(),
                uses: estimate.uses.clone(),
                working_bytes: estimate.vram_bytes,
            });
        }
    }
    match budgets.vram_bytes {
        Some(budget_bytes) => Ok(Some(crate::plan::plan(budget_bytes, &parts, &needs)?)),
        None => Ok(None),
    }
}

/// The memory plan a run of `graph` with `options` would make (every needed node counted as
/// running: nothing is assumed cached), for `validate --json`. `None` without a VRAM budget.
pub fn memory_plan(
    graph: &Graph,
    env: &RunEnv,
    options: &RunOptions,
) -> Result<Option<MemoryPlan>, PlanError> {
    let needed = needed_nodes(graph, options)?;
    let to_run: Vec<usize> = graph
        .order
        .iter()
        .copied()
        .filter(|idx| needed.get(*idx).copied().unwrap_or(false))
        .collect();
    check_budgets(graph, &needed, &to_run, &options.budgets, env)
}

fn targets(graph: &Graph, options: &RunOptions) -> Result<Vec<usize>, PlanError> {
    if let Some(ids) = &options.targets {
        return ids
            .iter()
            .map(|id| {
                graph
                    .index_of(id)
                    .ok_or_else(|| PlanError::UnknownTarget(id.clone()))
            })
            .collect();
    }
    let effects: Vec<usize> = graph
        .nodes
        .iter()
        .enumerate()
        .filter(|(_, n)| n.node.spec().purity == Purity::Effect)
        .map(|(idx, _)| idx)
        .collect();
    if !effects.is_empty() {
        return Ok(effects);
    }
    let mut read = vec![false; graph.len()];
    for node in &graph.nodes {
        for slot in &node.inputs {
            if let Slot::Link { from, .. } = slot
                && let Some(flag) = read.get_mut(*from)
            {
                *flag = true;
            }
        }
    }
    Ok(read
        .iter()
        .enumerate()
        .filter(|(_, is_read)| !**is_read)
        .map(|(idx, _)| idx)
        .collect())
}

fn needed_nodes(graph: &Graph, options: &RunOptions) -> Result<Vec<bool>, PlanError> {
    let mut needed = vec![false; graph.len()];
    let mut stack = targets(graph, options)?;
    while let Some(idx) = stack.pop() {
        let Some(flag) = needed.get_mut(idx) else {
            continue;
        };
        if *flag {
            continue;
        }
        *flag = true;
        if let Some(node) = graph.nodes.get(idx) {
            for slot in &node.inputs {
                if let Slot::Link { from, .. } = slot {
                    stack.push(*from);
                }
            }
        }
    }
    Ok(needed)
}

fn fingerprint(
    node: &GraphNode,
    fingerprints: &[Option<Fingerprint>],
    env: &RunEnv,
) -> Result<Fingerprint, NodeError> {
    let spec = node.node.spec();
    let mut hasher = blake3::Hasher::new_derive_key("veetance 2026 node fingerprint v1");
    hasher.update(&(spec.kind.len() as u64).to_le_bytes());
    hasher.update(spec.kind.as_bytes());
    hasher.update(&spec.version.to_le_bytes());
    let mut literals: Vec<Option<Value>> = Vec::new();
    for slot in &node.inputs {
        match slot {
            Slot::Literal(value) => {
                hash_literal(&mut hasher, value);
                literals.push(Some(value.clone()));
            }
            Slot::Link { from, output } => {
                hasher.update(&[10]);
                let source = fingerprints
                    .get(*from)
                    .copied()
                    .flatten()
                    .unwrap_or(Fingerprint([0; 32]));
                hasher.update(&source.0);
                hasher.update(&(*output as u64).to_le_bytes());
                literals.push(None);
            }
            Slot::Empty => {
                hasher.update(&[11]);
                literals.push(None);
            }
        }
    }
    if let Some(identity) = node.node.identity(&NodeInputs::new(spec, literals), env)? {
        hasher.update(&[12]);
        hasher.update(&(identity.len() as u64).to_le_bytes());
        hasher.update(&identity);
    }
    Ok(Fingerprint(*hasher.finalize().as_bytes()))
}

fn hash_literal(hasher: &mut blake3::Hasher, value: &Value) {
    match value {
        Value::Int(v) => {
            hasher.update(&[1]);
            hasher.update(&v.to_le_bytes());
        }
        Value::Float(v) => {
            hasher.update(&[2]);
            hasher.update(&v.to_bits().to_le_bytes());
        }
        Value::Bool(v) => {
            hasher.update(&[3, u8::from(*v)]);
        }
        Value::Text(v) => {
            hasher.update(&[4]);
            hasher.update(&(v.len() as u64).to_le_bytes());
            hasher.update(v.as_bytes());
        }
        Value::Object(object) => {
            // Objects never appear as literals; hash the type so the key stays well defined.
            let name = object.data_type().name();
            hasher.update(&[5]);
            hasher.update(&(name.len() as u64).to_le_bytes());
            hasher.update(name.as_bytes());
        }
    }
}

fn render_error(err: &NodeError) -> String {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "unknown panic payload".to_owned()
    }
}

fn worker(shared: &Shared<'_>) {
    let mut next: Option<usize> = None;
    loop {
        let idx = match next.take() {
            Some(idx) => idx,
            None => {
                let mut sched = lock(&shared.sched);
                loop {
                    if sched.stop.is_some() || sched.done == shared.to_run {
                        return;
                    }
                    if let Some(idx) = sched.ready.pop_front() {
                        sched.in_flight += 1;
                        break idx;
                    }
                    if sched.in_flight == 0 {
                        // Nothing ready and nothing running: the rest can never become ready.
                        return;
                    }
                    sched = shared
                        .wake
                        .wait(sched)
                        .unwrap_or_else(PoisonError::into_inner);
                }
            }
        };
        let result = if shared.cancel.is_cancelled() {
            Err(Stop::Cancelled)
        } else {
            run_node(shared, idx)
        };
        let mut sched = lock(&shared.sched);
        sched.in_flight -= 1;
        match result {
            Ok(()) => {
                sched.done += 1;
                let mut made_ready = 0usize;
                for &consumer in shared.consumers.get(idx).map_or(&[][..], Vec::as_slice) {
                    if let Some(count) = sched.waiting_on.get_mut(consumer) {
                        *count -= 1;
                        if *count == 0 {
                            sched.ready.push_back(consumer);
                            made_ready += 1;
                        }
                    }
                }
                if sched.done == shared.to_run {
                    shared.wake.notify_all();
                    return;
                }
                if sched.stop.is_none()
                    && let Some(idx) = sched.ready.pop_front()
                {
                    sched.in_flight += 1;
                    next = Some(idx);
                    made_ready = made_ready.saturating_sub(1);
                }
                for _ in 0..made_ready {
                    shared.wake.notify_one();
                }
            }
            Err(stop) => {
                if sched.stop.is_none() {
                    sched.stop = Some(stop);
                }
                shared.wake.notify_all();
                return;
            }
        }
    }
}

fn run_node(shared: &Shared<'_>, idx: usize) -> Result<(), Stop> {
    let Some(node) = shared.graph.nodes.get(idx) else {
        return Err(Stop::Failed);
    };
    let spec = node.node.spec();
    let values: Vec<Option<Value>> = node
        .inputs
        .iter()
        .map(|slot| match slot {
            Slot::Literal(value) => Some(value.clone()),
            Slot::Link { from, output } => shared
                .outputs
                .get(*from)
                .and_then(OnceLock::get)
                .and_then(|outs| outs.get(*output))
                .cloned(),
            Slot::Empty => None,
        })
        .collect();
    let inputs = NodeInputs::new(spec, values);
    shared.events.emit(Event::NodeStarted {
        node: node.id.clone(),
        kind: node.kind.clone(),
    });
    let ctx = NodeCtx::new(
        &node.id,
        &node.kind,
        shared.cancel,
        shared.events,
        shared.env,
    )
    .with_memory_plan(shared.memory_plan);
    let started = Instant::now();
    let result = match catch_unwind(AssertUnwindSafe(|| node.node.run(&inputs, &ctx))) {
        Ok(Ok(outputs)) => outputs.into_spec_order(spec),
        Ok(Err(err)) => Err(err),
        Err(payload) => Err(NodeError::Panicked(panic_message(payload.as_ref()))),
    };
    let duration = started.elapsed();
    let set_outcome = |outcome: Outcome| {
        if let Some(slot) = shared.outcomes.get(idx) {
            *lock(slot) = outcome;
        }
    };
    match result {
        Ok(values) => {
            let values: NodeOutputs = values.into();
            if spec.purity == Purity::Pure
                && let Some(fp) = shared.fingerprints.get(idx).copied().flatten()
            {
                lock(&shared.session.memory).insert(fp, values.clone());
                if let Some(disk) = &shared.session.disk
                    && let Err(err) = disk.store(&fp, &values)
                    && !shared
                        .disk_write_failed
                        .swap(true, std::sync::atomic::Ordering::Relaxed)
                {
                    // A failed disk write only costs future cache misses; the run goes on, and
                    // says so once.
                    shared.events.emit(Event::Warning {
                        message: format!(
                            "cannot write the disk cache ({err}); outputs of this run are cached in memory only: {}",
                            disk.dir().display()
                        )
                        .into(),
                    });
                }
            }
            if let Some(cell) = shared.outputs.get(idx) {
                let _ = cell.set(values);
            }
            set_outcome(Outcome::Ran { duration });
            shared.events.emit(Event::NodeFinished {
                node: node.id.clone(),
                kind: node.kind.clone(),
                duration,
            });
            Ok(())
        }
        Err(NodeError::Cancelled) => {
            set_outcome(Outcome::Cancelled);
            Err(Stop::Cancelled)
        }
        Err(err) => {
            let error = render_error(&err);
            set_outcome(Outcome::Failed {
                error: error.clone(),
            });
            shared.events.emit(Event::NodeFailed {
                node: node.id.clone(),
                kind: node.kind.clone(),
                error,
            });
            Err(Stop::Failed)
        }
    }
}
