# The Python peer of `cargo xtask bench --only infer`: transformers' GPTBigCodeForCausalLM (random
# init from a GPTBigCodeConfig, no weights downloaded) in eager PyTorch, the same model and work as
# aurora's `infer_bench` example: 4 layers, hidden 256, 8 heads (multi-query), n_positions 512,
# byte-level vocabulary (257 ids, byte b = id b + 1) plus an EOS id whose untied LM-head row is
# zero; scoring 8 windows of 511 tokens in one batch; greedy generation of NEW_TOKENS tokens from
# the same prompt with and without the KV cache (`use_cache`), at batch 1 and 8. Prints one JSON
# line with the same keys as the example.
#
# argv: new_tokens threads
import json, sys, time

import torch
import transformers
from transformers import GPTBigCodeConfig, GPTBigCodeForCausalLM

PROMPT = 'def fibonacci(n):\n    """Return the n-th Fibonacci number."""\n    if n < 2:\n'
new_tokens, threads = map(int, sys.argv[1:3])
torch.set_num_threads(threads)
torch.manual_seed(0)
vocab = 257
config = GPTBigCodeConfig(
    vocab_size=vocab + 1, n_positions=512, n_embd=256, n_layer=4, n_head=8, n_inner=1024,
    activation_function="gelu_pytorch_tanh", resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
    layer_norm_epsilon=1e-5, initializer_range=0.02, scale_attn_weights=True, use_cache=True,
    multi_query=True, tie_word_embeddings=False, bos_token_id=0, eos_token_id=vocab, pad_token_id=0,
)
model = GPTBigCodeForCausalLM._from_config(config, attn_implementation="sdpa", dtype=torch.float32).eval()
with torch.no_grad():
    model.lm_head.weight[vocab].zero_()


def encode(text):
    return [b + 1 for b in text.encode()]


prompt = encode(PROMPT)
fields = {"bench": "infer", "side": "pytorch", "torch": torch.__version__, "transformers": transformers.__version__,
          "tokenizer": "bytes", "vocab_size": vocab + 1, "prompt_tokens": len(prompt), "new_tokens": new_tokens,
          "threads": torch.get_num_threads()}
text = encode(PROMPT * 64)
windows = torch.tensor([text[i * 16:i * 16 + 511] for i in range(8)])
with torch.inference_mode():
    model(windows[:1])
    start = time.perf_counter()
    model(windows)
    fields["scoring_tokens_per_s"] = 8 * 511 / (time.perf_counter() - start)
    for batch in (1, 8):
        ids = torch.tensor([prompt] * batch)
        outputs = []
        for cache in (True, False):
            start = time.perf_counter()
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                                 min_new_tokens=new_tokens, do_sample=False, use_cache=cache, pad_token_id=0)
            secs = time.perf_counter() - start
            generated = out[:, ids.shape[1]:]
            assert generated.numel() == batch * new_tokens, generated.shape
            name = "cached" if cache else "uncached"
            print(f"infer_peer: batch {batch} {name}: {generated.numel()} tokens in {secs:.2f} s", file=sys.stderr)
            fields[f"generate_b{batch}_{name}_tokens_per_s"] = generated.numel() / secs
            outputs.append(generated)
        same = sum(bool(torch.equal(a, b)) for a, b in zip(outputs[0], outputs[1]))
        fields[f"generate_b{batch}_rows_identical_with_and_without_cache"] = same
print(json.dumps(fields, separators=(",", ":")))
