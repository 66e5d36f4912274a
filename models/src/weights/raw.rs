//! A stored tensor as bytes: its storage type, shape and (for scaled FP8) the scale to apply.
//!
//! Checkpoint layouts are mapped at this level (concatenating q/k/v rows, swapping the halves of a
//! modulation weight, reshaping a 1×1 convolution into a matrix) so that the same code serves every
//! storage type: a row of a dense, FP8 or GGUF block-quantized matrix is a contiguous run of bytes,
//! so joining or swapping rows never needs the values. Only after mapping is a tensor decoded,
//! either to a dense tensor in the compute dtype or, for projection weights, kept compact
//! ([`crate::linear::LinearWeight`]).

use std::borrow::Cow;

use candle_core::quantized::{GgmlDType, QStorage, QTensor};
use candle_core::{DType, Device, Tensor};

use crate::error::{CandleContext as _, ModelError, Result};

/// How a tensor is stored in a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoredDType {
    /// A plain element type that candle holds directly (f64, f32, f16, bf16, integers).
    Plain(DType),
    /// FP8 E4M3 ("fn": no infinities, max 448).
    F8E4M3,
    /// FP8 E5M2 (the top byte of an IEEE half).
    F8E5M2,
    /// A GGML block type from a GGUF file (`F32`, `F16` and `BF16` included).
    Ggml(GgmlDType),
}

impl StoredDType {
    /// A short name for listings and messages (`bf16`, `fp8_e4m3`, `Q4_K`, ...).
    pub fn name(self) -> String {
        match self {
            StoredDType::Plain(dtype) => dtype.as_str().to_string(),
            StoredDType::F8E4M3 => "fp8_e4m3".into(),
            StoredDType::F8E5M2 => "fp8_e5m2".into(),
            StoredDType::Ggml(t) => ggml_name(t).into(),
        }
    }

    /// Whether values are kept compact in memory when used as projection weights.
    pub fn is_quantized(self) -> bool {
        match self {
            StoredDType::Plain(_) => false,
            StoredDType::F8E4M3 | StoredDType::F8E5M2 => true,
            StoredDType::Ggml(t) => !matches!(t, GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16),
        }
    }

    /// Bytes of one row of `n_cols` values, or `None` when `n_cols` does not fill whole blocks.
    pub fn row_bytes(self, n_cols: usize) -> Option<usize> {
        match self {
            StoredDType::Plain(dtype) => n_cols.checked_mul(dtype.size_in_bytes()),
            StoredDType::F8E4M3 | StoredDType::F8E5M2 => Some(n_cols),
            StoredDType::Ggml(t) => {
                let block = t.block_size();
                n_cols
                    .is_multiple_of(block)
                    .then(|| (n_cols / block).checked_mul(t.type_size()))
                    .flatten()
            }
        }
    }
}

/// The GGML type name as llama.cpp and gguf-py print it.
pub fn ggml_name(t: GgmlDType) -> &'static str {
    match t {
        GgmlDType::F32 => "F32",
        GgmlDType::F16 => "F16",
        GgmlDType::BF16 => "BF16",
        GgmlDType::Q4_0 => "Q4_0",
        GgmlDType::Q4_1 => "Q4_1",
        GgmlDType::Q5_0 => "Q5_0",
        GgmlDType::Q5_1 => "Q5_1",
        GgmlDType::Q8_0 => "Q8_0",
        GgmlDType::Q8_1 => "Q8_1",
        GgmlDType::Q2K => "Q2_K",
        GgmlDType::Q3K => "Q3_K",
        GgmlDType::Q4K => "Q4_K",
        GgmlDType::Q5K => "Q5_K",
        GgmlDType::Q6K => "Q6_K",
        GgmlDType::Q8K => "Q8_K",
    }
}

