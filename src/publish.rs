//! `aurora publish RUN --to DIR` and `aurora check DIR`: a run as a bundle a reviewer checks.
//!
//! A bundle is a directory: `bundle.json` (format, key schema, the run record, the manifest
//! files' text, and every node's key, key components, artifact digest and metrics) and
//! `report/` (the study's report, when the run has one). Artifacts are referenced by digest,
//! fetched from the remote cache the bundle names. `check` replans the manifest here, keys every
//! node with the bundle's artifacts as inputs (so a difference is found where it arises, not in
//! everything downstream of it), says which key component differs, and reruns or pulls what
//! is asked.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use aurora_core::execute::{self, NodeStatus, Observer, RunOptions};
use aurora_core::plan::{KEY_SCHEMA_VERSION, Plan};
use aurora_core::plugin::InputSource;
use aurora_core::remote::RemoteCache;
use aurora_core::{Digest, Store};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The bundle format this aurora writes and reads.
pub const BUNDLE_FORMAT: &str = "aurora-bundle/1";
const BUNDLE_FILE: &str = "bundle.json";

#[derive(Debug, Serialize, Deserialize)]
pub struct Bundle {
    pub format: String,
    pub key_schema: String,
    /// The manifest path relative to the repository root, its profile and digest.
    pub manifest: BundleManifest,
    /// Where the artifacts are (the remote cache's URL, without credentials).
    pub remote: Option<String>,
    /// The run record (git commit, versions, host, timings).
    pub run: Value,
    pub nodes: Vec<BundleNode>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct BundleManifest {
    pub path: String,
    pub profile: Option<String>,
    pub digest: Digest,
    /// The text of the manifest and of every file it extends, by the name aurora showed.
    pub files: BTreeMap<String, String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct BundleNode {
    pub id: String,
    pub plugin: String,
    pub key: Digest,
    pub artifact: Digest,
    pub components: Value,
    pub metrics: Map<String, Value>,
}

/// Writes the bundle of run `run_id` to `dest` (uploading its artifacts first when `remote`).
pub fn publish(
    plan: &Plan,
    store: &Store,
    run: &Value,
    dest: &Path,
    remote: Option<&dyn RemoteCache>,
    observer: &dyn Observer,
) -> Result<Bundle> {
    let run_id = run["id"].as_str().unwrap_or_default();
    let run_digest = run["manifest"]["digest"].as_str().unwrap_or_default();
    if run_digest != plan.manifest.digest.to_hex() {
        bail!(
            "run {run_id} was of manifest digest {run_digest}, but the manifest now resolves to {} (it changed, or the run used --set): publish a run of the manifest as it is",
            plan.manifest.digest
        );
    }
    if run["outcome"] != "ok" {
        bail!("run {run_id} did not succeed (outcome {}): publish a run that did", run["outcome"]);
    }
    let mut nodes = Vec::new();
    for node in run["nodes"].as_array().into_iter().flatten() {
        let id = node["id"].as_str().unwrap_or_default();
        let key: Digest = node["key"]
            .as_str()
            .and_then(|k| k.parse().ok())
            .with_context(|| format!("node {id} has no key in run {run_id}"))?;
        let action = store
            .read_action(&key)?
            .filter(|a| store.has_artifact(&a.artifact))
            .with_context(|| format!("node {id}'s result is no longer in the store (removed by gc?): run the manifest again and publish that run"))?;
        if let Some(remote) = remote {
            observer.event(execute::Event::Uploading { node: id, remote: remote.url() });
            remote.upload(store, &action, false).map_err(|e| anyhow::anyhow!("uploading {id}: {e}"))?;
        }
        nodes.push(BundleNode {
            id: id.to_string(),
            plugin: action.plugin.clone(),
            key,
            artifact: action.artifact,
            components: action.components.clone(),
            metrics: action.metrics.clone(),
        });
    }
    let m = &plan.manifest;
    let bundle = Bundle {
        format: BUNDLE_FORMAT.to_string(),
        key_schema: KEY_SCHEMA_VERSION.to_string(),
        manifest: BundleManifest {
            path: m.path.strip_prefix(&m.project_root).unwrap_or(&m.path).to_string_lossy().into_owned(),
            profile: m.profile.clone(),
            digest: m.digest,
            files: m.sources.files().iter().map(|f| (f.display.clone(), f.text.clone())).collect(),
        },
        remote: remote.map(|r| r.url().to_string()),
        run: run.clone(),
        nodes,
    };
    std::fs::create_dir_all(dest).with_context(|| format!("cannot create {}", dest.display()))?;
    for node in bundle.nodes.iter().filter(|n| n.plugin == "report.html") {
        copy_tree(&store.artifact_dir(&node.artifact), &dest.join("report"))?;
    }
    let path = dest.join(BUNDLE_FILE);
    let mut bytes = serde_json::to_vec_pretty(&bundle)?;
    bytes.push(b'\n');
    std::fs::write(&path, bytes).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(bundle)
}

fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).with_context(|| format!("cannot create {}", to.display()))?;
    for entry in std::fs::read_dir(from).with_context(|| format!("cannot read {}", from.display()))? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target).with_context(|| format!("cannot write {}", target.display()))?;
        }
    }
    Ok(())
}

