//! MultiPL-E through `eval.code` with the real toolchains: for each language, completions that
//! are right score pass@1 = 1 and wrong ones (failing assertions, compile and parse errors)
//! pass@1 = 0, compiled and run in the sandbox, with the same bytes in every run. The problems
//! are written for these tests (`tests/data/multiple`); a language whose toolchain is missing is
//! skipped with what to install (and fails where `CI=true`).

mod code_common;
mod common;

use std::time::Instant;

use aurora_eval::toolchain::Language;
use code_common::{Scored, copy_multiple, execute, have, lines};
use common::Project;
use serde_json::json;

/// Scores `LANG.WHICH.json` against `LANG.jsonl` with a generations-only entry.
fn score(lang: &str, which: &str) -> Scored {
    let project = Project::new();
    copy_multiple(&project, &format!("{lang}.jsonl"), "problems.jsonl");
    copy_multiple(&project, &format!("{lang}.{which}.json"), "generations.json");
    let plan = project.plan(
        "[evals.multiple]\nplugin = \"eval.code\"\nproblems = \"file:problems.jsonl\"\nformat = \"multipl-e\"\ngenerations = \"file:generations.json\"\n",
    );
    execute(&project, &plan, "evals/multiple").unwrap_or_else(|e| panic!("{lang} {which}: {e}"))
}

/// Right completions pass every problem, wrong ones none, and the wrong ones' verdicts (the
/// compilers' and runtimes' messages) are byte-identical in a second run. `wrong_detail`: what
/// each wrong verdict's detail contains, in problem order.
fn right_and_wrong(language: Language, wrong_detail: [&str; 3]) {
    if !have(language) {
        return;
    }
    let lang = language.multiple_name();
    let metric = format!("pass@1.multiple-{lang}");
    let started = Instant::now();
    let right = score(lang, "right");
    assert_eq!(right.results["metrics"], json!({ &metric: 1.0 }), "{}", right.completions);
    assert_eq!(right.results["details"]["language"], lang);
    assert_eq!(right.results["checkpoint"], "generations");
    let wrong = score(lang, "wrong");
    assert_eq!(wrong.results["metrics"], json!({ &metric: 0.0 }), "{}", wrong.completions);
    assert_eq!(wrong.results["details"]["solved_problems"], 0);
    for (verdict, want) in lines(&wrong.completions).iter().zip(wrong_detail) {
        let detail = verdict["detail"].as_str().unwrap();
        assert!(detail.contains(want), "{lang} {}: {want:?} not in {detail:?}", verdict["task_id"]);
    }
    assert!(!wrong.completions.contains("aurora-sandbox-"), "the run directory leaks: {}", wrong.completions);
    let again = score(lang, "wrong");
    assert_eq!(again.completions, wrong.completions, "{lang}: verdicts differ between runs");
    // generations.jsonl: bigcode's shape, the prompt followed by the completion.
    let saved = lines(&right.generations);
    let problems = lines(&std::fs::read_to_string(format!("{}/{lang}.jsonl", code_common::MULTIPLE)).unwrap());
    let bigcode: Vec<Vec<String>> =
        serde_json::from_str(&std::fs::read_to_string(format!("{}/{lang}.right.json", code_common::MULTIPLE)).unwrap())
            .unwrap();
    assert_eq!(saved.len(), problems.len());
    for ((line, problem), given) in saved.iter().zip(&problems).zip(&bigcode) {
        assert_eq!(line, &json!(given), "the right generations are saved as given");
        assert!(line[0].as_str().unwrap().starts_with(problem["prompt"].as_str().unwrap()));
    }
    eprintln!("{language}: 3 programs right, wrong twice in {:.2?}", started.elapsed());
}

#[test]
fn cpp_with_g_plus_plus() {
    right_and_wrong(
        Language::Cpp,
        [
            "signal 11: program: program.cpp:11: int main(): Assertion `candidate((2), (3)) == (5)' failed.",
            "Assertion",
            "error: ",
        ],
    );
}

#[test]
fn java_with_javac_and_the_jvm() {
    right_and_wrong(
        Language::Java,
        ["java.lang.AssertionError", "java.lang.AssertionError", "error: cannot find symbol"],
    );
}

#[test]
fn php_with_php_cli() {
    right_and_wrong(Language::Php, ["Test failed!", "Test failed!", "Parse error: syntax error"]);
}

#[test]
fn bash() {
    right_and_wrong(Language::Bash, ["exit 1", "exit 1", "exit 1"]);
}

#[test]
fn typescript_with_tsc_and_node() {
    right_and_wrong(Language::TypeScript, ["AssertionError", "AssertionError", "error TS2322"]);
}

#[test]
fn javascript_with_node() {
    right_and_wrong(Language::JavaScript, ["AssertionError", "AssertionError", "AssertionError"]);
}

#[test]
fn csharp_with_mono() {
    right_and_wrong(Language::CSharp, ["DefaultTraceListener.Fail", "DefaultTraceListener.Fail", "error CS1061"]);
}

#[test]
fn python_problems_of_multipl_e() {
    right_and_wrong(Language::Python, ["AssertionError", "AssertionError", "SyntaxError"]);
}

/// A language the machine cannot run is found when planning, at the entry's `problems`, naming
/// the Debian package. The plan runs in a child process of this test binary whose `PATH` has no
/// compiler (the toolchain lookup reads the process's `PATH`).
#[test]
fn a_missing_toolchain_is_a_located_plan_error() {
    const CHILD: &str = "AURORA_EVAL_TEST_CHILD";
    if std::env::var_os(CHILD).is_some() {
        let project = Project::new();
        copy_multiple(&project, "cpp.jsonl", "humaneval-cpp.jsonl");
        let err = project.error(
            "[evals.multiple_cpp]\nplugin = \"eval.code\"\non = [\"stages.cap\"]\nproblems = \"file:humaneval-cpp.jsonl\"\nformat = \"multipl-e\"\n",
        );
        println!("<<<{err}>>>");
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["a_missing_toolchain_is_a_located_plan_error", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .env("PATH", "/nonexistent-aurora-test-path")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let err = stdout.split_once("<<<").and_then(|(_, rest)| rest.split_once(">>>")).map(|(e, _)| e).unwrap();
    insta::assert_snapshot!(err);
}

/// A problems file in a language eval.code does not run, or in two languages, is reported at
/// `problems` when planning.
#[test]
fn unknown_and_mixed_languages_are_located_plan_errors() {
    let project = Project::new();
    let cpp = std::fs::read_to_string(format!("{}/cpp.jsonl", code_common::MULTIPLE)).unwrap();
    let first = cpp.lines().next().unwrap();
    project.write("rkt.jsonl", first.replace("\"language\": \"cpp\"", "\"language\": \"rkt\""));
    project.write(
        "mixed.jsonl",
        format!("{first}\n{}\n", first.replace("\"language\": \"cpp\"", "\"language\": \"java\"")),
    );
    let entry = |file: &str| {
        format!(
            "[evals.m]\nplugin = \"eval.code\"\nproblems = \"file:{file}\"\nformat = \"multipl-e\"\ngenerations = \"file:g.json\"\n"
        )
    };
    let rkt = project.error(&entry("rkt.jsonl"));
    let mixed = project.error(&entry("mixed.jsonl"));
    insta::assert_snapshot!(format!("{rkt}\n---\n{mixed}"));
}