/// Dequantization scale of an FP8 weight: one per tensor (ComfyUI's `weight_scale`, BFL's FP8
/// releases) or one per row (after joining the rows of separately scaled tensors).
#[derive(Debug, Clone, PartialEq)]
pub enum Scale {
    /// One scale for every element.
    Tensor(f32),
    /// One scale per row (dimension 0).
    Rows(Vec<f32>),
}

impl Scale {
    /// The per-row scales for `n_rows` rows.
    fn rows(&self, n_rows: usize) -> Vec<f32> {
        match self {
            Scale::Tensor(s) => vec![*s; n_rows],
            Scale::Rows(rows) => rows.clone(),
        }
    }
}

/// One stored tensor: bytes in its storage type, logical shape (outermost first), optional scale.
#[derive(Debug, Clone)]
pub struct RawTensor<'a> {
    /// Storage type.
    pub dtype: StoredDType,
    /// Logical shape in PyTorch order.
    pub shape: Vec<usize>,
    /// The data, row-major (GGML blocks along the last dimension).
    pub bytes: Cow<'a, [u8]>,
    /// FP8 dequantization scale, if the checkpoint stores one.
    pub scale: Option<Scale>,
}

impl<'a> RawTensor<'a> {
    fn row_count_and_bytes(&self, what: &str) -> Result<(usize, usize)> {
        let rows = self.shape.first().copied().unwrap_or(1);
        if rows == 0 || !self.bytes.len().is_multiple_of(rows) {
            return Err(ModelError::InvalidArgument(format!(
                "{what}: a tensor of shape {:?} has {} bytes, not whole rows",
                self.shape,
                self.bytes.len()
            )));
        }
        Ok((rows, self.bytes.len() / rows))
    }

    /// Joins tensors along dimension 0 (fused q/k/v from separate projections). All parts must
    /// share the storage type and the trailing dimensions.
    pub fn cat_rows(parts: Vec<RawTensor<'_>>) -> Result<RawTensor<'static>> {
        let Some(first) = parts.first() else {
            return Err(ModelError::InvalidArgument("nothing to join".into()));
        };
        let dtype = first.dtype;
        let tail = first.shape.get(1..).unwrap_or(&[]).to_vec();
        let mut n_rows = 0usize;
        let mut bytes = Vec::with_capacity(parts.iter().map(|p| p.bytes.len()).sum());
        let any_scale = parts.iter().any(|p| p.scale.is_some());
        let mut row_scales = Vec::new();
        for part in &parts {
            if part.dtype != dtype || part.shape.get(1..).unwrap_or(&[]) != tail.as_slice() {
                return Err(ModelError::InvalidArgument(format!(
                    "cannot join a {} {:?} tensor with a {} {:?} one",
                    part.dtype.name(),
                    part.shape,
                    dtype.name(),
                    first.shape
                )));
            }
            let rows = part.shape.first().copied().unwrap_or(1);
            n_rows += rows;
            bytes.extend_from_slice(&part.bytes);
            if any_scale {
                let scale = part.scale.clone().unwrap_or(Scale::Tensor(1.0));
                row_scales.extend(scale.rows(rows));
            }
        }
        let mut shape = vec![n_rows];
        shape.extend(tail);
        Ok(RawTensor {
            dtype,
            shape,
            bytes: Cow::Owned(bytes),
            scale: any_scale.then_some(Scale::Rows(row_scales)),
        })
    }

    /// Swaps the two halves along dimension 0 (BFL's final modulation is (shift, scale),
    /// diffusers' (scale, shift)).
    pub fn swap_halves(self) -> Result<RawTensor<'static>> {
        let (rows, row_bytes) = self.row_count_and_bytes("swapping halves")?;
        if !rows.is_multiple_of(2) {
            return Err(ModelError::InvalidArgument(format!(
                "cannot swap the halves of {rows} rows"
            )));
        }
        let half = rows / 2 * row_bytes;
        let (a, b) = self.bytes.split_at(half);
        let mut bytes = Vec::with_capacity(self.bytes.len());
        bytes.extend_from_slice(b);
        bytes.extend_from_slice(a);
        let scale = self.scale.map(|s| match s {
            Scale::Tensor(v) => Scale::Tensor(v),
            Scale::Rows(r) => {
                let (a, b) = r.split_at(rows / 2);
                Scale::Rows([b, a].concat())
            }
        });
        Ok(RawTensor {
            dtype: self.dtype,
            shape: self.shape,
            bytes: Cow::Owned(bytes),
            scale,
        })
    }

