//! Streamed layers: a model whose layers do not all fit in the VRAM budget keeps some of them in
//! page-locked RAM and copies each to the GPU shortly before it runs, a few layers ahead, on a
//! second stream ([`veetance_gpu::upload`]), so the copy overlaps the compute of the layers
//! before it. The copies are dropped after their layer ran; their memory is reused by the next
//! ones. Which layers stream is chosen by [`choose_streamed`], spread evenly through the model so
//! that each copy has several resident layers' compute to hide behind.
//!
//! A layer is any weight set with a walk over its tensors (`map_layer` functions in the model
//! folders): the walk collects the RAM tensors in a fixed order, the same walk rebuilds the layer
//! from the device copies in that order.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};

use candle_core::{Device, Tensor};
use veetance_gpu::upload::{Uploaded, Uploader};

use crate::linear::{Linear, LinearWeight};

/// How many streamed layers are in flight (copying) while one runs: two keep the link busy
/// without holding more than three layers' copies at once.
pub const LAYERS_AHEAD: usize = 2;

/// Which layers of a model stream, and the copy stream they come through.
#[derive(Debug)]
pub struct Streaming {
    streamed: Vec<bool>,
    uploader: Option<Uploader>,
    bytes_copied: AtomicU64,
}

impl Streaming {
    /// Streaming for `streamed` (one flag per layer, in execution order) onto `device`.
    pub fn new(streamed: Vec<bool>, device: &Device) -> candle_core::Result<Self> {
        Ok(Self {
            streamed,
            uploader: Uploader::new(device)?,
            bytes_copied: AtomicU64::new(0),
        })
    }

    /// Whether layer `i` streams.
    pub fn is_streamed(&self, i: usize) -> bool {
        self.streamed.get(i).copied().unwrap_or(false)
    }

    /// The number of streamed layers.
    pub fn streamed_count(&self) -> usize {
        self.streamed.iter().filter(|&&s| s).count()
    }

    /// Bytes copied to the device since this model was placed.
    pub fn bytes_copied(&self) -> u64 {
        self.bytes_copied.load(Ordering::Relaxed)
    }
}

/// Chooses which of the layers (sizes in bytes, in execution order) stream so that at most
/// `resident_budget_bytes` of them stay resident, streaming as few bytes as it can and spreading
/// the streamed layers evenly (never the first layer when another will do, so the first copy
/// has something to overlap).
pub fn choose_streamed(layer_bytes: &[u64], resident_budget_bytes: u64) -> Vec<bool> {
    let total: u64 = layer_bytes.iter().sum();
    let mut streamed = vec![false; layer_bytes.len()];
    if total <= resident_budget_bytes {
        return streamed;
    }
    let must_stream = total - resident_budget_bytes;
    let fraction = must_stream as f64 / total as f64;
    // Error diffusion: each layer adds its share of the bytes to stream; a layer streams once
    // the owed share reaches half its size.
    let mut owed = 0.0f64;
    let mut streamed_bytes = 0u64;
    for (i, &bytes) in layer_bytes.iter().enumerate().skip(1) {
        owed += fraction * bytes as f64;
        if owed >= bytes as f64 / 2.0 && streamed_bytes < must_stream {
            if let Some(flag) = streamed.get_mut(i) {
                *flag = true;
            }
            owed -= bytes as f64;
            streamed_bytes += bytes;
        }
    }
    // Rounding may leave too much resident: stream more, from the end, first layer last.
    let order = (1..layer_bytes.len()).rev().chain(std::iter::once(0));
    for i in order {
        if streamed_bytes >= must_stream {
            break;
        }
        if let Some(flag) = streamed.get_mut(i)
            && !*flag
        {
            *flag = true;
            streamed_bytes += layer_bytes.get(i).copied().unwrap_or(0);
        }
    }
    streamed
}

/// A function applied to each projection of a layer.
pub(crate) type ProjFn<'a> = &'a dyn Fn(&Linear) -> candle_core::Result<Linear>;
/// A function applied to each other tensor of a layer.
pub(crate) type TensorFn<'a> = &'a dyn Fn(&Tensor) -> candle_core::Result<Tensor>;

/// A layer that can stream: its weights walked in a fixed order.
pub(crate) trait Layer: Sized {
    /// A copy with `proj` applied to every projection and `tensor` to every other tensor.
    fn map_layer(&self, proj: ProjFn<'_>, tensor: TensorFn<'_>) -> candle_core::Result<Self>;

