//! `swarm_labels`: node labels from the inventory, declaratively, by NodeID. Labels
//! provision set are listed in the node's own `provision.managed` label, so a label the
//! inventory dropped is removed while labels someone else set are left alone.

use super::swarm::{parse, probe_info, source, Seen1};
use super::{Action, Ctx, Member, Seen, Step};
use crate::transport::quote;
use indexmap::IndexMap;
use serde_json::Value;
use std::collections::BTreeMap;

pub const MANAGED: &str = "provision.managed";

pub fn new() -> Box<dyn Step> {
    Box::<Labels>::default()
}

#[derive(Default)]
struct Labels {
    want: IndexMap<String, BTreeMap<String, String>>,
    notes: Vec<String>,
}

fn valid_key(k: &str) -> bool {
    !k.is_empty()
        && k != MANAGED
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-/".contains(c))
}

/// The labels a member wants, as strings.
pub fn wanted(m: &Member) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    match m.args.get("labels") {
        None | Some(Value::Null) => {}
        Some(Value::Object(o)) => {
            for (k, v) in o {
                if !valid_key(k) {
                    return Err(format!("host `{}`: label `{k}`: use letters, digits and . _ - / ({MANAGED} is provision's own)", m.name));
                }
                let v = match v {
                    Value::String(s) => s.clone(),
                    Value::Bool(b) => b.to_string(),
                    Value::Number(n) => n.to_string(),
                    other => {
                        return Err(format!(
                        "host `{}`: label `{k}` must be a string, number or boolean, found {other}",
                        m.name
                    ))
                    }
                };
                out.insert(k.clone(), v);
            }
        }
        Some(other) => {
            return Err(format!(
                "host `{}`: `labels` must be a mapping, found {other}",
                m.name
            ))
        }
    }
    Ok(out)
}

