//! Runs untrusted programs (model completions, in Python or any [language](crate::toolchain)) so
//! that whatever they do, the caller neither hangs nor keeps a process of them.
//!
//! A run writes the program into a fresh temp dir (cwd, `HOME`, `TMPDIR`) and runs its
//! language's steps there (Python: `python3 - < program.py`; C++: `g++`, then the binary; see
//! [`crate::toolchain`]), each step a process with a cleaned environment and these layers of
//! containment, from the strongest one the machine offers. Sources are named relatively or come
//! in on stdin (Python's tracebacks name `<stdin>`), never by the random directory, so a failing
//! program fails with the same bytes in every run:
//!
//! * **PID and network namespaces** (`unshare(CLONE_NEWPID | CLONE_NEWNET)`, with a user
//!   namespace when not root): the program is PID 1 of its own namespace, so when it exits or is
//!   killed the kernel kills every process it started, and waiting for it returns only once they
//!   are all gone. Its network namespace has only a downed loopback: no connection succeeds.
//!   (As an init, the program ignores signals it sends itself for which it has no handler, e.g.
//!   `os.kill(os.getpid(), signal.SIGTERM)`; faults such as `SIGSEGV` still kill it.)
//! * **a pids cgroup** (v1 `pids` hierarchy, or v2 with `pids` delegated) capping the number of
//!   processes at [`Limits::processes`]: this is what stops a fork bomb when running as root,
//!   which ignores `RLIMIT_NPROC`.
//! * **rlimits**: address space, CPU seconds, file size, no core files, and processes: binding for
//!   non-root only, and set after entering the user namespace so that it counts this run's
//!   processes, not all of the user's (concurrent runs do not starve each other).
//! * **its own process group and a wall clock**: at the wall limit the group is killed.
//!
//! Between this process and each step's process sits a small supervisor (a fork of the spawned child, outside
//! the namespaces): it waits for the step's process and exits with its status, and on `SIGTERM`
//! (our wall limit) kills it, so our `wait` still returns only after the namespace is empty.
//! [`isolation`] says which layers this machine gave. Limits of each fallback: as root without a
//! writable pids cgroup a fork bomb is unbounded until the wall limit (the namespace still takes
//! every process down with it); without namespaces a program that leaves its process group
//! (`setsid`) and escapes the cgroup can outlive the run, and the network is open. Memory is capped
//! per process (`RLIMIT_AS`), not per run.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::toolchain::{Exe, Language, Recipe, Step, ToolchainError};

/// Resource limits of one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Wall-clock time, after which the whole run is killed ([`Status::TimedOut`]).
    pub wall: Duration,
    /// CPU seconds (`RLIMIT_CPU`: `SIGXCPU`, then `SIGKILL` a second later).
    pub cpu_s: u64,
    /// Address space of each process (`RLIMIT_AS`).
    pub memory_bytes: u64,
    /// Processes: the pids cgroup's `pids.max` (and `RLIMIT_NPROC`, which binds non-root only).
    pub processes: u64,
    /// Largest file a process may write (`RLIMIT_FSIZE`).
    pub file_size_bytes: u64,
    /// Bytes of stdout kept (the rest is read and dropped), and of stderr's tail.
    pub output_bytes: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            wall: Duration::from_secs(10),
            cpu_s: 10,
            memory_bytes: 1 << 30,
            processes: 64,
            file_size_bytes: 16 << 20,
            output_bytes: 64 << 10,
        }
    }
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Exit status 0.
    Passed,
    /// A non-zero exit status (an assertion, an exception, `MemoryError`, ...).
    Failed { exit_code: i32, stderr_tail: String },
    /// Still running at [`Limits::wall`]; killed.
    TimedOut,
    /// Killed by a signal it did not handle (`SIGXCPU`=24 at the CPU limit, `SIGKILL`, `SIGSEGV`, ...).
    Killed { signal: i32 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub status: Status,
    pub wall: Duration,
    /// The first [`Limits::output_bytes`] of stdout (lossy UTF-8).
    pub stdout: String,
    /// Whether stdout was longer than that.
    pub stdout_truncated: bool,
    /// The last [`Limits::output_bytes`] of stderr, whatever the status (a killed program's
    /// last words: C++'s failed `assert`, a runtime's fatal error).
    pub stderr_tail: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error(
        "python3 was not found on PATH ({path:?}): install Python 3 or put the directory holding `python3` on PATH"
    )]
    Python3Missing { path: String },
    #[error(
        "{python} does not run (`{python} -c 'import sys; print(sys.executable)'`: {detail}); fix or replace that interpreter"
    )]
    Python3Broken { python: String, detail: String },
    #[error(transparent)]
    Toolchain(#[from] ToolchainError),
    #[error("sandbox: cannot {what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> SandboxError {
    move |source| SandboxError::Io { what: what.into(), source }
}

