//! `dedup.exact`: exact deduplication by normalized-text hash across every source of an
//! experiment that has `dedup = true`.
//!
//! Planned by each such source entry as the identical node `dedup/exact` (so the planner keeps
//! one); its inputs are the source nodes keyed by entry name. A document is kept only at its
//! first occurrence in the order: sources sorted by name, then document order, and never when
//! any source held out the same normalized text (so a held-out text is not trained on through
//! another source, e.g. one without a held-out split). Output:
//! `drop/<source-name>.txt` (0-based indices into that source's `documents.jsonl` to drop, one
//! per line, ascending; written for every source, possibly empty) and `dedup.json` with counts.

use std::collections::{BTreeMap, HashSet};

use aurora_core::diagnostic::{Diagnostic, Diagnostics};
use aurora_core::plugin::{
    Entry, ExecContext, ExecOutcome, InputSource, InputSpec, NodeSpec, Output, PlanContext, Plugin, PluginError,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::source::{HASHES, HELDOUT_HASHES, SOURCE_JSON};
use crate::text::{HASH_LEN, NORMALIZATION};

/// Node id of the shared dedup node.
pub const NODE_ID: &str = "dedup/exact";
/// Plugin id.
pub const PLUGIN_ID: &str = "dedup.exact";

/// The dedup node has no user settings: it is planned by the sources.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DedupConfig {}

/// Plans `dedup/exact` for a source entry with `dedup = true`: inputs are all such sources of the
/// manifest, so every source plans the same node.
pub fn plan_node(entry: &Entry<'_>, ctx: &PlanContext<'_>) -> Result<NodeSpec, Diagnostics> {
    let mut inputs: BTreeMap<String, InputSpec> = BTreeMap::new();
    let mut problems = Vec::new();
    // Every entry that takes part in dedup, whichever plugin and section: they offer the drop list.
    for source in ctx.offering(Output::DEDUP_DROPS) {
        let Some(documents) = ctx.offer(&source, Output::DOCUMENTS) else { continue };
        let spec = InputSpec { source: InputSource::Node(documents), pointer: source.pointer() };
        if let Some(other) = inputs.insert(source.name.to_string(), spec)
            && source.name == entry.name
        {
            problems.push(
                Diagnostic::new(format!(
                    "two deduplicated sources are named `{}` (`{}` and `{}`)",
                    source.name,
                    other.pointer.trim_start_matches('/').replace('/', "."),
                    source.reference()
                ))
                .at(ctx.manifest.sources.key(&entry.pointer()))
                .pointer(entry.pointer())
                .help("exact dedup names its outputs by source name; rename one, or set `dedup = false` on one"),
            );
        }
    }
    if !problems.is_empty() {
        return Err(Diagnostics(problems));
    }
    Ok(NodeSpec {
        id: NODE_ID.to_string(),
        plugin: Some(PLUGIN_ID),
        config: json!({ "hash": "blake3-128", "normalization": NORMALIZATION }),
        inputs,
        pointer: entry.pointer(),
    })
}

#[derive(Debug, Clone, Default)]
pub struct DedupExact;

aurora_core::register_plugin!(DedupExact);

impl Plugin for DedupExact {
    fn id(&self) -> &'static str {
        PLUGIN_ID
    }
    fn version(&self) -> &'static str {
        // 2: also drops training copies of texts held out by any source.
        "2"
    }
    fn description(&self) -> &'static str {
        "Exact dedup by normalized-text hash across all sources with dedup = true (planned by the sources)"
    }
    fn config_schema(&self) -> schemars::Schema {
        schemars::schema_for!(DedupConfig)
    }

    fn plan(&self, entry: &Entry<'_>, ctx: &PlanContext<'_>) -> Result<Vec<NodeSpec>, Diagnostics> {
        Err(Diagnostic::new(format!("`{}.{}`: `dedup.exact` is not written as an entry", entry.section, entry.name))
            .at(ctx.manifest.sources.value(&format!("{}/plugin", entry.pointer())))
            .pointer(entry.pointer())
            .help("sources plan it themselves: remove this entry; `dedup = true` (the default) on a source includes it")
            .into())
    }

    fn execute(&self, ctx: &mut ExecContext<'_>) -> Result<ExecOutcome, PluginError> {
        let mut heldout: HashSet<[u8; HASH_LEN]> = HashSet::new();
        for (name, dir) in ctx.inputs {
            heldout.extend(read_hashes(&dir.join(HELDOUT_HASHES), name, "held-out hashes")?);
        }
        let mut seen: HashSet<[u8; HASH_LEN]> = HashSet::new();
        let mut per_source = serde_json::Map::new();
        let (mut total, mut dropped_total) = (0u64, 0u64);
        let drop_dir = ctx.out_dir.join("drop");
        std::fs::create_dir_all(&drop_dir)
            .map_err(|e| PluginError::new(format!("cannot create {}: {e}", drop_dir.display())))?;
        // `ctx.inputs` is a BTreeMap: sources sorted by name.
        for (i, (name, dir)) in ctx.inputs.iter().enumerate() {
            ctx.progress.update(ctx.node_id, i as u64, ctx.inputs.len() as u64, name);
            let path = dir.join(HASHES);
            let hashes = read_hashes(&path, name, "hashes")?;
            let count = hashes.len() as u64;
            if let Some(expected) = std::fs::read(dir.join(SOURCE_JSON))
                .ok()
                .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
                .and_then(|v| v.get("documents").and_then(Value::as_u64))
                && expected != count
            {
                return Err(PluginError::new(format!(
                    "{}: {count} hashes but source.json says {expected} documents; the artifact of source `{name}` is damaged",
                    path.display()
                )));
            }
            let mut list = String::new();
            let (mut dropped, mut heldout_matches) = (0u64, 0u64);
            for (index, hash) in hashes.into_iter().enumerate() {
                let is_heldout = heldout.contains(&hash);
                if is_heldout || !seen.insert(hash) {
                    heldout_matches += u64::from(is_heldout);
                    dropped += 1;
                    list.push_str(&index.to_string());
                    list.push('\n');
                }
            }
            let out = drop_dir.join(format!("{name}.txt"));
            std::fs::write(&out, list).map_err(|e| PluginError::new(format!("cannot write {}: {e}", out.display())))?;
            let _ = writeln!(
                ctx.log,
                "{name}: {count} documents, {dropped} dropped ({heldout_matches} held out by some source)"
            );
            per_source.insert(
                name.clone(),
                json!({ "documents": count, "dropped": dropped, "heldout_matches": heldout_matches, "kept": count - dropped }),
            );
            total += count;
            dropped_total += dropped;
        }
        let summary = json!({
            "normalization": NORMALIZATION,
            "hash": "blake3-128",
            "documents": total,
            "dropped": dropped_total,
            "kept": total - dropped_total,
            "sources": per_source,
        });
        let mut text = serde_json::to_string_pretty(&summary).expect("dedup.json serialises");
        text.push('\n');
        std::fs::write(ctx.out_dir.join("dedup.json"), text)
            .map_err(|e| PluginError::new(format!("cannot write dedup.json: {e}")))?;
        let mut metrics = serde_json::Map::new();
        metrics.insert("documents".into(), json!(total));
        metrics.insert("dropped".into(), json!(dropped_total));
        Ok(ExecOutcome { metrics })
    }
}

/// A source artifact's hash file (`what` names it in errors), checked to hold whole hashes.
fn read_hashes(path: &std::path::Path, source: &str, what: &str) -> Result<Vec<[u8; HASH_LEN]>, PluginError> {
    let bytes = std::fs::read(path).map_err(|e| {
        PluginError::new(format!("{}: cannot read the {what} of source `{source}`: {e}", path.display()))
    })?;
    if bytes.len() % HASH_LEN != 0 {
        return Err(PluginError::new(format!(
            "{}: {} bytes is not a whole number of {HASH_LEN}-byte hashes; the artifact of source `{source}` is \
             damaged, run `aurora verify --store`",
            path.display(),
            bytes.len()
        )));
    }
    Ok(bytes.chunks_exact(HASH_LEN).map(|c| c.try_into().expect("chunks are HASH_LEN long")).collect())
}
