//! The checkpoint's chat template, rendered with minijinja as transformers renders it.
//!
//! diffusers' klein pipeline renders one user message with `add_generation_prompt=True,
//! enable_thinking=False` (transformers' `apply_chat_template(tokenize=False)`), which for Qwen3's
//! template gives `<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n`.

use std::path::Path;

use super::tokenizer::TokenizerFiles;
use crate::error::{ModelError, Result};

/// Instructions a template may execute per rendering. Qwen3's template renders a one-message
/// conversation in a few thousand; a million is far above any real template.
const TEMPLATE_FUEL: u64 = 1_000_000;

/// One chat message for [`ChatTemplate::render`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The text.
    pub content: String,
}

/// The checkpoint's chat template rendered with minijinja.
#[derive(Debug, Clone)]
pub struct ChatTemplate {
    source: String,
    bos_token: Option<String>,
    eos_token: Option<String>,
}

pub(crate) fn token_string(value: Option<&serde_json::Value>) -> Option<String> {
    match value? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Object(o) => o
            .get("content")
            .and_then(|c| c.as_str())
            .map(str::to_string),
        _ => None,
    }
}

impl ChatTemplate {
    /// Reads the template from a tokenizer directory with transformers' priority:
    /// `chat_template.jinja` (what transformers ≥ 4.47 writes), then `tokenizer_config.json`'s
    /// `chat_template` (a string, or a list of named templates of which `default` is used), then a
    /// processor-style `chat_template.json`.
    pub fn load(tokenizer_dir: &Path) -> Result<Self> {
        Self::from_files(&TokenizerFiles::from_dir(tokenizer_dir)?)
    }

    /// The template of a set of tokenizer files.
    pub fn from_files(files: &TokenizerFiles) -> Result<Self> {
        let source = files.chat_template.clone().ok_or_else(|| ModelError::Config {
            path: files.origin.clone(),
            reason: "no chat template (no chat_template.jinja, tokenizer_config.json chat_template or chat_template.json)".into(),
        })?;
        Ok(Self {
            source,
            bos_token: token_string(files.config.get("bos_token")),
            eos_token: token_string(files.config.get("eos_token")),
        })
    }

    /// A template from source text (tests, custom pipelines).
    pub fn from_source(source: impl Into<String>) -> Self {
        Self {
            source: source.into(),
            bos_token: None,
            eos_token: None,
        }
    }

    /// Renders one user message with `add_generation_prompt=True, enable_thinking=False`, which is
    /// what the klein pipeline feeds the text encoder.
    pub fn render_user_prompt(&self, prompt: &str) -> Result<String> {
        self.render(
            &[ChatMessage {
                role: "user".into(),
                content: prompt.into(),
            }],
            true,
            false,
        )
    }

    /// Renders a conversation the way transformers' `apply_chat_template(tokenize=False)` does:
    /// through the renderer [`isolate_renders`] installed (the binary runs templates in a child
    /// process under memory and time limits), else in this process.
    pub fn render(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
        enable_thinking: bool,
    ) -> Result<String> {
        let job = RenderJob {
            source: self.source.clone(),
            bos_token: self.bos_token.clone(),
            eos_token: self.eos_token.clone(),
            messages: messages.to_vec(),
            add_generation_prompt,
            enable_thinking,
        };
        match ISOLATED.get() {
            Some(render) => render(&job).map_err(|reason| ModelError::Template { reason }),
            None => job.render_here(),
        }
    }
}

/// Renders a [`RenderJob`] somewhere else; `Err` is a reason for people.
pub type IsolatedRenderer = fn(&RenderJob) -> std::result::Result<String, String>;

static ISOLATED: std::sync::OnceLock<IsolatedRenderer> = std::sync::OnceLock::new();

/// Makes every [`ChatTemplate::render`] of this process go through `render` (set once, by the
/// binary). Fuel and the output bound limit a template's instructions and what it prints, but
/// not what one instruction allocates (string concatenation that doubles, filters over huge
/// lazy sequences): only another process, under memory and time limits, bounds that.
pub fn isolate_renders(render: IsolatedRenderer) {
    let _ = ISOLATED.set(render);
}

/// Everything one rendering needs, to hand to another process (as JSON).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub struct RenderJob {
    /// The template's source.
    pub source: String,
    /// `bos_token`, if the tokenizer has one.
    pub bos_token: Option<String>,
    /// `eos_token`, if the tokenizer has one.
    pub eos_token: Option<String>,
    /// The conversation.
    pub messages: Vec<ChatMessage>,
    /// transformers' `add_generation_prompt`.
    pub add_generation_prompt: bool,
    /// Qwen3's `enable_thinking`.
    pub enable_thinking: bool,
}

