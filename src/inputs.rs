//! `aurora plan --inputs` (what a study reads from disk, and what to fetch) and `aurora lock`
//! (the inputs lock, see [`aurora_core::lock`]).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use aurora_core::lock::{self, Reference, ScanError};
use aurora_core::manifest::FILE_PREFIX;
use aurora_core::plan::Plan;
use aurora_core::{Diagnostic, Diagnostics, Store};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};

use crate::output::human_bytes;

/// One `file:` input of a plan.
pub struct InputRow {
    /// As the manifest writes it, without `file:`.
    pub path: String,
    /// The entry that declares it (`sources.eng_web`).
    pub entry: String,
    pub nodes: Vec<String>,
    pub format: &'static str,
    /// Every file it stands for exists.
    pub present: bool,
    /// Files and bytes: from the lock when locked, else from the disk when present.
    pub files: Option<(usize, u64)>,
    pub locked: bool,
    /// The entry's `about` table.
    pub about: Value,
}

/// The format a reference's name says it holds.
fn format_of(path: &str, is_dir: bool) -> &'static str {
    const KNOWN: [(&str, &str); 15] = [
        (".parquet", "parquet"),
        (".jsonl.zst", "jsonl.zst"),
        (".jsonl.gz", "jsonl.gz"),
        (".jsonl", "jsonl"),
        (".json.gz", "json.gz"),
        (".json", "json"),
        (".csv", "csv"),
        (".txt", "text"),
        (".devtest", "text"),
        (".bin", "megatron"),
        (".idx", "megatron"),
        (".md", "text"),
        (".py", "text"),
        (".sh", "text"),
        (".sql", "text"),
    ];
    if is_dir {
        return "directory";
    }
    KNOWN.iter().find(|(ext, _)| path.ends_with(ext)).map_or("file", |(_, f)| f)
}

/// `/sources/eng_web/files/0` -> `sources.eng_web`.
fn entry_of(pointer: &str) -> String {
    pointer.trim_start_matches('/').splitn(3, '/').take(2).collect::<Vec<_>>().join(".")
}

/// Files and bytes under the inputs of `r` as the disk has them now (no hashing).
fn on_disk(plan: &Plan, r: &Reference) -> Option<(usize, u64)> {
    let mut files = 0;
    let mut bytes = 0;
    for input in &r.inputs {
        let path = plan.manifest.input_path(input);
        // The input itself may be a link; nothing inside is followed (a cycle would never end;
        // hashing refuses links inside anyway).
        let mut stack = vec![(path, true)];
        while let Some((p, top)) = stack.pop() {
            let meta = if top { std::fs::metadata(&p) } else { std::fs::symlink_metadata(&p) }.ok()?;
            if meta.is_dir() {
                stack.extend(std::fs::read_dir(&p).ok()?.flatten().map(|e| (e.path(), false)));
            } else {
                files += 1;
                bytes += meta.len();
            }
        }
    }
    Some((files, bytes))
}

pub fn rows(plan: &Plan) -> Vec<InputRow> {
    let locked: BTreeMap<&str, &lock::LockedInput> =
        plan.lock.iter().flat_map(|l| &l.inputs).map(|i| (i.reference.as_str(), i)).collect();
    lock::references(plan, None)
        .into_iter()
        .map(|(reference, r)| {
            let disk = on_disk(plan, &r);
            let lock = locked.get(reference.as_str());
            let files = match lock {
                Some(l) => Some((l.files.len(), l.files.iter().map(|f| f.size).sum())),
                None => disk,
            };
            let is_dir = r.inputs.len() == 1 && plan.manifest.input_path(&reference).is_dir();
            let entry = entry_of(&r.pointer);
            InputRow {
                path: reference.strip_prefix(FILE_PREFIX).unwrap_or(&reference).to_owned(),
                about: plan.manifest.about.get(&entry).cloned().unwrap_or(Value::Null),
                entry,
                nodes: r.nodes.into_iter().collect(),
                format: format_of(&reference, is_dir),
                present: disk.is_some(),
                files,
                locked: lock.is_some(),
            }
        })
        .collect()
}

pub fn json(rows: &[InputRow]) -> String {
    let list: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({
                "path": r.path, "entry": r.entry, "nodes": r.nodes, "format": r.format, "present": r.present,
                "locked": r.locked, "files": r.files.map(|f| f.0), "bytes": r.files.map(|f| f.1),
                "origin": r.about.get("origin"), "revision": r.about.get("revision"),
                "license": r.about.get("license"), "note": r.about.get("note"),
            })
        })
        .collect();
    format!("{}\n", serde_json::to_string_pretty(&list).expect("serialises"))
}

