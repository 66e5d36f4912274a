//! The editor application: the state of the whole editor and the once-per-frame loop that
//! draws it and applies the queued commands.
//!
//! UI code only queues [`Command`]s; [`EditorApp::ui`] applies them at the end of the frame.
//! That keeps every change to the document in one place (and undoable), and lets tests drive
//! the app through the same commands the widgets produce.
//!
//! The parts of the frame live in submodules, so each concern reads on its own while the
//! state's fields stay private to this module: `commands` (what the user can ask for, the
//! keyboard shortcuts, and applying commands), `panels` (menu bar, status bar, side panel),
//! `dialogs` (modal questions), `windows` (the add-node palette and the enlarged preview)
//! and `file_lifecycle` (open, save, autosave, outside changes, closing).

mod commands;
mod dialogs;
mod file_lifecycle;
mod panels;
mod windows;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use egui::Ui;
use veetance_engine::{
    Diagnostic, Registry, Session, SessionConfig, Validation, Workflow, validate,
};

use crate::canvas::{Canvas, CanvasInputs, NodeProblems};
use crate::document::Document;
use crate::files::StateDir;
use crate::runner::Runner;
use crate::telemetry::{Telemetry, TelemetryThread};
use crate::watch::FileWatcher;

pub use commands::Command;
use dialogs::Dialog;

/// Bytes in a GiB, for the VRAM budget slider.
const GIB: f64 = (1u64 << 30) as f64;

/// How the editor is set up; tests point everything at temporary directories.
#[derive(Debug, Clone)]
pub struct EditorConfig {
    /// Recovery file and recent files; `None` disables both.
    pub state_dir: Option<StateDir>,
    /// Where relative output paths (Export) resolve, like `veetance run --out`.
    pub out_dir: PathBuf,
    /// The on-disk output cache; `None` keeps outputs in memory only.
    pub disk_cache_dir: Option<PathBuf>,
    /// Poll NVML / sysinfo at 10 Hz.
    pub telemetry: bool,
    /// Watch the open file for outside changes.
    pub watch_files: bool,
    /// Folders searched for model names (the CLI passes `--models-dir` and `VEETANCE_MODELS`).
    pub model_dirs: Vec<PathBuf>,
    /// Suggested values of catalog inputs (the CLI passes the model folders' files).
    pub catalog: Option<crate::catalog::CatalogLookup>,
}

impl EditorConfig {
    /// The settings of the real application: user state and cache directories.
    pub fn user() -> EditorConfig {
        EditorConfig {
            state_dir: StateDir::user_default(),
            out_dir: PathBuf::from("out"),
            disk_cache_dir: dirs::cache_dir().map(|d| d.join("veetance")),
            telemetry: true,
            watch_files: true,
            model_dirs: Vec::new(),
            catalog: None,
        }
    }
}

struct Palette {
    at: (f64, f64),
    query: String,
    just_opened: bool,
}

/// The whole editor, runnable in a window ([`crate::run_native`]) or headless in tests.
pub struct EditorApp {
    registry: Arc<Registry>,
    config: EditorConfig,
    doc: Document,
    path: Option<PathBuf>,
    saved_revision: u64,
    autosaved_revision: u64,
    revision_changed_at: Instant,
    last_seen_revision: u64,
    /// The text last read from or written to `path`, so our own saves do not look like
    /// outside changes.
    disk_text: Option<String>,
    commands: Vec<Command>,
    canvas: Canvas,
    selection: Vec<String>,
    validated_revision: Option<u64>,
    validation: Validation,
    problems: NodeProblems,
    runner: Runner,
    telemetry: Option<TelemetryThread>,
    watcher: Option<FileWatcher>,
    palette: Option<Palette>,
    dialog: Option<Dialog>,
    enlarged: Option<String>,
    textures: HashMap<String, egui::TextureHandle>,
    textures_revision: u64,
    status: String,
    vram_budget_on: bool,
    vram_budget_gib: f64,
    recent: Vec<PathBuf>,
    clipboard: String,
    allow_close: bool,
    ctx: Option<egui::Context>,
    title: String,
    catalog: crate::catalog::Catalog,
}

