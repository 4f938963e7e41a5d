// What tch 0.26 does not expose: PyTorch's global determinism switches
// (`torch.use_deterministic_algorithms(True)`, `cudnn.deterministic`, `cudnn.benchmark`) and the
// CUDA autocast dtype.
// Compiled by build.rs with the same flags torch-sys uses for its own wrapper.
#include <ATen/Context.h>
#include <ATen/autocast_mode.h>

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

// tch's `autocast` enables CUDA autocast but cannot choose its dtype (libtorch's default is
// float16); mixed-precision training here means bfloat16, as on the paper's MI250X.
int aurora_torch_set_cuda_autocast_bf16(void) {
  try {
    at::autocast::set_autocast_dtype(at::kCUDA, at::kBFloat16);
    return 0;
  } catch (...) {
    return 1;
  }
}

int aurora_torch_cuda_autocast_is_bf16(void) {
  return at::autocast::get_autocast_dtype(at::kCUDA) == at::kBFloat16 ? 1 : 0;
}

}  // extern "C"
