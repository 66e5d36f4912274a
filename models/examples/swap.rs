//! How long moving a full-size transformer between RAM and VRAM takes (Load's `offload`):
//! klein-4B (or klein-9B) with random bf16 weights, VRAM → RAM once, then RAM → VRAM and back
//! a few times from pageable RAM and then from the same RAM page-locked (`pinned_for`), with the
//! output of one forward pass checked to be unchanged by the round trip.
//!
//! `cargo run --release -p veetance-models --features cuda --example swap [-- klein-9b]`

use std::time::Instant;

use anyhow::{Context as _, Result, bail};
use candle_core::{DType, Device, Tensor};
use veetance_models::flux2::{image_ids, text_ids};
use veetance_models::{Flux2Config, Flux2Transformer};

fn forward(model: &Flux2Transformer, device: &Device) -> Result<Tensor> {
    let cfg = model.config();
    let x = Tensor::ones((1, 64, cfg.in_channels), DType::BF16, device)?;
    let txt = Tensor::ones((1, 16, cfg.joint_attention_dim), DType::BF16, device)?;
    let t = Tensor::new(&[0.5f32], device)?;
    Ok(model
        .forward(
            &x,
            &image_ids(8, 8, device)?,
            &txt,
            &text_ids(16, device)?,
            &t,
            None,
        )?
        .to_dtype(DType::F32)?
        .to_device(&Device::Cpu)?)
}

fn main() -> Result<()> {
    let which = std::env::args().nth(1).unwrap_or_else(|| "klein-4b".into());
    let cfg = match which.as_str() {
        "klein-4b" => Flux2Config::klein_4b(),
        "klein-9b" => Flux2Config::klein_9b(),
        other => bail!("unknown model {other} (klein-4b or klein-9b)"),
    };
    let gpu = Device::new_cuda(0).context("this example needs a CUDA device")?;
    let model = Flux2Transformer::random(cfg, DType::BF16, &gpu)?;
    let bytes = model
        .config()
        .diffusers_tensor_specs()
        .iter()
        .map(|s| s.shape.iter().product::<usize>() * 2)
        .sum::<usize>();
    let reference = forward(&model, &gpu)?;
    gpu.synchronize()?;
    let start = Instant::now();
    let in_ram = model.to_device(&Device::Cpu)?;
    let out_s = start.elapsed().as_secs_f64();
    drop(model);
    println!(
        "{{\"model\":\"{which}\",\"weights_gib\":{:.2},\"vram_to_ram_s\":{out_s:.3}}}",
        bytes as f64 / (1u64 << 30) as f64
    );
    // Rounds 0–2 copy from pageable RAM; then the same RAM is page-locked (registration is on
    // the memory, which every clone shares) and rounds 3–5 copy from it.
    let mut pinned = None;
    for round in 0..6 {
        if round == 3 {
            let start = Instant::now();
            let p = in_ram.pinned_for(&gpu);
            println!(
                "{{\"model\":\"{which}\",\"pin_s\":{:.3},\"pinned_gib\":{:.2}}}",
                start.elapsed().as_secs_f64(),
                p.pinned_bytes() as f64 / (1u64 << 30) as f64
            );
            pinned = Some(p);
        }
        let source = pinned.as_ref().unwrap_or(&in_ram);
        gpu.synchronize()?;
        let start = Instant::now();
        let on_gpu = source.to_device(&gpu)?;
        gpu.synchronize()?;
        let in_s = start.elapsed().as_secs_f64();
        let out = forward(&on_gpu, &gpu)?;
        let same = (out - &reference)?.abs()?.max_all()?.to_scalar::<f32>()? == 0.0;
        println!(
            "{{\"model\":\"{which}\",\"round\":{round},\"pinned\":{},\"ram_to_vram_s\":{in_s:.3},\"gib_per_s\":{:.1},\"output_unchanged\":{same}}}",
            round >= 3,
            bytes as f64 / (1u64 << 30) as f64 / in_s
        );
        drop(on_gpu);
    }
    Ok(())
}
