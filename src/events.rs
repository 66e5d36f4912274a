//! Showing run events: progress bars and a summary table for people, JSON lines for programs.

use std::collections::HashMap;
use std::io::Write as _;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;
use veetance_engine::{Event, EventSink, MemoryPlan, Outcome, RunReport, WrittenFile};

/// Writes one JSON object per event per line on stdout.
pub struct JsonEvents {
    file: String,
    started: Instant,
}

impl JsonEvents {
    pub fn new(file: &str) -> JsonEvents {
        JsonEvents {
            file: file.to_owned(),
            started: Instant::now(),
        }
    }
}

fn millis(duration: Duration) -> f64 {
    (duration.as_secs_f64() * 1e6).round() / 1e3
}

impl EventSink for JsonEvents {
    fn emit(&self, event: Event) {
        let mut object = json!({
            "node": null, "kind": null, "step": null, "total": null, "error": null,
        });
        let fields = match event {
            Event::RunStarted { n_to_run, n_cached } => {
                json!({"event": "run_started", "to_run": n_to_run, "cached": n_cached})
            }
            Event::MemoryPlanned { plan } => {
                json!({"event": "memory_plan", "plan": &*plan})
            }
            Event::Cached { node, kind } => {
                json!({"event": "cached", "node": &*node, "kind": &*kind})
            }
            Event::NodeStarted { node, kind } => {
                json!({"event": "node_started", "node": &*node, "kind": &*kind})
            }
            Event::Progress {
                node,
                kind,
                step,
                total,
            } => {
                json!({"event": "progress", "node": &*node, "kind": &*kind, "step": step, "total": total})
            }
            Event::Preview { node, kind, png } => {
                json!({"event": "preview", "node": &*node, "kind": &*kind, "png_bytes": png.len()})
            }
            Event::NodeFinished {
                node,
                kind,
                duration,
            } => {
                json!({"event": "node_finished", "node": &*node, "kind": &*kind, "duration_ms": millis(duration)})
            }
            Event::NodeFailed { node, kind, error } => {
                json!({"event": "node_failed", "node": &*node, "kind": &*kind, "error": error})
            }
            Event::Cancelled { node } => json!({"event": "cancelled", "node": node.as_deref()}),
            Event::Warning { message } => json!({"event": "warning", "error": &*message}),
            Event::RunFinished { status, duration } => {
                json!({"event": "run_finished", "status": status.name(), "duration_ms": millis(duration)})
            }
        };
        merge(&mut object, &fields);
        self.emit_object(object);
    }
}

/// Copies `fields`' keys into `object` (both JSON objects).
fn merge(object: &mut serde_json::Value, fields: &serde_json::Value) {
    if let (Some(object), Some(fields)) = (object.as_object_mut(), fields.as_object()) {
        for (key, value) in fields {
            object.insert(key.clone(), value.clone());
        }
    }
}

impl JsonEvents {
    /// The files the run wrote (or that cached outputs name), as one `files` event.
    pub fn files(&self, files: &[WrittenFile]) {
        let list: Vec<serde_json::Value> = files
            .iter()
            .map(|f| json!({"node": &*f.node, "path": f.path, "cached": f.cached}))
            .collect();
        self.emit_object(json!({"event": "files", "files": list}));
    }

    fn emit_object(&self, fields: serde_json::Value) {
        let time_ms = millis(self.started.elapsed());
        let mut object = json!({"file": self.file, "time_ms": time_ms});
        merge(&mut object, &fields);
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "{object}");
        let _ = stdout.flush();
    }
}

/// The summary's lines for written files: "wrote PATH", or "cached PATH (written by an
/// earlier run)".
pub fn files_lines(files: &[WrittenFile]) -> Vec<String> {
    files
        .iter()
        .map(|f| {
            if f.cached {
                format!("cached {} (written by an earlier run)", f.path)
            } else {
                format!("wrote {}", f.path)
            }
        })
        .collect()
}

/// A progress bar per running node on stderr; when stderr is not a terminal (piped, logged),
/// a line per running node every [`PIPED_PROGRESS_EVERY`] instead, so a long run is never
/// silent.
pub struct ProgressEvents {
    multi: MultiProgress,
    bars: Mutex<HashMap<Arc<str>, ProgressBar>>,
    plan: Mutex<Option<Arc<MemoryPlan>>>,
    /// Set when stderr is not a terminal: what the ticker thread reports.
    piped: Option<Arc<Running>>,
}

