//! Files that are not what Load needs: other architectures, adapters, hostile or truncated GGUF
//! headers, unsupported quantization types, FIFOs, mismatched parts. Each must give an error that
//! names the file and says what was expected, before any large allocation, and never a panic.

// Helpers outside #[test] functions are test code too; clippy.toml only relaxes the #[test] bodies.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};

use anyhow::Result;
use candle_core::{DType, Device};
use common::{fixtures, sparse_safetensors};
use veetance_models::weights::{TensorSpec, Weights};
use veetance_models::{BundleSources, Flux2Config, Flux2Transformer, QuantMode};

fn error_of<T>(result: veetance_models::Result<T>) -> String {
    match result {
        Ok(_) => panic!("a bad file was accepted"),
        Err(err) => err.to_string(),
    }
}

fn assert_mentions(message: &str, needles: &[&str]) {
    for needle in needles {
        assert!(
            message.contains(needle),
            "{message:?} should mention {needle:?}"
        );
    }
}

/// The tensors of a FLUX.1 transformer in BFL names (per-block modulation, no shared modulation).
fn flux1_specs() -> Vec<TensorSpec> {
    vec![
        TensorSpec::new("img_in.weight", &[3072, 64]),
        TensorSpec::new("txt_in.weight", &[3072, 4096]),
        TensorSpec::new("double_blocks.0.img_mod.lin.weight", &[18432, 3072]),
        TensorSpec::new("double_blocks.0.img_attn.qkv.weight", &[9216, 3072]),
        TensorSpec::new("double_blocks.0.img_attn.norm.key_norm.scale", &[128]),
        TensorSpec::new("single_blocks.0.linear1.weight", &[21504, 3072]),
    ]
}

#[test]
fn other_architectures_and_adapters_are_named_not_loaded() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let flux1 = sparse_safetensors(dir.path(), "flux1-dev.safetensors", &flux1_specs())?;
    let sdxl = sparse_safetensors(
        dir.path(),
        "sdxl.safetensors",
        &[
            TensorSpec::new(
                "model.diffusion_model.input_blocks.0.0.weight",
                &[320, 4, 3, 3],
            ),
            TensorSpec::new("first_stage_model.decoder.conv_in.weight", &[512, 4, 3, 3]),
        ],
    )?;
    let lora = sparse_safetensors(
        dir.path(),
        "style-lora.safetensors",
        &[
            TensorSpec::new(
                "transformer.single_transformer_blocks.0.attn.to_out.lora_A.weight",
                &[16, 12288],
            ),
            TensorSpec::new(
                "transformer.single_transformer_blocks.0.attn.to_out.lora_B.weight",
                &[3072, 16],
            ),
        ],
    )?;
    let mut dev = Flux2Config::klein_4b();
    dev.num_attention_heads = 48;
    dev.joint_attention_dim = 15360;
    dev.num_layers = 1;
    dev.num_single_layers = 1;
    let dev_file =
        sparse_safetensors(dir.path(), "flux2-dev.safetensors", &dev.bfl_tensor_specs())?;
    for (file, needles) in [
        (&flux1, vec!["FLUX.1", "flux1-dev.safetensors"]),
        (&sdxl, vec!["Stable Diffusion", "sdxl.safetensors"]),
        (&lora, vec!["LoRA", "style-lora.safetensors"]),
        (&dev_file, vec!["FLUX.2 [dev]", "Mistral"]),
    ] {
        let message = error_of(BundleSources::resolve(file, None, None));
        assert_mentions(&message, &needles);
    }
    Ok(())
}

#[test]
fn a_text_encoder_given_as_the_model_says_which_input_it_belongs_to() {
    let te = fixtures().join("formats/comfyui/text_encoders/tiny-qwen3.safetensors");
    let message = error_of(BundleSources::resolve(&te, None, None));
    assert_mentions(
        &message,
        &["text encoder", "`text_encoder`", "tiny-qwen3.safetensors"],
    );
}

#[test]
fn mismatched_shapes_are_listed_with_expected_and_found() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut cfg = Flux2Config::klein_4b();
    cfg.num_layers = 1;
    cfg.num_single_layers = 1;
    let mut specs = cfg.bfl_tensor_specs();
    for spec in &mut specs {
        if spec.name == "double_blocks.0.img_attn.proj.weight" {
            spec.shape = vec![3072, 3000];
        }
    }
    let path = sparse_safetensors(dir.path(), "broken.safetensors", &specs)?;
    let message = error_of(Flux2Transformer::load(
        &path,
        DType::F32,
        &Device::Cpu,
        QuantMode::Exact,
    ));
    assert_mentions(
        &message,
        &[
            "double_blocks.0.img_attn.proj.weight: expected [3072, 3072], found [3072, 3000]",
            "broken.safetensors",
        ],
    );
    Ok(())
}

