//! Random-weight text encoders and VAEs (what `veetance bench gpu` builds) compute finite values
//! of the right shapes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use candle_core::{DType, Device, Tensor};
use veetance_models::qwen3::Qwen3Config;
use veetance_models::{ModelError, TextEncoder, Vae, VaeConfig};

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
