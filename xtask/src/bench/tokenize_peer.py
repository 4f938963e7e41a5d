# The Python peer of `cargo xtask bench --only tokenize`: Hugging Face `tokenizers` (the PyPI
# package, Rust inside, parallel over a batch) encodes documents.jsonl into token ids written as
# numpy arrays (uint16 ids with the EOD after each document, int32 lengths, uint64 text bytes),
# the same work as aurora's token store. Prints one JSON line.
import json, os, resource, sys, time

import numpy as np
from tokenizers import Tokenizer

docs_dir, tokenizer_json, out_dir, batch_docs = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
tok = Tokenizer.from_file(tokenizer_json)
eod = tok.token_to_id("<|endoftext|>")
assert eod is not None and tok.get_vocab_size() < 65500
# The fastest batch call (no offsets, as aurora's `encode_fast`) where the package has it.
encode = getattr(tok, "encode_batch_fast", None) or tok.encode_batch

start = time.perf_counter()
cpu_start = time.process_time()
tokens = documents = text_bytes = 0
with open(os.path.join(docs_dir, "documents.jsonl"), encoding="utf-8") as f, \
        open(os.path.join(out_dir, "tokens.bin"), "wb") as ids_out, \
        open(os.path.join(out_dir, "tokens.lengths"), "wb") as lengths_out, \
        open(os.path.join(out_dir, "tokens.bytes"), "wb") as bytes_out:
    def flush(texts):
        global tokens, documents, text_bytes
        if not texts:
            return
        encs = encode(texts, add_special_tokens=False)
        arrays = []
        for e in encs:
            arrays.append(np.asarray(e.ids, dtype=np.uint16))
            arrays.append(np.array([eod], dtype=np.uint16))
        flat = np.concatenate(arrays)
        flat.tofile(ids_out)
        lengths = np.fromiter((len(e.ids) + 1 for e in encs), dtype=np.int32, count=len(encs))
        lengths.tofile(lengths_out)
        nbytes = np.fromiter((len(t.encode("utf-8")) for t in texts), dtype=np.uint64, count=len(texts))
        nbytes.tofile(bytes_out)
        tokens += int(flat.size)
        documents += len(texts)
        text_bytes += int(nbytes.sum())

    batch = []
    for line in f:
        batch.append(json.loads(line)["text"])
        if len(batch) >= batch_docs:
            flush(batch)
            batch = []
    flush(batch)
secs = time.perf_counter() - start
cpu = time.process_time() - cpu_start
print(json.dumps({
    "bench": "tokenize", "bytes": text_bytes, "documents": documents, "tokens": tokens, "seconds": secs,
    "cpu_seconds": cpu, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
    "call": encode.__name__,
}))