/// The label changes that make `have` match `want`: (add or update, remove, new managed list).
pub fn diff(
    have: &BTreeMap<String, String>,
    want: &BTreeMap<String, String>,
) -> (Vec<(String, String)>, Vec<String>, Option<String>) {
    let managed: Vec<&str> = have
        .get(MANAGED)
        .map(|s| s.split(',').filter(|k| !k.is_empty()).collect())
        .unwrap_or_default();
    let add: Vec<(String, String)> = want
        .iter()
        .filter(|(k, v)| have.get(*k) != Some(v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let rm: Vec<String> = managed
        .iter()
        .filter(|k| !want.contains_key(**k) && have.contains_key(**k))
        .map(|k| k.to_string())
        .collect();
    let list = want.keys().cloned().collect::<Vec<_>>().join(",");
    let cur = have.get(MANAGED).cloned().unwrap_or_default();
    let managed_change = (list != cur).then_some(list);
    (add, rm, managed_change)
}

impl Step for Labels {
    fn prepare(&mut self, members: &[Member], _cx: &Ctx) -> Result<(), String> {
        for m in members {
            self.want.insert(m.name.clone(), wanted(m)?);
        }
        Ok(())
    }

    fn reads_outside_limit(&self) -> bool {
        true
    }

    fn probes(&self, members: &[Member]) -> Vec<(String, String)> {
        members
            .iter()
            .map(|m| (m.name.clone(), probe_info(true)))
            .collect()
    }

    fn plan(&mut self, members: &[Member], seen: &Seen, _cx: &Ctx) -> Result<Vec<Action>, String> {
        self.notes.clear();
        let obs: IndexMap<String, Seen1> = seen
            .iter()
            .filter_map(|(h, r)| r.as_ref().ok().map(|o| (h.clone(), parse(&o.stdout))))
            .collect();
        let Some((src, nodes, _)) = source(members, &obs)? else {
            return Err("no manager of the swarm answers: labels cannot be read or set".into());
        };
        let mut actions = Vec::new();
        for m in members.iter().filter(|m| m.writable) {
            let Some(o) = obs.get(&m.name) else { continue };
            let Some(n) = nodes
                .iter()
                .find(|n| n.id == o.info.node_id && !n.id.is_empty())
            else {
                self.notes.push(format!(
                    "{} is not in the swarm yet: its labels wait for the next run",
                    m.name
                ));
                continue;
            };
            let want = &self.want[&m.name];
            let (add, rm, managed) = diff(&n.spec.labels, want);
            if add.is_empty() && rm.is_empty() && managed.is_none() {
                continue;
            }
            let mut cmd = String::from("docker node update");
            let mut what = Vec::new();
            for (k, v) in &add {
                cmd += &format!(" --label-add {}", quote(&format!("{k}={v}")));
                what.push(format!("{k}={v}"));
            }
            for k in &rm {
                cmd += &format!(" --label-rm {}", quote(k));
                what.push(format!("-{k}"));
            }
            match managed {
                Some(l) if l.is_empty() => cmd += &format!(" --label-rm {MANAGED}"),
                Some(l) => cmd += &format!(" --label-add {}", quote(&format!("{MANAGED}={l}"))),
                None => {}
            }
            cmd += &format!(" {}", quote(&n.id));
            let cmd = super::swarm::retrying(&cmd);
            actions.push(Action {
                host: m.name.clone(),
                run_on: Some(src.clone()),
                msg: if what.is_empty() {
                    format!("record the labels provision manages on {}", m.name)
                } else {
                    format!("labels of {}: {}", m.name, what.join(" "))
                },
                script: cmd,
                stdin: None,
                serial: false,
            });
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
    use crate::cluster::testing::{only_action, plan_once};

    /// A node's probe: on the manager `m1`, the swarm's nodes with their labels (JSON).
    fn probe(id: &str, nodes: &[(&str, &str)]) -> String {
        let manager = !nodes.is_empty();
        let mut o = format!(
            "==PROVISION info\n{{\"NodeID\":\"{id}\",\"LocalNodeState\":\"active\",\"ControlAvailable\":{manager},\"Cluster\":{{\"ID\":\"c1\"}}}}\n"
        );
        if manager {
            o += "==PROVISION nodes\n";
            for (n, labels) in nodes {
                let role = if *n == "m1" { "manager" } else { "worker" };
                o += &format!("{{\"ID\":\"id-{n}\",\"Spec\":{{\"Role\":\"{role}\",\"Labels\":{labels}}},\"Description\":{{\"Hostname\":\"{n}\"}},\"Status\":{{\"State\":\"ready\"}}}}\n");
            }
        }
        o
    }

    fn member(n: &str, labels: Value, writable: bool) -> Member {
        crate::cluster::testing::member(n, serde_json::json!({ "labels": labels }), writable)
    }

    #[test]
    fn labels_are_set_through_a_manager_and_only_on_writable_nodes_in_the_swarm() {
        let ms = vec![
            member("m1", serde_json::json!({}), false),
            member("w1", serde_json::json!({"zone": "b"}), true),
            member("w2", serde_json::json!({"zone": "c"}), false),
            member("w3", serde_json::json!({"zone": "d"}), true),
        ];
        let nodes = [
            ("m1", "{}"),
            // w1: zone a set by provision, owner set by someone else
            (
                "w1",
                "{\"zone\":\"a\",\"owner\":\"ops\",\"provision.managed\":\"zone\"}",
            ),
            ("w2", "{}"),
        ];
        let outs = vec![
            ("m1", probe("id-m1", &nodes)),
            ("w1", probe("id-w1", &[])),
            ("w2", probe("id-w2", &[])),
            // w3 is not in the swarm yet
            ("w3", probe("", &[])),
        ];
        let mut l = Labels::default();
        let a = plan_once(&mut l, &ms, &outs).unwrap();
        let a = only_action(&a, "w1", "m1");
        assert!(
            a.script.contains("zone=b") && a.script.contains("id-w1"),
            "{}",
            a.script
        );
        assert!(!a.script.contains("owner"), "a foreign label is left alone");
        assert!(
            l.notes
                .iter()
                .any(|n| n.contains("w3 is not in the swarm yet")),
            "{:?}",
            l.notes
        );
    }

    fn m(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn labels_are_declarative_and_foreign_ones_kept() {
        // First time: everything added, the managed list recorded.
        let (add, rm, managed) = diff(
            &m(&[("owner", "ops")]),
            &m(&[("zone", "a"), ("db", "true")]),
        );
        assert_eq!(add.len(), 2);
        assert!(rm.is_empty());
        assert_eq!(managed.as_deref(), Some("db,zone"));
        // In place: nothing to do.
        let have = m(&[
            ("owner", "ops"),
            ("zone", "a"),
            ("db", "true"),
            (MANAGED, "db,zone"),
        ]);
        assert_eq!(
            diff(&have, &m(&[("zone", "a"), ("db", "true")])),
            (vec![], vec![], None)
        );
        // zone changed, db dropped: db removed, owner (someone else's) kept.
        let (add, rm, managed) = diff(&have, &m(&[("zone", "b")]));
        assert_eq!(add, vec![("zone".to_string(), "b".to_string())]);
        assert_eq!(rm, vec!["db".to_string()]);
        assert_eq!(managed.as_deref(), Some("zone"));
        // Everything dropped: the managed list goes too.
        let (_, rm, managed) = diff(&have, &m(&[]));
        assert_eq!(rm.len(), 2);
        assert_eq!(managed.as_deref(), Some(""));
    }
}
