//! The golden workflow from model files laid out as people have them: the built-in tiny model
//! converted to a ComfyUI models folder (a GGUF transformer with its `model_index.json`, an FP8
//! text encoder with its tokenizer, a VAE with its config) and to BFL's release layout (the BFL
//! single file beside `text_encoder/`, `tokenizer/` and `ae.safetensors`), run by the binary with
//! names from `--models-dir`, against the same workflow on the tiny model's own folder.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers may panic

mod common;

use std::path::Path;

use common::{command, convert, text};

fn run_golden(out: &Path, extra: &[&str]) -> String {
    let mut args = vec![
        "run".to_string(),
        "workflows/golden.ron".into(),
        "--no-cache".into(),
        "--out".into(),
        out.display().to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let output = command().args(&args).output().unwrap();
    let stdout = text(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{}",
        text(&output.stderr)
    );
    stdout
}

fn pixels(path: &Path) -> Vec<u8> {
    image::open(path).unwrap().to_rgb8().into_raw()
}

/// Peak signal-to-noise ratio in dB between two 8-bit images.
fn psnr(a: &[u8], b: &[u8]) -> f64 {
    assert_eq!(a.len(), b.len());
    let mse = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| (f64::from(x) - f64::from(y)).powi(2))
        .sum::<f64>()
        / a.len() as f64;
    if mse == 0.0 {
        f64::INFINITY
    } else {
        10.0 * (255.0f64 * 255.0 / mse).log10()
    }
}

#[test]
fn golden_workflow_runs_from_a_comfyui_folder_and_a_bfl_release_layout() {
    let root = tempfile::tempdir().unwrap();
    let models = root.path().join("models");
    convert::tiny_as_comfyui(&models).unwrap();
    let bfl = root.path().join("bfl");
    convert::tiny_as_bfl_release(&bfl).unwrap();

    let reference_out = root.path().join("reference");
    run_golden(&reference_out, &[]);
    let reference = pixels(&reference_out.join("golden.png"));

    let comfy_out = root.path().join("comfy");
    let stdout = run_golden(
        &comfy_out,
        &[
            "--models-dir",
            models.to_str().unwrap(),
            "--set",
            "load.model=diffusion_models/tiny-Q8_0.gguf",
        ],
    );
    assert!(stdout.contains("Load"), "{stdout}");
    let comfy = psnr(&pixels(&comfy_out.join("golden.png")), &reference);
    eprintln!(
        "ComfyUI folder (GGUF Q8_0 transformer, FP8 text encoder): PSNR {comfy:.1} dB against the f16 folder"
    );
    assert!(comfy > 25.0, "PSNR {comfy:.1} dB");

    let bfl_out = root.path().join("bfl-out");
    let file = bfl.join("flux-2-tiny.safetensors");
    run_golden(
        &bfl_out,
        &["--set", &format!("load.model={}", file.display())],
    );
    let bfl_psnr = psnr(&pixels(&bfl_out.join("golden.png")), &reference);
    eprintln!("BFL release layout: PSNR {bfl_psnr:.1} dB against the folder");
    assert!(bfl_psnr > 40.0, "PSNR {bfl_psnr:.1} dB");
}

#[test]
fn models_command_lists_what_the_folder_holds() {
    let root = tempfile::tempdir().unwrap();
    let models = root.path().join("models");
    convert::tiny_as_comfyui(&models).unwrap();
    std::fs::write(models.join("notes.safetensors"), b"not a model").unwrap();
    let output = command()
        .args(["models", "--models-dir", models.to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = text(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    for expected in [
        "diffusion_models/tiny-Q8_0.gguf",
        "transformer: FLUX.2 (custom size)",
        "Q8_0",
        "text_encoders/tiny-qwen3-fp8.safetensors",
        "text encoder: Qwen3",
        "fp8_e4m3",
        "vae/tiny-vae.safetensors",
        "vae: FLUX.2",
        "skipped:",
        "notes.safetensors",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in\n{stdout}"
        );
    }
}
