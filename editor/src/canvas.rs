//! The node canvas: egui-snarl as a throwaway view of the document.
//!
//! The [`Snarl`] is rebuilt from the workflow whenever the document's revision moves, and
//! nothing the user does on the canvas changes it directly: the viewer turns every gesture
//! (connect, disconnect, edit a value, drop a wire, move) into [`Edit`]s that the app applies
//! once per frame. Connection rules come from the engine's `DataType::accepts` through
//! [`crate::document`].

use std::collections::HashMap;

use egui::emath::TSTransform;
use egui::{Color32, Id, Pos2, Stroke, TextureHandle, Ui};
use egui_snarl::ui::{
    AnyPins, PinInfo, PinPlacement, SnarlPin, SnarlStyle, SnarlViewer, SnarlWidget,
    get_selected_nodes,
};
use egui_snarl::{InPin, InPinId, NodeId, OutPin, OutPinId, Snarl};
use veetance_engine::{DataType, InputSpec, InputValue, Literal, Registry, TextWidget, Workflow};

use crate::document::{Edit, Port};
use crate::palette::{Filter, palette_list};
use crate::runner::{NodeRunState, Runner};

/// Horizontal spacing of nodes that have no saved position, in canvas units.
const AUTO_LAYOUT_STEP: f64 = 260.0;

/// Space between the canvas edge and the first node of a freshly opened document, in points.
const INITIAL_MARGIN: f32 = 24.0;

/// Smallest zoom of a document's first view: below it, text is too small to read.
const FIT_MIN_SCALE: f32 = 0.6;

/// About how much room a node takes right of and below its position, for the first view.
const TYPICAL_NODE_SIZE: egui::Vec2 = egui::vec2(340.0, 280.0);

/// Side of the inline preview image, in points.
const PREVIEW_SIDE: f32 = 128.0;

/// The colour of pins and wires of a data type, stable across runs.
pub fn type_color(registry: &Registry, data_type: DataType) -> Color32 {
    match registry.type_info(data_type) {
        Some(info) => {
            let [r, g, b] = info.color;
            Color32::from_rgb(r, g, b)
        }
        None => Color32::GRAY,
    }
}

/// One canvas node: the document id it shows.
#[derive(Debug, Clone)]
pub struct ViewNode {
    /// Node id in the workflow.
    pub id: String,
    /// Node kind.
    pub kind: String,
}

/// Problems to show on nodes: (is_error, message) by node id.
pub type NodeProblems = HashMap<String, Vec<(bool, String)>>;

/// What the canvas asks of the app after a frame.
#[derive(Default)]
pub struct CanvasOutput {
    /// Edits to apply.
    pub edits: Vec<Edit>,
    /// A preview to show large.
    pub enlarge: Option<String>,
    /// The canvas was double-clicked here (screen position): open the palette.
    pub open_palette_at: Option<Pos2>,
}

/// The canvas state kept between frames.
pub struct Canvas {
    snarl: Snarl<ViewNode>,
    built_revision: Option<u64>,
    node_ids: Vec<String>,
    /// Bumped when the set of nodes changes; part of the widget id, so snarl's selection
    /// (which is kept by index) is dropped rather than moved onto other nodes.
    epoch: u64,
    to_global: TSTransform,
    restore_transform: bool,
    last_snarl_selection: Vec<String>,
    /// The canvas's screen rect in the last frame.
    viewport: egui::Rect,
}

impl Default for Canvas {
    fn default() -> Canvas {
        Canvas {
            snarl: Snarl::new(),
            built_revision: None,
            node_ids: Vec::new(),
            epoch: 0,
            to_global: TSTransform::IDENTITY,
            restore_transform: false,
            last_snarl_selection: Vec::new(),
            viewport: egui::Rect::from_min_size(Pos2::ZERO, egui::vec2(800.0, 600.0)),
        }
    }
}

fn auto_pos(index: usize) -> (f64, f64) {
    (40.0 + index as f64 * AUTO_LAYOUT_STEP, 80.0)
}

