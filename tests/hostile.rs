//! Hostile input end to end (issue: "Hostile input, found by a red-team run"): each case runs the
//! binary on input a stranger could hand a user and checks the exit code, a clear message and
//! that it ends in bounded time.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers may panic

mod common;

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use common::{command, text};

/// Runs `veetance args`, failing the test if it takes longer than `limit`.
fn run_within(limit: Duration, args: &[&str]) -> Output {
    let started = Instant::now();
    let out = command().args(args).output().unwrap();
    let elapsed = started.elapsed();
    assert!(elapsed < limit, "{args:?} took {elapsed:?}");
    out
}

#[cfg(unix)]
fn mkfifo(path: &Path) {
    let status = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success());
}

#[cfg(unix)]
#[test]
fn fifos_named_as_inputs_are_errors_not_hangs() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo.png");
    mkfifo(&fifo);
    let fifo = fifo.to_str().unwrap();
    let out_dir = dir.path().join("out");
    let out_dir = out_dir.to_str().unwrap();

    // The workflow file itself.
    let out = run_within(Duration::from_secs(20), &["run", fifo, "--out", out_dir]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("not a regular file"),
        "{}",
        text(&out.stderr)
    );

    // An image and a latent read by nodes.
    for (workflow, set) in [
        ("workflows/img2img.ron", format!("picture.path={fifo}")),
        ("workflows/golden.ron", format!("load.model={fifo}")),
    ] {
        let out = run_within(
            Duration::from_secs(60),
            &[
                "run",
                workflow,
                "--no-cache",
                "--out",
                out_dir,
                "--set",
                &set,
            ],
        );
        let stderr = text(&out.stderr);
        assert_ne!(out.status.code(), Some(0), "{workflow}: {stderr}");
        assert!(
            stderr.contains("not a regular file"),
            "{workflow}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{workflow}: {stderr}");
    }
}

/// A 1×1 PNG with one zTXt chunk per `(key, inflated size)`.
fn png_with_text(path: &Path, chunks: &[(&str, usize)]) {
    let file = std::fs::File::create(path).unwrap();
    let mut encoder = png::Encoder::new(file, 1, 1);
    encoder.set_color(png::ColorType::Rgb);
    for (key, n_bytes) in chunks {
        encoder
            .add_ztxt_chunk((*key).to_owned(), "a".repeat(*n_bytes))
            .unwrap();
    }
    let mut writer = encoder.write_header().unwrap();
    writer.write_image_data(&[1, 2, 3]).unwrap();
    writer.finish().unwrap();
}

#[test]
fn pngs_whose_text_inflates_without_bound_are_refused_quickly() {
    let dir = tempfile::tempdir().unwrap();
    // 200 chunks that each inflate to 1 MiB under another program's key: skipped unread.
    let many = dir.path().join("many.png");
    png_with_text(&many, &[("comment", 1 << 20); 200]);
    // The workflow key itself inflating to 100 MiB: refused at the 64 MiB budget.
    let one = dir.path().join("one.png");
    png_with_text(&one, &[("veetance:workflow", 100 << 20)]);

    for (path, expected) in [(&many, "no embedded veetance workflow"), (&one, "64 MiB")] {
        let out = run_within(
            Duration::from_secs(20),
            &["validate", path.to_str().unwrap()],
        );
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(expected), "{stderr}");
    }
}

#[test]
fn export_paths_cannot_leave_the_output_folder() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("out");
    // An absolute path inside the temporary folder, so a regression writes nowhere else.
    let absolute = dir.path().join("escaped-absolute");
    let absolute = absolute.to_str().unwrap();
    for path in ["", ".", "../escaped", "a/../../escaped", absolute] {
        let set = format!("export.path={path}");
        let out = run_within(
            Duration::from_secs(60),
            &[
                "run",
                "workflows/txt2img.ron",
                "--no-cache",
                "--out",
                out_dir.to_str().unwrap(),
                "--set",
                &set,
            ],
        );
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{path:?}: {stderr}");
        assert!(stderr.contains("output path"), "{path:?}: {stderr}");
    }
    // Nothing was written beside the output folder, in it, or at the absolute path (the
    // workflow was refused before any output folder was made).
    let written: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert!(written.is_empty(), "{written:?}");
}