impl RenderJob {
    /// Renders in this process, under the fuel and output bounds.
    pub fn render_here(&self) -> Result<String> {
        let messages = &self.messages;
        let (add_generation_prompt, enable_thinking) =
            (self.add_generation_prompt, self.enable_thinking);
        let mut env = minijinja::Environment::new();
        // A template is checkpoint data: bound its work, so a hostile loop ends with an error
        // instead of running forever (each instruction costs one unit of fuel).
        env.set_fuel(Some(TEMPLATE_FUEL));
        // transformers compiles chat templates with these two options; without them the Qwen3
        // template's `{%- ... %}` lines leave stray newlines and indentation in the prompt.
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        // A value printed whole is formatted in one instruction whatever its size; refuse
        // sequences too long to be part of a prompt before they are iterated.
        env.set_formatter(|out, state, value| {
            let sequence = value.kind() != minijinja::value::ValueKind::String;
            if sequence && value.len().is_some_and(|len| len > TEMPLATE_PRINTED_ITEMS) {
                return Err(minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    format!(
                        "the template prints a sequence of more than {TEMPLATE_PRINTED_ITEMS} items"
                    ),
                ));
            }
            minijinja::escape_formatter(out, state, value)
        });
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |msg: String| -> std::result::Result<String, minijinja::Error> {
                Err(minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    msg,
                ))
            },
        );
        let template_error = |e: minijinja::Error| ModelError::Template {
            reason: format!("{e:#}"),
        };
        env.add_template("chat", &self.source)
            .map_err(template_error)?;
        let template = env.get_template("chat").map_err(template_error)?;
        let ctx = minijinja::context! {
            messages => messages.iter().map(|m| minijinja::context! { role => m.role, content => m.content }).collect::<Vec<_>>(),
            add_generation_prompt => add_generation_prompt,
            enable_thinking => enable_thinking,
            bos_token => self.bos_token.clone().unwrap_or_default(),
            eos_token => self.eos_token.clone().unwrap_or_default(),
        };
        // Fuel bounds instructions, not what one instruction writes: `{{ messages * 1000000000 }}`
        // is one instruction that prints a billion messages. The output goes through a writer
        // that refuses to grow past a bound instead.
        let content_bytes: usize = messages.iter().map(|m| m.content.len()).sum();
        let mut out = BoundedOutput {
            bytes: Vec::new(),
            limit: TEMPLATE_OUTPUT_BYTES + 4 * content_bytes,
        };
        match template.render_captured_to(ctx, &mut out) {
            Ok(_) => String::from_utf8(out.bytes).map_err(|e| ModelError::Template {
                reason: format!("the template wrote invalid UTF-8: {e}"),
            }),
            Err(_) if out.bytes.len() >= out.limit => Err(ModelError::Template {
                reason: format!(
                    "the template's output exceeds {} bytes; a chat template writes a prompt, not more",
                    out.limit
                ),
            }),
            Err(e) => Err(template_error(e)),
        }
    }
}

/// The longest sequence a template may print whole.
const TEMPLATE_PRINTED_ITEMS: usize = 100_000;

/// What a template may write besides four times the messages' text.
const TEMPLATE_OUTPUT_BYTES: usize = 1 << 20;

/// A `Vec` that refuses writes past `limit` bytes.
struct BoundedOutput {
    bytes: Vec<u8>,
    limit: usize,
}

impl std::io::Write for BoundedOutput {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.bytes.len() + buf.len() > self.limit {
            let room = self.limit.saturating_sub(self.bytes.len());
            self.bytes.extend(buf.iter().take(room));
            return Err(std::io::Error::other("template output limit"));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_template_that_prints_a_billion_messages_is_refused_without_exhausting_memory() {
        let bomb = ChatTemplate::from_source("{{ messages * 1000000000 }}");
        let err = bomb.render_user_prompt("a red circle").unwrap_err();
        assert!(err.to_string().contains("more than 100000 items"), "{err}");
        // Printed item by item, the output bound stops it.
        let looped = ChatTemplate::from_source(
            "{% for i in range(99999) %}{{ messages[0].content * 99999 }}{% endfor %}",
        );
        let err = looped.render_user_prompt("a red circle").unwrap_err();
        assert!(err.to_string().contains("output exceeds"), "{err}");
        // An ordinary template is unaffected, however long the prompt.
        let plain = ChatTemplate::from_source("<{{ messages[0].content }}>");
        let prompt = "a".repeat(3 << 20);
        let rendered = plain.render_user_prompt(&prompt).unwrap_or_default();
        assert_eq!(rendered.len(), prompt.len() + 2);
    }
}
