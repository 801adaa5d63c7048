//! The command line: arguments, dispatch, and the exit code. One file per command.

mod backup;
mod inventory;
mod maintain;
mod pki;
mod restore;
mod run;
mod status;
mod vault;

use crate::lab::{self, Lab};
use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// Exit codes, documented in the README.
pub mod exit {
    pub const OK: i32 = 0;
    pub const ERROR: i32 = 1;
    pub const FAILED: i32 = 2;
    pub const UNREACHABLE: i32 = 3;
    pub const INVALID: i32 = 4;
    pub const DRIFT: i32 = 5;
    /// Another run holds the inventory's state directory.
    pub const LOCKED: i32 = 6;
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
    #[command(flatten)]
    pub vault: VaultArgs,
}

/// Ansible Vault passwords, for every command that reads the inventory.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct VaultArgs {
    /// A file holding the vault password (an executable file prints it); also
    /// ANSIBLE_VAULT_PASSWORD_FILE
    #[arg(long, global = true)]
    pub vault_password_file: Vec<PathBuf>,
    /// Ask for the vault password on the terminal
    #[arg(long, global = true)]
    pub ask_vault_pass: bool,
    /// A vault password with its id: ID@FILE or ID@prompt
    #[arg(long, global = true)]
    pub vault_id: Vec<String>,
}

