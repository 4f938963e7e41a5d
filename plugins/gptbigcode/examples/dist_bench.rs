//! Data-parallel training throughput and all-reduce bandwidth over aurora's c10d runtime
//! ([`aurora_torch::dist`], Gloo on CPU). `cargo xtask bench --only dist` drives this binary beside
//! PyTorch DDP and `torch.distributed` (xtask/src/bench/dist_peer.py, under torchrun):
//!
//! ```text
//! dist_bench train DP LAYERS HIDDEN HEADS SEQ VOCAB BATCH MICRO WARMUP STEPS THREADS SEED LR
//! dist_bench allreduce DP WARMUP THREADS BYTES:ITERS[,BYTES:ITERS...]
//! dist_bench sharded TP PP LAYERS HIDDEN HEADS SEQ VOCAB BATCH MICRO WARMUP STEPS THREADS SEED LR
//! ```
//!
//! Started without torchrun's variables (`RANK`, `WORLD_SIZE`, ...), it is its own launcher:
//! with DP = 1 it runs in this process (no process group, no collective), with DP > 1 it starts DP
//! copies of itself with the variables torchrun sets on one node ([`aurora_launch::local`]) and
//! waits for them (a failing rank ends the others; each rank in a session of its own, as torchrun
//! starts them). Started with them, it is one rank: it joins the others (rank 0 serves the
//! `TCPStore`) in one Gloo group on 127.0.0.1.
//!
//! `train`: the model and step of `train_bench` (forward + LM loss + backward + grad-norm clip to
//! 1.0 + AdamW), data parallel over a fixed global batch of BATCH sequences: rank r takes rows
//! `r * BATCH/DP ..` and runs them as micro-batches of MICRO (gradients accumulated), then the
//! gradients are summed over the ranks ([`aurora_gptbigcode::zero::all_reduce_grads`]: one
//! all-reduce of the flat gradient after the backward pass, the trainer's plain data
//! parallelism), each micro-batch's loss scaled by 1 / (micro-batches * DP) so every rank holds
//! the global batch's mean gradient, as DDP's averaging gives. Every rank starts from rank 0's
//! weights (a broadcast, as DDP does) and updates its full replica with the same AdamW. WARMUP
//! untimed steps, a barrier, then STEPS timed ones. Rank 0 prints one JSON line: its wall time,
//! the global tokens, the CPU seconds and peak RSS summed over the ranks, the global mean loss of
//! the first and last step.
//!
//! `sharded`: the same model and step over TP x PP ranks (no data parallelism) through the
//! trainer's sharded code path ([`aurora_gptbigcode::sharded`]): every rank builds the whole
//! model from SEED as `train` does and keeps its stage's slices ([`load_weights`]); a step is
//! the 1F1B schedule over the BATCH / MICRO micro-batches ([`Pipeline`]: tensor-parallel
//! mappings inside each stage, activations and gradients exchanged between stages), the
//! model-parallel gradient reductions ([`reduce_model_parallel_grads`]), the global gradient
//! norm over the model's slices ([`NormScope`]), clip to 1.0 and AdamW on the rank's slices. The
//! loss is the global batch's mean (the last stage's, as the trainer counts it). Rank 0 also
//! reports the time it spent waiting on communication during the timed steps
//! ([`aurora_torch::dist::time_in_communication`]).
//!
//! `allreduce`: for each size, a float32 tensor of BYTES / 4 zeros, WARMUP all-reduces (sum),
//! a barrier, then ITERS timed ones; rank 0 prints the median seconds per all-reduce as
//! `"s_<BYTES>"`.

use std::os::unix::process::CommandExt;
use std::process::Command;
use std::rc::Rc;
use std::time::{Duration, Instant};

use aurora_gptbigcode::adamw::{AdamW, AdamWConfig};
use aurora_gptbigcode::optim::{clip_grad_norm, scale_grads};
use aurora_gptbigcode::sharded::pieces::WholeVarStore;
use aurora_gptbigcode::sharded::pipeline::{MicroBatch, Pipeline};
use aurora_gptbigcode::sharded::{Grid, StageModel};
use aurora_gptbigcode::trainer::parallel::Ranks;
use aurora_gptbigcode::trainer::sft::IGNORE;
use aurora_gptbigcode::trainer::{NormScope, load_weights, reduce_model_parallel_grads};
use aurora_gptbigcode::zero::{all_reduce_grads, broadcast_weights};
use aurora_launch::RankEnv;
use aurora_launch::local::{free_port, local_rank_vars};
use aurora_torch::dist::{Backend, GlooDevice, Group, ReduceOp, Store};
use aurora_torch::tch::{self, Device, Kind, Tensor, nn};

