//! Plumbing shared by the kernel wrappers: borrowing candle tensors as device pointers, loading
//! the embedded PTX, launching, and wrapping fresh device buffers as tensors.

use candle_core::cuda::cudarc::driver::sys::CUfunction_attribute_enum;
use candle_core::cuda::cudarc::driver::{CudaSlice, CudaView, DeviceRepr};
use candle_core::cuda::{CudaDType, CudaDevice, CudaStorage, WrapErr};
use candle_core::op::BackpropOp;
use candle_core::{DType, Device, Result, Shape, Storage, Tensor, bail};

/// PTX of `kernels/attention.cu`.
pub(crate) const ATTENTION_PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/attention.ptx"));
/// PTX of `kernels/conv.cu`.
pub(crate) const CONV_PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/conv.ptx"));
/// PTX of `kernels/fused.cu`.
pub(crate) const FUSED_PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/fused.ptx"));

/// The CUDA device of a tensor, or an error naming what was passed.
pub(crate) fn cuda_device(t: &Tensor, what: &str) -> Result<CudaDevice> {
    match t.device() {
        Device::Cuda(dev) => Ok(dev.clone()),
        other => bail!("{what}: expected a CUDA tensor, got one on {other:?}"),
    }
}

/// Kernel-name suffix of a storage type.
pub(crate) fn type_suffix(dtype: DType) -> Result<&'static str> {
    Ok(match dtype {
        DType::BF16 => "bf16",
        DType::F16 => "f16",
        DType::F32 => "f32",
        other => bail!("no CUDA kernel for {other:?} tensors"),
    })
}

/// Runs `f` with a device view of `t`'s elements starting at its layout offset.
pub(crate) fn with_view<T: CudaDType + DeviceRepr, R>(
    t: &Tensor,
    f: impl FnOnce(CudaView<'_, T>) -> Result<R>,
) -> Result<R> {
    let (storage, layout) = t.storage_and_layout();
    let Storage::Cuda(cuda) = &*storage else {
        bail!("expected a CUDA tensor");
    };
    let slice = cuda.as_cuda_slice::<T>()?;
    f(slice.slice(layout.start_offset()..))
}

/// Element strides of `t`, which must be `rank` dimensional.
pub(crate) fn strides(t: &Tensor, rank: usize) -> Result<Vec<i64>> {
    let stride = t.stride();
    if stride.len() != rank {
        bail!("expected a rank-{rank} tensor, got shape {:?}", t.shape());
    }
    Ok(stride.iter().map(|&s| s as i64).collect())
}

/// Loads (once per device) and returns a kernel of one of the embedded modules.
pub(crate) fn function(
    dev: &CudaDevice,
    name: &str,
    module: &'static str,
    ptx: &'static str,
    dynamic_smem_bytes: u32,
) -> Result<candle_core::cuda::cudarc::driver::CudaFunction> {
    let func = dev.get_or_load_custom_func(name, module, ptx)?;
    if dynamic_smem_bytes > 48 * 1024 {
        // Above 48 KiB a kernel must opt in to more dynamic shared memory.
        func.set_attribute(
            CUfunction_attribute_enum::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
            dynamic_smem_bytes as i32,
        )
        .w()?;
    }
    Ok(func.into_cuda_function())
}

/// A new uninitialised device buffer of `len` elements (no memset: outputs are written whole
/// by the kernel that fills them, and a memset per output costs a pass over it).
///
/// # Safety
///
/// The caller must launch a kernel that writes all `len` elements before any of them is read or
/// the buffer is handed out.
pub(crate) unsafe fn alloc<T: DeviceRepr>(dev: &CudaDevice, len: usize) -> Result<CudaSlice<T>> {
    // SAFETY: the caller upholds this function's contract, which is `CudaDevice::alloc`'s.
    unsafe { dev.alloc::<T>(len) }
}

/// Wraps a device buffer as a contiguous tensor of `shape`.
pub(crate) fn into_tensor<T: CudaDType>(
    slice: CudaSlice<T>,
    dev: &CudaDevice,
    shape: impl Into<Shape>,
) -> Tensor {
    let storage = CudaStorage::wrap_cuda_slice(slice, dev.clone());
    Tensor::from_storage(Storage::Cuda(storage), shape, BackpropOp::none(), false)
}
