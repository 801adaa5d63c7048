//! The command line: arguments, dispatch, and the exit code.

use crate::lab::{self, Lab};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::sync::Arc;

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
#[command(
    name = "provision",
    version,
    about = "Agentless provisioning of Docker Swarm clusters over SSH"
)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    #[command(subcommand)]
    pub command: Option<Cmd>,
    /// The inventory (Ansible YAML format); without one, the local lab (started if needed)
    pub inventory: Option<PathBuf>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    /// A playbook (list of plays) to run instead of the built-in cluster playbook
    #[arg(long, short = 'p')]
    pub playbook: Option<PathBuf>,
    /// A folder of roles that overrides the built-in ones
    #[arg(long)]
    pub roles: Option<PathBuf>,
    /// Only these hosts (pattern: names, groups, globs, a:&b, !c)
    #[arg(long, short = 'l')]
    pub limit: Option<String>,
    /// Only tasks with these tags
    #[arg(long, short = 't', value_delimiter = ',')]
    pub tags: Vec<String>,
    /// Skip tasks with these tags
    #[arg(long, value_delimiter = ',')]
    pub skip_tags: Vec<String>,
    /// Probe and report what would change, changing nothing
    #[arg(long, short = 'C')]
    pub check: bool,
    /// Show unified diffs of changed files
    #[arg(long, short = 'D')]
    pub diff: bool,
    /// Hosts worked on at once
    #[arg(long, short = 'f', default_value_t = 50)]
    pub forks: usize,
    /// More output (-v shows every task)
    #[arg(short, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[arg(long, value_enum, default_value_t = OutputMode::Text)]
    pub output: OutputMode,
    /// List the selected hosts and exit
    #[arg(long)]
    pub list_hosts: bool,
    /// List the selected tasks and exit
    #[arg(long)]
    pub list_tasks: bool,
    /// Trust unknown host keys on first use and record them (a changed key is still fatal)
    #[arg(long)]
    pub accept_new_host_keys: bool,
    /// Seconds to wait for a host to answer
    #[arg(long, default_value_t = 10)]
    pub connect_timeout: u64,
    /// Seconds a single remote command may take
    #[arg(long, default_value_t = 900)]
    pub command_timeout: u64,
    /// OpenSSH client config to honour (default ~/.ssh/config)
    #[arg(long, short = 'F')]
    pub ssh_config: Option<PathBuf>,
    /// Ask once for the sudo password, used on hosts where sudo wants one
    #[arg(long, short = 'K')]
    pub ask_become_pass: bool,
    /// Stop all hosts after the first failure
    #[arg(long)]
    pub any_errors_fatal: bool,
    /// Stop when more than this percentage of hosts failed
    #[arg(long)]
    pub max_fail_percentage: Option<u8>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum OutputMode {
    Text,
    Json,
}

#[derive(clap::Args, Debug, Clone)]
pub struct AuditArgs {
    /// The inventory (the local lab's when omitted)
    pub inventory: Option<PathBuf>,
    /// A folder of roles that overrides the built-in ones (its hardening/rules.yml too)
    #[arg(long)]
    pub roles: Option<PathBuf>,
    /// Only these hosts (pattern: names, groups, globs, a:&b, !c)
    #[arg(long, short = 'l')]
    pub limit: Option<String>,
    #[arg(long, value_enum, default_value_t = OutputMode::Text)]
    pub output: OutputMode,
    /// Also list the rules that pass
    #[arg(short, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// OpenSSH client config to honour (default ~/.ssh/config)
    #[arg(long, short = 'F')]
    pub ssh_config: Option<PathBuf>,
    /// Trust unknown host keys on first use and record them
    #[arg(long)]
    pub accept_new_host_keys: bool,
    /// Seconds to wait for a host to answer
    #[arg(long, default_value_t = 10)]
    pub connect_timeout: u64,
    /// Hosts checked at once
    #[arg(long, short = 'f', default_value_t = 50)]
    pub forks: usize,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Check every hardening rule read-only and report drift (exit 5 when any)
    Audit(AuditArgs),
    /// Print shell completions
    Completions { shell: clap_complete::Shell },
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
        Some(Cmd::Completions { shell }) => {
            use clap::CommandFactory;
            use std::io::Write as _;
            let mut buf = Vec::new();
            clap_complete::generate(shell, &mut Args::command(), "provision", &mut buf);
            let _ = std::io::stdout().write_all(&buf); // a closed pipe is not an error
            Ok(exit::OK)
        }
        Some(Cmd::Audit(a)) => audit(a),
        None => run_inventory(args.inventory, args.run),
    }
}

fn lab_cmd(cmd: LabCmd) -> anyhow::Result<i32> {
    let lab = Lab::new(lab::default_dir(), lab::default_cache());
    let mut log = |m: &str| eprintln!("lab: {m}");
    match cmd {
        LabCmd::Up { hosts, disk } => {
            lab.up(hosts, disk.as_deref(), &mut log)?;
            out!("inventory: {}", lab.inventory().display());
            out!("ssh:       ssh -F {} node1", lab.ssh_config().display());
        }
        LabCmd::Down => lab.down(&mut log)?,
        LabCmd::Status => {
            let rows = lab.status();
            if rows.is_empty() {
                out!("no lab is up");
            }
            for (h, up, ssh, mem) in rows {
                let mem = mem
                    .map(|b| format!("{:.0} MiB", b as f64 / 1048576.0))
                    .unwrap_or("-".into());
                let state = if !up {
                    "stopped"
                } else if ssh {
                    "ssh-ready"
                } else {
                    "booting"
                };
                out!("{:<8} {:<14} {:<10} {}", h.name, h.address, state, mem);
            }
        }
        LabCmd::Ssh { node, command } => {
            lab.ssh(&node, &command)?;
        }
    }
    Ok(exit::OK)
}

