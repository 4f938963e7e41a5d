//! Ranks and launchers for sharded training, without libtorch: the CLI decides how to start the
//! ranks and the worker learns its place, both from plain environment variables, so that a
//! misconfigured launch fails at start-up with a message instead of hanging in a rendezvous.
//!
//! - [`RankEnv`]: a worker's rank, world and master address from torchrun's or srun's variables.
//! - [`hostlist`]: Slurm host lists (`node[01-04]`) expanded natively, without `scontrol`.
//! - [`slurm`]: the `srun` step running the ranks inside an allocation; its labelled output.
//! - [`local`]: the variables and port for worker processes on this machine.
//! - [`Launcher`]: auto, local or Slurm, chosen by the CLI and passed on in [`AURORA_LAUNCHER`].

mod env;
mod error;
pub mod hostlist;
mod launcher;
pub mod local;
pub mod slurm;

pub use env::{EnvSource, RankEnv};
pub use error::LaunchError;
pub use launcher::{AURORA_LAUNCHER, Launcher};
