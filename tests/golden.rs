//! End-to-end runs of the shipped workflows on the built-in tiny model: outputs, embedded
//! workflows, layered PSDs, replay from a PNG, and which nodes re-run after an edit.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers may panic

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::{repo, text, veetance};

struct Dirs {
    _root: tempfile::TempDir,
    out: PathBuf,
    cache: PathBuf,
}

fn dirs() -> Dirs {
    let root = tempfile::tempdir().unwrap();
    let out = root.path().join("out");
    let cache = root.path().join("cache");
    Dirs {
        _root: root,
        out,
        cache,
    }
}

fn run(dirs: &Dirs, files: &[&str], extra: &[&str]) -> Output {
    let mut args = vec![
        "run",
        "--out",
        dirs.out.to_str().unwrap(),
        "--cache-dir",
        dirs.cache.to_str().unwrap(),
    ];
    args.extend_from_slice(files);
    args.extend_from_slice(extra);
    let out = veetance(&args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{}\nstderr:\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    out
}

/// `(event, node)` pairs of a `--json` trace for one file, in order, without progress events.
fn trace(stdout: &[u8], file: &str) -> Vec<(String, String)> {
    text(stdout)
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
        .filter(|event| event["file"] == file)
        .filter(|event| matches!(event["event"].as_str(), Some("cached" | "node_started")))
        .map(|event| {
            (
                event["event"].as_str().unwrap().to_owned(),
                event["node"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn sorted_nodes(trace: &[(String, String)], event: &str) -> Vec<String> {
    let mut nodes: Vec<String> = trace
        .iter()
        .filter(|(e, _)| e == event)
        .map(|(_, n)| n.clone())
        .collect();
    nodes.sort();
    nodes
}

#[test]
fn every_shipped_workflow_runs_on_the_tiny_model() {
    let dirs = dirs();
    for workflow in ["golden", "txt2img", "img2img", "layers"] {
        run(&dirs, &[&format!("workflows/{workflow}.ron")], &[]);
    }
    let mut written: Vec<String> = std::fs::read_dir(&dirs.out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    written.sort();
    assert_eq!(
        written,
        [
            "golden.png",
            "golden.psd",
            "img2img.png",
            "layers.psd",
            "txt2img.png"
        ]
    );
}

#[test]
fn a_changed_seed_reruns_only_sampling_and_what_follows() {
    let dirs = dirs();
    let changed = dirs.out.parent().unwrap().join("golden_seed7.ron");
    let source = std::fs::read_to_string(repo().join("workflows/golden.ron")).unwrap();
    std::fs::write(
        &changed,
        source.replace("\"seed\": Int(42)", "\"seed\": Int(7)"),
    )
    .unwrap();
    let changed = changed.to_str().unwrap();
    let out = run(&dirs, &["workflows/golden.ron", changed], &["--json"]);
    let second = trace(&out.stdout, changed);
    assert_eq!(
        sorted_nodes(&second, "cached"),
        ["compile", "encode", "load"]
    );
    assert_eq!(
        sorted_nodes(&second, "node_started"),
        ["decode", "png", "psd", "sample", "split"]
    );
}

#[test]
fn a_repeated_prompt_skips_the_encoder_in_a_new_process() {
    let dirs = dirs();
    run(&dirs, &["workflows/txt2img.ron"], &[]);
    let out = run(
        &dirs,
        &["workflows/txt2img.ron"],
        &["--json", "--set", "sample.seed=8"],
    );
    let trace = trace(&out.stdout, "workflows/txt2img.ron");
    assert_eq!(sorted_nodes(&trace, "cached"), ["encode"]);
    assert!(sorted_nodes(&trace, "node_started").contains(&"sample".to_owned()));
}

#[test]
fn the_png_embeds_the_workflow_as_run_and_replays_to_the_same_image() {
    let dirs = dirs();
    run(
        &dirs,
        &["workflows/txt2img.ron"],
        &[
            "--set",
            "sample.seed=11",
            "--set",
            "encode.prompt=a green star on a white background",
        ],
    );
    let png = dirs.out.join("txt2img.png");
    let bytes = std::fs::read(&png).unwrap();
    let texts = veetance_imaging::read_png_text(&bytes).unwrap();
    let workflow = &texts
        .iter()
        .find(|(k, _)| k == "veetance:workflow")
        .unwrap()
        .1;
    assert!(workflow.contains("\"seed\": Int(11)"), "{workflow}");
    assert!(workflow.contains("a green star on a white background"));
    let parameters = &texts
        .iter()
        .find(|(k, _)| k == "veetance:parameters")
        .unwrap()
        .1;
    let parameters: serde_json::Value = serde_json::from_str(parameters).unwrap();
    assert_eq!(parameters["sample"]["inputs"]["seed"], 11);

    // Replay in a fresh cache so nothing is served from the first run.
    let replay = Dirs {
        out: dirs.out.clone(),
        cache: dirs.cache.join("fresh"),
        _root: tempfile::tempdir().unwrap(),
    };
    run(&replay, &[png.to_str().unwrap()], &[]);
    let (first, _) = veetance_imaging::read_png_rgba(&bytes).unwrap();
    let (again, _) = veetance_imaging::read_png_rgba(
        &std::fs::read(dirs.out.join("txt2img_00001.png")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        first, again,
        "replaying the embedded workflow gave a different image"
    );

    let out = veetance(&["validate", png.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

#[test]
fn the_layered_psd_has_the_requested_layers_and_composites_to_the_picture() {
    let dirs = dirs();
    run(&dirs, &["workflows/layers.ron"], &[]);
    let psd = psd::Psd::from_bytes(&std::fs::read(dirs.out.join("layers.psd")).unwrap()).unwrap();
    assert_eq!(psd.layers().len(), 3);
    let merged = psd.rgba();
    let source = veetance_imaging::load_image_rgba(
        &std::fs::read(repo().join("workflows/assets/shapes.png")).unwrap(),
    )
    .unwrap();
    let max_diff = merged
        .iter()
        .zip(source.as_raw())
        .map(|(a, b)| a.abs_diff(*b))
        .max()
        .unwrap();
    assert!(
        max_diff <= 1,
        "merged image differs from the input by {max_diff}"
    );
}

#[test]
fn a_failing_node_exits_1_naming_the_node() {
    let dirs = dirs();
    let out = veetance(&[
        "run",
        "--out",
        dirs.out.to_str().unwrap(),
        "--no-cache",
        "workflows/layers.ron",
        "--set",
        "picture.path=workflows/assets/missing.png",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr)
            .contains("node `picture` failed: cannot read workflows/assets/missing.png"),
        "{}",
        text(&out.stderr)
    );
}

/// The header of a .safetensors file: tensor name → shape.
fn safetensors_shapes(path: &Path) -> Vec<(String, Vec<u64>)> {
    let bytes = std::fs::read(path).unwrap();
    let len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + len]).unwrap();
    let mut shapes: Vec<(String, Vec<u64>)> = header
        .as_object()
        .unwrap()
        .iter()
        .filter(|(name, _)| *name != "__metadata__")
        .map(|(name, info)| {
            let shape = info["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap())
                .collect();
            (name.clone(), shape)
        })
        .collect();
    shapes.sort();
    shapes
}

#[test]
fn saved_latents_and_conditioning_load_back_and_decode_to_the_same_picture() {
    let dirs = dirs();
    std::fs::create_dir_all(&dirs.out).unwrap();
    let save = dirs.out.join("save.ron");
    std::fs::write(
        &save,
        r#"Workflow(version: 1, nodes: {
            "load": Node(kind: "Load"),
            "encode": Node(kind: "Encode", inputs: {"text_encoder": Link("load", "text_encoder"), "prompt": Text("a pink heart on a white background")}),
            "cond": Node(kind: "SaveConditioning", inputs: {"conditioning": Link("encode", "conditioning"), "path": Text("cond")}),
            "sample": Node(kind: "Sample", inputs: {"model": Link("load", "model"), "positive": Link("encode", "conditioning"), "seed": Int(5), "width": Int(64), "height": Int(64)}),
            "latent": Node(kind: "SaveLatent", inputs: {"latent": Link("sample", "latent"), "path": Text("lat")}),
            "decode": Node(kind: "Decode", inputs: {"vae": Link("load", "vae"), "latent": Link("sample", "latent")}),
            "export": Node(kind: "Export", inputs: {"image": Link("decode", "image"), "path": Text("direct")}),
        })"#,
    )
    .unwrap();
    run(&dirs, &[save.to_str().unwrap()], &[]);
    let latent_path = dirs.out.join("lat.safetensors");
    let latent_shape = safetensors_shapes(&latent_path);
    assert_eq!(latent_shape.len(), 1);
    assert_eq!(latent_shape[0].0, "latent");
    assert_eq!(latent_shape[0].1.len(), 4);
    let cond_shape = safetensors_shapes(&dirs.out.join("cond.safetensors"));
    assert_eq!(cond_shape[0].0, "conditioning");
    assert_eq!(cond_shape[0].1.len(), 3);

    let load = dirs.out.join("load.ron");
    std::fs::write(
        &load,
        format!(
            r#"Workflow(version: 1, nodes: {{
            "load": Node(kind: "Load"),
            "latent": Node(kind: "LoadLatent", inputs: {{"path": Text({:?})}}),
            "decode": Node(kind: "Decode", inputs: {{"vae": Link("load", "vae"), "latent": Link("latent", "latent")}}),
            "export": Node(kind: "Export", inputs: {{"image": Link("decode", "image"), "path": Text("reloaded")}}),
        }})"#,
            latent_path.to_str().unwrap()
        ),
    )
    .unwrap();
    let no_cache = Dirs {
        out: dirs.out.clone(),
        cache: dirs.cache.join("unused"),
        _root: tempfile::tempdir().unwrap(),
    };
    run(&no_cache, &[load.to_str().unwrap()], &[]);
    let pixels = |name: &str| {
        veetance_imaging::read_png_rgba(&std::fs::read(dirs.out.join(name)).unwrap())
            .unwrap()
            .0
    };
    assert_eq!(pixels("direct.png"), pixels("reloaded.png"));

    // A file without the expected tensor is a clear error, not a crash.
    let out = veetance(&[
        "run",
        "--no-cache",
        "--out",
        dirs.out.to_str().unwrap(),
        load.to_str().unwrap(),
        "--set",
        &format!(
            "latent.path={}",
            dirs.out.join("cond.safetensors").display()
        ),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("has no tensor `latent` (it has: conditioning)"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_changed_lora_strength_reruns_only_the_adapter_and_what_follows() {
    let dirs = dirs();
    let changed = dirs.out.parent().unwrap().join("lora_half.ron");
    let source = std::fs::read_to_string(repo().join("tests/data/lora.ron")).unwrap();
    std::fs::write(
        &changed,
        source.replace("\"strength\": Float(1.0)", "\"strength\": Float(0.5)"),
    )
    .unwrap();
    let changed = changed.to_str().unwrap();
    // One process, as an editor session is: the loaded model stays in the pool.
    let out = run(&dirs, &["tests/data/lora.ron", changed], &["--json"]);
    let trace = trace(&out.stdout, changed);
    assert_eq!(sorted_nodes(&trace, "cached"), ["encode", "load"]);
    assert_eq!(
        sorted_nodes(&trace, "node_started"),
        ["decode", "export", "lora", "sample"]
    );
}

#[test]
fn a_lora_at_strength_zero_draws_what_the_model_alone_draws() {
    let dirs = dirs();
    let source = std::fs::read_to_string(repo().join("tests/data/lora.ron")).unwrap();
    let without = dirs.out.parent().unwrap().join("without.ron");
    std::fs::write(
        &without,
        source
            .replace(
                "\"model\": Link(\"lora\", \"model\")",
                "\"model\": Link(\"load\", \"model\")",
            )
            .replace("\"path\": Text(\"lora\")", "\"path\": Text(\"without\")"),
    )
    .unwrap();
    run(
        &dirs,
        &["tests/data/lora.ron", without.to_str().unwrap()],
        &["--set", "lora.strength=0"],
    );
    let pixels = |name: &str| {
        let bytes = std::fs::read(dirs.out.join(name)).unwrap();
        veetance_imaging::read_png_rgba(&bytes)
            .unwrap()
            .0
            .into_raw()
    };
    assert_eq!(pixels("lora.png"), pixels("without.png"));
    run(
        &dirs,
        &["tests/data/lora.ron"],
        &["--set", "lora.strength=1"],
    );
    assert_ne!(pixels("lora_00001.png"), pixels("without.png"));
}
