//! Process helpers shared by the aurora test kits (`aurora-slurm-testkit`, `aurora-servers-testkit`).
//!
//! - [`spawn_tied`]: spawn a child (a daemon, a server) that gets `SIGKILL` when the test process dies, in its own
//!   process group.
//! - [`write_owner`], [`owner_alive`], [`sweep_stale_dirs`]: stamp a kit's temporary directory with the test
//!   process that created it, so that a later start removes directories left by test processes that were killed.
//! - [`Unavailable`]: why a kit could not start what a test needs.
//! - [`which`], [`tail`], [`in_ci`], [`keep_requested`]: small helpers every kit needs.
//! - [`Skip`], [`OrSkip`], [`skip_or_fail`]: the one rule for a test whose prerequisite (real data, a built binary,
//!   namespaces, an external tool) is missing: on a developer's machine it is skipped with the reason on stderr;
//!   where `CI=true` it fails. [`shared_data`] applies it to the real test data beside the repository.

use std::fmt;
use std::fs;
use std::io::{self, Write};
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

/// Environment variable naming the directory of real test data; default: [`shared_data_dir`].
pub const SHARED_DATA_ENV: &str = "AURORA_SHARED_DATA";

/// Why a test cannot run on this machine, and how to get what it lacks.
///
/// [`Skip::report`] applies the rule: where `CI=true` (see [`in_ci`]) a missing prerequisite fails the test, since
/// CI provides everything; elsewhere the test is skipped with `SKIP <test>: <reason>` on stderr. A test that cannot
/// check anything on this machine by design ([`Skip::not_applicable`]: root bypasses the permissions a test would
/// check) is skipped with its reason in CI too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skip {
    reason: String,
    fails_in_ci: bool,
}

impl Skip {
    /// A missing prerequisite; `reason` says what is missing and how to get it.
    pub fn new(reason: impl Into<String>) -> Self {
        Self { reason: reason.into(), fails_in_ci: true }
    }

    /// A missing prerequisite: `"<what> is missing: <how>"`, with `how` saying how to get it.
    pub fn missing(what: impl fmt::Display, how: impl fmt::Display) -> Self {
        Self::new(format!("{what} is missing: {how}"))
    }

    /// Nothing to check on this machine by design (not a missing prerequisite): skipped in CI too.
    pub fn not_applicable(reason: impl Into<String>) -> Self {
        Self { reason: reason.into(), fails_in_ci: false }
    }

    /// What is missing and how to get it.
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// Applies the rule to the running test (named after its thread, as libtest names it): panics where `CI=true`
    /// (unless [`Skip::not_applicable`]), else prints `SKIP <test>: <reason>` on stderr. The caller then returns.
    #[track_caller]
    pub fn report(&self) {
        self.report_for(&current_test());
    }

    /// [`Skip::report`] naming `test`.
    #[track_caller]
    pub fn report_for(&self, test: &str) {
        match self.verdict(in_ci(), test) {
            // Straight to stderr, not `eprintln!`: libtest captures that for passing tests, which would hide the skip
            // unless run with `--nocapture`.
            Ok(line) => {
                let _ = writeln!(io::stderr().lock(), "{line}");
            }
            Err(failure) => panic!("{failure}"),
        }
    }

    /// The line to print (`Ok`) or the failure (`Err`) for `test`.
    fn verdict(&self, ci: bool, test: &str) -> Result<String, String> {
        if ci && self.fails_in_ci {
            Err(format!("{test}: CI=true but {}", self.reason))
        } else {
            Ok(format!("SKIP {test}: {}", self.reason))
        }
    }
}

impl fmt::Display for Skip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

impl std::error::Error for Skip {}

impl From<Unavailable> for Skip {
    fn from(e: Unavailable) -> Self {
        Self::new(e.to_string())
    }
}

/// `Result<T, Skip>` (or an error that converts into one) to `Option<T>`, applying the rule of [`Skip::report`] on
/// the error: `let Some(x) = need_x().or_skip() else { return };`.
pub trait OrSkip<T> {
    fn or_skip(self) -> Option<T>;
}

impl<T, E: Into<Skip>> OrSkip<T> for Result<T, E> {
    #[track_caller]
    fn or_skip(self) -> Option<T> {
        match self {
            Ok(t) => Some(t),
            Err(e) => {
                e.into().report();
                None
            }
        }
    }
}

