//! The VAE's tensors and where each checkpoint layout keeps them.
//!
//! Internal names are diffusers' (`AutoencoderKLFlux2`). BFL's `ae.safetensors` (and ComfyUI's
//! `flux2-vae.safetensors`) use the original LDM names: `down.{i}.block.{j}`, `mid.block_1`,
//! `mid.attn_1.{q,k,v,proj_out}` as 1×1 convolutions, `norm_out`, the quant convolutions inside
//! `encoder.`/`decoder.`, and decoder levels numbered by resolution (diffusers' `up_blocks.k` is
//! BFL's `up.(n−1−k)`) — the inverse of diffusers' `convert_flux2_vae_checkpoint_to_diffusers`.

use super::config::VaeConfig;
use crate::weights::{KeyTable, Source, TensorSpec, Weights};

/// How a checkpoint names the VAE's tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VaeLayout {
    /// diffusers names.
    Diffusers,
    /// BFL's original (LDM) names.
    Bfl,
}

/// Detects the layout of VAE weights.
pub fn detect_layout(weights: &Weights) -> VaeLayout {
    if weights.contains("encoder.down.0.block.0.conv1.weight") {
        VaeLayout::Bfl
    } else {
        VaeLayout::Diffusers
    }
}

/// Every internal tensor (diffusers names), without `bn.num_batches_tracked`.
fn internal_specs(cfg: &VaeConfig) -> Vec<TensorSpec> {
    let mut s = Vec::new();
    let conv = |s: &mut Vec<TensorSpec>, name: &str, cout: usize, cin: usize, k: usize| {
        s.push(TensorSpec::new(
            format!("{name}.weight"),
            &[cout, cin, k, k],
        ));
        s.push(TensorSpec::new(format!("{name}.bias"), &[cout]));
    };
    let norm = |s: &mut Vec<TensorSpec>, name: &str, c: usize| {
        s.push(TensorSpec::new(format!("{name}.weight"), &[c]));
        s.push(TensorSpec::new(format!("{name}.bias"), &[c]));
    };
    let resnet = |s: &mut Vec<TensorSpec>, p: &str, cin: usize, cout: usize| {
        norm(s, &format!("{p}.norm1"), cin);
        conv(s, &format!("{p}.conv1"), cout, cin, 3);
        norm(s, &format!("{p}.norm2"), cout);
        conv(s, &format!("{p}.conv2"), cout, cout, 3);
        if cin != cout {
            conv(s, &format!("{p}.conv_shortcut"), cout, cin, 1);
        }
    };
    let mid = |s: &mut Vec<TensorSpec>, p: &str, c: usize, attention: bool| {
        resnet(s, &format!("{p}.resnets.0"), c, c);
        if attention {
            norm(s, &format!("{p}.attentions.0.group_norm"), c);
            for l in ["to_q", "to_k", "to_v", "to_out.0"] {
                s.push(TensorSpec::new(
                    format!("{p}.attentions.0.{l}.weight"),
                    &[c, c],
                ));
                s.push(TensorSpec::new(format!("{p}.attentions.0.{l}.bias"), &[c]));
            }
        }
        resnet(s, &format!("{p}.resnets.1"), c, c);
    };
    let enc = &cfg.block_out_channels;
    let (Some(&enc_first), Some(&enc_last)) = (enc.first(), enc.last()) else {
        return s;
    };
    conv(&mut s, "encoder.conv_in", enc_first, cfg.in_channels, 3);
    let mut cin = enc_first;
    for (i, &cout) in enc.iter().enumerate() {
        for j in 0..cfg.layers_per_block {
            resnet(
                &mut s,
                &format!("encoder.down_blocks.{i}.resnets.{j}"),
                if j == 0 { cin } else { cout },
                cout,
            );
        }
        if i + 1 < enc.len() {
            conv(
                &mut s,
                &format!("encoder.down_blocks.{i}.downsamplers.0.conv"),
                cout,
                cout,
                3,
            );
        }
        cin = cout;
    }
    mid(
        &mut s,
        "encoder.mid_block",
        enc_last,
        cfg.mid_block_add_attention,
    );
    norm(&mut s, "encoder.conv_norm_out", enc_last);
    conv(
        &mut s,
        "encoder.conv_out",
        2 * cfg.latent_channels,
        enc_last,
        3,
    );
    if cfg.use_quant_conv {
        conv(
            &mut s,
            "quant_conv",
            2 * cfg.latent_channels,
            2 * cfg.latent_channels,
            1,
        );
    }
    if cfg.use_post_quant_conv {
        conv(
            &mut s,
            "post_quant_conv",
            cfg.latent_channels,
            cfg.latent_channels,
            1,
        );
    }
    let dec = cfg.decoder_channels();
    let (Some(&dec_first), Some(&dec_last)) = (dec.first(), dec.last()) else {
        return s;
    };
    conv(&mut s, "decoder.conv_in", dec_last, cfg.latent_channels, 3);
    mid(
        &mut s,
        "decoder.mid_block",
        dec_last,
        cfg.mid_block_add_attention,
    );
    let mut prev = dec_last;
    for (i, &cout) in dec.iter().rev().enumerate() {
        for j in 0..=cfg.layers_per_block {
            resnet(
                &mut s,
                &format!("decoder.up_blocks.{i}.resnets.{j}"),
                if j == 0 { prev } else { cout },
                cout,
            );
        }
        if i + 1 < dec.len() {
            conv(
                &mut s,
                &format!("decoder.up_blocks.{i}.upsamplers.0.conv"),
                cout,
                cout,
                3,
            );
        }
        prev = cout;
    }
    norm(&mut s, "decoder.conv_norm_out", dec_first);
    conv(&mut s, "decoder.conv_out", cfg.out_channels, dec_first, 3);
    let bn = cfg.latent_channels * cfg.patch_size.iter().product::<usize>();
    s.push(TensorSpec::new("bn.running_mean", &[bn]));
    s.push(TensorSpec::new("bn.running_var", &[bn]));
    s
}

