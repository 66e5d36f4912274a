//! Choosing the device and dtype models run with, by the names workflows and the CLI use
//! (`auto`, `cpu`, `cuda`; `auto`, `f32`, `f16`, `bf16`), and page-locking a model's RAM for
//! copies to a GPU.

use candle_core::{DType, Device, Tensor};

use crate::error::{ModelError, Result};

/// The device named `choice`; `auto` defers to `preference` (the run's `--device`), and an
/// `auto` preference takes CUDA when it is available.
pub fn choose_device(choice: &str, preference: &str) -> Result<Device> {
    let choice = if choice == "auto" { preference } else { choice };
    match choice {
        "cpu" => Ok(Device::Cpu),
        "cuda" => Device::new_cuda(0).map_err(|source| ModelError::Candle {
            context: "CUDA was requested but is not available (this build needs `--features cuda` and an NVIDIA driver)".into(),
            source,
        }),
        "auto" => Ok(Device::cuda_if_available(0).unwrap_or(Device::Cpu)),
        other => Err(ModelError::InvalidArgument(format!(
            "unknown device `{other}` (auto, cpu or cuda)"
        ))),
    }
}

/// Refuses a device this build cannot use at all (`cuda` in a build without `--features
/// cuda`), so a run can say so before anything runs, even when every output is cached.
pub fn check_build_supports(choice: &str) -> Result<()> {
    if choice == "cuda" && !candle_core::utils::cuda_is_available() {
        return Err(ModelError::InvalidArgument(
            "CUDA was requested but this build has no CUDA support (build with `--features cuda`)"
                .into(),
        ));
    }
    Ok(())
}

/// The dtype named `choice`: `auto` is f32 on CPU and bf16 on accelerators.
pub fn choose_dtype(choice: &str, device: &Device) -> Result<DType> {
    match choice {
        "f32" => Ok(DType::F32),
        "f16" => Ok(DType::F16),
        "bf16" => Ok(DType::BF16),
        "auto" if device.is_cpu() => Ok(DType::F32),
        "auto" => Ok(DType::BF16),
        other => Err(ModelError::InvalidArgument(format!(
            "unknown dtype `{other}` (auto, f32, f16 or bf16)"
        ))),
    }
}

/// A short name for a device, for cache keys and messages.
pub fn device_name(device: &Device) -> String {
    match device.location() {
        candle_core::DeviceLocation::Cpu => "cpu".to_owned(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}

/// Page-locks for `gpu` the RAM of every tensor `visit` hands to its callback (a model's
/// weight walk, returning whether it succeeded), so that copies of the model to `gpu` run as
/// DMA. `None` when there is nothing to do (`weights_on` is not the CPU or `gpu` not a CUDA
/// device) or the walk fails.
pub(crate) fn pin_weights(
    weights_on: &Device,
    gpu: &Device,
    visit: impl FnOnce(&dyn Fn(&Tensor) -> candle_core::Result<Tensor>) -> bool,
) -> Option<std::sync::Arc<veetance_gpu::memory::PinnedHost>> {
    if !weights_on.is_cpu() || !gpu.is_cuda() {
        return None;
    }
    let all = std::cell::RefCell::new(Vec::new());
    let collect = |t: &Tensor| -> candle_core::Result<Tensor> {
        all.borrow_mut().push(t.clone());
        Ok(t.clone())
    };
    if !visit(&collect) {
        return None;
    }
    Some(std::sync::Arc::new(veetance_gpu::memory::pin_host(
        all.into_inner(),
        gpu,
    )))
}

/// Makes `budget_bytes` a hard limit on what this process allocates on `device` from now on
/// (a capped CUDA memory pool, see [`veetance_gpu::memory::limit_vram`]); a no-op off CUDA.
pub fn limit_vram(device: &Device, budget_bytes: u64) -> Result<()> {
    veetance_gpu::memory::limit_vram(device, budget_bytes)
        .map_err(|err| ModelError::InvalidArgument(err.to_string()))
}

/// Returns the memory the device's pool holds but no tensor uses (after the queued work
/// finishes), so that a large allocation under a hard limit is not refused because freed
/// memory sits in pieces (see [`veetance_gpu::memory::trim`]).
pub fn trim_vram(device: &Device) {
    veetance_gpu::memory::trim(device);
}
