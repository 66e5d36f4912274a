//! The fuzz targets: each reads one kind of outside data the way Veetance reads it.

use std::path::{Path, PathBuf};

use veetance_engine::diagnostic::render;
use veetance_engine::overrides::apply_override;
use veetance_engine::{Registry, Workflow, validate};
use veetance_models::lora::LoraFile;
use veetance_models::qwen3::ChatTemplate;
use veetance_models::weights::{SafetensorsFile, Weights};
use veetance_models::{Flux2Config, Flux2Transformer, LoraMerge};

/// A parser of outside data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    /// RON workflow text: parse, validate against the built-in nodes, render the diagnostics.
    Workflow,
    /// `--set node.input=value` lines applied to the golden workflow.
    Set,
    /// PNG files: their text chunks, the embedded workflow, the pixels.
    Png,
    /// safetensors files: header, tensors, what kind of model they are.
    Safetensors,
    /// GGUF files: header, metadata, tensor directory, tensors, what kind of model they are.
    Gguf,
    /// LoRA files, read and applied to a tiny transformer.
    Lora,
    /// Chat templates (`chat_template.jinja` of a checkpoint), rendered for a prompt.
    Template,
}

/// What a target keeps between inputs.
pub struct State {
    registry: Registry,
    golden: Workflow,
    transformer: Option<Flux2Transformer>,
}

impl Target {
    /// Every target.
    pub const ALL: [Target; 7] = [
        Target::Workflow,
        Target::Set,
        Target::Png,
        Target::Safetensors,
        Target::Gguf,
        Target::Lora,
        Target::Template,
    ];

    /// The name of its corpus folder.
    pub fn name(self) -> &'static str {
        match self {
            Target::Workflow => "workflow",
            Target::Set => "set",
            Target::Png => "png",
            Target::Safetensors => "safetensors",
            Target::Gguf => "gguf",
            Target::Lora => "lora",
            Target::Template => "template",
        }
    }

    /// Repository files that seed the corpus besides `corpus/<name>/` (so that fixtures are not
    /// copied), relative to the repository root.
    pub fn seed_files(self) -> &'static [&'static str] {
        match self {
            Target::Workflow => &[
                "workflows/golden.ron",
                "workflows/img2img.ron",
                "workflows/layers.ron",
                "tests/data/broken.ron",
                "tests/data/references.ron",
            ],
            Target::Set => &[],
            // Small pictures: every input may decode its pixels.
            Target::Png => &["workflows/assets/shapes.png"],
            Target::Safetensors => &[
                "models/tests/fixtures/lora/aitk.safetensors",
                "models/tests/fixtures/references/noise-one.safetensors",
            ],
            Target::Gguf => &["models/tests/fixtures/formats/gguf/te-Q8_0.gguf"],
            Target::Template => &["models/qwen3-tokenizer/chat_template.jinja"],
            Target::Lora => &[
                "models/tests/fixtures/lora/peft.safetensors",
                "models/tests/fixtures/lora/kohya.safetensors",
                "models/tests/fixtures/lora/aitk.safetensors",
            ],
        }
    }

    /// What the target keeps between inputs.
    pub fn prepare(self) -> anyhow::Result<State> {
        let registry = veetance_nodes::registry()?;
        let golden = Workflow::parse(include_str!("../../workflows/golden.ron"))
            .map_err(|_| anyhow::anyhow!("the golden workflow does not parse"))?;
        let transformer = match self {
            Target::Lora => Some(tiny_transformer()?),
            _ => None,
        };
        Ok(State {
            registry,
            golden,
            transformer,
        })
    }

    /// Runs the target on one input; `scratch` is a folder for inputs that must be files.
    /// Errors are outcomes like any other: only a panic (or a hang) is a finding.
    pub fn run(self, state: &mut State, input: &[u8], scratch: &Path) {
        match self {
            Target::Workflow => {
                let source = String::from_utf8_lossy(input);
                let diagnostics = match Workflow::parse(&source) {
                    Err(diagnostics) => diagnostics,
                    Ok(workflow) => {
                        let _ = workflow.to_ron();
                        validate(&workflow, &state.registry, Some(&source)).diagnostics
                    }
                };
                let _ = render(&diagnostics, &source, "fuzz.ron");
            }
            Target::Set => {
                let line = String::from_utf8_lossy(input);
                let mut workflow = state.golden.clone();
                for assignment in line.lines() {
                    let _ = apply_override(&mut workflow, &state.registry, assignment);
                }
                let _ = validate(&workflow, &state.registry, None);
            }
            Target::Png => {
                let _ = veetance_imaging::read_png_text(input);
                let _ = veetance_imaging::read_png_workflow(input);
                let _ = veetance_imaging::load_image(input);
            }
            Target::Safetensors => {
                let path = write(scratch, "input.safetensors", input);
                if let Ok(file) = SafetensorsFile::open(&path) {
                    for name in file.tensors().keys().take(8) {
                        let _ = file.load(name, candle_core_dtype(), &candle_device());
                    }
                }
                let _ = veetance_models::detect::inspect(&path);
            }
            Target::Gguf => {
                let path = write(scratch, "input.gguf", input);
                if let Ok(weights) = Weights::open(&path) {
                    for name in weights.names().into_iter().take(8) {
                        let _ = weights.get(name, candle_core_dtype(), &candle_device());
                    }
                }
                let _ = veetance_models::detect::inspect(&path);
            }
            Target::Lora => {
                let path = write(scratch, "input.safetensors", input);
                if let (Ok(lora), Some(model)) = (LoraFile::open(&path), &state.transformer) {
                    let _ = model.with_lora(&lora, 1.0, LoraMerge::Auto);
                    let _ = model.with_lora(&lora, 0.5, LoraMerge::Beside);
                }
            }
            Target::Template => {
                let source = String::from_utf8_lossy(input);
                let _ = ChatTemplate::from_source(source).render_user_prompt("a red circle");
            }
        }
    }
}

fn candle_core_dtype() -> candle_core::DType {
    candle_core::DType::F32
}

fn candle_device() -> candle_core::Device {
    candle_core::Device::Cpu
}

/// Writes `bytes` to `scratch/name` (a failed write leaves the previous input, which is fine).
fn write(scratch: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = scratch.join(name);
    let _ = std::fs::write(&path, bytes);
    path
}

/// The parity fixtures' tiny transformer shape (2 + 2 blocks, 32 wide) with random weights.
fn tiny_transformer() -> anyhow::Result<Flux2Transformer> {
    Ok(Flux2Transformer::random(
        Flux2Config::tiny(),
        candle_core::DType::F32,
        &candle_core::Device::Cpu,
    )?)
}
