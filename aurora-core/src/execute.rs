//! Execution: keys nodes as their inputs become known, answers from the cache, otherwise runs the
//! plugin under a per-key lock and publishes the artifact atomically.
//!
//! Keys use the *content digests* of inputs, so a node whose output bytes did not change leaves
//! its dependents cached (early cutoff). Independent nodes run in parallel (`jobs`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, mpsc};
use std::time::Instant;

use aurora_store::{Digest, PublishRequest, Store};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::cores::{CoreBudget, machine_cores};
use crate::diagnostic::{Diagnostic, Diagnostics};
use crate::explain::why_pending;
use crate::plan::{Plan, PlannedNode};
use crate::plugin::{ExecContext, InputSource, Progress};
use crate::remote::{Fetched, RemoteCache};

/// A node's state in a plan or a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeStatus {
    /// Its key is in the action cache and the artifact is in the store.
    Cached,
    /// Not in the cache (plan), or not run because an upstream node failed or the run stopped.
    Pending,
    /// Ran in this invocation and published its artifact.
    Executed,
    /// Found in the remote cache, downloaded, verified and published locally.
    Downloaded,
    Failed,
}

/// One node's line in a plan or run report (the `--json` shape of `nodes[]`).
#[derive(Debug, Clone, Serialize)]
pub struct NodeReport {
    pub id: String,
    pub plugin: String,
    /// Unknown while an upstream node is pending.
    pub key: Option<Digest>,
    pub status: NodeStatus,
    pub artifact: Option<Digest>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ms: Option<u64>,
    /// Why a node is pending.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Things worth knowing that did not fail the node (a remote copy that was rejected).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// Bytes downloaded from the remote cache for this node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub downloaded_bytes: Option<u64>,
    /// Bytes uploaded to the remote cache for this node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uploaded_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Map::is_empty")]
    pub metrics: Map<String, Value>,
    /// The plugin's estimate for this node (sizes, memory, tokens), shown by `aurora plan`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub estimate: Option<String>,
}

impl NodeReport {
    fn new(node: &PlannedNode, status: NodeStatus) -> NodeReport {
        NodeReport {
            id: node.id.clone(),
            plugin: node.plugin.id().to_string(),
            key: None,
            status,
            artifact: None,
            ms: None,
            reason: None,
            error: None,
            notes: Vec::new(),
            downloaded_bytes: None,
            uploaded_bytes: None,
            metrics: Map::new(),
            estimate: node.plugin.estimate(&node.config),
        }
    }
}

/// Things the CLI shows while a run goes on.
pub enum Event<'a> {
    Started {
        node: &'a str,
    },
    /// The node's key is being looked up in the remote cache (and downloaded on a hit).
    Fetching {
        node: &'a str,
        remote: &'a str,
    },
    /// A dispatcher handed the node to a scheduler (`detail`: "Slurm job 123").
    Dispatched {
        node: &'a str,
        detail: &'a str,
    },
    /// The node's artifact is being uploaded to the remote cache (`aurora push`).
    Uploading {
        node: &'a str,
        remote: &'a str,
    },
    /// Another process holds the node's lock; we wait for it (and then usually find it cached).
    Waiting {
        node: &'a str,
        holder: &'a str,
    },
    Finished {
        report: &'a NodeReport,
    },
}

