//! The edited document: the engine's [`Workflow`] plus undo history, changed only through
//! [`Edit`]s.
//!
//! Every edit is checked against the node registry before it touches the workflow, so the
//! document never holds a link the engine's type rule refuses. Undo keeps whole workflow
//! snapshots: workflows are small, and snapshots cannot drift from the edits that made them.

use std::collections::{HashMap, HashSet};

use veetance_engine::{InputValue, NodeSpec, Registry, Workflow, WorkflowNode};

/// Undo steps kept; older ones are dropped.
const UNDO_DEPTH: usize = 200;

/// Offset of pasted and duplicated nodes from their originals, in canvas units.
const PASTE_OFFSET: f64 = 40.0;

/// Why an edit was refused. The document is unchanged when this is returned.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EditError {
    /// No node with this id.
    #[error("no node `{0}`")]
    UnknownNode(String),
    /// No node kind with this name in the registry.
    #[error("no node kind `{0}`")]
    UnknownKind(String),
    /// The node has no input of that name.
    #[error("node `{node}` has no input `{input}`")]
    UnknownInput {
        /// Node id.
        node: String,
        /// Input name.
        input: String,
    },
    /// The node has no output of that name.
    #[error("node `{node}` has no output `{output}`")]
    UnknownOutput {
        /// Node id.
        node: String,
        /// Output name.
        output: String,
    },
    /// The engine's type rule refuses this link.
    #[error("cannot connect: input `{input}` takes {to_type}, output `{output}` gives {from_type}")]
    Incompatible {
        /// Output name.
        output: String,
        /// Output type.
        from_type: &'static str,
        /// Input name.
        input: String,
        /// Input type.
        to_type: &'static str,
    },
    /// The link would make the graph cyclic.
    #[error("cannot connect `{from}` to `{to}`: it would make a cycle")]
    Cycle {
        /// Source node.
        from: String,
        /// Target node.
        to: String,
    },
    /// A node id already in use, or not usable as an id.
    #[error("invalid or taken node id `{0}`")]
    BadId(String),
    /// Pasted text that is not a workflow.
    #[error("the clipboard holds no veetance nodes: {0}")]
    BadPaste(String),
    /// Nothing to undo or redo.
    #[error("nothing to {0}")]
    NoHistory(&'static str),
}

/// A link end: node id and port name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Port {
    /// Node id.
    pub node: String,
    /// Port name.
    pub port: String,
}

impl Port {
    /// A port of `node` named `port`.
    pub fn new(node: &str, port: &str) -> Port {
        Port {
            node: node.to_owned(),
            port: port.to_owned(),
        }
    }
}

/// A change to the workflow. Each applied edit is one undo step (except consecutive
/// [`Edit::SetInput`]s of the same input, or [`Edit::SetName`]s, which merge so a drag or
/// a typed word is one step).
#[derive(Debug, Clone, PartialEq)]
pub enum Edit {
    /// Adds a node of `kind` at `pos`; optionally links it to a dropped wire's pin.
    AddNode {
        /// Node kind.
        kind: String,
        /// Canvas position.
        pos: (f64, f64),
        /// Link the new node's first compatible input from this output.
        link_from: Option<Port>,
        /// Link this input from the new node's first compatible output.
        link_to: Option<Port>,
    },
    /// Removes nodes and every link to them.
    RemoveNodes(Vec<String>),
    /// Links `from` (an output) to `to` (an input), replacing what the input held.
    Connect {
        /// Output side.
        from: Port,
        /// Input side.
        to: Port,
    },
    /// Removes the link into this input (the input goes back to its default).
    Disconnect(Port),
    /// Removes every link out of this output.
    DisconnectOutput(Port),
    /// Sets an input to a literal or link, or clears it (`None`: back to the default).
    SetInput {
        /// The input.
        input: Port,
        /// The new value.
        value: Option<InputValue>,
    },
    /// Moves nodes to new canvas positions.
    Move(Vec<(String, (f64, f64))>),
    /// Renames a node and every link to it.
    Rename {
        /// Current id.
        from: String,
        /// New id.
        to: String,
    },
    /// Inserts nodes from RON workflow text (as copied), with fresh ids, offset.
    Paste(String),
    /// Sets the workflow name.
    SetName(String),
}

