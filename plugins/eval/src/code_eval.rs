//! `eval.code`: functional correctness of generated code (HumanEval, MBPP, MultiPL-E), unbiased
//! pass@k.
//!
//! ```toml
//! [evals.humaneval]
//! plugin = "eval.code"
//! on = ["stages.base", "stages.cap", "stages.cat", "sft.safety"]
//! problems = "file:data/HumanEval.jsonl.gz"
//! format = "humaneval"                 # or "mbpp", or "multipl-e"
//! n = 1                                # samples per problem
//! k = [1]                              # pass@k for each k <= n
//! sampling = { max_new_tokens = 512 }  # greedy by default; n > 1 needs temperature > 0
//! limits = { wall_s = 10, cpu_s = 10 } # memory_mb: the language's default
//!
//! [evals.multiple_cpp]                 # completions saved elsewhere, scored once
//! plugin = "eval.code"
//! problems = "file:data/humaneval-cpp.jsonl"
//! format = "multipl-e"
//! generations = "file:generations_multiple-cpp.json"
//! ```
//!
//! Each problem's prompt is completed `n` times by the worker (generation stops at the format's
//! stop sequences, MultiPL-E's at the problems' `stop_tokens`), each completion is cut at its
//! first stop sequence, assembled into a program with the problem's tests and run in the sandbox
//! in the problems' language (parallel threads). Metrics `pass@K.<task>` (`humaneval`, `mbpp`,
//! `multiple-<lang>`: Chen et al. 2021's unbiased estimator averaged over problems); every
//! sample's verdict is in `completions.jsonl`, and the completions in bigcode-evaluation-harness's
//! shape in `generations.jsonl` (one JSON array of prompt + completion per problem).
//!
//! With `generations = "file:PATH"` no model runs: the node `evals/NAME` (no `on`) scores the
//! completions of that file, a bigcode `--save_generations` JSON file or a `generations.jsonl`.
//! MBPP problems are those of the test split (task ids 11-510) unless `split = "all"` or
//! `task_ids = [LO, HI]` says otherwise.
//!
//! Prompts longer than the context: the worker keeps the last `n_positions - max_new_tokens`
//! tokens of the prompt (left truncation) and reports how many it dropped; the count of
//! truncated problems is in `details.truncated_prompts` (a truncated problem usually fails).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use aurora_core::diagnostic::{Diagnostic, Diagnostics};
use aurora_core::plugin::{Entry, ExecContext, ExecOutcome, NodeSpec, Offer, Output, PlanContext, Plugin, PluginError};
use aurora_worker_api::{GenerateRequest, GenerateResult, Sampling};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::code::{self, Format, Problem};
use crate::passk::mean_pass_at_k;
use crate::sandbox::{self, Limits, Status};
use crate::schedule::{self, Metric, NodeConfig, Results, evaluator_config};
use crate::toolchain::{self, Language};

