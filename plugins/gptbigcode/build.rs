// Emits the libtorch rpath for this crate's test binaries (see plugins/torch/build/link.rs).
include!("../torch/build/link.rs");
fn main() {
    emit_link_args_for_dependent();
}
