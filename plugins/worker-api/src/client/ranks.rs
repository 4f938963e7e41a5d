//! Running a job on several ranks: the launcher (`aurora_launch::Launcher`, chosen by
//! `aurora run --launcher`) starts one worker per rank, either as local processes given
//! torchrun's variables, or as the tasks of one `srun` step inside a Slurm allocation. Rank 0's
//! events drive the node's progress and result; every rank's output goes to the node's log,
//! prefixed `[rank R]`.
//!
//! Failure: the node fails with the first rank that failed for a reason of its own (killed,
//! crashed, or an error other than a communication failure) and that rank's log tail; ranks that
//! only saw a peer vanish are listed after it. The other ranks get [`GRACE`] to notice and say
//! so, then are killed: nothing is published, and the node's work directory keeps the last
//! complete checkpoint for the rerun.

use std::collections::VecDeque;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use aurora_core::plugin::{ExecContext, PluginError};
use aurora_core::process::{GuardedChild, spawn_guarded};
use aurora_launch::slurm::{SrunStep, parse_label_line};
use aurora_launch::{Launcher, local};
use serde_json::{Map, Value};

use super::{TAIL_LINES, WORKER_NAME, signal_hint, spawn_reader, worker_path, write_job};
use crate::{Event, Job};

/// How long the other ranks get, after one failed, to notice and say so before they are killed.
const GRACE: Duration = Duration::from_secs(10);
/// The worker's exit status when it failed because communication with another rank failed
/// (so another rank's failure is the cause).
pub const EXIT_COMMUNICATION: i32 = 3;

/// A line of output: the rank (`None`: the launcher's own line), whether it came on stdout.
type Tagged = (Option<usize>, bool, String);

/// Runs `job` on `world` ranks (one rank: [`super::run`]).
pub fn run_ranks(job: &Job, world: usize, ctx: &mut ExecContext<'_>) -> Result<Map<String, Value>, PluginError> {
    if world <= 1 {
        return super::run(job, ctx);
    }
    let launcher = Launcher::from_env(|k| std::env::var(k).ok()).map_err(|e| PluginError::new(e.to_string()))?;
    let worker = worker_path()?;
    let job_path = write_job(job, ctx)?;
    let mut relay = Relay::new(world);
    relay.log(ctx, &format!("{}: {world} ranks, {launcher:?} launcher", ctx.node_id));
    let (tx, rx) = mpsc::channel::<Tagged>();
    let mut children = Vec::new();
    match launcher {
        Launcher::Local => {
            let port = local::free_port()
                .map_err(|e| PluginError::new(format!("cannot find a free port on 127.0.0.1: {e}")))?;
            for rank in 0..world {
                let mut cmd = Command::new(&worker);
                // A worker must take its rank from these, never from this process's environment.
                for var in ["RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"] {
                    cmd.env_remove(var);
                }
                cmd.envs(local::local_rank_vars(rank, world, port));
                // Each rank in a session of its own, as torchrun starts them: with the kernel's
                // autogroup scheduling, ranks sharing aurora's session share one CPU share, and
                // a wake-up between them waits for the next tick (4 ms per small collective,
                // measured by `cargo xtask bench --only dist`). Leaving the watchdog's process
                // group is safe: the rank still dies with aurora (PR_SET_PDEATHSIG, set by
                // spawn_guarded) and starts no processes of its own.
                // SAFETY: setsid is async-signal-safe; it cannot fail here (the child is not a
                // process group leader after spawn_guarded's setpgid).
                unsafe {
                    cmd.pre_exec(|| if libc::setsid() == -1 { Err(std::io::Error::last_os_error()) } else { Ok(()) });
                }
                children.push((Some(rank), start(cmd, &job_path, &tx, Some(rank))?));
            }
        }
        Launcher::Slurm => {
            let gpus = match job {
                Job::Train(t) if t.device.starts_with("cuda") => 1,
                _ => 0,
            };
            let threads = match job {
                Job::Train(t) if t.threads > 0 => Some(t.threads as usize),
                _ => None,
            };
            let step = SrunStep { ntasks: world, cpus_per_task: threads, gpus_per_task: gpus, ..SrunStep::default() };
            let cmd = step
                .command(&worker, [job_path.as_os_str()])
                .map_err(|e| PluginError::new(format!("cannot build the srun step: {e}")))?;
            let shown: Vec<String> = std::iter::once(cmd.get_program())
                .chain(cmd.get_args())
                .map(|a| a.to_string_lossy().into_owned())
                .collect();
            relay.log(ctx, &format!("{}: {}", ctx.node_id, shown.join(" ")));
            children.push((None, start(cmd, Path::new(""), &tx, None)?));
        }
    }
    drop(tx);
    relay.pump(&rx, &mut children, ctx);
    for (rank, child) in children {
        let ended = child.wait(None).map_err(|e| PluginError::new(format!("waiting for a worker failed: {e}")))?;
        if let Some(r) = rank {
            relay.ranks[r].status.get_or_insert(ended.status);
        } else if !ended.status.success() && relay.first_failure.is_none() {
            relay.launcher_failed = Some(ended.status);
        }
    }
    relay.verdict(ctx.node_id, &job_path)
}

