//! GPTBigCode (`GPTBigCodeForCausalLM`) in tch, with Hugging Face's weight names.
//!
//! Variables live in a `nn::VarStore` under exactly transformers' state-dict names:
//! `transformer.wte.weight`, `transformer.wpe.weight`, `transformer.h.{i}.ln_1.{weight,bias}`,
//! `transformer.h.{i}.attn.c_attn.{weight,bias}` (`[n_embd + 2 * head_dim, n_embd]`: multi-query,
//! queries for every head then one shared key and value head), `transformer.h.{i}.attn.c_proj`,
//! `transformer.h.{i}.ln_2`, `transformer.h.{i}.mlp.c_fc`, `transformer.h.{i}.mlp.c_proj`,
//! `transformer.ln_f`, and `lm_head.weight` only when `tie_word_embeddings = false`. With tied
//! embeddings (transformers' default and StarCoder's) the logits use `transformer.wte.weight`
//! and no separate `lm_head.weight` variable exists (see `hf.rs` for the file side).
//!
//! Dropout is not applied (the `*_pdrop` fields are kept for export only): continued
//! pre-training here runs without dropout.
//!
//! Variable groups: weights of matrices and embeddings are in [`DECAY_GROUP`], biases and
//! LayerNorm parameters in [`NO_DECAY_GROUP`], so an optimizer can leave the latter without
//! weight decay (`Optimizer::set_weight_decay_group(NO_DECAY_GROUP, 0.0)`).

use aurora_torch::tch::{self, Kind, Tensor, nn};

use crate::config::{Activation, ConfigError, GptBigCodeConfig};

/// `nn::VarStore` group of the parameters weight decay applies to.
pub const DECAY_GROUP: usize = 0;
/// `nn::VarStore` group of biases and LayerNorm parameters (no weight decay).
pub const NO_DECAY_GROUP: usize = 1;

/// Bad input to the model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("input must be a [batch, seq] tensor of token ids, got shape {0:?}")]
    InputShape(Vec<i64>),
    #[error("token id {id} is outside the vocabulary (vocab_size {vocab_size})")]
    TokenOutsideVocab { id: i64, vocab_size: i64 },
    #[error("forward_cached: {0}")]
    CachedInput(String),
    /// The model cannot be split over the layout (the plan refuses such manifests; this guards
    /// direct library use).
    #[error("cannot shard the model over tp = {tp}, pp = {pp}: {problem}")]
    Unshardable { tp: usize, pp: usize, problem: String },
    #[error(transparent)]
    Torch(#[from] tch::TchError),
}

/// Keys and values of the positions a [`GptBigCode`] has seen, for incremental decoding with
/// [`GptBigCode::forward_cached`]. Multi-query attention has one key/value head, so each layer
/// holds keys `[batch, capacity, head_dim]` and values of the same shape, preallocated; `valid`
/// `[batch, capacity]` marks the slots holding real (not padding) tokens.
#[derive(Debug)]
pub struct KvCache {
    keys: Vec<Tensor>,
    values: Vec<Tensor>,
    valid: Tensor,
    len: i64,
}

impl KvCache {
    /// An empty cache for `batch` rows of up to `capacity` positions (at most `n_positions`),
    /// on the model's device and in its dtype.
    pub fn new(model: &GptBigCode, batch: i64, capacity: i64) -> Result<Self, ModelError> {
        model.config.check_seq_len(capacity)?;
        let (kind, device) = (model.wte.kind(), model.wte.device());
        let shape = [batch, capacity, model.config.head_dim()];
        let layers = model.config.n_layer as usize;
        Ok(Self {
            keys: (0..layers).map(|_| Tensor::zeros(shape, (kind, device))).collect(),
            values: (0..layers).map(|_| Tensor::zeros(shape, (kind, device))).collect(),
            valid: Tensor::zeros([batch, capacity], (Kind::Bool, device)),
            len: 0,
        })
    }

    /// Positions (slots) filled so far, the same for every row.
    pub fn len(&self) -> i64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn batch(&self) -> i64 {
        self.valid.size()[0]
    }

