//! Where a worker learns its place in the world: the variables torchrun or srun set.

use std::fmt;
use std::net::IpAddr;

use crate::{LaunchError, hostlist};

/// The launcher whose variables a [`RankEnv`] was read from; error messages name its variables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnvSource {
    Torchrun,
    Slurm,
}

impl EnvSource {
    /// The variables holding (rank, world size, local rank).
    const fn vars(self) -> (&'static str, &'static str, &'static str) {
        match self {
            EnvSource::Torchrun => ("RANK", "WORLD_SIZE", "LOCAL_RANK"),
            EnvSource::Slurm => ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID"),
        }
    }

    /// The command-line options that set the number of ranks.
    const fn ranks_flag(self) -> &'static str {
        match self {
            EnvSource::Torchrun => "torchrun --nnodes and --nproc-per-node",
            EnvSource::Slurm => "srun --ntasks",
        }
    }
}

impl fmt::Display for EnvSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EnvSource::Torchrun => "torchrun",
            EnvSource::Slurm => "srun",
        })
    }
}

/// This process's rank and the rendezvous address of rank 0, validated so that a misconfigured
/// launch fails at start-up with a message instead of hanging in the process-group rendezvous.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RankEnv {
    pub rank: usize,
    pub world_size: usize,
    pub local_rank: usize,
    pub master_addr: String,
    pub master_port: u16,
    pub source: EnvSource,
}

impl RankEnv {
    /// Reads torchrun's variables (`RANK` set) or else srun's (`SLURM_PROCID` set); `Ok(None)`
    /// when neither launcher started this process, i.e. it is the only rank.
    ///
    /// Under srun, the master is `MASTER_ADDR` if set, else the first host of
    /// `SLURM_STEP_NODELIST` (or `SLURM_JOB_NODELIST`); the port is `MASTER_PORT` if set, else
    /// `20000 + SLURM_JOB_ID % 10000`: every rank of a job derives the same port without talking
    /// to the others, it is unprivileged and below Linux's ephemeral range (32768..) so no
    /// outgoing connection holds it. Two jobs sharing a node can still collide (job ids 10000
    /// apart); the store then reports the port in use and `MASTER_PORT` overrides it.
    ///
    /// A loopback `MASTER_ADDR` with a node list of several hosts is an error, never a silent
    /// fallback: each node would rendezvous with itself and wait forever for the others.
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Option<RankEnv>, LaunchError> {
        if let Some(rank) = get("RANK") {
            torchrun(&get, &rank).map(Some)
        } else if let Some(rank) = get("SLURM_PROCID") {
            slurm(&get, &rank).map(Some)
        } else {
            Ok(None)
        }
    }

    /// [`RankEnv::from_vars`] over this process's environment (non-UTF-8 values are read lossily
    /// so that they are reported, not ignored).
    pub fn from_process_env() -> Result<Option<RankEnv>, LaunchError> {
        Self::from_vars(|var| std::env::var_os(var).map(|value| value.to_string_lossy().into_owned()))
    }

    /// Fails when the launcher started a different number of ranks than the parallel layout
    /// needs; `what` describes the layout for the message, e.g. `"tp*pp*dp = 2*1*2"`.
    pub fn check_world(&self, expected: usize, what: &str) -> Result<(), LaunchError> {
        if self.world_size == expected {
            return Ok(());
        }
        Err(LaunchError::WorldMismatch {
            world: self.world_size,
            world_var: self.source.vars().1,
            launcher: self.source,
            expected,
            what: what.to_owned(),
            flag: self.source.ranks_flag(),
        })
    }

    fn validated(self) -> Result<RankEnv, LaunchError> {
        let (rank_var, world_var, local_var) = self.source.vars();
        let world = self.world_size;
        if world == 0 {
            return Err(LaunchError::ZeroWorld { world_var });
        }
        for (var, value) in [(rank_var, self.rank), (local_var, self.local_rank)] {
            if value >= world {
                return Err(LaunchError::OutOfRange { var, value, world_var, world });
            }
        }
        Ok(self)
    }
}

fn torchrun(get: &impl Fn(&str) -> Option<String>, rank: &str) -> Result<RankEnv, LaunchError> {
    let require = |var| required(get, var, "RANK", EnvSource::Torchrun);
    RankEnv {
        rank: number("RANK", rank)?,
        world_size: number("WORLD_SIZE", &require("WORLD_SIZE")?)?,
        local_rank: number("LOCAL_RANK", &require("LOCAL_RANK")?)?,
        master_addr: require("MASTER_ADDR")?,
        master_port: port("MASTER_PORT", &require("MASTER_PORT")?)?,
        source: EnvSource::Torchrun,
    }
    .validated()
}