evaluator_config! {
    on_optional("Checkpoints to evaluate: `SECTION.NAME` of entries that produce models, e.g. `[\"stages.base\", \"stages.cap\"]`. Required unless `generations` is given, which is scored once, without a model.")
    /// `[evals.NAME]` with `plugin = "eval.code"`.
    pub struct CodeConfig {
        /// `"file:PATH"` of the problems (JSON Lines, optionally `.gz`).
        pub problems: String,
        /// The problems' format: `humaneval` (prompt, test, entry_point), `mbpp` (text,
        /// test_list) or `multipl-e` (name, language, prompt, tests, stop_tokens).
        pub format: Format,
        /// `"file:PATH"` of completions to score instead of generating them: bigcode-evaluation-harness's
        /// `--save_generations` JSON (one array of strings per problem) or an `eval.code`
        /// `generations.jsonl`. Then no model runs and `on` is left out.
        #[serde(default)]
        pub generations: Option<String>,
        /// MBPP only: `"test"` (default: task ids 11-510, as bigcode-evaluation-harness scores
        /// MBPP) or `"all"` problems of the file.
        #[serde(default)]
        pub split: Option<Split>,
        /// MBPP only: score the task ids `LO` to `HI` (inclusive) instead of a `split`.
        #[serde(default)]
        pub task_ids: Option<[u64; 2]>,
        /// Completions per problem: drawn from the model (default 1); with `generations`, the
        /// first `n` of each problem's (default: all, as many for every problem).
        #[serde(default)]
        #[schemars(range(min = 1))]
        pub n: Option<u64>,
        /// pass@k is reported for each k (each at most `n`).
        #[serde(default = "default_k")]
        #[schemars(length(min = 1))]
        pub k: Vec<u64>,
        /// Generation settings; greedy and 512 new tokens by default. `stop` defaults to the
        /// format's stop sequences (MultiPL-E: the problems' `stop_tokens`).
        #[serde(default = "default_sampling")]
        pub sampling: Sampling,
        /// Sandbox limits of each program run (of each step: compiling, running).
        #[serde(default)]
        pub limits: LimitsConfig,
    }
}

/// Which MBPP problems are scored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    /// Task ids 11-510.
    Test,
    /// Every problem of the file.
    All,
}

fn default_k() -> Vec<u64> {
    vec![1]
}
fn default_sampling() -> Sampling {
    Sampling { temperature: 0.0, top_p: 1.0, max_new_tokens: 512, stop: Vec::new() }
}

/// Sandbox limits of one program run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Wall-clock seconds before the program (and everything it started) is killed; compiling
    /// and running are timed separately.
    #[serde(default = "ten")]
    #[schemars(range(min = 1))]
    pub wall_s: u64,
    /// CPU seconds.
    #[serde(default = "ten")]
    #[schemars(range(min = 1))]
    pub cpu_s: u64,
    /// Address space per process, MiB. Default: the language's, 1024 (Java, TypeScript and
    /// JavaScript: 2048, their runtimes reserve more than they use).
    #[serde(default)]
    #[schemars(range(min = 16))]
    pub memory_mb: Option<u64>,
    /// Processes (and threads) the program may have at once.
    #[serde(default = "default_processes")]
    #[schemars(range(min = 1))]
    pub processes: u64,
    /// Largest file the program may write, MiB.
    #[serde(default = "default_file_size_mb")]
    pub file_size_mb: u64,
}

fn ten() -> u64 {
    10
}
fn default_processes() -> u64 {
    64
}
fn default_file_size_mb() -> u64 {
    16
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            wall_s: ten(),
            cpu_s: ten(),
            memory_mb: None,
            processes: default_processes(),
            file_size_mb: default_file_size_mb(),
        }
    }
}

impl LimitsConfig {
    /// The limits of a `language` program.
    pub fn limits(&self, language: Language) -> Limits {
        Limits {
            wall: Duration::from_secs(self.wall_s),
            cpu_s: self.cpu_s,
            memory_bytes: toolchain::memory_mb(language, self.memory_mb) << 20,
            processes: self.processes,
            file_size_bytes: self.file_size_mb << 20,
            ..Limits::default()
        }
    }
}

/// What every `eval.code` node's config holds of the entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    format: Format,
    /// MBPP: the task ids scored (inclusive); `None`: every problem.
    task_ids: Option<(u64, u64)>,
    /// `None` only when scoring a generations file: every generation of each problem.
    n: Option<u64>,
    k: Vec<u64>,
    /// `None` when scoring a generations file.
    sampling: Option<Sampling>,
    limits: LimitsConfig,
}

/// The config of the node that scores a generations file (`evals/NAME`, no model).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct GenerationsNode {
    evaluator: String,
    settings: Settings,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum CodeNode {
    Model(NodeConfig<Settings>),
    Generations(GenerationsNode),
}

