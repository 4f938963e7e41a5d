//! Tests against a real single-node Slurm; skipped (or, with `CI=true`, failed) where Slurm is not installed.

use std::path::Path;
use std::process::Output;
use std::thread;
use std::time::{Duration, Instant};

use aurora_slurm_testkit::{Options, SlurmCluster, output_with_timeout, start_or_skip};

const JOB_TIMEOUT: Duration = Duration::from_secs(60);

fn ok(cluster: &SlurmCluster, what: &str, out: std::io::Result<Output>) -> String {
    let out = out.unwrap_or_else(|e| panic!("{what}: {e}{}", cluster.logs()));
    assert!(
        out.status.success(),
        "{what}: {}\nstdout: {}\nstderr: {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        cluster.logs()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn sorted_lines(text: &str) -> Vec<String> {
    let mut lines: Vec<String> = text.lines().map(|l| l.trim().to_owned()).filter(|l| !l.is_empty()).collect();
    lines.sort();
    lines
}

fn srun_procids(cluster: &SlurmCluster) -> Vec<String> {
    let out = cluster.run("srun", ["-n", "2", "printenv", "SLURM_PROCID"], JOB_TIMEOUT);
    sorted_lines(&ok(cluster, "srun -n 2", out))
}

/// Pids of processes (other than this one) whose environment has `SLURM_CONF=<conf>`.
fn processes_with_conf(conf: &Path) -> Vec<u32> {
    let needle = format!("SLURM_CONF={}", conf.display()).into_bytes();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != std::process::id())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|&b| b == 0).any(|var| var == needle.as_slice()))
        })
        .collect()
}

#[test]
fn srun_runs_two_tasks() {
    let started = Instant::now();
    let Some(cluster) = start_or_skip("srun_runs_two_tasks") else { return };
    eprintln!("SlurmCluster::start took {:?}", started.elapsed());
    assert_eq!(srun_procids(&cluster), ["0", "1"]);
}

#[test]
fn sbatch_wait_runs_a_two_task_step() {
    let Some(cluster) = start_or_skip("sbatch_wait_runs_a_two_task_step") else { return };
    let out_dir = tempfile::tempdir().unwrap();
    let out_file = out_dir.path().join("job.out");
    let mut sbatch = cluster.command("sbatch");
    sbatch.args(["--wait", "-n", "2", "--wrap", "srun printenv SLURM_NTASKS", "-o"]).arg(&out_file);
    ok(&cluster, "sbatch --wait", output_with_timeout(&mut sbatch, JOB_TIMEOUT));
    let written = std::fs::read_to_string(&out_file).unwrap();
    assert_eq!(sorted_lines(&written), ["2", "2"], "{written:?}");
}

#[test]
fn drop_stops_daemons_jobs_and_removes_the_directory() {
    let Some(cluster) = start_or_skip("drop_stops_daemons_jobs_and_removes_the_directory") else { return };
    let pids = cluster.daemon_pids();
    assert_eq!(pids.len(), 3);
    for pid in &pids {
        assert!(Path::new(&format!("/proc/{pid}")).exists());
    }
    let out = cluster.run("sbatch", ["--parsable", "--wrap", "sleep 300", "-o", "/dev/null"], JOB_TIMEOUT);
    let job = ok(&cluster, "sbatch sleep", out).trim().to_owned();
    // Wait for the job's task to exist, so that drop has a job step and a task to clean up.
    let conf = cluster.conf_path().to_owned();
    let deadline = Instant::now() + JOB_TIMEOUT;
    loop {
        let out = cluster.run("squeue", ["-h", "-j", &job, "-o", "%T"], JOB_TIMEOUT);
        let running = ok(&cluster, "squeue", out).trim() == "RUNNING";
        if running && processes_with_conf(&conf).len() >= 2 {
            break; // slurmstepd + the batch shell (and sleep)
        }
        assert!(Instant::now() < deadline, "job {job} never started{}", cluster.logs());
        thread::sleep(Duration::from_millis(100));
    }
    let dir = cluster.dir().to_owned();
    let started = Instant::now();
    drop(cluster);
    eprintln!("drop took {:?}", started.elapsed());
    for pid in &pids {
        assert!(!Path::new(&format!("/proc/{pid}")).exists(), "daemon {pid} survived drop");
    }
    assert_eq!(processes_with_conf(&conf), Vec::<u32>::new(), "job processes survived drop");
    assert!(!dir.exists(), "{} survived drop", dir.display());
}

