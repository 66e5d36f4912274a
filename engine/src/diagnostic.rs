//! Diagnostics: every problem found in a workflow, structured for programs and rendered with
//! source snippets for people.

use std::ops::Range;

use annotate_snippets::{AnnotationKind, Group, Level, Renderer, Snippet};
use serde::Serialize;

/// How bad a problem is. Runs are refused while any error remains.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The workflow cannot run.
    Error,
    /// The workflow runs, but probably not as meant.
    Warning,
}

/// The class of a problem; stable names for programs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, strum::IntoStaticStr, strum::EnumIter)]
#[serde(rename_all = "kebab-case")]
#[strum(serialize_all = "kebab-case")]
pub enum Code {
    /// The text is not valid RON for a workflow.
    Syntax,
    /// A field the format does not have.
    UnknownField,
    /// A field the format requires is absent.
    MissingField,
    /// The same node id or input appears twice.
    Duplicate,
    /// The file's `version` is not one this build reads.
    UnsupportedVersion,
    /// No node kind of that name.
    UnknownNodeKind,
    /// The node kind has no input of that name.
    UnknownInput,
    /// A required input is neither set nor linked.
    MissingInput,
    /// A link names a node that does not exist.
    UnknownLinkNode,
    /// A link names an output the source node does not have.
    UnknownLinkOutput,
    /// A link joins ports of different data types.
    TypeMismatch,
    /// A literal of the wrong type (or a literal where only a link can go).
    WrongLiteralType,
    /// A number outside the input's range.
    OutOfRange,
    /// A text that is not one of the input's choices.
    NotAChoice,
    /// Links form a cycle.
    Cycle,
}

impl Code {
    /// The kebab-case name used in machine output and rendered reports (as serde writes it).
    pub fn name(self) -> &'static str {
        self.into()
    }

    /// Every code, in declaration order.
    pub fn all() -> impl Iterator<Item = Code> {
        <Code as strum::IntoEnumIterator>::iter()
    }
}

/// A place in the source text.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Span {
    /// Byte offset of the first byte.
    pub start: usize,
    /// Byte offset one past the last byte.
    pub end: usize,
    /// 1-based line of `start`.
    pub line: usize,
    /// 1-based column of `start`, in characters.
    pub column: usize,
}

/// Where each line of a text starts, so that byte offsets turn into lines in O(log lines)
/// (reports on huge workflows stay linear in the number of problems).
#[derive(Debug, Clone)]
pub struct LineIndex {
    starts: Vec<usize>,
}

impl LineIndex {
    /// Indexes `source`.
    pub fn new(source: &str) -> LineIndex {
        let starts = std::iter::once(0)
            .chain(source.match_indices('\n').map(|(idx, _)| idx + 1))
            .collect();
        LineIndex { starts }
    }

    /// The 0-based line holding byte `offset`, and the byte where that line starts.
    fn line_of(&self, offset: usize) -> (usize, usize) {
        let line = self
            .starts
            .partition_point(|&start| start <= offset)
            .saturating_sub(1);
        (line, self.starts.get(line).copied().unwrap_or(0))
    }

    /// The byte where the line after 0-based `line` starts (or the text's end).
    fn next_line_start(&self, line: usize, source_len: usize) -> usize {
        self.starts.get(line + 1).copied().unwrap_or(source_len)
    }
}

impl Span {
    /// The span of `range` in `source`.
    pub fn of(source: &str, range: Range<usize>) -> Span {
        Span::of_indexed(source, &LineIndex::new(source), range)
    }

    /// [`Span::of`] with the source's lines already indexed.
    pub fn of_indexed(source: &str, lines: &LineIndex, range: Range<usize>) -> Span {
        let start = floor_char_boundary(source, range.start.min(source.len()));
        let end = floor_char_boundary(source, range.end.clamp(start, source.len()));
        let (line, line_start) = lines.line_of(start);
        let column = source
            .get(line_start..start)
            .map_or(0, |s| s.chars().count())
            + 1;
        Span {
            start,
            end,
            line: line + 1,
            column,
        }
    }

    /// The span at 1-based `line` and character `column`, `len_chars` characters long.
    pub fn at_line_column(source: &str, line: usize, column: usize, len_chars: usize) -> Span {
        let mut offset = 0;
        for (idx, text) in source.split_inclusive('\n').enumerate() {
            if idx + 1 == line {
                let start = offset
                    + text
                        .char_indices()
                        .nth(column.saturating_sub(1))
                        .map_or(text.trim_end_matches('\n').len(), |(i, _)| i);
                let end = source.get(start..).map_or(start, |rest| {
                    start
                        + rest
                            .char_indices()
                            .nth(len_chars.max(1))
                            .map_or(rest.len(), |(i, _)| i)
                });
                return Span::of(source, start..end);
            }
            offset += text.len();
        }
        Span::of(source, source.len()..source.len())
    }
}

