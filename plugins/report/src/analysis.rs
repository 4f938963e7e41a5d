//! The report's data model: checkpoints in stage order, forgetting deltas against the baseline
//! checkpoint with regressions flagged, and the one-line summary.

use std::collections::BTreeMap;
use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::data::{EvalResults, MixtureData, ReportError, StageData};

/// How much worse than the baseline a metric may get before it is flagged as a regression.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum Threshold {
    /// A fraction of the baseline value: `{ relative = 0.05 }` flags a 5% worsening.
    Relative(f64),
    /// In the metric's own unit: `{ absolute = 0.02 }`.
    Absolute(f64),
}

impl Default for Threshold {
    fn default() -> Self {
        Threshold::Relative(0.05)
    }
}

impl Threshold {
    fn exceeded(self, baseline: f64, delta: f64) -> bool {
        match self {
            Threshold::Relative(t) => delta.abs() > t * baseline.abs(),
            Threshold::Absolute(t) => delta.abs() > t,
        }
    }

    pub fn describe(self) -> String {
        match self {
            Threshold::Relative(t) => format!("{}% relative", fmt_num(t * 100.0)),
            Threshold::Absolute(t) => format!("{} absolute", fmt_num(t)),
        }
    }
}

/// A model that was evaluated, in report order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Checkpoint {
    pub label: String,
    pub model_node: String,
    pub tokens_total: Option<u64>,
}

/// A metric at a checkpoint compared with the same evaluator's metric at the baseline.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Delta {
    pub evaluator: String,
    pub metric: String,
    pub checkpoint: String,
    pub baseline: f64,
    pub value: f64,
    pub delta: f64,
    /// `delta / |baseline|`; null when the baseline is 0.
    pub relative: Option<f64>,
    /// Null when the evaluator did not say; such metrics are never flagged.
    pub higher_is_better: Option<bool>,
    /// Worse than the baseline by more than the threshold.
    pub regression: bool,
    /// Better than the baseline by more than the threshold.
    pub improvement: bool,
}

/// Everything the report shows (serialised as `report.json`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub title: String,
    pub baseline: Option<String>,
    pub threshold: Threshold,
    pub summary: String,
    pub checkpoints: Vec<Checkpoint>,
    pub stages: Vec<StageData>,
    pub mixtures: Vec<MixtureData>,
    /// Sorted by evaluator, then checkpoint order.
    pub evaluations: Vec<EvalResults>,
    pub forgetting: Vec<Delta>,
    /// Per-language safety of each evaluator that measured it.
    pub safety: Vec<SafetyByLanguage>,
    pub reproducibility: Reproducibility,
}

/// The language safety improvements are compared with: the paper found that safety tuning
/// lowered attack success in English more than in the other languages.
pub const REFERENCE_LANGUAGE: &str = "eng_Latn";

/// Attack success rate and over-refusal per language of one evaluator, at each checkpoint it
/// ran on, and the change in attack success from `before` to `after` (safety tuning).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SafetyByLanguage {
    pub evaluator: String,
    /// The checkpoints the evaluator measured languages at, in report order.
    pub checkpoints: Vec<String>,
    /// The last of them whose model differs from `after`'s (before safety tuning).
    pub before: Option<String>,
    /// The last of them (after safety tuning).
    pub after: Option<String>,
    pub reference: String,
    /// The reference language first, then by code.
    pub languages: Vec<LanguageSafety>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LanguageSafety {
    pub lang: String,
    /// Checkpoint -> `safety.asr.<lang>`.
    pub asr: BTreeMap<String, f64>,
    /// Checkpoint -> `safety.over_refusal.<lang>`.
    pub over_refusal: BTreeMap<String, f64>,
    /// ASR at `after` minus ASR at `before` (negative: fewer attacks succeed).
    pub asr_change: Option<f64>,
    /// ASR dropped less than in the reference language (or rose more).
    pub behind_reference: bool,
}

