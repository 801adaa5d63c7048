//! The decisions of a removal, from the inventory and what the cluster printed: whether
//! the members left keep a quorum, which swarm node is the host, whether Ceph keeps
//! enough OSD hosts for its pools.

use crate::cluster::swarm::Node;
use crate::engine::Prepared;
use serde_json::Value;
use std::collections::HashSet;

/// A clustered group whose members must keep a quorum: its name for people, its group,
/// and the (role, variable) that allows an even count.
const QUORUM_GROUPS: [(&str, &str, &str, &str); 3] = [
    ("managers", "managers", "swarm", "swarm_allow_even_managers"),
    ("etcd members", "etcd", "etcd", "etcd_allow_even_members"),
    ("Ceph monitors", "ceph_mons", "ceph", "ceph_allow_even_mons"),
];

/// Refuses a removal that leaves `kept` of `current` members: none, an even number
/// (unless allowed), or fewer than the quorum `current` members need.
pub fn leaving(
    what: &str,
    names: &[String],
    current: usize,
    kept: usize,
    even_refused_unless: Option<&str>,
) -> Result<(), String> {
    let head = format!(
        "removing {} ({} of {current} {what}) would leave {kept}",
        names.join(", "),
        names.len()
    );
    let quorum = current / 2 + 1;
    if kept == 0 {
        return Err(format!("{head}: the cluster needs at least one"));
    }
    if kept < quorum {
        return Err(format!(
            "{head}, fewer than the {quorum} that a quorum of {current} needs: remove fewer at a time"
        ));
    }
    if kept.is_multiple_of(2) {
        if let Some(var) = even_refused_unless {
            return Err(format!(
                "{head}, an even number: it survives no more failures than {} (set {var}: true to accept it)",
                kept - 1
            ));
        }
    }
    Ok(())
}

/// Before any contact: every group keeps its quorum once the retired hosts that are
/// still to remove (`done` are removed already) have left.
pub fn validate(p: &Prepared, done: &HashSet<String>) -> Result<(), String> {
    let pending: Vec<&crate::inventory::Retired> = p
        .inventory
        .retired
        .values()
        .filter(|r| !done.contains(&r.host.name))
        .collect();
    let mut errors = Vec::new();
    for (what, group, role, var) in QUORUM_GROUPS {
        let names: Vec<String> = pending
            .iter()
            .filter(|r| r.groups.iter().any(|g| g == group))
            .map(|r| r.host.name.clone())
            .collect();
        if names.is_empty() {
            continue;
        }
        let kept: Vec<&String> = p
            .inventory
            .groups
            .get(group)
            .map(|m| m.iter().collect())
            .unwrap_or_default();
        let allowed = kept.first().is_some_and(|h| {
            p.worked
                .var(&p.inventory.hosts[h.as_str()], role, var)
                .and_then(Value::as_bool)
                .unwrap_or(false)
        });
        if let Err(e) = leaving(
            what,
            &names,
            kept.len() + names.len(),
            kept.len(),
            (!allowed).then_some(var),
        ) {
            errors.push(e);
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("\n"))
    }
}

/// The swarm node of a host: by its node ID when the host answered, else by its name or
/// address (one node only).
pub fn find_node<'a>(
    nodes: &'a [Node],
    id: Option<&str>,
    name: &str,
    addr: &str,
) -> Option<&'a Node> {
    if let Some(id) = id.filter(|i| !i.is_empty()) {
        return nodes.iter().find(|n| n.id == id);
    }
    let hits: Vec<&Node> = nodes
        .iter()
        .filter(|n| {
            n.description.hostname == name
                || n.status.addr == addr
                || n.manager_status
                    .as_ref()
                    .is_some_and(|m| m.addr.split(':').next() == Some(addr))
        })
        .collect();
    (hits.len() == 1).then(|| hits[0])
}