fn floor_char_boundary(text: &str, mut idx: usize) -> usize {
    while idx > 0 && !text.is_char_boundary(idx) {
        idx -= 1;
    }
    idx
}

/// One problem with a workflow.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// The class of problem.
    pub code: Code,
    /// What is wrong, one sentence.
    pub message: String,
    /// The node concerned, if any.
    pub node: Option<String>,
    /// The input concerned, if any.
    pub input: Option<String>,
    /// Where in the source, if known.
    pub span: Option<Span>,
    /// A label for the span.
    pub label: Option<String>,
    /// How to fix it.
    pub help: Option<String>,
}

impl Diagnostic {
    /// An error of class `code`.
    pub fn error(code: Code, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity: Severity::Error,
            code,
            message: message.into(),
            node: None,
            input: None,
            span: None,
            label: None,
            help: None,
        }
    }

    /// Names the node.
    pub fn node(mut self, node: &str) -> Diagnostic {
        self.node = Some(node.to_owned());
        self
    }

    /// Names the input.
    pub fn input(mut self, input: &str) -> Diagnostic {
        self.input = Some(input.to_owned());
        self
    }

    /// Places the diagnostic in the source.
    pub fn span(mut self, span: Option<Span>) -> Diagnostic {
        self.span = span;
        self
    }

    /// Labels the span.
    pub fn label(mut self, label: impl Into<String>) -> Diagnostic {
        self.label = Some(label.into());
        self
    }

    /// Adds a hint.
    pub fn help(mut self, help: impl Into<String>) -> Diagnostic {
        self.help = Some(help.into());
        self
    }

    /// Whether this diagnostic blocks running.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

/// Renders diagnostics for a terminal without colour, each with the offending source lines.
pub fn render(diagnostics: &[Diagnostic], source: &str, path: &str) -> String {
    render_with(diagnostics, source, path, &Renderer::plain())
}

/// Renders diagnostics with ANSI colours.
pub fn render_styled(diagnostics: &[Diagnostic], source: &str, path: &str) -> String {
    render_with(diagnostics, source, path, &Renderer::styled())
}

fn render_with(
    diagnostics: &[Diagnostic],
    source: &str,
    path: &str,
    renderer: &Renderer,
) -> String {
    let mut out = String::new();
    let lines = LineIndex::new(source);
    for diagnostic in diagnostics.iter().take(MAX_RENDERED) {
        let level = match diagnostic.severity {
            Severity::Error => Level::ERROR,
            Severity::Warning => Level::WARNING,
        };
        let mut title = diagnostic.message.clone();
        match (&diagnostic.node, &diagnostic.input) {
            (Some(node), Some(input)) => {
                title.push_str(&format!(" [node `{node}`, input `{input}`]"))
            }
            (Some(node), None) => title.push_str(&format!(" [node `{node}`]")),
            _ => {}
        }
        let mut group = Group::with_title(level.primary_title(title).id(diagnostic.code.name()));
        if let Some(span) = &diagnostic.span {
            // Only the span's own lines go to the renderer, so each report costs what its
            // snippet does, not what the whole file does.
            let (first_line, from) = lines.line_of(span.start);
            let (last_line, _) = lines.line_of(span.end.max(span.start));
            let to = lines.next_line_start(last_line, source.len());
            let text = source.get(from..to).unwrap_or("");
            let relative = span.start - from..span.end.max(span.start).min(to) - from;
            let mut annotation = AnnotationKind::Primary.span(relative);
            if let Some(label) = &diagnostic.label {
                annotation = annotation.label(label.as_str());
            }
            group = group.element(
                Snippet::source(text)
                    .line_start(first_line + 1)
                    .path(path)
                    .fold(true)
                    .annotation(annotation),
            );
        }
        let mut report = vec![group];
        if let Some(help) = &diagnostic.help {
            report.push(Group::with_title(
                Level::HELP.secondary_title(help.as_str()),
            ));
        }
        out.push_str(&renderer.render(&report));
        out.push_str("\n\n");
    }
    if diagnostics.len() > MAX_RENDERED {
        out.push_str(&format!(
            "... and {} more problems (`--json` lists every one)\n\n",
            diagnostics.len() - MAX_RENDERED
        ));
    }
    out
}

/// Most problems rendered for people; the rest are counted (machine output has them all).
pub const MAX_RENDERED: usize = 100;
