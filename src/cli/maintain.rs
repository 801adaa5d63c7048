//! `provision maintain`: the command line of a maintenance roll (see maintain/).

use super::{exit, lab_or};
use crate::day2::maintain::{self, Why};
use std::path::PathBuf;
use std::time::Duration;

#[derive(clap::Args, Debug, Clone)]
pub struct MaintainArgs {
    /// The inventory (the local lab's when omitted)
    pub inventory: Option<PathBuf>,
    /// Only these hosts (pattern: names, groups, globs, a:&b, !c)
    #[arg(long, short = 'l')]
    pub limit: Option<String>,
    /// Reboot every node, needed or not
    #[arg(long)]
    pub reboot: bool,
    /// Every package upgrade, not only those from a security archive
    #[arg(long)]
    pub full: bool,
    /// Print the plan (order, upgrades, reboots) and change nothing
    #[arg(long, short = 'C')]
    pub check: bool,
    /// Go on where a node's absence costs a quorum (a one-manager swarm, two etcd members)
    #[arg(long)]
    pub allow_risk: bool,
    /// Seconds each wait may take (drain, boot, health)
    #[arg(long, default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..))]
    pub wait: u64,
    /// Workers (nodes with no quorum or standby role) maintained together: a number, or a
    /// percentage of those in the roll (`25%`)
    #[arg(long, default_value = "1", value_parser = parse_batch)]
    pub batch: Batch,
    /// OpenSSH client config to honour (default ~/.ssh/config)
    #[arg(long, short = 'F')]
    pub ssh_config: Option<PathBuf>,
    /// The controller's state directory (where an interrupted roll is recorded)
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
}

const PROGRESS: &str = "maintain.json";

/// `--batch`: how many workers go together.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Batch {
    Count(usize),
    Percent(u8),
}

impl Batch {
    /// The count for `workers` nodes in the roll (at least 1).
    pub fn of(self, workers: usize) -> usize {
        match self {
            Batch::Count(n) => n,
            Batch::Percent(p) => (workers * p as usize).div_ceil(100),
        }
        .max(1)
    }
}

fn parse_batch(s: &str) -> Result<Batch, String> {
    let bad = || format!("`{s}`: give a number of nodes (2) or a percentage of the workers (25%)");
    match s.strip_suffix('%') {
        Some(p) => match p.parse::<u8>() {
            Ok(p @ 1..=100) => Ok(Batch::Percent(p)),
            _ => Err(bad()),
        },
        None => match s.parse::<usize>() {
            Ok(n @ 1..) => Ok(Batch::Count(n)),
            _ => Err(bad()),
        },
    }
}

pub fn main(a: MaintainArgs) -> anyhow::Result<i32> {
    // Every host is read (limit None): the others keep the quorum the node leaves.
    let opts = crate::engine::Options {
        check: a.check,
        command_timeout: Duration::from_secs(900),
        ..super::read_options(lab_or(a.inventory)?, None, a.state_dir, a.ssh_config)
    };
    let (prepared, rt) = match super::prepare_for(&opts, "changed")? {
        Ok(x) => x,
        Err(code) => return Ok(code),
    };
    let nodes = match &a.limit {
        Some(l) => match crate::inventory::select(&prepared.inventory, l) {
            Ok(n) if !n.is_empty() => n,
            Ok(_) => {
                eprintln!("error: no host matches --limit `{l}`");
                return Ok(exit::INVALID);
            }
            Err(e) => {
                eprintln!("error: --limit: {e}");
                return Ok(exit::INVALID);
            }
        },
        None => prepared.hosts.clone(),
    };
    let state = if a.check {
        crate::state::State::read_only(&opts.state_dir())
    } else {
        match crate::state::State::lock(&opts.state_dir()) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: {e}");
                return Ok(exit::LOCKED);
            }
        }
    };
    // Nodes finished by a roll that stopped, when this one maintains the same nodes.
    let recorded: serde_json::Value = state
        .read(PROGRESS)
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let resume: Vec<String> = if recorded["nodes"] == serde_json::json!(nodes) {
        serde_json::from_value(recorded["done"].clone()).unwrap_or_default()
    } else {
        Vec::new()
    };
    let m = maintain::Opts {
        nodes: nodes.clone(),
        reboot: a.reboot,
        full: a.full,
        check: a.check,
        allow_risk: a.allow_risk,
        wait: Duration::from_secs(a.wait),
        batch: a.batch.of(nodes
            .iter()
            .filter(|n| crate::day2::parts_of(&prepared, n).batchable())
            .count()),
    };
    let done = std::sync::Mutex::new(resume.clone());
    let record = |n: &str| {
        let mut d = done.lock().unwrap_or_else(|e| e.into_inner());
        d.push(n.to_owned());
        let v = serde_json::json!({"nodes": nodes, "done": *d});
        if let Err(e) = state.write(PROGRESS, v.to_string().as_bytes(), 0o600) {
            eprintln!("warning: the roll's progress could not be recorded: {e}");
        }
    };
    let started = std::time::Instant::now();
    let out = rt.block_on(maintain::run(&prepared, &m, &resume, &record));
    for l in &out.plan {
        out!("{l}");
    }
    for d in &out.done {
        out!(
            "{:<12} {:>6.1} s  rebooted: {:<3}  upgraded: {}",
            d.node,
            d.seconds,
            if d.rebooted { "yes" } else { "no" },
            if d.upgraded.is_empty() {
                "nothing".to_string()
            } else {
                d.upgraded.join(", ")
            }
        );
    }
    match out.stopped {
        Some((why, msg)) => {
            eprintln!("error: {msg}");
            Ok(match why {
                Why::Unreachable => exit::UNREACHABLE,
                Why::Failed => exit::FAILED,
            })
        }
        None => {
            if !a.check {
                let _ = std::fs::remove_file(state.dir.join(PROGRESS));
                out!(
                    "maintained {} node(s) in {:.1} s",
                    out.done.len(),
                    started.elapsed().as_secs_f64()
                );
            }
            Ok(exit::OK)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{parse_batch, Batch};

    #[test]
    fn batch_sizes() {
        assert_eq!(parse_batch("3"), Ok(Batch::Count(3)));
        assert_eq!(parse_batch("25%").map(|b| b.of(10)), Ok(3));
        assert_eq!(parse_batch("1%").map(|b| b.of(2)), Ok(1));
        assert_eq!(Batch::Percent(50).of(0), 1);
        for bad in ["0", "0%", "101%", "x", "-1", ""] {
            assert!(parse_batch(bad).is_err(), "{bad}");
        }
    }
}