    pub fn capacity(&self) -> i64 {
        self.valid.size()[1]
    }
}

/// A process-wide lock around torch's global RNG (`tch::manual_seed` + draws). libtorch's
/// CPU generator is global: code in this crate that seeds and draws takes this lock, so two
/// threads cannot interleave their draws. Code outside the crate that seeds should take it too.
pub fn global_rng_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[derive(Debug)]
struct Linear {
    weight: Tensor,
    bias: Tensor,
}

impl Linear {
    fn new(p: &nn::Path, in_dim: i64, out_dim: i64, std: f64) -> Self {
        let weight =
            p.set_group(DECAY_GROUP).var("weight", &[out_dim, in_dim], nn::Init::Randn { mean: 0.0, stdev: std });
        let bias = p.set_group(NO_DECAY_GROUP).zeros("bias", &[out_dim]);
        Self { weight, bias }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        x.linear(&self.weight, Some(&self.bias))
    }
}

#[derive(Debug)]
struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    dim: i64,
    eps: f64,
}

impl LayerNorm {
    fn new(p: &nn::Path, dim: i64, eps: f64) -> Self {
        let p = p.set_group(NO_DECAY_GROUP);
        Self { weight: p.ones("weight", &[dim]), bias: p.zeros("bias", &[dim]), dim, eps }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        x.layer_norm([self.dim], Some(&self.weight), Some(&self.bias), self.eps, true)
    }
}

/// The MLP activation of `c_fc`'s output before its bias, `x`, and that bias, as every path
/// through the model (whole, sharded, cached) computes it.
pub(crate) fn activate(activation: Activation, x: &Tensor, bias: &Tensor) -> Tensor {
    match activation {
        // A fused kernel on CPU: the same function, one exponential each way instead of tanh,
        // and the bias added in the same pass.
        Activation::GeluTanh => aurora_torch::kernels::bias_gelu_tanh(x, bias),
        Activation::Gelu => (x + bias).gelu("none"),
    }
}

/// The positions whose logits a cached forward pass computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logits {
    /// Every new position's.
    All,
    /// The last new position's only: what generation needs, without the LM head over every
    /// prompt position (with a small model and a large vocabulary, the head is much of a pass).
    Last,
}

#[derive(Debug)]
struct Block {
    ln_1: LayerNorm,
    c_attn: Linear,
    attn_proj: Linear,
    ln_2: LayerNorm,
    c_fc: Linear,
    mlp_proj: Linear,
}

/// A GPTBigCode causal language model whose parameters live in a caller-owned `VarStore`.
#[derive(Debug)]
pub struct GptBigCode {
    config: GptBigCodeConfig,
    activation: Activation,
    wte: Tensor,
    wpe: Tensor,
    blocks: Vec<Block>,
    ln_f: LayerNorm,
    lm_head: Option<Tensor>,
}

