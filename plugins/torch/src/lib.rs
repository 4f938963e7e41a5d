//! aurora-torch: the one crate of the project that links libtorch (through `tch`).
//!
//! It owns what every tch-based plugin needs before touching a tensor: which libtorch it was
//! built against ([`libtorch_version`], an execution fact that enters node keys), which device
//! to run on ([`DeviceSpec`], [`resolve`]) and the determinism switches ([`set_deterministic`]).
//!
//! Binaries and test binaries linking this crate need libtorch on their runtime search path:
//! their package's build script must emit the rpath (see `plugins/torch/build/link.rs`).

mod device;
pub mod dist;
pub mod kernels;

pub use device::DeviceSpec;
pub use tch;

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
pub enum TorchError {
    /// A device string that is not `auto`, `cpu` or `cuda:N`.
    #[error("invalid device {input:?}: expected \"auto\", \"cpu\" or \"cuda:N\" (e.g. \"cuda:0\")")]
    InvalidDevice { input: String },
    /// CUDA was asked for but this libtorch build has none (or no GPU is visible).
    #[error(
        "device `{spec}` requested but CUDA is not available (libtorch {version} at {lib}): \
         build with `cargo xtask libtorch --cuda` (or point LIBTORCH at a CUDA/ROCm libtorch), \
         rebuild, and check that a GPU is visible; or use device \"cpu\""
    )]
    CudaUnavailable { spec: DeviceSpec, version: &'static str, lib: &'static str },
    /// `cuda:N` with N beyond the visible devices.
    #[error("device `cuda:{index}` requested but only {count} CUDA device(s) are visible")]
    NoSuchCudaDevice { index: usize, count: i64 },
}

/// The version of the libtorch this crate was built against, e.g. `2.13.0+cu130` (read at
/// build time from `build-version` or `version.py`); `"unknown"` if it could not be read.
pub fn libtorch_version() -> &'static str {
    env!("AURORA_LIBTORCH_VERSION")
}

// Run records list the libtorch version next to aurora's own.
aurora_core::inventory::submit! {
    aurora_core::record::ToolVersion { name: "libtorch", version: || libtorch_version().to_string() }
}

/// The libtorch lib directory this crate was built against (for diagnostics only: never
/// put it in a cache key, it is an absolute path).
pub fn libtorch_lib_dir() -> &'static str {
    env!("AURORA_LIBTORCH_LIB")
}

/// Whether libtorch sees a usable CUDA (or ROCm, exposed as CUDA) device.
pub fn cuda_available() -> bool {
    tch::Cuda::is_available()
}

/// Turns a [`DeviceSpec`] into a concrete device: `auto` is `cuda:0` when CUDA is available,
/// else CPU; `cuda:N` is an error when CUDA is unavailable or N is out of range.
pub fn resolve(spec: DeviceSpec) -> Result<tch::Device, TorchError> {
    match spec {
        DeviceSpec::Cpu => Ok(tch::Device::Cpu),
        DeviceSpec::Auto => Ok(if cuda_available() { tch::Device::Cuda(0) } else { tch::Device::Cpu }),
        DeviceSpec::Cuda(index) => {
            if !cuda_available() {
                return Err(TorchError::CudaUnavailable { spec, version: libtorch_version(), lib: libtorch_lib_dir() });
            }
            let count = tch::Cuda::device_count();
            if i64::try_from(index).map_or(true, |i| i >= count) {
                return Err(TorchError::NoSuchCudaDevice { index, count });
            }
            Ok(tch::Device::Cuda(index))
        }
    }
}

unsafe extern "C" {
    fn aurora_torch_set_deterministic(on: i32) -> i32;
    fn aurora_torch_deterministic_algorithms() -> i32;
    fn aurora_torch_set_cuda_autocast_bf16() -> i32;
    fn aurora_torch_cuda_autocast_is_bf16() -> i32;
    fn aurora_torch_fused_adamw(
        param: *mut torch_sys::C_tensor,
        grad: *const torch_sys::C_tensor,
        exp_avg: *mut torch_sys::C_tensor,
        exp_avg_sq: *mut torch_sys::C_tensor,
        step: f64,
        lr: f64,
        beta1: f64,
        beta2: f64,
        weight_decay: f64,
        eps: f64,
    ) -> i32;
    fn aurora_torch_clear_grad(var: *mut torch_sys::C_tensor) -> i32;
}

