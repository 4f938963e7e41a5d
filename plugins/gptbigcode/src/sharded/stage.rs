//! One rank's share of a GPTBigCode: the blocks of its pipeline stage, each split over the
//! tensor-parallel group as in Megatron-LM (`tensor_parallel/layers.py`): the query projection and
//! `mlp.c_fc` column-parallel (a rank computes its heads / its FFN columns), `attn.c_proj` and
//! `mlp.c_proj` row-parallel (partial outputs summed over the group, the bias added once after),
//! the multi-query key/value head replicated (its gradient summed over the group), the embedding
//! and the tied LM head vocab-parallel, and the loss a vocab-parallel cross-entropy
//! (`cross_entropy.py`): the maximum, the target's logit and the sum of exponentials are reduced
//! over the group, so no rank ever holds the full logits.
//!
//! With `tp == 1` every mapping is the identity and a stage computes exactly what the
//! corresponding layers of [`crate::GptBigCode`] compute.

use std::collections::BTreeMap;

use aurora_torch::dist::{DistError, Group, ReduceOp};
use aurora_torch::tch::{Kind, Tensor, nn};

use super::grid::Grid;
use super::pieces::{LocalParam, stage_params};
use crate::config::{Activation, GptBigCodeConfig};
use crate::model::{DECAY_GROUP, ModelError, NO_DECAY_GROUP, activate};
use crate::trainer::sft;

struct Norm {
    weight: Tensor,
    bias: Tensor,
}

struct Block {
    ln_1: Norm,
    /// `[n_embd / tp (+ 2 head_dim when tp == 1), n_embd]`: this rank's query rows (and, at
    /// tp 1, the key/value rows too, as `attn.c_attn`).
    c_attn: (Tensor, Tensor),
    /// The replicated key/value rows (tp > 1).
    c_attn_kv: Option<(Tensor, Tensor)>,
    attn_proj: (Tensor, Tensor),
    ln_2: Norm,
    c_fc: (Tensor, Tensor),
    mlp_proj: (Tensor, Tensor),
}

