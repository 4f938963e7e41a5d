//! The inputs lock: `M.inputs.lock` beside a manifest `M.toml` records, for every `file:`
//! reference of a plan (a file, a directory or a glob, as the manifest writes it after profile
//! and `--set`), the files it stands for with their sizes and blake3 digests. `aurora lock`
//! writes it; `aurora plan` and `aurora run` compare the disk with it before anything runs and
//! name every file that changed, is missing or is extra; and the digest of the entries a plan
//! uses enters the manifest digest, so a run record names the exact bytes of its data, not just
//! their paths. Entries of references another profile uses are kept, so one lock serves every
//! profile of a manifest. DVC's `.dvc` files are the nearest relative; Megatron has none.
//!
//! Hashing goes through the store's stat memo: a file already hashed (by a run, a plan or an
//! interrupted `aurora lock`) costs one `stat`, so locking terabytes resumes where it stopped.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use aurora_store::{Digest, Store};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::canonical::digest_json;
use crate::diagnostic::{Diagnostic, Diagnostics};
use crate::manifest::FILE_PREFIX;
use crate::plan::Plan;
use crate::plugin::InputSource;

pub const LOCK_VERSION: u32 = 1;
const LOCK_EXTENSION: &str = "inputs.lock";

/// `experiments/aurora-m.toml` -> `experiments/aurora-m.inputs.lock`.
pub fn lock_path(manifest: &Path) -> PathBuf {
    manifest.with_extension(LOCK_EXTENSION)
}

/// The lock file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputsLock {
    pub version: u32,
    /// The manifest it was written for, relative to the project root.
    pub manifest: String,
    /// By reference, sorted.
    #[serde(default, rename = "input")]
    pub inputs: Vec<LockedInput>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockedInput {
    /// The `file:` reference as the resolved manifest writes it (relative to the project root).
    pub reference: String,
    pub files: Vec<LockedFile>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockedFile {
    /// Relative to the project root.
    pub path: String,
    pub size: u64,
    pub blake3: String,
}

/// One `file:` reference of a plan: where the manifest writes it and the inputs it gave nodes
/// (a glob gives one per matching file; one that matches nothing gives itself).
#[derive(Debug, Clone)]
pub struct Reference {
    pub pointer: String,
    /// `file:` inputs of the nodes, sorted.
    pub inputs: BTreeSet<String>,
    /// Nodes that read it.
    pub nodes: BTreeSet<String>,
}

/// Every `file:` reference the nodes in `selected` (every node when `None`) read, by reference.
pub fn references(plan: &Plan, selected: Option<&BTreeSet<String>>) -> BTreeMap<String, Reference> {
    let mut out: BTreeMap<String, Reference> = BTreeMap::new();
    for node in plan.nodes.iter().filter(|n| selected.is_none_or(|s| s.contains(&n.id))) {
        for input in node.inputs.values() {
            let InputSource::Path(file_ref) = &input.source else { continue };
            // The pattern the manifest wrote where the input came from, else the input itself.
            let written = plan.manifest.value.pointer(&input.pointer).and_then(Value::as_str);
            let reference = written.filter(|w| w.starts_with(FILE_PREFIX)).unwrap_or(file_ref).to_owned();
            let entry = out.entry(reference).or_insert_with(|| Reference {
                pointer: input.pointer.clone(),
                inputs: BTreeSet::new(),
                nodes: BTreeSet::new(),
            });
            entry.inputs.insert(file_ref.clone());
            entry.nodes.insert(node.id.clone());
        }
    }
    out
}

/// Whether a reference is a glob (`*`, `?` or `[`).
pub fn is_glob(reference: &str) -> bool {
    reference.contains(['*', '?', '['])
}

/// Reads the lock beside `manifest`, if there is one. A lock that does not parse, of another
/// version or written for another manifest is an error.
pub fn read(manifest: &Path, project_root: &Path) -> Result<Option<InputsLock>, Diagnostic> {
    let path = lock_path(manifest);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Diagnostic::new(format!("cannot read the inputs lock {}: {e}", path.display()))),
    };
    let relock = format!("rerun `aurora lock {}` to rewrite it", display(manifest, project_root));
    let lock: InputsLock = toml::from_str(&text).map_err(|e| {
        Diagnostic::new(format!("{}: not a valid inputs lock: {}", path.display(), e.message()))
            .expected("the file `aurora lock` writes")
            .help(relock.clone())
    })?;
    if lock.version != LOCK_VERSION {
        return Err(Diagnostic::new(format!(
            "{}: inputs lock version {} (this aurora reads version {LOCK_VERSION})",
            path.display(),
            lock.version
        ))
        .help(relock.clone()));
    }
    let mut lock = lock;
    lock.inputs.sort_by(|a, b| a.reference.cmp(&b.reference));
    if let Some(pair) = lock.inputs.windows(2).find(|w| w[0].reference == w[1].reference) {
        return Err(Diagnostic::new(format!("{}: `{}` is locked twice", path.display(), pair[0].reference))
            .expected("each reference once, as `aurora lock` writes it")
            .help(relock));
    }
    for input in &mut lock.inputs {
        input.files.sort();
    }
    let mine = display(manifest, project_root);
    if lock.manifest != mine {
        return Err(Diagnostic::new(format!(
            "{}: this inputs lock was written for `{}`, not `{mine}`",
            path.display(),
            lock.manifest
        ))
        .expected(format!("a lock written by `aurora lock {mine}`"))
        .help(format!("remove it and run `aurora lock {mine}`, or use the manifest it belongs to")));
    }
    Ok(Some(lock))
}

