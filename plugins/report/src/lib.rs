//! `report.html`: one cached node that gathers a study's stages, mixtures and evaluation results
//! into `report.html` (self-contained: inline CSS and SVG charts), `report.md` (the same tables)
//! and `report.json` (the merged data). Output bytes depend only on the inputs: sorted keys, fixed
//! number formatting, no timestamps.
//!
//! Inputs are found at plan time from the manifest: `stages` and `mixtures` name entries (their
//! main nodes are inputs); each `evals` entry contributes its evaluation nodes as the evaluators
//! schedule them (`evals/NAME/LABEL`, milestones included, see [`eval_node_ids`]); `results`
//! adds evaluation node ids verbatim. The planner rejects references to nodes the plan does not
//! produce.

pub mod analysis;
pub mod charts;
pub mod data;
pub mod render;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use aurora_core::diagnostic::{Diagnostic, Diagnostics};
use aurora_core::plugin::{
    Entry, ExecContext, ExecOutcome, InputSource, InputSpec, NodeSpec, Output, PlanContext, Plugin, PluginError,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

pub use analysis::{Report, Threshold};
pub use data::ReportError;

/// Input-name prefixes, by role.
pub const STAGE_PREFIX: &str = "stage:";
pub const MIXTURE_PREFIX: &str = "mixture:";
pub const EVAL_PREFIX: &str = "eval:";

fn default_title() -> String {
    "Report".to_string()
}

/// `[reports.NAME]` with `plugin = "report.html"`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReportConfig {
    /// Heading of the report.
    #[serde(default = "default_title")]
    pub title: String,
    /// Evaluator entries (`"evals.NAME"`): node `evals/NAME/LABEL` for each label in its `on`.
    #[serde(default)]
    pub evals: Vec<String>,
    /// More evaluation nodes by id (e.g. milestone checkpoints), each with a `results.json`.
    #[serde(default)]
    pub results: Vec<String>,
    /// Training stage entries (`"stages.NAME"`), in curriculum order: loss curves, tokens seen,
    /// and the order of checkpoint columns.
    #[serde(default)]
    pub stages: Vec<String>,
    /// Mixture entries (`"mixtures.NAME"`): tokens per language per stage.
    #[serde(default)]
    pub mixtures: Vec<String>,
    /// Checkpoint label that forgetting deltas are measured against (e.g. `"base"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<String>,
    /// `{ relative = 0.05 }` (default) or `{ absolute = 0.02 }`: how much worse than the baseline
    /// a metric may get before it is flagged.
    #[serde(default)]
    pub regression_threshold: Threshold,
}

#[derive(Debug, Clone, Default)]
pub struct HtmlReport;

aurora_core::register_plugin!(HtmlReport);

/// The evaluation node ids of evaluator entry `SECTION.NAME`, as the evaluator offers them (one
/// per checkpoint of its schedule). `None` if the manifest has no such entry; a schedule that
/// does not resolve gives no ids (the evaluator's own planning reports it).
pub fn eval_node_ids(ctx: &PlanContext<'_>, reference: &str) -> Option<Vec<String>> {
    let entry = ctx.entry(reference)?;
    Some(ctx.offers(&entry, Output::EVALUATION).into_iter().map(|o| o.node).collect())
}

