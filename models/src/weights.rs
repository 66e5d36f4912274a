//! Safetensors reading with our own header validation, memory-mapped, plus multi-file (sharded) checkpoints.
//!
//! We parse and check every header ourselves before touching tensor data, because a checkpoint is
//! untrusted input: a truncated download, a header length pointing past the end of the file, a
//! 10 GB "header", overlapping or out-of-range data offsets, or a shape whose size disagrees with
//! its byte range must each give a clear error, never a panic or a huge allocation. Only after the
//! header passes is the file memory-mapped; tensors are then copied out of the map one at a time and
//! converted to the requested dtype, so peak memory stays close to the weights' own size.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

use crate::error::{ModelError, Result, read_json};

/// Largest header we accept. The reference `safetensors` implementation uses the same limit;
/// real headers are a few hundred kilobytes.
pub const MAX_HEADER_BYTES: u64 = 100 * 1024 * 1024;

/// Where one tensor lives inside a validated file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    /// The safetensors dtype string (`F32`, `BF16`, ...).
    pub dtype: String,
    /// Dimensions.
    pub shape: Vec<usize>,
    /// Byte range inside the data section (after the header).
    pub data_start: usize,
    /// End of the byte range (exclusive).
    pub data_end: usize,
}

/// Bytes per element of a safetensors dtype string, or `None` for names we do not know.
fn dtype_size_bytes(dtype: &str) -> Option<usize> {
    Some(match dtype {
        "BOOL" | "U8" | "I8" | "F8_E4M3" | "F8_E5M2" => 1,
        "I16" | "U16" | "F16" | "BF16" => 2,
        "I32" | "U32" | "F32" => 4,
        "I64" | "U64" | "F64" => 8,
        _ => return None,
    })
}

/// The candle dtype for a safetensors dtype string, if candle can hold it.
fn candle_dtype(dtype: &str) -> Option<DType> {
    Some(match dtype {
        "U8" | "BOOL" => DType::U8,
        "I16" => DType::I16,
        "I32" => DType::I32,
        "U32" => DType::U32,
        "I64" => DType::I64,
        "F16" => DType::F16,
        "BF16" => DType::BF16,
        "F32" => DType::F32,
        "F64" => DType::F64,
        "F8_E4M3" => DType::F8E4M3,
        _ => return None,
    })
}

