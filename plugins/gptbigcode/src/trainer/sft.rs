//! SFT examples: read, tokenize, pack into fixed-length sequences with a loss mask.
//!
//! Each example becomes `prompt ++ response ++ [EOS]` (prompt and response tokenized separately,
//! without special tokens). Whole examples are packed greedily, in a seeded order, into
//! sequences of `seq_len + 1` tokens (the model reads the first `seq_len` and predicts the next
//! `seq_len`); the rest of a sequence is filled with EOS that is never a target. An example
//! longer than `seq_len + 1` tokens is cut to that length and counted.
//!
//! The mask rule: token `i` of a packed sequence is a training target (`labels[i - 1] =
//! token`) exactly when it is a response token or the EOS of its example AND it is not the first
//! token of its example. The first token of an example has nothing of its own example before it:
//! predicting it would train the model to guess one example's start from the previous example's
//! end, whatever kind of token it is (with an empty prompt it is a response token; it is still
//! not a target). Prompt tokens and padding are never targets. Attention is not reset at example
//! boundaries (as in common packed SFT); only the loss is.

use std::path::{Path, PathBuf};

use tokenizers::Tokenizer;

/// Label of a position that is not trained (`cross_entropy`'s `ignore_index`).
pub const IGNORE: i64 = -100;

#[derive(Debug, thiserror::Error)]
pub enum SftError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error(
        "{}:{line}: not an instruction example: {message}; expected {{\"prompt\": \"...\", \"response\": \"...\"}}",
        path.display()
    )]
    BadLine { path: PathBuf, line: u64, message: String },
    #[error("{}:{line}: tokenizing the {part} failed: {message}", path.display())]
    Tokenize { path: PathBuf, line: u64, part: &'static str, message: String },
    #[error(
        "{}:{line}: token id {id} of the {part} is outside the model's vocabulary ({vocab_size}); the tokenizer \
         does not belong to this model: use the tokenizer the model was trained with",
        path.display()
    )]
    OutsideVocab { path: PathBuf, line: u64, part: &'static str, id: u32, vocab_size: i64 },
    #[error("{}: no examples; the SFT stage needs at least one {{\"prompt\", \"response\"}} line", path.display())]
    Empty { path: PathBuf },
}

/// One tokenized example: its tokens and, per token, whether it is a response token (or EOS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Example {
    pub tokens: Vec<u32>,
    pub response: Vec<bool>,
}

impl Example {
    /// `prompt ++ response ++ [eos]`, with the response flags.
    pub fn new(prompt: &[u32], response: &[u32], eos: u32) -> Self {
        let tokens = prompt.iter().chain(response).copied().chain([eos]).collect();
        let flags = std::iter::repeat_n(false, prompt.len()).chain(std::iter::repeat_n(true, response.len() + 1));
        Self { tokens, response: flags.collect() }
    }
}

/// A packed sequence: `seq_len` inputs and `seq_len` labels ([`IGNORE`] where not trained).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packed {
    pub input: Vec<i64>,
    pub labels: Vec<i64>,
}

/// The packed sequences of a run and how many examples were cut.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packing {
    pub sequences: Vec<Packed>,
    pub truncated: u64,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    prompt: String,
    response: String,
}

/// Reads `path` (JSONL of `{"prompt", "response"}`) and tokenizes every example.
pub fn read_examples(path: &Path, tokenizer: &Tokenizer, eos: u32, vocab_size: i64) -> Result<Vec<Example>, SftError> {
    let text = std::fs::read_to_string(path).map_err(|source| SftError::Io { path: path.to_path_buf(), source })?;
    let mut examples = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i as u64 + 1;
        if raw.trim().is_empty() {
            continue;
        }
        let parsed: Line = serde_json::from_str(raw).map_err(|e| SftError::BadLine {
            path: path.to_path_buf(),
            line,
            message: e.to_string(),
        })?;
        let encode = |part: &'static str, text: &str| -> Result<Vec<u32>, SftError> {
            let ids = tokenizer
                .encode(text, false)
                .map_err(|e| SftError::Tokenize { path: path.to_path_buf(), line, part, message: e.to_string() })?
                .get_ids()
                .to_vec();
            if let Some(&id) = ids.iter().find(|&&id| id as i64 >= vocab_size) {
                return Err(SftError::OutsideVocab { path: path.to_path_buf(), line, part, id, vocab_size });
            }
            Ok(ids)
        };
        examples.push(Example::new(&encode("prompt", &parsed.prompt)?, &encode("response", &parsed.response)?, eos));
    }
    if examples.is_empty() {
        return Err(SftError::Empty { path: path.to_path_buf() });
    }
    Ok(examples)
}

