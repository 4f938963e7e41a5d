//! A real, private, single-node Slurm cluster for tests.
//!
//! [`SlurmCluster::start`] creates a temporary directory under `/tmp`, starts a private `munged`, writes a
//! `slurm.conf` (one node named after the short hostname, loopback addresses, fresh ports) and starts `slurmctld`
//! and `slurmd` in the foreground as children of the test process. It returns once the node reports `idle`.
//! Dropping the cluster kills the daemons and every process still carrying the cluster's `SLURM_CONF` (job steps,
//! tasks), then removes the directory.
//!
//! The daemons are spawned with `PR_SET_PDEATHSIG = SIGKILL` from a dedicated, never-ending thread, so they die with
//! the test process even when it panics or is killed, and a cluster kept in a `static` survives the end of the test
//! thread that started it. Job steps (`slurmstepd`) are double-forked by `slurmd` and cannot be tied to the test
//! process that way; leftovers from a test process that was killed are swept by the next [`SlurmCluster::start`].
//!
//! Requirements: root, Debian `slurm-wlm` and `munge` (`munged`, `slurmctld`, `slurmd`, `srun`, `sbatch`, `sinfo`).
//! Set `AURORA_SLURM_KEEP=1` to keep the directory (configuration and logs) after drop.

use std::ffi::OsStr;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Once, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use aurora_process_testkit::{
    forget_owner, keep_requested, owner_alive, spawn_tied, sweep_stale_dirs, tail, which, write_owner,
};

const DIR_PREFIX: &str = "aurora-slurm-";
/// Short and world-traversable: munged insists on `o+x` for every ancestor of its socket, and Unix socket paths
/// (munge socket, slurmstepd sockets in the spool dir) are limited to 108 bytes.
const TMP_ROOT: &str = "/tmp";
const READY_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);
const START_ATTEMPTS: usize = 3;
const MARKER_ENV: &str = "AURORA_SLURM_TESTKIT_DIR";
const KEEP_ENV: &str = "AURORA_SLURM_KEEP";
/// Input variables of the Slurm clients; inherited ones (tests run inside a Slurm job) would redirect or reshape
/// submissions to the private cluster.
const CLIENT_ENV_PREFIXES: &[&str] =
    &["SLURM_", "SBATCH_", "SALLOC_", "SRUN_", "SQUEUE_", "SINFO_", "SCONTROL_", "SCANCEL_", "SACCT_"];

/// The first job id of the next cluster this process starts: 1, 101, 201, ... Clusters running at
/// the same time then hand out different job ids, and the ports ranks derive from them
/// (`20000 + SLURM_JOB_ID % 10000`, see aurora-launch) do not collide, as two jobs of one real
/// cluster's do not.
fn first_job_id() -> u32 {
    static CLUSTERS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    1 + 100 * (CLUSTERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 100)
}

/// Why a cluster could not be started.
pub use aurora_process_testkit::Unavailable;

/// An [`Unavailable`] naming what this kit starts.
fn unavailable(reason: impl Into<String>) -> Unavailable {
    Unavailable::new("Slurm test cluster", reason)
}

/// Knobs for [`SlurmCluster::start_with`].
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// CPUs the node advertises (default: `max(available_parallelism, 8)`; slurmd accepts more than the hardware
    /// has thanks to `SlurmdParameters=config_overrides`).
    pub cpus: Option<u32>,
    /// Extra lines appended to `slurm.conf` (later lines win for most scalar parameters).
    pub extra_conf: Vec<String>,
}

/// Starts a cluster, or explains on stderr why `test` is skipped and returns `None`.
///
/// When the environment variable `CI` is `true` (or `1`) it panics instead: CI must provide Slurm.
pub fn start_or_skip(test: &str) -> Option<SlurmCluster> {
    match SlurmCluster::start() {
        Ok(cluster) => Some(cluster),
        Err(e) => {
            aurora_process_testkit::skip_or_fail(test, e);
            None
        }
    }
}

struct Bins {
    munged: PathBuf,
    mungekey: Option<PathBuf>,
    slurmctld: PathBuf,
    slurmd: PathBuf,
}

