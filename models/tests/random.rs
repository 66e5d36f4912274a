//! Random-weight text encoders and VAEs (what `veetance bench gpu` builds) compute finite values
//! of the right shapes; transformers re-encoded in compact formats stay close to the dense one.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use candle_core::quantized::GgmlDType;
use candle_core::{DType, Device, Tensor};
use veetance_models::flux2::{image_ids, text_ids};
use veetance_models::linear::CompactFormat;
use veetance_models::qwen3::Qwen3Config;
use veetance_models::weights::QuantMode;
use veetance_models::{Flux2Config, Flux2Transformer, ModelError, TextEncoder, Vae, VaeConfig};

fn assert_finite(t: &Tensor, what: &str) {
    let values = t
        .to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert!(
        values.iter().all(|v| v.is_finite()),
        "{what} has non-finite values"
    );
}

/// Token ids `[batch, len]` spread over the vocabulary, and an all-ones mask.
fn ids_and_mask(batch: usize, len: usize, vocab: usize) -> (Tensor, Tensor) {
    let ids: Vec<u32> = (0..batch * len)
        .map(|i| ((i * 7919 + 13) % vocab) as u32)
        .collect();
    (
        Tensor::from_vec(ids, (batch, len), &Device::Cpu).unwrap(),
        Tensor::ones((batch, len), DType::U32, &Device::Cpu).unwrap(),
    )
}

#[test]
fn random_text_encoder_encodes_token_ids_but_refuses_prompts() {
    let cfg = Qwen3Config::tiny();
    let (ids, mask) = ids_and_mask(2, 16, cfg.vocab_size);
    let encoder = TextEncoder::random(cfg, &[1, 2, 3], DType::F32, &Device::Cpu).unwrap();

    let cond = encoder.encode_ids(&ids, &mask).unwrap();

    assert_eq!(cond.dims(), &[2, 16, 3 * 32]);
    assert_eq!(cond.dtype(), DType::F32);
    assert_finite(&cond, "conditioning");
    assert!(matches!(
        encoder.encode(&["a prompt"]),
        Err(ModelError::Tokenizer { .. })
    ));
}

#[test]
fn random_text_encoder_stays_finite_in_bf16_through_36_layers() {
    // klein's depth with every hidden state taken, including the last one after the final norm;
    // widths are cut down so that the test stays fast (the full-size presets were checked the
    // same way by hand).
    let mut cfg = Qwen3Config::qwen3_4b();
    cfg.hidden_size = 256;
    cfg.intermediate_size = 1024;
    cfg.num_attention_heads = 2;
    cfg.num_key_value_heads = Some(1);
    cfg.vocab_size = 1000;
    assert_eq!(cfg.num_hidden_layers, 36);
    let (ids, mask) = ids_and_mask(1, 8, cfg.vocab_size);
    let encoder = TextEncoder::random(cfg, &[9, 18, 27, 36], DType::BF16, &Device::Cpu).unwrap();

    let cond = encoder.encode_ids(&ids, &mask).unwrap();

    assert_eq!(cond.dims(), &[1, 8, 4 * 256]);
    assert_eq!(cond.dtype(), DType::BF16);
    assert_finite(&cond, "bf16 conditioning");
}

#[test]
fn random_vae_round_trips_finite_tensors_of_the_right_shapes() {
    let vae = Vae::random(VaeConfig::tiny(), DType::F32, &Device::Cpu).unwrap();
    assert_eq!(vae.pixels_per_token(), 4);
    let latent = Tensor::randn(0f32, 1.0, (1, 128, 4, 4), &Device::Cpu).unwrap();

    let image = vae.decode(&latent).unwrap();
    let encoded = vae.encode(&image).unwrap();

    assert_eq!(image.dims(), &[1, 3, 16, 16]);
    assert_finite(&image, "decoded image");
    assert_eq!(encoded.dims(), &[1, 128, 4, 4]);
    assert_finite(&encoded, "encoded latent");
}

/// A tiny transformer whose projection widths are whole Q8_0 blocks (32) but not K-quant ones.
fn tiny_transformer() -> Flux2Transformer {
    let cfg = Flux2Config {
        num_layers: 1,
        num_single_layers: 1,
        ..Flux2Config::tiny()
    };
    Flux2Transformer::random(cfg, DType::F32, &Device::Cpu)
        .unwrap()
        .with_distilled(true)
}

