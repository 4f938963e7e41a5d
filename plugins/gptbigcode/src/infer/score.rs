//! Scoring token windows: log-likelihood of continuations and document perplexity.

use std::time::Instant;

use aurora_torch::tch::{Device, Kind, Tensor};
use aurora_worker_api::{Event, LoglikJob, LoglikRequest, LoglikResult, PerplexityJob, PerplexityResult};
use serde_json::{Map, Value};

use super::{InferError, Session, chunk_size, read_jsonl, write_jsonl};

/// Tokens fed to the model with the ones to score: the model reads `tokens[..len - 1]` and
/// `tokens[first_target..]` are scored, each from the logits of the position before it.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    pub tokens: Vec<i64>,
    /// At least 1, below `tokens.len()`.
    pub first_target: usize,
}

/// One scored token.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScoredToken {
    /// Natural-log probability of the token.
    pub logprob: f64,
    /// Whether it is the model's most probable next token (first maximum).
    pub greedy: bool,
}

/// Scores `windows` in batches of `batch` (right-padded: causal attention keeps padding out
/// of every real position). Windows read at most `n_positions` tokens.
pub fn score_windows(session: &Session, windows: &[Window], batch: usize) -> Result<Vec<Vec<ScoredToken>>, InferError> {
    let mut scored = Vec::with_capacity(windows.len());
    for chunk in windows.chunks(batch.max(1)) {
        let width = chunk.iter().map(|w| w.tokens.len() - 1).max().unwrap_or(0);
        let mut inputs = vec![0i64; chunk.len() * width];
        let mut targets = vec![0i64; chunk.len() * width];
        for (r, w) in chunk.iter().enumerate() {
            assert!(w.first_target >= 1 && w.first_target < w.tokens.len(), "window scores nothing: {w:?}");
            let n = w.tokens.len() - 1;
            inputs[r * width..r * width + n].copy_from_slice(&w.tokens[..n]);
            targets[r * width..r * width + n].copy_from_slice(&w.tokens[1..]);
        }
        let shape = [chunk.len() as i64, width as i64];
        let inputs = Tensor::from_slice(&inputs).view(shape).to_device(session.device);
        let targets = Tensor::from_slice(&targets).view(shape).to_device(session.device);
        let logits = aurora_torch::tch::no_grad(|| session.model().forward(&inputs))?.to_kind(Kind::Float);
        // log p(target) = logit(target) - logsumexp(logits), without a [batch, seq, vocab] copy.
        let logprobs = logits.gather(2, &targets.unsqueeze(-1), false).squeeze_dim(-1) - logits.logsumexp([-1], false);
        let greedy = logits.argmax(-1, false).eq_tensor(&targets);
        let logprobs: Vec<f32> = Vec::try_from(logprobs.to_device(Device::Cpu).reshape([-1]))?;
        let greedy: Vec<bool> = Vec::try_from(greedy.to_device(Device::Cpu).reshape([-1]))?;
        for (r, w) in chunk.iter().enumerate() {
            let row = r * width;
            scored.push(
                (w.first_target - 1..w.tokens.len() - 1)
                    .map(|p| ScoredToken { logprob: f64::from(logprobs[row + p]), greedy: greedy[row + p] })
                    .collect(),
            );
        }
    }
    Ok(scored)
}

/// The windows scoring every token of `tokens` after the first exactly once: windows of up to
/// `n_positions + 1` tokens (the model reads `n_positions`), starting every `stride` tokens,
/// each scoring the tokens after the previous window's end (so every scored token has at least
/// `n_positions - stride` tokens of context, once past the first window).
pub fn perplexity_windows(tokens: &[i64], n_positions: usize, stride: usize) -> Vec<Window> {
    assert!(stride >= 1 && stride <= n_positions, "stride must be in 1..=n_positions");
    let mut windows = Vec::new();
    let (mut begin, mut scored_to) = (0, 1);
    while scored_to < tokens.len() {
        let end = (begin + n_positions + 1).min(tokens.len());
        windows.push(Window { tokens: tokens[begin..end].to_vec(), first_target: scored_to - begin });
        scored_to = end;
        begin += stride;
    }
    windows
}

const LOGLIK_FIELDS: &str = r#"{"context": string, "continuation": string}"#;
const DOCUMENT_FIELDS: &str = r#"{"text": string}"#;

