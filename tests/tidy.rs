//! Repository invariants checked as tests: dependency direction between crates, module docs,
//! and named to-do notes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers may panic

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Package name → names of every package it depends on (normal and build deps, transitively).
fn transitive_dependencies() -> HashMap<String, BTreeSet<String>> {
    let out = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--locked"])
        .current_dir(root())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let metadata: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: HashMap<&str, &str> = metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["id"].as_str().unwrap(), p["name"].as_str().unwrap()))
        .collect();
    let mut direct: HashMap<&str, Vec<&str>> = HashMap::new();
    for node in metadata["resolve"]["nodes"].as_array().unwrap() {
        let id = node["id"].as_str().unwrap();
        let deps = node["deps"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| {
                d["dep_kinds"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|k| k["kind"] != "dev")
            })
            .map(|d| d["pkg"].as_str().unwrap())
            .collect();
        direct.insert(id, deps);
    }
    let mut result = HashMap::new();
    for member in metadata["workspace_members"].as_array().unwrap() {
        let member = member.as_str().unwrap();
        let mut seen = BTreeSet::new();
        let mut stack = vec![member];
        while let Some(id) = stack.pop() {
            for dep in direct.get(id).into_iter().flatten() {
                if seen.insert(names[dep].to_owned()) {
                    stack.push(dep);
                }
            }
        }
        result.insert(names[member].to_owned(), seen);
    }
    result
}

#[test]
fn crates_depend_only_in_the_allowed_direction() {
    let deps = transitive_dependencies();
    let rules: &[(&str, &[&str])] = &[
        (
            "veetance-engine",
            &[
                "veetance-models",
                "veetance-nodes",
                "veetance-editor",
                "veetance-imaging",
                "egui",
                "eframe",
                "egui-snarl",
                "candle-core",
            ],
        ),
        (
            "veetance-models",
            &[
                "veetance-engine",
                "veetance-nodes",
                "veetance-editor",
                "egui",
                "eframe",
            ],
        ),
        (
            "veetance-imaging",
            &[
                "veetance-engine",
                "veetance-models",
                "veetance-nodes",
                "egui",
                "eframe",
                "candle-core",
            ],
        ),
        ("veetance-nodes", &["veetance-editor", "egui", "eframe"]),
        (
            "veetance-scenes",
            &[
                "veetance-engine",
                "veetance-models",
                "veetance-nodes",
                "egui",
                "candle-core",
            ],
        ),
        (
            "veetance-train",
            &[
                "veetance-engine",
                "veetance-nodes",
                "veetance-editor",
                "egui",
                "eframe",
            ],
        ),
        ("veetance-editor", &["veetance-models"]),
        (
            "veetance-bench",
            &["veetance-nodes", "veetance-editor", "egui", "eframe"],
        ),
        (
            "veetance-gpu",
            &[
                "veetance-engine",
                "veetance-models",
                "veetance-nodes",
                "veetance-imaging",
                "veetance-editor",
                "candle-nn",
                "egui",
            ],
        ),
    ];
    // Only the binary measures.
    for (package, package_deps) in &deps {
        assert!(
            package == "veetance" || !package_deps.contains("veetance-bench"),
            "{package} must not depend on veetance-bench"
        );
    }
    for (package, forbidden) in rules {
        let Some(package_deps) = deps.get(*package) else {
            continue;
        };
        for name in *forbidden {
            assert!(
                !package_deps.contains(*name),
                "{package} must not depend on {name}"
            );
        }
    }
    assert!(deps.contains_key("veetance-engine"));
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            if name != "target" && !name.starts_with('.') {
                rust_files(&path, out);
            }
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_rust_file_starts_with_a_module_doc_and_todos_are_named() {
    let mut files = Vec::new();
    for dir in [
        "src", "engine", "nodes", "models", "imaging", "editor", "scenes", "train", "gpu", "bench",
        "tests",
    ] {
        let dir = root().join(dir);
        if dir.exists() {
            rust_files(&dir, &mut files);
        }
    }
    assert!(files.len() > 10);
    let mut problems = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let shown = file.strip_prefix(root()).unwrap().display().to_string();
        if !text.trim_start().starts_with("//!") {
            problems.push(format!("{shown}: does not start with a `//!` module doc"));
        }
        for (idx, line) in text.lines().enumerate() {
            if let Some(pos) = line.find("TODO")
                && !line[pos..].starts_with("TODO(")
                && !line.contains("\"TODO")
            {
                problems.push(format!("{shown}:{}: write TODO(name): ...", idx + 1));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
