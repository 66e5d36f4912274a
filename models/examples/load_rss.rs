//! Loads a transformer checkpoint and reports peak resident memory, to check that loading costs
//! about the weights' size and not twice that (see docs/benchmarks.md).
//!
//! Usage: `cargo run --release -p veetance-models --example load_rss -- <transformer dir or file> [f32|f16|bf16]`

use std::path::Path;

use candle_core::{DType, Device};
use veetance_models::QuantMode;
use veetance_models::{Flux2Transformer, ModelError};

/// Peak resident set size in MiB from /proc (Linux only; 0 elsewhere).
fn peak_rss_mib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb / 1024)
}

fn main() -> Result<(), ModelError> {
    let args: Vec<String> = std::env::args().collect();
    let Some(path) = args.get(1) else {
        return Err(ModelError::InvalidArgument(
            "usage: load_rss <checkpoint> [f32|f16|bf16]".into(),
        ));
    };
    let dtype = match args.get(2).map(String::as_str) {
        Some("f16") => DType::F16,
        Some("bf16") => DType::BF16,
        _ => DType::F32,
    };
    let model = Flux2Transformer::load(Path::new(path), dtype, &Device::Cpu, QuantMode::Exact)?;
    let cfg = model.config();
    let params: usize = cfg
        .diffusers_tensor_specs()
        .iter()
        .map(|s| s.shape.iter().product::<usize>())
        .sum();
    let weights_mib = (params * dtype.size_in_bytes()) as u64 / (1 << 20);
    println!(
        "loaded {params} parameters as {dtype:?}: weights {weights_mib} MiB, peak RSS {} MiB",
        peak_rss_mib()
    );
    Ok(())
}