/// The containment layers this machine provides (probed once per process).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Isolation {
    pub namespaces: Namespaces,
    /// The cgroup directory under which each run gets its own pids cgroup, if writable.
    pub pids_cgroup: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Namespaces {
    /// New PID and network namespaces (privileged).
    PidAndNet,
    /// New user, PID and network namespaces (unprivileged).
    UserPidAndNet,
    /// Neither could be created; `why` is the error of the last attempt.
    Unavailable { why: String },
}

impl Namespaces {
    fn clone_flags(&self) -> libc::c_int {
        match self {
            Namespaces::PidAndNet => libc::CLONE_NEWPID | libc::CLONE_NEWNET,
            Namespaces::UserPidAndNet => libc::CLONE_NEWUSER | libc::CLONE_NEWPID | libc::CLONE_NEWNET,
            Namespaces::Unavailable { .. } => 0,
        }
    }

    /// Whether the program runs without network.
    pub fn no_network(&self) -> bool {
        !matches!(self, Namespaces::Unavailable { .. })
    }
}

impl fmt::Display for Isolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespaces {
            Namespaces::PidAndNet => write!(f, "PID+network namespaces")?,
            Namespaces::UserPidAndNet => write!(f, "user+PID+network namespaces")?,
            Namespaces::Unavailable { why } => write!(f, "no namespaces ({why}): process group only, network open")?,
        }
        match &self.pids_cgroup {
            Some(dir) => write!(f, ", pids cgroup under {}", dir.display()),
            None => write!(f, ", no pids cgroup (processes capped by RLIMIT_NPROC, which root ignores)"),
        }
    }
}

/// The containment this machine gives each run.
pub fn isolation() -> &'static Isolation {
    static ISOLATION: OnceLock<Isolation> = OnceLock::new();
    ISOLATION.get_or_init(|| Isolation { namespaces: probe_namespaces(), pids_cgroup: probe_pids_cgroup() })
}

/// `fork` as the raw system call: glibc's `fork` takes its allocator's locks, which another
/// thread of the parent may have held when the spawning child was forked.
///
/// # Safety
/// The child may only make async-signal-safe calls that do not rely on glibc's cached thread id
/// (so `kill(getpid(), ..)`, never `raise`).
unsafe fn raw_fork() -> libc::pid_t {
    // clone(SIGCHLD, NULL stack, ...) is fork on every Linux architecture.
    unsafe { libc::syscall(libc::SYS_clone, libc::SIGCHLD as libc::c_long, 0, 0, 0, 0) as libc::pid_t }
}

fn wait_exited(pid: libc::pid_t) -> Option<libc::c_int> {
    let mut status = 0;
    loop {
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            return Some(status);
        }
        if r < 0 && io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            return None;
        }
    }
}

