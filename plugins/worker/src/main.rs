//! `aurora-worker JOB.json`: runs one job (see `aurora_worker_api`) with libtorch.
//!
//! stdout carries only [`Event`] lines (JSON, one per line, flushed each); stderr is the human
//! log, which becomes the node's log. Exit status 0 after a `done` event; 1 with the error on
//! stderr otherwise; 2 when the job file cannot be read.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use aurora_gptbigcode::{infer, trainer};
use aurora_worker_api::client::EXIT_COMMUNICATION;
use aurora_worker_api::{Event, Job, ModelRef};

fn main() -> ExitCode {
    aurora_torch::keep_freed_memory();
    let args: Vec<String> = std::env::args().collect();
    let [_, job_path] = args.as_slice() else {
        eprintln!("usage: aurora-worker JOB.json (written and run by aurora's training and evaluation plugins)");
        return ExitCode::from(2);
    };
    let job = match read_job(Path::new(job_path)) {
        Ok(job) => job,
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::from(2);
        }
    };
    let mut emit = |event: Event| {
        let line = serde_json::to_string(&event).expect("events serialise");
        let mut out = std::io::stdout().lock();
        // aurora reads events as they come (progress bars); a closed pipe means aurora is gone.
        if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
            std::process::exit(1);
        }
    };
    match run(&job, &mut emit) {
        Ok(metrics) => {
            emit(Event::Done { metrics });
            ExitCode::SUCCESS
        }
        Err((message, code)) => {
            eprintln!("error: {message}");
            ExitCode::from(code)
        }
    }
}

fn read_job(path: &Path) -> Result<Job, String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("cannot read the job file {}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| {
        format!(
            "{}: not a job: {e} (job files are written by aurora; was it built from another version \
             than this aurora-worker? rebuild both with `cargo build -p aurora -p aurora-worker`)",
            path.display()
        )
    })
}

/// The metrics of the job, or its error and the exit status to report it with.
fn run(job: &Job, emit: &mut dyn FnMut(Event)) -> Result<serde_json::Map<String, serde_json::Value>, (String, u8)> {
    let failed = |message: String| (message, 1);
    match job {
        Job::Train(job) => {
            eprintln!(
                "aurora-worker: training {} on {} ({:?}, layout {})",
                job.node, job.device, job.precision, job.layout
            );
            // The trainer sets threads and determinism itself (it knows the resolved device).
            trainer::train(job, emit).map_err(|e| {
                // A rank that only saw another rank vanish says so by its status: the launcher
                // then reports the other rank's failure as the cause.
                let code = if e.is_communication() { EXIT_COMMUNICATION as u8 } else { 1 };
                (e.to_string(), code)
            })
        }
        Job::Loglik(job) => {
            prepare_inference(&job.node, &job.model);
            infer::run_loglik(job, emit).map_err(|e| failed(e.to_string()))
        }
        Job::Perplexity(job) => {
            prepare_inference(&job.node, &job.model);
            infer::run_perplexity(job, emit).map_err(|e| failed(e.to_string()))
        }
        Job::Generate(job) => {
            prepare_inference(&job.node, &job.model);
            infer::run_generate(job, emit).map_err(|e| failed(e.to_string()))
        }
    }
}

/// On CPU, inference is bitwise reproducible: a fixed thread count and deterministic algorithms.
fn prepare_inference(node: &str, model: &ModelRef) {
    eprintln!("aurora-worker: {node}: model {} on {} ({:?})", model.dir.display(), model.device, model.precision);
    if model.device == "cpu" {
        let threads = if model.threads == 0 { aurora_torch::tch::get_num_threads() } else { model.threads as i32 };
        aurora_torch::set_deterministic(threads);
    }
}