/// Starts a guarded worker (or srun) whose output lines are sent tagged with `rank` (`None`:
/// srun's `--label`led lines, tagged by their label).
fn start(
    mut cmd: Command,
    job_path: &Path,
    tx: &mpsc::Sender<Tagged>,
    rank: Option<usize>,
) -> Result<GuardedChild, PluginError> {
    if !job_path.as_os_str().is_empty() {
        cmd.arg(job_path);
    }
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let program = cmd.get_program().to_string_lossy().into_owned();
    let mut guarded = spawn_guarded(&mut cmd).map_err(|e| {
        let who = rank.map_or_else(|| "the srun step".to_owned(), |r| format!("{WORKER_NAME} for rank {r}"));
        PluginError::new(format!("cannot start {who} ({program}): {e}"))
    })?;
    let out = guarded.child.stdout.take().expect("piped");
    let err = guarded.child.stderr.take().expect("piped");
    let tag = move |stdout: bool| {
        move |text: String| match rank {
            Some(r) => (Some(r), stdout, text),
            None => match parse_label_line(&text) {
                Some((r, rest)) => (Some(r), stdout, rest.to_owned()),
                None => (None, stdout, text),
            },
        }
    };
    // The reader threads end when the pipes close; the relay ends when every sender is gone.
    spawn_reader(out, tx.clone(), tag(true));
    spawn_reader(err, tx.clone(), tag(false));
    Ok(guarded)
}

/// What a rank did.
#[derive(Default)]
struct RankState {
    tail: VecDeque<String>,
    /// The last `error: ...` line it printed.
    error: Option<String>,
    status: Option<ExitStatus>,
    /// Ended by the launcher after another rank failed.
    killed_after_failure: bool,
}

struct Relay {
    ranks: Vec<RankState>,
    metrics: Option<Map<String, Value>>,
    /// Ranks in the order their failure was seen.
    failures: Vec<usize>,
    first_failure: Option<Instant>,
    /// srun's own lines (task exits, errors of the step).
    launcher_lines: Vec<String>,
    launcher_failed: Option<ExitStatus>,
    log_error: Option<std::io::Error>,
}

impl Relay {
    fn new(world: usize) -> Self {
        Relay {
            ranks: (0..world).map(|_| RankState::default()).collect(),
            metrics: None,
            failures: Vec::new(),
            first_failure: None,
            launcher_lines: Vec::new(),
            launcher_failed: None,
            log_error: None,
        }
    }

    fn log(&mut self, ctx: &mut ExecContext<'_>, text: &str) {
        if self.log_error.is_none()
            && let Err(e) = writeln!(ctx.log, "{text}")
        {
            self.log_error = Some(e);
        }
    }

    fn failed(&mut self, rank: usize) {
        if !self.failures.contains(&rank) {
            self.failures.push(rank);
        }
        self.first_failure.get_or_insert_with(Instant::now);
    }

    /// Handles one line of output.
    fn line(&mut self, (rank, stdout, text): Tagged, ctx: &mut ExecContext<'_>) {
        let Some(rank) = rank.filter(|&r| r < self.ranks.len()) else {
            // srun reports each task's end on its own stderr: "srun: error: HOST: task 1: Killed".
            if let Some(rank) = srun_task_failure(&text).filter(|&r| r < self.ranks.len()) {
                self.failed(rank);
            }
            self.log(ctx, &text);
            self.launcher_lines.push(text);
            return;
        };
        if stdout {
            match serde_json::from_str::<Event>(&text) {
                Ok(Event::Progress { done, total, message }) => {
                    if rank == 0 {
                        ctx.progress.update(ctx.node_id, done, total, &message);
                    }
                    return;
                }
                Ok(Event::Done { metrics }) => {
                    if rank == 0 {
                        self.metrics = Some(metrics);
                    }
                    return;
                }
                Err(_) => {}
            }
        }
        self.log(ctx, &format!("[rank {rank}] {text}"));
        let state = &mut self.ranks[rank];
        if let Some(error) = text.strip_prefix("error: ") {
            state.error = Some(error.to_owned());
        }
        if state.tail.len() == TAIL_LINES {
            state.tail.pop_front();
        }
        state.tail.push_back(text);
    }