const PROBLEMS_INPUT: &str = "problems";
const GENERATIONS_INPUT: &str = "generations";
/// `checkpoint` of a generations file's results (no model was evaluated).
pub const GENERATIONS_CHECKPOINT: &str = "generations";
/// The worker's own output, kept beside the generations in bigcode's shape.
pub const RAW_GENERATIONS_FILE: &str = "raw_generations.jsonl";

/// Entry keys that mean nothing when a generations file is scored.
const MODEL_ONLY_KEYS: &[&str] = &["on", "milestones", "device", "precision", "threads", "batch_size", "sampling"];

#[derive(Debug, Clone, Default)]
pub struct EvalCode;

aurora_core::register_plugin!(EvalCode);

impl Plugin for EvalCode {
    fn id(&self) -> &'static str {
        "eval.code"
    }
    fn version(&self) -> &'static str {
        // 3: generations.jsonl in bigcode's shape (the worker's output is raw_generations.jsonl),
        // MultiPL-E, MBPP scores the test split (task ids 11-510) by default. 4: the model's
        // fused GELU kernel on CPU: other last bits of the logits, so other samples.
        "4"
    }
    fn description(&self) -> &'static str {
        "HumanEval/MBPP/MultiPL-E completions run in a sandbox: unbiased pass@k"
    }
    fn config_schema(&self) -> schemars::Schema {
        schemars::schema_for!(CodeConfig)
    }
    fn offers(&self, entry: &Entry<'_>, ctx: &PlanContext<'_>) -> Vec<Offer> {
        match serde_json::from_value::<CodeConfig>(entry.config.clone()) {
            Ok(config) if config.generations.is_some() => vec![Offer::new(Output::EVALUATION, entry.node_id())],
            _ => schedule::offers::<CodeConfig>(entry, ctx),
        }
    }

    fn plan(&self, entry: &Entry<'_>, ctx: &PlanContext<'_>) -> Result<Vec<NodeSpec>, Diagnostics> {
        let config: CodeConfig = entry.parse(ctx.manifest)?;
        let at = |field: &str| {
            let pointer = format!("{}/{field}", entry.pointer());
            (ctx.manifest.sources.value(&pointer), pointer)
        };
        let mut problems = Vec::new();
        let mut inputs = BTreeMap::new();
        match ctx.file_input(&config.problems, at("problems").1, "problems", "HumanEval/MBPP/MultiPL-E JSON Lines") {
            Ok(spec) => drop(inputs.insert(PROBLEMS_INPUT.to_string(), spec)),
            Err(d) => problems.push(d),
        }
        let from_file = config.generations.is_some();
        if let Some(reference) = &config.generations {
            let what =
                "generations (bigcode-evaluation-harness's --save_generations JSON, or eval.code's generations.jsonl)";
            match ctx.file_input(reference, at("generations").1, "generations", what) {
                Ok(spec) => drop(inputs.insert(GENERATIONS_INPUT.to_string(), spec)),
                Err(d) => problems.push(d),
            }
            for key in MODEL_ONLY_KEYS.iter().filter(|k| entry.config.get(**k).is_some()) {
                let (origin, pointer) = at(key);
                problems.push(
                    Diagnostic::new(format!("`{key}` has no effect: the entry scores `generations`, no model runs"))
                        .at(origin)
                        .pointer(pointer)
                        .help(format!("remove `{key}`, or `generations` to generate completions with a model")),
                );
            }
        } else if config.on.is_empty() {
            let pointer = entry.pointer();
            problems.push(
                Diagnostic::new(format!("`{}` names no checkpoint to evaluate", entry.reference()))
                    .at(ctx.manifest.sources.value(&pointer))
                    .pointer(pointer)
                    .expected(
                        "`on = [\"stages.NAME\", ...]`, or `generations = \"file:PATH\"` to score saved completions",
                    ),
            );
        }
        let n = if from_file { config.n } else { Some(config.n.unwrap_or(1)) };
        for (i, &k) in config.k.iter().enumerate() {
            if k == 0 || n.is_some_and(|n| k > n) {
                let (origin, pointer) = at(&format!("k/{i}"));
                let n_shown = n.map_or("the generations per problem".to_string(), |n| n.to_string());
                problems.push(
                    Diagnostic::new(format!("pass@{k} with n = {n_shown} samples per problem"))
                        .at(origin)
                        .pointer(pointer)
                        .expected(format!("1 <= k <= n (= {n_shown})"))
                        .help("raise `n` or drop this k"),
                );
            }
        }
        if let Some(n) = n.filter(|&n| !from_file && n > 1 && config.sampling.temperature == 0.0) {
            let (origin, pointer) = at("n");
            problems.push(
                Diagnostic::new(format!("n = {n} samples with greedy decoding are {n} identical completions"))
                    .at(origin)
                    .pointer(pointer)
                    .help("set `sampling = { temperature = 0.8, top_p = 0.95, ... }` or `n = 1`"),
            );
        }
        let task_ids = match task_ids(&config, &at) {
            Ok(ids) => ids,
            Err(d) => {
                problems.push(d);
                None
            }
        };
        if config.format == Format::MultiplE
            && let Err(d) = check_toolchain(ctx, &config, &at)
        {
            problems.push(d);
        }
        if !problems.is_empty() {
            return Err(Diagnostics(problems));
        }
        let mut sampling = config.sampling.clone();
        if sampling.stop.is_empty() {
            // MultiPL-E's stops are the problems' own, read at execution.
            sampling.stop = code::stop_sequences(config.format).iter().map(|s| s.to_string()).collect();
        }
        let settings = Settings {
            format: config.format,
            task_ids,
            n,
            k: config.k.clone(),
            sampling: (!from_file).then_some(sampling),
            limits: config.limits.clone(),
        };
        if from_file {
            let node = GenerationsNode { evaluator: entry.node_id(), settings };
            return Ok(vec![NodeSpec::for_entry(
                entry,
                serde_json::to_value(node).expect("node configs serialize"),
                inputs,
            )]);
        }
        schedule::plan(entry, ctx, &config, &settings, &inputs)
    }

    fn execute(&self, ctx: &mut ExecContext<'_>) -> Result<ExecOutcome, PluginError> {
        let node: CodeNode = ctx.parse()?;
        let (settings, mut results, samples, problems, truncated) = match node {
            CodeNode::Model(node) => {
                let (problems, samples, generated, tokens_total) = generate(ctx, &node)?;
                let truncated = generated.iter().filter(|g| g.truncated > 0).count();
                let results = Results::new(self.id(), &node, tokens_total);
                (node.settings, results, samples, problems, Some(truncated))
            }
            CodeNode::Generations(node) => {
                let problems = load_problems(ctx, &node.settings)?;
                let samples = samples_from_file(ctx, &problems, node.settings.n)?;
                let results = Results {
                    evaluator: node.evaluator.clone(),
                    plugin: self.id().to_string(),
                    checkpoint: GENERATIONS_CHECKPOINT.to_string(),
                    model_node: String::new(),
                    tokens_total: None,
                    metrics: BTreeMap::new(),
                    higher_is_better: BTreeMap::new(),
                    details: Value::Null,
                };
                (node.settings, results, samples, problems, None)
            }
        };
        let n = samples.len() / problems.len();
        let language = code::language(&problems[0]);
        let limits = settings.limits.limits(language);
        write_generations(&ctx.out_dir.join("generations.jsonl"), &problems, &samples, n)?;
        let verdicts = run_samples(&problems, samples, &limits, ctx)?;
        schedule::write_jsonl(&ctx.out_dir.join("completions.jsonl"), &verdicts)?;
        let summary = summarize(&verdicts, n as u64, &settings.k)
            .map_err(|e| PluginError::new(format!("{}: {e}", ctx.node_id)))?;
        let task = task_name(settings.format, language);
        for (k, value) in &summary.pass_at_k {
            results.insert(format!("pass@{k}.{task}"), Metric { value: *value, higher_is_better: true });
        }
        let mut details = json!({
            "problems": problems.len(),
            "samples_per_problem": n,
            "statuses": summary.statuses,
            "solved_problems": summary.solved,
            "completions": "completions.jsonl",
            "generations": "generations.jsonl",
        });
        if let Some(truncated) = truncated {
            details["truncated_prompts"] = json!(truncated);
        }
        if settings.format == Format::MultiplE {
            details["language"] = json!(language.multiple_name());
        }
        if let Some((lo, hi)) = settings.task_ids {
            details["task_ids"] = json!([lo, hi]);
        }
        results.details = details;
        Ok(ExecOutcome { metrics: results.write(ctx.out_dir)? })
    }
    fn resources(&self, config: &serde_json::Value) -> aurora_core::plugin::Resources {
        if config.get("runtime").is_none() {
            // Scoring a generations file: no worker, the sandbox's threads on every core.
            return aurora_core::plugin::Resources::every_core();
        }
        crate::schedule::resources(config)
    }
}