/// The hyper-parameters of one AdamW step (see [`fused_adamw`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWStep {
    /// The step count after this update (1 for the first), for the bias corrections.
    pub step: u64,
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    /// Decoupled weight decay (`param *= 1 - lr * weight_decay`); 0 for none.
    pub weight_decay: f64,
    pub eps: f64,
}

/// `torch.optim.AdamW`'s update of `param` in place with libtorch's fused kernel
/// (`fused=True`): one pass over the parameter, its gradient and both moments.
///
/// # Panics
/// If a tensor is not contiguous, or libtorch refuses the update (shapes, dtypes or devices of
/// parameter, gradient and moments differ).
pub fn fused_adamw(
    param: &mut tch::Tensor,
    grad: &tch::Tensor,
    exp_avg: &mut tch::Tensor,
    exp_avg_sq: &mut tch::Tensor,
    s: &AdamWStep,
) {
    // SAFETY: the pointers are live tch tensors for the duration of the call; the function
    // catches every C++ exception.
    let rc = unsafe {
        aurora_torch_fused_adamw(
            param.as_mut_ptr(),
            grad.as_ptr(),
            exp_avg.as_mut_ptr(),
            exp_avg_sq.as_mut_ptr(),
            s.step as f64,
            s.lr,
            s.beta1,
            s.beta2,
            s.weight_decay,
            s.eps,
        )
    };
    assert_ne!(rc, 2, "fused AdamW: parameter, gradient and moments must be contiguous");
    assert_eq!(
        rc, 0,
        "libtorch refused the AdamW update (shapes, dtypes or devices of parameter, gradient and moments differ)"
    );
}

/// Makes this process's allocator keep the memory libtorch frees (every buffer up to 32 MiB comes
/// from the heap, and the heap is never trimmed) instead of handing it back to the kernel and
/// faulting fresh zeroed pages in at the next step: training allocates and frees the same
/// activations every step, and glibc's defaults spend ~5% of a CPU step in page faults. Peak
/// memory is what the step needs at most. Call once, early, in a process that runs libtorch.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes glibc's tunables; it is called before other threads allocate.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}

/// Drops a variable's gradient (`zero_grad(set_to_none=True)`): the next backward writes it
/// anew instead of adding to zeros, which saves a fill and an addition per parameter.
pub fn clear_grad(var: &mut tch::Tensor) {
    // SAFETY: a live tch tensor; the function catches every C++ exception.
    let rc = unsafe { aurora_torch_clear_grad(var.as_mut_ptr()) };
    assert_eq!(rc, 0, "libtorch refused to drop a gradient");
}

/// Makes `tch::autocast` on CUDA compute in bfloat16 (libtorch's default is float16, and tch
/// has no setter). Global to the process; call it before the first autocast region.
pub fn set_cuda_autocast_bf16() {
    // SAFETY: plain C functions from src/shim.cpp; they catch every C++ exception.
    let rc = unsafe { aurora_torch_set_cuda_autocast_bf16() };
    assert_eq!(rc, 0, "libtorch refused to set the CUDA autocast dtype");
}

/// Whether CUDA autocast computes in bfloat16 (see [`set_cuda_autocast_bf16`]).
pub fn cuda_autocast_is_bf16() -> bool {
    // SAFETY: as above.
    unsafe { aurora_torch_cuda_autocast_is_bf16() == 1 }
}

/// Makes libtorch computations reproducible: `threads` intra-op threads (results of CPU
/// reductions depend on the thread count, so it is part of the determinism contract) and
/// deterministic algorithms on (`torch.use_deterministic_algorithms(True)`, plus cuDNN
/// deterministic and no cuDNN benchmarking). Global to the process.
///
/// # Panics
/// If `threads < 1`.
pub fn set_deterministic(threads: i32) {
    assert!(threads >= 1, "set_deterministic: threads must be >= 1, got {threads}");
    tch::set_num_threads(threads);
    // SAFETY: plain C functions from src/shim.cpp; they catch every C++ exception.
    let rc = unsafe { aurora_torch_set_deterministic(1) };
    assert_eq!(rc, 0, "libtorch refused to enable deterministic algorithms");
}

/// Whether deterministic algorithms are on (see [`set_deterministic`]).
pub fn deterministic_algorithms() -> bool {
    // SAFETY: plain C getter from src/shim.cpp.
    unsafe { aurora_torch_deterministic_algorithms() != 0 }
}