    /// The RAM tensors a streamed copy of this block is made of, in walk order.
    fn host_tensors(&self) -> candle_core::Result<Vec<Tensor>> {
        let out = RefCell::new(Vec::new());
        self.map_layer(
            &|p| {
                linear_host_tensors(p, &mut out.borrow_mut())?;
                Ok(p.clone())
            },
            &|t| {
                out.borrow_mut().push(t.clone());
                Ok(t.clone())
            },
        )?;
        Ok(out.into_inner())
    }

    /// This block's device copy for layer `i` of `stream` if the layer streams.
    fn fetched(&self, stream: &mut LayerStream<'_>, i: usize) -> candle_core::Result<Option<Self>> {
        let Some(copies) = stream.take(i)? else {
            return Ok(None);
        };
        let copies = RefCell::new(copies.into_iter());
        let device = stream.device().clone();
        let block = self.map_layer(&|p| rebuild_linear(p, &copies, &device), &|_| {
            next_copy(&copies)
        })?;
        Ok(Some(block))
    }

    /// Bytes of the block's weights (compact weights at their compact size).
    fn bytes(&self) -> u64 {
        let total = std::cell::Cell::new(0u64);
        let _ = self.map_layer(
            &|p| {
                let extra: u64 = p
                    .tensors()
                    .iter()
                    .skip(p.weight().tensors().len())
                    .map(|t| (t.elem_count() * t.dtype().size_in_bytes()) as u64)
                    .sum();
                total.set(total.get() + p.weight().size_bytes() + extra);
                Ok(p.clone())
            },
            &|t| {
                total.set(total.get() + (t.elem_count() * t.dtype().size_in_bytes()) as u64);
                Ok(t.clone())
            },
        );
        total.get()
    }
}

/// Copies in flight, or done (without a copy stream: CPU "devices" in tests, builds without
/// CUDA).
enum InFlight {
    Copying(Uploaded),
    Done(Vec<Tensor>),
}

/// One forward pass's walk over a model's layers: hands out device copies of the streamed
/// layers, keeping [`LAYERS_AHEAD`] copies in flight. Layers must be taken in order.
pub(crate) struct LayerStream<'a> {
    streaming: &'a Streaming,
    device: Device,
    /// The RAM tensors of each layer (empty for resident layers), in walk order.
    host: Vec<Vec<Tensor>>,
    in_flight: VecDeque<(usize, InFlight)>,
    next_to_issue: usize,
}

impl<'a> LayerStream<'a> {
    /// A walk over layers whose RAM tensors are `host` (one list per layer; resident layers'
    /// lists are ignored) onto `device`.
    pub(crate) fn new(
        streaming: &'a Streaming,
        host: Vec<Vec<Tensor>>,
        device: &Device,
    ) -> candle_core::Result<Self> {
        let mut stream = Self {
            streaming,
            device: device.clone(),
            host,
            in_flight: VecDeque::new(),
            next_to_issue: 0,
        };
        stream.fill()?;
        Ok(stream)
    }

    /// Issues copies until [`LAYERS_AHEAD`] are in flight (or none are left).
    fn fill(&mut self) -> candle_core::Result<()> {
        while self.in_flight.len() < LAYERS_AHEAD && self.next_to_issue < self.host.len() {
            let i = self.next_to_issue;
            self.next_to_issue += 1;
            if !self.streaming.is_streamed(i) {
                continue;
            }
            let tensors = self.host.get(i).map(Vec::as_slice).unwrap_or(&[]);
            let flight = match &self.streaming.uploader {
                Some(uploader) => {
                    let copying = uploader.upload(tensors)?;
                    self.streaming
                        .bytes_copied
                        .fetch_add(copying.bytes(), Ordering::Relaxed);
                    InFlight::Copying(copying)
                }
                None => {
                    // A real copy even on the CPU, so that tests see the streamed path's own
                    // buffers.
                    let copies = tensors
                        .iter()
                        .map(|t| match self.device {
                            Device::Cpu => t.copy(),
                            _ => t.to_device(&self.device),
                        })
                        .collect::<candle_core::Result<Vec<_>>>()?;
                    let bytes: u64 = copies
                        .iter()
                        .map(|t| (t.elem_count() * t.dtype().size_in_bytes()) as u64)
                        .sum();
                    self.streaming
                        .bytes_copied
                        .fetch_add(bytes, Ordering::Relaxed);
                    InFlight::Done(copies)
                }
            };
            self.in_flight.push_back((i, flight));
        }
        Ok(())
    }

