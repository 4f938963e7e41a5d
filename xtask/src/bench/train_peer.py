# The Python peer of `cargo xtask bench --only train`: transformers' GPTBigCodeForCausalLM (random
# init from a GPTBigCodeConfig, no weights downloaded) trained in eager PyTorch, the same step as
# aurora's `train_bench` example: forward + LM loss (labels = inputs, shifted inside) + backward
# + global grad-norm clip to 1.0 + torch.optim.AdamW (weight decay on matrices and embeddings
# only), fp32 on CPU, dropout 0. `warmup` untimed steps, then `steps` timed ones. Prints one
# JSON line. `build` is also the model of dist_peer.py.
#
# argv: layers hidden heads seq vocab batch warmup steps threads seed lr [compile]
# With `compile`, the model is torch.compile'd (inductor, compiled C++ on CPU) before the warmup
# steps, which then include the compilation.
import json, math, resource, sys, time

import torch
import transformers
from transformers import GPTBigCodeConfig, GPTBigCodeForCausalLM


def build(layers, hidden, heads, seq, vocab, lr):
    """The model (random init under the current torch seed), its trainable parameters and AdamW."""
    config = GPTBigCodeConfig(
        vocab_size=vocab, n_positions=seq, n_embd=hidden, n_layer=layers, n_head=heads, n_inner=4 * hidden,
        activation_function="gelu_pytorch_tanh", resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        layer_norm_epsilon=1e-5, initializer_range=0.02, scale_attn_weights=True, use_cache=False,
        attention_softmax_in_fp32=True, scale_attention_softmax_in_fp32=True, multi_query=True,
        tie_word_embeddings=True, bos_token_id=0, eos_token_id=0,
    )
    # SDPA: transformers' default attention for this model, and what aurora's model calls.
    model = GPTBigCodeForCausalLM._from_config(config, attn_implementation="sdpa", dtype=torch.float32)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    # Matrices and embeddings decay; biases and LayerNorm parameters (1-d) do not, as in aurora.
    opt = torch.optim.AdamW(
        [{"params": [p for p in params if p.dim() >= 2], "weight_decay": 0.1},
         {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}],
        lr=lr, betas=(0.9, 0.95), eps=1e-8,
    )
    return model, params, opt


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_steps(step, warmup, steps, before_timing=lambda: None):
    """`warmup` untimed steps, then `steps` timed ones: (losses, wall seconds, CPU seconds)."""
    losses = [step() for _ in range(warmup)]
    before_timing()
    start = time.perf_counter()
    cpu_start = time.process_time()
    for _ in range(steps):
        losses.append(step())
    return losses, time.perf_counter() - start, time.process_time() - cpu_start


def main():
    layers, hidden, heads, seq, vocab, batch, warmup, steps, threads, seed = map(int, sys.argv[1:11])
    lr = float(sys.argv[11])
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    model, params, opt = build(layers, hidden, heads, seq, vocab, lr)
    compiled = len(sys.argv) > 12 and sys.argv[12] == "compile"
    if compiled:
        model = torch.compile(model)
    # One fixed batch of random ids (the model memorises it: the loss must fall).
    ids = torch.randint(vocab, (batch, seq), dtype=torch.int64)

    def step():
        out = model(input_ids=ids, labels=ids)
        opt.zero_grad()
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        return out.loss.item()

    losses, secs, cpu = run_steps(step, warmup, steps)
    tokens = steps * batch * seq
    print(json.dumps({
        "bench": "train", "side": "pytorch-compile" if compiled else "pytorch", "torch": torch.__version__, "transformers": transformers.__version__,
        "attn": model.config._attn_implementation, "threads": torch.get_num_threads(),
        "params": sum(p.numel() for p in params), "tokens": tokens, "seconds": secs, "cpu_seconds": cpu,
        "tokens_per_s": tokens / secs, "loss_first": losses[0], "loss_last": losses[-1], "ln_vocab": math.log(vocab),
        "peak_rss_mb": peak_rss_mb(),
    }, separators=(",", ":")))


if __name__ == "__main__":
    main()
