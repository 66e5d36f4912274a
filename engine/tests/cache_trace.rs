//! Salsa-style cache tests: run, change one input, run again, and check exactly which nodes ran.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers may panic

mod common;

use common::{run_trace, session};

const CHAIN: &str = r#"Workflow(
    version: 1,
    nodes: {
        "seed": Node(kind: "Number", inputs: {"value": Int(3)}),
        "other": Node(kind: "Number", inputs: {"value": Int(10)}),
        "sum": Node(kind: "Add", inputs: {"a": Link("seed", "value"), "b": Link("other", "value")}),
        "scaled": Node(kind: "Scale", inputs: {"x": Link("sum", "sum"), "factor": Float(2.0)}),
        "side": Node(kind: "Add", inputs: {"a": Link("other", "value"), "b": Int(1)}),
        "print": Node(kind: "Print", inputs: {"y": Link("scaled", "y"), "value": Link("side", "sum")}),
    },
)"#;

#[test]
fn first_run_runs_every_needed_node() {
    let session = session(None);
    insta::assert_snapshot!(run_trace(&session, CHAIN), @r"
    ran other
    ran print
    ran scaled
    ran seed
    ran side
    ran sum
    ");
}

#[test]
fn rerun_without_changes_runs_only_the_effect_node() {
    let session = session(None);
    run_trace(&session, CHAIN);
    insta::assert_snapshot!(run_trace(&session, CHAIN), @r"
    cached scaled
    cached side
    ran print
    ");
}

#[test]
fn changing_one_input_reruns_exactly_what_is_downstream() {
    let session = session(None);
    run_trace(&session, CHAIN);
    let changed = CHAIN.replace("Float(2.0)", "Float(3.0)");
    insta::assert_snapshot!(run_trace(&session, &changed), @r"
    cached side
    cached sum
    ran print
    ran scaled
    ");
    let changed_head = changed.replace("Int(3)", "Int(4)");
    insta::assert_snapshot!(run_trace(&session, &changed_head), @r"
    cached other
    cached side
    ran print
    ran scaled
    ran seed
    ran sum
    ");
}

#[test]
fn formatting_and_reordering_do_not_change_the_cache_key() {
    let session = session(None);
    run_trace(&session, CHAIN);
    let reformatted = CHAIN
        .replace(r#""print": Node(kind: "Print", inputs: {"y": Link("scaled", "y"), "value": Link("side", "sum")}),"#,
            "\"print\": Node(\n kind: \"Print\",\n inputs: {\"value\": Link(\"side\", \"sum\"), \"y\": Link(\"scaled\", \"y\")},\n),");
    insta::assert_snapshot!(run_trace(&session, &reformatted), @r"
    cached scaled
    cached side
    ran print
    ");
}

#[test]
fn setting_an_input_to_its_default_keeps_the_cache_key() {
    let session = session(None);
    let implicit = CHAIN.replace(r#""b": Int(1)"#, r#""b": Int(0)"#);
    run_trace(&session, &implicit);
    let default = implicit.replace(r#", "b": Int(0)"#, "");
    insta::assert_snapshot!(run_trace(&session, &default), @r"
    cached scaled
    cached side
    ran print
    ");
}

const BLOBS: &str = r#"Workflow(
    version: 1,
    nodes: {
        "blob": Node(kind: "MakeBlob", inputs: {"seed": Int(7), "len": Int(64)}),
        "sum": Node(kind: "BlobSum", inputs: {"blob": Link("blob", "blob")}),
        "print": Node(kind: "Print", inputs: {"value": Link("sum", "sum")}),
    },
)"#;

#[test]
fn disk_cache_serves_a_new_session_like_a_restarted_process() {
    let dir = tempfile::tempdir().unwrap();
    let first = session(Some(dir.path()));
    run_trace(&first, BLOBS);
    drop(first);
    let second = session(Some(dir.path()));
    insta::assert_snapshot!(run_trace(&second, BLOBS), @r"
    cached sum
    ran print
    ");
    // Only what is needed is loaded: with `sum` cached, the blob is never read.
    let third = session(Some(dir.path()));
    let changed = BLOBS.replace("len\": Int(64)", "len\": Int(65)");
    insta::assert_snapshot!(run_trace(&third, &changed), @r"
    ran blob
    ran print
    ran sum
    ");
}

#[test]
fn corrupt_or_truncated_disk_entries_are_rebuilt_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    run_trace(&session(Some(dir.path())), BLOBS);
    let mut entries: Vec<std::path::PathBuf> = walk(dir.path());
    entries.sort();
    assert_eq!(entries.len(), 2, "blob and sum are persisted: {entries:?}");
    for (n, entry) in entries.iter().enumerate() {
        let bytes = std::fs::read(entry).unwrap();
        if n == 0 {
            std::fs::write(entry, &bytes[..bytes.len() / 2]).unwrap();
        } else {
            let mut flipped = bytes.clone();
            flipped[bytes.len() / 2] ^= 0xff;
            std::fs::write(entry, flipped).unwrap();
        }
    }
    insta::assert_snapshot!(run_trace(&session(Some(dir.path())), BLOBS), @r"
    ran blob
    ran print
    ran sum
    ");
    insta::assert_snapshot!(run_trace(&session(Some(dir.path())), BLOBS), @r"
    cached sum
    ran print
    ");
}

#[test]
fn edited_file_content_changes_the_key_of_the_node_reading_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("prompt.txt");
    std::fs::write(&path, "a red circle").unwrap();
    let source = format!(
        r#"Workflow(version: 1, nodes: {{
            "read": Node(kind: "ReadFile", inputs: {{"path": Text({path:?})}}),
            "fmt": Node(kind: "Format", inputs: {{"text": Link("read", "text"), "style": Text("shout")}}),
            "print": Node(kind: "Print", inputs: {{"text": Link("fmt", "text")}}),
        }})"#,
        path = path.to_str().unwrap()
    );
    let session = session(None);
    run_trace(&session, &source);
    insta::assert_snapshot!(run_trace(&session, &source), @r"
    cached fmt
    ran print
    ");
    std::fs::write(&path, "a blue square").unwrap();
    insta::assert_snapshot!(run_trace(&session, &source), @r"
    ran fmt
    ran print
    ran read
    ");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}
