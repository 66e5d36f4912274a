//! The CUDA paths against the CPU f32 paths: fused attention, the SageAttention kernel, the fused
//! block kernels, and whole transformers (eager, compiled, Sage) in bf16.
//!
//! Built only with `--features cuda` and run on a GPU machine, one test at a time (one test
//! changes the device's memory pool): `cargo test -p veetance-models --features cuda --test cuda
//! -- --test-threads 1`. Tolerances (documented in
//! docs/TESTING.md): bf16 kernels vs f32 references cos ≥ 0.9999 and relative L1 ≤ 1 %;
//! SageAttention vs exact attention the published INT8 + f16 P·V gates (cos ≥ 0.9999, relative
//! L1 ≤ 1.5 %); whole bf16 transformers vs the f32 CPU model relative L2 ≤ 3 % (5 % with Sage).

#![cfg(feature = "cuda")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers may panic

use candle_core::{D, DType, Device, Tensor};
use veetance_models::QuantMode;
use veetance_models::attention::exact_attention;
use veetance_models::attention::sage::sage_attention as sage_reference;
use veetance_models::flux2::{image_ids, text_ids};
use veetance_models::{
    AttentionBackend, CompileOptions, Flux2Config, Flux2Transformer, PvPrecision, SageConfig,
    SchedulerConfig,
};

fn gpu() -> Device {
    Device::new_cuda(0).expect("these tests need a CUDA device")
}

fn cpu_f64(t: &Tensor) -> Vec<f64> {
    t.to_device(&Device::Cpu)
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap()
}

/// (cosine similarity, relative L1, relative L2) of `actual` against `expected`.
fn metrics(actual: &Tensor, expected: &Tensor) -> (f64, f64, f64) {
    assert_eq!(actual.dims(), expected.dims());
    let (a, e) = (cpu_f64(actual), cpu_f64(expected));
    let dot: f64 = a.iter().zip(&e).map(|(x, y)| x * y).sum();
    let na: f64 = a.iter().map(|x| x * x).sum::<f64>().sqrt();
    let ne: f64 = e.iter().map(|x| x * x).sum::<f64>().sqrt();
    let l1: f64 = a.iter().zip(&e).map(|(x, y)| (x - y).abs()).sum();
    let l1_ref: f64 = e.iter().map(|x| x.abs()).sum();
    let l2: f64 = a
        .iter()
        .zip(&e)
        .map(|(x, y)| (x - y) * (x - y))
        .sum::<f64>()
        .sqrt();
    (dot / (na * ne), l1 / l1_ref, l2 / ne)
}

/// Random `[B, H, L, D]` values already rounded to bf16 (returned in f32 on the CPU).
fn bf16_values(shape: (usize, usize, usize, usize)) -> Tensor {
    Tensor::randn(0f32, 1.0, shape, &Device::Cpu)
        .unwrap()
        .to_dtype(DType::BF16)
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap()
}

fn to_gpu_bf16(t: &Tensor) -> Tensor {
    t.to_dtype(DType::BF16).unwrap().to_device(&gpu()).unwrap()
}

#[test]
fn flash_attention_matches_exact_f32_attention() {
    // Tails on both sides (200, 130, 77, 301 are not multiples of the 64-row tiles), every head
    // dim, and klein-4B's 1024² shape.
    for &(b, h, lq, lk, d) in &[
        (1, 3, 200, 200, 128),
        (2, 2, 192, 130, 64),
        (1, 2, 77, 301, 32),
        (1, 24, 4608, 4608, 128),
    ] {
        let q = bf16_values((b, h, lq, d));
        let k = bf16_values((b, h, lk, d));
        let v = bf16_values((b, h, lk, d));
        let expected = exact_attention(&q, &k, &v, None, usize::MAX).unwrap();
        let scale = 1.0 / (d as f64).sqrt();
        let out = veetance_gpu::attention::flash_attention(
            &to_gpu_bf16(&q),
            &to_gpu_bf16(&k),
            &to_gpu_bf16(&v),
            scale,
        )
        .unwrap();
        assert_eq!(out.dims(), [b, lq, h, d]);
        let (cos, rel_l1, _) = metrics(&out.transpose(1, 2).unwrap(), &expected);
        assert!(
            cos > 0.9999 && rel_l1 < 0.01,
            "{b}x{h}x{lq}x{lk}x{d}: cos {cos}, rel L1 {rel_l1}"
        );
    }
}