    /// Relays output until every pipe is closed; notices ranks that end badly and, [`GRACE`]
    /// after the first, kills the ones still running.
    fn pump(
        &mut self,
        rx: &mpsc::Receiver<Tagged>,
        children: &mut [(Option<usize>, GuardedChild)],
        ctx: &mut ExecContext<'_>,
    ) {
        loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(line) => self.line(line, ctx),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
            for (rank, child) in children.iter_mut() {
                let Some(r) = *rank else { continue };
                if self.ranks[r].status.is_some() {
                    continue;
                }
                if let Ok(Some(status)) = child.child.try_wait() {
                    self.ranks[r].status = Some(status);
                    if !status.success() {
                        self.failed(r);
                    }
                }
            }
            if self.first_failure.is_some_and(|t| t.elapsed() > GRACE) {
                for (rank, child) in children.iter_mut() {
                    if let Some(r) = *rank
                        && self.ranks[r].status.is_none()
                    {
                        self.ranks[r].killed_after_failure = true;
                    }
                    let _ = child.child.kill();
                }
            }
        }
    }

    /// Whether rank `r` failed for a reason of its own (not only because a peer vanished).
    fn own_failure(&self, r: usize) -> bool {
        let state = &self.ranks[r];
        !state.killed_after_failure && state.status.is_none_or(|s| s.code() != Some(EXIT_COMMUNICATION))
    }

    fn verdict(mut self, node: &str, job_path: &Path) -> Result<Map<String, Value>, PluginError> {
        if let Some(e) = self.log_error {
            return Err(PluginError::new(format!("cannot write the node's log: {e}")));
        }
        for r in 0..self.ranks.len() {
            if self.ranks[r].status.is_some_and(|s| !s.success()) {
                self.failed(r);
            }
        }
        let world = self.ranks.len();
        if self.failures.is_empty()
            && self.launcher_failed.is_none()
            && let Some(metrics) = self.metrics.take()
        {
            return Ok(metrics);
        }
        let primary =
            self.failures.iter().copied().find(|&r| self.own_failure(r)).or_else(|| self.failures.first().copied());
        let Some(rank) = primary else {
            let why = match self.launcher_failed {
                Some(status) => format!("the srun step {}", describe(status)),
                None => "rank 0 exited without reporting a result (no `done` event on stdout)".to_owned(),
            };
            return Err(PluginError {
                message: format!("{node}: {why} (job: {})", job_path.display()),
                log_tail: Some(self.launcher_lines.join("\n")),
            });
        };
        let state = &self.ranks[rank];
        let how = match state.status {
            Some(status) => describe(status),
            None => "failed".to_owned(),
        };
        let mut message = format!("rank {rank} of {world} {how}");
        if let Some(error) = &state.error {
            message.push_str(&format!(": {error}"));
        }
        let others: Vec<String> = self.failures.iter().filter(|&&r| r != rank).map(usize::to_string).collect();
        if !others.is_empty() {
            message.push_str(&format!("; then rank(s) {} stopped too", others.join(", ")));
        }
        Err(PluginError {
            message: format!(
                "{node}: {message} (job: {}; every rank's output is in the node's log)",
                job_path.display()
            ),
            log_tail: Some(state.tail.iter().cloned().collect::<Vec<_>>().join("\n")),
        })
    }
}

fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(sig)) => format!("was killed by signal {sig}{}", signal_hint(sig)),
        _ => "ended abnormally".to_owned(),
    }
}

/// The task of an srun line reporting a task's bad end ("... task 3: Exited with exit code 1",
/// "... task 1: Killed"), if it is one.
fn srun_task_failure(line: &str) -> Option<usize> {
    let at = line.find("task ")?;
    let rest = &line[at + 5..];
    let (digits, tail) = rest.split_once(':')?;
    let rank = digits.trim().parse().ok()?;
    let tail = tail.trim();
    (tail.starts_with("Exited with exit code") || tail.starts_with("Killed") || tail.contains("signal")).then_some(rank)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn srun_task_lines() {
        assert_eq!(srun_task_failure("srun: error: node1: task 3: Exited with exit code 1"), Some(3));
        assert_eq!(srun_task_failure("srun: error: node1: task 0: Killed"), Some(0));
        assert_eq!(srun_task_failure("srun: Job step aborted: Waiting up to 32 seconds"), None);
        assert_eq!(srun_task_failure("srun: launching task 1: ok"), None);
    }
}
