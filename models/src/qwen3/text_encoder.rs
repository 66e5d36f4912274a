//! Template + tokenizer + Qwen3 encoder: prompts in, conditioning `[B, L, n·hidden]` out.

use std::path::Path;

use candle_core::{DType, Device, Tensor};

use super::config::Qwen3Config;
use super::encoder::Qwen3Encoder;
use super::template::ChatTemplate;
use super::tokenizer::{PromptTokenizer, TokenizerFiles};
use crate::error::{ModelError, Result};
use crate::weights::QuantMode;

/// Padded prompt length used by FLUX.2 \[klein\] (diffusers' `max_sequence_length` default).
pub const MAX_TEXT_TOKENS: usize = 512;

/// Template + tokenizer + Qwen3: prompts in, conditioning `[B, 512, n·hidden]` out.
#[derive(Debug, Clone)]
pub struct TextEncoder {
    /// `None` for a random encoder ([`TextEncoder::random`]), which only takes token ids.
    prompting: Option<Prompting>,
    encoder: Qwen3Encoder,
    max_len: usize,
}

/// What turns a prompt into token ids.
#[derive(Debug, Clone)]
struct Prompting {
    template: ChatTemplate,
    tokenizer: PromptTokenizer,
}

impl TextEncoder {
    /// Loads a text encoder (a `text_encoder/` directory, or a single safetensors or GGUF file)
    /// with the tokenizer and chat template of `tokenizer` (a checkpoint's `tokenizer/` folder,
    /// or [`TokenizerFiles::bundled_qwen3`] for single files).
    pub fn load(
        tokenizer: &TokenizerFiles,
        text_encoder: &Path,
        out_layers: &[usize],
        dtype: DType,
        device: &Device,
        quant: QuantMode,
    ) -> Result<Self> {
        Ok(Self {
            prompting: Some(Prompting {
                template: ChatTemplate::from_files(tokenizer)?,
                tokenizer: PromptTokenizer::from_files(tokenizer)?,
            }),
            encoder: Qwen3Encoder::load(text_encoder, out_layers, dtype, device, quant)?,
            max_len: MAX_TEXT_TOKENS,
        })
    }

    /// A text encoder from tokenizer files and a loaded encoder.
    pub fn from_parts(tokenizer: &TokenizerFiles, encoder: Qwen3Encoder) -> Result<Self> {
        Ok(Self {
            prompting: Some(Prompting {
                template: ChatTemplate::from_files(tokenizer)?,
                tokenizer: PromptTokenizer::from_files(tokenizer)?,
            }),
            encoder,
            max_len: MAX_TEXT_TOKENS,
        })
    }

    /// An encoder with random weights and no tokenizer ([`Qwen3Encoder::random`]), for speed
    /// measurements: feed it token ids with [`TextEncoder::encode_ids`]; [`TextEncoder::encode`]
    /// refuses prompts.
    pub fn random(
        cfg: Qwen3Config,
        out_layers: &[usize],
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        Ok(Self {
            prompting: None,
            encoder: Qwen3Encoder::random(cfg, out_layers, dtype, device)?,
            max_len: MAX_TEXT_TOKENS,
        })
    }

    /// The same encoder padding/truncating prompts to `max_tokens` instead of 512 (diffusers'
    /// `max_sequence_length`). The transformer accepts any length; klein was trained with 512.
    pub fn with_max_tokens(mut self, max_tokens: usize) -> Self {
        self.max_len = max_tokens.max(1);
        self
    }

    /// Prompt length after padding.
    pub fn max_tokens(&self) -> usize {
        self.max_len
    }

    /// The Qwen3 part.
    pub fn encoder(&self) -> &Qwen3Encoder {
        &self.encoder
    }

    /// The same text encoder with its weights on `device` (tokenizer and template shared).
    pub fn to_device(&self, device: &Device) -> Result<Self> {
        Ok(Self {
            encoder: self.encoder.to_device(device)?,
            ..self.clone()
        })
    }

    /// The same text encoder placed on `gpu` with at most `resident_layer_bytes` of its layers
    /// resident and the rest streamed ([`Qwen3Encoder::placed`]).
    pub fn placed(&self, gpu: &Device, resident_layer_bytes: u64) -> Result<Self> {
        Ok(Self {
            encoder: self.encoder.placed(gpu, resident_layer_bytes)?,
            ..self.clone()
        })
    }

    /// The same text encoder with its RAM page-locked for copies to `gpu`
    /// ([`Qwen3Encoder::pinned_for`]).
    pub fn pinned_for(&self, gpu: &Device) -> Self {
        Self {
            encoder: self.encoder.pinned_for(gpu),
            ..self.clone()
        }
    }

    /// Chat-templated, padded token ids and masks for each prompt: `([B, L] u32, [B, L] u32)`.
    pub fn tokenize(&self, prompts: &[&str]) -> Result<(Tensor, Tensor)> {
        let Some(Prompting {
            template,
            tokenizer,
        }) = &self.prompting
        else {
            return Err(ModelError::Tokenizer {
                reason: "this text encoder has random weights and no tokenizer; pass token ids to encode_ids".into(),
            });
        };
        let mut all_ids = Vec::with_capacity(prompts.len() * self.max_len);
        let mut all_mask = Vec::with_capacity(prompts.len() * self.max_len);
        for prompt in prompts {
            let text = template.render_user_prompt(prompt)?;
            let (ids, mask) = tokenizer.encode_padded(&text, self.max_len)?;
            all_ids.extend(ids);
            all_mask.extend(mask);
        }
        let device = &self.encoder.device;
        let shape = (prompts.len(), self.max_len);
        Ok((
            Tensor::from_vec(all_ids, shape, device)?,
            Tensor::from_vec(all_mask, shape, device)?,
        ))
    }

    /// Encodes prompts into conditioning `[B, 512, n·hidden]` in the encoder dtype.
    pub fn encode(&self, prompts: &[&str]) -> Result<Tensor> {
        if prompts.is_empty() {
            return Err(ModelError::InvalidArgument("no prompts to encode".into()));
        }
        let (ids, mask) = self.tokenize(prompts)?;
        self.encode_ids(&ids, &mask)
    }

    /// Encodes token ids that are already chat-templated and padded: `ids` `[B, L]` u32 (each
    /// below the vocabulary size), `attention_mask` `[B, L]` with 1 for real tokens and 0 for
    /// padding. Returns what [`TextEncoder::encode`] returns for the same ids: `[B, L, n·hidden]`
    /// in the encoder dtype.
    pub fn encode_ids(&self, ids: &Tensor, attention_mask: &Tensor) -> Result<Tensor> {
        if ids.dims().len() != 2 || ids.dims() != attention_mask.dims() {
            return Err(ModelError::InvalidArgument(format!(
                "token ids {:?} and attention mask {:?} must both be [B, L]",
                ids.dims(),
                attention_mask.dims()
            )));
        }
        let out = self.encoder.forward(ids, attention_mask)?;
        Ok(out.to_dtype(self.encoder.dtype)?)
    }
}
