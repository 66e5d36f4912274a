//! The workflow file format (RON): types, parsing with positioned errors, and deterministic
//! saving.
//!
//! This is the engine's only serialized type. Saving is done by hand rather than by a generic
//! serializer so the output is stable byte for byte: nodes and inputs in document order,
//! floats in Rust's shortest round-trip notation, one item per line.

use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::ops::Range;

use indexmap::IndexMap;
use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};

use crate::diagnostic::{Code, Diagnostic, Span};
use crate::suggest::did_you_mean;
use crate::value::Literal;

/// The format version this build reads and writes.
pub const FORMAT_VERSION: u32 = 1;

/// A workflow file.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(rename = "Workflow", deny_unknown_fields)]
pub struct Workflow {
    /// Format version; see [`FORMAT_VERSION`].
    pub version: u32,
    /// A name for people.
    #[serde(default)]
    pub name: String,
    /// Nodes by id, in document order.
    #[serde(default)]
    pub nodes: NodeMap,
}

/// Nodes by id, in document order; duplicate ids are a parse error.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct NodeMap(pub IndexMap<String, WorkflowNode>);

/// One node in a workflow file.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(rename = "Node", deny_unknown_fields)]
pub struct WorkflowNode {
    /// The node kind (`"Sample"`).
    pub kind: String,
    /// Inputs set in the file, by port name, in document order.
    #[serde(default)]
    pub inputs: InputMap,
    /// Canvas position; ignored by the executor.
    #[serde(default)]
    pub pos: Option<(f64, f64)>,
}

/// Inputs by port name, in document order; duplicate names are a parse error.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct InputMap(pub IndexMap<String, InputValue>);

/// The value of one input in a workflow file.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub enum InputValue {
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// A boolean.
    Bool(bool),
    /// A string.
    Text(String),
    /// The output `.1` of node `.0`.
    Link(String, String),
}

impl InputValue {
    /// The literal, unless this is a link.
    pub fn literal(&self) -> Option<Literal> {
        match self {
            InputValue::Int(v) => Some(Literal::Int(*v)),
            InputValue::Float(v) => Some(Literal::Float(*v)),
            InputValue::Bool(v) => Some(Literal::Bool(*v)),
            InputValue::Text(v) => Some(Literal::Text(v.clone())),
            InputValue::Link(..) => None,
        }
    }

    /// The variant name as written in files.
    pub fn variant_name(&self) -> &'static str {
        match self {
            InputValue::Int(_) => "Int",
            InputValue::Float(_) => "Float",
            InputValue::Bool(_) => "Bool",
            InputValue::Text(_) => "Text",
            InputValue::Link(..) => "Link",
        }
    }
}

impl From<Literal> for InputValue {
    fn from(literal: Literal) -> InputValue {
        match literal {
            Literal::Int(v) => InputValue::Int(v),
            Literal::Float(v) => InputValue::Float(v),
            Literal::Bool(v) => InputValue::Bool(v),
            Literal::Text(v) => InputValue::Text(v),
        }
    }
}

struct OrderedMapVisitor<V>(&'static str, std::marker::PhantomData<V>);

impl<'de, V: Deserialize<'de>> Visitor<'de> for OrderedMapVisitor<V> {
    type Value = IndexMap<String, V>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a map of {}", self.0)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
        let mut map = IndexMap::new();
        while let Some(key) = access.next_key::<String>()? {
            if map.contains_key(&key) {
                return Err(de::Error::custom(format!(
                    "duplicate {} `{key}`",
                    self.0.trim_end_matches('s')
                )));
            }
            let value = access.next_value::<V>()?;
            map.insert(key, value);
        }
        Ok(map)
    }
}

impl<'de> Deserialize<'de> for NodeMap {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<NodeMap, D::Error> {
        deserializer
            .deserialize_map(OrderedMapVisitor("node ids", std::marker::PhantomData))
            .map(NodeMap)
    }
}

