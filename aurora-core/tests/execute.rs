//! The executor, in process, with a test plugin: caching, the stat memo, resumable scratch,
//! `--until`, `--force`, parallel jobs.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use aurora_core::Store;
use aurora_core::diagnostic::Diagnostics;
use aurora_core::execute::{NodeReport, NodeStatus, RunOptions, Silent, run, status};
use aurora_core::manifest::{FILE_PREFIX, ResolveOptions, resolve};
use aurora_core::plan::{Plan, plan};
use aurora_core::plugin::{
    Entry, ExecContext, ExecOutcome, InputSource, InputSpec, NoProgress, NodeSpec, PlanContext, Plugin, PluginError,
    PluginKind,
};
use schemars::JsonSchema;
use serde::Deserialize;

/// Executions of the test plugin in this process, by node id.
static EXECUTIONS: std::sync::Mutex<BTreeMap<String, usize>> = std::sync::Mutex::new(BTreeMap::new());
/// Rendezvous nodes running now, and the most seen at once (other tests' nodes never count).
static RUNNING: AtomicUsize = AtomicUsize::new(0);
static MAX_RUNNING: AtomicUsize = AtomicUsize::new(0);
/// Rendezvous nodes that have started (never decremented, so no arrival can be missed).
static ARRIVED: AtomicUsize = AtomicUsize::new(0);

/// `exec.concat`: writes `text` followed by the `out.txt` (or the file) of each input.
#[derive(Debug, Clone, Default)]
struct Concat;

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct ConcatConfig {
    text: String,
    #[serde(default)]
    inputs: Vec<String>,
    /// Fail the first attempt after leaving a marker in the resume dir.
    #[serde(default)]
    fail_first_attempt: bool,
    /// Wait until this many nodes run at once (bounded), to observe parallelism.
    #[serde(default)]
    rendezvous: usize,
}

aurora_core::register_plugin!(Concat);

impl Plugin for Concat {
    fn id(&self) -> &'static str {
        "exec.concat"
    }
    fn kind(&self) -> PluginKind {
        PluginKind::Exec
    }
    fn version(&self) -> &'static str {
        "1"
    }
    fn description(&self) -> &'static str {
        "test plugin"
    }
    fn config_schema(&self) -> schemars::Schema {
        schemars::schema_for!(ConcatConfig)
    }
    fn plan(&self, entry: &Entry<'_>, ctx: &PlanContext<'_>) -> Result<Vec<NodeSpec>, Diagnostics> {
        let config: ConcatConfig = entry.parse(ctx.manifest)?;
        let inputs = config
            .inputs
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let source = if r.starts_with(FILE_PREFIX) {
                    InputSource::Path(r.clone())
                } else {
                    InputSource::Node(ctx.entry_ref(r).expect("SECTION.NAME"))
                };
                (format!("in{i}"), InputSpec { source, pointer: format!("{}/inputs/{i}", entry.pointer()) })
            })
            .collect();
        let mut keyed = entry.config.clone();
        keyed.as_object_mut().unwrap().remove("inputs");
        Ok(vec![NodeSpec::for_entry(entry, keyed, inputs)])
    }
    fn execute(&self, ctx: &mut ExecContext<'_>) -> Result<ExecOutcome, PluginError> {
        // The keyed config is the entry's minus `inputs`, which defaults to empty.
        let config: ConcatConfig = ctx.parse()?;
        *EXECUTIONS.lock().unwrap().entry(ctx.node_id.to_string()).or_default() += 1;
        if config.rendezvous > 0 {
            let now = RUNNING.fetch_add(1, Ordering::SeqCst) + 1;
            MAX_RUNNING.fetch_max(now, Ordering::SeqCst);
            ARRIVED.fetch_add(1, Ordering::SeqCst);
            // Bounded wait for the other node to start; the assertion is on MAX_RUNNING.
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            while ARRIVED.load(Ordering::SeqCst) < config.rendezvous && std::time::Instant::now() < deadline {
                std::thread::yield_now();
            }
            RUNNING.fetch_sub(1, Ordering::SeqCst);
        }
        let marker = ctx.resume_dir.join("attempted");
        if config.fail_first_attempt && !marker.exists() {
            std::fs::write(&marker, b"1").unwrap();
            Err(PluginError::new("first attempt fails on purpose"))
        } else {
            let mut text = config.text.clone();
            for path in ctx.inputs.values() {
                let file = if path.is_dir() { path.join("out.txt") } else { path.clone() };
                text.push_str(&std::fs::read_to_string(file).unwrap());
            }
            std::fs::write(ctx.out_dir.join("out.txt"), text).unwrap();
            Ok(ExecOutcome::default())
        }
    }
}

