//! Choosing how to start the ranks of a sharded run.

use crate::{LaunchError, slurm};

/// The variable through which the CLI tells the worker-api client which launcher to use
/// (`auto`, `local` or `slurm`), so that the choice made once on the command line reaches the
/// process that starts the ranks without threading it through every plugin.
pub const AURORA_LAUNCHER: &str = "AURORA_LAUNCHER";

/// How the ranks of a sharded run are started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Launcher {
    /// Worker processes on this machine (see [`crate::local`]).
    Local,
    /// One `srun` step in the current allocation (see [`crate::slurm`]).
    Slurm,
}

impl Launcher {
    /// Resolves a requested launcher (`None` means `"auto"`): auto is Slurm inside an allocation
    /// and local otherwise; `"slurm"` outside an allocation is an error rather than a local run,
    /// which would silently train on one machine.
    pub fn resolve(requested: Option<&str>, get: impl Fn(&str) -> Option<String>) -> Result<Launcher, LaunchError> {
        let in_allocation = slurm::in_allocation(get);
        match requested.unwrap_or("auto") {
            "auto" | "slurm" if in_allocation => Ok(Launcher::Slurm),
            "auto" | "local" => Ok(Launcher::Local),
            "slurm" => Err(LaunchError::SlurmOutsideAllocation),
            name => Err(LaunchError::UnknownLauncher { name: name.to_owned() }),
        }
    }

    /// [`Launcher::resolve`] of [`AURORA_LAUNCHER`]; unset or empty means auto.
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Launcher, LaunchError> {
        let requested = get(AURORA_LAUNCHER).filter(|name| !name.is_empty());
        Launcher::resolve(requested.as_deref(), get)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::tests::vars;

    const IN_JOB: [(&str, &str); 1] = [("SLURM_JOB_ID", "7")];

    #[test]
    fn resolve() {
        assert_eq!(Launcher::resolve(None, vars(&IN_JOB)), Ok(Launcher::Slurm));
        assert_eq!(Launcher::resolve(Some("auto"), vars(&[])), Ok(Launcher::Local));
        assert_eq!(Launcher::resolve(Some("local"), vars(&IN_JOB)), Ok(Launcher::Local));
        assert_eq!(Launcher::resolve(Some("slurm"), vars(&IN_JOB)), Ok(Launcher::Slurm));
        assert_eq!(Launcher::resolve(Some("slurm"), vars(&[])), Err(LaunchError::SlurmOutsideAllocation));
    }

    #[test]
    fn from_env() {
        assert_eq!(Launcher::from_env(vars(&[(AURORA_LAUNCHER, "")])), Ok(Launcher::Local));
        assert_eq!(Launcher::from_env(vars(&[(AURORA_LAUNCHER, "local"), IN_JOB[0]])), Ok(Launcher::Local));
        assert_eq!(Launcher::from_env(vars(&IN_JOB)), Ok(Launcher::Slurm));
        let errors = [vars(&[(AURORA_LAUNCHER, "torchrun")]), vars(&[(AURORA_LAUNCHER, "slurm")])]
            .map(|get| Launcher::from_env(get).unwrap_err().to_string());
        insta::assert_snapshot!(errors.join("\n"));
    }
}
