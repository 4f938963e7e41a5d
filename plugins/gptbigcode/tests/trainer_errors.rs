//! Error paths of the trainer: each names the place, the expected and found values and the fix.

mod trainer_common;

use aurora_gptbigcode::hf;
use aurora_gptbigcode::schedule::{Schedule, StageSchedule};
use aurora_gptbigcode::trainer::{TrainError, train};
use aurora_gptbigcode::{GptBigCode, GptBigCodeConfig};
use aurora_torch::tch::{Device, Kind, Tensor, nn};
use aurora_worker_api::Init;
use trainer_common::*;

#[test]
fn seq_len_above_n_positions_and_mixture_seq_len_mismatch() {
    let root = tempfile::tempdir().unwrap();
    let fx = fixture(root.path(), 16);
    let mut job = fx.job(root.path(), "long", 1);
    job.seq_len = 64;
    let err = train(&job, &mut |_| {}).unwrap_err();
    assert_eq!(
        err.to_string(),
        "stages/long: seq_len 64 does not fit the model: n_positions is 32; lower seq_len or use a model with more \
         positions"
    );

    job.model.n_positions = 64;
    let err = train(&job, &mut |_| {}).unwrap_err().to_string();
    assert!(err.contains("seq_len 64 differs from the mixture's sequence length 32"), "{err}");
    assert!(err.contains("set the stage's seq_len to 32"), "{err}");
}

#[test]
fn token_outside_the_vocabulary_names_sample_source_and_fix() {
    let root = tempfile::tempdir().unwrap();
    let fx = fixture(root.path(), 16);
    let mut job = fx.job(root.path(), "small-vocab", 2);
    job.model.vocab_size = 300;
    let err = train(&job, &mut |_| {}).unwrap_err();
    // The first sample (in training order) holding an id >= 300, found independently.
    let reader = aurora_tokens::loader::MixtureReader::open(&fx.mixture, &fx.stores).unwrap();
    let (sample, id) =
        (0..reader.len()).find_map(|k| reader.sample(k).into_iter().find(|&t| t >= 300).map(|t| (k, t))).unwrap();
    let (source, index) = reader.locate(sample);
    let name = &reader.info().sources[source].name;
    let text = err.to_string();
    assert!(matches!(err, TrainError::TokenOutsideVocab { .. }), "{text}");
    assert!(
        text.contains(&format!(
            "sample {sample} of the mixture (source `{name}`, sample {index} within it) holds token id {id}, outside \
             the model's vocabulary (300)"
        )),
        "{text}"
    );
    assert!(text.contains("use the tokenizer of the model"), "{text}");
}

#[test]
fn init_checkpoint_of_another_shape_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let fx = fixture(root.path(), 16);
    // A config of another width: every differing field is listed.
    let other = GptBigCodeConfig::tiny(2, 32, 4, VOCAB, 32);
    let vs = nn::VarStore::new(Device::Cpu);
    GptBigCode::seeded(&vs.root(), &other, 0).unwrap();
    let narrow = root.path().join("narrow");
    hf::save_pretrained(&narrow, &other, &vs, hf::DEFAULT_MAX_SHARD_BYTES).unwrap();
    let mut job = fx.job(root.path(), "init", 1);
    job.init = Init::Hf { dir: narrow };
    let text = train(&job, &mut |_| {}).unwrap_err().to_string();
    assert!(text.contains("n_embd: expected 64, found 32"), "{text}");
    assert!(text.contains("n_inner: expected 256, found 128"), "{text}");
    assert!(text.contains("use a checkpoint of the same architecture"), "{text}");

    // The right config but a tensor of the wrong shape: named, with both shapes.
    let vs = nn::VarStore::new(Device::Cpu);
    GptBigCode::seeded(&vs.root(), &job.model, 0).unwrap();
    let broken = root.path().join("broken");
    hf::save_pretrained(&broken, &job.model, &vs, hf::DEFAULT_MAX_SHARD_BYTES).unwrap();
    let mut tensors: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    for (name, t) in &mut tensors {
        if name == "transformer.h.1.mlp.c_fc.weight" {
            *t = Tensor::zeros([128, 64], (Kind::Float, Device::Cpu));
        }
    }
    hf::write_safetensors(&broken.join("model.safetensors"), &tensors).unwrap();
    job.init = Init::Stage { dir: broken, continue_run: false };
    let text = train(&job, &mut |_| {}).unwrap_err().to_string();
    assert!(
        text.contains("tensor `transformer.h.1.mlp.c_fc.weight`: expected shape [256, 64], found [128, 64]"),
        "{text}"
    );
}

#[test]
fn divergence_stops_with_the_step_and_keeps_the_last_good_checkpoint() {
    let root = tempfile::tempdir().unwrap();
    let fx = fixture(root.path(), 8 * 8);
    let mut job = fx.job(root.path(), "nan", 8);
    job.schedule = StageSchedule { schedule: Schedule::Constant { lr: 1e30, warmup_steps: 0 }, rewarm: false };
    job.checkpoint_every_tokens = 8 * SEQ_LEN;
    job.grad_clip = 0.0;
    let err = train(&job, &mut |_| {}).unwrap_err();
    let TrainError::NonFinite { step, checkpoint: Some((kept, _)), .. } = &err else { panic!("{err}") };
    let text = err.to_string();
    eprintln!("{text}");
    assert_eq!(*kept, step - 1, "{text}");
    assert!(text.contains(&format!("at step {step} (lr 1e30)")), "{text}");
    assert!(text.contains(&format!("the last good checkpoint (step {kept}) is kept in")), "{text}");
    assert!(text.contains("lower the learning rate"), "{text}");
    let (_, state) = aurora_gptbigcode::checkpoint::latest(&job.work_dir).unwrap().unwrap();
    assert_eq!(state.global_step, *kept);
    assert!(!job.out_dir.join("model.safetensors").exists(), "no artifact after divergence");
}

#[test]
fn bad_sft_lines_and_short_data_are_located() {
    let root = tempfile::tempdir().unwrap();
    let fx = fixture(root.path(), 16);
    let path = root.path().join("examples.jsonl");
    std::fs::write(&path, "{\"prompt\": \"a\", \"response\": \"b\"}\n{\"prompt\": \"a\"}\n").unwrap();
    let mut job = fx.job(root.path(), "sft", 1);
    job.data = aurora_worker_api::TrainData::Instructions { examples: path.clone() };
    let text = train(&job, &mut |_| {}).unwrap_err().to_string();
    assert!(
        text.starts_with(&format!("{}:2: not an instruction example: missing field `response`", path.display())),
        "{text}"
    );

    let mut job = fx.job(root.path(), "short", 3);
    job.global_batch = 8;
    job.steps = Some(3);
    let text = train(&job, &mut |_| {}).unwrap_err().to_string();
    assert_eq!(text, "stages/short: the data has 16 sequences, but 3 steps of 8 need 24; lower `steps` or add data");
}

#[test]
fn a_checkpoint_of_another_run_is_not_resumed() {
    let root = tempfile::tempdir().unwrap();
    let fx = fixture(root.path(), 16);
    let mut job = fx.job(root.path(), "run", 2);
    job.checkpoint_every_tokens = 8 * SEQ_LEN;
    train(&job, &mut |_| {}).unwrap();
    job.seed = 5;
    let text = train(&job, &mut |_| {}).unwrap_err().to_string();
    assert!(text.contains("belongs to a run with seed 1234, this job has seed 5"), "{text}");
    assert!(text.contains("delete the work directory to start over"), "{text}");
}
