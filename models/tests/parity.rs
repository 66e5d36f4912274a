//! Numerical parity with diffusers/transformers on the tiny random checkpoints in `fixtures/`.
//!
//! The references come from `fixtures/make_fixtures.py`; everything runs in f32 on CPU.

// Helpers outside #[test] functions are test code too; clippy.toml only relaxes the #[test] bodies.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::ops::ControlFlow;
use std::path::PathBuf;

use common::fixtures;

use candle_core::{DType, Device, Tensor};
use veetance_models::QuantMode;
use veetance_models::flux2::{image_ids, text_ids};
use veetance_models::latent::{pack, unpack};
use veetance_models::qwen3::{
    ChatMessage, ChatTemplate, PromptTokenizer, TextEncoder, TokenizerFiles,
};
use veetance_models::{Bundle, Flux2Transformer, SampleRequest, Start, Vae, sample};

fn reference(name: &str) -> Tensor {
    common::reference(name).unwrap()
}

/// max|a − b| / max|b|, printed.
fn rel_error(actual: &Tensor, expected: &Tensor) -> f32 {
    let err = common::rel_error(actual, expected).unwrap();
    eprintln!("rel error {err:e}");
    err
}

fn prompts() -> Vec<String> {
    common::prompts().unwrap()
}

/// 4-step-style sampling of `bundle` from `noise` with no progress callback.
fn sample_from(
    bundle: &Bundle,
    positive: &Tensor,
    negative: Option<&Tensor>,
    noise: Tensor,
    (steps, guidance): (usize, f64),
    references: &[Tensor],
) -> Tensor {
    let request = SampleRequest {
        positive,
        negative,
        start: Start::Noise(noise),
        steps,
        guidance,
        scheduler: &bundle.scheduler,
        references,
    };
    sample(&bundle.transformer, &request, |_, _| {
        ControlFlow::Continue(())
    })
    .unwrap()
}

/// The decoded image of a normalised latent.
fn decoded(bundle: &Bundle, latent: &Tensor) -> Tensor {
    bundle
        .vae
        .decode_raw(&bundle.vae.denormalize(latent).unwrap())
        .unwrap()
}

fn ckpt() -> PathBuf {
    fixtures().join("tiny-klein")
}

#[test]
fn chat_template_renders_qwen3_generation_prompt() {
    let template = ChatTemplate::load(&ckpt().join("tokenizer")).unwrap();
    let text = template.render_user_prompt("a red circle").unwrap();
    assert_eq!(
        text,
        "<|im_start|>user\na red circle<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
    );
}

#[test]
fn tokenizer_matches_transformers_ids() {
    let tokenizer = PromptTokenizer::load(&ckpt().join("tokenizer")).unwrap();
    let template = ChatTemplate::load(&ckpt().join("tokenizer")).unwrap();
    for (i, prompt) in prompts().iter().enumerate() {
        let text = template.render_user_prompt(prompt).unwrap();
        let (ids, mask) = tokenizer.encode_padded(&text, 512).unwrap();
        let expected: Vec<i64> = reference(&format!("text.input_ids.{i}")).to_vec1().unwrap();
        let ids: Vec<i64> = ids.iter().map(|&x| i64::from(x)).collect();
        assert_eq!(ids, expected, "prompt {prompt:?}");
        assert!(mask.iter().take_while(|&&m| m == 1).count() > 5);
    }
}

#[test]
fn text_encoder_matches_transformers() {
    let dir = ckpt();
    let encoder = TextEncoder::load(
        &TokenizerFiles::from_dir(&dir.join("tokenizer")).unwrap(),
        &dir.join("text_encoder"),
        &[1, 2, 3],
        DType::F32,
        &Device::Cpu,
        QuantMode::Exact,
    )
    .unwrap();
    let prompts = prompts();
    let refs: Vec<&str> = prompts.iter().map(String::as_str).collect();
    let out = encoder.encode(&refs).unwrap();
    let err = rel_error(&out, &reference("text.embeds"));
    assert!(err < 1e-4, "text encoder rel error {err}");
}

#[test]
fn text_encoder_does_not_need_layers_after_the_last_output() {
    // Layer index 3 (the 4th) is never read for outputs (1, 2, 3); a checkpoint without it loads.
    let dir = ckpt();
    let encoder = TextEncoder::load(
        &TokenizerFiles::from_dir(&dir.join("tokenizer")).unwrap(),
        &dir.join("text_encoder"),
        &[1, 2, 3],
        DType::F32,
        &Device::Cpu,
        QuantMode::Exact,
    )
    .unwrap();
    assert_eq!(encoder.encoder().out_layers(), &[1, 2, 3]);
}