/// The open workflow and its history.
#[derive(Debug, Clone)]
pub struct Document {
    workflow: Workflow,
    revision: u64,
    undo: Vec<(Workflow, String)>,
    redo: Vec<(Workflow, String)>,
    /// Key of the last edit when it may merge with the next one (the same input being set,
    /// or the name being typed), so a drag or a typed word is one undo step.
    merge_key: Option<Port>,
}

impl Default for Document {
    fn default() -> Document {
        Document::new(Workflow::new("untitled"))
    }
}

impl Document {
    /// A document holding `workflow`, with no history.
    pub fn new(workflow: Workflow) -> Document {
        Document {
            workflow,
            revision: 0,
            undo: Vec::new(),
            redo: Vec::new(),
            merge_key: None,
        }
    }

    /// The workflow.
    pub fn workflow(&self) -> &Workflow {
        &self.workflow
    }

    /// Bumped on every change (edit, undo, redo, replace); views rebuild when it moves.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// What Undo would undo, for menus.
    pub fn undo_label(&self) -> Option<&str> {
        self.undo.last().map(|(_, label)| label.as_str())
    }

    /// What Redo would redo, for menus.
    pub fn redo_label(&self) -> Option<&str> {
        self.redo.last().map(|(_, label)| label.as_str())
    }

    /// Replaces the whole workflow as one undoable step (external reload).
    pub fn replace(&mut self, workflow: Workflow, label: &str) {
        self.push_undo(label);
        self.workflow = workflow;
        self.revision += 1;
    }

    /// Undoes the last edit.
    pub fn undo(&mut self) -> Result<(), EditError> {
        let (previous, label) = self.undo.pop().ok_or(EditError::NoHistory("undo"))?;
        let current = std::mem::replace(&mut self.workflow, previous);
        self.redo.push((current, label));
        self.merge_key = None;
        self.revision += 1;
        Ok(())
    }

    /// Redoes the last undone edit.
    pub fn redo(&mut self) -> Result<(), EditError> {
        let (next, label) = self.redo.pop().ok_or(EditError::NoHistory("redo"))?;
        let current = std::mem::replace(&mut self.workflow, next);
        self.undo.push((current, label));
        self.merge_key = None;
        self.revision += 1;
        Ok(())
    }

    fn push_undo(&mut self, label: &str) {
        self.undo.push((self.workflow.clone(), label.to_owned()));
        if self.undo.len() > UNDO_DEPTH {
            self.undo.remove(0);
        }
        self.redo.clear();
        self.merge_key = None;
    }

    /// Applies `edit`. Returns the ids of nodes it created (to select them). On error the
    /// document is unchanged.
    pub fn apply(&mut self, edit: Edit, registry: &Registry) -> Result<Vec<String>, EditError> {
        let mut next = self.workflow.clone();
        let label = edit_label(&edit);
        let merge = match &edit {
            Edit::SetInput { input, .. } => Some(input.clone()),
            // No node has an empty id, so this key never collides with an input's.
            Edit::SetName(_) => Some(Port::new("", "name")),
            _ => None,
        };
        let created = apply_to(&mut next, edit, registry)?;
        if next == self.workflow {
            return Ok(created);
        }
        if merge.is_none() || merge != self.merge_key {
            self.push_undo(&label);
        }
        self.merge_key = merge;
        self.workflow = next;
        self.revision += 1;
        Ok(created)
    }

    /// RON text of the nodes `ids` (links to other nodes kept as written), for the clipboard.
    pub fn copy(&self, ids: &[String]) -> Option<String> {
        let mut fragment = Workflow::new(&self.workflow.name);
        for (id, node) in &self.workflow.nodes.0 {
            if ids.contains(id) {
                fragment.nodes.0.insert(id.clone(), node.clone());
            }
        }
        (!fragment.nodes.0.is_empty()).then(|| fragment.to_ron())
    }
}