/// The MBPP task ids the entry scores (`None`: all), or why `split`/`task_ids` are wrong.
fn task_ids(
    config: &CodeConfig,
    at: &dyn Fn(&str) -> (Option<aurora_core::diagnostic::Origin>, String),
) -> Result<Option<(u64, u64)>, Diagnostic> {
    let given = if config.task_ids.is_some() { Some("task_ids") } else { config.split.map(|_| "split") };
    if config.format != Format::Mbpp {
        return match given {
            Some(field) => {
                let (origin, pointer) = at(field);
                Err(Diagnostic::new(format!("`{field}` selects MBPP task ids, but the format is not MBPP"))
                    .at(origin)
                    .pointer(pointer)
                    .help(format!("remove `{field}`, or set `format = \"mbpp\"`")))
            }
            None => Ok(None),
        };
    }
    match (config.split, config.task_ids) {
        (Some(_), Some(_)) => {
            let (origin, pointer) = at("task_ids");
            Err(Diagnostic::new("both `split` and `task_ids` select the MBPP problems")
                .at(origin)
                .pointer(pointer)
                .help("keep one: `split = \"test\"` (task ids 11-510), `split = \"all\"`, or `task_ids = [LO, HI]`"))
        }
        (_, Some([lo, hi])) if lo > hi => {
            let (origin, pointer) = at("task_ids");
            Err(Diagnostic::new(format!("`task_ids = [{lo}, {hi}]` is an empty range"))
                .at(origin)
                .pointer(pointer)
                .expected("[LO, HI] with LO <= HI (both inclusive)"))
        }
        (_, Some([lo, hi])) => Ok(Some((lo, hi))),
        (Some(Split::All), None) => Ok(None),
        (Some(Split::Test) | None, None) => Ok(Some(code::MBPP_TEST_IDS)),
    }
}

