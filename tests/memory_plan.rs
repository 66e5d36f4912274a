//! The memory planner end to end on the tiny model, with the CPU standing in for a GPU of the
//! budget's size: a budget that fits keeps everything resident, a smaller one streams
//! transformer blocks and still gives the same picture, and one nothing fits is refused before
//! anything runs.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers may panic

mod common;

use std::path::Path;
use std::process::Output;

use common::{text, veetance};

fn run(out: &Path, budget: &str, json: bool) -> Output {
    let mut args = vec![
        "run",
        "workflows/txt2img.ron",
        "--out",
        out.to_str().unwrap(),
        "--no-cache",
        "--device",
        "cpu",
        "--vram-budget",
        budget,
    ];
    if json {
        args.push("--json");
    }
    veetance(&args)
}

/// The `memory_plan` event of a `--json` run.
fn plan_of(out: &Output) -> serde_json::Value {
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    text(&out.stdout)
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
        .find(|event| event["event"] == "memory_plan")
        .expect("a memory_plan event")["plan"]
        .clone()
}

fn part<'a>(plan: &'a serde_json::Value, label: &str) -> &'a serde_json::Value {
    plan["parts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["part"]["label"] == label)
        .unwrap_or_else(|| panic!("no {label} in {plan}"))
}

fn picture(dir: &Path) -> Vec<u8> {
    let bytes = std::fs::read(dir.join("txt2img.png")).unwrap();
    veetance_imaging::read_png_rgba(&bytes)
        .unwrap()
        .0
        .into_raw()
}

#[test]
fn a_tight_vram_budget_streams_transformer_blocks_and_draws_the_same_picture() {
    let root = tempfile::tempdir().unwrap();
    let roomy = root.path().join("roomy");
    let plan = plan_of(&run(&roomy, "64GiB", true));
    let transformer = part(&plan, "transformer");
    assert_eq!(transformer["placement"]["kind"], "resident", "{plan}");

    // Room for every node's peak but three quarters of the transformer's blocks (the text
    // encoder's few layers take some of the room back).
    let peak = plan["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["peak_bytes"].as_u64().unwrap())
        .max()
        .unwrap();
    let blocks = transformer["part"]["layer_bytes"].as_u64().unwrap();
    let half_blocks = blocks / 2;
    let budget = (peak - blocks * 3 / 4).to_string();
    let tight = root.path().join("tight");
    let plan = plan_of(&run(&tight, &budget, true));
    let transformer = part(&plan, "transformer");
    assert_eq!(transformer["placement"]["kind"], "streamed", "{plan}");
    assert!(transformer["placement"]["streamed_bytes"].as_u64().unwrap() >= half_blocks);
    for node in plan["nodes"].as_array().unwrap() {
        assert!(node["peak_bytes"].as_u64().unwrap() <= budget.parse::<u64>().unwrap());
    }
    assert_eq!(
        picture(&roomy),
        picture(&tight),
        "streamed blocks changed the picture"
    );

    // People see the plan before the run and again under the summary.
    let shown = run(&root.path().join("shown"), &budget, false);
    assert_eq!(shown.status.code(), Some(0), "{}", text(&shown.stderr));
    let stdout = text(&shown.stdout);
    assert!(
        stdout.contains("memory plan for a VRAM budget of"),
        "{stdout}"
    );
    assert!(
        stdout.contains("transformer:") && stdout.contains("streamed from RAM per pass"),
        "{stdout}"
    );
}

#[test]
fn a_budget_no_node_fits_even_streamed_is_refused_before_anything_runs() {
    let root = tempfile::tempdir().unwrap();
    let out = run(root.path(), "1MiB", false);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stdout));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("even with every model layer streamed"),
        "{stderr}"
    );
    assert!(stderr.contains("1.0 MiB"), "{stderr}");
    assert!(stderr.contains("--vram-budget"), "{stderr}");
    assert!(!root.path().join("txt2img.png").exists());
}

#[test]
fn validate_shows_the_plan_a_run_would_make_or_why_nothing_fits() {
    let out = veetance(&[
        "validate",
        "workflows/golden.ron",
        "--json",
        "--device",
        "cpu",
        "--vram-budget",
        "64GiB",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_str(text(&out.stdout).trim()).unwrap();
    let plan = &report["memory_plan"];
    for label in ["transformer", "text encoder", "VAE"] {
        assert_eq!(part(plan, label)["placement"]["kind"], "resident", "{plan}");
    }
    let nodes: Vec<&str> = plan["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["node"].as_str().unwrap())
        .collect();
    assert_eq!(nodes, ["encode", "sample", "decode"]);

    let refused = veetance(&[
        "validate",
        "workflows/golden.ron",
        "--device",
        "cpu",
        "--vram-budget",
        "10MiB",
    ]);
    assert_eq!(refused.status.code(), Some(2));
    let stderr = text(&refused.stderr);
    assert!(stderr.contains("needs at least"), "{stderr}");
    assert!(stderr.contains("for the GPU runtime"), "{stderr}");
}