impl Plugin for HtmlReport {
    fn id(&self) -> &'static str {
        "report.html"
    }
    fn version(&self) -> &'static str {
        "2"
    }
    fn description(&self) -> &'static str {
        "Self-contained HTML + Markdown report led by forgetting and scaling charts: loss, tokens per language, evaluations, safety per language"
    }
    fn config_schema(&self) -> schemars::Schema {
        schemars::schema_for!(ReportConfig)
    }

    fn plan(&self, entry: &Entry<'_>, ctx: &PlanContext<'_>) -> Result<Vec<NodeSpec>, Diagnostics> {
        let config: ReportConfig = entry.parse(ctx.manifest)?;
        let mut inputs = BTreeMap::new();
        let mut problems = Vec::new();
        let pointer = entry.pointer();
        let mut add = |prefix: &str, field: &str, i: usize, node: String| {
            let pointer = format!("{pointer}/{field}/{i}");
            inputs.insert(format!("{prefix}{node}"), InputSpec { source: InputSource::Node(node), pointer });
        };
        let bad_ref = |field: &str, i: usize, reference: &str, expected: &str| {
            let pointer = format!("{pointer}/{field}/{i}");
            Diagnostic::new(format!("`{field}` of `{}`: `{reference}` is not an entry reference", entry.node_id()))
                .at(ctx.manifest.sources.value(&pointer))
                .pointer(pointer)
                .expected(expected.to_string())
        };
        for (field, prefix, list) in
            [("stages", STAGE_PREFIX, &config.stages), ("mixtures", MIXTURE_PREFIX, &config.mixtures)]
        {
            for (i, reference) in list.iter().enumerate() {
                match ctx.entry_ref(reference) {
                    Some(node) => add(prefix, field, i, node),
                    None => problems.push(bad_ref(field, i, reference, "`SECTION.NAME`, e.g. \"stages.cap\"")),
                }
            }
        }
        for (i, reference) in config.evals.iter().enumerate() {
            let ids = eval_node_ids(ctx, reference);
            match ids {
                Some(ids) => ids.into_iter().for_each(|id| add(EVAL_PREFIX, "evals", i, id)),
                None => problems.push(
                    bad_ref("evals", i, reference, "an evaluator entry of this manifest, e.g. \"evals.bpb\"")
                        .help("declare the evaluator, or remove it from `evals`"),
                ),
            }
        }
        for (i, id) in config.results.iter().enumerate() {
            add(EVAL_PREFIX, "results", i, id.clone());
        }
        if !problems.is_empty() {
            return Err(Diagnostics(problems));
        }
        let node_config = serde_json::to_value(&config).expect("the config serialises");
        Ok(vec![NodeSpec::for_entry(entry, node_config, inputs)])
    }

    fn execute(&self, ctx: &mut ExecContext<'_>) -> Result<ExecOutcome, PluginError> {
        let config: ReportConfig = ctx.parse()?;
        let report = load(&config, ctx.inputs).map_err(|e| PluginError::new(e.to_string()))?;
        write_report(&report, ctx.out_dir).map_err(|e| PluginError::new(e.to_string()))?;
        let regressions = report.forgetting.iter().filter(|d| d.regression).count();
        let mut metrics = serde_json::Map::new();
        metrics.insert("regressions".into(), json!(regressions));
        metrics.insert("evaluations".into(), json!(report.evaluations.len()));
        Ok(ExecOutcome { metrics })
    }
}

/// Reads every input (input name -> artifact directory, names prefixed by role).
pub fn load(config: &ReportConfig, inputs: &BTreeMap<String, PathBuf>) -> Result<Report, ReportError> {
    let node_of = |prefix: &str, reference: &str| format!("{prefix}{}", reference.replacen('.', "/", 1));
    let mut stages = Vec::new();
    for reference in &config.stages {
        let name = node_of(STAGE_PREFIX, reference);
        if let Some(dir) = inputs.get(&name) {
            stages.push(data::read_stage(&name[STAGE_PREFIX.len()..], dir)?);
        }
    }
    let mut mixtures = Vec::new();
    for reference in &config.mixtures {
        let name = node_of(MIXTURE_PREFIX, reference);
        if let Some(dir) = inputs.get(&name) {
            mixtures.extend(data::read_mixture(&name[MIXTURE_PREFIX.len()..], dir)?);
        }
    }
    let mut evaluations = Vec::new();
    for (_, dir) in inputs.iter().filter(|(n, _)| n.starts_with(EVAL_PREFIX)) {
        evaluations.extend(data::read_results(dir)?);
    }
    let digests = inputs
        .iter()
        .filter_map(|(name, dir)| {
            let node = name.split_once(':').map_or(name.as_str(), |(_, n)| n);
            data::artifact_digest(dir).map(|d| (node.to_string(), d))
        })
        .collect();
    Report::build(analysis::Inputs {
        title: config.title.clone(),
        baseline: config.baseline.clone(),
        threshold: config.regression_threshold,
        stage_order: config.stages.iter().map(|s| s.replacen('.', "/", 1)).collect(),
        stages,
        mixtures,
        evaluations,
        digests,
    })
}

/// Writes `report.html`, `report.md` and `report.json` into `dir`.
pub fn write_report(report: &Report, dir: &Path) -> Result<(), ReportError> {
    let json = serde_json::to_string_pretty(report).expect("the report serialises") + "\n";
    for (file, text) in
        [("report.html", render::html(report)), ("report.md", render::markdown(report)), ("report.json", json)]
    {
        let path = dir.join(file);
        std::fs::write(&path, text).map_err(|source| ReportError::Write { path, source })?;
    }
    Ok(())
}
