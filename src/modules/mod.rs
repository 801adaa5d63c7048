//! Typed modules. Each probes the current state with one read-only command, compares it
//! with the wanted state and plans the change, if any. Check mode and diff come for free:
//! the plan is simply not applied.

mod files;
pub use crate::args::Args;
pub use crate::probe::{parse_file, probe_file, sha256_hex, FileState};
mod nftables;
mod sshd;
mod system;

use crate::transport::{quote, Output};
use serde_json::{Map, Value};

/// What a module wants done after its probe.
pub enum Plan {
    /// Already in the wanted state.
    Ok(String),
    /// A change: a script to run (with optional stdin) and what it changes.
    Change {
        script: String,
        stdin: Option<Vec<u8>>,
        diff: Option<Diff>,
        msg: String,
    },
    Fail(String),
}

pub struct Diff {
    pub path: String,
    pub before: String,
    pub after: String,
}

impl Diff {
    pub fn unified(&self) -> String {
        similar::TextDiff::from_lines(&self.before, &self.after)
            .unified_diff()
            .context_radius(3)
            .header(
                &format!("{} (before)", self.path),
                &format!("{} (after)", self.path),
            )
            .to_string()
    }
}

pub trait Module: Send + Sync {
    /// A read-only script printing the current state; None when nothing needs reading.
    fn probe(&self) -> Option<String>;
    fn plan(&self, probe: &Output) -> Plan;
    /// Commands change by running; their output is registered.
    fn is_command(&self) -> bool {
        false
    }
    /// The probe may run ahead of earlier tasks in one batch (false for probes that wait).
    fn batchable(&self) -> bool {
        true
    }
    /// For changes that could cut access: after applying, the runner opens a new SSH
    /// connection and, if that fails, runs this script (as root) on the old one.
    fn rollback(&self) -> Option<String> {
        None
    }
    /// Run (as root) on that new connection once it works: confirms the change.
    fn confirm(&self) -> Option<String> {
        None
    }
}

type HostBuild = fn(&Args) -> Result<Box<dyn Module>, String>;

/// How a module is made: a host module from one host's arguments, or a cluster step
/// that sees every host of the play at once (a barrier between host-local tasks).
#[derive(Clone, Copy)]
pub enum Build {
    Host(HostBuild),
    Cluster(fn() -> Box<dyn crate::cluster::Step>),
}

/// One module: its name, its arguments (required, optional; checked before any
/// connection) and how it is built. The one table every lookup goes through.
pub struct Def {
    pub name: &'static str,
    pub required: &'static [&'static str],
    pub optional: &'static [&'static str],
    pub build: Build,
}

const fn host(
    name: &'static str,
    required: &'static [&'static str],
    optional: &'static [&'static str],
    f: HostBuild,
) -> Def {
    Def {
        name,
        required,
        optional,
        build: Build::Host(f),
    }
}

fn boxed<M: Module + 'static>(r: Result<M, String>) -> Result<Box<dyn Module>, String> {
    r.map(|m| Box::new(m) as Box<dyn Module>)
}

const OWNER: &[&str] = &["mode", "owner", "group", "validate"];