/// Runs a [`LoglikJob`]. Context and continuation are tokenized separately, trailing
/// whitespace of the context moved to the continuation (as lm-evaluation-harness does); an
/// empty context is the beginning-of-text token. The context is left-truncated so the model
/// reads at most `n_positions` tokens.
pub fn run_loglik(job: &LoglikJob, events: &mut dyn FnMut(Event)) -> Result<Map<String, Value>, InferError> {
    let batch = chunk_size(&job.node, job.batch_size)?;
    let requests: Vec<(usize, LoglikRequest)> = read_jsonl(&job.requests, LOGLIK_FIELDS)?;
    let session = Session::load(&job.node, &job.model)?;
    let limit = session.n_positions() as usize + 1;
    let mut windows = Vec::new();
    // Per request: its window's index (None: empty continuation), continuation tokens, dropped.
    let mut plan = Vec::with_capacity(requests.len());
    for (line, request) in &requests {
        let split = request.context.trim_end().len();
        let (context, moved) = request.context.split_at(split);
        let encode = |text: &str, field| {
            session.encode(text).map_err(|message| InferError::Tokenize {
                path: job.requests.clone(),
                line: *line,
                field,
                message,
            })
        };
        let mut context = encode(context, "context")?;
        let continuation = encode(&format!("{moved}{}", request.continuation), "continuation")?;
        if context.is_empty() {
            context.push(session.loaded.config.bos_token_id);
        }
        if continuation.len() >= limit {
            return Err(InferError::TooLong {
                path: job.requests.clone(),
                line: *line,
                message: format!(
                    "the continuation has {} tokens; with at least one context token it must fit the model's \
                     {} positions",
                    continuation.len(),
                    session.n_positions()
                ),
            });
        }
        let dropped = (context.len() + continuation.len()).saturating_sub(limit);
        let n = continuation.len();
        let window = (n > 0).then(|| {
            let mut tokens = context[dropped..].to_vec();
            let first_target = tokens.len();
            tokens.extend(continuation);
            windows.push(Window { tokens, first_target });
            windows.len() - 1
        });
        plan.push((window, n as u64, dropped as u64));
    }
    let started = Instant::now();
    let mut scored = Vec::with_capacity(windows.len());
    for chunk in windows.chunks(batch) {
        scored.extend(score_windows(&session, chunk, batch)?);
        events(Event::Progress {
            done: scored.len() as u64,
            total: windows.len() as u64,
            message: format!("{} continuations scored", scored.len()),
        });
    }
    let seconds = started.elapsed().as_secs_f64();
    let results: Vec<LoglikResult> = plan
        .iter()
        .map(|&(window, tokens, truncated)| {
            let scores: &[ScoredToken] = window.map_or(&[], |w| &scored[w]);
            LoglikResult {
                logprob: scores.iter().map(|s| s.logprob).sum(),
                greedy: scores.iter().all(|s| s.greedy),
                tokens,
                truncated,
            }
        })
        .collect();
    write_jsonl(&job.out_dir, "loglik.jsonl", &results)?;
    let read: usize = windows.iter().map(|w| w.tokens.len() - 1).sum();
    let mut metrics = Map::new();
    metrics.insert("requests".into(), results.len().into());
    metrics.insert("continuation_tokens".into(), results.iter().map(|r| r.tokens).sum::<u64>().into());
    metrics.insert("truncated_requests".into(), results.iter().filter(|r| r.truncated > 0).count().into());
    metrics.insert("seconds".into(), seconds.into());
    metrics.insert("tokens_per_s".into(), (read as f64 / seconds.max(1e-9)).into());
    Ok(metrics)
}

/// Runs a [`PerplexityJob`] with [`perplexity_windows`] over each document's tokens (after the
/// end-of-text token with `prefix_end_of_text`).
pub fn run_perplexity(job: &PerplexityJob, events: &mut dyn FnMut(Event)) -> Result<Map<String, Value>, InferError> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Document {
        text: String,
    }
    let batch = chunk_size(&job.node, job.batch_size)?;
    let documents: Vec<(usize, Document)> = read_jsonl(&job.documents, DOCUMENT_FIELDS)?;
    let session = Session::load(&job.node, &job.model)?;
    let n_positions = session.n_positions() as u64;
    if job.stride == 0 || job.stride > n_positions {
        return Err(InferError::Job {
            node: job.node.clone(),
            message: format!("stride must be in 1..={n_positions} (the model's n_positions), got {}", job.stride),
        });
    }
    let mut windows = Vec::new();
    let mut owner = Vec::new();
    for (d, (line, doc)) in documents.iter().enumerate() {
        let mut tokens = Vec::new();
        if job.prefix_end_of_text {
            tokens.push(session.loaded.config.eos_token_id);
        }
        tokens.extend(session.encode(&doc.text).map_err(|message| InferError::Tokenize {
            path: job.documents.clone(),
            line: *line,
            field: "text",
            message,
        })?);
        for w in perplexity_windows(&tokens, n_positions as usize, job.stride as usize) {
            windows.push(w);
            owner.push(d);
        }
    }
    let started = Instant::now();
    let mut results: Vec<PerplexityResult> = documents
        .iter()
        .map(|(_, doc)| PerplexityResult { nll: 0.0, tokens: 0, bytes: doc.text.len() as u64 })
        .collect();
    let mut done = 0;
    for (chunk, owners) in windows.chunks(batch).zip(owner.chunks(batch)) {
        for (scores, &d) in score_windows(&session, chunk, batch)?.iter().zip(owners) {
            results[d].nll -= scores.iter().map(|s| s.logprob).sum::<f64>();
            results[d].tokens += scores.len() as u64;
        }
        done += chunk.len();
        events(Event::Progress {
            done: done as u64,
            total: windows.len() as u64,
            message: format!("{done} of {} windows", windows.len()),
        });
    }
    let seconds = started.elapsed().as_secs_f64();
    write_jsonl(&job.out_dir, "perplexity.jsonl", &results)?;
    let read: usize = windows.iter().map(|w| w.tokens.len() - 1).sum();
    let mut metrics = Map::new();
    metrics.insert("documents".into(), results.len().into());
    metrics.insert("tokens".into(), results.iter().map(|r| r.tokens).sum::<u64>().into());
    metrics.insert("bytes".into(), results.iter().map(|r| r.bytes).sum::<u64>().into());
    metrics.insert("nll".into(), results.iter().map(|r| r.nll).sum::<f64>().into());
    metrics.insert("windows".into(), windows.len().into());
    metrics.insert("seconds".into(), seconds.into());
    metrics.insert("tokens_per_s".into(), (read as f64 / seconds.max(1e-9)).into());
    Ok(metrics)
}