/// Whether a child can `unshare(flags)`, and the error if not.
fn try_unshare(flags: libc::c_int) -> Result<(), String> {
    let pid = unsafe { raw_fork() };
    if pid == 0 {
        let code = if unsafe { libc::unshare(flags) } == 0 {
            0
        } else {
            io::Error::last_os_error().raw_os_error().unwrap_or(255)
        };
        unsafe { libc::_exit(code.min(255)) };
    }
    if pid < 0 {
        return Err(format!("fork: {}", io::Error::last_os_error()));
    }
    match wait_exited(pid) {
        Some(s) if libc::WIFEXITED(s) && libc::WEXITSTATUS(s) == 0 => Ok(()),
        Some(s) if libc::WIFEXITED(s) => {
            Err(format!("unshare: {}", io::Error::from_raw_os_error(libc::WEXITSTATUS(s))))
        }
        _ => Err("the probe died".into()),
    }
}

fn probe_namespaces() -> Namespaces {
    if try_unshare(Namespaces::PidAndNet.clone_flags()).is_ok() {
        return Namespaces::PidAndNet;
    }
    match try_unshare(Namespaces::UserPidAndNet.clone_flags()) {
        Ok(()) => Namespaces::UserPidAndNet,
        Err(why) => Namespaces::Unavailable { why },
    }
}

/// This process's pids cgroup directory, if we may create children in it.
fn probe_pids_cgroup() -> Option<PathBuf> {
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let mut candidates = Vec::new();
    for line in own.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let rel = path.trim_start_matches('/');
        if controllers.split(',').any(|c| c == "pids") {
            candidates.push(Path::new("/sys/fs/cgroup").join(controllers).join(rel));
        } else if controllers.is_empty() {
            let dir = Path::new("/sys/fs/cgroup").join(rel);
            let delegated = std::fs::read_to_string(dir.join("cgroup.subtree_control")).unwrap_or_default();
            if delegated.split_whitespace().any(|c| c == "pids") {
                candidates.push(dir);
            }
        }
    }
    let dir = candidates.into_iter().find(|dir| RunCgroup::create(dir, 2).is_ok_and(|cg| cg.remove()))?;
    remove_stale_cgroups(&dir);
    Some(dir)
}

/// The pids cgroup of one run.
struct RunCgroup {
    dir: PathBuf,
    /// `cgroup.procs`, opened for the supervisor to write `0` (itself) into before it forks.
    procs: File,
}

impl RunCgroup {
    fn create(parent: &Path, max: u64) -> io::Result<RunCgroup> {
        static RUNS: AtomicU64 = AtomicU64::new(0);
        let dir =
            parent.join(format!("aurora-sandbox-{}-{}", std::process::id(), RUNS.fetch_add(1, Ordering::Relaxed)));
        std::fs::create_dir(&dir)?;
        let opened = std::fs::write(dir.join("pids.max"), max.to_string())
            .and_then(|()| std::fs::OpenOptions::new().write(true).open(dir.join("cgroup.procs")));
        match opened {
            Ok(procs) => Ok(RunCgroup { dir, procs }),
            Err(e) => {
                let _ = std::fs::remove_dir(&dir);
                Err(e)
            }
        }
    }

    /// SIGKILLs what is left in the cgroup and removes it; whether it is gone. A killed task stays
    /// in the cgroup until it has fully exited, so removal is retried for a while.
    fn remove(self) -> bool {
        let give_up = Instant::now() + Duration::from_secs(5);
        while Instant::now() < give_up {
            if std::fs::remove_dir(&self.dir).is_ok() {
                return true;
            }
            let procs = std::fs::read_to_string(self.dir.join("cgroup.procs")).unwrap_or_default();
            for pid in procs.lines().filter_map(|l| l.trim().parse::<libc::pid_t>().ok()) {
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        false
    }
}

/// Removes the cgroups of runs whose process has died (a caller killed mid-run leaves its empty
/// cgroup behind).
fn remove_stale_cgroups(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix("aurora-sandbox-")?.split('-').next()) else {
            continue;
        };
        if !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir(entry.path());
        }
    }
}

