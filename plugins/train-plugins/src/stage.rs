//! `train.tch` (one node per curriculum stage) and `sft.instructions` (instruction tuning): they
//! share every training setting ([`TrainingFields`]) and run as a `TrainJob` in `aurora-worker`.
//!
//! Inputs of a `train.tch` node: the model entry (`model`), the mixture (`mixture`), its
//! tokenizer (`tokenizer`), the token store of each of its sources (`store:SOURCE`) and, with
//! `init` other than `"scratch"`, the init stage's artifact or Hugging Face directory (`init`).
//! An `sft.instructions` node has `init`, the tokenizer of the stage chain it continues, and its
//! instruction files (`file:0`, `file:1`, ...).
//!
//! The device: `"cpu"`, `"cuda:N"`, or `"auto"`, which is `cuda:0` only when the worker's libtorch
//! is a CUDA build (its version has `+cu`) and `/proc/driver/nvidia/gpus` lists a GPU, else
//! `cpu`. The resolved device class, the precision, the libtorch version (recorded when aurora is
//! built, from `$LIBTORCH`) and the determinism mode are execution facts: they enter the node key.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use aurora_core::diagnostic::{Diagnostic, Diagnostics};
use aurora_core::manifest::FILE_PREFIX;
use aurora_core::plugin::{
    Entry, ExecContext, ExecOutcome, InputSource, InputSpec, NodeSpec, Offer, Output, PlanContext, Plugin, PluginError,
    Resources,
};
use aurora_corpus::config::{RecordFields, Shape};
use aurora_tokens::mixture::{BlendConfig, STORE_PREFIX, store_node_id, tokenizer_entry};
pub use aurora_train::Layout;
use aurora_train::optimizer::AdamWConfig;
use aurora_train::schedule::StageSchedule;
use aurora_train::{GptBigCodeConfig, StepShape};
use aurora_worker_api::{Init, Job, Precision, TrainData, TrainJob, client};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::model::{self, model_of, si};
use crate::refs::{self, Referenced};
use crate::schedulers;

pub const TRAIN_ID: &str = "train.tch";
pub const SFT_ID: &str = "sft.instructions";
const MIXER_ID: &str = "mixer.blend";
/// The prompt template of Aurora-M's safety instruction tuning; the response is the record's
/// `output`.
pub const DEFAULT_PROMPT_TEMPLATE: &str = "### Instruction:\n{instruction}\n### Response:\n";

fn yes() -> bool {
    true
}
fn default_grad_clip() -> f64 {
    1.0
}
fn default_device() -> String {
    "auto".into()
}
fn default_precision() -> Precision {
    Precision::Fp32
}

/// The training settings `train.tch` and `sft.instructions` share.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct TrainingFields {
    /// The learning-rate schedule, `"SECTION.NAME"` of a `scheduler.*` entry.
    pub schedule: String,
    /// Restart the schedule (warmup included) at this stage's first update instead of continuing
    /// it on the global step counter ("re-warming").
    #[serde(default)]
    pub rewarm: bool,
    /// With `init` = another stage: continue its run (optimizer state and step counter, as
    /// Aurora-M's CAT continued CAP at step 90k) rather than only taking its weights.
    #[serde(default)]
    pub continue_run: bool,
    /// AdamW hyper-parameters (defaults: beta1 0.9, beta2 0.95, eps 1e-8, weight_decay 0.1).
    #[serde(default)]
    pub optimizer: AdamWConfig,
    /// Global gradient-norm clip (0 = off).
    #[serde(default = "default_grad_clip")]
    pub grad_clip: f64,
    /// Tokens per training sequence; at most the model's `n_positions` (and, for `train.tch`,
    /// equal to the mixture's `seq_len`).
    #[schemars(range(min = 1))]
    pub seq_len: u64,
    /// Sequences per forward/backward pass.
    #[schemars(range(min = 1))]
    pub micro_batch: u64,
    /// Sequences per optimizer update (gradient accumulation over micro-batches).
    #[schemars(range(min = 1))]
    pub global_batch: u64,
    /// Optimizer updates of this stage; default: one pass over the data in whole global batches.
    /// `0` trains nothing: the stage's artifact is its `init` (importing a published checkpoint
    /// as the study's base model).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<u64>,
    /// Tensor/pipeline/data parallel degrees (default 1, 1, 1). Ranks run as `tp * pp * dp`
    /// worker processes, started by the launcher (`aurora run --launcher`: local processes, or
    /// `srun` inside a Slurm allocation), on Megatron's grid (tensor-parallel ranks fastest, then
    /// data-parallel, then pipeline).
    #[serde(default)]
    pub layout: Layout,
    /// With `dp > 1`: shard the AdamW state across data-parallel ranks (ZeRO-1, Megatron's
    /// distributed optimizer; default) instead of replicating it on every rank.
    #[serde(default = "yes")]
    pub distributed_optimizer: bool,
    /// `"auto"` (default), `"cpu"` or `"cuda:N"`.
    #[serde(default = "default_device")]
    #[schemars(regex(pattern = r"^(auto|cpu|cuda:[0-9]+)$"))]
    pub device: String,
    /// `"fp32"` (default; bitwise reproducible on CPU) or `"bf16"` (autocast, CUDA only).
    #[serde(default = "default_precision")]
    pub precision: Precision,
    /// Write a resumable checkpoint every this many tokens (0 = only at the end).
    #[serde(default)]
    pub checkpoint_every_tokens: u64,
    /// Token counts of this stage at which a Hugging Face checkpoint is kept in the artifact
    /// (`milestones/tokens-N/`), for "performance vs training tokens" curves.
    #[serde(default)]
    pub milestones: Vec<u64>,
    /// CPU threads for libtorch (0 = its default). Part of the key: CPU results depend on it.
    #[serde(default)]
    pub threads: u32,
}

