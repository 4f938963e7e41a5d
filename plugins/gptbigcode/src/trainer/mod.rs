//! The training engine: one [`TrainJob`] (a pretraining stage on a mixture, or SFT) from
//! initial weights to a stage artifact, resumable at every checkpoint.
//!
//! - Data: sequence `k` of the run is mixture sample `k` (or packed SFT sequence `k`, see
//!   [`sft`]); optimizer step `s` of the stage reads sequences `s * global_batch ..
//!   (s + 1) * global_batch`, split into micro-batches of `micro_batch` (gradient accumulation).
//! - Loss: summed token cross-entropy of the micro-batches divided by the number of targets of
//!   the whole global batch, so accumulation gives the global batch's mean (also with SFT masks).
//! - Determinism: torch's RNG is reseeded before each micro-batch from (seed, global step,
//!   micro-batch), so its state is a function of the position and needs no saving; on CPU
//!   deterministic algorithms are on (`aurora_torch::set_deterministic`), so the same job gives
//!   the same bytes, resumed or not.
//! - Checkpoints ([`crate::checkpoint`]) go to `work_dir` every `checkpoint_every_tokens`; a
//!   job started on a work directory holding one resumes from it.
//! - Artifact (`out_dir`): the Hugging Face directory, `tokenizer.json`, `optimizer.safetensors`,
//!   `trainer_state.json`, `metrics.jsonl` and `milestones/tokens-N/`. Every file is a function of
//!   the job only; throughput (`tokens_per_s`, `mfu`) is timing and goes only to the progress
//!   events and the returned metrics.
//! - Precision: `bf16` runs the forward pass under `tch::autocast` on CUDA in bfloat16 (fp32 master
//!   weights and AdamW state; the loss is computed in fp32). tch exposes no autocast dtype setter;
//!   aurora-torch's shim sets it (`set_cuda_autocast_bf16`).

pub mod parallel;
pub mod sft;
mod sharded;

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::time::Instant;

use aurora_tokens::loader::{MixtureError, MixtureReader};
use aurora_tokens::shuffle::{SplitMix64, permutation};
use aurora_torch::DeviceSpec;
use aurora_torch::tch::{self, Device, Kind, Tensor, nn};
use aurora_worker_api::{Event, Init, Precision, TrainData, TrainJob};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::adamw::{AdamW, AdamWError, STEP_TENSOR, StateFiles, trainable};
use crate::checkpoint::{self, CheckpointError, ResumeState};
use crate::config::GptBigCodeConfig;
use crate::hf::{self, HfError};
use crate::model::{GptBigCode, ModelError, global_rng_lock};
use crate::optim::{clip_grad_norm, grad_norm};
use crate::sharded::pieces::{Parts, WholeVarStore};
use crate::sharded::pipeline::{MicroBatch, Pipeline};
use crate::sharded::{Grid, StageModel};
use crate::zero::{ShardedAdamW, all_reduce_grads, broadcast_weights};
use aurora_torch::dist::{DistError, ReduceOp};
use parallel::Ranks;
pub use sft::SftError;
/// What a sharded step needs beside [`crate::sharded`] (the `dist` benchmark runs one).
pub use sharded::{NormScope, load_weights, reduce_model_parallel_grads};

/// `trainer_state.json` of a stage artifact (and of each milestone).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageState {
    /// Global optimizer steps so far (over every stage continuing this run).
    pub step: u64,
    pub stage_steps: u64,
    /// Tokens seen in this stage.
    pub tokens: u64,
    /// Tokens the model has seen over every stage it descends from (`init` stages), whether
    /// or not they continued one run.
    pub tokens_total: u64,
    pub seed: u64,
}