pub trait Observer: Sync {
    fn event(&self, event: Event<'_>);
}

/// An observer that ignores everything.
pub struct Silent;
impl Observer for Silent {
    fn event(&self, _: Event<'_>) {}
}

#[derive(Clone, Default)]
pub struct RunOptions {
    /// Nodes executed at the same time (at least 1).
    pub jobs: usize,
    /// CPU cores that locally executed nodes share ([`CoreBudget`]); 0 means every core of this
    /// machine. Nodes run in parallel only as far as their threads fit.
    pub cpus: usize,
    /// Run only this node and what it depends on.
    pub until: Option<String>,
    /// Execute these nodes even when cached (locally or remotely).
    pub force: BTreeSet<String>,
    /// Looked up before executing a node that is not in the local store.
    pub remote: Option<Arc<dyn RemoteCache>>,
    /// Upload what this run executes to `remote`.
    pub upload: bool,
    /// Execute nothing: take what the local store and the remote cache have (`aurora pull`).
    /// A node found in neither is reported pending, and so are its dependents.
    pub fetch_only: bool,
    /// Execute nodes elsewhere (a Slurm job each) instead of in this process.
    pub dispatcher: Option<Arc<dyn Dispatcher>>,
}

/// Runs a node somewhere else (`aurora exec-node` in a Slurm job) against the same store, where
/// it publishes its artifact under its key as a local run would. The executor stays the DAG's
/// scheduler: it keys nodes, answers from the caches, and hands over only what must execute.
pub trait Dispatcher: Send + Sync {
    /// Starts the node and returns when it has ended. `Ok` means the job ended well (the
    /// executor then reads the artifact from the store); `Err` says why it did not (its log tail).
    fn run_node(&self, plan: &Plan, node: &PlannedNode, key: &Digest, observer: &dyn Observer) -> Result<(), String>;
}

impl std::fmt::Debug for RunOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunOptions")
            .field("jobs", &self.jobs)
            .field("cpus", &self.cpus)
            .field("until", &self.until)
            .field("force", &self.force)
            .field("remote", &self.remote.as_ref().map(|r| r.url()))
            .field("upload", &self.upload)
            .field("fetch_only", &self.fetch_only)
            .field("dispatcher", &self.dispatcher.is_some())
            .finish()
    }
}

/// Content digests of every `file:` input of the selected nodes, via the store's stat memo.
/// Missing files are manifest errors (exit 2), found before anything runs.
fn path_digests(
    plan: &Plan,
    store: &Store,
    selected: &BTreeSet<String>,
) -> Result<HashMap<String, Digest>, Diagnostics> {
    let (digests, problems) = path_digests_lenient(plan, store, selected);
    if problems.is_empty() { Ok(digests) } else { Err(Diagnostics(problems)) }
}

/// Like [`path_digests`], but missing or unreadable inputs are returned beside the digests
/// instead of failing: `aurora plan` shows a configuration whose data lives elsewhere (a
/// cluster path) without failing, and `run` refuses it.
fn path_digests_lenient(
    plan: &Plan,
    store: &Store,
    selected: &BTreeSet<String>,
) -> (HashMap<String, Digest>, Vec<Diagnostic>) {
    let mut digests = HashMap::new();
    let mut problems = Vec::new();
    for node in plan.nodes.iter().filter(|n| selected.contains(&n.id)) {
        for (name, input) in &node.inputs {
            let InputSource::Path(file_ref) = &input.source else { continue };
            if digests.contains_key(file_ref) {
                continue;
            }
            let path = plan.manifest.input_path(file_ref);
            if !path.exists() {
                let what = if crate::lock::is_glob(file_ref) { "matches no file" } else { "does not exist" };
                problems.push(
                    Diagnostic::new(format!("input `{name}` of `{}`: `{}` {what}", node.id, path.display()))
                        .at(plan.manifest.sources.value(&input.pointer))
                        .pointer(input.pointer.clone())
                        .expected("an existing file or directory (`file:` paths are relative to the manifest that declares them)")
                        .help("create the file, or fix the path"),
                );
                continue;
            }
            match store.hash_input(&path) {
                Ok(d) => {
                    digests.insert(file_ref.clone(), d);
                }
                Err(e) => problems.push(
                    Diagnostic::new(format!("input `{name}` of `{}` cannot be read: {e}", node.id))
                        .at(plan.manifest.sources.value(&input.pointer))
                        .pointer(input.pointer.clone()),
                ),
            }
        }
    }
    if let Err(e) = store.flush_memo() {
        // The memo is a cache: failing to save it costs speed next time, not correctness.
        eprintln!("warning: {e}");
    }
    (digests, problems)
}

/// Input digests of a node if every input is known.
fn input_digests(
    node: &PlannedNode,
    paths: &HashMap<String, Digest>,
    artifacts: &HashMap<String, Digest>,
) -> Option<BTreeMap<String, Digest>> {
    node.inputs
        .iter()
        .map(|(name, input)| {
            let d = match &input.source {
                InputSource::Path(f) => paths.get(f).copied(),
                InputSource::Node(id) => artifacts.get(id).copied(),
            };
            d.map(|d| (name.clone(), d))
        })
        .collect()
}

