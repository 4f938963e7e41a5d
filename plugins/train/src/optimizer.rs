//! Optimizer hyper-parameters (plain data; the optimizer itself runs in the worker).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// AdamW hyper-parameters (decoupled weight decay, as `torch.optim.AdamW`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AdamWConfig {
    /// Decay of the first-moment (mean) estimate (default 0.9).
    #[serde(default = "default_beta1")]
    pub beta1: f64,
    /// Decay of the second-moment (uncentred variance) estimate (default 0.95).
    #[serde(default = "default_beta2")]
    pub beta2: f64,
    /// Added to the denominator for numerical stability (default 1e-8).
    #[serde(default = "default_eps")]
    pub eps: f64,
    /// Applied to weight matrices and embeddings, never to biases or LayerNorm parameters.
    #[serde(default = "default_weight_decay")]
    pub weight_decay: f64,
}

fn default_beta1() -> f64 {
    0.9
}
fn default_beta2() -> f64 {
    0.95
}
fn default_eps() -> f64 {
    1e-8
}
fn default_weight_decay() -> f64 {
    0.1
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            beta1: default_beta1(),
            beta2: default_beta2(),
            eps: default_eps(),
            weight_decay: default_weight_decay(),
        }
    }
}