impl VaultArgs {
    /// The passwords given, read (prompted for) now.
    pub fn passwords(&self) -> Result<Vec<crate::vault::Password>, String> {
        use crate::vault::{read_source, Password};
        let prompt = |what: &str| {
            rpassword::prompt_password(what)
                .map_err(|e| format!("cannot read the vault password from the terminal: {e}"))
        };
        let mut out = Vec::new();
        let mut files = self.vault_password_file.clone();
        if files.is_empty() && self.vault_id.is_empty() && !self.ask_vault_pass {
            if let Some(f) =
                std::env::var_os("ANSIBLE_VAULT_PASSWORD_FILE").filter(|f| !f.is_empty())
            {
                files.push(PathBuf::from(f));
            }
        }
        for f in &files {
            out.push(Password {
                id: "default".into(),
                secret: read_source(f)?,
            });
        }
        for v in &self.vault_id {
            let (id, src) = v.split_once('@').unwrap_or(("default", v.as_str()));
            let secret = if src == "prompt" {
                prompt(&format!("Vault password ({id}): "))?
            } else {
                read_source(std::path::Path::new(src))?
            };
            out.push(Password {
                id: id.to_owned(),
                secret,
            });
        }
        if self.ask_vault_pass {
            out.push(Password {
                id: "default".into(),
                secret: prompt("Vault password: ")?,
            });
        }
        Ok(out)
    }
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
    /// Hosts worked on at once (at least 1)
    #[arg(long, short = 'f', default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..))]
    pub forks: u64,
    /// More output (-v shows every task)
    #[arg(short, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[arg(long, value_enum, default_value_t = OutputMode::Text)]
    pub output: OutputMode,
    /// Progress: a line per host, or (for many hosts) one bar, the changed and failed
    /// hosts, and a recap of counts and failures grouped by error; auto: summary above 40 hosts
    #[arg(long, value_enum, default_value_t = ProgressMode::Auto)]
    pub progress: ProgressMode,
    /// List the selected hosts and exit
    #[arg(long)]
    pub list_hosts: bool,
    /// List the selected tasks and exit
    #[arg(long)]
    pub list_tasks: bool,
    /// Trust unknown host keys on first use and record them (a changed key is still fatal)
    #[arg(long)]
    pub accept_new_host_keys: bool,
    /// Seconds to wait for a host to answer (at least 1)
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub connect_timeout: u64,
    /// Seconds a single remote command may take (at least 1)
    #[arg(long, default_value_t = 900, value_parser = clap::value_parser!(u64).range(1..))]
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
    /// The controller's state directory (default: .provision/ beside the inventory)
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// Make a new root CA when the state directory lost its own (reissues every host certificate)
    #[arg(long)]
    pub new_ca: bool,
    /// Rotate the root CA: three runs (both CAs trusted, every certificate reissued, the old
    /// CA removed); an interrupted rotation goes on where it stopped
    #[arg(long, conflicts_with_all = ["new_ca", "check", "limit", "tags", "skip_tags", "list_hosts", "list_tasks"])]
    pub rotate_ca: bool,
    /// Seconds to wait for another provision run to release a host (at least 1)
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub lock_timeout: u64,
    /// End the recap with where the time went: the largest tasks and the critical path
    #[arg(long)]
    pub timings: bool,
    /// Seconds each wait of a node's removal may take (tasks moved, data moved, health)
    #[arg(long, default_value_t = 1800, value_parser = clap::value_parser!(u64).range(1..))]
    pub remove_wait: u64,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum OutputMode {
    Text,
    Json,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LabInit {
    Systemd,
    Minimal,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressMode {
    Auto,
    Hosts,
    Summary,
}

impl From<ProgressMode> for crate::output::Progress {
    fn from(p: ProgressMode) -> Self {
        match p {
            ProgressMode::Auto => Self::Auto,
            ProgressMode::Hosts => Self::Hosts,
            ProgressMode::Summary => Self::Summary,
        }
    }
}

#[derive(clap::Args, Debug, Clone)]
pub struct AuditArgs {
    /// The inventory (the local lab's when omitted)
    pub inventory: Option<PathBuf>,
    /// Audit the roles of this playbook instead of the built-in one's
    #[arg(long, short = 'p')]
    pub playbook: Option<PathBuf>,
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
    /// Seconds to wait for a host to answer (at least 1)
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub connect_timeout: u64,
    /// Hosts checked at once (at least 1)
    #[arg(long, short = 'f', default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..))]
    pub forks: u64,
    /// The controller's state directory, for the CA that certificates are checked against
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// Report: every host's drift, or (for many hosts) one bar while checking, then the
    /// drift grouped by rule and the hosts not checked grouped by error; auto: summary above 40 hosts
    #[arg(long, value_enum, default_value_t = ProgressMode::Auto)]
    pub progress: ProgressMode,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Check every hardening rule read-only and report drift (exit 5 when any)
    Audit(AuditArgs),
    /// Print shell completions
    Completions { shell: clap_complete::Shell },
    /// The resolved inventory: groups, hosts and variables (ansible-inventory's shapes)
    Inventory(inventory::InventoryArgs),
    /// The cluster's certificates: status of every host's, or a client certificate
    Pki {
        #[command(subcommand)]
        command: pki::PkiCmd,
    },
    /// Patch and reboot the hosts one at a time, drained first, each back and healthy
    /// before the next (a stopped roll resumes)
    Maintain(maintain::MaintainArgs),
    /// The cluster at a glance: nodes, services, etcd, Ceph, certificates (exit 0 healthy,
    /// 5 degraded, 3 a host did not answer)
    Status(status::StatusArgs),
    /// Back up what the cluster cannot be rebuilt without (state, etcd, swarm, Ceph maps),
    /// encrypted with the vault password; --verify SET checks a set
    Backup(backup::BackupArgs),
    /// Restore from a backup set: the controller's state directory (--state)
    Restore(restore::RestoreArgs),
    /// Ansible Vault files: encrypt, decrypt, view, edit (ansible-vault reads what it writes)
    Vault {
        #[command(subcommand)]
        command: vault::VaultCmd,
    },
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
        /// Hosts as fresh servers: docker, etcd and ceph not installed (the lab's
        /// package repository has them)
        #[arg(long)]
        fresh: bool,
        /// Also serve a container registry on the bridge (TLS, a lab CA the hosts trust)
        /// holding images built from Debian packages: busybox, prometheus, node-exporter,
        /// alertmanager, as 10.200.0.1:5000/NAME:lab
        #[arg(long)]
        registry: bool,
        /// systemd (real servers: systemctl, docker, etcd, Ceph), or minimal: tini and sshd
        /// only, about 3 MB a host, up to 1000 hosts (scale tests and benchmarks)
        #[arg(long, value_enum, default_value_t = LabInit::Systemd)]
        init: LabInit,
    },
    /// Stop every host and remove what the lab made
    Down,
    /// Show the hosts, their state and memory
    Status,
    /// Power one host off, keeping its files and disk (a server shut down)
    Stop { node: String },
    /// Boot a stopped host again
    Start { node: String },
    /// Replace a host with a new machine under the same name (files, disk, host key new)
    Reinstall { node: String },
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
    let passwords = match args.vault.passwords() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            eprintln!("nothing was changed: no host was contacted");
            return Ok(exit::INVALID);
        }
    };
    if let Some(Cmd::Vault { command }) = args.command {
        return vault::main(command, passwords);
    }
    crate::vault::set_passwords(passwords);
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
        Some(Cmd::Pki { command }) => pki::main(command),
        Some(Cmd::Inventory(a)) => inventory::main(a),
        Some(Cmd::Maintain(a)) => maintain::main(a),
        Some(Cmd::Status(a)) => status::main(a),
        Some(Cmd::Vault { .. }) => Ok(exit::OK),
        Some(Cmd::Backup(a)) => backup::main(a),
        Some(Cmd::Restore(a)) => restore::main(a),
        None => run::main(args.inventory, args.run),
    }
}