impl GptBigCode {
    /// Creates the variables under `root` (pass `vs.root()`), initialised as transformers'
    /// `_init_weights` does: normal(0, initializer_range) for linear weights and embeddings,
    /// normal(0, initializer_range / sqrt(2 * n_layer)) for `attn.c_proj` and `mlp.c_proj`,
    /// zero biases, LayerNorm weight 1 / bias 0. Draws from torch's global RNG; see
    /// [`GptBigCode::seeded`] for a reproducible model.
    pub fn new(root: &nn::Path, config: &GptBigCodeConfig) -> Result<Self, ModelError> {
        config.validate()?;
        let activation = config.activation()?;
        let (d, std) = (config.n_embd, config.initializer_range);
        let proj_std = std / (2.0 * config.n_layer as f64).sqrt();
        let eps = config.layer_norm_epsilon;
        let t = root / "transformer";
        let embed = |name: &str, rows: i64| {
            (&t / name).set_group(DECAY_GROUP).var("weight", &[rows, d], nn::Init::Randn { mean: 0.0, stdev: std })
        };
        let wte = embed("wte", config.vocab_size);
        let wpe = embed("wpe", config.n_positions);
        let h = &t / "h";
        let blocks = (0..config.n_layer)
            .map(|i| {
                let b = &h / i;
                Block {
                    ln_1: LayerNorm::new(&(&b / "ln_1"), d, eps),
                    c_attn: Linear::new(&(&b / "attn" / "c_attn"), d, config.c_attn_out(), std),
                    attn_proj: Linear::new(&(&b / "attn" / "c_proj"), d, d, proj_std),
                    ln_2: LayerNorm::new(&(&b / "ln_2"), d, eps),
                    c_fc: Linear::new(&(&b / "mlp" / "c_fc"), d, config.ffn_dim(), std),
                    mlp_proj: Linear::new(&(&b / "mlp" / "c_proj"), config.ffn_dim(), d, proj_std),
                }
            })
            .collect();
        let ln_f = LayerNorm::new(&(&t / "ln_f"), d, eps);
        let lm_head = (!config.tie_word_embeddings).then(|| {
            (root / "lm_head").set_group(DECAY_GROUP).var(
                "weight",
                &[config.vocab_size, d],
                nn::Init::Randn { mean: 0.0, stdev: std },
            )
        });
        Ok(Self { config: config.clone(), activation, wte, wpe, blocks, ln_f, lm_head })
    }

    /// [`GptBigCode::new`] after `tch::manual_seed(seed)`: the same seed gives bitwise-identical
    /// initial weights (on CPU). Resets torch's global RNG.
    /// Holds [`global_rng_lock`] while seeding and drawing, so concurrent seeded
    /// constructions (e.g. parallel tests) cannot interleave their draws.
    pub fn seeded(root: &nn::Path, config: &GptBigCodeConfig, seed: i64) -> Result<Self, ModelError> {
        let _guard = global_rng_lock();
        tch::manual_seed(seed);
        Self::new(root, config)
    }

    pub fn config(&self) -> &GptBigCodeConfig {
        &self.config
    }

    /// Checks a `[batch, seq]` batch of token ids: shape, sequence length against
    /// `n_positions`, every id inside the vocabulary.
    pub fn check_input(&self, ids: &Tensor) -> Result<(), ModelError> {
        let size = ids.size();
        if size.len() != 2 {
            return Err(ModelError::InputShape(size));
        }
        self.config.check_seq_len(size[1])?;
        if ids.numel() > 0 {
            let (min, max) = (ids.f_min()?.int64_value(&[]), ids.f_max()?.int64_value(&[]));
            for id in [min, max] {
                if id < 0 || id >= self.config.vocab_size {
                    return Err(ModelError::TokenOutsideVocab { id, vocab_size: self.config.vocab_size });
                }
            }
        }
        Ok(())
    }

    /// Logits `[batch, seq, vocab]` for token ids `[batch, seq]` (int64), after
    /// [`GptBigCode::check_input`].
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor, ModelError> {
        self.check_input(ids)?;
        Ok(self.forward_unchecked(ids))
    }

    /// [`GptBigCode::forward`] without the input checks (libtorch raises on a bad id).
    pub fn forward_unchecked(&self, ids: &Tensor) -> Tensor {
        let t = ids.size2().expect("[batch, seq] ids").1;
        let pos = Tensor::arange(t, (Kind::Int64, ids.device()));
        self.run_blocks(ids, &pos, Logits::All, |_, blk, x| self.attention(blk, x))
    }