fn executions(id: &str) -> usize {
    EXECUTIONS.lock().unwrap().get(id).copied().unwrap_or(0)
}

struct Project {
    dir: tempfile::TempDir,
}

impl Project {
    fn new(manifest: &str) -> Project {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("m.toml"), manifest).unwrap();
        Project { dir }
    }
    fn plan(&self) -> Plan {
        plan(resolve(&self.dir.path().join("m.toml"), &ResolveOptions::default()).unwrap()).unwrap()
    }
    fn store(&self) -> Store {
        Store::open(&self.dir.path().join(".aurora")).unwrap()
    }
    fn run(&self, options: RunOptions) -> Vec<NodeReport> {
        run(&self.plan(), &self.store(), &options, &Silent, &NoProgress).unwrap()
    }
    fn path(&self, rel: &str) -> std::path::PathBuf {
        self.dir.path().join(rel)
    }
}

fn statuses(reports: &[NodeReport]) -> BTreeMap<String, NodeStatus> {
    reports.iter().map(|r| (r.id.clone(), r.status)).collect()
}

fn age(path: &Path) {
    // Files modified in the last seconds are never memoised (racily clean), so age the input.
    let old = SystemTime::now() - Duration::from_secs(3600);
    std::fs::File::options().write(true).open(path).unwrap().set_modified(old).unwrap();
}

#[test]
fn a_no_op_rerun_re_hashes_no_input() {
    let p = Project::new(
        "[experiment]\nname = \"m\"\nseed = 1\n[s.a]\nplugin = \"exec.concat\"\ntext = \"a\"\ninputs = [\"file:data.txt\"]\n[s.b]\nplugin = \"exec.concat\"\ntext = \"b\"\ninputs = [\"s.a\"]\n",
    );
    std::fs::write(p.path("data.txt"), "data").unwrap();
    age(&p.path("data.txt"));
    let first = p.run(RunOptions { jobs: 1, ..Default::default() });
    assert!(first.iter().all(|r| r.status == NodeStatus::Executed));
    let store = p.store();
    let reports = run(&p.plan(), &store, &RunOptions { jobs: 1, ..Default::default() }, &Silent, &NoProgress).unwrap();
    assert!(reports.iter().all(|r| r.status == NodeStatus::Cached));
    assert_eq!(store.memo_misses(), 0, "a no-op rerun must not read input files");
    assert_eq!(store.memo_hits(), 1);
    let b = reports.iter().find(|r| r.id == "s/b").unwrap().artifact.unwrap();
    assert_eq!(std::fs::read_to_string(store.artifact_dir(&b).join("out.txt")).unwrap(), "badata");
}

#[test]
fn resume_scratch_survives_a_failed_attempt() {
    let p = Project::new(
        "[experiment]\nname = \"m\"\nseed = 1\n[s.flaky]\nplugin = \"exec.concat\"\ntext = \"ok\"\nfail_first_attempt = true\n",
    );
    let first = p.run(RunOptions { jobs: 1, ..Default::default() });
    assert_eq!(first[0].status, NodeStatus::Failed);
    assert!(first[0].error.as_deref().unwrap().contains("first attempt fails on purpose"));
    let second = p.run(RunOptions { jobs: 1, ..Default::default() });
    assert_eq!(second[0].status, NodeStatus::Executed, "the second attempt sees the first one's resume marker");
    // After success the scratch (resume dir included) is gone.
    let work = p.path(".aurora/work");
    assert_eq!(std::fs::read_dir(work).unwrap().count(), 0);
}