pub const TRAINER_STATE_FILE: &str = "trainer_state.json";
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
pub const METRICS_FILE: &str = "metrics.jsonl";
pub const TOKENIZER_FILE: &str = "tokenizer.json";
pub const MILESTONES_DIR: &str = "milestones";

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("{node}: {message}")]
    Job { node: String, message: String },
    #[error(
        "{node}: seq_len {seq_len} does not fit the model: n_positions is {n_positions}; lower seq_len or use a model \
         with more positions"
    )]
    SeqLen { node: String, seq_len: u64, n_positions: i64 },
    #[error(
        "{node}: seq_len {seq_len} differs from the mixture's sequence length {mixture} ({}); set the stage's seq_len \
         to {mixture} or rebuild the mixture with seq_len = {seq_len}",
        dir.display()
    )]
    MixtureSeqLen { node: String, seq_len: u64, mixture: u64, dir: PathBuf },
    #[error(
        "{node}: sample {sample} of the mixture (source `{source_name}`, sample {index} within it) holds token id \
         {id}, outside the model's vocabulary ({vocab_size}); the mixture was tokenized for another vocabulary: use \
         the tokenizer of the model, or a model whose vocab_size covers the tokenizer"
    )]
    TokenOutsideVocab { node: String, sample: u64, source_name: String, index: u64, id: u32, vocab_size: i64 },
    #[error(
        "{node}: the data has {available} sequences, but {steps} steps of {global_batch} need {needed}; lower `steps` \
         or add data"
    )]
    NotEnoughData { node: String, available: u64, steps: u64, global_batch: u64, needed: u64 },
    #[error(
        "{}: the initial checkpoint's config.json differs from the stage's model:{}\nuse a checkpoint of the same \
         architecture or change the stage's model to match it",
        dir.display(),
        fields.iter().map(|f| format!("\n  - {f}")).collect::<String>()
    )]
    InitShape { dir: PathBuf, fields: Vec<String> },
    #[error(
        "{}: the checkpoint's tensors cannot be sliced for this rank of the layout:{}\nthe tensors do not have the \
         shapes the model's config gives; use a checkpoint written for this architecture",
        path.display(),
        problems.iter().map(|p| format!("\n  - {p}")).collect::<String>()
    )]
    ShardShape { path: PathBuf, problems: Vec<String> },
    #[error(
        "{node}: the {what} is {value} at step {step} (lr {lr:e}): training diverged; {}; lower the learning rate (or \
         raise warmup), check the data, then rerun",
        match checkpoint {
            Some((step, dir)) => format!("the last good checkpoint (step {step}) is kept in {}", dir.display()),
            None => "no checkpoint was written yet".to_owned(),
        }
    )]
    NonFinite { node: String, what: &'static str, value: f64, step: u64, lr: f64, checkpoint: Option<(u64, PathBuf)> },
    #[error(
        "{node}: out of memory with micro_batch {micro_batch}, seq_len {seq_len}, {params} parameters ({message}); \
         reduce micro_batch (gradient accumulation keeps the global batch)"
    )]
    OutOfMemory { node: String, micro_batch: u64, seq_len: u64, params: i64, message: String },
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}: invalid JSON: {source}", path.display())]
    Json { path: PathBuf, source: serde_json::Error },
    #[error("{}: does not parse as a tokenizer: {message}", path.display())]
    Tokenizer { path: PathBuf, message: String },
    #[error(transparent)]
    Device(#[from] aurora_torch::TorchError),
    #[error(transparent)]
    Mixture(#[from] MixtureError),
    #[error(transparent)]
    Sft(#[from] SftError),
    #[error(transparent)]
    Hf(#[from] HfError),
    #[error(transparent)]
    AdamW(#[from] AdamWError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Torch(#[from] tch::TchError),
    /// Communication between ranks failed: most often another rank failed first (its error is
    /// the node's), or a rank or host died.
    #[error("{node}: {source}")]
    Dist { node: String, source: DistError },
}

impl TrainError {
    /// Whether this rank failed because communication failed (so another rank's error, if
    /// any, is the cause).
    pub fn is_communication(&self) -> bool {
        matches!(self, TrainError::Dist { .. })
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TrainError + '_ {
    move |source| TrainError::Io { path: path.to_path_buf(), source }
}

/// A seed derived from the job seed and positions (SplitMix64 over the parts), as torch takes it.
fn derive_seed(seed: u64, parts: &[u64]) -> i64 {
    let mut state = SplitMix64::new(seed).next_u64();
    for &p in parts {
        state = SplitMix64::new(state ^ p).next_u64();
    }
    (state >> 1) as i64
}

/// Summed next-token cross-entropy of `logits` `[batch, seq, vocab]` against `labels`
/// `[batch, seq]`; positions labelled [`sft::IGNORE`] contribute nothing (and get no gradient).
/// On CPU, a fused kernel that never materialises log-probabilities
/// ([`aurora_torch::kernels::cross_entropy_sum`]).
///
/// # Panics
/// If a label is outside the vocabulary and not [`sft::IGNORE`] (labels come from checked ids).
pub fn masked_loss_sum(logits: &Tensor, labels: &Tensor) -> Tensor {
    let vocab = logits.size().last().copied().expect("[batch, seq, vocab] logits");
    let logits = logits.to_kind(Kind::Float).reshape([-1, vocab]);
    aurora_torch::kernels::cross_entropy_sum(&logits, &labels.reshape([-1]), sft::IGNORE)
        .unwrap_or_else(|e| panic!("next-token loss: {e}"))
}

/// The sequences of a run.
enum Data {
    Mixture(MixtureReader),
    Packed(Vec<sft::Packed>),
}

impl Data {
    fn len(&self) -> u64 {
        match self {
            Data::Mixture(reader) => reader.len(),
            Data::Packed(seqs) => seqs.len() as u64,
        }
    }

    /// How many positions of sequence `k` have a target: all of a mixture sample, the unmasked
    /// ones of a packed SFT sequence.
    fn targets(&self, k: u64, job: &TrainJob) -> usize {
        match self {
            Data::Mixture(_) => job.seq_len as usize,
            Data::Packed(seqs) => seqs[k as usize].labels.iter().filter(|&&l| l != sft::IGNORE).count(),
        }
    }

    /// Inputs and labels of sequence `k`.
    fn sequence(&self, k: u64, job: &TrainJob) -> Result<sft::Packed, TrainError> {
        match self {
            Data::Mixture(reader) => {
                let tokens = reader.sample(k);
                let vocab_size = job.model.vocab_size;
                if let Some(&id) = tokens.iter().find(|&&id| id as i64 >= vocab_size) {
                    let (source, index) = reader.locate(k);
                    return Err(TrainError::TokenOutsideVocab {
                        node: job.node.clone(),
                        sample: k,
                        source_name: reader.info().sources[source].name.clone(),
                        index,
                        id,
                        vocab_size,
                    });
                }
                let ids: Vec<i64> = tokens.iter().map(|&t| t as i64).collect();
                let n = job.seq_len as usize;
                Ok(sft::Packed { input: ids[..n].to_vec(), labels: ids[1..=n].to_vec() })
            }
            Data::Packed(seqs) => Ok(seqs[k as usize].clone()),
        }
    }
}

/// Opens the job's data; also returns how many SFT examples were truncated.
fn open_data(job: &TrainJob) -> Result<(Data, u64), TrainError> {
    match &job.data {
        TrainData::Mixture { dir, stores } => {
            let reader = MixtureReader::open(dir, stores)?;
            if reader.seq_len() != job.seq_len {
                return Err(TrainError::MixtureSeqLen {
                    node: job.node.clone(),
                    seq_len: job.seq_len,
                    mixture: reader.seq_len(),
                    dir: dir.clone(),
                });
            }
            Ok((Data::Mixture(reader), 0))
        }
        TrainData::Instructions { examples } => {
            let path = job.tokenizer.join(TOKENIZER_FILE);
            let tokenizer = tokenizers::Tokenizer::from_file(&path)
                .map_err(|e| TrainError::Tokenizer { path: path.clone(), message: e.to_string() })?;
            let eos = u32::try_from(job.model.eos_token_id).map_err(|_| TrainError::Job {
                node: job.node.clone(),
                message: format!("eos_token_id {} is not a token id", job.model.eos_token_id),
            })?;
            let examples = sft::read_examples(examples, &tokenizer, eos, job.model.vocab_size)?;
            let order = permutation(examples.len() as u32, derive_seed(job.seed, &[1]) as u64);
            let packing = sft::pack(&examples, &order, job.seq_len as usize, eos);
            Ok((Data::Packed(packing.sequences), packing.truncated))
        }
    }
}

/// The shape fields of `found` that differ from `expected`, each as "field: expected X, found Y".
fn shape_differences(expected: &GptBigCodeConfig, found: &GptBigCodeConfig) -> Vec<String> {
    let fields: [(&str, String, String); 8] = [
        ("vocab_size", expected.vocab_size.to_string(), found.vocab_size.to_string()),
        ("n_positions", expected.n_positions.to_string(), found.n_positions.to_string()),
        ("n_embd", expected.n_embd.to_string(), found.n_embd.to_string()),
        ("n_inner", expected.ffn_dim().to_string(), found.ffn_dim().to_string()),
        ("n_layer", expected.n_layer.to_string(), found.n_layer.to_string()),
        ("n_head", expected.n_head.to_string(), found.n_head.to_string()),
        ("multi_query", expected.multi_query.to_string(), found.multi_query.to_string()),
        ("tie_word_embeddings", expected.tie_word_embeddings.to_string(), found.tie_word_embeddings.to_string()),
    ];
    fields.into_iter().filter(|(_, e, f)| e != f).map(|(n, e, f)| format!("{n}: expected {e}, found {f}")).collect()
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, TrainError> {
    let text = std::fs::read_to_string(path).map_err(io(path))?;
    serde_json::from_str(&text).map_err(|source| TrainError::Json { path: path.to_path_buf(), source })
}

/// Loads the weights of a Hugging Face directory into `vs` after checking its config's shape:
/// the whole model, or (sharded) this rank's slices of it, read from the memory-mapped files.
fn load_init_weights(dir: &Path, job: &TrainJob, vs: &nn::VarStore, model: &Model) -> Result<(), TrainError> {
    let found = hf::load_config(dir)?;
    let fields = shape_differences(&job.model, &found);
    if !fields.is_empty() {
        return Err(TrainError::InitShape { dir: dir.to_path_buf(), fields });
    }
    match model {
        Model::Whole(_) => Ok(hf::load_weights(dir, &job.model, vs)?),
        Model::Stage(stage) => {
            let files = StateFiles::open(&hf::weight_files(dir)?)?;
            sharded::load_weights(vs, stage.params(), &files, dir)
        }
    }
}

/// The model a rank trains: the whole model (one process, or data parallelism), or its stage's
/// slices under tensor / pipeline parallelism.
enum Model {
    Whole(GptBigCode),
    Stage(StageModel),
}

/// Peak dense bf16 FLOP/s of an accelerator, by (a substring of) its name.
pub fn peak_flops(device_name: &str) -> Option<f64> {
    const TABLE: [(&str, f64); 4] = [("H100", 989e12), ("H200", 989e12), ("A100", 312e12), ("L4", 121e12)];
    TABLE.iter().find(|(n, _)| device_name.contains(n)).map(|&(_, f)| f)
}

/// The accelerator's name, from `nvidia-smi` (tch exposes none); `None` when unavailable.
fn cuda_device_name(index: usize) -> Option<String> {
    let out = std::process::Command::new("nvidia-smi")
        .args(["--query-gpu=name", "--format=csv,noheader", &format!("--id={index}")])
        .output()
        .ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn deterministic_once(threads: u32) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let threads = if threads == 0 { tch::get_num_threads() } else { threads as i32 };
        aurora_torch::set_deterministic(threads);
    });
}

fn human(rate: f64) -> String {
    if rate >= 1e6 {
        format!("{:.1}M", rate / 1e6)
    } else if rate >= 1e3 {
        format!("{:.1}k", rate / 1e3)
    } else {
        format!("{rate:.0}")
    }
}

fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_default()
}

/// The line of a libtorch error that reports running out of memory, if it is one.
fn out_of_memory_line(text: &str) -> Option<&str> {
    text.lines().find(|l| l.contains("out of memory")).map(str::trim)
}

fn copy_dir(from: &Path, to: &Path) -> Result<(), TrainError> {
    std::fs::create_dir_all(to).map_err(io(to))?;
    for entry in std::fs::read_dir(from).map_err(io(from))? {
        let entry = entry.map_err(io(from))?;
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target).map_err(io(&target))?;
        }
    }
    Ok(())
}

/// The whole model's tensors for the artifact or a milestone: this process's variables, or a
/// sharded job's parts read back by rank 0.
fn whole_weights<'a>(vs: &'a nn::VarStore, gathered: Option<&'a sharded::Consolidated>) -> Vec<hf::TensorToWrite<'a>> {
    match gathered {
        Some(parts) => parts.weights(),
        None => vs.variables().into_iter().map(|(name, t)| hf::TensorToWrite::of(name, &t)).collect(),
    }
}

/// Writes a Hugging Face directory with `trainer_state.json` to `dir`, atomically.
fn write_milestone(
    dir: &Path,
    job: &TrainJob,
    weights: Vec<hf::TensorToWrite<'_>>,
    state: &StageState,
) -> Result<(), TrainError> {
    let tmp = dir.with_extension("tmp");
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
    }
    hf::save_pretrained_lazily(&tmp, &job.model, weights, hf::DEFAULT_MAX_SHARD_BYTES)?;
    checkpoint::write_json(&tmp.join(TRAINER_STATE_FILE), state)?;
    // A milestone is evaluated on its own, so it carries the tokenizer like the final artifact.
    let tokenizer = job.tokenizer.join(TOKENIZER_FILE);
    std::fs::copy(&tokenizer, tmp.join(TOKENIZER_FILE)).map_err(io(&tokenizer))?;
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(io(dir))?;
    }
    std::fs::rename(&tmp, dir).map_err(io(dir))
}

