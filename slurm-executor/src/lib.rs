//! `aurora run --executor slurm`. aurora stays the DAG's scheduler on the login node: it keys
//! nodes and answers from the caches; each node that must execute is submitted with `sbatch` as
//! a job that runs `aurora exec-node` against the shared store, sized from the node (a training
//! stage asks for `tp * pp * dp` tasks, one GPU each on CUDA, and runs its ranks as an `srun`
//! step inside the job). Jobs are tracked with `squeue`, then `scontrol` (or `sacct`) for how
//! they ended; a failed job's log tail is shown; `cancel_all` (Ctrl-C) runs `scancel`. A
//! requeued or preempted job resumes from its checkpoint, which lives in the shared store.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use aurora_core::Digest;
use aurora_core::execute::{Dispatcher, Observer};
use aurora_core::plan::{Plan, PlannedNode};
use serde_json::Value;

/// Where job logs go, under the store root (`slurm/<node>-<job id>.log`): outside `work/`, so
/// a failed job's log outlives the next attempt.
pub const LOG_DIR: &str = "slurm";

/// How many times one node is submitted when its jobs time out or lose their node
/// (`AURORA_SLURM_SUBMISSIONS`, default 20: a 377B-token stage is many 48-hour jobs).
pub const SUBMISSIONS_ENV: &str = "AURORA_SLURM_SUBMISSIONS";
const DEFAULT_SUBMISSIONS: u32 = 20;

