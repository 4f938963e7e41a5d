use crate::env::EnvSource;

/// Everything that can be wrong with a launch. Messages are meant for the person who started the
/// job: each names the variable or value at fault, what was expected, and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LaunchError {
    #[error(
        "{var} is not set, but {trigger} is, so {launcher} started this process and should have set it; \
         start it with {launcher}, set {var} yourself, or unset {trigger} to run a single process"
    )]
    MissingVar { var: &'static str, trigger: &'static str, launcher: EnvSource },
    #[error("{var}={value:?} is not a whole number >= 0; set {var} to a decimal integer such as 0 or 3")]
    NotANumber { var: &'static str, value: String },
    #[error("{var}={value:?} is not a TCP port: expected 1..=65535; set {var} to a free port such as 29500")]
    BadPort { var: &'static str, value: String },
    #[error(
        "{world_var}=0: a world needs at least one rank; start at least one process \
         (torchrun --nproc-per-node, srun --ntasks)"
    )]
    ZeroWorld { world_var: &'static str },
    #[error(
        "{var}={value} is out of range: it must be below {world_var}={world}; the launcher's variables \
         disagree, start the processes with the launcher alone or fix whatever sets {var}"
    )]
    OutOfRange { var: &'static str, value: usize, world_var: &'static str, world: usize },
    #[error(
        "MASTER_ADDR={addr:?} is a loopback address, but {nodelist_var} names {hosts} hosts: each node would form \
         a world of its own and wait forever; unset MASTER_ADDR to use the first host ({first:?}) or set it to \
         an address every node can reach"
    )]
    LoopbackMaster { addr: String, nodelist_var: &'static str, hosts: usize, first: String },
    #[error(
        "the launcher started {world} ranks ({world_var}={world} from {launcher}) but the layout {what} needs \
         {expected}; start {expected} ranks ({flag}) or change the layout"
    )]
    WorldMismatch {
        world: usize,
        world_var: &'static str,
        launcher: EnvSource,
        expected: usize,
        what: String,
        flag: &'static str,
    },
    #[error("{var}: {error}")]
    BadNodeList { var: &'static str, error: Box<LaunchError> },
    #[error("host list {list:?} names no host; expected names such as \"node[01-04]\" or \"a,b\"")]
    EmptyHostList { list: String },
    #[error(
        "host list {list:?} has an unbalanced bracket at byte {at}: every `[` needs a matching `]` \
         and brackets do not nest; fix the list, e.g. \"node[01-04]\""
    )]
    UnbalancedBracket { list: String, at: usize },
    #[error("host list {list:?}: range {range:?} is reversed; write the lower bound first, e.g. \"3-5\" not \"5-3\"")]
    ReversedRange { list: String, range: String },
    #[error(
        "host list {list:?}: range {range:?} is not a number or LOW-HIGH of decimal numbers; \
         write ranges like [01-04,07]"
    )]
    BadRange { list: String, range: String },
    #[error(
        "host list {list:?} expands to more than {limit} hosts, which is almost certainly a typo in a range; \
         check the range bounds"
    )]
    TooManyHosts { list: String, limit: usize },
    #[error(
        "launcher {name:?} is not known: expected one of \"auto\", \"local\", \"slurm\"; \
         fix the --launcher option or AURORA_LAUNCHER"
    )]
    UnknownLauncher { name: String },
    #[error(
        "the slurm launcher needs a Slurm allocation, but SLURM_JOB_ID is not set; run inside `salloc` \
         or an `sbatch` script, or choose the local launcher"
    )]
    SlurmOutsideAllocation,
    #[error("srun step: `{field}` is 0; it must be at least 1 (leave optional fields unset to let Slurm choose)")]
    ZeroInStep { field: &'static str },
}
