// Fused CPU kernels, with their backward, for the two parts of a GPTBigCode training step where
// libtorch makes several passes over large tensors (see kernels.rs):
// - GELU with the tanh approximation, after a linear layer's bias: libtorch evaluates tanh in the
//   forward and again in the backward, its most expensive element-wise function, and the bias
//   costs a copy into the matmul's output and a pass to sum its gradient. Here gelu(v) =
//   v * sigmoid(2u) (the same function: 0.5 * (1 + tanh(u)) = sigmoid(2u)) costs one exp each
//   way, and the backward sums the bias gradient as it writes the input's.
// - Cross-entropy summed over positions: log_softmax writes a copy of the logits, nll_loss's
//   backward zero-fills another and log_softmax's backward reads both. Here the forward keeps one
//   log-sum-exp per row and the backward writes softmax - one_hot in one pass.
//
// Bytes: every element-wise result is the same on every x86-64 instruction set (the build turns
// floating-point contraction off, and the loops are vectorised without reordering anything), and
// row sums add 16 fixed lanes in a fixed order, so the vector width cannot change a sum. Results
// do not depend on the thread count: threads split rows or elements, never a sum. Other devices
// and dtypes go to libtorch's own gelu and cross_entropy.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

namespace {

// One clone per x86-64 level, chosen when the library loads: AVX-512, AVX2, SSE2.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define AURORA_VECTOR_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define AURORA_VECTOR_CLONES
#endif

// exp(x), about 1 ulp: Cephes' expf (x = n ln 2 + r, a degree-5 polynomial in r, times 2^n),
// written without branches so that the loops calling it vectorise. Inputs are clamped to
// [-80, 80]: every result, and every value derived from it at the clamp (the compiler computes
// those for whole vectors), stays a normal float. A subnormal costs a microcode assist per
// vector: a 1 / (1 + e^88) gate made the GELU forward six times slower.
inline float exp_clamped(float x) {
  x = std::min(std::max(x, -80.0f), 80.0f);
  const float round_shift = 12582912.0f;  // 1.5 * 2^23: adding and subtracting it rounds to an integer
  const float n = (x * 1.44269504088896341f + round_shift) - round_shift;
  float r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float e = p * (r * r) + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return e * scale;
}

// GELU-tanh's u = sqrt(2 / pi) * (x + 0.044715 x^3), as 2u = kTwoU * (x + kCubic x^3), and the
// slope of its cubic term, 3 * kCubic (written out: the float product would round differently).
constexpr float kTwoU = 1.5957691216057308f;
constexpr float kCubic = 0.044715f;
constexpr float kCubicSlope = 0.134145f;

// sigmoid(2u) = 0.5 * (1 + tanh(u)).
inline float gelu_gate(float x) {
  const float two_u = kTwoU * (x + kCubic * (x * x * x));
  return 1.0f / (1.0f + exp_clamped(-two_u));
}

// y = gelu(x + bias) over `rows` rows of `cols`.
AURORA_VECTOR_CLONES void bias_gelu_tanh_forward_rows(const float* x, const float* bias, float* y, int64_t rows,
                                                      int64_t cols) {
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      const float v = x[r * cols + c] + bias[c];
      y[r * cols + c] = v * gelu_gate(v);
    }
  }
}

// The gradient of x + bias for columns [c0, c1) of every row, d/dv v * s(v) = s + v * s * (1 - s) * 2u'(v),
// and the bias gradient: each column summed in row order, in double.
AURORA_VECTOR_CLONES void bias_gelu_tanh_backward_columns(const float* x, const float* bias, const float* grad,
                                                          float* out, double* bias_grad, int64_t rows,
                                                          int64_t cols, int64_t c0, int64_t c1) {
  for (int64_t c = c0; c < c1; ++c) bias_grad[c] = 0.0;
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = c0; c < c1; ++c) {
      const float v = x[r * cols + c] + bias[c];
      const float s = gelu_gate(v);
      const float du = kTwoU * (1.0f + kCubicSlope * (v * v));
      const float g = grad[r * cols + c] * (s + v * (s * (1.0f - s)) * du);
      out[r * cols + c] = g;
      bias_grad[c] += g;
    }
  }
}

constexpr int64_t kLanes = 16;

