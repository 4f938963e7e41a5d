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

use std::collections::{BTreeMap, BTreeSet, HashMap};
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

/// The trainable variables of `vs` in name order: name, tensor (shallow), whether weight decay
/// applies (not to [`NO_DECAY_GROUP`]).
pub fn trainable(vs: &nn::VarStore) -> Vec<(String, Tensor, bool)> {
    let variables = vs.variables_.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    // Groups are recorded per tensor, names per tensor too: join them on the storage pointer.
    let group: HashMap<usize, usize> =
        variables.trainable_variables.iter().map(|v| (v.tensor.data_ptr() as usize, v.group)).collect();
    let named: BTreeMap<&String, &Tensor> = variables.named_variables.iter().collect();
    named
        .into_iter()
        .filter_map(|(name, var)| {
            let g = *group.get(&(var.data_ptr() as usize))?;
            Some((name.clone(), var.shallow_clone(), g != NO_DECAY_GROUP))
        })
        .collect()
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

/// The scalars of one AdamW update (step `t`, learning rate `lr`), and the update itself: one
/// definition for the whole-parameter optimizer here and the sharded one ([`crate::zero`]), so
/// both compute the same update for the same element (up to the fused kernel's rounding, which
/// differs between its vectorised body and its scalar tail).
#[derive(Debug, Clone, Copy)]
pub struct Coefficients {
    step: aurora_torch::AdamWStep,
}

impl Coefficients {
    pub fn new(config: &AdamWConfig, lr: f64, step: u64) -> Self {
        let AdamWConfig { beta1, beta2, eps, weight_decay } = *config;
        Coefficients { step: aurora_torch::AdamWStep { step, lr, beta1, beta2, weight_decay, eps } }
    }

    /// `torch.optim.AdamW`'s update of `param` (a parameter or a contiguous view of part of one)
    /// in place, with libtorch's fused kernel (`fused=True`): element-wise, so a shard of a
    /// parameter gets the whole's update up to the last bit. Weight decay applies when `decay`.
    pub fn update(
        &self,
        param: &mut Tensor,
        grad: &Tensor,
        exp_avg: &mut Tensor,
        exp_avg_sq: &mut Tensor,
        decay: bool,
    ) {
        let step =
            aurora_torch::AdamWStep { weight_decay: if decay { self.step.weight_decay } else { 0.0 }, ..self.step };
        aurora_torch::fused_adamw(param, grad, exp_avg, exp_avg_sq, &step);
    }
}

impl AdamW {
    /// Zero moments and step 0 for every trainable variable of `vs`, in name order.
    pub fn new(vs: &nn::VarStore, config: &AdamWConfig) -> Self {
        let params = trainable(vs)
            .into_iter()
            .map(|(name, var, decay)| {
                let zeros = || Tensor::zeros_like(&var).to_kind(Kind::Float);
                ParamState { exp_avg: zeros(), exp_avg_sq: zeros(), name, var, decay }
            })
            .collect();
        Self { config: config.clone(), params, step: 0 }
    }

    /// Updates applied so far.
    pub fn step_count(&self) -> u64 {
        self.step
    }

    /// Drops every gradient (as `optimizer.zero_grad()`, `set_to_none=True`): the next backward
    /// writes them anew, with no fill of zeros to add to.
    pub fn zero_grad(&self) {
        for p in &self.params {
            // A shallow clone shares the variable's autograd state, gradient included.
            aurora_torch::clear_grad(&mut p.var.shallow_clone());
        }
    }

    /// One AdamW update at learning rate `lr`, from the gradients accumulated in the variables.
    /// Parameters without a gradient are left alone (their moments too), as torch does.
    pub fn step(&mut self, lr: f64) {
        self.step += 1;
        let coefficients = Coefficients::new(&self.config, lr, self.step);
        tch::no_grad(|| {
            for p in &mut self.params {
                let grad = p.var.grad();
                if grad.defined() {
                    coefficients.update(&mut p.var, &grad, &mut p.exp_avg, &mut p.exp_avg_sq, p.decay);
                }
            }
        });
    }

    /// The trainable variables in name order: name, tensor, whether weight decay applies.
    pub fn parameters(&self) -> impl Iterator<Item = (&str, &Tensor, bool)> {
        self.params.iter().map(|p| (p.name.as_str(), &p.var, p.decay))
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
        self.load_state(&StateFiles::open(&[path.to_path_buf()])?)
    }

    /// Replaces the state with the one in `files` (whole or sharded, see [`StateFiles`]).
    pub fn load_state(&mut self, files: &StateFiles) -> Result<(), AdamWError> {
        let mut problems = Vec::new();
        let mut loaded = Vec::new();
        let mut expected = BTreeSet::new();
        for p in &self.params {
            for suffix in ["exp_avg", "exp_avg_sq"] {
                let name = format!("{}.{suffix}", p.name);
                expected.insert(name.clone());
                match files.read_whole(&name, &p.var.size()) {
                    Ok(t) => loaded.push(t),
                    Err(problem) => problems.push(problem),
                }
            }
        }
        problems.extend(files.unexpected(&expected));
        let step = files.step().map_err(|p| problems.push(p)).ok();
        if !problems.is_empty() {
            return Err(AdamWError::Mismatch { path: files.described(), problems });
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

/// Optimizer state read from one or more safetensors files: the whole state
/// (`optimizer.safetensors`: `<param>.exp_avg` in the parameter's shape) or shards written by
/// the ZeRO-1 optimizer ([`crate::zero`]: `<param>.exp_avg@<start>`, a 1-D run of the flattened
/// parameter from element `start`), or a mix. Any layout can read what any other wrote: a
/// reader asks for the elements it owns and gets them from whichever files hold them.
pub struct StateFiles {
    paths: Vec<PathBuf>,
    /// Each file, memory-mapped: a rank reads only the pages of the runs it asks for, not every
    /// rank's shard.
    bytes: Vec<memmap2::Mmap>,
    /// Tensor name -> its pieces (file index, name in the file, first element, elements, shape
    /// when stored whole).
    pieces: BTreeMap<String, Vec<Piece>>,
    /// `step` of each file.
    steps: Vec<(usize, i64)>,
}

struct Piece {
    file: usize,
    stored: String,
    start: i64,
    len: i64,
    shape: Option<Vec<i64>>,
}

impl StateFiles {
    /// Reads the files' headers (and keeps their bytes).
    pub fn open(paths: &[PathBuf]) -> Result<Self, AdamWError> {
        let mut files =
            StateFiles { paths: paths.to_vec(), bytes: Vec::new(), pieces: BTreeMap::new(), steps: Vec::new() };
        for (index, path) in paths.iter().enumerate() {
            let io = |source| AdamWError::Io { path: path.clone(), source };
            let file = std::fs::File::open(path).map_err(io)?;
            // SAFETY: checkpoint and artifact files are never modified once written (checkpoints
            // are published by rename, artifacts are read-only).
            let bytes = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
            let st = SafeTensors::deserialize(&bytes)
                .map_err(|e| AdamWError::Hf(HfError::Safetensors { path: path.clone(), message: format!("{e:?}") }))?;
            for (stored, view) in st.tensors() {
                let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
                let len = shape.iter().product::<i64>();
                if stored == STEP_TENSOR {
                    let t = Tensor::try_from(view)?;
                    if t.size() == [1] && t.kind() == Kind::Int64 {
                        files.steps.push((index, t.int64_value(&[0])));
                    }
                    continue;
                }
                let (name, start, whole) = match stored.rsplit_once('@') {
                    Some((name, start)) if start.parse::<i64>().is_ok() => {
                        (name.to_owned(), start.parse().expect("checked"), None)
                    }
                    _ => (stored.clone(), 0, Some(shape)),
                };
                files.pieces.entry(name).or_default().push(Piece { file: index, stored, start, len, shape: whole });
            }
            files.bytes.push(bytes);
        }
        for pieces in files.pieces.values_mut() {
            pieces.sort_by_key(|p| p.start);
        }
        Ok(files)
    }

    /// The files named `optimizer*.safetensors` in `dir` (whole or shards), in name order.
    pub fn open_dir(dir: &Path) -> Result<Self, AdamWError> {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|source| AdamWError::Io { path: dir.to_path_buf(), source })?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("optimizer") && n.ends_with(".safetensors"))
            })
            .collect();
        paths.sort();
        if paths.is_empty() {
            return Err(AdamWError::Io {
                path: dir.join("optimizer.safetensors"),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no optimizer state file in the directory"),
            });
        }
        Self::open(&paths)
    }

    pub(crate) fn described(&self) -> PathBuf {
        match self.paths.as_slice() {
            [one] => one.clone(),
            many => PathBuf::from(format!("{} (and {} more shard files)", many[0].display(), many.len() - 1)),
        }
    }

    /// The step counter, which every file must agree on.
    pub fn step(&self) -> Result<u64, String> {
        match self.steps.as_slice() {
            [] => Err(format!("missing `{STEP_TENSOR}`")),
            [(_, first), rest @ ..] => match rest.iter().find(|(_, s)| s != first) {
                Some((file, other)) => Err(format!(
                    "`{STEP_TENSOR}` differs between files: {first} in {}, {other} in {} (shards of different checkpoints)",
                    self.paths[self.steps[0].0].display(),
                    self.paths[*file].display()
                )),
                None => Ok(*first as u64),
            },
        }
    }

    /// The tensors stored that are not in `expected`.
    pub fn unexpected(&self, expected: &BTreeSet<String>) -> Vec<String> {
        self.pieces
            .iter()
            .filter(|(name, _)| !expected.contains(*name))
            .map(|(name, pieces)| match &pieces[0].shape {
                Some(shape) => format!("unexpected tensor `{name}` (shape {shape:?})"),
                None => format!("unexpected tensor `{name}` (sharded)"),
            })
            .collect()
    }

    /// Elements `start .. start + len` of the flattened tensor `name`, as float32 (1-D).
    pub fn read_range(&self, name: &str, start: i64, len: i64) -> Result<Tensor, String> {
        let pieces = self.pieces.get(name).ok_or_else(|| format!("missing tensor `{name}`"))?;
        let mut parts = Vec::new();
        let mut at = start;
        let end = start + len;
        for piece in pieces {
            let piece_end = piece.start + piece.len;
            if piece_end <= at || piece.start > at {
                continue;
            }
            let take = piece_end.min(end) - at;
            let st = SafeTensors::deserialize(&self.bytes[piece.file]).expect("parsed when opened");
            let view = st.tensor(&piece.stored).expect("listed when opened");
            let t = Tensor::try_from(view).map_err(|e| format!("tensor `{}`: {e}", piece.stored))?;
            parts.push(t.reshape([-1]).narrow(0, at - piece.start, take).to_kind(Kind::Float));
            at += take;
            if at == end {
                break;
            }
        }
        if at < end {
            return Err(format!(
                "tensor `{name}`: elements {at}..{end} are in none of the files (a rank's shard file is missing, \
                 or the state belongs to a smaller model)"
            ));
        }
        Ok(if parts.len() == 1 { parts.pop().expect("one") } else { Tensor::cat(&parts, 0) })
    }

    /// How many elements of `name` the files hold (from the first to the last stored).
    pub fn stored_len(&self, name: &str) -> Option<i64> {
        self.pieces.get(name).map(|pieces| pieces.iter().map(|p| p.start + p.len).max().unwrap_or(0))
    }

    /// The whole tensor `name` in `shape`.
    pub fn read_whole(&self, name: &str, shape: &[i64]) -> Result<Tensor, String> {
        self.check_shape(name, shape)?;
        Ok(self.read_range(name, 0, shape.iter().product())?.reshape(shape))
    }

    /// Whether the files hold `name` whole in `shape`: its stored shape (a tensor kept whole) or
    /// its element count (a flat ZeRO-1 tensor spread over shard files).
    pub fn check_shape(&self, name: &str, shape: &[i64]) -> Result<(), String> {
        let numel: i64 = shape.iter().product();
        let pieces =
            self.pieces.get(name).ok_or_else(|| format!("missing tensor `{name}` (expected shape {shape:?})"))?;
        if let [Piece { shape: Some(found), .. }] = pieces.as_slice()
            && found.as_slice() != shape
        {
            return Err(format!("tensor `{name}`: expected shape {shape:?}, found {found:?}"));
        }
        let stored = self.stored_len(name).unwrap_or(0);
        if stored != numel {
            return Err(format!(
                "tensor `{name}`: expected shape {shape:?} ({numel} elements), the files hold {stored} (a rank's shard \
                 file is missing, or the state belongs to another model)"
            ));
        }
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
