//! Data parallelism on CPU: aurora's c10d runtime ([`aurora_torch::dist`], Gloo) beside PyTorch's
//! own (torch.distributed on Gloo, `DistributedDataParallel`), in the same invocation, the same
//! libtorch release on both sides.
//!
//! Training: `dist_bench train` (the release example of aurora-gptbigcode) beside dist_peer.py,
//! the model and step of the `train` benchmark (GPTBigCode 4 layers x 256 hidden, 4 heads,
//! multi-query, vocab 4096, fp32; forward, LM loss, backward, grad-norm clip to 1.0, AdamW) on
//! the same global batch of [`GLOBAL_BATCH`] x 256 tokens for dp=1 and dp=2, run as micro-batches
//! of [`MICRO`]: dp=1 is one process that accumulates the gradients of all of them (no process
//! group on either side), dp=2 is two processes of one thread each (one CPU each here), each
//! taking half the batch, whose gradients are averaged over the ranks before clip and AdamW.
//! Ours: `aurora_gptbigcode::zero::all_reduce_grads` (one all-reduce of the flat gradient after
//! the backward pass; tch has no backward hooks) and a replicated AdamW, the ranks started by
//! the example itself with torchrun's variables (`aurora_launch::local`), each in a session of
//! its own as torchrun starts its workers (with the kernel's scheduler autogroups, ranks sharing
//! a session also share one CPU share); the peer: transformers' `GPTBigCodeForCausalLM` in DDP
//! (default buckets, all-reduce overlapped with the backward pass) under
//! `python -m torch.distributed.run --standalone --nproc-per-node 2`.
//! Rows: tokens/s (global tokens / rank 0's wall time of the timed steps) for dp=1 and dp=2 and
//! their ratio aurora/peer, and each side's scaling dp=2 / dp=1 (2.00x is ideal).
//!
//! Tensor and pipeline parallelism: the same model, global batch and step over two ranks as
//! tp=2 (each rank half of every layer, the whole batch) and pp=2 (each rank half of the layers,
//! 1F1B over the micro-batches): ours `dist_bench sharded`, the trainer's sharded code path
//! (Megatron's mappings through the shim's autograd functions, [`aurora_gptbigcode::sharded`]);
//! the peer sharded_peer.py under torchrun: `torch.distributed.tensor.parallel` (DTensor,
//! torchtitan's Megatron-style plan, `loss_parallel`) for tp and `torch.distributed.pipelining`
//! (`Schedule1F1B`) for pp, on an equivalent module built from train_peer.py's weights. Rows:
//! tokens/s and rank 0's share of the wall time waiting on communication (ours: the shim's wait
//! clock, `aurora_torch::dist::time_in_communication`; the peer: the collective and wait ops in
//! torch.profiler); for pp the share includes the pipeline's bubble.
//!
//! All-reduce: a float32 tensor of 1, 16 and 64 MiB (1 and 16 under `--quick`) summed over two
//! ranks on 127.0.0.1, warmed up, then timed one call at a time; the figure is the algorithm
//! bandwidth, size / median time (for two ranks the bus bandwidth is the same number). Ours is
//! `Group::all_reduce` through `dist_bench allreduce`, the peer `torch.distributed.all_reduce`
//! under torchrun, both with Gloo bound to the loopback.
//!
//! Runs alternate (ours, then the peer's, each configuration in turn, every round) so load from
//! other work hits both alike; each figure is the best of the rounds.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::report::{Json, Row, Section, Unit, fmt_secs};
use super::train::{self, Figures, HEADS, HIDDEN, LAYERS, LR, SEED, SEQ, VOCAB};
use super::{Benchmark, Ctx, json_field, loadavg, peer, timed_json};
use crate::libtorch::TORCH_VERSION;

pub const BENCH: Benchmark = Benchmark {
    name: "dist",
    about: "data-, tensor- and pipeline-parallel training tokens/s (dp=1, dp=2, tp=2, pp=2; Gloo, 1 thread a rank) \
            and all-reduce bandwidth, vs PyTorch DDP, DTensor tensor parallelism, torch.distributed.pipelining and \
            torch.distributed",
    run,
};