impl SafetyByLanguage {
    /// Languages whose attack success dropped less than the reference language's.
    pub fn behind(&self) -> Vec<&str> {
        self.languages.iter().filter(|l| l.behind_reference).map(|l| l.lang.as_str()).collect()
    }
}

/// Whether `s` is a FLORES-200 language code (`hin_Deva`).
pub fn is_language_code(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 8
        && b[..3].iter().all(u8::is_ascii_lowercase)
        && b[3] == b'_'
        && b[4].is_ascii_uppercase()
        && b[5..].iter().all(u8::is_ascii_lowercase)
}

/// The language a metric measures: its first part that is a FLORES-200 code (`acc.hin_Deva.arc`).
pub fn metric_language(metric: &str) -> Option<&str> {
    metric.split('.').find(|p| is_language_code(p))
}

/// Differences smaller than this are rounding, not change.
const EPSILON: f64 = 1e-9;

/// Per-language safety tables: for every evaluator with `safety.asr.<lang>` or
/// `safety.over_refusal.<lang>` metrics, where the languages are those its results list in
/// `details.languages`, or metric suffixes that are FLORES-200 codes.
fn safety_by_language(evaluations: &[EvalResults], checkpoints: &[Checkpoint]) -> Vec<SafetyByLanguage> {
    let mut evaluators: Vec<&str> = evaluations.iter().map(|e| e.evaluator.as_str()).collect();
    evaluators.dedup();
    let mut out = Vec::new();
    for evaluator in evaluators {
        let results: Vec<&EvalResults> = evaluations.iter().filter(|e| e.evaluator == evaluator).collect();
        let mut languages: BTreeMap<String, LanguageSafety> = BTreeMap::new();
        let mut measured: Vec<&EvalResults> = Vec::new();
        for r in &results {
            let listed = r.details.get("languages").and_then(serde_json::Value::as_object);
            let is_language = |l: &str| listed.map_or_else(|| is_language_code(l), |m| m.contains_key(l));
            let mut any = false;
            for (metric, &value) in &r.metrics {
                let (lang, asr) =
                    match (metric.strip_prefix("safety.asr."), metric.strip_prefix("safety.over_refusal.")) {
                        (Some(l), _) if is_language(l) => (l, true),
                        (_, Some(l)) if is_language(l) => (l, false),
                        _ => continue,
                    };
                any = true;
                let entry = languages.entry(lang.to_string()).or_insert_with(|| LanguageSafety {
                    lang: lang.to_string(),
                    asr: BTreeMap::new(),
                    over_refusal: BTreeMap::new(),
                    asr_change: None,
                    behind_reference: false,
                });
                let map = if asr { &mut entry.asr } else { &mut entry.over_refusal };
                map.insert(r.checkpoint.clone(), value);
            }
            if any {
                measured.push(r);
            }
        }
        if languages.is_empty() {
            continue;
        }
        // `results` are in report order already.
        let after = measured.last().copied();
        let before = after.and_then(|a| {
            let earlier = &measured[..measured.len() - 1];
            earlier.iter().rev().find(|r| r.model_node != a.model_node).or(earlier.last()).copied()
        });
        if let (Some(b), Some(a)) = (before, after) {
            for l in languages.values_mut() {
                if let (Some(x), Some(y)) = (l.asr.get(&b.checkpoint), l.asr.get(&a.checkpoint)) {
                    l.asr_change = Some(y - x);
                }
            }
            if let Some(reference) = languages.get(REFERENCE_LANGUAGE).and_then(|l| l.asr_change) {
                for l in languages.values_mut().filter(|l| l.lang != REFERENCE_LANGUAGE) {
                    l.behind_reference = l.asr_change.is_some_and(|c| c > reference + EPSILON);
                }
            }
        }
        let mut languages: Vec<LanguageSafety> = languages.into_values().collect();
        languages.sort_by_key(|l| l.lang != REFERENCE_LANGUAGE);
        let order = |label: &str| checkpoints.iter().position(|c| c.label == label);
        let mut labels: Vec<String> = measured.iter().map(|r| r.checkpoint.clone()).collect();
        labels.sort_by_key(|l| order(l));
        out.push(SafetyByLanguage {
            evaluator: evaluator.to_string(),
            checkpoints: labels,
            before: before.map(|r| r.checkpoint.clone()),
            after: after.map(|r| r.checkpoint.clone()),
            reference: REFERENCE_LANGUAGE.to_string(),
            languages,
        });
    }
    out
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reproducibility {
    /// Input node id -> content digest of its artifact.
    pub inputs: BTreeMap<String, String>,
    /// Stage node id -> the non-numeric fields of its `trainer_state.json` (device, precision,
    /// library versions, ... whatever the trainer recorded).
    pub environment: BTreeMap<String, BTreeMap<String, String>>,
}

/// What kind of ability a metric measures, for the failure-signature summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ability {
    Code,
    Safety,
    Language,
}

