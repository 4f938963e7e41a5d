// Shared libtorch link logic for build scripts. Included with `include!` (not a crate: build
// scripts of this workspace must stay dependency-free and fast) by:
//   - plugins/torch/build.rs  (aurora-torch's own tests), and
//   - build.rs at the repo root (the `aurora` binary and its tests),
// and by any future crate whose binaries or test binaries link tch: give it a build.rs of
//   include!("<relative path>/plugins/torch/build/link.rs");
//   fn main() { emit_link_args_for_dependent(); }
// and a direct dependency on `aurora-torch` (which exports the libtorch lib dir as metadata).
//
// Why: torch-sys only adds `-L <libtorch>/lib`; cargo does not put directories outside
// `target/` on the runtime search path, so without an rpath (or LD_LIBRARY_PATH) every binary
// fails at start with "libtorch_cpu.so: cannot open shared object file".

#[allow(dead_code)]
mod libtorch_link {
    use std::path::{Path, PathBuf};

    /// Directories a binary linking libtorch needs on its runtime search path: the libtorch
    /// lib dir, and for a pip-installed torch (`<site>/torch/lib`) every `<site>/nvidia/*/lib`
    /// (libcudart, libcupti, and on a CUDA install cublas, cudnn, nccl...). libtorch_cpu.so's
    /// own DT_RPATH already points there, but listing them keeps `ldd` and dlopen-based
    /// loading honest.
    pub fn runtime_dirs(lib: &Path) -> Vec<PathBuf> {
        let mut dirs = vec![lib.to_path_buf()];
        if let Some(site) = lib.parent().and_then(Path::parent) {
            let nvidia = site.join("nvidia");
            if let Ok(entries) = std::fs::read_dir(&nvidia) {
                let mut found: Vec<PathBuf> = entries
                    .filter_map(Result::ok)
                    .map(|e| e.path().join("lib"))
                    .filter(|p| p.is_dir())
                    .collect();
                found.sort();
                dirs.extend(found);
            }
        }
        dirs
    }

    /// Whether `libtorch_cuda.so` must be force-linked. Rust links with `--as-needed`, which
    /// drops it (nothing references its symbols) and leaves CUDA invisible at run time. But
    /// the pip CPU install (torch wheel with `--no-deps`) also ships `libtorch_cuda.so`,
    /// without cuBLAS/cuDNN/NCCL: force-linking it there would make every binary fail to
    /// start. So: only when the CUDA libraries it needs are present too.
    /// `AURORA_TORCH_CUDA=1|0` overrides the detection.
    pub fn force_link_torch_cuda(lib: &Path, dirs: &[PathBuf]) -> bool {
        match std::env::var("AURORA_TORCH_CUDA").as_deref() {
            Ok("1") | Ok("true") => return true,
            Ok("0") | Ok("false") => return false,
            _ => {}
        }
        if !lib.join("libtorch_cuda.so").exists() {
            return false;
        }
        let system = [Path::new("/usr/local/cuda/lib64"), Path::new("/usr/lib/x86_64-linux-gnu")];
        dirs.iter()
            .map(PathBuf::as_path)
            .chain(system)
            .any(|dir| has_file_starting_with(dir, "libcublas"))
    }

    fn has_file_starting_with(dir: &Path, prefix: &str) -> bool {
        std::fs::read_dir(dir).is_ok_and(|entries| {
            entries
                .filter_map(Result::ok)
                .any(|e| e.file_name().to_string_lossy().starts_with(prefix))
        })
    }

    /// Prints the `cargo:rustc-link-arg` lines for the package whose build script calls this.
    /// (`rustc-link-arg` applies to that package's bins, tests, examples and benches only.)
    pub fn emit_link_args(lib: &Path) {
        println!("cargo:rerun-if-env-changed=AURORA_TORCH_CUDA");
        let dirs = runtime_dirs(lib);
        for dir in &dirs {
            println!("cargo:rustc-link-arg=-Wl,-rpath,{}", dir.display());
        }
        if force_link_torch_cuda(lib, &dirs) {
            println!("cargo:rustc-link-search=native={}", lib.display());
            println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
            println!("cargo:rustc-link-arg=-ltorch_cuda");
            println!("cargo:rustc-link-arg=-Wl,--as-needed");
        }
    }
}

/// For a crate depending on `aurora-torch`: emit the rpath (and CUDA force-link) args for the
/// libtorch aurora-torch was built against (`DEP_AURORA_TORCH_LIBTORCH_LIB`).
#[allow(dead_code)]
fn emit_link_args_for_dependent() {
    match std::env::var("DEP_AURORA_TORCH_LIBTORCH_LIB") {
        Ok(lib) => libtorch_link::emit_link_args(std::path::Path::new(&lib)),
        Err(_) => println!(
            "cargo:warning=DEP_AURORA_TORCH_LIBTORCH_LIB not set (does this package depend \
             directly on aurora-torch?): binaries will need LD_LIBRARY_PATH to find libtorch"
        ),
    }
}