/// Everything the viewer reads while drawing.
pub struct CanvasInputs<'a> {
    /// The workflow.
    pub workflow: &'a Workflow,
    /// Its revision.
    pub revision: u64,
    /// Node specs.
    pub registry: &'a Registry,
    /// Run states and previews.
    pub runner: &'a Runner,
    /// Validation problems by node.
    pub problems: &'a NodeProblems,
    /// Preview textures by node.
    pub textures: &'a HashMap<String, TextureHandle>,
    /// Suggested values of catalog inputs.
    pub catalog: &'a crate::catalog::Catalog,
}

impl Canvas {
    /// Canvas space → screen space, as last drawn.
    pub fn transform(&self) -> TSTransform {
        self.to_global
    }

    /// Canvas-space position of the middle of the visible canvas (where menu-added nodes go).
    pub fn visible_center(&self) -> (f64, f64) {
        self.to_canvas(self.viewport.center())
    }

    /// Canvas-space position of a screen position.
    pub fn to_canvas(&self, screen: Pos2) -> (f64, f64) {
        let pos = self.to_global.inverse() * screen;
        (f64::from(pos.x), f64::from(pos.y))
    }

    /// Rebuilds the view model when the document moved on (wires: [`Canvas::connect_wires`]).
    fn sync(&mut self, workflow: &Workflow, revision: u64) {
        if self.built_revision == Some(revision) {
            return;
        }
        let ids: Vec<String> = workflow.nodes.0.keys().cloned().collect();
        if ids != self.node_ids {
            self.epoch += 1;
            self.restore_transform = true;
            self.last_snarl_selection.clear();
        }
        let mut snarl = Snarl::new();
        for (i, (id, node)) in workflow.nodes.0.iter().enumerate() {
            let (x, y) = node.pos.unwrap_or_else(|| auto_pos(i));
            snarl.insert_node(
                Pos2::new(x as f32, y as f32),
                ViewNode {
                    id: id.clone(),
                    kind: node.kind.clone(),
                },
            );
        }
        self.built_revision = Some(revision);
        self.node_ids = ids;
        self.snarl = snarl;
    }

    fn connect_wires(&mut self, workflow: &Workflow, registry: &Registry) {
        let index: HashMap<String, NodeId> = self
            .snarl
            .node_ids()
            .map(|(nid, node)| (node.id.clone(), nid))
            .collect();
        let mut wires = Vec::new();
        for (id, node) in &workflow.nodes.0 {
            let Some(spec) = registry.get(&node.kind).map(|n| n.spec()) else {
                continue;
            };
            for (name, value) in &node.inputs.0 {
                let InputValue::Link(src, out) = value else {
                    continue;
                };
                let (Some((input_idx, _)), Some(&to), Some(&from)) =
                    (spec.input_named(name), index.get(id), index.get(src))
                else {
                    continue;
                };
                let Some(src_spec) = workflow
                    .nodes
                    .0
                    .get(src)
                    .and_then(|n| registry.get(&n.kind))
                    .map(|n| n.spec())
                else {
                    continue;
                };
                if let Some((output_idx, _)) = src_spec.output_named(out) {
                    wires.push((
                        OutPinId {
                            node: from,
                            output: output_idx,
                        },
                        InPinId {
                            node: to,
                            input: input_idx,
                        },
                    ));
                }
            }
        }
        for (from, to) in wires {
            self.snarl.connect(from, to);
        }
    }