#[test]
fn flash_attention_reads_token_major_views_without_copies() {
    let (b, l, h, d) = (2, 150, 3, 64);
    // [B, L, H, D] buffers viewed as [B, H, L, D]: non-contiguous, which the kernel must accept.
    let make = || {
        to_gpu_bf16(&bf16_values((b, l, h, d)))
            .transpose(1, 2)
            .unwrap()
    };
    let (q, k, v) = (make(), make(), make());
    assert!(!q.is_contiguous());
    let strided = veetance_gpu::attention::flash_attention(&q, &k, &v, 0.125).unwrap();
    let packed = veetance_gpu::attention::flash_attention(
        &q.contiguous().unwrap(),
        &k.contiguous().unwrap(),
        &v.contiguous().unwrap(),
        0.125,
    )
    .unwrap();
    let (_, rel_l1, _) = metrics(&strided, &packed);
    assert_eq!(rel_l1, 0.0);
}

#[test]
fn sage_kernel_meets_the_accuracy_gates_and_matches_the_cpu_reference() {
    let (b, h, n, d) = (1, 2, 4608, 128);
    let q = bf16_values((b, h, n, d));
    let v = bf16_values((b, h, n, d));
    let k_iid = bf16_values((b, h, n, d));
    // DiT-like keys: a large per-channel bias shared by every token.
    let bias = (Tensor::randn(0f32, 4.0, (1, 1, 1, d), &Device::Cpu).unwrap())
        .broadcast_as((b, h, n, d))
        .unwrap();
    let k_biased = (&k_iid + bias)
        .unwrap()
        .to_dtype(DType::BF16)
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap();
    let scale = 1.0 / (d as f64).sqrt();
    let cpu_cfg = SageConfig {
        smooth_k: true,
        pv: PvPrecision::F16,
        q_block_rows: 64,
        k_block_rows: 64,
    };
    for (name, k) in [("iid", &k_iid), ("biased", &k_biased)] {
        let exact = exact_attention(&q, k, &v, None, 1 << 22).unwrap();
        let k_gpu = to_gpu_bf16(k);
        let k_before = cpu_f64(&k_gpu);
        let out = veetance_gpu::attention::sage_attention(
            &to_gpu_bf16(&q),
            &k_gpu,
            &to_gpu_bf16(&v),
            scale,
            true,
        )
        .unwrap()
        .transpose(1, 2)
        .unwrap();
        assert_eq!(cpu_f64(&k_gpu), k_before, "the kernel must not modify K");
        let (cos, rel_l1, _) = metrics(&out, &exact);
        println!("sage {name}: cos {cos:.6}, rel L1 {rel_l1:.4}");
        assert!(
            cos >= 0.9999 && rel_l1 <= 0.015,
            "{name}: cos {cos}, rel L1 {rel_l1}"
        );
        let reference = sage_reference(&q, k, &v, &cpu_cfg).unwrap();
        let (_, ref_l1, _) = metrics(&out, &reference);
        println!("sage {name} vs CPU reference: rel L1 {ref_l1:.5}");
        assert!(ref_l1 < 0.005, "{name}: vs CPU reference rel L1 {ref_l1}");
    }
}

#[test]
fn sage_kernel_without_smoothing_loses_accuracy_on_biased_keys() {
    let (b, h, n, d) = (1, 2, 1024, 64);
    let q = bf16_values((b, h, n, d));
    let v = bf16_values((b, h, n, d));
    let bias = Tensor::randn(0f32, 8.0, (1, 1, 1, d), &Device::Cpu)
        .unwrap()
        .broadcast_as((b, h, n, d))
        .unwrap();
    let k = (bf16_values((b, h, n, d)) + bias)
        .unwrap()
        .to_dtype(DType::BF16)
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap();
    let exact = exact_attention(&q, &k, &v, None, 1 << 22).unwrap();
    let run = |smooth| {
        let out = veetance_gpu::attention::sage_attention(
            &to_gpu_bf16(&q),
            &to_gpu_bf16(&k),
            &to_gpu_bf16(&v),
            0.125,
            smooth,
        )
        .unwrap();
        metrics(&out.transpose(1, 2).unwrap(), &exact).1
    };
    let (smoothed, raw) = (run(true), run(false));
    assert!(smoothed < raw, "smoothed {smoothed} vs raw {raw}");
}

