# The Python peer of `cargo xtask bench --only dist`, run under torchrun (`python -m
# torch.distributed.run --standalone --nproc-per-node DP`) for DP > 1 and as a plain process for
# DP = 1 (no process group, no DDP), as aurora's `dist_bench` example runs. Gloo on CPU; each rank
# pins its torch threads. Rank 0 prints one JSON line.
#
# train: transformers' GPTBigCodeForCausalLM, built and optimised as in train_peer.py (imported
# from beside this file), wrapped in torch.nn.parallel.DistributedDataParallel (default buckets,
# gradients averaged over the ranks while the backward pass runs). A fixed global batch of BATCH
# sequences: rank r takes rows r * BATCH/DP .., as micro-batches of MICRO (DDP's `no_sync` on all
# but the last: one gradient sync a step), loss / micro-batches per step, then grad-norm clip to
# 1.0 and AdamW. WARMUP untimed steps, a barrier, STEPS timed ones; CPU seconds and peak RSS
# summed over the ranks, losses averaged over them.
#
# allreduce: for each size a float32 tensor of BYTES / 4 zeros, WARMUP all-reduces (sum), a
# barrier, ITERS timed ones; the median seconds per all-reduce as "s_<BYTES>".
#
# argv: train DP LAYERS HIDDEN HEADS SEQ VOCAB BATCH MICRO WARMUP STEPS THREADS SEED LR
#       allreduce DP WARMUP THREADS BYTES:ITERS[,BYTES:ITERS...]
import contextlib, json, math, os, statistics, sys, time

import torch
import torch.distributed as dist

mode, dp = sys.argv[1], int(sys.argv[2])
world, rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))
if world != dp:
    sys.exit(f"dist_peer.py: DP is {dp} but WORLD_SIZE is {world}: run DP > 1 under torchrun")
if world > 1:
    dist.init_process_group("gloo")


def summed(values):
    """`values` summed over the ranks (unchanged on one rank)."""
    t = torch.tensor(values, dtype=torch.float64)
    if world > 1:
        dist.all_reduce(t)
    return t.tolist()


def train(argv):
    import transformers
    import train_peer

    layers, hidden, heads, seq, vocab, batch, micro, warmup, steps, threads, seed = map(int, argv[:11])
    lr = float(argv[11])
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    model, params, opt = train_peer.build(layers, hidden, heads, seq, vocab, lr)
    ids = torch.randint(vocab, (batch, seq), dtype=torch.int64)
    per_rank = batch // world
    accum = per_rank // micro
    mine = [ids[rank * per_rank + a * micro:rank * per_rank + (a + 1) * micro] for a in range(accum)]
    net = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model

    def step():
        opt.zero_grad()
        total = 0.0
        for a, m in enumerate(mine):
            sync = world == 1 or a == accum - 1
            with contextlib.nullcontext() if sync else net.no_sync():
                loss = net(input_ids=m, labels=m).loss
                (loss / accum).backward()
            total += loss.item()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        return total / accum

    losses, secs, cpu = train_peer.run_steps(step, warmup, steps, dist.barrier if world > 1 else lambda: None)
    n = len(losses)
    sums = summed(losses + [cpu, train_peer.peak_rss_mb()])
    tokens = steps * batch * seq
    return {
        "bench": "dist", "side": "pytorch", "torch": torch.__version__, "transformers": transformers.__version__,
        "dp": world, "global_batch": batch, "micro_batch": micro, "accumulation": accum,
        "grad_sync": "DistributedDataParallel (gloo)" if world > 1 else "none",
        "attn": model.config._attn_implementation, "threads": torch.get_num_threads(),
        "params": sum(p.numel() for p in params), "tokens": tokens, "seconds": secs, "cpu_seconds": sums[n],
        "tokens_per_s": tokens / secs, "loss_first": sums[0] / world, "loss_last": sums[n - 1] / world,
        "ln_vocab": math.log(vocab), "peak_rss_mb": sums[n + 1],
    }


def allreduce(argv):
    warmup, threads = int(argv[0]), int(argv[1])
    torch.set_num_threads(threads)
    out = {"bench": "allreduce", "side": "pytorch", "torch": torch.__version__, "world": world,
           "threads": torch.get_num_threads(), "warmup": warmup}
    for pair in argv[2].split(","):
        size, iters = map(int, pair.split(":"))
        t = torch.zeros(size // 4, dtype=torch.float32)
        for _ in range(warmup):
            dist.all_reduce(t)
        dist.barrier()
        times = []
        for _ in range(iters):
            started = time.perf_counter()
            dist.all_reduce(t)
            times.append(time.perf_counter() - started)
        out[f"s_{size}"] = statistics.median(times)
        out[f"iters_{size}"] = iters
    return out


if mode == "allreduce" and world < 2:
    sys.exit("dist_peer.py: allreduce needs DP >= 2")
figures = train(sys.argv[3:]) if mode == "train" else allreduce(sys.argv[3:])
if rank == 0:
    print(json.dumps(figures, separators=(",", ":")))
if world > 1:
    dist.destroy_process_group()