fn edit_label(edit: &Edit) -> String {
    match edit {
        Edit::AddNode { kind, .. } => format!("add {kind}"),
        Edit::RemoveNodes(ids) => format!("delete {}", ids.join(", ")),
        Edit::Connect { from, to } => {
            format!(
                "connect {}.{} → {}.{}",
                from.node, from.port, to.node, to.port
            )
        }
        Edit::Disconnect(port) => format!("disconnect {}.{}", port.node, port.port),
        Edit::DisconnectOutput(port) => format!("disconnect {}.{}", port.node, port.port),
        Edit::SetInput { input, .. } => format!("set {}.{}", input.node, input.port),
        Edit::Move(moves) => format!("move {} node(s)", moves.len()),
        Edit::Rename { from, to } => format!("rename {from} → {to}"),
        Edit::Paste(_) => "paste".to_owned(),
        Edit::SetName(_) => "rename workflow".to_owned(),
    }
}

/// The spec of the node `id` in `workflow`.
pub fn spec_of<'r>(
    workflow: &Workflow,
    registry: &'r Registry,
    id: &str,
) -> Result<&'r NodeSpec, EditError> {
    let node = workflow
        .nodes
        .0
        .get(id)
        .ok_or_else(|| EditError::UnknownNode(id.to_owned()))?;
    registry
        .get(&node.kind)
        .map(|n| n.spec())
        .ok_or_else(|| EditError::UnknownKind(node.kind.clone()))
}

/// A fresh node id derived from `kind` (`sample`, `sample2`, ...).
pub fn fresh_id(workflow: &Workflow, base: &str) -> String {
    let base: String = base
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == '_')
        .collect::<String>()
        .to_lowercase();
    let base = if base.is_empty() {
        "node".to_owned()
    } else {
        base
    };
    if !workflow.nodes.0.contains_key(&base) {
        return base;
    }
    (2..)
        .map(|n| format!("{base}{n}"))
        .find(|id| !workflow.nodes.0.contains_key(id))
        .unwrap_or(base)
}

/// Whether `from` can be reached from `start` by following links downstream.
fn reaches(workflow: &Workflow, start: &str, target: &str) -> bool {
    let mut consumers: HashMap<&str, Vec<&str>> = HashMap::new();
    for (id, node) in &workflow.nodes.0 {
        for value in node.inputs.0.values() {
            if let InputValue::Link(source, _) = value {
                consumers.entry(source.as_str()).or_default().push(id);
            }
        }
    }
    let mut stack = vec![start];
    let mut seen = HashSet::new();
    while let Some(id) = stack.pop() {
        if id == target {
            return true;
        }
        if seen.insert(id) {
            stack.extend(consumers.get(id).into_iter().flatten().copied());
        }
    }
    false
}

fn check_connect(
    workflow: &Workflow,
    registry: &Registry,
    from: &Port,
    to: &Port,
) -> Result<(), EditError> {
    let from_spec = spec_of(workflow, registry, &from.node)?;
    let to_spec = spec_of(workflow, registry, &to.node)?;
    let (_, output) =
        from_spec
            .output_named(&from.port)
            .ok_or_else(|| EditError::UnknownOutput {
                node: from.node.clone(),
                output: from.port.clone(),
            })?;
    let (_, input) = to_spec
        .input_named(&to.port)
        .ok_or_else(|| EditError::UnknownInput {
            node: to.node.clone(),
            input: to.port.clone(),
        })?;
    if !input.data_type.accepts(output.data_type) {
        return Err(EditError::Incompatible {
            output: format!("{}.{}", from.node, from.port),
            from_type: output.data_type.name(),
            input: format!("{}.{}", to.node, to.port),
            to_type: input.data_type.name(),
        });
    }
    if reaches(workflow, &to.node, &from.node) {
        return Err(EditError::Cycle {
            from: from.node.clone(),
            to: to.node.clone(),
        });
    }
    Ok(())
}

