//! Running the ranks of a training node as one `srun` step inside a Slurm allocation.

use std::ffi::OsStr;
use std::process::Command;

use crate::LaunchError;

/// Variables a nested step inherits from the enclosing job or step that conflict with the flags
/// [`SrunStep::command`] passes. srun reads `SLURM_*` variables as defaults for its options:
/// with more than one `SLURM_MEM_PER_*` set it refuses to start, and an inherited
/// `SLURM_TRES_PER_TASK` (set by `sbatch --cpus-per-task` in recent versions) clashes with an
/// explicit `--cpus-per-task`. The explicit flags rule, so the inherited values go. Without
/// `cpus_per_task`, the step gets Slurm's default CPUs per task, not the job's.
/// `SLURM_JOB_ID` stays: it is what places the step inside the allocation.
const CONFLICTING_SLURM_VARS: [&str; 7] = [
    "SLURM_MEM_PER_CPU",
    "SLURM_MEM_PER_GPU",
    "SLURM_MEM_PER_NODE",
    "SLURM_NTASKS",
    "SLURM_NPROCS",
    "SLURM_CPUS_PER_TASK",
    "SLURM_TRES_PER_TASK",
];

/// torchrun's variables, when the process starting the step has them (it runs under torchrun, or
/// a batch script exported `MASTER_ADDR`): `RankEnv` prefers them over Slurm's, so every task
/// would claim the parent's rank, and a stale address would override the step's first host.
const TORCHRUN_VARS: [&str; 5] = ["RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"];

/// One srun step running `ntasks` ranks; each task reads its rank from Slurm's variables.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SrunStep {
    pub ntasks: usize,
    /// Left to Slurm (the allocation's nodes) when unset.
    pub nodes: Option<usize>,
    pub cpus_per_task: Option<usize>,
    /// 0 requests none: the tasks then see whatever GPUs the step gets by default.
    pub gpus_per_task: usize,
    /// Passed to the tasks; unset, they use the first host of the step and a port from the job id.
    pub master_addr: Option<String>,
    pub master_port: Option<u16>,
}

impl SrunStep {
    /// The `srun` command running `program args` as this step. `--kill-on-bad-exit=1` ends the
    /// step when one rank dies (the others would wait for it forever in a collective), and
    /// `--label` prefixes every line with its task id (see [`parse_label_line`]).
    pub fn command<I, S>(&self, program: impl AsRef<OsStr>, args: I) -> Result<Command, LaunchError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let zero = [
            ("ntasks", Some(self.ntasks)),
            ("nodes", self.nodes),
            ("cpus_per_task", self.cpus_per_task),
            ("master_port", self.master_port.map(usize::from)),
        ];
        if let Some((field, _)) = zero.into_iter().find(|(_, value)| *value == Some(0)) {
            return Err(LaunchError::ZeroInStep { field });
        }
        let mut command = Command::new("srun");
        command.arg(format!("--ntasks={}", self.ntasks));
        command.args(self.nodes.map(|nodes| format!("--nodes={nodes}")));
        command.args(["--kill-on-bad-exit=1", "--label"]);
        command.args(self.cpus_per_task.map(|cpus| format!("--cpus-per-task={cpus}")));
        command.args((self.gpus_per_task > 0).then(|| format!("--gpus-per-task={}", self.gpus_per_task)));
        command.arg("--export=ALL").arg(program).args(args);
        for var in CONFLICTING_SLURM_VARS.into_iter().chain(TORCHRUN_VARS) {
            command.env_remove(var);
        }
        if let Some(addr) = &self.master_addr {
            command.env("MASTER_ADDR", addr);
        }
        if let Some(port) = self.master_port {
            command.env("MASTER_PORT", port.to_string());
        }
        Ok(command)
    }
}

/// Splits a line of `srun --label` output (`"   3: text"`: the task id right-aligned, a colon,
/// one space) into the task id and the text; `None` for a line without a label.
pub fn parse_label_line(line: &str) -> Option<(usize, &str)> {
    let (id, text) = line.trim_start_matches(' ').split_once(':')?;
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let text = if text.is_empty() { text } else { text.strip_prefix(' ')? };
    Some((id.parse().ok()?, text))
}

