# The Python peer of aurora's tensor-parallel (tp) and pipeline-parallel (pp) CPU training
# benchmarks, run under torchrun (`python -m torch.distributed.run --standalone --nproc-per-node N`),
# Gloo on CPU, each rank pinning its torch threads. Rank 0 prints one JSON line.
#
# The model is train_peer.py's GPTBigCode (multi-query attention, tied embeddings, gelu tanh, fp32,
# dropout 0), rewritten compactly below with HF's fused q|k|v `c_attn` split into a query Linear
# and a key/value Linear (ColwiseParallel cannot split the fused one), loaded with the very weights
# train_peer.build initialises under SEED; `check` mode compares its loss and gradients with HF's
# (same loss, gradients within 3e-8). The step is dist_peer.py's: a fixed global batch of BATCH random sequences as
# micro-batches of MICRO (loss / micro-batches), global grad-norm clip to 1.0, AdamW. WARMUP
# untimed steps, a barrier, STEPS timed ones; CPU seconds and peak RSS summed over the ranks.
#
# tp: torch.distributed.tensor.parallel, Megatron split as in torchtitan: query and mlp.c_fc
# ColwiseParallel, attn.c_proj and mlp.c_proj RowwiseParallel, the embedding vocab-parallel
# (RowwiseParallel, input Replicate), the head ColwiseParallel with the loss under loss_parallel().
# Embedding and head stay tied (both weights are Shard(0) DTensors: one Parameter). The key/value
# head is replicated: its input passes an identity-forward / all-reduce-backward op and its
# gradient (partial per rank) is all-reduced by hand, as Megatron does. Every rank sees the whole
# batch. The grad norm sums DTensor norms (full_tensor) and, once, the replicated parameters.
# pp: torch.distributed.pipelining, Schedule1F1B over BATCH/MICRO micro-batches: embeddings + the
# first half of the blocks on stage 0, the rest + ln_f + head + loss on stage 1. Tied Megatron-style:
# stage 1 holds a copy of the embedding as its head and the two gradients are summed over the
# stages every step, so both copies stay equal (counted once in params and in the grad norm).
#
# comm_seconds: rank 0's self CPU time (torch.profiler around the timed steps) in ops named with
# one of COMM_OPS: c10d::allreduce_ / ::send / ::recv_ (launch the Gloo work), DTensor's functional
# collectives (_c10d_functional::all_reduce, ::wait_tensor where it blocks), and the "comm::"
# ranges wrapped below around the blocking Work.wait()s the profiler does not see (plain
# dist.all_reduce, the pipeline's send/recv; in pp this includes the pipeline bubble). Not "gloo:*":
# those run on Gloo's threads, overlapping the waits. The profiler costs no throughput beyond noise
# (SHARDED_PEER_PROFILE=0 turns it off; SHARDED_PEER_OPS=1 prints the counted ops to stderr).
#
# argv: tp TP LAYERS HIDDEN HEADS SEQ VOCAB BATCH MICRO WARMUP STEPS THREADS SEED LR
#       pp PP LAYERS HIDDEN HEADS SEQ VOCAB BATCH MICRO WARMUP STEPS THREADS SEED LR
#       check LAYERS HIDDEN HEADS SEQ VOCAB BATCH SEED (one process)
import json, math, os, sys

os.environ.setdefault("KINETO_LOG_LEVEL", "5")  # quiets the CUDA build's profiler "no GPU" error line
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

import train_peer

COMM_OPS = ("c10d::", "_c10d_functional::", "c10d_functional::", "comm::")
all_reduce = torch.profiler.record_function("comm::all_reduce")(dist.all_reduce)  # counted in comm_seconds


class CopyToGroup(torch.autograd.Function):  # identity forward, all-reduce backward (Megatron's "f")
    @staticmethod
    def forward(ctx, x, group):
        ctx.group = group
        return x

    @staticmethod
    def backward(ctx, g):
        g = g.contiguous()
        all_reduce(g, group=ctx.group)
        return g, None


class Attention(nn.Module):
    def __init__(self, hidden, heads):
        super().__init__()
        self.head_dim, self.group = hidden // heads, None
        self.q, self.kv = nn.Linear(hidden, hidden), nn.Linear(hidden, 2 * self.head_dim)
        self.c_proj = nn.Linear(hidden, hidden)

    def forward(self, x):
        b, t, _ = x.shape
        q = self.q(x).view(b, t, -1, self.head_dim).transpose(1, 2)  # this rank's heads under TP
        k, v = self.kv(x if self.group is None else CopyToGroup.apply(x, self.group)).split(self.head_dim, -1)
        k, v = (z.unsqueeze(1).expand(-1, q.shape[1], -1, -1) for z in (k, v))  # one shared k/v head
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.head_dim ** -0.5)
        return self.c_proj(y.transpose(1, 2).reshape(b, t, -1))