#[test]
fn a_text_encoder_of_the_wrong_width_is_refused_by_name() -> Result<()> {
    // The tiny-klein transformer takes 96 conditioning channels; a klein-4B-width encoder makes 7680.
    let dir = tempfile::tempdir()?;
    let qwen = veetance_models::qwen3::Qwen3Config::qwen3_4b();
    let mut specs = veetance_models::qwen3::qwen3_tensor_specs(&qwen, "model.", 2, false);
    specs.retain(|s| !s.name.contains("layers.1."));
    let te = sparse_safetensors(dir.path(), "qwen_3_4b.safetensors", &specs)?;
    let model = fixtures().join("formats/comfyui/diffusion_models/tiny-klein.safetensors");
    let sources = BundleSources::resolve(&model, Some(&te), None)?;
    let message = error_of(veetance_models::Bundle::load_sources(
        sources,
        &veetance_models::LoadOptions::new(DType::F32, &Device::Cpu),
    ));
    assert_mentions(
        &message,
        &[
            "does not belong to this transformer",
            "qwen_3_4b.safetensors",
        ],
    );
    Ok(())
}

/// GGUF bytes: header, metadata (string values only), tensor directory, padding, `data`.
fn gguf_bytes(
    n_tensors_claimed: u64,
    tensors: &[(&str, &[u64], u32, u64)],
    data: &[u8],
) -> Vec<u8> {
    let mut b = b"GGUF".to_vec();
    b.extend(3u32.to_le_bytes());
    b.extend(n_tensors_claimed.to_le_bytes());
    b.extend(1u64.to_le_bytes());
    let string = |b: &mut Vec<u8>, s: &str| {
        b.extend((s.len() as u64).to_le_bytes());
        b.extend(s.as_bytes());
    };
    string(&mut b, "general.architecture");
    b.extend(8u32.to_le_bytes());
    string(&mut b, "flux");
    for (name, dims, ty, offset) in tensors {
        string(&mut b, name);
        b.extend((dims.len() as u32).to_le_bytes());
        for d in *dims {
            b.extend(d.to_le_bytes());
        }
        b.extend(ty.to_le_bytes());
        b.extend(offset.to_le_bytes());
    }
    while !b.len().is_multiple_of(32) {
        b.push(0);
    }
    b.extend_from_slice(data);
    b
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn hostile_gguf_headers_are_refused_before_allocating() {
    let dir = tempfile::tempdir().unwrap();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("short.gguf", b"GGU".to_vec(), "shorter than"),
        ("magic.gguf", b"GGML\x03\0\0\0".to_vec(), "no GGUF magic"),
        (
            "count.gguf",
            gguf_bytes(1 << 60, &[], &[]),
            "more than the file can hold",
        ),
        (
            "truncated.gguf",
            gguf_bytes(1, &[("w", &[32, 4], 0, 0)], &[0u8; 16]),
            "runs past the end",
        ),
        (
            "dims.gguf",
            gguf_bytes(1, &[("w", &[1, 1, 1, 1, 1], 0, 0)], &[]),
            "dimensions",
        ),
        (
            "blocks.gguf",
            gguf_bytes(1, &[("w", &[33, 1], 8, 0)], &[0u8; 64]),
            "whole Q8_0 blocks",
        ),
        (
            "overflow.gguf",
            gguf_bytes(1, &[("w", &[u64::MAX / 2, 4], 0, 0)], &[]),
            "w",
        ),
    ];
    for (name, bytes, needle) in cases {
        let path = write(dir.path(), name, &bytes);
        let message = error_of(Weights::open(&path));
        assert_mentions(&message, &["invalid GGUF file", needle, name]);
    }
    // A string claiming 2^62 bytes: the length is checked against the file before anything else.
    let mut huge = b"GGUF".to_vec();
    huge.extend(3u32.to_le_bytes());
    huge.extend(0u64.to_le_bytes());
    huge.extend(1u64.to_le_bytes());
    huge.extend((1u64 << 62).to_le_bytes());
    huge.extend([0u8; 64]);
    let path = write(dir.path(), "string.gguf", &huge);
    assert_mentions(
        &error_of(Weights::open(&path)),
        &["longer than the file allows"],
    );
}

#[test]
fn gguf_tensors_of_unsupported_types_are_named_when_used() {
    let dir = tempfile::tempdir().unwrap();
    // IQ4_XS (type 23), common in text-encoder GGUFs: the file opens (its header is valid), and
    // reading the tensor names the tensor and the type.
    let path = write(
        dir.path(),
        "iq.gguf",
        &gguf_bytes(
            1,
            &[("blk.0.attn_q.weight", &[256, 4], 23, 0)],
            &[0u8; 1024],
        ),
    );
    let weights = Weights::open(&path).unwrap();
    let message = error_of(weights.raw("blk.0.attn_q.weight"));
    assert_mentions(
        &message,
        &["blk.0.attn_q.weight", "IQ4_XS", "cannot read", "iq.gguf"],
    );
}

#[cfg(unix)]
#[test]
fn a_fifo_named_as_a_checkpoint_is_an_error_not_a_hang() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("model.safetensors");
    let status = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(status.success());
    let message = error_of(Weights::open(&fifo));
    assert_mentions(&message, &["not a regular file", "model.safetensors"]);
    let gguf = dir.path().join("model.gguf");
    std::process::Command::new("mkfifo")
        .arg(&gguf)
        .status()
        .unwrap();
    assert_mentions(&error_of(Weights::open(&gguf)), &["not a regular file"]);
}

#[test]
fn a_folder_that_is_no_checkpoint_is_named_not_walked() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), "hello").unwrap();
    let message = error_of(BundleSources::resolve(dir.path(), None, None));
    assert_mentions(&message, &["not a model folder", "model_index.json"]);
}
