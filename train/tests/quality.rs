//! Quality gates of the shipped tiny model (`models/tiny`): 40 captions covering the vocabulary,
//! fixed seeds, 64×64, the checkpoint's default steps and guidance. Thresholds are the issue's:
//! background colour ≥ 95 %, object colour ≥ 90 %, object position ≥ 85 %.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

use candle_core::{DType, Device};
use veetance_models::Bundle;
use veetance_train::quality::{evaluate, gate_cases};
use veetance_train::tiny;

fn shipped() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/tiny")
}

#[test]
fn shipped_model_loads_with_its_own_settings() {
    let bundle = Bundle::load(&shipped(), DType::F32, &Device::Cpu).unwrap();
    assert_eq!(bundle.text_encoder.max_tokens(), tiny::MAX_TEXT_TOKENS);
    assert_eq!(bundle.defaults.steps, tiny::DEFAULT_STEPS);
    assert_eq!(bundle.vae.pixels_per_token(), 16);
    assert_eq!(
        bundle.text_encoder.encoder().out_layers(),
        &tiny::TEXT_OUT_LAYERS
    );
    // The shipped tokenizer is the one training writes.
    let shipped_json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(shipped().join("tokenizer/tokenizer.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(shipped_json, tiny::tokenizer_json());
    let bytes: u64 = walk(&shipped())
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    assert!(bytes <= 12 * 1024 * 1024, "weights are {bytes} bytes");
}

fn walk(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[test]
fn shipped_model_meets_the_quality_gates() {
    let bundle = Bundle::load(&shipped(), DType::F32, &Device::Cpu).unwrap();
    let report = evaluate(&bundle, &gate_cases()).unwrap();
    println!("{}", report.summary());
    for f in &report.failures {
        println!("  miss: {f}");
    }
    assert_eq!(report.cases, 40);
    assert!(
        report.background_rate() >= 0.95,
        "background gate: {}",
        report.summary()
    );
    assert!(
        report.colour_rate() >= 0.90,
        "object colour gate: {}",
        report.summary()
    );
    assert!(
        report.position_rate() >= 0.85,
        "position gate: {}",
        report.summary()
    );
}
