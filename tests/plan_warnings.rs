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

/// With a tokenizer that is a file of the manifest, the source's tokens are estimated at the
/// bytes per token it makes of the source's first documents: a share within the byte bound but
/// beyond the estimate is found before anything runs.
#[test]
fn a_tokenizer_file_measures_bytes_per_token_on_a_sample_of_the_source() {
    let Some(tokenizer) = aurora_process_testkit::shared_data("tokenizer/gpt2_tokenizer.json") else { return };
    let p = Project::new();
    let sentence = "The quick brown fox jumps over the lazy dog near the quiet river bank. ";
    let docs: String = (0..40).map(|i| format!("{{\"text\": \"{i}: {}\"}}\n", sentence.repeat(4))).collect();
    p.write("web.jsonl", &docs);
    let manifest = |tokens: u64| {
        format!(
            "[experiment]\nname = \"w\"\nseed = 1\n\n[sources.web]\nplugin = \"source.jsonl\"\nfiles = [\"file:web.jsonl\"]\n\
             lang = \"eng_Latn\"\n\n[tokenizers.gpt2]\nplugin = \"tokenizer.file\"\npath = \"file:{}\"\n\n\
             [mixtures.m]\nplugin = \"mixer.blend\"\ntokenizer = \"tokenizers.gpt2\"\nweights = {{ web = 1 }}\n\
             tokens = {tokens}\nseq_len = 16\nmax_repetition = 1\n",
            tokenizer.display()
        )
    };
    let bytes = docs.len() as u64;
    // Within the file's bytes (so the one-token-per-byte bound says nothing), beyond its tokens.
    p.write("aurora.toml", &manifest(bytes / 2));
    let out = p.run(&["plan", "aurora.toml"]);
    assert_code(&out, 0, "a warning does not fail the plan");
    let warning = stderr(&out);
    assert!(warning.contains("bytes per token `tokenizers.gpt2` makes of its text"), "{warning}");
    assert!(warning.contains("warning: mixture `m` asks `web`"), "{warning}");
    // A share its tokens hold: no warning.
    p.write("aurora.toml", &manifest(bytes / 10));
    assert_eq!(stderr(&p.run(&["plan", "aurora.toml"])), "");
}