impl<'de> Deserialize<'de> for InputMap {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<InputMap, D::Error> {
        deserializer
            .deserialize_map(OrderedMapVisitor("inputs", std::marker::PhantomData))
            .map(InputMap)
    }
}

impl Workflow {
    /// An empty workflow of the current format version.
    pub fn new(name: &str) -> Workflow {
        Workflow {
            version: FORMAT_VERSION,
            name: name.to_owned(),
            nodes: NodeMap::default(),
        }
    }

    /// Parses RON text. On failure the diagnostics point at the offending line and column.
    pub fn parse(source: &str) -> Result<Workflow, Vec<Diagnostic>> {
        let options = ron::Options::default()
            .with_default_extension(ron::extensions::Extensions::IMPLICIT_SOME);
        options
            .from_str::<Workflow>(source)
            .map_err(|err| vec![parse_diagnostic(source, &err)])
    }

    /// Saves as RON text: deterministic, and [`Workflow::parse`] gives back an equal workflow.
    pub fn to_ron(&self) -> String {
        let mut out = String::new();
        out.push_str("Workflow(\n");
        let _ = writeln!(out, "    version: {},", self.version);
        let _ = writeln!(out, "    name: {},", quote(&self.name));
        out.push_str("    nodes: {\n");
        for (id, node) in &self.nodes.0 {
            let _ = writeln!(out, "        {}: Node(", quote(id));
            let _ = writeln!(out, "            kind: {},", quote(&node.kind));
            if !node.inputs.0.is_empty() {
                out.push_str("            inputs: {\n");
                for (name, value) in &node.inputs.0 {
                    let _ = writeln!(
                        out,
                        "                {}: {},",
                        quote(name),
                        emit_value(value)
                    );
                }
                out.push_str("            },\n");
            }
            if let Some((x, y)) = node.pos {
                let _ = writeln!(
                    out,
                    "            pos: ({}, {}),",
                    emit_float(x),
                    emit_float(y)
                );
            }
            out.push_str("        ),\n");
        }
        out.push_str("    },\n)\n");
        out
    }
}

fn quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for ch in text.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            ch if ch.is_control() => {
                let _ = write!(out, "\\u{{{:x}}}", ch as u32);
            }
            ch => out.push(ch),
        }
    }
    out.push('"');
    out
}

/// Shortest notation that reads back to the same f64, always recognisably a float.
fn emit_float(value: f64) -> String {
    if value.is_nan() {
        "NaN".to_owned()
    } else if value.is_infinite() {
        if value > 0.0 {
            "inf".to_owned()
        } else {
            "-inf".to_owned()
        }
    } else {
        // `{:?}` prints the shortest round-trip form and keeps a `.0` on whole numbers.
        format!("{value:?}")
    }
}

fn emit_value(value: &InputValue) -> String {
    match value {
        InputValue::Int(v) => format!("Int({v})"),
        InputValue::Float(v) => format!("Float({})", emit_float(*v)),
        InputValue::Bool(v) => format!("Bool({v})"),
        InputValue::Text(v) => format!("Text({})", quote(v)),
        InputValue::Link(node, output) => format!("Link({}, {})", quote(node), quote(output)),
    }
}

