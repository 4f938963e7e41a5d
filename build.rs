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
    // Run records name the compiler that built the binary.
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let version = std::process::Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=AURORA_RUSTC_VERSION={version}");
}
