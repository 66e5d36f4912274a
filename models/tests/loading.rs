//! Weight loading: hostile safetensors files, key/shape mismatch reports, sharded checkpoints, dtypes,
//! and the exact klein key lists.

// Helpers outside #[test] functions are test code too; clippy.toml only relaxes the #[test] bodies.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use veetance_models::QuantMode;
use veetance_models::flux2::{image_ids, text_ids};
use veetance_models::weights::{MAX_HEADER_BYTES, SafetensorsFile, Weights};
use veetance_models::{Flux2Config, Flux2Transformer, ModelError};

use common::fixtures;

/// Writes `8-byte length | header | data` exactly as given.
fn write_raw(dir: &Path, name: &str, header_len: u64, header: &[u8], data: &[u8]) -> PathBuf {
    let path = dir.join(name);
    let mut bytes = header_len.to_le_bytes().to_vec();
    bytes.extend_from_slice(header);
    bytes.extend_from_slice(data);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn write_header(dir: &Path, name: &str, header: &str, data_len: usize) -> PathBuf {
    write_raw(
        dir,
        name,
        header.len() as u64,
        header.as_bytes(),
        &vec![0u8; data_len],
    )
}

fn expect_invalid(path: &Path, needle: &str) {
    match SafetensorsFile::open(path) {
        Err(ModelError::InvalidSafetensors { path: p, reason }) => {
            assert_eq!(p, path);
            assert!(
                reason.contains(needle),
                "reason {reason:?} should mention {needle:?}"
            );
            let message = ModelError::InvalidSafetensors { path: p, reason }.to_string();
            assert!(
                message.contains(&path.display().to_string()),
                "message names the file: {message}"
            );
        }
        Err(other) => panic!("expected InvalidSafetensors, got {other}"),
        Ok(_) => panic!("hostile file {} was accepted", path.display()),
    }
}

#[test]
fn hostile_truncated_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.safetensors");
    std::fs::write(&path, [1u8, 2, 3]).unwrap();
    expect_invalid(&path, "shorter than");
}

#[test]
fn hostile_header_length_beyond_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_raw(dir.path(), "a.safetensors", 4096, b"{}", &[]);
    expect_invalid(&path, "past the end");
}

#[test]
fn hostile_header_over_limit_is_refused_without_allocating() {
    let dir = tempfile::tempdir().unwrap();
    // Claims a 64 GB header in a tiny file; must be refused before any allocation of that size.
    let path = write_raw(dir.path(), "a.safetensors", 64 << 30, b"{}", &[]);
    expect_invalid(&path, "limit");
    let path = write_raw(
        dir.path(),
        "b.safetensors",
        MAX_HEADER_BYTES + 1,
        b"{}",
        &[],
    );
    expect_invalid(&path, "limit");
    let path = write_raw(dir.path(), "c.safetensors", u64::MAX, b"{}", &[]);
    expect_invalid(&path, "limit");
}

#[test]
fn hostile_headers_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("json", "{not json", 8, "not valid JSON"),
        ("array", "[1,2]", 8, "not a JSON object"),
        (
            "dtype",
            r#"{"a":{"dtype":"Q4","shape":[1],"data_offsets":[0,1]}}"#,
            8,
            "unknown dtype",
        ),
        (
            "noshape",
            r#"{"a":{"dtype":"F32","data_offsets":[0,4]}}"#,
            8,
            "no shape",
        ),
        (
            "negshape",
            r#"{"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}"#,
            8,
            "shape",
        ),
        (
            "offsets",
            r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0]}}"#,
            8,
            "data_offsets",
        ),
        (
            "overlap",
            r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#,
            12,
            "overlap",
        ),
        (
            "past_data",
            r#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#,
            8,
            "out of range",
        ),
        (
            "reversed",
            r#"{"a":{"dtype":"F32","shape":[0],"data_offsets":[8,4]}}"#,
            8,
            "before it starts",
        ),
        (
            "huge_offsets",
            r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[18446744073709551612,18446744073709551615]}}"#,
            8,
            "out of range",
        ),
        (
            "size_mismatch",
            r#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#,
            8,
            "holds 8 bytes",
        ),
        // A shape whose byte size overflows usize must not wrap around to a small number.
        (
            "overflow",
            r#"{"a":{"dtype":"F32","shape":[4611686018427387904,8],"data_offsets":[0,8]}}"#,
            8,
            "overflows",
        ),
    ];
    for (name, header, data_len, needle) in cases {
        let path = write_header(dir.path(), &format!("{name}.safetensors"), header, data_len);
        expect_invalid(&path, needle);
    }
}

