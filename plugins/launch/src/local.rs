//! The local launcher: worker processes on this machine, given the variables torchrun would set.

use std::net::{Ipv4Addr, TcpListener};

/// The environment of local worker `rank` of `world`: exactly what torchrun sets on one node, so
/// workers read it with [`crate::RankEnv::from_vars`] whichever launcher started them.
pub fn local_rank_vars(rank: usize, world: usize, master_port: u16) -> Vec<(&'static str, String)> {
    vec![
        ("RANK", rank.to_string()),
        ("WORLD_SIZE", world.to_string()),
        ("LOCAL_RANK", rank.to_string()),
        ("LOCAL_WORLD_SIZE", world.to_string()),
        ("MASTER_ADDR", Ipv4Addr::LOCALHOST.to_string()),
        ("MASTER_PORT", master_port.to_string()),
    ]
}

/// A TCP port on 127.0.0.1 that was free a moment ago, for rank 0's rendezvous store. Another
/// process can take it between this call and the store binding it; the store then fails with
/// "address already in use" naming the port, and a rerun picks another.
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()?.port())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{EnvSource, RankEnv};

    #[test]
    fn vars_read_back_as_torchrun() {
        let vars = local_rank_vars(2, 3, 4567);
        let names: Vec<_> = vars.iter().map(|(k, _)| *k).collect();
        assert_eq!(names, ["RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"]);
        let env = RankEnv::from_vars(|var| vars.iter().find(|(k, _)| *k == var).map(|(_, v)| v.clone()));
        let expected = RankEnv {
            rank: 2,
            world_size: 3,
            local_rank: 2,
            master_addr: "127.0.0.1".into(),
            master_port: 4567,
            source: EnvSource::Torchrun,
        };
        assert_eq!(env, Ok(Some(expected)));
    }

    #[test]
    fn free_port_can_be_bound() {
        let port = free_port().unwrap();
        assert_ne!(port, 0);
        // Racy by nature (see the doc), but a port the kernel just released is almost always free.
        TcpListener::bind((Ipv4Addr::LOCALHOST, port)).unwrap();
    }
}
