//! Attention backends: SageAttention reference accuracy gates (gpu-performance.md §5a) and
//! exact chunked attention.

// Helpers outside #[test] functions are test code too; clippy.toml only relaxes the #[test] bodies.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use veetance_models::QuantMode;
use veetance_models::attention::exact_attention;
use veetance_models::attention::sage::{quantize_int8_per_block, sage_attention};
use veetance_models::flux2::{image_ids, text_ids};
use veetance_models::{AttentionBackend, Flux2Transformer, PvPrecision, SageConfig, seeded_noise};

const N: usize = 4608;
const HEAD_DIM: usize = 128;

/// q, k, v `[1, 1, N, D]`; with `k_bias` K gets a shared per-channel offset, as DiT keys do.
fn inputs(seed: u64, k_bias: f64) -> (Tensor, Tensor, Tensor) {
    let dev = Device::Cpu;
    let q = seeded_noise(seed, (1, 1, N, HEAD_DIM), &dev).unwrap();
    let k = seeded_noise(seed + 1, (1, 1, N, HEAD_DIM), &dev).unwrap();
    let v = seeded_noise(seed + 2, (1, 1, N, HEAD_DIM), &dev).unwrap();
    let k = if k_bias != 0.0 {
        let bias = (seeded_noise(seed + 3, (1, 1, 1, HEAD_DIM), &dev).unwrap() * k_bias).unwrap();
        k.broadcast_add(&bias).unwrap()
    } else {
        k
    };
    (q, k, v)
}

/// Oracle: exact attention in f32 (chunked, f32 softmax).
///
/// A pure f64 oracle costs seconds per call on CI's two cores; f32 exact attention is within
/// ~1e-7 of it, three orders of magnitude below the gates.
fn oracle(q: &Tensor, k: &Tensor, v: &Tensor) -> Tensor {
    exact_attention(q, k, v, None, 1 << 22).unwrap()
}

/// (cosine similarity, relative L1 = Σ|a−b| / Σ|b|).
fn metrics(actual: &Tensor, expected: &Tensor) -> (f64, f64) {
    let a = actual.to_dtype(DType::F64).unwrap().flatten_all().unwrap();
    let b = expected
        .to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap();
    let dot = (&a * &b)
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar::<f64>()
        .unwrap();
    let na = a
        .sqr()
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
        .sqrt();
    let nb = b
        .sqr()
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
        .sqrt();
    let l1 = (&a - &b)
        .unwrap()
        .abs()
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar::<f64>()
        .unwrap();
    let l1_ref = b
        .abs()
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar::<f64>()
        .unwrap();
    (dot / (na * nb), l1 / l1_ref)
}

fn sage(smooth_k: bool, pv: PvPrecision) -> SageConfig {
    SageConfig {
        smooth_k,
        pv,
        ..SageConfig::default()
    }
}

fn check_int8_f16_gate(seed: u64, bias: f64) {
    let (q, k, v) = inputs(seed, bias);
    let oracle = oracle(&q, &k, &v);
    let out = sage_attention(&q, &k, &v, &sage(true, PvPrecision::F16)).unwrap();
    let (cos, rel_l1) = metrics(&out, &oracle);
    eprintln!("int8 + f16 PV, K bias {bias}: cos {cos:.6}, rel L1 {rel_l1:.4}");
    assert!(cos >= 0.9999, "cosine {cos} below 0.9999 (K bias {bias})");
    assert!(
        rel_l1 <= 0.015,
        "relative L1 {rel_l1} above 0.015 (K bias {bias})"
    );
}

#[test]
fn sage_int8_f16_pv_meets_the_gate_on_iid_inputs() {
    check_int8_f16_gate(10, 0.0);
}

#[test]
fn sage_int8_f16_pv_meets_the_gate_on_channel_biased_keys() {
    check_int8_f16_gate(20, 4.0);
}

#[test]
fn sage_int8_fp8_pv_meets_its_gate() {
    let (q, k, v) = inputs(30, 4.0);
    let oracle = oracle(&q, &k, &v);
    let out = sage_attention(&q, &k, &v, &sage(true, PvPrecision::Fp8E4M3)).unwrap();
    let (cos, rel_l1) = metrics(&out, &oracle);
    eprintln!("int8 + fp8 PV: cos {cos:.6}, rel L1 {rel_l1:.4}");
    assert!(cos >= 0.999, "cosine {cos} below 0.999");
    assert!(rel_l1 <= 0.04, "relative L1 {rel_l1} above 0.04");
}

#[test]
fn smoothing_k_beats_no_smoothing_on_biased_keys() {
    let (q, k, v) = inputs(40, 4.0);
    let oracle = oracle(&q, &k, &v);
    let (_, with) = metrics(
        &sage_attention(&q, &k, &v, &sage(true, PvPrecision::F16)).unwrap(),
        &oracle,
    );
    let (_, without) = metrics(
        &sage_attention(&q, &k, &v, &sage(false, PvPrecision::F16)).unwrap(),
        &oracle,
    );
    eprintln!("biased K rel L1: smoothed {with:.4}, unsmoothed {without:.4}");
    assert!(
        with < 0.8 * without,
        "smoothing should clearly help: {with} vs {without}"
    );
}

