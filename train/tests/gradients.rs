//! Gradients reach every parameter of the tiny model in training mode, and do not in inference
//! mode (candle's fused kernels cut the graph silently; this is why the flag exists).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use candle_core::{DType, Device, Tensor, Var};
use veetance_models::flux2::{image_ids, text_ids};
use veetance_models::qwen3::{ChatTemplate, PromptTokenizer};
use veetance_train::params::Params;
use veetance_train::run::{
    Denoiser, bn_tensors, build_vae, flow_matching_loss, scene_batch, tokenize, vae_trainable_specs,
};
use veetance_train::tiny;

/// Names of variables whose gradient is missing or all zero.
fn without_gradient(
    grads: &candle_core::backprop::GradStore,
    named: &[(String, Var)],
) -> Vec<String> {
    named
        .iter()
        .filter(|(_, v)| match grads.get(v.as_tensor()) {
            None => true,
            Some(g) => {
                g.abs()
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap()
                    == 0.0
            }
        })
        .map(|(n, _)| n.clone())
        .collect()
}

fn named(params: &Params) -> Vec<(String, Var)> {
    let tensors = params.tensors().unwrap();
    params
        .vars()
        .into_iter()
        .map(|v| {
            let name = tensors
                .iter()
                .find(|(_, t)| t.id() == v.as_tensor().id())
                .map(|(n, _)| n.clone())
                .unwrap();
            (name, v)
        })
        .collect()
}

fn denoiser_loss(differentiable: bool) -> (Denoiser, candle_core::backprop::GradStore) {
    let device = Device::Cpu;
    let denoiser = Denoiser::new(&device).unwrap();
    let dir = tempfile::tempdir().unwrap();
    tiny::write_tokenizer(dir.path()).unwrap();
    let template = ChatTemplate::load(dir.path()).unwrap();
    let tokenizer = PromptTokenizer::load(dir.path()).unwrap();
    let (_, captions) = scene_batch(0..2, &device).unwrap();
    let (ids, mask) = tokenize(&template, &tokenizer, &captions, &device).unwrap();
    let (text, dit) = denoiser.build(differentiable, &device).unwrap();
    let rope = dit
        .rope_tables(
            &text_ids(tiny::MAX_TEXT_TOKENS, &device).unwrap(),
            &image_ids(4, 4, &device).unwrap(),
        )
        .unwrap();
    let x0 = Tensor::randn(0f32, 1f32, (2, 32, 4, 4), &device).unwrap();
    let noise = Tensor::randn(0f32, 1f32, (2, 32, 4, 4), &device).unwrap();
    let t = Tensor::new(&[0.3f32, 0.8], &device).unwrap();
    let loss = flow_matching_loss(&text, &dit, &ids, &mask, &x0, &t, &noise, &rope).unwrap();
    let grads = loss.backward().unwrap();
    (denoiser, grads)
}

#[test]
fn every_transformer_and_text_encoder_parameter_gets_a_gradient() {
    let (denoiser, grads) = denoiser_loss(true);
    let mut missing = without_gradient(&grads, &named(&denoiser.transformer));
    missing.extend(without_gradient(&grads, &named(&denoiser.text)));
    assert!(missing.is_empty(), "no gradient for {missing:?}");
}

#[test]
fn fused_inference_kernels_cut_the_graph() {
    let (denoiser, grads) = denoiser_loss(false);
    let missing = without_gradient(&grads, &named(&denoiser.text));
    // The fused RMSNorm before the first attention stops everything upstream of it.
    assert!(
        missing.iter().any(|n| n.contains("embed_tokens")),
        "expected the fused kernels to block gradients, got gradients everywhere"
    );
}

#[test]
fn every_vae_parameter_gets_a_gradient() {
    let device = Device::Cpu;
    let cfg = tiny::vae_config().unwrap();
    let params = Params::new(&vae_trainable_specs(&cfg), &device).unwrap();
    let c = cfg.latent_channels * 4;
    let bn = bn_tensors(
        Tensor::zeros(c, DType::F32, &device).unwrap(),
        Tensor::ones(c, DType::F32, &device).unwrap(),
    );
    let vae = build_vae(&params, &bn, true, &device).unwrap();
    let (images, _) = scene_batch(0..2, &device).unwrap();
    let moments = vae.encode_moments(&images).unwrap();
    let recon = vae
        .decode_raw(&moments.narrow(1, 0, cfg.latent_channels).unwrap())
        .unwrap();
    let logvar = moments
        .narrow(1, cfg.latent_channels, cfg.latent_channels)
        .unwrap();
    let loss = ((recon - &images)
        .unwrap()
        .sqr()
        .unwrap()
        .mean_all()
        .unwrap()
        + logvar.sqr().unwrap().mean_all().unwrap())
    .unwrap();
    let grads = loss.backward().unwrap();
    let missing = without_gradient(&grads, &named(&params));
    assert!(missing.is_empty(), "no gradient for {missing:?}");
}
