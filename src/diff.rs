//! `aurora diff RUN_A RUN_B`: what differs between two recorded runs (a reviewer's "did I
//! reproduce it?"): the resolved manifests, each node's key (and which key components changed),
//! its artifact and metrics, and nodes present in only one run.

use aurora_core::{Digest, Store};
use serde::Serialize;
use serde_json::Value;

/// One value that differs, by JSON pointer (absent on one side: null).
#[derive(Debug, Serialize)]
pub struct ValueChange {
    pub pointer: String,
    pub a: Value,
    pub b: Value,
}

/// A metric whose value differs.
#[derive(Debug, Serialize)]
pub struct MetricChange {
    pub name: String,
    pub a: Value,
    pub b: Value,
    /// `(b - a) / |a|` when both are numbers and `a` is not 0.
    pub relative: Option<f64>,
}

/// A node present in both runs that differs in key, artifact, status or metrics.
#[derive(Debug, Serialize)]
pub struct NodeDiff {
    pub id: String,
    pub key_a: Option<String>,
    pub key_b: Option<String>,
    pub artifact_a: Option<String>,
    pub artifact_b: Option<String>,
    pub status_a: String,
    pub status_b: String,
    /// Key components that changed ("config changed (argv)", ...); empty when the keys are equal.
    pub key_changes: Vec<String>,
    /// The node's config fields that changed (from the cache's action records).
    pub config: Vec<ValueChange>,
    pub metrics: Vec<MetricChange>,
}

#[derive(Debug, Serialize)]
pub struct RunDiff {
    pub run_a: String,
    pub run_b: String,
    pub identical: bool,
    pub manifest_digest_a: Value,
    pub manifest_digest_b: Value,
    /// Leaves of the resolved manifests that differ.
    pub manifest: Vec<ValueChange>,
    pub nodes: Vec<NodeDiff>,
    pub only_in_a: Vec<String>,
    pub only_in_b: Vec<String>,
}

/// Leaf-level differences between two JSON values, by JSON pointer below `pointer`.
pub fn value_changes(pointer: &str, a: &Value, b: &Value, out: &mut Vec<ValueChange>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let child = format!("{pointer}/{}", k.replace('~', "~0").replace('/', "~1"));
                value_changes(&child, x.get(k).unwrap_or(&Value::Null), y.get(k).unwrap_or(&Value::Null), out);
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (p, q)) in x.iter().zip(y).enumerate() {
                value_changes(&format!("{pointer}/{i}"), p, q, out);
            }
        }
        _ if a != b => out.push(ValueChange { pointer: pointer.to_string(), a: a.clone(), b: b.clone() }),
        _ => {}
    }
}

/// Metrics that measure speed (`seconds`, `*_per_s`, `mfu`) differ between any two executions
/// and say nothing about whether a result was reproduced, so they are not compared.
fn is_timing(name: &str) -> bool {
    let last = name.rsplit('.').next().unwrap_or(name);
    last == "seconds" || last == "mfu" || last.ends_with("_per_s")
}

fn metric_changes(a: &Value, b: &Value) -> Vec<MetricChange> {
    let empty = serde_json::Map::new();
    let (a, b) = (a.as_object().unwrap_or(&empty), b.as_object().unwrap_or(&empty));
    let mut names: Vec<&String> = a.keys().chain(b.keys()).collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .filter(|n| !is_timing(n) && a.get(*n) != b.get(*n))
        .map(|n| {
            let (x, y) = (a.get(n).cloned().unwrap_or(Value::Null), b.get(n).cloned().unwrap_or(Value::Null));
            let relative = match (x.as_f64(), y.as_f64()) {
                (Some(x), Some(y)) if x != 0.0 => Some((y - x) / x.abs()),
                _ => None,
            };
            MetricChange { name: n.clone(), a: x, b: y, relative }
        })
        .collect()
}

fn text(v: &Value) -> Option<String> {
    v.as_str().map(str::to_string)
}

/// The action record's key components for a recorded key, if the cache still has it.
fn components(store: &Store, key: Option<&str>) -> Option<Value> {
    let key: Digest = key?.parse().ok()?;
    store.read_action(&key).ok().flatten().map(|a| a.components)
}