// log(sum(exp(x))) of one row, from its maximum; lanes as in the header comment.
AURORA_VECTOR_CLONES float row_log_sum_exp(const float* x, int64_t v) {
  float lane_max[kLanes];
  std::fill(lane_max, lane_max + kLanes, -std::numeric_limits<float>::infinity());
  int64_t j = 0;
  for (; j + kLanes <= v; j += kLanes) {
    for (int64_t l = 0; l < kLanes; ++l) lane_max[l] = lane_max[l] < x[j + l] ? x[j + l] : lane_max[l];
  }
  float max = -std::numeric_limits<float>::infinity();
  for (int64_t l = 0; l < kLanes; ++l) max = std::max(max, lane_max[l]);
  for (int64_t k = j; k < v; ++k) max = std::max(max, x[k]);
  float lane_sum[kLanes] = {};
  for (j = 0; j + kLanes <= v; j += kLanes) {
    for (int64_t l = 0; l < kLanes; ++l) lane_sum[l] += exp_clamped(x[j + l] - max);
  }
  double sum = 0.0;
  for (int64_t l = 0; l < kLanes; ++l) sum += lane_sum[l];
  for (int64_t k = j; k < v; ++k) sum += exp_clamped(x[k] - max);
  return max + static_cast<float>(std::log(sum));
}

// grad * softmax(x) of one row, given its log-sum-exp.
AURORA_VECTOR_CLONES void row_scaled_softmax(const float* x, float lse, float grad, float* out, int64_t v) {
  for (int64_t j = 0; j < v; ++j) out[j] = grad * exp_clamped(x[j] - lse);
}

// Element-wise work in chunks that amortise a task (and stay in cache).
constexpr int64_t kGrain = 16384;

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// The bias gradient's columns go to threads in blocks of this many: a column's sum never
// depends on the thread count.
constexpr int64_t kColumnBlock = 64;

struct BiasGeluTanh : public torch::autograd::Function<BiasGeluTanh> {
  // input [..., cols] float, bias [cols] float.
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& input, const at::Tensor& bias_in) {
    const at::Tensor x = input.contiguous(), bias = bias_in.contiguous();
    ctx->save_for_backward({x, bias});
    at::Tensor y = at::empty_like(x);
    const int64_t cols = bias.numel(), rows = x.numel() / cols;
    const float *xp = x.const_data_ptr<float>(), *bp = bias.const_data_ptr<float>();
    float* yp = y.mutable_data_ptr<float>();
    at::parallel_for(0, rows, std::max<int64_t>(1, kGrain / cols), [&](int64_t begin, int64_t end) {
      bias_gelu_tanh_forward_rows(xp + begin * cols, bp, yp + begin * cols, end - begin, cols);
    });
    return y;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &bias = saved[1];
    const at::Tensor grad = grads[0].contiguous();
    const int64_t cols = bias.numel(), rows = x.numel() / cols;
    at::Tensor out = at::empty_like(x);
    std::vector<double> bias_grad(cols);
    const float *xp = x.const_data_ptr<float>(), *bp = bias.const_data_ptr<float>();
    const float* gp = grad.const_data_ptr<float>();
    float* op = out.mutable_data_ptr<float>();
    const int64_t blocks = (cols + kColumnBlock - 1) / kColumnBlock;
    at::parallel_for(0, blocks, 1, [&](int64_t begin, int64_t end) {
      bias_gelu_tanh_backward_columns(xp, bp, gp, op, bias_grad.data(), rows, cols, begin * kColumnBlock,
                                      std::min(end * kColumnBlock, cols));
    });
    at::Tensor bias_out = at::empty_like(bias);
    float* bo = bias_out.mutable_data_ptr<float>();
    for (int64_t c = 0; c < cols; ++c) bo[c] = static_cast<float>(bias_grad[c]);
    return {out, bias_out};
  }
};

