//! The trainer's side of tensor and pipeline parallelism ([`crate::sharded`]): loading a rank's
//! slices from whole tensors, the gradient reductions the grid adds to data parallelism, the
//! global gradient norm over a sharded model, and checkpoints written as one part per model shard
//! and consolidated into the Hugging Face artifact by rank 0.

use std::collections::BTreeMap;
use std::path::Path;

use aurora_torch::dist::{DistError, Group, ReduceOp};
use aurora_torch::tch::{self, Kind, Tensor, nn};

use super::{Optimizer, TrainError, io, parallel::Ranks, sorted_variables};
use crate::adamw::{STEP_TENSOR, StateFiles, trainable};
use crate::config::GptBigCodeConfig;
use crate::hf::{self, TensorToWrite};
use crate::sharded::StageModel;
use crate::sharded::pieces::{
    LAYOUT_FILE, LocalParam, Parts, PartsLayout, WholeTensors, local_tensors, part_dir, stage_params,
};

fn mismatch(path: &Path, problems: Vec<String>) -> TrainError {
    TrainError::AdamW(crate::adamw::AdamWError::Mismatch { path: path.to_path_buf(), problems })
}

/// Copies this rank's slices of `source`'s whole weights into its variables.
pub fn load_weights(
    vs: &nn::VarStore,
    params: &[LocalParam],
    source: &dyn WholeTensors,
    from: &Path,
) -> Result<(), TrainError> {
    let tensors = local_tensors(params, source, "")
        .map_err(|problems| TrainError::ShardShape { path: from.to_path_buf(), problems })?;
    let vars = vs.variables();
    tch::no_grad(|| {
        for (name, t) in tensors {
            let mut var = vars[&name].shallow_clone();
            var.copy_(&t.to_kind(var.kind()).to_device(var.device()));
        }
    });
    Ok(())
}

/// Loads this rank's slices of `source`'s whole optimizer state (at `step`) into `opt`, through a
/// file of the rank's own tensors in the work directory (removed after).
pub fn load_optimizer(
    opt: &mut Optimizer,
    params: &[LocalParam],
    source: &dyn WholeTensors,
    step: u64,
    scratch: &Path,
    from: &Path,
) -> Result<(), TrainError> {
    let mut tensors = Vec::new();
    for suffix in [".exp_avg", ".exp_avg_sq"] {
        tensors.extend(local_tensors(params, source, suffix).map_err(|p| mismatch(from, p))?);
    }
    tensors.push((STEP_TENSOR.to_owned(), Tensor::from_slice(&[step as i64])));
    if let Some(parent) = scratch.parent() {
        std::fs::create_dir_all(parent).map_err(io(parent))?;
    }
    hf::write_safetensors(scratch, &tensors)?;
    let loaded = opt.load(&StateFiles::open(&[scratch.to_path_buf()])?);
    std::fs::remove_file(scratch).map_err(io(scratch))?;
    Ok(loaded?)
}

/// The sum of the flattened gradients of `vars` over `group`, written back (one all-reduce).
fn all_reduce_grads_of(vars: &[Tensor], group: &Group) -> Result<(), DistError> {
    if vars.is_empty() {
        return Ok(());
    }
    let grads: Vec<Tensor> = vars
        .iter()
        .map(|v| {
            let g = v.grad();
            if g.defined() { g.reshape([-1]) } else { Tensor::zeros([v.numel() as i64], (v.kind(), v.device())) }
        })
        .collect();
    let mut flat = Tensor::cat(&grads, 0);
    group.all_reduce(&mut flat, ReduceOp::Sum)?;
    tch::no_grad(|| {
        let mut at = 0;
        for v in vars {
            let n = v.numel() as i64;
            let g = v.grad();
            if g.defined() {
                g.view([-1]).copy_(&flat.narrow(0, at, n));
            }
            at += n;
        }
    });
    Ok(())
}

/// The reductions the grid adds before data parallelism's: the multi-query key/value head's
/// gradient over the TP group, the tied embedding's over the embedding group (Megatron's
/// `_allreduce_word_embedding_grads`).
pub fn reduce_model_parallel_grads(vs: &nn::VarStore, model: &StageModel, ranks: &Ranks) -> Result<(), DistError> {
    let vars = vs.variables();
    if let Some(tp) = &ranks.tp {
        let kv: Vec<Tensor> =
            model.params().iter().filter(|p| p.tp_reduce).map(|p| vars[&p.name].shallow_clone()).collect();
        all_reduce_grads_of(&kv, tp)?;
    }
    if let Some(group) = &ranks.embedding {
        all_reduce_grads_of(&[vars["transformer.wte.weight"].shallow_clone()], group)?;
    }
    Ok(())
}

/// Which gradients this rank counts in the global norm, and the group it is summed over.
pub struct NormScope<'a> {
    /// By variable name (every trainable variable of the rank).
    pub counted: BTreeMap<String, bool>,
    /// Data-parallel replicas count once: with a whole optimizer only DP rank 0 contributes.
    pub replica: bool,
    pub world: &'a Group,
}

