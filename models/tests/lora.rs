//! LoRAs against diffusers: the files of `fixtures/lora/` (diffusers/PEFT with its adapter
//! config, DoRA with rsLoRA scaling, kohya with alphas, ai-toolkit's BFL names) applied to the tiny
//! checkpoint give the transformer output diffusers gives after `load_lora_weights` and
//! `fuse_lora` (`fixtures/make_lora_fixtures.py`), merged and kept beside the weights, alone and
//! stacked; and files that are not LoRAs for this model are refused by name.

mod common;

use anyhow::Result;
use candle_core::{DType, Device, Tensor};
use common::{check_close, fixtures, four_step_run, reference_dit_forward, reference_from};
use veetance_models::lora::{LoraFile, LoraFormat};
use veetance_models::{Bundle, Flux2Transformer, LoraMerge, ModelError, QuantMode};

fn transformer() -> Result<Flux2Transformer> {
    Ok(Flux2Transformer::load(
        &fixtures().join("tiny-klein/transformer"),
        DType::F32,
        &Device::Cpu,
        QuantMode::Exact,
    )?)
}

fn lora(name: &str) -> Result<LoraFile> {
    Ok(LoraFile::open(
        &fixtures().join(format!("lora/{name}.safetensors")),
    )?)
}

fn lora_reference(name: &str) -> Result<Tensor> {
    reference_from("reference-lora.safetensors", name)
}

#[test]
fn each_lora_format_matches_diffusers_fuse_lora_at_two_strengths() -> Result<()> {
    let base = transformer()?;
    for (name, format) in [
        ("peft", LoraFormat::Peft),
        ("peft-dora", LoraFormat::Peft),
        ("kohya", LoraFormat::Kohya),
        ("aitk", LoraFormat::AiToolkit),
    ] {
        let file = lora(name)?;
        assert_eq!(file.format(), format, "{name}");
        for (strength, tag) in [(0.5, "s050"), (1.0, "s100")] {
            for merge in [LoraMerge::Merge, LoraMerge::Beside] {
                let (adapted, applied) = base.with_lora(&file, strength, merge)?;
                assert_eq!(applied.modules, file.modules().len());
                if merge == LoraMerge::Beside && name != "peft-dora" {
                    assert_eq!(applied.merged, 0, "{name}");
                }
                check_close(
                    &format!("{name} at {strength}, {merge:?}"),
                    &reference_dit_forward(&adapted)?,
                    &lora_reference(&format!("lora.{name}.{tag}.dit_out"))?,
                    1e-4,
                )?;
            }
        }
    }
    Ok(())
}

#[test]
fn stacked_loras_match_diffusers_set_adapters() -> Result<()> {
    let (one, _) = transformer()?.with_lora(&lora("peft")?, 0.5, LoraMerge::Auto)?;
    let (both, _) = one.with_lora(&lora("aitk")?, 1.0, LoraMerge::Auto)?;
    check_close(
        "peft at 0.5 + aitk at 1",
        &reference_dit_forward(&both)?,
        &lora_reference("lora.stack.dit_out")?,
        1e-4,
    )?;
    Ok(())
}

#[test]
fn a_lora_changes_sampling_as_in_diffusers_and_leaves_the_base_model_untouched() -> Result<()> {
    let mut bundle = Bundle::load(&fixtures().join("tiny-klein"), DType::F32, &Device::Cpu)?;
    let before = reference_dit_forward(&bundle.transformer)?;
    let (adapted, _) = bundle
        .transformer
        .with_lora(&lora("peft")?, 1.0, LoraMerge::Auto)?;
    assert_eq!(
        common::max_abs_diff(&reference_dit_forward(&bundle.transformer)?, &before)?,
        0.0,
        "the base model must not change"
    );
    bundle.transformer = adapted;
    let (latent, _) = four_step_run(&bundle)?;
    check_close(
        "4-step latent with the PEFT LoRA",
        &latent,
        &lora_reference("lora.peft.s100.latent")?,
        1e-4,
    )?;
    Ok(())
}

