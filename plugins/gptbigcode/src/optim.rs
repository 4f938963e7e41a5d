//! AdamW with weight decay only on matrices and embeddings, and global-norm gradient clipping.
//!
//! Biases and LayerNorm parameters are created in [`NO_DECAY_GROUP`]
//! by the model; tch's optimizer keeps per-group options, so that group gets weight decay 0.

use aurora_torch::tch::{self, Kind, Tensor, nn, nn::OptimizerConfig};
pub use aurora_train::optimizer::AdamWConfig;

use crate::model::NO_DECAY_GROUP;

/// An optimizer over every trainable variable of `vs` at learning rate `lr`.
pub trait BuildAdamW {
    fn build(&self, vs: &nn::VarStore, lr: f64) -> Result<nn::Optimizer, tch::TchError>;
}

impl BuildAdamW for AdamWConfig {
    fn build(&self, vs: &nn::VarStore, lr: f64) -> Result<nn::Optimizer, tch::TchError> {
        let mut opt =
            nn::AdamW { beta1: self.beta1, beta2: self.beta2, wd: self.weight_decay, eps: self.eps, amsgrad: false }
                .build(vs, lr)?;
        opt.set_weight_decay_group(NO_DECAY_GROUP, 0.0);
        Ok(opt)
    }
}

/// Global L2 norm of the gradients of `vs`'s trainable variables (those without a gradient
/// count as zero), computed in float32/float64 as the gradients are.
pub fn grad_norm(vs: &nn::VarStore) -> f64 {
    tch::no_grad(|| {
        let norms: Vec<Tensor> = vs
            .trainable_variables()
            .iter()
            .map(|v| v.grad())
            .filter(Tensor::defined)
            .map(|g| g.norm().to_kind(Kind::Double))
            .collect();
        if norms.is_empty() { 0.0 } else { Tensor::stack(&norms, 0).norm().double_value(&[]) }
    })
}

/// Scales the gradients so their global norm is at most `max_norm` (as
/// `torch.nn.utils.clip_grad_norm_`, factor `max_norm / (norm + 1e-6)`), returning the norm
/// before clipping.
pub fn clip_grad_norm(vs: &nn::VarStore, max_norm: f64) -> f64 {
    let norm = grad_norm(vs);
    scale_grads(vs, max_norm / (norm + 1e-6));
    norm
}

/// Multiplies every gradient by `factor` when it is below 1 (the clipping step, given the norm).
pub fn scale_grads(vs: &nn::VarStore, factor: f64) {
    if factor < 1.0 {
        tch::no_grad(|| {
            for v in vs.trainable_variables() {
                let mut g = v.grad();
                if g.defined() {
                    let _ = g.g_mul_scalar_(factor);
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{GptBigCode, GptBigCodeConfig};
    use tch::Device;

    /// With zero gradients, Adam's update is zero and only decoupled weight decay moves the
    /// weights: matrices shrink by (1 - lr * wd), biases and LayerNorm stay put.
    #[test]
    fn no_weight_decay_on_biases_and_layernorm() {
        let vs = nn::VarStore::new(Device::Cpu);
        let cfg = GptBigCodeConfig::tiny(1, 32, 2, 16, 8);
        GptBigCode::seeded(&vs.root(), &cfg, 0).unwrap();
        let before: std::collections::HashMap<String, Tensor> =
            vs.variables().into_iter().map(|(k, v)| (k, v.copy())).collect();
        // Make the biases non-zero so a decay would show.
        tch::no_grad(|| {
            for (name, mut v) in vs.variables() {
                if name.ends_with(".bias") {
                    let _ = v.fill_(0.5);
                }
            }
        });
        let mut opt = AdamWConfig { weight_decay: 0.5, ..AdamWConfig::default() }.build(&vs, 0.1).unwrap();
        let loss =
            vs.trainable_variables().iter().map(|v| v.sum(Kind::Float) * 0.0).fold(Tensor::from(0f32), |a, b| a + b);
        opt.zero_grad();
        loss.backward();
        opt.step();
        let after = vs.variables();
        let w = "transformer.h.0.attn.c_attn.weight";
        assert!(after[w].allclose(&(&before[w] * (1.0 - 0.1 * 0.5)), 1e-6, 1e-7, false));
        assert!(after["transformer.wte.weight"].allclose(
            &(&before["transformer.wte.weight"] * 0.95),
            1e-6,
            1e-7,
            false
        ));
        for name in ["transformer.h.0.ln_1.weight", "transformer.ln_f.weight"] {
            assert!(after[name].equal(&before[name]), "{name} was decayed");
        }
        for name in ["transformer.h.0.mlp.c_fc.bias", "transformer.ln_f.bias"] {
            assert_eq!(after[name].mean(Kind::Float).double_value(&[]), 0.5, "{name} was decayed");
        }
    }

    #[test]
    fn clipping_scales_to_the_max_norm() {
        let vs = nn::VarStore::new(Device::Cpu);
        let x = vs.root().zeros("x", &[4]);
        let loss = (&x * Tensor::from_slice(&[3f32, 4.0, 0.0, 0.0])).sum(Kind::Float);
        loss.backward();
        assert!((grad_norm(&vs) - 5.0).abs() < 1e-9);
        let norm = clip_grad_norm(&vs, 1.0);
        assert!((norm - 5.0).abs() < 1e-9);
        assert!((grad_norm(&vs) - 1.0).abs() < 1e-5);
    }
}
