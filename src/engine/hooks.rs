//! Role hooks: what a role checks on the controller before any host is contacted, and
//! roles whose state on one host depends on other hosts. One table, so a role plugs in
//! here instead of by name inside the engine.

use crate::firewall::{self, Wanted};
use crate::hardening::Rule;
use crate::inventory::Inventory;
use crate::transport::Target;
use serde_json::{Map, Value};

/// What a hook sees of one host.
pub struct HostCheck<'a> {
    pub rules: &'a [Rule],
    pub target: &'a Target,
    pub firewall: Option<&'a Wanted>,
}

type Validate = fn(&HostCheck) -> Result<(), String>;
/// Does host X's state under this role (given its defaults) name a host inside `--limit`?
type Depends = fn(&Inventory, &Map<String, Value>, &str, &[String]) -> Result<bool, String>;

struct Hook {
    role: &'static str,
    validate: Validate,
    /// Under `--limit`, the role also runs on the hosts outside it that depend on hosts
    /// inside it (a firewall must admit a node being added).
    depends: Option<Depends>,
}

const HOOKS: &[Hook] = &[
    // Hardening must never lock provision out (AllowUsers without the login user, ...).
    Hook {
        role: "hardening",
        validate: |c| crate::hardening::lockout(c.rules, &c.target.user),
        depends: None,
    },
    // The firewall must admit this controller on SSH, as far as routing here shows.
    Hook {
        role: "firewall",
        validate: |c| {
            let (Some(w), t) = (c.firewall, c.target) else {
                return Ok(());
            };
            if !w.enabled || w.ssh_sources.is_empty() || t.jump.is_some() {
                return Ok(());
            }
            match firewall::controller_address(&t.address, t.port) {
                Some(ip) if !w.admits_ssh(ip) => Err(format!(
                    "the firewall would not admit this controller ({ip}) on SSH port {}: \
                     firewall_ssh_sources is [{}]; add this address or its network",
                    w.ssh_port,
                    w.ssh_sources
                        .iter()
                        .map(|n| n.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
                _ => Ok(()),
            }
        },
        depends: Some(firewall::depends_on),
    },
];

pub fn validate(role: &str, c: &HostCheck) -> Result<(), String> {
    match HOOKS.iter().find(|h| h.role == role) {
        Some(h) => (h.validate)(c),
        None => Ok(()),
    }
}

pub fn depends(role: &str) -> Option<Depends> {
    HOOKS
        .iter()
        .find(|h| h.role == role)
        .and_then(|h| h.depends)
}