#[test]
fn what_validates_runs_denoise_zero_and_sizes_between_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().to_str().unwrap();
    for set in [
        // Rounded down to whole tokens, as diffusers does.
        &["sample.width=70", "sample.height=17"][..],
        // Nothing left to denoise: the picture decodes from the start latent.
        &["sample.denoise=0"][..],
    ] {
        let workflow = if set[0].starts_with("sample.denoise") {
            "workflows/img2img.ron"
        } else {
            "workflows/txt2img.ron"
        };
        let mut args = vec!["run", workflow, "--no-cache", "--out", out_dir];
        for s in set {
            args.extend(["--set", s]);
        }
        let out = run_within(Duration::from_secs(60), &args);
        assert_eq!(out.status.code(), Some(0), "{set:?}: {}", text(&out.stderr));
    }
}

#[test]
fn an_export_with_nothing_to_write_is_a_validation_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("empty_export.ron");
    std::fs::write(
        &path,
        r#"Workflow(version: 1, nodes: {"export": Node(kind: "Export", inputs: {"path": Text("x")})})"#,
    )
    .unwrap();
    let out = run_within(
        Duration::from_secs(20),
        &["validate", path.to_str().unwrap()],
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("needs one of `image`, `layers`"),
        "{stderr}"
    );
}

#[test]
fn thousands_of_problems_are_reported_in_time_linear_in_their_number() {
    // 30,000 unknown inputs on one node and 3,000 unknown node kinds took minutes when each
    // report rescanned the whole file; now each costs its own snippet.
    let dir = tempfile::tempdir().unwrap();
    let inputs: Vec<String> = (0..30_000).map(|i| format!("\"x{i}\": Int(1)")).collect();
    let many_inputs = dir.path().join("inputs.ron");
    std::fs::write(
        &many_inputs,
        format!(
            "Workflow(version: 1, nodes: {{\"a\": Node(kind: \"Sample\", inputs: {{{}}})}})",
            inputs.join(", ")
        ),
    )
    .unwrap();
    let kinds: Vec<String> = (0..3_000)
        .map(|i| format!("\"n{i}\": Node(kind: \"Nope{i}\")"))
        .collect();
    let many_kinds = dir.path().join("kinds.ron");
    std::fs::write(
        &many_kinds,
        format!("Workflow(version: 1, nodes: {{{}}})", kinds.join(", ")),
    )
    .unwrap();
    for path in [&many_inputs, &many_kinds] {
        let path = path.to_str().unwrap();
        let out = run_within(Duration::from_secs(30), &["validate", path]);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2));
        assert!(
            stderr.contains("more problems (`--json` lists every one)"),
            "{path}"
        );
        let out = run_within(Duration::from_secs(30), &["validate", "--json", path]);
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(report["diagnostics"].as_array().unwrap().len() >= 3_000);
    }
}

