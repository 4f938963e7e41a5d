//! `sandbox_bench HUMANEVAL.jsonl.gz ROUNDS`: executions per second of the HumanEval canonical
//! programs through the sandbox, beside the same programs run as plain `python3 program.py` (same
//! interpreter, same worker threads, a temp dir each), interleaved round by round. Prints the
//! isolation in use and one JSON line of figures (read by `cargo xtask bench --only sandbox`).

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use aurora_eval::code::{self, Format};
use aurora_eval::sandbox::{Limits, Status, find_python3, isolation, run_python};

/// Runs `run(i)` for every `i < n` on `workers` threads; (seconds, how many returned false).
fn timed(n: usize, workers: usize, run: impl Fn(usize) -> bool + Sync) -> (f64, usize) {
    let next = AtomicUsize::new(0);
    let failed = AtomicUsize::new(0);
    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        break;
                    }
                    if !run(i) {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    (started.elapsed().as_secs_f64(), failed.into_inner())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, path, rounds] = args.as_slice() else {
        eprintln!("usage: sandbox_bench HUMANEVAL.jsonl.gz ROUNDS");
        std::process::exit(2);
    };
    let rounds: usize = rounds.parse().expect("ROUNDS is a number");
    let problems = code::load_problems(Path::new(path), Format::Humaneval).unwrap_or_else(|e| panic!("{e}"));
    let programs: Vec<String> = problems.iter().map(|p| code::program(p, code::reference_completion(p))).collect();
    let python = find_python3(std::env::var_os("PATH").as_deref()).unwrap_or_else(|e| panic!("{e}"));
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let limits = Limits::default();
    eprintln!("isolation: {}", isolation());
    let sandboxed = |i: usize| run_python(&programs[i], &limits).expect("the sandbox runs").status == Status::Passed;
    let plain = |i: usize| {
        let dir = tempfile::tempdir().expect("a temp dir");
        std::fs::write(dir.path().join("program.py"), &programs[i]).expect("program written");
        Command::new(&python)
            .arg("program.py")
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("python3 runs")
            .success()
    };
    let (mut ours, mut base) = (Vec::new(), Vec::new());
    let (mut ours_failed, mut base_failed) = (0, 0);
    for round in 0..rounds {
        // Alternate which goes first, so a load trend hits both alike.
        let mut measure = |sandbox: bool| {
            let (secs, failed) =
                if sandbox { timed(programs.len(), workers, sandboxed) } else { timed(programs.len(), workers, plain) };
            let rate = programs.len() as f64 / secs;
            eprintln!(
                "round {}: {}: {rate:.1} programs/s ({failed} failed)",
                round + 1,
                if sandbox { "sandboxed" } else { "plain" }
            );
            if sandbox {
                ours.push(rate);
                ours_failed += failed;
            } else {
                base.push(rate);
                base_failed += failed;
            }
        };
        measure(round % 2 == 0);
        measure(round % 2 != 0);
    }
    println!(
        "{{\"bench\":\"sandbox\",\"programs\":{},\"workers\":{workers},\"rounds\":{rounds},\"sandboxed_per_s\":{:.3},\"plain_per_s\":{:.3},\"sandboxed_failed\":{ours_failed},\"plain_failed\":{base_failed}}}",
        programs.len(),
        median(ours),
        median(base)
    );
}