/// Demoting manager `id` keeps the swarm's quorum: the reachable managers left are a
/// majority of the managers left.
pub fn demote_keeps_quorum(nodes: &[Node], id: &str) -> Result<(), String> {
    let managers: Vec<&Node> = nodes
        .iter()
        .filter(|n| n.manager_status.is_some())
        .collect();
    let reachable = |n: &Node| {
        n.manager_status
            .as_ref()
            .is_some_and(|m| m.reachability == "reachable")
    };
    let after = managers.len().saturating_sub(1);
    let up_after = managers
        .iter()
        .filter(|n| n.id != id && reachable(n))
        .count();
    let up = managers.iter().filter(|n| reachable(n)).count();
    let quorum = after / 2 + 1;
    if after == 0 || up_after < quorum {
        return Err(format!(
            "{} managers, {} reachable: after the demotion {after} remain with {up_after} reachable, and a quorum needs {quorum}",
            managers.len(),
            up
        ));
    }
    Ok(())
}

/// The etcd member named `name` (its id), and whether removing it keeps the quorum:
/// the healthy voters left are a majority of the voters left.
pub fn etcd_member(members: &Value, health: &Value, name: &str) -> Result<Option<u64>, String> {
    let list: Vec<&Value> = members["members"]
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    let Some(m) = list.iter().find(|m| m["name"] == name) else {
        return Ok(None);
    };
    let id = m["ID"].as_u64().unwrap_or(0);
    let urls = |m: &Value| -> Vec<String> {
        m["clientURLs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|u| u.as_str().map(str::to_owned))
            .collect()
    };
    let healthy: Vec<String> = health
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["health"] == true)
        .filter_map(|e| e["endpoint"].as_str().map(str::to_owned))
        .collect();
    let voters: Vec<&&Value> = list.iter().filter(|x| x["isLearner"] != true).collect();
    let after = voters.len() - usize::from(m["isLearner"] != true);
    let up_after = voters
        .iter()
        .filter(|x| x["name"] != name && urls(x).iter().any(|u| healthy.contains(u)))
        .count();
    let quorum = after / 2 + 1;
    if after == 0 || up_after < quorum {
        return Err(format!(
            "etcd has {} voting members: without {name} {after} remain with {up_after} healthy, and a quorum needs {quorum}",
            voters.len()
        ));
    }
    Ok(Some(id))
}