/// `python3` on `path_var` (a `PATH` value), resolved to the real interpreter (`sys.executable`,
/// past pyenv-style shims that cost a shell per run).
pub fn find_python3(path_var: Option<&OsStr>) -> Result<PathBuf, SandboxError> {
    let missing = || SandboxError::Python3Missing { path: path_var.unwrap_or_default().to_string_lossy().into_owned() };
    let found = std::env::split_paths(path_var.ok_or_else(missing)?)
        .filter(|dir| !dir.as_os_str().is_empty())
        .map(|dir| dir.join("python3"))
        .find(|p| is_executable(p))
        .ok_or_else(missing)?;
    let broken = |detail: String| SandboxError::Python3Broken { python: found.display().to_string(), detail };
    let out = Command::new(&found)
        .args(["-c", "import sys; print(sys.executable)"])
        .env("PATH", path_var.unwrap_or_default())
        .stdin(Stdio::null())
        .output()
        .map_err(|e| broken(e.to_string()))?;
    if !out.status.success() {
        return Err(broken(format!("{}: {}", out.status, String::from_utf8_lossy(&out.stderr).trim())));
    }
    let exe = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    Ok(if is_executable(&exe) { exe } else { found })
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Runs `program` with `python3` under `limits` (see the module docs for the containment).
pub fn run_python(program: &str, limits: &Limits) -> Result<Outcome, SandboxError> {
    run(Language::Python, program, limits)
}

/// Runs a `language` program under `limits`: its [recipe](crate::toolchain) compiles and runs it
/// in a fresh directory, each step its own contained process with these limits (so `wall` and
/// `cpu_s` apply to the compile and to the run separately). The first step that does not pass
/// ends the run with its outcome; a run that passes every step reports the last step's stdout.
/// `wall` is the time of all steps together.
pub fn run(language: Language, program: &str, limits: &Limits) -> Result<Outcome, SandboxError> {
    let recipe = crate::toolchain::recipe(language, limits)?;
    run_recipe(&recipe, program, limits)
}

/// Runs `program` as `recipe` says (see [`run`]).
pub fn run_recipe(recipe: &Recipe, program: &str, limits: &Limits) -> Result<Outcome, SandboxError> {
    let dir = tempfile::Builder::new().prefix("aurora-sandbox-").tempdir().map_err(io_err("create a temp dir"))?;
    let file = dir.path().join(recipe.source);
    std::fs::write(&file, program).map_err(io_err(format!("write {}", file.display())))?;
    let started = Instant::now();
    let mut outcome = None;
    for step in &recipe.steps {
        let done = run_step(step, dir.path(), limits)?;
        let passed = done.status == Status::Passed;
        outcome = Some(done);
        if !passed {
            break;
        }
    }
    let mut outcome = outcome.expect("a recipe has at least one step");
    outcome.wall = started.elapsed();
    // Tools are run on relative names or stdin so that no message names the random directory;
    // should one still do (a runtime resolving its script's path), it reads `.` instead.
    let shown: Vec<String> = [dir.path().to_path_buf(), dir.path().canonicalize().unwrap_or_default()]
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .filter(|p| !p.is_empty())
        .collect();
    let mut texts = vec![&mut outcome.stderr_tail];
    if let Status::Failed { stderr_tail, .. } = &mut outcome.status {
        texts.push(stderr_tail);
    }
    for text in texts {
        for dir in &shown {
            if text.contains(dir.as_str()) {
                *text = text.replace(dir.as_str(), ".");
            }
        }
    }
    Ok(outcome)
}

/// Runs one step in `dir` (see the module docs for the containment).
fn run_step(step: &Step, dir: &Path, limits: &Limits) -> Result<Outcome, SandboxError> {
    let iso = isolation();
    let cgroup = match &iso.pids_cgroup {
        // One more than the program may have: the supervisor.
        Some(parent) => Some(
            RunCgroup::create(parent, limits.processes + 1)
                .map_err(io_err(format!("create a pids cgroup under {}", parent.display())))?,
        ),
        None => None,
    };
    let stdin = match step.stdin {
        Some(name) => {
            let file = dir.join(name);
            Stdio::from(std::fs::File::open(&file).map_err(io_err(format!("open {}", file.display())))?)
        }
        None => Stdio::null(),
    };
    let mut cmd = match &step.exe {
        Exe::Tool(path) => Command::new(path),
        Exe::Built(name) => {
            let mut cmd = Command::new(dir.join(name));
            cmd.arg0(format!("./{name}"));
            cmd
        }
    };
    cmd.args(&step.args)
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_else(|| OsString::from("/usr/bin:/bin")))
        .env("LANG", "C.UTF-8")
        .env("HOME", dir)
        .env("TMPDIR", dir)
        .envs(step.env.iter().map(|(k, v)| (k, v)))
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let setup = Supervisor {
        cgroup_procs: cgroup.as_ref().map(|c| c.procs.as_raw_fd()),
        clone_flags: iso.namespaces.clone_flags(),
        rlimits: [
            (libc::RLIMIT_CORE, 0, 0),
            (libc::RLIMIT_AS, limits.memory_bytes, limits.memory_bytes),
            (libc::RLIMIT_CPU, limits.cpu_s, limits.cpu_s + 1),
            (libc::RLIMIT_FSIZE, limits.file_size_bytes, limits.file_size_bytes),
            (libc::RLIMIT_NPROC, limits.processes + 1, limits.processes + 1),
        ],
    };
    // SAFETY: `Supervisor::enter` only makes async-signal-safe system calls (see there).
    unsafe { cmd.pre_exec(move || setup.enter()) };
    let started = Instant::now();
    let spawned = cmd.spawn();
    let shown = match &step.exe {
        Exe::Tool(path) => path.display().to_string(),
        Exe::Built(name) => format!("./{name}"),
    };
    let result = spawned
        .map_err(io_err(format!("start {shown} ({iso})")))
        .and_then(|child| supervise(child, limits, started, step));
    if let Some(cg) = cgroup {
        cg.remove();
    }
    result
}