/// The optimizer of a run: whole AdamW (one process, or replicated over data-parallel ranks), or
/// the ZeRO-1 shard of this rank.
enum Optimizer {
    Whole(AdamW),
    Sharded(ShardedAdamW),
}

/// Optimizer shard file of data-parallel rank `rank` of `dp` in a checkpoint directory.
pub fn shard_file(rank: usize, dp: usize) -> String {
    format!("optimizer-shard-{rank:05}-of-{dp:05}.safetensors")
}

impl Optimizer {
    fn step_count(&self) -> u64 {
        match self {
            Optimizer::Whole(o) => o.step_count(),
            Optimizer::Sharded(o) => o.step_count(),
        }
    }

    fn zero_grad(&self) {
        match self {
            Optimizer::Whole(o) => o.zero_grad(),
            Optimizer::Sharded(o) => o.zero_grad(),
        }
    }

    fn load(&mut self, files: &StateFiles) -> Result<(), AdamWError> {
        match self {
            Optimizer::Whole(o) => o.load_state(files),
            Optimizer::Sharded(o) => o.load_state(files),
        }
    }

    /// Writes this rank's part of the state into `dir`: the whole state (rank 0 only) or the
    /// rank's shard.
    fn save_into(&self, dir: &Path, ranks: Option<&Ranks>) -> Result<(), AdamWError> {
        match (self, ranks) {
            (Optimizer::Whole(o), None) => o.save(&dir.join(OPTIMIZER_FILE)),
            // One copy per model shard: DP rank 0's (rank 0 alone without TP/PP).
            (Optimizer::Whole(o), Some(r)) if r.grid.dp_rank == 0 => o.save(&dir.join(OPTIMIZER_FILE)),
            (Optimizer::Whole(_), Some(_)) => Ok(()),
            (Optimizer::Sharded(o), r) => {
                let (rank, dp) = r.map_or((0, 1), |r| (r.dp.group_rank(), r.dp.size()));
                let path = dir.join(shard_file(rank, dp));
                o.save(&path)?;
                std::fs::File::open(&path)
                    .and_then(|f| f.sync_all())
                    .map_err(|source| AdamWError::Io { path: path.clone(), source })
            }
        }
    }