/// How often a piped run reports its running nodes.
pub const PIPED_PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// The running nodes of a piped run, and whether the run is over.
#[derive(Default)]
struct Running {
    nodes: Mutex<Vec<RunningNode>>,
    over: std::sync::atomic::AtomicBool,
}

struct RunningNode {
    node: Arc<str>,
    kind: Arc<str>,
    started: Instant,
    progress: Option<(u64, u64)>,
}

impl Running {
    fn update(&self, event: &Event) {
        let mut nodes = self.nodes.lock().unwrap_or_else(PoisonError::into_inner);
        match event {
            Event::NodeStarted { node, kind } => nodes.push(RunningNode {
                node: node.clone(),
                kind: kind.clone(),
                started: Instant::now(),
                progress: None,
            }),
            Event::Progress {
                node, step, total, ..
            } => {
                if let Some(running) = nodes.iter_mut().find(|n| n.node == *node) {
                    running.progress = Some((*step, *total));
                }
            }
            Event::NodeFinished { node, .. } | Event::NodeFailed { node, .. } => {
                nodes.retain(|n| n.node != *node);
            }
            Event::RunFinished { .. } => nodes.clear(),
            _ => {}
        }
    }

    /// One line per node running for at least [`PIPED_PROGRESS_EVERY`].
    fn lines(&self) -> Vec<String> {
        let nodes = self.nodes.lock().unwrap_or_else(PoisonError::into_inner);
        nodes
            .iter()
            .filter(|n| n.started.elapsed() >= PIPED_PROGRESS_EVERY)
            .map(|n| {
                let elapsed = format!("{:.0} s", n.started.elapsed().as_secs_f64());
                match n.progress {
                    Some((step, total)) => {
                        format!("{} ({}): {step}/{total}, {elapsed}", n.node, n.kind)
                    }
                    None => format!("{} ({}): running, {elapsed}", n.node, n.kind),
                }
            })
            .collect()
    }

    /// Prints [`Running::lines`] every [`PIPED_PROGRESS_EVERY`] until the run is over.
    fn tick(self: Arc<Self>) {
        use std::sync::atomic::Ordering;
        let mut last = Instant::now();
        while !self.over.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(200));
            if last.elapsed() >= PIPED_PROGRESS_EVERY {
                last = Instant::now();
                for line in self.lines() {
                    eprintln!("{line}");
                }
            }
        }
    }
}

