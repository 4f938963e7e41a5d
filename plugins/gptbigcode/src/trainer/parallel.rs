//! Joining the ranks of a sharded job: the rank comes from the launcher's variables (torchrun's,
//! else Slurm's, see `aurora_launch`), rank 0 serves the `TCPStore`, every rank proves it runs the
//! same job with the same build before any process group exists (so a mismatch fails at once
//! instead of hanging in the group's rendezvous), then the groups of Megatron's grid are created
//! (see [`crate::sharded::Grid`]): tensor-parallel, data-parallel, pipeline, the embedding group
//! of the first and last stage, and the whole world.

use std::rc::Rc;
use std::time::Duration;

use aurora_launch::RankEnv;
use aurora_torch::dist::{Backend, DistError, GlooDevice, Group, Store};
use aurora_torch::tch::Device;
use aurora_worker_api::TrainJob;

use super::TrainError;
use crate::sharded::Grid;

/// Seconds a collective (and the rendezvous) may take before the job fails, naming the ranks
/// that did not arrive. Not part of any key: it never changes results.
pub const TIMEOUT_ENV: &str = "AURORA_COLLECTIVE_TIMEOUT_S";
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// This process's place in a job of several ranks.
pub struct Ranks {
    pub rank: usize,
    pub world: usize,
    pub local_rank: usize,
    pub grid: Grid,
    /// The data-parallel group (every rank while tp = pp = 1).
    pub dp: Group,
    /// The tensor-parallel group (tp > 1).
    pub tp: Option<Group>,
    /// The pipeline group (pp > 1).
    pub pp: Option<Group>,
    /// The first and last stage of this rank's pipeline, which both hold the tied embedding
    /// (pp > 1, tied embeddings, on those two stages).
    pub embedding: Option<Group>,
    /// Every rank, when that is more than the data-parallel group.
    world_group: Option<Group>,
    /// Kept alive for the groups (rank 0 serves it).
    _store: Rc<Store>,
}

impl Ranks {
    pub fn is_first(&self) -> bool {
        self.rank == 0
    }

    /// The group of every rank.
    pub fn world(&self) -> &Group {
        self.world_group.as_ref().unwrap_or(&self.dp)
    }
}

fn timeout() -> Result<Duration, String> {
    match std::env::var(TIMEOUT_ENV) {
        Err(_) => Ok(DEFAULT_TIMEOUT),
        Ok(v) => match v.trim().parse::<f64>() {
            Ok(s) if s.is_finite() && s > 0.0 => Ok(Duration::from_secs_f64(s)),
            _ => {
                Err(format!("{TIMEOUT_ENV}={v:?} is not a positive number of seconds; unset it for the default (600)"))
            }
        },
    }
}

/// What every rank must agree on: the job (its JSON), the libtorch and the worker's version.
fn identity(job: &TrainJob) -> String {
    let json = serde_json::to_string(job).expect("jobs serialise");
    format!(
        "job {} / libtorch {} / aurora-worker {}",
        &blake3::hash(json.as_bytes()).to_hex()[..16],
        aurora_torch::libtorch_version(),
        env!("CARGO_PKG_VERSION")
    )
}

/// Joins the job's ranks; `None` for a one-process layout started without a launcher.
pub fn join(job: &TrainJob, device: Device) -> Result<Option<Ranks>, TrainError> {
    let fail = |message: String| TrainError::Job { node: job.node.clone(), message };
    let world = job.layout.world() as usize;
    // One rank by the layout: whatever the environment says (a Slurm batch script sets
    // SLURM_PROCID and SLURM_NTASKS for the script itself), nothing to join.
    if world == 1 {
        return Ok(None);
    }
    let env = RankEnv::from_process_env().map_err(|e| fail(e.to_string()))?;
    let env = match env {
        None => {
            return Err(fail(format!(
                "layout {} needs {world} ranks, but this worker was started without a launcher (no RANK / \
                 WORLD_SIZE from torchrun, no SLURM_PROCID from srun): run the stage through `aurora run`, which \
                 starts every rank",
                job.layout
            )));
        }
        Some(env) => env,
    };
    env.check_world(world, &format!("layout {}", job.layout)).map_err(|e| fail(e.to_string()))?;
    let timeout = timeout().map_err(fail)?;
    let dist = |e: DistError| fail(e.to_string());
    let store = Store::connect(&env.master_addr, env.master_port, env.rank, world, timeout).map_err(dist)?;
    agree_on_identity(&store, env.rank, world, &identity(job), timeout).map_err(|e| match e {
        Agreement::Differ(message) => fail(message),
        Agreement::Store(e) => dist(e),
    })?;
    let backend = if device.is_cuda() { Backend::Nccl } else { Backend::Gloo };
    let gloo_device = match std::env::var("GLOO_SOCKET_IFNAME") {
        Ok(iface) if !iface.is_empty() => GlooDevice::Interface(iface),
        _ if is_loopback(&env.master_addr) => GlooDevice::Host("127.0.0.1".into()),
        _ => GlooDevice::Default,
    };
    let l = &job.layout;
    let grid = Grid::of(env.rank, l.tp as usize, l.pp as usize, l.dp as usize);
    let tied = job.model.tie_word_embeddings;
    let ranks = Ranks::create(store, grid, env.local_rank, backend, &gloo_device, timeout, tied).map_err(dist)?;
    Ok(Some(ranks))
}

