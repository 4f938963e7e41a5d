//! Command-line interface: argument parsing and one function per subcommand.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use anyhow::{Context, Result};
use aurora_core::execute::{self, NodeStatus, Observer, RunOptions};
use aurora_core::manifest::{self, ResolveOptions, ResolvedManifest};
use aurora_core::plan::{Plan, plan};
use aurora_core::plugin::registry;
use aurora_core::remote;
use aurora_core::{Digest, Store};
use clap::{Args, Parser, Subcommand};
use serde_json::json;

use crate::output;

#[derive(Parser)]
#[command(name = "aurora", version, about = "Declarative, content-addressed continual-pretraining experiments")]
#[command(
    after_help = "The store is `.aurora/` at the root of the manifest's repository; set AURORA_STORE to move it.\nExit codes: 0 ok, 1 a node failed, verification or `aurora diff` found differences, 2 bad usage or bad manifest."
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the manifest digest (blake3 of the canonical resolved manifest).
    Digest(ManifestArgs),
    /// Show the DAG with each node's status and why pending nodes are pending.
    Plan {
        #[command(flatten)]
        manifest: ManifestArgs,
        /// List every `file:` input instead (what to fetch): path, format, origin, licence, size
        /// and state (present or missing, locked or not).
        #[arg(long)]
        inputs: bool,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Record the size and blake3 of every file each `file:` input stands for in M.inputs.lock
    /// beside the manifest, which `plan` and `run` then check (resumable: hashes are memoised).
    Lock {
        #[command(flatten)]
        manifest: ManifestArgs,
        /// Files hashed at the same time.
        #[arg(long, short = 'j', default_value_t = default_jobs())]
        jobs: usize,
    },
    /// Execute what is not cached.
    Run {
        #[command(flatten)]
        manifest: ManifestArgs,
        /// Nodes executed at the same time (default: the CPU count; with `--executor slurm`, 256
        /// jobs in the queue at once).
        #[arg(long, short = 'j')]
        jobs: Option<usize>,
        /// CPU cores the nodes executed here share (default: every core of this machine). Nodes
        /// run side by side only as far as their threads fit: a training stage's `threads` per
        /// rank, an evaluator's `threads` (0: every core), one core for the others. Never part of
        /// a node key.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        cpus: Option<u32>,
        /// Where nodes execute: `local` (in this process and its workers) or `slurm` (each node
        /// a Slurm job running `aurora exec-node` against the shared store, sized from the node;
        /// the entry's `slurm = { partition, account, time, ... }` table adds sbatch options).
        /// Never part of a node key.
        #[arg(long, value_name = "EXECUTOR", env = "AURORA_EXECUTOR", default_value = "local", value_parser = ["local", "slurm"])]
        executor: String,
        /// Run only this node and what it depends on.
        #[arg(long, value_name = "NODE")]
        until: Option<String>,
        /// Execute this node even if cached (repeatable).
        #[arg(long, value_name = "NODE")]
        force: Vec<String>,
        /// How sharded stages start their ranks: `local` (worker processes on this machine),
        /// `slurm` (one `srun` step inside the current allocation), or `auto` (slurm inside an
        /// allocation, else local). Never part of a node key.
        #[arg(long, value_name = "LAUNCHER", env = aurora_launch::AURORA_LAUNCHER, default_value = "auto")]
        launcher: String,
        #[command(flatten)]
        remote: RemoteArgs,
        /// Upload what this run executes to the remote cache (off by default: a reviewer's run
        /// reads the remote and writes nothing to it).
        #[arg(long, requires = "remote")]
        remote_upload: bool,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Upload every node of the manifest's plan that is in the local store to the remote cache.
    Push {
        #[command(flatten)]
        manifest: ManifestArgs,
        #[command(flatten)]
        remote: RemoteArgs,
        /// Send every file and record again, even those the remote has (repairs objects damaged
        /// on the remote, which a reader reports as rejected).
        #[arg(long)]
        force: bool,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Write a run as a bundle a reviewer checks with `aurora check`: the manifest files, the run
    /// record, every node's key, key components, artifact digest and metrics, and the report.
    Publish {
        /// The run (an id or a unique prefix of one; see `aurora runs list`).
        run: String,
        /// The bundle directory to write.
        #[arg(long, value_name = "DIR")]
        to: PathBuf,
        /// Upload the run's artifacts here first, and name it in the bundle (large artifacts are
        /// referenced by digest, never copied into the bundle).
        #[command(flatten)]
        remote: RemoteArgs,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Check a published bundle here: replan its manifest, compare every node's key (naming the
    /// component that differs), and pull or rerun what is asked.
    #[command(
        after_help = "Exit code 0 when every node is identical, matches its key or is within tolerance; 1 otherwise."
    )]
    Check {
        /// The bundle directory (or its bundle.json).
        bundle: PathBuf,
        /// The manifest to check (default: the bundle's manifest path in this repository).
        #[arg(long, value_name = "MANIFEST")]
        manifest: Option<PathBuf>,
        /// Rerun this node here and compare its bytes, then its metrics (repeatable).
        #[arg(long, value_name = "NODE")]
        rerun: Vec<String>,
        /// Download every node whose key matches from the remote and compare its bytes.
        #[arg(long)]
        pull: bool,
        /// A metric's allowed relative difference for rerun nodes, e.g. `loss=1e-3` (repeatable).
        #[arg(long, value_name = "METRIC=REL")]
        tolerance: Vec<String>,
        /// The remote cache to pull from (default: the one the bundle names).
        #[command(flatten)]
        remote: RemoteArgs,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Execute one node here whose inputs are all in the store (what `--executor slurm` jobs run).
    ExecNode {
        #[command(flatten)]
        manifest: ManifestArgs,
        /// The node to execute.
        #[arg(long, value_name = "NODE")]
        node: String,
    },
    /// Download from the remote cache every node of the manifest's plan it has, executing nothing.
    Pull {
        #[command(flatten)]
        manifest: ManifestArgs,
        #[command(flatten)]
        remote: RemoteArgs,
        /// Downloads at the same time.
        #[arg(long, short = 'j', default_value_t = default_jobs())]
        jobs: usize,
        /// Pull only this node and what it depends on.
        #[arg(long, value_name = "NODE")]
        until: Option<String>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Re-execute a node without the cache and compare, or re-hash the whole store.
    Verify {
        /// The manifest (with --node).
        manifest: Option<PathBuf>,
        /// Re-execute this cached node from scratch and compare its files with the cached artifact.
        #[arg(long, value_name = "NODE", requires = "manifest")]
        node: Option<String>,
        /// Re-hash every artifact in the store and check every cache entry.
        #[arg(long, conflicts_with = "node")]
        store: bool,
        /// Profile to apply (default: experiment.default_profile).
        #[arg(long, short = 'p', value_name = "NAME")]
        profile: Option<String>,
        /// Override a value after extends and profile (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        sets: Vec<String>,
    },
    /// Remove artifacts that no kept manifest and no recent run reaches.
    Gc {
        /// Keep everything this manifest's current plan uses (repeatable).
        #[arg(long, value_name = "MANIFEST")]
        keep: Vec<PathBuf>,
        /// Keep what the most recent N run records used.
        #[arg(long, default_value_t = 10)]
        keep_runs: usize,
        /// Print what would be removed, remove nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// List registered plugins.
    Plugins {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// List the languages the evaluators know built in and the language packs a manifest loads.
    Languages {
        /// The manifest whose `language.pack` entries to list.
        manifest: Option<PathBuf>,
        /// Profile to apply (default: experiment.default_profile).
        #[arg(long, short = 'p', value_name = "NAME")]
        profile: Option<String>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Print the manifest JSON Schema, or write/check all schemas in a directory.
    Schema {
        /// Write `manifest.schema.json` and `plugins/*.schema.json` here.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// With --out: fail (exit 1) if the files differ from what the code generates.
        #[arg(long, requires = "out")]
        check: bool,
    },
    /// Compare two recorded runs: manifests, node keys (and why they differ), artifacts, metrics.
    #[command(after_help = "Exit code 0 when the runs are identical, 1 when they differ.")]
    Diff {
        /// The first run (an id or a unique prefix of one; see `aurora runs list`).
        run_a: String,
        /// The second run.
        run_b: String,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Inspect run records.
    Runs {
        #[command(subcommand)]
        command: RunsCommand,
    },
    /// Check that every manifest snippet in a book's Markdown validates.
    BookCheck {
        /// The book directory (containing src/).
        dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum RunsCommand {
    /// One line per run, oldest first.
    List {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// One run record (an id or a unique prefix of one).
    Show {
        /// The run id, or a unique prefix of it (see `aurora runs list`).
        id: String,
        /// The whole record as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
struct RemoteArgs {
    /// The remote cache: s3://BUCKET/PREFIX, gs://..., az://..., https://HOST/PATH/ (an HTTP
    /// cache with WebDAV PUT) or file:///PATH. Credentials come from the environment (AWS_*,
    /// GOOGLE_*, AZURE_*, AURORA_REMOTE_TOKEN or user:password@ in an https URL). Never part of a key.
    #[arg(long, value_name = "URL", env = aurora_remote::REMOTE_ENV)]
    remote: Option<String>,
}

impl RemoteArgs {
    fn open(&self) -> Result<Option<Arc<dyn aurora_core::remote::RemoteCache>>> {
        let Some(url) = self.remote.as_deref().filter(|u| !u.is_empty()) else { return Ok(None) };
        Ok(Some(aurora_remote::open_shared(url).map_err(|e| usage(e.to_string(), "fix --remote or AURORA_REMOTE"))?))
    }

    fn require(&self, command: &str) -> Result<Arc<dyn aurora_core::remote::RemoteCache>> {
        self.open()?.ok_or_else(|| {
            usage(
                format!("`aurora {command}` needs a remote cache"),
                "pass --remote URL or set AURORA_REMOTE (s3://BUCKET/PREFIX, https://HOST/PATH/, file:///PATH)",
            )
        })
    }
}

#[derive(Args)]
struct ManifestArgs {
    /// The manifest TOML file.
    manifest: PathBuf,
    /// Profile to apply (default: experiment.default_profile).
    #[arg(long, short = 'p', value_name = "NAME")]
    profile: Option<String>,
    /// Override a value after extends and profile, e.g. --set experiment.seed=7 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
}

fn default_jobs() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

impl ManifestArgs {
    fn resolve(&self) -> Result<ResolvedManifest> {
        resolve(&self.manifest, self.profile.clone(), self.sets.clone())
    }
}

fn resolve(path: &Path, profile: Option<String>, sets: Vec<String>) -> Result<ResolvedManifest> {
    Ok(manifest::resolve(path, &ResolveOptions { profile, sets })?)
}

/// `AURORA_STORE`, else `.aurora/` at the root of the given project.
fn store_path(project_root: &Path) -> PathBuf {
    match std::env::var_os("AURORA_STORE") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => project_root.join(".aurora"),
    }
}

fn open_store(project_root: &Path) -> Result<Store> {
    let path = store_path(project_root);
    Store::open(&path).with_context(|| format!("cannot use the store at {}", path.display()))
}

/// The store for commands without a manifest: that of the repository containing the current directory.
fn open_existing_store_here() -> Result<Store> {
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    let path = store_path(&manifest::project_root_for(&cwd));
    Ok(Store::open_existing(&path)?)
}

/// A mistake on the command line that clap cannot see (exit code 2, like a bad manifest).
fn usage(message: impl Into<String>, help: impl Into<String>) -> anyhow::Error {
    aurora_core::Diagnostics::from(aurora_core::Diagnostic::new(message).help(help)).into()
}

pub fn dispatch(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Digest(args) => {
            let plan = plan(args.resolve()?)?;
            println!("{}", plan.manifest.digest);
            Ok(ExitCode::SUCCESS)
        }
        Command::Plan { manifest, inputs: true, json } => cmd_inputs(&manifest, json),
        Command::Plan { manifest, inputs: false, json } => cmd_plan(&manifest, json),
        Command::Lock { manifest, jobs } => cmd_lock(&manifest, jobs),
        Command::Run { manifest, jobs, cpus, executor, until, force, launcher, remote, remote_upload, json } => {
            // Checked now (a Slurm launcher outside an allocation is an error before any work),
            // then handed to the plugins that start ranks through the environment.
            aurora_launch::Launcher::resolve(Some(&launcher), |k| std::env::var(k).ok())
                .map_err(|e| usage(e.to_string(), "use --launcher local, slurm or auto"))?;
            // SAFETY: no other thread exists yet (the executor starts its workers later).
            unsafe { std::env::set_var(aurora_launch::AURORA_LAUNCHER, &launcher) };
            let slurm = executor == "slurm";
            let mut options = RunOptions {
                jobs: jobs.unwrap_or(if slurm { SLURM_JOBS } else { default_jobs() }),
                cpus: cpus.map_or(0, |n| n as usize),
                until,
                force: force.into_iter().collect::<BTreeSet<_>>(),
                remote: remote.open()?,
                upload: remote_upload,
                fetch_only: false,
                dispatcher: None,
            };
            if slurm {
                options.dispatcher = Some(slurm_executor(&manifest)?);
            }
            cmd_run(&manifest, &options, json)
        }
        Command::ExecNode { manifest, node } => cmd_exec_node(&manifest, &node),
        Command::Publish { run, to, remote, json } => cmd_publish(&run, &to, remote.open()?, json),
        Command::Check { bundle, manifest, rerun, pull, tolerance, remote, json } => {
            cmd_check(&bundle, manifest, rerun, pull, &tolerance, &remote, json)
        }
        Command::Push { manifest, remote, force, json } => cmd_push(&manifest, remote.require("push")?, force, json),
        Command::Pull { manifest, remote, jobs, until, json } => {
            let options = RunOptions {
                jobs,
                until,
                remote: Some(remote.require("pull")?),
                fetch_only: true,
                ..RunOptions::default()
            };
            cmd_run(&manifest, &options, json)
        }
        Command::Verify { manifest, node, store, profile, sets } => match (manifest, node, store) {
            (_, _, true) => cmd_verify_store(),
            (Some(m), Some(node), false) => cmd_verify_node(&m, profile, sets, &node),
            _ => Err(usage(
                "nothing to verify",
                "use `aurora verify MANIFEST --node ID` (re-execute one node) or `aurora verify --store` (re-hash the store)",
            )),
        },
        Command::Gc { keep, keep_runs, dry_run } => cmd_gc(&keep, keep_runs, dry_run),
        Command::Plugins { json } => {
            print!("{}", output::plugins(registry(), json));
            Ok(ExitCode::SUCCESS)
        }
        Command::Languages { manifest, profile, json } => {
            let packs = match &manifest {
                Some(path) => plan(resolve(path, profile, Vec::new())?)?.languages,
                None => Vec::new(),
            };
            let shown = manifest.as_ref().map(|m| m.display().to_string());
            print!("{}", output::languages(shown.as_deref(), &packs, json));
            Ok(ExitCode::SUCCESS)
        }
        Command::Schema { out, check } => cmd_schema(out.as_deref(), check),
        Command::Runs { command } => cmd_runs(command),
        Command::Diff { run_a, run_b, json } => cmd_diff(&run_a, &run_b, json),
        Command::BookCheck { dir } => crate::output::book_check(&dir),
    }
}

/// What planning warns about (on stderr: stdout stays the plan, or its JSON).
fn print_warnings(plan: &Plan) {
    for warning in &plan.warnings {
        eprint!("{warning}");
    }
}

fn cmd_plan(args: &ManifestArgs, json: bool) -> Result<ExitCode> {
    let plan = plan(args.resolve()?)?;
    print_warnings(&plan);
    let store = open_store(&plan.manifest.project_root)?;
    let reports = execute::status(&plan, &store)?;
    print!("{}", output::plan_report(&plan, &reports, json, None));
    // Files that differ from the inputs lock are errors (the data is not the locked data); locked
    // files that are absent are listed like any missing input, and refused by `run`.
    let Some(lock) = &plan.lock else { return Ok(ExitCode::SUCCESS) };
    let check = aurora_core::lock::check(&plan, &store, lock, None);
    for missing in &check.missing {
        eprintln!("note: {}", missing.message);
    }
    if !check.unlocked.is_empty() {
        let shown: Vec<&str> = check.unlocked.iter().map(|r| r.strip_prefix("file:").unwrap_or(r)).collect();
        eprintln!(
            "note: not in the inputs lock, so not checked and not in the digest: {}; `aurora lock` adds them",
            shown.join(", ")
        );
    }
    if check.differ.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    Err(aurora_core::Diagnostics(check.differ).into())
}

fn cmd_inputs(args: &ManifestArgs, json: bool) -> Result<ExitCode> {
    let plan = plan(args.resolve()?)?;
    let rows = crate::inputs::rows(&plan);
    print!("{}", if json { crate::inputs::json(&rows) } else { crate::inputs::table(&plan, &rows) });
    Ok(ExitCode::SUCCESS)
}

fn cmd_lock(args: &ManifestArgs, jobs: usize) -> Result<ExitCode> {
    let (plan, unusable) = aurora_core::plan::plan_keeping_a_bad_lock(args.resolve()?)?;
    if let Some(problem) = unusable {
        eprintln!("warning: {}; writing a new one", problem.message);
    }
    let store = open_store(&plan.manifest.project_root)?;
    let path = crate::inputs::lock(&plan, &store, jobs)?;
    eprintln!("wrote {}", path.display());
    Ok(ExitCode::SUCCESS)
}

fn cmd_run(args: &ManifestArgs, options: &RunOptions, json: bool) -> Result<ExitCode> {
    let started = SystemTime::now();
    let clock = Instant::now();
    let plan = plan(args.resolve()?)?;
    print_warnings(&plan);
    let store = open_store(&plan.manifest.project_root)?;
    let observer = output::StderrObserver::new(!json);
    let reports = execute::run(&plan, &store, options, &observer, &observer)?;
    let failed = reports.iter().any(|r| r.status == NodeStatus::Failed || r.error.is_some());
    let run_id = aurora_core::record::new_run_id(started);
    let record = aurora_core::record::run_record(
        &run_id,
        &plan,
        started,
        SystemTime::now(),
        &reports,
        if failed { "failed" } else { "ok" },
    );
    store.write_run(&run_id, &record).context("cannot write the run record")?;
    print!("{}", output::plan_report(&plan, &reports, json, Some((&run_id, clock.elapsed()))));
    eprint!("{}", output::node_messages(&reports));
    Ok(if failed { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

/// Jobs in the Slurm queue at once by default: the queue, not this machine, bounds the work.
const SLURM_JOBS: usize = 256;

/// A Slurm executor for this manifest; Ctrl-C cancels its jobs before aurora exits.
fn slurm_executor(args: &ManifestArgs) -> Result<Arc<dyn execute::Dispatcher>> {
    let resolved = args.resolve()?;
    let job = aurora_slurm_executor::JobCommand {
        aurora: std::env::current_exe().context("cannot find the aurora binary to run in jobs")?,
        manifest: resolved.path.clone(),
        profile: args.profile.clone(),
        sets: args.sets.clone(),
        store: std::path::absolute(store_path(&resolved.project_root)).context("cannot resolve the store's path")?,
        workdir: std::env::current_dir().context("cannot read the current directory")?,
    };
    let executor = Arc::new(aurora_slurm_executor::SlurmExecutor::new(job));
    let on_interrupt = Arc::clone(&executor);
    ctrlc::set_handler(move || {
        let cancelled = on_interrupt.cancel_all();
        if !cancelled.is_empty() {
            eprintln!("interrupted: cancelled Slurm jobs {} (rerun to resume them)", cancelled.join(", "));
        }
        std::process::exit(130);
    })
    .context("cannot install the Ctrl-C handler")?;
    Ok(executor)
}

fn cmd_exec_node(args: &ManifestArgs, id: &str) -> Result<ExitCode> {
    let plan = plan(args.resolve()?)?;
    let store = open_store(&plan.manifest.project_root)?;
    let observer = output::StderrObserver::new(true);
    let report = execute::run_one(&plan, &store, id, &observer, &observer)?;
    observer.event(execute::Event::Finished { report: &report });
    eprint!("{}", output::node_messages(std::slice::from_ref(&report)));
    Ok(if report.status == NodeStatus::Failed { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

fn cmd_publish(
    run_id: &str,
    dest: &Path,
    remote: Option<Arc<dyn remote::RemoteCache>>,
    json: bool,
) -> Result<ExitCode> {
    let store = open_existing_store_here()?;
    let run = store.read_run(run_id).map_err(|e| usage(e.to_string(), "`aurora runs list` shows the run ids"))?;
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    let root = manifest::project_root_for(&cwd);
    let path = root.join(run["manifest"]["path"].as_str().unwrap_or_default());
    let profile = run["manifest"]["profile"].as_str().map(str::to_string);
    let plan = plan(resolve(&path, profile, Vec::new())?)?;
    let observer = output::StderrObserver::new(!json);
    let bundle = crate::publish::publish(&plan, &store, &run, dest, remote.as_deref(), &observer)?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &json!({ "bundle": dest, "nodes": bundle.nodes.len(), "remote": bundle.remote })
            )?
        );
    } else {
        println!(
            "wrote {} ({} nodes{}); check it with `aurora check {}`",
            dest.join("bundle.json").display(),
            bundle.nodes.len(),
            bundle.remote.as_deref().map(|r| format!(", artifacts in {r}")).unwrap_or_default(),
            dest.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn cmd_check(
    bundle_dir: &Path,
    manifest_path: Option<PathBuf>,
    rerun: Vec<String>,
    pull: bool,
    tolerance: &[String],
    remote: &RemoteArgs,
    json: bool,
) -> Result<ExitCode> {
    use crate::publish::{CheckOptions, Verdict};
    let bundle = crate::publish::read_bundle(bundle_dir)?;
    let tolerances =
        crate::publish::parse_tolerances(tolerance).map_err(|e| usage(e.to_string(), "e.g. --tolerance loss=1e-3"))?;
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    let path =
        manifest_path.unwrap_or_else(|| crate::publish::manifest_here(&bundle, &manifest::project_root_for(&cwd)));
    if !path.is_file() {
        let commit = bundle.run["git"]["commit"].as_str().unwrap_or("(unknown)");
        return Err(usage(
            format!("the bundle's manifest `{}` is not here ({})", bundle.manifest.path, path.display()),
            format!(
                "check out the study's repository at commit {commit} and run `aurora check` from it, or pass --manifest"
            ),
        ));
    }
    let plan = plan(resolve(&path, bundle.manifest.profile.clone(), Vec::new())?)?;
    let store = open_store(&plan.manifest.project_root)?;
    let remote = match (remote.open()?, &bundle.remote) {
        (Some(r), _) => Some(r),
        (None, Some(url)) if pull || !rerun.is_empty() => Some(
            aurora_remote::open_shared(url)
                .map_err(|e| usage(e.to_string(), "pass --remote with credentials for the bundle's remote"))?,
        ),
        _ => None,
    };
    if pull && remote.is_none() {
        return Err(usage("--pull needs a remote cache", "the bundle names none: pass --remote URL"));
    }
    let observer = output::StderrObserver::new(!json);
    let options = CheckOptions {
        rerun: rerun.into_iter().collect(),
        tolerances,
        remote,
        pull,
        observer: &observer,
        progress: &observer,
    };
    if plan.manifest.digest != bundle.manifest.digest && !json {
        eprintln!(
            "note: the manifest here resolves to {}, the bundle's to {}",
            plan.manifest.digest, bundle.manifest.digest
        );
    }
    let checked = crate::publish::check(&plan, &store, &bundle, &options)?;
    print!("{}", crate::publish::table(&checked, json));
    let bad = checked.iter().any(|c| matches!(c.verdict, Verdict::Differs | Verdict::Missing));
    Ok(if bad { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

fn cmd_push(
    args: &ManifestArgs,
    remote: Arc<dyn aurora_core::remote::RemoteCache>,
    force: bool,
    json: bool,
) -> Result<ExitCode> {
    let plan = plan(args.resolve()?)?;
    let store = open_store(&plan.manifest.project_root)?;
    let observer = output::StderrObserver::new(!json);
    let pushed = remote::push(&plan, &store, remote.as_ref(), force, &observer)?;
    print!("{}", output::push_report(remote.url(), &pushed, json));
    Ok(if pushed.iter().any(|p| p.error.is_some()) { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

fn cmd_verify_node(path: &Path, profile: Option<String>, sets: Vec<String>, node: &str) -> Result<ExitCode> {
    let plan: Plan = plan(resolve(path, profile, sets)?)?;
    let store = open_store(&plan.manifest.project_root)?;
    let outcome = execute::verify_node(&plan, &store, node, &output::StderrObserver::new(true))?;
    print!("{}", output::verify_node(node, &outcome));
    Ok(if outcome.differences.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn cmd_verify_store() -> Result<ExitCode> {
    let store = open_existing_store_here()?;
    let report = store.verify().context("cannot verify the store")?;
    print!("{}", output::verify_store(&store, &report));
    Ok(if report.is_ok() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn cmd_gc(keep: &[PathBuf], keep_runs: usize, dry_run: bool) -> Result<ExitCode> {
    let mut artifacts = BTreeSet::new();
    let mut actions = BTreeSet::new();
    let mut store = None;
    for path in keep {
        let plan = plan(resolve(path, None, Vec::new())?)?;
        let s = open_store(&plan.manifest.project_root)?;
        for r in execute::status(&plan, &s)? {
            actions.extend(r.key);
            artifacts.extend(r.artifact);
        }
        store.get_or_insert(s);
    }
    let store = match store {
        Some(s) => s,
        None => open_existing_store_here()?,
    };
    let runs = store.list_runs()?;
    for id in runs.iter().rev().take(keep_runs) {
        let record = store.read_run(id)?;
        for node in record["nodes"].as_array().into_iter().flatten() {
            actions.extend(node["key"].as_str().and_then(|k| k.parse::<Digest>().ok()));
            artifacts.extend(node["artifact"].as_str().and_then(|k| k.parse::<Digest>().ok()));
        }
    }
    let report = store.gc(&artifacts, &actions, dry_run).context("garbage collection failed")?;
    print!("{}", output::gc(&report));
    Ok(ExitCode::SUCCESS)
}

fn cmd_schema(out: Option<&Path>, check: bool) -> Result<ExitCode> {
    let files = aurora_core::schema::schema_files();
    let Some(dir) = out else {
        print!("{}", files["manifest.schema.json"]);
        return Ok(ExitCode::SUCCESS);
    };
    if check {
        let mut drift = Vec::new();
        for (rel, content) in &files {
            let on_disk = std::fs::read_to_string(dir.join(rel)).unwrap_or_default();
            if &on_disk != content {
                drift.push(rel.clone());
            }
        }
        let plugins_dir = dir.join("plugins");
        for entry in std::fs::read_dir(&plugins_dir).into_iter().flatten().flatten() {
            let rel = format!("plugins/{}", entry.file_name().to_string_lossy());
            if !files.contains_key(&rel) {
                drift.push(format!("{rel} (no such plugin any more)"));
            }
        }
        if drift.is_empty() {
            println!("schemas are up to date ({} files)", files.len());
            return Ok(ExitCode::SUCCESS);
        }
        eprintln!("error: generated schemas differ from {}:", dir.display());
        for d in &drift {
            eprintln!("  {d}");
        }
        eprintln!("help: run `cargo xtask schema` and commit the result");
        return Ok(ExitCode::from(1));
    }
    let plugins_dir = dir.join("plugins");
    if plugins_dir.exists() {
        std::fs::remove_dir_all(&plugins_dir).with_context(|| format!("cannot clear {}", plugins_dir.display()))?;
    }
    std::fs::create_dir_all(&plugins_dir).with_context(|| format!("cannot create {}", plugins_dir.display()))?;
    for (rel, content) in &files {
        let path = dir.join(rel);
        std::fs::write(&path, content).with_context(|| format!("cannot write {}", path.display()))?;
    }
    println!("wrote {} schema files to {}", files.len(), dir.display());
    Ok(ExitCode::SUCCESS)
}

fn cmd_runs(command: RunsCommand) -> Result<ExitCode> {
    let store = open_existing_store_here()?;
    match command {
        RunsCommand::List { json } => {
            let mut records = Vec::new();
            for id in store.list_runs()? {
                records.push(store.read_run(&id)?);
            }
            if json {
                let summaries: Vec<_> = records.iter().map(output::run_summary).collect();
                println!("{}", serde_json::to_string_pretty(&json!(summaries))?);
            } else {
                print!("{}", output::runs_table(&records));
            }
        }
        RunsCommand::Show { id, json } => {
            let record =
                store.read_run(&id).map_err(|e| usage(e.to_string(), "`aurora runs list` shows the run ids"))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&record)?);
            } else {
                print!("{}", output::run_details(&record));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn cmd_diff(run_a: &str, run_b: &str, json: bool) -> Result<ExitCode> {
    let store = open_existing_store_here()?;
    let read = |id: &str| store.read_run(id).map_err(|e| usage(e.to_string(), "`aurora runs list` shows the run ids"));
    let diff = crate::diff::diff_runs(&store, &read(run_a)?, &read(run_b)?);
    print!("{}", output::run_diff(&diff, json));
    Ok(if diff.identical { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