use bench_util::{Shape, cpu_seconds, model_and_batch, peak_rss_mb};

mod bench_util;

const USAGE: &str = "usage: dist_bench train DP LAYERS HIDDEN HEADS SEQ VOCAB BATCH MICRO WARMUP STEPS THREADS SEED LR\n       \
                     dist_bench allreduce DP WARMUP THREADS BYTES:ITERS[,BYTES:ITERS...]\n       \
                     dist_bench sharded TP PP LAYERS HIDDEN HEADS SEQ VOCAB BATCH MICRO WARMUP STEPS THREADS SEED LR";

/// How long the rendezvous and each collective may take.
const TIMEOUT: Duration = Duration::from_secs(300);

fn usage(problem: &str) -> ! {
    eprintln!("dist_bench: {problem}\n{USAGE}");
    std::process::exit(2);
}

fn int(args: &[String], i: usize) -> i64 {
    match args.get(i).map(|a| a.parse()) {
        Some(Ok(v)) => v,
        _ => usage(&format!("argument {} must be an integer, got {:?}", i + 1, args.get(i))),
    }
}

/// One rank of several: its group over every rank, and the store it needs (rank 0 serves it).
struct Rank {
    rank: usize,
    group: Group,
    _store: Rc<Store>,
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (mode, arity) = match args.first().map(String::as_str) {
        Some("train") => ("train", 14),
        Some("allreduce") => ("allreduce", 5),
        Some("sharded") => ("sharded", 15),
        _ => usage("the first argument must be `train`, `allreduce` or `sharded`"),
    };
    if args.len() != arity {
        usage(&format!("`{mode}` takes {} arguments, got {}", arity - 1, args.len() - 1));
    }
    let env = RankEnv::from_process_env().unwrap_or_else(|e| panic!("{e}"));
    if mode == "sharded" {
        let (tp, pp) = (int(&args, 1).max(1) as usize, int(&args, 2).max(1) as usize);
        let env = match env {
            None => launch(tp * pp),
            Some(env) => env,
        };
        env.check_world(tp * pp, &format!("TP x PP = {tp} x {pp}")).unwrap_or_else(|e| panic!("{e}"));
        let store = Store::connect(&env.master_addr, env.master_port, env.rank, env.world_size, TIMEOUT)
            .unwrap_or_else(|e| panic!("{e}"));
        let grid = Grid::of(env.rank, tp, pp, 1);
        let device = GlooDevice::Host("127.0.0.1".into());
        let ranks = Ranks::create(store, grid, env.local_rank, Backend::Gloo, &device, TIMEOUT, true)
            .unwrap_or_else(|e| panic!("{e}"));
        return sharded(&args[3..], &ranks);
    }
    let dp = int(&args, 1).max(1) as usize;
    let rank = match env {
        None if dp > 1 => launch(dp),
        None => None,
        Some(env) => {
            env.check_world(dp, &format!("DP = {dp}")).unwrap_or_else(|e| panic!("{e}"));
            Some(join(&env))
        }
    };
    if mode == "train" {
        train(&args[2..], rank.as_ref());
    } else {
        all_reduce(&args[2..], rank.as_ref().unwrap_or_else(|| usage("`allreduce` needs DP >= 2")));
    }
}

