//! Process helpers shared by the aurora test kits (`aurora-slurm-testkit`, `aurora-servers-testkit`).
//!
//! - [`spawn_tied`]: spawn a child (a daemon, a server) that gets `SIGKILL` when the test process dies, in its own
//!   process group.
//! - [`write_owner`], [`owner_alive`], [`sweep_stale_dirs`]: stamp a kit's temporary directory with the test
//!   process that created it, so that a later start removes directories left by test processes that were killed.
//! - [`Unavailable`]: why a kit could not start what a test needs.
//! - [`which`], [`tail`], [`in_ci`], [`keep_requested`]: small helpers every kit needs.

use std::fmt;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::{Mutex, OnceLock, mpsc};
use std::thread;

/// Name of the file, in a kit's temporary directory, that records the test process owning it.
const OWNER_FILE: &str = "owner";
/// How many lines [`tail`] keeps.
const TAIL_LINES: usize = 25;

/// Why a kit could not start what a test needs (a Slurm cluster, a server).
#[derive(Debug, Clone)]
pub struct Unavailable {
    what: &'static str,
    reason: String,
}

impl Unavailable {
    /// `what` names the thing that could not be started (`"test server"`), for [`fmt::Display`]:
    /// `"<what> unavailable: <reason>"`.
    pub fn new(what: &'static str, reason: impl Into<String>) -> Self {
        Self { what, reason: reason.into() }
    }

    /// Human-readable reason, including log tails where a process failed.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} unavailable: {}", self.what, self.reason)
    }
}

impl std::error::Error for Unavailable {}

/// Spawns `cmd` so that it gets SIGKILL when the test process dies.
///
/// `PR_SET_PDEATHSIG` fires when the *thread* that forked the child exits, not the process; forking from a test
/// thread would kill the child when that test's thread ends (e.g. a server or cluster shared through a `static`).
/// So every child is forked by one thread that lives as long as the process.
///
/// The child leads its own process group: a terminal's ^C goes to the test process only, which then takes its
/// children down, and the kit may signal the whole group (`kill(-pid, …)`) while the child is unreaped.
pub fn spawn_tied(cmd: Command) -> io::Result<Child> {
    type Request = (Command, mpsc::Sender<io::Result<Child>>);
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<Request>>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Request>();
        thread::Builder::new()
            .name("aurora-testkit-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(spawn_with_pdeathsig(&mut cmd));
                }
            })
            .expect("spawning the aurora-testkit-spawner thread");
        Mutex::new(tx)
    });
    let (reply, result) = mpsc::channel();
    spawner
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .send((cmd, reply))
        .map_err(|_| io::Error::other("spawner thread is gone"))?;
    result.recv().map_err(|_| io::Error::other("spawner thread is gone"))?
}

fn spawn_with_pdeathsig(cmd: &mut Command) -> io::Result<Child> {
    #[cfg(target_os = "linux")]
    {
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: the closure only calls async-signal-safe functions (prctl, getppid).
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) != 0 {
                    return Err(io::Error::last_os_error());
                }
                // The parent died before prctl took effect.
                if libc::getppid() != parent {
                    return Err(io::Error::from_raw_os_error(libc::ESRCH));
                }
                Ok(())
            });
        }
    }
    // Own process group: a terminal's ^C goes to the test process only, and the kit can signal the group.
    cmd.process_group(0).spawn()
}

/// Resolves `name` on `PATH`, then in the sbin/bin directories (non-root `PATH`s often lack `/usr/sbin`).
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let fallback = ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"].map(PathBuf::from);
    std::env::split_paths(&path)
        .chain(fallback)
        .map(|dir| dir.join(name))
        .find(|p| fs::metadata(p).map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false))
}

/// The last lines of `path`, under a header naming it; empty when the file is missing or empty.
pub fn tail(path: &Path) -> String {
    let Ok(bytes) = fs::read(path) else { return String::new() };
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().collect();
    if lines.is_empty() {
        return String::new();
    }
    let tail = &lines[lines.len().saturating_sub(TAIL_LINES)..];
    format!("\n--- tail of {} ---\n{}", path.display(), tail.join("\n"))
}

/// Whether the environment variable `CI` is `true` (any case) or `1`: there, a kit that cannot start fails the test
/// instead of skipping it.
pub fn in_ci() -> bool {
    std::env::var("CI").map(|v| v.eq_ignore_ascii_case("true") || v == "1").unwrap_or(false)
}

