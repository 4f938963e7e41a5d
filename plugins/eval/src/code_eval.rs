//! `eval.code`: functional correctness of generated code (HumanEval, MBPP), unbiased pass@k.
//!
//! ```toml
//! [evals.humaneval]
//! plugin = "eval.code"
//! on = ["stages.base", "stages.cap", "stages.cat", "sft.safety"]
//! problems = "file:data/HumanEval.jsonl.gz"
//! format = "humaneval"                 # or "mbpp"
//! n = 1                                # samples per problem
//! k = [1]                              # pass@k for each k <= n
//! sampling = { max_new_tokens = 512 }  # greedy by default; n > 1 needs temperature > 0
//! limits = { wall_s = 10, cpu_s = 10, memory_mb = 1024 }
//! ```
//!
//! Each problem's prompt is completed `n` times by the worker (generation stops at the format's
//! stop sequences), each completion is cut at its first stop sequence, assembled into a program
//! with the problem's tests and run in the sandbox (parallel threads). Metrics `pass@K.<format>`
//! (Chen et al. 2021's unbiased estimator averaged over problems); every sample's verdict is in
//! `completions.jsonl`.
//!
//! Prompts longer than the context: the worker keeps the last `n_positions - max_new_tokens`
//! tokens of the prompt (left truncation) and reports how many it dropped; the count of
//! truncated problems is in `details.truncated_prompts` (a truncated problem usually fails).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use aurora_core::diagnostic::{Diagnostic, Diagnostics};
use aurora_core::manifest::FILE_PREFIX;
use aurora_core::plugin::{
    Entry, ExecContext, ExecOutcome, InputSource, InputSpec, NodeSpec, Offer, PlanContext, Plugin, PluginError,
};
use aurora_worker_api::{GenerateRequest, GenerateResult, Sampling};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::code::{self, Format, Problem};
use crate::passk::mean_pass_at_k;
use crate::sandbox::{self, Limits, Status};
use crate::schedule::{self, Metric, NodeConfig, Results, evaluator_config};

evaluator_config! {
    /// `[evals.NAME]` with `plugin = "eval.code"`.
    pub struct CodeConfig {
        /// `"file:PATH"` of the problems (JSON Lines, optionally `.gz`).
        pub problems: String,
        /// The problems' format: `humaneval` (prompt, test, entry_point) or `mbpp` (text, test_list).
        pub format: Format,
        /// Completions drawn per problem.
        #[serde(default = "one")]
        #[schemars(range(min = 1))]
        pub n: u64,
        /// pass@k is reported for each k (each at most `n`).
        #[serde(default = "default_k")]
        #[schemars(length(min = 1))]
        pub k: Vec<u64>,
        /// Generation settings; greedy and 512 new tokens by default. `stop` defaults to the
        /// format's stop sequences.
        #[serde(default = "default_sampling")]
        pub sampling: Sampling,
        /// Sandbox limits of each program run.
        #[serde(default)]
        pub limits: LimitsConfig,
    }
}

fn one() -> u64 {
    1
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
    /// Wall-clock seconds before the program (and everything it started) is killed.
    #[serde(default = "ten")]
    #[schemars(range(min = 1))]
    pub wall_s: u64,
    /// CPU seconds.
    #[serde(default = "ten")]
    #[schemars(range(min = 1))]
    pub cpu_s: u64,
    /// Address space per process, MiB.
    #[serde(default = "default_memory_mb")]
    #[schemars(range(min = 16))]
    pub memory_mb: u64,
    /// Processes the program may have at once.
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
fn default_memory_mb() -> u64 {
    1024
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
            memory_mb: default_memory_mb(),
            processes: default_processes(),
            file_size_mb: default_file_size_mb(),
        }
    }
}

impl LimitsConfig {
    pub fn limits(&self) -> Limits {
        Limits {
            wall: Duration::from_secs(self.wall_s),
            cpu_s: self.cpu_s,
            memory_bytes: self.memory_mb << 20,
            processes: self.processes,
            file_size_bytes: self.file_size_mb << 20,
            ..Limits::default()
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Settings {
    format: Format,
    n: u64,
    k: Vec<u64>,
    sampling: Sampling,
    limits: LimitsConfig,
}

const PROBLEMS_INPUT: &str = "problems";

#[derive(Debug, Clone, Default)]
pub struct EvalCode;

aurora_core::register_plugin!(EvalCode);

impl Plugin for EvalCode {
    fn id(&self) -> &'static str {
        "eval.code"
    }
    fn version(&self) -> &'static str {
        "2"
    }
    fn description(&self) -> &'static str {
        "HumanEval/MBPP completions run in a sandbox: unbiased pass@k"
    }
    fn config_schema(&self) -> schemars::Schema {
        schemars::schema_for!(CodeConfig)
    }
    fn offers(&self, entry: &Entry<'_>, ctx: &PlanContext<'_>) -> Vec<Offer> {
        schedule::offers::<CodeConfig>(entry, ctx)
    }

