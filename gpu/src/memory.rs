//! VRAM accounting: what the device holds now and the peak since the last reset.
//!
//! candle allocates through the CUDA driver's stream-ordered allocator (`cuMemAllocAsync`) on
//! devices that support memory pools, so the default pool's high-water marks are the peak
//! memory of everything candle allocated, the same quantity PyTorch reports as
//! `max_memory_allocated` (used) and `max_memory_reserved` (reserved).

use candle_core::Device;

/// A snapshot of device memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VramInfo {
    /// Bytes in use on the device (all processes, like nvidia-smi).
    pub used_bytes: u64,
    /// Total device memory.
    pub total_bytes: u64,
    /// Peak bytes in use by allocations of the default memory pool since the last
    /// [`reset_peak`] (None when the device has no memory pools).
    pub pool_peak_used_bytes: Option<u64>,
    /// Peak bytes the pool reserved from the device since the last [`reset_peak`].
    pub pool_peak_reserved_bytes: Option<u64>,
}

/// Memory of a CUDA device; `None` for other devices or builds without CUDA.
pub fn vram(device: &Device) -> Option<VramInfo> {
    imp::vram(device)
}

/// Resets the pool's peak counters to the current use.
pub fn reset_peak(device: &Device) {
    imp::reset_peak(device);
}

/// CPU tensors whose RAM is page-locked for a CUDA device, so that copies to the GPU run as
/// DMA at the link's rate instead of being staged through the driver's pageable-copy buffers.
/// Keeps the tensors alive and unlocks their memory when dropped.
pub struct PinnedHost {
    pinned: imp::Pins,
}

impl std::fmt::Debug for PinnedHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PinnedHost")
            .field("pinned_bytes", &self.pinned_bytes())
            .finish()
    }
}

impl PinnedHost {
    /// Bytes actually page-locked (tensors the driver refused, e.g. small ones sharing a page
    /// with another registration, are left pageable).
    pub fn pinned_bytes(&self) -> u64 {
        self.pinned.bytes()
    }
}

/// Page-locks the RAM behind `tensors` (CPU tensors; others are skipped) for `device`.
/// Without CUDA, or for a non-CUDA device, nothing is locked.
pub fn pin_host(tensors: Vec<candle_core::Tensor>, device: &Device) -> PinnedHost {
    PinnedHost {
        pinned: imp::Pins::new(tensors, device),
    }
}

/// The start and length in bytes of a CPU storage's buffer (whatever its element type).
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
pub(crate) fn cpu_bytes(cpu: &candle_core::CpuStorage) -> (*const u8, usize) {
    use candle_core::CpuStorage as S;
    fn raw<T>(v: &[T]) -> (*const u8, usize) {
        (v.as_ptr().cast(), std::mem::size_of_val(v))
    }
    match cpu {
        S::U8(v) | S::F6E2M3(v) | S::F6E3M2(v) | S::F4(v) | S::F8E8M0(v) => raw(v),
        S::U32(v) => raw(v),
        S::I16(v) => raw(v),
        S::I32(v) => raw(v),
        S::I64(v) => raw(v),
        S::BF16(v) => raw(v),
        S::F16(v) => raw(v),
        S::F32(v) => raw(v),
        S::F64(v) => raw(v),
        S::F8E4M3(v) => raw(v),
    }
}

/// Why a VRAM limit could not be set.
#[derive(Debug, thiserror::Error)]
#[error("could not limit VRAM to {budget_bytes} bytes: {reason}")]
pub struct LimitError {
    /// The requested limit.
    pub budget_bytes: u64,
    /// What the driver said.
    pub reason: String,
}