/// The rule of [`Skip::report`] for `test`, whose prerequisite is missing for `reason`: kits that start what tests
/// need (`aurora-servers-testkit`, `aurora-slurm-testkit`) call it with their [`Unavailable`].
#[track_caller]
pub fn skip_or_fail(test: &str, reason: impl fmt::Display) {
    Skip::new(reason.to_string()).report_for(test);
}

/// The running test's name: libtest runs every test on a thread named after it.
pub fn current_test() -> String {
    match thread::current().name() {
        Some(name) if name != "main" => name.to_owned(),
        _ => "this test".to_owned(),
    }
}

/// The directory of real test data (see its `SOURCES.md`): [`SHARED_DATA_ENV`] if set, else `../shared/data` beside
/// the repository.
///
/// The repository is found from the running test's package (`cargo test` sets `CARGO_MANIFEST_DIR`
/// when it runs a test binary): the nearest directory above it with a `Cargo.lock`. Not from this
/// crate's compile-time path, which a checkout elsewhere sharing the target directory can leave
/// behind (cargo hashes path dependencies by their place in the workspace, not their absolute path).
pub fn shared_data_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os(SHARED_DATA_ENV).filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let package =
        std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    let repository = package.ancestors().find(|d| d.join("Cargo.lock").is_file()).unwrap_or(&package);
    repository.parent().unwrap_or(Path::new("/")).join("shared/data")
}

/// `path` under [`shared_data_dir`] (`""`: the directory itself) when it exists; otherwise applies the rule of
/// [`Skip::report`] (fails where `CI=true`, which always has the data) and returns `None`.
#[track_caller]
pub fn shared_data(path: &str) -> Option<PathBuf> {
    shared_data_in(&shared_data_dir(), path).or_skip()
}

fn shared_data_in(root: &Path, path: &str) -> Result<PathBuf, Skip> {
    let full = if path.is_empty() { root.to_owned() } else { root.join(path) };
    if full.exists() {
        Ok(full)
    } else {
        Err(Skip::missing(
            full.display(),
            format!(
                "the real test data lives in ../shared/data beside the repository (see its SOURCES.md); put a copy \
                 there or point {SHARED_DATA_ENV} at one"
            ),
        ))
    }
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
    fn a_missing_prerequisite_is_skipped_with_its_reason_and_fails_in_ci() {
        let skip = Skip::missing("/data/x", "get it");
        assert_eq!(skip.reason(), "/data/x is missing: get it");
        assert_eq!(skip.verdict(false, "t"), Ok("SKIP t: /data/x is missing: get it".to_owned()));
        assert_eq!(skip.verdict(true, "t"), Err("t: CI=true but /data/x is missing: get it".to_owned()));
        let unavailable = Skip::from(Unavailable::new("test server", "nginx not found"));
        assert_eq!(
            unavailable.verdict(true, "t"),
            Err("t: CI=true but test server unavailable: nginx not found".into())
        );
    }

    #[test]
    fn what_does_not_apply_is_skipped_in_ci_too() {
        let skip = Skip::not_applicable("running as root");
        assert_eq!(skip.verdict(true, "t"), Ok("SKIP t: running as root".to_owned()));
        assert_eq!(skip.verdict(false, "t"), Ok("SKIP t: running as root".to_owned()));
    }

    #[test]
    fn the_current_test_is_named_after_its_thread() {
        assert_eq!(current_test(), "tests::the_current_test_is_named_after_its_thread");
        let unnamed = thread::spawn(current_test).join().unwrap();
        assert_eq!(unnamed, "this test");
    }

    #[test]
    fn shared_data_is_beside_the_repository_and_missing_paths_name_the_remedy() {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap();
        if std::env::var_os(SHARED_DATA_ENV).is_none() {
            assert_eq!(shared_data_dir(), repo.parent().unwrap().join("shared/data"));
        }
        let root = repo.join("testkit");
        assert_eq!(shared_data_in(&root, ""), Ok(root.clone()));
        assert_eq!(shared_data_in(&root, "process"), Ok(root.join("process")));
        let skip = shared_data_in(&root, "no-such-data").unwrap_err();
        assert!(skip.reason().starts_with(&format!("{} is missing: ", root.join("no-such-data").display())), "{skip}");
        assert!(skip.reason().contains(SHARED_DATA_ENV), "{skip}");
        assert!(skip.verdict(true, "t").is_err());
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