/// MultiPL-E: the problems file, when planning can read it, must be in one language this machine
/// has the toolchain of (a missing one is reported at `problems`, naming the package). The rest
/// of the file is checked when the node runs.
fn check_toolchain(
    ctx: &PlanContext<'_>,
    config: &CodeConfig,
    at: &dyn Fn(&str) -> (Option<aurora_core::diagnostic::Origin>, String),
) -> Result<(), Diagnostic> {
    if !config.problems.starts_with(aurora_core::manifest::FILE_PREFIX) {
        return Ok(());
    }
    let path = ctx.manifest.input_path(&config.problems);
    if !path.is_file() {
        // Reported as a missing input, and checked again when the node runs.
        return Ok(());
    }
    let (origin, pointer) = at("problems");
    let located = |d: Diagnostic| d.at(origin.clone()).pointer(pointer.clone());
    let problems = match code::load_problems(&path, Format::MultiplE) {
        Ok(problems) => problems,
        Err(e @ (code::CodeError::UnknownLanguage { .. } | code::CodeError::MixedLanguages { .. })) => {
            return Err(located(Diagnostic::new(e.to_string())));
        }
        // The rest of the file is checked when the node runs (it may change before then).
        Err(_) => return Ok(()),
    };
    let language = code::language(&problems[0]);
    toolchain::check(language).map_err(|e| {
        located(
            Diagnostic::new(format!(
                "the {language} problems of {} need {}, which {}",
                config.problems, e.what, e.where_
            ))
            .help(format!("{}, then plan again", e.install)),
        )
    })
}

