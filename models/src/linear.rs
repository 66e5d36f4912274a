//! Linear layers and embeddings whose weights may stay in the checkpoint's compact form.
//!
//! A weight is dense (`[out, in]`, or pre-transposed `[in, out]` after Compile's optional
//! relayout, which the CPU GEMM reads 4–7 % faster at FLUX.2 widths), FP8 (half of bf16; decoded per
//! use as ComfyUI does: `weight.to(dtype) * scale`), or GGUF blocks as a candle `QTensor`. Compact
//! weights compute exactly by default: decoded for each use, then an ordinary matmul, which is what
//! diffusers and ComfyUI do; [`QuantMode::Fast`] sends GGUF weights through candle's quantized
//! matmul instead (activations quantized too, as llama.cpp does).

use std::sync::Arc;

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Device, Module, Tensor};

use crate::error::Result;
use crate::weights::QuantMode;
use crate::weights::raw::{Fp8Format, RawTensor, StoredDType, dequantize_fp8, encode_e4m3};

/// A compact storage to re-encode dense weights in ([`LinearWeight::compact`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompactFormat {
    /// FP8 E4M3 with a per-tensor scale.
    Fp8E4M3,
    /// GGUF blocks of this type.
    Ggml(GgmlDType),
}

impl CompactFormat {
    /// Every format by its name as GGUF tools (and `veetance bench gpu --weights`) spell it.
    pub const ALL: [CompactFormat; 11] = [
        CompactFormat::Fp8E4M3,
        CompactFormat::Ggml(GgmlDType::Q8_0),
        CompactFormat::Ggml(GgmlDType::Q5_0),
        CompactFormat::Ggml(GgmlDType::Q5_1),
        CompactFormat::Ggml(GgmlDType::Q4_0),
        CompactFormat::Ggml(GgmlDType::Q4_1),
        CompactFormat::Ggml(GgmlDType::Q6K),
        CompactFormat::Ggml(GgmlDType::Q5K),
        CompactFormat::Ggml(GgmlDType::Q4K),
        CompactFormat::Ggml(GgmlDType::Q3K),
        CompactFormat::Ggml(GgmlDType::Q2K),
    ];

    /// `FP8` or the GGML type name (`Q8_0`, `Q4_K`, ...).
    pub fn name(self) -> &'static str {
        match self {
            CompactFormat::Fp8E4M3 => "FP8",
            CompactFormat::Ggml(t) => crate::weights::raw::ggml_name(t),
        }
    }

    /// The format named `name`, ignoring case (`fp8`, `q8_0`, `Q4_K`, ...).
    pub fn from_name(name: &str) -> Option<CompactFormat> {
        Self::ALL
            .into_iter()
            .find(|format| format.name().eq_ignore_ascii_case(name))
    }
}

/// A projection weight in one of its storage forms.
#[derive(Debug, Clone)]
pub enum LinearWeight {
    /// `[out, in]` when `transposed` is false, `[in, out]` (contiguous) when true.
    Dense {
        /// The matrix.
        weight: Tensor,
        /// Whether it is stored pre-transposed.
        transposed: bool,
    },
    /// FP8 `[out, in]` (the bytes as U8), times an optional `[out, 1]` f32 scale.
    Fp8 {
        /// The FP8 bytes.
        weight: Tensor,
        /// Their encoding.
        format: Fp8Format,
        /// Per-row scales.
        row_scale: Option<Tensor>,
    },
    /// GGUF blocks `[out, in]`.
    Ggml {
        /// The blocks.
        weight: Arc<QTensor>,
        /// Whether to multiply with candle's quantized matmul ([`QuantMode::Fast`]).
        fast: bool,
    },
}

impl LinearWeight {
    /// A dense `[out, in]` weight.
    pub fn dense(weight: Tensor) -> Self {
        LinearWeight::Dense {
            weight,
            transposed: false,
        }
    }

