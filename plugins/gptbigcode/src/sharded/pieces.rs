//! Which slice of which Hugging Face tensor each rank holds, and reading those slices from
//! whatever holds whole tensors (a Hugging Face directory, a whole optimizer state, another
//! layout's sharded checkpoint), so that any layout starts from, resumes from and writes the
//! same consolidated artifact with no conversion script.
//!
//! A rank's variables are named like the Hugging Face tensors they slice; the one exception is
//! the multi-query key/value rows of `attn.c_attn` under tensor parallelism, which every TP rank
//! holds whole while it holds only its heads' query rows: they are the variable
//! `attn.c_attn_kv.{weight,bias}` (a [`Piece`] of `attn.c_attn` rows `n_embd..`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use aurora_torch::tch::{Kind, Tensor, nn};
use serde::{Deserialize, Serialize};

use crate::adamw::{AdamWError, StateFiles};
use crate::config::GptBigCodeConfig;

/// Rows `start .. start + len` along `dim` of the whole tensor `whole` (of shape `shape`),
/// held by a rank as a tensor `padded` long along `dim` (zeros past `len`: Megatron's
/// vocabulary padding).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Piece {
    pub whole: String,
    pub shape: Vec<i64>,
    pub dim: usize,
    pub start: i64,
    pub len: i64,
    pub padded: i64,
}

impl Piece {
    fn all(whole: &str, shape: &[i64]) -> Self {
        Piece { whole: whole.to_owned(), shape: shape.to_vec(), dim: 0, start: 0, len: shape[0], padded: shape[0] }
    }

    /// Whether the piece is the whole tensor.
    pub fn is_whole(&self) -> bool {
        self.start == 0 && self.len == self.shape[self.dim]
    }

    /// The shape of the rank's variable.
    pub fn local_shape(&self) -> Vec<i64> {
        let mut s = self.shape.clone();
        s[self.dim] = self.padded;
        s
    }

    /// The shape of the real (unpadded) slice.
    fn slice_shape(&self) -> Vec<i64> {
        let mut s = self.shape.clone();
        s[self.dim] = self.len;
        s
    }
}

/// One variable of a rank.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalParam {
    /// The variable's name in the rank's `VarStore`.
    pub name: String,
    pub piece: Piece,
    /// Replicated on every TP rank but computed from each rank's own heads: its gradient is
    /// summed over the TP group (the multi-query key/value head).
    pub tp_reduce: bool,
    /// Counted in the global gradient norm on this rank: replicated tensors are counted by TP
    /// rank 0 only, the last stage's copy of the tied embedding not at all.
    pub in_norm: bool,
    /// A weight decay applies to (matrices and embeddings, not biases and LayerNorms).
    pub decay: bool,
}

/// The vocabulary rows a model of `vocab_size` has on each of `tp` ranks: Megatron pads the
/// vocabulary to a multiple of `tp` (the padding rows are zeros, never looked up, and masked out
/// of the loss).
pub fn padded_vocab(vocab_size: i64, tp: usize) -> i64 {
    aurora_train::layout::Layout { tp: tp as u64, pp: 1, dp: 1 }.padded_vocab(vocab_size)
}