fn layer_norm_modulate(x: &Tensor, shift: &Tensor, scale: &Tensor) -> Tensor {
    let c = x.dim(D::Minus1).unwrap();
    let ones = Tensor::ones(c, DType::F32, &Device::Cpu).unwrap();
    let zeros = Tensor::zeros(c, DType::F32, &Device::Cpu).unwrap();
    candle_nn::ops::layer_norm(&x.contiguous().unwrap(), &ones, &zeros, 1e-6)
        .unwrap()
        .broadcast_mul(&(scale + 1.0).unwrap())
        .unwrap()
        .broadcast_add(shift)
        .unwrap()
}

#[test]
fn fused_block_kernels_match_candle_ops() {
    let cpu = Device::Cpu;
    let (b, l, c) = (2, 37, 256);
    // x is a narrowed view (row stride 320): kernels must honour strides.
    let wide = bf16_values((1, b, l, 320)).squeeze(0).unwrap();
    let x = wide.narrow(D::Minus1, 16, c).unwrap();
    let shift = Tensor::randn(0f32, 0.5, (b, 1, c), &cpu).unwrap();
    let scale = Tensor::randn(0f32, 0.5, (b, 1, c), &cpu).unwrap();
    let y = Tensor::randn(0f32, 1.0, (b, l, c), &cpu).unwrap();
    for (dtype, tol) in [(DType::F32, 1e-5), (DType::BF16, 1e-2)] {
        let g = |t: &Tensor| t.to_dtype(dtype).unwrap().to_device(&gpu()).unwrap();
        let gx = g(&wide).narrow(D::Minus1, 16, c).unwrap();

        let out = veetance_gpu::fused::modulate(&gx, &g(&shift), &g(&scale), 1e-6).unwrap();
        let (_, _, err) = metrics(&out, &layer_norm_modulate(&x, &shift, &scale));
        assert!(err < tol, "modulate {dtype:?}: {err}");

        let out = veetance_gpu::fused::gate_residual(&gx, &g(&y), &g(&scale)).unwrap();
        let expected = (&x + y.broadcast_mul(&scale).unwrap()).unwrap();
        let (_, _, err) = metrics(&out, &expected);
        assert!(err < tol, "gate_residual {dtype:?}: {err}");

        let out = veetance_gpu::fused::swiglu(&gx, 128).unwrap();
        let expected = candle_nn::ops::swiglu(&x.contiguous().unwrap()).unwrap();
        let (_, _, err) = metrics(&out, &expected);
        assert!(err < tol, "swiglu {dtype:?}: {err}");
    }
}

