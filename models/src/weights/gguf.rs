//! GGUF files (llama.cpp's format; ComfyUI-GGUF and stable-diffusion.cpp ship FLUX models in it):
//! header validation, metadata and tensor directory, then a read-only memory map.
//!
//! We parse the header ourselves instead of with `candle_core::quantized::gguf_file`: candle's
//! reader allocates strings and arrays at the lengths the file claims (a hostile file can claim
//! exabytes), and it rejects a whole file as soon as one tensor has a type it does not know, without
//! naming the tensor. Here every length is checked against the bytes that remain before anything is
//! allocated, large metadata arrays (the tokenizer's 150k tokens) are skipped rather than copied, and
//! a tensor of an unsupported type is reported by name and type only if a model asks for it. The
//! tensor data itself becomes candle `QTensor`s ([`super::raw::RawTensor::to_qtensor`]), so
//! dequantization and quantized matmuls are candle's.
//!
//! Layout (GGUF v2/v3, little-endian): magic `GGUF`, version, tensor count, metadata count, the
//! metadata (key, type, value), the tensor directory (name, dims with the fastest first, type,
//! offset), padding to `general.alignment` (32), then the data. Shapes are reported outermost first,
//! as PyTorch and safetensors order them.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::quantized::GgmlDType;

use super::raw::{RawTensor, StoredDType};
use crate::error::{ModelError, Result};

/// Metadata arrays longer than this are skipped (their length is kept).
const MAX_KEPT_ARRAY: u64 = 64;
/// Longest metadata key or tensor name accepted.
const MAX_NAME_BYTES: u64 = 64 * 1024;
/// Most dimensions a tensor may have (ggml's `GGML_MAX_DIMS`).
const MAX_DIMS: u32 = 4;

/// A metadata value (large arrays are summarised by their length).
#[derive(Debug, Clone, PartialEq)]
pub enum MetaValue {
    /// Any unsigned integer type.
    Uint(u64),
    /// Any signed integer type.
    Int(i64),
    /// f32 or f64.
    Float(f64),
    /// A boolean.
    Bool(bool),
    /// A UTF-8 string (lossily decoded).
    Text(String),
    /// An array of at most 64 values.
    Array(Vec<MetaValue>),
    /// A longer array, not kept: its length.
    LongArray(u64),
}

impl MetaValue {
    /// The value as an unsigned integer, if it is a non-negative integer.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            MetaValue::Uint(v) => Some(v),
            MetaValue::Int(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The value as a float, if it is a number.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            MetaValue::Float(v) => Some(v),
            MetaValue::Uint(v) => Some(v as f64),
            MetaValue::Int(v) => Some(v as f64),
            _ => None,
        }
    }

    /// The value as text, if it is a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            MetaValue::Text(s) => Some(s),
            _ => None,
        }
    }
}

/// One entry of the tensor directory.
#[derive(Debug, Clone)]
pub struct GgufTensor {
    /// GGML type, or the raw type id when we cannot read it.
    pub ggml_type: std::result::Result<GgmlDType, u32>,
    /// Shape, outermost first.
    pub shape: Vec<usize>,
    /// Byte range inside the file.
    pub start: usize,
    /// End of the byte range (exclusive).
    pub end: usize,
}

/// The GGML type for a type id, if candle can hold it.
fn ggml_type(id: u32) -> std::result::Result<GgmlDType, u32> {
    Ok(match id {
        0 => GgmlDType::F32,
        1 => GgmlDType::F16,
        2 => GgmlDType::Q4_0,
        3 => GgmlDType::Q4_1,
        6 => GgmlDType::Q5_0,
        7 => GgmlDType::Q5_1,
        8 => GgmlDType::Q8_0,
        10 => GgmlDType::Q2K,
        11 => GgmlDType::Q3K,
        12 => GgmlDType::Q4K,
        13 => GgmlDType::Q5K,
        14 => GgmlDType::Q6K,
        30 => GgmlDType::BF16,
        other => return Err(other),
    })
}

/// llama.cpp's name for a GGML type id we cannot read, for error messages.
pub fn unsupported_type_name(id: u32) -> String {
    let name = match id {
        9 => "Q8_1",
        15 => "Q8_K",
        16 => "IQ2_XXS",
        17 => "IQ2_XS",
        18 => "IQ3_XXS",
        19 => "IQ1_S",
        20 => "IQ4_NL",
        21 => "IQ3_S",
        22 => "IQ2_S",
        23 => "IQ4_XS",
        24 => "I8",
        25 => "I16",
        26 => "I32",
        27 => "I64",
        28 => "F64",
        29 => "IQ1_M",
        34 => "TQ1_0",
        35 => "TQ2_0",
        39 => "MXFP4",
        _ => return format!("type id {id}"),
    };
    format!("{name} (type id {id})")
}

