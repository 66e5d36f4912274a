//! Validation: a parsed [`Workflow`] plus a [`Registry`] become a [`Graph`] that is known to
//! run, or a list of every problem found.
//!
//! Validation never stops at the first problem and never fails outright: it returns the graph
//! (only when there are no errors) together with all diagnostics, so the CLI can print them
//! all and the editor can draw them on the nodes. Nothing here recurses over graph depth.

use std::collections::HashMap;
use std::sync::Arc;

use petgraph::Direction;
use petgraph::algo::kosaraju_scc;
use petgraph::graph::{DiGraph, NodeIndex};

use crate::diagnostic::{Code, Diagnostic, Span};
use crate::node::Node;
use crate::registry::Registry;
use crate::spec::InputSpec;
use crate::suggest::did_you_mean;
use crate::value::{DataType, Literal, Value};
use crate::workflow::{FORMAT_VERSION, InputValue, SourceMap, Workflow};

/// Where an input of a validated node gets its value.
#[derive(Clone, Debug)]
pub enum Slot {
    /// A literal from the file or the spec's default.
    Literal(Value),
    /// Output number `output` of node number `from`.
    Link {
        /// Index of the source node in [`Graph`].
        from: usize,
        /// Index of the output in the source node's spec.
        output: usize,
    },
    /// An optional input left empty.
    Empty,
}

/// One node of a validated graph.
#[derive(Clone)]
pub struct GraphNode {
    /// The node id from the file.
    pub id: Arc<str>,
    /// The node kind.
    pub kind: Arc<str>,
    /// The implementation.
    pub node: Arc<dyn Node>,
    /// One slot per spec input, in spec order.
    pub inputs: Vec<Slot>,
}

impl std::fmt::Debug for GraphNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GraphNode")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("inputs", &self.inputs)
            .finish()
    }
}

/// A workflow that validated without errors: acyclic, every link type-checked, every
/// required input set. Only [`validate`] makes one.
#[derive(Clone, Debug)]
pub struct Graph {
    pub(crate) nodes: Vec<GraphNode>,
    pub(crate) order: Vec<usize>,
    pub(crate) index: HashMap<Arc<str>, usize>,
}

impl Graph {
    /// Nodes in document order.
    pub fn nodes(&self) -> &[GraphNode] {
        &self.nodes
    }

    /// Node indices in a topological order (every node after the nodes it reads from).
    pub fn topological_order(&self) -> &[usize] {
        &self.order
    }

    /// The index of node `id`.
    pub fn index_of(&self, id: &str) -> Option<usize> {
        self.index.get(id).copied()
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the graph has no nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
}

/// The result of validation.
#[derive(Debug)]
pub struct Validation {
    /// The graph, present only when there are no errors.
    pub graph: Option<Graph>,
    /// Every problem found, in document order.
    pub diagnostics: Vec<Diagnostic>,
}

impl Validation {
    /// Whether any diagnostic is an error.
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }
}

/// Where a diagnostic points, resolved to a span only when there is source text to show.
#[derive(Clone)]
enum Place {
    Version,
    Node(String),
    Kind(String),
    InputKey(String, String),
    InputValue(String, String),
}

