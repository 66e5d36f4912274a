//! Load: a FLUX.2 \[klein\] model (transformer, text encoder, VAE) from `tiny`, a diffusers
//! checkpoint folder, single files (BFL, ComfyUI, FP8, GGUF), or names in the model folders.
//!
//! Loaded bundles live in the run's model pool keyed by (files, dtype, device, file identity),
//! so a second run in the same process reuses them and an edited checkpoint is reloaded.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use candle_core::{DType, Device};
use veetance_engine::{
    DataType, InputSpec, Literal, MemoryEstimate, NodeCtx, NodeError, NodeInputs, NodeKind,
    NodeSpec, OutputSpec, Outputs, RunEnv, TextWidget,
};
use veetance_models::profile::BundleProfile;
use veetance_models::{Bundle, BundleSources, LoadOptions, QuantMode};

use crate::device::{choose_device, choose_dtype, device_name, model_error};
use crate::payload::{ModelValue, TextEncoderValue, VaeValue};
use crate::placement::{
    ProfileValue, budget_error, bundle_parts, bundle_stand_ins, limit_device, text_encoder_key,
    transformer_key,
};
use crate::types;

/// Where the built-in `tiny` model lives: `$VEETANCE_TINY_DIR`, a `tiny/` folder next to the
/// binary, or the repository's `models/tiny` (compiled in for source builds). `Err` lists where it
/// looked.
pub fn builtin_tiny_dir() -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os("VEETANCE_TINY_DIR") {
        let dir = PathBuf::from(dir);
        if dir.join("model_index.json").is_file() {
            return Ok(dir);
        }
        return Err(format!(
            "the built-in `tiny` model is not in VEETANCE_TINY_DIR={} (no model_index.json there)",
            dir.display()
        ));
    }
    let mut looked = Vec::new();
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|p| p.join("tiny")))
    {
        if dir.join("model_index.json").is_file() {
            return Ok(dir);
        }
        looked.push(dir);
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("models")
        .join("tiny");
    if repo.join("model_index.json").is_file() {
        return Ok(repo);
    }
    looked.push(repo);
    Err(format!(
        "the built-in `tiny` model was not found (looked in {}); set VEETANCE_TINY_DIR to the \
         folder holding its model_index.json",
        looked
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(" and ")
    ))
}

