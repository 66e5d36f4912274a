//! Shared setup for the headless editor tests: an editor over the built-in nodes with its state
//! and outputs in a temporary directory, opened on a workflow, and the few gestures the tests
//! repeat (stepping frames, waiting for the worker, adding and linking nodes, dragging wires).
//!
//! Kept apart from the tests so each test reads as what the user does and what must follow,
//! and a change to how the editor is set up is made once.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use egui::accesskit::{self, Role};
use egui::{Key, Modifiers};
use egui_kittest::Harness;
use egui_kittest::kittest::{NodeT as _, Queryable as _};
use tempfile::TempDir;
use veetance_editor::files::StateDir;
use veetance_editor::{EditorApp, EditorConfig};
use veetance_engine::Registry;

/// The window size of every test, large enough that the side panel never scrolls.
pub const WINDOW_SIZE: [f32; 2] = [1600.0, 1000.0];

/// The name [`open_app`] gives the workflow file in the test's directory.
pub const WORKFLOW_FILE: &str = "workflow.ron";

/// Background work gives up after this long; only a broken test waits that long.
const WAIT_AT_MOST: Duration = Duration::from_secs(60);

/// Settings that keep everything inside `dir`: no user state, no disk cache, no telemetry
/// thread; the open file is watched, as in the real editor.
pub fn config(dir: &Path) -> EditorConfig {
    EditorConfig {
        state_dir: Some(StateDir(dir.join("state"))),
        out_dir: dir.join("out"),
        disk_cache_dir: None,
        telemetry: false,
        watch_files: true,
        model_dirs: Vec::new(),
        catalog: None,
    }
}

/// The built-in node kinds, as the CLI passes them to the editor.
pub fn registry() -> Arc<Registry> {
    Arc::new(veetance_nodes::registry().unwrap())
}

/// Runs `app` headless and steps the first two frames, which open the file given to
/// [`EditorApp::new`] and lay out the panels.
pub fn start(app: EditorApp) -> Harness<'static, EditorApp> {
    let mut h = Harness::builder()
        .with_size(WINDOW_SIZE)
        .build_ui_state(|ui, app: &mut EditorApp| app.ui(ui), app);
    frames(&mut h, 2);
    h
}

/// An editor on an empty workflow, in a fresh temporary directory (dropped with it).
pub fn new_app() -> (TempDir, Harness<'static, EditorApp>) {
    let dir = tempfile::tempdir().unwrap();
    let h = start(EditorApp::new(config(dir.path()), registry(), None));
    (dir, h)
}

/// An editor opened on the workflow `ron`, written to [`WORKFLOW_FILE`] in a fresh temporary
/// directory.
pub fn open_app(ron: &str) -> (TempDir, Harness<'static, EditorApp>) {
    open_app_with(ron, registry())
}

/// Like [`open_app`], over the node kinds of `registry` instead of the built-in ones.
pub fn open_app_with(ron: &str, registry: Arc<Registry>) -> (TempDir, Harness<'static, EditorApp>) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(WORKFLOW_FILE);
    std::fs::write(&file, ron).unwrap();
    let h = start(EditorApp::new(config(dir.path()), registry, Some(file)));
    (dir, h)
}

/// Steps `n` frames.
pub fn frames(h: &mut Harness<'_, EditorApp>, n: usize) {
    for _ in 0..n {
        h.step();
    }
}