/// Makes `budget_bytes` a hard limit on the device memory candle can allocate on `device` from
/// now on: a memory pool with that maximum size becomes the device's current pool, so the
/// stream-ordered allocator (`cuMemAllocAsync`, which candle uses) fails with out-of-memory
/// instead of growing past it. The CUDA context, loaded kernels and cuBLAS's workspace are
/// outside any pool and so outside the limit. Calling it again with the same limit does nothing;
/// another limit makes a new pool (allocations already made stay in the old one until freed).
/// A no-op for non-CUDA devices and builds without CUDA.
pub fn limit_vram(device: &Device, budget_bytes: u64) -> Result<(), LimitError> {
    imp::limit_vram(device, budget_bytes).map_err(|reason| LimitError {
        budget_bytes,
        reason,
    })
}

/// Waits for the device's queued work and releases the memory its current pool reserves but no
/// allocation uses (`cuMemPoolTrimTo`), so that a large allocation under a [`limit_vram`] limit
/// is not refused because freed memory sits in the pool in pieces. A no-op off CUDA.
pub fn trim(device: &Device) {
    imp::trim(device);
}

/// The limit [`limit_vram`] set on `device`, if any.
pub fn vram_limit(device: &Device) -> Option<u64> {
    imp::vram_limit(device)
}

/// Whether `err` (from a candle operation) is the device running out of memory: under a
/// [`limit_vram`] limit this is the limit being reached.
pub fn is_out_of_memory(err: &candle_core::Error) -> bool {
    let text = format!("{err:?}");
    text.contains("CUDA_ERROR_OUT_OF_MEMORY") || text.contains("out of memory")
}

/// The name of the GPU (e.g. "NVIDIA H100 80GB HBM3"); `None` for other devices.
pub fn device_name(device: &Device) -> Option<String> {
    imp::device_name(device)
}

#[cfg(feature = "cuda")]
mod imp {
    use candle_core::Device;
    use candle_core::cuda::cudarc::driver::sys;

    use super::VramInfo;

    fn pool(device: &Device) -> Option<sys::CUmemoryPool> {
        let Device::Cuda(cuda) = device else {
            return None;
        };
        let stream = cuda.cuda_stream();
        let ctx = stream.context();
        ctx.bind_to_thread().ok()?;
        let mut pool: sys::CUmemoryPool = std::ptr::null_mut();
        // The current pool: the default one, or the capped one of `limit_vram`.
        // SAFETY: the context is current and `pool` is a valid out pointer.
        let rc = unsafe { sys::cuDeviceGetMemPool(&mut pool, ctx.cu_device()) };
        (rc == sys::CUresult::CUDA_SUCCESS && !pool.is_null()).then_some(pool)
    }

    fn pool_attr(pool: sys::CUmemoryPool, attr: sys::CUmemPool_attribute) -> Option<u64> {
        let mut value: u64 = 0;
        // SAFETY: the high-water attributes are cuuint64_t values.
        let rc = unsafe { sys::cuMemPoolGetAttribute(pool, attr, (&mut value as *mut u64).cast()) };
        (rc == sys::CUresult::CUDA_SUCCESS).then_some(value)
    }

    pub(super) fn vram(device: &Device) -> Option<VramInfo> {
        let Device::Cuda(cuda) = device else {
            return None;
        };
        let stream = cuda.cuda_stream();
        stream.synchronize().ok()?;
        let (free, total) = stream.context().mem_get_info().ok()?;
        let pool = pool(device);
        Some(VramInfo {
            used_bytes: (total - free) as u64,
            total_bytes: total as u64,
            pool_peak_used_bytes: pool.and_then(|p| {
                pool_attr(p, sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_USED_MEM_HIGH)
            }),
            pool_peak_reserved_bytes: pool.and_then(|p| {
                pool_attr(
                    p,
                    sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RESERVED_MEM_HIGH,
                )
            }),
        })
    }

    pub(super) fn reset_peak(device: &Device) {
        let Some(pool) = self::pool(device) else {
            return;
        };
        if let Device::Cuda(cuda) = device {
            let _ = cuda.cuda_stream().synchronize();
        }
        for attr in [
            sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_USED_MEM_HIGH,
            sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RESERVED_MEM_HIGH,
        ] {
            let mut zero: u64 = 0;
            // SAFETY: setting a high-water mark to 0 resets it to the current value.
            unsafe {
                sys::cuMemPoolSetAttribute(pool, attr, (&mut zero as *mut u64).cast());
            }
        }
    }

