//! `aurora`: plan, run, verify and inspect content-addressed experiments.
//!
//! Results go to stdout, progress and logs to stderr. Exit codes: 0 ok, 1 a node failed or a
//! verification differed, 2 bad usage or a bad manifest.

mod cli;
mod diff;
mod inputs;
mod output;
mod publish;

// Plugins register themselves by being linked; these lines make sure the linker keeps them.
use aurora_corpus as _;
use aurora_eval as _;
use aurora_exec as _;
use aurora_lang_swahili as _;
use aurora_report as _;
use aurora_tokens as _;
use aurora_train_plugins as _;

use std::process::ExitCode;

aurora_core::inventory::submit! {
    aurora_core::record::ToolVersion { name: "rustc", version: || env!("AURORA_RUSTC_VERSION").to_string() }
}

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    match cli::dispatch(args) {
        Ok(code) => code,
        Err(err) => {
            // A manifest or usage problem is the user's to fix (2); anything else is a failure (1).
            let diagnostics = err.chain().find_map(|e| match e.downcast_ref::<aurora_core::Error>() {
                Some(aurora_core::Error::Manifest(d)) => Some(d.clone()),
                _ => e.downcast_ref::<aurora_core::Diagnostics>().cloned(),
            });
            match diagnostics {
                Some(d) => {
                    eprint!("{d}");
                    ExitCode::from(2)
                }
                None => {
                    eprintln!("error: {err:#}");
                    ExitCode::from(1)
                }
            }
        }
    }
}