    /// The stored tensor as a weight: dense types convert to `dtype`; FP8 and GGUF blocks stay
    /// compact (GGUF's F32/F16/BF16 "blocks" are dense).
    pub fn from_raw(
        raw: &RawTensor<'_>,
        dtype: DType,
        device: &Device,
        quant: QuantMode,
    ) -> Result<Self> {
        Ok(match raw.dtype {
            StoredDType::F8E4M3 | StoredDType::F8E5M2 => {
                let (weight, format) = raw.to_fp8_tensor(device)?;
                LinearWeight::Fp8 {
                    weight,
                    format,
                    row_scale: raw.row_scale_tensor(device)?,
                }
            }
            StoredDType::Ggml(t) if raw.dtype.is_quantized() && raw.shape.len() == 2 => {
                LinearWeight::Ggml {
                    weight: Arc::new(raw.to_qtensor(t, device)?),
                    fast: quant == QuantMode::Fast && fast_matmul_supports(t, &raw.shape),
                }
            }
            _ => LinearWeight::dense(raw.to_tensor(dtype, device)?),
        })
    }

    /// Bytes the weight occupies.
    pub fn size_bytes(&self) -> u64 {
        match self {
            LinearWeight::Dense { weight, .. } => {
                (weight.elem_count() * weight.dtype().size_in_bytes()) as u64
            }
            LinearWeight::Fp8 {
                weight, row_scale, ..
            } => {
                (weight.elem_count() + row_scale.as_ref().map_or(0, |s| 4 * s.elem_count())) as u64
            }
            LinearWeight::Ggml { weight, .. } => weight.storage_size_in_bytes() as u64,
        }
    }

    /// A short description of the storage (`bf16`, `fp8_e4m3`, `Q4_K`).
    pub fn storage_name(&self) -> String {
        match self {
            LinearWeight::Dense { weight, .. } => weight.dtype().as_str().to_string(),
            LinearWeight::Fp8 { format, .. } => format.name().into(),
            LinearWeight::Ggml { weight, .. } => {
                crate::weights::raw::ggml_name(weight.dtype()).into()
            }
        }
    }

    /// The weight as a dense `[out, in]` matrix in `dtype`.
    pub fn to_dense(&self, dtype: DType) -> candle_core::Result<Tensor> {
        match self {
            LinearWeight::Dense { weight, transposed } => {
                let w = if *transposed {
                    weight.t()?
                } else {
                    weight.clone()
                };
                w.to_dtype(dtype)
            }
            LinearWeight::Fp8 {
                weight,
                format,
                row_scale,
            } => dequantize_fp8(weight, *format, row_scale.as_ref(), dtype),
            LinearWeight::Ggml { weight, .. } => {
                weight.dequantize(&weight.device())?.to_dtype(dtype)
            }
        }
    }

    /// The same weight re-encoded compactly, as a quantized checkpoint would store it: FP8 E4M3
    /// with one scale per tensor (amax / 448, BFL's and ComfyUI's convention), or GGUF blocks
    /// (quantized on the CPU with candle, then placed where the weight was). Rows that do not
    /// fill whole blocks stay as they are.
    pub fn compact(&self, format: CompactFormat, quant: QuantMode) -> Result<Self> {
        let dense = self.to_dense(DType::F32)?;
        let dense_shape = dense.shape().clone();
        let device = dense.device().clone();
        Ok(match format {
            CompactFormat::Fp8E4M3 => {
                let amax = dense
                    .abs()?
                    .max_all()?
                    .to_dtype(DType::F32)?
                    .to_scalar::<f32>()?;
                let scale = (amax / 448.0).max(f32::MIN_POSITIVE);
                let rows = dense.dim(0)?;
                // Encoded on the CPU: candle 0.11 cannot cast to F8E4M3 on a GPU.
                let scaled = (dense / f64::from(scale))?
                    .to_device(&Device::Cpu)?
                    .flatten_all()?
                    .to_vec1::<f32>()?;
                let bytes = Tensor::from_vec(encode_e4m3(&scaled), dense_shape, &Device::Cpu)?;
                LinearWeight::Fp8 {
                    weight: bytes.to_device(&device)?,
                    format: Fp8Format::E4M3,
                    row_scale: Some(Tensor::full(scale, (rows, 1), &device)?),
                }
            }
            CompactFormat::Ggml(t) => {
                let cols = dense.dims().last().copied().unwrap_or(0);
                if !cols.is_multiple_of(t.block_size()) {
                    return Ok(self.clone());
                }
                let data = quantize_rows(&dense.to_device(&Device::Cpu)?, t)?;
                let storage = candle_core::quantized::QStorage::from_data(
                    std::borrow::Cow::Owned(data),
                    &device,
                    t,
                )?;
                LinearWeight::Ggml {
                    weight: Arc::new(QTensor::new(storage, dense.shape().clone())?),
                    fast: quant == QuantMode::Fast && fast_matmul_supports(t, dense.dims()),
                }
            }
        })
    }

