//! Fused CPU kernels for a training step (`src/kernels.cpp`), each with its backward, where
//! libtorch's own ops make several passes over large tensors. On CPU float32 they replace
//! libtorch's op; on other devices and dtypes they are libtorch's op.
//!
//! They compute the same function as libtorch's up to rounding (about 1e-7 relative), not the
//! same bits. Their own bits do not depend on the instruction set the library picks when it
//! loads (AVX-512, AVX2 or SSE2) nor on the thread count.

use tch::{TchError, Tensor};

unsafe extern "C" {
    fn aurora_torch_bias_gelu_tanh(
        input: *const torch_sys::C_tensor,
        bias: *const torch_sys::C_tensor,
        out: *mut *mut torch_sys::C_tensor,
    ) -> i32;
    fn aurora_torch_cross_entropy_sum(
        logits: *const torch_sys::C_tensor,
        labels: *const torch_sys::C_tensor,
        ignore_index: i64,
        out: *mut *mut torch_sys::C_tensor,
    ) -> i32;
    fn aurora_torch_kernel_error() -> *const std::ffi::c_char;
}

/// Takes the tensor a kernel handed over, or the message of its C++ exception.
fn handed_over(rc: i32, out: *mut torch_sys::C_tensor) -> Result<Tensor, TchError> {
    if rc == 0 {
        // SAFETY: on success the kernel stored a fresh heap `at::Tensor`, which tch now owns.
        return Ok(unsafe { Tensor::from_ptr(out) });
    }
    // SAFETY: a NUL-terminated string owned by this thread's kernel state, copied at once.
    let message = unsafe { std::ffi::CStr::from_ptr(aurora_torch_kernel_error()) };
    Err(TchError::Torch(message.to_string_lossy().into_owned()))
}

/// GELU with the tanh approximation (`torch.nn.functional.gelu(x, approximate="tanh")`,
/// transformers' `gelu_pytorch_tanh`) of `x + bias`, the bias `[x.size(-1)]` being a linear
/// layer's, so that the layer's matmul needs no bias of its own. Computed as `v * sigmoid(2u)`,
/// which is `0.5 v (1 + tanh(u))`: one exponential per element forward and one backward, where
/// libtorch evaluates tanh in both; the backward sums the bias gradient (column by column, in
/// row order, in double) in the pass that writes the input's.
///
/// # Panics
/// If `bias` is not a vector of `x`'s last dimension.
pub fn bias_gelu_tanh(x: &Tensor, bias: &Tensor) -> Tensor {
    let mut out = std::ptr::null_mut();
    // SAFETY: live tch tensors in, an out-pointer the kernel fills on success; the kernel
    // catches every C++ exception.
    let rc = unsafe { aurora_torch_bias_gelu_tanh(x.as_ptr(), bias.as_ptr(), &mut out) };
    handed_over(rc, out).unwrap_or_else(|e| panic!("{e}"))
}

/// Cross-entropy of `logits` `[n, vocab]` against `labels` `[n]` (int64), summed over the rows
/// whose label is not `ignore_index` (`F.cross_entropy(.., reduction="sum", ignore_index=..)`).
/// On CPU float32 the forward keeps one log-sum-exp per row, not log-probabilities, and the
/// backward writes `grad * (softmax - one_hot)` in one pass; the sum is taken row by row in
/// double precision.
///
/// # Errors
/// Shapes other than `[n, vocab]` and `[n]`, labels that are not int64, and a label outside
/// `0..vocab` that is not `ignore_index` (the message names the position).
pub fn cross_entropy_sum(logits: &Tensor, labels: &Tensor, ignore_index: i64) -> Result<Tensor, TchError> {
    let mut out = std::ptr::null_mut();
    // SAFETY: as in `bias_gelu_tanh`.
    let rc = unsafe { aurora_torch_cross_entropy_sum(logits.as_ptr(), labels.as_ptr(), ignore_index, &mut out) };
    handed_over(rc, out)
}