/// What the spawned child does before `exec`: join the cgroup, set rlimits, enter the
/// namespaces, fork the program and stay behind as its supervisor.
#[derive(Clone, Copy)]
struct Supervisor {
    cgroup_procs: Option<RawFd>,
    clone_flags: libc::c_int,
    rlimits: [(libc::__rlimit_resource_t, u64, u64); 5],
}

/// The supervisor's program (the pid in the supervisor's own copy of this static).
static SUPERVISED: AtomicI32 = AtomicI32::new(0);

extern "C" fn kill_supervised(_: libc::c_int) {
    let pid = SUPERVISED.load(Ordering::SeqCst);
    if pid > 0 {
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

fn check(r: libc::c_int) -> io::Result<()> {
    if r < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

impl Supervisor {
    /// Runs in the forked child; returns (to `exec` the program) only in the grandchild. Only
    /// async-signal-safe calls: no allocation, no locks.
    fn enter(&self) -> io::Result<()> {
        unsafe {
            if let Some(fd) = self.cgroup_procs
                && libc::write(fd, b"0".as_ptr().cast(), 1) != 1
            {
                return Err(io::Error::last_os_error());
            }
            // The supervisor dies with the thread that spawned it, the program with the supervisor.
            check(libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL))?;
            if self.clone_flags != 0 {
                check(libc::unshare(self.clone_flags))?;
            }
            // After entering a user namespace, RLIMIT_NPROC counts the processes of this user in
            // that namespace only, so concurrent runs of one (non-root) user do not share it.
            for (resource, soft, hard) in self.rlimits {
                check(libc::setrlimit(resource, &libc::rlimit { rlim_cur: soft, rlim_max: hard }))?;
            }
            // SIGTERM stays blocked until SUPERVISED is set, so the handler always has the pid.
            let mut term: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut term);
            libc::sigaddset(&mut term, libc::SIGTERM);
            check(libc::sigprocmask(libc::SIG_BLOCK, &term, std::ptr::null_mut()))?;
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = kill_supervised as extern "C" fn(libc::c_int) as libc::sighandler_t;
            check(libc::sigaction(libc::SIGTERM, &action, std::ptr::null_mut()))?;
            let pid = raw_fork();
            if pid < 0 {
                return Err(io::Error::last_os_error());
            }
            if pid == 0 {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                libc::signal(libc::SIGTERM, libc::SIG_DFL);
                libc::sigprocmask(libc::SIG_UNBLOCK, &term, std::ptr::null_mut());
                return Ok(());
            }
            SUPERVISED.store(pid, Ordering::SeqCst);
            // Close what the supervisor inherited beyond stdio, above all the descriptor std's
            // `spawn` waits on until `exec`: the supervisor never execs, the program does.
            libc::syscall(libc::SYS_close_range, 3 as libc::c_uint, libc::c_uint::MAX, 0 as libc::c_uint);
            libc::sigprocmask(libc::SIG_UNBLOCK, &term, std::ptr::null_mut());
            let Some(status) = wait_exited(pid) else { libc::_exit(127) };
            if libc::WIFEXITED(status) {
                libc::_exit(libc::WEXITSTATUS(status));
            }
            // Die of the program's signal, so our parent sees the program's status.
            let signal = libc::WTERMSIG(status);
            libc::signal(signal, libc::SIG_DFL);
            let mut one: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut one);
            libc::sigaddset(&mut one, signal);
            libc::sigprocmask(libc::SIG_UNBLOCK, &one, std::ptr::null_mut());
            libc::kill(libc::getpid(), signal);
            libc::_exit(128 + signal)
        }
    }
}