/// Reads a bundle, refusing formats and key schemas this aurora does not know.
pub fn read_bundle(dir: &Path) -> Result<Bundle> {
    let path = if dir.is_dir() { dir.join(BUNDLE_FILE) } else { dir.to_path_buf() };
    let bytes = std::fs::read(&path).with_context(|| format!("cannot read the bundle {}", path.display()))?;
    let raw: Value = serde_json::from_slice(&bytes).with_context(|| format!("{} is not JSON", path.display()))?;
    let format = raw["format"].as_str().unwrap_or("(none)");
    if format != BUNDLE_FORMAT {
        bail!(
            "{}: bundle format {format:?}, but this aurora reads {BUNDLE_FORMAT:?}: use the aurora version that published it (see its run.versions), or a newer one",
            path.display()
        );
    }
    let schema = raw["key_schema"].as_str().unwrap_or("(none)");
    if schema != KEY_SCHEMA_VERSION {
        bail!(
            "{}: node keys of schema {schema:?}, but this aurora computes {KEY_SCHEMA_VERSION:?}: keys cannot be compared; use the aurora version that published it",
            path.display()
        );
    }
    serde_json::from_value(raw).with_context(|| format!("{} is not a bundle", path.display()))
}

/// One node's verdict.
#[derive(Debug, Serialize)]
pub struct Checked {
    pub id: String,
    pub verdict: Verdict,
    /// Which key components differ, or how the bytes or metrics differ.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The artifact here has the bundle's digest (rerun, pulled or already in the store).
    IdenticalBytes,
    /// Rerun here: other bytes, but every metric within its tolerance.
    MetricsWithinTolerance,
    /// The key here is the bundle's; the bytes were not fetched or rerun.
    KeyMatches,
    /// The key or the bytes differ (details say which component or metric).
    Differs,
    /// In the bundle, not in the plan here (or the other way round).
    Missing,
}

pub struct CheckOptions<'a> {
    pub rerun: BTreeSet<String>,
    pub tolerances: BTreeMap<String, f64>,
    pub remote: Option<std::sync::Arc<dyn RemoteCache>>,
    /// Download every node whose key matches and compare its bytes (through the remote).
    pub pull: bool,
    pub observer: &'a dyn Observer,
    pub progress: &'a dyn aurora_core::plugin::Progress,
}

