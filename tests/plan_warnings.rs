//! Plan-time warnings: a mixture share that its source's files cannot hold, found from file
//! sizes before anything is tokenized, located at the weight; silent where the files cannot tell.

mod common;

use common::{Project, assert_code, stderr};

fn project(source_file: &str, tokens: u64) -> Project {
    let p = Project::new();
    let docs: String =
        (0..3).map(|i| format!("{{\"text\": \"hello world number {i}, a small document.\"}}\n")).collect();
    match source_file {
        "web.jsonl" => drop(p.write("web.jsonl", &docs)),
        "web.jsonl.zst" => {
            // Streamed: the frame does not declare its size, so the bound is unknown.
            let mut out = Vec::new();
            let mut encoder = zstd::stream::write::Encoder::new(&mut out, 3).unwrap();
            encoder.include_contentsize(false).unwrap();
            std::io::Write::write_all(&mut encoder, docs.as_bytes()).unwrap();
            encoder.finish().unwrap();
            std::fs::write(p.path("web.jsonl.zst"), out).unwrap();
        }
        other => panic!("{other}"),
    }
    p.write(
        "aurora.toml",
        &format!(
            "[experiment]\nname = \"w\"\nseed = 1\n\n[sources.web]\nplugin = \"source.jsonl\"\nfiles = [\"file:{source_file}\"]\n\
             lang = \"eng_Latn\"\n\n[tokenizers.bpe]\nplugin = \"tokenizer.bpe\"\nvocab_size = 300\nsample = [\"sources.web\"]\n\n\
             [mixtures.m]\nplugin = \"mixer.blend\"\ntokenizer = \"tokenizers.bpe\"\nweights = {{ web = 1 }}\n\
             tokens = {tokens}\nseq_len = 16\n"
        ),
    );
    p
}

#[test]
fn a_share_the_files_cannot_hold_is_a_located_warning_before_anything_runs() {
    let p = project("web.jsonl", 1_000_000);
    let out = p.run(&["plan", "aurora.toml"]);
    assert_code(&out, 0, "a warning does not fail the plan");
    insta::assert_snapshot!(p.redact(&stderr(&out)), @r"
    warning: mixture `m` asks `web` for 1.000 M tokens (100.0% of 1.000 M tokens), but its files hold at most 156 bytes of text, so at most 156 tokens at one token per byte: 6.410e3 passes over it, above max_repetition = 4
      --> aurora.toml:18:19
       |
    18 | weights = { web = 1 }
       |                   ^
       = at: /mixtures/m/weights/web
       = help: building the mixture will fail after `sources.web` is tokenized: add data to `web`, lower its weight or `tokens`, or raise `max_repetition`
    ");
}

#[test]
fn no_warning_where_the_share_fits_or_the_files_cannot_tell() {
    let fits = project("web.jsonl", 100);
    assert_eq!(stderr(&fits.run(&["plan", "aurora.toml"])), "");
    let unknown = project("web.jsonl.zst", 1_000_000);
    let out = unknown.run(&["plan", "aurora.toml"]);
    assert_code(&out, 0, "plan");
    assert_eq!(stderr(&out), "", "a frame without a declared size gives no bound, so no warning");
}
