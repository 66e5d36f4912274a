//! Every class of workflow problem, rendered as people see it. One `check` helper; snapshots
//! hold the expected reports.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers may panic

mod common;

use veetance_engine::diagnostic::{Code, render};
use veetance_engine::{Workflow, validate};

/// Parses and validates `source`, returning the rendered diagnostics (all of them).
fn check(source: &str) -> String {
    let diagnostics = match Workflow::parse(source) {
        Err(diagnostics) => diagnostics,
        Ok(workflow) => validate(&workflow, &common::registry(), Some(source)).diagnostics,
    };
    assert!(
        !diagnostics.is_empty(),
        "expected diagnostics for:\n{source}"
    );
    render(&diagnostics, source, "broken.ron")
}

#[test]
fn syntax_error_shows_line_and_column() {
    insta::assert_snapshot!(check(
        r#"Workflow(
    version: 1,
    nodes: {
        "a": Node(kind: "Number" inputs: {}),
    },
)"#
    ));
}

#[test]
fn a_missing_comma_at_the_end_of_a_line_points_at_that_line_not_the_next() {
    insta::assert_snapshot!(check(
        r#"Workflow(
    version: 1,
    nodes: {
        "a": Node(kind: "Number", inputs: {"value": Float(1.0)}) // the first "//" node
        "b": Node(kind: "Number", inputs: {"value": Float(2.0)}),
    },
)"#
    ));
}

#[test]
fn unknown_field_suggests_the_right_one() {
    insta::assert_snapshot!(check(
        r#"Workflow(
    version: 1,
    nodes: {
        "a": Node(knd: "Number"),
    },
)"#
    ));
}

#[test]
fn unknown_value_kind_suggests_the_right_one() {
    insta::assert_snapshot!(check(
        r#"Workflow(
    version: 1,
    nodes: {
        "a": Node(kind: "Number", inputs: {"value": Integer(3)}),
    },
)"#
    ));
}

#[test]
fn duplicate_node_id_is_reported() {
    insta::assert_snapshot!(check(
        r#"Workflow(
    version: 1,
    nodes: {
        "a": Node(kind: "Number"),
        "a": Node(kind: "Number"),
    },
)"#
    ));
}

#[test]
fn unsupported_version_is_reported() {
    insta::assert_snapshot!(check(
        r#"Workflow(
    version: 7,
    nodes: {},
)"#
    ));
}

#[test]
fn unknown_node_kind_suggests_a_close_kind() {
    insta::assert_snapshot!(check(
        r#"Workflow(
    version: 1,
    nodes: {
        "a": Node(kind: "Numbr", inputs: {"value": Int(1)}),
    },
)"#
    ));
}

#[test]
fn unknown_input_suggests_a_close_input() {
    insta::assert_snapshot!(check(
        r#"Workflow(
    version: 1,
    nodes: {
        "a": Node(kind: "Number", inputs: {"valeu": Int(1)}),
    },
)"#
    ));
}

#[test]
fn missing_required_input_names_node_and_input() {
    insta::assert_snapshot!(check(
        r#"Workflow(
    version: 1,
    nodes: {
        "sum": Node(kind: "Add", inputs: {"b": Int(1)}),
        "sink": Node(kind: "BlobSum"),
    },
)"#
    ));
}

#[test]
fn link_to_unknown_node_or_output_is_reported() {
    insta::assert_snapshot!(check(
        r#"Workflow(
    version: 1,
    nodes: {
        "one": Node(kind: "Number"),
        "sum": Node(kind: "Add", inputs: {"a": Link("onr", "value"), "b": Link("one", "valu")}),
    },
)"#
    ));
}

#[test]
fn type_mismatch_names_both_types() {
    insta::assert_snapshot!(check(
        r#"Workflow(
    version: 1,
    nodes: {
        "blob": Node(kind: "MakeBlob", inputs: {"seed": Int(1)}),
        "sum": Node(kind: "Add", inputs: {"a": Link("blob", "blob")}),
    },
)"#
    ));
}

#[test]
fn wrong_literal_type_suggests_the_right_spelling() {
    insta::assert_snapshot!(check(
        r#"Workflow(
    version: 1,
    nodes: {
        "one": Node(kind: "Number", inputs: {"value": Text("3")}),
        "scale": Node(kind: "Scale", inputs: {"x": Link("one", "value"), "factor": Int(2)}),
        "sum": Node(kind: "BlobSum", inputs: {"blob": Int(3)}),
    },
)"#
    ));
}

