// What tch 0.26 does not expose: PyTorch's global determinism switches
// (`torch.use_deterministic_algorithms(True)`, `cudnn.deterministic`, `cudnn.benchmark`), the
// CUDA autocast dtype, the fused AdamW kernel and dropping a gradient.
// Compiled by build.rs with the same flags torch-sys uses for its own wrapper.
#include <ATen/Context.h>
#include <ATen/autocast_mode.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/_fused_adamw.h>
#include <ATen/ops/full.h>
#include <c10/core/GradMode.h>

#include <vector>

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

// One AdamW step of one tensor with libtorch's fused kernel (`torch.optim.AdamW(fused=True)`:
// one pass over parameter, gradient and moments instead of ~8 element-wise operations). `step`
// is the step count after this update. Tensors are tch's `C_tensor`, i.e. `at::Tensor*`, and
// must be contiguous (the kernel walks their memory). Returns 0, 2 for a non-contiguous tensor,
// 1 if libtorch threw (shapes, dtypes or devices differ).
int aurora_torch_fused_adamw(void* param, const void* grad, void* exp_avg, void* exp_avg_sq, double step, double lr,
                             double beta1, double beta2, double weight_decay, double eps) {
  try {
    c10::NoGradGuard no_grad;
    std::vector<at::Tensor> p{*static_cast<at::Tensor*>(param)};
    std::vector<at::Tensor> g{*static_cast<const at::Tensor*>(grad)};
    std::vector<at::Tensor> m{*static_cast<at::Tensor*>(exp_avg)};
    std::vector<at::Tensor> v{*static_cast<at::Tensor*>(exp_avg_sq)};
    if (!(p[0].is_contiguous() && g[0].is_contiguous() && m[0].is_contiguous() && v[0].is_contiguous())) {
      return 2;
    }
    std::vector<at::Tensor> steps{at::full({}, step, p[0].options().dtype(at::kFloat))};
    at::_fused_adamw_(p, g, m, v, {}, steps, lr, beta1, beta2, weight_decay, eps, /*amsgrad=*/false,
                      /*maximize=*/false);
    return 0;
  } catch (...) {
    return 1;
  }
}

// `optimizer.zero_grad(set_to_none=True)` for one variable: the next backward writes the
// gradient instead of adding it to a buffer of zeros.
int aurora_torch_clear_grad(void* var) {
  try {
    static_cast<at::Tensor*>(var)->mutable_grad().reset();
    return 0;
  } catch (...) {
    return 1;
  }
}

}  // extern "C"
