//! The bundled Qwen3 tokenizer against transformers on 300 prompts (`fixtures/check_qwen3_tokenizer.py`):
//! the chat template renders the same text, and tokenizing, truncating and padding to 512 gives the
//! same ids and mask, for ASCII, accented, CJK, Cyrillic, Arabic and emoji text, digits, whitespace
//! runs, special-token text inside a prompt, and prompts longer than 512 tokens.

mod common;

use anyhow::{Context as _, Result, ensure};
use veetance_models::qwen3::{ChatTemplate, PromptTokenizer, TokenizerFiles};

#[test]
fn bundled_qwen3_tokenizer_matches_transformers_on_real_prompts() -> Result<()> {
    let reference: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(
        common::fixtures().join("qwen3-tokenizer-reference.json"),
    )?)?;
    let files = TokenizerFiles::bundled_qwen3()?;
    let template = ChatTemplate::from_files(&files)?;
    let tokenizer = PromptTokenizer::from_files(&files)?;
    let pad_id = reference["pad_id"].as_u64().context("pad_id")? as u32;
    let max_len = reference["max_length"].as_u64().context("max_length")? as usize;
    let cases = reference["cases"].as_array().context("cases")?;
    ensure!(cases.len() >= 300, "{} cases", cases.len());
    let mut truncated = 0;
    for case in cases {
        let prompt = case["prompt"].as_str().context("prompt")?;
        let rendered = template.render_user_prompt(prompt)?;
        ensure!(
            rendered == case["rendered"].as_str().context("rendered")?,
            "template differs for {prompt:?}: {rendered:?}"
        );
        let (ids, mask) = tokenizer.encode_padded(&rendered, max_len)?;
        let expected: Vec<u32> = case["ids"]
            .as_array()
            .context("ids")?
            .iter()
            .filter_map(|v| v.as_u64().map(|v| v as u32))
            .collect();
        let n_real = expected.len();
        ensure!(
            ids.get(..n_real) == Some(expected.as_slice()),
            "ids differ for {prompt:?}"
        );
        ensure!(
            ids.get(n_real..)
                .is_some_and(|pad| pad.iter().all(|&i| i == pad_id)),
            "padding differs for {prompt:?}"
        );
        ensure!(
            mask.iter().filter(|&&m| m == 1).count() == n_real,
            "mask differs for {prompt:?}"
        );
        truncated += usize::from(n_real == max_len);
    }
    ensure!(truncated >= 1, "no prompt exercised truncation");
    Ok(())
}