#[test]
fn sage_never_mutates_its_inputs() {
    let (q, k, v) = inputs(50, 4.0);
    let copies: Vec<Vec<f32>> = [&q, &k, &v]
        .iter()
        .map(|t| t.flatten_all().unwrap().to_vec1::<f32>().unwrap())
        .collect();
    let _ = sage_attention(&q, &k, &v, &sage(true, PvPrecision::Fp8E4M3)).unwrap();
    for (t, copy) in [&q, &k, &v].iter().zip(&copies) {
        assert_eq!(&t.flatten_all().unwrap().to_vec1::<f32>().unwrap(), copy);
    }
}

#[test]
fn smoothing_is_exact_for_exact_attention() {
    let dev = Device::Cpu;
    let q = seeded_noise(1, (1, 2, 256, 64), &dev)
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap();
    let k = (seeded_noise(2, (1, 2, 256, 64), &dev).unwrap() + 3.0)
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap();
    let v = seeded_noise(3, (1, 2, 256, 64), &dev)
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap();
    let smoothed = k.broadcast_sub(&k.mean_keepdim(2).unwrap()).unwrap();
    let a = exact_attention(&q, &k, &v, None, usize::MAX).unwrap();
    let b = exact_attention(&q, &smoothed, &v, None, usize::MAX).unwrap();
    let diff = (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f64>()
        .unwrap();
    assert!(diff < 1e-12, "smoothing changed exact attention by {diff}");
}

#[test]
fn int8_quantisation_matches_hand_computed_values() {
    let dev = Device::Cpu;
    // One block of 2 rows × 4: max |x| = 2 → scale 2/127; x/scale rounds half away from zero.
    let x = Tensor::new(
        &[[[[2.0f32, -1.0, 0.5, 0.0], [-2.0, 1.0, 0.0, 0.015_748_031]]]],
        &dev,
    )
    .unwrap();
    let (q, scale) = quantize_int8_per_block(&x, 2).unwrap();
    let q: Vec<f32> = q.flatten_all().unwrap().to_vec1().unwrap();
    // -1 / (2/127) = -63.5 → -64; 0.5 → 31.75 → 32; 0.0157.. = 1/63.5 → 1.0.
    assert_eq!(q, vec![127.0, -64.0, 32.0, 0.0, -127.0, 64.0, 0.0, 1.0]);
    let scale: Vec<f32> = scale.flatten_all().unwrap().to_vec1().unwrap();
    assert!(scale.iter().all(|&s| (s - 2.0 / 127.0).abs() < 1e-9));
    // Two blocks of one row each get their own scales; an all-zero block stays zero (no NaN).
    let x = Tensor::new(&[[[[4.0f32, 2.0], [0.0, 0.0]]]], &dev).unwrap();
    let (q, scale) = quantize_int8_per_block(&x, 1).unwrap();
    assert_eq!(
        q.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        vec![127.0, 64.0, 0.0, 0.0]
    );
    assert_eq!(scale.dims(), &[1, 1, 2, 1]);
}

#[test]
fn chunked_exact_attention_equals_unchunked_with_and_without_mask() {
    let dev = Device::Cpu;
    let q = seeded_noise(7, (2, 3, 300, 32), &dev).unwrap();
    let k = seeded_noise(8, (2, 3, 300, 32), &dev).unwrap();
    let v = seeded_noise(9, (2, 3, 300, 32), &dev).unwrap();
    let mask_values: Vec<f32> = (0..300 * 300)
        .map(|i| if i % 300 <= i / 300 { 0.0 } else { -1e30 })
        .collect();
    let mask = Tensor::from_vec(mask_values, (1, 1, 300, 300), &dev).unwrap();
    for m in [None, Some(&mask)] {
        let full = exact_attention(&q, &k, &v, m, usize::MAX).unwrap();
        // 1000 elements per chunk → 3 query rows at a time: 100 chunks, never a 300×300 block.
        let chunked = exact_attention(&q, &k, &v, m, 1000).unwrap();
        let diff = (full - chunked)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(diff < 1e-6, "chunked differs by {diff}");
    }
}

#[test]
fn transformer_with_sage_backend_stays_close_to_exact() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-klein/transformer");
    let exact = Flux2Transformer::load(&dir, DType::F32, &Device::Cpu, QuantMode::Exact).unwrap();
    let sage_model = exact.with_attention(AttentionBackend::Sage(SageConfig::default()));
    assert_eq!(exact.attention(), &AttentionBackend::default());
    let dev = Device::Cpu;
    let x = seeded_noise(11, (1, 1, 64, 128), &dev)
        .unwrap()
        .squeeze(0)
        .unwrap();
    let cond = (seeded_noise(12, (1, 1, 512, 96), &dev)
        .unwrap()
        .squeeze(0)
        .unwrap()
        * 0.1)
        .unwrap();
    let t = Tensor::new(&[0.6f32], &dev).unwrap();
    let ids = (image_ids(8, 8, &dev).unwrap(), text_ids(512, &dev).unwrap());
    let a = exact.forward(&x, &ids.0, &cond, &ids.1, &t, None).unwrap();
    let b = sage_model
        .forward(&x, &ids.0, &cond, &ids.1, &t, None)
        .unwrap();
    let (cos, rel_l1) = metrics(&b, &a);
    eprintln!("tiny transformer, sage vs exact: cos {cos:.6}, rel L1 {rel_l1:.4}");
    assert!(cos > 0.999 && rel_l1 < 0.05, "cos {cos}, rel L1 {rel_l1}");
    assert!(rel_l1 > 0.0, "the Sage backend must actually be used");
}