/// How long the supervisor gets to empty the namespace after `SIGTERM`, before the whole
/// process group is SIGKILLed.
const KILL_GRACE: Duration = Duration::from_secs(2);

/// Reads the child's output until it exits, enforcing the wall limit; reaps it.
fn supervise(
    mut child: std::process::Child,
    limits: &Limits,
    started: Instant,
    step: &Step,
) -> Result<Outcome, SandboxError> {
    let pid = child.id() as libc::pid_t;
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as RawFd;
    if pidfd < 0 {
        let e = io::Error::last_os_error();
        unsafe { libc::killpg(pid, libc::SIGKILL) };
        let _ = child.wait();
        return Err(SandboxError::Io { what: "pidfd_open the sandboxed process".into(), source: e });
    }
    // SAFETY: pidfd_open returned a new descriptor that nothing else owns.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    let mut stdout = Capture::new(child.stdout.take().expect("piped"), limits.output_bytes, false);
    let mut stderr = Capture::new(child.stderr.take().expect("piped"), limits.output_bytes, true);
    stderr.markers = step.fail_on_stderr;
    let mut deadline = started + limits.wall;
    let mut timed_out = false;
    loop {
        let mut fds = [
            libc::pollfd { fd: pidfd.as_raw_fd(), events: libc::POLLIN, revents: 0 },
            stdout.pollfd(),
            stderr.pollfd(),
        ];
        let left = deadline.saturating_duration_since(Instant::now());
        let ms = left.as_millis().min(i32::MAX as u128) as i32 + i32::from(!left.is_zero());
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        if ready < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            unsafe { libc::killpg(pid, libc::SIGKILL) };
            let _ = child.wait();
            return Err(SandboxError::Io { what: "poll the sandboxed process".into(), source: e });
        }
        if fds[1].revents != 0 {
            stdout.read_available();
        }
        if fds[2].revents != 0 {
            stderr.read_available();
        }
        if fds[0].revents != 0 {
            break;
        }
        // Checked whatever poll returned: a program that writes without pause keeps it ready.
        if Instant::now() >= deadline {
            if timed_out {
                // The supervisor did not finish within the grace: kill everything we can reach.
                unsafe { libc::killpg(pid, libc::SIGKILL) };
            } else {
                timed_out = true;
                unsafe { libc::kill(pid, libc::SIGTERM) };
            }
            deadline = Instant::now() + KILL_GRACE;
        }
    }
    // The supervisor has exited (not yet reaped, so the group id is still ours): anything left
    // in its group (possible only without a PID namespace) goes with it.
    unsafe { libc::killpg(pid, libc::SIGKILL) };
    let status = child.wait().map_err(io_err("wait for the sandboxed process"))?;
    let wall = started.elapsed();
    // Every writer is gone (with namespaces); without, read what is there and stop.
    stdout.read_available();
    stderr.read_available();
    let status = if timed_out {
        Status::TimedOut
    } else if let Some(code) = status.code() {
        if code == 0 && !stderr.marked {
            Status::Passed
        } else if step.reports_on_stdout {
            Status::Failed { exit_code: code, stderr_tail: format!("{}{}", stdout.text(), stderr.text()) }
        } else {
            Status::Failed { exit_code: code, stderr_tail: stderr.text() }
        }
    } else {
        Status::Killed { signal: status.signal().unwrap_or(0) }
    };
    Ok(Outcome {
        status,
        wall,
        stdout_truncated: stdout.dropped > 0,
        stdout: stdout.text(),
        stderr_tail: stderr.text(),
    })
}

