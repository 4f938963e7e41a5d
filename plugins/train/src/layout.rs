//! How a stage is laid out over ranks: tensor, pipeline and data parallel degrees.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Tensor, pipeline and data parallel degrees; `tp * pp * dp` ranks train the stage (Megatron's
/// grid: tensor-parallel ranks fastest, then data-parallel, then pipeline).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Layout {
    /// Tensor-parallel degree; must divide `n_head`.
    #[serde(default = "one")]
    #[schemars(range(min = 1))]
    pub tp: u64,
    /// Pipeline-parallel degree; must divide `n_layer`.
    #[serde(default = "one")]
    #[schemars(range(min = 1))]
    pub pp: u64,
    /// Data-parallel degree; `micro_batch * dp` must divide `global_batch`.
    #[serde(default = "one")]
    #[schemars(range(min = 1))]
    pub dp: u64,
}

fn one() -> u64 {
    1
}

impl Default for Layout {
    fn default() -> Self {
        Layout { tp: 1, pp: 1, dp: 1 }
    }
}

impl Layout {
    /// Ranks of the layout.
    pub fn world(&self) -> u64 {
        self.tp * self.pp * self.dp
    }

    /// One process, no communication.
    pub fn is_single(&self) -> bool {
        self.world() == 1
    }
}

impl std::fmt::Display for Layout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "tp {} x pp {} x dp {}", self.tp, self.pp, self.dp)
    }
}

/// Bytes one rank holds while training a stage: the estimate `aurora plan` prints.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RankMemory {
    /// fp32 master weights of the rank's share of the model.
    pub weights: f64,
    /// fp32 gradients, plus the flat buffer they are reduced in when `dp > 1`.
    pub gradients: f64,
    /// AdamW's two fp32 moments: the rank's shard with ZeRO-1, else the whole share.
    pub optimizer: f64,
    /// Activations kept for the backward pass (estimate, see [`Layout::memory_per_rank`]).
    pub activations: f64,
}

impl RankMemory {
    pub fn total(&self) -> f64 {
        self.weights + self.gradients + self.optimizer + self.activations
    }
}

impl Layout {
    /// What one rank of this layout holds: the model split evenly over `tp * pp` (embeddings
    /// included), AdamW sharded over `dp` with `zero`, and activations by Korthikanti et al.
    /// (2022, "Reducing Activation Recomputation", no recomputation): per layer and micro-batch
    /// `s b h (10 + 24 / tp)` bytes at 16-bit precision (twice that in fp32), without their
    /// `5 a s^2 b / tp` of attention scores, which the fused `scaled_dot_product_attention`
    /// kernels the model uses on GPUs never store,
    /// times the layers of a pipeline stage, times the `min(pp, micro-batches)` micro-batches
    /// the first stage holds under 1F1B. An estimate: allocator overhead and buffers are not in it.
    pub fn memory_per_rank(
        &self,
        model: &crate::GptBigCodeConfig,
        seq_len: u64,
        micro_batch: u64,
        micro_batches_per_step: u64,
        bf16: bool,
        zero: bool,
    ) -> RankMemory {
        let share = model.param_count() as f64 / (self.tp * self.pp) as f64;
        let (s, b, h) = (seq_len as f64, micro_batch as f64, model.n_embd as f64);
        let per_layer = s * b * h * (10.0 + 24.0 / self.tp as f64);
        let layers = model.n_layer as f64 / self.pp as f64;
        let in_flight = self.pp.min(micro_batches_per_step.max(1)) as f64;
        let width = if bf16 { 1.0 } else { 2.0 };
        RankMemory {
            weights: 4.0 * share,
            gradients: if self.dp > 1 { 8.0 * share } else { 4.0 * share },
            optimizer: if zero && self.dp > 1 { 8.0 * share / self.dp as f64 } else { 8.0 * share },
            activations: width * per_layer * layers * in_flight,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::GptBigCodeConfig;

    /// The paper's StarCoderPlus at tp 4 x pp 4 x dp 16, bf16, seq 2048, micro-batch 1:
    /// 0.97 G parameters per rank, 11.6 GB of weights and gradients, 0.49 GB of AdamW shard.
    #[test]
    fn paper_layout_per_rank() {
        let model = GptBigCodeConfig::starcoderplus();
        let layout = Layout { tp: 4, pp: 4, dp: 16 };
        let m = layout.memory_per_rank(&model, 2048, 1, 32, true, true);
        let share = model.param_count() as f64 / 16.0;
        assert_eq!(m.weights, 4.0 * share);
        assert_eq!(m.gradients, 8.0 * share);
        assert_eq!(m.optimizer, 8.0 * share / 16.0);
        // 40 layers / 4 stages, 4 micro-batches in flight, 2048 x 6144.
        let per_layer = 2048.0 * 6144.0 * (10.0 + 6.0);
        assert_eq!(m.activations, per_layer * 10.0 * 4.0);
        assert!(m.total() < 64e9, "{}", m.total());
        // One device holds it all: far beyond a 64 GB GCD.
        assert!(Layout::default().memory_per_rank(&model, 2048, 1, 32, true, false).total() > 248e9);
    }
}