/// The global batch (sequences), the same for dp=1 and dp=2.
const GLOBAL_BATCH: u32 = 8;
/// Sequences per forward pass: dp=1 accumulates GLOBAL_BATCH / MICRO micro-batches a step, each
/// rank of dp=2 half as many.
const MICRO: u32 = 4;
/// torch threads per rank.
const THREADS: u32 = 1;
/// The data-parallel degrees compared.
const DPS: [u32; 2] = [1, 2];
const SIDES: [&str; 2] = ["aurora", "pytorch"];
const MIB: u64 = 1 << 20;
const ALL_REDUCE_WARMUP: u32 = 10;
/// The limit of one all-reduce run (every size).
const ALL_REDUCE_LIMIT: Duration = Duration::from_secs(600);
const PEER_SCRIPT: &str = include_str!("dist_peer.py");
const SHARDED_PEER_SCRIPT: &str = include_str!("sharded_peer.py");

/// What runs the two sides.
struct Programs {
    example: PathBuf,
    /// The data-parallel peer (dist_peer.py).
    script: PathBuf,
    /// The tensor / pipeline-parallel peer (sharded_peer.py).
    sharded_script: PathBuf,
}

/// The model-parallel layouts compared: (name, tp, pp).
const SHARDED: [(&str, u32, u32); 2] = [("tp", 2, 1), ("pp", 1, 2)];

impl Programs {
    /// `side` with `ranks` ranks and `args` (the mode first): ours launches its own ranks, the
    /// peer (`script`) runs under torchrun for several ranks and as a plain process for one.
    fn command(&self, ctx: &mut Ctx, side: &str, ranks: u32, script: &Path, args: &[String]) -> Result<Command> {
        let mut cmd = if side == "aurora" {
            let mut cmd = Command::new(&self.example);
            ctx.lt.apply(&mut cmd)?;
            cmd
        } else {
            let mut cmd = ctx.venv()?.python();
            if ranks > 1 {
                cmd.args(["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", &ranks.to_string()]);
            }
            cmd.arg(script);
            train::peer_env(&mut cmd);
            // Gloo on the loopback interface, as ours binds 127.0.0.1.
            cmd.env("GLOO_SOCKET_IFNAME", "lo");
            cmd
        };
        cmd.args(args);
        train::pin_threads(&mut cmd, THREADS);
        Ok(cmd)
    }
}

