//! Build script of the `aurora` binary: emits the libtorch rpath (and, on a CUDA libtorch,
//! the torch_cuda force-link) so `target/*/aurora` and the root package's tests find libtorch
//! without LD_LIBRARY_PATH. The logic lives in plugins/torch/build/link.rs, shared with
//! aurora-torch's own build script; the libtorch location comes from aurora-torch
//! (`DEP_AURORA_TORCH_LIBTORCH_LIB`), which got it from torch-sys.

include!("plugins/torch/build/link.rs");

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=plugins/torch/build/link.rs");
    emit_link_args_for_dependent();
}