    /// The same values under another shape with as many elements (a 1×1 convolution kernel as a
    /// matrix). Block-quantized tensors keep their last dimension.
    pub fn reshaped(mut self, shape: &[usize]) -> Result<Self> {
        let count = |s: &[usize]| s.iter().product::<usize>();
        let same_rows = matches!(self.dtype, StoredDType::Ggml(_))
            && self.shape.last() != shape.last()
            && self.dtype.is_quantized();
        if count(&self.shape) != count(shape) || same_rows {
            return Err(ModelError::InvalidArgument(format!(
                "cannot view a {} {:?} tensor as {shape:?}",
                self.dtype.name(),
                self.shape
            )));
        }
        self.shape = shape.to_vec();
        Ok(self)
    }

    /// The values as a dense tensor in `dtype` on `device` (dequantized and scaled as needed).
    pub fn to_tensor(&self, dtype: DType, device: &Device) -> Result<Tensor> {
        let values = match self.dtype {
            StoredDType::Plain(stored) => {
                Tensor::from_raw_buffer(&self.bytes, stored, &self.shape, &Device::Cpu)?
            }
            StoredDType::F8E4M3 => {
                Tensor::from_raw_buffer(&self.bytes, DType::F8E4M3, &self.shape, &Device::Cpu)?
                    .to_dtype(DType::F32)?
            }
            StoredDType::F8E5M2 => e5m2_to_f32(&self.bytes, &self.shape)?,
            StoredDType::Ggml(t) => {
                let q = self.to_qtensor(t, &Device::Cpu)?;
                q.dequantize(&Device::Cpu)
                    .context("dequantizing a GGUF tensor")?
            }
        };
        let values = match &self.scale {
            None => values,
            Some(scale) => apply_scale(&values.to_dtype(DType::F32)?, scale)?,
        };
        let converted = if values.dtype() == dtype {
            values
        } else {
            values.to_dtype(dtype)?
        };
        Ok(converted.to_device(device)?)
    }

    /// The bytes as a candle quantized tensor of GGML type `t` on `device`.
    pub fn to_qtensor(&self, t: GgmlDType, device: &Device) -> Result<QTensor> {
        let storage = QStorage::from_data(aligned_blocks(&self.bytes)?, device, t)
            .context("reading GGUF blocks")?;
        QTensor::new(storage, self.shape.as_slice()).context("shaping GGUF blocks")
    }

    /// FP8 bytes as a compact `U8` tensor on `device`, with their encoding ([`dequantize_fp8`]
    /// decodes them). The bytes stay bytes, not candle's `F8E4M3`: candle 0.11's CUDA backend
    /// names its FP8 cast kernels differently from its kernel library, so an `F8E4M3` tensor
    /// cannot be converted on a GPU, and candle has no E5M2 type at all.
    pub fn to_fp8_tensor(&self, device: &Device) -> Result<(Tensor, Fp8Format)> {
        let format = match self.dtype {
            StoredDType::F8E4M3 => Fp8Format::E4M3,
            StoredDType::F8E5M2 => Fp8Format::E5M2,
            other => {
                return Err(ModelError::InvalidArgument(format!(
                    "{} is not an FP8 type",
                    other.name()
                )));
            }
        };
        let bytes = Tensor::from_raw_buffer(&self.bytes, DType::U8, &self.shape, &Device::Cpu)?;
        Ok((bytes.to_device(device)?, format))
    }