    /// Draws the canvas. `selection` is the app's selection (node ids); the canvas updates it
    /// when the user selects on the canvas.
    pub fn show(
        &mut self,
        ui: &mut Ui,
        inputs: &CanvasInputs<'_>,
        selection: &mut Vec<String>,
    ) -> CanvasOutput {
        let rebuilt = self.built_revision != Some(inputs.revision);
        if self.built_revision.is_none() {
            // First view of a document: its top-left node near the corner, at actual size when
            // the graph fits, else zoomed out until it does, but never below FIT_MIN_SCALE
            // (snarl's own first view fits everything, which makes big graphs unreadable).
            let positions: Vec<(f64, f64)> = inputs
                .workflow
                .nodes
                .0
                .values()
                .enumerate()
                .map(|(i, n)| n.pos.unwrap_or_else(|| auto_pos(i)))
                .collect();
            let bounds = positions.iter().fold(
                (f64::MAX, f64::MAX, f64::MIN, f64::MIN),
                |(x0, y0, x1, y1), &(x, y)| (x0.min(x), y0.min(y), x1.max(x), y1.max(y)),
            );
            let (min_x, min_y, max_x, max_y) = if positions.is_empty() {
                (0.0, 0.0, 0.0, 0.0)
            } else {
                bounds
            };
            let view = ui.max_rect().size() - egui::vec2(2.0, 2.0) * INITIAL_MARGIN;
            // Positions are top-left corners: add a typical node's size to reach the far edges.
            let graph = egui::vec2(
                (max_x - min_x) as f32 + TYPICAL_NODE_SIZE.x,
                (max_y - min_y) as f32 + TYPICAL_NODE_SIZE.y,
            );
            let scale = (view.x / graph.x)
                .min(view.y / graph.y)
                .clamp(FIT_MIN_SCALE, 1.0);
            let corner = ui.max_rect().min + egui::vec2(INITIAL_MARGIN, INITIAL_MARGIN);
            self.to_global = TSTransform::new(
                corner.to_vec2() - egui::vec2(min_x as f32, min_y as f32) * scale,
                scale,
            );
            self.restore_transform = true;
        }
        self.sync(inputs.workflow, inputs.revision);
        if rebuilt {
            self.connect_wires(inputs.workflow, inputs.registry);
        }
        let widget_id = Id::new(("veetance-canvas", self.epoch));
        let mut output = CanvasOutput::default();
        self.viewport = ui.max_rect();
        let mut viewer = Viewer {
            inputs,
            viewport: self.viewport,
            selection,
            out: &mut output,
            to_global: &mut self.to_global,
            restore_transform: &mut self.restore_transform,
        };
        let style = SnarlStyle {
            // Double-click opens the palette; centring on double-click would fight it.
            centering: Some(false),
            // Pins on the frame edge leave the whole row to the label; inside the frame the
            // output pins cover the last letters of their labels.
            pin_placement: Some(PinPlacement::Edge),
            ..SnarlStyle::new()
        };
        let response =
            SnarlWidget::new()
                .id(widget_id)
                .style(style)
                .show(&mut self.snarl, &mut viewer, ui);
        if response.double_clicked() {
            output.open_palette_at = response.interact_pointer_pos();
        } else if response.clicked() {
            selection.clear();
        }

        // Selection made on the canvas replaces the app's selection.
        let snarl_selection: Vec<String> = get_selected_nodes(widget_id, ui.ctx())
            .into_iter()
            .filter_map(|nid| self.snarl.get_node(nid).map(|n| n.id.clone()))
            .collect();
        if snarl_selection != self.last_snarl_selection {
            selection.clone_from(&snarl_selection);
            self.last_snarl_selection = snarl_selection;
        }

        // Moves are committed when the drag ends, as one undo step.
        let dragging = ui.input(|i| i.pointer.any_down());
        if !dragging {
            let mut moves = Vec::new();
            for (i, (nid, pos, node)) in self.snarl.nodes_pos_ids().enumerate() {
                let _ = nid;
                let saved = inputs
                    .workflow
                    .nodes
                    .0
                    .get(&node.id)
                    .and_then(|n| n.pos)
                    .unwrap_or_else(|| auto_pos(i));
                let now = (f64::from(pos.x), f64::from(pos.y));
                if (now.0 - saved.0).abs() > 0.5 || (now.1 - saved.1).abs() > 0.5 {
                    moves.push((node.id.clone(), (now.0.round(), now.1.round())));
                }
            }
            if !moves.is_empty() {
                output.edits.push(Edit::Move(moves));
            }
        }
        output
    }
}

struct Viewer<'a, 'b> {
    inputs: &'a CanvasInputs<'b>,
    /// The canvas on screen: node rects may extend under the side panels.
    viewport: egui::Rect,
    selection: &'a mut Vec<String>,
    out: &'a mut CanvasOutput,
    to_global: &'a mut TSTransform,
    restore_transform: &'a mut bool,
}

impl Viewer<'_, '_> {
    fn spec(&self, node: &ViewNode) -> Option<&veetance_engine::NodeSpec> {
        self.inputs.registry.get(&node.kind).map(|n| n.spec())
    }

    fn out_port(&self, pin: &OutPin, snarl: &Snarl<ViewNode>) -> Option<(Port, DataType)> {
        let node = snarl.get_node(pin.id.node)?;
        let output = self.spec(node)?.outputs.get(pin.id.output)?;
        Some((Port::new(&node.id, &output.name), output.data_type))
    }