#[test]
fn an_empty_latent_is_refused_where_it_is_read_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let latent = dir.path().join("empty.safetensors");
    let zeros = candle_core::Tensor::zeros(
        (1, 128, 0, 0),
        candle_core::DType::F32,
        &candle_core::Device::Cpu,
    )
    .unwrap();
    candle_core::safetensors::save(
        &std::collections::HashMap::from([("latent".to_owned(), zeros)]),
        &latent,
    )
    .unwrap();
    let workflow = dir.path().join("empty.ron");
    std::fs::write(
        &workflow,
        format!(
            r#"Workflow(version: 1, nodes: {{
                "latent": Node(kind: "LoadLatent", inputs: {{"path": Text("{}")}}),
                "load": Node(kind: "Load", inputs: {{}}),
                "decode": Node(kind: "Decode", inputs: {{"vae": Link("load", "vae"), "latent": Link("latent", "latent")}}),
                "export": Node(kind: "Export", inputs: {{"image": Link("decode", "image")}}),
            }})"#,
            latent.display()
        ),
    )
    .unwrap();
    let out = run_within(
        Duration::from_secs(60),
        &[
            "run",
            workflow.to_str().unwrap(),
            "--no-cache",
            "--out",
            dir.path().join("out").to_str().unwrap(),
        ],
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("holds no values"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn a_workflow_from_a_picture_reads_only_inside_allowed_folders() {
    let dir = tempfile::tempdir().unwrap();
    let (inbox, elsewhere) = (dir.path().join("inbox"), dir.path().join("elsewhere"));
    std::fs::create_dir_all(&inbox).unwrap();
    std::fs::create_dir_all(&elsewhere).unwrap();
    let secret = elsewhere.join("secret.png");
    let pixels = veetance_imaging::RgbImage::new(8, 8);
    let no_text: &[(&str, &str)] = &[];
    veetance_imaging::write_png(std::fs::File::create(&secret).unwrap(), &pixels, no_text).unwrap();
    let workflow = format!(
        r#"Workflow(version: 1, nodes: {{
            "read": Node(kind: "LoadImage", inputs: {{"path": Text("{}")}}),
            "export": Node(kind: "Export", inputs: {{"image": Link("read", "image"), "path": Text("copy")}}),
        }})"#,
        secret.display()
    );
    let picture = inbox.join("from-a-stranger.png");
    veetance_imaging::write_png(
        std::fs::File::create(&picture).unwrap(),
        &pixels,
        &[(veetance_imaging::KEY_WORKFLOW, workflow.as_str())],
    )
    .unwrap();
    let out_dir = inbox.join("out");
    let run = |extra: &[&str]| {
        let mut args = vec![
            "run",
            picture.to_str().unwrap(),
            "--no-cache",
            "--out",
            out_dir.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        run_within(Duration::from_secs(30), &args)
    };
    let out = run(&[]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("is not allowed") && stderr.contains("secret.png"),
        "{stderr}"
    );
    assert!(!out_dir.join("copy.png").exists());
    // The user can widen the policy for one folder, or trust the picture.
    let allowed = run(&["--allow-read", elsewhere.to_str().unwrap()]);
    assert_eq!(allowed.status.code(), Some(0), "{}", text(&allowed.stderr));
    let trusted = run(&["--trust"]);
    assert_eq!(trusted.status.code(), Some(0), "{}", text(&trusted.stderr));
}

/// Copies the built-in tiny model to `dir` with `template` as its chat template.
fn tiny_with_template(dir: &Path, template: &str) {
    let tiny = common::repo().join("models/tiny");
    for entry in walk(&tiny) {
        let relative = entry.strip_prefix(&tiny).unwrap();
        let target = dir.join(relative);
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::copy(&entry, &target).unwrap();
    }
    std::fs::write(dir.join("tokenizer/chat_template.jinja"), template).unwrap();
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
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

#[cfg(unix)]
#[test]
fn a_chat_template_that_doubles_a_string_ends_with_an_error_in_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    // Each iteration is one instruction that doubles a string: fuel cannot stop it, the child
    // process's memory limit does.
    tiny_with_template(
        &model,
        "{% set s = namespace(v='a' * 10000000) %}{% for i in range(40) %}{% set s.v = s.v ~ s.v %}{% endfor %}{{ s.v|length }}",
    );
    let out_dir = dir.path().join("out");
    let out = run_within(
        Duration::from_secs(60),
        &[
            "run",
            "workflows/txt2img.ron",
            "--no-cache",
            "--device",
            "cpu",
            "--out",
            out_dir.to_str().unwrap(),
            "--set",
            &format!("load.model={}", model.display()),
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("node `encode` failed"), "{stderr}");
    assert!(stderr.contains("exceeded its limits"), "{stderr}");
    assert!(!out_dir.join("txt2img.png").exists());

    // The same model with its real template still draws.
    tiny_with_template(
        &model,
        &std::fs::read_to_string(common::repo().join("models/tiny/tokenizer/chat_template.jinja"))
            .unwrap(),
    );
    let out = run_within(
        Duration::from_secs(60),
        &[
            "run",
            "workflows/txt2img.ron",
            "--no-cache",
            "--device",
            "cpu",
            "--out",
            out_dir.to_str().unwrap(),
            "--set",
            &format!("load.model={}", model.display()),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}
