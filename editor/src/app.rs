//! The editor application: panels, dialogs, shortcuts, and the once-per-frame command loop.
//!
//! UI code only queues [`Command`]s; [`EditorApp::ui`] applies them at the end of the frame.
//! That keeps every change to the document in one place (and undoable), and lets tests drive
//! the app through the same commands the widgets produce.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use egui::{Color32, Key, KeyboardShortcut, Modifiers, Ui};
use veetance_engine::{
    Diagnostic, InputValue, Registry, Session, SessionConfig, Validation, Workflow, validate,
};

use crate::canvas::{Canvas, CanvasInputs, NodeProblems, literal_widget};
use crate::document::{Document, Edit, Port, spec_of};
use crate::files::{FileError, StateDir, atomic_write, parse_workflow, workflow_source_from_bytes};
use crate::palette::{Filter, palette_list};
use crate::runner::Runner;
use crate::telemetry::{Telemetry, TelemetryThread};
use crate::watch::FileWatcher;

/// Unsaved work is autosaved to the recovery file after this much quiet time.
const AUTOSAVE_AFTER: Duration = Duration::from_secs(2);

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

/// Something the user asked for; applied once per frame.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// A change to the workflow.
    Edit(Edit),
    /// Undo the last edit.
    Undo,
    /// Redo the last undone edit.
    Redo,
    /// Start a new workflow (`force`: skip the unsaved-changes guard).
    New {
        /// Skip the guard.
        force: bool,
    },
    /// Open a workflow file (.ron, or a PNG written by Export).
    Open {
        /// The file.
        path: PathBuf,
        /// Skip the guard.
        force: bool,
    },
    /// Save to the current path (asks for one if there is none).
    Save,
    /// Save to `path` and make it the current path.
    SaveAs(PathBuf),
    /// Run the workflow on the worker thread.
    Run,
    /// Cancel the run.
    Cancel,
    /// Copy the selection to the clipboard as RON text.
    Copy,
    /// Paste RON text (nodes) from the clipboard.
    Paste(String),
    /// Copy and paste the selection in one step.
    Duplicate,
    /// Delete the selected nodes.
    DeleteSelection,
    /// Select these nodes.
    Select(Vec<String>),
    /// Open the palette at a canvas position.
    OpenPalette((f64, f64)),
    /// Quit (`force`: without the guard).
    Quit {
        /// Skip the guard.
        force: bool,
    },
}

enum Dialog {
    Unsaved {
        then: Command,
    },
    Path {
        save: bool,
        text: String,
    },
    Recover {
        original: Option<PathBuf>,
        text: String,
    },
    ExternalChange {
        workflow: Workflow,
        text: String,
    },
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

