//! `eval.code` scoring saved completions (`generations = "file:..."`) without a model: the real
//! HumanEval's canonical solutions score 164/164, MBPP's split selects the task ids
//! bigcode-evaluation-harness scores, and mismatched files are clear errors. The worker is a
//! tripwire: one test function, so that the environment variable naming it is set before any
//! other thread runs.

mod code_common;
mod common;

use std::time::Instant;

use aurora_eval::code::{self, Format};
use code_common::{execute, lines};
use common::Project;
use serde_json::{Value, json};

#[test]
fn generations_files_are_scored_without_a_model() {
    let tools = tempfile::tempdir().unwrap();
    let tripped = tools.path().join("worker-started");
    let worker = tools.path().join("tripwire-worker");
    std::fs::write(&worker, format!("#!/bin/sh\ntouch '{}'\nexit 1\n", tripped.display())).unwrap();
    std::fs::set_permissions(&worker, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    // SAFETY: set before any other thread of this test binary exists (the only test).
    unsafe { std::env::set_var(aurora_worker_api::client::WORKER_ENV, &worker) };

    mbpp_split_selects_the_scored_task_ids();
    generations_must_match_the_problems();
    humaneval_canonical_solutions_score_164_of_164();
    assert!(!tripped.exists(), "a worker was started");
}

fn mbpp_problem(id: u64) -> String {
    json!({
        "task_id": id,
        "text": format!("Return {id}."),
        "code": format!("def f{id}():\n    return {id}"),
        "test_list": [format!("assert f{id}() == {id}")],
        "test_setup_code": "",
        "challenge_test_list": [],
    })
    .to_string()
}

/// Right generations (bigcode's shape: the prompt, then the completion) for `ids`.
fn mbpp_generations(ids: &[u64]) -> String {
    let problems: Vec<Vec<String>> = ids
        .iter()
        .map(|id| {
            let p = &code::load_problems(mbpp_file(&[*id]).path(), Format::Mbpp).unwrap()[0];
            vec![code::generation(p, code::reference_completion(p))]
        })
        .collect();
    serde_json::to_string(&problems).unwrap()
}

fn mbpp_file(ids: &[u64]) -> tempfile::NamedTempFile {
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), ids.iter().map(|id| mbpp_problem(*id) + "\n").collect::<String>()).unwrap();
    f
}

const MBPP_IDS: [u64; 7] = [1, 2, 11, 12, 510, 511, 600];

fn mbpp_entry(project: &Project, selection: &str, ids: &[u64]) -> Result<Value, String> {
    project.write("mbpp.jsonl", MBPP_IDS.iter().map(|id| mbpp_problem(*id) + "\n").collect::<String>());
    project.write("generations.json", mbpp_generations(ids));
    let plan = project.plan(&format!(
        "[evals.mbpp]\nplugin = \"eval.code\"\nproblems = \"file:mbpp.jsonl\"\nformat = \"mbpp\"\ngenerations = \"file:generations.json\"\n{selection}"
    ));
    execute(project, &plan, "evals/mbpp").map(|s| s.results)
}

fn mbpp_split_selects_the_scored_task_ids() {
    let project = Project::new();
    // The default: the test split, task ids 11-510.
    let test = mbpp_entry(&project, "", &[11, 12, 510]).unwrap();
    assert_eq!(test["metrics"], json!({ "pass@1.mbpp": 1.0 }));
    assert_eq!(test["details"]["problems"], 3);
    assert_eq!(test["details"]["task_ids"], json!([11, 510]));
    let all = mbpp_entry(&project, "split = \"all\"\n", &MBPP_IDS).unwrap();
    assert_eq!(all["details"]["problems"], 7);
    assert!(all["details"].get("task_ids").is_none());
    let range = mbpp_entry(&project, "task_ids = [2, 11]\n", &[2, 11]).unwrap();
    assert_eq!(
        (range["details"]["problems"].clone(), range["metrics"].clone()),
        (json!(2), json!({ "pass@1.mbpp": 1.0 }))
    );
    // Generations for every problem of the file do not fit the test split.
    let err = mbpp_entry(&project, "", &MBPP_IDS).unwrap_err();
    assert_eq!(
        err,
        "evals/mbpp: [PROJECT]/generations.json: generations for 7 problems, but 3 problems are scored (in file order, \
         after the MBPP split); the generations must be for exactly these problems"
    );
    // No problem in the range.
    let err = mbpp_entry(&project, "task_ids = [700, 800]\n", &[1]).unwrap_err();
    assert_eq!(
        err,
        "[PROJECT]/mbpp.jsonl: no problem has a task_id in 700..=800 (7 problems, task ids 1 to 600); use `split = \"all\"` \
         or `task_ids = [LO, HI]`"
    );
}

