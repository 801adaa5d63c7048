//! Typed modules. Each probes the current state with one read-only command, compares it
//! with the wanted state and plans the change, if any. Check mode and diff come for free:
//! the plan is simply not applied.

mod files;
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
}

/// Arguments of every module: (required, optional). Checked before any connection.
pub fn spec(module: &str) -> Option<(&'static [&'static str], &'static [&'static str])> {
    Some(match module {
        "command" | "shell" => (&["cmd"], &["chdir", "creates", "removes"]),
        "sshd_config" => (&["path", "content"], &[]),
        "copy" => (
            &["dest"],
            &["content", "src", "mode", "owner", "group", "validate"],
        ),
        "template" => (&["src", "dest"], &["mode", "owner", "group", "validate"]),
        "file" => (
            &["path"],
            &["state", "mode", "owner", "group", "src", "if_exists"],
        ),
        "lineinfile" => (&["path"], &["line", "regexp", "state", "create", "mode"]),
        "blockinfile" => (&["path"], &["block", "marker", "state", "create", "mode"]),
        "package" | "apt" => (&["name"], &["state", "update_cache"]),
        "service" | "systemd" => (&["name"], &["state", "enabled", "daemon_reload"]),
        "sysctl" => (&["name", "value"], &["sysctl_file", "reload"]),
        "hostname" => (&["name"], &[]),
        "user" => (
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
        ),
        "group" => (&["name"], &["state", "system"]),
        "authorized_key" => (&["user", "key"], &["state", "exclusive"]),
        "wait_for" => (&[], &["port", "host", "path", "state", "timeout"]),
        _ => return None,
    })
}

pub const NAMES: &[&str] = &[
    "sshd_config",
    "command",
    "shell",
    "copy",
    "template",
    "file",
    "lineinfile",
    "blockinfile",
    "package",
    "apt",
    "service",
    "systemd",
    "sysctl",
    "hostname",
    "user",
    "group",
    "authorized_key",
    "wait_for",
];

/// Builds a module from rendered arguments (template content already rendered into `content`).
pub fn build(module: &str, args: &Map<String, Value>) -> Result<Box<dyn Module>, String> {
    let a = Args(args);
    Ok(match module {
        "command" | "shell" => Box::new(system::Command::new(&a)?),
        "copy" | "template" => Box::new(files::Copy::new(&a)?),
        "sshd_config" => Box::new(sshd::SshdConfig::new(&a)?),
        "file" => Box::new(files::File::new(&a)?),
        "lineinfile" => Box::new(files::LineInFile::new(&a)?),
        "blockinfile" => Box::new(files::BlockInFile::new(&a)?),
        "package" | "apt" => Box::new(system::Package::new(&a)?),
        "service" | "systemd" => Box::new(system::Service::new(&a)?),
        "sysctl" => Box::new(files::Sysctl::new(&a)?),
        "hostname" => Box::new(system::Hostname::new(&a)?),
        "user" => Box::new(system::User::new(&a)?),
        "group" => Box::new(system::Group::new(&a)?),
        "authorized_key" => Box::new(files::AuthorizedKey::new(&a)?),
        "wait_for" => Box::new(system::WaitFor::new(&a)?),
        other => return Err(format!("unknown module `{other}`")),
    })
}

/// Typed access to a module's arguments.
pub struct Args<'a>(pub &'a Map<String, Value>);

impl Args<'_> {
    pub fn str(&self, k: &str) -> Result<Option<String>, String> {
        match self.0.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(Value::Bool(b)) => Ok(Some(b.to_string())),
            Some(v) => Err(format!("`{k}` must be a string, found {v}")),
        }
    }
    pub fn req(&self, k: &str) -> Result<String, String> {
        self.str(k)?.ok_or_else(|| format!("`{k}` is required"))
    }
    pub fn bool(&self, k: &str, default: bool) -> Result<bool, String> {
        match self.0.get(k) {
            None | Some(Value::Null) => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(Value::String(s)) if ["yes", "true", "True"].contains(&s.as_str()) => Ok(true),
            Some(Value::String(s)) if ["no", "false", "False"].contains(&s.as_str()) => Ok(false),
            Some(v) => Err(format!("`{k}` must be true or false, found {v}")),
        }
    }
    pub fn list(&self, k: &str) -> Result<Vec<String>, String> {
        match self.0.get(k) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|i| match i {
                    Value::String(s) => Ok(s.clone()),
                    other => Err(format!("`{k}` must be a list of strings, found {other}")),
                })
                .collect(),
            Some(Value::String(s)) => Ok(s
                .split(',')
                .map(|p| p.trim().to_owned())
                .filter(|p| !p.is_empty())
                .collect()),
            Some(v) => Err(format!("`{k}` must be a list, found {v}")),
        }
    }
    pub fn choice(&self, k: &str, default: &str, allowed: &[&str]) -> Result<String, String> {
        let v = self.str(k)?.unwrap_or_else(|| default.to_owned());
        if allowed.contains(&v.as_str()) {
            Ok(v)
        } else {
            Err(format!(
                "`{k}` must be one of {}, found `{v}`",
                allowed.join(", ")
            ))
        }
    }
    /// A file mode as octal digits ("0644", "644" or the YAML integer 644).
    pub fn mode(&self, k: &str) -> Result<Option<String>, String> {
        let Some(m) = self.str(k)? else {
            return Ok(None);
        };
        let digits = m.trim_start_matches('0');
        let digits = if digits.is_empty() { "0" } else { digits };
        if digits.len() > 4 || !digits.chars().all(|c| ('0'..='7').contains(&c)) {
            return Err(format!(
                "`{k}` must be an octal mode like \"0644\", found `{m}`"
            ));
        }
        Ok(Some(format!(
            "{:o}",
            u32::from_str_radix(digits, 8).unwrap_or(0)
        )))
    }
}

pub fn q(s: &str) -> String {
    quote(s)
}
