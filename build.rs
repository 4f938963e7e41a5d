//! Build script of the `aurora` binary: records the compiler version for run records.
//!
//! The binary deliberately does not link libtorch: its static initialisation and teardown cost
//! about 230 ms per process (measured by `cargo xtask bench`), which would dominate every no-op
//! rerun. Crates that link tch carry their own rpath logic (plugins/torch/build/link.rs).

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
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