fn dit_inputs() -> (Tensor, Tensor, Tensor, Tensor, Tensor) {
    let dev = Device::Cpu;
    let x = reference("dit.x_tokens");
    let cond = reference("dit.cond");
    let t = Tensor::new(&[0.7f32], &dev).unwrap();
    (
        x,
        image_ids(8, 8, &dev).unwrap(),
        cond,
        text_ids(512, &dev).unwrap(),
        t,
    )
}

#[test]
fn transformer_forward_matches_diffusers() {
    let model = Flux2Transformer::load(
        &ckpt().join("transformer"),
        DType::F32,
        &Device::Cpu,
        QuantMode::Exact,
    )
    .unwrap();
    let (x, img_ids, cond, txt_ids, t) = dit_inputs();
    let out = model
        .forward(&x, &img_ids, &cond, &txt_ids, &t, None)
        .unwrap();
    let err = rel_error(&out, &reference("dit.out"));
    assert!(err < 1e-4, "transformer rel error {err}");
}

#[test]
fn transformer_from_bfl_single_file_matches_diffusers() {
    let path = fixtures().join("tiny-klein-bfl/flux-2-tiny.safetensors");
    let model = Flux2Transformer::load(&path, DType::F32, &Device::Cpu, QuantMode::Exact).unwrap();
    let diffusers_cfg = Flux2Transformer::load(
        &ckpt().join("transformer"),
        DType::F32,
        &Device::Cpu,
        QuantMode::Exact,
    )
    .unwrap();
    assert_eq!(
        model.config(),
        diffusers_cfg.config(),
        "config inferred from shapes"
    );
    let (x, img_ids, cond, txt_ids, t) = dit_inputs();
    let out = model
        .forward(&x, &img_ids, &cond, &txt_ids, &t, None)
        .unwrap();
    let err = rel_error(&out, &reference("dit.out"));
    assert!(err < 1e-4, "BFL transformer rel error {err}");
}

#[test]
fn vae_encode_matches_diffusers() {
    let vae = Vae::load(&ckpt().join("vae"), DType::F32, &Device::Cpu).unwrap();
    let image = reference("vae.image");
    let raw = vae.encode_raw(&image).unwrap();
    let err_raw = rel_error(&raw, &reference("vae.raw_latent"));
    assert!(err_raw < 1e-4, "VAE raw encode rel error {err_raw}");
    let latent = vae.encode(&image).unwrap();
    let err = rel_error(&latent, &reference("vae.latent"));
    assert!(err < 1e-4, "VAE normalised encode rel error {err}");
}

#[test]
fn vae_decode_matches_diffusers() {
    let vae = Vae::load(&ckpt().join("vae"), DType::F32, &Device::Cpu).unwrap();
    let z = reference("vae.decode_in");
    let raw = vae.decode_raw(&vae.denormalize(&z).unwrap()).unwrap();
    let err = rel_error(&raw, &reference("vae.decoded"));
    assert!(err < 1e-4, "VAE decode rel error {err}");
    let clamped = vae.decode(&z).unwrap();
    let expected = reference("vae.decoded").clamp(-1f32, 1f32).unwrap();
    assert!(rel_error(&clamped, &expected) < 1e-4);
}

fn run_sampling(cfg: bool) -> (Tensor, Tensor) {
    let mut bundle = Bundle::load(&ckpt(), DType::F32, &Device::Cpu).unwrap();
    assert!(bundle.is_distilled && bundle.transformer.is_distilled());
    if cfg {
        // The CFG reference was sampled with the pipeline's is_distilled switched off.
        bundle.transformer = bundle.transformer.with_distilled(false);
    }
    let prompts = prompts();
    let cond = bundle.text_encoder.encode(&[prompts[0].as_str()]).unwrap();
    let negative = bundle.text_encoder.encode(&[""]).unwrap();
    let mut calls = Vec::new();
    let request = SampleRequest {
        positive: &cond,
        negative: if cfg { Some(&negative) } else { None },
        start: Start::Noise(reference("sample.noise")),
        steps: 4,
        guidance: if cfg { 3.0 } else { 1.0 },
        scheduler: &bundle.scheduler,
        references: &[],
    };
    let latent = sample(&bundle.transformer, &request, |step, total| {
        calls.push((step, total));
        ControlFlow::Continue(())
    })
    .unwrap();
    assert_eq!(calls, vec![(1, 4), (2, 4), (3, 4), (4, 4)]);
    let image = decoded(&bundle, &latent);
    (latent, image)
}

