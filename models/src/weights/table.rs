//! Key tables: a model's internal tensors and where one checkpoint layout keeps each of them.
//!
//! Every model names its tensors once, in its own internal layout (the names its builder asks
//! for, with their shapes). A [`KeyTable`] for a checkpoint layout says, for each internal tensor,
//! which stored tensor(s) hold it and how to turn them into it ([`Source`]). Everything else is
//! derived from the table: the list of stored names and shapes a checkpoint must have
//! ([`KeyTable::stored_specs`], checked before anything large is read), the loader
//! ([`Params::tensor`], [`Params::linear`]), and random initialisation of the same shapes for speed
//! measurements ([`Params::random`]).

use std::collections::BTreeMap;

use candle_core::{DType, Device, Tensor};

use super::Weights;
use super::raw::RawTensor;
use crate::error::{ModelError, Result};
use crate::linear::{Embedding, Linear, LinearWeight};

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

/// Where a checkpoint keeps one internal tensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// One stored tensor of the internal shape, under this name.
    Name(String),
    /// Stored tensors of equal shape joined along dimension 0 (separate q, k, v projections
    /// making a fused one).
    Rows(Vec<String>),
    /// One stored tensor with the two halves of dimension 0 swapped (BFL's (shift, scale) final
    /// modulation against diffusers' (scale, shift)).
    SwapHalves(String),
    /// One stored tensor of another shape with as many elements (a 1×1 convolution kernel
    /// `[c, c, 1, 1]` used as a matrix `[c, c]`).
    Reshaped(String, Vec<usize>),
}

/// One internal tensor: its shape and where it is stored.
#[derive(Debug, Clone)]
struct Entry {
    shape: Vec<usize>,
    source: Source,
}

/// A model's internal tensors mapped onto one checkpoint layout.
#[derive(Debug, Clone, Default)]
pub struct KeyTable {
    entries: BTreeMap<String, Entry>,
}

impl KeyTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an internal tensor stored under the same name.
    pub fn same(&mut self, name: impl Into<String>, shape: &[usize]) {
        let name = name.into();
        self.insert(name.clone(), shape, Source::Name(name));
    }

    /// Adds an internal tensor and where it is stored.
    pub fn insert(&mut self, internal: impl Into<String>, shape: &[usize], source: Source) {
        self.entries.insert(
            internal.into(),
            Entry {
                shape: shape.to_vec(),
                source,
            },
        );
    }

    /// Number of internal tensors.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether the model has this internal tensor.
    pub fn contains(&self, internal: &str) -> bool {
        self.entries.contains_key(internal)
    }

    /// Where the layout keeps an internal tensor.
    pub fn source(&self, internal: &str) -> Option<&Source> {
        self.entries.get(internal).map(|e| &e.source)
    }

    /// Every internal tensor: its name, shape and where the layout keeps it (sorted by name).
    pub fn entries(&self) -> impl Iterator<Item = (&str, &[usize], &Source)> {
        self.entries
            .iter()
            .map(|(name, e)| (name.as_str(), e.shape.as_slice(), &e.source))
    }

    /// The internal tensors with their shapes (sorted by name).
    pub fn internal_specs(&self) -> Vec<TensorSpec> {
        self.entries
            .iter()
            .map(|(name, e)| TensorSpec::new(name.clone(), &e.shape))
            .collect()
    }

    /// Every stored tensor a checkpoint in this layout must have, with its shape (sorted).
    pub fn stored_specs(&self) -> Vec<TensorSpec> {
        let mut specs = Vec::with_capacity(self.entries.len());
        for entry in self.entries.values() {
            match &entry.source {
                Source::Name(n) | Source::SwapHalves(n) => {
                    specs.push(TensorSpec::new(n.clone(), &entry.shape));
                }
                Source::Reshaped(n, stored) => specs.push(TensorSpec::new(n.clone(), stored)),
                Source::Rows(parts) => {
                    let mut shape = entry.shape.clone();
                    if let Some(first) = shape.first_mut() {
                        *first /= parts.len().max(1);
                    }
                    for part in parts {
                        specs.push(TensorSpec::new(part.clone(), &shape));
                    }
                }
            }
        }
        specs.sort_by(|a, b| a.name.cmp(&b.name));
        specs
    }

    fn entry(&self, internal: &str) -> Result<&Entry> {
        self.entries.get(internal).ok_or_else(|| {
            ModelError::InvalidArgument(format!("the model has no tensor named {internal}"))
        })
    }
}

/// How projection weights stored compact (FP8, GGUF blocks) compute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum QuantMode {
    /// Dequantize the weight for each use, then an ordinary matmul in the compute dtype: what
    /// diffusers and ComfyUI compute, and what the parity tests check.
    #[default]
    Exact,
    /// GGUF blocks multiply through candle's quantized matmul, which also quantizes the
    /// activations (llama.cpp's and stable-diffusion.cpp's numerics; faster, less exact). FP8
    /// weights compute as in `Exact`.
    Fast,
}