impl Ranks {
    /// Creates the groups of `grid` for this rank (`grid.rank()`), the store already joined:
    /// every rank creates its groups in the same order, and each kind partitions the ranks, so
    /// no two ranks wait on each other's different groups. `tied`: the first and last stage
    /// share the embedding (its gradient is summed between them).
    pub fn create(
        store: Rc<Store>,
        grid: Grid,
        local_rank: usize,
        backend: Backend,
        gloo_device: &GlooDevice,
        timeout: Duration,
        tied: bool,
    ) -> Result<Self, DistError> {
        let (rank, world) = (grid.rank(), grid.world());
        let group =
            |name: String, members: Vec<usize>| Group::new(&store, &name, backend, members, rank, gloo_device, timeout);
        let sharded = grid.tp * grid.pp > 1;
        let world_group = if sharded { Some(group("world".into(), (0..world).collect())?) } else { None };
        let dp = if sharded {
            group(format!("dp/{}/{}", grid.stage, grid.tp_rank), grid.dp_group())?
        } else {
            group("dp".into(), (0..world).collect())?
        };
        let tp = if grid.tp > 1 {
            Some(group(format!("tp/{}/{}", grid.stage, grid.dp_rank), grid.tp_group())?)
        } else {
            None
        };
        let pp = if grid.pp > 1 {
            Some(group(format!("pp/{}/{}", grid.dp_rank, grid.tp_rank), grid.pp_group())?)
        } else {
            None
        };
        let embedding = match grid.embedding_group() {
            Some(members) if tied => Some(group(format!("embedding/{}/{}", grid.dp_rank, grid.tp_rank), members)?),
            _ => None,
        };
        Ok(Ranks { rank, world, local_rank, grid, dp, tp, pp, embedding, world_group, _store: store })
    }
}

enum Agreement {
    Differ(String),
    Store(DistError),
}

/// Every rank publishes what it runs; rank 0 compares them all and publishes a verdict that
/// every rank reads (so both sides of a mismatch stop at once, before any process group
/// exists), and on a mismatch keeps the store up until every rank has read it.
fn agree_on_identity(store: &Store, rank: usize, world: usize, mine: &str, timeout: Duration) -> Result<(), Agreement> {
    const VERDICT: &str = "identity/verdict";
    let store_error = Agreement::Store;
    store.set(&format!("identity/{rank}"), mine.as_bytes()).map_err(store_error)?;
    let verdict = if rank == 0 {
        let mut differing = Vec::new();
        for other in 1..world {
            let theirs = store.get(&format!("identity/{other}"), timeout).map_err(store_error)?;
            let theirs = String::from_utf8_lossy(&theirs).into_owned();
            if theirs != mine {
                differing.push(format!("rank {other} runs {theirs}"));
            }
        }
        let verdict = if differing.is_empty() {
            String::new()
        } else {
            format!(
                "rank 0 runs {mine}, but {}: every rank must run the same job file with the same aurora-worker and \
                 libtorch (rebuild and restart all ranks from one aurora)",
                differing.join(", ")
            )
        };
        store.set(VERDICT, verdict.as_bytes()).map_err(store_error)?;
        if !verdict.is_empty() {
            // Rank 0 serves the store: the others must read the verdict before it goes.
            for other in 1..world {
                let _ = store.get(&format!("identity/read/{other}"), timeout);
            }
        }
        verdict
    } else {
        let verdict = store.get(VERDICT, timeout).map_err(store_error)?;
        store.set(&format!("identity/read/{rank}"), b"1").map_err(store_error)?;
        String::from_utf8_lossy(&verdict).into_owned()
    };
    if verdict.is_empty() { Ok(()) } else { Err(Agreement::Differ(verdict)) }
}

fn is_loopback(host: &str) -> bool {
    host == "localhost" || host.starts_with("127.") || host == "::1"
}

/// Fault injection for tests of rank failures (as torchelastic's tests kill workers):
/// `AURORA_TEST_KILL_RANK=R@S` makes rank R kill itself with SIGKILL before global step S.
/// Returns S for this rank. Never set it outside tests.
pub const KILL_ENV: &str = "AURORA_TEST_KILL_RANK";

pub fn fault_injection(ranks: Option<&Ranks>) -> Option<u64> {
    let value = std::env::var(KILL_ENV).ok()?;
    let (rank, step) = value.split_once('@')?;
    let rank: usize = rank.trim().parse().ok()?;
    (ranks.map_or(0, |r| r.rank) == rank).then(|| step.trim().parse().ok()).flatten()
}

/// Ends this process as `kill -9` would (no unwinding, no cleanup).
pub fn kill_self(step: u64) -> ! {
    eprintln!("{KILL_ENV}: killing this rank before step {step}");
    // SAFETY: plain syscalls on this process.
    unsafe {
        libc::kill(libc::getpid(), libc::SIGKILL);
    }
    std::process::abort()
}
