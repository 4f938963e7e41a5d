//! `eval.choice`: multiple-choice tasks scored by log-likelihood (lm-evaluation-harness semantics).
//!
//! ```toml
//! [evals.choice]
//! plugin = "eval.choice"
//! on = ["stages.base", "stages.cap", "stages.cat"]
//! tasks = { "hin_Deva.arc" = "file:data/sample/choice/hin_Deva.jsonl", "vie_Latn.arc" = "file:data/sample/choice/vie_Latn.jsonl" }
//! shots = 0            # default
//! ```
//!
//! A task file is JSON Lines, one item per line: `{"query": "...", "choices": ["...", ...],
//! "gold": INDEX}`. The query is used as written (put any "Question: ... Answer:" framing in the
//! file). A language plugin adds a task by shipping a file and naming it in `tasks`.
//!
//! Conventions (those of lm-evaluation-harness's multiple-choice tasks):
//! - context = the k shots, each `query + " " + choices[gold]`, joined and followed by `"\n\n"`,
//!   then the item's query; continuation = `" " + choice` (the target delimiter is one space);
//! - shots are drawn from the same file excluding the item, seeded by the experiment seed, the
//!   evaluator and the task (not the checkpoint: every checkpoint sees the same prompts);
//! - `acc`: the choice with the highest summed log-likelihood is the gold one (first on ties);
//!   `acc_norm`: the same with the log-likelihood divided by the continuation's UTF-8 byte length.

use std::collections::BTreeMap;
use std::path::Path;

use aurora_core::diagnostic::Diagnostics;
use aurora_core::plugin::{Entry, ExecContext, ExecOutcome, NodeSpec, Offer, PlanContext, Plugin, PluginError};
use aurora_worker_api::{Job, LoglikJob, LoglikRequest, LoglikResult};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::data::{DataError, kind, read_jsonl, string_field};
use crate::schedule::{self, Metric, NodeConfig, Results, evaluator_config};

evaluator_config! {
    /// `[evals.NAME]` with `plugin = "eval.choice"`.
    pub struct ChoiceConfig {
        /// Task name -> `"file:PATH"` of a JSON Lines task file (`query`, `choices`, `gold`).
        /// Metric names are `acc.<task>` and `acc_norm.<task>`, so name tasks `LANG.TASK`
        /// (e.g. `"hin_Deva.arc"`).
        #[schemars(length(min = 1))]
        pub tasks: BTreeMap<String, String>,
        /// Examples (with their gold answer) put before each query; drawn from the same file,
        /// never the item itself.
        #[serde(default)]
        pub shots: u32,
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Settings {
    shots: u32,
    /// Seed of the shot selection: the experiment seed and the evaluator, not the checkpoint.
    shot_seed: u64,
    /// Input name -> task name.
    tasks: BTreeMap<String, String>,
}

const TASK_INPUT: &str = "task:";

#[derive(Debug, Clone, Default)]
pub struct EvalChoice;

aurora_core::register_plugin!(EvalChoice);

impl Plugin for EvalChoice {
    fn id(&self) -> &'static str {
        "eval.choice"
    }
    fn version(&self) -> &'static str {
        // 2: acc_norm divides by the choice's length in characters, as lm-evaluation-harness
        // (`len(choice)` in Python), not by the continuation's UTF-8 bytes. 3: the model's fused
        // GELU kernel on CPU: other last bits.
        "3"
    }
    fn description(&self) -> &'static str {
        "Multiple-choice tasks (query, choices, gold): acc and byte-length-normalised acc_norm, k-shot"
    }
    fn config_schema(&self) -> schemars::Schema {
        schemars::schema_for!(ChoiceConfig)
    }
    fn offers(&self, entry: &Entry<'_>, ctx: &PlanContext<'_>) -> Vec<Offer> {
        schedule::offers::<ChoiceConfig>(entry, ctx)
    }

    fn plan(&self, entry: &Entry<'_>, ctx: &PlanContext<'_>) -> Result<Vec<NodeSpec>, Diagnostics> {
        let config: ChoiceConfig = entry.parse(ctx.manifest)?;
        let mut problems = Vec::new();
        let mut inputs = BTreeMap::new();
        let mut tasks = BTreeMap::new();
        for (task, reference) in &config.tasks {
            let pointer = format!("{}/tasks/{task}", entry.pointer());
            let input = match ctx.file_input(reference, pointer, &format!("tasks.{task}"), "a JSON Lines task file") {
                Ok(input) => input,
                Err(d) => {
                    problems.push(d);
                    continue;
                }
            };
            let name = format!("{TASK_INPUT}{task}");
            tasks.insert(name.clone(), task.clone());
            inputs.insert(name, input);
        }
        if !problems.is_empty() {
            return Err(Diagnostics(problems));
        }
        let experiment_seed = ctx.manifest.experiment()?.seed;
        let shot_seed = mix(experiment_seed, &entry.node_id());
        schedule::plan(entry, ctx, &config, &Settings { shots: config.shots, shot_seed, tasks }, &inputs)
    }

    fn execute(&self, ctx: &mut ExecContext<'_>) -> Result<ExecOutcome, PluginError> {
        let node: NodeConfig<Settings> = NodeConfig::from_ctx(ctx)?;
        let mut tasks = Vec::new();
        for (input, task) in &node.settings.tasks {
            let items = read_task(ctx.input(input)?).map_err(|e| PluginError::new(e.to_string()))?;
            tasks.push((task.clone(), items));
        }
        let (requests, index) = build_requests(&tasks, node.settings.shots, node.settings.shot_seed)
            .map_err(|e| PluginError::new(format!("{}: {e}", ctx.node_id)))?;
        let scratch = ctx.resume_dir_created()?.to_path_buf();
        let requests_path = scratch.join("requests.jsonl");
        schedule::write_jsonl(&requests_path, &requests)?;
        let model = node.model_ref(ctx)?;
        let tokens_total = schedule::tokens_total(&model.dir)?;
        let job = Job::Loglik(LoglikJob {
            node: ctx.node_id.to_string(),
            model,
            requests: requests_path,
            batch_size: node.runtime.batch_size,
            out_dir: ctx.out_dir.to_path_buf(),
        });
        crate::worker::run(&job, ctx)?;
        let scored: Vec<LoglikResult> =
            schedule::read_worker_output(&ctx.out_dir.join("loglik.jsonl"), requests.len())?;
        let (scores, per_item) = score(&tasks, &index, &scored);
        schedule::write_jsonl(&ctx.out_dir.join("items.jsonl"), &per_item)?;
        let mut results = Results::new(self.id(), &node, tokens_total);
        for (task, s) in &scores {
            results.insert(format!("acc.{task}"), Metric { value: s.acc(), higher_is_better: true });
            results.insert(format!("acc_norm.{task}"), Metric { value: s.acc_norm(), higher_is_better: true });
        }
        results.details = json!({ "shots": node.settings.shots, "tasks": scores });
        Ok(ExecOutcome { metrics: results.write(ctx.out_dir)? })
    }
    fn resources(&self, config: &Value) -> aurora_core::plugin::Resources {
        crate::schedule::resources(config)
    }
}