pub fn table(plan: &Plan, rows: &[InputRow]) -> String {
    let mut out = String::new();
    let profile = plan.manifest.profile.as_deref().unwrap_or("(none)");
    let missing = rows.iter().filter(|r| !r.present).count();
    let _ = writeln!(
        out,
        "{} `file:` inputs of profile {profile}: {} present, {missing} missing{}",
        rows.len(),
        rows.len() - missing,
        match &plan.lock {
            Some(l) => format!(
                "; {} locked in {}",
                rows.iter().filter(|r| r.locked).count(),
                lock::lock_path(Path::new(&l.manifest)).display()
            ),
            None => "; no inputs lock (`aurora lock` writes one)".to_owned(),
        }
    );
    for r in rows {
        let state = match (r.present, r.locked) {
            (true, true) => "present, locked",
            (true, false) => "present",
            (false, true) => "MISSING (locked)",
            (false, false) => "MISSING",
        };
        let size = r.files.map_or("-".to_owned(), |(n, b)| format!("{n} file(s), {}", human_bytes(b)));
        let _ = writeln!(out, "\n  {}  [{}]  {state}  {size}", r.path, r.format);
        let _ = writeln!(out, "    read by {} ({})", r.entry, r.nodes.join(", "));
        let text = |k: &str| r.about.get(k).and_then(Value::as_str);
        match (text("origin"), text("revision")) {
            (Some(o), Some(rev)) => _ = writeln!(out, "    origin: {o} (revision {rev})"),
            (Some(o), None) => _ = writeln!(out, "    origin: {o}"),
            _ => {}
        }
        if let Some(l) = text("license") {
            let _ = writeln!(out, "    license: {l}");
        }
        if let Some(n) = text("note") {
            let _ = writeln!(out, "    note: {n}");
        }
    }
    out
}

/// Hashes every file the plan's `file:` inputs stand for (`jobs` at a time, with progress) and
/// writes the lock beside the manifest, keeping the entries of inputs other profiles read.
pub fn lock(plan: &Plan, store: &Store, jobs: usize) -> Result<PathBuf> {
    let refs = lock::references(plan, None);
    let list: Vec<(&str, &Reference)> = refs.iter().map(|(k, r)| (k.as_str(), r)).collect();
    let total: u64 = refs.values().filter_map(|r| on_disk(plan, r)).map(|(_, b)| b).sum();
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("  hashing [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec}, eta {eta})")
            .expect("valid template")
            .progress_chars("=> "),
    );
    let terminal = std::io::stderr().is_terminal();
    let done = AtomicU64::new(0);
    let last = Mutex::new(Instant::now());
    let on_file = |size: u64| {
        let so_far = done.fetch_add(size, Ordering::Relaxed) + size;
        bar.set_position(so_far);
        let mut last = last.lock().unwrap_or_else(|p| p.into_inner());
        // A heartbeat where no bar shows, and the memo saved now and then so a killed lock resumes.
        if last.elapsed() >= Duration::from_secs(10) {
            *last = Instant::now();
            if !terminal {
                eprintln!("aurora lock: hashed {} of {}", human_bytes(so_far), human_bytes(total));
            }
            let _ = store.flush_memo();
        }
    };
    if !terminal {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let scanned = lock::scan(plan, store, &list, jobs, &on_file);
    bar.finish_and_clear();
    if let Err(e) = store.flush_memo() {
        // The memo is a cache: failing to save it costs a rehash next time, not correctness.
        eprintln!("warning: {e}");
    }
    let files = match scanned {
        Ok(files) => files,
        Err(ScanError::Missing(paths)) => {
            let d = Diagnostic::new(format!(
                "cannot lock: {} input(s) of the manifest are missing: {}",
                paths.len(),
                paths.iter().map(|p| format!("`{p}`")).collect::<Vec<_>>().join(", ")
            ))
            .help("put the data in place first (`aurora plan --inputs` lists what to fetch)");
            return Err(Diagnostics::from(d).into());
        }
        Err(ScanError::Unreadable(e)) => anyhow::bail!("cannot lock: {e}"),
    };
    let (count, bytes) = files.values().flatten().fold((0, 0), |(n, b), f| (n + 1, b + f.size));
    let lock = lock::merged(plan, plan.lock.as_ref(), files);
    let path = lock::write(&plan.manifest.path, &lock)
        .with_context(|| format!("cannot write {}", lock::lock_path(&plan.manifest.path).display()))?;
    eprintln!("locked {count} file(s), {} in {} input(s)", human_bytes(bytes), refs.len());
    Ok(path)
}
