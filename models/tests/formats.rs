//! Checkpoint formats: the tiny checkpoint as a ComfyUI models folder, FP8 files (BFL's and
//! ComfyUI's conventions) and GGUF files (gguf-py and candle writers), each against diffusers run on
//! the same weights dequantized in f32 (`fixtures/make_format_fixtures.py`). Lossless layouts must
//! match the diffusers directory to 1e-5; compact formats must match their dequantized reference to
//! 1e-4, and their error against the original weights is printed.

// Helpers outside #[test] functions are test code too; clippy.toml only relaxes the #[test] bodies.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::PathBuf;

use anyhow::Result;
use candle_core::{DType, Device};
use common::{
    check_close, dit_forward, fixtures, format_reference, four_step_run, prompts, reference,
    rel_error,
};
use veetance_models::qwen3::{TextEncoder, TokenizerFiles};
use veetance_models::{Bundle, BundleSources, Flux2Transformer, LoadOptions, QuantMode};

fn formats() -> PathBuf {
    fixtures().join("formats")
}

fn comfy() -> PathBuf {
    formats().join("comfyui")
}

/// The tiny-klein bundle with its transformer replaced by `transformer` (a single file).
fn bundle_with_transformer(transformer: &std::path::Path, quant: QuantMode) -> Result<Bundle> {
    let mut sources = BundleSources::from_dir(&fixtures().join("tiny-klein"))?;
    sources.transformer = veetance_models::klein::Part {
        path: transformer.to_path_buf(),
        prefix: String::new(),
    };
    let options = LoadOptions {
        quant,
        ..LoadOptions::new(DType::F32, &Device::Cpu)
    };
    Ok(Bundle::load_sources(sources, &options)?)
}

#[test]
fn comfyui_models_folder_finds_its_parts_and_matches_the_diffusers_directory() -> Result<()> {
    let model = comfy().join("diffusion_models/tiny-klein.safetensors");
    let sources = BundleSources::resolve(&model, None, None)?;
    assert_eq!(
        sources.text_encoder.path,
        comfy().join("text_encoders/tiny-qwen3.safetensors")
    );
    assert_eq!(sources.vae.path, comfy().join("vae/tiny-vae.safetensors"));
    assert_eq!(
        sources.tokenizer,
        Some(comfy().join("text_encoders/tokenizer"))
    );
    assert_eq!(sources.index.text_encoder_out_layers, Some(vec![1, 2, 3]));
    let bundle = Bundle::load_sources(sources, &LoadOptions::new(DType::F32, &Device::Cpu))?;
    assert!(bundle.is_distilled);
    let prompts = prompts()?;
    let refs: Vec<&str> = prompts.iter().map(String::as_str).collect();
    check_close(
        "ComfyUI text encoder (single file, HF names)",
        &bundle.text_encoder.encode(&refs)?,
        &reference("text.embeds")?,
        1e-5,
    )?;
    let (latent, image) = four_step_run(&bundle)?;
    check_close(
        "ComfyUI folder latent",
        &latent,
        &reference("sample.latent")?,
        1e-5,
    )?;
    check_close(
        "ComfyUI folder image (BFL VAE)",
        &image,
        &reference("sample.image")?,
        1e-5,
    )?;
    Ok(())
}

/// Checks a transformer file's forward call, 4-step latent and image against the references
/// `<prefix>.dit_out`, `.latent` and `.image` (diffusers on the dequantized weights), and
/// reports the image's error against the unquantized model.
fn check_against_dequantized_reference(bundle: &Bundle, prefix: &str) -> Result<()> {
    let out = dit_forward(
        &bundle.transformer,
        &reference("dit.x_tokens")?,
        &reference("dit.cond")?,
        8,
    )?;
    check_close(
        &format!("{prefix} forward"),
        &out,
        &format_reference(&format!("{prefix}.dit_out"))?,
        1e-4,
    )?;
    let (latent, image) = four_step_run(bundle)?;
    for (what, actual) in [("latent", &latent), ("image", &image)] {
        check_close(
            &format!("{prefix} {what}"),
            actual,
            &format_reference(&format!("{prefix}.{what}"))?,
            1e-4,
        )?;
    }
    eprintln!(
        "{prefix}: image error against the unquantized model {:.3e}",
        rel_error(&image, &reference("sample.image")?)?
    );
    Ok(())
}

