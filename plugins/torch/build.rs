//! aurora-torch's build script:
//! - finds the libtorch torch-sys linked (`DEP_TCH_LIBTORCH_LIB`, else `$LIBTORCH/lib`),
//! - exports its version as `AURORA_LIBTORCH_VERSION` (read from `build-version` of a
//!   libtorch zip, or `version.py` of a pip-installed torch; "unknown" otherwise),
//! - re-exports the lib dir to dependents (`DEP_AURORA_TORCH_LIBTORCH_LIB`),
//! - emits the rpath / CUDA force-link args for this crate's own tests (build/link.rs),
//! - compiles a tiny C++ shim for what tch does not expose (deterministic algorithms).

include!("build/link.rs");
include!("build/version.rs");

use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=build/link.rs");
    println!("cargo:rerun-if-changed=build/version.rs");
    println!("cargo:rerun-if-changed=src/shim.cpp");
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
    cc::Build::new()
        .cpp(true)
        .pic(true)
        .warnings(false)
        .include(include.join("include"))
        .flag("-std=c++17")
        .define("_GLIBCXX_USE_CXX11_ABI", cxx11_abi.as_str())
        .define("GLOG_USE_GLOG_EXPORT", None)
        .file("src/shim.cpp")
        .compile("aurora_torch_shim");
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