    fn in_port(&self, pin: &InPin, snarl: &Snarl<ViewNode>) -> Option<(Port, DataType)> {
        let node = snarl.get_node(pin.id.node)?;
        let input = self.spec(node)?.inputs.get(pin.id.input)?;
        Some((Port::new(&node.id, &input.name), input.data_type))
    }

    /// The memory plan's badge and details for node `id` (with a VRAM budget).
    fn plan_summary(&self, id: &str) -> Option<(String, String)> {
        self.inputs.runner.memory_plan.as_ref()?.node_summary(id)
    }
}

impl SnarlViewer<ViewNode> for Viewer<'_, '_> {
    fn title(&mut self, node: &ViewNode) -> String {
        format!("{} · {}", node.id, node.kind)
    }

    fn node_frame(
        &mut self,
        default: egui::Frame,
        node: NodeId,
        _inputs: &[InPin],
        _outputs: &[OutPin],
        snarl: &Snarl<ViewNode>,
    ) -> egui::Frame {
        let Some(view) = snarl.get_node(node) else {
            return default;
        };
        let failed = matches!(
            self.inputs.runner.states.get(&view.id),
            Some(NodeRunState::Failed(_))
        );
        let has_error = self
            .inputs
            .problems
            .get(&view.id)
            .is_some_and(|p| p.iter().any(|(error, _)| *error));
        if self.selection.contains(&view.id) {
            default.stroke(Stroke::new(2.0, Color32::from_rgb(0xff, 0xcc, 0x33)))
        } else if failed || has_error {
            default.stroke(Stroke::new(1.5, Color32::from_rgb(0xe0, 0x40, 0x40)))
        } else {
            default
        }
    }

    fn show_header(
        &mut self,
        node: NodeId,
        _inputs: &[InPin],
        _outputs: &[OutPin],
        ui: &mut Ui,
        snarl: &mut Snarl<ViewNode>,
    ) {
        let Some(view) = snarl.get_node(node) else {
            return;
        };
        ui.add(
            egui::Label::new(egui::RichText::new(self.title(&view.clone())).strong())
                .selectable(false)
                .sense(egui::Sense::hover()),
        );
        if let Some(state) = self.inputs.runner.states.get(&view.id) {
            let color = match state {
                NodeRunState::Failed(_) => Color32::from_rgb(0xe0, 0x50, 0x50),
                NodeRunState::Cached => Color32::from_rgb(0x80, 0xb0, 0xff),
                NodeRunState::Done { .. } => Color32::from_rgb(0x70, 0xc0, 0x70),
                _ => Color32::from_rgb(0xe0, 0xc0, 0x60),
            };
            ui.label(egui::RichText::new(state.badge()).color(color).small())
                .on_hover_text(match state {
                    NodeRunState::Failed(message) => message.clone(),
                    other => other.badge(),
                });
        }
    }

    fn inputs(&mut self, node: &ViewNode) -> usize {
        self.spec(node).map_or(0, |s| s.inputs.len())
    }

    fn outputs(&mut self, node: &ViewNode) -> usize {
        self.spec(node).map_or(0, |s| s.outputs.len())
    }