/// Whether this process runs inside a Slurm allocation (`salloc`, `sbatch` or `srun`).
pub fn in_allocation(get: impl Fn(&str) -> Option<String>) -> bool {
    get("SLURM_JOB_ID").is_some_and(|id| !id.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::tests::vars;

    fn parts(command: &Command) -> (Vec<String>, Vec<(String, Option<String>)>) {
        let args = command.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
        let envs = command
            .get_envs()
            .map(|(k, v)| (k.to_string_lossy().into_owned(), v.map(|v| v.to_string_lossy().into_owned())))
            .collect();
        (args, envs)
    }

    #[test]
    fn minimal_step() {
        let command = SrunStep { ntasks: 4, ..SrunStep::default() }.command("train", ["job.json"]).unwrap();
        assert_eq!(command.get_program(), "srun");
        let (args, envs) = parts(&command);
        assert_eq!(args, ["--ntasks=4", "--kill-on-bad-exit=1", "--label", "--export=ALL", "train", "job.json"]);
        let removed: Vec<_> = envs.iter().filter(|(_, v)| v.is_none()).map(|(k, _)| k.as_str()).collect();
        for var in ["SLURM_MEM_PER_CPU", "SLURM_MEM_PER_GPU", "SLURM_MEM_PER_NODE", "SLURM_NTASKS", "SLURM_NPROCS"] {
            assert!(removed.contains(&var), "{var}");
        }
        for var in ["SLURM_CPUS_PER_TASK", "SLURM_TRES_PER_TASK", "RANK", "WORLD_SIZE", "MASTER_ADDR"] {
            assert!(removed.contains(&var), "{var}");
        }
        assert!(!removed.contains(&"SLURM_JOB_ID"));
        assert_eq!(envs.iter().filter(|(_, v)| v.is_some()).count(), 0);
    }

    #[test]
    fn full_step() {
        let step = SrunStep {
            ntasks: 8,
            nodes: Some(2),
            cpus_per_task: Some(6),
            gpus_per_task: 1,
            master_addr: Some("gpu07".into()),
            master_port: Some(29500),
        };
        let (args, envs) = parts(&step.command("python", ["-m", "x"]).unwrap());
        let expected = [
            "--ntasks=8",
            "--nodes=2",
            "--kill-on-bad-exit=1",
            "--label",
            "--cpus-per-task=6",
            "--gpus-per-task=1",
            "--export=ALL",
            "python",
            "-m",
            "x",
        ];
        assert_eq!(args, expected);
        let set = |var: &str| envs.iter().find(|(k, _)| k == var).and_then(|(_, v)| v.clone());
        assert_eq!((set("MASTER_ADDR").as_deref(), set("MASTER_PORT").as_deref()), (Some("gpu07"), Some("29500")));
        assert_eq!(set("RANK"), None);
    }

    #[test]
    fn zero_fields_are_errors() {
        let base = SrunStep { ntasks: 2, ..SrunStep::default() };
        let steps = [
            SrunStep { ntasks: 0, ..base.clone() },
            SrunStep { nodes: Some(0), ..base.clone() },
            SrunStep { cpus_per_task: Some(0), ..base.clone() },
            SrunStep { master_port: Some(0), ..base },
        ];
        let messages = steps.map(|step| step.command("x", [""; 0]).unwrap_err().to_string());
        insta::assert_snapshot!(messages.join("\n"));
    }

    #[test]
    fn label_lines() {
        assert_eq!(parse_label_line("   3: loss 2.5"), Some((3, "loss 2.5")));
        assert_eq!(parse_label_line("12: a: b"), Some((12, "a: b")));
        assert_eq!(parse_label_line("0:  indented"), Some((0, " indented")));
        assert_eq!(parse_label_line(" 1:"), Some((1, "")));
        for line in ["", "loss: 2", ": x", "12:30 pm", " -1: x", "1 2: x", "\t1: x"] {
            assert_eq!(parse_label_line(line), None, "{line:?}");
        }
    }

    #[test]
    fn allocation() {
        assert!(in_allocation(vars(&[("SLURM_JOB_ID", "42")])));
        assert!(!in_allocation(vars(&[("SLURM_JOB_ID", "")])));
        assert!(!in_allocation(vars(&[])));
    }
}