#[test]
fn fp8_transformers_match_diffusers_on_their_dequantized_weights() -> Result<()> {
    for name in ["e4m3_scaled", "e5m2_legacy", "e4m3_plain"] {
        let path = formats().join(format!("fp8/dit-{name}.safetensors"));
        let bundle = bundle_with_transformer(&path, QuantMode::Exact)?;
        let storage = bundle
            .transformer
            .projection_storage()
            .into_iter()
            .collect::<std::collections::BTreeSet<_>>();
        eprintln!("{name}: projections stored as {storage:?}");
        assert!(
            storage.iter().any(|s| s.starts_with("fp8")),
            "{name} kept compact"
        );
        check_against_dequantized_reference(&bundle, &format!("fp8.{name}"))?;
    }
    Ok(())
}

#[test]
fn gguf_transformers_match_diffusers_on_gguf_py_dequantized_weights() -> Result<()> {
    for name in ["Q8_0", "Q5_0", "Q4_0", "F16", "BF16"] {
        let path = formats().join(format!("gguf/dit-{name}.gguf"));
        let bundle = bundle_with_transformer(&path, QuantMode::Exact)?;
        check_against_dequantized_reference(&bundle, &format!("gguf.{name}"))?;
        if name.starts_with('Q') {
            // The fast path quantizes the activations too: a second approximation, reported apart.
            let fast = bundle_with_transformer(&path, QuantMode::Fast)?;
            let out_fast = dit_forward(
                &fast.transformer,
                &reference("dit.x_tokens")?,
                &reference("dit.cond")?,
                8,
            )?;
            let err = rel_error(
                &out_fast,
                &format_reference(&format!("gguf.{name}.dit_out"))?,
            )?;
            eprintln!("gguf {name}: quantized-matmul (fast) forward error against exact {err:.3e}");
            assert!(err < 0.1, "fast path far off: {err}");
        }
    }
    Ok(())
}

#[test]
fn gguf_k_quants_match_diffusers_on_gguf_py_dequantized_weights() -> Result<()> {
    let model = Flux2Transformer::load(
        &formats().join("gguf/dit-256-K.gguf"),
        DType::F32,
        &Device::Cpu,
        QuantMode::Exact,
    )?;
    let storage: std::collections::BTreeSet<String> =
        model.projection_storage().into_iter().collect();
    for kind in ["Q4_K", "Q5_K", "Q6_K", "Q8_0", "f32"] {
        assert!(storage.contains(kind), "{kind} in {storage:?}");
    }
    let out = dit_forward(
        &model,
        &format_reference("k256.x_tokens")?,
        &format_reference("k256.cond")?,
        4,
    )?;
    check_close(
        "K-quant forward",
        &out,
        &format_reference("k256.K.out")?,
        1e-4,
    )?;
    eprintln!(
        "K-quants: forward error against the unquantized model {:.3e}",
        rel_error(&out, &format_reference("k256.f32.out")?)?
    );
    Ok(())
}

#[test]
fn compact_text_encoders_match_transformers_on_their_dequantized_weights() -> Result<()> {
    let tokenizer = TokenizerFiles::from_dir(&fixtures().join("tiny-klein/tokenizer"))?;
    let prompts = prompts()?;
    let refs: Vec<&str> = prompts.iter().map(String::as_str).collect();
    for (file, key) in [
        ("fp8/te-e4m3-mixed.safetensors", "fp8.te.embeds"),
        ("gguf/te-Q8_0.gguf", "gguf.te.embeds"),
    ] {
        let encoder = TextEncoder::load(
            &tokenizer,
            &formats().join(file),
            &[1, 2, 3],
            DType::F32,
            &Device::Cpu,
            QuantMode::Exact,
        )?;
        let out = encoder.encode(&refs)?;
        check_close(file, &out, &format_reference(key)?, 1e-4)?;
        eprintln!(
            "{file}: error against the unquantized encoder {:.3e}",
            rel_error(&out, &reference("text.embeds")?)?
        );
    }
    Ok(())
}

#[test]
fn compact_weights_stay_compact_in_memory() -> Result<()> {
    let dense = Flux2Transformer::load(
        &comfy().join("diffusion_models/tiny-klein.safetensors"),
        DType::F32,
        &Device::Cpu,
        QuantMode::Exact,
    )?;
    for (file, max_ratio) in [
        ("fp8/dit-e4m3_scaled.safetensors", 0.6),
        ("gguf/dit-Q4_0.gguf", 0.4),
    ] {
        let model = Flux2Transformer::load(
            &formats().join(file),
            DType::F32,
            &Device::Cpu,
            QuantMode::Exact,
        )?;
        let ratio = model.weight_bytes() as f64 / dense.weight_bytes() as f64;
        eprintln!(
            "{file}: {} bytes of weights, {ratio:.2} of f32",
            model.weight_bytes()
        );
        assert!(
            ratio < max_ratio,
            "{file} uses {ratio:.2} of the f32 weights"
        );
    }
    Ok(())
}
