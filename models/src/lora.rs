//! LoRA files: the low-rank factors, scales and DoRA magnitudes of an adapter, read from the
//! formats FLUX.2 adapters are shared in, independent of how a model applies them.
//!
//! Formats, detected in diffusers' order (`Flux2LoraLoaderMixin.lora_state_dict`, 0.42.1):
//!
//! - **kohya / musubi-tuner** (any key with `.lora_down.weight`): `lora_unet_<BFL name with _>`
//!   with `.lora_down`, `.lora_up` and an optional `.alpha`; scale `alpha / rank` (no alpha:
//!   1). Keys under `diffusion_model.` with `lora_down`/`lora_up` (ComfyUI's own naming) are read
//!   the same way; diffusers loads nothing from those files, ComfyUI applies them.
//! - **ai-toolkit / ComfyUI** (`diffusion_model.<BFL or diffusers name>.lora_A/lora_B`, and raw
//!   PEFT's `base_model.model.` prefix): scale 1, or `alpha / rank` where an `.alpha` is given
//!   (diffusers refuses those; ComfyUI applies them).
//! - **diffusers / PEFT** (`transformer.<diffusers name>.lora_A/lora_B`, optionally
//!   `.lora_magnitude_vector` for DoRA): the scale comes from the adapter config that
//!   `save_lora_weights` writes into the safetensors header (`lora_adapter_metadata`): `lora_alpha
//!   / r`, or `/ √r` with `use_rslora`, with per-module `rank_pattern` and `alpha_pattern`
//!   matched as PEFT's `get_pattern_key` matches them; without the header, scale 1 (as diffusers).
//!
//! Text-encoder keys (`text_encoder.`, `lora_te*`) are set aside: diffusers does not apply LoRAs
//! to FLUX.2's text encoder, and neither do we yet. Keys that fit none of these are an error that
//! lists a few, so that a LoRA for another model is refused instead of silently doing nothing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

use crate::error::{ModelError, Result};
use crate::weights::SafetensorsFile;

/// The header key under which diffusers stores the adapter config (`LORA_ADAPTER_METADATA_KEY`).
const METADATA_KEY: &str = "lora_adapter_metadata";

/// How many unmatched keys an error lists.
const KEYS_SHOWN: usize = 5;

/// Which naming a module's name is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Naming {
    /// diffusers module names (`transformer_blocks.0.attn.to_q`).
    Diffusers,
    /// BFL's original names (`double_blocks.0.img_attn.qkv`), as ai-toolkit and ComfyUI use them.
    Bfl,
    /// kohya's flattening of BFL names (`double_blocks_0_img_attn_qkv`), to be matched against
    /// the BFL names with dots replaced by underscores.
    KohyaBfl,
}

/// The file format an adapter was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoraFormat {
    /// diffusers / PEFT (`transformer.` prefix, config in the header).
    Peft,
    /// kohya / musubi-tuner (`lora_unet_`, `lora_down`/`lora_up`, `.alpha`).
    Kohya,
    /// ai-toolkit / ComfyUI (`diffusion_model.` prefix, `lora_A`/`lora_B`).
    AiToolkit,
}

/// One adapted layer.
#[derive(Debug, Clone)]
pub struct LoraModule {
    /// The layer's name in the file's naming (prefix and suffix removed).
    pub name: String,
    /// Which naming `name` is in.
    pub naming: Naming,
    /// `[rank, in]` (A, `lora_down`), f32.
    pub down: Tensor,
    /// `[out, rank]` (B, `lora_up`), f32.
    pub up: Tensor,
    /// The adapter's scale for this layer (before the strength): `alpha / rank` or as configured.
    pub scale: f64,
    /// DoRA's per-row magnitude `[out]`, f32.
    pub magnitude: Option<Tensor>,
}

impl LoraModule {
    /// The rank (rows of `down`).
    pub fn rank(&self) -> usize {
        self.down.dims().first().copied().unwrap_or(0)
    }
}

