//! SFT: the loss mask lets no gradient through prompt tokens, padding or example boundaries, and
//! an SFT stage trains on real instruction examples (the sample corpus), rendered with the
//! template, tokenized with the fixture's BPE.

mod trainer_common;

use std::path::Path;

use aurora_gptbigcode::GptBigCode;
use aurora_gptbigcode::trainer::sft::{self, IGNORE};
use aurora_gptbigcode::trainer::{masked_loss_sum, train};
use aurora_torch::tch::{Device, Kind, Tensor, nn};
use aurora_worker_api::TrainData;
use trainer_common::*;

const SEQ: usize = 256;

/// Renders the sample instructions as `{"prompt", "response"}` lines into `path`.
fn write_examples(path: &Path) -> usize {
    let text = std::fs::read_to_string(sample_corpus().join("instructions.jsonl")).unwrap();
    let mut out = String::new();
    let mut n = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let r: serde_json::Value = serde_json::from_str(line).unwrap();
        let (instruction, input) = (r["instruction"].as_str().unwrap(), r["input"].as_str().unwrap_or(""));
        let instruction = if input.is_empty() { instruction.to_owned() } else { format!("{instruction}\n{input}") };
        let prompt = format!("### Instruction:\n{instruction}\n### Response:\n");
        out.push_str(&serde_json::json!({"prompt": prompt, "response": r["output"]}).to_string());
        out.push('\n');
        n += 1;
    }
    std::fs::write(path, out).unwrap();
    n
}

#[test]
fn no_gradient_from_masked_positions_and_boundaries_are_not_targets() {
    let root = tempfile::tempdir().unwrap();
    let fx = fixture(root.path(), 8);
    let path = root.path().join("examples.jsonl");
    write_examples(&path);
    let tokenizer = tokenizers::Tokenizer::from_file(fx.tokenizer_dir.join("tokenizer.json")).unwrap();
    let examples = sft::read_examples(&path, &tokenizer, 0, VOCAB).unwrap();
    let order: Vec<u32> = (0..examples.len() as u32).collect();
    let packing = sft::pack(&examples, &order, SEQ, 0);

    // Boundaries on real data: replay the greedy packing and check every label.
    let mut seq = 0;
    let mut at = 0;
    for ex in &examples {
        let len = ex.tokens.len().min(SEQ + 1);
        if at + len > SEQ + 1 {
            seq += 1;
            at = 0;
        }
        let packed = &packing.sequences[seq];
        for j in 0..len {
            let pos = at + j; // position of token j of the example in the sequence
            if pos == 0 {
                continue; // the first token of a sequence is never a label
            }
            let expected = if j > 0 && ex.response[j] { ex.tokens[j] as i64 } else { IGNORE };
            assert_eq!(packed.labels[pos - 1], expected, "sequence {seq}, example token {j}");
        }
        at += len;
    }
    assert_eq!(seq + 1, packing.sequences.len());

    // Gradient of the loss w.r.t. the logits: exactly zero at every masked position, non-zero at
    // every target.
    let config = aurora_gptbigcode::GptBigCodeConfig::tiny(2, 64, 4, VOCAB, SEQ as i64);
    let vs = nn::VarStore::new(Device::Cpu);
    let model = GptBigCode::seeded(&vs.root(), &config, 3).unwrap();
    let first = &packing.sequences[..2];
    let input =
        Tensor::from_slice(&first.iter().flat_map(|s| s.input.clone()).collect::<Vec<_>>()).view([2, SEQ as i64]);
    let labels =
        Tensor::from_slice(&first.iter().flat_map(|s| s.labels.clone()).collect::<Vec<_>>()).view([2, SEQ as i64]);
    let logits = model.forward(&input).unwrap().detach().set_requires_grad(true);
    masked_loss_sum(&logits, &labels).backward();
    let row_norms = logits.grad().abs().sum_dim_intlist([-1].as_slice(), false, Kind::Float);
    let norms: Vec<f32> = Vec::try_from(row_norms.reshape([-1])).unwrap();
    let flat_labels: Vec<i64> = Vec::try_from(labels.reshape([-1])).unwrap();
    let (mut masked, mut trained) = (0, 0);
    for (norm, label) in norms.iter().zip(&flat_labels) {
        if *label == IGNORE {
            assert_eq!(*norm, 0.0, "gradient at a masked position");
            masked += 1;
        } else {
            assert!(*norm > 0.0, "no gradient at a target");
            trained += 1;
        }
    }
    assert!(masked > 0 && trained > 0, "{masked} masked, {trained} trained");

    // Sanity of the comparison: with the masked positions given real targets, the loss grows.
    let relabelled = labels.where_self(&labels.ne(IGNORE), &input.remainder(VOCAB));
    let unmasked = masked_loss_sum(&logits, &relabelled).double_value(&[]);
    assert!(unmasked > masked_loss_sum(&logits, &labels).double_value(&[]), "relabelling adds loss terms");
}

#[test]
fn sft_stage_trains_on_instruction_examples() {
    let root = tempfile::tempdir().unwrap();
    let fx = fixture(root.path(), 8);
    let path = root.path().join("examples.jsonl");
    let n = write_examples(&path);
    let mut job = fx.job(root.path(), "sft", 0);
    job.model = aurora_gptbigcode::GptBigCodeConfig::tiny(2, 64, 4, VOCAB, SEQ as i64);
    job.seq_len = SEQ as u64;
    job.data = TrainData::Instructions { examples: path.clone() };
    job.steps = None;
    job.global_batch = 4;
    job.micro_batch = 2;
    let metrics = train(&job, &mut |_| {}).unwrap();

    let tokenizer = tokenizers::Tokenizer::from_file(fx.tokenizer_dir.join("tokenizer.json")).unwrap();
    let examples = sft::read_examples(&path, &tokenizer, 0, VOCAB).unwrap();
    assert_eq!(examples.len(), n);
    let long = examples.iter().filter(|e| e.tokens.len() > SEQ + 1).count();
    assert_eq!(metrics["truncated_examples"], long as u64);
    let sequences = sft::pack(&examples, &(0..n as u32).collect::<Vec<_>>(), SEQ, 0).sequences.len() as u64;
    assert_eq!(metrics["steps"], sequences / 4, "steps = None is one pass of whole global batches");
    let losses = metrics_losses(&job.out_dir);
    eprintln!("SFT: {n} examples, {long} truncated, {sequences} sequences, loss {:?}", losses);
    assert!(losses.last().unwrap() < &(losses[0] - 0.5), "{losses:?}");
}
