//! Load: a model bundle (transformer, text encoder, VAE) from `tiny` or a path.
//!
//! Loaded bundles live in the run's model pool keyed by (path, dtype, device, file identity),
//! so a second run in the same process reuses them and an edited checkpoint is reloaded.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use candle_core::Device;
use veetance_engine::{
    DataType, InputSpec, Literal, MemoryEstimate, Node, NodeCtx, NodeError, NodeInputs, NodeSpec,
    OutputSpec, Outputs, TextWidget,
};
use veetance_models::Bundle;

use crate::device::{choose_device, choose_dtype, device_name, model_error};
use crate::payload::{ModelValue, TextEncoderValue, VaeValue};

pub fn spec() -> NodeSpec {
    NodeSpec::new(
        "Load",
        "loaders",
        "Loads a model bundle: `tiny` (the built-in model) or a diffusers-layout directory \
         (model_index.json, transformer/, text_encoder/, tokenizer/, vae/, scheduler/).",
    )
    .input(
        InputSpec::new("model", DataType::Text)
            .default_value(Literal::Text("tiny".into()))
            .widget(TextWidget::Path)
            .doc("`tiny`, or a path to a diffusers-layout model directory."),
    )
    .input(
        InputSpec::new("dtype", DataType::Text)
            .default_value(Literal::Text("auto".into()))
            .choices(&["auto", "f32", "f16", "bf16"])
            .doc("Weight precision; `auto` is f32 on CPU and bf16 on CUDA."),
    )
    .input(
        InputSpec::new("device", DataType::Text)
            .default_value(Literal::Text("auto".into()))
            .choices(&["auto", "cpu", "cuda"])
            .doc("Where the model runs; `auto` follows --device, then CUDA if available."),
    )
    .input(
        InputSpec::new("offload", DataType::Bool)
            .default_value(Literal::Bool(false))
            .doc(
                "Keep the transformer's weights in RAM and move them to the device only while \
                 Sample runs (frees VRAM between runs and for other models; costs one transfer \
                 per Sample).",
            ),
    )
    .output(OutputSpec::new(
        "model",
        DataType::Model,
        "The FLUX.2 transformer.",
    ))
    .output(OutputSpec::new(
        "text_encoder",
        DataType::TextEncoder,
        "The Qwen3 text encoder with its tokenizer and chat template.",
    ))
    .output(OutputSpec::new(
        "vae",
        DataType::Vae,
        "The FLUX.2 autoencoder.",
    ))
}

/// Where the built-in `tiny` model lives: `$VEETANCE_TINY_DIR`, a `tiny/` folder next to the
/// binary, or the repository's `models/tiny` (compiled in for source builds). If a source tree
/// lacks `models/tiny`, the tiny random test checkpoint stands in so every code path still runs.
pub fn builtin_tiny_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("VEETANCE_TINY_DIR") {
        return Some(PathBuf::from(dir));
    }
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|p| p.join("tiny")))
        .filter(|dir| dir.join("model_index.json").is_file())
    {
        return Some(dir);
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("models");
    [
        repo.join("tiny"),
        repo.join("tests").join("fixtures").join("tiny-klein"),
    ]
    .into_iter()
    .find(|dir| dir.join("model_index.json").is_file())
}

fn resolve(model: &str) -> Result<PathBuf, NodeError> {
    if model == "tiny" {
        return builtin_tiny_dir().ok_or_else(|| {
            NodeError::msg(
                "the built-in `tiny` model was not found: set VEETANCE_TINY_DIR, or put a `tiny/` folder next to the binary",
            )
        });
    }
    let path = PathBuf::from(model);
    if path.is_dir() {
        Ok(path)
    } else if path.is_file() {
        Err(NodeError::msg(format!(
            "Load takes a diffusers-layout directory; single-file checkpoints (like {model}) load only as a transformer, which Load does not offer yet"
        )))
    } else {
        Err(NodeError::msg(format!("no model at {model}")))
    }
}