    fn show_input(
        &mut self,
        pin: &InPin,
        ui: &mut Ui,
        snarl: &mut Snarl<ViewNode>,
    ) -> impl SnarlPin + 'static {
        let Some(view) = snarl.get_node(pin.id.node).cloned() else {
            return PinInfo::circle();
        };
        let Some(input) = self
            .spec(&view)
            .and_then(|s| s.inputs.get(pin.id.input))
            .cloned()
        else {
            return PinInfo::circle();
        };
        let value = self
            .inputs
            .workflow
            .nodes
            .0
            .get(&view.id)
            .and_then(|n| n.inputs.0.get(&input.name))
            .cloned();
        let label = ui.label(&input.name).on_hover_text(format!(
            "{} ({}{})",
            input.doc,
            input.data_type.name(),
            if input.is_required() {
                ", required"
            } else {
                ""
            }
        ));
        match &value {
            Some(InputValue::Link(..)) => {}
            _ if input.data_type.is_literal() => {
                if let Some(edit) = literal_widget(
                    ui,
                    &view.id,
                    &input,
                    value.as_ref(),
                    label.id,
                    self.inputs.catalog,
                ) {
                    self.out.edits.push(edit);
                }
            }
            _ => {}
        }
        let color = type_color(self.inputs.registry, input.data_type);
        PinInfo::circle().with_fill(color).with_wire_color(color)
    }

    fn show_output(
        &mut self,
        pin: &OutPin,
        ui: &mut Ui,
        snarl: &mut Snarl<ViewNode>,
    ) -> impl SnarlPin + 'static {
        let output = snarl
            .get_node(pin.id.node)
            .and_then(|view| self.spec(view))
            .and_then(|s| s.outputs.get(pin.id.output))
            .cloned();
        match output {
            Some(output) => {
                ui.label(&output.name).on_hover_text(format!(
                    "{} ({})",
                    output.doc,
                    output.data_type.name()
                ));
                let color = type_color(self.inputs.registry, output.data_type);
                PinInfo::circle().with_fill(color).with_wire_color(color)
            }
            None => PinInfo::circle(),
        }
    }

    fn has_footer(&mut self, node: &ViewNode) -> bool {
        self.plan_summary(&node.id).is_some()
            || self.inputs.problems.contains_key(&node.id)
            || self.inputs.textures.contains_key(&node.id)
            || matches!(
                self.inputs.runner.states.get(&node.id),
                Some(NodeRunState::Failed(_))
            )
    }

    fn show_footer(
        &mut self,
        node: NodeId,
        _inputs: &[InPin],
        _outputs: &[OutPin],
        ui: &mut Ui,
        snarl: &mut Snarl<ViewNode>,
    ) {
        let Some(view) = snarl.get_node(node).cloned() else {
            return;
        };
        ui.vertical(|ui| {
            ui.set_max_width(260.0);
            // Under a VRAM budget: the node's expected peak, one short line per fact so the node
            // keeps its width; where its model lives is on hover.
            if let Some((badge, details)) = self.plan_summary(&view.id) {
                let color = Color32::from_rgb(0xa0, 0xa0, 0xc8);
                ui.vertical(|ui| {
                    for line in badge.split(" · ") {
                        ui.label(egui::RichText::new(line).small().color(color));
                    }
                })
                .response
                .on_hover_text(details);
            }
            if let Some(NodeRunState::Failed(message)) = self.inputs.runner.states.get(&view.id) {
                ui.colored_label(Color32::from_rgb(0xe0, 0x50, 0x50), message);
            }
            for (error, message) in self.inputs.problems.get(&view.id).into_iter().flatten() {
                let color = if *error {
                    Color32::from_rgb(0xe0, 0x50, 0x50)
                } else {
                    Color32::from_rgb(0xe0, 0xb0, 0x40)
                };
                ui.colored_label(color, message);
            }
            if let Some(texture) = self.inputs.textures.get(&view.id) {
                let size = texture.size_vec2();
                let scale = PREVIEW_SIDE / size.x.max(size.y).max(1.0);
                let image =
                    egui::Image::new((texture.id(), size * scale)).sense(egui::Sense::click());
                let response = ui.add(image).on_hover_text("click to enlarge");
                let response = response.on_hover_cursor(egui::CursorIcon::ZoomIn);
                response.widget_info(|| {
                    egui::WidgetInfo::labeled(
                        egui::WidgetType::Button,
                        true,
                        format!("preview {}", view.id),
                    )
                });
                if response.clicked() {
                    self.out.enlarge = Some(view.id.clone());
                }
            }
        });
    }

    fn connect(&mut self, from: &OutPin, to: &InPin, snarl: &mut Snarl<ViewNode>) {
        if let (Some((from, _)), Some((to, _))) =
            (self.out_port(from, snarl), self.in_port(to, snarl))
        {
            self.out.edits.push(Edit::Connect { from, to });
        }
    }

    fn disconnect(&mut self, _from: &OutPin, to: &InPin, snarl: &mut Snarl<ViewNode>) {
        if let Some((to, _)) = self.in_port(to, snarl) {
            self.out.edits.push(Edit::Disconnect(to));
        }
    }

    fn drop_inputs(&mut self, pin: &InPin, snarl: &mut Snarl<ViewNode>) {
        if let Some((to, _)) = self.in_port(pin, snarl) {
            self.out.edits.push(Edit::Disconnect(to));
        }
    }

    fn drop_outputs(&mut self, pin: &OutPin, snarl: &mut Snarl<ViewNode>) {
        if let Some((from, _)) = self.out_port(pin, snarl) {
            self.out.edits.push(Edit::DisconnectOutput(from));
        }
    }

    fn has_dropped_wire_menu(&mut self, _src_pins: AnyPins, _snarl: &mut Snarl<ViewNode>) -> bool {
        true
    }

    fn show_dropped_wire_menu(
        &mut self,
        pos: Pos2,
        ui: &mut Ui,
        src_pins: AnyPins,
        snarl: &mut Snarl<ViewNode>,
    ) {
        let (filter, link_from, link_to) = match src_pins {
            AnyPins::Out(pins) => {
                let Some(pin) = pins.first() else { return };
                let pin = snarl.out_pin(*pin);
                let Some((port, data_type)) = self.out_port(&pin, snarl) else {
                    return;
                };
                (Filter::TakesInput(data_type), Some(port), None)
            }
            AnyPins::In(pins) => {
                let Some(pin) = pins.first() else { return };
                let pin = snarl.in_pin(*pin);
                let Some((port, data_type)) = self.in_port(&pin, snarl) else {
                    return;
                };
                (Filter::GivesOutput(data_type), None, Some(port))
            }
        };
        let query_id = ui.id().with("dropped-wire-query");
        let mut query: String = ui.data(|d| d.get_temp(query_id)).unwrap_or_default();
        let chosen = palette_list(ui, self.inputs.registry, &mut query, filter, true);
        ui.data_mut(|d| d.insert_temp(query_id, query));
        if let Some(kind) = chosen {
            self.out.edits.push(Edit::AddNode {
                kind,
                pos: (f64::from(pos.x), f64::from(pos.y)),
                link_from,
                link_to,
            });
            ui.close();
        }
    }

    fn final_node_rect(
        &mut self,
        node: NodeId,
        rect: egui::Rect,
        ui: &mut Ui,
        snarl: &mut Snarl<ViewNode>,
    ) {
        // snarl selects only on Shift+click or with the box; a plain click on a node selecting
        // it is what people expect. Checked here rather than with a clickable title so drags
        // on the title still move the node. `rect` is in canvas space; a click is on the canvas
        // only when no window or popup (higher layer orders) lies over it.
        let Some(pointer) = ui.input(|i| {
            i.pointer
                .primary_clicked()
                .then(|| i.pointer.interact_pos())
                .flatten()
        }) else {
            return;
        };
        let on_canvas = ui
            .ctx()
            .layer_id_at(pointer)
            .is_some_and(|layer| layer.order == egui::Order::Background);
        if !on_canvas
            || !self.viewport.contains(pointer)
            || !rect.contains(self.to_global.inverse() * pointer)
        {
            return;
        }
        let Some(view) = snarl.get_node(node) else {
            return;
        };
        if ui.input(|i| i.modifiers.shift) {
            if !self.selection.contains(&view.id) {
                self.selection.push(view.id.clone());
            }
        } else {
            *self.selection = vec![view.id.clone()];
        }
    }

    fn current_transform(&mut self, to_global: &mut TSTransform, _snarl: &mut Snarl<ViewNode>) {
        if std::mem::take(self.restore_transform) {
            *to_global = *self.to_global;
        } else {
            *self.to_global = *to_global;
        }
    }
}