impl Bins {
    fn find() -> Result<Self, Unavailable> {
        let mut missing = Vec::new();
        let mut need = |name: &str| {
            which(name).unwrap_or_else(|| {
                missing.push(name.to_owned());
                PathBuf::new()
            })
        };
        let bins =
            Bins { munged: need("munged"), mungekey: None, slurmctld: need("slurmctld"), slurmd: need("slurmd") };
        for client in ["srun", "sbatch", "sinfo", "squeue", "scontrol"] {
            need(client);
        }
        if !missing.is_empty() {
            return Err(unavailable(format!(
                "missing binaries: {} (install the Debian packages `slurm-wlm` and `munge`)",
                missing.join(", ")
            )));
        }
        Ok(Bins { mungekey: which("mungekey"), ..bins })
    }
}

struct Daemon {
    name: &'static str,
    child: Child,
    /// Files worth showing when it fails, best first: its captured stdout/stderr (with `-D` a superset of its log
    /// file, and the only place for errors before the log file is opened), then its log file.
    logs: Vec<PathBuf>,
}

/// A private single-node Slurm cluster; see the crate documentation.
pub struct SlurmCluster {
    dir: Option<tempfile::TempDir>,
    root: PathBuf,
    conf: PathBuf,
    node: String,
    cpus: u32,
    ctld_port: u16,
    slurmd_port: u16,
    daemons: Vec<Daemon>,
}

enum StartError {
    /// A port picked as free was taken before the daemon bound it.
    PortRace(Unavailable),
    Fatal(Unavailable),
}

impl From<Unavailable> for StartError {
    fn from(e: Unavailable) -> Self {
        if e.reason().contains("Address already in use") { StartError::PortRace(e) } else { StartError::Fatal(e) }
    }
}

impl SlurmCluster {
    /// Starts a cluster with default [`Options`].
    pub fn start() -> Result<SlurmCluster, Unavailable> {
        Self::start_with(Options::default())
    }