fn node_diff(store: &Store, a: &Value, b: &Value) -> Option<NodeDiff> {
    let (key_a, key_b) = (text(&a["key"]), text(&b["key"]));
    let (artifact_a, artifact_b) = (text(&a["artifact"]), text(&b["artifact"]));
    // Executed and cached are the same result; failed or pending is not.
    let outcome = |n: &Value| match n["status"].as_str() {
        Some("executed" | "cached") => "ok".to_string(),
        other => other.unwrap_or("?").to_string(),
    };
    let metrics = metric_changes(&a["metrics"], &b["metrics"]);
    if key_a == key_b && artifact_a == artifact_b && outcome(a) == outcome(b) && metrics.is_empty() {
        return None;
    }
    let (mut key_changes, mut config) = (Vec::new(), Vec::new());
    if key_a != key_b {
        match (components(store, key_a.as_deref()), components(store, key_b.as_deref())) {
            (Some(ca), Some(cb)) => {
                key_changes = aurora_core::explain::component_changes(&ca, &cb);
                value_changes("", &ca["config"], &cb["config"], &mut config);
            }
            _ => key_changes.push("key changed (a cache entry is gone, so its components are unknown)".to_string()),
        }
    }
    Some(NodeDiff {
        id: text(&a["id"]).unwrap_or_default(),
        key_a,
        key_b,
        artifact_a,
        artifact_b,
        status_a: text(&a["status"]).unwrap_or_default(),
        status_b: text(&b["status"]).unwrap_or_default(),
        key_changes,
        config,
        metrics,
    })
}

/// Compares two run records.
pub fn diff_runs(store: &Store, a: &Value, b: &Value) -> RunDiff {
    let mut manifest = Vec::new();
    value_changes("", &a["manifest"]["resolved"], &b["manifest"]["resolved"], &mut manifest);
    let nodes_of = |r: &Value| r["nodes"].as_array().cloned().unwrap_or_default();
    let (nodes_a, nodes_b) = (nodes_of(a), nodes_of(b));
    let find = |nodes: &[Value], id: &Value| nodes.iter().find(|n| n["id"] == *id).cloned();
    let mut nodes = Vec::new();
    let mut only_in_a = Vec::new();
    for na in &nodes_a {
        match find(&nodes_b, &na["id"]) {
            Some(nb) => nodes.extend(node_diff(store, na, &nb)),
            None => only_in_a.extend(text(&na["id"])),
        }
    }
    let only_in_b: Vec<String> =
        nodes_b.iter().filter(|nb| find(&nodes_a, &nb["id"]).is_none()).filter_map(|nb| text(&nb["id"])).collect();
    let identical = manifest.is_empty()
        && nodes.is_empty()
        && only_in_a.is_empty()
        && only_in_b.is_empty()
        && a["manifest"]["digest"] == b["manifest"]["digest"];
    RunDiff {
        run_a: text(&a["id"]).unwrap_or_default(),
        run_b: text(&b["id"]).unwrap_or_default(),
        identical,
        manifest_digest_a: a["manifest"]["digest"].clone(),
        manifest_digest_b: b["manifest"]["digest"].clone(),
        manifest,
        nodes,
        only_in_a,
        only_in_b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn value_changes_lists_differing_leaves_by_pointer() {
        let a = json!({"steps": {"a": {"argv": ["sh", "x"], "env": {"K": 1}}, "gone": {"v": 1}}});
        let b = json!({"steps": {"a": {"argv": ["sh", "y"], "env": {"K": 1}}, "new/x": 2}});
        let mut out = Vec::new();
        value_changes("", &a, &b, &mut out);
        let got: Vec<(String, Value, Value)> = out.into_iter().map(|c| (c.pointer, c.a, c.b)).collect();
        assert_eq!(
            got,
            vec![
                ("/steps/a/argv/1".to_string(), json!("x"), json!("y")),
                ("/steps/gone".to_string(), json!({"v": 1}), Value::Null),
                ("/steps/new~1x".to_string(), Value::Null, json!(2)),
            ]
        );
    }

    #[test]
    fn timings_are_not_differences() {
        let a = serde_json::json!({ "loss": 2.0, "seconds": 1.5, "tokens_per_s": 900.0, "mfu": 0.3 });
        let b = serde_json::json!({ "loss": 2.0, "seconds": 2.5, "tokens_per_s": 700.0, "mfu": 0.2 });
        assert!(metric_changes(&a, &b).is_empty());
        let c = serde_json::json!({ "loss": 2.5, "seconds": 1.5, "tokens_per_s": 900.0, "mfu": 0.3 });
        let names: Vec<String> = metric_changes(&a, &c).into_iter().map(|m| m.name).collect();
        assert_eq!(names, ["loss"]);
    }

    #[test]
    fn metric_changes_give_both_values_and_the_relative_change() {
        let changes = metric_changes(
            &json!({"loss": 2.0, "n": 3, "same": 1}),
            &json!({"loss": 1.5, "n": 3, "new": 1, "same": 1}),
        );
        let got: Vec<(&str, Option<f64>)> = changes.iter().map(|c| (c.name.as_str(), c.relative)).collect();
        assert_eq!(got, vec![("loss", Some(-0.25)), ("new", None)]);
    }
}