/// The variables of TP rank `tp_rank` of `tp` on pipeline stage `stage` of `pp`, in name order.
pub fn stage_params(config: &GptBigCodeConfig, tp: usize, tp_rank: usize, pp: usize, stage: usize) -> Vec<LocalParam> {
    let (d, hd, ffn) = (config.n_embd, config.head_dim(), config.ffn_dim());
    let t = tp as i64;
    let r = tp_rank as i64;
    let mut out = Vec::new();
    let replicated = |name: String, shape: &[i64], decay: bool| LocalParam {
        piece: Piece::all(&name, shape),
        name,
        tp_reduce: false,
        in_norm: tp_rank == 0,
        decay,
    };
    // Split along `dim` into tp equal parts (the caller checked divisibility).
    let split = |name: String, shape: &[i64], dim: usize, decay: bool| {
        let len = shape[dim] / t;
        LocalParam {
            piece: Piece { whole: name.clone(), shape: shape.to_vec(), dim, start: r * len, len, padded: len },
            name,
            tp_reduce: false,
            in_norm: true,
            decay,
        }
    };
    let vocab = |name: &str, in_norm: bool| {
        let rows = padded_vocab(config.vocab_size, tp) / t;
        let start = (r * rows).min(config.vocab_size);
        let len = ((r + 1) * rows).min(config.vocab_size) - start;
        LocalParam {
            name: name.to_owned(),
            piece: Piece {
                whole: name.to_owned(),
                shape: vec![config.vocab_size, d],
                dim: 0,
                start,
                len,
                padded: rows,
            },
            tp_reduce: false,
            in_norm,
            decay: true,
        }
    };
    let (first, last) = (stage == 0, stage + 1 == pp);
    let wte = "transformer.wte.weight";
    if first {
        out.push(vocab(wte, true));
        out.push(replicated("transformer.wpe.weight".into(), &[config.n_positions, d], true));
    }
    let per = config.n_layer as usize / pp;
    for i in stage * per..(stage + 1) * per {
        let b = |n: &str| format!("transformer.h.{i}.{n}");
        for ln in ["ln_1", "ln_2"] {
            out.push(replicated(b(&format!("{ln}.weight")), &[d], false));
            out.push(replicated(b(&format!("{ln}.bias")), &[d], false));
        }
        if tp == 1 {
            out.push(replicated(b("attn.c_attn.weight"), &[d + 2 * hd, d], true));
            out.push(replicated(b("attn.c_attn.bias"), &[d + 2 * hd], false));
        } else {
            for (suffix, shape, decay) in [("weight", vec![d + 2 * hd, d], true), ("bias", vec![d + 2 * hd], false)] {
                let whole = b(&format!("attn.c_attn.{suffix}"));
                let rows = d / t;
                out.push(LocalParam {
                    name: whole.clone(),
                    piece: Piece {
                        whole: whole.clone(),
                        shape: shape.clone(),
                        dim: 0,
                        start: r * rows,
                        len: rows,
                        padded: rows,
                    },
                    tp_reduce: false,
                    in_norm: true,
                    decay,
                });
                out.push(LocalParam {
                    name: b(&format!("attn.c_attn_kv.{suffix}")),
                    piece: Piece { whole, shape, dim: 0, start: d, len: 2 * hd, padded: 2 * hd },
                    tp_reduce: true,
                    in_norm: tp_rank == 0,
                    decay,
                });
            }
        }
        out.push(split(b("attn.c_proj.weight"), &[d, d], 1, true));
        out.push(replicated(b("attn.c_proj.bias"), &[d], false));
        out.push(split(b("mlp.c_fc.weight"), &[ffn, d], 0, true));
        out.push(split(b("mlp.c_fc.bias"), &[ffn], 0, false));
        out.push(split(b("mlp.c_proj.weight"), &[d, ffn], 1, true));
        out.push(replicated(b("mlp.c_proj.bias"), &[d], false));
    }
    if last {
        out.push(replicated("transformer.ln_f.weight".into(), &[d], false));
        out.push(replicated("transformer.ln_f.bias".into(), &[d], false));
        if config.tie_word_embeddings {
            if !first {
                // The last stage's copy of the tied embedding: its gradient is summed with the
                // first stage's, and it is counted once, there.
                out.push(vocab(wte, false));
            }
        } else {
            out.push(vocab("lm_head.weight", true));
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// Reads slices of whole tensors by name (`<param>` for weights, `<param>.exp_avg` for optimizer
/// moments), as float32.
pub trait WholeTensors {
    /// Rows `start .. start + len` along `dim` of the whole tensor `name` of shape `shape`.
    fn slice(&self, name: &str, shape: &[i64], dim: usize, start: i64, len: i64) -> Result<Tensor, String>;
}

/// Flat element runs `(start, len)` of rows `start .. start + len` along `dim` of a row-major
/// tensor of `shape`.
fn runs(shape: &[i64], dim: usize, start: i64, len: i64) -> Vec<(i64, i64)> {
    let inner: i64 = shape[dim + 1..].iter().product();
    let outer: i64 = shape[..dim].iter().product();
    let stride = shape[dim] * inner;
    (0..outer).map(|o| (o * stride + start * inner, len * inner)).collect()
}

impl WholeTensors for StateFiles {
    fn slice(&self, name: &str, shape: &[i64], dim: usize, start: i64, len: i64) -> Result<Tensor, String> {
        self.check_shape(name, shape)?;
        let parts = runs(shape, dim, start, len)
            .into_iter()
            .map(|(at, n)| self.read_range(name, at, n))
            .collect::<Result<Vec<_>, _>>()?;
        let mut out_shape = shape.to_vec();
        out_shape[dim] = len;
        Ok(Tensor::cat(&parts, 0).reshape(out_shape))
    }
}

/// The whole tensors of a `VarStore` holding a whole model (a freshly initialised one).
pub struct WholeVarStore<'a>(pub &'a nn::VarStore);

impl WholeTensors for WholeVarStore<'_> {
    fn slice(&self, name: &str, shape: &[i64], dim: usize, start: i64, len: i64) -> Result<Tensor, String> {
        let vars = self.0.variables();
        let t = vars.get(name).ok_or_else(|| format!("missing tensor `{name}`"))?;
        if t.size() != shape {
            return Err(format!("tensor `{name}`: expected shape {shape:?}, found {:?}", t.size()));
        }
        Ok(t.detach().narrow(dim as i64, start, len).to_kind(Kind::Float).contiguous())
    }
}

/// Copies into each variable of `vs` its piece of the whole tensors `source` holds (`suffix`
/// appended to each whole name: "" for weights), zero past the real rows.
pub fn local_tensors(
    params: &[LocalParam],
    source: &dyn WholeTensors,
    suffix: &str,
) -> Result<Vec<(String, Tensor)>, Vec<String>> {
    let mut problems = Vec::new();
    let mut out = Vec::new();
    for p in params {
        let piece = &p.piece;
        match source.slice(&format!("{}{suffix}", piece.whole), &piece.shape, piece.dim, piece.start, piece.len) {
            Ok(t) => {
                let t = if piece.padded > piece.len {
                    let mut pad = piece.local_shape();
                    pad[piece.dim] = piece.padded - piece.len;
                    Tensor::cat(
                        &[t, Tensor::zeros(pad, (Kind::Float, aurora_torch::tch::Device::Cpu))],
                        piece.dim as i64,
                    )
                } else {
                    t
                };
                out.push((format!("{}{suffix}", p.name), t));
            }
            // Two variables may slice one tensor (the query and the key/value rows): say it once.
            Err(problem) if !problems.contains(&problem) => problems.push(problem),
            Err(_) => {}
        }
    }
    if problems.is_empty() { Ok(out) } else { Err(problems) }
}

/// The layout a sharded checkpoint was written with (`layout.json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartsLayout {
    pub tp: usize,
    pub pp: usize,
}

