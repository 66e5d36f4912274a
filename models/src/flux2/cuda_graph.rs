//! CUDA graphs for a compiled transformer's step.
//!
//! A compiled model on CUDA runs the fused kernels; its step (everything after the per-step
//! conditioning: `Flux2Transformer::blocks_forward`) launches a few hundred kernels whose
//! shapes only depend on the image and text sizes. The first step at a size runs eagerly with
//! small uploads cached ([`veetance_gpu::graph::warm_up`]); the second captures the step as a
//! CUDA graph; every later step, in this and later sampling runs, copies its inputs (latent
//! tokens, projected text, RoPE tables, modulation vectors) into the captured input buffers and
//! replays the graph with one launch. Any capture error marks the size as eager-only: results
//! never depend on whether a graph ran. `VEETANCE_CUDA_GRAPHS=0` turns graphs off.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use candle_core::Tensor;
use veetance_gpu::graph::Graph;

use super::model::{Flux2Transformer, Modulation, RopeTables};

/// What one step reads besides the weights.
pub(crate) struct StepInputs<'a> {
    pub(crate) img_tokens: &'a Tensor,
    /// Projected text `[B, L, D]`.
    pub(crate) txt: &'a Tensor,
    pub(crate) rope: &'a RopeTables,
    pub(crate) modulation: &'a Modulation,
}

/// A captured step and the buffers it reads and writes.
struct Captured {
    graph: Graph,
    img_tokens: Tensor,
    txt: Tensor,
    rope: RopeTables,
    modulation: Modulation,
    output: Tensor,
}

enum Entry {
    /// Ran once eagerly with uploads cached; the next step at this size is captured.
    WarmedUp,
    Ready(Box<Captured>),
    /// Capture failed (the reason is kept for [`StepGraphs::failures`]); this size stays eager.
    Failed(String),
}

/// Captured step graphs of one compiled model, by input sizes and attention backend.
#[derive(Default)]
pub struct StepGraphs {
    entries: Mutex<HashMap<String, Entry>>,
}

impl std::fmt::Debug for StepGraphs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        f.debug_struct("StepGraphs")
            .field("sizes", &entries.len())
            .finish()
    }
}

fn graphs_enabled() -> bool {
    std::env::var("VEETANCE_CUDA_GRAPHS").map_or(true, |v| v != "0")
}

/// A private device buffer holding a copy of `t` (contiguous, offset 0).
fn slot(t: &Tensor) -> candle_core::Result<Tensor> {
    let buffer = Tensor::zeros(t.shape(), t.dtype(), t.device())?;
    buffer.slice_set(&t.contiguous()?, 0, 0)?;
    Ok(buffer)
}

fn slots(ts: &[Tensor]) -> candle_core::Result<Vec<Tensor>> {
    ts.iter().map(slot).collect()
}

fn fill(dst: &Tensor, src: &Tensor) -> candle_core::Result<()> {
    dst.slice_set(&src.contiguous()?, 0, 0)
}

fn fill_all(dst: &[Tensor], src: &[Tensor]) -> candle_core::Result<()> {
    if dst.len() != src.len() {
        candle_core::bail!("modulation sizes changed between steps");
    }
    dst.iter().zip(src).try_for_each(|(d, s)| fill(d, s))
}

impl Captured {
    fn capture(model: &Flux2Transformer, inputs: &StepInputs<'_>) -> candle_core::Result<Self> {
        let m = inputs.modulation;
        let img_tokens = slot(inputs.img_tokens)?;
        let txt = slot(inputs.txt)?;
        let rope = RopeTables {
            cos: slot(&inputs.rope.cos)?,
            sin: slot(&inputs.rope.sin)?,
        };
        let modulation = Modulation {
            img: slots(&m.img)?,
            txt: slots(&m.txt)?,
            single: slots(&m.single)?,
            final_emb: slot(&m.final_emb)?,
        };
        let (graph, output) = veetance_gpu::graph::capture(model.device(), || {
            model.blocks_forward(&img_tokens, &txt, &rope, &modulation)
        })?;
        Ok(Self {
            graph,
            img_tokens,
            txt,
            rope,
            modulation,
            output,
        })
    }

    /// Copies this step's inputs into the captured buffers, replays, and copies the output out
    /// (the next replay overwrites the captured output buffer).
    fn run(&self, inputs: &StepInputs<'_>) -> candle_core::Result<Tensor> {
        fill(&self.img_tokens, inputs.img_tokens)?;
        fill(&self.txt, inputs.txt)?;
        fill(&self.rope.cos, &inputs.rope.cos)?;
        fill(&self.rope.sin, &inputs.rope.sin)?;
        let (m, slots) = (inputs.modulation, &self.modulation);
        fill_all(&slots.img, &m.img)?;
        fill_all(&slots.txt, &m.txt)?;
        fill_all(&slots.single, &m.single)?;
        fill(&slots.final_emb, &m.final_emb)?;
        self.graph.replay()?;
        self.output.copy()
    }
}

impl StepGraphs {
    /// Runs the step through a graph when possible; `None` tells the caller to run it eagerly.
    pub(crate) fn run(
        &self,
        model: &Flux2Transformer,
        inputs: &StepInputs<'_>,
    ) -> candle_core::Result<Option<Tensor>> {
        if !model.device().is_cuda() || !graphs_enabled() {
            return Ok(None);
        }
        let key = format!(
            "{:?} {:?} {:?} {:?} {:?}",
            inputs.img_tokens.dims(),
            inputs.img_tokens.dtype(),
            inputs.txt.dims(),
            inputs.rope.cos.dims(),
            model.attention()
        );
        // Held for the whole step: two sampling runs of one model never capture concurrently.
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        match entries.get(&key) {
            None => {
                let out = veetance_gpu::graph::warm_up(model.device(), || {
                    model.blocks_forward(
                        inputs.img_tokens,
                        inputs.txt,
                        inputs.rope,
                        inputs.modulation,
                    )
                })?;
                entries.insert(key, Entry::WarmedUp);
                Ok(Some(out))
            }
            Some(Entry::WarmedUp) => match Captured::capture(model, inputs) {
                Ok(captured) => {
                    let out = captured.run(inputs)?;
                    entries.insert(key, Entry::Ready(Box::new(captured)));
                    Ok(Some(out))
                }
                Err(err) => {
                    entries.insert(key, Entry::Failed(err.to_string()));
                    Ok(None)
                }
            },
            Some(Entry::Ready(captured)) => captured.run(inputs).map(Some),
            Some(Entry::Failed(_)) => Ok(None),
        }
    }

    /// How many input sizes have a captured graph (for tests and the bench).
    pub fn captured(&self) -> usize {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .filter(|e| matches!(e, Entry::Ready(_)))
            .count()
    }

    /// Why capture failed for each size where it did.
    pub fn failures(&self) -> Vec<String> {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .filter_map(|e| match e {
                Entry::Failed(reason) => Some(reason.clone()),
                _ => None,
            })
            .collect()
    }
}
