//! Text generation: batched, left-padded, with or without the KV cache.

use std::time::Instant;

use aurora_torch::tch::{Device, Kind, Tensor};
use aurora_worker_api::{Event, GenerateJob, GenerateRequest, GenerateResult, Sampling};
use serde_json::{Map, Value};

use super::sample::{SplitMix64, choose_token, row_seed};
use super::{InferError, Session, chunk_size, read_jsonl, write_jsonl};
use crate::model::{KvCache, Logits};

/// One completion to draw: its prompt's token ids (at least one, fitting the context with
/// `max_new_tokens`) and its sampling seed.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationRow {
    pub prompt: Vec<i64>,
    pub seed: u64,
}

/// A finished completion.
#[derive(Debug, Clone, PartialEq)]
pub struct Generated {
    /// The text, EOS dropped and cut before the first stop sequence.
    pub text: String,
    /// Every token generated (the EOS and the tokens that completed a stop sequence included).
    pub tokens: Vec<i64>,
}

/// Per-row decoding state.
struct Row {
    rng: SplitMix64,
    tokens: Vec<i64>,
    text: Option<String>,
}

impl Row {
    fn finished(&self) -> bool {
        self.text.is_some()
    }
}

/// Generates one completion per row, all rows as one batch. With `kv_cache` the prompt is run
/// once and each step feeds only the new token; without it each step recomputes the whole
/// sequence (same results up to rounding; for benchmarks and the equivalence test).
pub fn generate(
    session: &Session,
    rows: &[GenerationRow],
    sampling: &Sampling,
    kv_cache: bool,
) -> Result<Vec<Generated>, InferError> {
    let model = session.model();
    let n = rows.len() as i64;
    let max_new = sampling.max_new_tokens as i64;
    let longest = rows.iter().map(|r| r.prompt.len() as i64).max().unwrap_or(0);
    if rows.is_empty() || max_new == 0 {
        return Ok(rows.iter().map(|_| Generated { text: String::new(), tokens: vec![] }).collect());
    }
    let capacity = longest + max_new;
    // Left padding: every row's last prompt token is in the last column.
    let mut ids = vec![session.eos(); (n * longest) as usize];
    let mut valid = vec![false; (n * longest) as usize];
    let mut positions = vec![0i64; (n * longest) as usize];
    for (r, row) in rows.iter().enumerate() {
        assert!(!row.prompt.is_empty(), "generate: row {r} has an empty prompt");
        let pad = (longest as usize) - row.prompt.len();
        let at = r * longest as usize;
        for (i, &id) in row.prompt.iter().enumerate() {
            ids[at + pad + i] = id;
            valid[at + pad + i] = true;
            positions[at + pad + i] = i as i64;
        }
    }
    let tensor_2d = |v: &[i64], cols: i64| Tensor::from_slice(v).view([n, cols]).to_device(session.device);
    let mut ids = tensor_2d(&ids, longest);
    let mut positions = tensor_2d(&positions, longest);
    let mut valid = Tensor::from_slice(&valid).view([n, longest]).to_device(session.device);
    let mut cache = KvCache::new(model, n, if kv_cache { capacity } else { longest })?;
    let mut logits = model.forward_cached(&ids, &positions, &valid, &mut cache, Logits::Last)?;

    let mut state: Vec<Row> =
        rows.iter().map(|r| Row { rng: SplitMix64::new(r.seed), tokens: Vec::new(), text: None }).collect();
    let vocab = session.loaded.config.vocab_size as usize;
    for step in 0..max_new {
        let last: Vec<f32> =
            Vec::try_from(logits.select(1, -1).to_kind(Kind::Float).to_device(Device::Cpu).reshape([-1]))?;
        for (r, row) in state.iter_mut().enumerate().filter(|(_, row)| !row.finished()) {
            let token = choose_token(&last[r * vocab..(r + 1) * vocab], sampling, &mut row.rng) as i64;
            row.tokens.push(token);
            if token == session.eos() {
                row.text = Some(text_of(session, &row.tokens[..row.tokens.len() - 1])?);
            } else if !sampling.stop.is_empty() {
                let text = text_of(session, &row.tokens)?;
                if let Some(cut) = sampling.stop.iter().filter_map(|s| text.find(s.as_str())).min() {
                    row.text = Some(text[..cut].to_owned());
                }
            }
        }
        if step + 1 == max_new || state.iter().all(Row::finished) {
            break;
        }
        // Finished rows keep feeding EOS, marked as padding; their outputs are ignored.
        let next: Vec<i64> = state
            .iter()
            .map(|row| if row.finished() { session.eos() } else { row.tokens[row.tokens.len() - 1] })
            .collect();
        let live: Vec<bool> = state.iter().map(|row| !row.finished()).collect();
        let next_positions: Vec<i64> = rows.iter().map(|r| r.prompt.len() as i64 + step).collect();
        let next = tensor_2d(&next, 1);
        let next_positions = tensor_2d(&next_positions, 1);
        let live = Tensor::from_slice(&live).view([n, 1]).to_device(session.device);
        logits = if kv_cache {
            model.forward_cached(&next, &next_positions, &live, &mut cache, Logits::Last)?
        } else {
            ids = Tensor::cat(&[&ids, &next], 1);
            positions = Tensor::cat(&[&positions, &next_positions], 1);
            valid = Tensor::cat(&[&valid, &live], 1);
            let mut fresh = KvCache::new(model, n, ids.size()[1])?;
            model.forward_cached(&ids, &positions, &valid, &mut fresh, Logits::Last)?
        };
    }
    state
        .into_iter()
        .map(|row| {
            let text = match row.text {
                Some(text) => text,
                None => text_of(session, &row.tokens)?,
            };
            Ok(Generated { text, tokens: row.tokens })
        })
        .collect()
}

