//! Measurements for the data pipeline (a later `cargo xtask bench` drives this binary):
//!
//! ```text
//! cargo run --release -p aurora-tokens --example tokens_bench -- blend [SAMPLES]      # default 1e8
//! cargo run --release -p aurora-tokens --example tokens_bench -- tokenize [MB] [TOKENIZER_JSON] [FLORES_DIR]
//! cargo run --release -p aurora-tokens --example tokens_bench -- tokenize-docs DOCS_DIR TOKENIZER_JSON OUT_DIR
//! ```
//!
//! `blend` builds the blend index (`blend.idx`, 10 bytes per sample) for five sources with the
//! CAP-like weights 0.4/0.2/0.15/0.15/0.1 and reopens it through the reader's validation.
//! `tokenize` repeats the five FLORES devtest files (one document per line) into a documents
//! artifact of at least MB megabytes (default 200) and encodes it with GPT-2 through the token
//! store (`tokens.bin/.idx/.bytes`), printing MB/s, tokens/s and peak memory (VmHWM).
//! `tokenize-docs` encodes an existing documents artifact (`DOCS_DIR/documents.jsonl` and
//! `source.json`, e.g. the corpus `cargo xtask bench` writes once for us and the Python peer) into
//! a token store in OUT_DIR. All print one JSON line at the end.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use aurora_tokens::documents::{DocumentReader, SourceInfo};
use aurora_tokens::mixture::write_blend;
use aurora_tokens::store::{EncodeInput, encode_documents};

use aurora_tokens::tokenizer::describe;

// The allocator of the `aurora` binary, which runs the tokenizing nodes (src/main.rs).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).map(|l| l.to_string()))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|k| k.parse::<f64>().ok()))
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// CPU seconds (user + system) of this process so far: less sensitive than wall time to other
/// work on a shared 2-core machine.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(") ").map_or("", |(_, r)| r);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(f64::NAN);
    // utime and stime are fields 14 and 15 of /proc/PID/stat (11 and 12 after the command name).
    (ticks(11) + ticks(12)) / 100.0
}

fn shared() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/data"))
}

fn blend(samples: u64) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("blend.idx");
    let shares = [0.4, 0.2, 0.15, 0.15, 0.1];
    let start = Instant::now();
    let counts = write_blend(&path, &shares, samples, &|_, _| {}).expect("blend");
    let secs = start.elapsed().as_secs_f64();
    let size = std::fs::metadata(&path).expect("written").len();
    println!(
        "blend index: {samples} samples, 5 sources, {size} bytes in {secs:.2} s ({:.1} M samples/s)",
        samples as f64 / secs / 1e6
    );
    println!("counts per source: {counts:?}");
    println!(
        "{}",
        serde_json::json!({ "bench": "blend", "samples": samples, "seconds": secs, "bytes": size, "peak_rss_mb": peak_rss_mb() })
    );
}

fn tokenize(mb: u64, tokenizer: &Path, flores: &Path) {
    let dir = tempfile::tempdir().expect("temp dir");
    let docs = dir.path().join("docs");
    std::fs::create_dir_all(&docs).expect("dir");
    let mut lines = Vec::new();
    for lang in ["eng_Latn", "fin_Latn", "hin_Deva", "jpn_Jpan", "vie_Latn"] {
        let text = std::fs::read_to_string(flores.join(format!("{lang}.devtest")))
            .unwrap_or_else(|e| panic!("{}: {e}", flores.display()));
        lines.extend(text.lines().map(|l| serde_json::to_string(&serde_json::json!({ "text": l })).expect("json")));
    }
    let target = mb * 1_000_000;
    let (mut bytes, mut documents) = (0u64, 0u64);
    {
        let mut out = std::io::BufWriter::new(std::fs::File::create(docs.join("documents.jsonl")).expect("create"));
        while bytes < target {
            for l in &lines {
                let text: serde_json::Value = serde_json::from_str(l).expect("json");
                bytes += text["text"].as_str().expect("text").len() as u64;
                documents += 1;
                writeln!(out, "{l}").expect("write");
            }
        }
    }
    let info = serde_json::json!({ "lang": "mul", "documents": documents, "bytes": bytes });
    std::fs::write(docs.join("source.json"), info.to_string()).expect("write");

    let out = dir.path().join("store");
    std::fs::create_dir_all(&out).expect("dir");
    encode(&docs, tokenizer, &out);
}

/// Encodes the documents artifact `docs` into a token store in `out` and prints the figures.
fn encode(docs: &Path, tokenizer: &Path, out: &Path) {
    let source = SourceInfo::read(docs).expect("source.json");
    let (bytes, documents) = (source.bytes, source.documents);
    let mut tok = tokenizers::Tokenizer::from_file(tokenizer).expect("tokenizer");
    if std::env::var_os("NO_TUNE").is_none() {
        aurora_tokens::store::tune_for_bulk_encoding(&mut tok);
    }
    let meta = describe(&tok, "<|endoftext|>", "gpt2").expect("meta");
    let origin = docs.join("documents.jsonl");
    let input = EncodeInput { tokenizer: &tok, meta: &meta, source: &source, drop: &[], origin: &origin };
    let rss_before = peak_rss_mb();
    let start = Instant::now();
    let cpu_start = cpu_seconds();
    let stored = encode_documents(&input, DocumentReader::open(docs).expect("open"), out, |_| {}).expect("encode");
    let secs = start.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu_start;
    assert_eq!(stored.bytes, Some(bytes), "source.json's bytes differ from the documents' text bytes");
    assert_eq!(stored.documents, documents, "source.json's documents differ from documents.jsonl's lines");
    println!(
        "tokenize: {:.1} MB of text ({documents} documents) -> {} tokens in {secs:.2} s: {:.2} MB/s, {:.2} M tokens/s; \
         threads {}; {cpu:.2} CPU s ({:.2} MB per CPU s); peak RSS {:.0} MB (before encoding {rss_before:.0} MB)",
        bytes as f64 / 1e6,
        stored.tokens,
        bytes as f64 / 1e6 / secs,
        stored.tokens as f64 / 1e6 / secs,
        rayon::current_num_threads(),
        bytes as f64 / 1e6 / cpu,
        peak_rss_mb()
    );
    println!(
        "{}",
        serde_json::json!({
            "bench": "tokenize", "bytes": bytes, "documents": documents, "tokens": stored.tokens, "seconds": secs,
            "mb_per_s": bytes as f64 / 1e6 / secs, "tokens_per_s": stored.tokens as f64 / secs,
            "threads": rayon::current_num_threads(), "cpu_seconds": cpu, "peak_rss_mb": peak_rss_mb(),
        })
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("blend") => blend(args.get(1).map_or(100_000_000, |s| s.parse().expect("SAMPLES"))),
        Some("tokenize") => {
            let mb = args.get(1).map_or(200, |s| s.parse().expect("MB"));
            let tok = args.get(2).map_or_else(|| shared().join("tokenizer/gpt2_tokenizer.json"), PathBuf::from);
            let flores = args.get(3).map_or_else(|| shared().join("flores200"), PathBuf::from);
            tokenize(mb, &tok, &flores)
        }
        Some("tokenize-docs") if args.len() == 4 => {
            encode(Path::new(&args[1]), Path::new(&args[2]), Path::new(&args[3]))
        }
        _ => {
            eprintln!(
                "usage: tokens_bench blend [SAMPLES] | tokenize [MB] [TOKENIZER_JSON] [FLORES_DIR] \
                 | tokenize-docs DOCS_DIR TOKENIZER_JSON OUT_DIR"
            );
            std::process::exit(2);
        }
    }
}