/// `path` relative to the project root, with `/`.
fn display(path: &Path, project_root: &Path) -> String {
    path.strip_prefix(project_root).unwrap_or(path).to_string_lossy().replace('\\', "/")
}

/// Writes `lock` as TOML beside `manifest` (atomically: a temporary file renamed).
pub fn write(manifest: &Path, lock: &InputsLock) -> std::io::Result<PathBuf> {
    let path = lock_path(manifest);
    let mut text = format!(
        "# Written by `aurora lock {}`: the files each `file:` input of the manifest stood for, with\n# their sizes \
         and blake3 digests. `aurora plan` and `aurora run` compare the disk with it. Do not edit.\n",
        lock.manifest
    );
    text.push_str(&toml::to_string(lock).expect("a lock serialises"));
    let tmp = path.with_extension("lock.tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

/// The files each of `refs` stands for now (by reference, each sorted by path), hashed by
/// `jobs` threads through the store's memo; or every input that does not exist. `on_file(size)`
/// is called as each file is done.
pub fn scan(
    plan: &Plan,
    store: &Store,
    refs: &[(&str, &Reference)],
    jobs: usize,
    on_file: &(dyn Fn(u64) + Sync),
) -> Result<BTreeMap<String, Vec<LockedFile>>, ScanError> {
    let inputs: Vec<&String> = refs.iter().flat_map(|(_, r)| &r.inputs).collect::<BTreeSet<_>>().into_iter().collect();
    let missing: Vec<String> = inputs
        .iter()
        .filter(|i| !plan.manifest.input_path(i).exists())
        .map(|i| i.strip_prefix(FILE_PREFIX).unwrap_or(i).to_owned())
        .collect();
    if !missing.is_empty() {
        return Err(ScanError::Missing(missing));
    }
    // One work item per file (a directory's files apart), so a large directory is hashed in
    // parallel and reported (and memoised) file by file.
    let mut listed: BTreeMap<&str, Vec<PathBuf>> = BTreeMap::new();
    for input in &inputs {
        let files = store
            .input_file_list(&plan.manifest.input_path(input))
            .map_err(|e| ScanError::Unreadable(e.to_string()))?;
        listed.insert(input.as_str(), files);
    }
    let items: Vec<&PathBuf> = listed.values().flatten().collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let done = std::sync::Mutex::new(BTreeMap::new());
    std::thread::scope(|scope| {
        for _ in 0..jobs.clamp(1, items.len().max(1)) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(path) = items.get(i) else { break };
                    let hashed = store.input_file(path);
                    if let Ok((size, _)) = &hashed {
                        on_file(*size);
                    }
                    done.lock().unwrap_or_else(|p| p.into_inner()).insert(i, hashed);
                }
            });
        }
    });
    let done = done.into_inner().unwrap_or_else(|p| p.into_inner());
    let mut hashed: BTreeMap<&Path, (u64, Digest)> = BTreeMap::new();
    for (i, result) in done {
        hashed.insert(items[i].as_path(), result.map_err(|e| ScanError::Unreadable(e.to_string()))?);
    }
    let mut out = BTreeMap::new();
    for (reference, r) in refs {
        let mut files: Vec<LockedFile> = r
            .inputs
            .iter()
            .flat_map(|input| &listed[input.as_str()])
            .map(|path| {
                let (size, digest) = hashed[path.as_path()];
                LockedFile { path: display(path, &plan.manifest.project_root), size, blake3: digest.to_string() }
            })
            .collect();
        files.sort();
        files.dedup();
        out.insert((*reference).to_owned(), files);
    }
    Ok(out)
}

/// Why a reference could not be scanned.
#[derive(Debug)]
pub enum ScanError {
    /// These inputs (project-relative) do not exist.
    Missing(Vec<String>),
    Unreadable(String),
}

/// The digest of the lock entries `plan` reads (`None` without a lock or when it locks none of
/// them): what the manifest digest adds.
pub fn digest_of_used(lock: &InputsLock, plan: &Plan) -> Option<Digest> {
    let used = references(plan, None);
    let entries: Vec<&LockedInput> = lock.inputs.iter().filter(|i| used.contains_key(&i.reference)).collect();
    (!entries.is_empty()).then(|| digest_json(&serde_json::to_value(&entries).expect("entries serialise")))
}

