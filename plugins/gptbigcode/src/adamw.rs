//! AdamW over tensors, with its state in the open so it can be checkpointed and continued.
//!
//! tch's `nn::Optimizer` keeps its moments inside libtorch where they cannot be read or
//! restored, so a resumed run (or a stage that continues another's run) would restart Adam's
//! moments from zero. [`AdamW`] holds `exp_avg` and `exp_avg_sq` per parameter and the step
//! count, and applies `torch.optim.AdamW`'s update (decoupled weight decay `lr * wd`, bias
//! correction); parameters of [`NO_DECAY_GROUP`] (biases, LayerNorm) get no weight decay.
//!
//! State file (`optimizer.safetensors`): `<param>.exp_avg` and `<param>.exp_avg_sq` (float32,
//! the parameter's shape) for every parameter, and `step` (int64, shape `[1]`).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use aurora_torch::tch::{self, Device, Kind, Tensor, nn};
use safetensors::tensor::SafeTensors;

pub use aurora_train::optimizer::AdamWConfig;

use crate::hf::{self, HfError};
use crate::model::NO_DECAY_GROUP;

/// Name of the step counter in the state file.
pub const STEP_TENSOR: &str = "step";

#[derive(Debug, thiserror::Error)]
pub enum AdamWError {
    #[error(transparent)]
    Hf(#[from] HfError),
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error(
        "{}: the optimizer state does not match the model:{}\nthe state belongs to another architecture; start the \
         stage without `continue_run`, or continue from a stage of the same model",
        path.display(),
        problems.iter().map(|p| format!("\n  - {p}")).collect::<String>()
    )]
    Mismatch { path: PathBuf, problems: Vec<String> },
    #[error(transparent)]
    Torch(#[from] tch::TchError),
}

#[derive(Debug)]
struct ParamState {
    name: String,
    var: Tensor,
    decay: bool,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
}

/// AdamW over the trainable variables of a `VarStore` (see the module docs).
#[derive(Debug)]
pub struct AdamW {
    config: AdamWConfig,
    params: Vec<ParamState>,
    step: u64,
}

impl AdamW {
    /// Zero moments and step 0 for every trainable variable of `vs`, in name order.
    pub fn new(vs: &nn::VarStore, config: &AdamWConfig) -> Self {
        let variables = vs.variables_.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // Groups are recorded per tensor, names per tensor too: join them on the storage pointer.
        let group: HashMap<usize, usize> =
            variables.trainable_variables.iter().map(|v| (v.tensor.data_ptr() as usize, v.group)).collect();
        let named: BTreeMap<&String, &Tensor> = variables.named_variables.iter().collect();
        let params = named
            .into_iter()
            .filter_map(|(name, var)| {
                let g = *group.get(&(var.data_ptr() as usize))?;
                let zeros = || Tensor::zeros_like(var).to_kind(Kind::Float);
                Some(ParamState {
                    name: name.clone(),
                    var: var.shallow_clone(),
                    decay: g != NO_DECAY_GROUP,
                    exp_avg: zeros(),
                    exp_avg_sq: zeros(),
                })
            })
            .collect();
        Self { config: config.clone(), params, step: 0 }
    }

    /// Updates applied so far.
    pub fn step_count(&self) -> u64 {
        self.step
    }

    /// Sets every gradient to zero (as `optimizer.zero_grad(set_to_none=False)`).
    pub fn zero_grad(&self) {
        for p in &self.params {
            let mut g = p.var.grad();
            if g.defined() {
                let _ = g.detach_();
                let _ = g.zero_();
            }
        }
    }

    /// One AdamW update at learning rate `lr`, from the gradients accumulated in the variables.
    /// Parameters without a gradient are left alone (their moments too), as torch does.
    pub fn step(&mut self, lr: f64) {
        self.step += 1;
        let AdamWConfig { beta1, beta2, eps, weight_decay } = self.config;
        let bias_correction1 = 1.0 - beta1.powi(self.step as i32);
        let bias_correction2_sqrt = (1.0 - beta2.powi(self.step as i32)).sqrt();
        let step_size = lr / bias_correction1;
        tch::no_grad(|| {
            for p in &mut self.params {
                let grad = p.var.grad();
                if !grad.defined() {
                    continue;
                }
                if p.decay && weight_decay != 0.0 {
                    let _ = p.var.g_mul_scalar_(1.0 - lr * weight_decay);
                }
                let _ = p.exp_avg.g_mul_scalar_(beta1);
                let _ = p.exp_avg.g_add_(&(&grad * (1.0 - beta1)));
                let _ = p.exp_avg_sq.g_mul_scalar_(beta2);
                let _ = p.exp_avg_sq.addcmul_(&grad, &(&grad * (1.0 - beta2)));
                let denom = (p.exp_avg_sq.sqrt() / bias_correction2_sqrt) + eps;
                let _ = p.var.addcdiv_(&(&p.exp_avg * -step_size), &denom);
            }
        });
    }