#[test]
fn until_runs_only_ancestors_and_force_reexecutes() {
    let p = Project::new(
        "[experiment]\nname = \"m\"\nseed = 1\n[s.a]\nplugin = \"exec.concat\"\ntext = \"a\"\n[s.b]\nplugin = \"exec.concat\"\ntext = \"b\"\ninputs = [\"s.a\"]\n[s.other]\nplugin = \"exec.concat\"\ntext = \"o\"\n",
    );
    let reports = p.run(RunOptions { jobs: 1, until: Some("s/b".into()), ..Default::default() });
    let got: BTreeSet<&str> = reports.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(got, BTreeSet::from(["s/a", "s/b"]));
    let before = executions("s/a");
    let forced = p.run(RunOptions { jobs: 1, force: BTreeSet::from(["s/a".to_string()]), ..Default::default() });
    let s = statuses(&forced);
    assert_eq!(s["s/a"], NodeStatus::Executed);
    assert_eq!(s["s/b"], NodeStatus::Cached, "same bytes from the forced node: its dependent stays cached");
    assert_eq!(s["s/other"], NodeStatus::Executed);
    assert_eq!(executions("s/a"), before + 1);
}

#[test]
fn independent_nodes_run_in_parallel_with_jobs() {
    let p = Project::new(
        "[experiment]\nname = \"m\"\nseed = 2\n[par.x]\nplugin = \"exec.concat\"\ntext = \"x\"\nrendezvous = 2\n[par.y]\nplugin = \"exec.concat\"\ntext = \"y\"\nrendezvous = 2\n",
    );
    let reports = p.run(RunOptions { jobs: 2, ..Default::default() });
    assert!(reports.iter().all(|r| r.status == NodeStatus::Executed));
    assert!(MAX_RUNNING.load(Ordering::SeqCst) >= 2, "two independent nodes overlapped");
}

#[test]
fn plan_status_explains_pending_nodes() {
    let p = Project::new(
        "[experiment]\nname = \"m\"\nseed = 3\n[s.a]\nplugin = \"exec.concat\"\ntext = \"a\"\n[s.b]\nplugin = \"exec.concat\"\ntext = \"b\"\ninputs = [\"s.a\"]\n",
    );
    let reports = status(&p.plan(), &p.store()).unwrap();
    assert_eq!(reports[0].reason.as_deref(), Some("new"));
    assert_eq!(reports[1].reason.as_deref(), Some("waits on s/a"));
    assert!(reports[1].key.is_none(), "a node's key is unknown until its inputs are");
}

/// `plan` shows a configuration whose inputs live elsewhere (a cluster path) instead of failing;
/// `run` refuses it before executing anything.
#[test]
fn plan_tolerates_missing_inputs_and_run_refuses_them() {
    let p = Project::new(
        "[experiment]\nname = \"m\"\nseed = 3\n[remote.a]\nplugin = \"exec.concat\"\ntext = \"a\"\ninputs = [\"file:/nonexistent/aurora/weights\"]\n[remote.b]\nplugin = \"exec.concat\"\ntext = \"b\"\ninputs = [\"remote.a\"]\n",
    );
    let reports = status(&p.plan(), &p.store()).unwrap();
    assert_eq!(
        reports[0].reason.as_deref(),
        Some("input `/nonexistent/aurora/weights` is missing (needed before `aurora run`)")
    );
    assert_eq!(reports[1].reason.as_deref(), Some("waits on remote/a"));
    let err = run(&p.plan(), &p.store(), &RunOptions::default(), &Silent, &NoProgress).unwrap_err();
    assert!(err.to_string().contains("does not exist"), "{err}");
    assert_eq!(executions("remote/a"), 0);
}