/// How the disk compares with the lock, for the nodes a command touches.
#[derive(Debug, Default)]
pub struct LockCheck {
    /// Files that changed or are extra, each located at its reference.
    pub differ: Vec<Diagnostic>,
    /// Locked files that are gone (`aurora plan` shows them, `aurora run` refuses them).
    pub missing: Vec<Diagnostic>,
    /// References the lock does not cover (it was written for another profile, or before they
    /// were added).
    pub unlocked: Vec<String>,
    /// References checked.
    pub checked: usize,
}

/// Compares what `selected`'s `file:` references stand for now with `lock`. Inputs that do not
/// exist and that the lock does not know are left to the caller (they are "missing", the same
/// with or without a lock).
pub fn check(plan: &Plan, store: &Store, lock: &InputsLock, selected: Option<&BTreeSet<String>>) -> LockCheck {
    let locked: BTreeMap<&str, &LockedInput> = lock.inputs.iter().map(|i| (i.reference.as_str(), i)).collect();
    let lock_name = lock_path(&plan.manifest.path).file_name().map(|n| n.to_string_lossy().into_owned());
    let lock_name = lock_name.unwrap_or_default();
    let relock = format!(
        "restore the locked bytes, or accept the new ones with `aurora lock {}{}`",
        display(&plan.manifest.path, &plan.manifest.project_root),
        plan.manifest.profile.as_deref().map(|p| format!(" -p {p}")).unwrap_or_default()
    );
    let mut out = LockCheck::default();
    for (reference, r) in references(plan, selected) {
        let Some(entry) = locked.get(reference.as_str()) else {
            out.unlocked.push(reference);
            continue;
        };
        out.checked += 1;
        let at = |message: String| {
            Diagnostic::new(message)
                .at(plan.manifest.sources.value(&r.pointer))
                .pointer(r.pointer.clone())
                .help(relock.clone())
        };
        let now = match scan(plan, store, &[(reference.as_str(), &r)], 1, &|_| {}) {
            Ok(mut files) => files.remove(&reference).unwrap_or_default(),
            // A glob that matches nothing gives the pattern itself as its one missing input.
            Err(ScanError::Missing(_)) if is_glob(&reference) && r.inputs.len() == 1 => Vec::new(),
            Err(ScanError::Missing(paths)) => {
                let shown: Vec<String> = paths.iter().map(|p| format!("`{p}`")).collect();
                out.missing.push(at(format!(
                    "`{reference}` is locked in {lock_name} but {} {} missing",
                    shown.join(", "),
                    if paths.len() == 1 { "is" } else { "are" }
                )));
                continue;
            }
            Err(ScanError::Unreadable(e)) => {
                out.differ.push(at(format!("`{reference}` cannot be read to compare with {lock_name}: {e}")));
                continue;
            }
        };
        let before: BTreeMap<&str, &LockedFile> = entry.files.iter().map(|f| (f.path.as_str(), f)).collect();
        let after: BTreeMap<&str, &LockedFile> = now.iter().map(|f| (f.path.as_str(), f)).collect();
        for (path, was) in &before {
            match after.get(path) {
                None => out.missing.push(at(format!(
                    "`{path}` is locked in {lock_name} (as part of `{reference}`) but is missing ({} bytes, blake3 \
                     {})",
                    was.size,
                    short(&was.blake3)
                ))),
                Some(is) if is.blake3 != was.blake3 => out.differ.push(at(format!(
                    "`{path}` changed since {lock_name} was written: blake3 {} expected, {} found ({} -> {} bytes)",
                    short(&was.blake3),
                    short(&is.blake3),
                    was.size,
                    is.size
                ))),
                Some(_) => {}
            }
        }
        for path in after.keys().filter(|p| !before.contains_key(*p)) {
            out.differ.push(at(format!("`{path}` matches `{reference}` but is not in {lock_name}")));
        }
    }
    out
}

/// The first 12 hex digits, as the CLI shows digests.
fn short(hex: &str) -> &str {
    hex.get(..12).unwrap_or(hex)
}

/// A lock of `plan`'s references, keeping `previous`'s entries of references this plan does not
/// use. `files` are the scanned references.
pub fn merged(plan: &Plan, previous: Option<&InputsLock>, files: BTreeMap<String, Vec<LockedFile>>) -> InputsLock {
    let mut inputs: BTreeMap<String, Vec<LockedFile>> =
        previous.map(|p| p.inputs.iter().map(|i| (i.reference.clone(), i.files.clone())).collect()).unwrap_or_default();
    inputs.extend(files);
    InputsLock {
        version: LOCK_VERSION,
        manifest: display(&plan.manifest.path, &plan.manifest.project_root),
        inputs: inputs.into_iter().map(|(reference, files)| LockedInput { reference, files }).collect(),
    }
}

impl LockCheck {
    /// Every problem as diagnostics (exit code 2): what `aurora run` refuses to start with.
    pub fn into_result(self) -> Result<(), Diagnostics> {
        let problems: Vec<Diagnostic> = self.differ.into_iter().chain(self.missing).collect();
        if problems.is_empty() { Ok(()) } else { Err(Diagnostics(problems)) }
    }
}