#[test]
fn four_step_sampling_matches_diffusers() {
    let (latent, image) = run_sampling(false);
    let err_latent = rel_error(&latent, &reference("sample.latent"));
    let err_image = rel_error(&image, &reference("sample.image"));
    assert!(err_latent < 1e-3, "latent rel error {err_latent}");
    assert!(err_image < 1e-3, "image rel error {err_image}");
}

#[test]
fn four_step_cfg_sampling_matches_diffusers() {
    let (latent, image) = run_sampling(true);
    let err_latent = rel_error(&latent, &reference("sample_cfg.latent"));
    let err_image = rel_error(&image, &reference("sample_cfg.image"));
    assert!(err_latent < 1e-3, "CFG latent rel error {err_latent}");
    assert!(err_image < 1e-3, "CFG image rel error {err_image}");
}

#[test]
fn pack_unpack_round_trip() {
    let x = reference("sample.noise");
    let tokens = pack(&x).unwrap();
    assert_eq!(tokens.dims(), &[1, 64, 128]);
    // Token (r, c) holds the 128 channels of grid cell (r, c).
    let cell: Vec<f32> = x
        .narrow(2, 2, 1)
        .unwrap()
        .narrow(3, 5, 1)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let token: Vec<f32> = tokens
        .narrow(1, 2 * 8 + 5, 1)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    assert_eq!(cell, token);
    let back = unpack(&tokens, 8, 8).unwrap();
    assert_eq!(rel_error(&back, &x), 0.0);
}

fn meta() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join("reference.json")).unwrap())
        .unwrap()
}

#[test]
fn qwen3_template_renders_a_multi_turn_conversation_like_jinja2() {
    let meta = meta();
    let messages: Vec<ChatMessage> = serde_json::from_value(meta["conversation"].clone()).unwrap();
    let template = ChatTemplate::load(&ckpt().join("tokenizer")).unwrap();
    let rendered = template.render(&messages, true, false).unwrap();
    assert_eq!(
        rendered,
        meta["qwen3_conversation_rendered"].as_str().unwrap()
    );
}

#[test]
fn template_is_read_from_tokenizer_config_when_there_is_no_jinja_file() {
    let meta = meta();
    let dir = tempfile::tempdir().unwrap();
    let source = ckpt().join("tokenizer");
    std::fs::copy(
        source.join("tokenizer.json"),
        dir.path().join("tokenizer.json"),
    )
    .unwrap();
    let mut config: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(source.join("tokenizer_config.json")).unwrap(),
    )
    .unwrap();
    config["chat_template"] = meta["qwen2vl_style_template"].clone();
    std::fs::write(dir.path().join("tokenizer_config.json"), config.to_string()).unwrap();
    let template = ChatTemplate::load(dir.path()).unwrap();
    let rendered = template.render_user_prompt("a dog is dancing").unwrap();
    assert_eq!(rendered, meta["qwen2vl_prompt_rendered"].as_str().unwrap());
    // Processor-style chat_template.json is the last fallback.
    std::fs::write(dir.path().join("tokenizer_config.json"), "{}").unwrap();
    let processor = serde_json::json!({"chat_template": meta["qwen2vl_style_template"]});
    std::fs::write(dir.path().join("chat_template.json"), processor.to_string()).unwrap();
    let template = ChatTemplate::load(dir.path()).unwrap();
    assert_eq!(
        template.render_user_prompt("a dog is dancing").unwrap(),
        meta["qwen2vl_prompt_rendered"].as_str().unwrap()
    );
    std::fs::remove_file(dir.path().join("chat_template.json")).unwrap();
    // And a checkpoint with no template at all is an error naming the directory.
    std::fs::write(dir.path().join("tokenizer_config.json"), "{}").unwrap();
    let err = ChatTemplate::load(dir.path()).unwrap_err().to_string();
    assert!(
        err.contains("no chat template") && err.contains(&dir.path().display().to_string()),
        "{err}"
    );
}