/// Resolves one of Load's path inputs: `tiny` (for `model`), an existing path, or a name (a path
/// relative to one of the model folders, or a file name found in one).
pub fn resolve_model_path(name: &str, env: &RunEnv) -> Result<PathBuf, NodeError> {
    if name == "tiny" {
        return builtin_tiny_dir().map_err(NodeError::msg);
    }
    let path = env.input_path(name);
    if path.exists() {
        return Ok(path);
    }
    if path.is_relative() {
        for dir in &env.model_dirs {
            let candidate = dir.join(&path);
            if candidate.exists() {
                return Ok(candidate);
            }
        }
        let mut found: Vec<PathBuf> = env
            .model_dirs
            .iter()
            .flat_map(|dir| crate::models::list_model_paths(dir))
            .filter(|p| p.file_name().is_some_and(|f| f == path.as_os_str()))
            .collect();
        found.sort();
        found.dedup();
        match found.as_slice() {
            [one] => return Ok(one.clone()),
            [] => {}
            several => {
                return Err(NodeError::msg(format!(
                    "the name `{name}` matches several model files ({}); give the path",
                    several
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        }
    }
    let folders = if env.model_dirs.is_empty() {
        "no model folders are set (VEETANCE_MODELS or --models-dir)".to_string()
    } else {
        format!(
            "not found in the model folders {}",
            env.model_dirs
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    Err(NodeError::msg(format!(
        "no model at `{name}`: it is not a file or folder, and {folders}; `veetance models` lists what can be loaded"
    )))
}

/// The parts a Load's inputs name.
fn sources(inputs: &NodeInputs, env: &RunEnv) -> Result<BundleSources, NodeError> {
    let model = resolve_model_path(inputs.text("model")?, env)?;
    let text_encoder = inputs
        .opt_text("text_encoder")?
        .filter(|s| !s.is_empty())
        .map(|s| resolve_model_path(s, env))
        .transpose()?;
    let vae = inputs
        .opt_text("vae")?
        .filter(|s| !s.is_empty())
        .map(|s| resolve_model_path(s, env))
        .transpose()?;
    let sources = BundleSources::resolve(&model, text_encoder.as_deref(), vae.as_deref())
        .map_err(model_error("finding the model's parts"))?;
    for path in sources.files() {
        env.check_read(&path)?;
    }
    Ok(sources)
}

/// A file's canonical path, size and modification time as one line (what makes an edited file
/// a new input), and its size.
pub fn file_identity(path: &Path) -> Result<(String, u64), NodeError> {
    let meta = std::fs::metadata(path)
        .map_err(|err| NodeError::with_context(format!("reading {}", path.display()), err))?;
    let modified_ns = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    let canonical = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    Ok((
        format!("{}\t{}\t{modified_ns}", canonical.display(), meta.len()),
        meta.len(),
    ))
}

/// Every file of the parts with its size and modification time, sorted, as bytes; and the total
/// bytes of weights.
fn files_identity(sources: &BundleSources) -> Result<(Vec<u8>, u64), NodeError> {
    let mut entries = Vec::new();
    let mut total_bytes = 0u64;
    for path in sources.files() {
        let (entry, len) = file_identity(&path)?;
        let name = path.to_string_lossy();
        if name.ends_with(".safetensors") || name.ends_with(".gguf") {
            total_bytes += len;
        }
        entries.push(entry);
    }
    for part in [&sources.transformer, &sources.text_encoder, &sources.vae] {
        entries.push(format!("prefix\t{}", part.prefix));
    }
    entries.push(format!("distilled\t{}", sources.is_distilled));
    Ok((entries.join("\n").into_bytes(), total_bytes))
}

/// How compact weights compute: exactly (decoded per layer, then an ordinary matmul, as diffusers
/// and ComfyUI compute) in f32 and on GPUs; with candle's quantized matmuls for bf16/f16 on the
/// CPU. On an H200 the exact path is also the faster one at 1024²: klein-4B Q8_0 105 ms per
/// compiled step against 219 ms through candle's quantized matmul (docs/benchmarks.md).
fn quant_mode(dtype: DType, device: &Device) -> QuantMode {
    if dtype == DType::F32 || device.is_cuda() {
        QuantMode::Exact
    } else {
        QuantMode::Fast
    }
}

/// The `Load` node.
pub struct Load;

impl NodeKind for Load {
    fn spec() -> NodeSpec {
        NodeSpec::new(
            "Load",
            "loaders",
            "Loads a FLUX.2 [klein] model: `tiny` (the built-in model), a diffusers checkpoint folder, a \
             single transformer file (BFL or ComfyUI names, bf16, FP8 or GGUF) with its text encoder and \
             VAE, or a ComfyUI all-in-one checkpoint. Names are looked up in the model folders \
             (VEETANCE_MODELS, --models-dir; `veetance models` lists them).",
        )
        .describes_output()
        .version(2)
        .input(
            InputSpec::new("model", DataType::TEXT)
                .default_value(Literal::Text("tiny".into()))
                .widget(TextWidget::Path)
                .catalog(crate::models::CATALOG_MODEL)
                .doc(
                    "`tiny`, a path (diffusers folder, .safetensors or .gguf transformer, all-in-one \
                     checkpoint), or a name from the model folders.",
                ),
        )
        .input(
            InputSpec::new("text_encoder", DataType::TEXT)
                .optional()
                .widget(TextWidget::Path)
                .catalog(crate::models::CATALOG_TEXT_ENCODER)
                .doc(
                    "The Qwen3 text encoder (a .safetensors or .gguf file, or a diffusers \
                     `text_encoder` folder) [the checkpoint's own; for a single transformer file, the \
                     one compatible file beside it or in a ComfyUI `text_encoders/` folder].",
                ),
        )
        .input(
            InputSpec::new("vae", DataType::TEXT)
                .optional()
                .widget(TextWidget::Path)
                .catalog(crate::models::CATALOG_VAE)
                .doc(
                    "The FLUX.2 VAE (a .safetensors file in BFL or diffusers names, or a diffusers \
                     `vae` folder) [the checkpoint's own; for a single transformer file, the one \
                     beside it or in a ComfyUI `vae/` folder].",
                ),
        )
        .input(
            InputSpec::new("dtype", DataType::TEXT)
                .default_value(Literal::Text("auto".into()))
                .choices(&["auto", "f32", "f16", "bf16"])
                .doc(
                    "Compute precision; `auto` is f32 on CPU and bf16 on CUDA. FP8 and GGUF weights \
                     stay compact in memory; on GPUs and with f32 they are decoded for each layer and \
                     multiplied exactly (as diffusers and ComfyUI compute); with bf16/f16 on the CPU \
                     GGUF weights use quantized matmuls.",
                ),
        )
        .input(
            InputSpec::new("device", DataType::TEXT)
                .default_value(Literal::Text("auto".into()))
                .choices(&["auto", "cpu", "cuda"])
                .doc("Where the model runs; `auto` follows --device, then CUDA if available."),
        )
        .input(
            InputSpec::new("offload", DataType::BOOL)
                .default_value(Literal::Bool(false))
                .doc(
                    "Keep the transformer's and the text encoder's weights in RAM and move each to \
                     the device only while its node runs (Sample, Encode), so the two are never on \
                     the GPU together (frees VRAM between runs and for other models; costs one \
                     transfer per node run). Under a VRAM budget (--vram-budget, the editor's \
                     slider) the memory plan decides instead, layer by layer.",
                ),
        )
        .output(OutputSpec::new(
            "model",
            types::MODEL,
            "The FLUX.2 transformer.",
        ))
        .output(OutputSpec::new(
            "text_encoder",
            types::TEXT_ENCODER,
            "The Qwen3 text encoder with its tokenizer and chat template.",
        ))
        .output(OutputSpec::new(
            "vae",
            types::VAE,
            "The FLUX.2 autoencoder.",
        ))
    }

    fn identity(inputs: &NodeInputs, env: &RunEnv) -> Result<Option<Vec<u8>>, NodeError> {
        let (mut identity, _) = files_identity(&sources(inputs, env)?)?;
        // Under a VRAM budget the model loads into RAM for the planner to place, without one
        // onto the device: two different results from the same files.
        identity.push(u8::from(env.vram_budget_bytes.is_some()));
        Ok(Some(identity))
    }

    fn estimate(inputs: &NodeInputs, env: &RunEnv) -> MemoryEstimate {
        let Ok(sources) = sources(inputs, env) else {
            return MemoryEstimate::default();
        };
        let Ok((identity, bytes)) = files_identity(&sources) else {
            return MemoryEstimate::default();
        };
        let mut estimate = MemoryEstimate {
            ram_bytes: bytes,
            ..MemoryEstimate::default()
        };
        // The dtype the run will choose (`auto` depends on the device).
        let dtype = inputs
            .text("device")
            .ok()
            .and_then(|choice| choose_device(choice, &env.device).ok())
            .and_then(|device| choose_dtype(inputs.text("dtype").ok()?, &device).ok())
            .unwrap_or(DType::BF16);
        if let (Ok(profile), Ok(key)) = (
            BundleProfile::read(&sources, dtype),
            part_key(inputs, &identity),
        ) {
            let value = ProfileValue {
                profile: Arc::new(profile),
                key,
            };
            estimate.parts = bundle_parts(&value);
            estimate.outputs = bundle_stand_ins(value);
        }
        estimate
    }

    fn run(inputs: &NodeInputs, ctx: &NodeCtx<'_>) -> Result<Outputs, NodeError> {
        let sources = sources(inputs, ctx.env())?;
        let device = choose_device(inputs.text("device")?, &ctx.env().device)?;
        let dtype = choose_dtype(inputs.text("dtype")?, &device)?;
        // Under a memory plan the transformer and the text encoder load into RAM and the nodes
        // that use them place their layers on the GPU as the plan says (resident or streamed).
        // On the CPU a VRAM budget simulates a GPU of that size: the same placement and
        // streaming (copies within RAM), so tests and plans can be checked without one.
        let planned = ctx.memory_plan().is_some();
        if planned {
            // Models an earlier run without a budget left on the GPU would hold memory the
            // plan gives to others (keys: dtype|device|where the weights live|files).
            ctx.env().pool.retain(|key| {
                key.split('|')
                    .nth(2)
                    .is_none_or(|resident| resident == "cpu")
            });
            limit_device(ctx, &device)?;
        }
        let offload = planned || (inputs.bool("offload")? && !device.is_cpu());
        let resident_device = if offload { Device::Cpu } else { device.clone() };
        let (identity, weight_bytes) = files_identity(&sources)?;
        let key = format!(
            "{dtype:?}|{}|{}|{}",
            device_name(&device),
            device_name(&resident_device),
            blake3::hash(&identity).to_hex()
        );
        let options = LoadOptions {
            dtype,
            device: device.clone(),
            transformer_device: resident_device.clone(),
            text_encoder_device: resident_device,
            quant: quant_mode(dtype, &device),
        };
        let bundle: Arc<Bundle> = ctx.env().pool.get_or_load(&key, || {
            Bundle::load_sources(sources, &options)
                .map(|mut bundle| {
                    if offload {
                        // Page-locked once per pooled bundle: copies to the GPU (whole or layer
                        // by layer) then run as DMA instead of through pageable staging buffers.
                        bundle.transformer = bundle.transformer.pinned_for(&device);
                        bundle.text_encoder = bundle.text_encoder.pinned_for(&device);
                    }
                    (bundle, weight_bytes)
                })
                .map_err(budget_error(ctx, "loading the model"))
        })?;
        let part_key = if planned {
            Some(part_key(inputs, &identity)?)
        } else {
            None
        };
        let size_px = bundle.defaults.size_px;
        Ok(Outputs::new()
            .with_object(
                "model",
                types::MODEL,
                ModelValue {
                    transformer: bundle.transformer.clone(),
                    bundle: bundle.clone(),
                    weight_bytes,
                    default_size_px: (size_px, size_px),
                    offload_to: offload.then(|| device.clone()),
                    compile_on_device: None,
                    part_key: part_key.as_deref().map(transformer_key),
                },
            )
            .with_object(
                "text_encoder",
                types::TEXT_ENCODER,
                TextEncoderValue {
                    bundle: bundle.clone(),
                    offload_to: offload.then(|| device.clone()),
                    part_key: part_key.as_deref().map(text_encoder_key),
                },
            )
            .with_object("vae", types::VAE, VaeValue(bundle)))
    }
}

/// The key a bundle's parts are planned under: the files' identity and the inputs that change
/// what loads (the same in the estimate and the run).
fn part_key(inputs: &NodeInputs, identity: &[u8]) -> Result<String, NodeError> {
    Ok(format!(
        "{}|{}|{}",
        blake3::hash(identity).to_hex(),
        inputs.text("dtype")?,
        inputs.text("device")?
    ))
}
