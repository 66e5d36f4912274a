//! The FLUX.2 transformer's tensors and where each checkpoint layout keeps them.
//!
//! The internal layout is BFL's original one (fused q/k/v, `final_layer.adaLN_modulation.1` rows
//! ordered shift, scale), because one fused GEMM is faster than three and BFL's single files (and
//! every GGUF and FP8 release, which derive from them) are what most people have. diffusers
//! checkpoints map onto it: `to_q`/`to_k`/`to_v` rows joined, `norm_out.linear` halves swapped
//! (diffusers orders them scale, shift), the rest renamed — the inverse of diffusers'
//! `convert_flux2_transformer_checkpoint_to_diffusers`.

use super::config::Flux2Config;
use crate::weights::{KeyTable, Source, Weights};

/// Which key layout a checkpoint uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckpointLayout {
    /// diffusers `Flux2Transformer2DModel` names.
    Diffusers,
    /// Original BFL `flux2` names (fused qkv), as ComfyUI, GGUF and FP8 files use them.
    Bfl,
}

/// Detects the key layout of a transformer checkpoint.
pub fn detect_layout(weights: &Weights) -> CheckpointLayout {
    if weights.contains("img_in.weight")
        || weights
            .names()
            .iter()
            .any(|n| n.starts_with("double_blocks."))
    {
        CheckpointLayout::Bfl
    } else {
        CheckpointLayout::Diffusers
    }
}

/// The suffix of BFL's QK-norm scales: `.scale` in BFL's files, `.weight` in some re-packs
/// (ComfyUI and stable-diffusion.cpp accept both).
pub fn bfl_norm_suffix(weights: &Weights) -> &'static str {
    let weight_named = weights
        .names()
        .iter()
        .any(|n| n.ends_with("query_norm.weight"));
    if weight_named { "weight" } else { "scale" }
}

/// The internal tensors, each with its shape, stored under the same names (BFL layout with
/// `norm_suffix` for the QK-norm scales).
fn bfl_table(cfg: &Flux2Config, norm_suffix: &str) -> KeyTable {
    let d = cfg.hidden_size();
    let f = cfg.mlp_hidden();
    let hd = cfg.attention_head_dim;
    let mut t = KeyTable::new();
    t.same("img_in.weight", &[d, cfg.in_channels]);
    t.same("txt_in.weight", &[d, cfg.joint_attention_dim]);
    t.same(
        "time_in.in_layer.weight",
        &[d, cfg.timestep_guidance_channels],
    );
    t.same("time_in.out_layer.weight", &[d, d]);
    if cfg.guidance_embeds {
        t.same(
            "guidance_in.in_layer.weight",
            &[d, cfg.timestep_guidance_channels],
        );
        t.same("guidance_in.out_layer.weight", &[d, d]);
    }
    t.same("double_stream_modulation_img.lin.weight", &[6 * d, d]);
    t.same("double_stream_modulation_txt.lin.weight", &[6 * d, d]);
    t.same("single_stream_modulation.lin.weight", &[3 * d, d]);
    t.same("final_layer.adaLN_modulation.1.weight", &[2 * d, d]);
    t.same("final_layer.linear.weight", &[cfg.out_channels(), d]);
    for i in 0..cfg.num_layers {
        for s in ["img", "txt"] {
            let p = format!("double_blocks.{i}.{s}_");
            t.same(format!("{p}attn.qkv.weight"), &[3 * d, d]);
            t.same(format!("{p}attn.proj.weight"), &[d, d]);
            t.same(format!("{p}mlp.0.weight"), &[2 * f, d]);
            t.same(format!("{p}mlp.2.weight"), &[d, f]);
        }
    }
    for i in 0..cfg.num_layers {
        for s in ["img", "txt"] {
            let p = format!("double_blocks.{i}.{s}_");
            for norm in ["query_norm", "key_norm"] {
                t.insert(
                    format!("{p}attn.norm.{norm}.scale"),
                    &[hd],
                    Source::Name(format!("{p}attn.norm.{norm}.{norm_suffix}")),
                );
            }
        }
    }
    for i in 0..cfg.num_single_layers {
        let p = format!("single_blocks.{i}.");
        t.same(format!("{p}linear1.weight"), &[3 * d + 2 * f, d]);
        t.same(format!("{p}linear2.weight"), &[d, d + f]);
    }
    for i in 0..cfg.num_single_layers {
        let p = format!("single_blocks.{i}.");
        for norm in ["query_norm", "key_norm"] {
            t.insert(
                format!("{p}norm.{norm}.scale"),
                &[hd],
                Source::Name(format!("{p}norm.{norm}.{norm_suffix}")),
            );
        }
    }
    t
}

/// The internal tensors with random-initialisable shapes (no checkpoint).
pub fn internal_table(cfg: &Flux2Config) -> KeyTable {
    bfl_table(cfg, "scale")
}