/// Checks the plan here against the bundle, node by node, in plan order.
pub fn check(plan: &Plan, store: &Store, bundle: &Bundle, options: &CheckOptions<'_>) -> Result<Vec<Checked>> {
    let published: HashMap<&str, &BundleNode> = bundle.nodes.iter().map(|n| (n.id.as_str(), n)).collect();
    for id in &options.rerun {
        if plan.node(id).is_none() {
            bail!("--rerun {id}: no such node in the plan (see `aurora plan`)");
        }
    }
    let mut checked = Vec::new();
    for node in &plan.nodes {
        let Some(theirs) = published.get(node.id.as_str()) else {
            checked.push(Checked {
                id: node.id.clone(),
                verdict: Verdict::Missing,
                details: vec!["not in the bundle".into()],
            });
            continue;
        };
        // Inputs as the bundle had them: a difference shows where it arises.
        let mut digests = BTreeMap::new();
        let mut notes = Vec::new();
        for (name, input) in &node.inputs {
            let recorded = theirs.components["inputs"][name].as_str().and_then(|d| d.parse::<Digest>().ok());
            let digest = match &input.source {
                InputSource::Node(up) => published.get(up.as_str()).map(|n| n.artifact).or(recorded),
                InputSource::Path(file) => {
                    let path = plan.manifest.input_path(file);
                    match store.hash_input(&path) {
                        Ok(d) => Some(d),
                        Err(_) => {
                            notes.push(format!(
                                "input `{name}` is not here ({}): its digest is taken from the bundle",
                                path.display()
                            ));
                            recorded
                        }
                    }
                }
            };
            if let Some(d) = digest {
                digests.insert(name.clone(), d);
            }
        }
        let key = node.key(&digests);
        if key != theirs.key {
            let mut details =
                aurora_core::explain::component_changes(&theirs.components, &node.key_components(&digests));
            if details.is_empty() {
                details.push("key differs".into());
            }
            details.extend(notes);
            checked.push(Checked { id: node.id.clone(), verdict: Verdict::Differs, details });
            continue;
        }
        let rerun = options.rerun.contains(&node.id);
        let ours = if rerun || options.pull {
            let run = RunOptions {
                jobs: 1,
                until: Some(node.id.clone()),
                force: if rerun { [node.id.clone()].into() } else { BTreeSet::new() },
                remote: options.remote.clone(),
                fetch_only: !rerun,
                ..RunOptions::default()
            };
            let reports = execute::run(plan, store, &run, options.observer, options.progress)?;
            let report = reports.into_iter().find(|r| r.id == node.id).expect("the node is selected");
            if report.status == NodeStatus::Failed || report.artifact.is_none() {
                let why = report.error.or(report.reason).unwrap_or_default();
                checked.push(Checked {
                    id: node.id.clone(),
                    verdict: Verdict::Differs,
                    details: vec![format!("could not be obtained here: {why}")],
                });
                continue;
            }
            store.read_action(&key)?.map(|a| (a.artifact, a.metrics))
        } else {
            store.read_action(&key)?.filter(|a| store.has_artifact(&a.artifact)).map(|a| (a.artifact, a.metrics))
        };
        let (verdict, details) = match ours {
            None => (Verdict::KeyMatches, notes),
            Some((artifact, _)) if artifact == theirs.artifact => (Verdict::IdenticalBytes, notes),
            Some((artifact, metrics)) => {
                compare_metrics(&theirs.metrics, &metrics, &options.tolerances, artifact, theirs.artifact)
            }
        };
        checked.push(Checked { id: node.id.clone(), verdict, details });
    }
    let planned: BTreeSet<&str> = plan.nodes.iter().map(|n| n.id.as_str()).collect();
    for n in bundle.nodes.iter().filter(|n| !planned.contains(n.id.as_str())) {
        checked.push(Checked {
            id: n.id.clone(),
            verdict: Verdict::Missing,
            details: vec!["in the bundle, not in the plan here".into()],
        });
    }
    Ok(checked)
}

/// Other bytes: within tolerance when every numeric metric is within its relative tolerance
/// (`--tolerance NAME=REL`; a metric without one must be equal).
fn compare_metrics(
    theirs: &Map<String, Value>,
    ours: &Map<String, Value>,
    tolerances: &BTreeMap<String, f64>,
    artifact: Digest,
    expected: Digest,
) -> (Verdict, Vec<String>) {
    let mut details = vec![format!("artifact {} here, {} in the bundle", artifact.short(), expected.short())];
    let mut within = !theirs.is_empty();
    for (name, value) in theirs {
        let (Some(a), Some(b)) = (value.as_f64(), ours.get(name).and_then(Value::as_f64)) else {
            if ours.get(name) != Some(value) {
                within = false;
                details.push(format!("{name}: {value} in the bundle, {} here", ours.get(name).unwrap_or(&Value::Null)));
            }
            continue;
        };
        let rel = if a == b { 0.0 } else { (a - b).abs() / a.abs().max(b.abs()) };
        let allowed = tolerances.get(name).copied().unwrap_or(0.0);
        if rel > allowed {
            within = false;
        }
        if rel > 0.0 {
            details.push(format!(
                "{name}: {a} in the bundle, {b} here (relative difference {rel:.2e}, tolerance {allowed:.2e})"
            ));
        }
    }
    (if within { Verdict::MetricsWithinTolerance } else { Verdict::Differs }, details)
}

