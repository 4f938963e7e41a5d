//! Timing: run a process to completion and measure its wall time, and summarise samples.

use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::display;

/// Runs `cmd` to completion (stdin and stdout to /dev/null, stderr discarded) and returns the
/// wall time of spawn + wait: the whole process, as a user's shell would see it. Fails if it
/// exits non-zero or runs past `timeout` (it is then killed).
pub fn time_process(cmd: &mut Command, timeout: Duration) -> Result<Duration> {
    let shown = display(cmd);
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
    let started = Instant::now();
    let mut child = cmd.spawn().with_context(|| format!("cannot start `{shown}`"))?;
    let status = wait_with_timeout(&mut child, timeout)?;
    let took = started.elapsed();
    match status {
        Some(s) if s.success() => Ok(took),
        Some(s) => bail!("`{shown}` failed ({s}); rerun it by hand to see its output"),
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

/// `child.wait()` with a watchdog that kills the child after `timeout` (None: it was killed).
/// The watchdog is a thread blocked on a channel, so the measured path is a plain `wait()`.
fn wait_with_timeout(child: &mut std::process::Child, timeout: Duration) -> Result<Option<std::process::ExitStatus>> {
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
    let status = child.wait().context("waiting for a benchmarked process")?;
    let _ = done_tx.send(());
    let killed = watchdog.join().unwrap_or(false);
    Ok(if killed { None } else { Some(status) })
}

/// Summary of a set of wall-time samples (seconds).
#[derive(Debug, Clone)]
pub struct Stats {
    pub samples: Vec<f64>,
}

impl Stats {
    pub fn new(durations: &[Duration]) -> Stats {
        let mut samples: Vec<f64> = durations.iter().map(Duration::as_secs_f64).collect();
        samples.sort_by(f64::total_cmp);
        Stats { samples }
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

/// Times `make()` `reps` times after `warmup` untimed runs.
pub fn sample(reps: usize, warmup: usize, timeout: Duration, mut make: impl FnMut() -> Command) -> Result<Stats> {
    for _ in 0..warmup {
        time_process(&mut make(), timeout)?;
    }
    let mut times = Vec::with_capacity(reps);
    for _ in 0..reps {
        times.push(time_process(&mut make(), timeout)?);
    }
    Ok(Stats::new(&times))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: &[u64]) -> Stats {
        Stats::new(&v.iter().map(|&m| Duration::from_millis(m)).collect::<Vec<_>>())
    }

    #[test]
    fn median_and_p90() {
        let s = ms(&[5, 1, 4, 2, 3]);
        assert_eq!(s.median(), 0.003);
        assert_eq!(s.p90(), 0.005);
        let s = ms(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
        assert_eq!(s.median(), 0.0055);
        assert_eq!(s.p90(), 0.009);
        assert!(ms(&[]).median().is_nan());
    }

    #[test]
    fn time_process_measures_and_reports_failures() {
        let t = time_process(&mut Command::new("true"), Duration::from_secs(10)).unwrap();
        assert!(t < Duration::from_secs(10));
        assert!(time_process(&mut Command::new("false"), Duration::from_secs(10)).is_err());
        let err = time_process(Command::new("sleep").arg("5"), Duration::from_millis(100)).unwrap_err();
        assert!(format!("{err}").contains("ran past"), "{err}");
    }
}