#[test]
fn valid_file_with_metadata_and_unaligned_data_loads() {
    let dir = tempfile::tempdir().unwrap();
    // Header length 61 leaves the data section unaligned for f32: the loader must copy, not cast.
    let header =
        r#"{"__metadata__":{"k":"v"},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#;
    let mut data = 1.5f32.to_le_bytes().to_vec();
    data.extend_from_slice(&(-2.0f32).to_le_bytes());
    let path = write_raw(
        dir.path(),
        "a.safetensors",
        header.len() as u64,
        header.as_bytes(),
        &data,
    );
    let file = SafetensorsFile::open(&path).unwrap();
    let t = file.load("a", DType::F32, &Device::Cpu).unwrap();
    assert_eq!(t.to_vec1::<f32>().unwrap(), vec![1.5, -2.0]);
    let t = file.load("a", DType::BF16, &Device::Cpu).unwrap();
    assert_eq!(t.dtype(), DType::BF16);
}

#[test]
fn padding_between_tensors_is_accepted_and_each_tensor_read_from_its_own_range() {
    // Some writers align each tensor's data; the safetensors crate refuses the gap, we do not.
    let dir = tempfile::tempdir().unwrap();
    let header = r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[16,20]}}"#;
    let mut data = 3.0f32.to_le_bytes().to_vec();
    data.extend_from_slice(&[0xAB; 12]);
    data.extend_from_slice(&(-7.0f32).to_le_bytes());
    let path = write_raw(
        dir.path(),
        "padded.safetensors",
        header.len() as u64,
        header.as_bytes(),
        &data,
    );
    let file = SafetensorsFile::open(&path).unwrap();
    let load = |name: &str| {
        file.load(name, DType::F32, &Device::Cpu)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    };
    assert_eq!(load("a"), [3.0]);
    assert_eq!(load("b"), [-7.0]);
}

#[test]
fn klein_4b_key_list_has_169_tensors_and_the_right_parameter_count() {
    let specs = Flux2Config::klein_4b().diffusers_tensor_specs();
    assert_eq!(specs.len(), 169);
    let unique: std::collections::HashSet<&str> = specs.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(unique.len(), 169, "names are unique");
    let params: usize = specs
        .iter()
        .map(|s| s.shape.iter().product::<usize>())
        .sum();
    // flux2-spec.md §1.1: 3.876 B, of which 5 double blocks × 245.4 M and 20 single blocks × 122.7 M.
    assert_eq!(
        (params as f64 / 1e6).round() as usize,
        3876,
        "klein-4B parameter count {params}"
    );
    let block0: usize = specs
        .iter()
        .filter(|s| s.name.starts_with("transformer_blocks.0."))
        .map(|s| s.shape.iter().product::<usize>())
        .sum();
    assert_eq!(block0, 8 * 3072 * 3072 + 4 * 128 + 2 * 3 * 9216 * 3072);
    let find = |name: &str| {
        specs
            .iter()
            .find(|s| s.name == name)
            .map(|s| s.shape.clone())
    };
    assert_eq!(
        find("single_transformer_blocks.19.attn.to_qkv_mlp_proj.weight"),
        Some(vec![27648, 3072])
    );
    assert_eq!(
        find("single_transformer_blocks.0.attn.to_out.weight"),
        Some(vec![3072, 12288])
    );
    assert_eq!(find("context_embedder.weight"), Some(vec![3072, 7680]));
    assert_eq!(
        find("transformer_blocks.4.ff_context.linear_in.weight"),
        Some(vec![18432, 3072])
    );
    assert_eq!(find("norm_out.linear.weight"), Some(vec![6144, 3072]));
    assert_eq!(find("transformer_blocks.5.attn.to_q.weight"), None);

    let specs_9b = Flux2Config::klein_9b().diffusers_tensor_specs();
    assert_eq!(specs_9b.len(), 233);
    let params_9b: usize = specs_9b
        .iter()
        .map(|s| s.shape.iter().product::<usize>())
        .sum();
    assert_eq!(
        (params_9b as f64 / 1e6).round() as usize,
        9079,
        "klein-9B has 9.079 B parameters"
    );

    // The BFL layout of the same model: fused qkv, same parameter count.
    let bfl = Flux2Config::klein_4b().bfl_tensor_specs();
    assert_eq!(bfl.len(), 149);
    assert_eq!(
        bfl.iter()
            .map(|s| s.shape.iter().product::<usize>())
            .sum::<usize>(),
        params
    );
}

