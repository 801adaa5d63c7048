//! The health gate: what keeps the cluster from being healthy, split into what the hosts
//! known to be down explain (a monitor out of quorum, their OSDs down or out, PGs degraded
//! but active) and what they do not. Only the latter is waited for.

use super::observe::Cluster;
use serde_json::Value;

/// Health checks that a down host causes by itself.
const EXPLAINED_CHECKS: &[&str] = &[
    "MON_DOWN",
    "OSD_DOWN",
    "OSD_HOST_DOWN",
    "PG_DEGRADED",
    "OBJECT_DEGRADED",
    "OBJECT_MISPLACED",
    "MDS_INSUFFICIENT_STANDBY",
];

/// What the gate needs to know of the inventory.
pub struct Gate<'a> {
    pub mons: &'a [String],
    /// Hosts known to be down (unreachable, failed), with OSD device counts.
    pub down: &'a [(String, usize)],
    /// OSDs the reachable hosts should have.
    pub wanted_osds: usize,
    pub allow: &'a [String],
}

#[derive(Debug, Default, PartialEq)]
pub struct Verdict {
    /// Problems the down hosts explain ("mon.node2 out of quorum").
    pub explained: Vec<String>,
    /// Problems they do not explain: wait for them.
    pub why: Vec<String>,
}

fn short(h: &str) -> &str {
    h.split('.').next().unwrap_or(h)
}

/// OSD ids with their CRUSH host, up flag and in flag (reweight > 0).
fn osds(c: &Cluster) -> Vec<(i64, String, bool, bool)> {
    let nodes: Vec<&Value> = c.tree["nodes"].as_array().into_iter().flatten().collect();
    let hosts = c.crush_hosts();
    let host_of = |id: i64| {
        hosts
            .iter()
            .find(|(_, ids)| ids.contains(&id))
            .map(|(h, _)| h.clone())
            .unwrap_or_default()
    };
    nodes
        .iter()
        .filter(|n| n["type"] == "osd")
        .filter_map(|n| {
            let id = n["id"].as_i64()?;
            let up = n["status"] == "up";
            let inn = n["reweight"].as_f64().unwrap_or(1.0) > 0.0;
            Some((id, host_of(id), up, inn))
        })
        .collect()
}

