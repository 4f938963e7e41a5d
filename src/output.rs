//! Everything the CLI prints. Functions return strings so tests can snapshot them.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, Result};
use aurora_core::execute::{Event, NodeReport, NodeStatus, Observer, VerifyOutcome};
use aurora_core::language::LoadedPack;
use aurora_core::manifest::display_path;
use aurora_core::plan::Plan;
use aurora_core::plugin::{Progress, Registry};
use aurora_core::{Digest, Store};
use aurora_store::{GcReport, VerifyReport};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde_json::{Value, json};

fn status_word(s: NodeStatus) -> &'static str {
    match s {
        NodeStatus::Cached => "cached",
        NodeStatus::Pending => "pending",
        NodeStatus::Executed => "executed",
        NodeStatus::Downloaded => "fetched",
        NodeStatus::Failed => "FAILED",
    }
}

fn short(d: Option<Digest>) -> String {
    d.map_or_else(|| "-".to_string(), |d| d.short())
}

/// The plan or run table (or its JSON).
pub fn plan_report(plan: &Plan, reports: &[NodeReport], json: bool, run: Option<(&str, Duration)>) -> String {
    let m = &plan.manifest;
    if json {
        let mut doc = json!({
            "manifest_digest": m.digest,
            "profile": m.profile,
            "nodes": reports,
        });
        if let Some((id, _)) = run {
            doc["run_id"] = Value::String(id.to_string());
        }
        return format!("{}\n", serde_json::to_string_pretty(&doc).expect("reports serialise"));
    }
    let mut out = String::new();
    let profile = m.profile.as_deref().map(|p| format!(" (profile {p})")).unwrap_or_default();
    let _ = writeln!(out, "manifest {}{profile}", display_path(&m.path));
    let _ = writeln!(out, "digest   {}", m.digest);
    let id_width = reports.iter().map(|r| r.id.len()).max().unwrap_or(4).max(4);
    let plugin_width = reports.iter().map(|r| r.plugin.len()).max().unwrap_or(6).max(6);
    let _ =
        writeln!(out, "  {:<8}  {:<id_width$}  {:<plugin_width$}  {:<12}  DETAIL", "STATUS", "NODE", "PLUGIN", "KEY");
    for r in reports {
        let detail = match (r.status, r.ms) {
            (NodeStatus::Executed, Some(ms)) => format!("{ms} ms -> {}", short(r.artifact)),
            (NodeStatus::Downloaded, _) => {
                format!(
                    "{} in {} ms -> {}",
                    human_bytes(r.downloaded_bytes.unwrap_or(0)),
                    r.ms.unwrap_or(0),
                    short(r.artifact)
                )
            }
            (NodeStatus::Failed, _) => "see the error below".to_string(),
            (NodeStatus::Pending, _) => r.reason.clone().unwrap_or_default(),
            _ => String::new(),
        };
        let _ = writeln!(
            out,
            "  {:<8}  {:<id_width$}  {:<plugin_width$}  {:<12}  {detail}",
            status_word(r.status),
            r.id,
            r.plugin,
            short(r.key)
        )
        .map(|_| ());
        if let (None, Some(estimate)) = (run, &r.estimate) {
            let _ = writeln!(out, "  {:<8}  {:<id_width$}  ~ {estimate}", "", "");
        }
    }
    let mut counts: Vec<(NodeStatus, usize)> = Vec::new();
    for s in [NodeStatus::Executed, NodeStatus::Downloaded, NodeStatus::Cached, NodeStatus::Pending, NodeStatus::Failed]
    {
        let n = reports.iter().filter(|r| r.status == s).count();
        if n > 0 {
            counts.push((s, n));
        }
    }
    let counts: Vec<String> = counts.iter().map(|(s, n)| format!("{n} {}", status_word(*s).to_lowercase())).collect();
    let _ = write!(out, "{} nodes: {}", reports.len(), counts.join(", "));
    match run {
        Some((id, elapsed)) => {
            let _ = writeln!(out, " in {:.2} s (run {id})", elapsed.as_secs_f64());
        }
        None => out.push('\n'),
    }
    out
}