    /// Embeddings of `ids` at `positions` (broadcastable to `ids`), every block with
    /// `attention(layer, block, ln_1 output)` as its attention before `c_proj`, then the logits
    /// of the positions `logits` asks for.
    // `x = x + ...` on purpose: tch's `+=` is an in-place `add_`, which would overwrite the
    // residual stream autograd saved for the LayerNorm backward.
    #[allow(clippy::assign_op_pattern)]
    fn run_blocks(
        &self,
        ids: &Tensor,
        positions: &Tensor,
        logits: Logits,
        mut attention: impl FnMut(usize, &Block, &Tensor) -> Tensor,
    ) -> Tensor {
        let mut x = Tensor::embedding(&self.wte, ids, -1, false, false)
            + Tensor::embedding(&self.wpe, positions, -1, false, false);
        for (layer, blk) in self.blocks.iter().enumerate() {
            let y = attention(layer, blk, &blk.ln_1.forward(&x));
            x = x + blk.attn_proj.forward(&y);
            let h = blk.ln_2.forward(&x).linear::<Tensor>(&blk.c_fc.weight, None);
            let m = activate(self.activation, &h, &blk.c_fc.bias);
            x = x + blk.mlp_proj.forward(&m);
        }
        let x = match logits {
            Logits::All => x,
            Logits::Last => x.narrow(1, x.size()[1] - 1, 1),
        };
        let x = self.ln_f.forward(&x);
        x.matmul(&self.lm_head.as_ref().unwrap_or(&self.wte).tr())
    }

    /// Causal multi-query self-attention of one block, before `attn.c_proj`: `c_attn` gives
    /// `[queries (n_embd) | key (head_dim) | value (head_dim)]` per position, as transformers'
    /// `GPTBigCodeAttention` splits it; the single key/value head is shared by every head.
    fn attention(&self, blk: &Block, x: &Tensor) -> Tensor {
        let (b, t, _) = x.size3().expect("[batch, seq, hidden]");
        let (d, n_head, hd) = (self.config.n_embd, self.config.n_head, self.config.head_dim());
        let scale = if self.config.scale_attn_weights { None } else { Some(1.0) };
        // One split, not three narrows: its backward writes the three gradients side by side
        // into one tensor, where each narrow's would zero a whole `qkv`-sized gradient and the
        // three would then be summed.
        let qkv = blk.c_attn.forward(x).split_with_sizes([d, hd, hd], -1);
        let q = qkv[0].view([b, t, n_head, hd]).transpose(1, 2);
        // One key/value head for all query heads: SDPA's grouped-query mode reads it for every
        // head, where an expanded copy would cost a materialised gradient per head and its sum.
        let k = qkv[1].unsqueeze(1);
        let v = qkv[2].unsqueeze(1);
        let y = Tensor::scaled_dot_product_attention(&q, &k, &v, None::<Tensor>, 0.0, true, scale, true);
        y.transpose(1, 2).contiguous().view([b, t, d])
    }

    /// Logits of `ids` `[batch, new]` (int64) at `positions` `[batch, new]`, attending to the
    /// positions already in `cache` and to each other causally, then appends their keys and values
    /// to `cache`: `[batch, new, vocab]` for [`Logits::All`], `[batch, 1, vocab]` for
    /// [`Logits::Last`]. `valid` `[batch, new]` (bool) is false for padding:
    /// padded positions are never attended to (a padded query attends to itself only, so its
    /// row stays finite; its logits mean nothing). With left padding, positions count the real
    /// tokens of each row from 0, so a padded row computes what the row alone would.
    ///
    /// Runs without autograd. With an empty cache, every position valid and [`Logits::All`] this
    /// is [`GptBigCode::forward`] (up to the kernels' rounding).
    pub fn forward_cached(
        &self,
        ids: &Tensor,
        positions: &Tensor,
        valid: &Tensor,
        cache: &mut KvCache,
        logits: Logits,
    ) -> Result<Tensor, ModelError> {
        self.check_input(ids)?;
        let (b, t) = ids.size2()?;
        for (name, tensor, kind) in [("positions", positions, Kind::Int64), ("valid", valid, Kind::Bool)] {
            if tensor.size() != [b, t] || tensor.kind() != kind {
                return Err(ModelError::CachedInput(format!(
                    "`{name}` must be a [{b}, {t}] {kind:?} tensor like the ids, got {:?} {:?}",
                    tensor.size(),
                    tensor.kind()
                )));
            }
        }
        if b != cache.batch() || cache.len + t > cache.capacity() {
            return Err(ModelError::CachedInput(format!(
                "{b} rows of {t} new tokens do not fit a cache of {} rows holding {} of {} positions",
                cache.batch(),
                cache.len,
                cache.capacity()
            )));
        }
        if t > 0 {
            let (min, max) = (positions.f_min()?.int64_value(&[]), positions.f_max()?.int64_value(&[]));
            if min < 0 || max >= self.config.n_positions {
                return Err(ModelError::CachedInput(format!(
                    "positions must lie in 0..{}, got {min}..={max}",
                    self.config.n_positions
                )));
            }
        }
        Ok(tch::no_grad(|| self.forward_cached_unchecked(ids, positions, valid, cache, logits)))
    }