/// Validates `workflow` against `registry`. `source` is the text it was parsed from, if any,
/// used to point diagnostics at lines and columns.
pub fn validate(workflow: &Workflow, registry: &Registry, source: Option<&str>) -> Validation {
    let mut found: Vec<(Diagnostic, Place)> = Vec::new();
    if workflow.version != FORMAT_VERSION {
        found.push((
            Diagnostic::error(
                Code::UnsupportedVersion,
                format!(
                    "unsupported workflow format version {}; this build reads version {FORMAT_VERSION}",
                    workflow.version
                ),
            )
            .help("save the workflow with a matching veetance, or update veetance"),
            Place::Version,
        ));
    }

    let nodes = &workflow.nodes.0;
    let index: HashMap<&str, usize> = nodes
        .keys()
        .enumerate()
        .map(|(idx, id)| (id.as_str(), idx))
        .collect();
    let implementations: Vec<Option<&Arc<dyn Node>>> = nodes
        .iter()
        .map(|(id, entry)| {
            let found_node = registry.get(&entry.kind);
            if found_node.is_none() {
                let mut diagnostic = Diagnostic::error(
                    Code::UnknownNodeKind,
                    format!("unknown node kind `{}`", entry.kind),
                )
                .node(id)
                .label("no node of this kind");
                if let Some(suggestion) = did_you_mean(&entry.kind, registry.kinds()) {
                    diagnostic = diagnostic.help(format!("did you mean `{suggestion}`?"));
                } else {
                    diagnostic = diagnostic.help("`veetance nodes` lists every kind");
                }
                found.push((diagnostic, Place::Kind(id.clone())));
            }
            found_node
        })
        .collect();

    let mut edges: Vec<(usize, usize)> = Vec::new();
    let mut slots: Vec<Vec<Slot>> = Vec::with_capacity(nodes.len());
    for ((id, entry), node) in nodes.iter().zip(&implementations) {
        let Some(node) = node else {
            slots.push(Vec::new());
            continue;
        };
        let spec = node.spec();
        let this_idx = index.get(id.as_str()).copied().unwrap_or(0);
        for name in entry.inputs.0.keys() {
            if spec.input_named(name).is_none() {
                let mut diagnostic = Diagnostic::error(
                    Code::UnknownInput,
                    format!("`{}` has no input `{name}`", spec.kind),
                )
                .node(id)
                .input(name)
                .label("unknown input");
                let names = spec.inputs.iter().map(|i| i.name.as_str());
                diagnostic = match did_you_mean(name, names.clone()) {
                    Some(suggestion) => diagnostic.help(format!("did you mean `{suggestion}`?")),
                    None => diagnostic.help(format!(
                        "`{}` has the inputs: {}",
                        spec.kind,
                        names.collect::<Vec<_>>().join(", ")
                    )),
                };
                found.push((diagnostic, Place::InputKey(id.clone(), name.clone())));
            }
        }
        let mut node_slots = Vec::with_capacity(spec.inputs.len());
        for input in &spec.inputs {
            let slot = match entry.inputs.0.get(&input.name) {
                None => {
                    if input.is_required() {
                        found.push((missing_input(id, input, registry), Place::Node(id.clone())));
                    }
                    match &input.default {
                        Some(default) => Slot::Literal(Value::from(default)),
                        None => Slot::Empty,
                    }
                }
                Some(InputValue::Link(from_id, output_name)) => {
                    match check_link(id, input, from_id, output_name, &index, &implementations) {
                        Ok((from, output)) => {
                            edges.push((from, this_idx));
                            Slot::Link { from, output }
                        }
                        Err(Some(diagnostic)) => {
                            found.push((
                                *diagnostic,
                                Place::InputValue(id.clone(), input.name.clone()),
                            ));
                            Slot::Empty
                        }
                        Err(None) => Slot::Empty,
                    }
                }
                Some(value) => match check_literal(id, input, value) {
                    Ok(literal) => Slot::Literal(Value::from(&literal)),
                    Err(diagnostic) => {
                        found.push((
                            *diagnostic,
                            Place::InputValue(id.clone(), input.name.clone()),
                        ));
                        Slot::Empty
                    }
                },
            };
            node_slots.push(slot);
        }
        for group in &spec.one_of {
            let given = group.iter().any(|name| entry.inputs.0.contains_key(name));
            if !given {
                let names: Vec<String> = group.iter().map(|n| format!("`{n}`")).collect();
                found.push((
                    Diagnostic::error(
                        Code::MissingInput,
                        format!("`{}` needs one of {}", spec.kind, names.join(", ")),
                    )
                    .node(id)
                    .label(format!("needs one of {}", names.join(", ")))
                    .help("link at least one of them"),
                    Place::Node(id.clone()),
                ));
            }
        }
        slots.push(node_slots);
    }

    let mut structure: DiGraph<(), ()> = DiGraph::with_capacity(nodes.len(), edges.len());
    for _ in 0..nodes.len() {
        structure.add_node(());
    }
    for (from, to) in &edges {
        structure.add_edge(NodeIndex::new(*from), NodeIndex::new(*to), ());
    }
    let ids: Vec<&String> = nodes.keys().collect();
    let order = kahn_order(&structure);
    let mut cycles: Vec<Vec<usize>> = Vec::new();
    if order.len() < nodes.len() {
        // Only when something is cyclic: name the strongly connected components. Kosaraju in
        // petgraph is iterative, so long chains cannot overflow the stack.
        cycles = kosaraju_scc(&structure)
            .into_iter()
            .filter(|component| {
                component.len() > 1
                    || component
                        .first()
                        .is_some_and(|n| structure.contains_edge(*n, *n))
            })
            .map(|component| {
                let mut members: Vec<usize> = component.iter().map(|n| n.index()).collect();
                members.sort_unstable();
                members
            })
            .collect();
        cycles.sort();
    }
    for members in cycles {
        let names: Vec<String> = members
            .iter()
            .filter_map(|idx| ids.get(*idx))
            .map(|id| format!("`{id}`"))
            .collect();
        let first = members
            .first()
            .and_then(|idx| ids.get(*idx))
            .map(|id| id.to_string())
            .unwrap_or_default();
        found.push((
            Diagnostic::error(
                Code::Cycle,
                format!("links form a cycle through {}", names.join(", ")),
            )
            .node(&first)
            .label("this node depends on itself through its links")
            .help("remove one of the links in the cycle"),
            Place::Node(first),
        ));
    }

    let has_errors = found.iter().any(|(d, _)| d.is_error());
    let diagnostics = attach_spans(found, source);
    if has_errors {
        return Validation {
            graph: None,
            diagnostics,
        };
    }
    let mut graph_nodes = Vec::with_capacity(nodes.len());
    let mut graph_index = HashMap::with_capacity(nodes.len());
    for (((id, entry), node), inputs) in nodes.iter().zip(implementations).zip(slots) {
        let Some(node) = node else { continue };
        let id: Arc<str> = Arc::from(id.as_str());
        graph_index.insert(id.clone(), graph_nodes.len());
        graph_nodes.push(GraphNode {
            id,
            kind: Arc::from(entry.kind.as_str()),
            node: node.clone(),
            inputs,
        });
    }
    Validation {
        graph: Some(Graph {
            nodes: graph_nodes,
            order,
            index: graph_index,
        }),
        diagnostics,
    }
}

