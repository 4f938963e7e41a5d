//! Reading the report's inputs: stage artifact directories (`metrics.jsonl`, `trainer_state.json`),
//! mixtures (`mixture.json`) and evaluation artifacts (`results.json`). Missing files are "no
//! data"; files that exist but do not parse are errors naming the file and the position.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A problem with one of the report's input files.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("{}: cannot read: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error(
        "{}:{line}:{column}: not valid JSON: {source}\nhelp: the file is written by the node that produced it; re-run that node (`aurora run MANIFEST --force NODE`)",
        path.display()
    )]
    Json { path: PathBuf, line: usize, column: usize, source: serde_json::Error },
    #[error("{}: {what}: {source}\nexpected: {expected}", path.display())]
    Shape { path: PathBuf, what: String, expected: &'static str, source: serde_json::Error },
    #[error(
        "{} and {}: both hold results of `{evaluator}` on checkpoint `{checkpoint}`\nhelp: give the two evaluations distinct checkpoint labels",
        first.display(), second.display()
    )]
    Duplicate { evaluator: String, checkpoint: String, first: PathBuf, second: PathBuf },
    #[error("{}: cannot write: {source}", path.display())]
    Write { path: PathBuf, source: std::io::Error },
}

/// An evaluation node's `results.json`, as the evaluators write it.
pub use aurora_eval::schedule::{RESULTS_FILE, Results as EvalResults};

/// One optimizer step of `metrics.jsonl` (the fields the report plots).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepMetrics {
    pub step: u64,
    pub tokens: u64,
    pub loss: f64,
}

/// A training stage's artifact, as far as the report uses it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StageData {
    /// Node id, `stages/cap`.
    pub node: String,
    /// `trainer_state.json` (null without one).
    pub trainer_state: Value,
    pub steps: Vec<StepMetrics>,
}

impl StageData {
    /// Tokens seen over the whole run before this stage began (`tokens_total - tokens`), so
    /// stages continue each other on one x axis.
    pub fn tokens_before(&self) -> u64 {
        let get = |k: &str| self.trainer_state.get(k).and_then(Value::as_u64);
        match (get("tokens_total"), get("tokens")) {
            (Some(total), Some(stage)) => total.saturating_sub(stage),
            _ => 0,
        }
    }
}

/// A mixture's token use per language (`mixture.json`'s `languages`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MixtureData {
    /// Node id, `mixtures/cap`.
    pub node: String,
    pub tokens: u64,
    /// Language -> tokens.
    pub languages: BTreeMap<String, u64>,
}

/// Reads a JSON file; `Ok(None)` when it does not exist.
pub fn read_json(path: &Path) -> Result<Option<Value>, ReportError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(ReportError::Read { path: path.to_path_buf(), source }),
    };
    serde_json::from_str(&text).map(Some).map_err(|source| ReportError::Json {
        path: path.to_path_buf(),
        line: source.line(),
        column: source.column(),
        source,
    })
}

fn shaped<T: serde::de::DeserializeOwned>(
    path: &Path,
    value: Value,
    what: &str,
    expected: &'static str,
) -> Result<T, ReportError> {
    serde_json::from_value(value).map_err(|source| ReportError::Shape {
        path: path.to_path_buf(),
        what: what.to_string(),
        expected,
        source,
    })
}

/// `results.json` of an evaluation artifact directory; `None` when the directory has none.
pub fn read_results(dir: &Path) -> Result<Option<(PathBuf, EvalResults)>, ReportError> {
    let path = dir.join(RESULTS_FILE);
    let Some(value) = read_json(&path)? else { return Ok(None) };
    let results = shaped(
        &path,
        value,
        "not an evaluation result",
        r#"{"evaluator", "plugin", "checkpoint", "model_node", "tokens_total": int|null, "metrics": {name: number}, "higher_is_better": {name: bool}, "details": {...}}"#,
    )?;
    Ok(Some((path, results)))
}

/// A stage artifact directory: `trainer_state.json` and `metrics.jsonl`, each optional.
pub fn read_stage(node: &str, dir: &Path) -> Result<StageData, ReportError> {
    let trainer_state = read_json(&dir.join("trainer_state.json"))?.unwrap_or(Value::Null);
    let path = dir.join("metrics.jsonl");
    let mut steps = Vec::new();
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
                let value: Value = serde_json::from_str(line).map_err(|source| ReportError::Json {
                    path: path.clone(),
                    line: i + 1,
                    column: source.column(),
                    source,
                })?;
                let what = format!("line {}", i + 1);
                steps.push(shaped(&path, value, &what, r#"{"step": int, "tokens": int, "loss": number, ...}"#)?);
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => return Err(ReportError::Read { path, source }),
    }
    Ok(StageData { node: node.to_string(), trainer_state, steps })
}

#[derive(Deserialize)]
struct MixtureFile {
    tokens: u64,
    languages: BTreeMap<String, LanguageUse>,
}

#[derive(Deserialize)]
struct LanguageUse {
    tokens: u64,
}

/// A mixture artifact directory's `mixture.json`; `None` without one.
pub fn read_mixture(node: &str, dir: &Path) -> Result<Option<MixtureData>, ReportError> {
    let path = dir.join("mixture.json");
    let Some(value) = read_json(&path)? else { return Ok(None) };
    let file: MixtureFile =
        shaped(&path, value, "not a mixture description", r#"{"tokens": int, "languages": {lang: {"tokens": int}}}"#)?;
    Ok(Some(MixtureData {
        node: node.to_string(),
        tokens: file.tokens,
        languages: file.languages.into_iter().map(|(k, v)| (k, v.tokens)).collect(),
    }))
}

/// The content digest of an input artifact (from the store's `ARTIFACT.json`), if it has one.
pub fn artifact_digest(dir: &Path) -> Option<String> {
    let value = read_json(&dir.join("ARTIFACT.json")).ok()??;
    value.get("digest")?.as_str().map(str::to_string)
}
