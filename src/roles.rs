//! The role table: what the engine needs of each built-in role, in one place. The engine
//! loops over it and names no role or group: checks made on the controller before any
//! host is contacted, roles that follow `--limit` to hosts outside it, variables worked out
//! per host, and each role's part of `provision audit`. A role is its `roles/NAME` data,
//! its room under src/, and one row here (docs/architecture.md shows one added).

use crate::finding::Finding;
use crate::firewall::{self, HostWall, Wanted};
use crate::hardening::{self, Rule};
use crate::inventory::Inventory;
use crate::play::{Role, RoleSource};
use crate::transport::Target;
use crate::yaml::Located;
use indexmap::IndexMap;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::Arc;

/// What a pre-flight check sees of one host.
pub struct HostCheck<'a> {
    pub rules: &'a [Rule],
    pub target: &'a Target,
    pub firewall: Option<&'a Wanted>,
}

/// Refuses a host before any contact (a rule that would lock provision out).
pub type Validate = fn(&HostCheck) -> Result<(), String>;
/// Does host X's state under this role (given its defaults) name a host inside `--limit`?
pub type Depends = fn(&Inventory, &Map<String, Value>, &str, &[String]) -> Result<bool, String>;

/// What the audit of every host can read: the inventory and what was worked out of it.
pub struct Scope<'a> {
    pub inventory: &'a Inventory,
    /// The hosts audited.
    pub hosts: &'a [String],
    pub worked: &'a Worked,
    /// The controller's CA, when there is one.
    pub ca_pem: Option<&'a str>,
}

/// Findings per host judged from every answering host's section and the hosts that did
/// not answer.
pub type Across =
    fn(&Scope, &IndexMap<String, String>, &[String]) -> IndexMap<String, Vec<Finding>>;

impl Scope<'_> {
    /// Does host `h` run role `role` (in the playbook audited)?
    pub fn runs(&self, h: &str, role: &str) -> bool {
        self.worked
            .roles
            .get(h)
            .is_some_and(|rs| rs.iter().any(|r| r == role))
    }

    /// Host `h`'s variables as role `role` sees them: the role's defaults, then the host's own.
    pub fn vars(&self, h: &str, role: &str) -> Map<String, Value> {
        let mut v = self.worked.defaults.get(role).cloned().unwrap_or_default();
        if let Some(host) = self.inventory.hosts.get(h) {
            v.extend(host.vars.iter().map(|(k, x)| (k.clone(), x.clone())));
        }
        v
    }
}

/// A role's part of the audit, on the hosts that run the role: a read-only script per
/// host, findings from that host's output alone, then findings judged across hosts
/// (those that did not answer included: unknown, not gone).
pub struct Audit {
    /// None: nothing of this role to check on the host. Err fails the host's audit.
    pub script: fn(&Scope, &str) -> Option<Result<String, String>>,
    pub host: fn(&Scope, &str, &str) -> Vec<Finding>,
    pub across: Across,
}

pub struct Row {
    pub role: &'static str,
    pub validate: Option<Validate>,
    /// Under `--limit`, the role also runs on the hosts outside it that depend on hosts
    /// inside it (a firewall must admit a node being added).
    pub depends: Option<Depends>,
    pub audit: Option<Audit>,
}

fn no_host(_: &Scope, _: &str, _: &str) -> Vec<Finding> {
    Vec::new()
}

fn no_across(
    _: &Scope,
    _: &IndexMap<String, String>,
    _: &[String],
) -> IndexMap<String, Vec<Finding>> {
    IndexMap::new()
}

