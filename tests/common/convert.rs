//! Writes the built-in tiny model in the layouts people have FLUX.2 files in, with the models
//! crate's own key tables: a ComfyUI models folder (GGUF Q8_0 transformer in BFL names, FP8 text
//! encoder in ComfyUI's `comfy_quant` convention, VAE single file) and BFL's release layout.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context as _, Result};
use candle_core::quantized::{GgmlDType, QTensor, gguf_file};
use candle_core::{DType, Device, Tensor};
use veetance_models::flux2::CheckpointLayout;
use veetance_models::flux2::keys::table_for;
use veetance_models::vae::VaeLayout;
use veetance_models::weights::Source;
use veetance_models::weights::table::Params;
use veetance_models::weights::{QuantMode, Weights};
use veetance_models::{Flux2Config, VaeConfig};

fn tiny() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/models/tiny"))
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        std::fs::copy(entry.path(), to.join(entry.file_name()))?;
    }
    Ok(())
}

/// The tiny transformer's tensors in BFL names (f32).
fn transformer_bfl() -> Result<Vec<(String, Tensor)>> {
    let dir = tiny().join("transformer");
    let cfg: Flux2Config =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json"))?)?;
    let weights = Weights::open(&dir)?;
    let table = table_for(&cfg, CheckpointLayout::Diffusers, Some(&weights));
    let names: Vec<String> = table.internal_specs().into_iter().map(|s| s.name).collect();
    let device = Device::Cpu;
    let params = Params::checkpoint(
        table,
        &weights,
        |_| false,
        DType::F32,
        &device,
        QuantMode::Exact,
    )?;
    names
        .into_iter()
        .map(|name| Ok((name.clone(), params.tensor(&name)?)))
        .collect()
}

/// A ComfyUI models folder: `diffusion_models/tiny-Q8_0.gguf` (+ its `model_index.json`),
/// `text_encoders/tiny-qwen3-fp8.safetensors` (+ `tokenizer/`), `vae/tiny-vae.safetensors`
/// (+ its config).
pub fn tiny_as_comfyui(dst: &Path) -> Result<()> {
    let dit = dst.join("diffusion_models");
    let te = dst.join("text_encoders");
    let vae = dst.join("vae");
    for dir in [&dit, &te, &vae] {
        std::fs::create_dir_all(dir)?;
    }
    let tensors = transformer_bfl()?
        .into_iter()
        .map(|(name, t)| {
            let fits = t.rank() == 2 && t.dims().last().is_some_and(|c| c % 32 == 0);
            let dtype = if fits {
                GgmlDType::Q8_0
            } else {
                GgmlDType::F32
            };
            Ok((name, QTensor::quantize(&t, dtype)?))
        })
        .collect::<Result<Vec<_>>>()?;
    let refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let arch = gguf_file::Value::String("flux".into());
    let mut file = std::fs::File::create(dit.join("tiny-Q8_0.gguf"))?;
    gguf_file::write(&mut file, &[("general.architecture", &arch)], &refs)?;
    std::fs::copy(
        tiny().join("model_index.json"),
        dit.join("tiny-Q8_0.model_index.json"),
    )?;

    let weights = Weights::open(&tiny().join("text_encoder"))?;
    let mut fp8: HashMap<String, Tensor> = HashMap::new();
    for name in weights.names() {
        let t = weights.get(name, DType::F32, &Device::Cpu)?;
        if let Some(layer) = name
            .strip_suffix(".weight")
            .filter(|_| name.ends_with("_proj.weight"))
        {
            let amax = t.abs()?.max_all()?.to_scalar::<f32>()?;
            let scale = (amax / 448.0).max(1e-12);
            fp8.insert(
                name.to_string(),
                (t / f64::from(scale))?.to_dtype(DType::F8E4M3)?,
            );
            fp8.insert(
                format!("{layer}.weight_scale"),
                Tensor::new(scale, &Device::Cpu)?,
            );
            let spec = br#"{"format": "float8_e4m3fn"}"#.to_vec();
            let n = spec.len();
            fp8.insert(
                format!("{layer}.comfy_quant"),
                Tensor::from_vec(spec, n, &Device::Cpu)?,
            );
        } else {
            fp8.insert(name.to_string(), t);
        }
    }
    candle_core::safetensors::save(&fp8, te.join("tiny-qwen3-fp8.safetensors"))?;
    copy_dir(&tiny().join("tokenizer"), &te.join("tokenizer"))?;

    let vae_dir = tiny().join("vae");
    std::fs::copy(
        vae_dir.join("diffusion_pytorch_model.safetensors"),
        vae.join("tiny-vae.safetensors"),
    )?;
    std::fs::copy(
        vae_dir.join("config.json"),
        vae.join("tiny-vae.config.json"),
    )?;
    Ok(())
}

/// BFL's release layout: `flux-2-tiny.safetensors` (BFL names, f32) at the root beside the
/// diffusers `text_encoder/`, `tokenizer/` and `model_index.json`, and the VAE as `ae.safetensors`.
pub fn tiny_as_bfl_release(dst: &Path) -> Result<()> {
    std::fs::create_dir_all(dst)?;
    let tensors: HashMap<String, Tensor> = transformer_bfl()?.into_iter().collect();
    candle_core::safetensors::save(&tensors, dst.join("flux-2-tiny.safetensors"))?;
    copy_dir(&tiny().join("text_encoder"), &dst.join("text_encoder"))?;
    copy_dir(&tiny().join("tokenizer"), &dst.join("tokenizer"))?;
    std::fs::copy(
        tiny().join("model_index.json"),
        dst.join("model_index.json"),
    )?;
    // The VAE in BFL's names (1×1-convolution attention weights), as `ae.safetensors`.
    let vae = tiny().join("vae");
    let cfg: VaeConfig = serde_json::from_str(&std::fs::read_to_string(vae.join("config.json"))?)?;
    let weights = Weights::open(&vae)?;
    let table = veetance_models::vae::keys::table(&cfg, VaeLayout::Bfl);
    let mut bfl = HashMap::new();
    for spec in table.internal_specs() {
        let tensor = weights.get(&spec.name, DType::F32, &Device::Cpu)?;
        match table.source(&spec.name).context("no source")? {
            Source::Name(stored) => bfl.insert(stored.clone(), tensor),
            Source::Reshaped(stored, shape) => {
                bfl.insert(stored.clone(), tensor.reshape(shape.as_slice())?)
            }
            other => anyhow::bail!("unexpected VAE source {other:?}"),
        };
    }
    candle_core::safetensors::save(&bfl, dst.join("ae.safetensors"))?;
    // Its GroupNorm groups are not visible in the weights.
    std::fs::copy(vae.join("config.json"), dst.join("ae.config.json"))?;
    Ok(())
}