pub fn ability(metric: &str) -> Ability {
    if metric.starts_with("pass@") || metric.split(['.', '_']).any(|part| part == "code") {
        Ability::Code
    } else if metric.starts_with("safety.") {
        Ability::Safety
    } else {
        Ability::Language
    }
}

/// The report's inputs, read.
pub struct Inputs {
    pub title: String,
    pub baseline: Option<String>,
    pub threshold: Threshold,
    /// Stage node ids in curriculum order (orders the checkpoints).
    pub stage_order: Vec<String>,
    pub stages: Vec<StageData>,
    pub mixtures: Vec<MixtureData>,
    pub evaluations: Vec<(PathBuf, EvalResults)>,
    pub digests: BTreeMap<String, String>,
}

impl Report {
    pub fn build(inputs: Inputs) -> Result<Report, ReportError> {
        let mut seen: BTreeMap<(String, String), PathBuf> = BTreeMap::new();
        for (path, r) in &inputs.evaluations {
            if let Some(first) = seen.insert((r.evaluator.clone(), r.checkpoint.clone()), path.clone()) {
                return Err(ReportError::Duplicate {
                    evaluator: r.evaluator.clone(),
                    checkpoint: r.checkpoint.clone(),
                    first,
                    second: path.clone(),
                });
            }
        }
        let checkpoints = order_checkpoints(&inputs);
        let position = |label: &str| checkpoints.iter().position(|c| c.label == label);
        let mut evaluations: Vec<EvalResults> = inputs.evaluations.into_iter().map(|(_, r)| r).collect();
        evaluations
            .sort_by(|a, b| (&a.evaluator, position(&a.checkpoint)).cmp(&(&b.evaluator, position(&b.checkpoint))));
        let forgetting = inputs
            .baseline
            .as_deref()
            .map(|b| forgetting(&evaluations, &checkpoints, b, inputs.threshold))
            .unwrap_or_default();
        let safety = safety_by_language(&evaluations, &checkpoints);
        let mut summary =
            summary(inputs.baseline.as_deref(), inputs.threshold, &checkpoints, &evaluations, &forgetting);
        for s in &safety {
            let behind = s.behind();
            if let (false, Some(before), Some(after)) = (behind.is_empty(), &s.before, &s.after) {
                summary.push_str(&format!(
                    " Attack success dropped less than in {} from `{before}` to `{after}` ({}) in {}.",
                    s.reference,
                    s.evaluator,
                    behind.join(", ")
                ));
            }
        }
        let environment = inputs
            .stages
            .iter()
            .filter_map(|s| {
                let fields: BTreeMap<String, String> = s
                    .trainer_state
                    .as_object()?
                    .iter()
                    .filter_map(|(k, v)| match v {
                        serde_json::Value::String(s) => Some((k.clone(), s.clone())),
                        serde_json::Value::Bool(b) => Some((k.clone(), b.to_string())),
                        _ => None,
                    })
                    .collect();
                (!fields.is_empty()).then(|| (s.node.clone(), fields))
            })
            .collect();
        Ok(Report {
            title: inputs.title,
            baseline: inputs.baseline,
            threshold: inputs.threshold,
            summary,
            checkpoints,
            stages: inputs.stages,
            mixtures: inputs.mixtures,
            evaluations,
            forgetting,
            safety,
            reproducibility: Reproducibility { inputs: inputs.digests, environment },
        })
    }

