//! Veetance node editor: the egui application as a library, so tests drive it headless
//! (egui_kittest) and `veetance edit` only opens a window around it.
//!
//! Data flow: the engine's [`veetance_engine::Workflow`] lives in a [`document::Document`] and
//! changes only through [`document::Edit`]s, which the UI queues as [`app::Command`]s and the
//! app applies once per frame. egui-snarl's graph is a view rebuilt from the document
//! ([`canvas`]); runs happen on a worker thread ([`runner`]).

#![forbid(unsafe_code)]

pub mod app;
pub mod canvas;
pub mod catalog;
pub mod document;
pub mod files;
pub mod palette;
pub mod runner;
pub mod telemetry;
pub mod watch;

use std::path::PathBuf;
use std::sync::Arc;

use veetance_engine::Registry;

pub use app::{Command, EditorApp, EditorConfig};
pub use document::{Document, Edit, EditError, Port};

/// Why the editor window could not run.
#[derive(Debug, thiserror::Error)]
pub enum EditorError {
    /// The windowing or GL backend failed to start.
    #[error("cannot open the editor window: {0}")]
    Window(String),
}

struct NativeApp(EditorApp);

impl eframe::App for NativeApp {
    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        self.0.ui(ui);
    }
}

/// Opens the editor window on `file` (or an empty workflow) and returns when it closes. The
/// caller supplies the node kinds (the CLI passes the built-in ones), so this crate never
/// depends on the model code.
pub fn run_native(
    file: Option<PathBuf>,
    registry: Arc<Registry>,
    model_dirs: Vec<PathBuf>,
    catalog: Option<catalog::CatalogLookup>,
) -> Result<(), EditorError> {
    let options = eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default()
            .with_title("Veetance")
            .with_inner_size([1280.0, 800.0])
            .with_drag_and_drop(true),
        ..eframe::NativeOptions::default()
    };
    let config = EditorConfig {
        model_dirs,
        catalog,
        ..EditorConfig::user()
    };
    let app = EditorApp::new(config, registry, file);
    eframe::run_native(
        "veetance-editor",
        options,
        Box::new(move |_cc| Ok(Box::new(NativeApp(app)))),
    )
    .map_err(|err| EditorError::Window(err.to_string()))
}