struct CrossEntropySum : public torch::autograd::Function<CrossEntropySum> {
  // logits [n, v] float, labels [n] int64: the sum over rows whose label is not ignore_index of
  // log_sum_exp(row) - row[label].
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& input, const at::Tensor& labels_in,
                            int64_t ignore_index) {
    const at::Tensor logits = input.contiguous();
    const at::Tensor labels = labels_in.contiguous();
    const int64_t n = logits.size(0), v = logits.size(1);
    const float* xp = logits.const_data_ptr<float>();
    const int64_t* lp = labels.const_data_ptr<int64_t>();
    for (int64_t i = 0; i < n; ++i) {
      TORCH_CHECK(lp[i] == ignore_index || (lp[i] >= 0 && lp[i] < v), "cross-entropy: label ", lp[i],
                  " at position ", i, " is outside the vocabulary [0, ", v, ") and is not the ignored label ",
                  ignore_index);
    }
    at::Tensor lse = at::empty({n}, logits.options());
    float* sp = lse.mutable_data_ptr<float>();
    at::parallel_for(0, n, 1, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) sp[i] = row_log_sum_exp(xp + i * v, v);
    });
    double total = 0.0;
    for (int64_t i = 0; i < n; ++i) {
      if (lp[i] != ignore_index) total += static_cast<double>(sp[i] - xp[i * v + lp[i]]);
    }
    ctx->save_for_backward({logits, labels, lse});
    ctx->saved_data["ignore_index"] = ignore_index;
    return at::full({}, total, logits.options());
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &logits = saved[0], &labels = saved[1], &lse = saved[2];
    const int64_t ignore_index = ctx->saved_data["ignore_index"].toInt();
    const int64_t n = logits.size(0), v = logits.size(1);
    const float grad = grads[0].item<float>();
    at::Tensor out = at::empty_like(logits);
    const float* xp = logits.const_data_ptr<float>();
    const int64_t* lp = labels.const_data_ptr<int64_t>();
    const float* sp = lse.const_data_ptr<float>();
    float* op = out.mutable_data_ptr<float>();
    at::parallel_for(0, n, 1, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        float* row = op + i * v;
        if (lp[i] == ignore_index) {
          std::fill(row, row + v, 0.0f);
          continue;
        }
        row_scaled_softmax(xp + i * v, sp[i], grad, row, v);
        row[lp[i]] = grad * (exp_clamped(xp[i * v + lp[i]] - sp[i]) - 1.0f);
      }
    });
    return {out, at::Tensor(), at::Tensor()};
  }
};

bool fused_applies(const at::Tensor& t) {
  return t.device().is_cpu() && t.scalar_type() == at::kFloat;
}

thread_local std::string last_error;

// Runs `make`, hands its tensor to Rust as tch's `C_tensor` (a heap `at::Tensor`); on a C++
// exception, keeps its message for aurora_torch_kernel_error and returns 1.
template <typename F>
int hand_over(void** out, F make) {
  try {
    *out = new at::Tensor(make());
    return 0;
  } catch (const c10::Error& e) {
    last_error = e.what_without_backtrace();
    return 1;
  } catch (const std::exception& e) {
    last_error = e.what();
    return 1;
  } catch (...) {
    last_error = "unknown C++ exception";
    return 1;
  }
}

}  // namespace

extern "C" {

int aurora_torch_bias_gelu_tanh(const void* input, const void* bias, void** out) {
  return hand_over(out, [&] {
    const auto& x = *static_cast<const at::Tensor*>(input);
    const auto& b = *static_cast<const at::Tensor*>(bias);
    TORCH_CHECK(b.dim() == 1 && x.dim() >= 1 && x.size(-1) == b.size(0),
                "bias_gelu_tanh: expected a bias of the input's last dimension, got input ", x.sizes(), " and bias ",
                b.sizes());
    if (fused_applies(x) && fused_applies(b)) return BiasGeluTanh::apply(x, b);
    return at::gelu(x + b, "tanh");
  });
}

int aurora_torch_cross_entropy_sum(const void* logits, const void* labels, int64_t ignore_index, void** out) {
  return hand_over(out, [&] {
    const auto& x = *static_cast<const at::Tensor*>(logits);
    const auto& y = *static_cast<const at::Tensor*>(labels);
    TORCH_CHECK(x.dim() == 2 && y.dim() == 1 && x.size(0) == y.size(0),
                "cross-entropy: expected logits [n, vocab] and labels [n], got ", x.sizes(), " and ", y.sizes());
    TORCH_CHECK(y.scalar_type() == at::kLong, "cross-entropy: labels must be int64, got ", y.scalar_type());
    if (fused_applies(x) && y.device().is_cpu()) return CrossEntropySum::apply(x, y, ignore_index);
    return at::cross_entropy_loss(x, y, {}, at::Reduction::Sum, ignore_index, 0.0);
  });
}

// The message of the last failure on this thread; valid until the next call.
const char* aurora_torch_kernel_error(void) {
  return last_error.c_str();
}

}  // extern "C"