    /// Starts a cluster; returns once the node is `idle` (bounded by 30 s per daemon stage).
    pub fn start_with(options: Options) -> Result<SlurmCluster, Unavailable> {
        if cfg!(not(target_os = "linux")) {
            return Err(unavailable("only supported on Linux"));
        }
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err(unavailable("not root (slurmd must run as root to launch tasks)"));
        }
        let bins = Bins::find()?;
        static SWEEP: Once = Once::new();
        SWEEP.call_once(sweep_stale);
        let mut attempt = 1;
        loop {
            match Self::try_start(&options, &bins) {
                Ok(cluster) => return Ok(cluster),
                Err(StartError::PortRace(e)) if attempt < START_ATTEMPTS => {
                    eprintln!("aurora-slurm-testkit: port race, retrying: {}", e.reason());
                    attempt += 1;
                }
                Err(StartError::PortRace(e) | StartError::Fatal(e)) => return Err(e),
            }
        }
    }

    fn try_start(options: &Options, bins: &Bins) -> Result<SlurmCluster, StartError> {
        let node = short_hostname()?;
        let cpus = options.cpus.unwrap_or_else(|| {
            let n = thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
            u32::try_from(n).unwrap_or(u32::MAX).max(8)
        });
        let fail = |what: &str, e: io::Error| unavailable(format!("{what}: {e}"));
        let dir = tempfile::Builder::new()
            .prefix(DIR_PREFIX)
            .tempdir_in(TMP_ROOT)
            .map_err(|e| fail(&format!("creating a temporary directory in {TMP_ROOT}"), e))?;
        let root = dir.path().to_path_buf();
        let (ctld_port, slurmd_port) = free_ports().map_err(|e| fail("picking free ports", e))?;
        // From here on, dropping `cluster` stops whatever was started.
        let mut cluster = SlurmCluster {
            dir: Some(dir),
            conf: root.join("slurm.conf"),
            root: root.clone(),
            node,
            cpus,
            ctld_port,
            slurmd_port,
            daemons: Vec::new(),
        };
        cluster.prepare_dir(bins).map_err(|e| fail(&format!("preparing {}", root.display()), e))?;

        let munge = root.join("munge");
        let socket = munge.join("munge.socket");
        let mut munged = Command::new(&bins.munged);
        munged.arg("--foreground").arg(format!("--socket={}", socket.display()));
        for (flag, file) in [
            ("key-file", "munge.key"),
            ("pid-file", "munged.pid"),
            ("log-file", "munged.log"),
            ("seed-file", "munged.seed"),
        ] {
            munged.arg(format!("--{flag}={}", munge.join(file).display()));
        }
        cluster.spawn("munged", munged, munge.join("munged.log"))?;
        cluster.wait_until("munged to accept connections", Duration::from_millis(20), |c| {
            UnixStream::connect(c.munge_socket()).is_ok()
        })?;

        fs::write(&cluster.conf, cluster.slurm_conf(options)).map_err(|e| fail("writing slurm.conf", e))?;
        let mut ctld = Command::new(&bins.slurmctld);
        ctld.arg("-D").arg("-f").arg(&cluster.conf);
        cluster.spawn("slurmctld", ctld, root.join("log/slurmctld.log"))?;
        cluster.wait_until("slurmctld to listen", Duration::from_millis(50), |c| c.port_open(c.ctld_port))?;

        let mut slurmd = Command::new(&bins.slurmd);
        slurmd.arg("-D").arg("-f").arg(&cluster.conf).arg("-N").arg(&cluster.node);
        cluster.spawn("slurmd", slurmd, root.join("log/slurmd.log"))?;
        cluster.wait_until("the node to become idle", Duration::from_millis(100), |c| c.node_state() == "idle")?;
        Ok(cluster)
    }

    fn prepare_dir(&self, bins: &Bins) -> io::Result<()> {
        let root = &self.root;
        // munged refuses a socket whose ancestors are not world-traversable.
        fs::set_permissions(root, fs::Permissions::from_mode(0o755))?;
        for sub in ["munge", "state", "spool", "log", "run"] {
            fs::create_dir(root.join(sub))?;
            fs::set_permissions(root.join(sub), fs::Permissions::from_mode(0o755))?;
        }
        write_owner(root)?;
        fs::write(root.join("plugstack.conf"), "")?;
        let key = root.join("munge/munge.key");
        let generated = bins.mungekey.as_ref().is_some_and(|mungekey| {
            let mut cmd = Command::new(mungekey);
            cmd.arg("--create").arg(format!("--keyfile={}", key.display()));
            output_with_timeout(&mut cmd, CLIENT_TIMEOUT).is_ok_and(|o| o.status.success())
        });
        if !generated {
            let _ = fs::remove_file(&key);
            let mut bytes = vec![0u8; 1024];
            File::open("/dev/urandom")?.read_exact(&mut bytes)?;
            OpenOptions::new().write(true).create_new(true).mode(0o400).open(&key)?.write_all(&bytes)?;
        }
        Ok(())
    }

    fn slurm_conf(&self, options: &Options) -> String {
        let r = self.root.display();
        let node = &self.node;
        let mut conf = format!(
            "# Generated by aurora-slurm-testkit\n\
             ClusterName=aurora-test\n\
             SlurmctldHost={node}(127.0.0.1)\n\
             SlurmctldPort={ctld}\n\
             SlurmdPort={slurmd}\n\
             SlurmUser=root\n\
             SlurmdUser=root\n\
             AuthType=auth/munge\n\
             AuthInfo=socket={r}/munge/munge.socket\n\
             CredType=cred/munge\n\
             StateSaveLocation={r}/state\n\
             SlurmdSpoolDir={r}/spool\n\
             SlurmctldPidFile={r}/run/slurmctld.pid\n\
             SlurmdPidFile={r}/run/slurmd.pid\n\
             SlurmctldLogFile={r}/log/slurmctld.log\n\
             SlurmdLogFile={r}/log/slurmd.log\n\
             SlurmctldDebug=info\n\
             SlurmdDebug=info\n\
             PlugStackConfig={r}/plugstack.conf\n\
             ReturnToService=2\n\
             MpiDefault=none\n\
             ProctrackType=proctrack/linuxproc\n\
             TaskPlugin=task/none\n\
             JobAcctGatherType=jobacct_gather/none\n\
             AccountingStorageType=accounting_storage/none\n\
             JobCompType=jobcomp/none\n\
             SelectType=select/cons_tres\n\
             SelectTypeParameters=CR_CPU\n\
             SchedulerType=sched/builtin\n\
             SchedulerParameters=batch_sched_delay=0\n\
             SlurmdParameters=config_overrides\n\
             MailProg=/bin/true\n\
             KillWait=2\n\
             MinJobAge=5\n\
             FirstJobId={first_job}\n\
             InactiveLimit=0\n\
             NodeName={node} NodeAddr=127.0.0.1 NodeHostname={node} CPUs={cpus} State=UNKNOWN\n\
             PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE\n",
            ctld = self.ctld_port,
            first_job = first_job_id(),
            slurmd = self.slurmd_port,
            cpus = self.cpus,
        );
        for line in &options.extra_conf {
            conf.push_str(line);
            conf.push('\n');
        }
        conf
    }

    /// Spawns a foreground daemon from the spawner thread (see [`spawn_tied`]), output captured in `<log>.out`.
    fn spawn(&mut self, name: &'static str, mut cmd: Command, log: PathBuf) -> Result<(), Unavailable> {
        let out_path = log.with_extension("out");
        let open = || File::create(&out_path).map_err(|e| unavailable(format!("creating {out_path:?}: {e}")));
        cmd.stdin(Stdio::null()).stdout(open()?).stderr(open()?).current_dir(&self.root);
        self.apply_env(&mut cmd);
        cmd.env(MARKER_ENV, &self.root);
        let child = spawn_tied(cmd).map_err(|e| unavailable(format!("spawning {name}: {e}")))?;
        self.daemons.push(Daemon { name, child, logs: vec![out_path, log] });
        Ok(())
    }

    /// Polls `ready` every `every` until it holds; fails early when a daemon exits, and after [`READY_TIMEOUT`].
    fn wait_until(
        &mut self,
        what: &str,
        every: Duration,
        ready: impl Fn(&SlurmCluster) -> bool,
    ) -> Result<(), Unavailable> {
        let start = Instant::now();
        loop {
            for d in &mut self.daemons {
                if let Ok(Some(status)) = d.child.try_wait() {
                    return Err(unavailable(format!(
                        "{} exited ({status}) while waiting for {what}{}\n(set {KEEP_ENV}=1 to keep {})",
                        d.name,
                        tails(&d.logs),
                        self.root.display()
                    )));
                }
            }
            if ready(self) {
                return Ok(());
            }
            if start.elapsed() > READY_TIMEOUT {
                return Err(unavailable(format!(
                    "timed out after {READY_TIMEOUT:?} waiting for {what}{}\n(set {KEEP_ENV}=1 to keep {})",
                    self.logs(),
                    self.root.display()
                )));
            }
            thread::sleep(every);
        }
    }

    fn port_open(&self, port: u16) -> bool {
        TcpStream::connect_timeout(&SocketAddr::from((Ipv4Addr::LOCALHOST, port)), Duration::from_secs(1)).is_ok()
    }

    fn node_state(&self) -> String {
        let mut cmd = self.command("sinfo");
        cmd.args(["--noheader", "--Node", "--format=%T", "--nodes"]).arg(&self.node);
        match output_with_timeout(&mut cmd, CLIENT_TIMEOUT) {
            Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).trim().to_owned(),
            _ => String::new(),
        }
    }

    fn apply_env(&self, cmd: &mut Command) {
        for (key, _) in std::env::vars_os() {
            if let Some(key) = key.to_str()
                && CLIENT_ENV_PREFIXES.iter().any(|p| key.starts_with(p))
            {
                cmd.env_remove(key);
            }
        }
        cmd.envs(self.env());
    }

    /// Environment the Slurm client commands need to talk to this cluster.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![("SLURM_CONF".to_owned(), self.conf.display().to_string())]
    }

    /// A command for `program` (resolved like a shell would, plus the sbin directories) with this cluster's
    /// environment, and without inherited `SLURM_*`/`SBATCH_*`/`SALLOC_*`/... variables.
    pub fn command(&self, program: &str) -> Command {
        let resolved = if program.contains('/') { None } else { which(program) };
        let mut cmd = Command::new(resolved.as_deref().unwrap_or(Path::new(program)));
        self.apply_env(&mut cmd);
        cmd
    }

    /// Runs `program args…` via [`SlurmCluster::command`] with a deadline (see [`output_with_timeout`]).
    pub fn run<I, S>(&self, program: &str, args: I, timeout: Duration) -> io::Result<Output>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        output_with_timeout(self.command(program).args(args), timeout)
    }

    /// Path of the generated `slurm.conf` (also exported as `SLURM_CONF` by [`SlurmCluster::env`]).
    pub fn conf_path(&self) -> &Path {
        &self.conf
    }

    /// The node's name: the short hostname.
    pub fn node_name(&self) -> &str {
        &self.node
    }

    /// CPUs the node advertises.
    pub fn cpus(&self) -> u32 {
        self.cpus
    }

    /// The cluster's temporary directory (configuration, state, spool, logs; removed on drop).
    pub fn dir(&self) -> &Path {
        &self.root
    }

    /// The private munge socket (`munge -S <socket> -n` works against it).
    pub fn munge_socket(&self) -> PathBuf {
        self.root.join("munge/munge.socket")
    }

    /// Pids of `munged`, `slurmctld` and `slurmd`, in that order.
    pub fn daemon_pids(&self) -> Vec<u32> {
        self.daemons.iter().map(|d| d.child.id()).collect()
    }

    /// The last lines of every daemon's log, for diagnostics in failing tests.
    pub fn logs(&self) -> String {
        self.daemons.iter().map(|d| tails(&d.logs)).collect()
    }

    /// SIGTERM the daemons (slurmd first), SIGKILL after [`STOP_TIMEOUT`], reap them; then SIGKILL job steps and
    /// tasks, which `slurmd` double-forks and leaves running.
    fn stop(&mut self) {
        for d in self.daemons.iter_mut().rev() {
            if let Ok(None) = d.child.try_wait() {
                // SAFETY: the child has not been reaped, so its pid is still ours.
                unsafe { libc::kill(d.child.id() as libc::pid_t, libc::SIGTERM) };
            }
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        for d in self.daemons.iter_mut().rev() {
            while matches!(d.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(20));
            }
            if let Ok(None) = d.child.try_wait() {
                let _ = d.child.kill();
            }
            let _ = d.child.wait();
        }
        kill_marked(&self.root, &self.conf);
    }
}