pub const LAYOUT_FILE: &str = "layout.json";

/// The directory of TP rank `tp_rank`'s variables on stage `stage` inside a sharded checkpoint.
pub fn part_dir(dir: &Path, tp_rank: usize, stage: usize) -> PathBuf {
    dir.join(format!("part-tp{tp_rank:03}-pp{stage:03}"))
}

/// A sharded checkpoint: `layout.json` and one `part-tpT-ppS/` per model shard, holding the
/// shard's variables (`model.safetensors`, under the rank's variable names) and its optimizer
/// state (whole or ZeRO-1 shards over DP, as [`StateFiles`] reads them).
pub struct Parts {
    /// Per part: its variables, its weights, its optimizer state (when opened with it).
    parts: Vec<(Vec<LocalParam>, StateFiles, Option<StateFiles>)>,
}

impl Parts {
    /// Opens the parts of `dir`, with the optimizer state when `optimizer`.
    pub fn open(dir: &Path, config: &GptBigCodeConfig, optimizer: bool) -> Result<Self, AdamWError> {
        let path = dir.join(LAYOUT_FILE);
        let text = std::fs::read_to_string(&path).map_err(|source| AdamWError::Io { path: path.clone(), source })?;
        let layout: PartsLayout = serde_json::from_str(&text).map_err(|e| AdamWError::Mismatch {
            path: path.clone(),
            problems: vec![format!("invalid layout file: {e}")],
        })?;
        let mut parts = Vec::new();
        for stage in 0..layout.pp {
            for tp_rank in 0..layout.tp {
                let part = part_dir(dir, tp_rank, stage);
                let weights = StateFiles::open(&[part.join(crate::checkpoint::MODEL_FILE)])?;
                let state = if optimizer { Some(StateFiles::open_dir(&part)?) } else { None };
                parts.push((stage_params(config, layout.tp, tp_rank, layout.pp, stage), weights, state));
            }
        }
        Ok(Parts { parts })
    }
}

