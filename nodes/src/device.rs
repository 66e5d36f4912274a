//! Choosing the device and dtype a model runs with (the models crate's rules), and turning model
//! errors into node errors.

use candle_core::{DType, Device};
use veetance_engine::NodeError;
use veetance_models::ModelError;

pub use veetance_models::device::device_name;

/// The device for a node's `device` input, given the run's `--device` preference.
pub fn choose_device(node_choice: &str, run_choice: &str) -> Result<Device, NodeError> {
    veetance_models::device::choose_device(node_choice, run_choice)
        .map_err(|err| NodeError::with_context("choosing the device", err))
}

/// The dtype for a node's `dtype` input: `auto` is f32 on CPU and bf16 on accelerators.
pub fn choose_dtype(choice: &str, device: &Device) -> Result<DType, NodeError> {
    veetance_models::device::choose_dtype(choice, device)
        .map_err(|err| NodeError::with_context("choosing the dtype", err))
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
    move |err| NodeError::with_context(context, veetance_models::error::without_backtrace(err))
}