    /// Sums the gradients over the data-parallel ranks, clips them to the global norm and
    /// updates the weights. Returns the global gradient norm before clipping, or the error of a
    /// non-finite norm (nothing is updated then).
    /// With tensor or pipeline parallelism, `scope` says which gradients count in the global
    /// norm and over which group it is summed.
    fn step(
        &mut self,
        vs: &nn::VarStore,
        ranks: Option<&Ranks>,
        scope: Option<&sharded::NormScope<'_>>,
        grad_clip: f64,
        lr: f64,
    ) -> Result<Result<f64, f64>, DistError> {
        match self {
            Optimizer::Whole(opt) => {
                if let Some(r) = ranks.filter(|r| r.dp.size() > 1) {
                    all_reduce_grads(vs, &r.dp)?;
                }
                let norm = match scope {
                    Some(scope) => {
                        let norm = scope.norm_of_grads(vs)?;
                        if grad_clip > 0.0 && norm.is_finite() {
                            crate::optim::scale_grads(vs, grad_clip / (norm + 1e-6));
                        }
                        norm
                    }
                    None if grad_clip > 0.0 => clip_grad_norm(vs, grad_clip),
                    None => grad_norm(vs),
                };
                if !norm.is_finite() {
                    return Ok(Err(norm));
                }
                opt.step(lr);
                Ok(Ok(norm))
            }
            Optimizer::Sharded(opt) => {
                let group = &ranks.expect("ZeRO-1 runs with several ranks").dp;
                let mut shard = opt.reduce_scatter_grads(group)?;
                let norm = match scope {
                    Some(scope) => {
                        let names: Vec<String> = opt.layout().params.iter().map(|(n, _, _)| n.clone()).collect();
                        scope.norm_of_shard(&names, &opt.layout().runs(group.group_rank()), &shard)?
                    }
                    None => {
                        let mut sum_sq = shard.to_kind(Kind::Double).square().sum(Kind::Double).reshape([1]);
                        group.all_reduce(&mut sum_sq, ReduceOp::Sum)?;
                        sum_sq.double_value(&[0]).sqrt()
                    }
                };
                if !norm.is_finite() {
                    return Ok(Err(norm));
                }
                let factor = grad_clip / (norm + 1e-6);
                if grad_clip > 0.0 && factor < 1.0 {
                    shard *= factor;
                }
                opt.step(lr, &shard);
                opt.all_gather_weights(group)?;
                Ok(Ok(norm))
            }
        }
    }

    /// Writes the whole state as `optimizer.safetensors` in `out` (rank 0; with ZeRO-1 it
    /// reads every rank's shard back from `shards`, written there by [`Optimizer::save_into`]).
    fn save_consolidated(&self, out: &Path, shards: &Path, vs: &nn::VarStore) -> Result<(), AdamWError> {
        match self {
            Optimizer::Whole(o) => o.save(&out.join(OPTIMIZER_FILE)),
            // Tensor by tensor from the shard files (memory-mapped), never the whole state in
            // memory; every shape is checked before anything is written.
            Optimizer::Sharded(o) => {
                let files = StateFiles::open_dir(shards)?;
                let mut problems = Vec::new();
                let mut tensors = Vec::new();
                for (name, var, _) in trainable(vs) {
                    let shape = var.size();
                    for suffix in ["exp_avg", "exp_avg_sq"] {
                        let key = format!("{name}.{suffix}");
                        match files.check_shape(&key, &shape) {
                            Err(problem) => problems.push(problem),
                            Ok(()) => {
                                let (files, shape) = (&files, shape.clone());
                                tensors.push(hf::TensorToWrite::new(
                                    key.clone(),
                                    Kind::Float,
                                    shape.clone(),
                                    move || files.read_whole(&key, &shape),
                                ));
                            }
                        }
                    }
                }
                if !problems.is_empty() {
                    return Err(AdamWError::Mismatch { path: files.described(), problems });
                }
                let step = o.step_count() as i64;
                tensors.push(hf::TensorToWrite::new(STEP_TENSOR, Kind::Int64, vec![1], move || {
                    Ok(Tensor::from_slice(&[step]))
                }));
                Ok(hf::write_safetensors_lazily(&out.join(OPTIMIZER_FILE), &tensors)?)
            }
        }
    }
}

impl ResumeState {
    fn stage_state(&self) -> StageState {
        StageState {
            step: self.global_step,
            stage_steps: self.stage_step,
            tokens: self.tokens,
            tokens_total: self.tokens_total,
            seed: self.seed,
        }
    }
}

