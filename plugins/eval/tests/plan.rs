//! Planning of every evaluator: node ids per checkpoint, inputs, keys, and bad-input errors.

mod common;

use aurora_core::plugin::InputSource;
use common::{Project, config};

#[test]
fn each_checkpoint_and_milestone_is_its_own_node() {
    let project = Project::new();
    let plan = project.plan(
        r#"
[evals.bpb]
plugin = "eval.perplexity"
on = ["stages.base", "stages.cap", "sft.safety"]
milestones = true
sources = ["sources.eng_web"]
files = { fin_Latn = "file:flores/fin_Latn.devtest" }
"#,
    );
    assert_eq!(
        Project::ids(&plan, "evals/"),
        [
            "evals/bpb/base",
            "evals/bpb/cap",
            "evals/bpb/cap@tokens-10000",
            "evals/bpb/cap@tokens-20000",
            "evals/bpb/safety"
        ]
    );
    let milestone = plan.node("evals/bpb/cap@tokens-10000").unwrap();
    assert_eq!(milestone.inputs["model"].source, InputSource::Node("stages/cap".into()));
    assert_eq!(milestone.config["subdir"], "milestones/tokens-10000");
    assert_eq!(milestone.config["checkpoint"], "cap@tokens-10000");
    assert_eq!(milestone.config["evaluator"], "evals/bpb");
    assert_eq!(milestone.inputs["source:sources.eng_web"].source, InputSource::Node("sources/eng_web".into()));
    assert_eq!(milestone.inputs["text:fin_Latn"].source, InputSource::Path("file:flores/fin_Latn.devtest".into()));
    let sft = plan.node("evals/bpb/safety").unwrap();
    assert_eq!(sft.inputs["model"].source, InputSource::Node("sft/safety".into()));
    assert!(sft.config["subdir"].is_null());
    // The stage's own node precedes every evaluation of it.
    assert!(plan.position("stages/cap").unwrap() < plan.position("evals/bpb/cap@tokens-20000").unwrap());
}