impl Drop for SlurmCluster {
    fn drop(&mut self) {
        self.stop();
        if let Some(dir) = self.dir.take() {
            if keep_requested(KEEP_ENV) {
                forget_owner(&self.root); // not swept later
                eprintln!("aurora-slurm-testkit: kept {}", dir.keep().display());
            } else if let Err(e) = dir.close() {
                eprintln!("aurora-slurm-testkit: removing {}: {e}", self.root.display());
            }
        }
    }
}

impl fmt::Debug for SlurmCluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SlurmCluster")
            .field("conf", &self.conf)
            .field("node", &self.node)
            .field("cpus", &self.cpus)
            .field("ctld_port", &self.ctld_port)
            .field("slurmd_port", &self.slurmd_port)
            .field("daemon_pids", &self.daemon_pids())
            .finish()
    }
}

/// Runs `cmd` with stdin closed and stdout/stderr captured, killing it after `timeout`.
///
/// Fails with [`io::ErrorKind::TimedOut`] when the command, or a descendant holding its output pipes, outlives the
/// deadline.
pub fn output_with_timeout(cmd: &mut Command, timeout: Duration) -> io::Result<Output> {
    let deadline = Instant::now() + timeout;
    let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
    let reader = |pipe: Option<Box<dyn Read + Send>>| {
        let (tx, rx) = mpsc::channel();
        if let Some(mut pipe) = pipe {
            thread::spawn(move || {
                let mut buf = Vec::new();
                let _ = pipe.read_to_end(&mut buf);
                let _ = tx.send(buf);
            });
        } else {
            let _ = tx.send(Vec::new());
        }
        rx
    };
    let stdout = reader(child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let stderr = reader(child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let timed_out = || {
        io::Error::new(io::ErrorKind::TimedOut, format!("{:?} did not finish within {timeout:?}", cmd.get_program()))
    };
    let mut pause = Duration::from_millis(1);
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(timed_out());
        }
        thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    };
    let collect = |rx: mpsc::Receiver<Vec<u8>>| {
        let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(500));
        rx.recv_timeout(left).map_err(|_| timed_out())
    };
    Ok(Output { status, stdout: collect(stdout)?, stderr: collect(stderr)? })
}