/// Where a `train.tch` stage's weights come from.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum InitSpec {
    /// `"scratch"` (fresh weights from the node's seed) or `"SECTION.NAME"` of another stage.
    Named(String),
    /// A Hugging Face GPTBigCode directory: `{ hf = "file:DIR" }` (e.g. StarCoderPlus).
    Hf(HfInit),
}

/// `{ hf = "file:DIR" }`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HfInit {
    /// The directory: `config.json` and `model.safetensors` (or a sharded index).
    pub hf: String,
}

impl Default for InitSpec {
    fn default() -> Self {
        InitSpec::Named(SCRATCH.into())
    }
}

const SCRATCH: &str = "scratch";

/// `[stages.NAME]` with `plugin = "train.tch"`: one curriculum stage.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct TrainConfig {
    /// The architecture, `"SECTION.NAME"` of a `model.gptbigcode` entry.
    pub model: String,
    /// `"scratch"` (default), `"SECTION.NAME"` of another stage, or `{ hf = "file:DIR" }`.
    #[serde(default)]
    pub init: InitSpec,
    /// The data, `"SECTION.NAME"` of a `mixer.blend` entry; its tokenizer is the stage's.
    pub data: String,
    #[serde(flatten)]
    pub training: TrainingFields,
}

/// `[sft.NAME]` with `plugin = "sft.instructions"`: instruction tuning of a trained stage, loss on
/// the responses only.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct SftConfig {
    /// The stage to tune, `"SECTION.NAME"` of a `train.tch` or `sft.instructions` entry; its
    /// model and tokenizer are used.
    pub init: String,
    /// Instruction files (`"file:PATH"`): a JSON array or JSON Lines of
    /// `{"instruction", "input", "output"}` records (`input` optional).
    #[schemars(length(min = 1))]
    pub files: Vec<String>,
    /// The prompt, with `{instruction}` and `{input}` (without `{input}`, a non-empty input is
    /// appended to the instruction after a blank line); the response is the record's `output`,
    /// followed by EOS.
    #[serde(default = "default_template")]
    pub template: String,
    /// The keys of the records' instruction, input and output, where the files name them
    /// otherwise, e.g. `fields = { instruction = "prompt", output = "response" }` (as
    /// `source.instructions`; the other keys of its `fields` do not apply to SFT records).
    #[serde(default)]
    pub fields: RecordFields,
    #[serde(flatten)]
    pub training: TrainingFields,
}

fn default_template() -> String {
    DEFAULT_PROMPT_TEMPLATE.into()
}

/// A stage offers its final model and, at `milestones/tokens-N`, each token milestone's.
fn model_offers(entry: &Entry<'_>, milestones: &[u64]) -> Vec<Offer> {
    let mut tokens = milestones.to_vec();
    tokens.sort_unstable();
    tokens.dedup();
    std::iter::once(Offer::new(Output::MODEL, entry.node_id()))
        .chain(
            tokens.into_iter().map(|t| Offer::new(Output::MODEL, entry.node_id()).at(format!("milestones/tokens-{t}"))),
        )
        .collect()
}

/// Where the weights come from, as keyed (the directory is an input).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum InitKind {
    Scratch,
    Stage,
    Hf,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum KeyedData {
    /// The sources of the mixture (their stores are inputs `store:NAME`).
    Mixture { sources: Vec<String> },
    /// The prompt template; the files are inputs `file:0`, `file:1`, ...
    Instructions {
        template: String,
        files: usize,
        // Keyed only when not the defaults, so stages written before the setting keep their keys.
        #[serde(default, skip_serializing_if = "RecordFields::is_default")]
        fields: RecordFields,
    },
}

/// What enters a stage node's key (the directories and data are inputs).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Keyed {
    model: GptBigCodeConfig,
    init: InitKind,
    continue_run: bool,
    data: KeyedData,
    schedule: StageSchedule,
    optimizer: AdamWConfig,
    grad_clip: f64,
    seq_len: u64,
    micro_batch: u64,
    global_batch: u64,
    steps: Option<u64>,
    device: String,
    precision: Precision,
    checkpoint_every_tokens: u64,
    milestones: Vec<u64>,
    threads: u32,
    /// Absent for one process, so single-process keys are what they were before sharding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    parallel: Option<KeyedParallel>,
}

/// A sharded layout changes bytes (gradients are summed in another order), so it is keyed.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct KeyedParallel {
    layout: Layout,
    distributed_optimizer: bool,
}

/// Collects the problems of one entry, each at a field of it.
struct Problems<'a> {
    ctx: &'a PlanContext<'a>,
    pointer: String,
    found: Vec<Diagnostic>,
}

impl Problems<'_> {
    fn at(&self, field: &str) -> String {
        format!("{}/{field}", self.pointer)
    }
    fn push(&mut self, field: &str, message: String, expected: &str, help: String) {
        let pointer = self.at(field);
        let origin = self.ctx.manifest.sources.value(&pointer).or_else(|| self.ctx.manifest.sources.key(&self.pointer));
        self.found.push(Diagnostic::new(message).at(origin).pointer(pointer).expected(expected).help(help));
    }
}

