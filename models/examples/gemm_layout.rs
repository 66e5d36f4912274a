//! Measures whether a pre-transposed (contiguous `[in, out]`) weight multiplies faster than
//! candle's `Linear` layout (`[out, in]`, used through a transposed view) on this CPU.

use std::time::Instant;

use candle_core::{DType, Device, Tensor};

fn main() -> candle_core::Result<()> {
    let device = Device::Cpu;
    for (tokens, d_in, d_out) in [
        (1536usize, 3072usize, 9216usize),
        (1536, 3072, 3072),
        (768, 256, 768),
    ] {
        let x = Tensor::randn(0f32, 1.0, (1, tokens, d_in), &device)?;
        let w = Tensor::randn(0f32, 0.02, (d_out, d_in), &device)?;
        let w_t = w.t()?.contiguous()?;
        let reps = if d_in > 1000 { 3 } else { 50 };
        for (name, run) in [
            ("broadcast_matmul(w.t())", 0),
            ("matmul(w_t contiguous)", 1),
            ("2d matmul(w.t())", 2),
        ] {
            let go = |x: &Tensor| -> candle_core::Result<Tensor> {
                match run {
                    0 => x.broadcast_matmul(&w.t()?),
                    1 => x.broadcast_matmul(&w_t),
                    _ => x
                        .reshape((tokens, d_in))?
                        .matmul(&w.t()?)?
                        .reshape((1, tokens, d_out)),
                }
            };
            go(&x)?;
            let started = Instant::now();
            for _ in 0..reps {
                let y = go(&x)?;
                let _ = y.to_dtype(DType::F32)?;
            }
            let ms = started.elapsed().as_secs_f64() * 1e3 / reps as f64;
            println!("{tokens}x{d_in}->{d_out} {name}: {ms:.2} ms");
        }
    }
    Ok(())
}