/// The metric suffix: `humaneval`, `mbpp`, or bigcode's `multiple-<lang>`.
pub fn task_name(format: Format, language: Language) -> String {
    match format {
        Format::Humaneval => "humaneval".into(),
        Format::Mbpp => "mbpp".into(),
        Format::MultiplE => format!("multiple-{}", language.multiple_name()),
    }
}

/// The node's problems: the file's, in order, narrowed to the MBPP task ids.
fn load_problems(ctx: &ExecContext<'_>, s: &Settings) -> Result<Vec<Problem>, PluginError> {
    let path = ctx.input(PROBLEMS_INPUT)?;
    let problems = code::load_problems(path, s.format).map_err(|e| PluginError::new(e.to_string()))?;
    code::select(path, problems, s.task_ids).map_err(|e| PluginError::new(e.to_string()))
}

/// Generates the completions of a model node: the problems, the samples (cut at their stop
/// sequences), the worker's results and the model's `tokens_total`.
#[allow(clippy::type_complexity)]
fn generate(
    ctx: &mut ExecContext<'_>,
    node: &NodeConfig<Settings>,
) -> Result<(Vec<Problem>, Vec<Sample>, Vec<GenerateResult>, Option<u64>), PluginError> {
    let s = &node.settings;
    let problems = load_problems(ctx, s)?;
    let language = code::language(&problems[0]);
    let limits = s.limits.limits(language);
    // Fail before the (expensive) generation when the sandbox or the toolchain cannot run.
    let node_id = ctx.node_id.to_string();
    let fail = |e: String| PluginError::new(format!("{node_id}: {e}"));
    toolchain::check(language).map_err(|e| fail(e.to_string()))?;
    let smoke = if language == Language::Python { "pass" } else { "exit 0" };
    let smoke_language = if language == Language::Python { Language::Python } else { Language::Bash };
    sandbox::run(smoke_language, smoke, &limits).map_err(|e| fail(e.to_string()))?;
    let n = s.n.unwrap_or(1);
    let mut sampling = s.sampling.clone().ok_or_else(|| fail("a model node without sampling (planner bug)".into()))?;
    if sampling.stop.is_empty() {
        // MultiPL-E: every problem's stop tokens (one language per file: usually one list).
        for p in &problems {
            for stop in code::problem_stops(p) {
                if !sampling.stop.iter().any(|s| s == stop) {
                    sampling.stop.push(stop.to_string());
                }
            }
        }
    }
    let requests: Vec<GenerateRequest> =
        problems.iter().map(|p| GenerateRequest { prompt: code::prompt(p), n }).collect();
    let (generated, tokens_total) = node.generate(ctx, &requests, &sampling)?;
    // The worker's file (raw completions, tokens, truncation) keeps its content under another
    // name: generations.jsonl is bigcode's shape.
    let worker_file = ctx.out_dir.join("generations.jsonl");
    let raw = ctx.out_dir.join(RAW_GENERATIONS_FILE);
    std::fs::rename(&worker_file, &raw)
        .map_err(|e| fail(format!("cannot rename {} to {}: {e}", worker_file.display(), raw.display())))?;
    let configured: Vec<&str> = s.sampling.iter().flat_map(|s| s.stop.iter().map(String::as_str)).collect();
    let samples = samples(&problems, &generated, n, &configured)?;
    Ok((problems, samples, generated, tokens_total))
}