/// Progress lines and bars on stderr.
pub struct StderrObserver {
    show: bool,
    bars: MultiProgress,
    node_bars: Mutex<HashMap<String, ProgressBar>>,
}

impl StderrObserver {
    pub fn new(show: bool) -> Self {
        StderrObserver { show, bars: MultiProgress::new(), node_bars: Mutex::new(HashMap::new()) }
    }

    fn line(&self, text: String) {
        if !self.show {
            return;
        }
        if self.bars.is_hidden() {
            eprintln!("{text}");
        } else {
            // Printing through MultiProgress keeps bars intact.
            let _ = self.bars.println(text);
        }
    }
}

impl Observer for StderrObserver {
    fn event(&self, event: Event<'_>) {
        match event {
            Event::Started { node } => self.line(format!("  running   {node}")),
            Event::Waiting { node, holder } => self.line(format!("  waiting   {node}: locked by {holder}")),
            // A lookup is one small request; only what it finds is worth a line.
            Event::Fetching { .. } => {}
            Event::Uploading { node, remote } => self.line(format!("  pushing   {node} to {remote}")),
            Event::Dispatched { node, detail } => self.line(format!("  queued    {node}: {detail}")),
            Event::Finished { report } => {
                if let Some(bar) = self.node_bars.lock().expect("bar map").remove(&report.id) {
                    bar.finish_and_clear();
                }
                match report.status {
                    NodeStatus::Executed => {
                        self.line(format!("  done      {} ({} ms)", report.id, report.ms.unwrap_or_default()))
                    }
                    NodeStatus::Downloaded => self.line(format!(
                        "  fetched   {} ({}, {} ms)",
                        report.id,
                        human_bytes(report.downloaded_bytes.unwrap_or(0)),
                        report.ms.unwrap_or_default()
                    )),
                    NodeStatus::Failed => self.line(format!("  FAILED    {}", report.id)),
                    _ => {}
                }
            }
        }
    }
}

impl Progress for StderrObserver {
    fn update(&self, node: &str, done: u64, total: u64, message: &str) {
        if !self.show {
            return;
        }
        let mut bars = self.node_bars.lock().expect("bar map");
        let bar = bars.entry(node.to_string()).or_insert_with(|| {
            let bar = self.bars.add(ProgressBar::new(total));
            bar.set_style(
                ProgressStyle::with_template("  {prefix:<24} [{bar:30}] {pos}/{len} {msg} ({per_sec}, eta {eta})")
                    .expect("valid template")
                    .progress_chars("=> "),
            );
            bar.set_prefix(node.to_string());
            bar
        });
        bar.set_length(total);
        bar.set_position(done);
        bar.set_message(message.to_string());
    }
}

/// `aurora plugins`: every registered plugin with the crate that registered it, because a
/// binary may link plugin crates from anywhere (a plugin's kind alone no longer says whose it is).
pub fn plugins(registry: &Registry, json: bool) -> String {
    let provider = |id: &str| registry.provider(id).expect("a registered plugin has a provider");
    if json {
        let list: Vec<Value> = registry
            .iter()
            .map(|p| {
                json!({
                    "id": p.id(),
                    "kind": p.kind(),
                    "version": p.version(),
                    "description": p.description(),
                    "provider": provider(p.id()),
                })
            })
            .collect();
        return format!("{}\n", serde_json::to_string_pretty(&list).expect("serialises"));
    }
    let width = registry.iter().map(|p| p.id().len()).max().unwrap_or(2);
    let kind_width = registry.iter().map(|p| p.kind().as_str().len()).max().unwrap_or(4);
    let crate_width = registry.iter().map(|p| provider(p.id()).crate_name.len()).max().unwrap_or(5);
    let mut out = String::new();
    for p in registry.iter() {
        let _ = writeln!(
            out,
            "{:<width$}  {:<kind_width$}  v{:<6}  {:<crate_width$}  {}",
            p.id(),
            p.kind().as_str(),
            p.version(),
            provider(p.id()).crate_name,
            p.description()
        );
    }
    out
}