impl EditorApp {
    /// An editor over the node kinds of `registry`, on an empty workflow; `file` is opened
    /// on the first frame.
    pub fn new(config: EditorConfig, registry: Arc<Registry>, file: Option<PathBuf>) -> EditorApp {
        let session = Arc::new(Session::new(
            registry.clone(),
            &SessionConfig {
                disk_cache_dir: config.disk_cache_dir.clone(),
                ..SessionConfig::default()
            },
        ));
        let mut runner = Runner::new(session, config.out_dir.clone());
        runner.model_dirs = config.model_dirs.clone();
        let recent = config
            .state_dir
            .as_ref()
            .map(StateDir::recent)
            .unwrap_or_default();
        let catalog = crate::catalog::Catalog::new(config.catalog.clone());
        let mut app = EditorApp {
            catalog,
            registry,
            doc: Document::default(),
            path: None,
            saved_revision: 0,
            autosaved_revision: 0,
            revision_changed_at: Instant::now(),
            last_seen_revision: 0,
            disk_text: None,
            commands: Vec::new(),
            canvas: Canvas::default(),
            selection: Vec::new(),
            validated_revision: None,
            validation: Validation {
                graph: None,
                diagnostics: Vec::new(),
            },
            problems: NodeProblems::new(),
            runner,
            telemetry: None,
            watcher: None,
            palette: None,
            dialog: None,
            enlarged: None,
            textures: HashMap::new(),
            textures_revision: 0,
            status: String::new(),
            vram_budget_on: false,
            vram_budget_gib: 8.0,
            recent,
            clipboard: String::new(),
            allow_close: false,
            ctx: None,
            title: String::new(),
            config,
        };
        if let Some((original, text)) = app
            .config
            .state_dir
            .as_ref()
            .and_then(StateDir::read_recovery)
        {
            app.dialog = Some(Dialog::Recover { original, text });
        }
        if let Some(file) = file {
            app.commands.push(Command::Open {
                path: file,
                force: true,
            });
        }
        app
    }

    /// Queues a command for the end of the next frame.
    pub fn queue(&mut self, command: Command) {
        self.commands.push(command);
    }

    /// The workflow being edited.
    pub fn workflow(&self) -> &Workflow {
        self.doc.workflow()
    }

    /// The current file.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Whether there are edits not saved to the file.
    pub fn is_dirty(&self) -> bool {
        self.doc.revision() != self.saved_revision
    }

    /// The selected node ids.
    pub fn selection(&self) -> &[String] {
        &self.selection
    }

    /// The last status line (errors, refusals, results).
    pub fn status(&self) -> &str {
        &self.status
    }

    /// Whether a run is in flight.
    pub fn is_running(&self) -> bool {
        self.runner.is_running()
    }

    /// The text last copied to the clipboard.
    pub fn clipboard(&self) -> &str {
        &self.clipboard
    }

    /// Canvas space → screen space, as last drawn (canvas widgets report canvas-space rects
    /// to AccessKit).
    pub fn canvas_transform(&self) -> egui::emath::TSTransform {
        self.canvas.transform()
    }

    /// The latest telemetry sample, when telemetry is on.
    pub fn telemetry(&self) -> Option<Telemetry> {
        self.telemetry.as_ref().map(TelemetryThread::latest)
    }

    fn wake(&self) -> Arc<dyn Fn() + Send + Sync> {
        let ctx = self.ctx.clone();
        Arc::new(move || {
            if let Some(ctx) = &ctx {
                ctx.request_repaint();
            }
        })
    }