fn tiny_transformer_tensors() -> HashMap<String, Tensor> {
    let weights = Weights::from_dir(&fixtures().join("tiny-klein/transformer")).unwrap();
    weights
        .names()
        .into_iter()
        .map(|n| {
            (
                n.to_string(),
                weights.get(n, DType::F32, &Device::Cpu).unwrap(),
            )
        })
        .collect()
}

fn copy_config(dir: &Path) {
    std::fs::copy(
        fixtures().join("tiny-klein/transformer/config.json"),
        dir.join("config.json"),
    )
    .unwrap();
}

#[test]
fn key_and_shape_mismatches_are_all_reported_with_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let mut tensors = tiny_transformer_tensors();
    let moved = tensors
        .remove("transformer_blocks.0.attn.to_q.weight")
        .unwrap();
    tensors.insert("transformer_blocks.0.attn.to_query.weight".into(), moved);
    tensors.remove("proj_out.weight");
    tensors.insert(
        "norm_out.linear.weight".into(),
        Tensor::zeros((3, 3), DType::F32, &Device::Cpu).unwrap(),
    );
    candle_core::safetensors::save(
        &tensors,
        dir.path().join("diffusion_pytorch_model.safetensors"),
    )
    .unwrap();
    copy_config(dir.path());
    let err =
        Flux2Transformer::load(dir.path(), DType::F32, &Device::Cpu, QuantMode::Exact).unwrap_err();
    let ModelError::Keys {
        path,
        missing,
        unexpected,
        mismatched,
    } = &err
    else {
        panic!("wrong error {err}")
    };
    assert_eq!(path, dir.path());
    let mut missing = missing.clone();
    missing.sort();
    assert_eq!(
        missing,
        vec![
            "proj_out.weight".to_string(),
            "transformer_blocks.0.attn.to_q.weight".to_string()
        ]
    );
    assert_eq!(
        unexpected,
        &vec!["transformer_blocks.0.attn.to_query.weight".to_string()]
    );
    assert_eq!(mismatched.len(), 1);
    assert!(
        mismatched[0].contains("norm_out.linear.weight: expected [64, 32], found [3, 3]"),
        "{mismatched:?}"
    );
    let message = err.to_string();
    assert!(
        message.contains(&dir.path().display().to_string()) && message.contains("proj_out.weight"),
        "{message}"
    );
}

fn forward(model: &Flux2Transformer) -> Tensor {
    let dev = Device::Cpu;
    let x = Tensor::ones((1, 4, 128), DType::F32, &dev).unwrap();
    let cond = Tensor::ones((1, 8, 96), DType::F32, &dev).unwrap();
    let t = Tensor::new(&[0.5f32], &dev).unwrap();
    model
        .forward(
            &x,
            &image_ids(2, 2, &dev).unwrap(),
            &cond,
            &text_ids(8, &dev).unwrap(),
            &t,
            None,
        )
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap()
}

