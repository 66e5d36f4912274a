//! Shared helpers of the model tests: fixture paths, reference tensors, error measures, and the
//! 4-step sampling runs the references were made with.

// Not every test file uses every helper.
#![allow(dead_code)]

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, ensure};
use candle_core::{DType, Device, Tensor};
use veetance_models::weights::Weights;
use veetance_models::{Bundle, SampleRequest, Start, sample};

/// `models/tests/fixtures`.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// A tensor of a reference file in `fixtures/`, in f32 (i64 for token ids).
pub fn reference_from(file: &str, name: &str) -> Result<Tensor> {
    let weights = Weights::from_file(&fixtures().join(file))?;
    let dtype = if name.starts_with("text.input_ids") {
        DType::I64
    } else {
        DType::F32
    };
    Ok(weights.get(name, dtype, &Device::Cpu)?)
}

/// A tensor of `reference.safetensors` (make_fixtures.py).
pub fn reference(name: &str) -> Result<Tensor> {
    reference_from("reference.safetensors", name)
}

/// A tensor of `reference-formats.safetensors` (make_format_fixtures.py).
pub fn format_reference(name: &str) -> Result<Tensor> {
    reference_from("reference-formats.safetensors", name)
}

/// max|t|.
pub fn max_abs(t: &Tensor) -> Result<f32> {
    Ok(t.to_dtype(DType::F32)?
        .abs()?
        .max_all()?
        .to_scalar::<f32>()?)
}

/// max|a − b|.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> Result<f32> {
    ensure!(
        a.dims() == b.dims(),
        "shape {:?} != {:?}",
        a.dims(),
        b.dims()
    );
    max_abs(&(a.to_dtype(DType::F32)? - b.to_dtype(DType::F32)?)?)
}

/// max|a − b| / max|b|: robust for outputs with near-zero elements.
pub fn rel_error(actual: &Tensor, expected: &Tensor) -> Result<f32> {
    ensure!(
        actual.dims() == expected.dims(),
        "shape {:?} != expected {:?}",
        actual.dims(),
        expected.dims()
    );
    Ok(max_abs_diff(actual, expected)? / max_abs(expected)?.max(1e-12))
}

/// Checks `actual` against `expected` within `tolerance` (relative, see [`rel_error`]), printing
/// the error with `what`.
pub fn check_close(what: &str, actual: &Tensor, expected: &Tensor, tolerance: f32) -> Result<f32> {
    let err = rel_error(actual, expected).with_context(|| what.to_string())?;
    eprintln!("{what}: rel error {err:.3e}");
    ensure!(
        err < tolerance,
        "{what}: rel error {err:e} >= {tolerance:e}"
    );
    Ok(err)
}

/// One transformer forward on the fixtures' inputs (random tokens, t = 0.7).
pub fn dit_forward(
    model: &veetance_models::Flux2Transformer,
    x: &Tensor,
    cond: &Tensor,
    grid: usize,
) -> Result<Tensor> {
    use veetance_models::flux2::{image_ids, text_ids};
    let device = Device::Cpu;
    let img_ids = image_ids(grid, grid, &device)?;
    let txt_ids = text_ids(cond.dim(1)?, &device)?;
    let t = Tensor::new(&[0.7f32], &device)?;
    Ok(model.forward(x, &img_ids, cond, &txt_ids, &t, None)?)
}

/// The transformer forward of `reference.safetensors` (`dit.x_tokens`, `dit.cond`, 8×8 grid).
pub fn reference_dit_forward(model: &veetance_models::Flux2Transformer) -> Result<Tensor> {
    dit_forward(
        model,
        &reference("dit.x_tokens")?,
        &reference("dit.cond")?,
        8,
    )
}

/// The prompts the fixtures were made with (`reference.json`).
pub fn prompts() -> Result<Vec<String>> {
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("reference.json"))?)?;
    Ok(meta["prompts"]
        .as_array()
        .context("prompts")?
        .iter()
        .filter_map(|p| p.as_str().map(str::to_string))
        .collect())
}

/// The fixtures' 4-step distilled run: the first prompt, `sample.noise`, guidance 1; returns the
/// latent and the decoded (unclamped) image.
pub fn four_step_run(bundle: &Bundle) -> Result<(Tensor, Tensor)> {
    let prompts = prompts()?;
    let prompt = prompts.first().context("no prompts")?;
    let cond = bundle.text_encoder.encode(&[prompt.as_str()])?;
    let request = SampleRequest {
        positive: &cond,
        negative: None,
        start: Start::Noise(reference("sample.noise")?),
        steps: 4,
        guidance: 1.0,
        scheduler: &bundle.scheduler,
        references: &[],
    };
    let latent = sample(&bundle.transformer, &request, |_, _| {
        ControlFlow::Continue(())
    })?;
    let image = bundle.vae.decode_raw(&bundle.vae.denormalize(&latent)?)?;
    Ok((latent, image))
}

/// Writes a safetensors file with the given f32 tensors whose data section is a hole (zeros on
/// disk, sparse on Unix filesystems), for header-level tests of full-size layouts.
pub fn sparse_safetensors(
    dir: &Path,
    name: &str,
    specs: &[veetance_models::weights::TensorSpec],
) -> Result<PathBuf> {
    let mut header = serde_json::Map::new();
    let mut offset = 0usize;
    for spec in specs {
        let n_bytes = 4 * spec.shape.iter().product::<usize>();
        header.insert(
            spec.name.clone(),
            serde_json::json!({"dtype": "F32", "shape": spec.shape, "data_offsets": [offset, offset + n_bytes]}),
        );
        offset += n_bytes;
    }
    let header = serde_json::Value::Object(header).to_string();
    let path = dir.join(name);
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    std::fs::write(&path, bytes)?;
    let file = std::fs::OpenOptions::new().write(true).open(&path)?;
    file.set_len((8 + header.len() + offset) as u64)?;
    Ok(path)
}