    /// The state as named tensors (see the module docs), on the CPU.
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::with_capacity(2 * self.params.len() + 1);
        for p in &self.params {
            out.push((format!("{}.exp_avg", p.name), p.exp_avg.to_device(Device::Cpu)));
            out.push((format!("{}.exp_avg_sq", p.name), p.exp_avg_sq.to_device(Device::Cpu)));
        }
        out.push((STEP_TENSOR.to_owned(), Tensor::from_slice(&[self.step as i64])));
        out
    }

    /// Writes the state to `path` (safetensors).
    pub fn save(&self, path: &Path) -> Result<(), AdamWError> {
        Ok(hf::write_safetensors(path, &self.state_tensors())?)
    }

    /// Replaces the state with the one in `path`, after checking that it has exactly this
    /// optimizer's tensors with their shapes (every problem is listed).
    pub fn load(&mut self, path: &Path) -> Result<(), AdamWError> {
        let bytes = std::fs::read(path).map_err(|source| AdamWError::Io { path: path.to_path_buf(), source })?;
        let st = SafeTensors::deserialize(&bytes).map_err(|e| {
            AdamWError::Hf(HfError::Safetensors { path: path.to_path_buf(), message: format!("{e:?}") })
        })?;
        let mut found: BTreeMap<String, Tensor> = BTreeMap::new();
        for (name, view) in st.tensors() {
            found.insert(name, Tensor::try_from(view)?);
        }
        let mut problems = Vec::new();
        let step = match found.remove(STEP_TENSOR) {
            Some(t) if t.size() == [1] && t.kind() == Kind::Int64 => Some(t.int64_value(&[0]) as u64),
            Some(t) => {
                problems.push(format!("`{STEP_TENSOR}`: expected int64 [1], found {:?} {:?}", t.kind(), t.size()));
                None
            }
            None => {
                problems.push(format!("missing `{STEP_TENSOR}`"));
                None
            }
        };
        let mut loaded = Vec::new();
        for p in &self.params {
            for suffix in ["exp_avg", "exp_avg_sq"] {
                let name = format!("{}.{suffix}", p.name);
                match found.remove(&name) {
                    None => problems.push(format!("missing tensor `{name}` (expected shape {:?})", p.var.size())),
                    Some(t) if t.size() != p.var.size() => problems.push(format!(
                        "tensor `{name}`: expected shape {:?}, found {:?}",
                        p.var.size(),
                        t.size()
                    )),
                    Some(t) => loaded.push(t),
                }
            }
        }
        for (name, t) in &found {
            problems.push(format!("unexpected tensor `{name}` (shape {:?})", t.size()));
        }
        if !problems.is_empty() {
            return Err(AdamWError::Mismatch { path: path.to_path_buf(), problems });
        }
        let mut loaded = loaded.into_iter();
        for p in &mut self.params {
            let device = p.var.device();
            p.exp_avg = loaded.next().expect("checked").f_to_kind(Kind::Float)?.f_to_device(device)?;
            p.exp_avg_sq = loaded.next().expect("checked").f_to_kind(Kind::Float)?.f_to_device(device)?;
        }
        self.step = step.expect("checked");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::BuildAdamW;
    use crate::{GptBigCode, GptBigCodeConfig};

    fn setup(seed: i64) -> (nn::VarStore, GptBigCode) {
        let vs = nn::VarStore::new(Device::Cpu);
        let m = GptBigCode::seeded(&vs.root(), &GptBigCodeConfig::tiny(1, 32, 2, 64, 16), seed).unwrap();
        (vs, m)
    }

    fn batch(step: i64) -> Tensor {
        Tensor::arange(2 * 16, (Kind::Int64, Device::Cpu)).g_mul_scalar(step + 3).remainder(64).view([2, 16])
    }

    /// A weight matrix (decayed) and a bias (not decayed) with gradients `c_s + w` from seeded
    /// random `c_s`: ours and tch's (libtorch's C++ `torch::optim::AdamW`) agree at every step.
    /// (Through a whole model the comparison is ill-conditioned: near-zero bias gradients turn
    /// last-bit differences into visible ones under Adam's normalisation.)
    #[test]
    fn matches_tch_adamw_over_several_steps() {
        let config = AdamWConfig { weight_decay: 0.1, ..AdamWConfig::default() };
        let make = || {
            let vs = nn::VarStore::new(Device::Cpu);
            let w = vs.root().set_group(crate::model::DECAY_GROUP).var("w", &[8, 4], nn::Init::Const(0.5));
            let b = vs.root().set_group(NO_DECAY_GROUP).var("b", &[4], nn::Init::Const(0.5));
            (vs, w, b)
        };
        let (vs_a, wa, ba) = make();
        let (vs_b, wb, bb) = make();
        let mut ours = AdamW::new(&vs_a, &config);
        let mut theirs = config.build(&vs_b, 1e-2).unwrap();
        let loss = |w: &Tensor, b: &Tensor, step: i64| {
            let _guard = crate::model::global_rng_lock();
            tch::manual_seed(step);
            let (cw, cb) =
                (Tensor::randn([8, 4], (Kind::Float, Device::Cpu)), Tensor::randn([4], (Kind::Float, Device::Cpu)));
            (w * cw + w * w * 0.5).sum(Kind::Float) + (b * cb + b * b * 0.5).sum(Kind::Float)
        };
        for step in 0..8 {
            let lr = 1e-2 * (1.0 - step as f64 / 10.0);
            ours.zero_grad();
            loss(&wa, &ba, step).backward();
            ours.step(lr);
            theirs.set_lr(lr);
            theirs.zero_grad();
            loss(&wb, &bb, step).backward();
            theirs.step();
            for (name, a, b) in [("w", &wa, &wb), ("b", &ba, &bb)] {
                assert!(a.allclose(b, 1e-6, 1e-7, false), "{name} at step {step}: max diff {}", (a - b).abs().max());
            }
        }
        // The weights moved, and the decayed matrix differs from the bias (which has no decay).
        assert!(!wa.allclose(&Tensor::full([8, 4], 0.5, (Kind::Float, Device::Cpu)), 1e-3, 1e-3, false));
        assert_eq!(ours.step_count(), 8);
    }

    /// Without a gradient signal (zero loss), only decoupled decay moves the decay group.
    #[test]
    fn weight_decay_is_decoupled_and_skips_the_no_decay_group() {
        let vs = nn::VarStore::new(Device::Cpu);
        let w = vs.root().set_group(crate::model::DECAY_GROUP).var("w", &[3], nn::Init::Const(2.0));
        let b = vs.root().set_group(NO_DECAY_GROUP).var("b", &[3], nn::Init::Const(2.0));
        let mut opt = AdamW::new(&vs, &AdamWConfig { weight_decay: 0.5, ..AdamWConfig::default() });
        ((&w + &b) * 0.0).sum(Kind::Float).backward();
        opt.step(0.1);
        assert_eq!(Vec::<f32>::try_from(&w).unwrap(), [2.0 * (1.0 - 0.1 * 0.5); 3]);
        assert_eq!(Vec::<f32>::try_from(&b).unwrap(), [2.0; 3]);
    }

    #[test]
    fn state_roundtrips_bitwise() {
        let config = AdamWConfig::default();
        let (vs, m) = setup(5);
        let mut opt = AdamW::new(&vs, &config);
        for step in 0..3 {
            opt.zero_grad();
            m.lm_loss(&batch(step)).unwrap().backward();
            opt.step(1e-3);
        }
        let dir = tempfile::tempdir().unwrap();
        let (first, second) = (dir.path().join("a.safetensors"), dir.path().join("b.safetensors"));
        opt.save(&first).unwrap();
        let (vs2, _) = setup(9);
        let mut restored = AdamW::new(&vs2, &config);
        restored.load(&first).unwrap();
        assert_eq!(restored.step_count(), 3);
        restored.save(&second).unwrap();
        assert_eq!(std::fs::read(&first).unwrap(), std::fs::read(&second).unwrap());
        for ((n, a), (_, b)) in opt.state_tensors().iter().zip(restored.state_tensors()) {
            assert!(a.equal(&b), "{n} differs after the round trip");
        }
    }

    #[test]
    fn state_of_another_shape_is_refused_with_names() {
        let (vs, _) = setup(1);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("opt.safetensors");
        AdamW::new(&vs, &AdamWConfig::default()).save(&path).unwrap();
        let other = nn::VarStore::new(Device::Cpu);
        GptBigCode::seeded(&other.root(), &GptBigCodeConfig::tiny(1, 64, 2, 64, 16), 0).unwrap();
        let err = AdamW::new(&other, &AdamWConfig::default()).load(&path).unwrap_err().to_string();
        assert!(
            err.contains("tensor `transformer.wte.weight.exp_avg`: expected shape [64, 64], found [64, 32]"),
            "{err}"
        );
    }
}