#[test]
fn milestones_are_off_by_default_and_the_schedule_stays_out_of_keys() {
    let project = Project::new();
    let entry = |on: &str| {
        format!("[evals.bpb]\nplugin = \"eval.perplexity\"\non = {on}\nfiles = {{ eng_Latn = \"file:eng.txt\" }}\n")
    };
    let narrow = project.plan(&entry(r#"["stages.cap"]"#));
    assert_eq!(Project::ids(&narrow, "evals/"), ["evals/bpb/cap"]);
    let wide = project.plan(&entry(r#"["stages.cat", "stages.cap"]"#));
    assert_eq!(Project::ids(&wide, "evals/"), ["evals/bpb/cap", "evals/bpb/cat"]);
    // Adding a checkpoint leaves the existing node's config (hence its key) unchanged.
    assert_eq!(config(&narrow, "evals/bpb/cap"), config(&wide, "evals/bpb/cap"));
    assert_eq!(narrow.node("evals/bpb/cap").unwrap().seed, wide.node("evals/bpb/cap").unwrap().seed);
}

#[test]
fn choice_plans_tasks_as_file_inputs_with_a_checkpoint_independent_shot_seed() {
    let project = Project::new();
    let plan = project.plan(
        r#"
[evals.choice]
plugin = "eval.choice"
on = ["stages.base", "stages.cat"]
tasks = { "hin_Deva.arc" = "file:choice/hin.jsonl", "vie_Latn.arc" = "file:choice/vie.jsonl" }
shots = 2
"#,
    );
    assert_eq!(Project::ids(&plan, "evals/"), ["evals/choice/base", "evals/choice/cat"]);
    let base = plan.node("evals/choice/base").unwrap();
    assert_eq!(base.inputs["task:hin_Deva.arc"].source, InputSource::Path("file:choice/hin.jsonl".into()));
    assert_eq!(base.config["settings"]["shots"], 2);
    assert_eq!(config(&plan, "evals/choice/base")["settings"], config(&plan, "evals/choice/cat")["settings"]);
}

#[test]
fn safety_plans_prompts_and_benign_inputs_with_the_lexicons_in_the_key() {
    let project = Project::new();
    let plan = project.plan(
        r#"
[evals.safety]
plugin = "eval.safety"
on = ["stages.cat", "sft.safety"]
prompts = "file:advbench.csv"
field = "goal"
benign = "file:benign.jsonl"
sampling = { max_new_tokens = 32 }
"#,
    );
    assert_eq!(Project::ids(&plan, "evals/"), ["evals/safety/cat", "evals/safety/safety"]);
    let node = plan.node("evals/safety/safety").unwrap();
    assert_eq!(node.inputs["prompts"].source, InputSource::Path("file:advbench.csv".into()));
    assert_eq!(node.inputs["benign"].source, InputSource::Path("file:benign.jsonl".into()));
    let settings = &node.config["settings"];
    assert_eq!(settings["sampling"]["max_new_tokens"], 32);
    assert_eq!(settings["sampling"]["temperature"], 0.0);
    assert!(settings["lexicons"]["eng_Latn"].as_array().unwrap().iter().any(|p| p == "i cannot"));
}

#[test]
fn on_naming_an_entry_the_plan_does_not_produce_is_an_error_with_a_suggestion() {
    let project = Project::new();
    let err = project.error(
        r#"
[evals.bpb]
plugin = "eval.perplexity"
on = ["stages.cap", "stages.cta"]
files = { eng_Latn = "file:eng.txt" }
"#,
    );
    insta::assert_snapshot!(err);
}

#[test]
fn on_naming_a_section_without_models_is_an_error() {
    let project = Project::new();
    let err = project.error(
        r#"
[evals.bpb]
plugin = "eval.perplexity"
on = ["sources.eng_web", "cap"]
files = { eng_Latn = "file:eng.txt" }
"#,
    );
    insta::assert_snapshot!(err);
}

#[test]
fn a_checkpoint_named_twice_is_an_error() {
    let project = Project::new();
    let err = project.error(
        r#"
[evals.bpb]
plugin = "eval.perplexity"
on = ["stages.cap", "stages.cap"]
files = { eng_Latn = "file:eng.txt" }
"#,
    );
    insta::assert_snapshot!(err);
}

#[test]
fn bad_references_in_evaluator_configs_are_errors() {
    let project = Project::new();
    let perplexity = project.error(
        r#"
[evals.bpb]
plugin = "eval.perplexity"
on = ["stages.cap"]
sources = ["eng_web"]
files = { eng_Latn = "data/eng.txt" }
"#,
    );
    let nothing = project.error("[evals.bpb]\nplugin = \"eval.perplexity\"\non = [\"stages.cap\"]\n");
    let choice = project
        .error("[evals.choice]\nplugin = \"eval.choice\"\non = [\"stages.cap\"]\ntasks = { arc = \"arc.jsonl\" }\n");
    let safety =
        project.error("[evals.safety]\nplugin = \"eval.safety\"\non = [\"stages.cap\"]\nprompts = \"advbench.csv\"\n");
    insta::assert_snapshot!(format!("{perplexity}\n---\n{nothing}\n---\n{choice}\n---\n{safety}"));
}

#[test]
fn an_unknown_device_is_an_error() {
    let project = Project::new();
    let err = project.error(
        "[evals.bpb]\nplugin = \"eval.perplexity\"\non = [\"stages.cap\"]\nfiles = { eng_Latn = \"file:e.txt\" }\ndevice = \"gpu\"\n",
    );
    insta::assert_snapshot!(err);
}

#[test]
fn unknown_config_keys_are_rejected() {
    let project = Project::new();
    let err = project
        .error(
            "[evals.bpb]\nplugin = \"eval.perplexity\"\non = [\"stages.cap\"]\nfiles = { eng_Latn = \"file:e.txt\" }\nstrde = 4\n",
        );
    assert!(err.contains("strde"), "{err}");
}

#[test]
fn code_plans_problems_with_the_format_stop_sequences_by_default() {
    let project = Project::new();
    let plan = project.plan(
        r#"
[evals.humaneval]
plugin = "eval.code"
on = ["stages.base", "stages.cat"]
problems = "file:HumanEval.jsonl.gz"
format = "humaneval"
n = 10
k = [1, 10]
sampling = { temperature = 0.8, top_p = 0.95, max_new_tokens = 512 }
limits = { wall_s = 5 }
"#,
    );
    assert_eq!(Project::ids(&plan, "evals/"), ["evals/humaneval/base", "evals/humaneval/cat"]);
    let node = plan.node("evals/humaneval/cat").unwrap();
    assert_eq!(node.inputs["problems"].source, InputSource::Path("file:HumanEval.jsonl.gz".into()));
    let settings = &node.config["settings"];
    let stop: Vec<&str> =
        settings["sampling"]["stop"].as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect();
    assert_eq!(stop, aurora_eval::code::stop_sequences(aurora_eval::code::Format::Humaneval));
    assert_eq!(settings["limits"]["wall_s"], 5);
    assert_eq!(settings["limits"]["cpu_s"], 10);
}

#[test]
fn code_rejects_k_above_n_and_greedy_resampling() {
    let project = Project::new();
    let err = project.error(
        r#"
[evals.mbpp]
plugin = "eval.code"
on = ["stages.cat"]
problems = "file:mbpp.jsonl"
format = "mbpp"
n = 5
k = [1, 10]
"#,
    );
    insta::assert_snapshot!(err);
}

#[test]
fn code_with_generations_is_one_node_without_a_model() {
    let project = Project::new();
    let plan = project.plan(
        r#"
[evals.multiple_cpp]
plugin = "eval.code"
problems = "file:humaneval-cpp.jsonl"
format = "multipl-e"
generations = "file:generations_multiple-cpp.json"
k = [1, 10]
"#,
    );
    assert_eq!(Project::ids(&plan, "evals/"), ["evals/multiple_cpp"]);
    let node = plan.node("evals/multiple_cpp").unwrap();
    let inputs: Vec<&str> = node.inputs.keys().map(String::as_str).collect();
    assert_eq!(inputs, ["generations", "problems"]);
    assert_eq!(node.inputs["generations"].source, InputSource::Path("file:generations_multiple-cpp.json".into()));
    // Nothing of a model (runtime, sampling) is in its key; n is the file's.
    assert_eq!(node.config["evaluator"], "evals/multiple_cpp");
    assert!(node.config.get("runtime").is_none());
    assert!(node.config["settings"]["sampling"].is_null());
    assert!(node.config["settings"]["n"].is_null());
    assert!(node.config["settings"]["task_ids"].is_null());
}

#[test]
fn mbpp_scores_the_test_split_by_default() {
    let project = Project::new();
    let entry = |selection: &str| {
        format!(
            "[evals.mbpp]\nplugin = \"eval.code\"\non = [\"stages.cat\"]\nproblems = \"file:mbpp.jsonl\"\nformat = \"mbpp\"\n{selection}"
        )
    };
    let ids =
        |selection: &str| config(&project.plan(&entry(selection)), "evals/mbpp/cat")["settings"]["task_ids"].clone();
    assert_eq!(ids(""), serde_json::json!([11, 510]));
    assert_eq!(ids("split = \"test\"\n"), serde_json::json!([11, 510]));
    assert_eq!(ids("split = \"all\"\n"), serde_json::Value::Null);
    assert_eq!(ids("task_ids = [1, 10]\n"), serde_json::json!([1, 10]));
}

#[test]
fn code_rejects_misplaced_generations_and_mbpp_selections() {
    let project = Project::new();
    let errors = [
        // A model setting beside `generations`.
        "[evals.g]\nplugin = \"eval.code\"\non = [\"stages.cat\"]\nproblems = \"file:p.jsonl\"\nformat = \"humaneval\"\ngenerations = \"file:g.json\"\nsampling = { temperature = 0.2, max_new_tokens = 64 }\n",
        // Neither checkpoints nor generations.
        "[evals.g]\nplugin = \"eval.code\"\nproblems = \"file:p.jsonl\"\nformat = \"humaneval\"\n",
        "[evals.g]\nplugin = \"eval.code\"\nproblems = \"file:p.jsonl\"\nformat = \"humaneval\"\ngenerations = \"g.json\"\nsplit = \"all\"\n",
        "[evals.g]\nplugin = \"eval.code\"\non = [\"stages.cat\"]\nproblems = \"file:p.jsonl\"\nformat = \"mbpp\"\nsplit = \"all\"\ntask_ids = [1, 5]\n",
        "[evals.g]\nplugin = \"eval.code\"\non = [\"stages.cat\"]\nproblems = \"file:p.jsonl\"\nformat = \"mbpp\"\ntask_ids = [510, 11]\n",
    ]
    .map(|body| project.error(body));
    insta::assert_snapshot!(errors.join("\n---\n"));
}