/// Cached artifact for a key, if both the action and its artifact are present.
fn cached(store: &Store, key: &Digest) -> Result<Option<aurora_store::ActionRecord>, aurora_store::StoreError> {
    Ok(store.read_action(key)?.filter(|a| store.has_artifact(&a.artifact)))
}

/// Status of every node without executing anything (`aurora plan`).
pub fn status(plan: &Plan, store: &Store) -> Result<Vec<NodeReport>, crate::Error> {
    let all: BTreeSet<String> = plan.nodes.iter().map(|n| n.id.clone()).collect();
    let (paths, _missing) = path_digests_lenient(plan, store, &all);
    let mut artifacts = HashMap::new();
    let mut reports = Vec::new();
    for node in &plan.nodes {
        let mut report = NodeReport::new(node, NodeStatus::Pending);
        match input_digests(node, &paths, &artifacts) {
            None => {
                let missing: Vec<String> = node
                    .inputs
                    .values()
                    .filter_map(|i| match &i.source {
                        InputSource::Path(f) if !paths.contains_key(f) => {
                            Some(format!("`{}` is missing", f.strip_prefix(crate::manifest::FILE_PREFIX).unwrap_or(f)))
                        }
                        _ => None,
                    })
                    .collect();
                let waiting: Vec<&str> = node.upstream().filter(|u| !artifacts.contains_key(*u)).collect();
                report.reason = Some(if missing.is_empty() {
                    format!("waits on {}", waiting.join(", "))
                } else {
                    format!("input {} (needed before `aurora run`)", missing.join(", "))
                });
            }
            Some(digests) => {
                let key = node.key(&digests);
                report.key = Some(key);
                match cached(store, &key)? {
                    Some(action) => {
                        report.status = NodeStatus::Cached;
                        report.artifact = Some(action.artifact);
                        artifacts.insert(node.id.clone(), action.artifact);
                    }
                    None => report.reason = Some(why_pending(store, node, &key, &digests)),
                }
            }
        }
        reports.push(report);
    }
    Ok(reports)
}

struct Done {
    index: usize,
    report: Result<NodeReport, crate::Error>,
}