    fn plan(&self, entry: &Entry<'_>, ctx: &PlanContext<'_>) -> Result<Vec<NodeSpec>, Diagnostics> {
        let config: CodeConfig = entry.parse(ctx.manifest)?;
        let at = |field: &str| {
            let pointer = format!("{}/{field}", entry.pointer());
            (ctx.manifest.sources.value(&pointer), pointer)
        };
        let mut problems = Vec::new();
        if !config.problems.starts_with(FILE_PREFIX) {
            let (origin, pointer) = at("problems");
            problems.push(
                Diagnostic::new(format!("`problems` = \"{}\" is not a file reference", config.problems))
                    .at(origin)
                    .pointer(pointer)
                    .expected("\"file:PATH\" of HumanEval/MBPP JSON Lines (relative to the manifest)"),
            );
        }
        for (i, &k) in config.k.iter().enumerate() {
            if k == 0 || k > config.n {
                let (origin, pointer) = at(&format!("k/{i}"));
                problems.push(
                    Diagnostic::new(format!("pass@{k} with n = {} samples per problem", config.n))
                        .at(origin)
                        .pointer(pointer)
                        .expected(format!("1 <= k <= n (= {})", config.n))
                        .help("raise `n` or drop this k"),
                );
            }
        }
        if config.n > 1 && config.sampling.temperature == 0.0 {
            let (origin, pointer) = at("n");
            problems.push(
                Diagnostic::new(format!(
                    "n = {} samples with greedy decoding are {} identical completions",
                    config.n, config.n
                ))
                .at(origin)
                .pointer(pointer)
                .help("set `sampling = { temperature = 0.8, top_p = 0.95, ... }` or `n = 1`"),
            );
        }
        if !problems.is_empty() {
            return Err(Diagnostics(problems));
        }
        let inputs = BTreeMap::from([(
            PROBLEMS_INPUT.to_string(),
            InputSpec { source: InputSource::Path(config.problems.clone()), pointer: at("problems").1 },
        )]);
        let mut sampling = config.sampling.clone();
        if sampling.stop.is_empty() {
            sampling.stop = code::stop_sequences(config.format).iter().map(|s| s.to_string()).collect();
        }
        let settings = Settings {
            format: config.format,
            n: config.n,
            k: config.k.clone(),
            sampling,
            limits: config.limits.clone(),
        };
        schedule::plan(entry, ctx, &config, &settings, &inputs)
    }

    fn execute(&self, ctx: &mut ExecContext<'_>) -> Result<ExecOutcome, PluginError> {
        let node: NodeConfig<Settings> = NodeConfig::from_ctx(ctx)?;
        let s = &node.settings;
        let limits = s.limits.limits();
        // Fail before the (expensive) generation when the sandbox cannot run at all.
        sandbox::run_python("pass", &limits).map_err(|e| PluginError::new(format!("{}: {e}", ctx.node_id)))?;
        let path = ctx.input(PROBLEMS_INPUT)?;
        let problems = code::load_problems(path, s.format).map_err(|e| PluginError::new(e.to_string()))?;
        let requests: Vec<GenerateRequest> =
            problems.iter().map(|p| GenerateRequest { prompt: code::prompt(p), n: s.n }).collect();
        let (generated, tokens_total) = node.generate(ctx, &requests, &s.sampling)?;
        let stops: Vec<&str> = s.sampling.stop.iter().map(String::as_str).collect();
        let samples = samples(&problems, &generated, s.n, &stops)?;
        let verdicts = run_samples(&problems, samples, &limits, ctx)?;
        schedule::write_jsonl(&ctx.out_dir.join("completions.jsonl"), &verdicts)?;
        let summary = summarize(&verdicts, s.n, &s.k).map_err(|e| PluginError::new(format!("{}: {e}", ctx.node_id)))?;
        let format = format_name(s.format);
        let mut results = Results::new(self.id(), &node, tokens_total);
        for (k, value) in &summary.pass_at_k {
            results.insert(format!("pass@{k}.{format}"), Metric { value: *value, higher_is_better: true });
        }
        let truncated = generated.iter().filter(|g| g.truncated > 0).count();
        results.details = json!({
            "problems": problems.len(),
            "samples_per_problem": s.n,
            "statuses": summary.statuses,
            "truncated_prompts": truncated,
            "solved_problems": summary.solved,
            "completions": "completions.jsonl",
        });
        Ok(ExecOutcome { metrics: results.write(ctx.out_dir)? })
    }
    fn resources(&self, config: &serde_json::Value) -> aurora_core::plugin::Resources {
        crate::schedule::resources(config)
    }
}

/// One completion to run: (problem index, sample index, completion cut at its stop sequence).
pub type Sample = (usize, usize, String);

/// The name of a format in metric names (`pass@1.humaneval`).
pub fn format_name(format: Format) -> &'static str {
    match format {
        Format::Humaneval => "humaneval",
        Format::Mbpp => "mbpp",
    }
}

/// The completions of every problem, `n` each, cut at the first stop sequence (the worker stops
/// there too; cutting again keeps the programs right whatever a worker returns).
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
    /// The last lines of stderr of a failed run, or the signal of a killed one.
    pub detail: String,
}

/// Runs every sample in the sandbox on as many threads as there are CPUs; verdicts in sample order.
pub fn run_samples(
    problems: &[Problem],
    samples: Vec<Sample>,
    limits: &Limits,
    ctx: &ExecContext<'_>,
) -> Result<Vec<SampleVerdict>, PluginError> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(samples.len().max(1));
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
                    let verdict = sandbox::run_python(&program, limits)
                        .map(|outcome| verdict(problem, *sample, completion, &outcome.status))
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

fn verdict(problem: &Problem, sample: usize, completion: &str, status: &Status) -> SampleVerdict {
    let (name, detail) = match status {
        Status::Passed => ("passed", String::new()),
        Status::Failed { exit_code, stderr_tail } => ("failed", format!("exit {exit_code}: {stderr_tail}")),
        Status::TimedOut => ("timed_out", String::new()),
        Status::Killed { signal } => ("killed", format!("signal {signal}")),
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