    /// Moves the weight to `device`.
    pub fn to_device(&self, device: &Device) -> candle_core::Result<Self> {
        Ok(match self {
            LinearWeight::Dense { weight, transposed } => LinearWeight::Dense {
                weight: weight.to_device(device)?,
                transposed: *transposed,
            },
            LinearWeight::Fp8 {
                weight,
                format,
                row_scale,
            } => LinearWeight::Fp8 {
                weight: weight.to_device(device)?,
                format: *format,
                row_scale: row_scale
                    .as_ref()
                    .map(|s| s.to_device(device))
                    .transpose()?,
            },
            LinearWeight::Ggml { weight, fast } => {
                let data = weight.data()?;
                let storage =
                    candle_core::quantized::QStorage::from_data(data, device, weight.dtype())?;
                LinearWeight::Ggml {
                    weight: Arc::new(QTensor::new(storage, weight.shape().clone())?),
                    fast: *fast,
                }
            }
        })
    }

    /// Every tensor behind the weight (for page-locking RAM copies).
    pub fn tensors(&self) -> Vec<Tensor> {
        match self {
            LinearWeight::Dense { weight, .. } => vec![weight.clone()],
            LinearWeight::Fp8 {
                weight, row_scale, ..
            } => std::iter::once(weight.clone())
                .chain(row_scale.clone())
                .collect(),
            LinearWeight::Ggml { .. } => Vec::new(),
        }
    }
}

/// GGUF blocks of a CPU matrix whose rows are whole blocks, quantized on every core: candle
/// quantizes on one thread, and the K-quants' search for scales makes a 9-billion-parameter
/// model take minutes that way. Rows are independent and blocks never span rows, so quantizing
/// bands of rows and joining their bytes gives exactly the single-threaded result.
fn quantize_rows(dense: &Tensor, t: GgmlDType) -> candle_core::Result<Vec<u8>> {
    let rows = dense.dims().first().copied().unwrap_or(0);
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    if dense.rank() != 2 || rows < 2 * threads || threads == 1 {
        return Ok(QTensor::quantize(dense, t)?.data()?.into_owned());
    }
    let band = rows.div_ceil(threads);
    let bands: Vec<(usize, usize)> = (0..rows)
        .step_by(band)
        .map(|start| (start, band.min(rows - start)))
        .collect();
    let parts = std::thread::scope(|scope| {
        let handles: Vec<_> = bands
            .iter()
            .map(|&(start, len)| {
                scope.spawn(move || -> candle_core::Result<Vec<u8>> {
                    // A band of its own: candle's quantizer reads the storage from its start,
                    // whatever the view's offset.
                    let values = dense
                        .narrow(0, start, len)?
                        .flatten_all()?
                        .to_vec1::<f32>()?;
                    let part = Tensor::from_vec(values, (len, dense.dim(1)?), &Device::Cpu)?;
                    Ok(QTensor::quantize(&part, t)?.data()?.into_owned())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(candle_core::Error::Msg("quantizing thread panicked".into()))
                })
            })
            .collect::<candle_core::Result<Vec<_>>>()
    })?;
    Ok(parts.concat())
}