/// One multiple-choice item.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub query: String,
    pub choices: Vec<String>,
    pub gold: usize,
}

/// Reads a task file; a missing or mistyped field, fewer than two choices or a gold index out of
/// range is an error at file:line.
pub fn read_task(path: &Path) -> Result<Vec<Item>, DataError> {
    let records = read_jsonl(path)?;
    if records.is_empty() {
        return Err(DataError::File {
            path: path.to_path_buf(),
            message: "no items; expected JSON Lines of {\"query\", \"choices\", \"gold\"}".into(),
        });
    }
    records
        .iter()
        .map(|record| {
            let (line, map) = record;
            let query = string_field(path, record, "query")?.to_string();
            let choices = match map.get("choices") {
                Some(Value::Array(list)) => list
                    .iter()
                    .enumerate()
                    .map(|(i, c)| match c {
                        Value::String(s) => Ok(s.clone()),
                        other => Err(DataError::at(
                            path,
                            *line,
                            format!("choices[{i}] is {}, expected a string", kind(other)),
                        )),
                    })
                    .collect::<Result<Vec<_>, _>>()?,
                Some(other) => {
                    return Err(DataError::at(
                        path,
                        *line,
                        format!("`choices` is {}, expected an array of strings", kind(other)),
                    ));
                }
                None => return Err(DataError::at(path, *line, "no field `choices` (an array of answer strings)")),
            };
            if choices.len() < 2 {
                return Err(DataError::at(
                    path,
                    *line,
                    format!("{} choice(s); a multiple-choice item needs at least 2", choices.len()),
                ));
            }
            let gold = match map.get("gold") {
                Some(Value::Number(n)) => n.as_u64().ok_or_else(|| {
                    DataError::at(path, *line, format!("`gold` is {n}, expected a 0-based index into `choices`"))
                })?,
                Some(other) => {
                    return Err(DataError::at(
                        path,
                        *line,
                        format!("`gold` is {}, expected a 0-based index into `choices`", kind(other)),
                    ));
                }
                None => {
                    return Err(DataError::at(
                        path,
                        *line,
                        "no field `gold` (the 0-based index of the correct choice)",
                    ));
                }
            };
            if gold >= choices.len() as u64 {
                return Err(DataError::at(
                    path,
                    *line,
                    format!(
                        "`gold` is {gold}, out of range for {} choices (0-based: 0..={})",
                        choices.len(),
                        choices.len() - 1
                    ),
                ));
            }
            Ok(Item { query, choices, gold: gold as usize })
        })
        .collect()
}

/// Where request r came from: (task index, item index, choice index).
pub type RequestIndex = Vec<(usize, usize, usize)>;

/// The fewshot delimiter between examples and before the query.
pub const SHOT_DELIMITER: &str = "\n\n";
/// Between the query and an answer.
pub const TARGET_DELIMITER: &str = " ";