/// `NAME=REL` pairs of `--tolerance`.
pub fn parse_tolerances(pairs: &[String]) -> Result<BTreeMap<String, f64>> {
    pairs
        .iter()
        .map(|p| {
            let (name, rel) = p
                .split_once('=')
                .with_context(|| format!("--tolerance {p}: expected METRIC=RELATIVE, e.g. loss=1e-3"))?;
            let rel: f64 = rel
                .parse()
                .ok()
                .filter(|r: &f64| r.is_finite() && *r >= 0.0)
                .with_context(|| format!("--tolerance {p}: {rel:?} is not a relative tolerance (a number >= 0)"))?;
            Ok((name.to_string(), rel))
        })
        .collect()
}

/// The verdict table (or its JSON).
pub fn table(checked: &[Checked], json: bool) -> String {
    use std::fmt::Write as _;
    if json {
        return format!(
            "{}\n",
            serde_json::to_string_pretty(&serde_json::json!({ "nodes": checked })).expect("verdicts serialise")
        );
    }
    let width = checked.iter().map(|c| c.id.len()).max().unwrap_or(4).max(4);
    let mut out = String::new();
    for c in checked {
        let word = match c.verdict {
            Verdict::IdenticalBytes => "identical bytes",
            Verdict::MetricsWithinTolerance => "metrics within tolerance",
            Verdict::KeyMatches => "key matches",
            Verdict::Differs => "DIFFERS",
            Verdict::Missing => "MISSING",
        };
        let _ = writeln!(out, "  {:<width$}  {word}", c.id);
        for d in &c.details {
            let _ = writeln!(out, "  {:<width$}    {d}", "");
        }
    }
    let count = |v: Verdict| checked.iter().filter(|c| c.verdict == v).count();
    let _ = writeln!(
        out,
        "{} nodes: {} identical bytes, {} within tolerance, {} key matches, {} differ, {} missing",
        checked.len(),
        count(Verdict::IdenticalBytes),
        count(Verdict::MetricsWithinTolerance),
        count(Verdict::KeyMatches),
        count(Verdict::Differs),
        count(Verdict::Missing)
    );
    out
}

/// The manifest a bundle was made from, as it is in the repository here.
pub fn manifest_here(bundle: &Bundle, project_root: &Path) -> PathBuf {
    project_root.join(&bundle.manifest.path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics(pairs: &[(&str, Value)]) -> Map<String, Value> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
    }

    #[test]
    fn metrics_are_within_tolerance_only_when_every_one_is() {
        let theirs = metrics(&[("loss", 2.0.into()), ("tokens", 100.into())]);
        let (a, b) = (Digest([1; 32]), Digest([2; 32]));
        let tol: BTreeMap<String, f64> = [("loss".to_string(), 1e-2)].into();
        let close = metrics(&[("loss", 2.01.into()), ("tokens", 100.into())]);
        assert_eq!(compare_metrics(&theirs, &close, &tol, a, b).0, Verdict::MetricsWithinTolerance);
        let far = metrics(&[("loss", 2.1.into()), ("tokens", 100.into())]);
        let (verdict, details) = compare_metrics(&theirs, &far, &tol, a, b);
        assert_eq!(verdict, Verdict::Differs);
        assert!(details.iter().any(|d| d.starts_with("loss: 2 in the bundle, 2.1 here")), "{details:?}");
        // Without a tolerance a metric must be equal; a missing one differs.
        let other_tokens = metrics(&[("loss", 2.0.into()), ("tokens", 101.into())]);
        assert_eq!(compare_metrics(&theirs, &other_tokens, &tol, a, b).0, Verdict::Differs);
        assert_eq!(compare_metrics(&theirs, &metrics(&[("loss", 2.0.into())]), &tol, a, b).0, Verdict::Differs);
        // Other bytes and no metrics to compare: not within tolerance.
        assert_eq!(compare_metrics(&Map::new(), &Map::new(), &tol, a, b).0, Verdict::Differs);
    }

    #[test]
    fn tolerances_parse_or_say_what_was_expected() {
        assert_eq!(parse_tolerances(&["loss=1e-3".into()]).unwrap()["loss"], 1e-3);
        for bad in ["loss", "loss=x", "loss=-1", "loss=inf"] {
            assert!(parse_tolerances(&[bad.into()]).is_err(), "{bad}");
        }
    }
}