/// Whether candle's quantized matmul handles a weight: its CPU kernels for Q4_1, Q5_0 and Q5_1
/// work on pairs of blocks and assert (panic) when a row has an odd number of them, so such
/// layers compute exactly instead.
fn fast_matmul_supports(t: GgmlDType, shape: &[usize]) -> bool {
    let cols = shape.last().copied().unwrap_or(0);
    let pairs_only = matches!(t, GgmlDType::Q4_1 | GgmlDType::Q5_0 | GgmlDType::Q5_1);
    !pairs_only || (cols / t.block_size()).is_multiple_of(2)
}

/// A low-rank adapter kept beside a layer's weight (a LoRA applied un-merged): the layer adds
/// `(x · downᵀ) · upᵀ`, the strength and the adapter's own scale already folded into `up`.
#[derive(Debug, Clone)]
pub struct LowRank {
    /// `[rank, in]` (LoRA's A).
    pub down: Tensor,
    /// `[out, rank]` (LoRA's B), times the adapter's scale and strength.
    pub up: Tensor,
}

/// A linear layer: `x · Wᵀ (+ b)`, plus any low-rank adapters kept beside the weight.
#[derive(Debug, Clone)]
pub struct Linear {
    weight: LinearWeight,
    bias: Option<Tensor>,
    adapters: Vec<LowRank>,
}

impl Linear {
    /// A layer from a weight and an optional bias `[out]`.
    pub fn new(weight: LinearWeight, bias: Option<Tensor>) -> Linear {
        Linear {
            weight,
            bias,
            adapters: Vec::new(),
        }
    }

    /// The same layer with `weight` in place of its weight (adapters and bias kept).
    pub fn with_weight(&self, weight: LinearWeight) -> Linear {
        Linear {
            weight,
            ..self.clone()
        }
    }

    /// The same layer with `adapter` added beside its weight.
    pub fn with_adapter(&self, adapter: LowRank) -> Linear {
        let mut layer = self.clone();
        layer.adapters.push(adapter);
        layer
    }

    /// The adapters kept beside the weight.
    pub fn adapters(&self) -> &[LowRank] {
        &self.adapters
    }

    /// A bias-free layer from a dense `[out, in]` weight.
    pub fn from_dense(weight: Tensor) -> Linear {
        Linear::new(LinearWeight::dense(weight), None)
    }

    /// The weight.
    pub fn weight(&self) -> &LinearWeight {
        &self.weight
    }

    /// The same layer with `f` applied to its dense weight and bias tensors (moves between
    /// devices); compact weights are moved with [`LinearWeight::to_device`] by `to_device` callers.
    pub fn map_tensors(
        &self,
        f: &dyn Fn(&Tensor) -> candle_core::Result<Tensor>,
    ) -> candle_core::Result<Linear> {
        let weight = match &self.weight {
            LinearWeight::Dense { weight, transposed } => LinearWeight::Dense {
                weight: f(weight)?,
                transposed: *transposed,
            },
            LinearWeight::Fp8 {
                weight,
                format,
                row_scale,
            } => LinearWeight::Fp8 {
                weight: f(weight)?,
                format: *format,
                row_scale: row_scale.as_ref().map(f).transpose()?,
            },
            LinearWeight::Ggml { .. } => self.weight.clone(),
        };
        Ok(Linear {
            weight,
            bias: self.bias.as_ref().map(f).transpose()?,
            adapters: self.map_adapters(f)?,
        })
    }

    fn map_adapters(
        &self,
        f: &dyn Fn(&Tensor) -> candle_core::Result<Tensor>,
    ) -> candle_core::Result<Vec<LowRank>> {
        self.adapters
            .iter()
            .map(|a| {
                Ok(LowRank {
                    down: f(&a.down)?,
                    up: f(&a.up)?,
                })
            })
            .collect()
    }

    /// The same layer with its weight re-encoded compactly (see [`LinearWeight::compact`]).
    pub fn compacted(&self, format: CompactFormat, quant: QuantMode) -> Result<Linear> {
        Ok(self.with_weight(self.weight.compact(format, quant)?))
    }

