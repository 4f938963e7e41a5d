//! Data parallelism over a c10d group: gradients summed across ranks, and the ZeRO-1 sharded
//! AdamW (Megatron's "distributed optimizer").
//!
//! The parameters, in name order and flattened, form one flat space of `total` elements,
//! padded to `parts * shard` ([`FlatLayout`]). With ZeRO-1, rank `r` owns elements
//! `r * shard .. (r + 1) * shard`: each step the flat gradient is reduce-scattered (rank `r`
//! receives the sum of its slice), rank `r` updates its slice of the weights with its slice of
//! the AdamW moments, and the slices are all-gathered back into every rank's weights. The
//! update is [`Coefficients::update`] applied to each parameter's run of elements inside the
//! slice, so an element gets the update the whole-parameter [`AdamW`] would give it (up to the
//! fused kernel's last bit: its vectorised body and scalar tail round differently).
//!
//! Shards are saved as `<param>.exp_avg@<start>` runs ([`StateFiles`] reads them back for any
//! `parts`): resuming with another `dp` reshards without a conversion script.
//!
//! tch has no backward hooks, so communication starts after the backward pass (no overlap), as
//! one reduce-scatter (or all-reduce) of the whole flat gradient.

use std::path::Path;

use aurora_torch::dist::{DistError, Group, ReduceOp};
use aurora_torch::tch::{self, Kind, Tensor, nn};

use crate::adamw::{AdamWConfig, AdamWError, Coefficients, STEP_TENSOR, StateFiles, trainable};
use crate::hf;

/// The flat parameter space split into `parts` equal shards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlatLayout {
    /// Parameter names in name order, with their element counts and flat offsets.
    pub params: Vec<(String, i64, i64)>,
    pub total: i64,
    pub parts: i64,
    /// Elements per shard (`total` rounded up to a multiple of `parts`, divided by `parts`).
    pub shard: i64,
}

impl FlatLayout {
    pub fn new(params: impl IntoIterator<Item = (String, i64)>, parts: usize) -> Self {
        let mut offset = 0;
        let params: Vec<(String, i64, i64)> = params
            .into_iter()
            .map(|(name, numel)| {
                let at = offset;
                offset += numel;
                (name, numel, at)
            })
            .collect();
        let parts = parts.max(1) as i64;
        FlatLayout { params, total: offset, parts, shard: (offset + parts - 1) / parts }
    }

    /// The runs of parameters inside shard `part`: (parameter index, first element inside the
    /// parameter, elements, offset inside the shard).
    pub fn runs(&self, part: usize) -> Vec<(usize, i64, i64, i64)> {
        let (lo, hi) = (part as i64 * self.shard, ((part as i64 + 1) * self.shard).min(self.total));
        self.params
            .iter()
            .enumerate()
            .filter_map(|(i, &(_, numel, offset))| {
                let (start, end) = (lo.max(offset), hi.min(offset + numel));
                (start < end).then_some((i, start - offset, end - start, start - lo))
            })
            .collect()
    }
}

/// The gradients of `params` concatenated (a missing gradient counts as zeros) and zero-padded
/// to `len` elements.
fn flat_grads(params: &[(String, Tensor, bool)], len: i64) -> Tensor {
    let mut parts: Vec<Tensor> = params
        .iter()
        .map(|(_, var, _)| {
            let g = var.grad();
            if g.defined() { g.reshape([-1]) } else { Tensor::zeros([var.numel() as i64], (var.kind(), var.device())) }
        })
        .collect();
    let used: i64 = parts.iter().map(|p| p.size()[0]).sum();
    if len > used {
        let first = &params[0].1;
        parts.push(Tensor::zeros([len - used], (first.kind(), first.device())));
    }
    Tensor::cat(&parts, 0)
}

/// Copies run `i` of `flat` (as many elements as parameter `i`) into `target(parameter i)`,
/// skipping undefined targets (a parameter without a gradient).
fn copy_from_flat(params: &[(String, Tensor, bool)], flat: &Tensor, target: impl Fn(&Tensor) -> Tensor) {
    tch::no_grad(|| {
        let mut offset = 0;
        for (_, var, _) in params {
            let numel = var.numel() as i64;
            let t = target(var);
            if t.defined() {
                t.view([-1]).copy_(&flat.narrow(0, offset, numel));
            }
            offset += numel;
        }
    });
}

/// Plain data parallelism: sums every parameter's gradient over `group` (one all-reduce of the
/// flat gradient), so each rank then holds the global batch's gradient.
pub fn all_reduce_grads(vs: &nn::VarStore, group: &Group) -> Result<(), DistError> {
    let params = trainable(vs);
    let total: i64 = params.iter().map(|(_, v, _)| v.numel() as i64).sum();
    let mut flat = flat_grads(&params, total);
    group.all_reduce(&mut flat, ReduceOp::Sum)?;
    copy_from_flat(&params, &flat, Tensor::grad);
    Ok(())
}