/// The libtorch version the worker was built against (when aurora was built; see build.rs).
pub fn libtorch_version() -> &'static str {
    env!("AURORA_LIBTORCH_VERSION")
}

/// What `device = "auto"` (or an explicit device) runs on.
pub fn resolve_device(device: &str) -> String {
    if device != "auto" {
        return device.to_string();
    }
    let cuda_build = libtorch_version().contains("+cu");
    let gpu_visible = std::fs::read_dir("/proc/driver/nvidia/gpus").is_ok_and(|mut d| d.next().is_some());
    if cuda_build && gpu_visible { "cuda:0".into() } else { "cpu".into() }
}

/// The model and tokenizer node a stage chain starts from: follows `sft.instructions` inits down
/// to a `train.tch` stage. `None` when a link is broken (reported by that entry itself).
fn chain_origin(ctx: &PlanContext<'_>, start: &Referenced) -> Option<(GptBigCodeConfig, String)> {
    let mut seen = BTreeSet::new();
    let mut current = start.clone();
    while current.plugin == SFT_ID {
        if !seen.insert(current.node_id()) {
            return None;
        }
        let next = current.config.get("init")?.as_str()?;
        current = refs::resolve(ctx, "", "init", next, &[TRAIN_ID, SFT_ID]).ok()?;
    }
    let pointer = format!("/{}/{}", current.section, current.name);
    let config: TrainConfig = serde_json::from_value(current.config.clone()).ok()?;
    let model_ref = refs::resolve(ctx, &pointer, "model", &config.model, &[model::PLUGIN_ID]).ok()?;
    let gpt = model_of(ctx.manifest, &format!("/{}/{}", model_ref.section, model_ref.name), &model_ref.config).ok()?;
    let mixture = refs::resolve(ctx, &pointer, "data", &config.data, &[MIXER_ID]).ok()?;
    let blend: BlendConfig = serde_json::from_value(mixture.config).ok()?;
    let tokenizer = ctx.entry_ref(&blend.tokenizer)?;
    Some((gpt, tokenizer))
}

