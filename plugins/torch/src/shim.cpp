// What tch 0.26 does not expose: PyTorch's global determinism switches
// (`torch.use_deterministic_algorithms(True)`, `cudnn.deterministic`, `cudnn.benchmark`).
// Compiled by build.rs with the same flags torch-sys uses for its own wrapper.
#include <ATen/Context.h>

extern "C" {

// Returns 0 on success, 1 if libtorch threw (it does not for these setters today).
int aurora_torch_set_deterministic(int on) {
  try {
    auto& ctx = at::globalContext();
    ctx.setDeterministicAlgorithms(on != 0, /*warn_only=*/false);
    ctx.setDeterministicCuDNN(on != 0);
    ctx.setBenchmarkCuDNN(false);
    return 0;
  } catch (...) {
    return 1;
  }
}

int aurora_torch_deterministic_algorithms(void) {
  return at::globalContext().deterministicAlgorithms() ? 1 : 0;
}

}  // extern "C"