class Block(nn.Module):
    def __init__(self, hidden, heads):
        super().__init__()
        self.ln_1, self.attn, self.ln_2 = nn.LayerNorm(hidden, eps=1e-5), Attention(hidden, heads), nn.LayerNorm(hidden, eps=1e-5)
        self.mlp = nn.Sequential()
        self.mlp.c_fc, self.mlp.act, self.mlp.c_proj = nn.Linear(hidden, 4 * hidden), nn.GELU("tanh"), nn.Linear(4 * hidden, hidden)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """GPTBigCodeForCausalLM's math. A pipeline stage is a GPT with some parts set to None."""

    def __init__(self, layers, hidden, heads, seq, vocab):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, hidden), nn.Embedding(seq, hidden)
        self.h = nn.ModuleList(Block(hidden, heads) for _ in range(layers))
        self.ln_f, self.lm_head = nn.LayerNorm(hidden, eps=1e-5), nn.Linear(hidden, vocab, bias=False)
        self.lm_head.weight = self.wte.weight

    def forward(self, x):
        if self.wte is not None:
            x = self.wte(x) + self.wpe(torch.arange(x.shape[1]))
        for block in self.h:
            x = block(x)
        return x if self.lm_head is None else self.lm_head(self.ln_f(x))


def from_hf(named, hidden):
    """HF's tensors under this model's names, each fused c_attn split into q (first `hidden` rows) and kv."""
    out = {}
    for k, v in named:
        k = k.removeprefix("transformer.")
        if ".c_attn." in k:
            out[k.replace("c_attn", "q")], out[k.replace("c_attn", "kv")] = v[:hidden], v[hidden:]
        else:
            out[k] = v
    return out


def lm_loss(logits, target):
    """HF's ForCausalLMLoss: `target` is the ids shifted left with -100 last; mean over the rest."""
    return F.cross_entropy(logits.flatten(0, 1).float(), target.flatten(), ignore_index=-100)


def shifted(ids):
    return F.pad(ids[:, 1:], (0, 1), value=-100)


def adamw(params, lr):
    return torch.optim.AdamW(
        [{"params": [p for p in params if p.dim() >= 2], "weight_decay": 0.1},
         {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}],
        lr=lr, betas=(0.9, 0.95), eps=1e-8,
    )


def clip(sq_norm, grads, max_norm=1.0):
    """Scale `grads` by clip_grad_norm_'s coefficient for the whole-model squared norm `sq_norm`."""
    coef = min(max_norm / (math.sqrt(sq_norm) + 1e-6), 1.0)
    for g in grads:
        g.mul_(coef)


def setup(argv):
    layers, hidden, heads, seq, vocab, batch = map(int, argv[:6])
    micro, warmup, steps, threads, seed = map(int, argv[6:11])
    lr = float(argv[11])
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    hf, _, _ = train_peer.build(layers, hidden, heads, seq, vocab, lr)
    ids = torch.randint(vocab, (batch, seq), dtype=torch.int64)
    model = GPT(layers, hidden, heads, seq, vocab)
    model.load_state_dict(from_hf(hf.state_dict().items(), hidden))
    params = sum(p.numel() for p in model.parameters())
    return model, ids, params, (layers, seq, vocab, batch, micro, warmup, steps, lr)


def tp_step_fn(model, ids, micro, lr, world):
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import DTensor, Replicate, Shard
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, loss_parallel, parallelize_module

    mesh = init_device_mesh("cpu", (world,))
    plan = {"wte": RowwiseParallel(input_layouts=Replicate()),
            "lm_head": ColwiseParallel(output_layouts=Shard(-1), use_local_output=False)}
    for i in range(len(model.h)):
        plan.update({f"h.{i}.attn.q": ColwiseParallel(), f"h.{i}.attn.c_proj": RowwiseParallel(),
                     f"h.{i}.mlp.c_fc": ColwiseParallel(), f"h.{i}.mlp.c_proj": RowwiseParallel()})
        model.h[i].attn.group = mesh.get_group()
    parallelize_module(model, mesh, plan)
    model.lm_head.weight = model.wte.weight  # re-tie: both Shard(0) over the vocab
    params = list(model.parameters())
    opt = adamw(params, lr)
    kv = [p for b in model.h for p in b.attn.kv.parameters()]
    micros, target = ids.split(micro), shifted(ids).split(micro)

    def step():
        opt.zero_grad()
        total = 0.0
        for m, t in zip(micros, target):
            with loss_parallel():
                loss = lm_loss(model(m), t)
                (loss / len(micros)).backward()
            total += loss.item()
        flat = _flatten_dense_tensors([p.grad for p in kv])  # the replicated k/v head: partial grads
        all_reduce(flat)
        for p, g in zip(kv, _unflatten_dense_tensors(flat, [p.grad for p in kv])):
            p.grad.copy_(g)
        grads = [p.grad for p in params]
        dt = [g for g in grads if isinstance(g, DTensor)]
        sq = torch.nn.utils.get_total_norm(dt).full_tensor().item() ** 2 if dt else 0.0
        sq += sum(g.pow(2).sum().item() for g in grads if not isinstance(g, DTensor))
        clip(sq, grads)
        opt.step()
        return total / len(micros)

    return step, world  # every rank has the same loss