    /// The device copies of layer `i`'s tensors (in walk order) if it streams, `None` if it is
    /// resident; starts the copies of the next streamed layers.
    pub(crate) fn take(&mut self, i: usize) -> candle_core::Result<Option<Vec<Tensor>>> {
        if !self.streaming.is_streamed(i) {
            self.fill()?;
            return Ok(None);
        }
        if self.next_to_issue <= i {
            // Not issued yet (taken out of order or after a skipped fill): issue up to it.
            self.fill()?;
        }
        let Some((layer, flight)) = self.in_flight.pop_front() else {
            candle_core::bail!("streamed layer {i} was never copied");
        };
        if layer != i {
            candle_core::bail!("streamed layers taken out of order ({i}, expected {layer})");
        }
        let tensors = match flight {
            InFlight::Copying(copying) => copying.wait()?,
            InFlight::Done(tensors) => tensors,
        };
        self.fill()?;
        Ok(Some(tensors))
    }

    /// The device the copies go to.
    pub(crate) fn device(&self) -> &Device {
        &self.device
    }
}

/// The tensors a projection holds that stream through the copy stream (dense and FP8 weights,
/// biases, adapters), in [`Linear::map_tensors`] order. GGUF blocks are moved by
/// [`rebuild_linear`] itself.
pub(crate) fn linear_host_tensors(p: &Linear, out: &mut Vec<Tensor>) -> candle_core::Result<()> {
    let collected = std::cell::RefCell::new(Vec::new());
    p.map_tensors(&|t| {
        collected.borrow_mut().push(t.clone());
        Ok(t.clone())
    })?;
    out.extend(collected.into_inner());
    Ok(())
}

/// A streamed projection rebuilt from the next device copies of `copies` (taken in
/// [`Linear::map_tensors`] order); GGUF blocks, which candle cannot copy asynchronously, are
/// copied here synchronously at their quantized size.
pub(crate) fn rebuild_linear(
    p: &Linear,
    copies: &std::cell::RefCell<std::vec::IntoIter<Tensor>>,
    device: &Device,
) -> candle_core::Result<Linear> {
    let rebuilt = p.map_tensors(&|_| next_copy(copies))?;
    match p.weight() {
        LinearWeight::Ggml { .. } => Ok(rebuilt.with_weight(p.weight().to_device(device)?)),
        _ => Ok(rebuilt),
    }
}

/// The next device copy of a streamed layer's walk.
pub(crate) fn next_copy(
    copies: &std::cell::RefCell<std::vec::IntoIter<Tensor>>,
) -> candle_core::Result<Tensor> {
    copies.borrow_mut().next().ok_or_else(|| {
        candle_core::Error::Msg("a streamed layer has fewer tensors than its walk".into())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resident(layers: &[u64], streamed: &[bool]) -> u64 {
        layers
            .iter()
            .zip(streamed)
            .filter(|(_, s)| !**s)
            .map(|(b, _)| b)
            .sum()
    }

    #[test]
    fn nothing_streams_when_everything_fits() {
        assert_eq!(choose_streamed(&[10, 10, 10], 30), vec![false; 3]);
    }

    #[test]
    fn streamed_layers_are_spread_and_leave_at_most_the_budget_resident() {
        let layers = vec![10u64; 12];
        let streamed = choose_streamed(&layers, 80);
        assert!(resident(&layers, &streamed) <= 80);
        assert_eq!(streamed.iter().filter(|s| **s).count(), 4);
        // Spread: no two streamed layers next to each other, and not the first.
        assert!(!streamed[0]);
        assert!(streamed.windows(2).all(|w| !(w[0] && w[1])), "{streamed:?}");
    }

    #[test]
    fn mixed_layer_sizes_still_meet_the_budget() {
        // FLUX-like: a few large double blocks, then many single blocks half their size.
        let mut layers = vec![20u64; 5];
        layers.extend(vec![10u64; 20]);
        for budget in [0, 1, 55, 100, 199, 299, 300] {
            let streamed = choose_streamed(&layers, budget);
            assert!(
                resident(&layers, &streamed) <= budget,
                "budget {budget}: {streamed:?}"
            );
        }
        assert!(choose_streamed(&layers, 0).iter().all(|s| *s));
    }
}