    /// One frame of the whole editor.
    pub fn ui(&mut self, ui: &mut Ui) {
        let ctx = ui.ctx().clone();
        if self.ctx.is_none() {
            self.ctx = Some(ctx.clone());
            if self.config.telemetry {
                self.telemetry = Some(TelemetryThread::start(self.wake()));
            }
        }
        self.poll_background(&ctx);
        self.revalidate();
        self.shortcuts(&ctx);

        egui::Panel::top("menu").show(ui, |ui| self.menu_bar_ui(ui));
        egui::Panel::bottom("status").show(ui, |ui| self.status_bar_ui(ui));
        egui::Panel::right("side")
            .default_size(300.0)
            .resizable(true)
            .show(ui, |ui| {
                egui::ScrollArea::vertical().show(ui, |ui| self.side_panel_ui(ui));
            });
        egui::CentralPanel::default().show(ui, |ui| {
            let inputs = CanvasInputs {
                workflow: self.doc.workflow(),
                revision: self.doc.revision(),
                registry: &self.registry,
                runner: &self.runner,
                problems: &self.problems,
                textures: &self.textures,
                catalog: &self.catalog,
            };
            let output = self.canvas.show(ui, &inputs, &mut self.selection);
            self.commands
                .extend(output.edits.into_iter().map(Command::Edit));
            if let Some(node) = output.enlarge {
                self.enlarged = Some(node);
            }
            if let Some(at) = output.open_palette_at {
                let pos = self.canvas.to_canvas(at);
                self.commands.push(Command::OpenPalette(pos));
            }
        });
        self.progress_bar_ui(&ctx);
        self.palette_window_ui(&ctx);
        self.dialogs_ui(&ctx);
        self.enlarged_window_ui(&ctx);
        self.close_guard(&ctx);

        let commands = std::mem::take(&mut self.commands);
        for command in commands {
            self.execute(command);
        }
        self.autosave(&ctx);
        self.update_title(&ctx);
    }

    fn poll_background(&mut self, ctx: &egui::Context) {
        if self.runner.poll() {
            ctx.request_repaint();
        }
        if self.runner.preview_revision != self.textures_revision {
            self.textures_revision = self.runner.preview_revision;
            for (node, png) in &self.runner.previews {
                match veetance_imaging::read_png_rgba(png) {
                    Ok((rgba, _)) => {
                        let size = [rgba.width() as usize, rgba.height() as usize];
                        let image = egui::ColorImage::from_rgba_unmultiplied(size, rgba.as_raw());
                        let texture = ctx.load_texture(
                            format!("preview-{node}"),
                            image,
                            egui::TextureOptions::LINEAR,
                        );
                        self.textures.insert(node.clone(), texture);
                    }
                    Err(err) => self.status = format!("preview of `{node}` unreadable: {err}"),
                }
            }
        }
        let changed = self.watcher.as_ref().is_some_and(FileWatcher::changed);
        if changed {
            self.external_change();
        }
        // The telemetry thread wakes the UI when a number it shows changes.
        if let Some(telemetry) = &self.telemetry {
            telemetry.set_fast(self.runner.is_running());
        }
    }

    fn revalidate(&mut self) {
        if self.validated_revision == Some(self.doc.revision()) {
            return;
        }
        self.validated_revision = Some(self.doc.revision());
        self.validation = validate(self.doc.workflow(), &self.registry, None);
        self.problems.clear();
        for diagnostic in &self.validation.diagnostics {
            if let Some(node) = &diagnostic.node {
                self.problems
                    .entry(node.clone())
                    .or_default()
                    .push((diagnostic.is_error(), problem_text(diagnostic)));
            }
        }
    }

    fn update_title(&mut self, ctx: &egui::Context) {
        let name = self
            .path
            .as_ref()
            .and_then(|p| p.file_name())
            .map_or("untitled".to_owned(), |n| n.to_string_lossy().into_owned());
        let title = format!(
            "{}{name} — Veetance",
            if self.is_dirty() { "● " } else { "" }
        );
        if title != self.title {
            ctx.send_viewport_cmd(egui::ViewportCommand::Title(title.clone()));
            self.title = title;
        }
    }
}

fn problem_text(diagnostic: &Diagnostic) -> String {
    let mut text = diagnostic.message.clone();
    if let Some(help) = &diagnostic.help {
        text.push_str(" — ");
        text.push_str(help);
    }
    text
}