impl WholeTensors for Parts {
    fn slice(&self, name: &str, shape: &[i64], dim: usize, start: i64, len: i64) -> Result<Tensor, String> {
        let (base, suffix) = match name.split_once(".exp_avg") {
            Some((base, rest)) => (base, format!(".exp_avg{rest}")),
            None => (name, String::new()),
        };
        let mut out_shape = shape.to_vec();
        out_shape[dim] = len;
        let out = Tensor::zeros(out_shape.as_slice(), (Kind::Float, aurora_torch::tch::Device::Cpu));
        // Rows of the request filled so far (pieces of replicated tensors repeat: any copy serves).
        let mut covered: BTreeMap<i64, i64> = BTreeMap::new();
        for (params, weights, state) in &self.parts {
            let files = if suffix.is_empty() {
                weights
            } else {
                state.as_ref().ok_or_else(|| format!("tensor `{name}`: the optimizer state was not opened"))?
            };
            for p in params.iter().filter(|p| p.piece.whole == base) {
                let piece = &p.piece;
                // A whole piece serves any request, and a whole request any piece; otherwise a
                // piece serves requests along its own dimension.
                let whole_request = start == 0 && len == shape[dim];
                let (piece_dim, piece_start, piece_len) =
                    if piece.is_whole() { (dim, 0, shape[dim]) } else { (piece.dim, piece.start, piece.len) };
                if whole_request && piece_dim != dim {
                    let local = read_local(files, &format!("{}{suffix}", p.name), piece)?;
                    out.narrow(piece_dim as i64, piece_start, piece_len).copy_(&local.narrow(
                        piece_dim as i64,
                        0,
                        piece_len,
                    ));
                    covered.insert(start, start + len);
                    continue;
                }
                if piece_dim != dim {
                    return Err(format!(
                        "tensor `{base}`: stored split along dimension {piece_dim}, requested along {dim}"
                    ));
                }
                let (lo, hi) = (start.max(piece_start), (start + len).min(piece_start + piece_len));
                if lo >= hi {
                    continue;
                }
                let local = read_local(files, &format!("{}{suffix}", p.name), piece)?;
                let local = if piece.is_whole() { local } else { local.narrow(dim as i64, 0, piece.len) };
                let src = local.narrow(dim as i64, lo - piece_start, hi - lo);
                out.narrow(dim as i64, lo - start, hi - lo).copy_(&src);
                covered.insert(lo, hi);
            }
        }
        let mut at = start;
        for (&lo, &hi) in &covered {
            if lo > at {
                break;
            }
            at = at.max(hi);
        }
        if at < start + len {
            return Err(format!("tensor `{name}`: rows {at}..{} are in no part of the checkpoint", start + len));
        }
        Ok(out)
    }
}

/// A rank's whole variable `name` (shaped as `piece` locally) from its part's files.
fn read_local(files: &StateFiles, name: &str, piece: &Piece) -> Result<Tensor, String> {
    let shape = piece.local_shape();
    files.slice(name, &shape, 0, 0, shape[0])
}

