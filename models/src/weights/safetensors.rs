//! Safetensors files: our own header validation, then a read-only memory map.
//!
//! We parse and check every header ourselves before touching tensor data, because a checkpoint is
//! untrusted input: a truncated download, a header length pointing past the end of the file, a
//! 10 GB "header", overlapping or out-of-range data offsets, or a shape whose size disagrees with
//! its byte range must each give a clear error, never a panic or a huge allocation. Only after the
//! header passes is the file memory-mapped; tensors are then copied out of the map one at a time and
//! converted to the requested dtype, so peak memory stays close to the weights' own size.
//!
//! Why not `safetensors::SafeTensors::read_metadata` (safetensors 0.8): it takes the whole file
//! as one slice, so the file would be mapped before its header is trusted; a shape that
//! disagrees with its byte range is `TensorInvalidInfo`, which names neither the tensor nor the
//! sizes, and the user is left to guess which of hundreds of tensors is broken; and it refuses
//! gaps between tensors (alignment padding some writers add), which we accept as long as no two
//! ranges overlap. The hostile-file tests (`tests/bad_files.rs`, `tests/loading.rs`) pin each
//! of these errors.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

use super::raw::{RawTensor, StoredDType};
use crate::error::{ModelError, Result};

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

/// How a safetensors dtype string is stored, if we can read it.
pub(crate) fn stored_dtype(dtype: &str) -> Option<StoredDType> {
    Some(match dtype {
        "U8" | "BOOL" => StoredDType::Plain(DType::U8),
        "I16" => StoredDType::Plain(DType::I16),
        "I32" => StoredDType::Plain(DType::I32),
        "U32" => StoredDType::Plain(DType::U32),
        "I64" => StoredDType::Plain(DType::I64),
        "F16" => StoredDType::Plain(DType::F16),
        "BF16" => StoredDType::Plain(DType::BF16),
        "F32" => StoredDType::Plain(DType::F32),
        "F64" => StoredDType::Plain(DType::F64),
        "F8_E4M3" => StoredDType::F8E4M3,
        "F8_E5M2" => StoredDType::F8E5M2,
        _ => return None,
    })
}

/// A validated header: tensors by name, where the data section starts, and `__metadata__`.
#[derive(Debug, Clone)]
pub struct Header {
    /// Tensors by name.
    pub tensors: BTreeMap<String, TensorInfo>,
    /// Byte offset of the data section (8 + header length).
    pub data_offset: usize,
    /// The string entries of `__metadata__` (ComfyUI keeps `_quantization_metadata` there).
    pub metadata: BTreeMap<String, String>,
}

/// Reads and validates a safetensors header without mapping the file.
///
/// Returns the tensors by name and the byte offset where the data section starts.
pub fn read_header(path: &Path) -> Result<Header> {
    let invalid = |reason: String| ModelError::InvalidSafetensors {
        path: path.to_path_buf(),
        reason,
    };
    let mut file = crate::files::open_regular(path)?;
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
    let mut metadata = BTreeMap::new();
    for (name, entry) in entries {
        if name == "__metadata__" {
            if let Some(map) = entry.as_object() {
                for (key, value) in map {
                    if let Some(text) = value.as_str() {
                        metadata.insert(key.clone(), text.to_string());
                    }
                }
            }
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
    Ok(Header {
        tensors,
        data_offset: 8 + header_len,
        metadata,
    })
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
    header: Header,
    mmap: memmap2::Mmap,
}

impl SafetensorsFile {
    /// Validates the header, then maps the file.
    pub fn open(path: &Path) -> Result<Self> {
        let header = read_header(path)?;
        let file = crate::files::open_regular(path)?;
        // SAFETY: the map is read-only; if another process truncates the file while it is mapped,
        // reads would fault. That is the usual contract of memory-mapped model files (candle and the
        // safetensors crate make the same trade) and we re-check the length right below.
        let mmap = unsafe { memmap2::Mmap::map(&file) }.map_err(|source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let needed = header
            .tensors
            .values()
            .map(|t| t.data_end)
            .max()
            .unwrap_or(0)
            .saturating_add(header.data_offset);
        if mmap.len() < needed {
            return Err(ModelError::InvalidSafetensors {
                path: path.to_path_buf(),
                reason: "file shrank while being opened".into(),
            });
        }
        Ok(Self {
            path: path.to_path_buf(),
            header,
            mmap,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Tensor names and layouts.
    pub fn tensors(&self) -> &BTreeMap<String, TensorInfo> {
        &self.header.tensors
    }

    /// The string entries of the header's `__metadata__`.
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.header.metadata
    }

    fn invalid(&self, reason: String) -> ModelError {
        ModelError::InvalidSafetensors {
            path: self.path.clone(),
            reason,
        }
    }

    /// One tensor's bytes, borrowed from the map.
    pub fn raw(&self, name: &str) -> Result<RawTensor<'_>> {
        let info = self
            .header
            .tensors
            .get(name)
            .ok_or_else(|| self.invalid(format!("no tensor named {name}")))?;
        let dtype = stored_dtype(&info.dtype).ok_or_else(|| {
            self.invalid(format!(
                "tensor {name} has unsupported dtype {}",
                info.dtype
            ))
        })?;
        let start = self.header.data_offset + info.data_start;
        let end = self.header.data_offset + info.data_end;
        let bytes = self
            .mmap
            .get(start..end)
            .ok_or_else(|| self.invalid(format!("tensor {name} lies outside the mapped file")))?;
        Ok(RawTensor {
            dtype,
            shape: info.shape.clone(),
            bytes: Cow::Borrowed(bytes),
            scale: None,
        })
    }

    /// Tells the kernel that a tensor's mapped pages are no longer needed (its values have been
    /// copied), so the page cache does not count twice in our resident size while a large
    /// checkpoint loads.
    pub fn release(&self, name: &str) {
        let Some(info) = self.header.tensors.get(name) else {
            return;
        };
        #[cfg(unix)]
        {
            // SAFETY: the mapping is read-only and file-backed, so MADV_DONTNEED only drops clean
            // pages; a later read of the same range faults them back in from the file with the same
            // contents. Advice failures are harmless, hence ignored.
            let _ = unsafe {
                self.mmap.unchecked_advise_range(
                    memmap2::UncheckedAdvice::DontNeed,
                    self.header.data_offset + info.data_start,
                    info.data_end - info.data_start,
                )
            };
        }
        #[cfg(not(unix))]
        let _ = info;
    }

    /// Copies one tensor out of the map and converts it to `dtype` on `device`.
    pub fn load(&self, name: &str, dtype: DType, device: &Device) -> Result<Tensor> {
        let tensor = self
            .raw(name)?
            .to_tensor(dtype, device)
            .map_err(|err| match err {
                ModelError::Candle { source, .. } => ModelError::Candle {
                    context: format!("reading tensor {name} from {}", self.path.display()),
                    source,
                },
                other => other,
            })?;
        self.release(name);
        Ok(tensor)
    }
}
