//! The executor, in process, with a test plugin: caching, the stat memo, resumable scratch,
//! `--until`, `--force`, parallel jobs.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use aurora_core::Store;
use aurora_core::diagnostic::Diagnostics;
use aurora_core::execute::{NodeReport, NodeStatus, RunOptions, Silent, run, status};
use aurora_core::manifest::{FILE_PREFIX, ResolveOptions, resolve};
use aurora_core::plan::{Plan, plan};
use aurora_core::plugin::{
    Entry, ExecContext, ExecOutcome, InputSource, InputSpec, NoProgress, NodeSpec, PlanContext, Plugin, PluginError,
    Resources,
};
use schemars::JsonSchema;
use serde::Deserialize;

/// What the test plugin saw, by the `test` token of its config: each [`Project`] has its own token, so tests never
/// see each other's counts, whatever `--test-threads` is.
static SEEN: Mutex<BTreeMap<String, Seen>> = Mutex::new(BTreeMap::new());

/// What the test plugin saw in one test.
#[derive(Debug, Default)]
struct Seen {
    /// Executions by node id.
    executions: BTreeMap<String, usize>,
    /// Rendezvous nodes running now, and the most seen at once.
    running: usize,
    max_running: usize,
    /// Rendezvous nodes that have started (never decremented, so no arrival can be missed).
    arrived: usize,
    /// Cores granted to each node, and the most held by nodes running at once.
    granted: BTreeMap<String, usize>,
    cores_running: usize,
    max_cores_running: usize,
}

/// Runs `f` on what the test plugin saw in the test with token `test`.
fn seen<T>(test: &str, f: impl FnOnce(&mut Seen) -> T) -> T {
    f(SEEN.lock().unwrap().entry(test.to_owned()).or_default())
}

/// `exec.concat`: writes `text` followed by the `out.txt` (or the file) of each input.
#[derive(Debug, Clone, Default)]
struct Concat;

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct ConcatConfig {
    /// The token of the test's [`Project`], added to every `exec.concat` entry: what [`SEEN`] is keyed by.
    test: String,
    text: String,
    #[serde(default)]
    inputs: Vec<String>,
    /// Fail the first attempt after leaving a marker in the resume dir.
    #[serde(default)]
    fail_first_attempt: bool,
    /// Wait until this many nodes run at once (bounded), to observe parallelism.
    #[serde(default)]
    rendezvous: usize,
    /// The cores the node asks for (`Resources::cpus_per_task`; 0: every core); 1 if absent.
    #[serde(default)]
    cores: Option<u32>,
}

aurora_core::register_plugin!(Concat);

impl Plugin for Concat {
    fn id(&self) -> &'static str {
        "exec.concat"
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
    fn resources(&self, config: &serde_json::Value) -> Resources {
        let config: ConcatConfig = serde_json::from_value(config.clone()).expect("a planned config");
        Resources { cpus_per_task: config.cores.unwrap_or(1), ..Resources::default() }
    }
    fn execute(&self, ctx: &mut ExecContext<'_>) -> Result<ExecOutcome, PluginError> {
        // The keyed config is the entry's minus `inputs`, which defaults to empty.
        let config: ConcatConfig = ctx.parse()?;
        seen(&config.test, |s| {
            *s.executions.entry(ctx.node_id.to_string()).or_default() += 1;
            s.granted.insert(ctx.node_id.to_string(), ctx.cores);
            s.cores_running += ctx.cores;
            s.max_cores_running = s.max_cores_running.max(s.cores_running);
        });
        let outcome = self.concat(ctx, &config);
        seen(&config.test, |s| s.cores_running -= ctx.cores);
        outcome
    }
}

