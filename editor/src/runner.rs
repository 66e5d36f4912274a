//! Runs on a worker thread: the engine's [`Session::run`] with an [`EventSink`] that forwards
//! events over a channel, folded into per-node states the UI draws. The UI thread only ever
//! polls the channel, so it never blocks while a model loads or samples.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, TryRecvError, channel};
use std::thread::JoinHandle;
use std::time::Duration;

use veetance_engine::{
    Budgets, CancelToken, Event, Graph, MemoryPlan, ModelPool, RunEnv, RunOptions, RunStatus,
    Session, WrittenFile,
};

/// What a node is doing in the current or last run.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeRunState {
    /// Planned, not started.
    Queued,
    /// Running; `step`/`total` when it reports progress.
    Running {
        /// Steps done.
        step: u64,
        /// Steps in all (0 when unknown).
        total: u64,
    },
    /// Served from the output cache.
    Cached,
    /// Finished.
    Done {
        /// Wall time.
        duration: Duration,
    },
    /// Failed with this message.
    Failed(String),
}

impl NodeRunState {
    /// Short text for the node badge.
    pub fn badge(&self) -> String {
        match self {
            NodeRunState::Queued => "queued".to_owned(),
            NodeRunState::Running { step, total } if *total > 0 => {
                format!("running {step}/{total}")
            }
            NodeRunState::Running { .. } => "running".to_owned(),
            NodeRunState::Cached => "cached".to_owned(),
            NodeRunState::Done { duration } => format!("done {:.2} s", duration.as_secs_f64()),
            NodeRunState::Failed(_) => "failed".to_owned(),
        }
    }
}

enum Message {
    Event(Event),
    /// The run was refused before starting, or the worker ended (with the files it wrote).
    Finished(Result<(RunStatus, Vec<WrittenFile>), String>),
}

struct ActiveRun {
    cancel: CancelToken,
    messages: Receiver<Message>,
    worker: Option<JoinHandle<()>>,
}

/// The session (caches and loaded models live as long as the editor), the current run and
/// what the last run reported.
pub struct Runner {
    session: Arc<Session>,
    pool: Arc<ModelPool>,
    /// Layers placed on the GPU under a memory plan, kept between runs.
    placed: Arc<ModelPool>,
    out_dir: PathBuf,
    active: Option<ActiveRun>,
    /// Per-node states of the current or last run.
    pub states: HashMap<String, NodeRunState>,
    /// PNG previews by node, newest first replaced.
    pub previews: HashMap<String, Arc<[u8]>>,
    /// Bumped when a preview arrives, so views reload textures.
    pub preview_revision: u64,
    n_planned: usize,
    /// One line about the last run: how it ended.
    pub status: Option<String>,
    /// Folders searched for model names.
    pub model_dirs: Vec<PathBuf>,
    /// The open file's folder, where the workflow's relative paths are looked up first.
    pub workflow_dir: Option<PathBuf>,
    /// The files the last run wrote (the status bar lists them).
    pub written: Vec<WrittenFile>,
    /// Warnings of the current or last run (the disk cache could not be written, ...).
    pub warnings: Vec<String>,
    /// The memory plan of the current or last run (with a VRAM budget).
    pub memory_plan: Option<Arc<MemoryPlan>>,
}

impl Runner {
    /// A runner over `session`, writing relative outputs under `out_dir`.
    pub fn new(session: Arc<Session>, out_dir: PathBuf) -> Runner {
        Runner {
            session,
            pool: Arc::new(ModelPool::default()),
            placed: Arc::new(ModelPool::new(u64::MAX)),
            out_dir,
            active: None,
            states: HashMap::new(),
            previews: HashMap::new(),
            preview_revision: 0,
            n_planned: 0,
            status: None,
            model_dirs: Vec::new(),
            workflow_dir: None,
            written: Vec::new(),
            warnings: Vec::new(),
            memory_plan: None,
        }
    }

    /// Whether a run is in flight.
    pub fn is_running(&self) -> bool {
        self.active.is_some()
    }

    /// Starts a run of `graph` unless one is in flight. `wake` is called after each event
    /// (the UI asks for a repaint there).
    pub fn start(
        &mut self,
        graph: Graph,
        workflow_ron: String,
        vram_budget_bytes: Option<u64>,
        wake: Arc<dyn Fn() + Send + Sync>,
    ) {
        if self.active.is_some() {
            return;
        }
        let (sender, messages) = channel();
        let cancel = CancelToken::new();
        self.states.clear();
        self.warnings.clear();
        self.written.clear();
        self.memory_plan = None;
        for node in graph.nodes() {
            self.states
                .insert(node.id.to_string(), NodeRunState::Queued);
        }
        self.n_planned = 0;
        self.status = Some("running…".to_owned());
        let session = self.session.clone();
        let env = RunEnv {
            out_dir: self.out_dir.clone(),
            workflow_ron: Arc::from(workflow_ron),
            device: "auto".to_owned(),
            model_dirs: self.model_dirs.clone(),
            pool: self.pool.clone(),
            vram_budget_bytes,
            placed: self.placed.clone(),
            // The editor shows a picture's workflow before it runs, and the user presses Run.
            read_roots: None,
            workflow_dir: self.workflow_dir.clone(),
        };
        let options = RunOptions {
            targets: None,
            budgets: Budgets {
                ram_bytes: None,
                vram_bytes: vram_budget_bytes,
            },
        };
        let worker_cancel = cancel.clone();
        let spawned = std::thread::Builder::new()
            .name("veetance-run".to_owned())
            .spawn(move || {
                let event_sender = sender.clone();
                let event_wake = wake.clone();
                let sink = move |event: Event| {
                    let _ = event_sender.send(Message::Event(event));
                    event_wake();
                };
                let result = session
                    .run(&graph, &env, &options, &sink, &worker_cancel)
                    .map(|report| (report.status, report.written_files()))
                    .map_err(|err| err.to_string());
                let _ = sender.send(Message::Finished(result));
                wake();
            });
        match spawned {
            Ok(worker) => {
                self.active = Some(ActiveRun {
                    cancel,
                    messages,
                    worker: Some(worker),
                });
            }
            Err(err) => self.status = Some(format!("cannot start a worker thread: {err}")),
        }
    }