fn lab_cmd(cmd: LabCmd) -> anyhow::Result<i32> {
    let lab = Lab::new(lab::default_dir(), lab::default_cache());
    let mut log = |m: &str| eprintln!("lab: {m}");
    match cmd {
        LabCmd::Up {
            hosts,
            disk,
            fresh,
            registry,
            init,
        } => {
            let minimal = init == LabInit::Minimal;
            if minimal && (registry || disk.is_some()) {
                anyhow::bail!("--registry and --disk need systemd hosts: leave out --init minimal");
            }
            lab.up(hosts, disk.as_deref(), fresh, registry, minimal, &mut log)?;
            out!("inventory: {}", lab.inventory().display());
            out!("ssh:       ssh -F {} node1", lab.ssh_config().display());
        }
        LabCmd::Down => lab.down(&mut log)?,
        LabCmd::Stop { node } => lab.stop_host(&node, &mut log)?,
        LabCmd::Start { node } => lab.start_host_again(&node, &mut log)?,
        LabCmd::Reinstall { node } => lab.reinstall_host(&node, &mut log)?,
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
    let opts = crate::engine::Options {
        playbook: a.playbook,
        roles_dir: a.roles,
        forks: a.forks as usize,
        accept_new_host_keys: a.accept_new_host_keys,
        connect_timeout: Duration::from_secs(a.connect_timeout),
        ..read_options(lab_or(a.inventory)?, a.limit, a.state_dir, a.ssh_config)
    };
    let (prepared, rt) = match prepare_for(&opts, "checked")? {
        Ok(x) => x,
        Err(code) => return Ok(code),
    };
    let started = std::time::Instant::now();
    let ca = match crate::pki::Ca::load(&crate::state::State::read_only(&opts.state_dir())) {
        Ok(c) => c.map(|c| c.cert_pem),
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(exit::INVALID);
        }
    };
    let view = crate::output::AuditView {
        json: matches!(a.output, OutputMode::Json),
        verbose: a.verbose,
        summary: crate::output::Progress::from(a.progress).summary(prepared.hosts.len()),
    };
    let bar = (view.summary && !view.json && std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .then(|| {
            let pb = indicatif::ProgressBar::new(prepared.hosts.len() as u64).with_style(
                indicatif::ProgressStyle::with_template(
                    "{spinner} audited {pos}/{len} {bar:30} {elapsed:>4}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            pb.enable_steady_tick(std::time::Duration::from_millis(120));
            pb
        });
    let done: std::sync::Arc<dyn Fn() + Send + Sync> = match bar.clone() {
        Some(pb) => std::sync::Arc::new(move || pb.inc(1)),
        None => std::sync::Arc::new(|| {}),
    };
    let mut results = rt.block_on(crate::engine::audit(&prepared, &opts, ca.as_deref(), done));
    let state = crate::state::State::read_only(&opts.state_dir());
    results.extend(rt.block_on(crate::day2::retired::audit(&prepared, &state)));
    if let Some(pb) = bar {
        pb.finish_and_clear();
    }
    let secs = started.elapsed().as_secs_f64();
    let (drift, broken) = crate::output::audit_report(&results, &view, secs);
    Ok(if broken > 0 {
        exit::UNREACHABLE
    } else if drift > 0 {
        exit::DRIFT
    } else {
        exit::OK
    })
}

/// Options for a command that reads the hosts (audit, status, pki status, maintain):
/// check mode, every host at once (50), no lockout checks.
pub(crate) fn read_options(
    inventory: PathBuf,
    limit: Option<String>,
    state_dir: Option<PathBuf>,
    ssh_config: Option<PathBuf>,
) -> crate::engine::Options {
    use std::time::Duration;
    crate::engine::Options {
        inventory,
        playbook: None,
        roles_dir: None,
        limit,
        tags: Vec::new(),
        skip_tags: Vec::new(),
        check: true,
        diff: false,
        forks: 50,
        accept_new_host_keys: false,
        connect_timeout: Duration::from_secs(10),
        command_timeout: Duration::from_secs(120),
        any_errors_fatal: false,
        max_fail_percentage: None,
        ssh_config,
        state_dir,
        new_ca: false,
        lock_wait: Duration::from_secs(1),
        lockout_check: false,
    }
}

/// Validates everything, then a runtime with the SSH keys unlocked; or the exit code,
/// the error printed (`what`: what was not done, as no host was contacted).
pub(crate) fn prepare_for(
    opts: &crate::engine::Options,
    what: &str,
) -> anyhow::Result<Result<(crate::engine::Prepared, tokio::runtime::Runtime), i32>> {
    let mut p = match crate::engine::prepare(opts) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            eprintln!("nothing was {what}: no host was contacted");
            return Ok(Err(exit::INVALID));
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let interactive = std::fs::File::open("/dev/tty").is_ok();
    if let Err(e) = rt.block_on(p.unlock(interactive, None)) {
        eprintln!("error: {e}");
        return Ok(Err(exit::INVALID));
    }
    Ok(Ok((p, rt)))
}

/// The given inventory, or the local lab's (started with its registry when it is not up;
/// the showcase of every role when the lab can hold it).
pub(crate) fn lab_or(inventory: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    Ok(match inventory {
        Some(i) => i,
        None => {
            let lab = Lab::new(lab::default_dir(), lab::default_cache());
            if lab.state().is_none() {
                lab.up(3, Some("8G"), true, true, false, &mut |m: &str| {
                    eprintln!("lab: {m}")
                })?;
            }
            let inv = lab.showcase()?;
            eprintln!(
                "no inventory given: using the local lab's {}",
                inv.display()
            );
            inv
        }
    })
}