    pub(super) fn device_name(device: &Device) -> Option<String> {
        let Device::Cuda(cuda) = device else {
            return None;
        };
        cuda.cuda_stream().context().name().ok()
    }

    /// The pools `limit_vram` made, by device ordinal: (limit, pool). Pools live as long as
    /// the process (memory allocated from one may outlive a later limit).
    static LIMITS: std::sync::Mutex<Vec<(i32, u64, usize)>> = std::sync::Mutex::new(Vec::new());

    fn limits() -> std::sync::MutexGuard<'static, Vec<(i32, u64, usize)>> {
        LIMITS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(super) fn trim(device: &Device) {
        let Device::Cuda(cuda) = device else {
            return;
        };
        if cuda.cuda_stream().synchronize().is_err() {
            return;
        }
        if let Some(pool) = pool(device) {
            // SAFETY: `pool` is the device's current pool; trimming only releases unused memory.
            unsafe {
                sys::cuMemPoolTrimTo(pool, 0);
            }
        }
    }

    pub(super) fn vram_limit(device: &Device) -> Option<u64> {
        let Device::Cuda(cuda) = device else {
            return None;
        };
        let ordinal = cuda.cuda_stream().context().cu_device();
        let limits = limits();
        let current = pool(device)? as usize;
        limits
            .iter()
            .find(|&&(d, _, p)| d == ordinal && p == current)
            .map(|&(_, limit, _)| limit)
    }

    pub(super) fn limit_vram(device: &Device, budget_bytes: u64) -> Result<(), String> {
        let Device::Cuda(cuda) = device else {
            return Ok(());
        };
        if vram_limit(device) == Some(budget_bytes) {
            return Ok(());
        }
        let stream = cuda.cuda_stream();
        let ctx = stream.context();
        ctx.bind_to_thread().map_err(|e| e.to_string())?;
        let ordinal = ctx.cu_device();
        // SAFETY: an all-zero CUmemPoolProps is the documented "defaults" value; the fields set
        // below are the ones cuMemPoolCreate requires.
        let mut props: sys::CUmemPoolProps = unsafe { std::mem::zeroed() };
        props.allocType = sys::CUmemAllocationType::CU_MEM_ALLOCATION_TYPE_PINNED;
        props.handleTypes = sys::CUmemAllocationHandleType::CU_MEM_HANDLE_TYPE_NONE;
        props.location.type_ = sys::CUmemLocationType::CU_MEM_LOCATION_TYPE_DEVICE;
        props.location.id = ordinal;
        props.maxSize = usize::try_from(budget_bytes).map_err(|e| e.to_string())?;
        let mut created: sys::CUmemoryPool = std::ptr::null_mut();
        // SAFETY: `props` is initialised and `created` a valid out pointer.
        let rc = unsafe { sys::cuMemPoolCreate(&mut created, &props) };
        if rc != sys::CUresult::CUDA_SUCCESS {
            return Err(format!("cuMemPoolCreate: {rc:?}"));
        }
        // Keep freed memory reserved in the pool (it is capped anyway) instead of returning it
        // to the driver at every synchronisation, which would make each step allocate afresh.
        let mut keep: u64 = u64::MAX;
        // SAFETY: the release threshold is a cuuint64_t attribute.
        unsafe {
            sys::cuMemPoolSetAttribute(
                created,
                sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
                (&mut keep as *mut u64).cast(),
            );
        }
        // Work queued against the old pool finishes before the switch.
        stream.synchronize().map_err(|e| e.to_string())?;
        // SAFETY: `created` is a pool of this device.
        let rc = unsafe { sys::cuDeviceSetMemPool(ordinal, created) };
        if rc != sys::CUresult::CUDA_SUCCESS {
            return Err(format!("cuDeviceSetMemPool: {rc:?}"));
        }
        limits().push((ordinal, budget_bytes, created as usize));
        Ok(())
    }

