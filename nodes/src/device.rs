//! Choosing the device and dtype a model runs with, and turning model errors into node errors.

use candle_core::{DType, Device};
use veetance_engine::NodeError;
use veetance_models::ModelError;

/// The device for a node's `device` input, given the run's `--device` preference.
pub fn choose_device(node_choice: &str, run_choice: &str) -> Result<Device, NodeError> {
    let choice = if node_choice == "auto" {
        run_choice
    } else {
        node_choice
    };
    match choice {
        "cpu" => Ok(Device::Cpu),
        "cuda" => Device::new_cuda(0).map_err(|err| {
            NodeError::with_context(
                "CUDA was requested but is not available (this build needs `--features cuda` and an NVIDIA driver)",
                err,
            )
        }),
        _ => Ok(Device::cuda_if_available(0).unwrap_or(Device::Cpu)),
    }
}

/// The dtype for a node's `dtype` input: `auto` is f32 on CPU and bf16 on accelerators.
pub fn choose_dtype(choice: &str, device: &Device) -> Result<DType, NodeError> {
    match choice {
        "f32" => Ok(DType::F32),
        "f16" => Ok(DType::F16),
        "bf16" => Ok(DType::BF16),
        "auto" if device.is_cpu() => Ok(DType::F32),
        "auto" => Ok(DType::BF16),
        other => Err(NodeError::msg(format!("unknown dtype `{other}`"))),
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

/// Wraps a model error with what the node was doing; cancellation stays cancellation.
pub fn model_error(context: &'static str) -> impl Fn(ModelError) -> NodeError {
    move |err| match err {
        ModelError::Cancelled { .. } => NodeError::Cancelled,
        other => NodeError::with_context(context, other),
    }
}

/// Wraps a candle error with what the node was doing.
pub fn tensor_error(context: &'static str) -> impl Fn(candle_core::Error) -> NodeError {
    move |err| NodeError::with_context(context, err)
}