/// Where parameters come from.
enum Origin<'a> {
    /// A checkpoint whose stored names and shapes have been checked against the table.
    Checkpoint(&'a Weights),
    /// Random values of the internal shapes (not seeded).
    Random,
}

/// A model's parameters: a key table over a checkpoint (or random values), a compute dtype and a
/// device. Model builders ask for internal names only.
pub struct Params<'a> {
    table: KeyTable,
    origin: Origin<'a>,
    dtype: DType,
    device: &'a Device,
    quant: QuantMode,
}

impl<'a> Params<'a> {
    /// Parameters from a checkpoint, after checking that it has exactly the stored tensors the
    /// table lists (extra tensors are allowed where `ignorable` says so).
    pub fn checkpoint(
        table: KeyTable,
        weights: &'a Weights,
        ignorable: impl Fn(&str) -> bool,
        dtype: DType,
        device: &'a Device,
        quant: QuantMode,
    ) -> Result<Self> {
        weights.check(&table.stored_specs(), ignorable)?;
        Ok(Self {
            table,
            origin: Origin::Checkpoint(weights),
            dtype,
            device,
            quant,
        })
    }

    /// Random parameters of the table's internal shapes, generated on the device: matrices and
    /// convolution kernels normal with σ = 0.02 (transformers' and diffusers' `initializer_range`),
    /// biases and running means 0, every other vector (norm scales, running variances) 1. With
    /// σ = 0.02 the residual streams grow slowly enough that 36 bf16 Qwen3 layers stay finite; the
    /// values mean nothing, only the compute and memory they cost are real.
    pub fn random(table: KeyTable, dtype: DType, device: &'a Device) -> Self {
        Self {
            table,
            origin: Origin::Random,
            dtype,
            device,
            quant: QuantMode::Exact,
        }
    }

    /// The compute dtype.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The device parameters are placed on.
    pub fn device(&self) -> &Device {
        self.device
    }

    /// Whether the model has this internal tensor (optional parts such as a guidance embedder).
    pub fn contains(&self, internal: &str) -> bool {
        self.table.contains(internal)
    }

    /// An internal tensor, dense, in the compute dtype.
    pub fn tensor(&self, internal: &str) -> Result<Tensor> {
        self.tensor_as(internal, self.dtype)
    }

    /// An internal tensor, dense, in f32 whatever the compute dtype (statistics that must stay exact).
    pub fn tensor_f32(&self, internal: &str) -> Result<Tensor> {
        self.tensor_as(internal, DType::F32)
    }

    fn tensor_as(&self, internal: &str, dtype: DType) -> Result<Tensor> {
        let entry = self.table.entry(internal)?;
        match &self.origin {
            Origin::Random => random(internal, &entry.shape, dtype, self.device),
            Origin::Checkpoint(weights) if weights.is_in_memory() => {
                memory_tensor(weights, entry, dtype, self.device)
            }
            Origin::Checkpoint(weights) => {
                let raw = resolve(weights, entry)?;
                let tensor = raw.to_tensor(dtype, self.device).map_err(|e| {
                    with_context(
                        e,
                        &format!("reading {internal} from {}", weights.origin().display()),
                    )
                })?;
                release(weights, entry);
                Ok(tensor)
            }
        }
    }

    /// A bias-free projection whose weight is `internal` (`[out, in]`), kept compact when stored so.
    pub fn linear(&self, internal: &str) -> Result<Linear> {
        Ok(Linear::new(self.linear_weight(internal)?, None))
    }

    /// A projection with a bias.
    pub fn linear_with_bias(&self, weight: &str, bias: &str) -> Result<Linear> {
        Ok(Linear::new(
            self.linear_weight(weight)?,
            Some(self.tensor(bias)?),
        ))
    }

    fn linear_weight(&self, internal: &str) -> Result<LinearWeight> {
        let entry = self.table.entry(internal)?;
        let Origin::Checkpoint(weights) = &self.origin else {
            return Ok(LinearWeight::dense(self.tensor(internal)?));
        };
        if weights.is_in_memory() {
            return Ok(LinearWeight::dense(self.tensor(internal)?));
        }
        let raw = resolve(weights, entry)?;
        let weight =
            LinearWeight::from_raw(&raw, self.dtype, self.device, self.quant).map_err(|e| {
                with_context(
                    e,
                    &format!("reading {internal} from {}", weights.origin().display()),
                )
            })?;
        release(weights, entry);
        Ok(weight)
    }

    /// A token embedding table `[vocab, hidden]`; GGUF tables stay in blocks, rows dequantized as
    /// they are looked up.
    pub fn embedding(&self, internal: &str) -> Result<Embedding> {
        let entry = self.table.entry(internal)?;
        if let Origin::Checkpoint(weights) = &self.origin
            && !weights.is_in_memory()
        {
            let raw = resolve(weights, entry)?;
            if raw.dtype.is_quantized() && matches!(raw.dtype, super::StoredDType::Ggml(_)) {
                return Embedding::quantized(&raw, self.dtype, self.device);
            }
        }
        Embedding::dense(self.tensor(internal)?)
    }
}