/// Runs a training stage (see the module docs). `events` receives a
/// [`Event::Progress`] after every optimizer step. Returns the metrics of the `Done` event.
pub fn train(job: &TrainJob, events: &mut dyn FnMut(Event)) -> Result<Map<String, Value>, TrainError> {
    let node = job.node.clone();
    let job_error = |message: String| TrainError::Job { node: node.clone(), message };
    let device = aurora_torch::resolve(job.device.parse::<DeviceSpec>()?)?;
    if device == Device::Cpu {
        deterministic_once(job.threads);
    } else if job.threads > 0 {
        tch::set_num_threads(job.threads as i32);
    }
    if job.micro_batch == 0 || job.global_batch == 0 || !job.global_batch.is_multiple_of(job.micro_batch) {
        return Err(job_error(format!(
            "global_batch ({}) must be a positive multiple of micro_batch ({})",
            job.global_batch, job.micro_batch
        )));
    }
    if job.seq_len == 0 || job.seq_len as i64 > job.model.n_positions {
        return Err(TrainError::SeqLen { node, seq_len: job.seq_len, n_positions: job.model.n_positions });
    }
    job.model.validate().map_err(ModelError::from)?;
    job.schedule.schedule.validate().map_err(|e| job_error(e.to_string()))?;
    if job.precision == Precision::Bf16 && !device.is_cuda() {
        eprintln!("{}: precision bf16 applies on CUDA only; training in fp32 on {}", job.node, job.device);
    }

    let ranks = parallel::join(job, device)?;
    let dist = |source: DistError| TrainError::Dist { node: job.node.clone(), source };
    // One GPU per rank on a node: local rank r trains on cuda:r.
    let device = match (&ranks, device) {
        (Some(r), Device::Cuda(_)) => aurora_torch::resolve(DeviceSpec::Cuda(r.local_rank))?,
        (_, device) => device,
    };
    let grid = ranks.as_ref().map_or(Grid::of(0, 1, 1, 1), |r| r.grid);
    // Tensor or pipeline parallelism: each rank holds a stage's slices (crate::sharded).
    let sharded = grid.tp * grid.pp > 1;
    let (dp, dp_rank) = (grid.dp as u64, grid.dp_rank as u64);
    if !job.global_batch.is_multiple_of(job.micro_batch * dp) {
        return Err(job_error(format!(
            "global_batch ({}) must be a multiple of micro_batch * dp ({} * {dp})",
            job.global_batch, job.micro_batch
        )));
    }
    let micro_batches = job.global_batch / (job.micro_batch * dp);
    if micro_batches < grid.pp as u64 {
        return Err(job_error(format!(
            "{micro_batches} micro-batch(es) per step on each pipeline, fewer than pp = {}: 1F1B needs at least pp; \
             lower micro_batch or dp, or raise global_batch",
            grid.pp
        )));
    }
    // Megatron's pretraining sampler: data-parallel rank r takes the r-th contiguous slice of
    // every global batch, so the samples of a step do not depend on the layout.
    let per_rank = job.global_batch / dp;
    let first = ranks.as_ref().is_none_or(Ranks::is_first);

    let (data, truncated) = open_data(job)?;
    let steps = job.steps.unwrap_or(data.len() / job.global_batch);
    let needed = steps * job.global_batch;
    // An explicit `steps = 0` imports `init` as this stage's artifact (e.g. StarCoderPlus as the
    // study's base checkpoint); one pass over too little data is an error.
    if needed > data.len() || (steps == 0 && job.steps.is_none()) {
        return Err(TrainError::NotEnoughData {
            node,
            available: data.len(),
            steps,
            global_batch: job.global_batch,
            needed: needed.max(job.global_batch),
        });
    }

    let vs = nn::VarStore::new(device);
    let mut state = ResumeState {
        global_step: 0,
        stage_step: 0,
        tokens: 0,
        tokens_total: 0,
        next_sample: 0,
        stage_start: 0,
        seed: job.seed,
    };
    let mut metrics_lines: Vec<String> = Vec::new();
    let mut last_checkpoint: Option<(u64, PathBuf)> = None;
    let resume = agree_on_checkpoint(job, ranks.as_ref())?;
    let model = if sharded {
        Model::Stage(StageModel::new(&vs.root(), &job.model, grid)?)
    } else {
        Model::Whole(match &resume {
            None if job.init == Init::Scratch => {
                GptBigCode::seeded(&vs.root(), &job.model, derive_seed(job.seed, &[0]))?
            }
            _ => tch::no_grad(|| GptBigCode::new(&vs.root(), &job.model))?,
        })
    };
    let mut opt = match &ranks {
        Some(r) if job.distributed_optimizer && r.dp.size() > 1 => {
            Optimizer::Sharded(ShardedAdamW::new(&vs, &job.optimizer, r.dp.group_rank(), r.dp.size()))
        }
        _ => Optimizer::Whole(AdamW::new(&vs, &job.optimizer)),
    };
    if let Some((dir, saved)) = resume {
        if saved.seed != job.seed {
            return Err(job_error(format!(
                "the checkpoint in {} belongs to a run with seed {}, this job has seed {}; delete the work directory \
                 to start over",
                dir.display(),
                saved.seed,
                job.seed
            )));
        }
        match &model {
            Model::Whole(_) => {
                hf::load_weights(&dir, &job.model, &vs)?;
                opt.load(&StateFiles::open_dir(&dir)?)?;
            }
            Model::Stage(stage) => {
                let parts = Parts::open(&dir, &job.model, true)?;
                sharded::load_weights(&vs, stage.params(), &parts, &dir)?;
                let scratch = job.work_dir.join(format!("local-state-{}.safetensors", grid.rank()));
                sharded::load_optimizer(&mut opt, stage.params(), &parts, saved.global_step, &scratch, &dir)?;
            }
        }
        let path = dir.join(checkpoint::METRICS_FILE);
        metrics_lines = std::fs::read_to_string(&path).map_err(io(&path))?.lines().map(str::to_owned).collect();
        eprintln!(
            "{}: resuming from the checkpoint {} (global step {}, stage step {}/{steps}, {} tokens)",
            job.node,
            dir.display(),
            saved.global_step,
            saved.stage_step,
            saved.tokens
        );
        last_checkpoint = Some((saved.global_step, dir));
        state = saved;
    } else {
        match &job.init {
            Init::Scratch => {
                if let Model::Stage(stage) = &model {
                    // The whole model as one process would draw it, then this rank's slices.
                    let whole = nn::VarStore::new(Device::Cpu);
                    GptBigCode::seeded(&whole.root(), &job.model, derive_seed(job.seed, &[0]))?;
                    sharded::load_weights(&vs, stage.params(), &WholeVarStore(&whole), Path::new("(initialisation)"))?;
                }
            }
            Init::Hf { dir } => load_init_weights(dir, job, &vs, &model)?,
            Init::Stage { dir, continue_run } => {
                load_init_weights(dir, job, &vs, &model)?;
                // The model has seen the init stage's tokens whether or not the run (optimizer,
                // step counter, schedule) continues: scaling curves count them.
                let previous: StageState = read_json(&dir.join(TRAINER_STATE_FILE))?;
                state.tokens_total = previous.tokens_total;
                if *continue_run {
                    let files = StateFiles::open(&[dir.join(OPTIMIZER_FILE)])?;
                    match &model {
                        Model::Whole(_) => opt.load(&files)?,
                        Model::Stage(stage) => {
                            let step = files.step().map_err(|p| {
                                TrainError::AdamW(crate::adamw::AdamWError::Mismatch {
                                    path: dir.join(OPTIMIZER_FILE),
                                    problems: vec![p],
                                })
                            })?;
                            let scratch = job.work_dir.join(format!("local-state-{}.safetensors", grid.rank()));
                            let path = dir.join(OPTIMIZER_FILE);
                            sharded::load_optimizer(&mut opt, stage.params(), &files, step, &scratch, &path)?;
                        }
                    }
                    state.global_step = previous.step;
                    state.stage_start = previous.step;
                }
            }
        }
    }

    if let Some(r) = &ranks {
        broadcast_weights(&vs, &r.dp).map_err(dist)?;
    }

    let params = job.model.param_count();
    let (micro, seq_len) = (job.micro_batch as i64, job.seq_len as i64);
    let tokens_per_step = job.global_batch * job.seq_len;
    let total_tokens = steps * tokens_per_step;
    let autocast = job.precision == Precision::Bf16 && device.is_cuda();
    if autocast {
        aurora_torch::set_cuda_autocast_bf16();
    }
    let peak = match device {
        Device::Cuda(i) => cuda_device_name(i).as_deref().and_then(peak_flops),
        _ => None,
    };
    let flops_per_token = job.model.train_flops_per_token(seq_len);
    let milestones_dir = job.work_dir.join(MILESTONES_DIR);
    let started = Instant::now();
    let tokens_at_start = state.tokens;
    let (mut last_loss, mut tokens_per_s) = (f64::NAN, 0.0);

    let kill_at = parallel::fault_injection(ranks.as_ref());
    while state.stage_step < steps {
        if kill_at == Some(state.global_step + 1) {
            parallel::kill_self(state.global_step + 1);
        }
        let lr = job.schedule.lr(state.global_step, state.stage_start);
        let mut inputs = Vec::with_capacity(per_rank as usize);
        for i in 0..per_rank {
            inputs.push(data.sequence(state.next_sample + dp_rank * per_rank + i, job)?);
        }
        // The whole global batch's targets, which every rank counts without communicating.
        let targets =
            (0..job.global_batch).map(|i| data.targets(state.next_sample + i, job)).sum::<usize>().max(1) as f64;
        opt.zero_grad();
        let micro_batches: Vec<MicroBatch> = inputs
            .chunks(job.micro_batch as usize)
            .map(|chunk| {
                let flat = |pick: fn(&sft::Packed) -> &[i64]| {
                    let v: Vec<i64> = chunk.iter().flat_map(|s| pick(s).iter().copied()).collect();
                    Tensor::from_slice(&v).view([micro, seq_len]).to_device(device)
                };
                MicroBatch { input: flat(|s| &s.input), labels: flat(|s| &s.labels) }
            })
            .collect();
        let out_of_memory = |message: &str| TrainError::OutOfMemory {
            node: node.clone(),
            micro_batch: job.micro_batch,
            seq_len: job.seq_len,
            params,
            message: message.to_owned(),
        };
        let mut loss_sum = 0.0;
        match &model {
            Model::Whole(model) => {
                for (m, batch) in micro_batches.iter().enumerate() {
                    let _rng = global_rng_lock();
                    // Micro-batch m of this rank is micro-batch `first + m` of the global batch.
                    let micro_index = dp_rank * (per_rank / job.micro_batch) + m as u64;
                    tch::manual_seed(derive_seed(job.seed, &[2, state.global_step, micro_index]));
                    let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
                        let logits = tch::autocast(autocast, || model.forward_unchecked(&batch.input));
                        let loss = masked_loss_sum(&logits, &batch.labels);
                        (&loss / targets).backward();
                        loss.double_value(&[])
                    }));
                    match outcome {
                        Ok(loss) => loss_sum += loss,
                        Err(payload) => match out_of_memory_line(&panic_text(payload.as_ref())) {
                            Some(message) => return Err(out_of_memory(message)),
                            None => std::panic::resume_unwind(payload),
                        },
                    }
                }
                if let Some(r) = &ranks {
                    loss_sum = all_reduce_sum(&r.dp, loss_sum).map_err(dist)?;
                }
            }
            Model::Stage(stage) => {
                let r = ranks.as_ref().expect("sharded stages run with several ranks");
                let pipeline = Pipeline {
                    pp: r.pp.as_ref(),
                    tp: r.tp.as_ref(),
                    hidden: [micro, seq_len, job.model.n_embd],
                    autocast,
                };
                let outcome =
                    std::panic::catch_unwind(AssertUnwindSafe(|| pipeline.run(stage, &micro_batches, targets)));
                let local = match outcome {
                    Ok(result) => result.map_err(dist)?,
                    Err(payload) => {
                        let text = panic_text(payload.as_ref());
                        if let Some(message) = out_of_memory_line(&text) {
                            return Err(out_of_memory(message));
                        }
                        // A collective inside the backward pass failed (a peer died or hung).
                        if let Some(at) = text.find(aurora_torch::dist::BACKWARD_FAILURE) {
                            let message = text[at..].lines().next().unwrap_or_default().to_owned();
                            return Err(dist(DistError::Collective {
                                op: "backward",
                                seq: 0,
                                group: "tp".into(),
                                rank: r.rank,
                                message,
                            }));
                        }
                        std::panic::resume_unwind(payload);
                    }
                };
                // The last stage's loss, counted once per TP group, summed over DP.
                let mine = if grid.is_last_stage() && grid.tp_rank == 0 { local } else { 0.0 };
                loss_sum = all_reduce_sum(r.world(), mine).map_err(dist)?;
                sharded::reduce_model_parallel_grads(&vs, stage, r).map_err(dist)?;
            }
        }
        let loss = loss_sum / targets;
        let step = state.global_step + 1;
        let diverged = |what, value| TrainError::NonFinite {
            node: node.clone(),
            what,
            value,
            step,
            lr,
            checkpoint: last_checkpoint.clone(),
        };
        if !loss.is_finite() {
            return Err(diverged("loss", loss));
        }
        let scope = match (&model, &ranks) {
            (Model::Stage(stage), Some(r)) => Some(sharded::NormScope::new(stage, r)),
            _ => None,
        };
        let norm = match opt.step(&vs, ranks.as_ref(), scope.as_ref(), job.grad_clip, lr).map_err(dist)? {
            Ok(norm) => norm,
            Err(norm) => return Err(diverged("gradient norm", norm)),
        };

        let tokens_before = state.tokens;
        state.global_step = step;
        state.stage_step += 1;
        state.tokens += tokens_per_step;
        state.tokens_total += tokens_per_step;
        state.next_sample += job.global_batch;
        last_loss = loss;
        metrics_lines
            .push(json!({"step": step, "tokens": state.tokens, "loss": loss, "lr": lr, "grad_norm": norm}).to_string());
        tokens_per_s = (state.tokens - tokens_at_start) as f64 / started.elapsed().as_secs_f64().max(1e-9);
        if first {
            events(Event::Progress {
                done: state.tokens,
                total: total_tokens,
                message: format!(
                    "step {}/{steps} loss {loss:.4} lr {lr:.2e} {} tok/s",
                    state.stage_step,
                    human(tokens_per_s)
                ),
            });
        }

        for &m in &job.milestones {
            if tokens_before < m && m <= state.tokens {
                let gathered = match (&model, &ranks) {
                    (Model::Stage(_), Some(r)) => gather_parts(job, &vs, None, r, "milestone-parts")?,
                    _ => None,
                };
                if first {
                    std::fs::create_dir_all(&milestones_dir).map_err(io(&milestones_dir))?;
                    let dir = milestones_dir.join(format!("tokens-{m}"));
                    write_milestone(&dir, job, whole_weights(&vs, gathered.as_ref()), &state.stage_state())?;
                }
            }
        }
        let every = job.checkpoint_every_tokens;
        if every > 0 && tokens_before / every < state.tokens / every && state.stage_step < steps {
            let dir = write_checkpoint(job, &state, &vs, &model, &opt, &metrics_lines, ranks.as_ref())?;
            last_checkpoint = Some((state.global_step, dir));
        }
    }

    // The artifact is one consolidated Hugging Face directory, whatever the layout: rank 0
    // writes it; with ZeRO-1 every rank first leaves its optimizer shard in the work directory,
    // with tensor / pipeline parallelism every rank its part of the model and the optimizer.
    let gathered = match (&model, &ranks) {
        (Model::Stage(_), Some(r)) => gather_parts(job, &vs, Some(&opt), r, "final-parts")?,
        _ => None,
    };
    let shards = job.work_dir.join("final-optimizer");
    if let (Optimizer::Sharded(_), Some(r), Model::Whole(_)) = (&opt, &ranks, &model) {
        if r.is_first() {
            recreate_dir(&shards)?;
        }
        r.dp.barrier().map_err(dist)?;
        opt.save_into(&shards, Some(r))?;
        r.dp.barrier().map_err(dist)?;
    }
    let final_state = state.stage_state();
    if first {
        let out = &job.out_dir;
        let tokenizer = job.tokenizer.join(TOKENIZER_FILE);
        let weights = whole_weights(&vs, gathered.as_ref());
        hf::save_pretrained_lazily(out, &job.model, weights, hf::DEFAULT_MAX_SHARD_BYTES)?;
        match &gathered {
            Some(parts) => hf::write_safetensors_lazily(&out.join(OPTIMIZER_FILE), &parts.optimizer())?,
            None => opt.save_consolidated(out, &shards, &vs)?,
        }
        std::fs::copy(&tokenizer, out.join(TOKENIZER_FILE)).map_err(io(&tokenizer))?;
        checkpoint::write_json(&out.join(TRAINER_STATE_FILE), &final_state)?;
        write_lines(&out.join(METRICS_FILE), &metrics_lines)?;
        if milestones_dir.is_dir() {
            copy_dir(&milestones_dir, &out.join(MILESTONES_DIR))?;
        }
    }
    if last_loss.is_nan()
        && let Some(line) = metrics_lines.last()
    {
        // Resumed at the last step: the final loss is the recorded one.
        last_loss = serde_json::from_str::<Value>(line).ok().and_then(|v| v["loss"].as_f64()).unwrap_or(f64::NAN);
    }
    let mfu = peak.map(|p| tokens_per_s * flops_per_token / p);
    let mut metrics = Map::new();
    metrics.insert("loss".into(), json!(last_loss));
    metrics.insert("steps".into(), json!(final_state.stage_steps));
    metrics.insert("global_step".into(), json!(final_state.step));
    metrics.insert("tokens".into(), json!(final_state.tokens));
    metrics.insert("tokens_total".into(), json!(final_state.tokens_total));
    metrics.insert("tokens_per_s".into(), json!(tokens_per_s));
    metrics.insert("mfu".into(), json!(mfu));
    metrics.insert("param_count".into(), json!(params));
    if matches!(job.data, TrainData::Instructions { .. }) {
        metrics.insert("truncated_examples".into(), json!(truncated));
    }
    Ok(metrics)
}