fn node_mut<'w>(workflow: &'w mut Workflow, id: &str) -> Result<&'w mut WorkflowNode, EditError> {
    workflow
        .nodes
        .0
        .get_mut(id)
        .ok_or_else(|| EditError::UnknownNode(id.to_owned()))
}

fn apply_to(
    workflow: &mut Workflow,
    edit: Edit,
    registry: &Registry,
) -> Result<Vec<String>, EditError> {
    match edit {
        Edit::AddNode {
            kind,
            pos,
            link_from,
            link_to,
        } => {
            let spec = registry
                .get(&kind)
                .map(|n| n.spec().clone())
                .ok_or_else(|| EditError::UnknownKind(kind.clone()))?;
            let id = fresh_id(workflow, &kind);
            workflow.nodes.0.insert(
                id.clone(),
                WorkflowNode {
                    kind,
                    inputs: Default::default(),
                    pos: Some(pos),
                },
            );
            if let Some(from) = link_from {
                let from_type = spec_of(workflow, registry, &from.node)?
                    .output_named(&from.port)
                    .map(|(_, o)| o.data_type);
                if let Some(input) = spec
                    .inputs
                    .iter()
                    .find(|i| from_type.is_some_and(|t| i.data_type.accepts(t)))
                {
                    let to = Port::new(&id, &input.name);
                    check_connect(workflow, registry, &from, &to)?;
                    node_mut(workflow, &id)?
                        .inputs
                        .0
                        .insert(to.port, InputValue::Link(from.node, from.port));
                }
            }
            if let Some(to) = link_to {
                let to_type = spec_of(workflow, registry, &to.node)?
                    .input_named(&to.port)
                    .map(|(_, i)| i.data_type);
                if let Some(output) = spec
                    .outputs
                    .iter()
                    .find(|o| to_type.is_some_and(|t| t.accepts(o.data_type)))
                {
                    let from = Port::new(&id, &output.name);
                    check_connect(workflow, registry, &from, &to)?;
                    node_mut(workflow, &to.node)?
                        .inputs
                        .0
                        .insert(to.port, InputValue::Link(from.node, from.port));
                }
            }
            Ok(vec![id])
        }
        Edit::RemoveNodes(ids) => {
            for id in &ids {
                workflow.nodes.0.shift_remove(id);
            }
            for node in workflow.nodes.0.values_mut() {
                node.inputs
                    .0
                    .retain(|_, v| !matches!(v, InputValue::Link(src, _) if ids.contains(src)));
            }
            Ok(Vec::new())
        }
        Edit::Connect { from, to } => {
            check_connect(workflow, registry, &from, &to)?;
            node_mut(workflow, &to.node)?
                .inputs
                .0
                .insert(to.port, InputValue::Link(from.node, from.port));
            Ok(Vec::new())
        }
        Edit::Disconnect(port) => {
            let node = node_mut(workflow, &port.node)?;
            if matches!(node.inputs.0.get(&port.port), Some(InputValue::Link(..))) {
                node.inputs.0.shift_remove(&port.port);
            }
            Ok(Vec::new())
        }
        Edit::DisconnectOutput(port) => {
            for node in workflow.nodes.0.values_mut() {
                node.inputs.0.retain(|_, v| {
                    !matches!(v, InputValue::Link(src, out) if *src == port.node && *out == port.port)
                });
            }
            Ok(Vec::new())
        }
        Edit::SetInput { input, value } => {
            let spec = spec_of(workflow, registry, &input.node)?;
            if spec.input_named(&input.port).is_none() {
                return Err(EditError::UnknownInput {
                    node: input.node.clone(),
                    input: input.port.clone(),
                });
            }
            if let Some(InputValue::Link(node, output)) = &value {
                check_connect(workflow, registry, &Port::new(node, output), &input)?;
            }
            let node = node_mut(workflow, &input.node)?;
            match value {
                Some(value) => {
                    node.inputs.0.insert(input.port, value);
                }
                None => {
                    node.inputs.0.shift_remove(&input.port);
                }
            }
            Ok(Vec::new())
        }
        Edit::Move(moves) => {
            for (id, pos) in moves {
                node_mut(workflow, &id)?.pos = Some(pos);
            }
            Ok(Vec::new())
        }
        Edit::Rename { from, to } => {
            let valid = !to.is_empty()
                && to
                    .chars()
                    .all(|c| c.is_alphanumeric() || c == '_' || c == '-');
            if !valid || (to != from && workflow.nodes.0.contains_key(&to)) {
                return Err(EditError::BadId(to));
            }
            let index = workflow
                .nodes
                .0
                .get_index_of(&from)
                .ok_or_else(|| EditError::UnknownNode(from.clone()))?;
            let node = workflow
                .nodes
                .0
                .shift_remove(&from)
                .ok_or_else(|| EditError::UnknownNode(from.clone()))?;
            workflow.nodes.0.shift_insert(index, to.clone(), node);
            for node in workflow.nodes.0.values_mut() {
                for value in node.inputs.0.values_mut() {
                    if let InputValue::Link(src, _) = value
                        && *src == from
                    {
                        src.clone_from(&to);
                    }
                }
            }
            Ok(Vec::new())
        }
        Edit::Paste(text) => paste(workflow, registry, &text),
        Edit::SetName(name) => {
            workflow.name = name;
            Ok(Vec::new())
        }
    }
}