/// Enough OSD hosts stay for every pool's copies once `host`'s OSDs are out (from
/// `ceph osd tree -f json` and `ceph osd pool ls detail -f json`).
pub fn osd_hosts_enough(tree: &Value, pools: &Value, host: &str) -> Result<(), String> {
    let nodes: Vec<&Value> = tree["nodes"]
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    let up_in = |id: &Value| {
        nodes.iter().any(|o| {
            o["id"] == *id && o["status"] == "up" && o["reweight"].as_f64().unwrap_or(0.0) > 0.0
        })
    };
    let left: Vec<&str> = nodes
        .iter()
        .filter(|n| n["type"] == "host" && n["name"] != host)
        .filter(|n| {
            n["children"]
                .as_array()
                .is_some_and(|c| c.iter().any(up_in))
        })
        .filter_map(|n| n["name"].as_str())
        .collect();
    let need = pools
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| Some((p["pool_name"].as_str()?, p["size"].as_u64()?)))
        .max_by_key(|(_, s)| *s);
    match need {
        Some((pool, size)) if (left.len() as u64) < size => Err(format!(
            "pool {pool} keeps {size} copies, one per host, and without {host} {} OSD host(s) with OSDs up and in remain ({}): add an OSD host first",
            left.len(),
            left.join(", ")
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn quorum_arithmetic_of_a_removal() {
        let e = leaving("managers", &names(&["m2", "m3"]), 3, 1, Some("v")).unwrap_err();
        assert!(
            e.contains(
                "(2 of 3 managers) would leave 1, fewer than the 2 that a quorum of 3 needs"
            ),
            "{e}"
        );
        let e = leaving(
            "managers",
            &names(&["m3"]),
            3,
            2,
            Some("swarm_allow_even_managers"),
        )
        .unwrap_err();
        assert!(
            e.contains("an even number") && e.contains("swarm_allow_even_managers"),
            "{e}"
        );
        assert!(
            leaving("managers", &names(&["m3"]), 3, 2, None).is_ok(),
            "even allowed"
        );
        assert!(leaving("managers", &names(&["m4", "m5"]), 5, 3, Some("v")).is_ok());
        assert!(leaving("managers", &names(&["m1"]), 1, 0, None).is_err());
    }

    fn node(id: &str, host: &str, manager: Option<&str>) -> Node {
        serde_json::from_value(json!({
            "ID": id,
            "Description": {"Hostname": host},
            "Status": {"State": "ready", "Addr": format!("10.0.0.{}", &id[1..])},
            "Spec": {"Role": if manager.is_some() {"manager"} else {"worker"}},
            "ManagerStatus": manager.map(|r| json!({"Reachability": r, "Addr": format!("10.0.0.{}:2377", &id[1..])})),
        }))
        .unwrap()
    }

    #[test]
    fn the_host_node_is_found_by_id_else_by_one_name_or_address() {
        let nodes = vec![node("n1", "a", Some("reachable")), node("n2", "b", None)];
        assert_eq!(find_node(&nodes, Some("n2"), "x", "y").unwrap().id, "n2");
        assert!(
            find_node(&nodes, Some("n9"), "b", "").is_none(),
            "the id decides"
        );
        assert_eq!(find_node(&nodes, None, "b", "").unwrap().id, "n2");
        assert_eq!(find_node(&nodes, None, "zz", "10.0.0.1").unwrap().id, "n1");
        let twice = vec![node("n1", "b", None), node("n2", "b", None)];
        assert!(find_node(&twice, None, "b", "").is_none(), "ambiguous");
    }

    #[test]
    fn a_demotion_keeps_a_majority_of_reachable_managers() {
        let five: Vec<Node> = (1..=5)
            .map(|i| node(&format!("n{i}"), &format!("m{i}"), Some("reachable")))
            .collect();
        assert!(demote_keeps_quorum(&five, "n5").is_ok());
        let mut two_down = five.clone();
        for n in &mut two_down[..2] {
            n.manager_status.as_mut().unwrap().reachability = "unreachable".into();
        }
        let e = demote_keeps_quorum(&two_down, "n5").unwrap_err();
        assert!(
            e.contains("4 remain with 2 reachable, and a quorum needs 3"),
            "{e}"
        );
        assert!(
            demote_keeps_quorum(&five[..1], "n1").is_err(),
            "the last manager"
        );
    }

    #[test]
    fn an_etcd_member_is_removed_only_with_a_healthy_majority_left() {
        let members = json!({"members": [
            {"ID": 1, "name": "a", "clientURLs": ["https://a:2379"]},
            {"ID": 2, "name": "b", "clientURLs": ["https://b:2379"]},
            {"ID": 3, "name": "c", "clientURLs": ["https://c:2379"]},
        ]});
        let health = json!([
            {"endpoint": "https://a:2379", "health": true},
            {"endpoint": "https://b:2379", "health": true},
            {"endpoint": "https://c:2379", "health": false},
        ]);
        assert_eq!(etcd_member(&members, &health, "c").unwrap(), Some(3));
        assert_eq!(etcd_member(&members, &health, "zz").unwrap(), None);
        let e = etcd_member(&members, &health, "a").unwrap_err();
        assert!(
            e.contains("2 remain with 1 healthy, and a quorum needs 2"),
            "{e}"
        );
    }

    #[test]
    fn osd_hosts_left_must_hold_every_pool_copy() {
        let tree = json!({"nodes": [
            {"id": -2, "type": "host", "name": "a", "children": [0]},
            {"id": -3, "type": "host", "name": "b", "children": [1]},
            {"id": -4, "type": "host", "name": "c", "children": [2]},
            {"id": 0, "type": "osd", "status": "up", "reweight": 1.0},
            {"id": 1, "type": "osd", "status": "up", "reweight": 1.0},
            {"id": 2, "type": "osd", "status": "down", "reweight": 1.0},
        ]});
        let pools = json!([{"pool_name": "rbd", "size": 2}, {"pool_name": "fs", "size": 1}]);
        assert!(osd_hosts_enough(&tree, &pools, "c").is_ok());
        let e = osd_hosts_enough(&tree, &pools, "b").unwrap_err();
        assert!(
            e.contains("pool rbd keeps 2 copies") && e.contains("1 OSD host(s)"),
            "{e}"
        );
    }
}