fn parse_diagnostic(source: &str, err: &ron::error::SpannedError) -> Diagnostic {
    use ron::error::Error as E;
    let start = &err.span.start;
    let end = &err.span.end;
    let len_chars = if end.line == start.line {
        end.col.saturating_sub(start.col)
    } else {
        1
    };
    // A missing comma is found at the next entry's first token, often on the next line; the
    // comma belongs at the end of the entry before it, so point there.
    if matches!(err.code, E::ExpectedComma)
        && let Some((line, col)) = end_of_previous_entry(source, start.line, start.col)
    {
        return Diagnostic::error(Code::Syntax, "expected a comma after this".to_owned())
            .span(Some(Span::at_line_column(source, line, col, 1)))
            .help(format!(
                "add `,` at the end of line {line}: entries are separated by commas (the next \
                 one starts on line {})",
                start.line
            ));
    }
    let span = Some(Span::at_line_column(
        source, start.line, start.col, len_chars,
    ));
    let (code, message, help) = match &err.code {
        E::NoSuchStructField {
            expected,
            found,
            outer,
        } => {
            let place = outer.as_deref().unwrap_or("this item");
            let help = did_you_mean(found, expected.iter().copied())
                .map(|s| format!("did you mean `{s}`?"))
                .unwrap_or_else(|| format!("{place} has the fields: {}", expected.join(", ")));
            (
                Code::UnknownField,
                format!("unknown field `{found}` in {place}"),
                Some(help),
            )
        }
        E::MissingStructField { field, outer } => (
            Code::MissingField,
            format!(
                "missing field `{field}` in {}",
                outer.as_deref().unwrap_or("this item")
            ),
            None,
        ),
        E::NoSuchEnumVariant {
            expected, found, ..
        } => {
            let help = did_you_mean(found, expected.iter().copied())
                .map(|s| format!("did you mean `{s}`?"))
                .unwrap_or_else(|| format!("write one of: {}", expected.join(", ")));
            (
                Code::Syntax,
                format!("unknown value kind `{found}`"),
                Some(help),
            )
        }
        E::Message(message) if message.starts_with("duplicate ") => {
            (Code::Duplicate, message.clone(), None)
        }
        other => (Code::Syntax, other.to_string(), None),
    };
    let mut diagnostic = Diagnostic::error(code, message).span(span);
    if let Some(help) = help {
        diagnostic = diagnostic.help(help);
    }
    diagnostic
}

/// When the token at `line`:`col` (1-based, in characters) is the first on its line, the line
/// and column of the last character of the nearest line before it with code on it (not blank,
/// not only a `//` comment; a trailing comment is skipped when it follows the code).
fn end_of_previous_entry(source: &str, line: usize, col: usize) -> Option<(usize, usize)> {
    let lines: Vec<&str> = source.lines().collect();
    let this = lines.get(line.checked_sub(1)?)?;
    if !this
        .chars()
        .take(col.saturating_sub(1))
        .all(char::is_whitespace)
    {
        return None;
    }
    (1..line).rev().find_map(|number| {
        let text = lines.get(number - 1)?;
        let code = strip_line_comment(text).trim_end();
        if code.trim_start().is_empty() {
            return None;
        }
        Some((number, code.chars().count()))
    })
}

/// `text` without a trailing `//` comment (a `//` inside a string is kept).
fn strip_line_comment(text: &str) -> &str {
    let mut in_string = false;
    let mut escaped = false;
    let mut previous_slash = false;
    for (i, c) in text.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if in_string => escaped = true,
            '"' => in_string = !in_string,
            '/' if !in_string && previous_slash => {
                return text.get(..i.saturating_sub(1)).unwrap_or(text);
            }
            _ => {}
        }
        previous_slash = c == '/' && !in_string;
    }
    text
}

/// Where nodes and inputs sit in the source text, for pointing diagnostics at them.
///
/// Built by a small scanner over the RON tokens rather than by the parser, because serde
/// deserialization does not keep positions. It is only built when there is something to
/// report.
#[derive(Debug, Default)]
pub struct SourceMap {
    nodes: HashMap<String, NodeSpans>,
}

#[derive(Debug, Default)]
struct NodeSpans {
    key: Range<usize>,
    kind: Option<Range<usize>>,
    inputs: HashMap<String, InputSpans>,
}

#[derive(Debug)]
struct InputSpans {
    key: Range<usize>,
    value: Range<usize>,
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Str(String),
    Ident(String),
    Open,
    Close,
    Colon,
    Comma,
    Other,
}