    /// Registered host ranges and the tensors that own them.
    pub(crate) struct Pins {
        ctx: Option<std::sync::Arc<candle_core::cuda::cudarc::driver::CudaContext>>,
        ranges: Vec<(usize, usize)>,
        // Declared after `ranges` only for reading order; `Drop` unregisters before the
        // tensors (and their memory) are released.
        _tensors: Vec<candle_core::Tensor>,
    }

    fn host_range(t: &candle_core::Tensor) -> Option<(usize, usize)> {
        let (storage, _) = t.storage_and_layout();
        let candle_core::Storage::Cpu(cpu) = &*storage else {
            return None;
        };
        // Every storage type (quantized weights are U8 blocks) is a plain buffer.
        let (ptr, bytes) = super::cpu_bytes(cpu);
        (bytes > 0).then_some((ptr as usize, bytes))
    }

    impl Pins {
        pub(crate) fn new(tensors: Vec<candle_core::Tensor>, device: &Device) -> Self {
            let Device::Cuda(cuda) = device else {
                return Self {
                    ctx: None,
                    ranges: Vec::new(),
                    _tensors: tensors,
                };
            };
            let ctx = cuda.cuda_stream().context().clone();
            let mut ranges = Vec::new();
            if ctx.bind_to_thread().is_ok() {
                for t in &tensors {
                    let Some((ptr, bytes)) = host_range(t) else {
                        continue;
                    };
                    // SAFETY: the range is the live buffer of a CPU tensor kept alive in `self`
                    // until `drop` has unregistered it; candle never reallocates it.
                    let rc = unsafe {
                        sys::cuMemHostRegister_v2(
                            ptr as *mut std::ffi::c_void,
                            bytes,
                            sys::CU_MEMHOSTREGISTER_PORTABLE,
                        )
                    };
                    if rc == sys::CUresult::CUDA_SUCCESS {
                        ranges.push((ptr, bytes));
                    }
                }
            }
            Self {
                ctx: Some(ctx),
                ranges,
                _tensors: tensors,
            }
        }

        pub(crate) fn bytes(&self) -> u64 {
            self.ranges.iter().map(|&(_, b)| b as u64).sum()
        }
    }

    impl Drop for Pins {
        fn drop(&mut self) {
            if let Some(ctx) = &self.ctx
                && ctx.bind_to_thread().is_ok()
            {
                for &(ptr, _) in &self.ranges {
                    // SAFETY: registered in `new`; the owning tensor is still alive here.
                    unsafe {
                        sys::cuMemHostUnregister(ptr as *mut std::ffi::c_void);
                    }
                }
            }
        }
    }
}

#[cfg(not(feature = "cuda"))]
mod imp {
    use candle_core::Device;

    use super::VramInfo;

    pub(super) fn vram(_device: &Device) -> Option<VramInfo> {
        None
    }

    pub(super) fn reset_peak(_device: &Device) {}

    pub(super) fn device_name(_device: &Device) -> Option<String> {
        None
    }

    pub(super) fn limit_vram(_device: &Device, _budget_bytes: u64) -> Result<(), String> {
        Ok(())
    }

    pub(super) fn trim(_device: &Device) {}

    pub(super) fn vram_limit(_device: &Device) -> Option<u64> {
        None
    }

    /// Without CUDA nothing is page-locked; the tensors are only kept alive.
    pub(crate) struct Pins {
        _tensors: Vec<candle_core::Tensor>,
    }

    impl Pins {
        pub(crate) fn new(tensors: Vec<candle_core::Tensor>, _device: &Device) -> Self {
            Self { _tensors: tensors }
        }

        pub(crate) fn bytes(&self) -> u64 {
            0
        }
    }
}