impl<'a> NormScope<'a> {
    pub fn new(model: &StageModel, ranks: &'a Ranks) -> Self {
        NormScope {
            counted: model.params().iter().map(|p| (p.name.clone(), p.in_norm)).collect(),
            replica: ranks.grid.dp_rank == 0,
            world: ranks.world(),
        }
    }

    /// The global norm of whole gradients held by every DP rank (replicated optimizer).
    pub fn norm_of_grads(&self, vs: &nn::VarStore) -> Result<f64, DistError> {
        let mut sum = 0.0;
        if self.replica {
            for (name, var, _) in trainable(vs) {
                let g = var.grad();
                if g.defined() && self.counted.get(&name).copied().unwrap_or(true) {
                    sum += g.to_kind(Kind::Double).square().sum(Kind::Double).double_value(&[]);
                }
            }
        }
        self.all_reduce(sum)
    }

    /// The global norm from each rank's ZeRO-1 shard of the flat gradient: `runs` are the shard's
    /// (parameter index, .., elements, offset in the shard), parameters in name order.
    pub fn norm_of_shard(
        &self,
        names: &[String],
        runs: &[(usize, i64, i64, i64)],
        shard: &Tensor,
    ) -> Result<f64, DistError> {
        let mut sum = 0.0;
        for &(index, _, len, at) in runs {
            if self.counted.get(&names[index]).copied().unwrap_or(true) {
                sum += shard.narrow(0, at, len).to_kind(Kind::Double).square().sum(Kind::Double).double_value(&[]);
            }
        }
        self.all_reduce(sum)
    }

    fn all_reduce(&self, sum: f64) -> Result<f64, DistError> {
        let mut t = Tensor::from_slice(&[sum]);
        self.world.all_reduce(&mut t, ReduceOp::Sum)?;
        Ok(t.double_value(&[0]).sqrt())
    }
}

/// Writes this rank's share of a sharded checkpoint into `dir`: DP rank 0 of each model shard its
/// variables, every rank its optimizer state (whole or ZeRO-1 shard), rank 0 the layout.
pub fn write_part(dir: &Path, vs: &nn::VarStore, opt: Option<&Optimizer>, ranks: &Ranks) -> Result<(), TrainError> {
    let g = ranks.grid;
    let part = part_dir(dir, g.tp_rank, g.stage);
    std::fs::create_dir_all(&part).map_err(io(&part))?;
    if g.dp_rank == 0 {
        hf::write_safetensors(&part.join(crate::checkpoint::MODEL_FILE), &sorted_variables(vs))?;
    }
    if let Some(opt) = opt {
        opt.save_into(&part, Some(ranks))?;
    }
    if ranks.is_first() {
        let layout = PartsLayout { tp: g.tp, pp: g.pp };
        crate::checkpoint::write_json(&dir.join(LAYOUT_FILE), &layout)?;
    }
    Ok(())
}

/// A sharded checkpoint read back whole by rank 0, tensor by tensor as it writes the artifact or
/// a milestone: the whole model never sits in its memory, only the tensor being written (the
/// parts are memory-mapped).
pub struct Consolidated {
    parts: Parts,
    /// The whole model's parameters: the layout tp = pp = 1, every piece whole.
    whole: Vec<LocalParam>,
    step: u64,
}

impl Consolidated {
    /// Opens the parts in `dir` (`optimizer`: with their optimizer state, at `step`).
    pub fn open(dir: &Path, config: &GptBigCodeConfig, optimizer: bool, step: u64) -> Result<Self, TrainError> {
        let parts = Parts::open(dir, config, optimizer)?;
        Ok(Consolidated { parts, whole: stage_params(config, 1, 0, 1, 0), step })
    }

    fn read(&self, name: String, shape: Vec<i64>) -> TensorToWrite<'_> {
        let key = name.clone();
        TensorToWrite::new(name, Kind::Float, shape.clone(), move || self.parts.slice(&key, &shape, 0, 0, shape[0]))
    }

    /// The model's tensors, as `model.safetensors` holds them.
    pub fn weights(&self) -> Vec<TensorToWrite<'_>> {
        self.whole.iter().map(|p| self.read(p.piece.whole.clone(), p.piece.shape.clone())).collect()
    }

    /// The optimizer state's tensors, as `optimizer.safetensors` holds them.
    pub fn optimizer(&self) -> Vec<TensorToWrite<'_>> {
        let mut out: Vec<TensorToWrite> = self
            .whole
            .iter()
            .flat_map(|p| {
                ["exp_avg", "exp_avg_sq"]
                    .map(|suffix| self.read(format!("{}.{suffix}", p.piece.whole), p.piece.shape.clone()))
            })
            .collect();
        let step = self.step as i64;
        out.push(TensorToWrite::new(STEP_TENSOR, Kind::Int64, vec![1], move || Ok(Tensor::from_slice(&[step]))));
        out
    }
}