fn velocity(model: &Flux2Transformer) -> Tensor {
    let cfg = model.config();
    // Fixed inputs, so that every model sees the same ones.
    let wave = |shape: (usize, usize, usize)| {
        let n = shape.0 * shape.1 * shape.2;
        let values: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
        Tensor::from_vec(values, shape, &Device::Cpu).unwrap()
    };
    let img = wave((1, 16, cfg.in_channels));
    let txt = wave((1, 8, cfg.joint_attention_dim));
    let img_ids = image_ids(4, 4, &Device::Cpu).unwrap();
    let txt_ids = text_ids(8, &Device::Cpu).unwrap();
    let t = Tensor::new(&[0.75f32], &Device::Cpu).unwrap();
    model
        .forward(&img, &img_ids, &txt, &txt_ids, &t, None)
        .unwrap()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    common::max_abs_diff(a, b).unwrap()
}

#[test]
fn compact_blocks_store_block_projections_in_the_format_and_keep_the_output_close() {
    let dense = tiny_transformer();
    let reference = velocity(&dense);
    let scale = common::max_abs(&reference).unwrap();

    for (format, storage, tolerance) in [
        (CompactFormat::Ggml(GgmlDType::Q8_0), "Q8_0", 0.02),
        (CompactFormat::Fp8E4M3, "fp8_e4m3", 0.1),
    ] {
        let compact = dense.with_compact_blocks(format, QuantMode::Exact).unwrap();
        let storages = compact.projection_storage();
        let n_compact = storages.iter().filter(|s| *s == storage).count();
        // The embedders (img_in, txt_in, time and guidance) and the final layer stay dense.
        assert!(n_compact > 0, "{format:?}: {storages:?}");
        assert!(
            storages.iter().any(|s| s == "f32"),
            "{format:?}: {storages:?}"
        );
        assert!(compact.weight_bytes() < dense.weight_bytes());
        let err = max_abs_diff(&velocity(&compact), &reference) / scale;
        assert!(err < tolerance, "{format:?}: relative error {err}");
        assert!(err > 0.0, "{format:?} left the weights unchanged");
    }
}

#[test]
fn compact_blocks_leave_rows_that_do_not_fill_whole_blocks_dense() {
    let dense = tiny_transformer();
    // Q4_K blocks hold 256 values; no projection of the tiny model is that wide.
    let compact = dense
        .with_compact_blocks(CompactFormat::Ggml(GgmlDType::Q4K), QuantMode::Exact)
        .unwrap();
    assert!(compact.projection_storage().iter().all(|s| s == "f32"));
    assert_eq!(max_abs_diff(&velocity(&compact), &velocity(&dense)), 0.0);
}

#[test]
fn compact_formats_are_found_by_their_names_in_any_case() {
    for format in CompactFormat::ALL {
        assert_eq!(CompactFormat::from_name(format.name()), Some(format));
        assert_eq!(
            CompactFormat::from_name(&format.name().to_ascii_lowercase()),
            Some(format)
        );
    }
    assert_eq!(CompactFormat::from_name("q9_0"), None);
}

#[test]
fn tiled_decode_reports_each_tile_and_stops_between_tiles() {
    let vae = Vae::random(VaeConfig::tiny(), DType::F32, &Device::Cpu).unwrap();
    // Four tiny tiles' worth of latent in each direction.
    let tile = VaeConfig::tiny().sample_size / VaeConfig::tiny().spatial_factor();
    let latent = Tensor::zeros((1, 128, tile, tile * 2), DType::F32, &Device::Cpu).unwrap();
    let mut seen = Vec::new();
    vae.decode_tiled_with(&latent, |done, total| {
        seen.push((done, total));
        std::ops::ControlFlow::Continue(())
    })
    .unwrap();
    let total = seen.last().unwrap().1;
    assert!(total > 1, "{seen:?}");
    assert_eq!(seen.last().unwrap().0, total);
    let err = vae
        .decode_tiled_with(&latent, |_, _| std::ops::ControlFlow::Break(()))
        .unwrap_err();
    assert!(
        matches!(
            err,
            ModelError::Cancelled {
                completed_steps: 1,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn encoding_estimates_grow_with_the_picture_and_the_first_level_width() {
    let released = Vae::random(
        VaeConfig {
            block_out_channels: vec![128, 32],
            ..VaeConfig::tiny()
        },
        DType::F32,
        &Device::Cpu,
    )
    .unwrap();
    // The red-team's 12000² picture: hundreds of gigabytes at the released VAE's width, which
    // EncodeImage refuses instead of aborting halfway.
    assert!(released.encode_working_bytes(12_000, 12_000) > 200 << 30);
    let tiny = Vae::random(VaeConfig::tiny(), DType::F32, &Device::Cpu).unwrap();
    assert!(tiny.encode_working_bytes(64, 64) < 4 << 20);
    assert_eq!(
        tiny.encode_working_bytes(128, 128),
        4 * tiny.encode_working_bytes(64, 64)
    );
}