#[cfg(test)]
mod tests {
    use tch::{Device, Kind, Reduction, Tensor};

    use super::*;

    fn max_relative_gap(ours: &Tensor, reference: &Tensor) -> f64 {
        let scale = reference.abs().max().double_value(&[]).max(1e-30);
        (ours - reference).abs().max().double_value(&[]) / scale
    }

    /// Values, gradients (input and bias) and their gaps to libtorch's gelu(tanh) of x + bias over
    /// the whole useful range, including the tails where the gate saturates.
    #[test]
    fn bias_gelu_tanh_is_libtorchs_up_to_rounding_forward_and_backward() {
        let x = Tensor::linspace(-30.0, 30.0, 200_000, (Kind::Float, Device::Cpu)).view([-1, 1000]);
        let g = Tensor::linspace(-2.0, 3.0, 200_000, (Kind::Float, Device::Cpu)).view([-1, 1000]);
        let b = Tensor::linspace(-0.5, 0.5, 1000, (Kind::Float, Device::Cpu));
        let leaf = |t: &Tensor| t.copy().set_requires_grad(true);
        let (ours_x, ours_b, ref_x, ref_b) = (leaf(&x), leaf(&b), leaf(&x), leaf(&b));
        let ours = bias_gelu_tanh(&ours_x, &ours_b);
        let reference = (&ref_x + &ref_b).gelu("tanh");
        assert!(max_relative_gap(&ours, &reference) < 1e-6, "forward gap {}", max_relative_gap(&ours, &reference));
        (&ours * &g).sum(Kind::Float).backward();
        (&reference * &g).sum(Kind::Float).backward();
        for (name, ours, reference) in [("input", &ours_x, &ref_x), ("bias", &ours_b, &ref_b)] {
            let gap = max_relative_gap(&ours.grad(), &reference.grad());
            assert!(gap < 1e-5, "{name} gradient gap {gap}");
        }
        // Far tails: exactly v (the gate is 1) and a zero of v's sign.
        let zero = Tensor::zeros([1], (Kind::Float, Device::Cpu));
        assert_eq!(bias_gelu_tanh(&Tensor::from_slice(&[100.0f32]), &zero).double_value(&[0]), 100.0);
        assert!(bias_gelu_tanh(&Tensor::from_slice(&[-100.0f32]), &zero).double_value(&[0]).abs() < 1e-30);
    }