fn slurm(get: &impl Fn(&str) -> Option<String>, rank: &str) -> Result<RankEnv, LaunchError> {
    let missing = |var| LaunchError::MissingVar { var, trigger: "SLURM_PROCID", launcher: EnvSource::Slurm };
    let require = |var| nonempty(get, var).ok_or_else(|| missing(var));
    let rank = number("SLURM_PROCID", rank)?;
    let world_size = number("SLURM_NTASKS", &require("SLURM_NTASKS")?)?;
    let local_rank = number("SLURM_LOCALID", &require("SLURM_LOCALID")?)?;
    let nodelist = ["SLURM_STEP_NODELIST", "SLURM_JOB_NODELIST"]
        .into_iter()
        .find_map(|var| nonempty(get, var).map(|list| (var, list)))
        .map(|(var, list)| {
            hostlist::expand(&list)
                .map(|hosts| (var, hosts))
                .map_err(|e| LaunchError::BadNodeList { var, error: Box::new(e) })
        })
        .transpose()?;
    let master_addr = match (nonempty(get, "MASTER_ADDR"), nodelist) {
        (Some(addr), Some((nodelist_var, hosts))) if hosts.len() > 1 && is_loopback(&addr) => {
            return Err(LaunchError::LoopbackMaster {
                addr,
                nodelist_var,
                hosts: hosts.len(),
                first: hosts[0].clone(),
            });
        }
        (Some(addr), _) => addr,
        (None, Some((_, mut hosts))) => hosts.swap_remove(0),
        (None, None) => return Err(missing("SLURM_STEP_NODELIST (or SLURM_JOB_NODELIST, or MASTER_ADDR)")),
    };
    let master_port = match nonempty(get, "MASTER_PORT") {
        Some(value) => port("MASTER_PORT", &value)?,
        None => {
            let job_id = number(
                "SLURM_JOB_ID",
                &nonempty(get, "SLURM_JOB_ID").ok_or_else(|| missing("SLURM_JOB_ID (or MASTER_PORT)"))?,
            )?;
            u16::try_from(20_000 + job_id % 10_000).expect("below 30000")
        }
    };
    RankEnv { rank, world_size, local_rank, master_addr, master_port, source: EnvSource::Slurm }.validated()
}

fn nonempty(get: &impl Fn(&str) -> Option<String>, var: &str) -> Option<String> {
    get(var).filter(|value| !value.is_empty())
}

fn required(
    get: &impl Fn(&str) -> Option<String>,
    var: &'static str,
    trigger: &'static str,
    launcher: EnvSource,
) -> Result<String, LaunchError> {
    nonempty(get, var).ok_or(LaunchError::MissingVar { var, trigger, launcher })
}

fn number(var: &'static str, value: &str) -> Result<usize, LaunchError> {
    value.parse().map_err(|_| LaunchError::NotANumber { var, value: value.to_owned() })
}

fn port(var: &'static str, value: &str) -> Result<u16, LaunchError> {
    value.parse().ok().filter(|&port| port != 0).ok_or_else(|| LaunchError::BadPort { var, value: value.to_owned() })
}