/// The sum of `value` over the ranks of `group` (in double precision).
fn all_reduce_sum(group: &aurora_torch::dist::Group, value: f64) -> Result<f64, DistError> {
    let mut t = Tensor::from_slice(&[value]);
    group.all_reduce(&mut t, ReduceOp::Sum)?;
    Ok(t.double_value(&[0]))
}

fn recreate_dir(dir: &Path) -> Result<(), TrainError> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(io(dir))?;
    }
    std::fs::create_dir_all(dir).map_err(io(dir))
}

/// The checkpoint to resume from, the same on every rank: rank 0 picks the newest complete one
/// and tells the others its step; each then reads that checkpoint (the work directory must be
/// shared by every rank).
fn agree_on_checkpoint(
    job: &TrainJob,
    ranks: Option<&Ranks>,
) -> Result<Option<(PathBuf, checkpoint::ResumeState)>, TrainError> {
    let Some(r) = ranks else { return Ok(checkpoint::latest(&job.work_dir)?) };
    let newest = if r.is_first() { checkpoint::latest(&job.work_dir)? } else { None };
    let mut step = Tensor::from_slice(&[newest.as_ref().map_or(-1, |(_, s)| s.global_step as i64)]);
    r.world().broadcast(&mut step, 0).map_err(|source| TrainError::Dist { node: job.node.clone(), source })?;
    let step = step.int64_value(&[0]);
    if r.is_first() || step < 0 {
        return Ok(newest);
    }
    match checkpoint::at_step(&job.work_dir, step as u64)? {
        Some(found) => Ok(Some(found)),
        None => Err(TrainError::Job {
            node: job.node.clone(),
            message: format!(
                "rank {} cannot see the checkpoint of step {step} that rank 0 resumes from in {}: the node's work \
                 directory must be on a filesystem every rank shares (set AURORA_STORE to a shared path)",
                r.rank,
                job.work_dir.display()
            ),
        }),
    }
}