/// Checks shared by both plugins; returns the schedule when it resolves.
fn check_training(p: &mut Problems<'_>, t: &TrainingFields, model: Option<&GptBigCodeConfig>) -> Option<StageSchedule> {
    let schedule = match refs::resolve(p.ctx, &p.at("schedule"), "schedule", &t.schedule, &schedulers::PLUGIN_IDS) {
        Ok(r) => {
            schedulers::schedule_of(&r.plugin, &r.config).map(|schedule| StageSchedule { schedule, rewarm: t.rewarm })
        }
        Err(d) => {
            p.found.push(d);
            None
        }
    };
    if let Some(m) = model {
        if t.seq_len as i64 > m.n_positions {
            p.push(
                "seq_len",
                format!("seq_len = {} is above the model's n_positions = {}", t.seq_len, m.n_positions),
                "seq_len <= n_positions (the learned position table has one row per position)",
                format!("use seq_len <= {} or a model with n_positions >= {}", m.n_positions, t.seq_len),
            );
        }
        if !(m.n_head as u64).is_multiple_of(t.layout.tp) {
            p.push(
                "layout/tp",
                format!("tensor parallelism tp = {} does not divide the model's n_head = {}", t.layout.tp, m.n_head),
                "tp dividing n_head (each tensor-parallel rank holds whole attention heads)",
                format!("use a tp among the divisors of {}", m.n_head),
            );
        } else if !(m.ffn_dim() as u64).is_multiple_of(t.layout.tp) {
            // Dividing n_head implies dividing n_embd and 4 * n_embd; only an explicit n_inner can fail.
            let common = divisors(m.n_head as u64).filter(|d| (m.ffn_dim() as u64).is_multiple_of(*d));
            p.push(
                "layout/tp",
                format!(
                    "tensor parallelism tp = {} does not divide the model's FFN width n_inner = {}",
                    t.layout.tp,
                    m.ffn_dim()
                ),
                "tp dividing n_inner (mlp.c_fc is split by columns into tp equal slices)",
                format!(
                    "use a tp among {} (dividing both n_head = {} and n_inner), or an n_inner that is a multiple of {}",
                    common.map(|d| d.to_string()).collect::<Vec<_>>().join(", "),
                    m.n_head,
                    t.layout.tp
                ),
            );
        }
        if !(m.n_layer as u64).is_multiple_of(t.layout.pp) {
            p.push(
                "layout/pp",
                format!(
                    "pipeline parallelism pp = {} does not divide the model's n_layer = {}",
                    t.layout.pp, m.n_layer
                ),
                "pp dividing n_layer (each pipeline stage holds the same number of blocks)",
                format!("use a pp among the divisors of {}", m.n_layer),
            );
        }
    }
    let o = &t.optimizer;
    for (field, value, ok, expected) in [
        ("optimizer/beta1", o.beta1, (0.0..1.0).contains(&o.beta1), "a number in [0, 1)"),
        ("optimizer/beta2", o.beta2, (0.0..1.0).contains(&o.beta2), "a number in [0, 1)"),
        ("optimizer/eps", o.eps, o.eps.is_finite() && o.eps > 0.0, "a finite number > 0"),
        (
            "optimizer/weight_decay",
            o.weight_decay,
            o.weight_decay.is_finite() && o.weight_decay >= 0.0,
            "a finite number >= 0",
        ),
        (
            "grad_clip",
            t.grad_clip,
            t.grad_clip.is_finite() && t.grad_clip >= 0.0,
            "a finite number >= 0 (0 = no clipping)",
        ),
    ] {
        if !ok {
            let name = field.rsplit('/').next().unwrap_or(field);
            p.push(
                field,
                format!("`{name}` = {value}"),
                expected,
                "remove it for the default (beta1 0.9, beta2 0.95, eps 1e-8, weight_decay 0.1, grad_clip 1.0)".into(),
            );
        }
    }
    let per_update = t.micro_batch * t.layout.dp;
    if per_update > 0 && !t.global_batch.is_multiple_of(per_update) {
        p.push(
            "global_batch",
            format!(
                "global_batch = {} is not a multiple of micro_batch * dp = {} * {} = {per_update}",
                t.global_batch, t.micro_batch, t.layout.dp
            ),
            "global_batch = micro_batch * dp * (gradient accumulation steps)",
            {
                let lower = t.global_batch / per_update * per_update;
                if lower == 0 {
                    format!("use global_batch = {per_update} or a multiple of it")
                } else {
                    format!("use global_batch = {lower} or {}, or change micro_batch or dp", lower + per_update)
                }
            },
        );
    }
    // 1F1B fills the pipeline with pp micro-batches before the first backward pass. Checked once
    // the batch divides and pp is a valid split (otherwise that error is the one to fix first).
    let micro_batches = t.global_batch.checked_div(per_update).unwrap_or(0);
    let pp_divides = model.is_none_or(|m| (m.n_layer as u64).is_multiple_of(t.layout.pp));
    if per_update > 0 && t.global_batch.is_multiple_of(per_update) && pp_divides && micro_batches < t.layout.pp {
        let pp = t.layout.pp;
        let fits = (1..t.micro_batch)
            .rev()
            .find(|&mb| t.global_batch.is_multiple_of(mb * t.layout.dp) && t.global_batch / (mb * t.layout.dp) >= pp);
        let mut fixes = Vec::new();
        if let Some(mb) = fits {
            fixes.push(format!("micro_batch = {mb} ({} micro-batches per step)", t.global_batch / (mb * t.layout.dp)));
        }
        if t.layout.dp > 1 {
            fixes.push("a smaller dp".to_string());
        }
        fixes.push(format!("global_batch = {} (micro_batch * dp * pp) or a multiple of it", per_update * pp));
        p.push(
            "micro_batch",
            format!(
                "pipeline parallelism pp = {pp} needs at least {pp} micro-batches per step, but global_batch / \
                 (micro_batch * dp) = {} / ({} * {}) = {micro_batches}",
                t.global_batch, t.micro_batch, t.layout.dp
            ),
            "global_batch / (micro_batch * dp) >= pp (1F1B keeps every pipeline stage busy with pp micro-batches in flight)",
            format!("use {}", fixes.join(", or ")),
        );
    }
    // A milestone the stage never reaches would never be written, and an evaluator with
    // `milestones = true` would plan a node for it that can only fail.
    if let Some(steps) = t.steps {
        let stage_tokens = steps * t.global_batch * t.seq_len;
        if let Some(&beyond) = t.milestones.iter().find(|&&m| m == 0 || m > stage_tokens) {
            p.push(
                "milestones",
                format!(
                    "milestone {beyond} is not within the stage's {stage_tokens} tokens ({steps} steps x {} x {})",
                    t.global_batch, t.seq_len
                ),
                "token counts between 1 and steps * global_batch * seq_len",
                "remove it, or train longer".into(),
            );
        }
    }
    if t.precision == Precision::Bf16 && resolve_device(&t.device) == "cpu" {
        p.push(
            "precision",
            format!("precision = \"bf16\" with device = \"{}\", which runs on the CPU", t.device),
            "bf16 only on a CUDA device (autocast); on the CPU, fp32",
            "use precision = \"fp32\", or device = \"cuda:0\" on a machine with a GPU and a CUDA libtorch".into(),
        );
    }
    schedule
}

fn keyed(
    model: GptBigCodeConfig,
    init: InitKind,
    data: KeyedData,
    schedule: StageSchedule,
    t: TrainingFields,
) -> Value {
    let keyed = Keyed {
        model,
        init,
        continue_run: t.continue_run,
        data,
        schedule,
        optimizer: t.optimizer,
        grad_clip: t.grad_clip,
        seq_len: t.seq_len,
        micro_batch: t.micro_batch,
        global_batch: t.global_batch,
        steps: t.steps,
        device: t.device,
        precision: t.precision,
        checkpoint_every_tokens: t.checkpoint_every_tokens,
        milestones: t.milestones,
        threads: t.threads,
        parallel: (!t.layout.is_single())
            .then_some(KeyedParallel { layout: t.layout, distributed_optimizer: t.distributed_optimizer }),
    };
    serde_json::to_value(keyed).expect("keyed config serialises")
}

fn node_input(id: String, pointer: String) -> InputSpec {
    InputSpec { source: InputSource::Node(id), pointer }
}