    /// The per-row scales as an `[rows, 1]` f32 tensor, if any.
    pub fn row_scale_tensor(&self, device: &Device) -> Result<Option<Tensor>> {
        let Some(scale) = &self.scale else {
            return Ok(None);
        };
        let rows = self.shape.first().copied().unwrap_or(1);
        Ok(Some(Tensor::from_vec(scale.rows(rows), (rows, 1), device)?))
    }
}

/// The bytes where candle can read them as blocks: candle reinterprets block bytes in place and
/// asserts (panics) that they are aligned for the block type, and a GGUF file may place its
/// tensor data at any offset (`general.alignment` is the file's to choose). Unaligned bytes are
/// copied into a fresh allocation, which the system allocator aligns to 16 bytes.
fn aligned_blocks(bytes: &[u8]) -> Result<Cow<'_, [u8]>> {
    const ALIGN: usize = 16;
    if (bytes.as_ptr() as usize).is_multiple_of(ALIGN) {
        return Ok(Cow::Borrowed(bytes));
    }
    // At least one aligned allocation, even for no bytes (an empty Vec's pointer is dangling).
    let mut copy = Vec::with_capacity(bytes.len().max(ALIGN));
    copy.extend_from_slice(bytes);
    if !(copy.as_ptr() as usize).is_multiple_of(ALIGN) {
        return Err(ModelError::InvalidArgument(
            "cannot place GGUF blocks at an aligned address".into(),
        ));
    }
    Ok(Cow::Owned(copy))
}

/// Multiplies rows by their scales.
fn apply_scale(values: &Tensor, scale: &Scale) -> Result<Tensor> {
    match scale {
        Scale::Tensor(s) => Ok((values * f64::from(*s))?),
        Scale::Rows(rows) => {
            let n = rows.len();
            let mut shape = vec![1usize; values.rank().max(1)];
            if let Some(first) = shape.first_mut() {
                *first = n;
            }
            let s = Tensor::from_vec(rows.clone(), shape, values.device())?;
            Ok(values.broadcast_mul(&s)?)
        }
    }
}

/// The encoding of FP8 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fp8Format {
    /// `float8_e4m3fn`: 4 exponent bits, 3 mantissa bits, no infinities.
    E4M3,
    /// `float8_e5m2`: the high byte of an IEEE half.
    E5M2,
}

impl Fp8Format {
    /// The name as checkpoints' dtype fields spell it (`fp8_e4m3`, `fp8_e5m2`).
    pub fn name(self) -> &'static str {
        match self {
            Fp8Format::E4M3 => "fp8_e4m3",
            Fp8Format::E5M2 => "fp8_e5m2",
        }
    }

    /// The 256 values of the encoding, indexed by byte.
    fn table(self) -> Vec<f32> {
        (0u8..=255)
            .map(|b| match self {
                Fp8Format::E4M3 => float8::F8E4M3::from_bits(b).to_f32(),
                Fp8Format::E5M2 => half::f16::from_bits(u16::from(b) << 8).to_f32(),
            })
            .collect()
    }
}

/// E4M3 bytes of `values` (round to nearest even, saturating as `float8_e4m3fn` casts do).
pub fn encode_e4m3(values: &[f32]) -> Vec<u8> {
    values
        .iter()
        .map(|&v| float8::F8E4M3::from_f32(v).to_bits())
        .collect()
}

/// Decodes E5M2 bytes to f32 values of `shape` on the CPU.
fn e5m2_to_f32(bytes: &[u8], shape: &[usize]) -> Result<Tensor> {
    let table = Fp8Format::E5M2.table();
    let values: Vec<f32> = bytes
        .iter()
        .map(|&b| table.get(usize::from(b)).copied().unwrap_or(f32::NAN))
        .collect();
    Ok(Tensor::from_vec(values, shape, &Device::Cpu)?)
}

