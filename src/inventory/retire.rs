//! Hosts the inventory retires: `provision_state: absent`. Such a host stays in the
//! inventory so provision can reach it, but leaves every group: the run takes it out of
//! the cluster first (src/day2/retire.rs), then the others' firewalls, /etc/hosts and
//! monitoring targets no longer name it.

use super::{Host, Inventory};
use crate::yaml::{err, Located};
use serde_json::Value;

/// A host to take out of the cluster.
#[derive(Debug, Clone)]
pub struct Retired {
    pub host: Host,
    /// The groups it was in (derived Ceph groups included), which say what it runs.
    pub groups: Vec<String>,
    /// `provision_force: true`: removed from the survivors' side when it does not answer.
    pub force: bool,
    /// `provision_wipe: true`: its OSD devices erased once their data has moved.
    pub wipe: bool,
}

fn flag(h: &Host, key: &str) -> Result<bool, Located> {
    match h.vars.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(v) => Err(err(
            &h.loc,
            format!("host `{}`: {key} must be true or false, found {v}", h.name),
        )
        .hint(format!("write `{key}: true` or leave it out"))),
    }
}

/// Moves the hosts marked `provision_state: absent` out of the hosts and groups.
pub fn extract(inv: &mut Inventory) -> Result<(), Located> {
    let mut out = Vec::new();
    for h in inv.hosts.values() {
        let absent = match h.vars.get("provision_state") {
            None | Some(Value::Null) => false,
            Some(Value::String(s)) if s == "present" => false,
            Some(Value::String(s)) if s == "absent" => true,
            Some(v) => {
                return Err(err(
                    &h.loc,
                    format!(
                        "host `{}`: provision_state must be `present` or `absent`, found {v}",
                        h.name
                    ),
                )
                .hint("`absent` takes the host out of the cluster (see docs/remove.md)"))
            }
        };
        let (force, wipe) = (flag(h, "provision_force")?, flag(h, "provision_wipe")?);
        if !absent && (force || wipe) {
            return Err(err(
                &h.loc,
                format!(
                    "host `{}`: provision_force and provision_wipe only apply to a host with provision_state: absent",
                    h.name
                ),
            )
            .hint("set provision_state: absent to remove it, or drop these variables"));
        }
        if absent {
            out.push(Retired {
                groups: inv
                    .groups
                    .iter()
                    .filter(|(g, m)| *g != "all" && m.contains(&h.name))
                    .map(|(g, _)| g.clone())
                    .collect(),
                host: h.clone(),
                force,
                wipe,
            });
        }
    }
    for r in out {
        let n = &r.host.name;
        inv.hosts.shift_remove(n);
        for m in inv.groups.values_mut() {
            m.shift_remove(n);
        }
        for (own, _) in inv.tree.values_mut() {
            own.retain(|h| h != n);
        }
        inv.retired.insert(n.clone(), r);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    fn load(text: &str) -> Result<super::Inventory, String> {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        super::Inventory::load(f.path()).map_err(|e| e.to_string())
    }

    #[test]
    fn an_absent_host_leaves_every_group_and_keeps_its_parts() {
        let inv = load(
            "all:\n  children:\n    managers:\n      hosts:\n        m1: { ansible_host: 10.0.0.1 }\n    \
             workers:\n      hosts:\n        w1: { ansible_host: 10.0.0.2, provision_state: absent, provision_force: true }\n        \
             w2: { ansible_host: 10.0.0.3, provision_state: present }\n    ceph_osds:\n      hosts:\n        w1: {}\n        m1: {}\n",
        )
        .unwrap();
        assert!(!inv.hosts.contains_key("w1"));
        assert!(inv.groups.values().all(|m| !m.contains("w1")));
        let r = &inv.retired["w1"];
        assert!(r.force && !r.wipe);
        for g in ["workers", "ceph_osds", "ceph_clients"] {
            assert!(r.groups.iter().any(|x| x == g), "{g}: {:?}", r.groups);
        }
        assert!(inv.hosts.contains_key("w2"));
    }

    #[test]
    fn a_bad_state_or_a_stray_flag_is_refused_with_the_host() {
        let e = load("all:\n  hosts:\n    w1: { ansible_host: 10.0.0.2, provision_state: gone }\n")
            .unwrap_err();
        assert!(
            e.contains("provision_state must be `present` or `absent`") && e.contains(":3:"),
            "{e}"
        );
        let e = load("all:\n  hosts:\n    w1: { ansible_host: 10.0.0.2, provision_force: true }\n")
            .unwrap_err();
        assert!(
            e.contains("only apply to a host with provision_state: absent"),
            "{e}"
        );
        let e = load("all:\n  hosts:\n    w1: { ansible_host: 10.0.0.2, provision_state: absent, provision_wipe: yes-please }\n")
            .unwrap_err();
        assert!(e.contains("provision_wipe must be true or false"), "{e}");
    }
}