/// An init stage reference: another stage, not this one.
fn resolve_init_stage(p: &mut Problems<'_>, entry: &Entry<'_>, reference: &str) -> Option<Referenced> {
    let r = refs::resolve(p.ctx, &p.at("init"), "init", reference, &[TRAIN_ID, SFT_ID]);
    match r {
        Ok(r) if r.section == entry.section && r.name == entry.name => {
            p.push(
                "init",
                format!("`init` = \"{reference}\" is this stage itself"),
                "\"scratch\", another stage's \"SECTION.NAME\", or { hf = \"file:DIR\" }",
                "a stage continues from a different, earlier stage".into(),
            );
            None
        }
        Ok(r) => Some(r),
        Err(d) => {
            p.found.push(d);
            None
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct TrainTch;
aurora_core::register_plugin!(TrainTch);

impl Plugin for TrainTch {
    fn id(&self) -> &'static str {
        TRAIN_ID
    }
    fn version(&self) -> &'static str {
        // 2: milestones carry tokenizer.json. 3: tokens_total counts init stages' tokens.
        // 4: fused AdamW, gradients set to none, grouped-query SDPA: other last bits.
        // 5: fused GELU and cross-entropy kernels on CPU: other last bits.
        "5"
    }
    fn description(&self) -> &'static str {
        "Train a GPTBigCode curriculum stage on a mixture with libtorch (AdamW, schedules, resumable checkpoints, HF export)"
    }
    fn config_schema(&self) -> schemars::Schema {
        schemars::schema_for!(TrainConfig)
    }
    fn offers(&self, entry: &Entry<'_>, _ctx: &PlanContext<'_>) -> Vec<Offer> {
        let milestones = serde_json::from_value::<TrainConfig>(entry.config.clone()).map(|c| c.training.milestones);
        model_offers(entry, &milestones.unwrap_or_default())
    }
    fn plan(&self, entry: &Entry<'_>, ctx: &PlanContext<'_>) -> Result<Vec<NodeSpec>, Diagnostics> {
        let config: TrainConfig = entry.parse(ctx.manifest)?;
        let mut p = Problems { ctx, pointer: entry.pointer(), found: Vec::new() };
        let mut inputs = BTreeMap::new();
        let model = match refs::resolve(ctx, &p.at("model"), "model", &config.model, &[model::PLUGIN_ID]) {
            Ok(r) => {
                inputs.insert("model".to_string(), node_input(r.node_id(), p.at("model")));
                // An invalid model is reported by its own entry.
                model_of(ctx.manifest, &format!("/{}/{}", r.section, r.name), &r.config).ok()
            }
            Err(d) => {
                p.found.push(d);
                None
            }
        };
        let mut sources = Vec::new();
        match refs::resolve(ctx, &p.at("data"), "data", &config.data, &[MIXER_ID]) {
            Ok(r) => {
                if let Ok(blend) = serde_json::from_value::<BlendConfig>(r.config.clone()) {
                    if blend.seq_len != config.training.seq_len {
                        p.push(
                            "seq_len",
                            format!(
                                "seq_len = {} differs from the seq_len = {} of the mixture `{}`",
                                config.training.seq_len, blend.seq_len, config.data
                            ),
                            "the mixture's seq_len (its samples hold seq_len + 1 tokens)",
                            format!("use seq_len = {}, or change the mixture's", blend.seq_len),
                        );
                    }
                    // A trained tokenizer's size is known now (its artifact may be smaller, never larger).
                    let bpe_size = blend
                        .tokenizer
                        .split_once('.')
                        .and_then(|(section, name)| ctx.manifest.value.get(section)?.get(name))
                        .filter(|t| t.get("plugin").and_then(Value::as_str) == Some("tokenizer.bpe"))
                        .and_then(|t| t.get("vocab_size")?.as_i64());
                    if let (Some(size), Some(m)) = (bpe_size, &model)
                        && size > m.vocab_size
                    {
                        p.push(
                            "model",
                            format!(
                                "the tokenizer `{}` has up to {size} tokens but the model's vocab_size is {}",
                                blend.tokenizer, m.vocab_size
                            ),
                            "a model vocab_size at least the tokenizer's vocab_size (every token id needs an embedding row)",
                            format!("set vocab_size = {size} (or more) in the model, or train a smaller tokenizer"),
                        );
                    }
                    inputs.insert("mixture".into(), node_input(r.node_id(), p.at("data")));
                    // A mixture whose tokenizer or sources do not resolve is reported by its entry.
                    if let Some(tokenizer) = tokenizer_entry(ctx, &blend.tokenizer)
                        && let Some(tokenizer_node) = ctx.offer(&tokenizer, Output::TOKENIZER)
                    {
                        inputs.insert("tokenizer".into(), node_input(tokenizer_node, p.at("data")));
                        for source in blend.sources() {
                            if let Some(store) = store_node_id(ctx, &tokenizer, source) {
                                inputs.insert(format!("{STORE_PREFIX}{source}"), node_input(store, p.at("data")));
                            }
                            sources.push(source.to_string());
                        }
                    }
                }
            }
            Err(d) => p.found.push(d),
        }
        let init = match &config.init {
            InitSpec::Named(name) if name == SCRATCH => InitKind::Scratch,
            InitSpec::Named(reference) => {
                if let Some(r) = resolve_init_stage(&mut p, entry, reference) {
                    inputs.insert("init".into(), node_input(r.node_id(), p.at("init")));
                }
                InitKind::Stage
            }
            InitSpec::Hf(HfInit { hf }) => {
                if hf.starts_with(FILE_PREFIX) {
                    inputs.insert(
                        "init".into(),
                        InputSpec { source: InputSource::Path(hf.clone()), pointer: p.at("init/hf") },
                    );
                } else {
                    p.push(
                        "init/hf",
                        format!("`init.hf` = \"{hf}\" is not a file reference"),
                        "\"file:DIR\", a Hugging Face GPTBigCode directory relative to the manifest",
                        format!("write `init = {{ hf = \"file:{hf}\" }}`"),
                    );
                }
                InitKind::Hf
            }
        };
        if config.training.continue_run && init != InitKind::Stage {
            p.push(
                "continue_run",
                "`continue_run = true` without a stage to continue".into(),
                "continue_run only with init = \"SECTION.NAME\" of another stage",
                "remove continue_run, or point init at the stage whose run this one continues".into(),
            );
        }
        let schedule = check_training(&mut p, &config.training, model.as_ref());
        match (p.found.is_empty(), model, schedule) {
            (true, Some(model), Some(schedule)) => {
                let keyed = keyed(model, init, KeyedData::Mixture { sources }, schedule, config.training);
                Ok(vec![NodeSpec::for_entry(entry, keyed, inputs)])
            }
            // A missing model or schedule was reported by its own entry; say which stage it stops.
            (true, ..) => Err(Diagnostic::new(format!(
                "stage `{}` cannot be planned: its model or schedule entry has errors (reported above)",
                entry.node_id()
            ))
            .at(ctx.manifest.sources.key(&entry.pointer()))
            .pointer(entry.pointer())
            .into()),
            (false, ..) => Err(Diagnostics(p.found)),
        }
    }
    fn execute(&self, ctx: &mut ExecContext<'_>) -> Result<ExecOutcome, PluginError> {
        execute_stage(ctx)
    }
    fn execution_facts(&self, config: &Value) -> BTreeMap<String, String> {
        stage_facts(config)
    }
    fn estimate(&self, config: &Value) -> Option<String> {
        stage_estimate(config)
    }
    fn resources(&self, config: &Value) -> Resources {
        stage_resources(config)
    }
}