pub const TABLE: &[Def] = &[
    host("sshd_config", &["path", "content"], &[], |a| {
        boxed(sshd::SshdConfig::new(a))
    }),
    host(
        "nftables",
        &["path"],
        &[
            "content",
            "state",
            "ssh_port",
            "ssh_sources",
            "client",
            "confirm_timeout",
        ],
        |a| boxed(nftables::Nftables::new(a)),
    ),
    host("command", &["cmd"], &["chdir", "creates", "removes"], |a| {
        boxed(system::Command::new(a))
    }),
    host("shell", &["cmd"], &["chdir", "creates", "removes"], |a| {
        boxed(system::Command::new(a))
    }),
    host(
        "copy",
        &["dest"],
        &["content", "src", "mode", "owner", "group", "validate"],
        |a| boxed(files::Copy::new(a)),
    ),
    host("template", &["src", "dest"], OWNER, |a| {
        boxed(files::Copy::new(a))
    }),
    host(
        "file",
        &["path"],
        &["state", "mode", "owner", "group", "src", "if_exists"],
        |a| boxed(files::File::new(a)),
    ),
    host(
        "lineinfile",
        &["path"],
        &["line", "regexp", "state", "create", "mode"],
        |a| boxed(files::LineInFile::new(a)),
    ),
    host(
        "blockinfile",
        &["path"],
        &["block", "marker", "state", "create", "mode"],
        |a| boxed(files::BlockInFile::new(a)),
    ),
    host("package", &["name"], &["state", "update_cache"], |a| {
        boxed(system::Package::new(a))
    }),
    host("apt", &["name"], &["state", "update_cache"], |a| {
        boxed(system::Package::new(a))
    }),
    host(
        "service",
        &["name"],
        &["state", "enabled", "daemon_reload"],
        |a| boxed(system::Service::new(a)),
    ),
    host(
        "systemd",
        &["name"],
        &["state", "enabled", "daemon_reload"],
        |a| boxed(system::Service::new(a)),
    ),
    host(
        "sysctl",
        &["name", "value"],
        &["sysctl_file", "reload"],
        |a| boxed(files::Sysctl::new(a)),
    ),
    host("hostname", &["name"], &[], |a| {
        boxed(system::Hostname::new(a))
    }),
    host(
        "user",
        &["name"],
        &[
            "state",
            "shell",
            "groups",
            "append",
            "home",
            "system",
            "create_home",
        ],
        |a| boxed(system::User::new(a)),
    ),
    host("group", &["name"], &["state", "system"], |a| {
        boxed(system::Group::new(a))
    }),
    host(
        "authorized_key",
        &["user", "key"],
        &["state", "exclusive"],
        |a| boxed(files::AuthorizedKey::new(a)),
    ),
    host(
        "wait_for",
        &[],
        &["port", "host", "path", "state", "timeout"],
        |a| boxed(system::WaitFor::new(a)),
    ),
    host("assert", &["that"], &["msg"], |a| {
        boxed(system::Assert::new(a))
    }),
    Def {
        name: "share",
        required: &["from", "command"],
        optional: &["dest", "mode", "secret"],
        build: Build::Cluster(crate::cluster::share::new),
    },
    Def {
        name: "swarm",
        required: &["role", "advertise_addr"],
        optional: &[
            "data_path_addr",
            "default_addr_pool",
            "default_addr_pool_mask_length",
            "allow_even_managers",
        ],
        build: Build::Cluster(crate::cluster::swarm::new),
    },
    Def {
        name: "swarm_labels",
        required: &[],
        optional: &["labels"],
        build: Build::Cluster(crate::cluster::labels::new),
    },
    Def {
        name: "swarm_networks",
        required: &[],
        optional: &["networks"],
        build: Build::Cluster(crate::cluster::networks::new),
    },
    Def {
        name: "swarm_stacks",
        required: &[],
        optional: &["stacks", "prune", "resolve_image"],
        build: Build::Cluster(crate::cluster::stacks::new),
    },
    Def {
        name: "etcd_cluster",
        required: &["address", "cert", "key", "ca", "data_dir"],
        optional: &["config", "allow_even_members"],
        build: Build::Cluster(crate::cluster::etcd::new),
    },
    Def {
        name: "ceph_cluster",
        required: &["address"],
        optional: &[
            "mon",
            "mgr",
            "mds",
            "client",
            "osd_devices",
            "public_network",
            "conf",
            "fs",
            "fs_mount",
            "fs_client",
            "allow_loop_devices",
            "allow_even_mons",
            "health_allow",
            "health_timeout",
        ],
        build: Build::Cluster(crate::cluster::ceph::new),
    },
    Def {
        name: "tls_certs",
        required: &["certs"],
        optional: &["dir", "days", "sans", "ca_file", "trust_store"],
        build: Build::Cluster(crate::cluster::tls::new),
    },
];

pub fn def(name: &str) -> Option<&'static Def> {
    TABLE.iter().find(|d| d.name == name)
}

pub fn names() -> impl Iterator<Item = &'static str> {
    TABLE.iter().map(|d| d.name)
}

pub fn is_cluster(name: &str) -> bool {
    matches!(def(name).map(|d| d.build), Some(Build::Cluster(_)))
}

/// Builds a host module from rendered arguments (template content already rendered into `content`).
pub fn build(module: &str, args: &Map<String, Value>) -> Result<Box<dyn Module>, String> {
    match def(module).map(|d| d.build) {
        Some(Build::Host(f)) => f(&Args(args)),
        Some(Build::Cluster(_)) => Err(format!("`{module}` is a cluster step, not a host module")),
        None => Err(format!("unknown module `{module}`")),
    }
}

pub fn q(s: &str) -> String {
    quote(s)
}

#[cfg(test)]
mod tests;
