//! Streamed layers (a model placed on a device with part of its layers left in RAM and copied
//! in during each forward pass) compute exactly what the resident model computes. On the CPU
//! the "device" is the CPU itself, but the streamed layers still run from fresh copies.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use candle_core::quantized::GgmlDType;
use candle_core::{DType, Device, Tensor};
use veetance_models::flux2::{image_ids, text_ids};
use veetance_models::linear::CompactFormat;
use veetance_models::qwen3::{Qwen3Config, Qwen3Encoder};
use veetance_models::weights::QuantMode;
use veetance_models::{Flux2Config, Flux2Transformer};

fn values(t: &Tensor) -> Vec<f32> {
    t.to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

fn transformer_output(model: &Flux2Transformer) -> Vec<f32> {
    let cfg = model.config().clone();
    let device = Device::Cpu;
    let (grid_h, grid_w, txt_len) = (2, 3, 5);
    // A deterministic pattern, so every model compared sees the same inputs.
    let pattern = |dims: (usize, usize, usize), scale: f64, offset: f64| {
        Tensor::arange(0f32, (dims.0 * dims.1 * dims.2) as f32, &device)
            .unwrap()
            .reshape(dims)
            .unwrap()
            .affine(scale, offset)
            .unwrap()
            .sin()
            .unwrap()
    };
    let img = pattern((1, grid_h * grid_w, cfg.in_channels), 0.013, -0.4);
    let txt = pattern((1, txt_len, cfg.joint_attention_dim), 0.007, 0.1);
    let out = model
        .forward(
            &img,
            &image_ids(grid_h, grid_w, &device).unwrap(),
            &txt,
            &text_ids(txt_len, &device).unwrap(),
            &Tensor::new(&[0.7f32], &device).unwrap(),
            None,
        )
        .unwrap();
    values(&out)
}

#[test]
fn a_transformer_with_streamed_blocks_computes_what_the_resident_one_does() {
    let model = Flux2Transformer::random(Flux2Config::tiny(), DType::F32, &Device::Cpu).unwrap();
    let expected = transformer_output(&model);
    let layers = model.layer_bytes();
    let total: u64 = layers.iter().sum();
    for resident in [0, total / 3, total - 1] {
        let placed = model.placed(&Device::Cpu, resident).unwrap();
        let streaming = placed.streaming().expect("some blocks stream");
        assert!(streaming.streamed_count() >= 1);
        assert_eq!(
            transformer_output(&placed),
            expected,
            "resident budget {resident}"
        );
        assert!(streaming.bytes_copied() > 0);
    }
    // With room for every block nothing streams.
    assert!(
        model
            .placed(&Device::Cpu, total)
            .unwrap()
            .streaming()
            .is_none()
    );
}

#[test]
fn compact_blocks_stream_at_their_compact_size() {
    let dense = Flux2Transformer::random(Flux2Config::tiny(), DType::F32, &Device::Cpu).unwrap();
    for format in [CompactFormat::Fp8E4M3, CompactFormat::Ggml(GgmlDType::Q8_0)] {
        let compact = dense.with_compact_blocks(format, QuantMode::Exact).unwrap();
        let expected = transformer_output(&compact);
        let placed = compact.placed(&Device::Cpu, 0).unwrap();
        assert_eq!(transformer_output(&placed), expected, "{format:?}");
        let streaming = placed.streaming().unwrap();
        let total: u64 = compact.layer_bytes().iter().sum();
        // One forward pass copies each streamed block once; GGUF blocks are moved by candle
        // and not counted, FP8 bytes are counted at one byte per weight.
        assert!(streaming.bytes_copied() <= total, "{format:?}");
    }
}

#[test]
fn a_text_encoder_with_streamed_layers_encodes_what_the_resident_one_does() {
    let cfg = Qwen3Config::tiny();
    let encoder = Qwen3Encoder::random(cfg.clone(), &[1, 2, 3], DType::F32, &Device::Cpu).unwrap();
    let ids: Vec<u32> = (0..12)
        .map(|i| ((i * 7919 + 13) % cfg.vocab_size) as u32)
        .collect();
    let ids = Tensor::from_vec(ids, (2, 6), &Device::Cpu).unwrap();
    let mask = Tensor::new(&[[1u32, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]], &Device::Cpu).unwrap();
    let expected = values(&encoder.forward(&ids, &mask).unwrap());
    let total: u64 = encoder.layer_bytes().iter().sum();
    for resident in [0, total / 2] {
        let placed = encoder.placed(&Device::Cpu, resident).unwrap();
        assert!(placed.streaming().is_some());
        assert_eq!(values(&placed.forward(&ids, &mask).unwrap()), expected);
    }
}

#[test]
fn the_header_profile_matches_the_loaded_model_layer_by_layer() {
    use veetance_models::profile::BundleProfile;
    use veetance_models::{Bundle, BundleSources};
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-klein");
    let sources = BundleSources::resolve(&dir, None, None).unwrap();
    let profile = BundleProfile::read(&sources, DType::F32).unwrap();
    let bundle = Bundle::load(&dir, DType::F32, &Device::Cpu).unwrap();
    assert_eq!(
        profile.transformer.layer_bytes,
        bundle.transformer.layer_bytes()
    );
    // The loaded model adds LayerNorm's constant ones and zeros (hidden size each).
    let hidden = bundle.transformer.config().hidden_size() as u64;
    assert_eq!(
        profile.transformer.total_bytes() + 2 * hidden * 4,
        bundle.transformer.weight_bytes()
    );
    assert_eq!(
        profile.text_encoder.layer_bytes,
        bundle.text_encoder.encoder().layer_bytes()
    );
    assert!(profile.vae_bytes > 0);
    assert!(profile.sample_working_bytes(16) > profile.sample_working_bytes(4));
}

#[test]
fn the_header_profile_counts_compact_layers_at_their_compact_size() {
    use veetance_models::profile::BundleProfile;
    use veetance_models::{Bundle, BundleSources, LoadOptions};
    let formats = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/formats");
    let te = formats.join("gguf/te-Q8_0.gguf");
    let vae = formats.join("comfyui/vae/tiny-vae.safetensors");
    for dit in [
        "gguf/dit-Q8_0.gguf",
        "gguf/dit-Q4_0.gguf",
        "fp8/dit-e4m3_scaled.safetensors",
    ] {
        let mut sources =
            BundleSources::resolve(&formats.join(dit), Some(&te), Some(&vae)).unwrap();
        // The tiny encoder has four layers; klein reads 9, 18 and 27 of 36.
        sources.index.text_encoder_out_layers = Some(vec![1, 2, 3]);
        let profile = BundleProfile::read(&sources, DType::F32).unwrap();
        let options = LoadOptions {
            dtype: DType::F32,
            device: Device::Cpu,
            transformer_device: Device::Cpu,
            text_encoder_device: Device::Cpu,
            quant: QuantMode::Exact,
        };
        let bundle = Bundle::load_sources(sources, &options).unwrap();
        assert_eq!(
            profile.transformer.layer_bytes,
            bundle.transformer.layer_bytes(),
            "{dit}"
        );
        assert_eq!(
            profile.text_encoder.layer_bytes,
            bundle.text_encoder.encoder().layer_bytes(),
            "{dit}"
        );
    }
}