fn missing_input(id: &str, input: &InputSpec, registry: &Registry) -> Diagnostic {
    let diagnostic = Diagnostic::error(
        Code::MissingInput,
        format!(
            "required input `{}` ({}) is not set",
            input.name, input.data_type
        ),
    )
    .node(id)
    .input(&input.name)
    .label(format!("needs `{}`", input.name));
    if input.data_type.is_literal() {
        let example = match input.data_type {
            DataType::INT => "Int(0)",
            DataType::FLOAT => "Float(0.0)",
            DataType::BOOL => "Bool(true)",
            _ => "Text(\"...\")",
        };
        diagnostic.help(format!(
            "add `\"{}\": {example}` to its inputs, or link it",
            input.name
        ))
    } else {
        let producers = producers_of(registry, input.data_type);
        diagnostic.help(format!(
            "link it to {} {} output, e.g. `\"{}\": Link(\"node_id\", \"output\")`{}",
            article(input.data_type),
            input.data_type,
            input.name,
            if producers.is_empty() {
                String::new()
            } else {
                format!(
                    "; nodes that output {}: {}",
                    input.data_type,
                    producers.join(", ")
                )
            }
        ))
    }
}

fn producers_of(registry: &Registry, data_type: DataType) -> Vec<String> {
    registry
        .nodes_sorted()
        .into_iter()
        .flat_map(|node| {
            let spec = node.spec();
            spec.outputs
                .iter()
                .filter(move |o| o.data_type == data_type)
                .map(move |o| format!("{}.{}", spec.kind, o.name))
        })
        .collect()
}