#[test]
fn sharded_checkpoint_with_index_loads_like_a_single_file() {
    let dir = tempfile::tempdir().unwrap();
    let tensors = tiny_transformer_tensors();
    let mut names: Vec<&String> = tensors.keys().collect();
    names.sort();
    let (first, second) = names.split_at(names.len() / 2);
    let mut weight_map = serde_json::Map::new();
    for (shard, part) in [
        ("model-00001-of-00002.safetensors", first),
        ("model-00002-of-00002.safetensors", second),
    ] {
        let subset: HashMap<String, Tensor> = part
            .iter()
            .map(|n| ((*n).clone(), tensors[*n].clone()))
            .collect();
        candle_core::safetensors::save(&subset, dir.path().join(shard)).unwrap();
        for n in part {
            weight_map.insert((*n).clone(), serde_json::Value::String(shard.into()));
        }
    }
    let index = serde_json::json!({"metadata": {"total_size": 0}, "weight_map": weight_map});
    std::fs::write(
        dir.path()
            .join("diffusion_pytorch_model.safetensors.index.json"),
        index.to_string(),
    )
    .unwrap();
    copy_config(dir.path());
    let sharded =
        Flux2Transformer::load(dir.path(), DType::F32, &Device::Cpu, QuantMode::Exact).unwrap();
    let single = Flux2Transformer::load(
        &fixtures().join("tiny-klein/transformer"),
        DType::F32,
        &Device::Cpu,
        QuantMode::Exact,
    )
    .unwrap();
    let diff = common::max_abs_diff(&forward(&sharded), &forward(&single)).unwrap();
    assert_eq!(diff, 0.0);

    // An index pointing a tensor at the wrong shard is a broken download, not silently accepted.
    let mut bad = index.clone();
    bad["weight_map"]["proj_out.weight"] =
        serde_json::Value::String("model-00001-of-00002.safetensors".into());
    if names
        .iter()
        .position(|n| n.as_str() == "proj_out.weight")
        .unwrap()
        < first.len()
    {
        bad["weight_map"]["proj_out.weight"] =
            serde_json::Value::String("model-00002-of-00002.safetensors".into());
    }
    std::fs::write(
        dir.path()
            .join("diffusion_pytorch_model.safetensors.index.json"),
        bad.to_string(),
    )
    .unwrap();
    let err =
        Flux2Transformer::load(dir.path(), DType::F32, &Device::Cpu, QuantMode::Exact).unwrap_err();
    assert!(err.to_string().contains("proj_out.weight"), "{err}");
}

#[test]
fn half_precision_loads_and_stays_close_to_f32() {
    let path = fixtures().join("tiny-klein/transformer");
    let f32_model =
        Flux2Transformer::load(&path, DType::F32, &Device::Cpu, QuantMode::Exact).unwrap();
    let reference = forward(&f32_model);
    for (dtype, tolerance) in [(DType::F16, 0.01f32), (DType::BF16, 0.05)] {
        let model = Flux2Transformer::load(&path, dtype, &Device::Cpu, QuantMode::Exact).unwrap();
        assert_eq!(model.dtype(), dtype);
        let out = forward(&model);
        let err = common::rel_error(&out, &reference).unwrap();
        assert!(err < tolerance, "{dtype:?} rel error {err}");
    }
}

#[test]
fn missing_component_directory_names_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let err = veetance_models::Bundle::load(dir.path(), DType::F32, &Device::Cpu).unwrap_err();
    let message = err.to_string();
    assert!(message.contains("transformer"), "{message}");
}

#[test]
fn variant_files_beside_the_standard_name_are_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let source = fixtures().join("tiny-klein/transformer");
    std::fs::copy(
        source.join("diffusion_pytorch_model.safetensors"),
        dir.path().join("diffusion_pytorch_model.safetensors"),
    )
    .unwrap();
    // A half-precision variant holding the same tensor names must not count as a second shard.
    std::fs::copy(
        source.join("diffusion_pytorch_model.safetensors"),
        dir.path().join("diffusion_pytorch_model.fp16.safetensors"),
    )
    .unwrap();
    copy_config(dir.path());
    let model =
        Flux2Transformer::load(dir.path(), DType::F32, &Device::Cpu, QuantMode::Exact).unwrap();
    assert_eq!(model.config().num_layers, 2);
    // Without a standard name, two files with the same tensors are reported, naming the tensor.
    std::fs::remove_file(dir.path().join("diffusion_pytorch_model.safetensors")).unwrap();
    std::fs::copy(
        source.join("diffusion_pytorch_model.safetensors"),
        dir.path().join("other.safetensors"),
    )
    .unwrap();
    let err =
        Flux2Transformer::load(dir.path(), DType::F32, &Device::Cpu, QuantMode::Exact).unwrap_err();
    assert!(err.to_string().contains("more than one shard"), "{err}");
}