    /// Evaluator ids in order.
    pub fn evaluators(&self) -> Vec<&str> {
        let mut ids: Vec<&str> = self.evaluations.iter().map(|e| e.evaluator.as_str()).collect();
        ids.dedup();
        ids
    }

    pub fn results_of<'a>(&'a self, evaluator: &'a str) -> impl Iterator<Item = &'a EvalResults> + 'a {
        self.evaluations.iter().filter(move |e| e.evaluator == evaluator)
    }
}

/// Checkpoints sorted by the stage that produced them (baseline first), then tokens seen, then label.
fn order_checkpoints(inputs: &Inputs) -> Vec<Checkpoint> {
    let mut by_label: BTreeMap<&str, Checkpoint> = BTreeMap::new();
    for (_, r) in &inputs.evaluations {
        by_label.entry(&r.checkpoint).or_insert_with(|| Checkpoint {
            label: r.checkpoint.clone(),
            model_node: r.model_node.clone(),
            tokens_total: r.tokens_total,
        });
    }
    let mut checkpoints: Vec<Checkpoint> = by_label.into_values().collect();
    let rank = |c: &Checkpoint| {
        let is_baseline = inputs.baseline.as_deref() == Some(c.label.as_str());
        let stage = inputs.stage_order.iter().position(|s| *s == c.model_node).unwrap_or(usize::MAX);
        (!is_baseline, stage, c.tokens_total.unwrap_or(u64::MAX))
    };
    checkpoints.sort_by(|a, b| {
        let (ra, rb) = (rank(a), rank(b));
        ra.cmp(&rb).then(a.label.cmp(&b.label))
    });
    checkpoints
}

fn forgetting(
    evaluations: &[EvalResults],
    checkpoints: &[Checkpoint],
    baseline: &str,
    threshold: Threshold,
) -> Vec<Delta> {
    let mut deltas = Vec::new();
    for base in evaluations.iter().filter(|e| e.checkpoint == baseline) {
        for checkpoint in checkpoints.iter().filter(|c| c.label != baseline) {
            let Some(other) =
                evaluations.iter().find(|e| e.evaluator == base.evaluator && e.checkpoint == checkpoint.label)
            else {
                continue;
            };
            for (metric, &b) in &base.metrics {
                let Some(&value) = other.metrics.get(metric) else { continue };
                let delta = value - b;
                let higher_is_better =
                    base.higher_is_better.get(metric).or_else(|| other.higher_is_better.get(metric)).copied();
                let better = higher_is_better.map(|h| if h { delta > 0.0 } else { delta < 0.0 });
                let beyond = threshold.exceeded(b, delta);
                deltas.push(Delta {
                    evaluator: base.evaluator.clone(),
                    metric: metric.clone(),
                    checkpoint: checkpoint.label.clone(),
                    baseline: b,
                    value,
                    delta,
                    relative: (b != 0.0).then(|| delta / b.abs()),
                    higher_is_better,
                    regression: better == Some(false) && delta != 0.0 && beyond,
                    improvement: better == Some(true) && beyond,
                });
            }
        }
    }
    deltas
}

