//! Runs a command against a private single-node Slurm, started for it and stopped after:
//! `cargo run -p aurora-slurm-testkit --example with_cluster -- aurora run M --executor slurm`.
//! For trying the Slurm executor by hand on a machine without a cluster (as root).

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((program, rest)) = args.split_first() else {
        eprintln!("usage: with_cluster PROGRAM [ARGS...]");
        return ExitCode::from(2);
    };
    let cluster = match aurora_slurm_testkit::SlurmCluster::start() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(1);
        }
    };
    eprintln!("Slurm is up: SLURM_CONF={}", cluster.conf_path().display());
    let status = std::process::Command::new(program).args(rest).envs(cluster.env()).status();
    match status {
        Ok(s) if s.success() => ExitCode::SUCCESS,
        Ok(s) => {
            eprintln!("{program} exited with {s}");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("cannot start {program}: {e}");
            ExitCode::from(1)
        }
    }
}
