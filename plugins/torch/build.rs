//! aurora-torch's build script:
//! - finds the libtorch torch-sys linked (`DEP_TCH_LIBTORCH_LIB`, else `$LIBTORCH/lib`),
//! - exports its version as `AURORA_LIBTORCH_VERSION` (read from `build-version` of a
//!   libtorch zip, or `version.py` of a pip-installed torch; "unknown" otherwise),
//! - re-exports the lib dir to dependents (`DEP_AURORA_TORCH_LIBTORCH_LIB`),
//! - emits the rpath / CUDA force-link args for this crate's own tests (build/link.rs),
//! - compiles the C++ shims for what tch does not expose: determinism switches and libtorch's
//!   fused AdamW (`src/shim.cpp`), fused GELU and cross-entropy kernels (`src/kernels.cpp`),
//!   and torch.distributed's c10d engine (`src/dist.cpp`: TCPStore, Gloo, and NCCL where the
//!   libtorch has CUDA and the NCCL headers are installed beside it).

include!("build/link.rs");
include!("build/version.rs");

use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=build/link.rs");
    println!("cargo:rerun-if-changed=build/version.rs");
    println!("cargo:rerun-if-changed=src/shim.cpp");
    println!("cargo:rerun-if-changed=src/kernels.cpp");
    println!("cargo:rerun-if-changed=src/dist.cpp");
    println!("cargo:rerun-if-env-changed=AURORA_GLOO_INCLUDE");
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-env-changed=LIBTORCH_INCLUDE");
    println!("cargo:rerun-if-env-changed=LIBTORCH_CXX11_ABI");

    let lib = libtorch_lib_dir();
    let root = lib.parent().map(Path::to_path_buf).unwrap_or_else(|| lib.clone());

    let version = libtorch_version(&root);
    println!("cargo:rustc-env=AURORA_LIBTORCH_VERSION={version}");
    println!("cargo:rustc-env=AURORA_LIBTORCH_LIB={}", lib.display());
    println!("cargo:libtorch_lib={}", lib.display());
    println!("cargo:libtorch_version={version}");

    libtorch_link::emit_link_args(&lib);

    // Same flags as torch-sys uses for its own C++ wrapper.
    let include = std::env::var_os("LIBTORCH_INCLUDE").map(PathBuf::from).unwrap_or_else(|| root.clone());
    let cxx11_abi = std::env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".to_owned());
    let cxx = || {
        let mut build = cc::Build::new();
        build
            .cpp(true)
            .pic(true)
            .warnings(false)
            .include(include.join("include"))
            .include(include.join("include/torch/csrc/api/include"))
            .flag("-std=c++17")
            .define("_GLIBCXX_USE_CXX11_ABI", cxx11_abi.as_str())
            .define("GLOG_USE_GLOG_EXPORT", None);
        build
    };
    // The fused kernels: optimised in every profile (tests train in the dev profile); without
    // floating-point contraction, so that each instruction-set clone computes the same bits; and
    // without trapping math, which only lets the AVX2 and SSE2 clones vectorise the branch-free
    // clamps (no result changes).
    let mut kernels = cxx();
    kernels.file("src/kernels.cpp").opt_level(3).flag("-ffp-contract=off").flag("-fno-trapping-math");
    // With an OpenMP libtorch, `at::parallel_for` is an inline `#pragma omp parallel`: without
    // -fopenmp it runs on one thread. The kernels then call the very libgomp libtorch loads.
    if let Some(gomp) = libtorch_openmp(&lib, &include) {
        kernels.flag("-fopenmp");
        println!("cargo:rustc-link-search=native={}", lib.display());
        println!("cargo:rustc-link-lib=dylib:+verbatim={gomp}");
    }
    kernels.compile("aurora_torch_kernels");
    let mut build = cxx();
    build.file("src/shim.cpp");
    // c10d's Gloo backend: libtorch exports it, but its wheel ships no gloo headers, which
    // ProcessGroupGloo.hpp includes; Debian's libgloo-dev has them (only the declarations are
    // used: the code is libtorch's own).
    let gloo = gloo_include();
    build.define("USE_C10D_GLOO", None).file("src/dist.cpp");
    if gloo != Path::new("/usr/include") {
        build.include(&gloo);
    }
    if let Some(dirs) = nccl_includes(&lib) {
        build.define("USE_C10D_NCCL", None).define("AURORA_WITH_NCCL", None);
        for dir in dirs {
            build.include(dir);
        }
        println!("cargo:rustc-cfg=aurora_nccl");
    }
    println!("cargo:rustc-check-cfg=cfg(aurora_nccl)");
    build.compile("aurora_torch_shim");
}