/// Decodes FP8 bytes kept compact ([`RawTensor::to_fp8_tensor`]) to `dtype`, times their row
/// scales: ComfyUI's `weight.to(dtype) * weight_scale.to(dtype)`, on the weight's device. Every
/// FP8 value is exact in bf16, f16 and f32, so looking the bytes up in a table of the 256 values
/// in `dtype` is the cast itself (on GPUs one kernel decodes and scales instead). One difference
/// off the GPU: byte 0xFF, a NaN in both encodings, decodes to 0, because candle's
/// `index_select` reads the largest index as padding. A NaN weight makes
/// every output NaN, so only a broken checkpoint can tell.
pub fn dequantize_fp8(
    weight: &Tensor,
    format: Fp8Format,
    row_scale: Option<&Tensor>,
    dtype: DType,
) -> candle_core::Result<Tensor> {
    let kernel_dtype = matches!(dtype, DType::BF16 | DType::F16 | DType::F32);
    if weight.device().is_cuda() && veetance_gpu::is_built() && weight.rank() == 2 && kernel_dtype {
        // One fused pass on the GPU (the table lookup below takes three, and is 1.9× slower
        // per klein step on an H200).
        let scale = row_scale.map(|s| s.to_dtype(dtype)).transpose()?;
        return veetance_gpu::fused::fp8_decode(
            weight,
            format == Fp8Format::E5M2,
            scale.as_ref(),
            dtype,
        );
    }
    let table = Tensor::new(format.table().as_slice(), weight.device())?.to_dtype(dtype)?;
    let values = table
        .index_select(&weight.flatten_all()?, 0)?
        .reshape(weight.shape())?;
    match row_scale {
        Some(scale) => values.broadcast_mul(&scale.to_dtype(dtype)?),
        None => Ok(values),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(dtype: StoredDType, shape: &[usize], bytes: Vec<u8>) -> RawTensor<'static> {
        RawTensor {
            dtype,
            shape: shape.to_vec(),
            bytes: Cow::Owned(bytes),
            scale: None,
        }
    }

    fn f32_bytes(values: &[f32]) -> Vec<u8> {
        values.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    #[test]
    fn joining_and_swapping_rows_moves_whole_rows() {
        let f32 = StoredDType::Plain(DType::F32);
        let a = raw(f32, &[1, 2], f32_bytes(&[1.0, 2.0]));
        let b = raw(f32, &[2, 2], f32_bytes(&[3.0, 4.0, 5.0, 6.0]));
        let joined = RawTensor::cat_rows(vec![a, b]).unwrap();
        assert_eq!(joined.shape, vec![3, 2]);
        let t = joined.to_tensor(DType::F32, &Device::Cpu).unwrap();
        assert_eq!(
            t.to_vec2::<f32>().unwrap(),
            vec![vec![1.0, 2.0], vec![3.0, 4.0], vec![5.0, 6.0]]
        );
        let four = raw(f32, &[4, 1], f32_bytes(&[1.0, 2.0, 3.0, 4.0]));
        let swapped = four
            .swap_halves()
            .unwrap()
            .to_tensor(DType::F32, &Device::Cpu)
            .unwrap();
        assert_eq!(
            swapped.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            vec![3.0, 4.0, 1.0, 2.0]
        );
    }

    #[test]
    fn separately_scaled_parts_keep_their_scales_per_row() {
        let e4m3 = |v: f32| float8::F8E4M3::from_f32(v).to_bits();
        let mut a = raw(StoredDType::F8E4M3, &[1, 2], vec![e4m3(1.0), e4m3(2.0)]);
        a.scale = Some(Scale::Tensor(0.5));
        let b = raw(StoredDType::F8E4M3, &[1, 2], vec![e4m3(3.0), e4m3(4.0)]);
        let joined = RawTensor::cat_rows(vec![a, b]).unwrap();
        assert_eq!(joined.scale, Some(Scale::Rows(vec![0.5, 1.0])));
        let dense = joined.to_tensor(DType::F32, &Device::Cpu).unwrap();
        assert_eq!(
            dense.to_vec2::<f32>().unwrap(),
            vec![vec![0.5, 1.0], vec![3.0, 4.0]]
        );
        // The compact path gives the same values.
        let (compact, format) = joined.to_fp8_tensor(&Device::Cpu).unwrap();
        assert_eq!(format, Fp8Format::E4M3);
        let scale = joined.row_scale_tensor(&Device::Cpu).unwrap();
        let decoded = dequantize_fp8(&compact, format, scale.as_ref(), DType::F32).unwrap();
        assert_eq!(
            decoded.to_vec2::<f32>().unwrap(),
            dense.to_vec2::<f32>().unwrap()
        );
    }

    #[test]
    fn e5m2_decodes_as_the_high_byte_of_a_half() {
        // 0x3C = 1.0, 0xC0 = -2.0, 0x7C = +inf in E5M2.
        let t = raw(StoredDType::F8E5M2, &[3], vec![0x3C, 0xC0, 0x7C]);
        let v = t
            .to_tensor(DType::F32, &Device::Cpu)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(v[..2], [1.0, -2.0]);
        assert!(v[2].is_infinite());
        let (compact, format) = t.to_fp8_tensor(&Device::Cpu).unwrap();
        assert_eq!(format, Fp8Format::E5M2);
        let decoded = dequantize_fp8(&compact, format, None, DType::F32)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(decoded[..2], [1.0, -2.0]);
    }

    #[test]
    fn the_e4m3_table_is_candles_cast_for_every_byte_and_encoding_round_trips() {
        let bytes: Vec<u8> = (0u8..=255).collect();
        let cast = Tensor::from_raw_buffer(&bytes, DType::F8E4M3, &[256], &Device::Cpu)
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let as_u8 = Tensor::from_vec(bytes.clone(), 256, &Device::Cpu).unwrap();
        for dtype in [DType::F32, DType::BF16, DType::F16] {
            let table = dequantize_fp8(&as_u8, Fp8Format::E4M3, None, dtype)
                .unwrap()
                .to_dtype(DType::F32)
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            for (b, (t, c)) in table.iter().zip(&cast).enumerate().take(255) {
                assert!(
                    t == c || (t.is_nan() && c.is_nan()),
                    "byte {b}: {t} vs {c} in {dtype:?}"
                );
            }
            // The padding index of candle's index_select: a NaN (-NaN) decodes to 0.
            assert_eq!(table.last(), Some(&0.0));
        }
        let finite: Vec<f32> = cast.iter().copied().filter(|v| v.is_finite()).collect();
        let encoded = encode_e4m3(&finite);
        let decoded: Vec<f32> = encoded
            .iter()
            .map(|&b| float8::F8E4M3::from_bits(b).to_f32())
            .collect();
        assert_eq!(decoded, finite);
    }

    #[test]
    fn gguf_blocks_at_an_unaligned_offset_are_read() {
        // Two F32 values one byte into a (16-byte aligned) allocation: candle would assert.
        let mut buffer = vec![0u8; 1];
        buffer.extend_from_slice(&1.5f32.to_le_bytes());
        buffer.extend_from_slice(&(-2.0f32).to_le_bytes());
        let t = RawTensor {
            dtype: StoredDType::Ggml(GgmlDType::F32),
            shape: vec![2],
            bytes: Cow::Borrowed(&buffer[1..]),
            scale: None,
        };
        let q = t.to_qtensor(GgmlDType::F32, &Device::Cpu).unwrap();
        let values = q
            .dequantize(&Device::Cpu)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(values, [1.5, -2.0]);
    }

    #[test]
    fn block_rows_must_be_whole() {
        assert_eq!(StoredDType::Ggml(GgmlDType::Q8_0).row_bytes(64), Some(68));
        assert_eq!(StoredDType::Ggml(GgmlDType::Q8_0).row_bytes(40), None);
        assert_eq!(StoredDType::Ggml(GgmlDType::Q4K).row_bytes(256), Some(144));
    }
}