fn paste(
    workflow: &mut Workflow,
    registry: &Registry,
    text: &str,
) -> Result<Vec<String>, EditError> {
    let fragment = Workflow::parse(text).map_err(|diagnostics| {
        EditError::BadPaste(
            diagnostics
                .first()
                .map(|d| d.message.clone())
                .unwrap_or_default(),
        )
    })?;
    if fragment.nodes.0.is_empty() {
        return Err(EditError::BadPaste("no nodes".to_owned()));
    }
    // Fresh ids first, so links inside the fragment follow their nodes.
    let mut renamed: HashMap<String, String> = HashMap::new();
    let mut taken = workflow.clone();
    for (id, node) in &fragment.nodes.0 {
        if registry.get(&node.kind).is_none() {
            return Err(EditError::UnknownKind(node.kind.clone()));
        }
        let fresh = fresh_id(&taken, id);
        taken.nodes.0.insert(fresh.clone(), node.clone());
        renamed.insert(id.clone(), fresh);
    }
    let mut created = Vec::new();
    for (id, mut node) in fragment.nodes.0 {
        let Some(fresh) = renamed.get(&id).cloned() else {
            continue;
        };
        node.pos = node.pos.map(|(x, y)| (x + PASTE_OFFSET, y + PASTE_OFFSET));
        // Links to copied nodes follow the copies; links to nodes outside the fragment stay
        // when that node exists here, and are dropped otherwise.
        node.inputs.0.retain(|_, value| match value {
            InputValue::Link(src, _) => {
                renamed.contains_key(src) || workflow.nodes.0.contains_key(src)
            }
            _ => true,
        });
        for value in node.inputs.0.values_mut() {
            if let InputValue::Link(src, _) = value
                && let Some(new) = renamed.get(src)
            {
                src.clone_from(new);
            }
        }
        workflow.nodes.0.insert(fresh.clone(), node);
        created.push(fresh);
    }
    Ok(created)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn add(doc: &mut Document, registry: &Registry, kind: &str) -> String {
        doc.apply(
            Edit::AddNode {
                kind: kind.to_owned(),
                pos: (0.0, 0.0),
                link_from: None,
                link_to: None,
            },
            registry,
        )
        .unwrap()
        .remove(0)
    }

    #[test]
    fn connect_checks_types_and_replaces_occupied_inputs() {
        let registry = veetance_nodes::registry().unwrap();
        let mut doc = Document::default();
        let load = add(&mut doc, &registry, "Load");
        let load2 = add(&mut doc, &registry, "Load");
        let sample = add(&mut doc, &registry, "Sample");
        let bad = doc.apply(
            Edit::Connect {
                from: Port::new(&load, "vae"),
                to: Port::new(&sample, "model"),
            },
            &registry,
        );
        assert!(
            matches!(bad, Err(EditError::Incompatible { .. })),
            "{bad:?}"
        );
        for source in [&load, &load2] {
            doc.apply(
                Edit::Connect {
                    from: Port::new(source, "model"),
                    to: Port::new(&sample, "model"),
                },
                &registry,
            )
            .unwrap();
        }
        assert_eq!(
            doc.workflow().nodes.0[&sample].inputs.0["model"],
            InputValue::Link(load2.clone(), "model".to_owned())
        );
        doc.undo().unwrap();
        assert_eq!(
            doc.workflow().nodes.0[&sample].inputs.0["model"],
            InputValue::Link(load, "model".to_owned())
        );
    }

    #[test]
    fn set_input_merges_into_one_undo_step() {
        let registry = veetance_nodes::registry().unwrap();
        let mut doc = Document::default();
        let sample = add(&mut doc, &registry, "Sample");
        for seed in 1..5 {
            doc.apply(
                Edit::SetInput {
                    input: Port::new(&sample, "seed"),
                    value: Some(InputValue::Int(seed)),
                },
                &registry,
            )
            .unwrap();
        }
        doc.undo().unwrap();
        assert!(
            !doc.workflow().nodes.0[&sample]
                .inputs
                .0
                .contains_key("seed")
        );
        doc.redo().unwrap();
        assert_eq!(
            doc.workflow().nodes.0[&sample].inputs.0["seed"],
            InputValue::Int(4)
        );
    }

    #[test]
    fn typing_a_name_is_one_undo_step() {
        let registry = veetance_nodes::registry().unwrap();
        let mut doc = Document::default();
        for name in ["g", "go", "gol"] {
            doc.apply(Edit::SetName(name.to_owned()), &registry)
                .unwrap();
        }
        doc.undo().unwrap();
        assert_eq!(doc.workflow().name, "untitled");
        assert!(doc.undo().is_err());
    }

    #[test]
    fn copy_paste_gives_fresh_ids_and_relinks() {
        let registry = veetance_nodes::registry().unwrap();
        let mut doc = Document::default();
        let load = add(&mut doc, &registry, "Load");
        let encode = add(&mut doc, &registry, "Encode");
        doc.apply(
            Edit::Connect {
                from: Port::new(&load, "text_encoder"),
                to: Port::new(&encode, "text_encoder"),
            },
            &registry,
        )
        .unwrap();
        let text = doc.copy(&[load.clone(), encode.clone()]).unwrap();
        let created = doc.apply(Edit::Paste(text), &registry).unwrap();
        assert_eq!(created, vec!["load2".to_owned(), "encode2".to_owned()]);
        assert_eq!(
            doc.workflow().nodes.0["encode2"].inputs.0["text_encoder"],
            InputValue::Link("load2".to_owned(), "text_encoder".to_owned())
        );
        assert!(doc.apply(Edit::Paste("garbage".into()), &registry).is_err());
    }

    #[test]
    fn cycles_are_refused() {
        let registry = veetance_nodes::registry().unwrap();
        let mut doc = Document::default();
        let sage = add(&mut doc, &registry, "SageAttention");
        let sage2 = add(&mut doc, &registry, "SageAttention");
        doc.apply(
            Edit::Connect {
                from: Port::new(&sage, "model"),
                to: Port::new(&sage2, "model"),
            },
            &registry,
        )
        .unwrap();
        let result = doc.apply(
            Edit::Connect {
                from: Port::new(&sage2, "model"),
                to: Port::new(&sage, "model"),
            },
            &registry,
        );
        assert!(matches!(result, Err(EditError::Cycle { .. })), "{result:?}");
    }
}