/// The samples of a generations file: each problem's first `n` generations (all when `n` is
/// `None`, as many for every problem), as completions of the problems' prompts.
fn samples_from_file(ctx: &ExecContext<'_>, problems: &[Problem], n: Option<u64>) -> Result<Vec<Sample>, PluginError> {
    let path = ctx.input(GENERATIONS_INPUT)?;
    let fail = |e: String| PluginError::new(format!("{}: {}: {e}", ctx.node_id, path.display()));
    let generations = code::load_generations(path).map_err(|e| PluginError::new(e.to_string()))?;
    if generations.len() != problems.len() {
        return Err(fail(format!(
            "generations for {} problems, but {} problems are scored (in file order, after the MBPP split); \
             the generations must be for exactly these problems",
            generations.len(),
            problems.len()
        )));
    }
    let n = match n {
        Some(n) => n as usize,
        None => {
            let first = generations[0].len();
            if let Some((p, list)) = generations.iter().enumerate().find(|(_, l)| l.len() != first) {
                return Err(fail(format!(
                    "problem {} ({}) has {} generations but problem 1 has {first}; set `n` to score the first n of each",
                    p + 1,
                    problems[p].task_id,
                    list.len()
                )));
            }
            first
        }
    };
    let mut out = Vec::new();
    for (p, (problem, list)) in problems.iter().zip(&generations).enumerate() {
        if list.len() < n.max(1) {
            return Err(fail(format!(
                "problem {} ({}) has {} generations, fewer than n = {}",
                p + 1,
                problem.task_id,
                list.len(),
                n.max(1)
            )));
        }
        out.extend(list[..n].iter().enumerate().map(|(i, g)| (p, i, code::completion_of(problem, g))));
    }
    Ok(out)
}

/// Writes `generations.jsonl`: per problem, in order, one JSON array of its samples as
/// bigcode-evaluation-harness saves them (prompt + completion).
fn write_generations(path: &Path, problems: &[Problem], samples: &[Sample], n: usize) -> Result<(), PluginError> {
    let lines = samples.chunks(n).map(|chunk| {
        chunk.iter().map(|(p, _, completion)| code::generation(&problems[*p], completion)).collect::<Vec<_>>()
    });
    schedule::write_jsonl(path, lines)
}

/// One completion to run: (problem index, sample index, completion cut at its stop sequence).
pub type Sample = (usize, usize, String);

/// The name of a format in metric names (`pass@1.humaneval`); MultiPL-E's is [`task_name`].
pub fn format_name(format: Format) -> &'static str {
    match format {
        Format::Humaneval => "humaneval",
        Format::Mbpp => "mbpp",
        Format::MultiplE => "multipl-e",
    }
}

/// The completions of every problem, `n` each, cut at the first stop sequence: `stops` if given,
/// else the problem's own (the worker stops there too; cutting again keeps the programs right
/// whatever a worker returns).
pub fn samples(
    problems: &[Problem],
    generated: &[GenerateResult],
    n: u64,
    stops: &[&str],
) -> Result<Vec<Sample>, PluginError> {
    let mut out = Vec::new();
    for (p, result) in generated.iter().enumerate() {
        if result.completions.len() as u64 != n {
            return Err(PluginError::new(format!(
                "the worker returned {} completions for problem {} ({}), expected n = {n}",
                result.completions.len(),
                p + 1,
                problems[p].task_id
            )));
        }
        let own = code::problem_stops(&problems[p]);
        let stops = if stops.is_empty() { own.as_slice() } else { stops };
        for (i, completion) in result.completions.iter().enumerate() {
            out.push((p, i, code::truncate_at(completion, stops).to_string()));
        }
    }
    Ok(out)
}

