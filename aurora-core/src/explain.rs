//! Why is a node pending? Compares its current key components with those of the last key this
//! node id had in a recorded run.

use std::collections::BTreeMap;

use aurora_store::{Digest, Store};
use serde_json::Value;

use crate::plan::PlannedNode;

/// How many recent run records to search for a node's previous key.
const RUNS_SEARCHED: usize = 50;

/// A short human reason: "new", "config changed (argv)", "input changed (raw)", ...
pub fn why_pending(store: &Store, node: &PlannedNode, key: &Digest, digests: &BTreeMap<String, Digest>) -> String {
    let Some((previous_key, failed_in)) = previous_key(store, &node.id, key) else {
        return "new".to_string();
    };
    if let Some(run) = failed_in {
        return format!("failed in run {run} (see `aurora runs show {run}`)");
    }
    if previous_key == *key {
        return "artifact missing from the store (removed by gc or by hand)".to_string();
    }
    let Some(previous) = store.read_action(&previous_key).ok().flatten().map(|a| a.components) else {
        return "new (its previous result is no longer in the store)".to_string();
    };
    let reasons = component_changes(&previous, &node.key_components(digests));
    if reasons.is_empty() { "key changed".to_string() } else { reasons.join("; ") }
}

/// Which key components differ between two action records' `components` (plugin, its version,
/// config, seed, inputs, execution facts), as short reasons: "config changed (argv)", ...
pub fn component_changes(previous: &Value, now: &Value) -> Vec<String> {
    let mut reasons = Vec::new();
    if previous["plugin"] != now["plugin"] {
        reasons.push(format!("plugin changed ({} -> {})", previous["plugin"], now["plugin"]));
    } else if previous["plugin_version"] != now["plugin_version"] {
        reasons.push(format!(
            "plugin version changed ({} -> {})",
            previous["plugin_version"].as_str().unwrap_or("?"),
            now["plugin_version"].as_str().unwrap_or("?")
        ));
    }
    if previous["config"] != now["config"] {
        reasons.push(format!("config changed ({})", changed_keys(&previous["config"], &now["config"]).join(", ")));
    }
    if previous["seed"] != now["seed"] {
        reasons.push("seed changed".to_string());
    }
    if previous["inputs"] != now["inputs"] {
        reasons.push(format!("input changed ({})", changed_keys(&previous["inputs"], &now["inputs"]).join(", ")));
    }
    if previous["facts"] != now["facts"] {
        reasons
            .push(format!("execution facts changed ({})", changed_keys(&previous["facts"], &now["facts"]).join(", ")));
    }
    reasons
}

/// Top-level keys whose values differ between two JSON objects.
fn changed_keys(a: &Value, b: &Value) -> Vec<String> {
    let empty = serde_json::Map::new();
    let a = a.as_object().unwrap_or(&empty);
    let b = b.as_object().unwrap_or(&empty);
    let mut keys: Vec<String> = a.keys().chain(b.keys()).filter(|k| a.get(*k) != b.get(*k)).cloned().collect();
    keys.sort();
    keys.dedup();
    if keys.is_empty() {
        keys.push("value".to_string());
    }
    keys
}

/// The key `node_id` last had in a recorded run where it succeeded (executed or cached), or, if
/// the most recent attempt with the current key failed, that run's id.
fn previous_key(store: &Store, node_id: &str, current: &Digest) -> Option<(Digest, Option<String>)> {
    let runs = store.list_runs().ok()?;
    let mut failed_in = None;
    for id in runs.iter().rev().take(RUNS_SEARCHED) {
        let Ok(record) = store.read_run(id) else { continue };
        let Some(entry) = record["nodes"].as_array().and_then(|nodes| nodes.iter().find(|n| n["id"] == node_id)) else {
            continue;
        };
        let Some(key) = entry["key"].as_str().and_then(|k| k.parse::<Digest>().ok()) else { continue };
        match entry["status"].as_str() {
            Some("executed" | "cached" | "downloaded") => return Some((key, None)),
            Some("failed") if key == *current && failed_in.is_none() => failed_in = Some(id.clone()),
            _ => {}
        }
    }
    failed_in.map(|run| (*current, Some(run)))
}
