//! Timing: run a process to completion and measure its wall time (and the CPU time it and its
//! descendants used, which the load from other work on a shared machine does not inflate), and
//! summarise samples.

use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::display;

/// One timed run of a process.
#[derive(Debug, Clone, Copy)]
pub struct Timed {
    /// spawn + wait: the whole process, as a user's shell would see it.
    pub wall: Duration,
    /// User + system CPU time of the process and the descendants it waited for (None where
    /// /proc is unavailable).
    pub cpu: Option<Duration>,
    /// Peak resident memory, in bytes, of the largest of the process and the descendants it
    /// waited for (`ru_maxrss` of `wait4`): a process tree's peak where its processes do not
    /// overlap.
    pub peak_rss: Option<u64>,
}

/// Runs `cmd` to completion (stdin and stdout to /dev/null, stderr discarded) and times it.
/// Fails if it exits non-zero or runs past `timeout` (it is then killed).
pub fn time_process(cmd: &mut Command, timeout: Duration) -> Result<Timed> {
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    timed(cmd, timeout, "rerun it by hand to see its output")
}

/// [`time_process`] with stdout and stderr written to the file `log` (for a process that prints
/// its own figures); a failure quotes the log's end.
pub fn time_process_logged(cmd: &mut Command, timeout: Duration, log: &std::path::Path) -> Result<Timed> {
    let file = std::fs::File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
    cmd.stderr(file.try_clone().context("cannot duplicate a file handle")?).stdout(file);
    timed(cmd, timeout, "see below").map_err(|e| {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let tail: String = text.chars().rev().take(4000).collect::<Vec<_>>().into_iter().rev().collect();
        e.context(format!("its output ends with:\n{tail}"))
    })
}

fn timed(cmd: &mut Command, timeout: Duration, hint: &str) -> Result<Timed> {
    let shown = display(cmd);
    cmd.stdin(Stdio::null());
    let cpu_before = children_cpu();
    let started = Instant::now();
    let mut child = cmd.spawn().with_context(|| format!("cannot start `{shown}`"))?;
    let status = wait_with_timeout(&mut child, timeout)?;
    let wall = started.elapsed();
    let cpu = cpu_before.zip(children_cpu()).map(|(a, b)| b.saturating_sub(a));
    match status {
        Some((s, peak_rss)) if s.success() => Ok(Timed { wall, cpu, peak_rss }),
        Some((s, _)) => bail!("`{shown}` failed ({s}); {hint}"),
        None => bail!("`{shown}` ran past its limit of {} and was killed", crate::fmt_duration(timeout)),
    }
}

/// Runs `cmd` to completion capturing stdout and stderr (not timed); fails on a non-zero exit.
pub fn output_of(cmd: &mut Command) -> Result<String> {
    let shown = display(cmd);
    let out = cmd.stdin(Stdio::null()).output().with_context(|| format!("cannot start `{shown}`"))?;
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    if !out.status.success() {
        bail!("`{shown}` failed ({}):\n{text}", out.status);
    }
    Ok(text)
}

/// CPU time (user + system) of this process's waited-for children so far: `cutime + cstime`
/// of /proc/self/stat. It is kept in nanoseconds by the kernel and shown in clock ticks
/// (USER_HZ, 100 on Linux), so one difference is exact to 10 ms and a mean over n runs to 10/n ms.
fn children_cpu() -> Option<Duration> {
    const USER_HZ: u64 = 100;
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces) start at field 3, `state`.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let cutime: u64 = fields.get(13)?.parse().ok()?;
    let cstime: u64 = fields.get(14)?.parse().ok()?;
    Some(Duration::from_millis((cutime + cstime) * 1000 / USER_HZ))
}

/// `child.wait()` with a watchdog that kills the child after `timeout` (None: it was killed).
/// The watchdog is a thread blocked on a channel, so the measured path is a plain `wait()`.
/// The child's exit status and peak RSS (bytes), or `None` if it ran past `timeout` and was
/// killed.
fn wait_with_timeout(
    child: &mut std::process::Child,
    timeout: Duration,
) -> Result<Option<(std::process::ExitStatus, Option<u64>)>> {
    let pid = child.id();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if done_rx.recv_timeout(timeout) == Err(mpsc::RecvTimeoutError::Timeout) {
            // The child is still ours (we have not reaped it), so the pid cannot be reused.
            let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).stderr(Stdio::null()).status();
            return true;
        }
        false
    });
    let (status, peak_rss) = wait4(child).context("waiting for a benchmarked process")?;
    let _ = done_tx.send(());
    let killed = watchdog.join().unwrap_or(false);
    Ok(if killed { None } else { Some((status, peak_rss)) })
}