fn generations_must_match_the_problems() {
    let project = Project::new();
    project.write("mbpp.jsonl", mbpp_problem(11) + "\n" + &mbpp_problem(12) + "\n");
    let plan = |extra: &str| {
        project.plan(&format!(
            "[evals.g]\nplugin = \"eval.code\"\nproblems = \"file:mbpp.jsonl\"\nformat = \"mbpp\"\ngenerations = \"file:g.jsonl\"\nk = [1]\n{extra}"
        ))
    };
    let run = |text: &str, extra: &str| {
        project.write("g.jsonl", text);
        execute(&project, &plan(extra), "evals/g").map(|s| (s.results, s.completions))
    };
    // JSON Lines, two samples each: the first right, the second wrong; n = 1 takes the first.
    let both = "[\"def f11():\\n    return 11\", \"def f11():\\n    return 0\"]\n[\"def f12():\\n    return 12\", \"def f12():\\n    return 0\"]\n";
    let (results, completions) = run(both, "").unwrap();
    assert_eq!(results["metrics"], json!({ "pass@1.mbpp": 0.5 }));
    assert_eq!(results["details"]["samples_per_problem"], 2);
    assert_eq!(lines(&completions).len(), 4);
    let (results, _) = run(both, "n = 1\n").unwrap();
    assert_eq!(results["metrics"], json!({ "pass@1.mbpp": 1.0 }));
    let uneven = "[\"a\", \"b\"]\n[\"c\"]\n";
    assert_eq!(
        run(uneven, "").unwrap_err(),
        "evals/g: [PROJECT]/g.jsonl: problem 2 (12) has 1 generations but problem 1 has 2; set `n` to score the first n of each"
    );
    assert_eq!(
        run(uneven, "n = 2\n").unwrap_err(),
        "evals/g: [PROJECT]/g.jsonl: problem 2 (12) has 1 generations, fewer than n = 2"
    );
    assert_eq!(
        run("[\"a\"]\n{\"b\": 1}\n", "").unwrap_err(),
        "[PROJECT]/g.jsonl:2: not an array of strings (invalid type: map, expected a sequence at line 1 column 0); \
         expected a JSON array (bigcode-evaluation-harness's --save_generations: one list of strings per problem) or \
         JSON Lines with one array of strings per problem"
    );
}

/// bigcode-evaluation-harness's `--save_generations` of a perfect model: every other problem
/// the prompt followed by the canonical solution (as bigcode saves it), the others the solution
/// alone. 164/164, and generations.jsonl holds every one as prompt + completion.
fn humaneval_canonical_solutions_score_164_of_164() {
    let Some(dir) = common::shared("code") else { return };
    let problems = code::load_problems(dir.join("HumanEval.jsonl.gz"), Format::Humaneval).unwrap();
    assert_eq!(problems.len(), 164);
    let generations: Vec<Vec<String>> = problems
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let solution = code::reference_completion(p);
            vec![if i % 2 == 0 { code::generation(p, solution) } else { solution.to_string() }]
        })
        .collect();
    let project = Project::new();
    std::fs::copy(dir.join("HumanEval.jsonl.gz"), project.dir.path().join("HumanEval.jsonl.gz")).unwrap();
    project.write("generations_humaneval.json", serde_json::to_string_pretty(&generations).unwrap());
    let plan = project.plan(
        "[evals.humaneval]\nplugin = \"eval.code\"\nproblems = \"file:HumanEval.jsonl.gz\"\nformat = \"humaneval\"\ngenerations = \"file:generations_humaneval.json\"\n",
    );
    let node = plan.node("evals/humaneval").unwrap();
    assert!(!node.inputs.contains_key("model"), "no model: {:?}", node.inputs.keys());
    let started = Instant::now();
    let scored = execute(&project, &plan, "evals/humaneval").unwrap();
    eprintln!("HumanEval canonical solutions from a generations file: 164 programs in {:.2?}", started.elapsed());
    assert_eq!(scored.results["metrics"], json!({ "pass@1.humaneval": 1.0 }));
    assert_eq!(scored.results["details"]["solved_problems"], 164);
    assert_eq!(scored.results["checkpoint"], "generations");
    assert_eq!(scored.results["tokens_total"], Value::Null);
    let saved = lines(&scored.generations);
    for (p, line) in problems.iter().zip(&saved) {
        assert_eq!(line, &json!([code::generation(p, code::reference_completion(p))]), "{}", p.task_id);
    }
}