fn summary(
    baseline: Option<&str>,
    threshold: Threshold,
    checkpoints: &[Checkpoint],
    evaluations: &[EvalResults],
    deltas: &[Delta],
) -> String {
    let Some(baseline) = baseline else {
        return "No baseline checkpoint configured: forgetting is not measured.".to_string();
    };
    if !evaluations.iter().any(|e| e.checkpoint == baseline) {
        return format!("No evaluation of the baseline `{baseline}`: forgetting is not measured.");
    }
    let regressions: Vec<&Delta> = deltas.iter().filter(|d| d.regression).collect();
    let signature: Vec<&str> = checkpoints
        .iter()
        .map(|c| c.label.as_str())
        .filter(|c| {
            let at = |ability_: Ability, f: fn(&Delta) -> bool| {
                deltas.iter().any(|d| d.checkpoint == *c && ability(&d.metric) == ability_ && f(d))
            };
            at(Ability::Code, |d| d.regression) && at(Ability::Language, |d| d.improvement)
        })
        .collect();
    let mut line = if regressions.is_empty() {
        format!("No metric got worse than `{baseline}` by more than {}.", threshold.describe())
    } else {
        let mut at: Vec<&str> = Vec::new();
        for c in checkpoints {
            if regressions.iter().any(|d| d.checkpoint == c.label) {
                at.push(&c.label);
            }
        }
        format!(
            "{} regression{} beyond {} against `{baseline}` (at {}).",
            regressions.len(),
            if regressions.len() == 1 { "" } else { "s" },
            threshold.describe(),
            at.join(", ")
        )
    };
    if !signature.is_empty() {
        line.push_str(&format!(
            " Forgetting signature (code got worse while multilingual metrics improved) at {}.",
            signature.join(", ")
        ));
    }
    line
}

/// Fixed, platform-independent number formatting: up to 4 significant decimals, no trailing zeros.
pub fn fmt_num(x: f64) -> String {
    if !x.is_finite() {
        return x.to_string();
    }
    let magnitude = x.abs();
    let decimals = if magnitude >= 1000.0 {
        0
    } else if magnitude >= 1.0 {
        3
    } else {
        4
    };
    let s = format!("{x:.decimals$}");
    let s = if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.').to_string() } else { s };
    if s == "-0" { "0".to_string() } else { s }
}