    fn forward_cached_unchecked(
        &self,
        ids: &Tensor,
        positions: &Tensor,
        valid: &Tensor,
        cache: &mut KvCache,
        which: Logits,
    ) -> Tensor {
        let (b, t) = ids.size2().expect("checked");
        let (d, n_head, hd) = (self.config.n_embd, self.config.n_head, self.config.head_dim());
        let (start, total) = (cache.len, cache.len + t);
        let device = ids.device();
        cache.valid.narrow(1, start, t).copy_(valid);
        // Query i (at cache slot start + i) sees key j iff j <= start + i and key j is a real
        // token or the query itself.
        let query_slot = (Tensor::arange(t, (Kind::Int64, device)) + start).view([t, 1]);
        let key_slot = Tensor::arange(total, (Kind::Int64, device)).view([1, total]);
        let causal = key_slot.le_tensor(&query_slot);
        let own = key_slot.eq_tensor(&query_slot);
        let keys_valid = cache.valid.narrow(1, 0, total).unsqueeze(1);
        let mask = causal.logical_and(&keys_valid.logical_or(&own)); // [b, t, total]
        // Multi-query: every head's queries of a position form rows of one [t * H] query block
        // against the single key/value head (as transformers' `_attn` does).
        let mask = mask.unsqueeze(2).expand([b, t, n_head, total], false).reshape([b, 1, t * n_head, total]);
        let scale = if self.config.scale_attn_weights { None } else { Some(1.0) };
        let logits = self.run_blocks(ids, positions, which, |layer, blk, x| {
            let qkv = blk.c_attn.forward(x);
            let q = qkv.narrow(-1, 0, d).reshape([b, 1, t * n_head, hd]);
            let (keys, values) = (&cache.keys[layer], &cache.values[layer]);
            keys.narrow(1, start, t).copy_(&qkv.narrow(-1, d, hd));
            values.narrow(1, start, t).copy_(&qkv.narrow(-1, d + hd, hd));
            let k = keys.narrow(1, 0, total).unsqueeze(1);
            let v = values.narrow(1, 0, total).unsqueeze(1);
            let y = Tensor::scaled_dot_product_attention(&q, &k, &v, Some(&mask), 0.0, false, scale, false);
            y.view([b, t, d])
        });
        cache.len = total;
        logits
    }