def pp_step_fn(model, ids, micro, lr, world, rank):
    from torch.distributed.pipelining import PipelineStage, Schedule1F1B, schedules

    if world != 2:
        sys.exit("sharded_peer.py: pp supports 2 stages")
    schedules._wait_batch_p2p = torch.profiler.record_function("comm::p2p_wait")(schedules._wait_batch_p2p)
    half = len(model.h) // 2
    if rank == 0:
        model.h, model.ln_f, model.lm_head = nn.ModuleList(list(model.h)[:half]), None, None
        tied = model.wte.weight
    else:
        model.lm_head.weight = nn.Parameter(model.wte.weight.detach().clone())  # the tied copy
        model.h, model.wte, model.wpe = nn.ModuleList(list(model.h)[half:]), None, None
        tied = model.lm_head.weight
    params = list(model.parameters())
    opt = adamw(params, lr)
    n = ids.shape[0] // micro
    schedule = Schedule1F1B(PipelineStage(model, rank, world, torch.device("cpu")), n, loss_fn=lm_loss)
    target = shifted(ids)

    def step():
        opt.zero_grad()
        losses = []
        if rank == 0:
            schedule.step(ids)
        else:
            schedule.step(target=target, losses=losses)
        all_reduce(tied.grad)  # embedding + head gradient of the tied weight, on both stages
        sq = sum(p.grad.pow(2).sum() for p in params if rank == 0 or p is not tied)  # tied counted once
        all_reduce(sq)
        clip(sq.item(), [p.grad for p in params])
        opt.step()
        return sum(x.item() for x in losses) / n if losses else 0.0

    return step, 1  # only the last stage's losses are non-zero


def check(argv):
    """One process: the compact model's loss and gradients against HF's on the same weights and batch."""
    layers, hidden, heads, seq, vocab, batch, seed = map(int, argv[:7])
    model, ids, params, _ = setup([layers, hidden, heads, seq, vocab, batch, batch, 0, 0, 1, seed, "1e-3"])
    torch.manual_seed(seed)
    hf, hf_params, _ = train_peer.build(layers, hidden, heads, seq, vocab, 1e-3)
    ref, loss = hf(input_ids=ids, labels=ids).loss, lm_loss(model(ids), shifted(ids))
    (ref + loss).backward()
    hf_grads = from_hf(((k, p.grad) for k, p in hf.named_parameters()), hidden)
    grad_diff = max((p.grad - hf_grads[k]).abs().max().item() for k, p in model.named_parameters())
    print(json.dumps({"bench": "check", "hf_loss": ref.item(), "loss": loss.item(), "params": params,
                      "hf_params": sum(p.numel() for p in hf_params), "max_grad_diff": grad_diff}))


def main():
    mode = sys.argv[1]
    if mode == "check":
        return check(sys.argv[2:])
    degree = int(sys.argv[2])
    world, rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))
    if mode not in ("tp", "pp") or world != degree or world < 2:
        sys.exit(f"sharded_peer.py: {mode} {degree} needs torchrun with WORLD_SIZE {degree} >= 2 (got {world})")
    dist.init_process_group("gloo")
    model, ids, params, (layers, seq, vocab, batch, micro, warmup, steps, lr) = setup(sys.argv[3:])
    step, loss_ranks = tp_step_fn(model, ids, micro, lr, world) if mode == "tp" else pp_step_fn(model, ids, micro, lr, world, rank)
    prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
    profile = os.environ.get("SHARDED_PEER_PROFILE", "1") != "0"
    losses, secs, cpu = train_peer.run_steps(step, warmup, steps, lambda: (dist.barrier(), profile and prof.start()))
    comm = 0.0
    if profile:
        prof.stop()
        ops = [e for e in prof.key_averages() if e.key.startswith(COMM_OPS)]
        if os.environ.get("SHARDED_PEER_OPS") and rank == 0:
            print({e.key: (e.count, e.self_cpu_time_total / 1e6, e.cpu_time_total / 1e6) for e in ops}, file=sys.stderr)
        comm = sum(e.self_cpu_time_total for e in ops) / 1e6
    n = len(losses)
    sums = torch.tensor(losses + [cpu, train_peer.peak_rss_mb()], dtype=torch.float64)
    dist.all_reduce(sums)  # losses: tp ranks all hold them (divide by world), pp only the last stage
    sums = sums.tolist()
    tokens = steps * batch * seq
    if rank == 0:
        print(json.dumps({
            "bench": mode, "side": "pytorch", "torch": torch.__version__, "transformers": train_peer.transformers.__version__,
            mode: world, "global_batch": batch, "micro_batch": micro, "threads": torch.get_num_threads(),
            "params": params, "tokens": tokens, "seconds": secs, "cpu_seconds": sums[n], "tokens_per_s": tokens / secs,
            "loss_first": sums[0] / loss_ranks, "loss_last": sums[n - 1] / loss_ranks, "ln_vocab": math.log(vocab),
            "peak_rss_mb": sums[n + 1], "comm_seconds": comm, "comm_share": comm / secs,
        }, separators=(",", ":")))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