#[test]
fn fused_qk_norm_rope_matches_rms_norm_then_rope() {
    let cpu = Device::Cpu;
    for &(heads, hd) in &[(2, 128), (3, 64), (4, 32)] {
        let (b, lt, li) = (1, 5, 11);
        let hidden = heads * hd;
        // Text rows hold exactly q|k|v; image rows carry extra columns (like a single block's
        // fused projection) that the kernel must skip.
        let txt = Tensor::randn(0f32, 1.0, (b, lt, 3 * hidden), &cpu).unwrap();
        let img = Tensor::randn(0f32, 1.0, (b, li, 3 * hidden + 40), &cpu).unwrap();
        let qn = Tensor::randn(1f32, 0.1, hd, &cpu).unwrap();
        let kn = Tensor::randn(1f32, 0.1, hd, &cpu).unwrap();
        let total = lt + li;
        let angles = Tensor::randn(0f32, 2.0, (total, hd / 2), &cpu).unwrap();
        let (cos, sin) = (angles.cos().unwrap(), angles.sin().unwrap());

        let heads_of = |qkv: &Tensor, part: usize, norm: Option<&Tensor>| {
            let (_, l, _) = qkv.dims3().unwrap();
            let x = qkv
                .narrow(D::Minus1, part * hidden, hidden)
                .unwrap()
                .reshape((b, l, heads, hd))
                .unwrap();
            match norm {
                Some(n) => candle_nn::ops::rms_norm(&x.contiguous().unwrap(), n, 1e-6).unwrap(),
                None => x,
            }
        };
        let joint = |part: usize, norm: Option<&Tensor>| {
            Tensor::cat(&[heads_of(&txt, part, norm), heads_of(&img, part, norm)], 1).unwrap()
        };
        let rope = |x: Tensor| {
            let x = x.transpose(1, 2).unwrap().contiguous().unwrap();
            candle_nn::rotary_emb::rope_i(&x, &cos, &sin)
                .unwrap()
                .transpose(1, 2)
                .unwrap()
        };
        let expected = [
            rope(joint(0, Some(&qn))),
            rope(joint(1, Some(&kn))),
            joint(2, None),
        ];

        let g = |t: &Tensor| t.to_device(&gpu()).unwrap();
        let (gt, gi, gq, gk) = (g(&txt), g(&img), g(&qn), g(&kn));
        let parts = [
            veetance_gpu::fused::QkvPart {
                qkv: &gt,
                q_norm: &gq,
                k_norm: &gk,
            },
            veetance_gpu::fused::QkvPart {
                qkv: &gi,
                q_norm: &gq,
                k_norm: &gk,
            },
        ];
        let (q, k, v) =
            veetance_gpu::fused::qk_norm_rope(&parts, heads, &g(&cos), &g(&sin), 1e-6).unwrap();
        for (name, got, want) in [
            ("q", q, &expected[0]),
            ("k", k, &expected[1]),
            ("v", v, &expected[2]),
        ] {
            let (_, _, err) = metrics(&got, want);
            assert!(err < 1e-5, "{name} (heads {heads}, hd {hd}): {err}");
        }
    }
}

/// A small transformer with klein's head dim, saved so that CPU and GPU load the same weights.
fn saved_transformer(dir: &std::path::Path) -> Flux2Config {
    let cfg = Flux2Config {
        num_attention_heads: 2,
        attention_head_dim: 128,
        num_layers: 2,
        num_single_layers: 2,
        joint_attention_dim: 96,
        in_channels: 32,
        axes_dims_rope: vec![32, 32, 32, 32],
        ..Flux2Config::klein_4b()
    };
    let mut tensors = std::collections::HashMap::new();
    for spec in cfg.diffusers_tensor_specs() {
        let t = if spec.shape.len() == 1 {
            Tensor::randn(1f32, 0.1, spec.shape.as_slice(), &Device::Cpu)
        } else {
            let fan_in = spec.shape.last().copied().unwrap_or(1) as f32;
            Tensor::randn(
                0f32,
                1.0 / fan_in.sqrt(),
                spec.shape.as_slice(),
                &Device::Cpu,
            )
        };
        tensors.insert(spec.name.clone(), t.unwrap());
    }
    candle_core::safetensors::save(&tensors, dir.join("diffusion_pytorch_model.safetensors"))
        .unwrap();
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_string(&cfg).unwrap(),
    )
    .unwrap();
    cfg
}

