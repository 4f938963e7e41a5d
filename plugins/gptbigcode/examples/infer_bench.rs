//! Inference throughput of a small GPTBigCode on this machine, as one JSON line on stdout:
//! scoring (teacher-forced windows) tokens/s, and greedy generation tokens/s with and without
//! the KV cache, at batch 1 and 8.
//!
//! `infer_bench [NEW_TOKENS] [TOKENIZER.json]`: NEW_TOKENS defaults to 256; without a tokenizer
//! the byte-level one (257 tokens) is used. The model (4 layers, n_embd 256, 8 heads,
//! n_positions 512, untied LM head) is seeded, untrained: speed does not depend on the weights'
//! values. EOS is an extra id whose LM-head row is zero, so its logit (0) is never the greedy
//! choice over a random model's hundreds of others and every row generates NEW_TOKENS tokens
//! (the Python peer, infer_peer.py in xtask, does the same).

use std::path::Path;
use std::time::Instant;

use aurora_gptbigcode::GptBigCodeConfig;
use aurora_gptbigcode::hf::Loaded;
use aurora_gptbigcode::infer::{self, GenerationRow, Session, Window, generate, score_windows};
use aurora_gptbigcode::model::GptBigCode;
use aurora_torch::tch::{self, Device, nn};
use aurora_worker_api::Sampling;

const PROMPT: &str = "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n    if n < 2:\n";

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let new_tokens: u64 = args.get(1).map_or(256, |a| a.parse().expect("NEW_TOKENS: a number"));
    let (tokenizer, tokenizer_name) = match args.get(2) {
        Some(path) => (infer::load_tokenizer_file(Path::new(path)).expect("a tokenizer.json"), path.clone()),
        None => (infer::byte_tokenizer(), "bytes".to_owned()),
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()) as i32;
    aurora_torch::set_deterministic(threads);

    let vocab = tokenizer.get_vocab_size(true) as i64;
    let config = GptBigCodeConfig {
        eos_token_id: vocab,
        bos_token_id: 0,
        tie_word_embeddings: false,
        ..GptBigCodeConfig::tiny(4, 256, 8, vocab + 1, 512)
    };
    let vs = nn::VarStore::new(Device::Cpu);
    let model = GptBigCode::seeded(&vs.root(), &config, 0).expect("a valid config");
    let _ = tch::no_grad(|| vs.variables()["lm_head.weight"].get(vocab).zero_());
    let session = Session::new(Loaded { config: config.clone(), vs, model }, tokenizer, Path::new(&tokenizer_name))
        .expect("tokenizer fits");

    let prompt = session.encode(PROMPT).expect("encodable");
    let greedy = Sampling { temperature: 0.0, top_p: 1.0, max_new_tokens: new_tokens, stop: vec![] };
    let mut fields = vec![
        ("vocab_size".to_owned(), config.vocab_size as f64),
        ("prompt_tokens".to_owned(), prompt.len() as f64),
        ("new_tokens".to_owned(), new_tokens as f64),
        ("threads".to_owned(), f64::from(threads)),
    ];

    // Scoring: 8 windows of 512 tokens (the model reads 511), batch 8.
    let text = PROMPT.repeat(64);
    let tokens = session.encode(&text).expect("encodable");
    let windows: Vec<Window> =
        (0..8).map(|i| Window { tokens: tokens[i * 16..i * 16 + 512].to_vec(), first_target: 1 }).collect();
    score_windows(&session, &windows[..1], 1).expect("warm-up");
    let started = Instant::now();
    score_windows(&session, &windows, 8).expect("scoring");
    fields.push(("scoring_tokens_per_s".into(), (8 * 511) as f64 / started.elapsed().as_secs_f64()));

    for batch in [1usize, 8] {
        let rows: Vec<GenerationRow> =
            (0..batch).map(|i| GenerationRow { prompt: prompt.clone(), seed: i as u64 }).collect();
        let mut outputs = Vec::new();
        for kv_cache in [true, false] {
            let started = Instant::now();
            let generated = generate(&session, &rows, &greedy, kv_cache).expect("generation");
            let seconds = started.elapsed().as_secs_f64();
            let count: usize = generated.iter().map(|g| g.tokens.len()).sum();
            assert_eq!(count, batch * new_tokens as usize, "every row generates NEW_TOKENS tokens");
            let name = if kv_cache { "cached" } else { "uncached" };
            eprintln!("infer_bench: batch {batch} {name}: {count} tokens in {seconds:.2} s");
            fields.push((format!("generate_b{batch}_{name}_tokens_per_s"), count as f64 / seconds));
            outputs.push(generated);
        }
        let same = outputs[0].iter().zip(&outputs[1]).filter(|(a, b)| a.tokens == b.tokens).count();
        fields.push((format!("generate_b{batch}_rows_identical_with_and_without_cache"), same as f64));
    }
    let body: Vec<String> = fields.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
    println!("{{\"bench\":\"infer\",\"tokenizer\":{:?},{}}}", tokenizer_name, body.join(","));
}