/// Executes the plan. Returns one report per selected node, in plan order.
pub fn run(
    plan: &Plan,
    store: &Store,
    options: &RunOptions,
    observer: &dyn Observer,
    progress: &dyn Progress,
) -> Result<Vec<NodeReport>, crate::Error> {
    let mut selected: BTreeSet<String> = match &options.until {
        Some(id) => {
            if plan.node(id).is_none() {
                return Err(Diagnostics::from(plan.unknown_node(id, "--until")).into());
            }
            plan.ancestors_of(id)
        }
        None => plan.nodes.iter().map(|n| n.id.clone()).collect(),
    };
    for id in &options.force {
        if plan.node(id).is_none() {
            return Err(Diagnostics::from(plan.unknown_node(id, "--force")).into());
        }
        selected.insert(id.clone());
    }
    let paths = path_digests(plan, store, &selected)?;
    if let Some(lock) = &plan.lock {
        crate::lock::check(plan, store, lock, Some(&selected)).into_result()?;
    }
    let jobs = options.jobs.max(1);
    let cores = CoreBudget::new(options.cpus);
    let cores = &cores;

    let mut remaining: HashMap<usize, usize> = HashMap::new();
    let mut downstream: HashMap<usize, Vec<usize>> = HashMap::new();
    let mut ready: BTreeSet<usize> = BTreeSet::new();
    for (i, node) in plan.nodes.iter().enumerate().filter(|(_, n)| selected.contains(&n.id)) {
        let ups: BTreeSet<usize> = node.upstream().filter_map(|u| plan.position(u)).collect();
        for &u in &ups {
            downstream.entry(u).or_default().push(i);
        }
        if ups.is_empty() {
            ready.insert(i);
        } else {
            remaining.insert(i, ups.len());
        }
    }

    let mut artifacts: HashMap<String, Digest> = HashMap::new();
    let mut reports: BTreeMap<usize, NodeReport> = BTreeMap::new();
    let mut failed = false;
    let mut store_error = None;
    std::thread::scope(|scope| {
        let (tx, rx) = mpsc::channel::<Done>();
        let mut running = 0usize;
        loop {
            while !failed && running < jobs {
                let Some(i) = ready.pop_first() else { break };
                let node = &plan.nodes[i];
                let digests = input_digests(node, &paths, &artifacts).expect("ready nodes have all inputs");
                let tx = tx.clone();
                running += 1;
                scope.spawn(move || {
                    let report = execute_node(plan, store, (i, node), &digests, options, cores, observer, progress);
                    // The receiver outlives every worker (it is dropped after the scope).
                    let _ = tx.send(Done { index: i, report });
                });
            }
            if running == 0 {
                break;
            }
            let done = rx.recv().expect("a running worker always reports");
            running -= 1;
            let report = match done.report {
                Ok(r) => r,
                Err(e) => {
                    store_error.get_or_insert(e);
                    failed = true;
                    continue;
                }
            };
            observer.event(Event::Finished { report: &report });
            if let Some(a) = report.artifact.filter(|_| report.status != NodeStatus::Failed) {
                artifacts.insert(report.id.clone(), a);
                for &d in downstream.get(&done.index).map(Vec::as_slice).unwrap_or_default() {
                    let r = remaining.get_mut(&d).expect("downstream nodes have a count");
                    *r -= 1;
                    if *r == 0 {
                        ready.insert(d);
                    }
                }
            } else if report.status == NodeStatus::Failed {
                failed = true;
            }
            reports.insert(done.index, report);
        }
    });
    if let Some(e) = store_error {
        return Err(e);
    }
    // Whatever did not run (upstream failed) is reported pending, in plan order.
    for (i, node) in plan.nodes.iter().enumerate().filter(|(_, n)| selected.contains(&n.id)) {
        reports.entry(i).or_insert_with(|| {
            let mut r = NodeReport::new(node, NodeStatus::Pending);
            r.reason = Some(if failed {
                "not run: an earlier node failed".to_string()
            } else {
                "not run: an upstream node is pending".to_string()
            });
            r
        });
    }
    Ok(reports.into_values().collect())
}