/// Where a diffusers `Flux2Transformer2DModel` checkpoint keeps each internal tensor.
fn diffusers_table(cfg: &Flux2Config) -> KeyTable {
    let d = cfg.hidden_size();
    let f = cfg.mlp_hidden();
    let hd = cfg.attention_head_dim;
    let mut t = KeyTable::new();
    let mut renamed = |internal: String, shape: &[usize], stored: String| {
        t.insert(internal, shape, Source::Name(stored));
    };
    let w = |name: &str| format!("{name}.weight");
    renamed(w("img_in"), &[d, cfg.in_channels], w("x_embedder"));
    renamed(
        w("txt_in"),
        &[d, cfg.joint_attention_dim],
        w("context_embedder"),
    );
    renamed(
        w("time_in.in_layer"),
        &[d, cfg.timestep_guidance_channels],
        w("time_guidance_embed.timestep_embedder.linear_1"),
    );
    renamed(
        w("time_in.out_layer"),
        &[d, d],
        w("time_guidance_embed.timestep_embedder.linear_2"),
    );
    if cfg.guidance_embeds {
        renamed(
            w("guidance_in.in_layer"),
            &[d, cfg.timestep_guidance_channels],
            w("time_guidance_embed.guidance_embedder.linear_1"),
        );
        renamed(
            w("guidance_in.out_layer"),
            &[d, d],
            w("time_guidance_embed.guidance_embedder.linear_2"),
        );
    }
    for s in ["img", "txt"] {
        renamed(
            w(&format!("double_stream_modulation_{s}.lin")),
            &[6 * d, d],
            w(&format!("double_stream_modulation_{s}.linear")),
        );
    }
    renamed(
        w("single_stream_modulation.lin"),
        &[3 * d, d],
        w("single_stream_modulation.linear"),
    );
    renamed(
        w("final_layer.linear"),
        &[cfg.out_channels(), d],
        w("proj_out"),
    );
    for i in 0..cfg.num_layers {
        let blk = format!("transformer_blocks.{i}.");
        for (s, q, k, v, out, norm_q, norm_k, ff) in [
            (
                "img", "to_q", "to_k", "to_v", "to_out.0", "norm_q", "norm_k", "ff",
            ),
            (
                "txt",
                "add_q_proj",
                "add_k_proj",
                "add_v_proj",
                "to_add_out",
                "norm_added_q",
                "norm_added_k",
                "ff_context",
            ),
        ] {
            let p = format!("double_blocks.{i}.{s}_");
            t.insert(
                format!("{p}attn.qkv.weight"),
                &[3 * d, d],
                Source::Rows(
                    [q, k, v]
                        .iter()
                        .map(|n| format!("{blk}attn.{n}.weight"))
                        .collect(),
                ),
            );
            let mut renamed = |internal: String, shape: &[usize], stored: String| {
                t.insert(internal, shape, Source::Name(stored));
            };
            renamed(
                format!("{p}attn.proj.weight"),
                &[d, d],
                format!("{blk}attn.{out}.weight"),
            );
            renamed(
                format!("{p}mlp.0.weight"),
                &[2 * f, d],
                format!("{blk}{ff}.linear_in.weight"),
            );
            renamed(
                format!("{p}mlp.2.weight"),
                &[d, f],
                format!("{blk}{ff}.linear_out.weight"),
            );
            renamed(
                format!("{p}attn.norm.query_norm.scale"),
                &[hd],
                format!("{blk}attn.{norm_q}.weight"),
            );
            renamed(
                format!("{p}attn.norm.key_norm.scale"),
                &[hd],
                format!("{blk}attn.{norm_k}.weight"),
            );
        }
    }
    for i in 0..cfg.num_single_layers {
        let p = format!("single_blocks.{i}.");
        let blk = format!("single_transformer_blocks.{i}.attn.");
        let mut renamed = |internal: String, shape: &[usize], stored: String| {
            t.insert(internal, shape, Source::Name(stored));
        };
        renamed(
            format!("{p}linear1.weight"),
            &[3 * d + 2 * f, d],
            format!("{blk}to_qkv_mlp_proj.weight"),
        );
        renamed(
            format!("{p}linear2.weight"),
            &[d, d + f],
            format!("{blk}to_out.weight"),
        );
        renamed(
            format!("{p}norm.query_norm.scale"),
            &[hd],
            format!("{blk}norm_q.weight"),
        );
        renamed(
            format!("{p}norm.key_norm.scale"),
            &[hd],
            format!("{blk}norm_k.weight"),
        );
    }
    // diffusers orders the final modulation (scale, shift); internally it is (shift, scale).
    t.insert(
        "final_layer.adaLN_modulation.1.weight",
        &[2 * d, d],
        Source::SwapHalves("norm_out.linear.weight".into()),
    );
    t
}

/// The key table for a checkpoint in `layout` (the norm suffix is read from `weights` for BFL).
pub fn table_for(
    cfg: &Flux2Config,
    layout: CheckpointLayout,
    weights: Option<&Weights>,
) -> KeyTable {
    match layout {
        CheckpointLayout::Diffusers => diffusers_table(cfg),
        CheckpointLayout::Bfl => bfl_table(cfg, weights.map_or("scale", bfl_norm_suffix)),
    }
}