/// BFL's name for an internal (diffusers) name, for a VAE of `n_levels` levels.
pub(crate) fn bfl_name(internal: &str, n_levels: usize) -> String {
    if let Some(rest) = internal.strip_prefix("quant_conv.") {
        return format!("encoder.quant_conv.{rest}");
    }
    if let Some(rest) = internal.strip_prefix("post_quant_conv.") {
        return format!("decoder.post_quant_conv.{rest}");
    }
    let Some((part, rest)) = internal.split_once('.') else {
        return internal.to_string();
    };
    if part != "encoder" && part != "decoder" {
        return internal.to_string();
    }
    let parts: Vec<&str> = rest.split('.').collect();
    let tail = |from: usize| parts.get(from..).map(|p| p.join(".")).unwrap_or_default();
    let resnet_tail = |from: usize| tail(from).replace("conv_shortcut", "nin_shortcut");
    let mapped = match parts.as_slice() {
        ["conv_norm_out", ..] => format!("norm_out.{}", tail(1)),
        ["down_blocks", i, "resnets", j, ..] => format!("down.{i}.block.{j}.{}", resnet_tail(4)),
        ["down_blocks", i, "downsamplers", "0", ..] => format!("down.{i}.downsample.{}", tail(4)),
        ["up_blocks", k, "resnets", j, ..] => {
            let level = n_levels.saturating_sub(1 + k.parse::<usize>().unwrap_or(0));
            format!("up.{level}.block.{j}.{}", resnet_tail(4))
        }
        ["up_blocks", k, "upsamplers", "0", ..] => {
            let level = n_levels.saturating_sub(1 + k.parse::<usize>().unwrap_or(0));
            format!("up.{level}.upsample.{}", tail(4))
        }
        ["mid_block", "resnets", r, ..] => {
            let block = if *r == "0" { 1 } else { 2 };
            format!("mid.block_{block}.{}", resnet_tail(3))
        }
        ["mid_block", "attentions", "0", "group_norm", ..] => {
            format!("mid.attn_1.norm.{}", tail(4))
        }
        ["mid_block", "attentions", "0", "to_out", "0", ..] => {
            format!("mid.attn_1.proj_out.{}", tail(5))
        }
        ["mid_block", "attentions", "0", proj, ..] => {
            format!("mid.attn_1.{}.{}", proj.trim_start_matches("to_"), tail(4))
        }
        _ => rest.to_string(),
    };
    format!("{part}.{mapped}")
}

/// The key table of a VAE in `layout`.
pub fn table(cfg: &VaeConfig, layout: VaeLayout) -> KeyTable {
    let n_levels = cfg.block_out_channels.len();
    let mut t = KeyTable::new();
    for spec in internal_specs(cfg) {
        let source = match layout {
            VaeLayout::Diffusers => Source::Name(spec.name.clone()),
            VaeLayout::Bfl => {
                let stored = bfl_name(&spec.name, n_levels);
                // BFL's mid-block attention projections are 1×1 convolutions.
                if spec.name.contains(".attentions.0.")
                    && spec.name.ends_with(".weight")
                    && spec.shape.len() == 2
                {
                    let mut conv = spec.shape.clone();
                    conv.extend([1, 1]);
                    Source::Reshaped(stored, conv)
                } else {
                    Source::Name(stored)
                }
            }
        };
        t.insert(spec.name, &spec.shape, source);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bfl_names_follow_diffusers_conversion_script() {
        let cases = [
            (
                "encoder.down_blocks.1.resnets.0.conv_shortcut.weight",
                "encoder.down.1.block.0.nin_shortcut.weight",
            ),
            (
                "encoder.down_blocks.2.downsamplers.0.conv.bias",
                "encoder.down.2.downsample.conv.bias",
            ),
            (
                "decoder.up_blocks.0.resnets.2.norm1.weight",
                "decoder.up.3.block.2.norm1.weight",
            ),
            (
                "decoder.up_blocks.2.upsamplers.0.conv.weight",
                "decoder.up.1.upsample.conv.weight",
            ),
            (
                "encoder.mid_block.resnets.1.conv2.weight",
                "encoder.mid.block_2.conv2.weight",
            ),
            (
                "decoder.mid_block.attentions.0.to_q.weight",
                "decoder.mid.attn_1.q.weight",
            ),
            (
                "decoder.mid_block.attentions.0.to_out.0.bias",
                "decoder.mid.attn_1.proj_out.bias",
            ),
            (
                "decoder.mid_block.attentions.0.group_norm.weight",
                "decoder.mid.attn_1.norm.weight",
            ),
            ("encoder.conv_norm_out.weight", "encoder.norm_out.weight"),
            ("quant_conv.weight", "encoder.quant_conv.weight"),
            ("post_quant_conv.bias", "decoder.post_quant_conv.bias"),
            ("bn.running_mean", "bn.running_mean"),
            ("decoder.conv_in.weight", "decoder.conv_in.weight"),
        ];
        for (internal, bfl) in cases {
            assert_eq!(bfl_name(internal, 4), bfl, "{internal}");
        }
    }
}