#[test]
fn vae_single_file_configuration_is_inferred_from_shapes() {
    use veetance_models::vae::{Vae, VaeConfig, infer_vae_config};
    let dir = fixtures().join("tiny-klein/vae");
    let weights = Weights::from_file(&dir.join("diffusion_pytorch_model.safetensors")).unwrap();
    let inferred = infer_vae_config(&weights).unwrap();
    let written: VaeConfig =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    assert_eq!(inferred.block_out_channels, written.block_out_channels);
    assert_eq!(inferred.decoder_block_out_channels, None);
    assert_eq!(inferred.layers_per_block, written.layers_per_block);
    assert_eq!(inferred.latent_channels, 32);
    assert!(
        inferred.use_quant_conv && inferred.use_post_quant_conv && inferred.mid_block_add_attention
    );
    // The group count is invisible in the weights; with the right one the file loads and decodes
    // exactly like the directory.
    let cfg = VaeConfig {
        norm_num_groups: written.norm_num_groups,
        ..inferred
    };
    let from_file = Vae::from_weights(&weights, cfg, DType::F32, &Device::Cpu).unwrap();
    let from_dir = Vae::load(&dir, DType::F32, &Device::Cpu).unwrap();
    let z = Tensor::ones((1, 128, 2, 2), DType::F32, &Device::Cpu).unwrap();
    let diff = common::max_abs_diff(
        &from_file.decode(&z).unwrap(),
        &from_dir.decode(&z).unwrap(),
    )
    .unwrap();
    assert_eq!(diff, 0.0);
}

// Unix filesystems keep the hole sparse; NTFS would really allocate it.
#[cfg(unix)]
#[test]
fn released_vae_layout_infers_the_released_configuration() {
    use veetance_models::vae::{VaeConfig, infer_vae_config};
    // The file is sparse: a real header over 336 MB of holes, so nothing is allocated or written.
    let released = VaeConfig::flux2();
    let tmp = tempfile::tempdir().unwrap();
    let path = sparse_checkpoint(tmp.path(), "vae.safetensors", &released.tensor_specs());
    let inferred = infer_vae_config(&Weights::from_file(&path).unwrap()).unwrap();
    assert_eq!(inferred.block_out_channels, vec![128, 256, 512, 512]);
    assert_eq!(
        (
            inferred.layers_per_block,
            inferred.latent_channels,
            inferred.norm_num_groups
        ),
        (2, 32, 32)
    );
    assert_eq!(inferred.tensor_specs(), released.tensor_specs());
}

/// A safetensors file with the given f32 tensors whose data section is a hole (all zeros).
#[cfg(unix)]
fn sparse_checkpoint(
    dir: &Path,
    name: &str,
    specs: &[veetance_models::weights::TensorSpec],
) -> PathBuf {
    common::sparse_safetensors(dir, name, specs).unwrap()
}

