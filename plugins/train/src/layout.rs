//! How a stage is laid out over ranks: tensor, pipeline and data parallel degrees.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Tensor, pipeline and data parallel degrees; `tp * pp * dp` ranks train the stage (Megatron's
/// grid: tensor-parallel ranks fastest, then data-parallel, then pipeline).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Layout {
    /// Tensor-parallel degree; must divide `n_head` and the FFN width (`n_inner`). The
    /// vocabulary is padded inside the ranks to a multiple of it (the artifact keeps the exact
    /// `vocab_size`).
    #[serde(default = "one")]
    #[schemars(range(min = 1))]
    pub tp: u64,
    /// Pipeline-parallel degree; must divide `n_layer`, and a step must have at least `pp`
    /// micro-batches (`global_batch / (micro_batch * dp) >= pp`, for 1F1B).
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

/// What one optimizer step of a stage computes, as the per-rank estimates of a [`Layout`] need
/// it.
#[derive(Debug, Clone, Copy)]
pub struct StepShape<'a> {
    pub model: &'a crate::GptBigCodeConfig,
    pub seq_len: u64,
    pub micro_batch: u64,
    /// Sequences per step, over every data-parallel rank.
    pub global_batch: u64,
    /// 16-bit activations (bf16 autocast).
    pub bf16: bool,
    /// ZeRO-1: the AdamW state sharded over the data-parallel ranks.
    pub zero: bool,
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

    /// The vocabulary the tensor-parallel ranks hold: `vocab_size` padded up to the smallest
    /// multiple of `tp`, so that the vocab-parallel embedding (and the tied LM head) splits into
    /// `tp` equal slices of `padded / tp` rows. The padding rows are never a target and their
    /// logits are masked out; the Hugging Face artifact keeps the exact `vocab_size`. Megatron
    /// pads the same way, to a multiple of `make_vocab_size_divisible_by * tp` (128 by default);
    /// here the factor is 1, so `tp = 1` never pads.
    pub fn padded_vocab(&self, vocab_size: i64) -> i64 {
        let tp = self.tp.max(1) as i64;
        (vocab_size + tp - 1) / tp * tp
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
    /// Micro-batches each pipeline runs per step: `global_batch / (micro_batch * dp)`.
    pub fn micro_batches(&self, step: &StepShape<'_>) -> u64 {
        step.global_batch / (step.micro_batch * self.dp).max(1)
    }

    /// What one rank of this layout holds: the model split evenly over `tp * pp` (embeddings
    /// included), AdamW sharded over `dp` with `zero`, and activations by Korthikanti et al.
    /// (2022, "Reducing Activation Recomputation", no recomputation): per layer and micro-batch
    /// `s b h (10 + 24 / tp)` bytes at 16-bit precision (twice that in fp32), without their
    /// `5 a s^2 b / tp` of attention scores, which the fused `scaled_dot_product_attention`
    /// kernels the model uses on GPUs never store,
    /// times the layers of a pipeline stage, times the `min(pp, micro-batches)` micro-batches
    /// the first stage holds under 1F1B. An estimate: allocator overhead and buffers are not in it.
    pub fn memory_per_rank(&self, step: &StepShape<'_>) -> RankMemory {
        let StepShape { model, seq_len, micro_batch, bf16, zero, .. } = *step;
        let micro_batches_per_step = self.micro_batches(step);
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

/// Bytes one rank sends plus bytes it receives per optimizer step, by parallel dimension: the
/// estimate `aurora plan` prints (see [`Layout::communication_per_step`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RankComm {
    /// Within the tensor-parallel group: the all-reduces of activations and of their gradients.
    pub tensor: f64,
    /// Between neighbouring pipeline stages: activations forward, their gradients backward (and
    /// the tied embedding's gradient between the first and the last stage).
    pub pipeline: f64,
    /// Within the data-parallel group: the gradient reduction and, with ZeRO-1, the weights'
    /// all-gather.
    pub data: f64,
}

impl RankComm {
    pub fn total(&self) -> f64 {
        self.tensor + self.pipeline + self.data
    }
}

/// Bytes a ring all-reduce of `bytes` over `n` ranks sends from each rank plus those it receives:
/// it sends `2 (n - 1) / n` of the buffer (a reduce-scatter then an all-gather) and receives as
/// many. Zero for one rank.
fn ring_all_reduce(n: u64, bytes: f64) -> f64 {
    2.0 * ring_half(n, bytes)
}

/// Bytes a ring reduce-scatter (or all-gather) of `bytes` over `n` ranks sends from each rank
/// plus those it receives: `(n - 1) / n` of the buffer each way.
fn ring_half(n: u64, bytes: f64) -> f64 {
    if n <= 1 { 0.0 } else { 2.0 * (n - 1) as f64 / n as f64 * bytes }
}

impl Layout {
    /// What one rank of this layout sends plus what it receives per optimizer step, on the
    /// busiest pipeline stage (the first or last stage's extra all-reduces against the middle
    /// stages' second neighbour). An estimate of the payload: latency, protocol headers and
    /// the cross-entropy's three all-reduces of `s b` fp32 scalars (`h` times smaller than an
    /// activation) are not in it.
    ///
    /// With `s` = `seq_len`, `b` = `micro_batch`, `h` = `n_embd`, `m` = `micro_batches_per_step`,
    /// `L = n_layer / pp` layers per stage, activations of `w` bytes (2 in bf16, 4 in fp32),
    /// `A = s b h w` bytes of one micro-batch's hidden states, and `ring(n, N)` = a ring
    /// all-reduce of `N` bytes over `n` ranks, which sends `2 (n - 1) / n N` bytes from each rank
    /// and receives as many, so `ring(n, N) = 4 (n - 1) / n N` counted both ways:
    ///
    /// - **tensor** (Megatron's TP): per micro-batch and layer, 2 all-reduces forward (after the
    ///   row-parallel `attn.c_proj` and `mlp.c_proj`) and 2 backward (the input gradients of the
    ///   column-parallel query projection and `mlp.c_fc`), each `ring(tp, A)`; plus, per
    ///   micro-batch, the vocab-parallel embedding's output on the first stage and the LM head
    ///   input's gradient on the last stage (one `ring(tp, A)` each); plus, once per step, the
    ///   gradient of the multi-query key/value projection (`h * 2 head_dim + 2 head_dim` fp32 per
    ///   layer), replicated on every tensor-parallel rank, so summed over them:
    ///   `m (4 L + first + last) ring(tp, A) + ring(tp, 4 L (2 h head_dim + 2 head_dim))`.
    /// - **pipeline** (1F1B): per micro-batch, one activation forward and one gradient backward
    ///   of `A` bytes across each boundary the stage touches (1 for the first and last stage, 2
    ///   between): `2 m A` per boundary; plus, with `pp > 1` and tied embeddings, the embedding's
    ///   gradient summed between the first and the last stage once per step,
    ///   `ring(2, 4 h padded_vocab / tp)`.
    /// - **data**: the rank's share of the fp32 gradients, `G = 4 params / (tp pp)` bytes (the
    ///   split [`Layout::memory_per_rank`] assumes). ZeRO-1 (`zero`): a reduce-scatter of the
    ///   gradients plus an all-gather of the updated fp32 weights, each sending `(dp - 1) / dp G`
    ///   and receiving as many; plain: one `ring(dp, G)`. Both are `4 (dp - 1) / dp G`.
    ///
    /// Each dimension is zero where its degree is 1.
    ///
    /// Worked example (the unit test): 4 layers, `h` 8, 2 heads (`head_dim` 4), vocab 11, at
    /// `tp 2 x pp 2 x dp 2`, `s` 4, `b` 1, 2 micro-batches, bf16: `A` = 64 B, `ring(2, N) = 2N`;
    /// stage 0 (`L` 2, first): tensor `2 (8 + 1) 2A + 2 (4 * 2 * 72)` = 2304 + 1152 = 3456 B;
    /// pipeline `2 * 2 * 64 + 2 (4 * 8 * 12 / 2)` = 256 + 384 = 640 B (vocab padded to 12).
    pub fn communication_per_step(&self, step: &StepShape<'_>) -> RankComm {
        let StepShape { model, seq_len, micro_batch, bf16, zero, .. } = *step;
        let micro_batches_per_step = self.micro_batches(step);
        let (tp, pp, dp) = (self.tp.max(1), self.pp.max(1), self.dp.max(1));
        let width = if bf16 { 2.0 } else { 4.0 };
        let h = model.n_embd as f64;
        let activation = seq_len as f64 * micro_batch as f64 * h * width;
        let m = micro_batches_per_step as f64;
        let layers = model.n_layer as f64 / pp as f64;
        let head_dim = model.head_dim() as f64;
        let kv_gradient = 4.0 * layers * (h * 2.0 * head_dim + 2.0 * head_dim);
        let tie = if pp > 1 && model.tie_word_embeddings {
            ring_all_reduce(2, 4.0 * h * (self.padded_vocab(model.vocab_size) / tp as i64) as f64)
        } else {
            0.0
        };
        let gradients = 4.0 * model.param_count() as f64 / (tp * pp) as f64;
        let data = if zero {
            let (reduce_scatter, all_gather) = (ring_half(dp, gradients), ring_half(dp, gradients));
            reduce_scatter + all_gather
        } else {
            ring_all_reduce(dp, gradients)
        };
        let stage = |index: u64| {
            let (first, last) = (index == 0, index == pp - 1);
            let ends = f64::from(u8::from(first) + u8::from(last));
            let boundaries = f64::from(u8::from(!first) + u8::from(!last));
            RankComm {
                tensor: m * (4.0 * layers + ends) * ring_all_reduce(tp, activation) + ring_all_reduce(tp, kv_gradient),
                pipeline: if pp > 1 { 2.0 * m * activation * boundaries } else { 0.0 }
                    + if first || last { tie } else { 0.0 },
                data,
            }
        };
        // Stages 1 .. pp - 2 are alike; the first and last differ only in which end they hold.
        let candidates = [stage(0), stage(pp - 1), stage(1.min(pp - 1))];
        candidates.into_iter().fold(candidates[0], |busiest, c| if c.total() > busiest.total() { c } else { busiest })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::GptBigCodeConfig;

    fn step(model: &GptBigCodeConfig, seq_len: u64, global_batch: u64, bf16: bool, zero: bool) -> StepShape<'_> {
        StepShape { model, seq_len, micro_batch: 1, global_batch, bf16, zero }
    }

    /// The paper's StarCoderPlus at tp 4 x pp 4 x dp 16, bf16, seq 2048, micro-batch 1:
    /// 0.97 G parameters per rank, 11.6 GB of weights and gradients, 0.49 GB of AdamW shard.
    #[test]
    fn paper_layout_per_rank() {
        let model = GptBigCodeConfig::starcoderplus();
        let layout = Layout { tp: 4, pp: 4, dp: 16 };
        let m = layout.memory_per_rank(&step(&model, 2048, 512, true, true));
        let share = model.param_count() as f64 / 16.0;
        assert_eq!(m.weights, 4.0 * share);
        assert_eq!(m.gradients, 8.0 * share);
        assert_eq!(m.optimizer, 8.0 * share / 16.0);
        // 40 layers / 4 stages, 4 micro-batches in flight, 2048 x 6144.
        let per_layer = 2048.0 * 6144.0 * (10.0 + 6.0);
        assert_eq!(m.activations, per_layer * 10.0 * 4.0);
        assert!(m.total() < 64e9, "{}", m.total());
        // One device holds it all: far beyond a 64 GB GCD.
        assert!(Layout::default().memory_per_rank(&step(&model, 2048, 32, true, false)).total() > 248e9);
    }

    #[test]
    fn vocab_is_padded_to_a_multiple_of_tp() {
        let tp = |tp| Layout { tp, pp: 1, dp: 1 };
        assert_eq!(tp(1).padded_vocab(50257), 50257);
        assert_eq!(tp(2).padded_vocab(50257), 50258);
        assert_eq!(tp(4).padded_vocab(50257), 50260);
        assert_eq!(tp(8).padded_vocab(50257), 50264);
        assert_eq!(tp(4).padded_vocab(49152), 49152, "StarCoderPlus's vocabulary splits over 4 as it is");
        assert_eq!(tp(3).padded_vocab(1), 3);
    }

    /// The doc comment's worked example, by hand.
    #[test]
    fn communication_worked_example() {
        let model = GptBigCodeConfig::tiny(4, 8, 2, 11, 16);
        let layout = Layout { tp: 2, pp: 2, dp: 2 };
        let c = layout.communication_per_step(&step(&model, 4, 4, true, true));
        // A = 4 * 1 * 8 * 2 bytes; ring(2, N) = 2N (sends N, receives N).
        let a = 64.0;
        // 2 micro-batches x (4 x 2 layers + the embedding's or the LM head's) all-reduces of A,
        // plus the key/value projection's gradient: 2 layers x (8 x 8 + 8) fp32.
        assert_eq!(c.tensor, 2.0 * 9.0 * 2.0 * a + 2.0 * (4.0 * 2.0 * 72.0));
        assert_eq!(c.tensor, 3456.0);
        // One boundary: an activation and a gradient per micro-batch; the tied embedding's
        // gradient (vocab 11 padded to 12, 6 rows of 8 fp32 per rank) with the other end.
        assert_eq!(c.pipeline, 2.0 * 2.0 * a + 2.0 * (6.0 * 8.0 * 4.0));
        assert_eq!(c.pipeline, 640.0);
        // ZeRO-1: reduce-scatter + all-gather of the fp32 share, half of it each way each time;
        // the same volume as a plain all-reduce.
        let share = 4.0 * model.param_count() as f64 / 4.0;
        assert_eq!(c.data, 4.0 * 0.5 * share);
        assert_eq!(layout.communication_per_step(&step(&model, 4, 4, true, false)).data, c.data);
        // fp32 activations double the activation traffic only.
        let fp32 = layout.communication_per_step(&step(&model, 4, 4, false, true));
        assert_eq!(fp32.tensor, 2.0 * 9.0 * 2.0 * 2.0 * a + 1152.0);
        assert_eq!(fp32.pipeline, 2.0 * 2.0 * 2.0 * a + 384.0);
        // A middle stage (pp 4: one layer each) has two neighbours but neither end.
        let deep = Layout { tp: 2, pp: 4, dp: 1 }.communication_per_step(&step(&model, 4, 2, true, true));
        assert_eq!(deep.data, 0.0);
        let first = (2.0 * 5.0 * 2.0 * a + 2.0 * (4.0 * 72.0), 2.0 * 2.0 * a + 384.0);
        let middle = (2.0 * 4.0 * 2.0 * a + 2.0 * (4.0 * 72.0), 2.0 * 2.0 * 2.0 * a);
        let busiest = if first.0 + first.1 >= middle.0 + middle.1 { first } else { middle };
        assert_eq!((deep.tensor, deep.pipeline), busiest);
    }

    #[test]
    fn no_communication_where_a_degree_is_one() {
        let model = GptBigCodeConfig::tiny(4, 8, 2, 11, 16);
        let c = Layout::default().communication_per_step(&step(&model, 4, 2, true, true));
        assert_eq!((c.tensor, c.pipeline, c.data), (0.0, 0.0, 0.0));
        let dp = Layout { tp: 1, pp: 1, dp: 4 }.communication_per_step(&step(&model, 4, 8, true, true));
        assert_eq!((dp.tensor, dp.pipeline), (0.0, 0.0));
        assert_eq!(dp.data, 4.0 * 0.75 * 4.0 * model.param_count() as f64);
        let tp = Layout { tp: 2, pp: 1, dp: 1 }.communication_per_step(&step(&model, 4, 2, true, true));
        assert_eq!((tp.pipeline, tp.data), (0.0, 0.0));
        // One stage holds both ends: 4 layers x 4 + 2 all-reduces per micro-batch.
        assert_eq!(tp.tensor, 2.0 * 18.0 * 2.0 * 64.0 + 2.0 * (4.0 * 4.0 * 72.0));
    }
}