/// Reaps `child` with `wait4`, which also reports its resource usage and that of the
/// descendants it waited for: the peak RSS of the largest of them (`ru_maxrss`, KiB on Linux).
fn wait4(child: &mut std::process::Child) -> std::io::Result<(std::process::ExitStatus, Option<u64>)> {
    use std::os::unix::process::ExitStatusExt;
    let pid = libc::pid_t::try_from(child.id()).map_err(std::io::Error::other)?;
    let mut status: libc::c_int = 0;
    // SAFETY: rusage is plain data; wait4 writes it and the status for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: pid is a child of this process that nothing else reaps (std's `Child` only
        // waits when asked to).
        let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if rc == pid {
            let peak = u64::try_from(usage.ru_maxrss).ok().filter(|&k| k > 0).map(|kib| kib * 1024);
            return Ok((std::process::ExitStatus::from_raw(status), peak));
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Summary of a set of timed runs: wall-time samples (seconds, sorted) and total CPU time.
#[derive(Debug, Clone)]
pub struct Stats {
    pub samples: Vec<f64>,
    cpu_total: Option<f64>,
}

impl Stats {
    pub fn new(runs: &[Timed]) -> Stats {
        let mut samples: Vec<f64> = runs.iter().map(|t| t.wall.as_secs_f64()).collect();
        samples.sort_by(f64::total_cmp);
        let cpu_total = runs.iter().map(|t| t.cpu.map(|c| c.as_secs_f64())).sum();
        Stats { samples, cpu_total }
    }

    /// Mean CPU time (user + system) per run.
    pub fn cpu_mean(&self) -> Option<f64> {
        self.cpu_total.filter(|_| !self.samples.is_empty()).map(|t| t / self.samples.len() as f64)
    }

    pub fn n(&self) -> usize {
        self.samples.len()
    }

    /// The median (mean of the two middle samples for an even count).
    pub fn median(&self) -> f64 {
        let s = &self.samples;
        match s.len() {
            0 => f64::NAN,
            n if n % 2 == 1 => s[n / 2],
            n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
        }
    }

    /// Nearest-rank percentile (`p` in 0..=100).
    pub fn percentile(&self, p: f64) -> f64 {
        let s = &self.samples;
        if s.is_empty() {
            return f64::NAN;
        }
        let rank = ((p / 100.0) * s.len() as f64).ceil() as usize;
        s[rank.clamp(1, s.len()) - 1]
    }

    pub fn p90(&self) -> f64 {
        self.percentile(90.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: &[u64]) -> Stats {
        let runs: Vec<Timed> = v
            .iter()
            .map(|&m| Timed { wall: Duration::from_millis(m), cpu: Some(Duration::from_millis(2 * m)), peak_rss: None })
            .collect();
        Stats::new(&runs)
    }

    #[test]
    fn median_and_p90() {
        let s = ms(&[5, 1, 4, 2, 3]);
        assert_eq!(s.median(), 0.003);
        assert_eq!(s.p90(), 0.005);
        let s = ms(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
        assert_eq!(s.median(), 0.0055);
        assert_eq!(s.p90(), 0.009);
        assert!((s.cpu_mean().unwrap() - 0.011).abs() < 1e-12);
        assert!(ms(&[]).median().is_nan());
    }

    #[test]
    fn time_process_measures_and_reports_failures() {
        let t = time_process(&mut Command::new("true"), Duration::from_secs(10)).unwrap();
        assert!(t.wall < Duration::from_secs(10));
        let busy = time_process(
            Command::new("sh").args(["-c", "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done"]),
            Duration::from_secs(60),
        )
        .unwrap();
        let cpu = busy.cpu.expect("/proc/self/stat is readable");
        assert!(cpu > Duration::ZERO && cpu <= busy.wall + Duration::from_millis(10), "{busy:?}");
        assert!(time_process(&mut Command::new("false"), Duration::from_secs(10)).is_err());
        let err = time_process(Command::new("sleep").arg("5"), Duration::from_millis(100)).unwrap_err();
        assert!(format!("{err}").contains("ran past"), "{err}");
    }
}