/// Writes a resumable checkpoint: rank 0 writes the weights and metrics, each rank its part of
/// the optimizer state, and rank 0 publishes once every rank is done (a barrier).
fn write_checkpoint(
    job: &TrainJob,
    state: &checkpoint::ResumeState,
    vs: &nn::VarStore,
    model: &Model,
    opt: &Optimizer,
    metrics_lines: &[String],
    ranks: Option<&Ranks>,
) -> Result<PathBuf, TrainError> {
    let dist = |source: DistError| TrainError::Dist { node: job.node.clone(), source };
    let first = ranks.is_none_or(Ranks::is_first);
    let tmp = if first {
        checkpoint::begin(&job.work_dir, state.global_step)?
    } else {
        checkpoint::tmp_dir(&job.work_dir, state.global_step)
    };
    if let Some(r) = ranks {
        r.world().barrier().map_err(dist)?;
    }
    match (model, ranks) {
        (Model::Stage(_), Some(r)) => sharded::write_part(&tmp, vs, Some(opt), r)?,
        _ => {
            opt.save_into(&tmp, ranks)?;
            if first {
                hf::write_safetensors(&tmp.join(checkpoint::MODEL_FILE), &sorted_variables(vs))?;
            }
        }
    }
    if first {
        write_lines(&tmp.join(checkpoint::METRICS_FILE), metrics_lines)?;
    }
    if let Some(r) = ranks {
        r.world().barrier().map_err(dist)?;
    }
    if first {
        Ok(checkpoint::publish(&job.work_dir, &tmp, state)?)
    } else {
        Ok(job.work_dir.join(format!("ckpt-{:010}", state.global_step)))
    }
}