/// The OpenMP runtime libtorch's `at::parallel_for` runs on, when its `ATen/Config.h` says
/// `AT_PARALLEL_OPENMP 1`: the `libgomp*.so*` shipped beside libtorch (a wheel's `libgomp.so.1`,
/// a zip's hashed `libgomp-<hash>.so.1`), else the system's `libgomp.so.1`.
fn libtorch_openmp(lib: &Path, include: &Path) -> Option<String> {
    let config = std::fs::read_to_string(include.join("include/ATen/Config.h")).ok()?;
    if !config.lines().any(|l| l.split_whitespace().eq(["#define", "AT_PARALLEL_OPENMP", "1"])) {
        return None;
    }
    let shipped = std::fs::read_dir(lib).ok().and_then(|dir| {
        dir.filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|name| name.starts_with("libgomp") && name.contains(".so"))
            .min()
    });
    Some(shipped.unwrap_or_else(|| "libgomp.so.1".to_owned()))
}

fn libtorch_lib_dir() -> PathBuf {
    if let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        return PathBuf::from(lib);
    }
    match std::env::var("LIBTORCH") {
        Ok(root) => Path::new(&root).join("lib"),
        // torch-sys would have failed already; keep going with a harmless path.
        Err(_) => PathBuf::from("/usr/lib"),
    }
}

/// The directory holding `gloo/` headers: `AURORA_GLOO_INCLUDE`, else the system's.
fn gloo_include() -> PathBuf {
    let dir =
        std::env::var_os("AURORA_GLOO_INCLUDE").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/usr/include"));
    if !dir.join("gloo/config.h").is_file() {
        panic!(
            "aurora-torch: the Gloo headers are missing ({} not found). torch.distributed's Gloo backend is \
             compiled into libtorch, but its headers are not shipped with it: install Debian's libgloo-dev \
             (`apt-get install libgloo-dev`; `.ci/run` does this) or point AURORA_GLOO_INCLUDE at a directory \
             holding gloo/",
            dir.join("gloo/config.h").display()
        );
    }
    dir
}

/// Include directories for ProcessGroupNCCL.hpp (nccl.h and the CUDA runtime headers) when the
/// libtorch has CUDA: a pip layout's `nvidia/*/include`, else the system CUDA toolkit. `None` on
/// a CPU build (or when AURORA_TORCH_CUDA=0), so the CPU build never needs them.
fn nccl_includes(lib: &Path) -> Option<Vec<PathBuf>> {
    let dirs = libtorch_link::runtime_dirs(lib);
    if !libtorch_link::force_link_torch_cuda(lib, &dirs) {
        return None;
    }
    let mut includes: Vec<PathBuf> =
        dirs.iter().filter_map(|d| d.parent()).map(|d| d.join("include")).filter(|d| d.is_dir()).collect();
    includes.push(PathBuf::from("/usr/local/cuda/include"));
    let has = |file: &str| includes.iter().any(|d| d.join(file).is_file());
    if has("nccl.h") && has("cuda_runtime_api.h") {
        Some(includes)
    } else {
        println!(
            "cargo:warning=libtorch has CUDA but nccl.h or cuda_runtime_api.h was not found beside it: building \
             without the NCCL backend (install the nvidia-nccl and nvidia-cuda-runtime wheels' headers)"
        );
        None
    }
}
