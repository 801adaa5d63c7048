//! The command line: arguments, dispatch, and the exit code.

use crate::lab::{self, Lab};
use clap::{Parser, Subcommand};

/// Exit codes, documented in the README.
pub mod exit {
    pub const OK: i32 = 0;
    pub const ERROR: i32 = 1;
    pub const FAILED: i32 = 2;
    pub const UNREACHABLE: i32 = 3;
    pub const INVALID: i32 = 4;
    pub const DRIFT: i32 = 5;
}

#[derive(Parser, Debug)]
#[command(name = "provision", version, about = "Agentless provisioning of Docker Swarm clusters over SSH")]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    #[command(subcommand)]
    pub command: Option<Cmd>,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Local lab: real SSH hosts on this machine
    Lab {
        #[command(subcommand)]
        command: LabCmd,
    },
}

#[derive(Subcommand, Debug)]
pub enum LabCmd {
    /// Start N hosts (default 3), building the image on first use
    Up {
        #[arg(default_value_t = 3)]
        hosts: usize,
        /// Give each host a blank block device of this size (e.g. 10G)
        #[arg(long)]
        disk: Option<String>,
    },
    /// Stop every host and remove what the lab made
    Down,
    /// Show the hosts, their state and memory
    Status,
    /// Open an SSH session to a host, or run a command there
    Ssh {
        node: String,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
}

pub fn main(args: Args) -> i32 {
    match run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            exit::ERROR
        }
    }
}

fn run(args: Args) -> anyhow::Result<i32> {
    match args.command {
        Some(Cmd::Lab { command }) => lab_cmd(command),
        None => anyhow::bail!("nothing to do: see `provision --help`"),
    }
}

fn lab_cmd(cmd: LabCmd) -> anyhow::Result<i32> {
    let lab = Lab::new(lab::default_dir(), lab::default_cache());
    let mut log = |m: &str| eprintln!("lab: {m}");
    match cmd {
        LabCmd::Up { hosts, disk } => {
            lab.up(hosts, disk.as_deref(), &mut log)?;
            println!("inventory: {}", lab.inventory().display());
            println!("ssh:       ssh -F {} node1", lab.ssh_config().display());
        }
        LabCmd::Down => lab.down(&mut log)?,
        LabCmd::Status => {
            let rows = lab.status();
            if rows.is_empty() {
                println!("no lab is up");
            }
            for (h, up, ssh, mem) in rows {
                let mem = mem.map(|b| format!("{:.0} MiB", b as f64 / 1048576.0)).unwrap_or("-".into());
                let state = if !up { "stopped" } else if ssh { "ssh-ready" } else { "booting" };
                println!("{:<8} {:<14} {:<10} {}", h.name, h.address, state, mem);
            }
        }
        LabCmd::Ssh { node, command } => {
            lab.ssh(&node, &command)?;
        }
    }
    Ok(exit::OK)
}
