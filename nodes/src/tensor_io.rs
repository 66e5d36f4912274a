//! Tensors as .safetensors files with one named tensor: shared by SaveLatent, LoadLatent and
//! SaveConditioning.

use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use veetance_engine::{NodeCtx, NodeError, Outputs, Value};

use crate::load_image::read_input_file;

/// Writes `tensor` (as f32) under `name` to a new file from the prefix `path`.
pub fn save_tensor(
    ctx: &NodeCtx<'_>,
    path: &str,
    name: &str,
    tensor: &Tensor,
) -> Result<Outputs, NodeError> {
    let tensor = tensor
        .to_dtype(DType::F32)
        .and_then(|t| t.to_device(&Device::Cpu))
        .map_err(|err| NodeError::with_context("copying the tensor to the host", err))?;
    let bytes = safetensors::serialize([(name, &tensor)], None)
        .map_err(|err| NodeError::with_context("serialising the tensor", err))?;
    let prefix = ctx.output_path(path)?;
    if let Some(parent) = prefix.parent() {
        std::fs::create_dir_all(parent).map_err(|err| {
            NodeError::with_context(format!("creating {}", parent.display()), err)
        })?;
    }
    let written =
        veetance_imaging::write_new_file_bytes(&prefix, "safetensors", &bytes).map_err(|err| {
            NodeError::with_context(format!("writing {}.safetensors", prefix.display()), err)
        })?;
    Ok(Outputs::new().with(
        "files",
        Value::Text(Arc::from(written.display().to_string())),
    ))
}

/// Reads the tensor `name` from a .safetensors file and checks its rank.
pub fn load_tensor(
    path: &str,
    name: &str,
    rank: usize,
    env: &veetance_engine::RunEnv,
) -> Result<Tensor, NodeError> {
    let bytes = read_input_file(Path::new(path), env)?;
    let tensors = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu)
        .map_err(|err| NodeError::with_context(format!("reading {path}"), err))?;
    let mut names: Vec<&String> = tensors.keys().collect();
    names.sort();
    let tensor = tensors.get(name).ok_or_else(|| {
        NodeError::msg(format!(
            "{path} has no tensor `{name}` (it has: {})",
            names
                .iter()
                .map(|n| n.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })?;
    if tensor.rank() != rank {
        return Err(NodeError::msg(format!(
            "{path}: tensor `{name}` has shape {:?}, expected {rank} dimensions",
            tensor.dims()
        )));
    }
    if tensor.dims().contains(&0) {
        return Err(NodeError::msg(format!(
            "{path}: tensor `{name}` has shape {:?}, which holds no values",
            tensor.dims()
        )));
    }
    tensor
        .to_dtype(DType::F32)
        .map_err(|err| NodeError::with_context(format!("reading {path}"), err))
}