/// Executes (or finds cached) the node at `position` in the plan, which is its priority for
/// `cores`.
#[allow(clippy::too_many_arguments)]
fn execute_node(
    plan: &Plan,
    store: &Store,
    (position, node): (usize, &PlannedNode),
    digests: &BTreeMap<String, Digest>,
    options: &RunOptions,
    cores: &CoreBudget,
    observer: &dyn Observer,
    progress: &dyn Progress,
) -> Result<NodeReport, crate::Error> {
    let force = options.force.contains(&node.id);
    let started = Instant::now();
    let key = node.key(digests);
    let mut report = NodeReport::new(node, NodeStatus::Cached);
    report.key = Some(key);
    if !force && let Some(action) = cached(store, &key)? {
        report.artifact = Some(action.artifact);
        report.metrics = action.metrics;
        return Ok(report);
    }
    let holder = format!("pid {} running {}", std::process::id(), node.id);
    let lock = store.lock_node(&key, &holder, &mut |h| observer.event(Event::Waiting { node: &node.id, holder: h }))?;
    // Another process may have produced it while we waited for the lock.
    if !force && let Some(action) = cached(store, &key)? {
        report.artifact = Some(action.artifact);
        report.metrics = action.metrics;
        return Ok(report);
    }
    if !force && let Some(remote) = &options.remote {
        observer.event(Event::Fetching { node: &node.id, remote: remote.url() });
        match remote.fetch(store, &lock) {
            Ok(Fetched::Hit { record, bytes }) => {
                report.status = NodeStatus::Downloaded;
                report.artifact = Some(record.artifact);
                report.metrics = record.metrics;
                report.downloaded_bytes = Some(bytes);
                report.ms = Some(started.elapsed().as_millis() as u64);
                return Ok(report);
            }
            Ok(Fetched::Miss) => {}
            Ok(Fetched::Rejected { reason }) => {
                report.notes.push(format!("the remote cache's copy was rejected, so the node runs here: {reason}"))
            }
            Err(e) => {
                report.status = NodeStatus::Failed;
                // The remote's errors name it already.
                report.error = Some(format!("{e}\n(check AURORA_REMOTE and its credentials, or run without --remote)"));
                return Ok(report);
            }
        }
    }
    if options.fetch_only {
        report.status = NodeStatus::Pending;
        report.reason = Some(match &options.remote {
            Some(remote) => format!("in neither the local store nor {}", remote.url()),
            None => "not in the local store (and no remote cache is configured)".to_string(),
        });
        return Ok(report);
    }
    observer.event(Event::Started { node: &node.id });
    if let Some(dispatcher) = &options.dispatcher {
        // The job takes the lock itself; until it does, a second aurora may take it first (then
        // the job waits, and finds the node cached).
        drop(lock);
        let outcome = dispatcher.run_node(plan, node, &key, observer);
        report.ms = Some(started.elapsed().as_millis() as u64);
        match (outcome, cached(store, &key)?) {
            (Ok(()), Some(action)) => {
                report.status = NodeStatus::Executed;
                report.artifact = Some(action.artifact);
                report.metrics = action.metrics;
            }
            (Ok(()), None) => {
                report.status = NodeStatus::Failed;
                report.error = Some("the job ended but published nothing under the node's key: see its log (and check that the store is on a file system the compute nodes share)".to_string());
            }
            (Err(message), _) => {
                report.status = NodeStatus::Failed;
                report.error = Some(message);
            }
        }
        if report.status == NodeStatus::Executed {
            upload(options, plan, store, &mut report)?;
        }
        return Ok(report);
    }
    let grant = cores.acquire(position, cores.request(&node.plugin.resources(&node.config)));
    // A node's time is its execution's, not its wait for cores.
    let started = Instant::now();
    let work = store.prepare_work(&lock)?;
    let mut log: Vec<u8> = Vec::new();
    let inputs = input_paths(plan, store, node, digests);
    let outcome = invoke_plugin(node, &inputs, &work, grant.cores(), &mut log, progress);
    drop(grant);
    report.ms = Some(started.elapsed().as_millis() as u64);
    match outcome {
        Ok(outcome) => {
            let action = store.publish(
                &lock,
                work,
                PublishRequest {
                    node_id: node.id.clone(),
                    plugin: node.plugin.id().to_string(),
                    plugin_version: node.plugin.version().to_string(),
                    components: node.key_components(digests),
                    metrics: outcome.metrics,
                    log: Some(log),
                },
            )?;
            report.status = NodeStatus::Executed;
            report.artifact = Some(action.artifact);
            report.metrics = action.metrics;
            upload(options, plan, store, &mut report)?;
        }
        Err(e) => {
            // Keep the failed attempt's log next to its scratch for inspection; the next attempt
            // empties `out/` but this file stays until the node succeeds.
            let log_path = work.out.with_file_name("last-failure.log");
            let _ = std::fs::write(&log_path, &log);
            report.status = NodeStatus::Failed;
            let tail = e.log_tail.clone().unwrap_or_else(|| log_tail(&log, 20));
            let mut message = e.message;
            if !tail.trim().is_empty() {
                message.push_str(&format!("\n--- last lines of the log ({}) ---\n{tail}", log_path.display()));
            }
            report.error = Some(message);
        }
    }
    Ok(report)
}

/// With `--remote-upload`, sends what the node just published to the remote cache. A failure
/// leaves the node executed (the artifact is safe in the local store) with an error that says
/// how to retry.
fn upload(options: &RunOptions, plan: &Plan, store: &Store, report: &mut NodeReport) -> Result<(), crate::Error> {
    let (true, Some(remote), Some(key)) = (options.upload, &options.remote, report.key) else { return Ok(()) };
    let Some(action) = store.read_action(&key)? else { return Ok(()) };
    match remote.upload(store, &action, false) {
        Ok(uploaded) => report.uploaded_bytes = Some(uploaded.bytes),
        Err(e) => {
            report.error = Some(format!(
                "executed and published locally, but uploading to {} failed: {e}\n(retry with `aurora push {}`)",
                remote.url(),
                display_manifest(plan)
            ))
        }
    }
    Ok(())
}