/// Checks a link; `Err(None)` means the problem is already reported elsewhere (the source
/// node's kind is unknown).
fn check_link(
    id: &str,
    input: &InputSpec,
    from_id: &str,
    output_name: &str,
    index: &HashMap<&str, usize>,
    implementations: &[Option<&Arc<dyn Node>>],
) -> Result<(usize, usize), Option<Box<Diagnostic>>> {
    let Some(&from) = index.get(from_id) else {
        let mut diagnostic = Diagnostic::error(
            Code::UnknownLinkNode,
            format!(
                "input `{}` links to node `{from_id}`, which does not exist",
                input.name
            ),
        )
        .node(id)
        .input(&input.name)
        .label("no such node");
        if let Some(suggestion) = did_you_mean(from_id, index.keys().copied()) {
            diagnostic = diagnostic.help(format!("did you mean `{suggestion}`?"));
        }
        return Err(Some(Box::new(diagnostic)));
    };
    let Some(Some(from_node)) = implementations.get(from) else {
        return Err(None);
    };
    let from_spec = from_node.spec();
    let Some((output, output_spec)) = from_spec.output_named(output_name) else {
        let names: Vec<&str> = from_spec.outputs.iter().map(|o| o.name.as_str()).collect();
        let help = match did_you_mean(output_name, names.iter().copied()) {
            Some(suggestion) => format!("did you mean `{suggestion}`?"),
            None if names.is_empty() => format!("`{}` has no outputs", from_spec.kind),
            None => format!("`{}` has the outputs: {}", from_spec.kind, names.join(", ")),
        };
        return Err(Some(Box::new(
            Diagnostic::error(
                Code::UnknownLinkOutput,
                format!(
                    "input `{}` links to output `{output_name}` of `{from_id}` ({}), which has no such output",
                    input.name, from_spec.kind
                ),
            )
            .node(id)
            .input(&input.name)
            .label("no such output")
            .help(help),
        )));
    };
    if !input.data_type.accepts(output_spec.data_type) {
        return Err(Some(Box::new(
            Diagnostic::error(
                Code::TypeMismatch,
                format!(
                    "type mismatch: input `{}` takes {} but `{from_id}.{output_name}` is {}",
                    input.name, input.data_type, output_spec.data_type
                ),
            )
            .node(id)
            .input(&input.name)
            .label(format!(
                "{} here, {} expected",
                output_spec.data_type, input.data_type
            ))
            .help(format!(
                "link {} {} output instead",
                article(input.data_type),
                input.data_type
            )),
        )));
    }
    Ok((from, output))
}

fn check_literal(
    id: &str,
    input: &InputSpec,
    value: &InputValue,
) -> Result<Literal, Box<Diagnostic>> {
    let Some(literal) = value.literal() else {
        return Err(Box::new(
            Diagnostic::error(Code::Syntax, "not a literal").node(id),
        ));
    };
    if !input.data_type.is_literal() {
        return Err(Box::new(
            Diagnostic::error(
                Code::WrongLiteralType,
                format!(
                    "input `{}` takes {} {}, which only a link can provide, not a literal",
                    input.name,
                    article(input.data_type),
                    input.data_type
                ),
            )
            .node(id)
            .input(&input.name)
            .label(format!("{} literal here", value.variant_name()))
            .help(format!(
                "link it: `Link(\"node_id\", \"output\")` to {} {} output",
                article(input.data_type),
                input.data_type
            )),
        ));
    }
    if literal.data_type() != input.data_type {
        let help = match (&literal, input.data_type) {
            (Literal::Int(v), DataType::FLOAT) => format!("write `Float({v}.0)`"),
            (Literal::Float(v), DataType::INT) if v.fract() == 0.0 => {
                format!("write `Int({})`", *v as i64)
            }
            _ => format!(
                "write {} {}(...) value",
                article(input.data_type),
                input.data_type
            ),
        };
        return Err(Box::new(
            Diagnostic::error(
                Code::WrongLiteralType,
                format!(
                    "input `{}` takes {} but the value is {}",
                    input.name,
                    input.data_type,
                    literal.data_type()
                ),
            )
            .node(id)
            .input(&input.name)
            .label(format!("{} here", literal.data_type()))
            .help(help),
        ));
    }
    let number = match &literal {
        Literal::Int(v) => Some(*v as f64),
        Literal::Float(v) => Some(*v),
        _ => None,
    };
    if let Some(number) = number {
        let below = input.min.is_some_and(|min| number < min);
        let above = input.max.is_some_and(|max| number > max);
        if below || above || number.is_nan() || number.is_infinite() {
            let range = match (input.min, input.max) {
                (Some(min), Some(max)) => {
                    format!("{} to {}", fmt_bound(min, input), fmt_bound(max, input))
                }
                (Some(min), None) => format!("at least {}", fmt_bound(min, input)),
                (None, Some(max)) => format!("at most {}", fmt_bound(max, input)),
                (None, None) => "a finite number".to_owned(),
            };
            return Err(Box::new(
                Diagnostic::error(
                    Code::OutOfRange,
                    format!(
                        "input `{}` is {literal}, outside its range ({range})",
                        input.name
                    ),
                )
                .node(id)
                .input(&input.name)
                .label("out of range")
                .help(format!("use a value from {range}")),
            ));
        }
    }
    if let Literal::Text(text) = &literal
        && !input.choices.is_empty()
        && !input.choices.iter().any(|c| c == text)
    {
        let mut diagnostic = Diagnostic::error(
            Code::NotAChoice,
            format!(
                "input `{}` is \"{text}\", not one of its choices",
                input.name
            ),
        )
        .node(id)
        .input(&input.name)
        .label("not a choice");
        diagnostic = match did_you_mean(text, input.choices.iter().map(String::as_str)) {
            Some(suggestion) => diagnostic.help(format!("did you mean \"{suggestion}\"?")),
            None => diagnostic.help(format!("choose one of: {}", input.choices.join(", "))),
        };
        return Err(Box::new(diagnostic));
    }
    Ok(literal)
}

