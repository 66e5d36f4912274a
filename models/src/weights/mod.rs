//! Checkpoint storage: the tensors of one model component, from safetensors files (single or
//! sharded), a GGUF file, or memory, with the quantization side tensors resolved.
//!
//! This layer knows storage, not models. [`Weights`] lists names and shapes and hands out
//! [`RawTensor`]s (bytes plus storage type); [`table`] maps a model's internal tensor names onto a
//! checkpoint layout and turns raw tensors into model parameters.
//!
//! FP8 scales follow ComfyUI's conventions, which BFL's FP8 releases share: a weight `X.weight`
//! stored as `F8_E4M3`/`F8_E5M2` is multiplied by the scalar `X.weight_scale` (or the legacy
//! `X.scale_weight`) when present. Per-layer formats other than FP8 (ComfyUI's `comfy_quant`
//! entries for NVFP4, MXFP8, INT8) are refused by name. `input_scale`/`scale_input` only matter to
//! FP8 matmuls that quantize activations and are not used.

pub mod gguf;
pub mod raw;
pub mod safetensors;
pub mod table;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};

pub use self::gguf::{GgufFile, MetaValue};
pub use self::raw::{RawTensor, Scale, StoredDType};
pub use self::safetensors::{MAX_HEADER_BYTES, SafetensorsFile, TensorInfo, read_header};
pub use self::table::{KeyTable, QuantMode, Source, TensorSpec};
use crate::error::{ModelError, Result};

/// Name suffixes of the side tensors quantized checkpoints carry next to a weight.
const QUANT_SIDE_SUFFIXES: [&str; 6] = [
    ".weight_scale",
    ".scale_weight",
    ".input_scale",
    ".scale_input",
    ".comfy_quant",
    ".weight_scale_2",
];

/// Whether a tensor name is a quantization side tensor (scales, ComfyUI's markers), which model
/// key tables never list.
pub fn is_quant_side_tensor(name: &str) -> bool {
    name == "scaled_fp8"
        || name.ends_with(".scaled_fp8")
        || QUANT_SIDE_SUFFIXES.iter().any(|s| name.ends_with(s))
}

/// One opened file.
#[derive(Debug)]
enum StoreFile {
    Safetensors(SafetensorsFile),
    Gguf(GgufFile),
}

impl StoreFile {
    fn path(&self) -> &Path {
        match self {
            StoreFile::Safetensors(f) => f.path(),
            StoreFile::Gguf(f) => f.path(),
        }
    }

    fn raw(&self, name: &str) -> Result<RawTensor<'_>> {
        match self {
            StoreFile::Safetensors(f) => f.raw(name),
            StoreFile::Gguf(f) => f.raw(name),
        }
    }

    fn shape(&self, name: &str) -> Option<&[usize]> {
        match self {
            StoreFile::Safetensors(f) => f.tensors().get(name).map(|t| t.shape.as_slice()),
            StoreFile::Gguf(f) => f.tensors().get(name).map(|t| t.shape.as_slice()),
        }
    }
}

/// Whether a path names a GGUF file (by extension, or by its magic bytes).
pub fn is_gguf(path: &Path) -> bool {
    if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
    {
        return true;
    }
    let Ok(mut file) = crate::files::open_regular(path) else {
        return false;
    };
    let mut magic = [0u8; 4];
    std::io::Read::read_exact(&mut file, &mut magic).is_ok() && &magic == b"GGUF"
}

/// All tensors of one model component, possibly spread over several shard files.
#[derive(Debug, Clone)]
pub struct Weights {
    /// What the user pointed at (a file or a component directory); used in error messages.
    origin: PathBuf,
    files: Arc<Vec<StoreFile>>,
    /// Stored name → index into `files`.
    by_name: Arc<HashMap<String, usize>>,
    /// Tensors held in memory instead of files (training builds models from its variables).
    memory: HashMap<String, Tensor>,
    /// Prefix the visible tensors carry in the files and callers do not see (ComfyUI's
    /// `model.diffusion_model.`); only names with it are visible when set.
    key_prefix: String,
    /// Per-layer quantization formats from the safetensors header (`_quantization_metadata`).
    header_formats: Arc<BTreeMap<String, String>>,
}