    /// Asks the current run to stop (between nodes and sampler steps).
    pub fn cancel(&self) {
        if let Some(active) = &self.active {
            active.cancel.cancel();
        }
    }

    /// Folds every event that arrived into the node states. Returns true if anything changed.
    pub fn poll(&mut self) -> bool {
        let mut changed = false;
        let mut finished = None;
        let mut events = Vec::new();
        if let Some(active) = &self.active {
            loop {
                match active.messages.try_recv() {
                    Ok(Message::Event(event)) => events.push(event),
                    Ok(Message::Finished(result)) => {
                        finished = Some(result);
                        break;
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        finished = Some(Err("the run worker stopped unexpectedly".to_owned()));
                        break;
                    }
                }
            }
        }
        for event in events {
            self.fold(event);
            changed = true;
        }
        if let Some(result) = finished {
            if let Some(mut active) = self.active.take()
                && let Some(worker) = active.worker.take()
            {
                let _ = worker.join();
            }
            // Nodes the plan did not need never left the queue.
            self.states.retain(|_, s| *s != NodeRunState::Queued);
            self.status = Some(match &result {
                Ok((status, _)) => format!("run {}", status.name()),
                Err(err) => format!("run refused: {err}"),
            });
            self.written = result.map(|(_, files)| files).unwrap_or_default();
            changed = true;
        }
        changed
    }

    fn fold(&mut self, event: Event) {
        match event {
            Event::RunStarted { n_to_run, n_cached } => self.n_planned = n_to_run + n_cached,
            Event::Cached { node, .. } => {
                self.states.insert(node.to_string(), NodeRunState::Cached);
            }
            Event::NodeStarted { node, .. } => {
                self.states.insert(
                    node.to_string(),
                    NodeRunState::Running { step: 0, total: 0 },
                );
            }
            Event::Progress {
                node, step, total, ..
            } => {
                self.states
                    .insert(node.to_string(), NodeRunState::Running { step, total });
            }
            Event::Preview { node, png, .. } => {
                self.previews.insert(node.to_string(), png);
                self.preview_revision += 1;
            }
            Event::NodeFinished { node, duration, .. } => {
                self.states
                    .insert(node.to_string(), NodeRunState::Done { duration });
            }
            Event::NodeFailed { node, error, .. } => {
                self.states
                    .insert(node.to_string(), NodeRunState::Failed(error));
            }
            Event::Warning { message } => self.warnings.push(message.to_string()),
            Event::MemoryPlanned { plan } => self.memory_plan = Some(plan),
            Event::Cancelled { .. } | Event::RunFinished { .. } => {}
        }
    }

    /// Fraction of the planned work done, 0..=1; `None` when nothing runs.
    pub fn progress(&self) -> Option<f32> {
        self.active.as_ref()?;
        Some(self.fraction_done())
    }

    fn fraction_done(&self) -> f32 {
        let planned = self.n_planned.max(1) as f32;
        let done: f32 = self
            .states
            .values()
            .map(|state| match state {
                NodeRunState::Cached | NodeRunState::Done { .. } => 1.0,
                NodeRunState::Running { step, total } if *total > 0 => *step as f32 / *total as f32,
                _ => 0.0,
            })
            .sum();
        (done / planned).clamp(0.0, 1.0)
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        // Cancel rather than join: a sampling step may take a while, and the worker owns
        // everything it touches.
        self.cancel();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use veetance_engine::Registry;

    use super::*;

    #[test]
    fn events_fold_into_node_states_and_progress() {
        let session = Arc::new(Session::new(
            Arc::new(Registry::new()),
            &veetance_engine::SessionConfig::default(),
        ));
        let mut runner = Runner::new(session, PathBuf::from("out"));
        let node: Arc<str> = Arc::from("sample");
        let kind: Arc<str> = Arc::from("Sample");
        runner.fold(Event::RunStarted {
            n_to_run: 1,
            n_cached: 1,
        });
        runner.fold(Event::Cached {
            node: Arc::from("load"),
            kind: Arc::from("Load"),
        });
        runner.fold(Event::Progress {
            node: node.clone(),
            kind: kind.clone(),
            step: 5,
            total: 10,
        });
        assert_eq!(runner.states["sample"].badge(), "running 5/10");
        assert!((runner.fraction_done() - 0.75).abs() < 1e-6);
        runner.fold(Event::NodeFailed {
            node,
            kind,
            error: "out of memory".to_owned(),
        });
        assert_eq!(
            runner.states["sample"],
            NodeRunState::Failed("out of memory".to_owned())
        );
        assert_eq!(runner.states["load"].badge(), "cached");
    }
}