/// `+1.2%` style relative change.
pub fn fmt_relative(r: Option<f64>) -> String {
    match r {
        Some(r) if r.abs() < 0.0005 => "0%".to_string(),
        Some(r) => format!("{:+.1}%", r * 100.0),
        None => "n/a".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn results(checkpoint: &str, value: f64, higher_is_better: bool) -> (PathBuf, EvalResults) {
        let json = serde_json::json!({
            "evaluator": "evals/e", "plugin": "eval.x", "checkpoint": checkpoint, "model_node": "stages/x",
            "tokens_total": null, "metrics": {"m": value}, "higher_is_better": {"m": higher_is_better}, "details": {}
        });
        (PathBuf::from(checkpoint), serde_json::from_value(json).unwrap())
    }

    fn safety_results(
        checkpoint: &str,
        model: &str,
        tokens: u64,
        metrics: &[(&str, f64)],
        languages: &[&str],
    ) -> (PathBuf, EvalResults) {
        let values: BTreeMap<&str, f64> = metrics.iter().copied().collect();
        let directions: BTreeMap<&str, bool> = metrics.iter().map(|(m, _)| (*m, false)).collect();
        let listed: BTreeMap<&str, serde_json::Value> = languages.iter().map(|l| (*l, serde_json::json!({}))).collect();
        let json = serde_json::json!({
            "evaluator": "evals/safety", "plugin": "eval.safety", "checkpoint": checkpoint, "model_node": model,
            "tokens_total": tokens, "metrics": values, "higher_is_better": directions,
            "details": if languages.is_empty() { serde_json::json!({}) } else { serde_json::json!({"languages": listed}) }
        });
        (PathBuf::from(checkpoint), serde_json::from_value(json).unwrap())
    }

    fn build(evaluations: Vec<(PathBuf, EvalResults)>, stage_order: &[&str]) -> Report {
        Report::build(Inputs {
            title: String::new(),
            baseline: Some("base".into()),
            threshold: Threshold::default(),
            stage_order: stage_order.iter().map(|s| s.to_string()).collect(),
            stages: vec![],
            mixtures: vec![],
            evaluations,
            digests: BTreeMap::new(),
        })
        .unwrap()
    }

    /// Languages are those the results list (any code), else FLORES-200 suffixes; "after" is the
    /// last checkpoint, "before" the last one of another model (not the SFT's own milestone).
    #[test]
    fn safety_by_language_compares_before_and_after_tuning_with_english() {
        let langs = ["eng_Latn", "fi", "hin_Deva"];
        let at = |label: &str, model: &str, tokens: u64, asr: [f64; 3]| {
            let metrics: Vec<(String, f64)> = std::iter::once(("safety.asr".to_string(), asr[0]))
                .chain(langs.iter().zip(asr).map(|(l, v)| (format!("safety.asr.{l}"), v)))
                .chain([("safety.asr.fraud".to_string(), 0.5), ("safety.over_refusal.fi".to_string(), 0.1)])
                .collect();
            let metrics: Vec<(&str, f64)> = metrics.iter().map(|(m, v)| (m.as_str(), *v)).collect();
            safety_results(label, model, tokens, &metrics, &langs)
        };
        let report = build(
            vec![
                at("base", "models/base", 10, [0.6, 0.6, 0.6]),
                at("cat", "stages/cat", 20, [0.5, 0.6, 0.6]),
                at("sft@tokens-25", "sft/safety", 25, [0.3, 0.5, 0.3]),
                at("sft", "sft/safety", 30, [0.1, 0.45, 0.1]),
            ],
            &["stages/cat", "sft/safety"],
        );
        assert_eq!(report.safety.len(), 1);
        let s = &report.safety[0];
        assert_eq!(s.checkpoints, ["base", "cat", "sft@tokens-25", "sft"]);
        assert_eq!((s.before.as_deref(), s.after.as_deref()), (Some("cat"), Some("sft")));
        let langs: Vec<&str> = s.languages.iter().map(|l| l.lang.as_str()).collect();
        assert_eq!(langs, ["eng_Latn", "fi", "hin_Deva"], "English first; `fraud` is a category");
        // English -0.4, fi -0.15 (behind), hin_Deva -0.5.
        assert_eq!(s.behind(), ["fi"]);
        assert_eq!(s.languages[1].over_refusal["sft"], 0.1);
        assert!(
            report
                .summary
                .ends_with(" Attack success dropped less than in eng_Latn from `cat` to `sft` (evals/safety) in fi."),
            "{}",
            report.summary
        );

        // Without `details.languages`, FLORES-200 codes are recognised; without English, nothing is flagged.
        let plain = |label: &str, model: &str, v: f64| {
            safety_results(label, model, 1, &[("safety.asr.fin_Latn", v), ("safety.asr.fi", v)], &[])
        };
        let report = build(vec![plain("cat", "stages/cat", 0.5), plain("sft", "sft/safety", 0.5)], &[]);
        let langs: Vec<&str> = report.safety[0].languages.iter().map(|l| l.lang.as_str()).collect();
        assert_eq!(langs, ["fin_Latn"]);
        assert_eq!(report.safety[0].languages[0].asr_change, Some(0.0));
        assert!(report.safety[0].behind().is_empty());
    }

    proptest! {
        /// A regression is exactly "worse in the metric's direction by more than the threshold",
        /// and a change is never both a regression and an improvement.
        #[test]
        fn flags_follow_direction_and_threshold(
            base in -10.0f64..10.0,
            value in -10.0f64..10.0,
            higher_is_better: bool,
            relative: bool,
            t in 0.0f64..2.0,
        ) {
            let threshold = if relative { Threshold::Relative(t) } else { Threshold::Absolute(t) };
            let report = Report::build(Inputs {
                title: String::new(),
                baseline: Some("base".into()),
                threshold,
                stage_order: vec![],
                stages: vec![],
                mixtures: vec![],
                evaluations: vec![results("base", base, higher_is_better), results("next", value, higher_is_better)],
                digests: BTreeMap::new(),
            })
            .unwrap();
            prop_assert_eq!(report.forgetting.len(), 1);
            let d = &report.forgetting[0];
            let worse_by = if higher_is_better { base - value } else { value - base };
            let limit = if relative { t * base.abs() } else { t };
            prop_assert_eq!(d.regression, worse_by > limit, "{:?}", d);
            prop_assert_eq!(d.improvement, -worse_by > limit, "{:?}", d);
            prop_assert_eq!(d.delta, value - base);
        }
    }
}