/// The longest wait between two `squeue` polls of one job.
const MAX_POLL: Duration = Duration::from_secs(5);
const FIRST_POLL: Duration = Duration::from_millis(200);
/// How long one Slurm client command may take before it counts as failed.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum SlurmError {
    #[error(
        "`{command}` cannot be started: {source} (the Slurm executor needs Slurm's client commands sbatch, squeue, scontrol and scancel on PATH: install slurm-client, or load your cluster's slurm module)"
    )]
    Missing {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` failed ({status}): {stderr}")]
    Failed { command: String, status: String, stderr: String },
    #[error("`{command}` printed {stdout:?}, not a job id")]
    Unparsable { command: String, stdout: String },
    #[error("cannot write {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What each job runs: this aurora binary, on this manifest with these options.
#[derive(Debug, Clone)]
pub struct JobCommand {
    /// The `aurora` binary (on the shared file system).
    pub aurora: PathBuf,
    pub manifest: PathBuf,
    pub profile: Option<String>,
    pub sets: Vec<String>,
    /// The store's root (exported to the job as `AURORA_STORE`).
    pub store: PathBuf,
    /// The directory jobs start in.
    pub workdir: PathBuf,
}

pub struct SlurmExecutor {
    job: JobCommand,
    /// The environment of Slurm client commands: this process's, without the `SLURM_*`
    /// variables of an enclosing allocation (they would shape the new jobs), `SLURM_CONF` kept.
    env: Vec<(OsString, OsString)>,
    /// Jobs submitted and not yet ended: job id -> node id.
    running: Mutex<BTreeMap<String, String>>,
    /// Submissions of one node at most, when its jobs run out of time or lose their node.
    max_submissions: u32,
}

/// How a job ended, from `scontrol show job` or `sacct`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobEnd {
    pub state: String,
    pub exit_code: String,
    pub reason: String,
}

impl SlurmExecutor {
    pub fn new(job: JobCommand) -> SlurmExecutor {
        let env = std::env::vars_os()
            .filter(|(k, _)| {
                let k = k.to_string_lossy();
                !k.starts_with("SLURM_") || k == "SLURM_CONF"
            })
            .collect();
        let max_submissions =
            std::env::var(SUBMISSIONS_ENV).ok().and_then(|v| v.parse().ok()).unwrap_or(DEFAULT_SUBMISSIONS).max(1);
        SlurmExecutor { job, env, running: Mutex::new(BTreeMap::new()), max_submissions }
    }

    fn client(&self, program: &str) -> Command {
        let mut command = Command::new(program);
        command.env_clear().envs(self.env.iter().map(|(k, v)| (k, v))).stdin(Stdio::null());
        command
    }

    /// Cancels every job this executor submitted that has not ended (Ctrl-C). Returns their ids.
    pub fn cancel_all(&self) -> Vec<String> {
        let ids: Vec<String> = self.running.lock().expect("job table").keys().cloned().collect();
        if !ids.is_empty() {
            let _ = output_within(self.client("scancel").args(&ids), CLIENT_TIMEOUT);
        }
        ids
    }

    /// `sbatch` arguments for a node (without the script).
    pub fn sbatch_args(&self, plan: &Plan, node: &PlannedNode, log: &Path) -> Vec<String> {
        let resources = node.plugin.resources(&node.config);
        let mut args = vec![
            "--parsable".to_string(),
            format!("--job-name=aurora:{}", node.id),
            format!("--output={}", log.display()),
            format!("--chdir={}", self.job.workdir.display()),
            format!("--ntasks={}", resources.tasks),
            // 0 (every core of the machine, locally) is one core here: set `threads` to size it.
            format!("--cpus-per-task={}", resources.cpus_per_task.max(1)),
            // A preempted job goes back to the queue and resumes from its checkpoint.
            "--requeue".to_string(),
            format!("--export=ALL,AURORA_STORE={}", self.job.store.display()),
        ];
        if resources.gpus_per_task > 0 {
            args.push(format!("--gpus-per-task={}", resources.gpus_per_task));
        }
        if let Some(mb) = resources.memory_mb_per_task {
            args.push(format!("--mem-per-cpu={}", mb.div_ceil(u64::from(resources.cpus_per_task.max(1)))));
        }
        let entry = node.pointer.trim_start_matches('/').replacen('/', ".", 1);
        if let Some(Value::Object(fields)) = plan.manifest.slurm.get(&entry) {
            for (field, value) in fields {
                if let Some(value) = value.as_str() {
                    args.push(format!("--{field}={value}"));
                }
            }
        }
        args
    }

    /// The batch script: `aurora exec-node` for one node, every argument quoted for `sh`.
    pub fn script(&self, node: &PlannedNode, key: &Digest) -> String {
        let mut argv = vec![
            self.job.aurora.display().to_string(),
            "exec-node".to_string(),
            self.job.manifest.display().to_string(),
            "--node".to_string(),
            node.id.clone(),
        ];
        if let Some(p) = &self.job.profile {
            argv.extend(["--profile".to_string(), p.clone()]);
        }
        for set in &self.job.sets {
            argv.extend(["--set".to_string(), set.clone()]);
        }
        let line: Vec<String> = argv.iter().map(|a| shell_quote(a)).collect();
        format!("#!/bin/sh\n# aurora node {} (key {key})\nexec {}\n", node.id, line.join(" "))
    }

    fn submit(&self, plan: &Plan, node: &PlannedNode, key: &Digest) -> Result<(String, PathBuf), SlurmError> {
        let dir = self.job.store.join(LOG_DIR);
        std::fs::create_dir_all(&dir).map_err(|source| SlurmError::Io { path: dir.clone(), source })?;
        let log = dir.join(format!("{}-%j.log", node.id.replace('/', ".")));
        let mut args = self.sbatch_args(plan, node, &log);
        // The script stays beside the logs: what ran is there to read and to resubmit by hand.
        let script = dir.join(format!("{}.sbatch", node.id.replace('/', ".")));
        std::fs::write(&script, self.script(node, key))
            .map_err(|source| SlurmError::Io { path: script.clone(), source })?;
        args.push(script.display().to_string());
        let described = format!("sbatch {}", args.join(" "));
        let out = output_within(self.client("sbatch").args(&args), CLIENT_TIMEOUT)
            .map_err(|source| SlurmError::Missing { command: "sbatch".into(), source })?;
        if !out.status.success() {
            return Err(failed(&described, &out));
        }
        let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
        // `--parsable` prints `ID` or `ID;CLUSTER`.
        let id = stdout.split(';').next().unwrap_or_default().to_string();
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(SlurmError::Unparsable { command: described, stdout });
        }
        let log = dir.join(format!("{}-{id}.log", node.id.replace('/', ".")));
        Ok((id, log))
    }

    /// Polls `squeue` until the job has left the queue, with a growing interval.
    fn wait(&self, id: &str) -> Result<(), SlurmError> {
        let mut interval = FIRST_POLL;
        loop {
            let out = output_within(self.client("squeue").args(["-h", "-j", id, "-o", "%T"]), CLIENT_TIMEOUT)
                .map_err(|source| SlurmError::Missing { command: "squeue".into(), source })?;
            let state = String::from_utf8_lossy(&out.stdout).trim().to_string();
            let stderr = String::from_utf8_lossy(&out.stderr);
            // Once the job has ended, squeue says nothing (or "Invalid job id" once it is purged).
            if (out.status.success() && state.is_empty()) || stderr.contains("Invalid job id") {
                return Ok(());
            }
            if !out.status.success() {
                return Err(failed(&format!("squeue -h -j {id}"), &out));
            }
            std::thread::sleep(interval);
            interval = (interval * 2).min(MAX_POLL);
        }
    }

    /// How the job ended: `scontrol show job` while Slurm remembers it, else `sacct`.
    pub fn end_of(&self, id: &str) -> Option<JobEnd> {
        if let Ok(out) = output_within(self.client("scontrol").args(["show", "job", "-o", id]), CLIENT_TIMEOUT)
            && out.status.success()
        {
            let text = String::from_utf8_lossy(&out.stdout);
            let field = |name: &str| {
                text.split_whitespace().find_map(|f| f.strip_prefix(name).map(str::to_string)).unwrap_or_default()
            };
            return Some(JobEnd { state: field("JobState="), exit_code: field("ExitCode="), reason: field("Reason=") });
        }
        let out = output_within(
            self.client("sacct").args(["-n", "-P", "-X", "-j", id, "-o", "State,ExitCode"]),
            CLIENT_TIMEOUT,
        )
        .ok()
        .filter(|o| o.status.success())?;
        let text = String::from_utf8_lossy(&out.stdout);
        let (state, exit_code) = text.lines().next()?.split_once('|')?;
        let state = state.split_whitespace().next().unwrap_or_default().to_string();
        Some(JobEnd { state, exit_code: exit_code.to_string(), reason: String::new() })
    }
}

impl Dispatcher for SlurmExecutor {
    fn run_node(&self, plan: &Plan, node: &PlannedNode, key: &Digest, observer: &dyn Observer) -> Result<(), String> {
        let mut attempt = 1;
        loop {
            let (id, log) = self.submit(plan, node, key).map_err(|e| e.to_string())?;
            let detail = match attempt {
                1 => format!("Slurm job {id}, log {}", log.display()),
                n => format!("Slurm job {id} (submission {n}, resuming), log {}", log.display()),
            };
            observer.event(aurora_core::execute::Event::Dispatched { node: &node.id, detail: &detail });
            self.running.lock().expect("job table").insert(id.clone(), node.id.clone());
            let waited = self.wait(&id);
            self.running.lock().expect("job table").remove(&id);
            waited.map_err(|e| e.to_string())?;
            let end = self.end_of(&id);
            let Some(end) = end.filter(|e| e.state != "COMPLETED") else {
                // Completed, or forgotten by both scontrol and sacct: the store says whether it worked.
                return Ok(());
            };
            // A long stage outlives any one job's time limit: it goes on from its checkpoint in
            // the next job, as it would after a preemption.
            if RESUBMITTED_STATES.contains(&end.state.as_str()) && attempt < self.max_submissions {
                attempt += 1;
                continue;
            }
            return Err(self.job_failure(node, &id, &log, &end, attempt));
        }
    }
}

/// Job ends after which the node is submitted again (it resumes from its last checkpoint).
const RESUBMITTED_STATES: [&str; 4] = ["TIMEOUT", "PREEMPTED", "NODE_FAIL", "BOOT_FAIL"];

impl SlurmExecutor {
    fn job_failure(&self, node: &PlannedNode, id: &str, log: &Path, end: &JobEnd, attempts: u32) -> String {
        let why = match end.state.as_str() {
            "TIMEOUT" => format!(
                "exceeded its time limit ({attempts} submissions in all); raise it with `slurm = {{ time = \"...\" }}` on the entry of `{}`, or AURORA_SLURM_SUBMISSIONS (rerunning resumes from its last checkpoint)",
                node.id
            ),
            "CANCELLED" => "was cancelled (scancel); rerunning resumes from its last checkpoint".to_string(),
            "PREEMPTED" | "NODE_FAIL" | "BOOT_FAIL" => format!(
                "lost its node ({}, {attempts} submissions in all); rerunning resumes from its last checkpoint",
                end.state
            ),
            state => format!("ended {state} (exit code {})", end.exit_code),
        };
        let reason =
            if end.reason.is_empty() || end.reason == "None" { String::new() } else { format!(" ({})", end.reason) };
        format!("Slurm job {id} {why}{reason}\n--- last lines of {} ---\n{}", log.display(), tail(log, 20))
    }
}

fn failed(command: &str, out: &Output) -> SlurmError {
    SlurmError::Failed {
        command: command.to_string(),
        status: out.status.to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
    }
}

fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read(path).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Single-quoted for `sh`.
fn shell_quote(s: &str) -> String {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"/._-=:,+@".contains(&b)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Runs a client command with a bound on its time (a hung controller must not hang aurora).
fn output_within(command: &mut Command, limit: Duration) -> std::io::Result<Output> {
    let child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out,
        Err(_) => {
            // SAFETY: kill(2) on the pid of our own child, which has not been reaped yet.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            Err(std::io::Error::new(std::io::ErrorKind::TimedOut, format!("no answer within {limit:?}")))
        }
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_survives_spaces_and_quotes() {
        assert_eq!(shell_quote("stages/cap"), "stages/cap");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }
}
