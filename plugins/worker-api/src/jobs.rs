//! Jobs: what the worker is asked to do. Plain data, shared by both sides.

use std::collections::BTreeMap;
use std::path::PathBuf;

use aurora_train::optimizer::AdamWConfig;
use aurora_train::schedule::StageSchedule;
use aurora_train::{GptBigCodeConfig, Layout};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One unit of work for `aurora-worker`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "task", rename_all = "snake_case")]
// One job per process: the size of the enum does not matter, boxing would only add noise.
#[allow(clippy::large_enum_variant)]
pub enum Job {
    /// A training stage (pretraining on a mixture, or SFT on instruction examples).
    Train(TrainJob),
    /// Log-likelihood of continuations given contexts (choice tasks).
    Loglik(LoglikJob),
    /// Summed negative log-likelihood of whole documents (bits-per-byte, perplexity).
    Perplexity(PerplexityJob),
    /// Text generation (code completions, safety responses).
    Generate(GenerateJob),
}

/// Where a stage's weights come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Init {
    /// Fresh weights, initialised from the job's seed.
    Scratch,
    /// A Hugging Face GPTBigCode directory (`config.json` + `model.safetensors` or sharded).
    Hf { dir: PathBuf },
    /// Another stage's artifact. With `continue_run`, its optimizer state (`optimizer.safetensors`)
    /// and step counter (`trainer_state.json`) are continued too (Aurora-M's CAT continued the
    /// CAP run at step 90k); otherwise only the weights are taken and the step counter restarts.
    Stage { dir: PathBuf, continue_run: bool },
}

/// The training data of a stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrainData {
    /// A `mixer.blend` artifact and the token store of each of its sources (source name ->
    /// store artifact directory), read with `aurora_tokens::MixtureReader`. Sample k of the
    /// mixture is sequence k of the run, in order (sample k has seq_len + 1 tokens).
    Mixture { dir: PathBuf, stores: BTreeMap<String, PathBuf> },
    /// Instruction examples for SFT: a JSONL file of `{"prompt": "...", "response": "..."}`,
    /// the prompt already rendered with the template (`### Instruction:\n{instruction}\n###
    /// Response:\n`). Loss only on the response tokens and the EOS appended after them.
    Instructions { examples: PathBuf },
}

/// Numeric precision of the forward/backward pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    /// fp32 everywhere (the CPU default; bitwise reproducible on CPU).
    Fp32,
    /// bf16 autocast for the forward pass, fp32 master weights and optimizer state (CUDA only).
    Bf16,
}

/// A training stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainJob {
    /// The node id (`stages/cap`), for messages.
    pub node: String,
    /// The node's derived seed (experiment seed + node id): weight init, data order of SFT.
    pub seed: u64,
    /// `"cpu"` or `"cuda:N"`, already resolved from `"auto"` by the plugin.
    pub device: String,
    pub precision: Precision,
    /// The architecture. With `Init::Hf` / `Init::Stage` the loaded `config.json` must equal it
    /// in every shape field (vocab, positions, widths, layers, heads, multi_query).
    pub model: GptBigCodeConfig,
    pub init: Init,
    pub data: TrainData,
    /// Directory with `tokenizer.json` (copied into the artifact; used to tokenize SFT examples).
    pub tokenizer: PathBuf,
    pub schedule: StageSchedule,
    pub optimizer: AdamWConfig,
    /// Global gradient-norm clip (0 = off).
    pub grad_clip: f64,
    /// Tokens per sequence (the model sees seq_len tokens and predicts the next seq_len).
    pub seq_len: u64,
    /// Sequences per forward/backward pass.
    pub micro_batch: u64,
    /// Sequences per optimizer step; a multiple of `micro_batch` (gradient accumulation).
    pub global_batch: u64,
    /// Optimizer steps of this stage; `None` = one pass over the data (whole global batches).
    pub steps: Option<u64>,
    /// Write a resumable checkpoint to `work_dir` every this many tokens (0 = only at the end).
    pub checkpoint_every_tokens: u64,
    /// Token counts (seen in this stage) at which a Hugging Face checkpoint is kept in the
    /// artifact as `milestones/tokens-N/` (for "performance vs training tokens" curves).
    pub milestones: Vec<u64>,
    /// Threads for intra-op parallelism on CPU (0 = libtorch's default).
    pub threads: u32,
    /// Ranks: `tp * pp * dp` worker processes run this job, each told its rank by the launcher
    /// (torchrun's or Slurm's variables).
    pub layout: Layout,
    /// With `dp > 1`: ZeRO-1 (AdamW state sharded over data-parallel ranks) instead of
    /// replicated AdamW.
    pub distributed_optimizer: bool,
    pub out_dir: PathBuf,
    pub work_dir: PathBuf,
}