#[derive(serde::Deserialize)]
struct ShardIndex {
    weight_map: BTreeMap<String, String>,
}

impl Weights {
    /// Opens a file or a component directory: a `.gguf` file, a `.safetensors` file, or a
    /// directory of safetensors shards (see [`Weights::from_dir`]).
    pub fn open(path: &Path) -> Result<Self> {
        if path.is_dir() {
            Self::from_dir(path)
        } else if is_gguf(path) {
            Self::from_gguf(path)
        } else {
            Self::from_file(path)
        }
    }

    /// Opens one safetensors file.
    pub fn from_file(path: &Path) -> Result<Self> {
        Self::from_files(path, vec![path.to_path_buf()])
    }

    /// Opens one GGUF file.
    pub fn from_gguf(path: &Path) -> Result<Self> {
        let file = GgufFile::open(path)?;
        let by_name = file
            .tensors()
            .keys()
            .map(|name| (name.clone(), 0))
            .collect();
        Ok(Self {
            origin: path.to_path_buf(),
            files: Arc::new(vec![StoreFile::Gguf(file)]),
            by_name: Arc::new(by_name),
            memory: HashMap::new(),
            key_prefix: String::new(),
            header_formats: Arc::new(BTreeMap::new()),
        })
    }

    /// Opens a component directory: the shards named by a `*.safetensors.index.json` if there is one,
    /// otherwise every `*.safetensors` file in it.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let entries = std::fs::read_dir(dir).map_err(|source| ModelError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let mut names: Vec<String> = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| ModelError::Io {
                path: dir.to_path_buf(),
                source,
            })?;
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        // diffusers/transformers write these names; variant files (`*.fp16.safetensors`) may sit
        // beside them and must not be mixed in, so the standard names win when present.
        let standard_index = [
            "diffusion_pytorch_model.safetensors.index.json",
            "model.safetensors.index.json",
        ]
        .into_iter()
        .find(|n| names.iter().any(|m| m == n))
        .map(str::to_string);
        let any_index: Vec<&String> = names
            .iter()
            .filter(|n| n.ends_with(".safetensors.index.json"))
            .collect();
        let index_name = standard_index.or_else(|| match any_index.as_slice() {
            [only] => Some((*only).clone()),
            _ => None,
        });
        let standard_file = ["diffusion_pytorch_model.safetensors", "model.safetensors"]
            .into_iter()
            .find(|n| names.iter().any(|m| m == n));
        if index_name.is_none()
            && let Some(file) = standard_file
        {
            return Self::from_files(dir, vec![dir.join(file)]);
        }
        if let Some(index_name) = index_name {
            let index_path = dir.join(index_name);
            let index: ShardIndex = crate::error::read_json(&index_path)?;
            let mut shards: Vec<String> = index.weight_map.values().cloned().collect();
            shards.sort();
            shards.dedup();
            if shards
                .iter()
                .any(|s| Path::new(s).components().count() != 1)
            {
                return Err(ModelError::InvalidSafetensors {
                    path: index_path,
                    reason: "the index names a shard outside its folder".into(),
                });
            }
            let shard_paths: Vec<PathBuf> = shards.iter().map(|s| dir.join(s)).collect();
            let weights = Self::from_files(dir, shard_paths)?;
            // The index must agree with the shards' headers; a disagreement means a broken download.
            for (name, shard) in &index.weight_map {
                let found = weights
                    .by_name
                    .get(name)
                    .and_then(|&i| weights.files.get(i));
                let agrees = found.is_some_and(|f| {
                    f.path()
                        .file_name()
                        .is_some_and(|n| n.to_string_lossy() == *shard)
                });
                if !agrees {
                    return Err(ModelError::InvalidSafetensors {
                        path: index_path,
                        reason: format!(
                            "index maps {name} to {shard}, but that shard does not hold it"
                        ),
                    });
                }
            }
            return Ok(weights);
        }
        let files: Vec<PathBuf> = names
            .iter()
            .filter(|n| n.ends_with(".safetensors"))
            .map(|n| dir.join(n))
            .collect();
        if files.is_empty() {
            return Err(ModelError::Config {
                path: dir.to_path_buf(),
                reason: "no .safetensors files".into(),
            });
        }
        Self::from_files(dir, files)
    }

    fn from_files(origin: &Path, paths: Vec<PathBuf>) -> Result<Self> {
        let mut files = Vec::with_capacity(paths.len());
        let mut by_name = HashMap::new();
        let mut header_formats = BTreeMap::new();
        for path in paths {
            let file = SafetensorsFile::open(&path)?;
            let file_idx = files.len();
            for name in file.tensors().keys() {
                if by_name.insert(name.clone(), file_idx).is_some() {
                    return Err(ModelError::InvalidSafetensors {
                        path: path.clone(),
                        reason: format!("tensor {name} appears in more than one shard"),
                    });
                }
            }
            if let Some(json) = file.metadata().get("_quantization_metadata") {
                header_formats.extend(parse_quantization_metadata(json, &path)?);
            }
            files.push(StoreFile::Safetensors(file));
        }
        Ok(Self {
            origin: origin.to_path_buf(),
            files: Arc::new(files),
            by_name: Arc::new(by_name),
            memory: HashMap::new(),
            key_prefix: String::new(),
            header_formats: Arc::new(header_formats),
        })
    }

    /// Tensors already in memory, by checkpoint name. Training uses this to build the same model
    /// types from its variables: model builders get the tensors themselves (not copies) when dtype
    /// and device already match, so gradients flow back to them.
    pub fn from_tensors(origin: &Path, tensors: HashMap<String, Tensor>) -> Self {
        Self {
            origin: origin.to_path_buf(),
            files: Arc::new(Vec::new()),
            by_name: Arc::new(HashMap::new()),
            memory: tensors,
            key_prefix: String::new(),
            header_formats: Arc::new(BTreeMap::new()),
        }
    }

    /// The file or directory these weights came from.
    pub fn origin(&self) -> &Path {
        &self.origin
    }

    /// Whether the tensors come from a GGUF file.
    pub fn is_gguf(&self) -> bool {
        self.files.iter().any(|f| matches!(f, StoreFile::Gguf(_)))
    }

    /// GGUF metadata (empty for safetensors files).
    pub fn gguf_metadata(&self) -> Option<&BTreeMap<String, MetaValue>> {
        self.files.iter().find_map(|f| match f {
            StoreFile::Gguf(g) => Some(g.metadata()),
            StoreFile::Safetensors(_) => None,
        })
    }

    /// Hides a prefix that *every* tensor name carries, if one of `prefixes` does (single files
    /// exported from full checkpoints, e.g. ComfyUI's `model.diffusion_model.`). Otherwise unchanged.
    pub fn strip_common_prefix(self, prefixes: &[&str]) -> Self {
        if self.by_name.is_empty() || !self.memory.is_empty() {
            return self;
        }
        match prefixes
            .iter()
            .find(|p| self.by_name.keys().all(|n| n.starts_with(**p)))
        {
            Some(prefix) => self.with_prefix(prefix),
            None => self,
        }
    }

    /// The tensors whose names start with `prefix`, with the prefix hidden (one model out of an
    /// all-in-one checkpoint: ComfyUI's `model.diffusion_model.`, `vae.`, `text_encoders.…`).
    pub fn with_prefix(mut self, prefix: &str) -> Self {
        self.key_prefix = format!("{}{prefix}", self.key_prefix);
        self
    }

    /// How many stored tensors have names starting with `prefix` (of those visible).
    pub fn count_with_prefix(&self, prefix: &str) -> usize {
        self.names()
            .into_iter()
            .filter(|n| n.starts_with(prefix))
            .count()
    }

    fn stored_name(&self, name: &str) -> String {
        format!("{}{name}", self.key_prefix)
    }

    /// Whether a tensor exists.
    pub fn contains(&self, name: &str) -> bool {
        let stored = self.stored_name(name);
        self.by_name.contains_key(&stored) || self.memory.contains_key(&stored)
    }

    /// Shape of a tensor, if present.
    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        let stored = self.stored_name(name);
        if let Some(tensor) = self.memory.get(&stored) {
            return Some(tensor.dims());
        }
        self.files.get(*self.by_name.get(&stored)?)?.shape(&stored)
    }

    /// How a tensor is stored, if present and readable.
    pub fn stored_dtype(&self, name: &str) -> Option<StoredDType> {
        let stored = self.stored_name(name);
        if let Some(tensor) = self.memory.get(&stored) {
            return Some(StoredDType::Plain(tensor.dtype()));
        }
        let file = self.files.get(*self.by_name.get(&stored)?)?;
        match file {
            StoreFile::Safetensors(f) => f
                .tensors()
                .get(&stored)
                .and_then(|t| safetensors::stored_dtype(&t.dtype)),
            StoreFile::Gguf(f) => f
                .tensors()
                .get(&stored)
                .and_then(|t| t.ggml_type.ok())
                .map(StoredDType::Ggml),
        }
    }

    /// All visible tensor names (without the hidden prefix), sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self
            .by_name
            .keys()
            .chain(self.memory.keys())
            .filter_map(|n| n.strip_prefix(self.key_prefix.as_str()))
            .collect();
        names.sort_unstable();
        names
    }

    /// Every file behind these weights.
    pub fn files(&self) -> Vec<&Path> {
        self.files.iter().map(StoreFile::path).collect()
    }

    /// A tensor held in memory ([`Weights::from_tensors`]), if these weights are in memory.
    pub(crate) fn memory_tensor(&self, name: &str) -> Option<&Tensor> {
        self.memory.get(&self.stored_name(name))
    }

    /// Whether these weights are tensors in memory rather than files.
    pub(crate) fn is_in_memory(&self) -> bool {
        !self.memory.is_empty()
    }

    /// The quantization format of layer `layer` (a weight name without `.weight`), from the
    /// safetensors header's `_quantization_metadata` or a `comfy_quant` side tensor.
    fn layer_format(&self, layer: &str) -> Result<Option<String>> {
        if let Some(format) = self.header_formats.get(layer) {
            return Ok(Some(format.clone()));
        }
        let marker = format!("{layer}.comfy_quant");
        if !self.contains(&marker) {
            return Ok(None);
        }
        let raw = self.raw_stored(&self.stored_name(&marker))?;
        let spec: serde_json::Value =
            serde_json::from_slice(&raw.bytes).map_err(|e| ModelError::InvalidSafetensors {
                path: self.origin.clone(),
                reason: format!("{marker} is not JSON: {e}"),
            })?;
        Ok(spec
            .get("format")
            .and_then(serde_json::Value::as_str)
            .map(str::to_string))
    }

    fn raw_stored(&self, stored: &str) -> Result<RawTensor<'_>> {
        let file = self
            .by_name
            .get(stored)
            .and_then(|&i| self.files.get(i))
            .ok_or_else(|| self.missing(stored))?;
        file.raw(stored)
    }

    fn missing(&self, name: &str) -> ModelError {
        ModelError::Keys {
            path: self.origin.clone(),
            missing: vec![name.to_string()],
            unexpected: Vec::new(),
            mismatched: Vec::new(),
        }
    }

    /// A scalar (or one-per-row) scale tensor as [`Scale`].
    fn read_scale(&self, name: &str) -> Result<Scale> {
        let raw = self.raw_stored(&self.stored_name(name))?;
        let values = raw
            .to_tensor(DType::F32, &Device::Cpu)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        match values.as_slice() {
            [single] => Ok(Scale::Tensor(*single)),
            [] => Err(ModelError::InvalidSafetensors {
                path: self.origin.clone(),
                reason: format!("scale {name} is empty"),
            }),
            _ => Ok(Scale::Rows(values)),
        }
    }

    /// One tensor's bytes (files only), with the FP8 scale stored beside it attached.
    pub fn raw(&self, name: &str) -> Result<RawTensor<'_>> {
        let mut raw = self.raw_stored(&self.stored_name(name))?;
        if let Some(layer) = name.strip_suffix(".weight") {
            match self.layer_format(layer)?.as_deref() {
                None | Some("float8_e4m3fn" | "float8_e5m2") => {}
                Some(other) => {
                    return Err(ModelError::Config {
                        path: self.origin.clone(),
                        reason: format!(
                            "layer {layer} uses ComfyUI's `{other}` quantization, which Veetance cannot read (it reads FP8, scaled or not, and GGUF)"
                        ),
                    });
                }
            }
            if matches!(raw.dtype, StoredDType::F8E4M3 | StoredDType::F8E5M2) {
                for scale_name in [
                    format!("{layer}.weight_scale"),
                    format!("{layer}.scale_weight"),
                ] {
                    if self.contains(&scale_name) {
                        raw.scale = Some(self.read_scale(&scale_name)?);
                        break;
                    }
                }
            }
        }
        Ok(raw)
    }

    /// Frees the page cache behind a tensor whose values have been copied.
    pub fn release(&self, name: &str) {
        let stored = self.stored_name(name);
        if let Some(StoreFile::Safetensors(f)) =
            self.by_name.get(&stored).and_then(|&i| self.files.get(i))
        {
            f.release(&stored);
        }
    }

    /// Compares the checkpoint with what a model needs and reports every difference at once.
    ///
    /// `ignorable` says which extra tensors are fine to leave unused (for example the text
    /// encoder's layers after the last one we read, or BatchNorm's `num_batches_tracked`);
    /// quantization side tensors are always fine.
    pub fn check(&self, expected: &[TensorSpec], ignorable: impl Fn(&str) -> bool) -> Result<()> {
        let mut missing = Vec::new();
        let mut mismatched = Vec::new();
        for spec in expected {
            match self.shape(&spec.name) {
                None => missing.push(spec.name.clone()),
                Some(found) if found != spec.shape.as_slice() => {
                    mismatched.push(format!(
                        "{}: expected {:?}, found {:?}",
                        spec.name, spec.shape, found
                    ));
                }
                Some(_) => {}
            }
        }
        let wanted: std::collections::HashSet<&str> =
            expected.iter().map(|s| s.name.as_str()).collect();
        let unexpected: Vec<String> = self
            .names()
            .into_iter()
            .filter(|n| !wanted.contains(n) && !ignorable(n) && !is_quant_side_tensor(n))
            .map(str::to_string)
            .collect();
        if missing.is_empty() && unexpected.is_empty() && mismatched.is_empty() {
            return Ok(());
        }
        Err(ModelError::Keys {
            path: self.origin.clone(),
            missing,
            unexpected,
            mismatched,
        })
    }

    /// Loads one tensor converted to `dtype` on `device` (dequantized and scaled if stored compact).
    pub fn get(&self, name: &str, dtype: DType, device: &Device) -> Result<Tensor> {
        if let Some(tensor) = self.memory_tensor(name) {
            // Same dtype and device: the tensor itself, so a training variable stays tracked.
            return Ok(tensor.to_device(device)?.to_dtype(dtype)?);
        }
        let tensor = self.raw(name)?.to_tensor(dtype, device)?;
        self.release(name);
        Ok(tensor)
    }
}

/// Parses ComfyUI's `_quantization_metadata` header entry: `{"layers": {layer: {"format": …}}}`.
fn parse_quantization_metadata(json: &str, path: &Path) -> Result<BTreeMap<String, String>> {
    let value: serde_json::Value =
        serde_json::from_str(json).map_err(|e| ModelError::InvalidSafetensors {
            path: path.to_path_buf(),
            reason: format!("_quantization_metadata is not JSON: {e}"),
        })?;
    let mut formats = BTreeMap::new();
    if let Some(layers) = value.get("layers").and_then(serde_json::Value::as_object) {
        for (layer, spec) in layers {
            if let Some(format) = spec.get("format").and_then(serde_json::Value::as_str) {
                formats.insert(layer.clone(), format.to_string());
            }
        }
    }
    Ok(formats)
}