fn fmt_bound(bound: f64, input: &InputSpec) -> String {
    if input.data_type == DataType::INT {
        format!("{}", bound as i64)
    } else {
        format!("{bound:?}")
    }
}

fn attach_spans(found: Vec<(Diagnostic, Place)>, source: Option<&str>) -> Vec<Diagnostic> {
    let Some(source) = source.filter(|_| !found.is_empty()) else {
        return found.into_iter().map(|(d, _)| d).collect();
    };
    let map = SourceMap::build(source);
    let lines = crate::diagnostic::LineIndex::new(source);
    found
        .into_iter()
        .map(|(diagnostic, place)| {
            let range = match &place {
                Place::Version => source
                    .find("version")
                    .map(|start| start..start + "version".len()),
                Place::Node(node) => map.node(node),
                Place::Kind(node) => map.node_kind(node),
                Place::InputKey(node, input) => map.input_key(node, input),
                Place::InputValue(node, input) => map.input_value(node, input),
            };
            let span = range.map(|range| Span::of_indexed(source, &lines, range));
            diagnostic.span(span)
        })
        .collect()
}

fn article(data_type: DataType) -> &'static str {
    if data_type.name().starts_with(['A', 'E', 'I', 'O', 'U']) {
        "an"
    } else {
        "a"
    }
}

/// Kahn's algorithm, taking ready nodes in document order so the order is deterministic.
/// Returns fewer than all nodes when there is a cycle.
fn kahn_order(structure: &DiGraph<(), ()>) -> Vec<usize> {
    let n_nodes = structure.node_count();
    let mut waiting_on: Vec<usize> = (0..n_nodes)
        .map(|idx| {
            structure
                .neighbors_directed(NodeIndex::new(idx), Direction::Incoming)
                .count()
        })
        .collect();
    let mut ready: std::collections::BinaryHeap<std::cmp::Reverse<usize>> = waiting_on
        .iter()
        .enumerate()
        .filter(|(_, count)| **count == 0)
        .map(|(idx, _)| std::cmp::Reverse(idx))
        .collect();
    let mut order = Vec::with_capacity(n_nodes);
    while let Some(std::cmp::Reverse(idx)) = ready.pop() {
        order.push(idx);
        for next in structure.neighbors_directed(NodeIndex::new(idx), Direction::Outgoing) {
            if let Some(count) = waiting_on.get_mut(next.index()) {
                *count -= 1;
                if *count == 0 {
                    ready.push(std::cmp::Reverse(next.index()));
                }
            }
        }
    }
    order
}
