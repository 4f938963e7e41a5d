//! Run records: what ran, from which manifest, code and machine, and what each node produced.

use std::path::Path;
use std::time::SystemTime;

use serde_json::{Value, json};

use crate::execute::NodeReport;
use crate::plan::Plan;
use crate::plugin::registry;

/// A version of a tool the results may depend on (e.g. libtorch), registered by the crate that
/// links it: `inventory::submit! { aurora_core::record::ToolVersion { name: "libtorch", version: f } }`.
pub struct ToolVersion {
    pub name: &'static str,
    pub version: fn() -> String,
}

inventory::collect!(ToolVersion);

/// The commit of the repository containing `dir`, and whether its work tree has changes
/// (modified, staged or untracked files; ignored files do not count).
pub fn git_state(dir: &Path) -> Value {
    let Ok(repo) = git2::Repository::discover(dir) else { return Value::Null };
    let commit = repo.head().ok().and_then(|h| h.peel_to_commit().ok()).map(|c| c.id().to_string());
    let mut opts = git2::StatusOptions::new();
    opts.include_untracked(true).recurse_untracked_dirs(false).include_ignored(false);
    let dirty = repo.statuses(Some(&mut opts)).map(|s| !s.is_empty()).ok();
    json!({ "commit": commit, "dirty": dirty })
}

/// A sortable, unique run id: UTC time to the millisecond plus the process id.
pub fn new_run_id(at: SystemTime) -> String {
    let stamp = humantime::format_rfc3339_millis(at).to_string().replace(['-', ':'], "");
    format!("{stamp}-{}", std::process::id())
}

/// Versions of everything that produced this run.
pub fn versions() -> Value {
    let mut tools: serde_json::Map<String, Value> =
        inventory::iter::<ToolVersion>().map(|t| (t.name.to_string(), Value::String((t.version)()))).collect();
    tools.insert("aurora".to_string(), Value::String(env!("CARGO_PKG_VERSION").to_string()));
    let plugins: serde_json::Map<String, Value> =
        registry().iter().map(|p| (p.id().to_string(), Value::String(p.version().to_string()))).collect();
    // The crates linked into this binary that registered plugins: a third party's extension is
    // named here with its version, like aurora's own.
    json!({ "tools": tools, "plugins": plugins, "crates": registry().providers() })
}

/// The JSON record of one `aurora run`.
pub fn run_record(
    id: &str,
    plan: &Plan,
    started: SystemTime,
    finished: SystemTime,
    nodes: &[NodeReport],
    outcome: &str,
) -> Value {
    let m = &plan.manifest;
    let manifest_path = m.path.strip_prefix(&m.project_root).unwrap_or(&m.path).to_string_lossy().into_owned();
    json!({
        "id": id,
        "started_at": humantime::format_rfc3339_millis(started).to_string(),
        "finished_at": humantime::format_rfc3339_millis(finished).to_string(),
        "outcome": outcome,
        "manifest": {
            "path": manifest_path,
            "profile": m.profile,
            "digest": m.digest,
            "resolved": m.value,
        },
        "git": git_state(&m.project_root),
        "versions": versions(),
        "languages": plan.languages.iter().map(crate::language::LoadedPack::record).collect::<Vec<_>>(),
        "host": { "os": std::env::consts::OS, "arch": std::env::consts::ARCH },
        "nodes": nodes,
    })
}