impl Concat {
    fn concat(&self, ctx: &mut ExecContext<'_>, config: &ConcatConfig) -> Result<ExecOutcome, PluginError> {
        if config.rendezvous > 0 {
            seen(&config.test, |s| {
                s.running += 1;
                s.max_running = s.max_running.max(s.running);
                s.arrived += 1;
            });
            // Bounded wait for the other node to start; the assertion is on `max_running`.
            let deadline = Instant::now() + Duration::from_secs(20);
            while seen(&config.test, |s| s.arrived) < config.rendezvous && Instant::now() < deadline {
                std::thread::yield_now();
            }
            seen(&config.test, |s| s.running -= 1);
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

struct Project {
    dir: tempfile::TempDir,
    /// Unique in this process and never reused: the `test` of every `exec.concat` entry.
    token: String,
}

impl Project {
    /// A project with `manifest`, whose `exec.concat` entries get this project's token as their `test`.
    fn new(manifest: &str) -> Project {
        static PROJECTS: AtomicUsize = AtomicUsize::new(0);
        let token = format!("project-{}", PROJECTS.fetch_add(1, Ordering::Relaxed));
        let plugin = "plugin = \"exec.concat\"\n";
        assert!(manifest.contains(plugin), "{manifest}");
        let manifest = manifest.replace(plugin, &format!("{plugin}test = \"{token}\"\n"));
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("m.toml"), manifest).unwrap();
        Project { dir, token }
    }
    /// How often the test plugin executed node `id` of this project.
    fn executions(&self, id: &str) -> usize {
        seen(&self.token, |s| s.executions.get(id).copied().unwrap_or(0))
    }
    /// The most rendezvous nodes of this project seen running at once.
    fn max_running(&self) -> usize {
        seen(&self.token, |s| s.max_running)
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
    let before = p.executions("s/a");
    let forced = p.run(RunOptions { jobs: 1, force: BTreeSet::from(["s/a".to_string()]), ..Default::default() });
    let s = statuses(&forced);
    assert_eq!(s["s/a"], NodeStatus::Executed);
    assert_eq!(s["s/b"], NodeStatus::Cached, "same bytes from the forced node: its dependent stays cached");
    assert_eq!(s["s/other"], NodeStatus::Executed);
    assert_eq!(p.executions("s/a"), before + 1);
}

#[test]
fn independent_nodes_run_in_parallel_with_jobs() {
    let p = Project::new(
        "[experiment]\nname = \"m\"\nseed = 2\n[par.x]\nplugin = \"exec.concat\"\ntext = \"x\"\nrendezvous = 2\n[par.y]\nplugin = \"exec.concat\"\ntext = \"y\"\nrendezvous = 2\n",
    );
    let reports = p.run(RunOptions { jobs: 2, cpus: 2, ..Default::default() });
    assert!(reports.iter().all(|r| r.status == NodeStatus::Executed));
    assert!(p.max_running() >= 2, "two independent nodes overlapped");
}

/// Nodes run side by side only as far as their cores fit the budget: one-core nodes share, the
/// two nodes that ask for every core (and more) are ready together but run one after the other,
/// and each node is told what it was granted.
#[test]
fn nodes_share_the_cores_without_oversubscribing() {
    let p = Project::new(concat!(
        "[experiment]\nname = \"m\"\nseed = 2\n",
        "[c.all]\nplugin = \"exec.concat\"\ntext = \"a\"\ncores = 0\ninputs = [\"c.x\", \"c.y\"]\n",
        "[c.big]\nplugin = \"exec.concat\"\ntext = \"b\"\ncores = 8\ninputs = [\"c.x\", \"c.y\"]\n",
        "[c.x]\nplugin = \"exec.concat\"\ntext = \"x\"\nrendezvous = 2\n",
        "[c.y]\nplugin = \"exec.concat\"\ntext = \"y\"\nrendezvous = 2\ncores = 1\n",
    ));
    let reports = p.run(RunOptions { jobs: 4, cpus: 2, ..Default::default() });
    assert!(reports.iter().all(|r| r.status == NodeStatus::Executed), "{reports:#?}");
    let (granted, max_cores) = seen(&p.token, |s| (s.granted.clone(), s.max_cores_running));
    assert_eq!(
        granted,
        BTreeMap::from([("c/all".into(), 2), ("c/big".into(), 2), ("c/x".into(), 1), ("c/y".into(), 1)]),
        "every core is the budget, and a request beyond it is capped"
    );
    assert!(max_cores <= 2, "{max_cores} cores held at once with a budget of 2");
    assert!(p.max_running() >= 2, "the two one-core nodes ran side by side");
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
    assert_eq!(p.executions("remote/a"), 0);
}