/// Executes one node whose upstream nodes are all in the store, here (`aurora exec-node`, what
/// a Slurm job of `--executor slurm` runs). Fails with a located message when an input is not
/// known yet.
pub fn run_one(
    plan: &Plan,
    store: &Store,
    id: &str,
    observer: &dyn Observer,
    progress: &dyn Progress,
) -> Result<NodeReport, crate::Error> {
    let node = plan.node(id).ok_or_else(|| Diagnostics::from(plan.unknown_node(id, "--node")))?;
    let selected: BTreeSet<String> = [id.to_string()].into();
    let paths = path_digests(plan, store, &selected)?;
    if let Some(lock) = &plan.lock {
        crate::lock::check(plan, store, lock, Some(&selected)).into_result()?;
    }
    let reports = status(plan, store)?;
    let artifacts: HashMap<String, Digest> =
        reports.iter().filter_map(|r| r.artifact.map(|a| (r.id.clone(), a))).collect();
    let Some(digests) = input_digests(node, &paths, &artifacts) else {
        let waiting: Vec<&str> = node.upstream().filter(|u| !artifacts.contains_key(*u)).collect();
        return Err(Diagnostics::from(
            Diagnostic::new(format!("cannot execute `{id}` alone: {} not in the store", waiting.join(", ")))
                .help(format!("run them first: `aurora run {} --until {id}`", display_manifest(plan))),
        )
        .into());
    };
    let position = plan.position(id).expect("the node is in the plan");
    let options = RunOptions { jobs: 1, ..RunOptions::default() };
    execute_node(plan, store, (position, node), &digests, &options, &CoreBudget::new(0), observer, progress)
}

/// Where the node's inputs are: a `file:` input's path, an upstream node's artifact directory.
fn input_paths(
    plan: &Plan,
    store: &Store,
    node: &PlannedNode,
    digests: &BTreeMap<String, Digest>,
) -> BTreeMap<String, PathBuf> {
    node.inputs
        .iter()
        .map(|(name, input)| {
            let path = match &input.source {
                InputSource::Path(f) => plan.manifest.input_path(f),
                InputSource::Node(_) => store.artifact_dir(&digests[name]),
            };
            (name.clone(), path)
        })
        .collect()
}

/// Runs the node's plugin on prepared scratch directories with `cores` granted, turning a panic
/// into a failure.
fn invoke_plugin(
    node: &PlannedNode,
    inputs: &BTreeMap<String, PathBuf>,
    work: &aurora_store::WorkDir,
    cores: usize,
    log: &mut Vec<u8>,
    progress: &dyn Progress,
) -> Result<crate::plugin::ExecOutcome, crate::plugin::PluginError> {
    let mut ctx = ExecContext {
        node_id: &node.id,
        config: &node.config,
        seed: node.seed,
        inputs,
        out_dir: &work.out,
        resume_dir: &work.resume,
        cores,
        log,
        progress,
    };
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| node.plugin.execute(&mut ctx))).unwrap_or_else(|panic| {
        Err(crate::plugin::PluginError::new(format!("the plugin panicked: {}", panic_message(&panic))))
    })
}

/// Result of re-executing a cached node without the cache.
#[derive(Debug, Serialize)]
pub struct VerifyOutcome {
    pub key: Digest,
    pub artifact: Digest,
    /// `changed: PATH`, `missing: PATH`, `extra: PATH`; empty when the bytes are identical.
    pub differences: Vec<String>,
}