/// Every rank writes its part of the model (and of the optimizer state with `opt`) into
/// `name` in the work directory; rank 0 gets them to read back whole, tensor by tensor, before
/// it reaches the next gathering (whose first barrier keeps the others from rewriting them).
fn gather_parts(
    job: &TrainJob,
    vs: &nn::VarStore,
    opt: Option<&Optimizer>,
    ranks: &Ranks,
    name: &str,
) -> Result<Option<sharded::Consolidated>, TrainError> {
    let dist = |source: DistError| TrainError::Dist { node: job.node.clone(), source };
    let dir = job.work_dir.join(name);
    if ranks.is_first() {
        recreate_dir(&dir)?;
    }
    ranks.world().barrier().map_err(dist)?;
    sharded::write_part(&dir, vs, opt, ranks)?;
    ranks.world().barrier().map_err(dist)?;
    if !ranks.is_first() {
        return Ok(None);
    }
    let step = opt.map_or(0, Optimizer::step_count);
    Ok(Some(sharded::Consolidated::open(&dir, &job.model, opt.is_some(), step)?))
}

/// The variables of `vs` in name order (what `model.safetensors` holds, tied weights once).
fn sorted_variables(vs: &nn::VarStore) -> Vec<(String, Tensor)> {
    let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    vars
}

fn write_lines(path: &Path, lines: &[String]) -> Result<(), TrainError> {
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(path, text).map_err(io(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_memory_is_recognised_and_explained() {
        let text = "Torch(\"CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 79.1 GiB total capacity)\nException \
                    raised from malloc at c10/cuda/CUDACachingAllocator.cpp:1\")";
        let line = out_of_memory_line(text).unwrap();
        assert!(line.contains("Tried to allocate 2.00 GiB"));
        assert_eq!(out_of_memory_line("index out of range"), None);
        let err = TrainError::OutOfMemory {
            node: "stages/cap".into(),
            micro_batch: 8,
            seq_len: 2048,
            params: 15_500_000_000,
            message: line.to_owned(),
        };
        let text = err.to_string();
        assert!(text.starts_with("stages/cap: out of memory with micro_batch 8, seq_len 2048, 15500000000 parameters"));
        assert!(text.ends_with("reduce micro_batch (gradient accumulation keeps the global batch)"), "{text}");
    }

    #[test]
    fn derived_seeds_depend_on_every_part() {
        let base = derive_seed(1, &[2, 3, 0]);
        assert!(base >= 0);
        assert_eq!(base, derive_seed(1, &[2, 3, 0]));
        for other in [derive_seed(2, &[2, 3, 0]), derive_seed(1, &[2, 4, 0]), derive_seed(1, &[2, 3, 1])] {
            assert_ne!(base, other);
        }
    }

    #[test]
    fn shape_differences_name_each_field() {
        let a = GptBigCodeConfig::tiny(2, 64, 4, 128, 32);
        let b = GptBigCodeConfig { multi_query: false, ..GptBigCodeConfig::tiny(3, 64, 4, 128, 32) };
        assert_eq!(
            shape_differences(&a, &b),
            ["n_layer: expected 2, found 3", "multi_query: expected true, found false"]
        );
        assert!(shape_differences(&a, &a).is_empty());
    }

    #[test]
    fn peak_flops_by_device_name() {
        assert_eq!(peak_flops("NVIDIA H100 80GB HBM3"), Some(989e12));
        assert_eq!(peak_flops("NVIDIA A100-SXM4-80GB"), Some(312e12));
        assert_eq!(peak_flops("Tesla T4"), None);
    }
}