fn run(ctx: &mut Ctx) -> Result<Section> {
    let (warmup, steps) = if ctx.quick { (1, 3) } else { (3, 20) };
    let rounds = ctx.reps(2, 1);
    let sizes_mib: &[u64] = if ctx.quick { &[1, 16] } else { &[1, 16, 64] };
    // About 1 GiB (128 MiB under --quick) through each size, 20 to 500 calls (10 to 100).
    let iters = |mib: u64| if ctx.quick { (128 / mib).clamp(10, 100) } else { (1024 / mib).clamp(20, 500) };
    let sizes: Vec<(u64, u64)> = sizes_mib.iter().map(|&mib| (mib, iters(mib))).collect();

    let example = ctx.release_example("aurora-gptbigcode", "dist_bench")?;
    ctx.venv()?;
    // dist_peer.py imports the model of train_peer.py from beside it.
    let dir = ctx.scratch().join("dist-peer");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for (name, text) in
        [("dist_peer.py", PEER_SCRIPT), ("sharded_peer.py", SHARDED_PEER_SCRIPT), ("train_peer.py", train::PEER_SCRIPT)]
    {
        std::fs::write(dir.join(name), text).with_context(|| format!("cannot write {}", dir.join(name).display()))?;
    }
    let programs = Programs { example, script: dir.join("dist_peer.py"), sharded_script: dir.join("sharded_peer.py") };

    let mut loads = Vec::new();
    // The mode and its degrees, then the model and the step.
    let args = |mode: &str, degrees: &[u32]| -> Vec<String> {
        let nums = [LAYERS, HIDDEN, HEADS, SEQ, VOCAB, GLOBAL_BATCH, MICRO, warmup, steps, THREADS, SEED];
        [mode.to_string()]
            .into_iter()
            .chain(degrees.iter().chain(&nums).map(u32::to_string))
            .chain([LR.to_string()])
            .collect()
    };
    // best[dp index][side index]: the run with the highest tokens/s.
    let mut best: [[Option<Figures>; 2]; 2] = Default::default();
    for round in 1..=rounds {
        for (d, &dp) in DPS.iter().enumerate() {
            for (s, side) in SIDES.iter().enumerate() {
                let before = loadavg();
                let mut cmd = programs.command(ctx, side, dp, &programs.script, &args("train", &[dp]))?;
                let f = train::measure(&mut cmd, &ctx.scratch().join(format!("dist-{side}-dp{dp}.log")))?;
                eprintln!(
                    "xtask: bench: dist: round {round}/{rounds}: {side} dp={dp}: {:.0} tokens/s, {:.1} CPU s, loss \
                     {:.3} -> {:.3} (load avg {before} -> {})",
                    f.tokens_per_s(),
                    f.cpu_seconds,
                    f.loss_first,
                    f.loss_last,
                    loadavg()
                );
                loads.push(format!("{side} dp={dp} {before} -> {}", loadavg()));
                let slot = &mut best[d][s];
                if slot.as_ref().is_none_or(|b| f.tokens_per_s() > b.tokens_per_s()) {
                    *slot = Some(f);
                }
            }
        }
    }
    // Tensor and pipeline parallelism over two ranks, the same model, batch and step.
    let mut best_sharded: [[Option<(Figures, f64)>; 2]; 2] = Default::default();
    for round in 1..=rounds {
        for (l, &(name, tp, pp)) in SHARDED.iter().enumerate() {
            for (s, side) in SIDES.iter().enumerate() {
                let before = loadavg();
                let args = if *side == "aurora" { args("sharded", &[tp, pp]) } else { args(name, &[tp * pp]) };
                let mut cmd = programs.command(ctx, side, tp * pp, &programs.sharded_script, &args)?;
                let f = train::measure(&mut cmd, &ctx.scratch().join(format!("dist-{side}-{name}.log")))?;
                let share = json_field(&f.line, "comm_share")?;
                eprintln!(
                    "xtask: bench: dist: round {round}/{rounds}: {side} {name}=2: {:.0} tokens/s, {:.0}% of the wall \
                     time in communication, loss {:.3} -> {:.3} (load avg {before} -> {})",
                    f.tokens_per_s(),
                    share * 100.0,
                    f.loss_first,
                    f.loss_last,
                    loadavg()
                );
                loads.push(format!("{side} {name}=2 {before} -> {}", loadavg()));
                let slot = &mut best_sharded[l][s];
                if slot.as_ref().is_none_or(|(b, _)| f.tokens_per_s() > b.tokens_per_s()) {
                    *slot = Some((f, share));
                }
            }
        }
    }
    let [[Some(ours1), Some(peer1)], [Some(ours2), Some(peer2)]] = best else { unreachable!("rounds >= 1") };
    let [
        [Some((ours_tp, ours_tp_comm)), Some((peer_tp, peer_tp_comm))],
        [Some((ours_pp, ours_pp_comm)), Some((peer_pp, peer_pp_comm))],
    ] = best_sharded
    else {
        unreachable!("rounds >= 1")
    };
    for (ours, theirs) in [(&ours_tp, &peer_tp), (&ours_pp, &peer_pp)] {
        train::check_same_work(ours, theirs, THREADS as usize)?;
        train::check_peer_torch(&theirs.line)?;
    }
    for (who, one, tp, pp) in [("aurora", &ours1, &ours_tp, &ours_pp), ("pytorch", &peer1, &peer_tp, &peer_pp)] {
        check_same_batch(who, one, "tp=2", tp)?;
        check_same_batch(who, one, "pp=2", pp)?;
    }
    for (ours, theirs) in [(&ours1, &peer1), (&ours2, &peer2)] {
        train::check_same_work(ours, theirs, THREADS as usize)?;
        train::check_peer_torch(&theirs.line)?;
    }
    for (who, one, two) in [("aurora", &ours1, &ours2), ("pytorch", &peer1, &peer2)] {
        check_same_batch(who, one, "dp=2", two)?;
    }

    // All-reduce: best (lowest) median per size and side.
    let pairs: Vec<String> = sizes.iter().map(|(mib, n)| format!("{}:{n}", mib * MIB)).collect();
    let ar_args: Vec<String> =
        ["allreduce".to_string(), "2".into(), ALL_REDUCE_WARMUP.to_string(), THREADS.to_string(), pairs.join(",")]
            .into();
    let mut secs = [vec![f64::INFINITY; sizes.len()], vec![f64::INFINITY; sizes.len()]];
    // One more round than training (these runs take seconds): a run's figure depends on where
    // the scheduler puts the ranks' threads, more on a loaded machine.
    let ar_rounds = rounds + 1;
    for round in 1..=ar_rounds {
        for (s, side) in SIDES.iter().enumerate() {
            let before = loadavg();
            let mut cmd = programs.command(ctx, side, 2, &programs.script, &ar_args)?;
            let (line, _) =
                timed_json(&mut cmd, &ctx.scratch().join(format!("allreduce-{side}.log")), ALL_REDUCE_LIMIT)?;
            let mut shown = Vec::new();
            for (i, (mib, _)) in sizes.iter().enumerate() {
                let t = json_field(&line, &format!("s_{}", mib * MIB))?;
                secs[s][i] = secs[s][i].min(t);
                shown.push(format!("{mib} MiB {:.0} MB/s", (mib * MIB) as f64 / t / 1e6));
            }
            eprintln!(
                "xtask: bench: dist: round {round}/{ar_rounds}: {side} all-reduce: {} (load avg {before} -> {})",
                shown.join(", "),
                loadavg()
            );
            loads.push(format!("{side} all-reduce {before} -> {}", loadavg()));
        }
    }

    let mut s = Section::new(
        "dist",
        format!(
            "data-, tensor- and pipeline-parallel training on CPU, GPTBigCode {LAYERS}x{HIDDEN} MQA, global batch {GLOBAL_BATCH} x {SEQ} \
             tokens, micro-batch {MICRO}, {THREADS} thread a rank, Gloo on 127.0.0.1; all-reduce float32, 2 ranks"
        ),
    );
    s.peer = Some(format!(
        "torch {TORCH_VERSION} (DDP, DTensor, pipelining) + transformers {} (py)",
        peer::TRANSFORMERS_VERSION
    ));
    let accum = |dp: u32| GLOBAL_BATCH / (dp * MICRO);
    let labels = [
        format!("dp=1 (1 process, {} micro-batches): tokens/s (best of {rounds})", accum(1)),
        format!("dp=2 (2 processes x {THREADS} thread, {} micro-batch each): tokens/s (best of {rounds})", accum(2)),
    ];
    for (label, ours, theirs) in [(&labels[0], &ours1, &peer1), (&labels[1], &ours2, &peer2)] {
        s.row(Row::rate("tok/s", label, Some(ours.tokens_per_s()), Some(theirs.tokens_per_s())));
    }
    let scaling = |one: &Figures, two: &Figures| two.tokens_per_s() / one.tokens_per_s();
    s.row(Row {
        label: "scaling: tokens/s dp=2 / dp=1 (ideal 2.00x)".into(),
        unit: Unit::Factor,
        ours: Some(scaling(&ours1, &ours2)),
        peer: Some(scaling(&peer1, &peer2)),
        n: 0,
    });
    for (dp, ours, theirs) in [(1, &ours1, &peer1), (2, &ours2, &peer2)] {
        s.row(Row::rate(
            "tok/CPU-s",
            format!("dp={dp}: tokens per CPU second (all ranks)"),
            Some(ours.tokens / ours.cpu_seconds),
            Some(theirs.tokens / theirs.cpu_seconds),
        ));
    }
    for (dp, ours, theirs) in [(1, &ours1, &peer1), (2, &ours2, &peer2)] {
        s.row(train::step_wall_row(format!("dp={dp}: step wall, mean"), ours, theirs, steps));
    }
    s.row(Row::time(
        "dp=2: whole job wall (launch, rendezvous, init, warmup)",
        Some(ours2.process.wall.as_secs_f64()),
        Some(peer2.process.wall.as_secs_f64()),
        1,
    ));
    s.row(Row::mib("dp=2: peak RSS summed over the ranks", Some(ours2.peak_rss_mb), Some(peer2.peak_rss_mb)));
    for (name, ours, theirs, ours_comm, peer_comm) in
        [("tp", &ours_tp, &peer_tp, ours_tp_comm, peer_tp_comm), ("pp", &ours_pp, &peer_pp, ours_pp_comm, peer_pp_comm)]
    {
        let what =
            if name == "tp" { "2 ranks x 1 thread, the whole batch on each" } else { "2 stages x 1 thread, 1F1B" };
        s.row(Row::rate(
            "tok/s",
            format!("{name}=2 ({what}): tokens/s (best of {rounds})"),
            Some(ours.tokens_per_s()),
            Some(theirs.tokens_per_s()),
        ));
        s.row(Row::share(
            format!("{name}=2: rank 0's share of the wall time waiting on communication"),
            Some(ours_comm),
            Some(peer_comm),
        ));
        s.row(Row::mib(
            format!("{name}=2: peak RSS summed over the ranks"),
            Some(ours.peak_rss_mb),
            Some(theirs.peak_rss_mb),
        ));
    }
    for (i, (mib, n)) in sizes.iter().enumerate() {
        let bw = |t: f64| (mib * MIB) as f64 / t;
        s.row(Row::rate(
            "B/s",
            format!("all-reduce {mib} MiB: size / median time ({n} calls, best of {ar_rounds})"),
            Some(bw(secs[0][i])),
            Some(bw(secs[1][i])),
        ));
    }

    let ratio = |o: &Figures, p: &Figures| o.tokens_per_s() / p.tokens_per_s();
    s.note(
        "compared",
        Json::Obj(vec![
            ("params".into(), Json::Num(ours1.params)),
            ("global_batch".into(), Json::Num(f64::from(GLOBAL_BATCH))),
            ("micro_batch".into(), Json::Num(f64::from(MICRO))),
            ("threads_per_rank".into(), Json::Num(f64::from(THREADS))),
            ("warmup_steps".into(), Json::Num(f64::from(warmup))),
            ("timed_steps".into(), Json::Num(f64::from(steps))),
        ]),
        format!(
            "same work both sides: {:.2} M parameters, the same global batch for dp=1 and dp=2 (dp=1 accumulates \
             {} micro-batches; dp=2 averages the gradients over the ranks), clip 1.0 + AdamW, {warmup} warmup + \
             {steps} timed steps; aurora: zero::all_reduce_grads after the backward pass + replicated AdamW, ranks \
             started by dist_bench itself; peer: DDP (all-reduce overlapped with the backward pass) under torchrun",
            ours1.params / 1e6,
            accum(1)
        ),
    );
    s.note(
        "ratio_dp2",
        Json::Obj(vec![
            ("dp1".into(), Json::Num(ratio(&ours1, &peer1))),
            ("dp2".into(), Json::Num(ratio(&ours2, &peer2))),
            ("scaling_aurora".into(), Json::Num(scaling(&ours1, &ours2))),
            ("scaling_pytorch".into(), Json::Num(scaling(&peer1, &peer2))),
        ]),
        format!(
            "tokens/s aurora / pytorch: dp=1 {:.2}x, dp=2 {:.2}x; scaling dp=2 / dp=1: aurora {:.2}x, pytorch {:.2}x",
            ratio(&ours1, &peer1),
            ratio(&ours2, &peer2),
            scaling(&ours1, &ours2),
            scaling(&peer1, &peer2)
        ),
    );
    s.note(
        "sharded",
        Json::Obj(vec![
            ("tp2_ratio".into(), Json::Num(ratio(&ours_tp, &peer_tp))),
            ("pp2_ratio".into(), Json::Num(ratio(&ours_pp, &peer_pp))),
            ("tp2_comm_share".into(), Json::Arr(vec![Json::Num(ours_tp_comm), Json::Num(peer_tp_comm)])),
            ("pp2_comm_share".into(), Json::Arr(vec![Json::Num(ours_pp_comm), Json::Num(peer_pp_comm)])),
        ]),
        format!(
            "tokens/s aurora / pytorch: tp=2 {:.2}x, pp=2 {:.2}x; peer: DTensor ColwiseParallel / RowwiseParallel \
             (Megatron split, tied vocab-parallel embedding and head, loss_parallel) and pipelining's Schedule1F1B \
             on sharded_peer.py's GPTBigCode (train_peer.py's weights, q and kv projections apart)",
            ratio(&ours_tp, &peer_tp),
            ratio(&ours_pp, &peer_pp)
        ),
    );
    let ar: Vec<String> = sizes
        .iter()
        .enumerate()
        .map(|(i, (mib, _))| {
            format!(
                "{mib} MiB {:.2}x ({} vs {} per call)",
                secs[1][i] / secs[0][i],
                fmt_secs(secs[0][i]),
                fmt_secs(secs[1][i])
            )
        })
        .collect();
    s.note(
        "all_reduce_ratio",
        Json::Obj(
            sizes
                .iter()
                .enumerate()
                .map(|(i, (mib, _))| (format!("{mib}MiB"), Json::Num(secs[1][i] / secs[0][i])))
                .collect(),
        ),
        format!("all-reduce bandwidth aurora / torch.distributed (Gloo, 2 ranks, 1 thread each): {}", ar.join("; ")),
    );
    s.note(
        "loss",
        Json::Obj(
            [("aurora_dp1", &ours1), ("aurora_dp2", &ours2), ("pytorch_dp1", &peer1), ("pytorch_dp2", &peer2)]
                .into_iter()
                .map(|(k, f)| (k.to_string(), Json::Arr(vec![Json::Num(f.loss_first), Json::Num(f.loss_last)])))
                .collect(),
        ),
        format!(
            "global-batch loss, first -> last step: aurora dp=1 {:.4} -> {:.4}, dp=2 {:.4} -> {:.4}; pytorch dp=1 \
             {:.4} -> {:.4}, dp=2 {:.4} -> {:.4}",
            ours1.loss_first,
            ours1.loss_last,
            ours2.loss_first,
            ours2.loss_last,
            peer1.loss_first,
            peer1.loss_last,
            peer2.loss_first,
            peer2.loss_last
        ),
    );
    s.note(
        "load_avg",
        Json::Arr(loads.iter().cloned().map(Json::Str).collect()),
        format!("load avg before -> after each run: {}", loads.join("; ")),
    );
    if ctx.quick {
        s.note(
            "quick",
            Json::Bool(true),
            format!("--quick: {warmup} warmup + {steps} timed steps, one round ({ar_rounds} for the all-reduce)"),
        );
    }
    Ok(s)
}

/// dp=1 and a layout of two ranks (`layout`) of one side start from the same weights on the same
/// global batch: their first step's loss must agree (to float rounding), or the ranks did not
/// split the batch or the model as claimed.
fn check_same_batch(who: &str, one: &Figures, layout: &str, two: &Figures) -> Result<()> {
    if (one.loss_first - two.loss_first).abs() > 1e-3 {
        bail!(
            "{who}: the first loss of dp=1 ({}) and {layout} ({}) differ: the ranks did not train the same global \
             batch with the same model",
            one.loss_first,
            two.loss_first
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dp_degrees_split_the_global_batch_into_whole_micro_batches() {
        for dp in DPS {
            assert_eq!(GLOBAL_BATCH % (dp * MICRO), 0, "dp={dp}");
        }
    }
}
