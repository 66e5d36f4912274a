//! Repository invariants checked as tests: dependency direction between crates, module docs,
//! named to-do notes, and repository paths named in documentation and comments that exist.

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
    // Only the binary measures; nothing depends on the fuzzer.
    for (package, package_deps) in &deps {
        assert!(
            package == "veetance" || !package_deps.contains("veetance-bench"),
            "{package} must not depend on veetance-bench"
        );
        assert!(
            !package_deps.contains("veetance-fuzz"),
            "{package} must not depend on veetance-fuzz"
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

/// Folders of generated output (git-ignored), never scanned and never required to exist.
const GENERATED: [&str; 2] = ["target", "out"];

/// Files under `dir` whose names end with one of `extensions`, skipping hidden and generated
/// folders.
fn files_with(dir: &Path, extensions: &[&str], out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            if !GENERATED.contains(&name.as_str()) && !name.starts_with('.') {
                files_with(&path, extensions, out);
            }
        } else if extensions.iter().any(|ext| name.ends_with(ext)) {
            out.push(path);
        }
    }
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    files_with(dir, &[".rs"], out);
}

#[test]
fn every_rust_file_starts_with_a_module_doc_and_todos_are_named() {
    let mut files = Vec::new();
    for dir in [
        "src", "engine", "nodes", "models", "imaging", "editor", "scenes", "train", "gpu", "bench",
        "fuzz", "tests",
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

/// The text of `line` that is prose: the whole line in Markdown, the comment elsewhere.
fn prose(file: &Path, line: &str) -> Option<String> {
    if file.extension().is_some_and(|ext| ext == "md") {
        return Some(line.to_owned());
    }
    let marker = if file
        .extension()
        .is_some_and(|ext| ext == "py" || ext == "sh" || ext == "toml")
    {
        "#"
    } else {
        "//"
    };
    line.find(marker).map(|pos| line[pos..].to_owned())
}

/// The folder of the crate that holds `file` (the nearest one with a Cargo.toml).
fn crate_dir(file: &Path) -> &Path {
    file.ancestors()
        .skip(1)
        .find(|dir| dir.join("Cargo.toml").exists())
        .unwrap_or(root())
}

#[test]
fn repository_paths_named_in_docs_and_comments_exist() {
    // A path-like word: folders joined by `/`, optionally starting with `./` or `../`; not inside
    // a URL (checked below) nor preceded by a character that makes it part of something longer.
    let path_like = regex::Regex::new(
        r"(?:^|[^\w/.:$~@-])((?:\.\./)*(?:\./)?[A-Za-z0-9_.-]+(?:/[A-Za-z0-9_.-]+)+/?)",
    )
    .unwrap();
    let url_before = regex::Regex::new(r"[a-z]+://\S*$").unwrap();
    let top_level: BTreeSet<String> = std::fs::read_dir(root())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let repo = root().canonicalize().unwrap();

    let mut files = Vec::new();
    files_with(
        root(),
        &[".md", ".rs", ".py", ".cu", ".cuh", ".toml", ".sh"],
        &mut files,
    );
    let mut problems = Vec::new();
    for file in &files {
        let shown = file.strip_prefix(root()).unwrap();
        if shown.starts_with("docs/results") {
            continue; // raw logs of past runs, kept as they were written
        }
        let text = std::fs::read_to_string(file).unwrap();
        for (idx, line) in text.lines().enumerate() {
            let Some(prose) = prose(file, line) else {
                continue;
            };
            for found in path_like.captures_iter(&prose) {
                let found = found.get(1).unwrap();
                if url_before.is_match(&prose[..found.start()]) {
                    continue;
                }
                let path = found.as_str().trim_end_matches('.');
                let first = path
                    .trim_start_matches("./")
                    .split('/')
                    .next()
                    .unwrap_or("");
                // Only paths into this repository: they start at a top-level entry or with
                // `./`/`../`. Paths inside other projects are written with the project's name
                // first (`diffusers/models/...`), and inside checkpoints they start at the
                // checkpoint's own folders (`vae/config.json`).
                let ours = top_level.contains(first) || path.starts_with("../");
                if !ours || GENERATED.contains(&first) {
                    continue;
                }
                let inside_and_present = |base: &Path| {
                    base.join(path)
                        .canonicalize()
                        .is_ok_and(|resolved| resolved.starts_with(&repo))
                };
                let bases = [root(), file.parent().unwrap_or(root()), crate_dir(file)];
                if !bases.into_iter().any(inside_and_present) {
                    problems.push(format!(
                        "{}:{}: `{path}` does not exist",
                        shown.display(),
                        idx + 1
                    ));
                }
            }
        }
    }
    assert!(files.len() > 50);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