fn text_of(session: &Session, tokens: &[i64]) -> Result<String, InferError> {
    session.decode(tokens).map_err(|message| InferError::Decode { tokens: tokens.len(), message })
}

const REQUEST_FIELDS: &str = r#"{"prompt": string, "n": number of completions}"#;

/// Runs a [`GenerateJob`]: `n` completions per request, seeded by [`row_seed`]`(job.seed,
/// request index, completion index)`, written to `out_dir/generations.jsonl`.
pub fn run_generate(job: &GenerateJob, events: &mut dyn FnMut(Event)) -> Result<Map<String, Value>, InferError> {
    let bad_job = |message: String| InferError::Job { node: job.node.clone(), message };
    let s = &job.sampling;
    if !(s.temperature >= 0.0 && s.temperature.is_finite()) {
        return Err(bad_job(format!("sampling.temperature must be >= 0 (0 = greedy), got {}", s.temperature)));
    }
    if !(s.top_p > 0.0 && s.top_p <= 1.0) {
        return Err(bad_job(format!("sampling.top_p must be in (0, 1], got {}", s.top_p)));
    }
    let batch = chunk_size(&job.node, job.batch_size)?;
    let requests: Vec<(usize, GenerateRequest)> = read_jsonl(&job.requests, REQUEST_FIELDS)?;
    let session = Session::load(&job.node, &job.model)?;
    let room = session.n_positions() - s.max_new_tokens as i64;
    if room < 1 {
        return Err(bad_job(format!(
            "sampling.max_new_tokens ({}) leaves no room for a prompt in the model's context (n_positions {}): \
             lower it below n_positions",
            s.max_new_tokens,
            session.n_positions()
        )));
    }
    let mut rows = Vec::new();
    let mut truncated = Vec::new();
    for (index, (line, request)) in requests.iter().enumerate() {
        let mut prompt = session.encode(&request.prompt).map_err(|message| InferError::Tokenize {
            path: job.requests.clone(),
            line: *line,
            field: "prompt",
            message,
        })?;
        let dropped = prompt.len().saturating_sub(room as usize);
        prompt.drain(..dropped);
        if prompt.is_empty() {
            // An empty prompt is conditioned on the beginning-of-text token.
            prompt.push(session.loaded.config.bos_token_id);
        }
        truncated.push(dropped as u64);
        for completion in 0..request.n {
            rows.push(GenerationRow { prompt: prompt.clone(), seed: row_seed(job.seed, index as u64, completion) });
        }
    }
    let started = Instant::now();
    let mut generated = Vec::with_capacity(rows.len());
    for chunk in rows.chunks(batch) {
        generated.extend(generate(&session, chunk, s, job.kv_cache)?);
        let tokens: usize = generated.iter().map(|g: &Generated| g.tokens.len()).sum();
        events(Event::Progress {
            done: generated.len() as u64,
            total: rows.len() as u64,
            message: format!("{tokens} tokens, {:.1} tok/s", tokens as f64 / started.elapsed().as_secs_f64()),
        });
    }
    let seconds = started.elapsed().as_secs_f64();
    let mut completions = generated.into_iter();
    let results: Vec<GenerateResult> = requests
        .iter()
        .zip(&truncated)
        .map(|((_, request), &truncated)| {
            let mine: Vec<Generated> = completions.by_ref().take(request.n as usize).collect();
            GenerateResult {
                tokens: mine.iter().map(|g| g.tokens.len() as u64).collect(),
                completions: mine.into_iter().map(|g| g.text).collect(),
                truncated,
            }
        })
        .collect();
    write_jsonl(&job.out_dir, "generations.jsonl", &results)?;
    let tokens: u64 = results.iter().flat_map(|r| &r.tokens).sum();
    let mut metrics = Map::new();
    metrics.insert("requests".into(), results.len().into());
    metrics.insert("completions".into(), rows.len().into());
    metrics.insert("generated_tokens".into(), tokens.into());
    metrics.insert("truncated_prompts".into(), truncated.iter().filter(|&&t| t > 0).count().into());
    metrics.insert("seconds".into(), seconds.into());
    metrics.insert("generated_tokens_per_s".into(), (tokens as f64 / seconds.max(1e-9)).into());
    Ok(metrics)
}
