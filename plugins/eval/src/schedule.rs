//! The evaluation schedule shared by every evaluator: which checkpoints an evaluator runs on, one
//! node per (evaluator, checkpoint), and the `results.json` every evaluation node writes.
//!
//! `on = ["stages.cap", "sft.safety"]` names entries that produce models (whatever their plugin
//! and section: those that offer `Output::MODEL`); `milestones = true` adds every milestone
//! checkpoint a named entry offers (`milestones/tokens-N/` of a stage's `milestones` list). The node of evaluator `evals/NAME` on checkpoint
//! `cap` is `evals/NAME/cap`; on the milestone at 20000 tokens it is `evals/NAME/cap@tokens-20000`.
//! The schedule itself (`on`, `milestones`) is not part of any node's key: adding a checkpoint
//! or an evaluator reruns only the new nodes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use aurora_core::diagnostic::{Diagnostic, Diagnostics, did_you_mean, quoted_list};
use aurora_core::plugin::{
    Entry, ExecContext, InputSource, InputSpec, NodeSpec, Offer, Output, PlanContext, PluginError,
};
use aurora_worker_api::{GenerateJob, GenerateRequest, GenerateResult, Job, ModelRef, Precision, Sampling};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// Defines an evaluator's config struct: the shared schedule and runtime fields followed by the
/// evaluator's own fields. One definition of the shared fields, so every evaluator documents and
/// validates them the same way. `on_optional("doc")` before the struct makes `on` optional
/// (`eval.code` scoring a generations file runs on no checkpoint).
macro_rules! evaluator_config {
    (
        $(#[$meta:meta])*
        pub struct $name:ident { $($body:tt)* }
    ) => {
        $crate::schedule::evaluator_config!(@define [
            /// Checkpoints to evaluate: `SECTION.NAME` of entries that produce models, e.g. `["stages.base", "stages.cap", "stages.cat", "sft.safety"]`.
            #[schemars(length(min = 1))]
        ] $(#[$meta])* pub struct $name { $($body)* });
    };
    (
        on_optional($on_doc:literal)
        $(#[$meta:meta])*
        pub struct $name:ident { $($body:tt)* }
    ) => {
        $crate::schedule::evaluator_config!(@define [
            #[doc = $on_doc]
            #[serde(default)]
        ] $(#[$meta])* pub struct $name { $($body)* });
    };
    (
        @define [$($on_meta:tt)*]
        $(#[$meta:meta])*
        pub struct $name:ident { $($(#[$fmeta:meta])* pub $field:ident : $ty:ty,)* }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            $($on_meta)*
            pub on: Vec<String>,
            /// Also evaluate every token milestone (`milestones/tokens-N/`) that the stages in
            /// `on` declare, for performance-vs-tokens curves.
            #[serde(default)]
            pub milestones: bool,
            /// Device of the worker: `"cpu"` or `"cuda:N"`.
            #[serde(default = "crate::schedule::default_device")]
            pub device: String,
            /// Numeric precision of the forward pass (`fp32`, or `bf16` on CUDA).
            #[serde(default = "crate::schedule::default_precision")]
            pub precision: aurora_worker_api::Precision,
            /// CPU threads of the worker (0 = libtorch's default).
            #[serde(default)]
            pub threads: u32,
            /// Sequences per forward pass in the worker.
            #[serde(default = "crate::schedule::default_batch_size")]
            #[schemars(range(min = 1))]
            pub batch_size: u64,
            $($(#[$fmeta])* pub $field: $ty,)*
        }

        impl $crate::schedule::Scheduled for $name {
            fn schedule(&self) -> $crate::schedule::Schedule<'_> {
                $crate::schedule::Schedule { on: &self.on, milestones: self.milestones }
            }
            fn runtime(&self) -> $crate::schedule::Runtime {
                $crate::schedule::Runtime {
                    device: self.device.clone(),
                    precision: self.precision,
                    threads: self.threads,
                    batch_size: self.batch_size,
                }
            }
        }
    };
}
pub(crate) use evaluator_config;

pub fn default_device() -> String {
    "cpu".to_string()
}
pub fn default_precision() -> Precision {
    Precision::Fp32
}
pub fn default_batch_size() -> u64 {
    8
}

/// The schedule fields of an evaluator config.
pub struct Schedule<'a> {
    pub on: &'a [String],
    pub milestones: bool,
}

/// How the worker runs the model; enters every node key (device and precision change results).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Runtime {
    pub device: String,
    pub precision: Precision,
    pub threads: u32,
    pub batch_size: u64,
}

/// What one evaluation node needs: one process, its `threads` cores (0, libtorch's default: every
/// core), and one GPU when it runs on CUDA.
pub fn resources(node_config: &serde_json::Value) -> aurora_core::plugin::Resources {
    let runtime = &node_config["runtime"];
    let on_gpu = runtime["device"].as_str().is_some_and(|d| d.starts_with("cuda"));
    aurora_core::plugin::Resources {
        cpus_per_task: runtime["threads"].as_u64().map_or(0, |t| u32::try_from(t).unwrap_or(u32::MAX)),
        gpus_per_task: u32::from(on_gpu),
        ..Default::default()
    }
}

/// Implemented by every evaluator config (through `evaluator_config!`).
pub trait Scheduled {
    fn schedule(&self) -> Schedule<'_>;
    fn runtime(&self) -> Runtime;
}

/// One checkpoint an evaluator runs on.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    /// `cap`, or `cap@tokens-20000` for a milestone.
    pub label: String,
    /// The node producing the model (`stages/cap`).
    pub model_node: String,
    /// The model's directory inside that node's artifact (`milestones/tokens-20000`), if not its root.
    pub subdir: Option<String>,
    /// Manifest pointer of the `on` element that asked for it.
    pub pointer: String,
}

/// Resolves `on` (and the milestones of the stages it names) into checkpoints. Entries that no
/// entry of the manifest defines are left to the planner, which reports them with a
/// did-you-mean at the `on` element; entries outside the model sections are reported here.
pub fn checkpoints(
    entry: &Entry<'_>,
    ctx: &PlanContext<'_>,
    schedule: &Schedule<'_>,
) -> Result<Vec<Checkpoint>, Diagnostics> {
    let mut problems = Vec::new();
    let mut out: Vec<Checkpoint> = Vec::new();
    for (i, reference) in schedule.on.iter().enumerate() {
        let pointer = format!("{}/on/{i}", entry.pointer());
        let problem = |message: String| {
            Diagnostic::new(message)
                .at(ctx.manifest.sources.value(&pointer))
                .pointer(pointer.clone())
                .expected("`SECTION.NAME` of a model-producing entry, e.g. \"stages.cap\" or \"sft.safety\"")
        };
        let Some(named_node) = ctx.entry_ref(reference) else {
            let candidates = model_entries(ctx);
            let candidates: Vec<&str> = candidates.iter().map(String::as_str).collect();
            let by_name = candidates.iter().copied().find(|c| c.split_once('.').is_some_and(|(_, n)| n == reference));
            let help = match by_name.or_else(|| did_you_mean(reference, candidates.iter().copied())) {
                Some(best) => format!("did you mean `{best}`?"),
                None => format!("model-producing entries of this manifest: {}", quoted_list(&candidates)),
            };
            problems.push(problem(format!("`on` element \"{reference}\" is not `SECTION.NAME`")).help(help));
            continue;
        };
        // An entry that does not exist is the planner's to report (with a did-you-mean).
        let (model_node, milestones) = match ctx.entry(reference) {
            None => (named_node, Vec::new()),
            Some(model_entry) => {
                let offers = ctx.offers(&model_entry, Output::MODEL);
                let Some(whole) = offers.iter().find(|o| o.subdir.is_none()) else {
                    problems.push(problem(format!(
                        "`on` element \"{reference}\" is an entry of `{}`, which does not produce a model",
                        model_entry.plugin.id()
                    )));
                    continue;
                };
                let milestones: Vec<String> = offers.iter().filter_map(|o| o.subdir.clone()).collect();
                (whole.node.clone(), milestones)
            }
        };
        let name = reference.split_once('.').map_or(reference.as_str(), |(_, name)| name);
        let push = |out: &mut Vec<Checkpoint>, problems: &mut Vec<Diagnostic>, label: String, subdir| {
            if out.iter().any(|c| c.label == label) {
                problems.push(
                    problem(format!("checkpoint `{label}` is named twice in `on`"))
                        .help("each checkpoint is evaluated once; remove the duplicate (labels are the entry names)"),
                );
            } else {
                out.push(Checkpoint { label, model_node: model_node.clone(), subdir, pointer: pointer.clone() });
            }
        };
        push(&mut out, &mut problems, name.to_string(), None);
        if schedule.milestones {
            // A milestone at `milestones/tokens-N` is labelled `NAME@tokens-N`.
            for subdir in milestones {
                let tag = subdir.rsplit('/').next().unwrap_or(&subdir).to_string();
                push(&mut out, &mut problems, format!("{name}@{tag}"), Some(subdir));
            }
        }
    }
    if problems.is_empty() { Ok(out) } else { Err(Diagnostics(problems)) }
}

/// `SECTION.NAME` of every entry that produces a model.
fn model_entries(ctx: &PlanContext<'_>) -> Vec<String> {
    ctx.offering(Output::MODEL).iter().map(Entry::reference).collect()
}

/// What an evaluator entry offers: one evaluation per checkpoint of its schedule (none if the
/// schedule does not resolve; the evaluator's own planning reports why).
pub fn offers<C: Scheduled + serde::de::DeserializeOwned>(entry: &Entry<'_>, ctx: &PlanContext<'_>) -> Vec<Offer> {
    let Ok(config) = serde_json::from_value::<C>(entry.config.clone()) else { return Vec::new() };
    checkpoints(entry, ctx, &config.schedule())
        .unwrap_or_default()
        .into_iter()
        .map(|c| Offer::new(Output::EVALUATION, format!("{}/{}", entry.node_id(), c.label)))
        .collect()
}

/// What every evaluation node's config holds besides the evaluator's own settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig<T> {
    /// The evaluator entry's node id (`evals/bpb`).
    pub evaluator: String,
    pub checkpoint: String,
    pub model_node: String,
    pub subdir: Option<String>,
    pub runtime: Runtime,
    /// The evaluator's own settings (without input paths, which enter the key by content).
    pub settings: T,
}

/// One node per checkpoint: `evals/NAME/LABEL`, input `model` = the checkpoint's node plus the
/// evaluator's own `inputs`.
pub fn nodes<T: Serialize>(
    entry: &Entry<'_>,
    checkpoints: &[Checkpoint],
    runtime: &Runtime,
    settings: &T,
    inputs: &BTreeMap<String, InputSpec>,
) -> Vec<NodeSpec> {
    checkpoints
        .iter()
        .map(|c| {
            let config = NodeConfig {
                evaluator: entry.node_id(),
                checkpoint: c.label.clone(),
                model_node: c.model_node.clone(),
                subdir: c.subdir.clone(),
                runtime: runtime.clone(),
                settings,
            };
            let mut node_inputs = inputs.clone();
            node_inputs.insert(
                MODEL_INPUT.to_string(),
                InputSpec { source: InputSource::Node(c.model_node.clone()), pointer: c.pointer.clone() },
            );
            NodeSpec {
                id: format!("{}/{}", entry.node_id(), c.label),
                plugin: None,
                config: serde_json::to_value(config).expect("evaluator configs serialize"),
                inputs: node_inputs,
                pointer: entry.pointer(),
            }
        })
        .collect()
}

/// The input name of the evaluated model.
pub const MODEL_INPUT: &str = "model";

/// Plans an evaluator: checkpoints from the schedule, then one node each.
pub fn plan<C: Scheduled, T: Serialize>(
    entry: &Entry<'_>,
    ctx: &PlanContext<'_>,
    config: &C,
    settings: &T,
    inputs: &BTreeMap<String, InputSpec>,
) -> Result<Vec<NodeSpec>, Diagnostics> {
    let runtime = config.runtime();
    let cuda_index = runtime.device.strip_prefix("cuda:").map(|i| i.parse::<u32>().is_ok());
    if runtime.device != "cpu" && cuda_index != Some(true) {
        let pointer = format!("{}/device", entry.pointer());
        return Err(Diagnostic::new(format!("device \"{}\" is not a device the worker knows", runtime.device))
            .at(ctx.manifest.sources.value(&pointer))
            .pointer(pointer)
            .expected("\"cpu\" or \"cuda:N\" (e.g. \"cuda:0\")")
            .into());
    }
    let checkpoints = checkpoints(entry, ctx, &config.schedule())?;
    Ok(nodes(entry, &checkpoints, &runtime, settings, inputs))
}

impl<T: serde::de::DeserializeOwned> NodeConfig<T> {
    pub fn from_ctx(ctx: &ExecContext<'_>) -> Result<Self, PluginError> {
        ctx.parse()
    }

    /// The evaluated model's directory.
    pub fn model_dir(&self, ctx: &ExecContext<'_>) -> Result<PathBuf, PluginError> {
        let root = ctx.input(MODEL_INPUT)?;
        let dir = match &self.subdir {
            Some(sub) => root.join(sub),
            None => root.to_path_buf(),
        };
        if !dir.join("config.json").is_file() {
            return Err(PluginError::new(format!(
                "{}: {} has no config.json; expected a Hugging Face model directory from `{}`{}",
                ctx.node_id,
                dir.display(),
                self.model_node,
                if self.subdir.is_some() { " (is the milestone declared and reached by the stage?)" } else { "" }
            )));
        }
        Ok(dir)
    }

    /// The model as the worker sees it.
    pub fn model_ref(&self, ctx: &ExecContext<'_>) -> Result<ModelRef, PluginError> {
        Ok(ModelRef {
            dir: self.model_dir(ctx)?,
            device: self.runtime.device.clone(),
            precision: self.runtime.precision,
            threads: self.runtime.threads,
        })
    }

    /// Generates completions for `requests` in the worker (KV cache on; `generations.jsonl` is
    /// kept in the artifact). Returns one result per request and the model's `tokens_total`.
    pub fn generate(
        &self,
        ctx: &mut ExecContext<'_>,
        requests: &[GenerateRequest],
        sampling: &Sampling,
    ) -> Result<(Vec<GenerateResult>, Option<u64>), PluginError> {
        let requests_path = ctx.resume_dir_created()?.join("requests.jsonl");
        write_jsonl(&requests_path, requests)?;
        let model = self.model_ref(ctx)?;
        let tokens_total = tokens_total(&model.dir)?;
        let job = Job::Generate(GenerateJob {
            node: ctx.node_id.to_string(),
            model,
            seed: ctx.seed,
            requests: requests_path,
            sampling: sampling.clone(),
            batch_size: self.runtime.batch_size,
            kv_cache: true,
            out_dir: ctx.out_dir.to_path_buf(),
        });
        crate::worker::run(&job, ctx)?;
        let generated = read_worker_output(&ctx.out_dir.join("generations.jsonl"), requests.len())?;
        Ok((generated, tokens_total))
    }
}

/// One metric: its value and its direction.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Metric {
    pub value: f64,
    pub higher_is_better: bool,
}

/// `results.json` of an evaluation node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Results {
    pub evaluator: String,
    pub plugin: String,
    pub checkpoint: String,
    pub model_node: String,
    pub tokens_total: Option<u64>,
    pub metrics: BTreeMap<String, f64>,
    pub higher_is_better: BTreeMap<String, bool>,
    pub details: Value,
}

pub const RESULTS_FILE: &str = "results.json";

impl Results {
    pub fn new<T>(plugin: &str, node: &NodeConfig<T>, tokens_total: Option<u64>) -> Results {
        Results {
            evaluator: node.evaluator.clone(),
            plugin: plugin.to_string(),
            checkpoint: node.checkpoint.clone(),
            model_node: node.model_node.clone(),
            tokens_total,
            metrics: BTreeMap::new(),
            higher_is_better: BTreeMap::new(),
            details: Value::Object(Map::new()),
        }
    }

    pub fn insert(&mut self, name: String, metric: Metric) {
        self.higher_is_better.insert(name.clone(), metric.higher_is_better);
        self.metrics.insert(name, metric.value);
    }

    /// Writes `results.json` into `dir` and returns the metrics for the run record.
    pub fn write(&self, dir: &Path) -> Result<Map<String, Value>, PluginError> {
        let path = dir.join(RESULTS_FILE);
        let text = serde_json::to_string_pretty(self).expect("results serialize");
        std::fs::write(&path, text + "\n")
            .map_err(|e| PluginError::new(format!("cannot write {}: {e}", path.display())))?;
        Ok(self.metrics.iter().map(|(k, v)| (k.clone(), json!(v))).collect())
    }
}

/// `tokens_total` from the model directory's `trainer_state.json`; `None` when the model was not
/// trained by aurora (no such file). A present but unreadable file is an error.
pub fn tokens_total(model_dir: &Path) -> Result<Option<u64>, PluginError> {
    let path = model_dir.join("trainer_state.json");
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(PluginError::new(format!("cannot read {}: {e}", path.display()))),
    };
    let state: Value =
        serde_json::from_str(&text).map_err(|e| PluginError::new(format!("{}: not JSON: {e}", path.display())))?;
    match state.get("tokens_total") {
        Some(v) => v.as_u64().map(Some).ok_or_else(|| {
            PluginError::new(format!("{}: `tokens_total` is {v}, expected a non-negative integer", path.display()))
        }),
        None => Err(PluginError::new(format!(
            "{}: no `tokens_total`; expected the trainer_state.json written by a training stage",
            path.display()
        ))),
    }
}

/// Writes JSON lines.
pub fn write_jsonl<T: Serialize>(path: &Path, items: impl IntoIterator<Item = T>) -> Result<(), PluginError> {
    let mut text = String::new();
    for item in items {
        text.push_str(&serde_json::to_string(&item).expect("records serialize"));
        text.push('\n');
    }
    std::fs::write(path, text).map_err(|e| PluginError::new(format!("cannot write {}: {e}", path.display())))
}

/// Reads the worker's JSON-lines output, expecting exactly `expected` records.
pub fn read_worker_output<T: serde::de::DeserializeOwned>(path: &Path, expected: usize) -> Result<Vec<T>, PluginError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| PluginError::new(format!("cannot read the worker's output {}: {e}", path.display())))?;
    let records = text
        .lines()
        .enumerate()
        .map(|(i, line)| {
            serde_json::from_str(line)
                .map_err(|e| PluginError::new(format!("{}:{}: unexpected worker output: {e}", path.display(), i + 1)))
        })
        .collect::<Result<Vec<T>, _>>()?;
    if records.len() != expected {
        return Err(PluginError::new(format!(
            "{}: {} records for {expected} requests; the worker's output is incomplete",
            path.display(),
            records.len()
        )));
    }
    Ok(records)
}