/// `aurora languages`: the languages the safety evaluator knows built in, and the language packs
/// a manifest loads (with what each contributes and its digest, as the run record names it).
pub fn languages(manifest: Option<&str>, packs: &[LoadedPack], json: bool) -> String {
    let builtin = aurora_eval::safety::LexiconClassifier::builtin();
    if json {
        let value = json!({
            "builtin_refusal_lexicons": builtin.languages(),
            "manifest": manifest,
            "packs": packs.iter().map(|p| {
                let mut record = p.record();
                record["license"] = json!(p.pack.license);
                record["cleaning_filters"] = json!(p.pack.cleaning.filters);
                record["refusal_phrases"] = json!(p.pack.refusals.phrases.len());
                record["corpora"] = json!(p.pack.corpora);
                record["tasks"] = json!(p.pack.tasks);
                record
            }).collect::<Vec<_>>(),
        });
        return format!("{}\n", serde_json::to_string_pretty(&value).expect("serialises"));
    }
    let mut out = format!("built-in refusal lexicons (eval.safety): {}\n", builtin.languages().join(", "));
    let Some(manifest) = manifest else {
        out.push_str("language packs are loaded by manifests: `aurora languages MANIFEST` lists a manifest's\n");
        return out;
    };
    if packs.is_empty() {
        let _ = writeln!(out, "{manifest} loads no language pack");
        return out;
    }
    let _ = writeln!(out, "language packs loaded by {manifest}:");
    for p in packs {
        let pack = &p.pack;
        let _ = writeln!(
            out,
            "  {}  {} ({}), {} from {}, {}",
            pack.code, pack.name, pack.license, p.entry, p.path, p.digest
        );
        let filters: Vec<String> =
            pack.cleaning.filters.iter().map(|f| serde_json::to_string(f).expect("serialises")).collect();
        let _ = writeln!(
            out,
            "    cleaning defaults: {}",
            if filters.is_empty() { "none".into() } else { filters.join(", ") }
        );
        let _ = writeln!(out, "    refusal phrases: {}", pack.refusals.phrases.len());
        for (what, shipped) in [("corpus", &pack.corpora), ("task", &pack.tasks)] {
            for (name, s) in shipped {
                let _ = writeln!(out, "    {what} {name}: {} ({}) {}", p.file_ref(&s.file), s.plugin, s.description);
            }
        }
    }
    out
}

pub fn verify_node(node: &str, outcome: &VerifyOutcome) -> String {
    if outcome.differences.is_empty() {
        return format!("{node}: identical (artifact {})\n", outcome.artifact);
    }
    let mut out = format!("{node}: DIFFERS from the cached artifact {}\n", outcome.artifact);
    for d in &outcome.differences {
        let _ = writeln!(out, "  {d}");
    }
    out
}

pub fn verify_store(store: &Store, report: &VerifyReport) -> String {
    let mut out = format!(
        "store {}: {} artifacts and {} cache entries checked\n",
        store.root().display(),
        report.artifacts_checked,
        report.actions_checked
    );
    for p in &report.problems {
        let _ = writeln!(out, "  problem: {p}");
    }
    for w in &report.stray_work {
        let _ = writeln!(
            out,
            "  note: scratch of an interrupted or failed node: {} (reused by its next attempt, or removed by gc)",
            w.display()
        );
    }
    out.push_str(if report.is_ok() { "ok\n" } else { "store has problems (see above)\n" });
    out
}

pub fn gc(report: &GcReport) -> String {
    let verb = if report.dry_run { "would remove" } else { "removed" };
    let mut out = String::new();
    for (path, bytes) in &report.removed {
        let _ = writeln!(out, "  {verb} {} ({})", path.display(), human_bytes(*bytes));
    }
    let _ = writeln!(out, "{verb} {} items, {}", report.removed.len(), human_bytes(report.bytes));
    out
}

pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut x = n as f64;
    let mut u = 0;
    while x >= 1024.0 && u + 1 < UNITS.len() {
        x /= 1024.0;
        u += 1;
    }
    if u == 0 { format!("{n} B") } else { format!("{x:.1} {}", UNITS[u]) }
}