fn with_context(err: ModelError, what: &str) -> ModelError {
    match err {
        ModelError::Candle { source, .. } => ModelError::Candle {
            context: what.to_string(),
            source,
        },
        other => other,
    }
}

/// The stored bytes of one internal tensor, mapped from its layout.
fn resolve<'w>(weights: &'w Weights, entry: &Entry) -> Result<RawTensor<'w>> {
    match &entry.source {
        Source::Name(name) => weights.raw(name),
        Source::SwapHalves(name) => weights.raw(name)?.swap_halves(),
        Source::Reshaped(name, _) => weights.raw(name)?.reshaped(&entry.shape),
        Source::Rows(parts) => {
            let raws = parts
                .iter()
                .map(|p| weights.raw(p))
                .collect::<Result<Vec<_>>>()?;
            RawTensor::cat_rows(raws)
        }
    }
}

fn release(weights: &Weights, entry: &Entry) {
    match &entry.source {
        Source::Name(n) | Source::SwapHalves(n) | Source::Reshaped(n, _) => weights.release(n),
        Source::Rows(parts) => parts.iter().for_each(|p| weights.release(p)),
    }
}

/// One internal tensor from in-memory tensors (training), built with differentiable tensor ops so
/// that gradients reach the stored variables.
fn memory_tensor(
    weights: &Weights,
    entry: &Entry,
    dtype: DType,
    device: &Device,
) -> Result<Tensor> {
    let get = |name: &str| -> Result<Tensor> {
        let t = weights
            .memory_tensor(name)
            .ok_or_else(|| ModelError::Keys {
                path: weights.origin().to_path_buf(),
                missing: vec![name.to_string()],
                unexpected: Vec::new(),
                mismatched: Vec::new(),
            })?;
        Ok(t.to_device(device)?.to_dtype(dtype)?)
    };
    Ok(match &entry.source {
        Source::Name(n) => get(n)?,
        Source::Reshaped(n, _) => get(n)?.reshape(entry.shape.as_slice())?,
        Source::SwapHalves(n) => {
            let t = get(n)?;
            let half = t.dim(0)? / 2;
            Tensor::cat(&[t.narrow(0, half, half)?, t.narrow(0, 0, half)?], 0)?
        }
        Source::Rows(parts) => {
            let ts = parts.iter().map(|p| get(p)).collect::<Result<Vec<_>>>()?;
            Tensor::cat(&ts, 0)?
        }
    })
}

/// A random tensor for an internal name (see [`Params::random`]).
fn random(name: &str, shape: &[usize], dtype: DType, device: &Device) -> Result<Tensor> {
    let tensor = if name.ends_with(".bias") || name.ends_with("running_mean") {
        Tensor::zeros(shape, dtype, device)?
    } else if shape.len() == 1 {
        Tensor::ones(shape, dtype, device)?
    } else {
        // Generated in f32: candle's random kernels do not cover every dtype on every device.
        Tensor::randn(0f32, 0.02, shape, device)?.to_dtype(dtype)?
    };
    Ok(tensor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_specs_split_joined_rows_and_keep_stored_shapes() {
        let mut table = KeyTable::new();
        table.insert(
            "qkv.weight",
            &[6, 4],
            Source::Rows(vec![
                "q.weight".into(),
                "k.weight".into(),
                "v.weight".into(),
            ]),
        );
        table.insert(
            "mod.weight",
            &[8, 4],
            Source::SwapHalves("norm_out.weight".into()),
        );
        table.insert(
            "attn.weight",
            &[4, 4],
            Source::Reshaped("attn.conv".into(), vec![4, 4, 1, 1]),
        );
        table.same("scale", &[4]);
        let specs = table.stored_specs();
        assert_eq!(
            specs,
            vec![
                TensorSpec::new("attn.conv", &[4, 4, 1, 1]),
                TensorSpec::new("k.weight", &[2, 4]),
                TensorSpec::new("norm_out.weight", &[8, 4]),
                TensorSpec::new("q.weight", &[2, 4]),
                TensorSpec::new("scale", &[4]),
                TensorSpec::new("v.weight", &[2, 4]),
            ]
        );
    }

    #[test]
    fn random_parameters_follow_the_internal_shapes() {
        let mut table = KeyTable::new();
        table.same("w", &[3, 2]);
        table.same("b.bias", &[3]);
        table.same("norm", &[3]);
        let device = Device::Cpu;
        let params = Params::random(table, DType::F32, &device);
        assert_eq!(params.tensor("w").unwrap().dims(), &[3, 2]);
        assert_eq!(
            params.tensor("b.bias").unwrap().to_vec1::<f32>().unwrap(),
            vec![0.0; 3]
        );
        assert_eq!(
            params.tensor("norm").unwrap().to_vec1::<f32>().unwrap(),
            vec![1.0; 3]
        );
        assert!(params.tensor("missing").is_err());
    }
}