    /// Mean next-token cross-entropy of `ids` `[batch, seq]`: position t predicts ids[t + 1].
    /// The labels are shifted instead of the logits (the last position's label is ignored), so
    /// the logits are never copied, forward or backward; this is the trainer's loss per token.
    pub fn lm_loss(&self, ids: &Tensor) -> Result<Tensor, ModelError> {
        let logits = self.forward(ids)?;
        let (b, t) = ids.size2()?;
        let ignored = Tensor::full([b, 1], crate::trainer::sft::IGNORE, (Kind::Int64, ids.device()));
        let labels = Tensor::cat(&[&ids.narrow(1, 1, t - 1), &ignored], 1);
        let tokens = (b * (t - 1)).max(1) as f64;
        Ok(crate::trainer::masked_loss_sum(&logits, &labels) / tokens)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aurora_torch::tch::Device;

    fn tiny() -> GptBigCodeConfig {
        GptBigCodeConfig::tiny(2, 64, 4, 128, 32)
    }

    fn model(seed: i64) -> (nn::VarStore, GptBigCode) {
        let vs = nn::VarStore::new(Device::Cpu);
        let m = GptBigCode::seeded(&vs.root(), &tiny(), seed).unwrap();
        (vs, m)
    }

    fn ids(seed: i64, b: i64, t: i64) -> Tensor {
        let _guard = global_rng_lock();
        tch::manual_seed(seed);
        Tensor::randint(128, [b, t], (Kind::Int64, Device::Cpu))
    }

    #[test]
    fn weight_names_and_shapes_are_huggingface_s() {
        let (vs, _) = model(0);
        let mut got: Vec<(String, Vec<i64>)> = vs.variables().into_iter().map(|(k, v)| (k, v.size())).collect();
        got.sort();
        let mut expected = vec![
            ("transformer.wte.weight".to_owned(), vec![128, 64]),
            ("transformer.wpe.weight".to_owned(), vec![32, 64]),
            ("transformer.ln_f.weight".to_owned(), vec![64]),
            ("transformer.ln_f.bias".to_owned(), vec![64]),
        ];
        for i in 0..2 {
            for (n, s) in [
                ("ln_1.weight", vec![64]),
                ("ln_1.bias", vec![64]),
                ("attn.c_attn.weight", vec![64 + 2 * 16, 64]),
                ("attn.c_attn.bias", vec![64 + 2 * 16]),
                ("attn.c_proj.weight", vec![64, 64]),
                ("attn.c_proj.bias", vec![64]),
                ("ln_2.weight", vec![64]),
                ("ln_2.bias", vec![64]),
                ("mlp.c_fc.weight", vec![256, 64]),
                ("mlp.c_fc.bias", vec![256]),
                ("mlp.c_proj.weight", vec![64, 256]),
                ("mlp.c_proj.bias", vec![64]),
            ] {
                expected.push((format!("transformer.h.{i}.{n}"), s));
            }
        }
        expected.sort();
        assert_eq!(got, expected);
    }

    #[test]
    fn untied_model_has_lm_head() {
        let cfg = GptBigCodeConfig { tie_word_embeddings: false, ..tiny() };
        let vs = nn::VarStore::new(Device::Cpu);
        let _m = GptBigCode::seeded(&vs.root(), &cfg, 0).unwrap();
        assert_eq!(vs.variables()["lm_head.weight"].size(), vec![128, 64]);
        let n: i64 = vs.trainable_variables().iter().map(|t| t.numel() as i64).sum();
        assert_eq!(n, cfg.param_count());
    }

    #[test]
    fn parameter_count_matches_formula() {
        let (vs, _) = model(0);
        let n: i64 = vs.trainable_variables().iter().map(|t| t.numel() as i64).sum();
        assert_eq!(n, tiny().param_count());
    }

    #[test]
    fn forward_shape() {
        let (_vs, m) = model(0);
        let logits = m.forward(&ids(1, 3, 32)).unwrap();
        assert_eq!(logits.size(), vec![3, 32, 128]);
        assert_eq!(logits.kind(), Kind::Float);
    }

    #[test]
    fn causal_changing_a_later_token_leaves_earlier_logits_alone() {
        let (_vs, m) = model(0);
        let a = ids(2, 1, 16);
        let t = 7;
        let b = a.copy();
        let old = b.int64_value(&[0, t + 1]);
        let _ = b.narrow(1, t + 1, 1).fill_((old + 1) % 128);
        let (la, lb) = (m.forward(&a).unwrap(), m.forward(&b).unwrap());
        assert!(la.narrow(1, 0, t + 1).equal(&lb.narrow(1, 0, t + 1)), "logits up to t must not change");
        assert!(!la.narrow(1, t + 1, 1).equal(&lb.narrow(1, t + 1, 1)), "logits at t+1 must change");
    }

    #[test]
    fn same_seed_same_weights_other_seed_other_weights() {
        let (a, _) = model(42);
        let (b, _) = model(42);
        let (c, _) = model(43);
        let (va, vb, vc) = (a.variables(), b.variables(), c.variables());
        for (name, t) in &va {
            assert!(t.equal(&vb[name]), "{name} differs with the same seed");
        }
        assert!(!va["transformer.wte.weight"].equal(&vc["transformer.wte.weight"]));
    }

    #[test]
    fn init_statistics_follow_transformers() {
        let cfg = GptBigCodeConfig::tiny(2, 256, 4, 1024, 32);
        let vs = nn::VarStore::new(Device::Cpu);
        GptBigCode::seeded(&vs.root(), &cfg, 0).unwrap();
        let v = vs.variables();
        let std = |n: &str| v[n].std(true).double_value(&[]);
        assert!((std("transformer.wte.weight") - 0.02).abs() < 0.002);
        assert!((std("transformer.h.0.mlp.c_proj.weight") - 0.01).abs() < 0.001); // 0.02/sqrt(4)
        assert_eq!(v["transformer.h.0.ln_1.weight"].sum(Kind::Float).double_value(&[]), 256.0);
        assert_eq!(v["transformer.h.0.attn.c_attn.bias"].abs().sum(Kind::Float).double_value(&[]), 0.0);
    }

    /// transformers' `GPTBigCodeAttention._attn` for multi-query, transcribed: query
    /// `[b, t, H, hd]` reshaped to `[b, t * H, hd]`, times key `[b, hd, t]`, viewed as
    /// `[b, t, H, t]`, causal mask, softmax, times value `[b, t, hd]`.
    fn reference_attention(m: &GptBigCode, blk: &Block, x: &Tensor) -> Tensor {
        let (b, t, d) = x.size3().unwrap();
        let (h, hd) = (m.config.n_head, m.config.head_dim());
        let qkv = blk.c_attn.forward(x);
        let parts = qkv.split_with_sizes([d, 2 * hd], 2);
        let kv = parts[1].split_with_sizes([hd, hd], -1);
        let (query, key, value) = (&parts[0], &kv[0], &kv[1]);
        let q = query.reshape([b, t * h, hd]);
        let w = q.bmm(&key.transpose(1, 2)) / (hd as f64).sqrt();
        let w = w.view([b, t, h, t]);
        let mask = Tensor::ones([t, t], (Kind::Bool, Device::Cpu)).tril(0).view([1, t, 1, t]);
        let w = w.masked_fill(&mask.logical_not(), f64::NEG_INFINITY).softmax(-1, Kind::Float);
        w.view([b, t * h, t]).bmm(value).view([b, t, h * hd])
    }

    #[test]
    fn attention_matches_transformers_multi_query_layout() {
        let (_vs, m) = model(5);
        let x = {
            let _guard = global_rng_lock();
            tch::manual_seed(6);
            Tensor::randn([2, 9, 64], (Kind::Float, Device::Cpu))
        };
        for blk in &m.blocks {
            let (ours, theirs) = (m.attention(blk, &x), reference_attention(&m, blk, &x));
            assert_eq!(ours.size(), vec![2, 9, 64]);
            assert!(ours.allclose(&theirs, 1e-5, 1e-6, false), "max diff {}", (ours - theirs).abs().max());
        }
    }

    #[test]
    fn bad_inputs_are_clear_errors() {
        let (_vs, m) = model(0);
        let long = Tensor::zeros([1, 33], (Kind::Int64, Device::Cpu));
        assert!(m.forward(&long).unwrap_err().to_string().contains("sequence length 33 is above n_positions = 32"));
        let oov = Tensor::from_slice(&[1i64, 2, 128]).view([1, 3]);
        assert_eq!(m.forward(&oov).unwrap_err().to_string(), "token id 128 is outside the vocabulary (vocab_size 128)");
        let flat = Tensor::from_slice(&[1i64, 2]);
        assert!(matches!(m.forward(&flat), Err(ModelError::InputShape(_))));
    }

    #[test]
    fn loss_at_init_is_near_ln_vocab() {
        let (_vs, m) = model(0);
        let loss = m.lm_loss(&ids(3, 4, 32)).unwrap().double_value(&[]);
        assert!((loss - (128f64).ln()).abs() < 0.3, "{loss}");
    }
}