#[test]
fn strength_zero_gives_the_base_model() -> Result<()> {
    let base = transformer()?;
    let (adapted, _) = base.with_lora(&lora("kohya")?, 0.0, LoraMerge::Auto)?;
    check_close(
        "kohya at strength 0",
        &reference_dit_forward(&adapted)?,
        &lora_reference("lora.none.dit_out")?,
        1e-6,
    )?;
    Ok(())
}

#[test]
fn files_that_are_not_loras_for_this_model_are_refused_with_examples() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let message = |result: veetance_models::Result<LoraFile>| match result {
        Err(err @ ModelError::Lora { .. }) => err.to_string(),
        Err(other) => panic!("expected a LoRA error, got {other}"),
        Ok(_) => panic!("accepted"),
    };
    // A checkpoint, not an adapter.
    let err = message(LoraFile::open(
        &fixtures().join("tiny-klein/transformer/diffusion_pytorch_model.safetensors"),
    ));
    assert!(err.contains("not a LoRA for FLUX.2"), "{err}");
    assert!(
        err.contains("and "),
        "lists a few keys, then a count: {err}"
    );

    // An SDXL-style LoRA: its keys parse, but no layer of this transformer has those names.
    let path = dir.path().join("sdxl.safetensors");
    let a = Tensor::zeros((4, 32), DType::F32, &Device::Cpu)?;
    let b = Tensor::zeros((32, 4), DType::F32, &Device::Cpu)?;
    candle_core::safetensors::save(
        &std::collections::HashMap::from([
            (
                "lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight".to_owned(),
                a,
            ),
            (
                "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight".to_owned(),
                b,
            ),
        ]),
        &path,
    )?;
    let file = LoraFile::open(&path)?;
    let err = transformer()?
        .with_lora(&file, 1.0, LoraMerge::Auto)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        err.contains("down_blocks_0_attentions_0_proj_in") && err.contains("not layers of this"),
        "{err}"
    );
    Ok(())
}

#[test]
fn a_lora_for_another_model_size_names_the_layer_and_both_shapes() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("wide.safetensors");
    candle_core::safetensors::save(
        &std::collections::HashMap::from([
            (
                "diffusion_model.double_blocks.0.img_attn.proj.lora_A.weight".to_owned(),
                Tensor::zeros((4, 64), DType::F32, &Device::Cpu)?,
            ),
            (
                "diffusion_model.double_blocks.0.img_attn.proj.lora_B.weight".to_owned(),
                Tensor::zeros((64, 4), DType::F32, &Device::Cpu)?,
            ),
        ]),
        &path,
    )?;
    let err = transformer()?
        .with_lora(&LoraFile::open(&path)?, 1.0, LoraMerge::Auto)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        err.contains("double_blocks.0.img_attn.proj")
            && err.contains("64×64")
            && err.contains("32×32"),
        "{err}"
    );
    Ok(())
}

#[test]
fn on_a_gguf_base_the_adapter_stays_beside_the_compact_weights_and_computes_the_same() -> Result<()>
{
    let base = Flux2Transformer::load(
        &fixtures().join("formats/gguf/dit-Q8_0.gguf"),
        DType::F32,
        &Device::Cpu,
        QuantMode::Exact,
    )?;
    let file = lora("peft")?;
    // Every layer is adapted; the file keeps its embedders, modulation and final layer dense
    // (as ComfyUI-GGUF writes them), and those are merged.
    let n_quantized = base
        .projection_storage()
        .iter()
        .filter(|s| *s == "Q8_0")
        .count();
    let (beside, applied) = base.with_lora(&file, 1.0, LoraMerge::Auto)?;
    assert_eq!(applied.beside, n_quantized);
    assert_eq!(
        beside
            .projection_storage()
            .iter()
            .filter(|s| *s == "Q8_0")
            .count(),
        n_quantized
    );
    let (merged, applied) = base.with_lora(&file, 1.0, LoraMerge::Merge)?;
    assert_eq!(applied.beside, 0);
    assert!(!merged.projection_storage().iter().any(|s| s == "Q8_0"));
    check_close(
        "Q8_0 base, beside vs merged",
        &reference_dit_forward(&beside)?,
        &reference_dit_forward(&merged)?,
        1e-5,
    )?;
    Ok(())
}