/// Loopback and unspecified addresses, which name the local machine wherever they are used.
fn is_loopback(addr: &str) -> bool {
    let host = addr.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
    match host.parse::<IpAddr>() {
        Ok(ip) => ip.is_loopback() || ip.is_unspecified(),
        Err(_) => host == "localhost" || host.ends_with(".localhost") || host.starts_with("localhost."),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A variable lookup over fixed pairs, standing in for the process environment.
    pub(crate) fn vars<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |var| pairs.iter().find(|(k, _)| *k == var).map(|(_, v)| (*v).to_owned())
    }

    const TORCHRUN: [(&str, &str); 5] =
        [("RANK", "1"), ("WORLD_SIZE", "4"), ("LOCAL_RANK", "1"), ("MASTER_ADDR", "n01"), ("MASTER_PORT", "29500")];
    const SLURM: [(&str, &str); 5] = [
        ("SLURM_PROCID", "3"),
        ("SLURM_NTASKS", "4"),
        ("SLURM_LOCALID", "1"),
        ("SLURM_STEP_NODELIST", "gpu[07-08]"),
        ("SLURM_JOB_ID", "123456"),
    ];

    /// `base` with `changes` applied: `Some` sets a variable, `None` removes it.
    fn read(
        base: &[(&'static str, &'static str)],
        changes: &[(&'static str, Option<&'static str>)],
    ) -> Result<Option<RankEnv>, LaunchError> {
        let mut pairs: Vec<_> = base.iter().filter(|(k, _)| !changes.iter().any(|(c, _)| c == k)).copied().collect();
        pairs.extend(changes.iter().filter_map(|&(k, v)| Some((k, v?))));
        RankEnv::from_vars(vars(&pairs))
    }

    fn env(rank: usize, world_size: usize, local_rank: usize, addr: &str, port: u16, source: EnvSource) -> RankEnv {
        RankEnv { rank, world_size, local_rank, master_addr: addr.into(), master_port: port, source }
    }

    #[test]
    fn no_launcher_is_a_single_process() {
        assert_eq!(RankEnv::from_vars(|_| None), Ok(None));
        assert_eq!(read(&[("SLURM_JOB_ID", "5"), ("MASTER_PORT", "1")], &[]), Ok(None));
    }

    #[test]
    fn torchrun_variables() {
        assert_eq!(read(&TORCHRUN, &[]), Ok(Some(env(1, 4, 1, "n01", 29500, EnvSource::Torchrun))));
        // torchrun wins over an enclosing Slurm step: it sets its own variables for its workers.
        let both: Vec<_> = TORCHRUN.iter().chain(&SLURM).copied().collect();
        assert_eq!(read(&both, &[]).unwrap().unwrap().source, EnvSource::Torchrun);
    }

    #[test]
    fn slurm_variables() {
        assert_eq!(read(&SLURM, &[]), Ok(Some(env(3, 4, 1, "gpu07", 23456, EnvSource::Slurm))));
        let job_list = read(&SLURM, &[("SLURM_STEP_NODELIST", None), ("SLURM_JOB_NODELIST", Some("a,b"))]);
        assert_eq!(job_list.unwrap().unwrap().master_addr, "a");
        let explicit = read(&SLURM, &[("MASTER_ADDR", Some("10.0.0.1")), ("MASTER_PORT", Some("4000"))]);
        assert_eq!(explicit, Ok(Some(env(3, 4, 1, "10.0.0.1", 4000, EnvSource::Slurm))));
        // Without a node list, MASTER_ADDR alone suffices; without a job id, MASTER_PORT does.
        let no_list = read(
            &SLURM,
            &[
                ("SLURM_STEP_NODELIST", None),
                ("MASTER_ADDR", Some("h")),
                ("SLURM_JOB_ID", None),
                ("MASTER_PORT", Some("7")),
            ],
        );
        assert_eq!(no_list.unwrap().unwrap().master_addr, "h");
        // Loopback is fine when the step runs on one host.
        let one_host = read(&SLURM, &[("SLURM_STEP_NODELIST", Some("gpu07")), ("MASTER_ADDR", Some("localhost"))]);
        assert_eq!(one_host.unwrap().unwrap().master_addr, "localhost");
    }

    #[test]
    fn loopback_master_with_several_hosts_is_an_error() {
        for addr in ["localhost", "LOCALHOST", "localhost.localdomain", "127.0.1.1", "::1", "[::1]", "0.0.0.0"] {
            let result = read(&SLURM, &[("MASTER_ADDR", Some(addr))]);
            assert!(matches!(result, Err(LaunchError::LoopbackMaster { hosts: 2, .. })), "{addr}");
        }
        for addr in ["gpu07", "10.1.2.3", "fe80::1", "mylocalhost"] {
            assert!(read(&SLURM, &[("MASTER_ADDR", Some(addr))]).is_ok(), "{addr}");
        }
    }

    #[test]
    fn invalid_variables_are_errors() {
        let t = |var, value| read(&TORCHRUN, &[(var, value)]).unwrap_err();
        let s = |var, value| read(&SLURM, &[(var, value)]).unwrap_err();
        let cases = [
            (t("WORLD_SIZE", None), "MissingVar"),
            (t("LOCAL_RANK", None), "MissingVar"),
            (t("MASTER_ADDR", Some("")), "MissingVar"),
            (t("MASTER_PORT", None), "MissingVar"),
            (t("RANK", Some("")), "NotANumber"),
            (t("WORLD_SIZE", Some("four")), "NotANumber"),
            (t("LOCAL_RANK", Some("-1")), "NotANumber"),
            (t("MASTER_PORT", Some("0")), "BadPort"),
            (t("MASTER_PORT", Some("65536")), "BadPort"),
            (t("MASTER_PORT", Some("http")), "BadPort"),
            (t("WORLD_SIZE", Some("0")), "ZeroWorld"),
            (t("RANK", Some("4")), "OutOfRange"),
            (t("LOCAL_RANK", Some("4")), "OutOfRange"),
            (s("SLURM_NTASKS", None), "MissingVar"),
            (s("SLURM_LOCALID", None), "MissingVar"),
            (s("SLURM_STEP_NODELIST", None), "MissingVar"),
            (s("SLURM_JOB_ID", None), "MissingVar"),
            (s("SLURM_JOB_ID", Some("12_3")), "NotANumber"),
            (s("SLURM_STEP_NODELIST", Some("gpu[07-08")), "BadNodeList"),
            (s("SLURM_PROCID", Some("4")), "OutOfRange"),
            (s("MASTER_PORT", Some("99999")), "BadPort"),
            (s("MASTER_ADDR", Some("127.0.0.1")), "LoopbackMaster"),
        ];
        for (error, kind) in &cases {
            assert_eq!(format!("{error:?}").split_once(' ').unwrap().0, *kind, "{error}");
        }
        insta::assert_snapshot!(cases.map(|(error, _)| error.to_string()).join("\n"));
    }

    #[test]
    fn check_world_names_the_launcher_variable() {
        let torchrun = env(0, 2, 0, "a", 1, EnvSource::Torchrun);
        assert_eq!(torchrun.check_world(2, "tp*pp*dp = 1*1*2"), Ok(()));
        let slurm = env(0, 3, 0, "a", 1, EnvSource::Slurm);
        let messages = [torchrun.check_world(4, "tp*pp*dp = 2*1*2"), slurm.check_world(4, "tp*pp*dp = 2*2*1")]
            .map(|result| result.unwrap_err().to_string());
        insta::assert_snapshot!(messages.join("\n"));
    }
}
