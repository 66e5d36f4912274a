//! Qwen3 (Alibaba Qwen team, 2025) as FLUX.2 \[klein\]'s text encoder: the chat template, the
//! tokenizer, and the decoder's hidden states of a few layers.
//!
//! - Reference: diffusers `Flux2KleinPipeline._get_qwen3_prompt_embeds` (0.42.1) and transformers'
//!   `Qwen3Model` (5.x); BFL's `Qwen3Embedder`.
//! - Weights: the `text_encoder/` of `black-forest-labs/FLUX.2-klein-4B` (Qwen3-4B) or `-9B`
//!   (Qwen3-8B); ComfyUI's `text_encoders/qwen_3_4b.safetensors`; llama.cpp GGUF files of Qwen3.
//!
//! The pipeline: render the chat template for one user message (`add_generation_prompt=True`,
//! `enable_thinking=False`) ([`template`]), tokenize, truncate and right-pad to 512 tokens
//! ([`tokenizer`]), run the decoder with a causal + key-padding mask and concatenate the hidden
//! states of layers 9, 18 and 27 ([`encoder`]); [`text_encoder::TextEncoder`] does all three.
//! [`config`] holds the hyper-parameters and [`keys`] the checkpoint layouts.

pub mod config;
pub mod encoder;
pub mod keys;
pub mod template;
pub mod text_encoder;
pub mod tokenizer;

pub use config::Qwen3Config;
pub use encoder::{KLEIN_OUT_LAYERS, Qwen3Encoder, qwen3_tensor_specs};
pub use template::{ChatMessage, ChatTemplate, IsolatedRenderer, RenderJob, isolate_renders};
pub use text_encoder::{MAX_TEXT_TOKENS, TextEncoder};
pub use tokenizer::{PromptTokenizer, TokenizerFiles};
