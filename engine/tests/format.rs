//! The workflow file format: saving is deterministic and parsing a saved workflow gives it back.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers may panic

use veetance_engine::{InputValue, Workflow, WorkflowNode};

const SAMPLE: &str = r#"// A comment is fine.
Workflow(
    version: 1,
    name: "golden",
    nodes: {
        "load": Node(kind: "Load", inputs: {"model": Text("tiny")}, pos: (40.0, 80.0)),
        "encode": Node(kind: "Encode", inputs: {
            "text_encoder": Link("load", "text_encoder"),
            "prompt": Text("a \"red\" circle\non a blue background"),
        }),
        "sample": Node(kind: "Sample", inputs: {
            "seed": Int(-42), "guidance": Float(0.1), "tiny": Float(1e-7), "big": Float(1e20),
            "flag": Bool(false),
        }),
    },
)"#;

#[test]
fn saving_then_parsing_gives_back_the_same_workflow() {
    let workflow = Workflow::parse(SAMPLE).unwrap();
    let saved = workflow.to_ron();
    assert_eq!(Workflow::parse(&saved).unwrap(), workflow);
}

#[test]
fn saving_is_deterministic_and_stable_across_round_trips() {
    let saved = Workflow::parse(SAMPLE).unwrap().to_ron();
    let resaved = Workflow::parse(&saved).unwrap().to_ron();
    assert_eq!(saved, resaved);
    insta::assert_snapshot!(saved, @r#"
    Workflow(
        version: 1,
        name: "golden",
        nodes: {
            "load": Node(
                kind: "Load",
                inputs: {
                    "model": Text("tiny"),
                },
                pos: (40.0, 80.0),
            ),
            "encode": Node(
                kind: "Encode",
                inputs: {
                    "text_encoder": Link("load", "text_encoder"),
                    "prompt": Text("a \"red\" circle\non a blue background"),
                },
            ),
            "sample": Node(
                kind: "Sample",
                inputs: {
                    "seed": Int(-42),
                    "guidance": Float(0.1),
                    "tiny": Float(1e-7),
                    "big": Float(1e20),
                    "flag": Bool(false),
                },
            ),
        },
    )
    "#);
}

#[test]
fn floats_and_odd_text_survive_a_round_trip_exactly() {
    let floats = [
        0.1,
        1.0 / 3.0,
        -0.0,
        5e-324,
        f64::MAX,
        123456789.125,
        1e15,
        1e16,
    ];
    let texts = [
        "",
        "ünï 🎨",
        "tab\there",
        "back\\slash",
        "ctrl\u{7}",
        "quote\"s",
    ];
    let mut workflow = Workflow::new("round trip");
    for (idx, value) in floats.iter().enumerate() {
        let mut node = WorkflowNode {
            kind: "K".into(),
            inputs: Default::default(),
            pos: Some((*value, -*value)),
        };
        node.inputs.0.insert("f".into(), InputValue::Float(*value));
        node.inputs.0.insert(
            "t".into(),
            InputValue::Text(texts[idx % texts.len()].into()),
        );
        workflow.nodes.0.insert(format!("n{idx}"), node);
    }
    let back = Workflow::parse(&workflow.to_ron()).unwrap();
    for (a, b) in workflow.nodes.0.values().zip(back.nodes.0.values()) {
        let (Some(InputValue::Float(x)), Some(InputValue::Float(y))) =
            (a.inputs.0.get("f"), b.inputs.0.get("f"))
        else {
            panic!()
        };
        assert_eq!(x.to_bits(), y.to_bits());
    }
    assert_eq!(back, workflow);
}

#[test]
fn node_order_is_document_order() {
    let workflow = Workflow::parse(SAMPLE).unwrap();
    let ids: Vec<&str> = workflow.nodes.0.keys().map(String::as_str).collect();
    assert_eq!(ids, ["load", "encode", "sample"]);
}
