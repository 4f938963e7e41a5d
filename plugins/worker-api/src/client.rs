//! Running a job: finds `aurora-worker`, starts it guarded (it dies with aurora, see
//! [`aurora_core::process`]), relays its progress and log, and returns its result.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;

use aurora_core::plugin::{ExecContext, PluginError};
use aurora_core::process::spawn_guarded;
use serde_json::{Map, Value};

use crate::{Event, Job};

mod ranks;
pub use ranks::{EXIT_COMMUNICATION, run_ranks};

/// Environment variable naming the worker binary (overrides the lookup next to `aurora`).
pub const WORKER_ENV: &str = "AURORA_WORKER";
/// The worker's file name.
pub const WORKER_NAME: &str = "aurora-worker";
/// Lines of the worker's log kept for an error message.
const TAIL_LINES: usize = 20;

/// The worker binary: `$AURORA_WORKER`, else `aurora-worker` in the directory of the running
/// executable (cargo puts both binaries in `target/<profile>/`).
pub fn worker_path() -> Result<PathBuf, PluginError> {
    if let Some(path) = std::env::var_os(WORKER_ENV) {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(PluginError::new(format!(
                "{WORKER_ENV}={} is not a file; point it at the `{WORKER_NAME}` binary or unset it",
                path.display()
            )))
        };
    }
    let exe = std::env::current_exe()
        .map_err(|e| PluginError::new(format!("cannot find the running executable to locate {WORKER_NAME}: {e}")))?;
    let dir = exe.parent().unwrap_or(&exe);
    // Test binaries live one level down, in `target/<profile>/deps/`.
    let candidates = [dir.join(WORKER_NAME), dir.parent().unwrap_or(dir).join(WORKER_NAME)];
    candidates.iter().find(|p| p.is_file()).cloned().ok_or_else(|| {
        PluginError::new(format!(
            "the worker binary `{WORKER_NAME}` was not found (looked for {} and {}; {WORKER_ENV} is not set); \
             build it with `cargo build -p aurora-worker` (with the same profile as aurora; `cargo xtask run` \
             does this) or set {WORKER_ENV} to its path",
            candidates[0].display(),
            candidates[1].display()
        ))
    })
}

/// What a line of the worker's output is.
enum Line {
    Stdout(String),
    Stderr(String),
}

/// Runs `job` in `aurora-worker`: writes it as `job.json` into the node's resume directory,
/// relays progress events to `ctx.progress` and the worker's stderr (and any stdout line that is
/// not an event) to `ctx.log`, and returns the metrics of its `Done` event.
pub fn run(job: &Job, ctx: &mut ExecContext<'_>) -> Result<Map<String, Value>, PluginError> {
    run_worker(&worker_path()?, job, ctx)
}

/// Writes `job` as `job.json` into the node's resume directory.
fn write_job(job: &Job, ctx: &ExecContext<'_>) -> Result<PathBuf, PluginError> {
    let job_path = ctx.resume_dir_created()?.join("job.json");
    let text = serde_json::to_string_pretty(job).expect("jobs serialise");
    std::fs::write(&job_path, text)
        .map_err(|e| PluginError::new(format!("cannot write {}: {e}", job_path.display())))?;
    Ok(job_path)
}

/// [`run`] with the worker binary given explicitly.
pub fn run_worker(worker: &Path, job: &Job, ctx: &mut ExecContext<'_>) -> Result<Map<String, Value>, PluginError> {
    let job_path = write_job(job, ctx)?;

    let mut cmd = Command::new(worker);
    cmd.arg(&job_path).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut guarded = spawn_guarded(&mut cmd)
        .map_err(|e| PluginError::new(format!("cannot start the worker {}: {e}", worker.display())))?;
    let (tx, rx) = mpsc::channel();
    let stdout = guarded.child.stdout.take().expect("stdout is piped");
    let stderr = guarded.child.stderr.take().expect("stderr is piped");
    let readers = [spawn_reader(stdout, tx.clone(), Line::Stdout), spawn_reader(stderr, tx, Line::Stderr)];

    let mut tail = VecDeque::with_capacity(TAIL_LINES);
    let mut metrics = None;
    let mut log_error = None;
    // Ends when both pipes are closed (the worker and anything holding its pipes are gone).
    for line in rx {
        let text = match line {
            Line::Stdout(text) => match serde_json::from_str::<Event>(&text) {
                Ok(Event::Progress { done, total, message }) => {
                    ctx.progress.update(ctx.node_id, done, total, &message);
                    continue;
                }
                Ok(Event::Done { metrics: m }) => {
                    metrics = Some(m);
                    continue;
                }
                Err(_) => text,
            },
            Line::Stderr(text) => text,
        };
        if tail.len() == TAIL_LINES {
            tail.pop_front();
        }
        tail.push_back(text.clone());
        if log_error.is_none()
            && let Err(e) = writeln!(ctx.log, "{text}")
        {
            log_error = Some(e);
        }
    }
    for reader in readers {
        let _ = reader.join();
    }
    let ended = guarded.wait(None).map_err(|e| PluginError::new(format!("waiting for the worker failed: {e}")))?;
    if let Some(e) = log_error {
        return Err(PluginError::new(format!("cannot write the node's log: {e}")));
    }
    let log_tail = Some(tail.into_iter().collect::<Vec<_>>().join("\n"));
    let status = ended.status;
    let failure = match (status.code(), status.signal(), metrics) {
        (Some(0), _, Some(metrics)) => return Ok(metrics),
        (Some(0), _, None) => "exited with status 0 without reporting a result (no `done` event on stdout)".to_string(),
        (Some(code), _, _) => format!("exited with status {code}"),
        (None, Some(sig), _) => format!("was killed by signal {sig}{}", signal_hint(sig)),
        (None, None, _) => "ended abnormally".to_string(),
    };
    Err(PluginError {
        message: format!("{WORKER_NAME} {failure} while running {} (job: {})", ctx.node_id, job_path.display()),
        log_tail,
    })
}

fn signal_hint(sig: i32) -> &'static str {
    match sig {
        libc::SIGKILL => " (often the kernel's out-of-memory killer: check `dmesg`, reduce micro_batch or seq_len)",
        libc::SIGSEGV | libc::SIGABRT => " (a crash in native code; the log above may say where)",
        _ => "",
    }
}

/// Forwards each line of `pipe` (lossily decoded, wrapped by `wrap`) until it closes.
fn spawn_reader<R: Read + Send + 'static, T: Send + 'static>(
    pipe: R,
    tx: mpsc::Sender<T>,
    wrap: impl Fn(String) -> T + Send + 'static,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(pipe);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let text = String::from_utf8_lossy(&buf).trim_end_matches(['\n', '\r']).to_string();
                    if tx.send(wrap(text)).is_err() {
                        break;
                    }
                }
            }
        }
    })
}