#[test]
fn bf16_transformer_on_cuda_matches_the_f32_cpu_model_eager_compiled_and_sage() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = saved_transformer(dir.path());
    let cpu_model =
        Flux2Transformer::load(dir.path(), DType::F32, &Device::Cpu, QuantMode::Exact).unwrap();
    let gpu_model =
        Flux2Transformer::load(dir.path(), DType::BF16, &gpu(), QuantMode::Exact).unwrap();
    let (gh, gw, txt_len) = (12, 10, 40);
    let x = Tensor::randn(0f32, 1.0, (1, gh * gw, cfg.in_channels), &Device::Cpu).unwrap();
    let txt = Tensor::randn(
        0f32,
        1.0,
        (1, txt_len, cfg.joint_attention_dim),
        &Device::Cpu,
    )
    .unwrap();
    let run = |model: &Flux2Transformer, dev: &Device| {
        let t = Tensor::new(&[0.6f32], dev).unwrap();
        model
            .forward(
                &x.to_device(dev).unwrap(),
                &image_ids(gh, gw, dev).unwrap(),
                &txt.to_device(dev).unwrap(),
                &text_ids(txt_len, dev).unwrap(),
                &t,
                None,
            )
            .unwrap()
    };
    let expected = run(&cpu_model, &Device::Cpu);
    let scheduler = SchedulerConfig::default();
    let options = CompileOptions::for_schedule(&scheduler, (gh, gw), 4, None);
    let compiled = gpu_model.compile(&options).unwrap();
    assert!(compiled.compiled_state().unwrap().fused());
    let sage = AttentionBackend::Sage(SageConfig::default());
    let mut compiled_eager = None;
    for (name, model, tol) in [
        ("eager", gpu_model.clone(), 0.03),
        ("compiled", compiled.clone(), 0.03),
        ("eager+sage", gpu_model.with_attention(sage.clone()), 0.05),
        ("compiled+sage", compiled.with_attention(sage.clone()), 0.05),
    ] {
        let out = run(&model, &gpu());
        let (cos, _, rel_l2) = metrics(&out, &expected);
        println!("{name}: cos {cos:.6}, rel L2 {rel_l2:.4}");
        assert!(rel_l2 < tol, "{name}: rel L2 {rel_l2} (cos {cos})");
        if name == "compiled" {
            compiled_eager = Some(out);
        }
    }
    let compiled_eager = compiled_eager.unwrap();
    // Later calls at this size are captured as a CUDA graph and replayed: same output, bit for
    // bit, as the eager step of the compiled model.
    let captured = run(&compiled, &gpu());
    let replayed = run(&compiled, &gpu());
    let graphs = compiled.compiled_state().unwrap().graphs();
    assert!(graphs.failures().is_empty(), "{:?}", graphs.failures());
    assert_eq!(graphs.captured(), 1);
    assert_eq!(metrics(&captured, &compiled_eager).1, 0.0);
    assert_eq!(metrics(&replayed, &compiled_eager).1, 0.0);

    // Offloading: RAM (page-locked, as Load's offload keeps it) and back leaves the weights,
    // and so the output, unchanged.
    let in_ram = gpu_model
        .to_device(&Device::Cpu)
        .unwrap()
        .pinned_for(&gpu());
    assert!(in_ram.pinned_bytes() > 0);
    let round_trip = in_ram.to_device(&gpu()).unwrap();
    assert_eq!(
        metrics(&run(&round_trip, &gpu()), &run(&gpu_model, &gpu())).1,
        0.0
    );
}

