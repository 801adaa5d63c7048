//! `swarm_networks`: overlay networks from the inventory, created once on a manager and
//! left alone when they match; a network whose options differ is reported, not recreated
//! (that would cut every service attached to it).

use super::swarm::{owner, parse, probe_info, source, Seen1};
use super::{sections, Action, Ctx, Member, Seen, Step};
use crate::args::Args;
use crate::transport::quote;
use indexmap::IndexMap;
use serde::Deserialize;
use serde_json::Value;

pub fn new() -> Box<dyn Step> {
    Box::<Networks>::default()
}

#[derive(Debug, Clone, PartialEq)]
pub struct Net {
    pub name: String,
    pub encrypted: bool,
    pub attachable: bool,
    pub subnet: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct Inspect {
    name: String,
    driver: String,
    options: Option<std::collections::BTreeMap<String, String>>,
    attachable: bool,
    #[serde(rename = "IPAM")]
    ipam: Ipam,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct Ipam {
    config: Option<Vec<IpamConfig>>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct IpamConfig {
    subnet: String,
}

#[derive(Default)]
struct Networks {
    want: Vec<Net>,
    notes: Vec<String>,
}

pub fn parse_nets(v: Option<&Value>) -> Result<Vec<Net>, String> {
    let mut out = Vec::new();
    let list = match v {
        None | Some(Value::Null) => return Ok(out),
        Some(Value::Array(a)) => a,
        Some(other) => return Err(format!("`networks` must be a list, found {other}")),
    };
    for n in list {
        let Value::Object(o) = n else {
            return Err(format!(
                "each network is a mapping with a `name`, found {n}"
            ));
        };
        let a = Args(o);
        let name = a.req("name")?;
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        {
            return Err(format!(
                "network name `{name}`: use letters, digits and . _ -"
            ));
        }
        out.push(Net {
            encrypted: a.bool("encrypted", false)?,
            attachable: a.bool("attachable", false)?,
            subnet: a.str("subnet")?.filter(|s| !s.is_empty()),
            name,
        });
    }
    Ok(out)
}

fn script() -> String {
    probe_info(true)
        + "echo '==PROVISION networks'; ids=$(docker network ls -q --filter driver=overlay 2>/dev/null) && [ -n \"$ids\" ] && docker network inspect --format '{{json .}}' $ids 2>/dev/null; true\n"
}

impl Step for Networks {
    fn prepare(&mut self, members: &[Member], _cx: &Ctx) -> Result<(), String> {
        if let Some(m) = members.first() {
            self.want =
                parse_nets(m.args.get("networks")).map_err(|e| format!("swarm_networks: {e}"))?;
        }
        Ok(())
    }

    fn reads_outside_limit(&self) -> bool {
        true
    }

    fn probes(&self, members: &[Member]) -> Vec<(String, String)> {
        if self.want.is_empty() {
            return Vec::new();
        }
        members.iter().map(|m| (m.name.clone(), script())).collect()
    }

    fn plan(&mut self, members: &[Member], seen: &Seen, _cx: &Ctx) -> Result<Vec<Action>, String> {
        self.notes.clear();
        if self.want.is_empty() {
            return Ok(Vec::new());
        }
        let obs: IndexMap<String, Seen1> = seen
            .iter()
            .filter_map(|(h, r)| r.as_ref().ok().map(|o| (h.clone(), parse(&o.stdout))))
            .collect();
        let Some((src, _, _)) = source(members, &obs)? else {
            return Err("no manager of the swarm answers: networks cannot be read or made".into());
        };
        let listing = seen
            .get(&src)
            .and_then(|r| r.as_ref().ok())
            .map(|o| {
                sections(&o.stdout)
                    .get("networks")
                    .cloned()
                    .unwrap_or_default()
            })
            .unwrap_or_default();
        let have: IndexMap<String, Inspect> = listing
            .lines()
            .filter_map(|l| serde_json::from_str::<Inspect>(l).ok())
            .filter(|i| i.driver == "overlay")
            .map(|i| (i.name.clone(), i))
            .collect();
        // A network belongs to the swarm, not a host: it is made through a manager inside --limit.
        let owner = owner(members, &src, &obs);
        let mut actions = Vec::new();
        for n in &self.want {
            match have.get(&n.name) {
                Some(i) => {
                    let enc = i
                        .options
                        .as_ref()
                        .is_some_and(|o| o.contains_key("encrypted"));
                    let subnet = i
                        .ipam
                        .config
                        .as_ref()
                        .and_then(|c| c.first())
                        .map(|c| c.subnet.clone());
                    let mut diffs = Vec::new();
                    if enc != n.encrypted {
                        diffs.push(format!("encrypted {enc} (inventory: {})", n.encrypted));
                    }
                    if i.attachable != n.attachable {
                        diffs.push(format!(
                            "attachable {} (inventory: {})",
                            i.attachable, n.attachable
                        ));
                    }
                    if n.subnet.is_some() && subnet != n.subnet {
                        diffs.push(format!(
                            "subnet {} (inventory: {})",
                            subnet.unwrap_or_default(),
                            n.subnet.clone().unwrap_or_default()
                        ));
                    }
                    if !diffs.is_empty() {
                        self.notes.push(format!(
                            "network {} differs from the inventory: {}; left as it is (remove it by hand when no service uses it, and run again)",
                            n.name,
                            diffs.join(", ")
                        ));
                    }
                }
                None => {
                    let Some(owner) = &owner else {
                        self.notes.push(format!(
                            "network {} is missing: made on the next run that includes a manager",
                            n.name
                        ));
                        continue;
                    };
                    let mut cmd = String::from("docker network create --driver overlay");
                    if n.encrypted {
                        cmd += " --opt encrypted";
                    }
                    if n.attachable {
                        cmd += " --attachable";
                    }
                    if let Some(s) = &n.subnet {
                        cmd += &format!(" --subnet {}", quote(s));
                    }
                    cmd += &format!(" {} >/dev/null", quote(&n.name));
                    actions.push(Action {
                        host: owner.clone(),
                        run_on: Some(src.clone()),
                        msg: format!(
                            "create overlay network {}{}",
                            n.name,
                            if n.encrypted { " (encrypted)" } else { "" }
                        ),
                        script: cmd,
                        stdin: None,
                        serial: false,
                    });
                }
            }
        }
        Ok(actions)
    }

    fn notes(&self) -> Vec<String> {
        self.notes.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::testing::{members, only_action, plan_once};

    /// The manager m1's probe: in the swarm, with these overlay networks (inspect JSON).
    fn manager(nets: &[&str]) -> String {
        format!(
            "==PROVISION info\n{{\"NodeID\":\"id-m1\",\"LocalNodeState\":\"active\",\"ControlAvailable\":true,\"Cluster\":{{\"ID\":\"c1\"}}}}\n\
             ==PROVISION nodes\n{{\"ID\":\"id-m1\",\"Spec\":{{\"Role\":\"manager\"}},\"Description\":{{\"Hostname\":\"m1\"}}}}\n\
             ==PROVISION networks\n{}\n",
            nets.join("\n")
        )
    }

    fn plan(writable: &[&str], nets: &[&str]) -> (Vec<Action>, Vec<String>) {
        let mut args = serde_json::Map::new();
        args.insert(
            "networks".into(),
            serde_json::json!([{"name": "backend", "attachable": true}, {"name": "secure", "encrypted": true}]),
        );
        let mut ms = members(&["m1", "w1"], writable);
        ms[0].args = args;
        let outs = vec![("m1", manager(nets))];
        let mut n = Networks::default();
        let a = plan_once(&mut n, &ms, &outs).unwrap();
        (a, n.notes)
    }

    #[test]
    fn a_missing_network_is_made_through_a_manager_and_a_different_one_is_never_remade() {
        // backend exists but is not attachable: reported, left as it is; secure is missing.
        let backend = r#"{"Name":"backend","Driver":"overlay","Attachable":false,"IPAM":{"Config":[{"Subnet":"10.0.1.0/24"}]}}"#;
        let (a, notes) = plan(&["m1", "w1"], &[backend]);
        let one = only_action(&a, "m1", "m1");
        assert!(one.script.contains("--opt encrypted") && one.script.contains("secure"));
        assert!(
            !a.iter().any(|a| a.script.contains("backend")),
            "never recreated"
        );
        assert!(
            notes
                .iter()
                .any(|n| n.contains("backend differs") && n.contains("attachable false")),
            "{notes:?}"
        );
        // No manager inside --limit (only a worker): nothing is made, the note says when.
        let (a, notes) = plan(&["w1"], &[backend]);
        assert!(a.is_empty());
        assert!(
            notes.iter().any(|n| n.contains("secure is missing")),
            "{notes:?}"
        );
    }
}