fn audit(a: AuditArgs) -> anyhow::Result<i32> {
    use std::time::Duration;
    let opts = crate::run::Options {
        inventory: lab_or(a.inventory)?,
        playbook: None,
        roles_dir: a.roles,
        limit: a.limit,
        tags: Vec::new(),
        skip_tags: Vec::new(),
        check: true,
        diff: false,
        forks: a.forks,
        accept_new_host_keys: a.accept_new_host_keys,
        connect_timeout: Duration::from_secs(a.connect_timeout),
        command_timeout: Duration::from_secs(120),
        any_errors_fatal: false,
        max_fail_percentage: None,
        ssh_config: a.ssh_config,
    };
    let mut prepared = match crate::run::prepare(&opts) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            eprintln!("nothing was checked: no host was contacted");
            return Ok(exit::INVALID);
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let interactive = std::fs::File::open("/dev/tty").is_ok();
    if let Err(e) = rt.block_on(prepared.unlock(interactive, None)) {
        eprintln!("error: {e}");
        return Ok(exit::INVALID);
    }
    let started = std::time::Instant::now();
    let results = rt.block_on(crate::run::audit(&prepared, &opts));
    let secs = started.elapsed().as_secs_f64();
    Ok(crate::output::audit_report(
        &results,
        matches!(a.output, OutputMode::Json),
        a.verbose,
        secs,
    ))
}

/// The given inventory, or the local lab's (started when it is not up).
fn lab_or(inventory: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    Ok(match inventory {
        Some(i) => i,
        None => {
            let lab = Lab::new(lab::default_dir(), lab::default_cache());
            if lab.state().is_none() {
                lab.up(3, None, &mut |m: &str| eprintln!("lab: {m}"))?;
            }
            eprintln!(
                "no inventory given: using the local lab's {}",
                lab.inventory().display()
            );
            lab.inventory()
        }
    })
}

fn run_inventory(inventory: Option<PathBuf>, a: RunArgs) -> anyhow::Result<i32> {
    let inventory = lab_or(inventory)?;
    let opts = crate::run::Options {
        inventory,
        playbook: a.playbook,
        roles_dir: a.roles,
        limit: a.limit,
        tags: a.tags,
        skip_tags: a.skip_tags,
        check: a.check,
        diff: a.diff,
        forks: a.forks,
        accept_new_host_keys: a.accept_new_host_keys,
        connect_timeout: std::time::Duration::from_secs(a.connect_timeout),
        command_timeout: std::time::Duration::from_secs(a.command_timeout),
        any_errors_fatal: a.any_errors_fatal,
        max_fail_percentage: a.max_fail_percentage,
        ssh_config: a.ssh_config.clone(),
    };
    let mut prepared = match crate::run::prepare(&opts) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            eprintln!("nothing was changed: no host was contacted");
            return Ok(exit::INVALID);
        }
    };
    if a.list_hosts {
        for h in &prepared.hosts {
            out!("{h}");
        }
        return Ok(exit::OK);
    }
    if a.list_tasks {
        for (play, hosts) in &prepared.plays {
            out!("play {} ({} hosts)", play.name, hosts.len());
            for r in &play.roles {
                for t in &r.tasks {
                    out!(
                        "  {} : {}{}",
                        r.name,
                        t.name,
                        if t.tags.is_empty() {
                            String::new()
                        } else {
                            format!(" [{}]", t.tags.join(", "))
                        }
                    );
                }
            }
        }
        return Ok(exit::OK);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let interactive = std::fs::File::open("/dev/tty").is_ok();
    let become_pass = if a.ask_become_pass {
        Some(
            rpassword::prompt_password("BECOME password: ").map_err(|e| {
                anyhow::anyhow!(
                    "--ask-become-pass: cannot read the password from the terminal: {e}"
                )
            })?,
        )
    } else {
        None
    };
    if let Err(e) = rt.block_on(prepared.unlock(interactive, become_pass)) {
        eprintln!("error: {e}");
        eprintln!("nothing was changed: no host was contacted");
        return Ok(exit::INVALID);
    }
    let mode = match a.output {
        OutputMode::Text => crate::output::Mode::Text,
        OutputMode::Json => crate::output::Mode::Json,
    };
    let rep = Arc::new(crate::output::Reporter::new(
        mode,
        a.verbose,
        &prepared.hosts,
    ));
    let mut hidden = Vec::new();
    for h in prepared.inventory.hosts.values() {
        crate::output::secret_values(
            &serde_json::Value::Object(h.vars.clone()),
            false,
            &mut hidden,
        );
    }
    rep.hide(hidden);
    if let Some(p) = prepared
        .targets
        .values()
        .find_map(|t| t.become_pass.clone())
    {
        rep.hide([p.0.clone()]);
    }
    for w in &prepared.inventory.warnings {
        rep.warn(w);
    }
    let check = opts.check;
    let summary = rt.block_on(crate::run::execute(prepared, opts, rep.clone()));
    let rows: Vec<(String, crate::output::Tally)> = summary.tallies.clone().into_iter().collect();
    rep.recap(&rows, check, summary.connections);
    let code = if rows.iter().any(|(_, t)| t.unreachable > 0) {
        exit::UNREACHABLE
    } else if rows.iter().any(|(_, t)| t.failed > 0) {
        exit::FAILED
    } else {
        exit::OK
    };
    Ok(code)
}