/// Steps frames until `done` holds, sleeping between them (background threads are at work).
pub fn wait_until(
    h: &mut Harness<'_, EditorApp>,
    what: &str,
    done: impl Fn(&Harness<'_, EditorApp>) -> bool,
) {
    let start = Instant::now();
    while !done(h) {
        assert!(
            start.elapsed() < WAIT_AT_MOST,
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
        h.step();
    }
}

/// Steps frames until `done` holds of the app, then two more so the UI shows the result.
pub fn wait_for(h: &mut Harness<'_, EditorApp>, what: &str, done: impl Fn(&EditorApp) -> bool) {
    wait_until(h, what, |h| done(h.state()));
    frames(h, 2);
}

/// Space, the kind typed into the palette's search field, then the kind's button.
pub fn add_node(h: &mut Harness<'_, EditorApp>, kind: &str) {
    h.key_press(Key::Space);
    frames(h, 2);
    h.event(egui::Event::Text(kind.to_lowercase()));
    frames(h, 2);
    h.get_by_role_and_label(Role::Button, kind).click();
    frames(h, 3);
}

/// Picks `source` (`node.output`) in the inspector's source list of `input` (`node.input`).
pub fn link(h: &mut Harness<'_, EditorApp>, input: &str, source: &str) {
    h.get_by_role_and_label(Role::ComboBox, &format!("{input} source"))
        .click();
    frames(h, 2);
    h.get_by_label(source).click();
    frames(h, 3);
}

/// Sets the number field labelled `label` through AccessKit, as a screen reader would.
pub fn set_number(h: &mut Harness<'_, EditorApp>, label: &str, value: f64) {
    let node = h.get_by_role_and_label(Role::SpinButton, label);
    let (target_node, target_tree) = node.accesskit_node().locate();
    h.event(egui::Event::AccessKitActionRequest(
        accesskit::ActionRequest {
            action: accesskit::Action::SetValue,
            target_node,
            target_tree,
            data: Some(accesskit::ActionData::NumericValue(value)),
        },
    ));
    frames(h, 3);
}

/// Replaces the text of the field labelled `label` and presses Enter.
pub fn set_text(h: &mut Harness<'_, EditorApp>, role: Role, label: &str, text: &str) {
    h.get_by_role_and_label(role, label).focus();
    frames(h, 2);
    h.key_press_modifiers(Modifiers::COMMAND, Key::A);
    frames(h, 1);
    h.get_by_role_and_label(role, label).type_text(text);
    frames(h, 2);
    if role == Role::TextInput {
        h.key_press(Key::Enter);
    } else {
        h.key_press(Key::Escape);
    }
    frames(h, 3);
}

/// Screen position of the pin beside a label: the unlabelled interactive area on the
/// label's row nearest the label's outer edge. Canvas widgets report canvas-space rects to
/// AccessKit, so the canvas transform is applied.
pub fn pin_near(h: &Harness<'_, EditorApp>, label: egui::Rect, output: bool) -> egui::Pos2 {
    let edge = if output { label.right() } else { label.left() };
    let pin = h
        .get_all_by_role(Role::Unknown)
        .map(|n| n.rect())
        .filter(|r| (r.center().y - label.center().y).abs() < 4.0)
        .min_by(|a, b| {
            let da = (a.center().x - edge).abs();
            let db = (b.center().x - edge).abs();
            da.total_cmp(&db)
        })
        .expect("the pin")
        .center();
    h.state().canvas_transform() * pin
}

/// The pin of the port labelled `label` inside the canvas-space box `area`.
pub fn pin(h: &Harness<'_, EditorApp>, label: &str, area: egui::Rect, output: bool) -> egui::Pos2 {
    let rect = h
        .get_all_by_role_and_label(Role::Label, label)
        .map(|n| n.rect())
        .filter(|r| area.contains(r.center()))
        .max_by(|a, b| {
            // Outputs are the right-hand labels of a row, inputs the left-hand ones.
            if output {
                a.left().total_cmp(&b.left())
            } else {
                b.left().total_cmp(&a.left())
            }
        })
        .expect("the pin's label");
    pin_near(h, rect, output)
}

/// Presses at `from`, moves in steps to `to` and releases there (with the pointer still
/// present, as a hand would leave it).
pub fn drag_wire(h: &mut Harness<'_, EditorApp>, from: egui::Pos2, to: egui::Pos2) {
    h.hover_at(from);
    frames(h, 1);
    h.drag_at(from);
    frames(h, 1);
    for step in 1..=10 {
        h.hover_at(from + (to - from) * (step as f32 / 10.0));
        frames(h, 1);
    }
    h.event(egui::Event::PointerButton {
        pos: to,
        button: egui::PointerButton::Primary,
        pressed: false,
        modifiers: Modifiers::NONE,
    });
    frames(h, 3);
}

/// A primary-button press and release at `at`, one frame each.
pub fn press_release(h: &mut Harness<'_, EditorApp>, at: egui::Pos2) {
    for pressed in [true, false] {
        h.event(egui::Event::PointerButton {
            pos: at,
            button: egui::PointerButton::Primary,
            pressed,
            modifiers: Modifiers::NONE,
        });
        frames(h, 1);
    }
}

/// The path of `relative` in the workspace (the repository root).
pub fn workspace_file(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(relative)
}
