//! Showing run events: progress bars and a summary table for people, JSON lines for programs.

use std::collections::HashMap;
use std::io::Write as _;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;
use veetance_engine::{Event, EventSink, MemoryPlan, Outcome, RunReport};

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
        let time_ms = millis(self.started.elapsed());
        let mut object = json!({
            "file": self.file, "time_ms": time_ms, "node": null, "kind": null,
            "step": null, "total": null, "error": null,
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
        if let (Some(object), Some(fields)) = (object.as_object_mut(), fields.as_object()) {
            for (key, value) in fields {
                object.insert(key.clone(), value.clone());
            }
        }
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "{object}");
        let _ = stdout.flush();
    }
}

/// A progress bar per running node on stderr (hidden when stderr is not a terminal).
pub struct ProgressEvents {
    multi: MultiProgress,
    bars: Mutex<HashMap<Arc<str>, ProgressBar>>,
    plan: Mutex<Option<Arc<MemoryPlan>>>,
}

impl ProgressEvents {
    pub fn new() -> ProgressEvents {
        ProgressEvents {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
            bars: Mutex::new(HashMap::new()),
            plan: Mutex::new(None),
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
                let _ = self.multi.println(format!("warning: {message}"));
            }
            Event::MemoryPlanned { plan } => {
                // Before anything runs: what will be resident and what will stream.
                for line in plan.describe() {
                    let _ = self.multi.println(line);
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