/// The model a scoring or generation job runs: a stage's artifact or any Hugging Face directory
/// with `tokenizer.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelRef {
    pub dir: PathBuf,
    pub device: String,
    pub precision: Precision,
    pub threads: u32,
}

/// One continuation to score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoglikRequest {
    pub context: String,
    pub continuation: String,
}

/// Reads `requests` (JSONL of [`LoglikRequest`]) and writes `out_dir/loglik.jsonl`: one
/// [`LoglikResult`] per request, in order. Context is left-truncated to fit the model's context.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoglikJob {
    pub node: String,
    pub model: ModelRef,
    pub requests: PathBuf,
    pub batch_size: u64,
    pub out_dir: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoglikResult {
    /// Sum of log-probabilities (natural log) of the continuation's tokens.
    pub logprob: f64,
    /// Whether greedy decoding would produce exactly the continuation's tokens.
    pub greedy: bool,
    pub tokens: u64,
    /// Context tokens dropped from the left to fit the context window.
    pub truncated: u64,
}

/// Reads `documents` (JSONL of `{"text": ...}`) and writes `out_dir/perplexity.jsonl`: one
/// [`PerplexityResult`] per document, in order. Long documents are scored in windows of
/// `n_positions` tokens with `stride` (every token scored exactly once).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PerplexityJob {
    pub node: String,
    pub model: ModelRef,
    pub documents: PathBuf,
    /// Put the end-of-text token before each document, as lm-evaluation-harness's rolling
    /// log-likelihood does, so that the document's first token is predicted too: every token
    /// (and so every byte) of the document is scored. Without it the first token is context only.
    pub prefix_end_of_text: bool,
    pub stride: u64,
    pub batch_size: u64,
    pub out_dir: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PerplexityResult {
    /// Summed negative log-likelihood (nats) of every scored token: all of the document's with
    /// `prefix_end_of_text`, else all after the first.
    pub nll: f64,
    /// Tokens scored.
    pub tokens: u64,
    /// UTF-8 bytes of the document.
    pub bytes: u64,
}

/// Sampling parameters; `temperature = 0` is greedy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Sampling {
    #[serde(default)]
    pub temperature: f64,
    #[serde(default = "one")]
    pub top_p: f64,
    pub max_new_tokens: u64,
    /// Generation stops when the text generated so far contains any of these (the stop
    /// sequence itself is cut off), or at EOS.
    #[serde(default)]
    pub stop: Vec<String>,
}

fn one() -> f64 {
    1.0
}

/// One prompt; `n` completions are drawn for it (seeded by the job seed and the prompt index).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerateRequest {
    pub prompt: String,
    pub n: u64,
}

/// Reads `requests` (JSONL of [`GenerateRequest`]) and writes `out_dir/generations.jsonl`: one
/// [`GenerateResult`] per request, in order. Prompts longer than the context minus
/// `max_new_tokens` are left-truncated (reported in `truncated`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerateJob {
    pub node: String,
    pub model: ModelRef,
    pub seed: u64,
    pub requests: PathBuf,
    pub sampling: Sampling,
    pub batch_size: u64,
    /// Use the KV cache (off only for benchmarks and the cache-equivalence test).
    pub kv_cache: bool,
    pub out_dir: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerateResult {
    pub completions: Vec<String>,
    /// Tokens generated per completion.
    pub tokens: Vec<u64>,
    pub truncated: u64,
}

/// A line the worker prints on stdout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// `done` of `total` units, with a short status (e.g. "loss 2.31 lr 3.0e-4 1.2k tok/s").
    Progress { done: u64, total: u64, message: String },
    /// The job succeeded; these metrics are recorded with the artifact.
    Done { metrics: Map<String, Value> },
}