// Unix filesystems keep the multi-gigabyte hole sparse; NTFS would really allocate it.
#[cfg(unix)]
#[test]
fn klein_4b_checkpoint_layout_loads_its_header_and_infers_the_preset() {
    // The exact klein-4B tensor list written as a sparse 15.5 GB file: header validation, key check
    // and configuration inference run on it without reading or allocating the weights.
    let tmp = tempfile::tempdir().unwrap();
    let path = sparse_checkpoint(
        tmp.path(),
        "klein-4b.safetensors",
        &Flux2Config::klein_4b().diffusers_tensor_specs(),
    );
    let weights = Weights::from_file(&path).unwrap();
    assert_eq!(weights.names().len(), 169);
    let layout = veetance_models::flux2::detect_layout(&weights);
    assert_eq!(layout, veetance_models::CheckpointLayout::Diffusers);
    let cfg = veetance_models::flux2::infer_config(&weights, layout).unwrap();
    assert_eq!(cfg, Flux2Config::klein_4b());
    weights
        .check(&cfg.diffusers_tensor_specs(), |_| false)
        .unwrap();
    let bfl = sparse_checkpoint(
        tmp.path(),
        "klein-9b-bfl.safetensors",
        &Flux2Config::klein_9b().bfl_tensor_specs(),
    );
    let weights = Weights::from_file(&bfl).unwrap();
    let cfg =
        veetance_models::flux2::infer_config(&weights, veetance_models::CheckpointLayout::Bfl)
            .unwrap();
    assert_eq!(cfg, Flux2Config::klein_9b());
}

#[test]
fn implausible_config_sizes_are_refused_before_building_key_lists() {
    let dir = tempfile::tempdir().unwrap();
    let source = fixtures().join("tiny-klein/transformer");
    std::fs::copy(
        source.join("diffusion_pytorch_model.safetensors"),
        dir.path().join("diffusion_pytorch_model.safetensors"),
    )
    .unwrap();
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(source.join("config.json")).unwrap())
            .unwrap();
    cfg["num_single_layers"] = serde_json::json!(1_000_000_000_000u64);
    std::fs::write(dir.path().join("config.json"), cfg.to_string()).unwrap();
    let err = Flux2Transformer::load(dir.path(), DType::F32, &Device::Cpu, QuantMode::Exact)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("implausible") && err.contains("config.json"),
        "{err}"
    );
}

#[test]
fn zero_sized_tensors_with_huge_dims_do_not_overflow_inference() {
    // A zero-byte tensor may legally have an enormous dimension; the inferred VAE config must be
    // refused, not overflow while building the key list.
    let dir = tempfile::tempdir().unwrap();
    let header = r#"{"encoder.down_blocks.0.resnets.0.conv1.weight":{"dtype":"F32","shape":[4611686018427387904,0,3,3],"data_offsets":[0,0]},
        "encoder.conv_in.weight":{"dtype":"F32","shape":[0,3,3,3],"data_offsets":[0,0]},
        "decoder.up_blocks.0.resnets.0.conv2.weight":{"dtype":"F32","shape":[0,0,3,3],"data_offsets":[0,0]},
        "decoder.conv_out.weight":{"dtype":"F32","shape":[3,0,3,3],"data_offsets":[0,0]},
        "decoder.conv_in.weight":{"dtype":"F32","shape":[0,9223372036854775807,3,3],"data_offsets":[0,0]}}"#;
    let path = write_header(dir.path(), "vae.safetensors", header, 0);
    let err = veetance_models::Vae::load(&path, DType::F32, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("implausible") || err.contains("not a diffusers"),
        "{err}"
    );
}

#[test]
fn comfyui_prefixed_single_file_loads() {
    let source =
        Weights::from_file(&fixtures().join("tiny-klein-bfl/flux-2-tiny.safetensors")).unwrap();
    let prefixed: HashMap<String, Tensor> = source
        .names()
        .into_iter()
        .map(|n| {
            (
                format!("model.diffusion_model.{n}"),
                source.get(n, DType::F32, &Device::Cpu).unwrap(),
            )
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flux-2-klein-comfy.safetensors");
    candle_core::safetensors::save(&prefixed, &path).unwrap();
    let model = Flux2Transformer::load(&path, DType::F32, &Device::Cpu, QuantMode::Exact).unwrap();
    let plain = Flux2Transformer::load(
        &fixtures().join("tiny-klein-bfl/flux-2-tiny.safetensors"),
        DType::F32,
        &Device::Cpu,
        QuantMode::Exact,
    )
    .unwrap();
    let diff = common::max_abs_diff(&forward(&model), &forward(&plain)).unwrap();
    assert_eq!(diff, 0.0);
}