#[derive(Debug, Clone, Default)]
pub struct SftInstructions;
aurora_core::register_plugin!(SftInstructions);

impl Plugin for SftInstructions {
    fn id(&self) -> &'static str {
        SFT_ID
    }
    fn version(&self) -> &'static str {
        // 2: tokens_total counts the init stages' tokens. 3: fused AdamW, gradients set to
        // none, grouped-query SDPA: other last bits. 4: fused GELU and cross-entropy kernels on
        // CPU: other last bits.
        "4"
    }
    fn description(&self) -> &'static str {
        "Instruction-tune a trained stage on {instruction, input, output} records (loss on responses only)"
    }
    fn config_schema(&self) -> schemars::Schema {
        schemars::schema_for!(SftConfig)
    }
    fn offers(&self, entry: &Entry<'_>, _ctx: &PlanContext<'_>) -> Vec<Offer> {
        let milestones = serde_json::from_value::<SftConfig>(entry.config.clone()).map(|c| c.training.milestones);
        model_offers(entry, &milestones.unwrap_or_default())
    }
    fn plan(&self, entry: &Entry<'_>, ctx: &PlanContext<'_>) -> Result<Vec<NodeSpec>, Diagnostics> {
        let config: SftConfig = entry.parse(ctx.manifest)?;
        let mut p = Problems { ctx, pointer: entry.pointer(), found: Vec::new() };
        let mut inputs = BTreeMap::new();
        let origin = resolve_init_stage(&mut p, entry, &config.init).and_then(|r| {
            inputs.insert("init".to_string(), node_input(r.node_id(), p.at("init")));
            chain_origin(ctx, &r)
        });
        for (i, file) in config.files.iter().enumerate() {
            let pointer = p.at(&format!("files/{i}"));
            if file.starts_with(FILE_PREFIX) {
                inputs.insert(format!("file:{i}"), InputSpec { source: InputSource::Path(file.clone()), pointer });
            } else {
                p.push(
                    &format!("files/{i}"),
                    format!("`files` entry \"{file}\" is not a file reference"),
                    "\"file:PATH\" (relative to the manifest)",
                    format!("write \"file:{file}\""),
                );
            }
        }
        if !config.template.contains("{instruction}") {
            p.push(
                "template",
                "the prompt template has no `{instruction}`".into(),
                "a prompt with `{instruction}` (and optionally `{input}`), e.g. the default \"### Instruction:\\n{instruction}\\n### Response:\\n\"",
                "the response is the record's `output`, appended by the trainer; the template is only the prompt".into(),
            );
        }
        let model = origin.as_ref().map(|(model, _)| model.clone());
        let schedule = check_training(&mut p, &config.training, model.as_ref());
        match (p.found.is_empty(), origin, schedule) {
            (true, Some((model, tokenizer)), Some(schedule)) => {
                inputs.insert("tokenizer".into(), node_input(tokenizer, p.at("init")));
                let data = KeyedData::Instructions {
                    template: config.template,
                    files: config.files.len(),
                    fields: config.fields,
                };
                let keyed = keyed(model, InitKind::Stage, data, schedule, config.training);
                Ok(vec![NodeSpec::for_entry(entry, keyed, inputs)])
            }
            (true, ..) => Err(Diagnostic::new(format!(
                "`{}` cannot be planned: the stage it continues, or its schedule, has errors (reported above)",
                entry.node_id()
            ))
            .at(ctx.manifest.sources.key(&entry.pointer()))
            .pointer(entry.pointer())
            .into()),
            (false, ..) => Err(Diagnostics(p.found)),
        }
    }
    fn execute(&self, ctx: &mut ExecContext<'_>) -> Result<ExecOutcome, PluginError> {
        execute_stage(ctx)
    }
    fn execution_facts(&self, config: &Value) -> BTreeMap<String, String> {
        stage_facts(config)
    }
    fn estimate(&self, config: &Value) -> Option<String> {
        stage_estimate(config)
    }
    fn resources(&self, config: &Value) -> Resources {
        stage_resources(config)
    }
}

