//! The Qwen3 encoder's tensors and where each checkpoint layout keeps them.
//!
//! Internal names are Hugging Face's without the `model.` prefix (`layers.3.self_attn.q_proj.weight`).
//! Layouts: transformers' `Qwen3ForCausalLM` (`model.`-prefixed, what diffusers directories and
//! ComfyUI's `text_encoders/` files hold), a bare `Qwen3Model`, and llama.cpp's GGUF names
//! (`blk.3.attn_q.weight`; llama.cpp keeps Qwen's rotate-half RoPE, so no q/k permutation is
//! undone, as ComfyUI-GGUF and stable-diffusion.cpp agree).

use super::config::Qwen3Config;
use crate::weights::{KeyTable, Source, Weights};

/// How a checkpoint names the encoder's tensors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Qwen3Layout {
    /// Hugging Face names under a prefix (`model.` for `Qwen3ForCausalLM`, empty for `Qwen3Model`).
    HuggingFace(String),
    /// llama.cpp GGUF names.
    LlamaCpp,
}

/// Detects the layout of text-encoder weights.
pub fn detect_layout(weights: &Weights) -> Qwen3Layout {
    if weights.contains("token_embd.weight") {
        Qwen3Layout::LlamaCpp
    } else if weights.contains("model.embed_tokens.weight") {
        Qwen3Layout::HuggingFace("model.".into())
    } else {
        Qwen3Layout::HuggingFace(String::new())
    }
}

/// The llama.cpp name of a per-layer tensor (internal name after `layers.{i}.`).
fn llama_cpp_layer_name(internal: &str) -> &'static str {
    match internal {
        "input_layernorm.weight" => "attn_norm.weight",
        "post_attention_layernorm.weight" => "ffn_norm.weight",
        "self_attn.q_proj.weight" => "attn_q.weight",
        "self_attn.k_proj.weight" => "attn_k.weight",
        "self_attn.v_proj.weight" => "attn_v.weight",
        "self_attn.o_proj.weight" => "attn_output.weight",
        "self_attn.q_norm.weight" => "attn_q_norm.weight",
        "self_attn.k_norm.weight" => "attn_k_norm.weight",
        "mlp.gate_proj.weight" => "ffn_gate.weight",
        "mlp.up_proj.weight" => "ffn_up.weight",
        _ => "ffn_down.weight",
    }
}

/// The tensors of an encoder running `n_run` layers (and the final norm if `final_norm`), with
/// their internal names and shapes, in `layout`.
pub fn table(cfg: &Qwen3Config, n_run: usize, final_norm: bool, layout: &Qwen3Layout) -> KeyTable {
    let h = cfg.hidden_size;
    let hd = cfg.head_dim();
    let q_dim = cfg.num_attention_heads * hd;
    let kv_dim = cfg.kv_heads() * hd;
    let f = cfg.intermediate_size;
    let stored = |internal: &str| -> String {
        match layout {
            Qwen3Layout::HuggingFace(prefix) => format!("{prefix}{internal}"),
            Qwen3Layout::LlamaCpp => {
                if internal == "embed_tokens.weight" {
                    return "token_embd.weight".into();
                }
                if internal == "norm.weight" {
                    return "output_norm.weight".into();
                }
                let rest = internal.strip_prefix("layers.").unwrap_or(internal);
                let (idx, name) = rest.split_once('.').unwrap_or((rest, ""));
                format!("blk.{idx}.{}", llama_cpp_layer_name(name))
            }
        }
    };
    let mut t = KeyTable::new();
    let mut add = |internal: String, shape: &[usize]| {
        let source = Source::Name(stored(&internal));
        t.insert(internal, shape, source);
    };
    add("embed_tokens.weight".into(), &[cfg.vocab_size, h]);
    for i in 0..n_run {
        let p = format!("layers.{i}.");
        add(format!("{p}input_layernorm.weight"), &[h]);
        add(format!("{p}post_attention_layernorm.weight"), &[h]);
        add(format!("{p}self_attn.q_proj.weight"), &[q_dim, h]);
        add(format!("{p}self_attn.k_proj.weight"), &[kv_dim, h]);
        add(format!("{p}self_attn.v_proj.weight"), &[kv_dim, h]);
        add(format!("{p}self_attn.o_proj.weight"), &[h, q_dim]);
        add(format!("{p}self_attn.q_norm.weight"), &[hd]);
        add(format!("{p}self_attn.k_norm.weight"), &[hd]);
        add(format!("{p}mlp.gate_proj.weight"), &[f, h]);
        add(format!("{p}mlp.up_proj.weight"), &[f, h]);
        add(format!("{p}mlp.down_proj.weight"), &[h, f]);
    }
    if final_norm {
        add("norm.weight".into(), &[h]);
    }
    t
}

/// Whether a stored tensor is a legitimately unused part of the encoder: layers after the last one
/// read, the final norm, the LM head.
pub fn is_unused_part(stored: &str, n_run: usize, layout: &Qwen3Layout) -> bool {
    let (layer_prefix, final_norm, head) = match layout {
        Qwen3Layout::HuggingFace(prefix) => (
            format!("{prefix}layers."),
            format!("{prefix}norm.weight"),
            vec![
                "lm_head.weight".to_string(),
                format!("{prefix}lm_head.weight"),
            ],
        ),
        Qwen3Layout::LlamaCpp => (
            "blk.".to_string(),
            "output_norm.weight".to_string(),
            vec!["output.weight".to_string()],
        ),
    };
    stored == final_norm
        || head.iter().any(|h| h == stored)
        || stored
            .strip_prefix(&layer_prefix)
            .and_then(|rest| rest.split('.').next())
            .and_then(|i| i.parse::<usize>().ok())
            .is_some_and(|i| i >= n_run)
}
