//! Planning of the training plugins: a valid curriculum, and every plan-time error (each a
//! diagnostic at the manifest key, snapshot-tested as rendered).

// Plugins register by being linked.
use aurora_corpus as _;
use aurora_tokens as _;
use aurora_train_plugins as _;

use aurora_core::manifest::{ResolveOptions, resolve};
use aurora_core::plan::{Plan, plan};

const BASE: &str = r#"[experiment]
name = "t"
seed = 1

[sources.web]
plugin = "source.jsonl"
files = ["file:data/a.jsonl"]
lang = "eng_Latn"
dedup = false

[tokenizers.bpe]
plugin = "tokenizer.bpe"
vocab_size = 512
special_tokens = ["<|endoftext|>"]
sample = ["sources.web"]

[mixtures.cap]
plugin = "mixer.blend"
tokenizer = "tokenizers.bpe"
weights = { web = 1.0 }
tokens = 10000
seq_len = 64

[mixtures.cat]
plugin = "mixer.blend"
tokenizer = "tokenizers.bpe"
weights = { web = 1.0 }
tokens = 2000
seq_len = 64

[models.tiny]
plugin = "model.gptbigcode"
vocab_size = 512
n_positions = 128
n_embd = 64
n_layer = 2
n_head = 4

[schedulers.cap]
plugin = "scheduler.cosine"
max_lr = 1e-3
min_lr = 1e-4
warmup_steps = 10
decay_steps = 100

[schedulers.cat]
plugin = "scheduler.wsd"
max_lr = 5e-4
min_lr = 5e-5
warmup_steps = 0
stable_steps = 10
decay_steps = 10

[stages.cap]
plugin = "train.tch"
model = "models.tiny"
data = "mixtures.cap"
schedule = "schedulers.cap"
seq_len = 64
micro_batch = 4
global_batch = 8
device = "cpu"
threads = 1

[stages.cat]
plugin = "train.tch"
model = "models.tiny"
init = "stages.cap"
continue_run = true
data = "mixtures.cat"
schedule = "schedulers.cat"
seq_len = 64
micro_batch = 4
global_batch = 8
device = "cpu"
threads = 1
milestones = [1024]

[sft.safety]
plugin = "sft.instructions"
init = "stages.cat"
files = ["file:data/safety.json"]
schedule = "schedulers.cat"
seq_len = 128
micro_batch = 2
global_batch = 4
device = "cpu"
"#;