/// In audit order: a host's own findings in this order, then the cross-host ones.
pub const TABLE: &[Row] = &[
    Row {
        role: "hardening",
        // Hardening must never lock provision out (AllowUsers without the login user, ...).
        validate: Some(|c| hardening::lockout(c.rules, &c.target.user)),
        depends: None,
        audit: Some(Audit {
            script: |s, h| {
                let (rules, file) = &*s.worked.rules[h];
                Some(Ok(hardening::audit::script(rules, file)))
            },
            host: |s, h, out| {
                let (rules, file) = &*s.worked.rules[h];
                hardening::audit::evaluate(rules, out, file)
            },
            across: no_across,
        }),
    },
    Row {
        role: "pki",
        validate: None,
        depends: None,
        audit: Some(Audit {
            script: |s, h| {
                let v = s.vars(h, "pki");
                // No pki_dir: no role of this run keeps certificates there.
                let dir = v.get("pki_dir").and_then(Value::as_str)?;
                Some(Ok(crate::pki::list_script(dir)))
            },
            host: |s, _, out| hardening::audit::certificates(out, s.ca_pem),
            across: no_across,
        }),
    },
    Row {
        role: firewall::ROLE,
        validate: Some(firewall_admits_controller),
        depends: Some(firewall::depends_on),
        audit: Some(Audit {
            script: |s, h| match s.worked.firewalls.get(h)? {
                Ok(w) if w.wanted.enabled => Some(Ok(firewall::audit::script(&w.file, w.fail2ban))),
                Ok(_) => None,
                Err(e) => Some(Err(e.clone())),
            },
            host: |s, h, out| match s.worked.firewalls.get(h) {
                Some(Ok(w)) => {
                    firewall::audit::findings(&firewall::render(&w.wanted, h), out, w.fail2ban)
                }
                _ => Vec::new(),
            },
            across: no_across,
        }),
    },
    Row {
        role: "swarm",
        validate: None,
        depends: None,
        audit: Some(Audit {
            script: |s, h| {
                crate::cluster::audit::is_swarm_host(s.inventory, h)
                    .then(|| Ok(crate::cluster::swarm::probe_info(true)))
            },
            host: no_host,
            across: |s, outs, down| {
                if outs.is_empty() {
                    return IndexMap::new();
                }
                let inv = s.inventory;
                let want = s
                    .hosts
                    .iter()
                    .filter(|h| {
                        outs.contains_key(*h)
                            || (down.contains(h) && crate::cluster::audit::is_swarm_host(inv, h))
                    })
                    .map(|h| (h.clone(), crate::cluster::audit::want(inv, h)))
                    .collect();
                crate::cluster::audit::findings(&want, outs)
            },
        }),
    },
    Row {
        role: "stacks",
        validate: None,
        depends: None,
        audit: Some(Audit {
            // From one manager: the first one audited.
            script: |s, h| {
                (crate::cluster::audit::first_manager(s.inventory, s.hosts) == Some(h))
                    .then(|| Ok(crate::cluster::stacks::audit_script()))
            },
            host: |s, h, out| {
                let wanted = crate::cluster::stacks::wanted_names(&s.inventory.hosts[h].vars);
                crate::cluster::stacks::audit_findings(out, &wanted)
            },
            across: no_across,
        }),
    },
    Row {
        role: "etcd",
        validate: None,
        depends: None,
        audit: Some(Audit {
            script: |s, h| {
                let v = s.vars(h, "etcd");
                (in_group(s.inventory, "etcd", h) && v.contains_key("etcd_data_dir"))
                    .then(|| Ok(crate::cluster::etcd::audit_script(&v)))
            },
            host: no_host,
            across: |s, outs, down| {
                let down = crate::cluster::audit::etcd_hosts(s.inventory, down);
                let max_age = outs
                    .keys()
                    .filter_map(|h| {
                        let v = s.vars(h, "etcd");
                        let on = v
                            .get("etcd_backup_schedule")
                            .and_then(Value::as_str)
                            .is_some_and(|c| !c.is_empty());
                        let hours = v
                            .get("backup_max_age_hours")
                            .and_then(|v| v.as_u64().or_else(|| v.as_str()?.parse().ok()))
                            .unwrap_or(26);
                        on.then(|| (h.clone(), hours.saturating_mul(3600)))
                    })
                    .collect();
                crate::cluster::audit::etcd_findings(outs, &down, &max_age)
            },
        }),
    },
    Row {
        role: "ceph",
        validate: None,
        depends: None,
        audit: Some(Audit {
            script: |s, h| {
                let w = crate::cluster::ceph::audit::want(s.inventory, h, &s.vars(h, "ceph"))?;
                Some(Ok(crate::cluster::ceph::audit::script(h, &w)))
            },
            host: no_host,
            across: |s, outs, down| {
                use crate::cluster::ceph::audit;
                let inv = s.inventory;
                let Some(first) = outs.keys().next() else {
                    return IndexMap::new();
                };
                let want = |h: &str| audit::want(inv, h, &s.vars(h, "ceph"));
                let allow = audit::health_allow(&s.vars(first, "ceph"));
                let outs: IndexMap<String, (String, audit::Want)> = outs
                    .iter()
                    .filter_map(|(h, o)| Some((h.clone(), (o.clone(), want(h)?))))
                    .collect();
                let mons: Vec<String> = s
                    .hosts
                    .iter()
                    .filter(|h| want(h).is_some_and(|w| w.mon))
                    .cloned()
                    .collect();
                let down: Vec<(String, usize)> = down
                    .iter()
                    .filter_map(|h| want(h).map(|w| (h.clone(), w.devices.len())))
                    .collect();
                audit::findings(&outs, &allow, &mons, &down)
            },
        }),
    },
];

