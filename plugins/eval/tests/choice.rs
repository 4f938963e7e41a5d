//! eval.choice: task files, request building (lm-evaluation-harness conventions) and scoring.

mod common;

use aurora_eval::choice::{Item, argmax, build_requests, context, predict, read_task, score, select_shots};
use aurora_worker_api::LoglikResult;
use common::{Project, SAMPLE};
use proptest::prelude::*;

fn item(query: &str, choices: &[&str], gold: usize) -> Item {
    Item { query: query.into(), choices: choices.iter().map(|c| c.to_string()).collect(), gold }
}

#[test]
fn the_shipped_sample_tasks_parse() {
    for lang in ["hin_Deva", "vie_Latn"] {
        let items = read_task(&std::path::Path::new(SAMPLE).join(format!("choice/{lang}.jsonl"))).unwrap();
        assert!(items.len() >= 2, "{lang}: {} items", items.len());
        assert!(items.iter().all(|i| i.gold < i.choices.len() && !i.query.is_empty()));
    }
}

#[test]
fn task_file_errors_name_the_file_and_line() {
    let project = Project::new();
    let good = r#"{"query": "2 + 2 =", "choices": ["4", "5"], "gold": 0}"#;
    let cases = [
        ("missing_gold", r#"{"query": "q", "choices": ["a", "b"]}"#),
        ("gold_out_of_range", r#"{"query": "q", "choices": ["a", "b", "c"], "gold": 3}"#),
        ("negative_gold", r#"{"query": "q", "choices": ["a", "b"], "gold": -1}"#),
        ("missing_query", r#"{"question": "q", "choices": ["a", "b"], "gold": 0}"#),
        ("choices_not_strings", r#"{"query": "q", "choices": ["a", 2], "gold": 0}"#),
        ("one_choice", r#"{"query": "q", "choices": ["a"], "gold": 0}"#),
        ("not_json", r#"{"query": "q", "#),
    ];
    let mut report = String::new();
    for (name, bad) in cases {
        let path = project.write(&format!("{name}.jsonl"), format!("{good}\n\n{bad}\n"));
        let err = read_task(&path).unwrap_err().to_string();
        assert!(err.contains(&format!("{name}.jsonl:3:")), "the bad record is on line 3: {err}");
        report.push_str(&project.redact(&err));
        report.push('\n');
    }
    insta::assert_snapshot!(report);
}

#[test]
fn zero_shot_requests_are_query_then_space_choice() {
    let tasks = vec![("t".to_string(), vec![item("Q1", &["a", "bb"], 1), item("Q2", &["c", "d", "e"], 0)])];
    let (requests, index) = build_requests(&tasks, 0, 1).unwrap();
    let pairs: Vec<(&str, &str)> = requests.iter().map(|r| (r.context.as_str(), r.continuation.as_str())).collect();
    assert_eq!(pairs, [("Q1", " a"), ("Q1", " bb"), ("Q2", " c"), ("Q2", " d"), ("Q2", " e")]);
    assert_eq!(index, [(0, 0, 0), (0, 0, 1), (0, 1, 0), (0, 1, 1), (0, 1, 2)]);
}

#[test]
fn shots_are_gold_answered_examples_before_the_query() {
    let items = vec![item("Q0", &["a0", "b0"], 1), item("Q1", &["a1", "b1"], 0), item("Q2", &["a2", "b2"], 0)];
    assert_eq!(context(&items, 0, &[2, 1]), "Q2 a2\n\nQ1 a1\n\nQ0");
    let tasks = vec![("t".to_string(), items)];
    let (requests, _) = build_requests(&tasks, 2, 9).unwrap();
    for (r, own) in requests.iter().zip(["Q0", "Q0", "Q1", "Q1", "Q2", "Q2"]) {
        let blocks: Vec<&str> = r.context.split("\n\n").collect();
        assert_eq!(blocks.len(), 3);
        assert_eq!(*blocks.last().unwrap(), own);
        assert!(blocks[..2].iter().all(|b| !b.starts_with(own)), "an item is never its own shot: {}", r.context);
    }
    // The same seed gives the same prompts (every checkpoint sees the same shots).
    assert_eq!(build_requests(&tasks, 2, 9).unwrap().0, requests);
}

#[test]
fn too_many_shots_for_the_task_is_an_error() {
    let tasks = vec![("hin_Deva.arc".to_string(), vec![item("Q0", &["a", "b"], 0), item("Q1", &["a", "b"], 0)])];
    let err = build_requests(&tasks, 2, 0).unwrap_err();
    insta::assert_snapshot!(err, @"task `hin_Deva.arc` has 2 items; 2 shots need at least 3 (the item itself is never a shot)");
}

proptest! {
    #[test]
    fn shot_selection_is_distinct_excludes_the_item_and_is_seeded(n in 1usize..40, k in 0usize..10, seed: u64, ex in 0usize..40) {
        let exclude = ex % n;
        let shots = select_shots(n, exclude, k, seed);
        prop_assert_eq!(shots.len(), k.min(n - 1));
        prop_assert!(shots.iter().all(|&s| s < n && s != exclude));
        let mut unique = shots.clone();
        unique.sort_unstable();
        unique.dedup();
        prop_assert_eq!(unique.len(), shots.len());
        prop_assert_eq!(select_shots(n, exclude, k, seed), shots);
    }
}

#[test]
fn argmax_takes_the_first_maximum() {
    assert_eq!(argmax(&[-3.0, -1.0, -1.0, -2.0]), 1);
    assert_eq!(argmax(&[-0.5]), 0);
}

fn strings(choices: &[&str]) -> Vec<String> {
    choices.iter().map(|c| c.to_string()).collect()
}

#[test]
fn acc_norm_divides_by_the_choices_characters() {
    // "cat" (3 characters) at -4.0 beats "elephant" (8) at -6.3 unnormalised; per character
    // -1.33 vs -0.79, the longer one wins.
    assert_eq!(predict(&[-4.0, -6.3], &strings(&["cat", "elephant"])), (0, 1));
    // Characters, not bytes: "है" is 2 characters (6 bytes), "ab" 2: per character -1.1 vs -0.6.
    assert_eq!(predict(&[-2.2, -1.2], &strings(&["है", "ab"])), (1, 1));
}

/// lm-evaluation-harness's multiple-choice scoring, transcribed from its `process_results`:
/// `acc = argmax(lls) == gold`, `acc_norm = argmax(lls / [len(i) for i in choices]) == gold`, with
/// numpy's first-maximum argmax and Python's `len` (characters).
fn harness(lls: &[f64], choices: &[String]) -> (usize, usize) {
    let first_max =
        |values: &[f64]| values.iter().enumerate().fold(0, |best, (i, v)| if *v > values[best] { i } else { best });
    let completion_len: Vec<f64> = choices.iter().map(|c| c.chars().count() as f64).collect();
    let normed: Vec<f64> = lls.iter().zip(&completion_len).map(|(l, n)| l / n).collect();
    (first_max(lls), first_max(&normed))
}

proptest::proptest! {
    /// On any fixed model output (log-likelihoods) and any choices, ASCII or not, eval.choice
    /// predicts what the harness's formula does.
    #[test]
    fn predictions_match_the_harness_formula(
        cases in proptest::collection::vec((-50.0f64..0.0, "[a-zé ह日]{1,12}"), 2..6),
    ) {
        let (lls, choices): (Vec<f64>, Vec<String>) = cases.into_iter().unzip();
        proptest::prop_assert_eq!(predict(&lls, &choices), harness(&lls, &choices));
    }
}

#[test]
fn scores_per_task_from_hand_written_logliks() {
    let tasks = vec![
        ("a".to_string(), vec![item("Q", &["x", "yyyyyyyy"], 1), item("R", &["x", "y", "z"], 2)]),
        ("b".to_string(), vec![item("S", &["p", "q"], 0)]),
    ];
    let (_, index) = build_requests(&tasks, 0, 0).unwrap();
    let logprobs = [-1.0, -4.0, -3.0, -2.0, -1.0, -0.5, -0.25];
    let scored: Vec<LoglikResult> = logprobs
        .iter()
        .enumerate()
        .map(|(i, &lp)| LoglikResult { logprob: lp, greedy: false, tokens: 1, truncated: u64::from(i == 5) })
        .collect();
    let (scores, items) = score(&tasks, &index, &scored);
    // Task a: item 0 acc picks x (wrong), acc_norm picks " yyyyyyyy" (-4/9 > -1/2: right);
    // item 1 picks z both ways (right).
    assert_eq!((scores["a"].items, scores["a"].correct, scores["a"].correct_norm), (2, 1, 2));
    assert_eq!(scores["a"].acc(), 0.5);
    assert_eq!(scores["a"].acc_norm(), 1.0);
    // Task b: q (-0.25) beats p (-0.5): wrong; its context was truncated.
    assert_eq!((scores["b"].correct, scores["b"].correct_norm, scores["b"].truncated), (0, 0, 1));
    assert_eq!(items.len(), 3);
    assert_eq!((items[0].pred, items[0].pred_norm), (0, 1));
    assert_eq!(items[1].logprobs, [-3.0, -2.0, -1.0]);
}
