//! Embeds the version of the libtorch the worker is built against (`AURORA_LIBTORCH_VERSION`), an
//! execution fact of training nodes, without linking libtorch (the `aurora` binary never does).
//! Same lookup as aurora-torch's build script (plugins/torch/build/version.rs).

include!("../torch/build/version.rs");

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    let version = match std::env::var("LIBTORCH") {
        Ok(root) => libtorch_version(std::path::Path::new(&root)),
        Err(_) => "unknown".to_owned(),
    };
    println!("cargo:rustc-env=AURORA_LIBTORCH_VERSION={version}");
}
