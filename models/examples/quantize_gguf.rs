//! Writes a safetensors checkpoint as a GGUF file with candle's quantizers, the way community FLUX
//! GGUF files are laid out: tensor names unchanged, types per tensor, 1-D tensors and rows that do
//! not fill whole blocks in F32.
//!
//! gguf-py (llama.cpp's Python package) cannot make K-quants, so the fixture script uses this for
//! `Q4_K`, `Q5_K` and `Q6_K` files and reads them back with gguf-py for the reference outputs.
//!
//! ```sh
//! cargo run -p veetance-models --example quantize_gguf -- IN.safetensors OUT.gguf ARCH RULE...
//! ```
//!
//! A rule is `SUBSTRING=TYPE` (tensors whose name contains SUBSTRING) or a bare `TYPE` (every other
//! 2-D tensor); the first matching rule wins. Types: Q4_0, Q5_0, Q8_0, Q4_K, Q5_K, Q6_K, F16, F32.

use std::path::PathBuf;

use anyhow::{Context as _, Result, bail};
use candle_core::quantized::{GgmlDType, QTensor, gguf_file};
use candle_core::{DType, Device};
use veetance_models::weights::Weights;

fn ggml_type(name: &str) -> Result<GgmlDType> {
    Ok(match name {
        "Q4_0" => GgmlDType::Q4_0,
        "Q5_0" => GgmlDType::Q5_0,
        "Q8_0" => GgmlDType::Q8_0,
        "Q4_K" => GgmlDType::Q4K,
        "Q5_K" => GgmlDType::Q5K,
        "Q6_K" => GgmlDType::Q6K,
        "F16" => GgmlDType::F16,
        "F32" => GgmlDType::F32,
        other => bail!("unknown type {other}; use Q4_0, Q5_0, Q8_0, Q4_K, Q5_K, Q6_K, F16 or F32"),
    })
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, input, output, arch, rules @ ..] = args.as_slice() else {
        bail!("usage: quantize_gguf IN.safetensors OUT.gguf ARCH RULE...");
    };
    let rules: Vec<(Option<&str>, GgmlDType)> = rules
        .iter()
        .map(|rule| match rule.split_once('=') {
            Some((pattern, t)) => Ok((Some(pattern), ggml_type(t)?)),
            None => Ok((None, ggml_type(rule)?)),
        })
        .collect::<Result<_>>()?;
    let weights = Weights::open(&PathBuf::from(input))?;
    let mut tensors = Vec::new();
    for name in weights.names() {
        let tensor = weights.get(name, DType::F32, &Device::Cpu)?;
        let target = rules
            .iter()
            .find(|(pattern, _)| pattern.is_none_or(|p| name.contains(p)))
            .map_or(GgmlDType::F32, |(_, t)| *t);
        let fits = tensor.rank() == 2
            && tensor
                .dims()
                .last()
                .is_some_and(|cols| cols % target.block_size() == 0);
        let dtype = if fits { target } else { GgmlDType::F32 };
        let q = QTensor::quantize(&tensor, dtype).with_context(|| format!("quantizing {name}"))?;
        tensors.push((name.to_string(), q));
    }
    let metadata = [
        (
            "general.architecture",
            gguf_file::Value::String(arch.clone()),
        ),
        ("general.quantization_version", gguf_file::Value::U32(2)),
    ];
    let metadata_refs: Vec<(&str, &gguf_file::Value)> =
        metadata.iter().map(|(k, v)| (*k, v)).collect();
    let tensor_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let mut file = std::fs::File::create(output).with_context(|| format!("creating {output}"))?;
    gguf_file::write(&mut file, &metadata_refs, &tensor_refs)?;
    println!("wrote {output}: {} tensors", tensors.len());
    Ok(())
}