fn short_hostname() -> Result<String, Unavailable> {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates when the name fits.
    if unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len() - 1) } != 0 {
        return Err(unavailable(format!("gethostname: {}", io::Error::last_os_error())));
    }
    let len = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let full = String::from_utf8_lossy(&buf[..len]);
    let short = full.split('.').next().unwrap_or_default();
    if short.is_empty() { Err(unavailable("empty hostname")) } else { Ok(short.to_owned()) }
}

/// Two distinct ports that are free on all addresses (slurmctld and slurmd bind the wildcard address).
fn free_ports() -> io::Result<(u16, u16)> {
    let a = TcpListener::bind((Ipv4Addr::UNSPECIFIED, 0))?;
    let b = TcpListener::bind((Ipv4Addr::UNSPECIFIED, 0))?;
    Ok((a.local_addr()?.port(), b.local_addr()?.port()))
}

/// The last lines of the first non-empty file in `paths`.
fn tails(paths: &[PathBuf]) -> String {
    paths.iter().map(|path| tail(path)).find(|t| !t.is_empty()).unwrap_or_default()
}

fn proc_pids() -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else { return Vec::new() };
    entries.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).filter(|&p| p != std::process::id()).collect()
}

/// The values of `SLURM_CONF` and the testkit marker in a process's environment.
fn marks(pid: u32) -> (Option<PathBuf>, Option<PathBuf>) {
    let Ok(environ) = fs::read(format!("/proc/{pid}/environ")) else { return (None, None) };
    let mut conf = None;
    let mut marker = None;
    for var in environ.split(|&b| b == 0) {
        let value = |prefix: &str| var.strip_prefix(prefix.as_bytes()).map(|v| PathBuf::from(OsStr::from_bytes(v)));
        conf = conf.or_else(|| value("SLURM_CONF="));
        marker = marker.or_else(|| value(&format!("{MARKER_ENV}=")));
    }
    (conf, marker)
}