/// A non-blocking pipe read into a capped buffer: the head, or (for stderr) the tail.
struct Capture {
    pipe: Option<File>,
    buf: Vec<u8>,
    cap: usize,
    keep_tail: bool,
    dropped: usize,
    /// Strings whose appearance anywhere in the stream sets `marked`.
    markers: &'static [&'static str],
    marked: bool,
    /// The last bytes read, so that a marker split between two reads is still seen.
    carry: Vec<u8>,
}

impl Capture {
    fn new(pipe: impl Into<OwnedFd>, cap: usize, keep_tail: bool) -> Capture {
        let fd: OwnedFd = pipe.into();
        unsafe {
            let flags = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
            libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK);
        }
        Capture {
            pipe: Some(File::from(fd)),
            buf: Vec::new(),
            cap,
            keep_tail,
            dropped: 0,
            markers: &[],
            marked: false,
            carry: Vec::new(),
        }
    }

    /// A pollfd for the pipe, or one poll ignores (-1) once it is closed.
    fn pollfd(&self) -> libc::pollfd {
        libc::pollfd { fd: self.pipe.as_ref().map_or(-1, |p| p.as_raw_fd()), events: libc::POLLIN, revents: 0 }
    }

    /// Reads until the pipe would block, at most 1 MiB (a pipe's largest capacity) so that a
    /// writer faster than us cannot keep us here; closes the pipe at end of file.
    fn read_available(&mut self) {
        let mut chunk = [0u8; 64 << 10];
        for _ in 0..16 {
            let Some(pipe) = self.pipe.as_mut() else { return };
            match pipe.read(&mut chunk) {
                Ok(0) => self.pipe = None,
                Ok(n) => self.keep(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => self.pipe = None,
            }
        }
    }

    fn keep(&mut self, bytes: &[u8]) {
        if !self.markers.is_empty() && !self.marked {
            self.carry.extend_from_slice(bytes);
            self.marked = self.markers.iter().any(|m| self.carry.windows(m.len()).any(|w| w == m.as_bytes()));
            let longest = self.markers.iter().map(|m| m.len()).max().unwrap_or(0);
            let excess = self.carry.len().saturating_sub(longest);
            self.carry.drain(..excess);
        }
        if self.keep_tail {
            self.buf.extend_from_slice(bytes);
            let excess = self.buf.len().saturating_sub(self.cap);
            self.buf.drain(..excess);
            self.dropped += excess;
        } else {
            let room = self.cap - self.buf.len().min(self.cap);
            let take = room.min(bytes.len());
            self.buf.extend_from_slice(&bytes[..take]);
            self.dropped += bytes.len() - take;
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.buf).into_owned()
    }
}