/// Starts `dp` ranks of this binary with torchrun's variables and exits with their outcome.
///
/// Each rank gets a session of its own, as torchrun gives its workers (`start_new_session`):
/// where the kernel groups processes by session for scheduling (`sched_autogroup_enabled`),
/// ranks sharing the launcher's session share one CPU share between them, and on a 2-core
/// machine wake-ups inside the group often waited for the next scheduler tick (a 1 MiB
/// all-reduce took 4 ms instead of 0.6). The ranks die with the launcher (`PR_SET_PDEATHSIG`), as they
/// are out of reach of the terminal's Ctrl-C.
fn launch(dp: usize) -> ! {
    let exe = std::env::current_exe().expect("the path of this binary");
    let port = free_port().expect("a free port on 127.0.0.1");
    let mut children: Vec<_> = (0..dp)
        .map(|r| {
            let mut cmd = Command::new(&exe);
            cmd.args(std::env::args_os().skip(1)).envs(local_rank_vars(r, dp, port));
            // SAFETY: setsid and prctl are async-signal-safe.
            unsafe {
                cmd.pre_exec(|| {
                    libc::setsid();
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    Ok(())
                });
            }
            cmd.spawn().unwrap_or_else(|e| panic!("cannot start rank {r}: {e}"))
        })
        .collect();
    loop {
        let mut running = 0;
        for (r, child) in children.iter_mut().enumerate() {
            match child.try_wait().expect("waiting for a rank") {
                None => running += 1,
                Some(status) if status.success() => {}
                Some(status) => {
                    eprintln!("dist_bench: rank {r} failed ({status}); ending the others");
                    for other in &mut children {
                        let _ = other.kill();
                        let _ = other.wait();
                    }
                    std::process::exit(1);
                }
            }
        }
        if running == 0 {
            std::process::exit(0);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Joins the other ranks: the store, then one Gloo group of every rank on the loopback.
fn join(env: &RankEnv) -> Rank {
    let store = Store::connect(&env.master_addr, env.master_port, env.rank, env.world_size, TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    let ranks = (0..env.world_size).collect();
    let device = GlooDevice::Host("127.0.0.1".into());
    let group =
        Group::new(&store, "dp", Backend::Gloo, ranks, env.rank, &device, TIMEOUT).unwrap_or_else(|e| panic!("{e}"));
    Rank { rank: env.rank, group, _store: store }
}

/// `values` summed over the ranks (unchanged on one rank).
fn summed(values: Vec<f64>, rank: Option<&Rank>) -> Vec<f64> {
    match rank {
        Some(r) => summed_over(values, &r.group),
        None => values,
    }
}

fn train(args: &[String], rank: Option<&Rank>) {
    let int = |i: usize| int(args, i);
    let shape = Shape { layers: int(0), hidden: int(1), heads: int(2), seq: int(3), vocab: int(4) };
    let (batch, micro, warmup, steps, threads, seed) = (int(5), int(6), int(7), int(8), int(9), int(10));
    let lr: f64 = args[11].parse().unwrap_or_else(|_| usage(&format!("LR must be a number, got {:?}", args[11])));
    let (world, me) = rank.map_or((1, 0), |r| (r.group.size() as i64, r.rank as i64));
    if steps < 1 || warmup < 0 || micro < 1 || batch % (world * micro) != 0 {
        usage(&format!(
            "need STEPS >= 1, WARMUP >= 0 and BATCH a multiple of DP * MICRO; got STEPS {steps}, WARMUP {warmup}, \
             BATCH {batch}, DP {world}, MICRO {micro}"
        ));
    }
    tch::set_num_threads(threads as i32);

    let (vs, model, ids) = model_and_batch(&shape, batch, seed);
    if let Some(r) = rank {
        broadcast_weights(&vs, &r.group).unwrap_or_else(|e| panic!("{e}"));
    }
    let per_rank = batch / world;
    let accum = per_rank / micro;
    let mine: Vec<Tensor> = (0..accum).map(|a| ids.narrow(0, me * per_rank + a * micro, micro).contiguous()).collect();
    let scale = 1.0 / (accum * world) as f64;
    let mut opt = AdamW::new(&vs, &AdamWConfig::default());
    // Returns this rank's mean loss over its micro-batches.
    let mut step = || {
        opt.zero_grad();
        let mut loss_sum = 0.0;
        for m in &mine {
            let loss = model.lm_loss(m).expect("ids inside the vocabulary and n_positions");
            (&loss * scale).backward();
            loss_sum += loss.double_value(&[]);
        }
        if let Some(r) = rank {
            all_reduce_grads(&vs, &r.group).unwrap_or_else(|e| panic!("{e}"));
        }
        clip_grad_norm(&vs, 1.0);
        opt.step(lr);
        loss_sum / accum as f64
    };

    let mut losses: Vec<f64> = (0..warmup).map(|_| step()).collect();
    if let Some(r) = rank {
        r.group.barrier().unwrap_or_else(|e| panic!("{e}"));
    }
    let (start, cpu_start) = (Instant::now(), cpu_seconds());
    for _ in 0..steps {
        losses.push(step());
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu_start;

    // One collective after the timed steps: every rank's losses, CPU time and peak RSS.
    let n = losses.len();
    losses.extend([cpu, peak_rss_mb()]);
    let sums = summed(losses, rank);
    if me != 0 {
        return;
    }
    let tokens = steps * batch * shape.seq;
    println!(
        "{}",
        serde_json::json!({
            "bench": "dist", "side": "aurora", "libtorch": aurora_torch::libtorch_version(),
            "dp": world, "global_batch": batch, "micro_batch": micro, "accumulation": accum,
            "grad_sync": if world > 1 { "aurora_gptbigcode::zero::all_reduce_grads (Gloo)" } else { "none" },
            "optimizer": "aurora_gptbigcode::adamw::AdamW", "threads": tch::get_num_threads(),
            "params": bench_util::params(&vs), "tokens": tokens, "seconds": secs, "cpu_seconds": sums[n],
            "tokens_per_s": tokens as f64 / secs, "loss_first": sums[0] / world as f64,
            "loss_last": sums[n - 1] / world as f64, "ln_vocab": (shape.vocab as f64).ln(), "peak_rss_mb": sums[n + 1],
        })
    );
}

/// `values` summed over the ranks of `group`.
fn summed_over(values: Vec<f64>, group: &Group) -> Vec<f64> {
    let mut t = Tensor::from_slice(&values);
    group.all_reduce(&mut t, ReduceOp::Sum).unwrap_or_else(|e| panic!("{e}"));
    Vec::<f64>::try_from(&t).expect("a 1-d f64 tensor")
}

fn sharded(args: &[String], ranks: &Ranks) {
    let int = |i: usize| int(args, i);
    let shape = Shape { layers: int(0), hidden: int(1), heads: int(2), seq: int(3), vocab: int(4) };
    let (batch, micro, warmup, steps, threads, seed) = (int(5), int(6), int(7), int(8), int(9), int(10));
    let lr: f64 = args[11].parse().unwrap_or_else(|_| usage(&format!("LR must be a number, got {:?}", args[11])));
    let grid = ranks.grid;
    if steps < 1 || warmup < 0 || micro < 1 || batch % micro != 0 || ((batch / micro) as usize) < grid.pp {
        usage(&format!(
            "need STEPS >= 1, WARMUP >= 0, BATCH a multiple of MICRO and at least PP micro-batches; got STEPS \
             {steps}, WARMUP {warmup}, BATCH {batch}, MICRO {micro}, PP {}",
            grid.pp
        ));
    }
    tch::set_num_threads(threads as i32);

    // The whole model as `train` builds it, then this rank's slices of it.
    let (whole, model, ids) = model_and_batch(&shape, batch, seed);
    let vs = nn::VarStore::new(Device::Cpu);
    let stage = StageModel::new(&vs.root(), model.config(), grid).unwrap_or_else(|e| panic!("{e}"));
    load_weights(&vs, stage.params(), &WholeVarStore(&whole), std::path::Path::new("the benchmark's model"))
        .unwrap_or_else(|e| panic!("{e}"));
    let whole_params = bench_util::params(&whole);
    drop((whole, model));
    // Labels: the next token, none after the last position.
    let labels = Tensor::cat(
        &[ids.narrow(1, 1, shape.seq - 1), Tensor::full([batch, 1], IGNORE, (Kind::Int64, Device::Cpu))],
        1,
    );
    let micro_batches: Vec<MicroBatch> = (0..batch / micro)
        .map(|m| MicroBatch { input: ids.narrow(0, m * micro, micro), labels: labels.narrow(0, m * micro, micro) })
        .collect();
    let targets = (batch * (shape.seq - 1)) as f64;
    let pipeline = Pipeline {
        pp: ranks.pp.as_ref(),
        tp: ranks.tp.as_ref(),
        hidden: [micro, shape.seq, shape.hidden],
        autocast: false,
    };
    let scope = NormScope::new(&stage, ranks);
    let mut opt = AdamW::new(&vs, &AdamWConfig::default());
    let fail = |e: aurora_torch::dist::DistError| -> ! { panic!("{e}") };
    // Returns the global batch's mean loss (on every rank).
    let mut step = || {
        opt.zero_grad();
        let local = pipeline.run(&stage, &micro_batches, targets).unwrap_or_else(|e| fail(e));
        // The last stage's loss, counted once (every TP rank of it holds the same).
        let mine = if grid.is_last_stage() && grid.tp_rank == 0 { local } else { 0.0 };
        let loss = summed_over(vec![mine], ranks.world())[0] / targets;
        reduce_model_parallel_grads(&vs, &stage, ranks).unwrap_or_else(|e| fail(e));
        let norm = scope.norm_of_grads(&vs).unwrap_or_else(|e| fail(e));
        scale_grads(&vs, 1.0 / (norm + 1e-6));
        opt.step(lr);
        loss
    };

    let mut losses: Vec<f64> = (0..warmup).map(|_| step()).collect();
    ranks.world().barrier().unwrap_or_else(|e| fail(e));
    let (start, cpu_start, comm_start) = (Instant::now(), cpu_seconds(), aurora_torch::dist::time_in_communication());
    for _ in 0..steps {
        losses.push(step());
    }
    let secs = start.elapsed().as_secs_f64();
    let comm = (aurora_torch::dist::time_in_communication() - comm_start).as_secs_f64();
    let cpu = cpu_seconds() - cpu_start;
    let (first, last) = (losses[0], losses[losses.len() - 1]);
    let sums = summed_over(vec![cpu, peak_rss_mb(), comm, bench_util::params(&vs) as f64], ranks.world());
    if grid.rank() != 0 {
        return;
    }
    let tokens = steps * batch * shape.seq;
    println!(
        "{}",
        serde_json::json!({
            "bench": "sharded", "side": "aurora", "libtorch": aurora_torch::libtorch_version(),
            "tp": grid.tp, "pp": grid.pp, "global_batch": batch, "micro_batch": micro,
            "optimizer": "aurora_gptbigcode::adamw::AdamW", "threads": tch::get_num_threads(),
            "params": whole_params, "rank_params_sum": sums[3], "tokens": tokens, "seconds": secs,
            "cpu_seconds": sums[0], "tokens_per_s": tokens as f64 / secs, "loss_first": first, "loss_last": last,
            "ln_vocab": (shape.vocab as f64).ln(), "peak_rss_mb": sums[1], "comm_seconds": comm,
            "comm_share": comm / secs, "comm_share_mean": sums[2] / grid.world() as f64 / secs,
        })
    );
}

fn all_reduce(args: &[String], rank: &Rank) {
    let (warmup, threads) = (int(args, 0), int(args, 1));
    tch::set_num_threads(threads as i32);
    let sizes: Vec<(i64, i64)> = args[2]
        .split(',')
        .map(|pair| match pair.split_once(':').map(|(b, i)| (b.parse::<i64>(), i.parse::<i64>())) {
            Some((Ok(bytes), Ok(iters))) if bytes >= 4 && bytes % 4 == 0 && iters >= 1 => (bytes, iters),
            _ => usage(&format!("{pair:?} is not BYTES:ITERS (BYTES a positive multiple of 4, ITERS >= 1)")),
        })
        .collect();
    let mut figures = serde_json::json!({
        "bench": "allreduce", "side": "aurora", "libtorch": aurora_torch::libtorch_version(),
        "world": rank.group.size(), "threads": tch::get_num_threads(), "warmup": warmup,
    });
    let run = |t: &mut Tensor| rank.group.all_reduce(t, ReduceOp::Sum).unwrap_or_else(|e| panic!("{e}"));
    for (bytes, iters) in sizes {
        let mut t = Tensor::zeros([bytes / 4], (Kind::Float, Device::Cpu));
        for _ in 0..warmup {
            run(&mut t);
        }
        rank.group.barrier().unwrap_or_else(|e| panic!("{e}"));
        let mut times: Vec<f64> = (0..iters)
            .map(|_| {
                let started = Instant::now();
                run(&mut t);
                started.elapsed().as_secs_f64()
            })
            .collect();
        times.sort_by(f64::total_cmp);
        let n = times.len();
        let median = if n % 2 == 1 { times[n / 2] } else { (times[n / 2 - 1] + times[n / 2]) / 2.0 };
        figures[format!("s_{bytes}")] = median.into();
        figures[format!("iters_{bytes}")] = iters.into();
    }
    if rank.rank == 0 {
        println!("{figures}");
    }
}
