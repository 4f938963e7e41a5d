//! Child processes that never outlive aurora: [`spawn_guarded`].
//!
//! A guarded child joins the process group of a watchdog (`/bin/sh`) that blocks reading a pipe
//! whose only write end aurora holds. However aurora goes away (even SIGKILL), the pipe closes,
//! `read` returns and the watchdog kills its whole group: the child and everything the child
//! started. `PR_SET_PDEATHSIG` alone reaches only the direct child. The group's id is the
//! watchdog's pid, known before the child exists, so no started child is ever unguarded.
//! When the child ends (or times out) the group is killed too, so nothing it left running in the
//! background outlives it.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Why a guarded child could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("cannot start the process watchdog /bin/sh: {0}")]
    Watchdog(io::Error),
    /// The command itself did not start (not found, not executable, ...).
    #[error("{0}")]
    Command(io::Error),
}

/// A running child inside a watchdog's process group.
pub struct GuardedChild {
    /// The child; take its piped stdout/stderr before [`GuardedChild::wait`].
    pub child: Child,
    watchdog: Child,
    /// Dropping it (aurora exiting, or [`GuardedChild::wait`]) releases the watchdog.
    watchdog_pipe: ChildStdin,
    pgid: i32,
}

/// How a guarded child ended.
#[derive(Debug, Clone, Copy)]
pub struct Ended {
    pub status: ExitStatus,
    /// The child was killed because it ran past its timeout.
    pub timed_out: bool,
}

/// Starts `cmd` guarded (see the module docs). Also sets `PR_SET_PDEATHSIG` on the child, so the
/// kernel kills it directly if aurora dies.
pub fn spawn_guarded(cmd: &mut Command) -> Result<GuardedChild, SpawnError> {
    let mut watchdog = Command::new("/bin/sh")
        .args(["-c", "read _; kill -9 -$$"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .map_err(SpawnError::Watchdog)?;
    let pgid = watchdog.id() as i32;
    let watchdog_pipe = watchdog.stdin.take().expect("stdin is piped");
    // SAFETY: prctl is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    cmd.process_group(pgid);
    match cmd.spawn() {
        Ok(child) => Ok(GuardedChild { child, watchdog, watchdog_pipe, pgid }),
        Err(e) => {
            kill_group(pgid);
            let _ = watchdog.wait();
            Err(SpawnError::Command(e))
        }
    }
}

impl GuardedChild {
    /// Waits for the child, killing its group after `timeout`; then kills whatever is left of the
    /// group and releases the watchdog.
    pub fn wait(self, timeout: Option<Duration>) -> io::Result<Ended> {
        let GuardedChild { mut child, mut watchdog, watchdog_pipe, pgid } = self;
        let mut timed_out = false;
        let status = match timeout {
            None => child.wait(),
            Some(limit) => {
                let (tx, rx) = mpsc::channel();
                let waiter = std::thread::spawn(move || {
                    let status = child.wait();
                    let _ = tx.send(());
                    status
                });
                if rx.recv_timeout(limit).is_err() {
                    timed_out = true;
                    kill_group(pgid);
                }
                waiter.join().unwrap_or_else(|_| Err(io::Error::other("waiter thread panicked")))
            }
        };
        kill_group(pgid);
        drop(watchdog_pipe);
        let _ = watchdog.wait();
        Ok(Ended { status: status?, timed_out })
    }
}

fn kill_group(pgid: i32) {
    // SAFETY: plain syscall; ESRCH (group already gone) is expected and ignored.
    unsafe {
        libc::kill(-pgid, libc::SIGKILL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::process::ExitStatusExt;

    #[test]
    fn background_processes_die_with_the_child() {
        // The child starts a background sleeper, prints its pid and exits; the sleeper must be gone
        // once wait returns.
        let mut cmd = Command::new("/bin/sh");
        cmd.args(["-c", "sleep 300 >/dev/null & echo $!"]).stdout(Stdio::piped());
        let mut guarded = spawn_guarded(&mut cmd).unwrap();
        let mut out = String::new();
        guarded.child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
        let ended = guarded.wait(None).unwrap();
        assert!(ended.status.success() && !ended.timed_out);
        let pid: i32 = out.trim().parse().unwrap();
        // SIGKILL was sent to the group before wait returned; delivery is asynchronous, and a
        // killed process lingers as a zombie until init reaps it.
        let dead = || {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            stat.is_empty() || stat.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z'))
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !dead() && std::time::Instant::now() < deadline {
            std::thread::yield_now();
        }
        let gone = dead();
        assert!(gone, "background process {pid} survived its group");
    }

    #[test]
    fn a_timeout_kills_the_child() {
        let mut cmd = Command::new("/bin/sh");
        cmd.args(["-c", "sleep 300"]);
        let ended = spawn_guarded(&mut cmd).unwrap().wait(Some(Duration::from_millis(200))).unwrap();
        assert!(ended.timed_out);
        assert_eq!(ended.status.signal(), Some(libc::SIGKILL));
    }

    #[test]
    fn a_missing_program_is_a_command_error() {
        let err = spawn_guarded(&mut Command::new("/nonexistent/program")).err().unwrap();
        assert!(matches!(err, SpawnError::Command(ref e) if e.kind() == io::ErrorKind::NotFound), "{err:?}");
    }
}
