//! `aurora`: plan, run, verify and inspect content-addressed experiments.
//!
//! The CLI is a library so that a third party's binary is their plugin crate plus
//! `fn main() -> ExitCode { aurora::main() }`: the same commands, with every built-in plugin and
//! theirs registered (plugins register by being linked; see `aurora_core::plugin`).
//!
//! Results go to stdout, progress and logs to stderr. Exit codes: 0 ok, 1 a node failed or a
//! verification differed, 2 bad usage or a bad manifest.

mod cli;
mod diff;
mod inputs;
mod output;
mod publish;

// Plugins register themselves by being linked; these lines make sure the linker keeps them, in
// this crate's binary and in every binary that calls `aurora::main`.
use aurora_corpus as _;
use aurora_eval as _;
use aurora_exec as _;
use aurora_report as _;
use aurora_tokens as _;
use aurora_train_plugins as _;

use std::process::ExitCode;

use clap::Parser;

aurora_core::inventory::submit! {
    aurora_core::record::ToolVersion { name: "rustc", version: || env!("AURORA_RUSTC_VERSION").to_string() }
}

/// The whole `aurora` command: parses the process's arguments, runs the subcommand, and maps
/// errors to exit codes (2 for a manifest or usage problem the user can fix, 1 otherwise).
pub fn main() -> ExitCode {
    let args = cli::Cli::parse();
    match cli::dispatch(args) {
        Ok(code) => code,
        Err(err) => {
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