/// Re-executes one cached node from scratch (no resume state) and compares its outputs with the
/// cached artifact, file by file. Publishes nothing.
pub fn verify_node(
    plan: &Plan,
    store: &Store,
    id: &str,
    observer: &dyn Observer,
) -> Result<VerifyOutcome, crate::Error> {
    let node = plan.node(id).ok_or_else(|| Diagnostics::from(plan.unknown_node(id, "--node")))?;
    let reports = status(plan, store)?;
    let report = reports.iter().find(|r| r.id == id).expect("status reports every node");
    let (Some(key), Some(artifact), NodeStatus::Cached) = (report.key, report.artifact, report.status) else {
        let manifest = display_manifest(plan);
        return Err(Diagnostics::from(
            Diagnostic::new(format!(
                "cannot verify `{id}`: it is not in the cache ({})",
                report.reason.as_deref().unwrap_or("pending")
            ))
            .help(format!("run it first: `aurora run {manifest} --until {id}`")),
        )
        .into());
    };
    let selected: BTreeSet<String> = [id.to_string()].into();
    let paths = path_digests(plan, store, &selected)?;
    let artifacts: HashMap<String, Digest> =
        reports.iter().filter_map(|r| r.artifact.map(|a| (r.id.clone(), a))).collect();
    let digests = input_digests(node, &paths, &artifacts).expect("a cached node's inputs are known");
    observer.event(Event::Started { node: id });
    let holder = format!("pid {} verifying {id}", std::process::id());
    let lock = store.lock_node(&key, &holder, &mut |h| observer.event(Event::Waiting { node: id, holder: h }))?;
    let work = store.prepare_work(&lock)?;
    let scratch = work.out.parent().map(Path::to_path_buf);
    // Verification must not resume from a checkpoint: it re-derives the bytes from scratch.
    let fresh = std::fs::remove_dir_all(&work.resume).and_then(|_| std::fs::create_dir_all(&work.resume));
    if let Err(e) = fresh.or_else(|e| {
        if e.kind() == std::io::ErrorKind::NotFound { std::fs::create_dir_all(&work.resume) } else { Err(e) }
    }) {
        return Err(aurora_store::StoreError::Io {
            op: "reset",
            path: work.resume.clone(),
            hint: "check permissions in the store's work/ directory".to_string(),
            source: e,
        }
        .into());
    }
    let mut log = Vec::new();
    let inputs = input_paths(plan, store, node, &digests);
    let outcome = invoke_plugin(node, &inputs, &work, machine_cores(), &mut log, &crate::plugin::NoProgress);
    let result = match outcome {
        Err(e) => Err(Diagnostics::from(Diagnostic::new(format!(
            "re-executing `{id}` failed: {}\n{}",
            e.message,
            e.log_tail.unwrap_or_else(|| log_tail(&log, 20))
        )))
        .into()),
        Ok(_) => {
            let (_, files) = aurora_store::hash_tree(&work.out)?;
            let cached = store.read_artifact_manifest(&artifact)?.files;
            Ok(VerifyOutcome { key, artifact, differences: compare_files(&cached, &files) })
        }
    };
    if let Some(scratch) = scratch {
        // Scratch of an unpublished attempt is plain writable files; leftovers are cleaned by gc.
        let _ = std::fs::remove_dir_all(&scratch);
    }
    drop(lock);
    result
}

fn display_manifest(plan: &Plan) -> String {
    crate::manifest::display_path(&plan.manifest.path)
}

/// File-by-file differences between two artifact file lists (both sorted by path).
fn compare_files(expected: &[aurora_store::FileEntry], actual: &[aurora_store::FileEntry]) -> Vec<String> {
    let expected: BTreeMap<&str, &Digest> = expected.iter().map(|f| (f.path.as_str(), &f.blake3)).collect();
    let actual: BTreeMap<&str, &Digest> = actual.iter().map(|f| (f.path.as_str(), &f.blake3)).collect();
    let mut out = Vec::new();
    for (path, digest) in &expected {
        match actual.get(path) {
            None => out.push(format!("missing: {path}")),
            Some(d) if d != digest => out.push(format!("changed: {path}")),
            Some(_) => {}
        }
    }
    out.extend(actual.keys().filter(|p| !expected.contains_key(*p)).map(|p| format!("extra: {p}")));
    out
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_string())
}

/// The last `n` lines of a log.
pub fn log_tail(log: &[u8], n: usize) -> String {
    let text = String::from_utf8_lossy(log);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