    #[test]
    fn bias_gelu_tanh_gives_the_same_bits_at_every_thread_count_and_on_strided_input() {
        let x = (Tensor::randn([300, 257], (Kind::Float, Device::Cpu)) * 4.0).set_requires_grad(true);
        let b = Tensor::randn([257], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let g = Tensor::randn([300, 257], (Kind::Float, Device::Cpu));
        let before = tch::get_num_threads();
        let mut runs = Vec::new();
        for threads in [1, 2, 3] {
            tch::set_num_threads(threads);
            let y = bias_gelu_tanh(&x, &b);
            let grads = Tensor::run_backward(&[(&y * &g).sum(Kind::Float)], &[&x, &b], false, false);
            runs.push((y, grads));
        }
        tch::set_num_threads(before);
        for (y, grads) in &runs[1..] {
            assert!(y.equal(&runs[0].0));
            assert!(grads[0].equal(&runs[0].1[0]) && grads[1].equal(&runs[0].1[1]));
        }
        let strided = x.detach().tr().contiguous().tr();
        assert!(bias_gelu_tanh(&strided, &b).equal(&runs[0].0), "a strided view gives the same values");
    }

    /// Where the fused kernels do not apply (here float64; on a GPU the same branch), the result
    /// is libtorch's op itself, bit for bit, with libtorch's gradient.
    #[test]
    fn other_dtypes_run_libtorchs_own_ops() {
        let x = Tensor::randn([8, 33], (Kind::Double, Device::Cpu)).set_requires_grad(true);
        let b = Tensor::randn([33], (Kind::Double, Device::Cpu));
        assert!(bias_gelu_tanh(&x, &b).equal(&(&x + &b).gelu("tanh")));
        let labels = Tensor::randint(33, [8], (Kind::Int64, Device::Cpu));
        let ours = cross_entropy_sum(&x, &labels, -100).unwrap();
        let reference = x.cross_entropy_loss::<Tensor>(&labels, None, Reduction::Sum, -100, 0.0);
        assert!(ours.equal(&reference));
        let grads = |loss: &Tensor| Tensor::run_backward(&[loss], &[&x], false, false).remove(0);
        assert!(grads(&ours).equal(&grads(&reference)));
    }

    #[test]
    fn bias_gelu_tanh_refuses_a_bias_of_another_width() {
        let x = Tensor::zeros([3, 10], (Kind::Float, Device::Cpu));
        let result = std::panic::catch_unwind(|| bias_gelu_tanh(&x, &Tensor::zeros([9], (Kind::Float, Device::Cpu))));
        let message = *result.unwrap_err().downcast::<String>().unwrap();
        assert!(message.contains("expected a bias of the input's last dimension"), "{message}");
    }

    #[test]
    fn cross_entropy_sum_is_libtorchs_up_to_rounding_and_skips_ignored_rows() {
        let logits = (Tensor::randn([37, 1001], (Kind::Float, Device::Cpu)) * 3.0).set_requires_grad(true);
        let reference_logits = logits.detach().copy().set_requires_grad(true);
        let labels = Tensor::randint(1001, [37], (Kind::Int64, Device::Cpu));
        let _ = labels.narrow(0, 5, 3).fill_(-100);
        let ours = cross_entropy_sum(&logits, &labels, -100).unwrap();
        let reference = reference_logits.cross_entropy_loss::<Tensor>(&labels, None, Reduction::Sum, -100, 0.0);
        assert!(max_relative_gap(&ours, &reference) < 1e-6);
        (&ours * 0.25).backward();
        (&reference * 0.25).backward();
        assert!(max_relative_gap(&logits.grad(), &reference_logits.grad()) < 1e-6);
        assert_eq!(logits.grad().narrow(0, 5, 3).abs().sum(Kind::Float).double_value(&[]), 0.0);
    }

    #[test]
    fn cross_entropy_sum_names_a_label_outside_the_vocabulary() {
        let logits = Tensor::zeros([3, 10], (Kind::Float, Device::Cpu));
        let labels = Tensor::from_slice(&[1i64, 10, 2]);
        let err = cross_entropy_sum(&logits, &labels, -100).unwrap_err().to_string();
        assert!(err.contains("label 10 at position 1 is outside the vocabulary [0, 10)"), "{err}");
        let err = cross_entropy_sum(&logits, &Tensor::from_slice(&[1i64, 2]), -100).unwrap_err().to_string();
        assert!(err.contains("expected logits [n, vocab] and labels [n]"), "{err}");
    }

    #[test]
    fn cross_entropy_sum_is_the_same_bits_at_every_thread_count() {
        let mut logits = Tensor::randn([64, 4099], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let labels = Tensor::randint(4099, [64], (Kind::Int64, Device::Cpu));
        let before = tch::get_num_threads();
        let mut runs = Vec::new();
        for threads in [1, 2] {
            tch::set_num_threads(threads);
            logits.zero_grad();
            let loss = cross_entropy_sum(&logits, &labels, -100).unwrap();
            loss.backward();
            runs.push((loss.double_value(&[]), logits.grad().copy()));
        }
        tch::set_num_threads(before);
        assert_eq!(runs[0].0.to_bits(), runs[1].0.to_bits());
        assert!(runs[0].1.equal(&runs[1].1));
    }
}