    /// The same layer on `device`.
    pub fn to_device(&self, device: &Device) -> candle_core::Result<Linear> {
        Ok(Linear {
            weight: self.weight.to_device(device)?,
            bias: self
                .bias
                .as_ref()
                .map(|b| b.to_device(device))
                .transpose()?,
            adapters: self.map_adapters(&|t| t.to_device(device))?,
        })
    }

    /// The same layer with a dense weight stored as a contiguous `[in, out]` matrix (compact
    /// weights are unchanged).
    pub fn laid_out_for_matmul(&self) -> candle_core::Result<Linear> {
        let weight = match &self.weight {
            LinearWeight::Dense {
                weight,
                transposed: false,
            } => LinearWeight::Dense {
                weight: weight.t()?.contiguous()?,
                transposed: true,
            },
            other => other.clone(),
        };
        Ok(self.with_weight(weight))
    }

    /// Every tensor the layer holds: the weight's, then the bias, then the adapters'.
    pub fn tensors(&self) -> Vec<Tensor> {
        let mut all = self.weight.tensors();
        all.extend(self.bias.clone());
        for adapter in &self.adapters {
            all.extend([adapter.down.clone(), adapter.up.clone()]);
        }
        all
    }
}

/// `x · w` with `w` broadcast over the batch dimensions the same way `candle_nn::Linear` does, so
/// the dense path keeps its exact numerics.
fn matmul_broadcast(x: &Tensor, w: &Tensor, transposed: bool) -> candle_core::Result<Tensor> {
    let w = match *x.dims() {
        [b1, b2, _, _] => w.broadcast_left((b1, b2))?,
        [batch, _, _] => w.broadcast_left(batch)?,
        _ => w.clone(),
    };
    if transposed {
        x.matmul(&w)
    } else {
        x.matmul(&w.t()?)
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let out = match &self.weight {
            LinearWeight::Dense { weight, transposed } => matmul_broadcast(x, weight, *transposed)?,
            LinearWeight::Fp8 {
                weight,
                format,
                row_scale,
            } => {
                let w = dequantize_fp8(weight, *format, row_scale.as_ref(), x.dtype())?;
                matmul_broadcast(x, &w, false)?
            }
            LinearWeight::Ggml { weight, fast: true } => {
                QMatMul::from_arc(weight.clone())?.forward(x)?
            }
            LinearWeight::Ggml {
                weight,
                fast: false,
            } => {
                let w = weight.dequantize(x.device())?.to_dtype(x.dtype())?;
                matmul_broadcast(x, &w, false)?
            }
        };
        let mut out = match &self.bias {
            Some(b) => out.broadcast_add(b)?,
            None => out,
        };
        for adapter in &self.adapters {
            let low = matmul_broadcast(x, &adapter.down, false)?;
            out = (out + matmul_broadcast(&low, &adapter.up, false)?)?;
        }
        Ok(out)
    }
}

/// A token embedding table.
#[derive(Debug, Clone)]
pub enum Embedding {
    /// `[vocab, hidden]` in the compute dtype.
    Dense(Tensor),
    /// GGUF blocks kept in RAM; looked-up rows are dequantized (a 151,936-token table stays a
    /// few hundred megabytes instead of 1.5 GB in f32).
    Quantized {
        /// Bytes of the whole table, row-major.
        bytes: Arc<Vec<u8>>,
        /// Block type.
        ggml: GgmlDType,
        /// Rows (vocabulary size).
        rows: usize,
        /// Values per row (hidden size).
        cols: usize,
        /// Dtype looked-up rows are returned in.
        dtype: DType,
        /// Device looked-up rows are returned on.
        device: Device,
    },
}

impl Embedding {
    /// A dense table.
    pub fn dense(table: Tensor) -> Result<Embedding> {
        Ok(Embedding::Dense(table))
    }