        egui::Panel::top("menu").show(ui, |ui| self.menu_bar(ui));
        egui::Panel::bottom("status").show(ui, |ui| self.status_bar(ui));
        egui::Panel::right("side")
            .default_size(300.0)
            .resizable(true)
            .show(ui, |ui| {
                egui::ScrollArea::vertical().show(ui, |ui| self.side_panel(ui));
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
        self.progress_bar(&ctx);
        self.palette_window(&ctx);
        self.dialogs(&ctx);
        self.enlarged_window(&ctx);
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
        if self.telemetry.is_some() {
            ctx.request_repaint_after(Duration::from_millis(100));
        }
    }

    fn external_change(&mut self) {
        let Some(path) = self.path.clone() else {
            return;
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            // Mid-rename or deleted: the next event will tell.
            Err(_) => return,
        };
        if self.disk_text.as_deref() == Some(text.as_str()) {
            return;
        }
        let workflow = match parse_workflow(&path, &text) {
            Ok(workflow) => workflow,
            Err(err) => {
                self.status =
                    format!("changed on disk but invalid, keeping the last good graph: {err}");
                self.disk_text = Some(text);
                return;
            }
        };
        let validation = validate(&workflow, &self.registry, Some(&text));
        if let Some(first) = validation.diagnostics.iter().find(|d| d.is_error()) {
            self.status = format!(
                "changed on disk but invalid, keeping the last good graph: {}",
                first.message
            );
            self.disk_text = Some(text);
            return;
        }
        if self.is_dirty() {
            self.dialog = Some(Dialog::ExternalChange { workflow, text });
        } else {
            self.reload(workflow, text);
        }
    }

    fn reload(&mut self, workflow: Workflow, text: String) {
        self.doc.replace(workflow, "reload from disk");
        self.saved_revision = self.doc.revision();
        self.disk_text = Some(text);
        self.status = "reloaded: the file changed on disk".to_owned();
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

    fn shortcuts(&mut self, ctx: &egui::Context) {
        let typing = ctx.egui_wants_keyboard_input();
        let shortcut = |ctx: &egui::Context, modifiers: Modifiers, key: Key| {
            ctx.input_mut(|i| i.consume_shortcut(&KeyboardShortcut::new(modifiers, key)))
        };
        if shortcut(ctx, Modifiers::COMMAND, Key::Enter) {
            self.commands.push(Command::Run);
        }
        if shortcut(ctx, Modifiers::COMMAND, Key::N) {
            self.commands.push(Command::New { force: false });
        }
        if shortcut(ctx, Modifiers::COMMAND, Key::O) {
            self.open_path_dialog(false);
        }
        if shortcut(ctx, Modifiers::COMMAND | Modifiers::SHIFT, Key::S) {
            self.open_path_dialog(true);
        }
        if shortcut(ctx, Modifiers::COMMAND, Key::S) {
            self.commands.push(Command::Save);
        }
        if typing {
            // Text fields own Ctrl+Z, Ctrl+C, Delete and Space while they have focus.
            return;
        }
        if shortcut(ctx, Modifiers::COMMAND | Modifiers::SHIFT, Key::Z)
            || shortcut(ctx, Modifiers::COMMAND, Key::Y)
        {
            self.commands.push(Command::Redo);
        }
        if shortcut(ctx, Modifiers::COMMAND, Key::Z) {
            self.commands.push(Command::Undo);
        }
        if shortcut(ctx, Modifiers::COMMAND, Key::D) {
            self.commands.push(Command::Duplicate);
        }
        if shortcut(ctx, Modifiers::NONE, Key::Delete)
            || shortcut(ctx, Modifiers::NONE, Key::Backspace)
        {
            self.commands.push(Command::DeleteSelection);
        }
        if self.palette.is_none() && shortcut(ctx, Modifiers::NONE, Key::Space) {
            let at = ctx.pointer_hover_pos().map_or_else(
                || self.canvas.visible_center(),
                |p| self.canvas.to_canvas(p),
            );
            self.commands.push(Command::OpenPalette(at));
        }
        let events = ctx.input(|i| i.events.clone());
        for event in events {
            match event {
                egui::Event::Copy => self.commands.push(Command::Copy),
                egui::Event::Cut => {
                    self.commands.push(Command::Copy);
                    self.commands.push(Command::DeleteSelection);
                }
                egui::Event::Paste(text) => self.commands.push(Command::Paste(text)),
                _ => {}
            }
        }
        let dropped: Vec<PathBuf> = ctx.input(|i| {
            i.raw
                .dropped_files
                .iter()
                .map(|f| f.path().to_owned())
                .filter(|p| !p.as_os_str().is_empty())
                .collect()
        });
        if let Some(path) = dropped.into_iter().next() {
            self.commands.push(Command::Open { path, force: false });
        }
    }

    fn menu_bar(&mut self, ui: &mut Ui) {
        egui::MenuBar::new().ui(ui, |ui| {
            ui.menu_button("File", |ui| {
                if ui.button("New").clicked() {
                    self.commands.push(Command::New { force: false });
                }
                if ui.button("Open…").clicked() {
                    self.open_path_dialog(false);
                }
                if ui.button("Save").clicked() {
                    self.commands.push(Command::Save);
                }
                if ui.button("Save As…").clicked() {
                    self.open_path_dialog(true);
                }
                ui.menu_button("Open Recent", |ui| {
                    if self.recent.is_empty() {
                        ui.label("no recent files");
                    }
                    for path in self.recent.clone() {
                        if ui.button(path.display().to_string()).clicked() {
                            self.commands.push(Command::Open { path, force: false });
                        }
                    }
                });
                ui.separator();
                if ui.button("Quit").clicked() {
                    self.commands.push(Command::Quit { force: false });
                }
            });
            ui.menu_button("Edit", |ui| {
                let undo = self.doc.undo_label().map(|l| format!("Undo {l}"));
                if ui
                    .add_enabled(
                        undo.is_some(),
                        egui::Button::new(undo.as_deref().unwrap_or("Undo")),
                    )
                    .clicked()
                {
                    self.commands.push(Command::Undo);
                }
                let redo = self.doc.redo_label().map(|l| format!("Redo {l}"));
                if ui
                    .add_enabled(
                        redo.is_some(),
                        egui::Button::new(redo.as_deref().unwrap_or("Redo")),
                    )
                    .clicked()
                {
                    self.commands.push(Command::Redo);
                }
                ui.separator();
                if ui.button("Add node…").clicked() {
                    self.commands
                        .push(Command::OpenPalette(self.canvas.visible_center()));
                }
                if ui.button("Copy").clicked() {
                    self.commands.push(Command::Copy);
                }
                if ui.button("Duplicate").clicked() {
                    self.commands.push(Command::Duplicate);
                }
                if ui.button("Delete").clicked() {
                    self.commands.push(Command::DeleteSelection);
                }
            });
            ui.separator();
            let mut name = self.doc.workflow().name.clone();
            let label = ui.label("workflow name");
            if ui
                .add(egui::TextEdit::singleline(&mut name).desired_width(140.0))
                .labelled_by(label.id)
                .changed()
            {
                self.commands.push(Command::Edit(Edit::SetName(name)));
            }
            ui.separator();
            if self.runner.is_running() {
                if ui.button("Cancel").clicked() {
                    self.commands.push(Command::Cancel);
                }
            } else if ui.button("▶ Run").on_hover_text("Ctrl+Enter").clicked() {
                self.commands.push(Command::Run);
            }
        });
    }

    fn status_bar(&mut self, ui: &mut Ui) {
        ui.horizontal(|ui| {
            let file = self
                .path
                .as_ref()
                .map_or("untitled".to_owned(), |p| p.display().to_string());
            ui.label(if self.is_dirty() {
                format!("{file} ●")
            } else {
                file
            });
            ui.separator();
            if let Some(status) = &self.runner.status {
                ui.label(status);
                ui.separator();
            }
            for warning in &self.runner.warnings {
                ui.colored_label(ui.visuals().warn_fg_color, format!("⚠ {warning}"));
                ui.separator();
            }
            ui.label(&self.status);
        });
    }

    fn side_panel(&mut self, ui: &mut Ui) {
        egui::CollapsingHeader::new("Inspector")
            .default_open(true)
            .show(ui, |ui| self.inspector(ui));
        let n_problems = self.validation.diagnostics.len();
        egui::CollapsingHeader::new(format!("Problems ({n_problems})"))
            .default_open(true)
            .show(ui, |ui| self.problems_list(ui));
        egui::CollapsingHeader::new("Telemetry")
            .default_open(true)
            .show(ui, |ui| self.telemetry_panel(ui));
    }

    fn inspector(&mut self, ui: &mut Ui) {
        let [id] = self.selection.as_slice() else {
            ui.label(if self.selection.is_empty() {
                "Select one node to edit it here. Double-click the canvas or press Space to add nodes."
            } else {
                "Several nodes selected."
            });
            return;
        };
        let id = id.clone();
        let Some(node) = self.doc.workflow().nodes.0.get(&id).cloned() else {
            return;
        };
        let Ok(spec) = spec_of(self.doc.workflow(), &self.registry, &id).cloned() else {
            ui.colored_label(Color32::RED, format!("unknown node kind `{}`", node.kind));
            return;
        };
        ui.horizontal(|ui| {
            let label = ui.label("node id");
            let key = ui.id().with(("rename", &id));
            let mut text: String = ui.data(|d| d.get_temp(key)).unwrap_or_else(|| id.clone());
            let response = ui
                .add(egui::TextEdit::singleline(&mut text).desired_width(120.0))
                .labelled_by(label.id);
            if response.lost_focus() && text != id {
                self.commands.push(Command::Edit(Edit::Rename {
                    from: id.clone(),
                    to: text.clone(),
                }));
                ui.data_mut(|d| d.remove::<String>(key));
            } else {
                ui.data_mut(|d| d.insert_temp(key, text));
            }
            ui.label(egui::RichText::new(&spec.kind).strong());
        });
        ui.label(egui::RichText::new(&spec.description).small());
        egui::Grid::new("inputs").num_columns(3).show(ui, |ui| {
            for input in &spec.inputs {
                let qualified = format!("{id}.{}", input.name);
                let label = ui.label(&qualified).on_hover_text(format!(
                    "{} ({})",
                    input.doc,
                    input.data_type.name()
                ));
                let value = node.inputs.0.get(&input.name);
                // Source: a literal value, or a link from a compatible output.
                let current = match value {
                    Some(InputValue::Link(src, out)) => format!("{src}.{out}"),
                    _ if input.data_type.is_literal() => "value".to_owned(),
                    _ => "—".to_owned(),
                };
                let mut picked: Option<Option<(String, String)>> = None;
                egui::ComboBox::from_id_salt(("source", &id, &input.name))
                    .selected_text(current)
                    .show_ui(ui, |ui| {
                        if ui.selectable_label(false, "(unlinked)").clicked() {
                            picked = Some(None);
                        }
                        for (src, src_node) in &self.doc.workflow().nodes.0 {
                            if *src == id {
                                continue;
                            }
                            let Some(src_spec) =
                                self.registry.get(&src_node.kind).map(|n| n.spec())
                            else {
                                continue;
                            };
                            for output in &src_spec.outputs {
                                if input.data_type.accepts(output.data_type)
                                    && ui
                                        .selectable_label(false, format!("{src}.{}", output.name))
                                        .clicked()
                                {
                                    picked = Some(Some((src.clone(), output.name.clone())));
                                }
                            }
                        }
                    })
                    .response
                    .widget_info(|| {
                        egui::WidgetInfo::labeled(
                            egui::WidgetType::ComboBox,
                            true,
                            format!("{qualified} source"),
                        )
                    });
                match picked {
                    Some(Some((src, out))) => self.commands.push(Command::Edit(Edit::Connect {
                        from: Port::new(&src, &out),
                        to: Port::new(&id, &input.name),
                    })),
                    Some(None) => self.commands.push(Command::Edit(Edit::SetInput {
                        input: Port::new(&id, &input.name),
                        value: None,
                    })),
                    None => {}
                }
                if input.data_type.is_literal() && !matches!(value, Some(InputValue::Link(..))) {
                    if let Some(edit) =
                        literal_widget(ui, &id, input, value, label.id, &self.catalog)
                    {
                        self.commands.push(Command::Edit(edit));
                    }
                } else {
                    ui.label("");
                }
                ui.end_row();
            }
        });
    }

    fn problems_list(&mut self, ui: &mut Ui) {
        if self.validation.diagnostics.is_empty() {
            ui.label("No problems.");
            return;
        }
        for diagnostic in &self.validation.diagnostics {
            let color = if diagnostic.is_error() {
                Color32::from_rgb(0xe0, 0x50, 0x50)
            } else {
                Color32::from_rgb(0xe0, 0xb0, 0x40)
            };
            let text = match &diagnostic.node {
                Some(node) => format!("{node}: {}", problem_text(diagnostic)),
                None => problem_text(diagnostic),
            };
            let clicked = ui
                .add(egui::Button::new(egui::RichText::new(text).color(color)).frame(false))
                .clicked();
            if clicked && let Some(node) = &diagnostic.node {
                self.commands.push(Command::Select(vec![node.clone()]));
            }
        }
    }

    fn telemetry_panel(&mut self, ui: &mut Ui) {
        let sample = self.telemetry.as_ref().map(TelemetryThread::latest);
        let mut vram_total_gib = None;
        match &sample {
            None => {
                ui.label("telemetry off");
            }
            Some(sample) => {
                match &sample.gpu {
                    Ok(gpu) => {
                        ui.label(format!("GPU: {}", gpu.name));
                        if let (Some(used), Some(total)) =
                            (gpu.vram_used_bytes, gpu.vram_total_bytes)
                        {
                            vram_total_gib = Some(total as f64 / GIB);
                            ui.label(format!(
                                "VRAM {:.1} / {:.1} GiB",
                                used as f64 / GIB,
                                total as f64 / GIB
                            ));
                        }
                        let mut line = Vec::new();
                        if let Some(u) = gpu.utilization_percent {
                            line.push(format!("util {u} %"));
                        }
                        if let Some(t) = gpu.temperature_c {
                            line.push(format!("{t} °C"));
                        }
                        if let Some(p) = gpu.power_mw {
                            line.push(format!("{:.0} W", f64::from(p) / 1000.0));
                        }
                        ui.label(line.join(" · "));
                    }
                    Err(reason) => {
                        ui.label(egui::RichText::new(reason).small().weak());
                    }
                }
                ui.label(format!(
                    "CPU {:.0} % · RAM {:.1} / {:.1} GiB",
                    sample.cpu_percent,
                    sample.ram_used_bytes as f64 / GIB,
                    sample.ram_total_bytes as f64 / GIB
                ));
            }
        }
        ui.checkbox(&mut self.vram_budget_on, "VRAM budget")
            .on_hover_text("refuse runs whose nodes are estimated to need more accelerator memory");
        let max = vram_total_gib.unwrap_or(80.0).max(1.0);
        ui.add_enabled(
            self.vram_budget_on,
            egui::Slider::new(&mut self.vram_budget_gib, 0.5..=max).suffix(" GiB"),
        );
    }

    fn progress_bar(&self, ctx: &egui::Context) {
        let Some(fraction) = self.runner.progress() else {
            return;
        };
        let screen = ctx.content_rect();
        let painter = ctx.layer_painter(egui::LayerId::new(
            egui::Order::Foreground,
            egui::Id::new("run-progress"),
        ));
        let rect =
            egui::Rect::from_min_size(screen.min, egui::vec2(screen.width() * fraction, 2.0));
        painter.rect_filled(rect, 0.0, Color32::from_rgb(0x4c, 0xaf, 0xff));
    }

    fn palette_window(&mut self, ctx: &egui::Context) {
        let Some(palette) = &mut self.palette else {
            return;
        };
        let mut open = true;
        let mut chosen = None;
        egui::Window::new("Add node")
            .open(&mut open)
            .collapsible(false)
            .resizable(false)
            .show(ctx, |ui| {
                chosen = palette_list(
                    ui,
                    &self.registry,
                    &mut palette.query,
                    Filter::All,
                    palette.just_opened,
                );
                palette.just_opened = false;
            });
        if ctx.input(|i| i.key_pressed(Key::Escape)) {
            open = false;
        }
        if let Some(kind) = chosen {
            self.commands.push(Command::Edit(Edit::AddNode {
                kind,
                pos: palette.at,
                link_from: None,
                link_to: None,
            }));
            open = false;
        }
        if !open {
            self.palette = None;
        }
    }

    fn open_path_dialog(&mut self, save: bool) {
        let text = self
            .path
            .as_ref()
            .map_or_else(String::new, |p| p.display().to_string());
        self.dialog = Some(Dialog::Path { save, text });
    }

    fn dialogs(&mut self, ctx: &egui::Context) {
        let Some(dialog) = &mut self.dialog else {
            return;
        };
        let mut close = false;
        let mut rewatch = false;
        let mut then = Vec::new();
        match dialog {
            Dialog::Unsaved { then: next } => {
                egui::Window::new("Unsaved changes")
                    .collapsible(false)
                    .show(ctx, |ui| {
                        ui.label("The workflow has unsaved changes.");
                        ui.horizontal(|ui| {
                            if ui.button("Save").clicked() {
                                then.push(Command::Save);
                                then.push(force(next.clone()));
                                close = true;
                            }
                            if ui.button("Discard").clicked() {
                                then.push(force(next.clone()));
                                close = true;
                            }
                            if ui.button("Cancel").clicked() {
                                close = true;
                            }
                        });
                    });
            }
            Dialog::Path { save, text } => {
                let title = if *save {
                    "Save workflow as"
                } else {
                    "Open workflow"
                };
                egui::Window::new(title).collapsible(false).show(ctx, |ui| {
                    let label = ui.label("file path");
                    let response = ui
                        .add(egui::TextEdit::singleline(text).desired_width(360.0))
                        .labelled_by(label.id);
                    let enter = response.lost_focus() && ui.input(|i| i.key_pressed(Key::Enter));
                    if !*save {
                        for path in &self.recent {
                            if ui.button(path.display().to_string()).clicked() {
                                *text = path.display().to_string();
                            }
                        }
                    }
                    ui.horizontal(|ui| {
                        let action = if *save { "Save" } else { "Open" };
                        if (ui.button(action).clicked() || enter) && !text.trim().is_empty() {
                            let path = PathBuf::from(text.trim());
                            then.push(if *save {
                                Command::SaveAs(path)
                            } else {
                                Command::Open { path, force: false }
                            });
                            close = true;
                        }
                        if ui.button("Cancel").clicked() {
                            close = true;
                        }
                    });
                });
            }
            Dialog::Recover { original, text } => {
                egui::Window::new("Recover unsaved work?")
                    .collapsible(false)
                    .show(ctx, |ui| {
                        ui.label(format!(
                            "The editor did not close cleanly. Unsaved work of {} was kept.",
                            original
                                .as_ref()
                                .map_or("an untitled workflow".to_owned(), |p| p
                                    .display()
                                    .to_string())
                        ));
                        ui.horizontal(|ui| {
                            if ui.button("Recover").clicked() {
                                match Workflow::parse(text) {
                                    Ok(workflow) => {
                                        self.doc = Document::new(Workflow::new("untitled"));
                                        self.doc.replace(workflow, "recover");
                                        self.path.clone_from(original);
                                        self.saved_revision = 0;
                                        // The recovered text differs from the file on disk:
                                        // disk_text stays unset so any later change of the
                                        // file is reported.
                                        self.disk_text = None;
                                        rewatch = true;
                                        self.status = "recovered unsaved work".to_owned();
                                    }
                                    Err(_) => {
                                        self.status = "the recovery file is damaged".to_owned();
                                    }
                                }
                                close = true;
                            }
                            if ui.button("Discard").clicked() {
                                if let Some(state) = &self.config.state_dir {
                                    state.clear_recovery();
                                }
                                close = true;
                            }
                        });
                    });
            }
            Dialog::ExternalChange { workflow, text } => {
                let mut reload = None;
                egui::Window::new("File changed on disk")
                    .collapsible(false)
                    .show(ctx, |ui| {
                        ui.label(
                            "The file changed outside the editor, and you have unsaved edits.",
                        );
                        ui.horizontal(|ui| {
                            if ui.button("Reload").clicked() {
                                reload = Some((workflow.clone(), text.clone()));
                                close = true;
                            }
                            if ui.button("Keep mine").clicked() {
                                close = true;
                            }
                        });
                    });
                if let Some((workflow, text)) = reload {
                    self.reload(workflow, text);
                } else if close {
                    self.disk_text = Some(text.clone());
                }
            }
        }
        if close {
            self.dialog = None;
        }
        if rewatch {
            self.watch();
        }
        self.commands.extend(then);
    }

    fn enlarged_window(&mut self, ctx: &egui::Context) {
        let Some(node) = self.enlarged.clone() else {
            return;
        };
        let Some(texture) = self.textures.get(&node) else {
            self.enlarged = None;
            return;
        };
        let mut open = true;
        egui::Window::new(format!("Preview {node}"))
            .open(&mut open)
            .show(ctx, |ui| {
                let size = texture.size_vec2();
                let scale = (512.0 / size.x.max(size.y).max(1.0)).max(1.0);
                ui.image((texture.id(), size * scale));
            });
        if !open {
            self.enlarged = None;
        }
    }

    fn close_guard(&mut self, ctx: &egui::Context) {
        if ctx.input(|i| i.viewport().close_requested()) && !self.allow_close {
            if self.is_dirty() {
                ctx.send_viewport_cmd(egui::ViewportCommand::CancelClose);
                self.dialog = Some(Dialog::Unsaved {
                    then: Command::Quit { force: true },
                });
            } else {
                self.clean_exit();
            }
        }
    }

    fn clean_exit(&mut self) {
        self.runner.cancel();
        if let Some(state) = &self.config.state_dir {
            state.clear_recovery();
        }
    }

    fn autosave(&mut self, ctx: &egui::Context) {
        if self.doc.revision() != self.last_seen_revision {
            self.last_seen_revision = self.doc.revision();
            self.revision_changed_at = Instant::now();
        }
        if !self.is_dirty() || self.autosaved_revision == self.doc.revision() {
            return;
        }
        let quiet = self.revision_changed_at.elapsed();
        if quiet < AUTOSAVE_AFTER {
            ctx.request_repaint_after(AUTOSAVE_AFTER - quiet);
            return;
        }
        if let Some(state) = &self.config.state_dir {
            match state.write_recovery(self.path.as_deref(), &self.doc.workflow().to_ron()) {
                Ok(()) => self.autosaved_revision = self.doc.revision(),
                Err(err) => self.status = format!("autosave failed: {err}"),
            }
        }
    }

    /// Writes the recovery file now if there are unsaved edits (tests; the app autosaves
    /// after a quiet moment).
    pub fn autosave_now(&mut self) -> Result<(), FileError> {
        if let Some(state) = &self.config.state_dir
            && self.is_dirty()
        {
            state.write_recovery(self.path.as_deref(), &self.doc.workflow().to_ron())?;
            self.autosaved_revision = self.doc.revision();
        }
        Ok(())
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

    fn execute(&mut self, command: Command) {
        match command {
            Command::Edit(edit) => match self.doc.apply(edit.clone(), &self.registry) {
                Ok(created) => {
                    if let Edit::Rename { from, to } = &edit {
                        for id in &mut self.selection {
                            if id == from {
                                id.clone_from(to);
                            }
                        }
                    }
                    if !created.is_empty() {
                        self.selection = created;
                    }
                    self.selection
                        .retain(|id| self.doc.workflow().nodes.0.contains_key(id));
                }
                Err(err) => self.status = err.to_string(),
            },
            Command::Undo => {
                if let Err(err) = self.doc.undo() {
                    self.status = err.to_string();
                }
                self.prune_selection();
            }
            Command::Redo => {
                if let Err(err) = self.doc.redo() {
                    self.status = err.to_string();
                }
                self.prune_selection();
            }
            Command::New { force } => {
                if !force && self.is_dirty() {
                    self.dialog = Some(Dialog::Unsaved {
                        then: Command::New { force: true },
                    });
                    return;
                }
                self.set_document(Document::default(), None, None);
                self.status = "new workflow".to_owned();
            }
            Command::Open { path, force } => {
                if !force && self.is_dirty() {
                    self.dialog = Some(Dialog::Unsaved {
                        then: Command::Open { path, force: true },
                    });
                    return;
                }
                self.open(&path);
            }
            Command::Save => match self.path.clone() {
                Some(path) => self.save(&path),
                None => self.open_path_dialog(true),
            },
            Command::SaveAs(path) => self.save(&path),
            Command::Run => self.run(),
            Command::Cancel => {
                self.runner.cancel();
                self.status = "cancelling…".to_owned();
            }
            Command::Copy => {
                if let Some(text) = self.doc.copy(&self.selection) {
                    if let Some(ctx) = &self.ctx {
                        ctx.copy_text(text.clone());
                    }
                    self.status = format!("copied {} node(s)", self.selection.len());
                    self.clipboard = text;
                }
            }
            Command::Paste(text) => self.execute(Command::Edit(Edit::Paste(text))),
            Command::Duplicate => {
                if let Some(text) = self.doc.copy(&self.selection) {
                    self.execute(Command::Edit(Edit::Paste(text)));
                }
            }
            Command::DeleteSelection => {
                if !self.selection.is_empty() {
                    let ids = std::mem::take(&mut self.selection);
                    self.execute(Command::Edit(Edit::RemoveNodes(ids)));
                }
            }
            Command::Select(ids) => self.selection = ids,
            Command::OpenPalette(at) => {
                self.palette = Some(Palette {
                    at,
                    query: String::new(),
                    just_opened: true,
                });
            }
            Command::Quit { force } => {
                if !force && self.is_dirty() {
                    self.dialog = Some(Dialog::Unsaved {
                        then: Command::Quit { force: true },
                    });
                    return;
                }
                self.clean_exit();
                self.allow_close = true;
                if let Some(ctx) = &self.ctx {
                    ctx.send_viewport_cmd(egui::ViewportCommand::Close);
                }
            }
        }
    }

    fn prune_selection(&mut self) {
        let workflow = self.doc.workflow();
        self.selection
            .retain(|id| workflow.nodes.0.contains_key(id));
    }

    fn set_document(&mut self, doc: Document, path: Option<PathBuf>, disk_text: Option<String>) {
        self.doc = doc;
        self.saved_revision = self.doc.revision();
        self.autosaved_revision = self.doc.revision();
        // A new document restarts at revision 0: force the views to rebuild.
        self.canvas = Canvas::default();
        self.validated_revision = None;
        self.selection.clear();
        self.runner.states.clear();
        self.runner.previews.clear();
        self.textures.clear();
        self.disk_text = disk_text;
        self.path = path;
        self.watch();
    }

    fn watch(&mut self) {
        self.watcher = None;
        if !self.config.watch_files {
            return;
        }
        if let Some(path) = &self.path {
            match FileWatcher::new(path, self.wake()) {
                Ok(watcher) => self.watcher = Some(watcher),
                Err(err) => self.status = format!("not watching the file: {err}"),
            }
        }
    }

    fn open(&mut self, path: &Path) {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(err) => {
                self.status = format!("cannot open {}: {err}", path.display());
                return;
            }
        };
        let is_png = bytes.starts_with(b"\x89PNG\r\n\x1a\n");
        let loaded = workflow_source_from_bytes(path, bytes)
            .and_then(|source| Ok((parse_workflow(path, &source)?, source)));
        match loaded {
            Ok((workflow, source)) => {
                // A workflow taken from a PNG is new work: saving must not overwrite the image.
                let (doc_path, disk_text) = if is_png {
                    (None, None)
                } else {
                    (Some(path.to_owned()), Some(source))
                };
                self.set_document(Document::new(workflow), doc_path, disk_text);
                self.status = format!("opened {}", path.display());
                if let Some(state) = &self.config.state_dir {
                    let _ = state.add_recent(path);
                    self.recent = state.recent();
                }
            }
            Err(err) => self.status = format!("cannot open: {err}"),
        }
    }

    fn save(&mut self, path: &Path) {
        let text = self.doc.workflow().to_ron();
        match atomic_write(path, text.as_bytes()) {
            Ok(()) => {
                self.saved_revision = self.doc.revision();
                self.disk_text = Some(text);
                let moved = self.path.as_deref() != Some(path);
                self.path = Some(path.to_owned());
                if moved {
                    self.watch();
                }
                if let Some(state) = &self.config.state_dir {
                    state.clear_recovery();
                    let _ = state.add_recent(path);
                    self.recent = state.recent();
                }
                self.status = format!("saved {}", path.display());
            }
            Err(err) => self.status = format!("save failed: {err}"),
        }
    }

    fn run(&mut self) {
        if self.runner.is_running() {
            return;
        }
        let workflow = self.doc.workflow().clone();
        let validation = validate(&workflow, &self.registry, None);
        let Some(graph) = validation.graph else {
            let errors = validation
                .diagnostics
                .iter()
                .filter(|d| d.is_error())
                .count();
            self.status = format!("cannot run: {errors} problem(s), see Problems");
            return;
        };
        let budget = self
            .vram_budget_on
            .then_some((self.vram_budget_gib * GIB) as u64);
        self.status.clear();
        self.runner
            .start(graph, workflow.to_ron(), budget, self.wake());
    }
}

fn force(command: Command) -> Command {
    match command {
        Command::New { .. } => Command::New { force: true },
        Command::Open { path, .. } => Command::Open { path, force: true },
        Command::Quit { .. } => Command::Quit { force: true },
        other => other,
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