/// The fields of a run record worth a line.
pub fn run_summary(record: &Value) -> Value {
    let nodes = record["nodes"].as_array().map(Vec::as_slice).unwrap_or_default();
    let count = |s: &str| nodes.iter().filter(|n| n["status"] == s).count();
    json!({
        "id": record["id"],
        "outcome": record["outcome"],
        "manifest": record["manifest"]["path"],
        "profile": record["manifest"]["profile"],
        "digest": record["manifest"]["digest"],
        "executed": count("executed"),
        "cached": count("cached"),
        "failed": count("failed"),
        "commit": record["git"]["commit"],
        "dirty": record["git"]["dirty"],
    })
}

pub fn runs_table(records: &[Value]) -> String {
    let mut out = String::new();
    for r in records.iter().map(run_summary) {
        let digest = r["digest"].as_str().map(|d| &d[..12.min(d.len())]).unwrap_or("-");
        let _ = writeln!(
            out,
            "{}  {:<6}  {}  {}  executed {} cached {} failed {}",
            r["id"].as_str().unwrap_or("?"),
            r["outcome"].as_str().unwrap_or("?"),
            r["manifest"].as_str().unwrap_or("?"),
            digest,
            r["executed"],
            r["cached"],
            r["failed"]
        );
    }
    if records.is_empty() {
        out.push_str("no runs recorded yet\n");
    }
    out
}

pub fn run_details(record: &Value) -> String {
    let mut out = String::new();
    let s = run_summary(record);
    let _ = writeln!(out, "run      {}", s["id"].as_str().unwrap_or("?"));
    let _ = writeln!(out, "outcome  {}", s["outcome"].as_str().unwrap_or("?"));
    let profile = s["profile"].as_str().map_or_else(String::new, |p| format!(" (profile {p})"));
    let _ = writeln!(out, "manifest {}{profile}", s["manifest"].as_str().unwrap_or("?"));
    let _ = writeln!(out, "digest   {}", s["digest"].as_str().unwrap_or("?"));
    let _ = writeln!(out, "git      {} (dirty: {})", s["commit"].as_str().unwrap_or("none"), s["dirty"]);
    let _ = writeln!(
        out,
        "started  {}  finished {}",
        record["started_at"].as_str().unwrap_or("?"),
        record["finished_at"].as_str().unwrap_or("?")
    );
    let _ = writeln!(out, "versions {}", record["versions"]["tools"]);
    for n in record["nodes"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "  {:<8}  {}  key {}  artifact {}{}",
            n["status"].as_str().unwrap_or("?"),
            n["id"].as_str().unwrap_or("?"),
            n["key"].as_str().map(|k| &k[..12.min(k.len())]).unwrap_or("-"),
            n["artifact"].as_str().map(|k| &k[..12.min(k.len())]).unwrap_or("-"),
            n["ms"].as_u64().map(|ms| format!("  {ms} ms")).unwrap_or_default()
        );
    }
    out
}

