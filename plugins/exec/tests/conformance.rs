//! `exec.command` through the conformance suite every plugin crate can run
//! (`aurora_core::testing`): a file input and a step input, executed twice to identical bytes.

use aurora_core::testing::{Case, conformance};
use aurora_exec::ExecCommand;

const MANIFEST: &str = r#"
[experiment]
name = "exec-conformance"
seed = 1

[steps.shout]
plugin = "exec.command"
argv = ["sh", "-c", 'tr a-z A-Z < "$AURORA_IN_TEXT" > "$AURORA_OUT/out.txt"']
inputs = { text = "file:data/in.txt" }

[steps.count]
plugin = "exec.command"
argv = ["sh", "-c", 'wc -c < "$AURORA_IN_SHOUT/out.txt" > "$AURORA_OUT/bytes.txt"; echo "$AURORA_SEED" > "$AURORA_OUT/seed.txt"']
inputs = { shout = "steps.shout" }
"#;

#[test]
fn exec_command_conforms() {
    let outcome = conformance::<ExecCommand>(&Case::new(MANIFEST).file("data/in.txt", "hello\n"));
    let read = |node: &str, file: &str| std::fs::read_to_string(outcome.artifact(node).join(file)).unwrap();
    assert_eq!(read("steps/shout", "out.txt"), "HELLO\n");
    assert_eq!(read("steps/count", "bytes.txt").trim(), "6");
}