/// A cursor over the header bytes that refuses to read past the end.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: u64) -> std::result::Result<&'a [u8], String> {
        let n = usize::try_from(n).map_err(|_| "length does not fit in memory".to_string())?;
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.bytes.len())
            .ok_or_else(|| {
                format!(
                    "a field of {n} bytes at offset {} runs past the end of the file (truncated?)",
                    self.pos
                )
            })?;
        let out = self.bytes.get(self.pos..end).ok_or("out of range")?;
        self.pos = end;
        Ok(out)
    }

    fn remaining(&self) -> u64 {
        (self.bytes.len() - self.pos.min(self.bytes.len())) as u64
    }

    fn array<const N: usize>(&mut self) -> std::result::Result<[u8; N], String> {
        let bytes = self.take(N as u64)?;
        bytes.try_into().map_err(|_| "short read".to_string())
    }

    fn u32(&mut self) -> std::result::Result<u32, String> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> std::result::Result<u64, String> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn string(&mut self, limit: u64) -> std::result::Result<String, String> {
        let len = self.u64()?;
        if len > limit.min(self.remaining()) {
            return Err(format!(
                "a string of {len} bytes at offset {} is longer than the file allows",
                self.pos
            ));
        }
        Ok(String::from_utf8_lossy(self.take(len)?).into_owned())
    }

    /// Reads one value of metadata type `ty`.
    fn value(&mut self, ty: u32, depth: u32) -> std::result::Result<MetaValue, String> {
        Ok(match ty {
            0 => MetaValue::Uint(u64::from(self.array::<1>()?[0])),
            1 => MetaValue::Int(i64::from(i8::from_le_bytes(self.array()?))),
            2 => MetaValue::Uint(u64::from(u16::from_le_bytes(self.array()?))),
            3 => MetaValue::Int(i64::from(i16::from_le_bytes(self.array()?))),
            4 => MetaValue::Uint(u64::from(self.u32()?)),
            5 => MetaValue::Int(i64::from(i32::from_le_bytes(self.array()?))),
            6 => MetaValue::Float(f64::from(f32::from_le_bytes(self.array()?))),
            7 => MetaValue::Bool(self.array::<1>()?[0] != 0),
            8 => MetaValue::Text(self.string(self.remaining())?),
            9 => {
                if depth > 2 {
                    return Err("metadata arrays nested too deeply".into());
                }
                let item_ty = self.u32()?;
                let n = self.u64()?;
                // Every item takes at least one byte: a count beyond the remaining bytes is a lie.
                if n > self.remaining() {
                    return Err(format!(
                        "an array of {n} items at offset {} is longer than the file",
                        self.pos
                    ));
                }
                if n > MAX_KEPT_ARRAY {
                    for _ in 0..n {
                        self.value(item_ty, depth + 1)?;
                    }
                    MetaValue::LongArray(n)
                } else {
                    let mut items = Vec::new();
                    for _ in 0..n {
                        items.push(self.value(item_ty, depth + 1)?);
                    }
                    MetaValue::Array(items)
                }
            }
            10 => MetaValue::Uint(self.u64()?),
            11 => MetaValue::Int(i64::from_le_bytes(self.array()?)),
            12 => MetaValue::Float(f64::from_le_bytes(self.array()?)),
            other => return Err(format!("unknown metadata value type {other}")),
        })
    }
}

/// One validated, memory-mapped GGUF file.
#[derive(Debug)]
pub struct GgufFile {
    path: PathBuf,
    metadata: BTreeMap<String, MetaValue>,
    tensors: BTreeMap<String, GgufTensor>,
    mmap: memmap2::Mmap,
}