/// One request per (task, item, choice), in that order.
pub fn build_requests(
    tasks: &[(String, Vec<Item>)],
    shots: u32,
    seed: u64,
) -> Result<(Vec<LoglikRequest>, RequestIndex), String> {
    let mut requests = Vec::new();
    let mut index = Vec::new();
    for (t, (task, items)) in tasks.iter().enumerate() {
        if shots as usize >= items.len() {
            return Err(format!(
                "task `{task}` has {} items; {shots} shots need at least {} (the item itself is never a shot)",
                items.len(),
                shots + 1
            ));
        }
        let task_seed = mix(seed, task);
        for (i, item) in items.iter().enumerate() {
            let context =
                context(items, i, &select_shots(items.len(), i, shots as usize, mix(task_seed, &i.to_string())));
            for (c, choice) in item.choices.iter().enumerate() {
                requests.push(LoglikRequest {
                    context: context.clone(),
                    continuation: format!("{TARGET_DELIMITER}{choice}"),
                });
                index.push((t, i, c));
            }
        }
    }
    Ok((requests, index))
}

/// The context of item `i` with the given shots.
pub fn context(items: &[Item], i: usize, shots: &[usize]) -> String {
    let mut out = String::new();
    for &s in shots {
        let shot = &items[s];
        out.push_str(&shot.query);
        out.push_str(TARGET_DELIMITER);
        out.push_str(&shot.choices[shot.gold]);
        out.push_str(SHOT_DELIMITER);
    }
    out.push_str(&items[i].query);
    out
}

/// `k` distinct indices of `0..n` other than `exclude`, drawn with `seed` (a partial
/// Fisher-Yates shuffle driven by SplitMix64).
pub fn select_shots(n: usize, exclude: usize, k: usize, seed: u64) -> Vec<usize> {
    let mut pool: Vec<usize> = (0..n).filter(|&j| j != exclude).collect();
    let mut state = seed;
    for slot in 0..k.min(pool.len()) {
        let pick = slot + (splitmix64(&mut state) % (pool.len() - slot) as u64) as usize;
        pool.swap(slot, pick);
    }
    pool.truncate(k);
    pool
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A seed derived from `seed` and a name (blake3, so names never collide in practice).
pub fn mix(seed: u64, name: &str) -> u64 {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&seed.to_le_bytes());
    hasher.update(name.as_bytes());
    u64::from_le_bytes(hasher.finalize().as_bytes()[..8].try_into().expect("8 bytes"))
}

/// Index of the largest value, the first one on ties (numpy's argmax, as lm-evaluation-harness).
pub fn argmax(values: &[f64]) -> usize {
    let mut best = 0;
    for (i, v) in values.iter().enumerate() {
        if *v > values[best] {
            best = i;
        }
    }
    best
}

/// The predictions for one item: (`acc` prediction, `acc_norm` prediction) from the summed
/// log-likelihood of each continuation and the choices' texts. `acc_norm` divides each
/// log-likelihood by the choice's length in characters (Unicode scalar values, Python's
/// `len`), without the space the continuation starts with: lm-evaluation-harness's
/// `lls / completion_len` with `completion_len = [len(i) for i in choices]`.
pub fn predict(logprobs: &[f64], choices: &[String]) -> (usize, usize) {
    let normed: Vec<f64> = logprobs.iter().zip(choices).map(|(lp, c)| lp / c.chars().count() as f64).collect();
    (argmax(logprobs), argmax(&normed))
}

/// Counts of one task.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct TaskScore {
    pub items: u64,
    pub correct: u64,
    pub correct_norm: u64,
    /// Items whose context was left-truncated by the worker to fit the model's context.
    pub truncated: u64,
}

impl TaskScore {
    pub fn acc(&self) -> f64 {
        self.correct as f64 / self.items as f64
    }
    pub fn acc_norm(&self) -> f64 {
        self.correct_norm as f64 / self.items as f64
    }
}

/// One line of `items.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ItemVerdict {
    pub task: String,
    pub item: usize,
    pub gold: usize,
    pub pred: usize,
    pub pred_norm: usize,
    pub logprobs: Vec<f64>,
}

/// Scores every item from the worker's results (one per request, in request order).
pub fn score(
    tasks: &[(String, Vec<Item>)],
    index: &RequestIndex,
    scored: &[LoglikResult],
) -> (BTreeMap<String, TaskScore>, Vec<ItemVerdict>) {
    let mut scores: BTreeMap<String, TaskScore> = BTreeMap::new();
    let mut verdicts = Vec::new();
    let mut r = 0;
    while r < index.len() {
        let (t, i, _) = index[r];
        let end = r + tasks[t].1[i].choices.len();
        let logprobs: Vec<f64> = scored[r..end].iter().map(|s| s.logprob).collect();
        let (pred, pred_norm) = predict(&logprobs, &tasks[t].1[i].choices);
        let gold = tasks[t].1[i].gold;
        let s = scores.entry(tasks[t].0.clone()).or_default();
        s.items += 1;
        s.correct += u64::from(pred == gold);
        s.correct_norm += u64::from(pred_norm == gold);
        s.truncated += u64::from(scored[r..end].iter().any(|x| x.truncated > 0));
        verdicts.push(ItemVerdict { task: tasks[t].0.clone(), item: i, gold, pred, pred_norm, logprobs });
        r = end;
    }
    (scores, verdicts)
}