/// The checkpoint shaped like diffusers' own klein tests: 4-channel latents, 1-level VAE without
/// quant convs, 2-layer Qwen3 with default head_dim/theta, non-distilled, 2 CFG steps at 8×8 px.
#[test]
fn diffusers_test_shaped_checkpoint_matches_end_to_end() {
    let dir = fixtures().join("tiny-klein-mini");
    let bundle = Bundle::load(&dir, DType::F32, &Device::Cpu).unwrap();
    assert!(!bundle.is_distilled);
    assert_eq!(bundle.text_encoder.encoder().out_layers(), &[1]);
    assert_eq!(bundle.vae.pixels_per_token(), 2);
    let cond = bundle.text_encoder.encode(&["a dog is dancing"]).unwrap();
    let err = rel_error(&cond, &reference("mini.embeds"));
    assert!(err < 1e-4, "mini text encoder rel error {err}");
    let negative = bundle
        .negative_conditioning()
        .unwrap()
        .expect("base model has a negative");
    let latent = sample_from(
        &bundle,
        &cond,
        Some(&negative),
        reference("mini.noise"),
        (2, 4.0),
        &[],
    );
    let err = rel_error(&latent, &reference("mini.latent"));
    assert!(err < 1e-3, "mini latent rel error {err}");
    let image = decoded(&bundle, &latent);
    let err = rel_error(&image, &reference("mini.image"));
    assert!(err < 1e-3, "mini image rel error {err}");
}

/// Half-precision loading of the whole bundle runs end to end and stays near the f32 result.
#[test]
fn bundle_runs_in_half_precision() {
    let (latent_f32, image_f32) = run_sampling(false);
    for (dtype, tolerance) in [(DType::F16, 0.01f32), (DType::BF16, 0.03)] {
        let bundle = Bundle::load(&ckpt(), dtype, &Device::Cpu).unwrap();
        let cond = bundle
            .text_encoder
            .encode(&[prompts()[0].as_str()])
            .unwrap();
        assert_eq!(cond.dtype(), dtype);
        let latent = sample_from(
            &bundle,
            &cond,
            None,
            reference("sample.noise"),
            (4, 1.0),
            &[],
        );
        assert_eq!(
            latent.dtype(),
            dtype,
            "latents stay in the pipeline's dtype, as in diffusers"
        );
        let image = decoded(&bundle, &latent);
        let err_latent = rel_error(&latent, &latent_f32);
        let err_image = rel_error(&image, &image_f32);
        assert!(
            err_latent < tolerance && err_image < tolerance,
            "{dtype:?}: latent {err_latent}, image {err_image}"
        );
        let encoded = bundle.vae.encode(&reference("vae.image")).unwrap();
        assert_eq!(encoded.dims(), &[1, 128, 8, 8]);
    }
}

#[test]
fn tiled_vae_encode_matches_diffusers_enable_tiling() {
    let vae = Vae::load(&ckpt().join("vae"), DType::F32, &Device::Cpu).unwrap();
    let tiling = |name: &str| common::reference_from("reference-tiling.safetensors", name).unwrap();
    let image = tiling("encode.in");
    let mut seen = Vec::new();
    let latent = vae
        .encode_tiled_with(&image, |done, total| {
            seen.push((done, total));
            ControlFlow::Continue(())
        })
        .unwrap();
    assert_eq!(latent.dims(), &[1, 128, 22, 14]);
    // 88×56 px in 32-px tiles every 24 px: four rows of three.
    assert_eq!(seen.last(), Some(&(12, 12)));
    let err = rel_error(&latent, &tiling("encode.tiled"));
    assert!(err < 1e-5, "tiled encode rel error {err}");
    // Tiling really happened: the whole-picture encode is diffusers' untiled result instead.
    assert!(rel_error(&latent, &tiling("encode.whole")) > 1e-2);
    assert!(rel_error(&vae.encode(&image).unwrap(), &tiling("encode.whole")) < 1e-5);
    // A picture within one tile encodes exactly like the untiled path.
    let small = image.narrow(2, 0, 32).unwrap().narrow(3, 0, 32).unwrap();
    let diff = (vae.encode_tiled(&small).unwrap() - vae.encode(&small).unwrap()).unwrap();
    let max = diff.abs().unwrap().max_all().unwrap();
    assert_eq!(max.to_scalar::<f32>().unwrap(), 0.0);
    // A cancel stops between tiles.
    let err = vae
        .encode_tiled_with(&image, |_, _| ControlFlow::Break(()))
        .unwrap_err();
    assert!(
        matches!(
            err,
            veetance_models::ModelError::Cancelled {
                completed_steps: 1,
                total_steps: 12
            }
        ),
        "{err}"
    );
}