/// Reads and validates a safetensors header without mapping the file.
///
/// Returns the tensors by name and the byte offset where the data section starts.
pub fn read_header(path: &Path) -> Result<(BTreeMap<String, TensorInfo>, usize)> {
    let invalid = |reason: String| ModelError::InvalidSafetensors {
        path: path.to_path_buf(),
        reason,
    };
    let mut file = File::open(path).map_err(|source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let file_len_bytes = file
        .metadata()
        .map_err(|source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        })?
        .len();
    if file_len_bytes < 8 {
        return Err(invalid(format!(
            "file is {file_len_bytes} bytes, shorter than the 8-byte header length"
        )));
    }
    let mut len_bytes = [0u8; 8];
    file.read_exact(&mut len_bytes)
        .map_err(|source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    let header_len_bytes = u64::from_le_bytes(len_bytes);
    if header_len_bytes > MAX_HEADER_BYTES {
        return Err(invalid(format!(
            "header length {header_len_bytes} bytes is over the {MAX_HEADER_BYTES}-byte limit"
        )));
    }
    if header_len_bytes > file_len_bytes - 8 {
        return Err(invalid(format!(
            "header length {header_len_bytes} bytes runs past the end of the {file_len_bytes}-byte file (truncated?)"
        )));
    }
    // Both bounds are checked above, so this allocation is at most 100 MB and at most the file size.
    let header_len = usize::try_from(header_len_bytes)
        .map_err(|_| invalid("header length does not fit in memory".into()))?;
    let mut header = vec![0u8; header_len];
    file.read_exact(&mut header)
        .map_err(|source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    let data_len_bytes = file_len_bytes - 8 - header_len_bytes;
    let data_len = usize::try_from(data_len_bytes)
        .map_err(|_| invalid("data section does not fit in memory".into()))?;

    let json: serde_json::Value = serde_json::from_slice(&header)
        .map_err(|e| invalid(format!("header is not valid JSON: {e}")))?;
    let entries = json
        .as_object()
        .ok_or_else(|| invalid("header is not a JSON object".into()))?;
    let mut tensors = BTreeMap::new();
    for (name, entry) in entries {
        if name == "__metadata__" {
            continue;
        }
        let info = parse_entry(name, entry, data_len).map_err(invalid)?;
        tensors.insert(name.clone(), info);
    }

    // Overlap check: sorted by start, each range must begin at or after the previous one's end.
    let mut ranges: Vec<(&String, &TensorInfo)> = tensors.iter().collect();
    ranges.sort_by_key(|(_, info)| (info.data_start, info.data_end));
    for pair in ranges.windows(2) {
        if let [(name_a, a), (name_b, b)] = pair
            && b.data_start < a.data_end
        {
            return Err(invalid(format!(
                "tensors {name_a} [{}..{}] and {name_b} [{}..{}] overlap",
                a.data_start, a.data_end, b.data_start, b.data_end
            )));
        }
    }
    Ok((tensors, 8 + header_len))
}

/// Validates one header entry against the data section length.
fn parse_entry(
    name: &str,
    entry: &serde_json::Value,
    data_len: usize,
) -> std::result::Result<TensorInfo, String> {
    let dtype = entry
        .get("dtype")
        .and_then(|d| d.as_str())
        .ok_or_else(|| format!("tensor {name} has no dtype"))?
        .to_string();
    let elem_bytes = dtype_size_bytes(&dtype)
        .ok_or_else(|| format!("tensor {name} has unknown dtype {dtype}"))?;
    let shape: Vec<usize> = entry
        .get("shape")
        .and_then(|s| s.as_array())
        .ok_or_else(|| format!("tensor {name} has no shape"))?
        .iter()
        .map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok()))
        .collect::<Option<Vec<usize>>>()
        .ok_or_else(|| format!("tensor {name} has a shape that is not a list of sizes"))?;
    let offsets = entry
        .get("data_offsets")
        .and_then(|o| o.as_array())
        .ok_or_else(|| format!("tensor {name} has no data_offsets"))?;
    let (data_start, data_end) = match offsets.as_slice() {
        [start, end] => (
            start.as_u64().and_then(|v| usize::try_from(v).ok()),
            end.as_u64().and_then(|v| usize::try_from(v).ok()),
        ),
        _ => (None, None),
    };
    let (Some(data_start), Some(data_end)) = (data_start, data_end) else {
        return Err(format!(
            "tensor {name} has data_offsets that are not two byte offsets"
        ));
    };
    if data_end < data_start {
        return Err(format!(
            "tensor {name} ends ({data_end}) before it starts ({data_start})"
        ));
    }
    if data_end > data_len {
        return Err(format!(
            "tensor {name} data [{data_start}..{data_end}] is out of range of the {data_len}-byte data section"
        ));
    }
    // A zero dimension makes the tensor empty whatever the other sizes are; otherwise the product
    // must not overflow.
    let n_bytes = if shape.contains(&0) {
        Some(0)
    } else {
        shape
            .iter()
            .try_fold(elem_bytes, |acc, &d| acc.checked_mul(d))
    }
    .ok_or_else(|| format!("tensor {name} shape {shape:?} overflows"))?;
    if n_bytes != data_end - data_start {
        return Err(format!(
            "tensor {name} is {dtype} {shape:?} = {n_bytes} bytes but its data range holds {} bytes",
            data_end - data_start
        ));
    }
    Ok(TensorInfo {
        dtype,
        shape,
        data_start,
        data_end,
    })
}

/// One validated, memory-mapped safetensors file.
#[derive(Debug)]
pub struct SafetensorsFile {
    path: PathBuf,
    tensors: BTreeMap<String, TensorInfo>,
    data_offset: usize,
    mmap: memmap2::Mmap,
}