#[test]
fn cuda_conv2d_and_group_norm_match_candle() {
    let cpu = Device::Cpu;
    // Output widths that are multiples of 8 take the vectorised kernel (with and without bias
    // rows); the others candle's convolution.
    for &(c_in, c_out, k, stride, pad, h, w) in &[
        (16, 24, 3, 1, 1, 19, 24),
        (8, 8, 3, 2, 0, 17, 17),
        (12, 4, 1, 1, 0, 9, 16),
        (16, 24, 3, 1, 1, 19, 23),
        (12, 4, 1, 1, 0, 9, 7),
    ] {
        let x = Tensor::randn(0f32, 1.0, (2, c_in, h, w), &cpu).unwrap();
        let wt = Tensor::randn(0f32, 0.2, (c_out, c_in, k, k), &cpu).unwrap();
        let bias = Tensor::randn(0f32, 0.2, c_out, &cpu).unwrap();
        let expected = x
            .conv2d(&wt, pad, stride, 1, 1)
            .unwrap()
            .broadcast_add(&bias.reshape((1, c_out, 1, 1)).unwrap())
            .unwrap();
        for (dtype, tol) in [(DType::F32, 1e-5), (DType::BF16, 1e-2)] {
            let g = |t: &Tensor| t.to_dtype(dtype).unwrap().to_device(&gpu()).unwrap();
            let out =
                veetance_gpu::conv::conv2d(&g(&x), &g(&wt), Some(&g(&bias)), stride, pad).unwrap();
            let (_, _, err) = metrics(&out, &expected);
            assert!(
                err < tol,
                "conv {c_in}->{c_out} k{k} s{stride} p{pad} {dtype:?}: {err}"
            );
            let unbiased = veetance_gpu::conv::conv2d(&g(&x), &g(&wt), None, stride, pad).unwrap();
            let expected = x.conv2d(&wt, pad, stride, 1, 1).unwrap();
            let (_, _, err) = metrics(&unbiased, &expected);
            assert!(err < tol, "conv without bias {dtype:?}: {err}");
        }
    }
    // GroupNorm with a large mean (where E[x²] − E[x]² would cancel), then SiLU.
    let x = (Tensor::randn(0f32, 1.0, (2, 64, 13, 11), &cpu).unwrap() + 30.0).unwrap();
    let weight = Tensor::randn(1f32, 0.1, 64, &cpu).unwrap();
    let bias = Tensor::randn(0f32, 0.1, 64, &cpu).unwrap();
    for (dtype, tol) in [(DType::F32, 1e-5), (DType::BF16, 1e-2)] {
        let g = |t: &Tensor| t.to_dtype(dtype).unwrap().to_device(&gpu()).unwrap();
        // The reference sees the same rounded input: at 30 ± 1, bf16's spacing (0.125) alone
        // moves the normalised values by about 4 %.
        let rounded = |t: &Tensor| t.to_dtype(dtype).unwrap().to_dtype(DType::F32).unwrap();
        let norm =
            candle_nn::GroupNorm::new(rounded(&weight), rounded(&bias), 64, 32, 1e-6).unwrap();
        let expected = candle_core::Module::forward(&norm, &rounded(&x))
            .unwrap()
            .silu()
            .unwrap();
        let out =
            veetance_gpu::conv::group_norm(&g(&x), &g(&weight), &g(&bias), 32, 1e-6, true).unwrap();
        let (_, _, err) = metrics(&out, &expected);
        assert!(err < tol, "group norm {dtype:?}: {err}");
    }
}

#[test]
fn vae_decode_on_cuda_matches_the_cpu_decode() {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-klein/vae");
    let cpu_vae = veetance_models::Vae::load(&dir, DType::F32, &Device::Cpu).unwrap();
    let grid = 4;
    let latent = Tensor::randn(
        0f32,
        1.0,
        (1, 4 * cpu_vae_channels(&cpu_vae), grid, grid),
        &Device::Cpu,
    );
    let latent = latent.unwrap();
    let expected = cpu_vae.decode(&latent).unwrap();
    for (dtype, tol) in [(DType::F32, 1e-4), (DType::BF16, 3e-2)] {
        let vae = veetance_models::Vae::load(&dir, dtype, &gpu()).unwrap();
        let out = vae.decode(&latent.to_device(&gpu()).unwrap()).unwrap();
        let (_, _, err) = metrics(&out, &expected);
        println!("vae decode {dtype:?}: rel L2 {err:.5}");
        assert!(err < tol, "vae decode {dtype:?}: {err}");
    }
}

/// Latent channels before 2×2 patchification (32 for FLUX.2, 4 in diffusers' tiny tests).
fn cpu_vae_channels(vae: &veetance_models::Vae) -> usize {
    vae.config().latent_channels
}

fn fixtures() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn reference(name: &str) -> Tensor {
    let path = fixtures().join("reference.safetensors");
    let weights = veetance_models::weights::Weights::from_file(&path).unwrap();
    weights.get(name, DType::F32, &Device::Cpu).unwrap()
}