/// What a stage consumes: token ids on the first stage, the previous stage's hidden states on
/// the others.
pub enum StageInput<'a> {
    Ids(&'a Tensor),
    Hidden(&'a Tensor),
}

/// One rank's stage of the model (see the module docs).
pub struct StageModel {
    config: GptBigCodeConfig,
    activation: Activation,
    grid: Grid,
    params: Vec<LocalParam>,
    wte: Option<Tensor>,
    wpe: Option<Tensor>,
    blocks: Vec<Block>,
    ln_f: Option<Norm>,
    /// The LM head's vocabulary rows on this rank (the tied embedding's copy, or `lm_head`).
    head: Option<Tensor>,
    /// First vocabulary id of this rank's rows, and how many of them are real (not padding).
    vocab_start: i64,
    vocab_real: i64,
}

impl StageModel {
    /// Creates the rank's variables under `root` (zeros: load them with
    /// [`super::pieces::local_tensors`]).
    pub fn new(root: &nn::Path, config: &GptBigCodeConfig, grid: Grid) -> Result<Self, ModelError> {
        config.validate()?;
        let activation = config.activation()?;
        let (tp, pp) = (grid.tp as i64, grid.pp as i64);
        let problem = if config.n_head % tp != 0 {
            Some(format!("tp must divide n_head = {} (each rank holds whole attention heads)", config.n_head))
        } else if config.ffn_dim() % tp != 0 {
            Some(format!("tp must divide the FFN width n_inner = {} (mlp.c_fc is split by columns)", config.ffn_dim()))
        } else if config.n_layer % pp != 0 {
            Some(format!("pp must divide n_layer = {} (each stage holds as many blocks)", config.n_layer))
        } else {
            None
        };
        if let Some(problem) = problem {
            return Err(ModelError::Unshardable { tp: grid.tp, pp: grid.pp, problem });
        }
        let params = stage_params(config, grid.tp, grid.tp_rank, grid.pp, grid.stage);
        let mut vars: BTreeMap<String, Tensor> = BTreeMap::new();
        for p in &params {
            let mut path = root.set_group(if p.decay { DECAY_GROUP } else { NO_DECAY_GROUP });
            let mut parts: Vec<&str> = p.name.split('.').collect();
            let last = parts.pop().expect("dotted name");
            for part in parts {
                path = &path / part;
            }
            vars.insert(p.name.clone(), path.zeros(last, &p.piece.local_shape()));
        }
        let mut take = |name: &str| vars.remove(name);
        let pair = |take: &mut dyn FnMut(&str) -> Option<Tensor>, prefix: &str| {
            (take(&format!("{prefix}.weight")).expect("a weight"), take(&format!("{prefix}.bias")).expect("a bias"))
        };
        let norm = |take: &mut dyn FnMut(&str) -> Option<Tensor>, prefix: &str| {
            let (weight, bias) = pair(take, prefix);
            Norm { weight, bias }
        };
        let wte = "transformer.wte.weight";
        let first_wte = if grid.is_first_stage() { take(wte) } else { None };
        let wpe = take("transformer.wpe.weight");
        let blocks = grid
            .layers(config.n_layer as usize)
            .map(|i| {
                let b = |n: &str| format!("transformer.h.{i}.{n}");
                Block {
                    ln_1: norm(&mut take, &b("ln_1")),
                    c_attn: pair(&mut take, &b("attn.c_attn")),
                    c_attn_kv: (grid.tp > 1).then(|| pair(&mut take, &b("attn.c_attn_kv"))),
                    attn_proj: pair(&mut take, &b("attn.c_proj")),
                    ln_2: norm(&mut take, &b("ln_2")),
                    c_fc: pair(&mut take, &b("mlp.c_fc")),
                    mlp_proj: pair(&mut take, &b("mlp.c_proj")),
                }
            })
            .collect();
        let (ln_f, head) = if grid.is_last_stage() {
            let ln_f = Some(norm(&mut take, "transformer.ln_f"));
            let head = if config.tie_word_embeddings {
                match &first_wte {
                    Some(w) => Some(w.shallow_clone()),
                    None => take(wte),
                }
            } else {
                take("lm_head.weight")
            };
            (ln_f, head)
        } else {
            (None, None)
        };
        let vocab = params
            .iter()
            .find(|p| p.name == wte || p.name == "lm_head.weight")
            .map(|p| (p.piece.start, p.piece.len))
            .unwrap_or((0, 0));
        Ok(StageModel {
            config: config.clone(),
            activation,
            grid,
            params,
            wte: first_wte,
            wpe,
            blocks,
            ln_f,
            head,
            vocab_start: vocab.0,
            vocab_real: vocab.1,
        })
    }

    pub fn params(&self) -> &[LocalParam] {
        &self.params
    }

    pub fn grid(&self) -> Grid {
        self.grid
    }

    /// The hidden states this stage sends on, or (last stage) this rank's columns of the logits
    /// `[batch, seq, padded_vocab / tp]`. `tp` is the tensor-parallel group (`None` at tp 1).
    // `x = x + ...`: tch's `+=` is an in-place add that would overwrite what autograd saved.
    #[allow(clippy::assign_op_pattern)]
    pub fn forward(&self, input: StageInput<'_>, tp: Option<&Group>) -> Result<Tensor, DistError> {
        let copy_to = |x: &Tensor| match tp {
            Some(g) => g.copy_to(x),
            None => Ok(x.shallow_clone()),
        };
        let reduce_from = |x: &Tensor| match tp {
            Some(g) => g.reduce_from(x),
            None => Ok(x.shallow_clone()),
        };
        let mut x = match input {
            StageInput::Ids(ids) => {
                let t = ids.size()[1];
                let wte = self.wte.as_ref().expect("the first stage holds the embedding");
                let embedded = match tp {
                    // Vocab-parallel embedding: ids outside this rank's rows look up row 0 and
                    // are zeroed; the sum over the group gives every id its row.
                    Some(_) => {
                        let local = ids - self.vocab_start;
                        let mine = local.ge(0).logical_and(&local.lt(self.vocab_real));
                        let rows = Tensor::embedding(wte, &local.where_scalarother(&mine, 0), -1, false, false);
                        reduce_from(&(rows * mine.unsqueeze(-1).to_kind(Kind::Float)))?
                    }
                    None => Tensor::embedding(wte, ids, -1, false, false),
                };
                let pos = Tensor::arange(t, (Kind::Int64, ids.device()));
                embedded + Tensor::embedding(self.wpe.as_ref().expect("with wte"), &pos, -1, false, false)
            }
            StageInput::Hidden(h) => h.shallow_clone(),
        };
        let (d, hd) = (self.config.n_embd, self.config.head_dim());
        let heads = self.config.n_head / self.grid.tp as i64;
        let scale = if self.config.scale_attn_weights { None } else { Some(1.0) };
        for blk in &self.blocks {
            let (b, t, _) = x.size3().expect("[batch, seq, hidden]");
            let h = copy_to(&layer_norm(&x, &blk.ln_1, &self.config))?;
            let local_d = heads * hd;
            let (q, kv) = match &blk.c_attn_kv {
                Some((w, bias)) => (h.linear(&blk.c_attn.0, Some(&blk.c_attn.1)), h.linear(w, Some(bias))),
                None => {
                    let qkv = h.linear(&blk.c_attn.0, Some(&blk.c_attn.1));
                    (qkv.narrow(-1, 0, d), qkv.narrow(-1, d, 2 * hd))
                }
            };
            let q = q.view([b, t, heads, hd]).transpose(1, 2);
            let k = kv.narrow(-1, 0, hd).unsqueeze(1).expand([b, heads, t, hd], false);
            let v = kv.narrow(-1, hd, hd).unsqueeze(1).expand([b, heads, t, hd], false);
            let y = Tensor::scaled_dot_product_attention(&q, &k, &v, None::<Tensor>, 0.0, true, scale, false);
            let y = y.transpose(1, 2).contiguous().view([b, t, local_d]);
            x = x + reduce_from(&y.linear::<Tensor>(&blk.attn_proj.0, None))? + &blk.attn_proj.1;
            let m = copy_to(&layer_norm(&x, &blk.ln_2, &self.config))?.linear::<Tensor>(&blk.c_fc.0, None);
            let m = activate(self.activation, &m, &blk.c_fc.1);
            x = x + reduce_from(&m.linear::<Tensor>(&blk.mlp_proj.0, None))? + &blk.mlp_proj.1;
        }
        match (&self.ln_f, &self.head) {
            (Some(ln_f), Some(head)) => Ok(copy_to(&layer_norm(&x, ln_f, &self.config))?.matmul(&head.tr())),
            _ => Ok(x),
        }
    }

    /// Summed next-token cross-entropy of this rank's logit columns against `labels` (positions
    /// labelled [`sft::IGNORE`] count nothing), reduced over the tensor-parallel group: the
    /// loss every rank of the group then holds.
    pub fn loss_sum(&self, logits: &Tensor, labels: &Tensor, tp: Option<&Group>) -> Result<Tensor, DistError> {
        let v = logits.narrow(-1, 0, self.vocab_real).to_kind(Kind::Float).reshape([-1, self.vocab_real]);
        let labels = labels.reshape([-1]);
        let Some(group) = tp else {
            return Ok(crate::trainer::masked_loss_sum(&v, &labels));
        };
        vocab_parallel_loss_sum(&v, &labels, self.vocab_start, group)
    }
}

fn layer_norm(x: &Tensor, n: &Norm, config: &GptBigCodeConfig) -> Tensor {
    x.layer_norm([config.n_embd], Some(&n.weight), Some(&n.bias), config.layer_norm_epsilon, true)
}

/// Megatron's vocab-parallel cross-entropy, summed over positions: `logits` `[n, v]` are this
/// rank's columns `vocab_start .. vocab_start + v` of the full logits, `labels` `[n]` full ids.
/// Built from the group's autograd mappings, so its gradient on every rank is its columns of
/// `softmax - one_hot`.
pub fn vocab_parallel_loss_sum(
    logits: &Tensor,
    labels: &Tensor,
    vocab_start: i64,
    group: &Group,
) -> Result<Tensor, DistError> {
    let v = logits.size()[1];
    let mut max = logits.detach().amax([-1], true);
    group.all_reduce(&mut max, ReduceOp::Max)?;
    let shifted = logits - &max;
    let local = labels - vocab_start;
    let mine = local.ge(0).logical_and(&local.lt(v));
    let picked = shifted.gather(1, &local.where_scalarother(&mine, 0).unsqueeze(1), false).squeeze_dim(1)
        * mine.to_kind(Kind::Float);
    let sum_exp = shifted.exp().sum_dim_intlist([-1i64].as_slice(), false, Kind::Float);
    // One all-reduce for both: [target logit, sum of exponentials] per position.
    let both = group.reduce_from(&Tensor::stack(&[picked, sum_exp], 1))?;
    let loss = both.select(1, 1).log() - both.select(1, 0);
    Ok((loss * labels.ne(sft::IGNORE).to_kind(Kind::Float)).sum(Kind::Float))
}