/// Every file under `dir` with its size and modification time, sorted, as bytes.
fn directory_identity(dir: &Path) -> Result<(Vec<u8>, u64), NodeError> {
    let mut entries = Vec::new();
    let mut total_bytes = 0u64;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(current) = stack.pop() {
        let listing = std::fs::read_dir(&current).map_err(|err| {
            NodeError::with_context(format!("reading {}", current.display()), err)
        })?;
        for entry in listing.flatten() {
            let path = entry.path();
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                stack.push(path);
                continue;
            }
            let modified_ns = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos());
            let relative = path
                .strip_prefix(dir)
                .unwrap_or(&path)
                .to_string_lossy()
                .into_owned();
            if relative.ends_with(".safetensors") {
                total_bytes += meta.len();
            }
            entries.push(format!("{relative}\t{}\t{modified_ns}", meta.len()));
        }
    }
    entries.sort();
    Ok((entries.join("\n").into_bytes(), total_bytes))
}

pub struct Load(NodeSpec);

pub fn node() -> Load {
    Load(spec())
}

impl Node for Load {
    fn spec(&self) -> &NodeSpec {
        &self.0
    }

    fn identity(&self, inputs: &NodeInputs) -> Result<Option<Vec<u8>>, NodeError> {
        let dir = resolve(inputs.text("model")?)?;
        let canonical = dir.canonicalize().unwrap_or(dir.clone());
        let (mut identity, _) = directory_identity(&dir)?;
        identity.extend_from_slice(canonical.to_string_lossy().as_bytes());
        Ok(Some(identity))
    }

    fn estimate(&self, inputs: &NodeInputs) -> MemoryEstimate {
        let bytes = inputs
            .text("model")
            .ok()
            .and_then(|model| resolve(model).ok())
            .and_then(|dir| directory_identity(&dir).ok())
            .map_or(0, |(_, bytes)| bytes);
        MemoryEstimate {
            ram_bytes: bytes,
            vram_bytes: 0,
        }
    }

    fn run(&self, inputs: &NodeInputs, ctx: &NodeCtx<'_>) -> Result<Outputs, NodeError> {
        let dir = resolve(inputs.text("model")?)?;
        let device = choose_device(inputs.text("device")?, &ctx.env().device)?;
        let dtype = choose_dtype(inputs.text("dtype")?, &device)?;
        let offload = inputs.bool("offload")? && !device.is_cpu();
        let transformer_device = if offload { Device::Cpu } else { device.clone() };
        let (identity, weight_bytes) = directory_identity(&dir)?;
        let canonical = dir.canonicalize().unwrap_or(dir.clone());
        let key = format!(
            "{}|{dtype:?}|{}|{}|{}",
            canonical.display(),
            device_name(&device),
            device_name(&transformer_device),
            blake3::hash(&identity).to_hex()
        );
        let bundle: Arc<Bundle> = ctx.env().pool.get_or_load(&key, || {
            Bundle::load_placed(&dir, dtype, &device, &transformer_device)
                .map(|mut bundle| {
                    if offload {
                        // Page-locked once per pooled bundle: each Sample's copy to the GPU
                        // then runs as DMA instead of through pageable staging buffers.
                        bundle.transformer = bundle.transformer.pinned_for(&device);
                    }
                    (bundle, weight_bytes)
                })
                .map_err(model_error("loading the model"))
        })?;
        Ok(Outputs::new()
            .with_object(
                "model",
                DataType::Model,
                ModelValue {
                    transformer: bundle.transformer.clone(),
                    bundle: bundle.clone(),
                    weight_bytes,
                    default_size_px: (default_size_px(&dir), default_size_px(&dir)),
                    offload_to: offload.then(|| device.clone()),
                    compile_on_device: None,
                },
            )
            .with_object(
                "text_encoder",
                DataType::TextEncoder,
                TextEncoderValue(bundle.clone()),
            )
            .with_object("vae", DataType::Vae, VaeValue(bundle)))
    }
}

/// The VAE's `sample_size` from `vae/config.json`, the size the checkpoint was made for.
fn default_size_px(dir: &Path) -> usize {
    const FALLBACK_PX: usize = 1024;
    std::fs::read(dir.join("vae").join("config.json"))
        .ok()
        .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
        .and_then(|config| {
            config
                .get("sample_size")
                .and_then(serde_json::Value::as_u64)
        })
        .map_or(FALLBACK_PX, |size| size as usize)
}