#[test]
fn bf16_text_encoder_and_transformer_on_cuda_match_the_diffusers_fixtures() {
    let dir = fixtures().join("tiny-klein");
    let encoder = veetance_models::TextEncoder::load(
        &veetance_models::qwen3::TokenizerFiles::from_dir(&dir.join("tokenizer")).unwrap(),
        &dir.join("text_encoder"),
        &[1, 2, 3],
        DType::BF16,
        &gpu(),
        QuantMode::Exact,
    )
    .unwrap();
    // The prompts the fixtures were made with.
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("reference.json")).unwrap())
            .unwrap();
    let prompts: Vec<&str> = meta["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    let out = encoder.encode(&prompts).unwrap();
    let (cos, _, rel_l2) = metrics(&out, &reference("text.embeds"));
    println!("text encoder bf16 vs transformers f32: cos {cos:.6}, rel L2 {rel_l2:.4}");
    assert!(rel_l2 < 0.03, "text encoder rel L2 {rel_l2}");

    let model = Flux2Transformer::load(
        &dir.join("transformer"),
        DType::BF16,
        &gpu(),
        QuantMode::Exact,
    )
    .unwrap();
    let dev = gpu();
    let out = model
        .forward(
            &reference("dit.x_tokens").to_device(&dev).unwrap(),
            &image_ids(8, 8, &dev).unwrap(),
            &reference("dit.cond").to_device(&dev).unwrap(),
            &text_ids(512, &dev).unwrap(),
            &Tensor::new(&[0.7f32], &dev).unwrap(),
            None,
        )
        .unwrap();
    let (cos, _, rel_l2) = metrics(&out, &reference("dit.out"));
    println!("transformer bf16 vs diffusers f32: cos {cos:.6}, rel L2 {rel_l2:.4}");
    assert!(rel_l2 < 0.03, "transformer rel L2 {rel_l2}");
}

#[test]
fn streamed_blocks_on_cuda_compute_what_resident_blocks_do_and_the_limit_holds() {
    use veetance_models::linear::CompactFormat;
    let cfg = Flux2Config {
        num_attention_heads: 2,
        attention_head_dim: 128,
        num_layers: 3,
        num_single_layers: 4,
        joint_attention_dim: 96,
        in_channels: 32,
        axes_dims_rope: vec![32, 32, 32, 32],
        ..Flux2Config::klein_4b()
    };
    let ram = Flux2Transformer::random(cfg.clone(), DType::BF16, &Device::Cpu).unwrap();
    let device = gpu();
    let (grid_h, grid_w, txt_len) = (4, 4, 8);
    let img =
        to_gpu_bf16(&Tensor::randn(0f32, 1.0, (1, grid_h * grid_w, 32), &Device::Cpu).unwrap());
    let txt = to_gpu_bf16(&Tensor::randn(0f32, 1.0, (1, txt_len, 96), &Device::Cpu).unwrap());
    let run = |model: &Flux2Transformer| {
        cpu_f64(
            &model
                .forward(
                    &img,
                    &image_ids(grid_h, grid_w, &device).unwrap(),
                    &txt,
                    &text_ids(txt_len, &device).unwrap(),
                    &Tensor::new(&[0.5f32], &device).unwrap(),
                    None,
                )
                .unwrap(),
        )
    };
    for compact in [None, Some(CompactFormat::Fp8E4M3)] {
        let ram = match compact {
            Some(format) => ram.with_compact_blocks(format, QuantMode::Exact).unwrap(),
            None => ram.clone(),
        }
        .pinned_for(&device);
        let resident = run(&ram.to_device(&device).unwrap());
        let total: u64 = ram.layer_bytes().iter().sum();
        for keep in [0, total / 2] {
            let placed = ram.placed(&device, keep).unwrap();
            assert!(placed.streaming().unwrap().streamed_count() > 0);
            // The same kernels on the same bytes: identical, whichever stream copied them.
            assert_eq!(run(&placed), resident, "{compact:?}, {keep} resident");
            assert!(placed.streaming().unwrap().bytes_copied() > 0);
        }
    }
}

/// Changes the device's memory pool for the whole process: run this file with
/// `--test-threads 1` (as docs/TESTING.md says).
#[test]
fn allocations_past_the_vram_limit_fail_as_out_of_memory() {
    let device = gpu();
    veetance_models::device::limit_vram(&device, 64 << 20).unwrap();
    assert_eq!(veetance_gpu::memory::vram_limit(&device), Some(64 << 20));
    let err = Tensor::zeros((256 << 20) / 4, DType::F32, &device)
        .expect_err("allocating past the limit fails");
    assert!(veetance_gpu::memory::is_out_of_memory(&err), "{err}");
    veetance_models::device::limit_vram(&device, 100 << 30).unwrap();
    assert!(Tensor::zeros((256 << 20) / 4, DType::F32, &device).is_ok());
}
