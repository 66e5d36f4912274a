//! `--set node.input=value` overrides, parsed by the target input's type.

use crate::registry::Registry;
use crate::value::DataType;
use crate::workflow::{InputValue, Workflow};

/// Why an override could not be applied.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum OverrideError {
    /// Not of the form `node.input=value`.
    #[error("`{0}` is not of the form node.input=value")]
    Syntax(String),
    /// No node with that id; the last field is a hint (a close id, or the ids there are).
    #[error("`--set {0}`: the workflow has no node `{1}`; {2}")]
    UnknownNode(String, String, String),
    /// The node's kind is unknown, so its inputs are too.
    #[error("`--set {0}`: node `{1}` has an unknown kind `{2}`")]
    UnknownKind(String, String, String),
    /// The kind has no such input; the last field is a hint (a close name, or the inputs).
    #[error("`--set {0}`: `{1}` has no input `{2}`; {3}")]
    UnknownInput(String, String, String, String),
    /// The value does not parse as the input's type.
    #[error("`--set {0}`: `{1}` is not a valid {2}")]
    BadValue(String, String, DataType),
}

/// "did you mean `x`?" when one name is close to `word`, else the whole list.
fn hint(word: &str, names: &[&str], list_intro: &str) -> String {
    match crate::suggest::did_you_mean(word, names.iter().copied()) {
        Some(close) => format!("did you mean `{close}`?"),
        None => format!("{list_intro}: {}", names.join(", ")),
    }
}

/// Sets one input of `workflow` from `assignment` (`node.input=value`).
///
/// The value is read as the input's type (`7`, `0.5`, `true`, or any text). A value written in
/// the file syntax (`Link("encode", "conditioning")`, `Float(2.0)`) is taken as written.
pub fn apply_override(
    workflow: &mut Workflow,
    registry: &Registry,
    assignment: &str,
) -> Result<(), OverrideError> {
    let syntax = || OverrideError::Syntax(assignment.to_owned());
    let (target, raw) = assignment.split_once('=').ok_or_else(syntax)?;
    let (node_id, input_name) = target.trim().split_once('.').ok_or_else(syntax)?;
    if node_id.is_empty() || input_name.is_empty() {
        return Err(syntax());
    }
    if !workflow.nodes.0.contains_key(node_id) {
        let ids: Vec<&str> = workflow.nodes.0.keys().map(String::as_str).collect();
        return Err(OverrideError::UnknownNode(
            assignment.to_owned(),
            node_id.to_owned(),
            hint(node_id, &ids, "its nodes are"),
        ));
    }
    let node = workflow
        .nodes
        .0
        .get_mut(node_id)
        .ok_or_else(|| OverrideError::Syntax(assignment.to_owned()))?;
    let implementation = registry.get(&node.kind).ok_or_else(|| {
        OverrideError::UnknownKind(assignment.to_owned(), node_id.to_owned(), node.kind.clone())
    })?;
    let spec = implementation.spec();
    let Some((_, input)) = spec.input_named(input_name) else {
        let names: Vec<&str> = spec.inputs.iter().map(|i| i.name.as_str()).collect();
        return Err(OverrideError::UnknownInput(
            assignment.to_owned(),
            spec.kind.clone(),
            input_name.to_owned(),
            hint(input_name, &names, "its inputs are"),
        ));
    };
    let bad = || OverrideError::BadValue(assignment.to_owned(), raw.to_owned(), input.data_type);
    let written_in_file_syntax = ["Int(", "Float(", "Bool(", "Text(", "Link("]
        .iter()
        .any(|prefix| raw.trim_start().starts_with(prefix));
    let value = if written_in_file_syntax {
        ron::from_str::<InputValue>(raw).map_err(|_| bad())?
    } else {
        match input.data_type {
            DataType::INT => InputValue::Int(raw.trim().parse().map_err(|_| bad())?),
            DataType::FLOAT => InputValue::Float(raw.trim().parse().map_err(|_| bad())?),
            DataType::BOOL => InputValue::Bool(raw.trim().parse().map_err(|_| bad())?),
            DataType::TEXT => InputValue::Text(raw.to_owned()),
            _ => return Err(bad()),
        }
    };
    node.inputs.0.insert(input_name.to_owned(), value);
    Ok(())
}