/// Validates every ```toml block in the book that is a whole manifest (has `[experiment]`), or a
/// plugin entry (has `plugin =`, checked inside a minimal manifest). Blocks with `extends` are
/// skipped (their parent is not in the book).
pub fn book_check(dir: &Path) -> Result<ExitCode> {
    let src = dir.join("src");
    let mut files = Vec::new();
    collect_markdown(&src, &mut files).with_context(|| format!("cannot read {}", src.display()))?;
    files.sort();
    let scratch = tempfile::tempdir().context("cannot create a temporary directory")?;
    let mut checked = 0;
    let mut failures = 0;
    for file in &files {
        let text = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
        // A chapter's `# language.toml` block is checked as a pack, and is the pack its later
        // manifest snippets load.
        let mut pack = None;
        for (line, block) in toml_blocks(&text) {
            if block.contains("extends") {
                continue;
            }
            let manifest = if block.starts_with(PACK_SNIPPET) {
                pack = Some(block.clone());
                format!(
                    "[experiment]\nname = \"snippet\"\nseed = 0\n\n[languages.snippet]\nplugin = \"{}\"\n\
                     path = \"file:snippet-pack\"\n",
                    aurora_core::language::PLUGIN_ID
                )
            } else if block.contains("[experiment]") {
                block.clone()
            } else if block.contains("plugin =") {
                format!("[experiment]\nname = \"snippet\"\nseed = 0\n\n{block}")
            } else {
                continue;
            };
            let path = scratch.path().join("snippet.toml");
            std::fs::write(&path, &manifest).context("cannot write a snippet")?;
            create_referenced_files(scratch.path(), &manifest, pack.as_deref())?;
            checked += 1;
            let resolved = aurora_core::manifest::resolve(&path, &Default::default())
                .map_err(aurora_core::Error::from)
                .and_then(|m| aurora_core::plan::plan(m).map_err(aurora_core::Error::from));
            if let Err(e) = resolved {
                failures += 1;
                eprintln!("{}:{line}: this manifest snippet does not validate:\n{e}", file.display());
            }
        }
    }
    println!("{checked} manifest snippets checked in {} files, {failures} invalid", files.len());
    Ok(if failures == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// The first line of a book snippet that is a language pack's `language.toml`.
const PACK_SNIPPET: &str = "# language.toml";

/// Sources expand their `file:` globs when planning, so a snippet only validates if its files
/// exist: create an empty placeholder for each reference (a glob becomes one matching file). A
/// `language.pack` entry's `path` becomes a directory holding `pack` (the chapter's last
/// `language.toml` snippet) and an empty file for each file it ships.
fn create_referenced_files(dir: &Path, manifest: &str, pack: Option<&str>) -> Result<()> {
    for line in manifest.lines().filter(|l| l.trim_start().starts_with("path = \"file:")) {
        let Some(pack) = pack.filter(|_| manifest.contains(aurora_core::language::PLUGIN_ID)) else { continue };
        let reference = line.split('"').nth(1).and_then(|r| r.strip_prefix("file:")).unwrap_or_default();
        let pack_dir = dir.join(reference);
        std::fs::create_dir_all(&pack_dir).with_context(|| format!("cannot create {}", pack_dir.display()))?;
        std::fs::write(pack_dir.join(aurora_core::language::PACK_FILE), pack).context("cannot write a pack snippet")?;
        for shipped in pack.lines().filter(|l| l.trim_start().starts_with("file = ")) {
            if let Some(file) = shipped.split('"').nth(1) {
                std::fs::write(pack_dir.join(file), b"").with_context(|| format!("cannot create {file}"))?;
            }
        }
    }
    for reference in manifest.split('"').filter_map(|s| s.strip_prefix("file:")) {
        let path = dir.join(reference.replace(['*', '?'], "x"));
        if reference.starts_with('/') || reference.contains("..") || path.is_dir() {
            continue;
        }
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
        }
        if !path.exists() {
            std::fs::write(&path, b"").with_context(|| format!("cannot create {}", path.display()))?;
        }
    }
    Ok(())
}

fn collect_markdown(dir: &Path, out: &mut Vec<std::path::PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect_markdown(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "md") {
            out.push(path);
        }
    }
    Ok(())
}

/// (1-based line of the opening fence, block text) for every ```toml fenced block.
fn toml_blocks(text: &str) -> Vec<(usize, String)> {
    let mut blocks = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        match &mut current {
            None if trimmed.starts_with("```toml") => current = Some((i + 1, String::new())),
            Some(_) if trimmed.starts_with("```") => blocks.extend(current.take()),
            Some((_, block)) => {
                block.push_str(line);
                block.push('\n');
            }
            None => {}
        }
    }
    blocks
}