impl Drop for ProgressEvents {
    fn drop(&mut self) {
        if let Some(running) = &self.piped {
            running
                .over
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

impl ProgressEvents {
    pub fn new() -> ProgressEvents {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        let piped = multi.is_hidden().then(|| {
            let running = Arc::new(Running::default());
            let ticker = running.clone();
            // A detached thread: it ends within 200 ms of the run.
            std::thread::spawn(move || ticker.tick());
            running
        });
        ProgressEvents {
            multi,
            bars: Mutex::new(HashMap::new()),
            plan: Mutex::new(None),
            piped,
        }
    }

    /// A line above the bars; printed directly when there are none to draw (indicatif drops
    /// lines for a hidden target, which lost warnings and the plan in piped runs).
    fn line(&self, text: String) {
        if self.multi.is_hidden() {
            eprintln!("{text}");
        } else {
            let _ = self.multi.println(text);
        }
    }

    /// The memory plan of the run, if it had a VRAM budget (for the summary).
    pub fn memory_plan(&self) -> Option<Arc<MemoryPlan>> {
        self.plan
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl EventSink for ProgressEvents {
    fn emit(&self, event: Event) {
        if let Some(running) = &self.piped {
            running.update(&event);
        }
        let mut bars = self.bars.lock().unwrap_or_else(PoisonError::into_inner);
        match event {
            Event::NodeStarted { node, kind } => {
                let bar = self.multi.add(ProgressBar::new_spinner());
                bar.set_style(
                    ProgressStyle::with_template("{spinner} {prefix:.bold} {msg} {elapsed:>4}")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
                bar.set_prefix(format!("{node} ({kind})"));
                bar.enable_steady_tick(Duration::from_millis(100));
                bars.insert(node, bar);
            }
            Event::Progress {
                node, step, total, ..
            } => {
                if let Some(bar) = bars.get(&node) {
                    if bar.length() != Some(total) {
                        bar.set_length(total);
                        bar.set_style(
                            ProgressStyle::with_template(
                                "{spinner} {prefix:.bold} [{bar:30}] {pos}/{len} {elapsed:>4} eta {eta}",
                            )
                            .unwrap_or_else(|_| ProgressStyle::default_bar())
                            .progress_chars("=> "),
                        );
                    }
                    bar.set_position(step);
                }
            }
            Event::NodeFinished { node, .. } | Event::NodeFailed { node, .. } => {
                if let Some(bar) = bars.remove(&node) {
                    bar.finish_and_clear();
                }
            }
            Event::RunFinished { .. } => {
                for (_, bar) in bars.drain() {
                    bar.finish_and_clear();
                }
            }
            Event::Warning { message } => {
                self.line(format!("warning: {message}"));
            }
            Event::MemoryPlanned { plan } => {
                // Before anything runs: what will be resident and what will stream.
                for line in plan.describe() {
                    self.line(line);
                }
                *self.plan.lock().unwrap_or_else(PoisonError::into_inner) = Some(plan);
            }
            _ => {}
        }
    }
}

/// The summary table printed after a run for people.
pub fn summary_table(report: &RunReport) -> String {
    let rows: Vec<[String; 4]> = report
        .nodes
        .iter()
        .map(|n| {
            let (status, time) = match &n.outcome {
                Outcome::Ran { duration } => ("ran".to_owned(), format_duration(*duration)),
                Outcome::Cached => ("cached".to_owned(), "-".to_owned()),
                Outcome::Failed { .. } => ("FAILED".to_owned(), "-".to_owned()),
                Outcome::Cancelled => ("cancelled".to_owned(), "-".to_owned()),
                Outcome::NotRun => ("not run".to_owned(), "-".to_owned()),
            };
            [n.node.to_string(), n.kind.to_string(), status, time]
        })
        .collect();
    let header = ["node", "kind", "status", "time"];
    let mut widths = header.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: [&str; 4]| {
        let [w0, w1, w2, w3] = widths;
        let [c0, c1, c2, c3] = cells;
        out.push_str(&format!("{c0:<w0$}  {c1:<w1$}  {c2:<w2$}  {c3:>w3$}\n"));
    };
    line(header);
    for row in &rows {
        line([&row[0], &row[1], &row[2], &row[3]]);
    }
    out
}

pub fn format_duration(duration: Duration) -> String {
    let secs = duration.as_secs_f64();
    if secs >= 1.0 {
        format!("{secs:.2} s")
    } else {
        format!("{:.1} ms", secs * 1e3)
    }
}

#[cfg(test)]
mod piped_tests {
    use super::*;

    #[test]
    fn a_piped_run_reports_nodes_running_longer_than_the_interval_with_their_steps() {
        let running = Running::default();
        running.update(&Event::NodeStarted {
            node: Arc::from("sample"),
            kind: Arc::from("Sample"),
        });
        running.update(&Event::NodeStarted {
            node: Arc::from("load"),
            kind: Arc::from("Load"),
        });
        assert!(running.lines().is_empty(), "nothing before the interval");
        for node in running
            .nodes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter_mut()
        {
            node.started = Instant::now()
                .checked_sub(PIPED_PROGRESS_EVERY + Duration::from_secs(1))
                .unwrap_or_else(Instant::now);
        }
        running.update(&Event::Progress {
            node: Arc::from("sample"),
            kind: Arc::from("Sample"),
            step: 3,
            total: 8,
        });
        assert_eq!(
            running.lines(),
            ["sample (Sample): 3/8, 6 s", "load (Load): running, 6 s"]
        );
        running.update(&Event::NodeFinished {
            node: Arc::from("sample"),
            kind: Arc::from("Sample"),
            duration: Duration::from_secs(6),
        });
        assert_eq!(running.lines(), ["load (Load): running, 6 s"]);
    }
}