    /// A GGUF table, rows returned in `dtype` on `device`.
    pub fn quantized(raw: &RawTensor<'_>, dtype: DType, device: &Device) -> Result<Embedding> {
        let StoredDType::Ggml(ggml) = raw.dtype else {
            return Embedding::dense(raw.to_tensor(dtype, device)?);
        };
        let [rows, cols] = raw.shape.as_slice() else {
            return Err(crate::ModelError::InvalidArgument(format!(
                "an embedding table must be 2-D, not {:?}",
                raw.shape
            )));
        };
        Ok(Embedding::Quantized {
            bytes: Arc::new(raw.bytes.to_vec()),
            ggml,
            rows: *rows,
            cols: *cols,
            dtype,
            device: device.clone(),
        })
    }

    /// The table with its (dense) tensor mapped by `f`, placed for lookups on `device`: a
    /// quantized table stays in RAM and only its looked-up rows go to `device`.
    pub fn map_placed(
        &self,
        f: &dyn Fn(&Tensor) -> candle_core::Result<Tensor>,
        device: &Device,
    ) -> candle_core::Result<Embedding> {
        Ok(match self {
            Embedding::Dense(table) => Embedding::Dense(f(table)?),
            Embedding::Quantized {
                bytes,
                ggml,
                rows,
                cols,
                dtype,
                ..
            } => Embedding::Quantized {
                bytes: bytes.clone(),
                ggml: *ggml,
                rows: *rows,
                cols: *cols,
                dtype: *dtype,
                device: device.clone(),
            },
        })
    }

    /// Hidden size.
    pub fn hidden_size(&self) -> candle_core::Result<usize> {
        match self {
            Embedding::Dense(t) => t.dim(1),
            Embedding::Quantized { cols, .. } => Ok(*cols),
        }
    }

    /// Rows for `ids` (`[B, L]` u32) → `[B, L, hidden]`.
    pub fn forward(&self, ids: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Embedding::Dense(table) => {
                let (b, l) = ids.dims2()?;
                let hidden = table.dim(1)?;
                table
                    .index_select(&ids.flatten_all()?, 0)?
                    .reshape((b, l, hidden))
            }
            Embedding::Quantized {
                bytes,
                ggml,
                rows,
                cols,
                dtype,
                device,
            } => {
                let (b, l) = ids.dims2()?;
                let row_bytes = StoredDType::Ggml(*ggml).row_bytes(*cols).ok_or_else(|| {
                    candle_core::Error::Msg("embedding rows are not whole blocks".into())
                })?;
                let wanted: Vec<u32> = ids.flatten_all()?.to_vec1()?;
                let mut gathered = Vec::with_capacity(wanted.len() * row_bytes);
                for &id in &wanted {
                    let id = id as usize;
                    if id >= *rows {
                        candle_core::bail!("token id {id} is outside the {rows}-token vocabulary");
                    }
                    let row = bytes
                        .get(id * row_bytes..(id + 1) * row_bytes)
                        .ok_or_else(|| {
                            candle_core::Error::Msg("embedding row out of range".into())
                        })?;
                    gathered.extend_from_slice(row);
                }
                let storage = candle_core::quantized::QStorage::from_data(
                    std::borrow::Cow::Owned(gathered),
                    &Device::Cpu,
                    *ggml,
                )?;
                let q = QTensor::new(storage, (wanted.len(), *cols))?;
                q.dequantize(&Device::Cpu)?
                    .to_dtype(*dtype)?
                    .to_device(device)?
                    .reshape((b, l, *cols))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantizing_bands_of_rows_gives_the_single_threaded_bytes() -> candle_core::Result<()> {
        let dense = Tensor::randn(0f32, 1.0, (67, 512), &Device::Cpu)?;
        for t in [GgmlDType::Q8_0, GgmlDType::Q4K, GgmlDType::Q5K] {
            let whole = QTensor::quantize(&dense, t)?.data()?.into_owned();
            assert_eq!(quantize_rows(&dense, t)?, whole, "{t:?}");
        }
        Ok(())
    }
}
