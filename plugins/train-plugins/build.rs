//! Embeds the version of the libtorch the worker is built against (`AURORA_LIBTORCH_VERSION`), an
//! execution fact of training nodes, without linking libtorch (the `aurora` binary never does).
//! The libtorch is found as `cargo xtask` finds it (xtask/src/libtorch.rs): `$LIBTORCH`, else the
//! shared cache `${XDG_CACHE_HOME:-~/.cache}/aurora/libtorch-VERSION-{cuda,cpu}/torch` (CUDA
//! first), so `cargo build` and `cargo xtask run` give the same node keys. The version is read as
//! aurora-torch's build script reads it (plugins/torch/build/version.rs).

include!("../torch/build/version.rs");

use std::path::{Path, PathBuf};

fn cached_libtorch() -> Option<PathBuf> {
    let cache = match std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        Some(xdg) => PathBuf::from(xdg).join("aurora"),
        None => PathBuf::from(std::env::var_os("HOME")?).join(".cache").join("aurora"),
    };
    let mut dirs: Vec<String> = std::fs::read_dir(&cache)
        .ok()?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("libtorch-"))
        .collect();
    dirs.sort();
    ["-cuda", "-cpu"]
        .iter()
        .find_map(|flavor| dirs.iter().rev().find(|n| n.ends_with(flavor)))
        .map(|name| cache.join(name).join("torch"))
}

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-env-changed=XDG_CACHE_HOME");
    let root = std::env::var_os("LIBTORCH").map(PathBuf::from).or_else(cached_libtorch);
    let version = match &root {
        Some(root) => {
            // Only existing files: a missing one would make cargo rerun this script on every build.
            for file in ["build-version", "version.py"].map(|f| root.join(f)).iter().filter(|f| f.is_file()) {
                println!("cargo:rerun-if-changed={}", file.display());
            }
            libtorch_version(Path::new(root))
        }
        None => "unknown".to_owned(),
    };
    println!("cargo:rustc-env=AURORA_LIBTORCH_VERSION={version}");
}