/// Whether the environment variable `var` asks to keep a kit's directory after drop: set, non-empty and not `0`.
pub fn keep_requested(var: &str) -> bool {
    std::env::var_os(var).is_some_and(|v| !v.is_empty() && v != "0")
}

/// Records the current test process as the owner of the kit directory `root` (see [`owner_alive`]).
pub fn write_owner(root: &Path) -> io::Result<()> {
    fs::write(root.join(OWNER_FILE), owner_token(std::process::id()).unwrap_or_default())
}

/// Removes the owner record of `root`, so that [`sweep_stale_dirs`] leaves a directory kept on purpose alone.
pub fn forget_owner(root: &Path) {
    let _ = fs::remove_file(root.join(OWNER_FILE));
}

/// `"<pid> <start time>"`: identifies a process across pid reuse.
fn owner_token(pid: u32) -> Option<String> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name start at field 3; the start time is field 22.
    let start = stat.rsplit_once(')')?.1.split_whitespace().nth(19)?;
    Some(format!("{pid} {start}"))
}

/// Whether the test process that created kit directory `root` is still running. A missing directory counts as
/// dead; a directory without an owner file is being created (or was kept on purpose) and counts as alive.
pub fn owner_alive(root: &Path) -> bool {
    if !root.exists() {
        return false;
    }
    let Ok(token) = fs::read_to_string(root.join(OWNER_FILE)) else { return true };
    let Some(pid) = token.split_whitespace().next().and_then(|p| p.parse().ok()) else { return true };
    owner_token(pid).as_deref() == Some(token.trim())
}

/// Removes the directories of `tmp_root` named `prefix…` whose owner (see [`write_owner`]) died without dropping
/// them (their children died with it, through `PR_SET_PDEATHSIG`).
pub fn sweep_stale_dirs(tmp_root: &Path, prefix: &str) {
    let Ok(entries) = fs::read_dir(tmp_root) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if entry.file_name().as_bytes().starts_with(prefix.as_bytes())
            && path.join(OWNER_FILE).exists()
            && !owner_alive(&path)
        {
            let _ = fs::remove_dir_all(&path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Stdio;

    #[test]
    fn unavailable_names_what_and_why() {
        let e = Unavailable::new("test server", "nginx not found");
        assert_eq!(e.to_string(), "test server unavailable: nginx not found");
        assert_eq!(e.reason(), "nginx not found");
    }

    #[test]
    fn a_tied_child_leads_its_own_process_group() {
        let mut cmd = Command::new("sleep");
        cmd.arg("5").stdin(Stdio::null());
        let mut child = spawn_tied(cmd).unwrap();
        let pid = child.id() as libc::pid_t;
        // SAFETY: getpgid has no memory-safety preconditions; the child is unreaped.
        assert_eq!(unsafe { libc::getpgid(pid) }, pid);
        child.kill().unwrap();
        child.wait().unwrap();
    }

    #[test]
    fn tail_keeps_the_last_lines_and_is_empty_for_missing_or_empty_files() {
        let dir = std::env::temp_dir().join(format!("aurora-process-testkit-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let log = dir.join("log");
        fs::write(&log, (1..=30).map(|i| format!("line {i}\n")).collect::<String>()).unwrap();
        let text = tail(&log);
        assert!(text.starts_with(&format!("\n--- tail of {} ---\nline 6\n", log.display())), "{text}");
        assert!(text.ends_with("line 30"), "{text}");
        fs::write(&log, "").unwrap();
        assert_eq!(tail(&log), "");
        assert_eq!(tail(&dir.join("missing")), "");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn owner_is_alive_for_this_process_and_dead_for_a_missing_directory() {
        let dir = std::env::temp_dir().join(format!("aurora-process-testkit-owner-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        assert!(owner_alive(&dir), "no owner file yet counts as alive");
        write_owner(&dir).unwrap();
        assert!(owner_alive(&dir));
        fs::write(dir.join(OWNER_FILE), format!("{} 0", std::process::id())).unwrap();
        assert!(!owner_alive(&dir), "a reused pid is not the owner");
        forget_owner(&dir);
        assert!(owner_alive(&dir));
        fs::remove_dir_all(&dir).unwrap();
        assert!(!owner_alive(&dir));
    }
}
