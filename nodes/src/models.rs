//! Model folders: what `VEETANCE_MODELS` and `--models-dir` name, walked for model files and
//! checkpoint folders that Load accepts by name, for `veetance models` and the editor's lists.
//!
//! A model folder may be laid out any way; a ComfyUI `models/` folder (`diffusion_models/`,
//! `text_encoders/`, `vae/`, `checkpoints/`, `unet/`, `clip/`) works as it is. A file's name is its
//! path relative to the folder (`diffusion_models/flux-2-klein-4b-Q4_K.gguf`).

use std::path::{Path, PathBuf};

use veetance_models::detect::{self, ModelKind};

/// The catalog of Load's `model` input: `tiny`, checkpoints and transformer files.
pub const CATALOG_MODEL: &str = "models";
/// The catalog of Load's `text_encoder` input.
pub const CATALOG_TEXT_ENCODER: &str = "text_encoders";
/// The catalog of Load's `vae` input.
pub const CATALOG_VAE: &str = "vaes";
/// The catalog of LoadLoRA's `lora` input.
pub const CATALOG_LORA: &str = "loras";

/// Deepest folder level searched below a model folder.
const MAX_DEPTH: usize = 4;
/// Most entries looked at per model folder (a wrongly set folder such as `/` ends quickly).
const MAX_ENTRIES: usize = 20_000;

/// The model folders from `VEETANCE_MODELS` (a path list, `:`-separated on Unix).
pub fn env_model_dirs() -> Vec<PathBuf> {
    std::env::var_os("VEETANCE_MODELS")
        .map(|v| {
            std::env::split_paths(&v)
                .filter(|p| !p.as_os_str().is_empty())
                .collect()
        })
        .unwrap_or_default()
}

/// Model files (`.safetensors`, `.gguf`) and diffusers checkpoint folders below `dir`, sorted.
pub fn list_model_paths(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut walker = walkdir::WalkDir::new(dir)
        .max_depth(MAX_DEPTH)
        .follow_links(true)
        .sort_by_file_name()
        .into_iter();
    let mut seen = 0usize;
    while let Some(entry) = walker.next() {
        seen += 1;
        if seen > MAX_ENTRIES {
            break;
        }
        let Ok(entry) = entry else { continue };
        let name = entry.file_name().to_string_lossy();
        if entry.depth() > 0 && name.starts_with('.') {
            if entry.file_type().is_dir() {
                walker.skip_current_dir();
            }
            continue;
        }
        let path = entry.path();
        if entry.file_type().is_dir() {
            if entry.depth() > 0 && path.join("model_index.json").is_file() {
                found.push(path.to_path_buf());
                walker.skip_current_dir();
            }
            continue;
        }
        let lower = name.to_lowercase();
        if lower.ends_with(".safetensors") || lower.ends_with(".gguf") {
            found.push(path.to_path_buf());
        }
    }
    found
}

/// One entry of a model folder listing.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelEntry {
    /// The name Load accepts (path relative to the model folder).
    pub name: String,
    /// The full path.
    pub path: PathBuf,
    /// What it is (`transformer: FLUX.2 [klein] 4B`, ...), or why it cannot be used.
    pub kind: String,
    /// How its weights are stored (`Q4_K 80%, BF16 20%`).
    pub storage: String,
    /// Bytes on disk.
    pub size_bytes: u64,
    /// Why Load cannot use it, when it cannot.
    pub skipped: Option<String>,
}

/// Every model file and checkpoint folder in `dirs`, identified from headers (no weights read).
pub fn scan(dirs: &[PathBuf]) -> Vec<ModelEntry> {
    let mut entries = Vec::new();
    for dir in dirs {
        for path in list_model_paths(dir) {
            let name = path
                .strip_prefix(dir)
                .unwrap_or(&path)
                .to_string_lossy()
                .into_owned();
            let entry = match detect::inspect(&path) {
                Ok(file) => {
                    let skipped = match &file.kind {
                        ModelKind::Unsupported(why) => Some(why.clone()),
                        _ => None,
                    };
                    ModelEntry {
                        name,
                        kind: file.kind.label(),
                        storage: file.storage,
                        size_bytes: file.size_bytes,
                        path,
                        skipped,
                    }
                }
                Err(err) => ModelEntry {
                    name,
                    kind: "unreadable".into(),
                    storage: String::new(),
                    size_bytes: std::fs::metadata(&path).map_or(0, |m| m.len()),
                    path,
                    skipped: Some(err.to_string()),
                },
            };
            entries.push(entry);
        }
    }
    entries
}

/// The names a catalog offers (see [`CATALOG_MODEL`] and its siblings), from the model folders.
/// Unknown catalogs are empty.
pub fn catalog_names(dirs: &[PathBuf], catalog: &str) -> Vec<String> {
    let wanted = |kind: &ModelKind| match catalog {
        CATALOG_MODEL => matches!(
            kind,
            ModelKind::DiffusersCheckpoint
                | ModelKind::Flux2Transformer { .. }
                | ModelKind::AllInOne
        ),
        CATALOG_TEXT_ENCODER => matches!(kind, ModelKind::Qwen3TextEncoder { .. }),
        CATALOG_VAE => matches!(kind, ModelKind::Flux2Vae),
        CATALOG_LORA => matches!(kind, ModelKind::Lora),
        _ => false,
    };
    let mut names: Vec<String> = if catalog == CATALOG_MODEL {
        vec!["tiny".to_string()]
    } else {
        Vec::new()
    };
    for dir in dirs {
        for path in list_model_paths(dir) {
            let Ok(file) = detect::inspect(&path) else {
                continue;
            };
            if wanted(&file.kind) {
                names.push(
                    path.strip_prefix(dir)
                        .unwrap_or(&path)
                        .to_string_lossy()
                        .into_owned(),
                );
            }
        }
    }
    names
}
