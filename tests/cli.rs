//! End-to-end tests of the `veetance` binary: exit codes, diagnostics, node listing, bench.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers may panic

mod common;

use std::path::Path;

use common::{command, repo, text, veetance};

#[test]
fn validate_reports_every_problem_in_a_broken_workflow_and_exits_2() {
    let out = veetance(&["validate", "tests/data/broken.ron"]);
    assert_eq!(out.status.code(), Some(2));
    insta::assert_snapshot!(text(&out.stderr));
}

#[test]
fn validate_shows_line_and_column_of_a_syntax_error() {
    let out = veetance(&["validate", "tests/data/syntax_error.ron"]);
    assert_eq!(out.status.code(), Some(2));
    insta::assert_snapshot!(text(&out.stderr), @r#"
    error[syntax]: expected a comma after this
     --> tests/data/syntax_error.ron:4:67
      |
    4 |         "load": Node(kind: "Load", inputs: {"model": Text("tiny")})
      |                                                                   ^
      |
    help: add `,` at the end of line 4: entries are separated by commas (the next one starts on line 5)

    tests/data/syntax_error.ron: 1 error
    "#);
}

#[test]
fn validate_json_gives_structured_diagnostics_naming_node_and_input() {
    let out = veetance(&["validate", "--json", "tests/data/broken.ron"]);
    assert_eq!(out.status.code(), Some(2));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ok"], false);
    let diagnostics = report["diagnostics"].as_array().unwrap();
    let mismatch = diagnostics
        .iter()
        .find(|d| d["code"] == "type-mismatch")
        .unwrap();
    assert_eq!(mismatch["node"], "encode");
    assert_eq!(mismatch["input"], "text_encoder");
    assert_eq!(mismatch["span"]["line"], 8);
    let codes: Vec<&str> = diagnostics
        .iter()
        .map(|d| d["code"].as_str().unwrap())
        .collect();
    for code in [
        "unknown-node-kind",
        "unknown-input",
        "not-a-choice",
        "type-mismatch",
        "missing-input",
        "unknown-link-node",
        "wrong-literal-type",
        "out-of-range",
        "unknown-link-output",
        "cycle",
    ] {
        assert!(codes.contains(&code), "{code} missing from {codes:?}");
    }
}

#[test]
fn every_shipped_workflow_validates() {
    let mut files: Vec<String> =
        std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("workflows"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "ron"))
            .map(|p| format!("workflows/{}", p.file_name().unwrap().to_string_lossy()))
            .collect();
    files.sort();
    assert!(files.iter().any(|f| f == "workflows/golden.ron"));
    let mut args = vec!["validate"];
    args.extend(files.iter().map(String::as_str));
    let out = veetance(&args);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

#[test]
fn unreadable_file_and_bad_override_exit_2_with_a_clear_message() {
    let golden_with =
        |set: &'static str| vec!["run", "--no-cache", "workflows/golden.ron", "--set", set];
    let cases = [
        (
            vec!["run", "--no-cache", "no/such/file.ron"],
            "cannot read no/such/file.ron",
        ),
        (golden_with("sample.sed=7"), "`Sample` has no input `sed`"),
        (
            golden_with("sample.seed=seven"),
            "`seven` is not a valid Int",
        ),
        (golden_with("sample.steps=0"), "out-of-range"),
        (golden_with("sampel.seed=3"), "did you mean `sample`?"),
        (golden_with("sample.sede=3"), "did you mean `seed`?"),
        (
            vec![
                "run",
                "--no-cache",
                "workflows/golden.ron",
                "--set",
                "encode.prompt=a",
                "red",
                "square",
            ],
            "--set 'encode.prompt=a red square'",
        ),
        (
            vec!["run", "--device", "cuda", "workflows/golden.ron"],
            "no CUDA support",
        ),
        (
            vec!["run", "--bogus-flag", "workflows/golden.ron"],
            "--bogus-flag",
        ),
    ];
    for (args, expected) in cases {
        let out = veetance(&args);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}

#[test]
fn nodes_json_lists_every_built_in_kind_in_full() {
    let out = veetance(&["nodes", "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let specs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut kinds: Vec<&str> = specs
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["kind"].as_str().unwrap())
        .collect();
    kinds.sort_unstable();
    assert_eq!(
        kinds,
        [
            "Compile",
            "Decode",
            "Encode",
            "EncodeImage",
            "Export",
            "LayerSplit",
            "Load",
            "LoadImage",
            "LoadLatent",
            "LoadLoRA",
            "Preview",
            "Reference",
            "SageAttention",
            "Sample",
            "SaveConditioning",
            "SaveLatent"
        ]
    );
    let sample = specs
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["kind"] == "Sample")
        .unwrap();
    let seed = sample["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "seed")
        .unwrap();
    assert_eq!(seed["data_type"], "Int");
    assert_eq!(seed["default"], serde_json::json!({"Int": 0}));
}

#[test]
fn bench_engine_prints_one_json_line_with_every_timing() {
    for shape in ["wide", "chain"] {
        let out = veetance(&["bench", "engine", "--nodes", "200", "--shape", shape]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        let line = text(&out.stdout);
        assert_eq!(line.lines().count(), 1);
        let result: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
        assert_eq!(result["nodes"], 200);
        for key in [
            "parse_ms",
            "validate_ms",
            "first_run_ms",
            "cached_run_ms",
            "partial_run_ms",
            "per_node_overhead_us",
        ] {
            assert!(result[key].as_f64().unwrap() >= 0.0, "{key}");
        }
    }
}

/// `veetance bench gpu` on the tiny model on the CPU at 64 px, one step without warm-up, JSON
/// lines, plus `extra`.
fn tiny_bench_gpu(extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "bench", "gpu", "--device", "cpu", "--tiny", "--models", "klein-4b", "--res", "64",
        "--steps", "1", "--warmup", "0", "--json",
    ];
    args.extend_from_slice(extra);
    veetance(&args)
}

#[test]
fn bench_gpu_tiny_on_cpu_prints_a_json_line_per_mode_and_end_to_end_and_appends_them_to_out() {
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("bench.jsonl");
    let out = tiny_bench_gpu(&["--e2e-repeats", "1", "--out", out_path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let mode_of = |line: &serde_json::Value| line["mode"].as_str().unwrap().to_owned();
    let modes: Vec<String> = lines.iter().map(mode_of).collect();
    assert_eq!(
        modes,
        [
            "eager",
            "sage",
            "compile",
            "compile+sage",
            "e2e-compile+sage",
            "e2e-eager"
        ]
    );
    for line in &lines {
        assert_eq!(line["impl"], "veetance");
        assert_eq!(line["gpu"], "cpu");
        assert_eq!(line["model"], "klein-4b");
        // No memory pools on CPU: the peaks are null, but present.
        assert!(line["peak_used_mib"].is_null() && line["peak_reserved_mib"].is_null());
        let timings: &[&str] = if mode_of(line).starts_with("e2e-") {
            assert_eq!(line["res"], 128);
            &["encode_s", "sample_s", "decode_s", "total_s"]
        } else {
            assert_eq!(line["res"], 64);
            &["ms_per_step", "ms_per_step_min"]
        };
        for key in timings {
            assert!(line[key].as_f64().unwrap() > 0.0, "{key} in {line}");
        }
    }
    assert_eq!(std::fs::read_to_string(&out_path).unwrap(), stdout);
}

#[test]
fn bench_gpu_measures_each_weights_format_and_names_it_in_the_results() {
    let tiny_run =
        |weights: &str| tiny_bench_gpu(&["--modes", "eager", "--no-e2e", "--weights", weights]);
    let out = tiny_run("dense,q8_0,FP8");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let weights: Vec<String> = text(&out.stdout)
        .lines()
        .map(|line| {
            let line: serde_json::Value = serde_json::from_str(line).unwrap();
            assert!(line["ms_per_step"].as_f64().unwrap() > 0.0, "{line}");
            line["weights"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(weights, ["dense", "Q8_0", "FP8"]);

    let out = tiny_run("q9_0");
    assert_ne!(out.status.code(), Some(0));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("unknown --weights `q9_0`"), "{stderr}");
    assert!(stderr.contains("q4_k"), "{stderr}");
}

#[test]
fn docs_nodes_md_is_generated_from_the_current_specs() {
    let out = veetance(&["nodes", "--markdown"]);
    assert_eq!(out.status.code(), Some(0));
    let generated = text(&out.stdout);
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/nodes.md");
    if std::env::var_os("UPDATE_DOCS").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "docs/nodes.md is stale: run `cargo run -- nodes --markdown > docs/nodes.md` (or UPDATE_DOCS=1 cargo test)"
    );
}

fn cache_bytes(dir: &Path) -> u64 {
    if !dir.exists() {
        return 0;
    }
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .flat_map(|shard| {
            std::fs::read_dir(shard.path())
                .into_iter()
                .flatten()
                .flatten()
        })
        .map(|entry| entry.metadata().unwrap().len())
        .sum()
}

#[test]
fn the_disk_cache_is_trimmed_to_its_limit_after_a_run() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let out_dir = dir.path().join("out");
    let run = |cache_max: &str| run_txt2img(&cache, &out_dir, &["--cache-max", cache_max]);
    run("10GiB");
    let kept = cache_bytes(&cache);
    assert!(kept > 0, "a run caches its outputs on disk");
    run("1KiB");
    assert!(
        cache_bytes(&cache) <= 1024,
        "trimmed from {kept} to {} bytes",
        cache_bytes(&cache)
    );
}

/// Runs txt2img with its cache and output folders and `extra` flags; it must succeed.
fn run_txt2img(cache: &Path, out_dir: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "run",
        "workflows/txt2img.ron",
        "--cache-dir",
        cache.to_str().unwrap(),
        "--out",
        out_dir.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let out = veetance(&args);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    out
}

/// txt2img with a file where the cache folder should be: every cache write fails, whoever
/// runs the test.
fn run_with_an_unwritable_cache(extra: &[&str]) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let blocked = dir.path().join("cache");
    std::fs::write(&blocked, "not a folder").unwrap();
    run_txt2img(&blocked, &dir.path().join("out"), extra)
}

#[test]
fn an_unwritable_disk_cache_is_one_warning_and_the_run_goes_on() {
    let out = run_with_an_unwritable_cache(&["--json"]);
    let warnings: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["event"] == "warning")
        .collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    let message = warnings[0]["error"].as_str().unwrap();
    assert!(
        message.contains("disk cache") && message.contains("cache"),
        "{message}"
    );
}

#[test]
fn a_missing_tiny_model_is_an_error_that_says_where_it_looked() {
    let dir = tempfile::tempdir().unwrap();
    let out = command()
        .args(["run", "workflows/txt2img.ron", "--no-cache", "--out"])
        .arg(dir.path())
        .env("VEETANCE_TINY_DIR", dir.path().join("nowhere"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("VEETANCE_TINY_DIR") && stderr.contains("nowhere"),
        "{stderr}"
    );
}

#[cfg(target_os = "linux")]
#[test]
fn output_to_a_full_disk_is_an_error_not_a_panic() {
    for args in [
        &["nodes", "--json"][..],
        &["nodes"],
        &["validate", "workflows/golden.ron"],
    ] {
        let full = std::fs::File::options()
            .write(true)
            .open("/dev/full")
            .unwrap();
        let out = command().args(args).stdout(full).output().unwrap();
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains("cannot write to standard output"),
            "{args:?}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

#[cfg(unix)]
#[test]
fn a_reader_that_goes_away_ends_the_output_quietly() {
    use std::io::Read as _;
    use std::os::unix::process::ExitStatusExt as _;
    use std::process::Stdio;

    // A pipe whose reading end is closed before the child starts, as `| head -c 0` leaves it
    // once head has exited.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let mut child = command()
        .args(["nodes", "--json"])
        .stdout(writer)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let status = child.wait().unwrap();
    // Ended by SIGPIPE, as `cat` would be: the shell reports 141 and prints nothing.
    assert_eq!(status.signal(), Some(13), "{status:?}: {stderr}");
    assert!(stderr.is_empty(), "{stderr}");
}

#[test]
fn the_summary_and_json_name_every_file_written_even_when_the_rest_is_cached() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let out_dir = dir.path().join("out");
    let run = |extra: &[&str]| text(&run_txt2img(&cache, &out_dir, extra).stdout);
    let picture = out_dir.join("txt2img.png");
    let first = run(&[]);
    assert!(
        first.contains(&format!("wrote {}", picture.display())),
        "{first}"
    );
    assert!(picture.exists());
    let second = run(&["--json"]);
    let files = second
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
        .find(|event| event["event"] == "files")
        .unwrap_or_else(|| panic!("no files event in {second}"));
    assert_eq!(
        files["files"],
        // Export always runs (never overwriting), so the cached run writes a new, numbered file.
        serde_json::json!([{
            "node": "export",
            "path": out_dir.join("txt2img_00001.png").to_str().unwrap(),
            "cached": false,
        }])
    );
}

#[test]
fn a_piped_run_still_prints_its_warnings() {
    // stderr is a pipe here: indicatif draws nothing, the lines must still come.
    let out = run_with_an_unwritable_cache(&[]);
    let stderr = text(&out.stderr);
    assert!(stderr.contains("warning:"), "{stderr}");
}

#[test]
fn a_workflow_reads_its_assets_beside_it_from_any_current_directory() {
    let dir = tempfile::tempdir().unwrap();
    let out = command()
        .current_dir(dir.path())
        .args([
            "run",
            repo().join("workflows/img2img.ron").to_str().unwrap(),
            "--no-cache",
            "--out",
            dir.path().join("out").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(dir.path().join("out/img2img.png").exists());
}