#[test]
fn out_of_range_and_not_a_choice_are_reported() {
    insta::assert_snapshot!(check(
        r#"Workflow(
    version: 1,
    nodes: {
        "one": Node(kind: "Number"),
        "scale": Node(kind: "Scale", inputs: {"x": Link("one", "value"), "factor": Float(11.5)}),
        "fmt": Node(kind: "Format", inputs: {"text": Text("hi"), "style": Text("shuot")}),
    },
)"#
    ));
}

#[test]
fn cycle_names_every_node_in_it() {
    insta::assert_snapshot!(check(
        r#"Workflow(
    version: 1,
    nodes: {
        "start": Node(kind: "Number"),
        "a": Node(kind: "Add", inputs: {"a": Link("c", "sum")}),
        "b": Node(kind: "Add", inputs: {"a": Link("a", "sum")}),
        "c": Node(kind: "Add", inputs: {"a": Link("b", "sum"), "b": Link("start", "value")}),
        "self": Node(kind: "Add", inputs: {"a": Link("self", "sum")}),
    },
)"#
    ));
}

#[test]
fn all_problems_are_reported_at_once_and_keyed_by_node() {
    let source = r#"Workflow(
    version: 1,
    nodes: {
        "a": Node(kind: "Numbr"),
        "b": Node(kind: "Add", inputs: {"c": Int(1)}),
        "d": Node(kind: "Scale", inputs: {"x": Link("zz", "value"), "factor": Float(-1.0)}),
    },
)"#;
    let workflow = Workflow::parse(source).unwrap();
    let diagnostics = validate(&workflow, &common::registry(), Some(source)).diagnostics;
    let summary: Vec<String> = diagnostics
        .iter()
        .map(|d| {
            format!(
                "{} {} {} line {}",
                d.code.name(),
                d.node.as_deref().unwrap_or("-"),
                d.input.as_deref().unwrap_or("-"),
                d.span.as_ref().map_or(0, |s| s.line)
            )
        })
        .collect();
    insta::assert_snapshot!(summary.join("\n"), @r"
    unknown-node-kind a - line 4
    unknown-input b c line 5
    missing-input b a line 5
    unknown-link-node d x line 6
    out-of-range d factor line 6
    ");
}

#[test]
fn non_ascii_columns_count_characters() {
    let source = "Workflow(\n    version: 1,\n    nodes: {\n        \"ünï\": Node(kind: \"Numbér\"),\n    },\n)";
    let workflow = Workflow::parse(source).unwrap();
    let diagnostics = validate(&workflow, &common::registry(), Some(source)).diagnostics;
    let span = diagnostics[0].span.clone().unwrap();
    assert_eq!((span.line, span.column), (4, 27));
    assert_eq!(&source[span.start..span.end], "\"Numbér\"");
}

#[test]
fn deeply_nested_input_is_an_error_not_a_crash() {
    let source = format!(
        "Workflow(version: 1, nodes: {{\"a\": Node(kind: \"Number\", inputs: {{\"value\": {}1{}}})}})",
        "(".repeat(10_000),
        ")".repeat(10_000)
    );
    assert!(Workflow::parse(&source).is_err());
}

#[test]
fn missing_field_names_the_field_and_where_it_is_missing() {
    insta::assert_snapshot!(check(
        r#"Workflow(
    nodes: {
        "a": Node(kind: "Number"),
    },
)"#
    ));
}

#[test]
fn every_diagnostic_code_has_a_rendered_snapshot() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots");
    let snapshots: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| std::fs::read_to_string(entry.unwrap().path()).unwrap())
        .collect();
    let missing: Vec<&str> = Code::all()
        .map(Code::name)
        .filter(|name| {
            let header = format!("error[{name}]");
            let warning = format!("warning[{name}]");
            !snapshots
                .iter()
                .any(|s| s.contains(&header) || s.contains(&warning))
        })
        .collect();
    assert!(missing.is_empty(), "no snapshot shows {missing:?}");
}

#[test]
fn code_names_are_the_names_serialized_for_programs() {
    for code in Code::all() {
        let json = serde_json::to_string(&code).unwrap();
        assert_eq!(json, format!("\"{}\"", code.name()));
    }
    assert_eq!(Code::MissingField.name(), "missing-field");
}
