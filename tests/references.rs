//! Multi-reference editing through the binary against diffusers: `tests/data/references.ron`
//! (LoadImage → Reference → Sample with no size given → SaveLatent) on the parity fixtures'
//! tiny checkpoint gives the latents `Flux2KleinPipeline(image=[...])` gives with one and with
//! two reference pictures (`models/tests/fixtures/make_reference_fixtures.py`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers may panic

mod common;

use candle_core::{DType, Device, Tensor};
use common::{command, repo, text};

fn load(path: &std::path::Path, name: &str) -> Tensor {
    candle_core::safetensors::load(path, &Device::Cpu).unwrap()[name]
        .to_dtype(DType::F32)
        .unwrap()
}

fn max_abs(t: &Tensor) -> f32 {
    t.abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

#[test]
fn one_and_two_reference_pictures_give_diffusers_latents_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let out = command()
        .args(["run", "tests/data/references.ron", "--no-cache", "--out"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let expected = repo().join("models/tests/fixtures/reference-refs.safetensors");
    for run in ["one", "two"] {
        let ours = load(
            &dir.path().join(format!("refs-{run}.safetensors")),
            "latent",
        );
        let theirs = load(&expected, &format!("refs.{run}.latent"));
        // No size was given: the picture takes the first reference's, 68×88 px after cropping.
        assert_eq!(ours.dims(), theirs.dims(), "{run}");
        let err = max_abs(&(&ours - &theirs).unwrap()) / max_abs(&theirs);
        eprintln!("{run} reference(s): latent rel error {err:.2e}");
        assert!(err < 1e-4, "{run}: rel error {err}");
    }
}