impl GgufFile {
    /// Maps the file and validates its header and tensor directory.
    pub fn open(path: &Path) -> Result<Self> {
        let file = crate::files::open_regular(path)?;
        // SAFETY: read-only map of a checkpoint, as for safetensors files; every offset read from
        // it is checked against its length first.
        let mmap = unsafe { memmap2::Mmap::map(&file) }.map_err(|source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let (metadata, tensors) = parse(&mmap).map_err(|reason| ModelError::InvalidGguf {
            path: path.to_path_buf(),
            reason,
        })?;
        Ok(Self {
            path: path.to_path_buf(),
            metadata,
            tensors,
            mmap,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The metadata (`general.architecture`, `qwen3.block_count`, ...).
    pub fn metadata(&self) -> &BTreeMap<String, MetaValue> {
        &self.metadata
    }

    /// The tensor directory.
    pub fn tensors(&self) -> &BTreeMap<String, GgufTensor> {
        &self.tensors
    }

    /// One tensor's bytes, borrowed from the map.
    pub fn raw(&self, name: &str) -> Result<RawTensor<'_>> {
        let invalid = |reason: String| ModelError::InvalidGguf {
            path: self.path.clone(),
            reason,
        };
        let info = self
            .tensors
            .get(name)
            .ok_or_else(|| invalid(format!("no tensor named {name}")))?;
        let ggml = info.ggml_type.map_err(|id| {
            invalid(format!(
                "tensor {name} has GGML type {}, which Veetance cannot read (it reads F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 and Q2_K to Q6_K)",
                unsupported_type_name(id)
            ))
        })?;
        let bytes = self
            .mmap
            .get(info.start..info.end)
            .ok_or_else(|| invalid(format!("tensor {name} lies outside the file")))?;
        Ok(RawTensor {
            dtype: StoredDType::Ggml(ggml),
            shape: info.shape.clone(),
            bytes: Cow::Borrowed(bytes),
            scale: None,
        })
    }
}

type Parsed = (BTreeMap<String, MetaValue>, BTreeMap<String, GgufTensor>);

/// Parses and validates the header of a whole GGUF file.
fn parse(bytes: &[u8]) -> std::result::Result<Parsed, String> {
    let mut cur = Cursor { bytes, pos: 0 };
    let magic = cur
        .take(4)
        .map_err(|_| "file is shorter than a GGUF header".to_string())?;
    if magic != b"GGUF" {
        return Err("not a GGUF file (no GGUF magic)".into());
    }
    let version = cur.u32()?;
    if !(2..=3).contains(&version) {
        return Err(format!(
            "GGUF version {version} is not supported (2 and 3 are)"
        ));
    }
    let n_tensors = cur.u64()?;
    let n_kv = cur.u64()?;
    // A tensor entry takes at least 8 + 4 + 4 + 8 bytes, a metadata entry at least 8 + 4 + 1.
    if n_tensors > cur.remaining() / 24 || n_kv > cur.remaining() / 13 {
        return Err(format!(
            "header claims {n_tensors} tensors and {n_kv} metadata entries, more than the file can hold"
        ));
    }
    let mut metadata = BTreeMap::new();
    for _ in 0..n_kv {
        let key = cur.string(MAX_NAME_BYTES)?;
        let ty = cur.u32()?;
        let value = cur
            .value(ty, 0)
            .map_err(|e| format!("metadata {key}: {e}"))?;
        metadata.insert(key, value);
    }
    let mut directory = Vec::new();
    for _ in 0..n_tensors {
        let name = cur.string(MAX_NAME_BYTES)?;
        let n_dims = cur.u32()?;
        if n_dims > MAX_DIMS {
            return Err(format!(
                "tensor {name} has {n_dims} dimensions (at most {MAX_DIMS})"
            ));
        }
        let mut dims = Vec::new();
        for _ in 0..n_dims {
            let d = cur.u64()?;
            dims.push(
                usize::try_from(d)
                    .map_err(|_| format!("tensor {name} dimension {d} is too large"))?,
            );
        }
        let ty = cur.u32()?;
        let offset = cur.u64()?;
        directory.push((name, dims, ty, offset));
    }
    let alignment = match metadata.get("general.alignment") {
        None => 32,
        Some(v) => v
            .as_u64()
            .filter(|a| *a > 0 && a.is_power_of_two() && *a <= 1 << 20)
            .ok_or("general.alignment is not a power of two")?,
    };
    let alignment = usize::try_from(alignment).map_err(|_| "alignment too large")?;
    let data_start = cur.pos.div_ceil(alignment) * alignment;
    let mut tensors = BTreeMap::new();
    for (name, ne, ty, offset) in directory {
        // ggml lists the fastest-varying dimension first; report outermost first.
        let mut shape: Vec<usize> = ne.iter().rev().copied().collect();
        if let Some(MetaValue::Array(orig)) = metadata.get(&format!("comfy.gguf.orig_shape.{name}"))
        {
            // ComfyUI-GGUF flattens some SD convolutions and records the original shape.
            let orig: Option<Vec<usize>> = orig
                .iter()
                .map(|v| v.as_u64().and_then(|d| usize::try_from(d).ok()))
                .collect();
            if let Some(orig) =
                orig.filter(|o| o.iter().product::<usize>() == shape.iter().product::<usize>())
            {
                shape = orig;
            }
        }
        let ggml = ggml_type(ty);
        let n_elements = ne
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| format!("tensor {name} shape {shape:?} overflows"))?;
        let n_bytes = match ggml {
            Ok(t) => {
                let row = ne.first().copied().unwrap_or(1);
                let row_bytes = StoredDType::Ggml(t).row_bytes(row).ok_or_else(|| {
                    format!(
                        "tensor {name}: rows of {row} values do not fill whole {} blocks of {}",
                        super::raw::ggml_name(t),
                        t.block_size()
                    )
                })?;
                let n_rows = n_elements.checked_div(row).unwrap_or(0);
                n_rows
                    .checked_mul(row_bytes)
                    .ok_or_else(|| format!("tensor {name} size overflows"))?
            }
            // Unknown types are only located, never read; their size is unknown.
            Err(_) => 0,
        };
        let start = usize::try_from(offset)
            .ok()
            .and_then(|o| data_start.checked_add(o))
            .ok_or_else(|| format!("tensor {name} offset {offset} is out of range"))?;
        let end = start
            .checked_add(n_bytes)
            .filter(|&end| end <= bytes.len())
            .ok_or_else(|| {
                format!(
                    "tensor {name} data [{start}..{start}+{n_bytes}] runs past the end of the {}-byte file (truncated?)",
                    bytes.len()
                )
            })?;
        if tensors
            .insert(
                name.clone(),
                GgufTensor {
                    ggml_type: ggml,
                    shape,
                    start,
                    end,
                },
            )
            .is_some()
        {
            return Err(format!("tensor {name} appears twice"));
        }
    }
    Ok((metadata, tensors))
}