pub fn row(role: &str) -> Option<&'static Row> {
    TABLE.iter().find(|r| r.role == role)
}

fn in_group(inv: &Inventory, g: &str, h: &str) -> bool {
    inv.groups.get(g).is_some_and(|m| m.contains(h))
}

/// The firewall must admit this controller on SSH, as far as routing here shows.
fn firewall_admits_controller(c: &HostCheck) -> Result<(), String> {
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
}

/// A host's derived variables: (name, value) pairs.
pub type Derived = Vec<(&'static str, minijinja::Value)>;

/// What the roles work out per host before any contact, for the run and the audit.
#[derive(Default)]
pub struct Worked {
    /// The hardening rules of each host and the file its sysctls are persisted in; hosts
    /// with the same rules share one copy.
    pub rules: IndexMap<String, Arc<(Vec<Rule>, String)>>,
    /// The firewall of each host whose plays have the firewall role (or why it has none).
    pub firewalls: IndexMap<String, Result<HostWall, String>>,
    /// Variables provision works out per host (`hardening`, `firewall`), as template values
    /// made once and shared by every host that has the same ones.
    pub derived: IndexMap<String, Derived>,
    /// Each role's defaults, by role name (what its audit reads where a host sets nothing).
    pub defaults: IndexMap<String, Map<String, Value>>,
    /// The roles each host runs, by name.
    pub roles: IndexMap<String, Vec<String>>,
}

impl Worked {
    /// Host `h`'s variable `key` as role `role` sees it: its own, else the role's default.
    pub fn var<'a>(
        &'a self,
        h: &'a crate::inventory::Host,
        role: &str,
        key: &str,
    ) -> Option<&'a Value> {
        h.vars
            .get(key)
            .or_else(|| self.defaults.get(role)?.get(key))
    }

    /// The same, as a string (empty when unset or not a string).
    pub fn var_str(&self, h: &crate::inventory::Host, role: &str, key: &str) -> String {
        self.var(h, role, key)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    }
}

/// Works out every host's rules, firewall and derived variables, and runs the roles'
/// pre-flight checks when `check` (a run refuses what fails; listing hosts does not).
pub fn work_out(
    inventory: &mut Inventory,
    src: &RoleSource,
    host_roles: &HashMap<&str, Vec<&Role>>,
    hosts: &[String],
    targets: &IndexMap<String, Target>,
    check: bool,
) -> Result<Worked, Located> {
    let hardening = hardening::Rules::load(src)?;
    let mut firewalls = IndexMap::new();
    for h in hosts {
        let roles = host_roles.get(h.as_str()).map(Vec::as_slice).unwrap_or(&[]);
        if let Some(role) = roles.iter().find(|r| r.name == firewall::ROLE) {
            let w = firewall::for_host(inventory, &role.defaults, h);
            if let (Err(e), true) = (&w, check) {
                return Err(crate::yaml::err(
                    &inventory.hosts[h].loc,
                    format!("host `{h}`: {e}"),
                ));
            }
            firewalls.insert(h.clone(), w);
        }
    }
    let mut interned = Interned::default();
    let mut out = Worked::default();
    for h in hosts {
        let host = inventory.hosts.get_mut(h).expect("selected hosts exist");
        let refuse = |e: String| crate::yaml::err(&host.loc, format!("host `{h}`: {e}"));
        let r = hardening.resolve(&host.vars).map_err(refuse)?;
        let wall = firewalls
            .get(h)
            .and_then(|w| w.as_ref().ok())
            .map(|w| &w.wanted);
        if check {
            let c = HostCheck {
                rules: &r,
                target: &targets[h],
                firewall: wall,
            };
            for role in host_roles.get(h.as_str()).into_iter().flatten() {
                if let Some(v) = row(&role.name).and_then(|r| r.validate) {
                    v(&c).map_err(|e| crate::yaml::err(&host.loc, format!("host `{h}`: {e}")))?;
                }
            }
        }
        let mut values = vec![("hardening", interned.value(&hardening::as_var(&r)))];
        if let Some(w) = wall {
            values.push(("firewall", interned.value(&w.as_var(h))));
        }
        for (k, _) in &values {
            host.vars.remove(*k);
        }
        out.derived.insert(h.clone(), values);
        let sysctl_file = host
            .vars
            .get("hardening_sysctl_file")
            .or(hardening.default("hardening_sysctl_file"))
            .and_then(Value::as_str)
            .unwrap_or("/etc/sysctl.d/90-provision-hardening.conf")
            .to_owned();
        out.rules.insert(h.clone(), interned.rules(r, sysctl_file));
    }
    out.firewalls = firewalls;
    for r in host_roles.values().flatten() {
        if !out.defaults.contains_key(&r.name) {
            out.defaults.insert(r.name.clone(), r.defaults.clone());
        }
    }
    for h in hosts {
        let names = host_roles.get(h.as_str()).into_iter().flatten();
        out.roles
            .insert(h.clone(), names.map(|r| r.name.clone()).collect());
    }
    Ok(out)
}