/// One process per rank; each holds one accelerator on CUDA/ROCm and `threads` cores.
fn stage_resources(config: &Value) -> Resources {
    let Ok(keyed) = serde_json::from_value::<Keyed>(config.clone()) else { return Resources::default() };
    let layout = keyed.parallel.map(|p| p.layout).unwrap_or_default();
    Resources {
        tasks: u32::try_from(layout.world()).unwrap_or(u32::MAX),
        cpus_per_task: keyed.threads.max(1),
        gpus_per_task: u32::from(resolve_device(&keyed.device).starts_with("cuda")),
        memory_mb_per_task: None,
    }
}

/// Parameters, training FLOPs and the memory of weights, gradients and AdamW state (fp32: 16
/// bytes per parameter, before activations).
fn stage_estimate(config: &Value) -> Option<String> {
    let keyed: Keyed = serde_json::from_value(config.clone()).ok()?;
    let params = keyed.model.param_count() as f64;
    let per_token = keyed.model.train_flops_per_token(keyed.seq_len as i64);
    let work = match keyed.steps {
        Some(steps) => {
            let tokens = (steps * keyed.global_batch * keyed.seq_len) as f64;
            format!("{steps} updates, {}tokens, {}FLOP", si(tokens), si(tokens * per_token))
        }
        None => format!("one pass over the data, {}FLOP per token", si(per_token)),
    };
    let layout = keyed.parallel.as_ref().map(|p| p.layout).unwrap_or_default();
    let zero = keyed.parallel.as_ref().is_some_and(|p| p.distributed_optimizer);
    Some(format!(
        "{} parameters, {work}, {}B of weights + gradients + AdamW state; {}",
        si(params),
        si(16.0 * params),
        per_rank(&keyed, layout, zero)
    ))
}

/// What one rank of `layout` holds (see [`per_rank_memory`]), then, with more than one rank, what
/// it sends and receives per step (`Layout::communication_per_step`), and the vocabulary padding
/// of tensor parallelism when `tp` does not divide `vocab_size` (`Layout::padded_vocab`).
fn per_rank(keyed: &Keyed, layout: Layout, zero: bool) -> String {
    let mut text = per_rank_memory(keyed, layout, zero);
    if !layout.is_single() {
        let c = layout.communication_per_step(&step_shape(keyed, zero));
        text.push_str(&format!(
            "; communication per step ~{}B (tensor {}B, pipeline {}B, data {}B)",
            si(c.total()),
            si(c.tensor),
            si(c.pipeline),
            si(c.data)
        ));
    }
    let (vocab, padded) = (keyed.model.vocab_size, layout.padded_vocab(keyed.model.vocab_size));
    if padded != vocab {
        text.push_str(&format!(
            "; vocab {vocab} padded to {padded} on {} tensor-parallel ranks (a multiple of tp, as Megatron pads); \
             the artifact keeps {vocab}",
            layout.tp
        ));
    }
    text
}

fn step_shape(keyed: &Keyed, zero: bool) -> StepShape<'_> {
    StepShape {
        model: &keyed.model,
        seq_len: keyed.seq_len,
        micro_batch: keyed.micro_batch,
        global_batch: keyed.global_batch,
        bf16: keyed.precision == Precision::Bf16,
        zero,
    }
}

/// The divisors of `n`, ascending.
fn divisors(n: u64) -> impl Iterator<Item = u64> {
    (1..=n).filter(move |d| n.is_multiple_of(*d))
}

/// Memory of one rank under `layout` (see `Layout::memory_per_rank`), against a 64 GB MI250X
/// GCD (the paper's device); when it does not fit, the smallest tensor x pipeline split that does
/// and that plans (tp dividing n_head and n_inner, pp dividing n_layer and at most the
/// micro-batches per step).
fn per_rank_memory(keyed: &Keyed, layout: Layout, zero: bool) -> String {
    const GCD: f64 = 64e9;
    let step = step_shape(keyed, zero);
    let estimate = |l: Layout| l.memory_per_rank(&step);
    let m = estimate(layout);
    let mut text = format!(
        "per rank ({layout}{}): {}B weights + {}B gradients + {}B AdamW + ~{}B activations = ~{}B",
        if zero && layout.dp > 1 { ", ZeRO-1" } else { "" },
        si(m.weights),
        si(m.gradients),
        si(m.optimizer),
        si(m.activations),
        si(m.total())
    );
    if m.total() <= GCD {
        text.push_str(", fits a 64 GB GCD");
        return text;
    }
    let ffn = keyed.model.ffn_dim() as u64;
    let micro_batches = layout.micro_batches(&step);
    let pps: Vec<u64> = divisors(keyed.model.n_layer as u64).filter(|&pp| pp <= micro_batches.max(1)).collect();
    let fitting = divisors(keyed.model.n_head as u64)
        .filter(|&tp| tp <= 8 && ffn.is_multiple_of(tp))
        .flat_map(|tp| pps.iter().map(move |&pp| Layout { tp, pp, dp: layout.dp }))
        .filter(|l| estimate(*l).total() <= GCD)
        .min_by_key(|l| (l.tp * l.pp, l.pp));
    match fitting {
        Some(l) => {
            text.push_str(&format!(", more than a 64 GB GCD: {l} fits (~{}B per rank)", si(estimate(l).total())))
        }
        None => text.push_str(", more than a 64 GB GCD with any tp <= 8 and pp"),
    }
    text
}