/// Packs `examples` in the order `order` (indices into `examples`) into sequences of
/// `seq_len + 1` tokens, padding with `pad` (see the module docs for the mask rule).
pub fn pack(examples: &[Example], order: &[u32], seq_len: usize, pad: u32) -> Packing {
    let width = seq_len + 1;
    let mut sequences = Vec::new();
    let mut truncated = 0;
    let mut tokens: Vec<u32> = Vec::with_capacity(width);
    let mut target: Vec<bool> = Vec::with_capacity(width);
    let mut flush = |tokens: &mut Vec<u32>, target: &mut Vec<bool>| {
        tokens.resize(width, pad);
        target.resize(width, false);
        let input = tokens[..seq_len].iter().map(|&t| t as i64).collect();
        let labels = (1..width).map(|i| if target[i] { tokens[i] as i64 } else { IGNORE }).collect();
        sequences.push(Packed { input, labels });
        tokens.clear();
        target.clear();
    };
    for &i in order {
        let ex = &examples[i as usize];
        let len = ex.tokens.len().min(width);
        truncated += u64::from(ex.tokens.len() > width);
        if tokens.len() + len > width {
            flush(&mut tokens, &mut target);
        }
        tokens.extend_from_slice(&ex.tokens[..len]);
        target.extend(ex.response[..len].iter().enumerate().map(|(j, &r)| r && j > 0));
    }
    if !tokens.is_empty() {
        flush(&mut tokens, &mut target);
    }
    Packing { sequences, truncated }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_packing_and_mask_boundaries() {
        let a = Example::new(&[10, 11], &[12, 13], 0); // 10 11 12 13 0
        let b = Example::new(&[20], &[21], 0); // 20 21 0
        let c = Example::new(&[], &[30, 31], 0); // 30 31 0 (empty prompt)
        let p = pack(&[a, b, c], &[0, 1, 2], 7, 0);
        assert_eq!(p.truncated, 0);
        assert_eq!(p.sequences.len(), 2);
        // [10 11 12 13 0 | 20 21 0] fills 8 = seq_len + 1.
        assert_eq!(p.sequences[0].input, [10, 11, 12, 13, 0, 20, 21]);
        assert_eq!(p.sequences[0].labels, [IGNORE, 12, 13, 0, IGNORE, 21, 0]);
        // c starts a new sequence: its first token is never a target, even though it is a
        // response token; padding is never a target.
        assert_eq!(p.sequences[1].input, [30, 31, 0, 0, 0, 0, 0]);
        assert_eq!(p.sequences[1].labels, [31, 0, IGNORE, IGNORE, IGNORE, IGNORE, IGNORE]);
    }

    #[test]
    fn empty_prompt_after_another_example_is_not_a_cross_example_target() {
        let a = Example::new(&[1], &[2], 9);
        let c = Example::new(&[], &[5, 6], 9);
        let p = pack(&[a, c], &[0, 1], 7, 9);
        assert_eq!(p.sequences[0].input, [1, 2, 9, 5, 6, 9, 9]);
        // 9 (a's EOS) must not be trained to predict 5 (c's first token).
        assert_eq!(p.sequences[0].labels, [2, 9, IGNORE, 6, 9, IGNORE, IGNORE]);
    }

    #[test]
    fn long_examples_are_truncated_and_counted() {
        let long = Example::new(&[1, 2, 3], &[4, 5, 6, 7], 0);
        let p = pack(&[long], &[0], 4, 0);
        assert_eq!(p.truncated, 1);
        assert_eq!(p.sequences[0].input, [1, 2, 3, 4]);
        assert_eq!(p.sequences[0].labels, [IGNORE, IGNORE, 4, 5]);
    }
}
