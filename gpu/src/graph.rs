//! CUDA graphs: record the kernels a closure launches on a device's stream once, replay them with
//! one launch.
//!
//! The protocol (candle 0.11's `enable_cuda_graph_htod_cache`): run the work once eagerly under
//! [`warm_up`], which caches every small host→device upload (shapes, strides) in device memory,
//! then [`capture`] it, then [`Graph::replay`]. A replay reads and writes exactly the device
//! buffers the capture used, so callers copy their inputs into the captured input tensors before
//! each replay and copy the output out after it. Scalars passed to kernels are baked in.
//! Allocations made during capture become graph memory nodes (the graph is instantiated with
//! auto-free-on-launch, so the captured output buffer is reused by each replay).

use candle_core::{Device, Result, Tensor};

/// A captured graph, ready to replay.
pub struct Graph {
    #[cfg(feature = "cuda")]
    graph: candle_core::cuda::cudarc::driver::CudaGraph,
}

// SAFETY: a CUDA graph and its executable are driver handles usable from any thread (the
// launch binds the owning context first); `replay` only launches, which the driver serialises
// on the stream, and the handles are destroyed once, when the `Graph` drops.
#[cfg(feature = "cuda")]
unsafe impl Send for Graph {}
// SAFETY: see `Send`; `&Graph` only allows launching.
#[cfg(feature = "cuda")]
unsafe impl Sync for Graph {}

impl std::fmt::Debug for Graph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Graph").finish_non_exhaustive()
    }
}

/// Runs `work` eagerly with small host→device uploads cached for a later capture.
pub fn warm_up<R>(device: &Device, work: impl FnOnce() -> Result<R>) -> Result<R> {
    imp::warm_up(device, work)
}

/// Captures the kernels `work` launches on `device`'s stream (without running them) and returns
/// the graph with the tensor `work` returned, whose buffer each replay fills.
pub fn capture(device: &Device, work: impl FnOnce() -> Result<Tensor>) -> Result<(Graph, Tensor)> {
    imp::capture(device, work)
}

impl Graph {
    /// Launches the captured work on the stream it was captured from.
    pub fn replay(&self) -> Result<()> {
        imp::replay(self)
    }
}

#[cfg(feature = "cuda")]
mod imp {
    use candle_core::cuda::WrapErr;
    use candle_core::cuda::cudarc::driver::sys::{CUgraphInstantiate_flags, CUstreamCaptureMode};
    use candle_core::{Device, Result, Tensor, bail};

    use super::Graph;

    pub(super) fn warm_up<R>(device: &Device, work: impl FnOnce() -> Result<R>) -> Result<R> {
        let Device::Cuda(dev) = device else {
            return work();
        };
        let _cache = dev.enable_cuda_graph_htod_cache();
        work()
    }

    pub(super) fn capture(
        device: &Device,
        work: impl FnOnce() -> Result<Tensor>,
    ) -> Result<(Graph, Tensor)> {
        let Device::Cuda(dev) = device else {
            bail!("CUDA graphs need a CUDA device");
        };
        let stream = dev.cuda_stream();
        stream.synchronize().w()?;
        let _cache = dev.enable_cuda_graph_htod_cache();
        stream
            .begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
            .w()?;
        let result = work();
        // Always end the capture, also after an error: the stream is unusable until then.
        let graph = stream
            .end_capture(CUgraphInstantiate_flags::CUDA_GRAPH_INSTANTIATE_FLAG_AUTO_FREE_ON_LAUNCH);
        let output = result?;
        match graph.w()? {
            Some(graph) => Ok((Graph { graph }, output)),
            None => bail!("the captured work launched nothing"),
        }
    }

    pub(super) fn replay(graph: &Graph) -> Result<()> {
        graph.graph.launch().w()
    }
}

#[cfg(not(feature = "cuda"))]
mod imp {
    use candle_core::{Device, Result, Tensor, bail};

    use super::Graph;

    pub(super) fn warm_up<R>(_device: &Device, work: impl FnOnce() -> Result<R>) -> Result<R> {
        work()
    }

    pub(super) fn capture(
        _device: &Device,
        _work: impl FnOnce() -> Result<Tensor>,
    ) -> Result<(Graph, Tensor)> {
        bail!("this build has no CUDA (build with `--features cuda`)")
    }

    pub(super) fn replay(_graph: &Graph) -> Result<()> {
        bail!("this build has no CUDA (build with `--features cuda`)")
    }
}