fn lex(source: &str) -> Vec<(Token, Range<usize>)> {
    let bytes = source.as_bytes();
    let mut tokens = Vec::new();
    let mut idx = 0;
    while let Some(&byte) = bytes.get(idx) {
        let start = idx;
        match byte {
            b' ' | b'\t' | b'\n' | b'\r' => idx += 1,
            b'/' if bytes.get(idx + 1) == Some(&b'/') => {
                while bytes.get(idx).is_some_and(|&b| b != b'\n') {
                    idx += 1;
                }
            }
            b'/' if bytes.get(idx + 1) == Some(&b'*') => {
                idx += 2;
                while idx < bytes.len()
                    && !(bytes.get(idx) == Some(&b'*') && bytes.get(idx + 1) == Some(&b'/'))
                {
                    idx += 1;
                }
                idx += 2;
            }
            b'"' => {
                idx += 1;
                let mut text = String::new();
                while let Some(&b) = bytes.get(idx) {
                    if b == b'\\' {
                        if let Some(&escaped) = bytes.get(idx + 1) {
                            text.push(match escaped {
                                b'n' => '\n',
                                b't' => '\t',
                                b'r' => '\r',
                                other => other as char,
                            });
                        }
                        idx += 2;
                    } else if b == b'"' {
                        idx += 1;
                        break;
                    } else {
                        let ch_len = source
                            .get(idx..)
                            .and_then(|rest| rest.chars().next())
                            .map_or(1, char::len_utf8);
                        text.push_str(source.get(idx..idx + ch_len).unwrap_or(""));
                        idx += ch_len;
                    }
                }
                tokens.push((Token::Str(text), start..idx.min(bytes.len())));
            }
            b'r' if matches!(bytes.get(idx + 1), Some(b'"' | b'#')) => {
                // Raw string: r"..." or r#"..."#.
                idx += 1;
                let mut hashes = 0;
                while bytes.get(idx) == Some(&b'#') {
                    hashes += 1;
                    idx += 1;
                }
                idx += 1;
                let body_start = idx;
                let closing: String = std::iter::once('"')
                    .chain(std::iter::repeat_n('#', hashes))
                    .collect();
                let body_end = source
                    .get(idx..)
                    .and_then(|rest| rest.find(&closing))
                    .map_or(bytes.len(), |pos| idx + pos);
                let text = source.get(body_start..body_end).unwrap_or("").to_owned();
                idx = (body_end + closing.len()).min(bytes.len());
                tokens.push((Token::Str(text), start..idx));
            }
            b'(' | b'[' | b'{' => {
                idx += 1;
                tokens.push((Token::Open, start..idx));
            }
            b')' | b']' | b'}' => {
                idx += 1;
                tokens.push((Token::Close, start..idx));
            }
            b':' => {
                idx += 1;
                tokens.push((Token::Colon, start..idx));
            }
            b',' => {
                idx += 1;
                tokens.push((Token::Comma, start..idx));
            }
            b if b.is_ascii_alphabetic() || b == b'_' => {
                while bytes
                    .get(idx)
                    .is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'_')
                {
                    idx += 1;
                }
                let text = source.get(start..idx).unwrap_or("").to_owned();
                tokens.push((Token::Ident(text), start..idx));
            }
            _ => {
                let ch_len = source
                    .get(idx..)
                    .and_then(|rest| rest.chars().next())
                    .map_or(1, char::len_utf8);
                idx += ch_len;
                tokens.push((Token::Other, start..idx));
            }
        }
    }
    tokens
}

