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
