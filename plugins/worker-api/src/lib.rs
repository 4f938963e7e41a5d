//! The protocol between plugins that run in the `aurora` process (which never links libtorch,
//! see ARCHITECTURE.md) and the `aurora-worker` process that does.
//!
//! A plugin's `execute` writes a [`Job`] as JSON and runs `aurora-worker JOB.json` (see
//! [`client`]). The worker writes [`Event`] lines (JSON, one per line) on stdout: progress, and a
//! final result; its stderr becomes the node's log. Everything the job produces is written under
//! the job's `out_dir` (the node's output directory); scratch state that must survive a killed run
//! (checkpoints) goes under `work_dir` (the node's resume directory).
//!
//! Paths in a job are absolute and never enter a node key: keys are computed from the plugin's
//! config and input digests before any job exists.

pub mod client;
mod jobs;

pub use jobs::*;
