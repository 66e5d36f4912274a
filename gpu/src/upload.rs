//! Copies of CPU tensors to the GPU on a second stream, so that streaming a model's layers in
//! from page-locked RAM overlaps the compute of the layers before them.
//!
//! Ordering: the destination buffers are allocated on the compute stream (so they are freed on
//! it, after the kernels that read them), the copy stream waits for that point, copies, and
//! records an event; [`Uploaded::wait`] makes the compute stream wait for that event before any
//! kernel reads the copies. Sources must stay alive until then (the caller's model owns them)
//! and be page-locked for the copy to run asynchronously (see [`crate::memory::pin_host`]).

use candle_core::{Device, Result, Tensor};

/// A copy stream for one CUDA device.
pub struct Uploader {
    imp: imp::Uploader,
}

impl std::fmt::Debug for Uploader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Uploader").finish_non_exhaustive()
    }
}

/// Copies in flight: usable on the compute stream after [`Uploaded::wait`].
pub struct Uploaded {
    tensors: Vec<Tensor>,
    ready: imp::Ready,
}

impl Uploader {
    /// A copy stream for `device`; `None` when it is not a CUDA device (or CUDA is not built in).
    pub fn new(device: &Device) -> Result<Option<Uploader>> {
        Ok(imp::Uploader::new(device)?.map(|imp| Uploader { imp }))
    }

    /// Starts copying `host` (contiguous CPU tensors) to the device.
    pub fn upload(&self, host: &[Tensor]) -> Result<Uploaded> {
        let (tensors, ready) = self.imp.upload(host)?;
        Ok(Uploaded { tensors, ready })
    }
}

impl Uploaded {
    /// Bytes being copied.
    pub fn bytes(&self) -> u64 {
        self.tensors
            .iter()
            .map(|t| (t.elem_count() * t.dtype().size_in_bytes()) as u64)
            .sum()
    }

    /// The device copies, after making the compute stream wait for them to land.
    pub fn wait(self) -> Result<Vec<Tensor>> {
        self.ready.wait()?;
        Ok(self.tensors)
    }
}

#[cfg(feature = "cuda")]
mod imp {
    use std::sync::Arc;

    use candle_core::cuda::cudarc::driver::{CudaEvent, CudaSlice, CudaStream};
    use candle_core::cuda::{CudaDevice, WrapErr};
    use candle_core::{CpuStorage, Device, Result, Storage, Tensor, bail};

    use crate::launch::{alloc, into_tensor};

    pub(super) struct Uploader {
        dev: CudaDevice,
        copy: Arc<CudaStream>,
    }

    pub(super) struct Ready {
        main: Arc<CudaStream>,
        done: Option<CudaEvent>,
    }

    impl Ready {
        pub(super) fn wait(self) -> Result<()> {
            if let Some(done) = &self.done {
                self.main.wait(done).w()?;
            }
            Ok(())
        }
    }

    /// A destination buffer of one of the storage types candle has on CUDA.
    enum Slice {
        U8(CudaSlice<u8>),
        U32(CudaSlice<u32>),
        I64(CudaSlice<i64>),
        Bf16(CudaSlice<half::bf16>),
        F16(CudaSlice<half::f16>),
        F32(CudaSlice<f32>),
    }

    impl Uploader {
        pub(super) fn new(device: &Device) -> Result<Option<Self>> {
            let Device::Cuda(dev) = device else {
                return Ok(None);
            };
            let copy = dev.cuda_stream().context().new_stream().w()?;
            Ok(Some(Self {
                dev: dev.clone(),
                copy,
            }))
        }

        pub(super) fn upload(&self, host: &[Tensor]) -> Result<(Vec<Tensor>, Ready)> {
            let main = self.dev.cuda_stream();
            let mut slices = Vec::with_capacity(host.len());
            for t in host {
                if !t.is_contiguous() {
                    bail!("upload: a streamed weight is not contiguous");
                }
                let n = t.elem_count();
                // SAFETY: every buffer is written whole by the copy below before `Ready::wait`
                // lets a kernel read it.
                let slice = unsafe {
                    match t.dtype() {
                        candle_core::DType::U8 => Slice::U8(alloc(&self.dev, n)?),
                        candle_core::DType::U32 => Slice::U32(alloc(&self.dev, n)?),
                        candle_core::DType::I64 => Slice::I64(alloc(&self.dev, n)?),
                        candle_core::DType::BF16 => Slice::Bf16(alloc(&self.dev, n)?),
                        candle_core::DType::F16 => Slice::F16(alloc(&self.dev, n)?),
                        candle_core::DType::F32 => Slice::F32(alloc(&self.dev, n)?),
                        other => bail!("upload: no streaming for {other:?} weights"),
                    }
                };
                slices.push(slice);
            }
            // The buffers exist from this point of the compute stream on.
            let allocated = main.record_event(None).w()?;
            self.copy.wait(&allocated).w()?;
            let mut out = Vec::with_capacity(host.len());
            for (t, slice) in host.iter().zip(slices) {
                let (storage, layout) = t.storage_and_layout();
                let Storage::Cpu(cpu) = &*storage else {
                    bail!("upload: a streamed weight is not in RAM");
                };
                let range = layout.start_offset()..layout.start_offset() + t.elem_count();
                macro_rules! copy {
                    ($host:expr, $dst:expr) => {{
                        let src = $host.get(range.clone()).ok_or_else(|| {
                            candle_core::Error::Msg("upload: layout outside its storage".into())
                        })?;
                        let mut dst = $dst;
                        self.copy.memcpy_htod(src, &mut dst).w()?;
                        into_tensor(dst, &self.dev, t.shape().clone())
                    }};
                }
                let tensor = match (cpu, slice) {
                    (CpuStorage::U8(h), Slice::U8(d)) => copy!(h, d),
                    (CpuStorage::U32(h), Slice::U32(d)) => copy!(h, d),
                    (CpuStorage::I64(h), Slice::I64(d)) => copy!(h, d),
                    (CpuStorage::BF16(h), Slice::Bf16(d)) => copy!(h, d),
                    (CpuStorage::F16(h), Slice::F16(d)) => copy!(h, d),
                    (CpuStorage::F32(h), Slice::F32(d)) => copy!(h, d),
                    _ => bail!("upload: storage type changed under the copy"),
                };
                out.push(tensor);
            }
            let done = self.copy.record_event(None).w()?;
            Ok((
                out,
                Ready {
                    main,
                    done: Some(done),
                },
            ))
        }
    }
}

#[cfg(not(feature = "cuda"))]
mod imp {
    use candle_core::{Device, Result, Tensor};

    pub(super) struct Uploader;

    pub(super) struct Ready;

    impl Ready {
        pub(super) fn wait(self) -> Result<()> {
            Ok(())
        }
    }

    impl Uploader {
        pub(super) fn new(_device: &Device) -> Result<Option<Self>> {
            Ok(None)
        }

        pub(super) fn upload(&self, _host: &[Tensor]) -> Result<(Vec<Tensor>, Ready)> {
            candle_core::bail!("upload: CUDA is not built in")
        }
    }
}