/// One copy of what many hosts share: template values by their JSON text, rule sets by
/// equality with the last few distinct ones.
#[derive(Default)]
struct Interned {
    values: HashMap<String, minijinja::Value>,
    rules: Vec<Arc<(Vec<Rule>, String)>>,
}

impl Interned {
    fn value(&mut self, v: &Value) -> minijinja::Value {
        self.values
            .entry(v.to_string())
            .or_insert_with(|| minijinja::Value::from_serialize(v))
            .clone()
    }

    fn rules(&mut self, r: Vec<Rule>, file: String) -> Arc<(Vec<Rule>, String)> {
        if let Some(a) = self
            .rules
            .iter()
            .rev()
            .take(8)
            .find(|a| a.0 == r && a.1 == file)
        {
            return a.clone();
        }
        let a = Arc::new((r, file));
        self.rules.push(a.clone());
        a
    }
}

/// The line that opens a role's section of a host's audit output.
pub fn marker(role: &str) -> String {
    format!("printf '\\n==PROVISION audit:%s\\n' '{role}'\n")
}

/// A host's audit output split into its roles' sections.
pub fn sections(out: &str) -> IndexMap<String, String> {
    let text = format!("\n{out}");
    let mut m = IndexMap::new();
    for part in text.split("\n==PROVISION audit:").skip(1) {
        let (name, body) = part.split_once('\n').unwrap_or((part, ""));
        m.insert(name.trim().to_owned(), body.to_owned());
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sections_split_by_role_whether_or_not_a_part_ends_its_line() {
        let out = "\n==PROVISION audit:a\nx\ny\n\n==PROVISION audit:b\nno newline\n==PROVISION audit:c\n==PROVISION inner\nz\n";
        let s = sections(out);
        assert_eq!(s.keys().collect::<Vec<_>>(), ["a", "b", "c"]);
        assert_eq!(s["a"], "x\ny\n");
        assert_eq!(s["b"], "no newline");
        assert_eq!(s["c"], "==PROVISION inner\nz\n");
    }

    /// The worked example of docs/architecture.md: a toy role's row, audited here as the
    /// engine does (script behind its marker, the host's section to its findings).
    const MOTD: Row = Row {
        role: "motd",
        validate: None,
        depends: None,
        audit: Some(Audit {
            script: |_, _| Some(Ok("cat /etc/motd 2>/dev/null; true\n".into())),
            host: |s, h, out| {
                let want = s.vars(h, "motd");
                let want = want.get("motd_text").and_then(Value::as_str).unwrap_or("");
                vec![Finding {
                    id: "motd".into(),
                    title: "the message of the day".into(),
                    reason: "users see who manages the host".into(),
                    pass: out.trim_end() == want,
                    expected: want.into(),
                    actual: out.trim_end().into(),
                }]
            },
            across: no_across,
        }),
    };

    #[test]
    fn a_toy_role_row_audits_its_host() {
        let inv = Inventory::default();
        let mut worked = Worked::default();
        worked.defaults.insert(
            "motd".into(),
            json!({"motd_text": "Managed by provision"})
                .as_object()
                .unwrap()
                .clone(),
        );
        let hosts = vec!["n1".to_string()];
        let s = Scope {
            inventory: &inv,
            hosts: &hosts,
            worked: &worked,
            ca_pem: None,
        };
        let a = MOTD.audit.as_ref().unwrap();
        let script = marker(MOTD.role) + &(a.script)(&s, "n1").unwrap().unwrap();
        assert!(script.contains("==PROVISION audit:%s") && script.contains("cat /etc/motd"));
        let out = "\n==PROVISION audit:motd\nsomething else\n";
        let f = (a.host)(&s, "n1", &sections(out)["motd"]);
        assert!(!f[0].pass && f[0].actual == "something else", "{:?}", f[0]);
        let out = "\n==PROVISION audit:motd\nManaged by provision\n";
        assert!((a.host)(&s, "n1", &sections(out)["motd"])[0].pass);
    }

    #[test]
    fn every_row_is_a_builtin_role_and_has_one_row() {
        let mut seen = std::collections::HashSet::new();
        for r in TABLE {
            assert!(seen.insert(r.role), "two rows for {}", r.role);
            assert!(
                crate::assets::ROLES.get_dir(r.role).is_some(),
                "row {} names no role under roles/",
                r.role
            );
        }
    }
}