/// Plans `BASE` with each `(from, to)` replacement applied (each `from` must occur exactly once).
fn plan_with(edits: &[(&str, &str)]) -> Result<Plan, String> {
    let mut text = BASE.to_string();
    for (from, to) in edits {
        assert_eq!(text.matches(from).count(), 1, "`{from}` must occur once in the base manifest");
        text = text.replacen(from, to, 1);
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    std::fs::write(dir.path().join("data/a.jsonl"), "{\"text\":\"hello\"}\n").unwrap();
    std::fs::write(dir.path().join("data/safety.json"), "[{\"instruction\":\"hi\",\"output\":\"no\"}]").unwrap();
    std::fs::write(dir.path().join("m.toml"), &text).unwrap();
    let manifest = resolve(&dir.path().join("m.toml"), &ResolveOptions::default()).map_err(|e| e.to_string())?;
    plan(manifest).map_err(|e| e.to_string().replace(&dir.path().display().to_string(), "<project>"))
}

fn error(edits: &[(&str, &str)]) -> String {
    match plan_with(edits) {
        Ok(_) => panic!("planned despite {edits:?}"),
        Err(e) => e,
    }
}

#[test]
fn a_two_stage_curriculum_with_sft_plans() {
    let plan = plan_with(&[]).unwrap();
    let cap = plan.node("stages/cap").unwrap();
    let inputs: Vec<(&str, String)> = cap.inputs.iter().map(|(k, v)| (k.as_str(), format!("{:?}", v.source))).collect();
    assert_eq!(
        inputs,
        [
            ("mixture", "Node(\"mixtures/cap\")".to_string()),
            ("model", "Node(\"models/tiny\")".to_string()),
            ("store:web", "Node(\"tokens/bpe/web\")".to_string()),
            ("tokenizer", "Node(\"tokenizers/bpe\")".to_string()),
        ]
    );
    assert_eq!(cap.config["init"], "scratch");
    assert_eq!(cap.config["model"]["n_layer"], 2);
    assert_eq!(cap.config["schedule"]["schedule"]["kind"], "cosine");
    let cat = plan.node("stages/cat").unwrap();
    assert_eq!(format!("{:?}", cat.inputs["init"].source), "Node(\"stages/cap\")");
    assert_eq!(cat.config["continue_run"], true);
    assert_eq!(cat.config["milestones"], serde_json::json!([1024]));
    // CAT runs after CAP; SFT after CAT.
    assert!(plan.position("stages/cap") < plan.position("stages/cat"));
    let sft = plan.node("sft/safety").unwrap();
    assert_eq!(format!("{:?}", sft.inputs["init"].source), "Node(\"stages/cat\")");
    assert_eq!(format!("{:?}", sft.inputs["tokenizer"].source), "Node(\"tokenizers/bpe\")");
    assert!(
        matches!(&sft.inputs["file:0"].source, aurora_core::plugin::InputSource::Path(p) if p.ends_with("data/safety.json"))
    );
    assert_eq!(sft.config["data"]["instructions"]["template"], "### Instruction:\n{instruction}\n### Response:\n");
    assert_eq!(sft.config["model"], cap.config["model"], "SFT tunes the model of the stage chain");
    // Execution facts enter the key: the device class, precision, libtorch and determinism.
    assert_eq!(cap.facts["device"], "cpu");
    assert_eq!(cap.facts["precision"], "fp32");
    assert_eq!(cap.facts["determinism"], "deterministic algorithms, threads = 1");
    assert!(cap.facts.contains_key("libtorch"));
    let model = plan.node("models/tiny").unwrap();
    assert_eq!(model.config["model_type"], "gpt_bigcode");
    assert_eq!(plan.node("schedulers/cat").unwrap().config["kind"], "wsd");
}

#[test]
fn seq_len_above_n_positions() {
    insta::assert_snapshot!(error(&[("seq_len = 128\nmicro_batch = 2", "seq_len = 256\nmicro_batch = 2")]));
}

#[test]
fn n_head_not_divisible_by_tp() {
    insta::assert_snapshot!(error(&[("threads = 1\nmilestones", "threads = 1\nlayout = { tp = 3 }\nmilestones")]));
}

#[test]
fn n_layer_not_divisible_by_pp() {
    insta::assert_snapshot!(error(&[("threads = 1\nmilestones", "threads = 1\nlayout = { pp = 4 }\nmilestones")]));
}

#[test]
fn ffn_width_not_divisible_by_tp() {
    // tp = 4 divides n_head = 4 (and so n_embd), but not an explicit n_inner.
    insta::assert_snapshot!(error(&[
        ("n_head = 4", "n_head = 4\nn_inner = 102"),
        ("threads = 1\nmilestones", "threads = 1\nlayout = { tp = 4 }\nmilestones"),
    ]));
}

#[test]
fn fewer_micro_batches_per_step_than_pp() {
    // 8 / (4 * 2) = 1 micro-batch per step; 1F1B over 2 stages needs 2.
    insta::assert_snapshot!(error(&[(
        "threads = 1\nmilestones",
        "threads = 1\nlayout = { pp = 2, dp = 2 }\nmilestones"
    )]));
}

#[test]
fn as_many_micro_batches_as_pp_plan() {
    let plan = plan_with(&[("threads = 1\nmilestones", "threads = 1\nlayout = { pp = 2 }\nmilestones")]).unwrap();
    assert_eq!(plan.node("stages/cat").unwrap().config["parallel"]["layout"]["pp"], 2);
}

/// A vocabulary tp does not divide is padded inside the ranks, not refused; the plan says so, and
/// what each rank sends and receives per step.
#[test]
fn plan_states_vocab_padding_and_communication() {
    let plan = plan_with(&[
        ("vocab_size = 512\nn_positions", "vocab_size = 513\nn_positions"),
        ("threads = 1\nmilestones", "threads = 1\nlayout = { tp = 2, pp = 2 }\nmilestones"),
    ])
    .unwrap();
    let cat = plan.node("stages/cat").unwrap();
    let estimate = cat.plugin.estimate(&cat.config).unwrap();
    assert!(
        estimate.contains(
            "; vocab 513 padded to 514 on 2 tensor-parallel ranks (a multiple of tp, as Megatron pads); \
             the artifact keeps 513"
        ),
        "{estimate}"
    );
    insta::assert_snapshot!(estimate);
    // One rank: no communication, no padding.
    let cap = plan.node("stages/cap").unwrap();
    let estimate = cap.plugin.estimate(&cap.config).unwrap();
    assert!(!estimate.contains("communication") && !estimate.contains("padded"), "{estimate}");
}

#[test]
fn global_batch_not_divisible_by_micro_batch_times_dp() {
    insta::assert_snapshot!(error(&[("threads = 1\nmilestones", "threads = 1\nlayout = { dp = 3 }\nmilestones")]));
}

#[test]
fn unknown_model_reference() {
    insta::assert_snapshot!(error(&[(
        "model = \"models.tiny\"\ndata = \"mixtures.cap\"",
        "model = \"models.tiyn\"\ndata = \"mixtures.cap\""
    )]));
}

#[test]
fn unknown_mixture_reference() {
    insta::assert_snapshot!(error(&[("data = \"mixtures.cat\"", "data = \"mixtures.cta\"")]));
}

#[test]
fn unknown_scheduler_reference() {
    insta::assert_snapshot!(error(&[("schedule = \"schedulers.cap\"", "schedule = \"schedulers.cpa\"")]));
}

#[test]
fn unknown_init_stage() {
    insta::assert_snapshot!(error(&[("init = \"stages.cap\"", "init = \"stages.cpa\"")]));
}

#[test]
fn seq_len_differs_from_the_mixture() {
    insta::assert_snapshot!(error(&[(
        "seq_len = 64\nmicro_batch = 4\nglobal_batch = 8\ndevice = \"cpu\"\nthreads = 1\n\n",
        "seq_len = 32\nmicro_batch = 4\nglobal_batch = 8\ndevice = \"cpu\"\nthreads = 1\n\n"
    )]));
}

#[test]
fn bf16_on_cpu() {
    insta::assert_snapshot!(error(&[(
        "global_batch = 4\ndevice = \"cpu\"",
        "global_batch = 4\ndevice = \"cpu\"\nprecision = \"bf16\""
    )]));
}

#[test]
fn init_pointing_at_itself() {
    insta::assert_snapshot!(error(&[("init = \"stages.cap\"", "init = \"stages.cat\"")]));
}

#[test]
fn continue_run_without_a_stage() {
    insta::assert_snapshot!(error(&[("init = \"stages.cap\"\ncontinue_run = true", "continue_run = true")]));
}

#[test]
fn invalid_model_dimensions_are_reported_at_the_model() {
    insta::assert_snapshot!(error(&[("n_head = 4", "n_head = 3")]));
}

#[test]
fn a_model_without_dimensions_or_preset() {
    insta::assert_snapshot!(error(&[("vocab_size = 512\nn_positions = 128\n", "")]));
}

#[test]
fn a_schedule_with_its_floor_above_its_peak() {
    insta::assert_snapshot!(error(&[("min_lr = 1e-4", "min_lr = 1e-2")]));
}

#[test]
fn unknown_keys_are_rejected_with_a_suggestion() {
    insta::assert_snapshot!(error(&[("milestones = [1024]", "milestone = [1024]")]));
}

#[test]
fn the_starcoderplus_preset_plans() {
    let plan = plan_with(&[(
        "vocab_size = 512\nn_positions = 128\nn_embd = 64\nn_layer = 2\nn_head = 4",
        "preset = \"starcoderplus\"\nvocab_size = 512",
    )])
    .unwrap();
    let model = &plan.node("models/tiny").unwrap().config;
    assert_eq!(
        (model["n_layer"].as_i64(), model["n_embd"].as_i64(), model["n_head"].as_i64()),
        (Some(40), Some(6144), Some(48))
    );
    assert_eq!(model["vocab_size"], 512, "fields override the preset");
}

#[test]
fn plan_estimates_starcoderplus_size_and_memory() {
    let plan = plan_with(&[(
        "vocab_size = 512\nn_positions = 128\nn_embd = 64\nn_layer = 2\nn_head = 4",
        "preset = \"starcoderplus\"",
    )])
    .unwrap();
    let model = plan.node("models/tiny").unwrap();
    let estimate = model.plugin.estimate(&model.config).unwrap();
    // StarCoderPlus is the 15.5B-parameter StarCoder architecture.
    assert!(estimate.starts_with("15.5") && estimate.contains(" G parameters"), "{estimate}");
    let sft = plan.node("sft/safety").unwrap();
    let estimate = sft.plugin.estimate(&sft.config).unwrap();
    // No `steps`: one pass; 16 bytes per parameter of fp32 weights, gradients and AdamW moments.
    assert!(estimate.contains("one pass over the data"), "{estimate}");
    assert!(
        estimate.contains(" 248.279 GB of weights + gradients + AdamW state; per rank (tp 1 x pp 1 x dp 1)"),
        "{estimate}"
    );
    // One device cannot hold StarCoderPlus; the estimate names the smallest split that fits.
    assert!(estimate.contains("more than a 64 GB GCD: tp "), "{estimate}");
}

#[test]
fn optimizer_settings_out_of_range() {
    insta::assert_snapshot!(error(&[(
        "threads = 1\nmilestones",
        "threads = 1\noptimizer = { beta2 = 1.0 }\ngrad_clip = -1.0\nmilestones"
    )]));
}

#[test]
fn an_sft_template_without_the_instruction() {
    insta::assert_snapshot!(error(&[(
        "global_batch = 4\ndevice",
        "global_batch = 4\ntemplate = \"Q: {input}\\nA: \"\ndevice"
    )]));
}

#[test]
fn sft_can_continue_another_sft_and_keeps_the_chains_model_and_tokenizer() {
    let plan = plan_with(&[(
        "[sft.safety]",
        "[sft.more]\nplugin = \"sft.instructions\"\ninit = \"sft.safety\"\nfiles = [\"file:data/safety.json\"]\n\
         schedule = \"schedulers.cat\"\nseq_len = 128\nmicro_batch = 2\nglobal_batch = 4\ndevice = \"cpu\"\n\n[sft.safety]",
    )])
    .unwrap();
    let more = plan.node("sft/more").unwrap();
    assert_eq!(format!("{:?}", more.inputs["init"].source), "Node(\"sft/safety\")");
    assert_eq!(format!("{:?}", more.inputs["tokenizer"].source), "Node(\"tokenizers/bpe\")");
    assert_eq!(more.config["model"], plan.node("stages/cap").unwrap().config["model"]);
    assert!(plan.position("sft/safety") < plan.position("sft/more"));
}

/// Renamed record keys are part of an SFT node's key; the default keys leave it as it was.
#[test]
fn sft_record_keys_enter_the_key_only_when_renamed() {
    let default = plan_with(&[]).unwrap();
    let data = &default.node("sft/safety").unwrap().config["data"];
    assert!(data["instructions"].get("fields").is_none(), "{data}");
    let renamed = plan_with(&[(
        "[sft.safety]\nplugin = \"sft.instructions\"",
        "[sft.safety]\nplugin = \"sft.instructions\"\nfields = { instruction = \"prompt\", output = \"response\" }",
    )])
    .unwrap();
    let data = &renamed.node("sft/safety").unwrap().config["data"];
    assert_eq!(data["instructions"]["fields"]["instruction"], "prompt");
    assert_eq!(data["instructions"]["fields"]["output"], "response");
}

#[test]
fn a_tokenizer_larger_than_the_models_vocabulary() {
    insta::assert_snapshot!(error(&[("vocab_size = 512\nspecial_tokens", "vocab_size = 1024\nspecial_tokens")]));
}

#[test]
fn milestone_beyond_the_stage() {
    // stages.cat trains 5 steps x 8 x 64 = 2560 tokens when steps is given.
    insta::assert_snapshot!(error(&[("milestones = [1024]", "steps = 5\nmilestones = [1024, 4096]")]));
}