/// SIGKILLs every other process that belongs to the cluster in `root`: job steps and tasks carry its
/// `SLURM_CONF`, daemons carry the marker. Repeats until none is left (bounded).
fn kill_marked(root: &Path, conf: &Path) {
    let deadline = Instant::now() + STOP_TIMEOUT;
    loop {
        let mut found = false;
        for pid in proc_pids() {
            let (c, m) = marks(pid);
            if c.as_deref() == Some(conf) || m.as_deref() == Some(root) {
                found = true;
                // SAFETY: kill has no memory-safety preconditions.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            }
        }
        if !found || Instant::now() > deadline {
            return;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Kills processes and removes directories left by test processes that died without dropping their clusters.
fn sweep_stale() {
    let prefix = Path::new(TMP_ROOT).join(DIR_PREFIX);
    let cluster_root = |path: PathBuf| {
        let root = if path.ends_with("slurm.conf") { path.parent()?.to_path_buf() } else { path };
        root.as_os_str().as_bytes().starts_with(prefix.as_os_str().as_bytes()).then_some(root)
    };
    for pid in proc_pids() {
        let (conf, marker) = marks(pid);
        if let Some(root) = marker.and_then(cluster_root).or_else(|| conf.and_then(cluster_root))
            && !owner_alive(&root)
        {
            // SAFETY: kill has no memory-safety preconditions.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        }
    }
    sweep_stale_dirs(Path::new(TMP_ROOT), DIR_PREFIX);
}