#[test]
fn tiled_vae_decode_matches_diffusers_enable_tiling() {
    let vae = Vae::load(&ckpt().join("vae"), DType::F32, &Device::Cpu).unwrap();
    let z = reference("vae.tiled_in");
    let image = vae.decode_tiled(&z).unwrap();
    let expected = reference("vae.tiled_decoded").clamp(-1f32, 1f32).unwrap();
    assert_eq!(image.dims(), &[1, 3, 80, 56]);
    let err = rel_error(&image, &expected);
    assert!(err < 1e-4, "tiled decode rel error {err}");
    // Tiling really happened: the untiled decode differs near the tile borders.
    let untiled = vae.decode(&z).unwrap();
    assert!(rel_error(&untiled, &expected) > 1e-3);
    // A latent within one tile decodes exactly like the untiled path.
    let small = reference("vae.decode_in");
    let diff = (vae.decode_tiled(&small).unwrap() - vae.decode(&small).unwrap()).unwrap();
    assert_eq!(
        diff.abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap(),
        0.0
    );
}

#[test]
fn distilled_models_ignore_negative_conditioning_like_diffusers() {
    let bundle = Bundle::load(&ckpt(), DType::F32, &Device::Cpu).unwrap();
    assert!(bundle.negative_conditioning().unwrap().is_none());
    let cond = bundle
        .text_encoder
        .encode(&[prompts()[0].as_str()])
        .unwrap();
    let negative = bundle.text_encoder.encode(&[""]).unwrap();
    let latent = sample_from(
        &bundle,
        &cond,
        Some(&negative),
        reference("sample.noise"),
        (4, 3.0),
        &[],
    );
    assert!(rel_error(&latent, &reference("sample.latent")) < 1e-3);
}

/// 48×32 px (a 12×8 token grid): catches height/width swaps in position ids and packing.
#[test]
fn non_square_sampling_matches_diffusers() {
    let bundle = Bundle::load(&ckpt(), DType::F32, &Device::Cpu).unwrap();
    let (h, w) =
        veetance_models::latent::grid_for_image(48, 32, bundle.vae.pixels_per_token()).unwrap();
    assert_eq!((h, w), (12, 8));
    let cond = bundle
        .text_encoder
        .encode(&[prompts()[0].as_str()])
        .unwrap();
    let latent = sample_from(&bundle, &cond, None, reference("rect.noise"), (4, 1.0), &[]);
    let err = rel_error(&latent, &reference("rect.latent"));
    assert!(err < 1e-3, "non-square latent rel error {err}");
    let image = decoded(&bundle, &latent);
    assert_eq!(image.dims(), &[1, 3, 48, 32]);
    let err = rel_error(&image, &reference("rect.image"));
    assert!(err < 1e-3, "non-square image rel error {err}");
}

/// FLUX.2 multi-reference editing: a 64×96 px reference image (24×16 tokens, time id 10) conditions
/// a 32×32 generation, as diffusers' `Flux2KleinPipeline(image=[...])` does.
#[test]
fn reference_image_editing_matches_diffusers() {
    let bundle = Bundle::load(&ckpt(), DType::F32, &Device::Cpu).unwrap();
    let cond = bundle
        .text_encoder
        .encode(&[prompts()[0].as_str()])
        .unwrap();
    let reference_latent = bundle.vae.encode(&reference("edit.image")).unwrap();
    assert_eq!(reference_latent.dims(), &[1, 128, 24, 16]);
    let references = [reference_latent];
    let request = SampleRequest {
        positive: &cond,
        negative: None,
        start: Start::Noise(reference("edit.noise")),
        steps: 4,
        guidance: 1.0,
        scheduler: &bundle.scheduler,
        references: &references,
    };
    let latent = sample(&bundle.transformer, &request, |_, _| {
        ControlFlow::Continue(())
    })
    .unwrap();
    let err = rel_error(&latent, &reference("edit.latent"));
    assert!(err < 1e-3, "editing latent rel error {err}");
    // The reference really conditions the result.
    let plain = SampleRequest {
        references: &[],
        ..request.clone()
    };
    let unconditioned = sample(
        &bundle.transformer,
        &plain,
        |_, _| ControlFlow::Continue(()),
    )
    .unwrap();
    assert!(rel_error(&unconditioned, &reference("edit.latent")) > 1e-2);
}
