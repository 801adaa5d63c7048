//! provision: agentless provisioning of Docker Swarm clusters over SSH.

/// `println!` that does not panic when stdout is closed (`provision audit | head`).
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

pub mod args;
pub mod assets;
pub mod cli;
pub mod cluster;
pub mod day2;
pub mod engine;
pub mod finding;
pub mod firewall;
pub mod hardening;
pub mod interrupt;
pub mod inventory;
pub mod lab;
pub mod modules;
pub mod output;
pub mod pki;
pub mod play;
pub mod probe;
pub mod roles;
pub mod state;
pub mod status;
pub mod sys;
pub mod template;
pub mod transport;
pub mod vault;
pub mod yaml;

#[cfg(test)]
mod fuzz_tests;