/// One line of `completions.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SampleVerdict {
    pub task_id: String,
    pub sample: usize,
    pub completion: String,
    pub passed: bool,
    /// `passed`, `failed`, `timed_out` or `killed`.
    pub status: String,
    /// The last lines of stderr of a failed run (of the compiler, if compiling failed), or the
    /// signal of a killed one and its last stderr (C++'s failed `assert`: `signal 11: ...`, since
    /// the program, PID 1 of its namespace, cannot die of the `SIGABRT` it sends itself).
    pub detail: String,
}

/// Runs every sample in the sandbox, on a thread per core granted to the node; verdicts in
/// sample order.
pub fn run_samples(
    problems: &[Problem],
    samples: Vec<Sample>,
    limits: &Limits,
    ctx: &ExecContext<'_>,
) -> Result<Vec<SampleVerdict>, PluginError> {
    let threads = ctx.cores.clamp(1, samples.len().max(1));
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let slots: Vec<Mutex<Option<Result<SampleVerdict, String>>>> = samples.iter().map(|_| Mutex::new(None)).collect();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some((p, sample, completion)) = samples.get(i) else { break };
                    let problem = &problems[*p];
                    let program = code::program(problem, completion);
                    let verdict = sandbox::run(code::language(problem), &program, limits)
                        .map(|outcome| verdict(problem, *sample, completion, &outcome))
                        .map_err(|e| e.to_string());
                    *slots[i].lock().expect("no thread panics holding a slot") = Some(verdict);
                    let finished = done.fetch_add(1, Ordering::Relaxed) + 1;
                    ctx.progress.update(ctx.node_id, finished as u64, samples.len() as u64, "programs run");
                }
            });
        }
    });
    slots
        .into_iter()
        .map(|slot| {
            slot.into_inner()
                .expect("no thread panics holding a slot")
                .expect("every sample was run")
                .map_err(|e| PluginError::new(format!("{}: the sandbox failed: {e}", ctx.node_id)))
        })
        .collect()
}

fn verdict(problem: &Problem, sample: usize, completion: &str, outcome: &sandbox::Outcome) -> SampleVerdict {
    let status = &outcome.status;
    let (name, detail) = match status {
        Status::Passed => ("passed", String::new()),
        Status::Failed { exit_code, stderr_tail } => ("failed", format!("exit {exit_code}: {stderr_tail}")),
        Status::TimedOut => ("timed_out", String::new()),
        Status::Killed { signal } if outcome.stderr_tail.is_empty() => ("killed", format!("signal {signal}")),
        Status::Killed { signal } => ("killed", format!("signal {signal}: {}", outcome.stderr_tail)),
    };
    SampleVerdict {
        task_id: problem.task_id.clone(),
        sample,
        completion: completion.to_string(),
        passed: matches!(status, Status::Passed),
        status: name.to_string(),
        detail,
    }
}

/// pass@k per k, counts per status, problems solved at least once.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CodeSummary {
    pub pass_at_k: BTreeMap<u64, f64>,
    pub statuses: BTreeMap<String, u64>,
    pub solved: u64,
}

/// Averages the unbiased pass@k over problems (`verdicts` holds `n` samples of each problem,
/// problem by problem, as [`samples`] produces them).
pub fn summarize(verdicts: &[SampleVerdict], n: u64, ks: &[u64]) -> Result<CodeSummary, crate::passk::PassKError> {
    let mut statuses: BTreeMap<String, u64> = BTreeMap::new();
    for v in verdicts {
        *statuses.entry(v.status.clone()).or_default() += 1;
    }
    let counts: Vec<(u64, u64)> =
        verdicts.chunks(n as usize).map(|chunk| (n, chunk.iter().filter(|v| v.passed).count() as u64)).collect();
    let pass_at_k = ks.iter().map(|&k| Ok((k, mean_pass_at_k(&counts, k)?))).collect::<Result<_, _>>()?;
    Ok(CodeSummary { pass_at_k, statuses, solved: counts.iter().filter(|(_, c)| *c > 0).count() as u64 })
}