impl SafetensorsFile {
    /// Validates the header, then maps the file.
    pub fn open(path: &Path) -> Result<Self> {
        let (tensors, data_offset) = read_header(path)?;
        let file = File::open(path).map_err(|source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        // SAFETY: the map is read-only; if another process truncates the file while it is mapped,
        // reads would fault. That is the usual contract of memory-mapped model files (candle and the
        // safetensors crate make the same trade) and we re-check the length right below.
        let mmap = unsafe { memmap2::Mmap::map(&file) }.map_err(|source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let needed = tensors
            .values()
            .map(|t| t.data_end)
            .max()
            .unwrap_or(0)
            .saturating_add(data_offset);
        if mmap.len() < needed {
            return Err(ModelError::InvalidSafetensors {
                path: path.to_path_buf(),
                reason: "file shrank while being opened".into(),
            });
        }
        Ok(Self {
            path: path.to_path_buf(),
            tensors,
            data_offset,
            mmap,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Tensor names and layouts.
    pub fn tensors(&self) -> &BTreeMap<String, TensorInfo> {
        &self.tensors
    }

    /// Copies one tensor out of the map and converts it to `dtype` on `device`.
    pub fn load(&self, name: &str, dtype: DType, device: &Device) -> Result<Tensor> {
        let invalid = |reason: String| ModelError::InvalidSafetensors {
            path: self.path.clone(),
            reason,
        };
        let info = self
            .tensors
            .get(name)
            .ok_or_else(|| invalid(format!("no tensor named {name}")))?;
        let source_dtype = candle_dtype(&info.dtype).ok_or_else(|| {
            invalid(format!(
                "tensor {name} has unsupported dtype {}",
                info.dtype
            ))
        })?;
        let bytes = self
            .mmap
            .get(self.data_offset + info.data_start..self.data_offset + info.data_end)
            .ok_or_else(|| invalid(format!("tensor {name} lies outside the mapped file")))?;
        let tensor = Tensor::from_raw_buffer(bytes, source_dtype, &info.shape, &Device::Cpu)
            .map_err(|source| ModelError::Candle {
                context: format!("reading tensor {name} from {}", self.path.display()),
                source,
            })?;
        // The tensor now owns a copy; tell the kernel the mapped pages are no longer needed so the
        // page cache does not count twice in our resident size while a large checkpoint loads.
        #[cfg(unix)]
        {
            // SAFETY: the mapping is read-only and file-backed, so MADV_DONTNEED only drops clean
            // pages; a later read of the same range faults them back in from the file with the same
            // contents. Advice failures are harmless, hence ignored.
            let _ = unsafe {
                self.mmap.unchecked_advise_range(
                    memmap2::UncheckedAdvice::DontNeed,
                    self.data_offset + info.data_start,
                    info.data_end - info.data_start,
                )
            };
        }
        let converted = if source_dtype == dtype {
            tensor
        } else {
            tensor.to_dtype(dtype)?
        };
        Ok(converted.to_device(device)?)
    }
}

/// All tensors of one model component, possibly spread over several shard files.
#[derive(Debug)]
pub struct Weights {
    /// What the user pointed at (a file or a component directory); used in error messages.
    origin: PathBuf,
    files: Vec<SafetensorsFile>,
    by_name: HashMap<String, usize>,
    /// Tensors held in memory instead of files (training builds models from its variables).
    memory: HashMap<String, Tensor>,
    /// Prefix every stored name carries and callers do not see (ComfyUI's `model.diffusion_model.`).
    key_prefix: String,
}

/// The expected name and shape of one tensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    /// Tensor name in the checkpoint.
    pub name: String,
    /// Expected dimensions.
    pub shape: Vec<usize>,
}

impl TensorSpec {
    /// Convenience constructor.
    pub fn new(name: impl Into<String>, shape: &[usize]) -> Self {
        Self {
            name: name.into(),
            shape: shape.to_vec(),
        }
    }
}

#[derive(serde::Deserialize)]
struct ShardIndex {
    weight_map: BTreeMap<String, String>,
}

impl Weights {
    /// Opens one safetensors file.
    pub fn from_file(path: &Path) -> Result<Self> {
        Self::from_files(path, vec![path.to_path_buf()])
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
            let index: ShardIndex = read_json(&index_path)?;
            let mut shards: Vec<String> = index.weight_map.values().cloned().collect();
            shards.sort();
            shards.dedup();
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
            files.push(file);
        }
        Ok(Self {
            origin: origin.to_path_buf(),
            files,
            by_name,
            memory: HashMap::new(),
            key_prefix: String::new(),
        })
    }

    /// Tensors already in memory, by checkpoint name. Training uses this to build the same model
    /// types from its variables: `get` hands out the tensors themselves (not copies) when dtype and
    /// device already match, so gradients flow back to them.
    pub fn from_tensors(origin: &Path, tensors: HashMap<String, Tensor>) -> Self {
        Self {
            origin: origin.to_path_buf(),
            files: Vec::new(),
            by_name: HashMap::new(),
            memory: tensors,
            key_prefix: String::new(),
        }
    }

    /// The file or directory these weights came from.
    pub fn origin(&self) -> &Path {
        &self.origin
    }

    /// Hides a prefix that *every* tensor name carries, if one of `prefixes` does (single files
    /// exported from full checkpoints, e.g. ComfyUI's `model.diffusion_model.`). Otherwise unchanged.
    pub fn strip_common_prefix(mut self, prefixes: &[&str]) -> Self {
        if self.by_name.is_empty() || !self.memory.is_empty() {
            return self;
        }
        if let Some(prefix) = prefixes
            .iter()
            .find(|p| self.by_name.keys().all(|n| n.starts_with(**p)))
        {
            self.key_prefix = (*prefix).to_string();
        }
        self
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
        let file = self.files.get(*self.by_name.get(&stored)?)?;
        file.tensors().get(&stored).map(|t| t.shape.as_slice())
    }

    /// All tensor names (without the hidden prefix), sorted.
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

    /// Compares the checkpoint with what a model needs and reports every difference at once.
    ///
    /// `ignorable` says which extra tensors are fine to leave unused (for example the text
    /// encoder's layers after the last one we read, or BatchNorm's `num_batches_tracked`).
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
            .filter(|n| !wanted.contains(n) && !ignorable(n))
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

    /// Loads one tensor converted to `dtype` on `device`.
    pub fn get(&self, name: &str, dtype: DType, device: &Device) -> Result<Tensor> {
        let stored = self.stored_name(name);
        if let Some(tensor) = self.memory.get(&stored) {
            // Same dtype and device: the tensor itself, so a training variable stays tracked.
            return Ok(tensor.to_device(device)?.to_dtype(dtype)?);
        }
        let file = self
            .by_name
            .get(&stored)
            .and_then(|&i| self.files.get(i))
            .ok_or_else(|| ModelError::Keys {
                path: self.origin.clone(),
                missing: vec![name.to_string()],
                unexpected: Vec::new(),
                mismatched: Vec::new(),
            })?;
        file.load(&stored, dtype, device)
    }
}

/// A [`Weights`] plus the dtype and device every tensor is converted to.
pub(crate) struct Loader<'a> {
    pub weights: &'a Weights,
    pub dtype: DType,
    pub device: &'a Device,
}

impl Loader<'_> {
    /// Loads a tensor in the model dtype.
    pub fn get(&self, name: &str) -> Result<Tensor> {
        self.weights.get(name, self.dtype, self.device)
    }

    /// Loads a tensor in f32 regardless of the model dtype (statistics that must stay exact).
    pub fn get_f32(&self, name: &str) -> Result<Tensor> {
        self.weights.get(name, DType::F32, self.device)
    }
}

/// Where a model builder takes its tensors from: a validated checkpoint, or random values of the
/// checkpoint's shapes (speed measurements and shape tests of full-size models without weights).
pub(crate) enum TensorSource<'a> {
    /// A checkpoint whose names and shapes have been checked.
    File(Loader<'a>),
    /// Random values; see [`RandomTensors`].
    Random(RandomTensors<'a>),
}

impl TensorSource<'_> {
    /// A tensor in the model dtype.
    pub fn get(&self, name: &str) -> Result<Tensor> {
        match self {
            TensorSource::File(loader) => loader.get(name),
            TensorSource::Random(random) => random.get(name, random.dtype),
        }
    }

    /// A tensor in f32 regardless of the model dtype.
    pub fn get_f32(&self, name: &str) -> Result<Tensor> {
        match self {
            TensorSource::File(loader) => loader.get_f32(name),
            TensorSource::Random(random) => random.get(name, DType::F32),
        }
    }

    /// The model dtype tensors come in.
    pub fn dtype(&self) -> DType {
        match self {
            TensorSource::File(loader) => loader.dtype,
            TensorSource::Random(random) => random.dtype,
        }
    }

    /// Whether an optional tensor exists.
    pub fn contains(&self, name: &str) -> bool {
        match self {
            TensorSource::File(loader) => loader.weights.contains(name),
            TensorSource::Random(random) => random.shapes.contains_key(name),
        }
    }
}

/// Random tensors of given names and shapes, generated on the device (not seeded).
///
/// Matrices and convolution kernels are normal with σ = 0.02 (transformers' and diffusers'
/// `initializer_range`), biases and running means 0, every other vector (norm scales, running
/// variances) 1. With σ = 0.02 the residual streams grow slowly enough that 36 bf16 Qwen3 layers
/// stay finite; the values mean nothing, only the compute and memory they cost are real.
pub(crate) struct RandomTensors<'a> {
    shapes: HashMap<String, Vec<usize>>,
    dtype: DType,
    device: &'a Device,
}

impl<'a> RandomTensors<'a> {
    /// Random tensors for every spec, in `dtype` on `device`.
    pub fn new(specs: Vec<TensorSpec>, dtype: DType, device: &'a Device) -> Self {
        Self {
            shapes: specs.into_iter().map(|s| (s.name, s.shape)).collect(),
            dtype,
            device,
        }
    }

    fn get(&self, name: &str, dtype: DType) -> Result<Tensor> {
        let shape = self
            .shapes
            .get(name)
            .ok_or_else(|| ModelError::InvalidArgument(format!("no random tensor named {name}")))?;
        let tensor = if name.ends_with(".bias") || name.ends_with("running_mean") {
            Tensor::zeros(shape.as_slice(), dtype, self.device)?
        } else if shape.len() == 1 {
            Tensor::ones(shape.as_slice(), dtype, self.device)?
        } else {
            // Generated in f32: candle's random kernels do not cover every dtype on every device.
            Tensor::randn(0f32, 0.02, shape.as_slice(), self.device)?.to_dtype(dtype)?
        };
        Ok(tensor)
    }
}