/// Makes every rank start from rank 0's weights (one broadcast of the flattened parameters).
pub fn broadcast_weights(vs: &nn::VarStore, group: &Group) -> Result<(), DistError> {
    let params = trainable(vs);
    let mut flat = Tensor::cat(&params.iter().map(|(_, v, _)| v.detach().reshape([-1])).collect::<Vec<_>>(), 0);
    group.broadcast(&mut flat, 0)?;
    copy_from_flat(&params, &flat, Tensor::shallow_clone);
    Ok(())
}

/// ZeRO-1: AdamW whose moments hold only this rank's shard of the flat parameter space.
pub struct ShardedAdamW {
    config: AdamWConfig,
    step: u64,
    params: Vec<(String, Tensor, bool)>,
    layout: FlatLayout,
    part: usize,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
}

impl ShardedAdamW {
    /// Zero moments for shard `part` of `parts` over the trainable variables of `vs`.
    pub fn new(vs: &nn::VarStore, config: &AdamWConfig, part: usize, parts: usize) -> Self {
        let params = trainable(vs);
        let layout = FlatLayout::new(params.iter().map(|(n, v, _)| (n.clone(), v.numel() as i64)), parts);
        let device = params.first().map(|(_, v, _)| v.device()).unwrap_or(tch::Device::Cpu);
        let zeros = || Tensor::zeros([layout.shard], (Kind::Float, device));
        ShardedAdamW { config: config.clone(), step: 0, exp_avg: zeros(), exp_avg_sq: zeros(), params, layout, part }
    }

    pub fn layout(&self) -> &FlatLayout {
        &self.layout
    }

    pub fn step_count(&self) -> u64 {
        self.step
    }

    /// Sets every gradient to zero.
    pub fn zero_grad(&self) {
        for (_, var, _) in &self.params {
            let mut g = var.grad();
            if g.defined() {
                let _ = g.detach_();
                let _ = g.zero_();
            }
        }
    }

    /// This rank's shard of the gradient summed over `group` (a reduce-scatter).
    pub fn reduce_scatter_grads(&self, group: &Group) -> Result<Tensor, DistError> {
        let mut flat = flat_grads(&self.params, self.layout.shard * self.layout.parts);
        let mut shard = Tensor::zeros([self.layout.shard], (flat.kind(), flat.device()));
        group.reduce_scatter(&mut shard, &mut flat)?;
        Ok(shard)
    }

    /// One AdamW update of this rank's shard of the weights from its gradient shard.
    pub fn step(&mut self, lr: f64, grad_shard: &Tensor) {
        self.step += 1;
        let coefficients = Coefficients::new(&self.config, lr, self.step);
        tch::no_grad(|| {
            for (index, start, len, at) in self.layout.runs(self.part) {
                let (_, var, decay) = &self.params[index];
                let mut weights = var.view([-1]).narrow(0, start, len);
                let grad = grad_shard.narrow(0, at, len);
                let mut exp_avg = self.exp_avg.narrow(0, at, len);
                let mut exp_avg_sq = self.exp_avg_sq.narrow(0, at, len);
                coefficients.update(&mut weights, &grad, &mut exp_avg, &mut exp_avg_sq, *decay);
            }
        });
    }

    /// Gives every rank the weights every other rank updated (an all-gather of the shards).
    pub fn all_gather_weights(&self, group: &Group) -> Result<(), DistError> {
        let runs = self.layout.runs(self.part);
        let first = &self.params[0].1;
        let options = (first.kind(), first.device());
        let mut mine: Vec<Tensor> =
            runs.iter().map(|&(i, start, len, _)| self.params[i].1.detach().view([-1]).narrow(0, start, len)).collect();
        let used: i64 = runs.iter().map(|r| r.2).sum();
        if used < self.layout.shard {
            mine.push(Tensor::zeros([self.layout.shard - used], options));
        }
        let mut send = Tensor::cat(&mine, 0);
        let mut all = Tensor::zeros([self.layout.shard * self.layout.parts], options);
        group.all_gather(&mut all, &mut send)?;
        copy_from_flat(&self.params, &all, Tensor::shallow_clone);
        Ok(())
    }