/// `aurora diff` (or its JSON).
pub fn run_diff(diff: &crate::diff::RunDiff, json: bool) -> String {
    if json {
        return format!("{}\n", serde_json::to_string_pretty(diff).expect("a diff serialises"));
    }
    let short = |s: &Option<String>| s.as_deref().map_or("-", |k| &k[..12.min(k.len())]).to_string();
    let (a, b) = (&diff.run_a, &diff.run_b);
    if diff.identical {
        return format!("runs {a} and {b} are identical: same manifest, node keys, artifacts and metrics\n");
    }
    let mut out = format!("runs {a} (A) and {b} (B) differ\n");
    if diff.manifest_digest_a != diff.manifest_digest_b || !diff.manifest.is_empty() {
        let digest = |d: &Value| d.as_str().map_or("-", |d| &d[..12.min(d.len())]).to_string();
        let _ = writeln!(out, "manifest {} -> {}", digest(&diff.manifest_digest_a), digest(&diff.manifest_digest_b));
        for c in &diff.manifest {
            let _ = writeln!(out, "  {}: {} -> {}", c.pointer, c.a, c.b);
        }
    }
    for n in &diff.nodes {
        let _ = writeln!(out, "node {}", n.id);
        if n.key_a != n.key_b {
            let _ =
                writeln!(out, "  key      {} -> {}: {}", short(&n.key_a), short(&n.key_b), n.key_changes.join("; "));
        }
        for c in &n.config {
            let _ = writeln!(out, "    config {}: {} -> {}", c.pointer, c.a, c.b);
        }
        if n.artifact_a != n.artifact_b {
            let _ = writeln!(out, "  artifact {} -> {}", short(&n.artifact_a), short(&n.artifact_b));
        }
        if n.status_a != n.status_b
            && [&n.status_a, &n.status_b].iter().any(|s| !matches!(s.as_str(), "executed" | "cached"))
        {
            let _ = writeln!(out, "  status   {} -> {}", n.status_a, n.status_b);
        }
        for m in &n.metrics {
            let change = m.relative.map(|r| format!(" ({:+.2}%)", r * 100.0)).unwrap_or_default();
            let _ = writeln!(out, "  metric   {}: {} -> {}{change}", m.name, m.a, m.b);
        }
    }
    for (side, ids) in [("A", &diff.only_in_a), ("B", &diff.only_in_b)] {
        if !ids.is_empty() {
            let _ = writeln!(out, "only in {side}: {}", ids.join(", "));
        }
    }
    out
}

/// Errors and notes of a run's nodes, for stderr after the table.
pub fn node_messages(reports: &[NodeReport]) -> String {
    let mut out = String::new();
    for r in reports {
        for note in &r.notes {
            let _ = writeln!(out, "note: node {}: {note}", r.id);
        }
        match (&r.error, r.status) {
            (Some(e), NodeStatus::Failed) => {
                let _ = writeln!(out, "error: node {} failed: {e}", r.id);
            }
            (Some(e), _) => {
                let _ = writeln!(out, "error: node {}: {e}", r.id);
            }
            (None, NodeStatus::Failed) => {
                let _ = writeln!(out, "error: node {} failed: (no message)", r.id);
            }
            (None, _) => {}
        }
    }
    out
}

/// `aurora push`'s summary (or its JSON).
pub fn push_report(remote: &str, pushed: &[aurora_core::remote::Pushed], json: bool) -> String {
    if json {
        let doc = json!({ "remote": remote, "nodes": pushed });
        return format!("{}\n", serde_json::to_string_pretty(&doc).expect("push reports serialise"));
    }
    let mut out = String::new();
    let id_width = pushed.iter().map(|p| p.id.len()).max().unwrap_or(4).max(4);
    let _ = writeln!(out, "remote {remote}");
    for p in pushed {
        let detail = match &p.error {
            Some(e) => format!("FAILED: {e}"),
            None if p.uploaded.objects == 0 => "already there".to_string(),
            None => format!("{} in {} objects", human_bytes(p.uploaded.bytes), p.uploaded.objects),
        };
        let _ = writeln!(out, "  {:<id_width$}  {}  {detail}", p.id, p.artifact.short());
    }
    let bytes: u64 = pushed.iter().map(|p| p.uploaded.bytes).sum();
    let _ = writeln!(
        out,
        "{} nodes pushed, {} sent",
        pushed.iter().filter(|p| p.error.is_none()).count(),
        human_bytes(bytes)
    );
    out
}