#[test]
fn a_panicking_test_still_stops_its_cluster() {
    let pids = std::sync::Mutex::new(None);
    let result = std::panic::catch_unwind(|| {
        let Some(cluster) = start_or_skip("a_panicking_test_still_stops_its_cluster") else { return };
        *pids.lock().unwrap() = Some((cluster.daemon_pids(), cluster.dir().to_owned()));
        std::panic::resume_unwind(Box::new("deliberate")); // unwinds without the noisy panic hook
    });
    let Some((pids, dir)) = pids.into_inner().unwrap() else { return };
    assert!(result.is_err());
    for pid in pids {
        assert!(!Path::new(&format!("/proc/{pid}")).exists(), "daemon {pid} survived the panic");
    }
    assert!(!dir.exists());
}

#[test]
fn clusters_run_side_by_side() {
    let Some(a) = start_or_skip("clusters_run_side_by_side") else { return };
    let Some(b) = start_or_skip("clusters_run_side_by_side") else { return };
    assert_ne!(a.conf_path(), b.conf_path());
    assert_eq!(a.node_name(), b.node_name());
    assert_eq!(srun_procids(&a), ["0", "1"]);
    assert_eq!(srun_procids(&b), ["0", "1"]);
}

/// `PR_SET_PDEATHSIG` fires when the forking *thread* exits; the daemons must outlive the thread that started them.
#[test]
fn cluster_outlives_the_thread_that_started_it() {
    let Some(cluster) = thread::spawn(|| start_or_skip("cluster_outlives_the_thread_that_started_it")).join().unwrap()
    else {
        return;
    };
    thread::sleep(Duration::from_millis(300));
    for pid in cluster.daemon_pids() {
        assert!(Path::new(&format!("/proc/{pid}")).exists(), "daemon {pid} died with its starting thread");
    }
    assert_eq!(srun_procids(&cluster), ["0", "1"]);
}

#[test]
fn command_points_clients_at_the_cluster() {
    let Some(cluster) = start_or_skip("command_points_clients_at_the_cluster") else { return };
    let mut cmd = cluster.command("printenv");
    let text = ok(&cluster, "printenv", output_with_timeout(&mut cmd, JOB_TIMEOUT));
    assert!(text.lines().any(|l| l == format!("SLURM_CONF={}", cluster.conf_path().display())), "{text}");
    let env = cluster.env();
    assert_eq!(env, [("SLURM_CONF".to_owned(), cluster.conf_path().display().to_string())]);
}

#[test]
fn output_with_timeout_kills_slow_commands() {
    let started = Instant::now();
    let err =
        output_with_timeout(std::process::Command::new("sleep").arg("30"), Duration::from_millis(200)).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn a_daemon_failure_is_reported_with_its_log() {
    // Only meaningful where a cluster can start at all.
    if start_or_skip("a_daemon_failure_is_reported_with_its_log").is_none() {
        return;
    }
    let options = Options { extra_conf: vec!["NoSuchParameter=1".into()], ..Options::default() };
    let err = SlurmCluster::start_with(options).unwrap_err();
    let reason = err.reason();
    assert!(reason.contains("slurmctld exited"), "{reason}");
    assert!(reason.contains("--- tail of") && reason.contains("NoSuchParameter"), "{reason}");
    eprintln!("{err}");
}
