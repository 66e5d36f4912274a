//! The built-in nodes one at a time: every port name a node reads exists in its spec with the
//! type it reads it as, and each node's own checks, through one `check(kind, inputs)` helper that
//! runs a node on given inputs the way the executor does.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers may panic

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use veetance_engine::{
    CancelToken, DataType, NoEvents, NodeCtx, NodeError, NodeInputs, Outputs, Registry, RunEnv,
    Value,
};

fn registry() -> Registry {
    veetance_nodes::registry().unwrap()
}

/// Runs node `kind` on `inputs` (missing ones take their spec default) with outputs under `out`.
fn check(kind: &str, inputs: &[(&str, Value)], out: &Path) -> Result<Outputs, NodeError> {
    let registry = registry();
    let node = registry.get(kind).unwrap().clone();
    let spec = node.spec();
    let given: BTreeMap<&str, &Value> = inputs.iter().map(|(n, v)| (*n, v)).collect();
    for name in given.keys() {
        assert!(
            spec.input_named(name).is_some(),
            "{kind} has no input {name}"
        );
    }
    let values = spec
        .inputs
        .iter()
        .map(|input| {
            given
                .get(input.name.as_str())
                .map(|v| (*v).clone())
                .or_else(|| input.default.as_ref().map(Value::from))
        })
        .collect();
    let env = RunEnv::new(out);
    let (node_id, kind_name): (Arc<str>, Arc<str>) = (Arc::from("n"), Arc::from(kind));
    let cancel = CancelToken::new();
    let ctx = NodeCtx::new(&node_id, &kind_name, &cancel, &NoEvents, &env);
    node.run(&NodeInputs::new(spec, values), &ctx)
}

fn text(s: &str) -> Value {
    Value::Text(Arc::from(s))
}

/// Every `inputs.<accessor>("name")` in a node's source names an input of a spec in that file,
/// of the type the accessor reads.
#[test]
fn every_port_a_node_reads_is_in_its_spec_with_that_type() {
    let registry = registry();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let accessor = regex::Regex::new(
        r#"inputs\s*\.\s*(int|float|bool|text|opt_int|opt_float|opt_text|object|opt_object)(?:::<[A-Za-z]+>)?\(\s*"([a-z_]+)""#,
    )
    .unwrap();
    let kind_re = regex::Regex::new(r#"NodeSpec::new\(\s*"([A-Za-z]+)""#).unwrap();
    let mut checked = 0;
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        let code = std::fs::read_to_string(&path).unwrap();
        let kinds: Vec<&str> = kind_re
            .captures_iter(&code)
            .map(|c| c.get(1).unwrap().as_str())
            .collect();
        for call in accessor.captures_iter(&code) {
            let (method, name) = (&call[1], &call[2]);
            let expected = match method.trim_start_matches("opt_") {
                "int" => Some(DataType::INT),
                "float" => Some(DataType::FLOAT),
                "bool" => Some(DataType::BOOL),
                "text" => Some(DataType::TEXT),
                _ => None,
            };
            let found = kinds.iter().any(|kind| {
                let spec = registry.get(kind).unwrap().spec();
                spec.input_named(name)
                    .is_some_and(|(_, input)| match expected {
                        Some(t) => input.data_type == t,
                        None => !input.data_type.is_literal(),
                    })
            });
            assert!(
                found,
                "{}: inputs.{method}(\"{name}\") matches no input of {kinds:?}",
                path.display()
            );
            checked += 1;
        }
    }
    assert!(checked > 40, "only {checked} accessor calls found");
}

#[test]
fn load_image_reads_pictures_and_refuses_what_is_not_one() {
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("red.png");
    veetance_imaging::RgbImage::from_pixel(4, 3, veetance_imaging::Rgb([255, 0, 0]))
        .save(&png)
        .unwrap();
    let outputs = check(
        "LoadImage",
        &[("path", text(png.to_str().unwrap()))],
        dir.path(),
    )
    .unwrap();
    let values = outputs
        .into_spec_order(registry().get("LoadImage").unwrap().spec())
        .unwrap();
    assert!(matches!(values.first(), Some(Value::Object(_))));
    let not_png = dir.path().join("notes.png");
    std::fs::write(&not_png, "hello").unwrap();
    let err = check(
        "LoadImage",
        &[("path", text(not_png.to_str().unwrap()))],
        dir.path(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("notes.png"), "{err}");
    let missing = check(
        "LoadImage",
        &[("path", text("/nonexistent/x.png"))],
        dir.path(),
    )
    .unwrap_err();
    assert!(missing.to_string().contains("x.png"), "{missing}");
}

#[test]
fn load_names_where_it_looked_for_a_model_that_is_not_there() {
    let dir = tempfile::tempdir().unwrap();
    let err = check(
        "Load",
        &[("model", text("flux-2-klein-4b.gguf"))],
        dir.path(),
    )
    .unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("flux-2-klein-4b.gguf") && message.contains("veetance models"),
        "{message}"
    );
}