// Long on purpose: one rule per Ceph health check, in the order they are judged.
pub fn judge(c: &Cluster, g: &Gate) -> Verdict {
    let mut v = Verdict::default();
    let is_down = |h: &str| g.down.iter().any(|(d, _)| short(d) == short(h));
    let quorum = c.quorum();
    let out: Vec<&String> = g.mons.iter().filter(|m| !quorum.contains(m)).collect();
    let (down_mons, live_mons): (Vec<&String>, Vec<&String>) =
        out.into_iter().partition(|m| is_down(m));
    for m in &down_mons {
        v.explained.push(format!("mon.{m} out of quorum"));
    }
    if !live_mons.is_empty() {
        v.why.push(format!(
            "quorum is {} of {} monitors ({} out)",
            quorum.len(),
            g.mons.len(),
            live_mons
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if !c.mgr_available() {
        v.why.push("no manager is active".into());
    }
    // OSDs: down or out ones on down hosts are explained; an OSD whose CRUSH host is not
    // found counts against the down hosts' devices not yet matched.
    let list = osds(c);
    let mut spare: usize = g
        .down
        .iter()
        .map(|(d, n)| {
            let found = list.iter().filter(|o| short(&o.1) == short(d)).count();
            n.saturating_sub(found)
        })
        .sum();
    let mut bad = Vec::new();
    for (id, host, up, inn) in &list {
        if *up && *inn {
            continue;
        }
        let what = match (up, inn) {
            (false, false) => "down and out",
            (false, true) => "down",
            _ => "out",
        };
        if is_down(host) || (host.is_empty() && spare > 0) {
            if host.is_empty() {
                spare -= 1;
            }
            v.explained.push(format!("osd.{id} {what}"));
        } else {
            bad.push(format!("osd.{id} {what}"));
        }
    }
    let (num, _, _) = c.osd_counts();
    let on_down = list.iter().filter(|o| is_down(&o.1)).count();
    let live_osds = (num as usize).saturating_sub(on_down);
    if live_osds < g.wanted_osds {
        bad.push(format!(
            "{live_osds} OSDs on reachable hosts, {} wanted",
            g.wanted_osds
        ));
    }
    if !bad.is_empty() {
        v.why.push(format!("OSDs: {}", bad.join(", ")));
    }
    // PGs: active ones (degraded, undersized, remapped) are explained while an OSD of a down
    // host is missing; inactive ones (peering, stale, down) never are.
    let osd_missing = v.explained.iter().any(|e| e.starts_with("osd."));
    let mut pg_bad = Vec::new();
    let mut pg_explained = 0u64;
    for s in c.status["pgmap"]["pgs_by_state"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let state = s["state_name"].as_str().unwrap_or("?");
        if state == "active+clean" {
            continue;
        }
        let n = s["count"].as_u64().unwrap_or(0);
        let inactive = [
            "peering",
            "stale",
            "down",
            "incomplete",
            "unknown",
            "inactive",
        ];
        if osd_missing
            && state.starts_with("active")
            && !state.split('+').any(|p| inactive.contains(&p))
        {
            pg_explained += n;
        } else {
            pg_bad.push(format!("{n} {state}"));
        }
    }
    if pg_explained > 0 {
        v.explained
            .push(format!("{pg_explained} PGs degraded or remapped"));
    }
    if !pg_bad.is_empty() {
        v.why.push(format!(
            "placement groups not active+clean: {}",
            pg_bad.join(", ")
        ));
    }
    let degraded = !v.explained.is_empty();
    let checks: Vec<String> = c
        .checks()
        .into_iter()
        .filter(|(k, _)| !g.allow.contains(k))
        .filter(|(k, _)| !(degraded && EXPLAINED_CHECKS.contains(&k.as_str())))
        .map(|(k, m)| format!("{k}: {m}"))
        .collect();
    if !checks.is_empty() {
        v.why
            .push(format!("{} ({})", c.health(), checks.join("; ")));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cluster(
        quorum: &[&str],
        osds: &[(i64, &str, bool, f64)],
        pgs: Value,
        checks: Value,
    ) -> Cluster {
        let mut nodes = vec![];
        let mut hosts: Vec<(&str, Vec<i64>)> = vec![];
        for (id, h, up, w) in osds {
            nodes.push(json!({"id": id, "type": "osd", "status": if *up {"up"} else {"down"}, "reweight": w}));
            match hosts.iter_mut().find(|(n, _)| n == h) {
                Some((_, v)) => v.push(*id),
                None => hosts.push((h, vec![*id])),
            }
        }
        for (i, (h, ids)) in hosts.iter().enumerate() {
            nodes.push(json!({"id": -2 - i as i64, "type": "host", "name": h, "children": ids}));
        }
        let up = osds.iter().filter(|o| o.2).count();
        let inn = osds.iter().filter(|o| o.3 > 0.0).count();
        Cluster {
            status: json!({
                "quorum_names": quorum,
                "health": {"status": "HEALTH_WARN", "checks": checks},
                "osdmap": {"num_osds": osds.len(), "num_up_osds": up, "num_in_osds": inn},
                "pgmap": {"pgs_by_state": pgs},
                "mgrmap": {"available": true},
            }),
            mons: vec![],
            entities: vec![],
            pools: vec![],
            fs: vec![],
            tree: json!({"nodes": nodes}),
        }
    }

    fn mons() -> Vec<String> {
        ["node1", "node2", "node3"].map(String::from).to_vec()
    }

    #[test]
    fn a_down_host_explains_its_monitor_osd_and_degraded_pgs() {
        let c = cluster(
            &["node1", "node3"],
            &[
                (0, "node1", true, 1.0),
                (1, "node2", false, 1.0),
                (2, "node3", true, 1.0),
            ],
            json!([{"state_name": "active+undersized+degraded", "count": 27}, {"state_name": "active+clean", "count": 5}]),
            json!({"MON_DOWN": {"summary": {"message": "1/3 mons down"}}, "OSD_DOWN": {"summary": {"message": "1 osds down"}},
                   "PG_DEGRADED": {"summary": {"message": "Degraded data redundancy"}}}),
        );
        let down = vec![("node2".to_string(), 1)];
        let v = judge(
            &c,
            &Gate {
                mons: &mons(),
                down: &down,
                wanted_osds: 2,
                allow: &[],
            },
        );
        assert!(v.why.is_empty(), "{v:?}");
        assert_eq!(
            v.explained,
            [
                "mon.node2 out of quorum",
                "osd.1 down",
                "27 PGs degraded or remapped"
            ]
        );
    }

    #[test]
    fn what_the_down_host_does_not_explain_is_waited_for() {
        // node2 is down, but node3's monitor is out of quorum and node3's OSD is down too.
        let c = cluster(
            &["node1"],
            &[
                (0, "node1", true, 1.0),
                (1, "node2", false, 1.0),
                (2, "node3", false, 1.0),
            ],
            json!([{"state_name": "peering", "count": 3}, {"state_name": "active+undersized+degraded", "count": 9}]),
            json!({"MON_DOWN": {"summary": {"message": "2/3 mons down"}}}),
        );
        let down = vec![("node2".to_string(), 1)];
        let v = judge(
            &c,
            &Gate {
                mons: &mons(),
                down: &down,
                wanted_osds: 2,
                allow: &[],
            },
        );
        assert_eq!(
            v.explained[..2],
            ["mon.node2 out of quorum".to_string(), "osd.1 down".into()]
        );
        assert!(v.why.iter().any(|w| w.contains("node3")), "{v:?}");
        assert!(v.why.iter().any(|w| w.contains("osd.2 down")), "{v:?}");
        assert!(v.why.iter().any(|w| w.contains("3 peering")), "{v:?}");
    }

    #[test]
    fn with_no_host_down_nothing_is_explained() {
        let c = cluster(
            &["node1", "node2", "node3"],
            &[
                (0, "node1", true, 1.0),
                (1, "node2", false, 1.0),
                (2, "node3", true, 1.0),
            ],
            json!([{"state_name": "active+undersized+degraded", "count": 27}]),
            json!({"OSD_DOWN": {"summary": {"message": "1 osds down"}}}),
        );
        let v = judge(
            &c,
            &Gate {
                mons: &mons(),
                down: &[],
                wanted_osds: 3,
                allow: &[],
            },
        );
        assert!(v.explained.is_empty());
        assert_eq!(v.why.len(), 3, "{v:?}");
    }

    #[test]
    fn a_healthy_cluster_passes() {
        let c = cluster(
            &["node1", "node2", "node3"],
            &[
                (0, "node1", true, 1.0),
                (1, "node2", true, 1.0),
                (2, "node3", true, 1.0),
            ],
            json!([{"state_name": "active+clean", "count": 32}]),
            json!({}),
        );
        assert_eq!(
            judge(
                &c,
                &Gate {
                    mons: &mons(),
                    down: &[],
                    wanted_osds: 3,
                    allow: &[]
                }
            ),
            Verdict::default()
        );
    }
}