/// The shape of each rank variable, for creating them.
pub fn shapes(params: &[LocalParam]) -> BTreeMap<String, Vec<i64>> {
    params.iter().map(|p| (p.name.clone(), p.piece.local_shape())).collect()
}

/// The real (unpadded) slice shape of a piece, for tests and checks.
pub fn slice_shape(piece: &Piece) -> Vec<i64> {
    piece.slice_shape()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> GptBigCodeConfig {
        // vocab 127: not a multiple of 2 or 4, so the last TP rank holds padding rows.
        GptBigCodeConfig::tiny(4, 64, 4, 127, 32)
    }

    #[test]
    fn flat_runs_of_a_slice() {
        assert_eq!(runs(&[4, 6], 0, 1, 2), [(6, 12)]);
        assert_eq!(runs(&[4, 6], 1, 2, 3), [(2, 3), (8, 3), (14, 3), (20, 3)]);
        assert_eq!(runs(&[10], 0, 5, 5), [(5, 5)]);
    }

    /// Every element of every whole tensor is held by some rank of the layout, and the pieces of
    /// split tensors tile it exactly.
    #[test]
    fn pieces_of_every_layout_cover_the_model() {
        let config = tiny();
        let vs = nn::VarStore::new(aurora_torch::tch::Device::Cpu);
        crate::GptBigCode::seeded(&vs.root(), &config, 0).unwrap();
        let whole = vs.variables();
        for (tp, pp) in [(1, 1), (2, 1), (1, 2), (2, 2), (4, 4)] {
            let mut count: BTreeMap<String, i64> = BTreeMap::new();
            for stage in 0..pp {
                for r in 0..tp {
                    for p in stage_params(&config, tp, r, pp, stage) {
                        assert!(whole.contains_key(&p.piece.whole), "{}", p.piece.whole);
                        assert_eq!(whole[&p.piece.whole].size(), p.piece.shape);
                        if p.in_norm {
                            let n: i64 = slice_shape(&p.piece).iter().product();
                            *count.entry(p.piece.whole.clone()).or_default() += n;
                        }
                    }
                }
            }
            for (name, t) in &whole {
                assert_eq!(count.get(name).copied(), Some(t.numel() as i64), "{name} at tp {tp} pp {pp}");
            }
        }
        assert_eq!(padded_vocab(127, 4), 128);
    }

    /// A model split at one layout, written as parts, reads back whole and at another layout.
    #[test]
    fn parts_read_back_at_any_layout() {
        let config = tiny();
        let vs = nn::VarStore::new(aurora_torch::tch::Device::Cpu);
        crate::GptBigCode::seeded(&vs.root(), &config, 3).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (tp, pp) = (2, 2);
        for stage in 0..pp {
            for r in 0..tp {
                let params = stage_params(&config, tp, r, pp, stage);
                let tensors = local_tensors(&params, &WholeVarStore(&vs), "").unwrap();
                let part = part_dir(dir.path(), r, stage);
                std::fs::create_dir_all(&part).unwrap();
                crate::hf::write_safetensors(&part.join(crate::checkpoint::MODEL_FILE), &tensors).unwrap();
            }
        }
        std::fs::write(dir.path().join(LAYOUT_FILE), serde_json::to_string(&PartsLayout { tp, pp }).unwrap()).unwrap();
        let parts = Parts::open(dir.path(), &config, false).unwrap();
        for (name, t) in vs.variables() {
            let size = t.size();
            let back = parts.slice(&name, &size, 0, 0, size[0]).unwrap();
            assert!(back.equal(&t), "{name}");
        }
        // At tp 4, each rank's pieces equal the whole tensors' slices.
        for r in 0..4 {
            let params = stage_params(&config, 4, r, 1, 0);
            let from_parts = local_tensors(&params, &parts, "").unwrap();
            let from_whole = local_tensors(&params, &WholeVarStore(&vs), "").unwrap();
            for ((n, a), (_, b)) in from_parts.iter().zip(&from_whole) {
                assert!(a.equal(b), "{n}");
            }
        }
    }
}