/// A LoRA file, read and validated.
#[derive(Debug, Clone)]
pub struct LoraFile {
    path: PathBuf,
    format: LoraFormat,
    modules: Vec<LoraModule>,
    set_aside: Vec<String>,
}

/// The adapter config diffusers writes into the header (the PEFT `LoraConfig` fields we use).
#[derive(Debug, Clone, Default)]
struct PeftConfig {
    r: Option<f64>,
    lora_alpha: Option<f64>,
    rank_pattern: Vec<(String, f64)>,
    alpha_pattern: Vec<(String, f64)>,
    use_rslora: bool,
}

/// The parts of one module found in a file: its factors, alpha and magnitude, by key.
#[derive(Debug, Default)]
struct Parts {
    down: Option<String>,
    up: Option<String>,
    alpha: Option<String>,
    magnitude: Option<String>,
}

impl LoraFile {
    /// Reads the LoRA file at `path` (safetensors).
    pub fn open(path: &Path) -> Result<LoraFile> {
        let invalid = |reason: String| ModelError::Lora {
            path: path.to_path_buf(),
            reason,
        };
        if crate::weights::is_gguf(path) {
            return Err(invalid(
                "GGUF LoRAs are not supported; use the adapter's .safetensors file".into(),
            ));
        }
        let file = SafetensorsFile::open(path)?;
        let names: Vec<&str> = file.tensors().keys().map(String::as_str).collect();
        if names.is_empty() {
            return Err(invalid("the file holds no tensors".into()));
        }
        let format = detect_format(&names);
        let config = match file.metadata().get(METADATA_KEY) {
            Some(json) if format == LoraFormat::Peft => Some(parse_config(json).map_err(invalid)?),
            _ => None,
        };

        let mut modules: BTreeMap<(String, Naming), Parts> = BTreeMap::new();
        let mut set_aside = Vec::new();
        let mut unmatched = Vec::new();
        for &key in &names {
            match classify(key) {
                Key::Part {
                    module,
                    naming,
                    part,
                } => {
                    let parts = modules.entry((module, naming)).or_default();
                    let slot = match part {
                        Part::Down => &mut parts.down,
                        Part::Up => &mut parts.up,
                        Part::Alpha => &mut parts.alpha,
                        Part::Magnitude => &mut parts.magnitude,
                    };
                    *slot = Some(key.to_owned());
                }
                Key::TextEncoder => set_aside.push(key.to_owned()),
                Key::Unsupported(why) => {
                    return Err(invalid(format!("`{key}`: {why}")));
                }
                Key::Unknown => unmatched.push(key),
            }
        }
        if !unmatched.is_empty() {
            return Err(invalid(unmatched_message(&unmatched, names.len())));
        }
        if modules.is_empty() {
            return Err(invalid(format!(
                "no layer of the FLUX.2 transformer is adapted ({} text-encoder keys, which are not applied)",
                set_aside.len()
            )));
        }

        let load = |name: &str| file.load(name, DType::F32, &Device::Cpu);
        let mut out = Vec::with_capacity(modules.len());
        for ((name, naming), parts) in modules {
            let (Some(down_key), Some(up_key)) = (&parts.down, &parts.up) else {
                return Err(invalid(format!(
                    "layer `{name}` has only one of its two factors (lora_A/lora_down and lora_B/lora_up)"
                )));
            };
            let down = load(down_key)?;
            let up = load(up_key)?;
            let (rank, up_rank) = match (down.dims(), up.dims()) {
                ([rank, _], [_, up_rank]) => (*rank, *up_rank),
                (d, u) => {
                    return Err(invalid(format!(
                        "layer `{name}`: factors of shapes {d:?} and {u:?} are not matrices"
                    )));
                }
            };
            if rank == 0 || rank != up_rank {
                return Err(invalid(format!(
                    "layer `{name}`: the factors disagree on the rank ({rank} and {up_rank})"
                )));
            }
            let alpha = match &parts.alpha {
                Some(key) => Some(
                    scalar(&load(key)?).map_err(|reason| invalid(format!("`{key}`: {reason}")))?,
                ),
                None => None,
            };
            let scale = match (&config, alpha) {
                (Some(config), _) => config.scale(&name, rank).map_err(invalid)?,
                (None, Some(alpha)) => alpha / rank as f64,
                (None, None) => 1.0,
            };
            let magnitude = parts.magnitude.as_deref().map(load).transpose()?;
            out.push(LoraModule {
                name,
                naming,
                down,
                up,
                scale,
                magnitude,
            });
        }
        Ok(LoraFile {
            path: path.to_path_buf(),
            format,
            modules: out,
            set_aside,
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The format it was read as.
    pub fn format(&self) -> LoraFormat {
        self.format
    }

    /// The adapted layers.
    pub fn modules(&self) -> &[LoraModule] {
        &self.modules
    }

    /// Keys of text-encoder layers, which are not applied.
    pub fn text_encoder_keys(&self) -> &[String] {
        &self.set_aside
    }
}

fn detect_format(names: &[&str]) -> LoraFormat {
    if names.iter().any(|n| n.contains(".lora_down.weight")) {
        LoraFormat::Kohya
    } else if names
        .iter()
        .any(|n| n.starts_with("diffusion_model.") || n.starts_with("base_model.model."))
    {
        LoraFormat::AiToolkit
    } else {
        LoraFormat::Peft
    }
}

/// Which part of a module a key holds.
#[derive(Debug, Clone, Copy)]
enum Part {
    Down,
    Up,
    Alpha,
    Magnitude,
}

/// What one key of a LoRA file is.
enum Key {
    Part {
        module: String,
        naming: Naming,
        part: Part,
    },
    TextEncoder,
    Unsupported(&'static str),
    Unknown,
}

/// Top-level names of the transformer in BFL's naming (the rest are diffusers names).
const BFL_ROOTS: [&str; 10] = [
    "double_blocks.",
    "single_blocks.",
    "img_in",
    "txt_in",
    "time_in.",
    "guidance_in.",
    "final_layer.",
    "double_stream_modulation_",
    "single_stream_modulation.",
    "vector_in",
];

fn classify(key: &str) -> Key {
    if key.starts_with("text_encoder")
        || key.starts_with("lora_te")
        || key.starts_with("diffusion_model.text_encoders.")
    {
        return Key::TextEncoder;
    }
    let suffixes: &[(&str, Part)] = &[
        (".lora_A.weight", Part::Down),
        (".lora_B.weight", Part::Up),
        (".lora_down.weight", Part::Down),
        (".lora_up.weight", Part::Up),
        (".alpha", Part::Alpha),
        (".lora_magnitude_vector", Part::Magnitude),
    ];
    if key.ends_with(".lora_B.bias") || key.ends_with(".lora_up.bias") {
        return Key::Unsupported(
            "LoRA factors with a bias cannot be applied: FLUX.2's layers have none (diffusers refuses to fuse them too)",
        );
    }
    if key.ends_with("dora_scale") {
        return Key::Unsupported(
            "kohya-style DoRA (`dora_scale`) is not supported; diffusers drops it and applies a plain LoRA",
        );
    }
    if key.contains(".lokr_") || key.starts_with("lycoris_") {
        return Key::Unsupported("LoKr adapters are not supported yet");
    }
    let Some((stem, part)) = suffixes
        .iter()
        .find_map(|(suffix, part)| key.strip_suffix(suffix).map(|stem| (stem, *part)))
    else {
        return Key::Unknown;
    };
    let (module, naming) = if let Some(rest) = stem.strip_prefix("lora_unet_") {
        (rest.to_owned(), Naming::KohyaBfl)
    } else {
        let rest = stem
            .strip_prefix("diffusion_model.")
            .or_else(|| stem.strip_prefix("base_model.model."))
            .or_else(|| stem.strip_prefix("transformer."))
            .unwrap_or(stem);
        // Some trainers' exports cut `single_tran` off the diffusers name (diffusers accepts it).
        let rest = match rest.strip_prefix("sformer_blocks.") {
            Some(tail) => format!("single_transformer_blocks.{tail}"),
            None => rest.to_owned(),
        };
        let naming = if BFL_ROOTS.iter().any(|root| rest.starts_with(root)) {
            Naming::Bfl
        } else {
            Naming::Diffusers
        };
        (rest, naming)
    };
    Key::Part {
        module,
        naming,
        part,
    }
}

fn unmatched_message(unmatched: &[&str], n_keys: usize) -> String {
    let shown: Vec<String> = unmatched
        .iter()
        .take(KEYS_SHOWN)
        .map(|k| format!("`{k}`"))
        .collect();
    let more = unmatched.len().saturating_sub(KEYS_SHOWN);
    let more = if more > 0 {
        format!(" and {more} more")
    } else {
        String::new()
    };
    format!(
        "not a LoRA for FLUX.2 [klein]: {} of its {n_keys} keys are no LoRA factor, alpha or DoRA magnitude: {}{more}",
        unmatched.len(),
        shown.join(", ")
    )
}

/// The single value of an `.alpha` tensor.
fn scalar(t: &Tensor) -> std::result::Result<f64, String> {
    let values = t
        .flatten_all()
        .and_then(|t| t.to_vec1::<f32>())
        .map_err(|e| e.to_string())?;
    match values.as_slice() {
        [value] if value.is_finite() => Ok(f64::from(*value)),
        [value] => Err(format!("alpha {value} is not a finite number")),
        _ => Err(format!("alpha holds {} values, not one", values.len())),
    }
}

/// Reads the adapter config diffusers wrote (keys prefixed `transformer.` when written by a
/// pipeline, bare when written by the model).
fn parse_config(json: &str) -> std::result::Result<PeftConfig, String> {
    let value: serde_json::Value =
        serde_json::from_str(json).map_err(|e| format!("`{METADATA_KEY}` is not JSON: {e}"))?;
    let map = value
        .as_object()
        .ok_or_else(|| format!("`{METADATA_KEY}` is not a JSON object"))?;
    let get = |field: &str| {
        map.get(&format!("transformer.{field}"))
            .or_else(|| map.get(field))
    };
    let number = |field: &str| get(field).and_then(serde_json::Value::as_f64);
    let patterns = |field: &str| -> std::result::Result<Vec<(String, f64)>, String> {
        let Some(value) = get(field) else {
            return Ok(Vec::new());
        };
        let Some(object) = value.as_object() else {
            return Ok(Vec::new());
        };
        object
            .iter()
            .map(|(pattern, value)| {
                value
                    .as_f64()
                    .map(|v| (pattern.clone(), v))
                    .ok_or_else(|| format!("`{field}` value for `{pattern}` is not a number"))
            })
            .collect()
    };
    if get("use_dora").and_then(serde_json::Value::as_bool) == Some(true)
        && get("fan_in_fan_out").and_then(serde_json::Value::as_bool) == Some(true)
    {
        return Err("`fan_in_fan_out` adapters are not supported".into());
    }
    Ok(PeftConfig {
        r: number("r"),
        lora_alpha: number("lora_alpha"),
        rank_pattern: patterns("rank_pattern")?,
        alpha_pattern: patterns("alpha_pattern")?,
        use_rslora: get("use_rslora").and_then(serde_json::Value::as_bool) == Some(true),
    })
}

impl PeftConfig {
    /// PEFT's scaling for `module` (`LoraModel._create_and_replace` and `LoraLayer.update_layer`).
    fn scale(&self, module: &str, rank: usize) -> std::result::Result<f64, String> {
        let r = match pattern_value(&self.rank_pattern, module)? {
            Some(r) => r,
            None => self.r.unwrap_or(rank as f64),
        };
        let alpha = match pattern_value(&self.alpha_pattern, module)? {
            Some(alpha) => alpha,
            None => self.lora_alpha.unwrap_or(r),
        };
        if r.round() as usize != rank {
            return Err(format!(
                "layer `{module}`: the adapter config says rank {r}, its factors have rank {rank}"
            ));
        }
        if r <= 0.0 {
            return Err(format!("layer `{module}`: rank {r}"));
        }
        Ok(if self.use_rslora {
            alpha / r.sqrt()
        } else {
            alpha / r
        })
    }
}

/// The value of the first pattern that matches `module` as PEFT's `get_pattern_key` matches:
/// `re.match(rf"(.*\.)?({key})$", module)`, Python regex syntax.
fn pattern_value(
    patterns: &[(String, f64)],
    module: &str,
) -> std::result::Result<Option<f64>, String> {
    for (pattern, value) in patterns {
        let anchored = format!(r"^(?:.*\.)?(?:{pattern})$");
        let regex = fancy_regex::Regex::new(&anchored)
            .map_err(|e| format!("pattern `{pattern}` in the adapter config: {e}"))?;
        if regex
            .is_match(module)
            .map_err(|e| format!("pattern `{pattern}`: {e}"))?
        {
            return Ok(Some(*value));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_as_peft_matches_them() {
        let patterns = vec![("^proj_out".to_owned(), 2.0), ("to_q".to_owned(), 8.0)];
        assert_eq!(pattern_value(&patterns, "proj_out").unwrap(), Some(2.0));
        assert_eq!(pattern_value(&patterns, "a.proj_out").unwrap(), None);
        assert_eq!(
            pattern_value(&patterns, "transformer_blocks.0.attn.to_q").unwrap(),
            Some(8.0)
        );
        assert_eq!(pattern_value(&patterns, "attn.add_q").unwrap(), None);
    }

    #[test]
    fn scale_follows_alpha_rank_and_rslora() {
        let config = PeftConfig {
            r: Some(4.0),
            lora_alpha: Some(8.0),
            rank_pattern: vec![("^proj_out".into(), 2.0)],
            alpha_pattern: vec![("^proj_out".into(), 1.0)],
            use_rslora: false,
        };
        assert_eq!(config.scale("x_embedder", 4).unwrap(), 2.0);
        assert_eq!(config.scale("proj_out", 2).unwrap(), 0.5);
        assert!(config.scale("proj_out", 4).is_err());
        let rs = PeftConfig {
            use_rslora: true,
            ..config
        };
        assert_eq!(rs.scale("x_embedder", 4).unwrap(), 4.0);
    }

    #[test]
    fn keys_are_sorted_into_formats_namings_and_parts() {
        let part = |key: &str| match classify(key) {
            Key::Part { module, naming, .. } => Some((module, naming)),
            _ => None,
        };
        assert_eq!(
            part("transformer.transformer_blocks.0.attn.to_q.lora_A.weight"),
            Some(("transformer_blocks.0.attn.to_q".into(), Naming::Diffusers))
        );
        assert_eq!(
            part("diffusion_model.double_blocks.1.img_attn.qkv.lora_B.weight"),
            Some(("double_blocks.1.img_attn.qkv".into(), Naming::Bfl))
        );
        assert_eq!(
            part("lora_unet_single_blocks_0_linear1.alpha"),
            Some(("single_blocks_0_linear1".into(), Naming::KohyaBfl))
        );
        assert_eq!(
            part("diffusion_model.sformer_blocks.0.attn.to_out.lora_A.weight"),
            Some((
                "single_transformer_blocks.0.attn.to_out".into(),
                Naming::Diffusers
            ))
        );
        assert!(matches!(
            classify("text_encoder.layers.0.q_proj.lora_A.weight"),
            Key::TextEncoder
        ));
        assert!(matches!(
            classify("model.diffusion_model.x.weight"),
            Key::Unknown
        ));
    }
}
