// Emits the libtorch rpath for the aurora-worker binary (see plugins/torch/build/link.rs), so it
// starts without LD_LIBRARY_PATH.
include!("../torch/build/link.rs");
fn main() {
    emit_link_args_for_dependent();
}