impl SourceMap {
    /// Scans `source` for node and input positions. Never fails; unknown shapes are skipped.
    pub fn build(source: &str) -> SourceMap {
        let tokens = lex(source);
        let tok = |idx: usize| tokens.get(idx).map(|(t, _)| t);
        let mut map = SourceMap::default();
        let mut depth = 0usize;
        let mut nodes_depth: Option<usize> = None;
        let mut inputs_depth: Option<usize> = None;
        let mut current: Option<String> = None;
        let mut idx = 0;
        while let Some((token, range)) = tokens.get(idx) {
            match token {
                Token::Open => depth += 1,
                Token::Close => {
                    depth = depth.saturating_sub(1);
                    if inputs_depth.is_some_and(|d| depth < d) {
                        inputs_depth = None;
                    }
                    if nodes_depth.is_some_and(|d| depth < d) {
                        nodes_depth = None;
                        current = None;
                    }
                }
                Token::Ident(name)
                    if name == "nodes"
                        && depth == 1
                        && tok(idx + 1) == Some(&Token::Colon)
                        && tok(idx + 2) == Some(&Token::Open) =>
                {
                    nodes_depth = Some(2);
                }
                Token::Str(key)
                    if nodes_depth == Some(depth) && tok(idx + 1) == Some(&Token::Colon) =>
                {
                    current = Some(key.clone());
                    map.nodes.entry(key.clone()).or_insert_with(|| NodeSpans {
                        key: range.clone(),
                        ..NodeSpans::default()
                    });
                }
                Token::Ident(name)
                    if name == "kind"
                        && nodes_depth.is_some_and(|d| depth == d + 1)
                        && tok(idx + 1) == Some(&Token::Colon) =>
                {
                    if let (Some(node), Some((Token::Str(_), kind_range))) =
                        (&current, tokens.get(idx + 2))
                        && let Some(spans) = map.nodes.get_mut(node)
                    {
                        spans.kind = Some(kind_range.clone());
                    }
                }
                Token::Ident(name)
                    if name == "inputs"
                        && nodes_depth.is_some_and(|d| depth == d + 1)
                        && tok(idx + 1) == Some(&Token::Colon)
                        && tok(idx + 2) == Some(&Token::Open) =>
                {
                    inputs_depth = Some(depth + 1);
                }
                Token::Str(key)
                    if inputs_depth == Some(depth) && tok(idx + 1) == Some(&Token::Colon) =>
                {
                    let value = value_range(&tokens, idx + 2);
                    if let Some(spans) = current.as_ref().and_then(|node| map.nodes.get_mut(node)) {
                        spans.inputs.entry(key.clone()).or_insert(InputSpans {
                            key: range.clone(),
                            value,
                        });
                    }
                }
                _ => {}
            }
            idx += 1;
        }
        map
    }

    /// The node's id in the nodes map.
    pub fn node(&self, node: &str) -> Option<Range<usize>> {
        self.nodes.get(node).map(|n| n.key.clone())
    }

    /// The node's `kind` string, or else its id.
    pub fn node_kind(&self, node: &str) -> Option<Range<usize>> {
        let spans = self.nodes.get(node)?;
        spans.kind.clone().or(Some(spans.key.clone()))
    }

    /// The input's name, or else the node's id.
    pub fn input_key(&self, node: &str, input: &str) -> Option<Range<usize>> {
        let spans = self.nodes.get(node)?;
        match spans.inputs.get(input) {
            Some(input) => Some(input.key.clone()),
            None => Some(spans.key.clone()),
        }
    }

    /// The input's value, or else the node's id.
    pub fn input_value(&self, node: &str, input: &str) -> Option<Range<usize>> {
        let spans = self.nodes.get(node)?;
        match spans.inputs.get(input) {
            Some(input) => Some(input.value.clone()),
            None => Some(spans.key.clone()),
        }
    }
}

/// The source range of the value starting at token `first`: up to the `,` or closing bracket
/// at the same nesting level.
fn value_range(tokens: &[(Token, Range<usize>)], first: usize) -> Range<usize> {
    let Some((_, first_range)) = tokens.get(first) else {
        return 0..0;
    };
    let start = first_range.start;
    let mut end = first_range.end;
    let mut depth = 0usize;
    for (token, range) in tokens.iter().skip(first) {
        match token {
            Token::Open => depth += 1,
            Token::Close if depth == 0 => break,
            Token::Close => depth -= 1,
            Token::Comma if depth == 0 => break,
            _ => {}
        }
        end = range.end;
    }
    start..end
}