/// A number input that is not set (an optional input without a default, such as Sample's
/// `steps`) reads "default": the node then uses the model's or the input's own default, and a
/// number shown there would be a value the run does not use. Dragging or typing sets one.
fn unset_shows_default(drag: egui::DragValue<'_>, unset: bool) -> egui::DragValue<'_> {
    if unset {
        drag.custom_formatter(|_, _| "default".to_owned())
    } else {
        drag
    }
}

/// The widget for a literal input, from its spec. Returns the edit when the value changed.
pub fn literal_widget(
    ui: &mut Ui,
    node: &str,
    input: &InputSpec,
    value: Option<&InputValue>,
    label: Id,
    catalog: &crate::catalog::Catalog,
) -> Option<Edit> {
    let current = value
        .and_then(InputValue::literal)
        .or_else(|| input.default.clone());
    let port = Port::new(node, &input.name);
    let set = |literal: Literal| Edit::SetInput {
        input: port.clone(),
        value: Some(literal.into()),
    };
    match input.data_type {
        DataType::INT => {
            let mut v = match current {
                Some(Literal::Int(v)) => v,
                Some(Literal::Float(v)) => v as i64,
                _ => 0,
            };
            // Clamp before comparing: DragValue clamps what it shows, and merely drawing an
            // unset input must not count as an edit.
            if let (Some(min), Some(max)) = (input.min, input.max) {
                v = v.clamp(min as i64, max as i64);
            }
            let before = v;
            let mut drag = egui::DragValue::new(&mut v);
            if let (Some(min), Some(max)) = (input.min, input.max) {
                drag = drag.range(min as i64..=max as i64);
            }
            let response = ui.add(unset_shows_default(drag, current.is_none()));
            response.labelled_by(label);
            if input.name == "seed" && ui.small_button("🎲").on_hover_text("random seed").clicked()
            {
                v = random_seed();
            }
            (v != before).then(|| set(Literal::Int(v)))
        }
        DataType::FLOAT => {
            let mut v = match current {
                Some(Literal::Float(v)) => v,
                Some(Literal::Int(v)) => v as f64,
                _ => 0.0,
            };
            if let (Some(min), Some(max)) = (input.min, input.max) {
                v = v.clamp(min, max);
            }
            let before = v;
            let mut drag = egui::DragValue::new(&mut v).speed(0.01);
            if let (Some(min), Some(max)) = (input.min, input.max) {
                drag = drag.range(min..=max);
            }
            let response = ui.add(unset_shows_default(drag, current.is_none()));
            response.labelled_by(label);
            (v != before).then(|| set(Literal::Float(v)))
        }
        DataType::BOOL => {
            let mut v = matches!(current, Some(Literal::Bool(true)));
            let changed = ui.checkbox(&mut v, "").labelled_by(label).changed();
            changed.then(|| set(Literal::Bool(v)))
        }
        DataType::TEXT => {
            let mut v = match current {
                Some(Literal::Text(v)) => v,
                _ => String::new(),
            };
            if !input.choices.is_empty() {
                let mut picked = None;
                egui::ComboBox::from_id_salt(("choice", node, &input.name, label))
                    .selected_text(v.clone())
                    .show_ui(ui, |ui| {
                        for choice in &input.choices {
                            if ui.selectable_label(*choice == v, choice).clicked() {
                                picked = Some(choice.clone());
                            }
                        }
                    })
                    .response
                    .labelled_by(label);
                return picked.map(|choice| set(Literal::Text(choice)));
            }
            let before = v.clone();
            let edit = match input.widget {
                TextWidget::Multiline => egui::TextEdit::multiline(&mut v)
                    .desired_rows(3)
                    .desired_width(220.0),
                TextWidget::Line | TextWidget::Path => {
                    egui::TextEdit::singleline(&mut v).desired_width(120.0)
                }
            };
            ui.add(edit).labelled_by(label);
            if let Some(name) = &input.catalog {
                let mut picked = None;
                egui::ComboBox::from_id_salt(("catalog", node, &input.name, label))
                    .selected_text("")
                    .width(16.0)
                    .show_ui(ui, |ui| {
                        let names = catalog.names(name);
                        if names.is_empty() {
                            ui.label(
                                "nothing in the model folders (VEETANCE_MODELS, --models-dir)",
                            );
                        }
                        for entry in names {
                            if ui.selectable_label(entry == v, &entry).clicked() {
                                picked = Some(entry);
                            }
                        }
                        ui.separator();
                        if ui.button("Look again").clicked() {
                            catalog.refresh();
                        }
                    })
                    .response
                    .labelled_by(label)
                    .on_hover_text("choose from the model folders");
                if let Some(entry) = picked {
                    return Some(set(Literal::Text(entry)));
                }
            }
            (v != before).then(|| set(Literal::Text(v)))
        }
        _ => None,
    }
}

/// A seed from the clock and a process-unique counter: different on every click, and no
/// randomness crate just for this.
fn random_seed() -> i64 {
    use std::hash::{BuildHasher as _, Hasher as _};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    // Seeds stay positive and below 2^53 so they survive any JSON consumer unchanged.
    (hasher.finish() >> 11) as i64
}