    /// This rank's shard as named runs (`<param>.exp_avg@<start>`) plus `step`, on the CPU.
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for (index, start, len, at) in self.layout.runs(self.part) {
            let name = &self.layout.params[index].0;
            for (suffix, state) in [("exp_avg", &self.exp_avg), ("exp_avg_sq", &self.exp_avg_sq)] {
                out.push((format!("{name}.{suffix}@{start}"), state.narrow(0, at, len).to_device(tch::Device::Cpu)));
            }
        }
        out.push((STEP_TENSOR.to_owned(), Tensor::from_slice(&[self.step as i64])));
        out
    }

    /// Writes this rank's shard to `path`.
    pub fn save(&self, path: &Path) -> Result<(), AdamWError> {
        Ok(hf::write_safetensors(path, &self.state_tensors())?)
    }

    /// Reads this rank's shard from `files`, whatever layout wrote them.
    pub fn load_state(&mut self, files: &StateFiles) -> Result<(), AdamWError> {
        let mut problems = Vec::new();
        let mut expected = std::collections::BTreeSet::new();
        for (name, numel, _) in &self.layout.params {
            for suffix in ["exp_avg", "exp_avg_sq"] {
                expected.insert(format!("{name}.{suffix}"));
                // Each tensor must be stored for exactly this parameter's elements.
                let tensor = format!("{name}.{suffix}");
                match files.stored_len(&tensor) {
                    None => problems.push(format!("missing tensor `{tensor}` ({numel} elements)")),
                    Some(found) if found != *numel => problems.push(format!(
                        "tensor `{tensor}`: expected {numel} elements, found {found} (the state belongs to another model)"
                    )),
                    Some(_) => {}
                }
            }
        }
        problems.extend(files.unexpected(&expected));
        let step = files.step().map_err(|p| problems.push(p)).ok();
        let mut runs = Vec::new();
        if problems.is_empty() {
            for (index, start, len, at) in self.layout.runs(self.part) {
                let name = &self.layout.params[index].0;
                let read = |suffix: &str| files.read_range(&format!("{name}.{suffix}"), start, len);
                match (read("exp_avg"), read("exp_avg_sq")) {
                    (Ok(a), Ok(b)) => runs.push((at, a, b)),
                    (Err(p), _) | (_, Err(p)) => problems.push(p),
                }
            }
        }
        if !problems.is_empty() {
            return Err(AdamWError::Mismatch { path: files.described(), problems });
        }
        tch::no_grad(|| {
            for (at, a, b) in runs {
                let len = a.size()[0];
                self.exp_avg.narrow(0, at, len).copy_(&a);
                self.exp_avg_sq.narrow(0, at, len).copy_(&b);
            }
        });
        self.step = step.expect("checked");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adamw::AdamW;
    use crate::{GptBigCode, GptBigCodeConfig};

    /// Two ZeRO-1 shards after one update, read back as one whole AdamW state and as three shards:
    /// every element lands where it belongs. Without one shard file, loading names the gap.
    #[test]
    fn shards_reload_under_any_number_of_parts() {
        let vs = nn::VarStore::new(tch::Device::Cpu);
        GptBigCode::seeded(&vs.root(), &GptBigCodeConfig::tiny(1, 16, 2, 40, 8), 3).unwrap();
        let config = AdamWConfig::default();
        let dir = tempfile::tempdir().unwrap();
        for part in 0..2 {
            let mut opt = ShardedAdamW::new(&vs, &config, part, 2);
            let shard = opt.layout().shard;
            let grad = Tensor::arange(shard, (Kind::Float, tch::Device::Cpu)) * (0.01 * (part + 1) as f64) - 0.3;
            opt.step(1e-2, &grad);
            opt.save(&dir.path().join(format!("optimizer-shard-{part}-of-2.safetensors"))).unwrap();
        }
        let files = StateFiles::open_dir(dir.path()).unwrap();
        let mut whole = AdamW::new(&vs, &config);
        whole.load_state(&files).unwrap();
        assert_eq!(whole.step_count(), 1);
        let reference: std::collections::BTreeMap<String, Tensor> = whole.state_tensors().into_iter().collect();
        let mut covered = 0;
        for part in 0..3 {
            let mut opt = ShardedAdamW::new(&vs, &config, part, 3);
            opt.load_state(&files).unwrap();
            for (name, run) in opt.state_tensors() {
                let Some((tensor, start)) = name.rsplit_once('@') else { continue };
                let start: i64 = start.parse().unwrap();
                let expected = reference[tensor].reshape([-1]).narrow(0, start, run.size()[0]);
                assert!(run.equal(&expected), "{name} differs");
                covered += run.size()[0];
            }
        }
        // Both moments of every element, once.
        assert_eq!(
            covered,
            2 * FlatLayout::new(whole.parameters().map(|(n, v, _)| (n.to_owned(), v.numel() as i64)), 1).total
        );

        std::fs::remove_file(dir.path().join("optimizer-shard-1-of-2.safetensors")).unwrap();
        let err =
            AdamW::new(&vs, &config).load_state(&StateFiles::open_dir(dir.path()).unwrap()).unwrap_err().to_string();
        // The parameter split between the shards is short; those wholly in the lost one are missing.
        assert!(err.contains("the files hold 960 (a rank's shard file is missing"), "{err}");
        assert!(err.contains("missing tensor `transformer.wte.weight.exp_avg`"), "{err}");
    }

    #[test]
    fn shards_cover_the_flat_space_once() {
        let layout = FlatLayout::new([("a".to_owned(), 5), ("b".to_owned(), 3), ("c".to_owned(), 4)], 3);
        assert_eq!((layout.total, layout.shard), (12, 4));
        assert_eq!(layout.runs(0), [(0, 0, 4, 0)]);
        assert_eq!(layout.runs(1), [(0, 4, 1, 0), (1, 0, 3, 1)]);
        assert_eq!(layout.runs(2), [(2, 0, 4, 0)]);
        // Padding: 13 elements over 2 parts gives shards of 7; the second holds 6 real ones.
        let layout = FlatLayout::new([("a".to_owned(), 13)], 2);
        assert_eq!(layout.runs(1), [(0, 7, 6, 0)]);
    }
}