fn stage_facts(config: &Value) -> BTreeMap<String, String> {
    let Ok(keyed) = serde_json::from_value::<Keyed>(config.clone()) else {
        return BTreeMap::new();
    };
    let device = resolve_device(&keyed.device);
    let class = if device == "cpu" { "cpu" } else { "cuda" };
    let determinism = if class == "cpu" {
        // CPU reductions depend on the thread count; the worker pins it and deterministic algorithms.
        format!(
            "deterministic algorithms, threads = {}",
            if keyed.threads == 0 { "default".into() } else { keyed.threads.to_string() }
        )
    } else {
        "deterministic algorithms (CUDA results may still differ across GPU models)".into()
    };
    BTreeMap::from([
        ("device".into(), class.into()),
        (
            "precision".into(),
            serde_json::to_value(keyed.precision).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default(),
        ),
        ("libtorch".into(), libtorch_version().into()),
        ("determinism".into(), determinism),
    ])
}

fn execute_stage(ctx: &mut ExecContext<'_>) -> Result<ExecOutcome, PluginError> {
    let keyed: Keyed = ctx.parse()?;
    let (inputs, node) = (ctx.inputs, ctx.node_id);
    let input = |name: &str| -> Result<PathBuf, PluginError> {
        inputs.get(name).cloned().ok_or_else(|| PluginError::new(format!("input `{name}` of {node} is missing")))
    };
    let init = match keyed.init {
        InitKind::Scratch => Init::Scratch,
        InitKind::Stage => Init::Stage { dir: input("init")?, continue_run: keyed.continue_run },
        InitKind::Hf => Init::Hf { dir: input("init")? },
    };
    let data = match &keyed.data {
        KeyedData::Mixture { sources } => {
            let stores = sources
                .iter()
                .map(|s| Ok((s.clone(), input(&format!("{STORE_PREFIX}{s}"))?)))
                .collect::<Result<_, PluginError>>()?;
            TrainData::Mixture { dir: input("mixture")?, stores }
        }
        KeyedData::Instructions { template, files, fields } => {
            let files = (0..*files).map(|i| input(&format!("file:{i}"))).collect::<Result<Vec<_>, _>>()?;
            TrainData::Instructions { examples: render_examples(ctx, template, fields, &files)? }
        }
    };
    let job = TrainJob {
        node: ctx.node_id.to_string(),
        seed: ctx.seed,
        device: resolve_device(&keyed.device),
        precision: keyed.precision,
        model: keyed.model,
        init,
        data,
        tokenizer: input("tokenizer")?,
        schedule: keyed.schedule,
        optimizer: keyed.optimizer,
        grad_clip: keyed.grad_clip,
        seq_len: keyed.seq_len,
        micro_batch: keyed.micro_batch,
        global_batch: keyed.global_batch,
        steps: keyed.steps,
        checkpoint_every_tokens: keyed.checkpoint_every_tokens,
        milestones: keyed.milestones,
        threads: keyed.threads,
        layout: keyed.parallel.as_ref().map(|p| p.layout).unwrap_or_default(),
        distributed_optimizer: keyed.parallel.as_ref().is_some_and(|p| p.distributed_optimizer),
        out_dir: ctx.out_dir.to_path_buf(),
        work_dir: ctx.resume_dir.to_path_buf(),
    };
    let metrics = client::run_ranks(&Job::Train(job.clone()), job.layout.world() as usize, ctx)?;
    Ok(ExecOutcome { metrics })
}

/// Renders instruction files into `examples.jsonl` (`{"prompt", "response"}` per record) in the
/// resume directory, with aurora-corpus's reader (same formats and errors as `source.instructions`).
fn render_examples(
    ctx: &mut ExecContext<'_>,
    template: &str,
    fields: &RecordFields,
    files: &[PathBuf],
) -> Result<PathBuf, PluginError> {
    let mut examples = Vec::new();
    for file in files {
        // Two passes with one reader: the rendered prompt, then the bare output of each record.
        let read = |template: &str| -> Result<Vec<String>, PluginError> {
            let mut texts = Vec::new();
            let mut state = aurora_corpus::read::ReadState::default();
            let exchange = aurora_corpus::read::Exchange { template, shape: Shape::Records, fields };
            aurora_corpus::read::instructions(file, &exchange, &mut state, &mut |text| {
                texts.push(text);
                true
            })
            .map_err(|e| PluginError::new(e.to_string()))?;
            Ok(texts)
        };
        let prompts = read(template)?;
        let responses = read("{output}")?;
        examples.extend(prompts.into_iter().zip(responses));
    }
    let path = ctx.resume_dir_created()?.join("examples.jsonl");
    let mut text = String::new();
    for (prompt, response) in &examples {
        text.push_str(&json!({ "prompt": prompt, "response": response }).to_string());
        text.push('\n');
    }
    std::fs::write(&path, text).map_err(|e| PluginError::new(format!("cannot write {}: {e}", path.display())))?;
    let _ = writeln!(ctx.log, "{}: {} instruction examples from {} file(s)", ctx.node_id, examples.len(), files.len());
    Ok(path)
}
