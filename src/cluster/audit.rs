//! The swarm, audited read-only from what each host's audit command printed: nodes
//! missing from or unknown to the swarm, role, availability and label drift.

use super::labels::{diff, MANAGED};
use super::swarm::{parse, Seen1};
use crate::finding::Finding;
use crate::inventory::Inventory;
use indexmap::IndexMap;
use std::collections::BTreeMap;

/// What the inventory wants of one swarm host.
pub struct Want {
    pub manager: bool,
    pub labels: BTreeMap<String, String>,
}

/// Is `h` a swarm host (in `managers` or `workers`)?
pub fn is_swarm_host(inv: &Inventory, h: &str) -> bool {
    ["managers", "workers"]
        .iter()
        .any(|g| inv.groups.get(*g).is_some_and(|m| m.contains(h)))
}

/// What the inventory wants of swarm host `h`: its role and labels.
pub fn want(inv: &Inventory, h: &str) -> Want {
    let m = crate::cluster::Member {
        name: h.to_owned(),
        args: inv.hosts[h]
            .vars
            .get("swarm_labels")
            .map(|l| [("labels".to_string(), l.clone())].into_iter().collect())
            .unwrap_or_default(),
        writable: false,
        user: None,
        down: None,
    };
    Want {
        manager: inv.groups.get("managers").is_some_and(|g| g.contains(h)),
        labels: super::labels::wanted(&m).unwrap_or_default(),
    }
}

/// The first of the inventory's managers among `hosts`: where the stacks are read.
pub fn first_manager<'a>(inv: &'a Inventory, hosts: &[String]) -> Option<&'a str> {
    inv.groups
        .get("managers")?
        .iter()
        .find(|m| hosts.contains(*m))
        .map(String::as_str)
}

/// Those of `hosts` in the `etcd` group.
pub fn etcd_hosts(inv: &Inventory, hosts: &[String]) -> Vec<String> {
    hosts
        .iter()
        .filter(|h| inv.groups.get("etcd").is_some_and(|g| g.contains(*h)))
        .cloned()
        .collect()
}

fn finding(
    id: &str,
    title: String,
    pass: bool,
    expected: String,
    actual: String,
    reason: &str,
) -> Finding {
    Finding {
        id: id.into(),
        title,
        reason: reason.into(),
        pass,
        expected,
        actual,
    }
}

/// Findings per host; `outputs` are the `==PROVISION` sections each swarm host printed.
// Long on purpose: a list of independent swarm checks, one finding each.
pub fn findings(
    want: &IndexMap<String, Want>,
    outputs: &IndexMap<String, String>,
) -> IndexMap<String, Vec<Finding>> {
    let seen: IndexMap<String, Seen1> =
        outputs.iter().map(|(h, o)| (h.clone(), parse(o))).collect();
    let mut out: IndexMap<String, Vec<Finding>> = IndexMap::new();
    // The swarm's view, from any answering manager.
    let source = seen
        .iter()
        .find(|(_, s)| s.info.control_available && s.nodes.is_some());
    let Some((src, src_seen)) = source else {
        for h in seen.keys() {
            out.entry(h.clone()).or_default().push(finding(
                "swarm-member",
                "in the cluster's swarm".into(),
                false,
                "a manager of the swarm answers".into(),
                "no manager of a swarm answered the audit".into(),
                "without a manager the swarm cannot be checked or changed",
            ));
        }
        return out;
    };
    let nodes = src_seen.nodes.clone().unwrap_or_default();
    // Inventory hosts that did not answer: the swarm's view of them, from the manager.
    let silent: Vec<String> = want
        .iter()
        .filter(|(h, _)| !seen.contains_key(*h))
        .map(|(h, w)| {
            let n = nodes.iter().find(|n| &n.description.hostname == h);
            format!(
                "{h} ({}): {}",
                if w.manager { "manager" } else { "worker" },
                n.map_or("not in the swarm".to_string(), |n| format!(
                    "node {}, {}",
                    n.status.state, n.spec.availability
                ))
            )
        })
        .collect();
    if !silent.is_empty() {
        out.entry(src.clone()).or_default().push(finding(
            "swarm-down-nodes",
            "every node of the inventory answers".into(),
            false,
            "every node reachable and ready".into(),
            format!("unreachable: {}", silent.join("; ")),
            "the swarm runs its services on fewer nodes until they are back",
        ));
    }
    for (h, w) in want {
        let Some(s) = seen.get(h) else { continue };
        let f = out.entry(h.clone()).or_default();
        let node = nodes
            .iter()
            .find(|n| n.id == s.info.node_id && !n.id.is_empty());
        let Some(n) = node else {
            f.push(finding(
                "swarm-member",
                "in the cluster's swarm".into(),
                false,
                format!("a node of the swarm seen from {src}"),
                format!(
                    "swarm state `{}`{}",
                    s.info.local_node_state,
                    if s.info.node_id.is_empty() {
                        String::new()
                    } else {
                        format!(", node {} unknown to {src}", s.info.node_id)
                    }
                ),
                "a host outside the swarm runs none of its services",
            ));
            continue;
        };
        f.push(finding(
            "swarm-member",
            "in the cluster's swarm".into(),
            true,
            "member".into(),
            format!("node {}", n.id),
            "",
        ));
        let role = if w.manager { "manager" } else { "worker" };
        f.push(finding(
            "swarm-role",
            format!("swarm role {role}"),
            n.spec.role == role,
            role.into(),
            n.spec.role.clone(),
            "the managers hold the swarm's quorum; the inventory says which hosts they are",
        ));
        f.push(finding(
            "swarm-availability",
            "node available for tasks".into(),
            n.spec.availability == "active" && n.status.state == "ready",
            "active, ready".into(),
            format!("{}, {}", n.spec.availability, n.status.state),
            "a drained or down node runs no tasks",
        ));
        let (add, rm, managed) = diff(&n.spec.labels, &w.labels);
        let shown: Vec<String> = n
            .spec
            .labels
            .iter()
            .filter(|(k, _)| *k != MANAGED)
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        f.push(finding(
            "swarm-labels",
            "node labels as in the inventory".into(),
            add.is_empty() && rm.is_empty() && managed.is_none(),
            w.labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" "),
            shown.join(" "),
            "services are placed by label constraints",
        ));
    }
    let known: Vec<&str> = seen.values().map(|s| s.info.node_id.as_str()).collect();
    let unknown: Vec<String> = nodes
        .iter()
        .filter(|n| !known.contains(&n.id.as_str()) && !want.contains_key(&n.description.hostname))
        .map(|n| format!("{} ({})", n.description.hostname, n.spec.role))
        .collect();
    out.entry(src.clone()).or_default().push(finding(
        "swarm-unknown-nodes",
        "no node outside the inventory".into(),
        unknown.is_empty(),
        "none".into(),
        if unknown.is_empty() {
            "none".into()
        } else {
            unknown.join(", ")
        },
        "a node the inventory does not know is not hardened or kept by it",
    ));
    out
}

/// Whether this member's scheduled snapshots are recent and the last one worked.
fn backup_finding(b: Option<&super::etcd::BackupStatus>, limit: u64) -> Finding {
    let ago = |t: u64, now: u64| {
        let s = now.saturating_sub(t);
        if s < 5400 {
            format!("{} min ago", s / 60)
        } else {
            format!("{} h ago", s / 3600)
        }
    };
    let (pass, actual) = match b {
        None => (false, "no answer from the probe".to_owned()),
        Some(b) => match (b.last_ok, b.failed) {
            (None, _) if b.last_run.is_none() => (false, "never taken".to_owned()),
            (None, _) => (
                false,
                format!("none good yet; the last attempt failed: {}", b.reason),
            ),
            (Some(ok), true) => (
                false,
                format!(
                    "the last attempt failed ({}): {}; the last good one {}",
                    b.last_run.map_or("?".into(), |r| ago(r, b.now)),
                    b.reason,
                    ago(ok, b.now)
                ),
            ),
            (Some(ok), false) => (
                b.now.saturating_sub(ok) <= limit,
                format!("the last good one {}", ago(ok, b.now)),
            ),
        },
    };
    finding(
        "etcd-backup",
        "a recent scheduled etcd snapshot".into(),
        pass,
        format!("a good snapshot within {} h", limit / 3600),
        actual,
        "without a recent snapshot a lost quorum loses the data written since",
    )
}

/// etcd findings per host: healthy, a started voting member of the cluster, and (where
/// `max_age` has the host's limit in seconds) a recent good scheduled snapshot.
pub fn etcd_findings(
    outputs: &IndexMap<String, String>,
    down: &[String],
    max_age: &IndexMap<String, u64>,
) -> IndexMap<String, Vec<Finding>> {
    use super::etcd::parse;
    let seen: IndexMap<String, super::etcd::Obs> =
        outputs.iter().map(|(h, o)| (h.clone(), parse(o))).collect();
    let list = seen
        .values()
        .find(|o| o.healthy && o.members.is_some())
        .and_then(|o| o.members.clone());
    let mut out: IndexMap<String, Vec<Finding>> = IndexMap::new();
    for (h, o) in &seen {
        let f = out.entry(h.clone()).or_default();
        f.push(finding(
            "etcd-health",
            "etcd member healthy".into(),
            o.active && o.healthy,
            "running and healthy over TLS".into(),
            match (o.active, o.healthy) {
                (false, _) => "not running".into(),
                (true, false) => "running, not healthy".into(),
                (true, true) => "healthy".into(),
            },
            "an unhealthy member weakens the quorum",
        ));
        let m = list.as_ref().and_then(|l| l.iter().find(|m| &m.name == h));
        f.push(finding(
            "etcd-member",
            "a started voting member".into(),
            m.is_some_and(|m| !m.is_learner),
            "started, voting".into(),
            match (m, &list) {
                (_, None) => "no healthy member to ask".into(),
                (None, Some(_)) => "not a member".into(),
                (Some(m), _) if m.is_learner => "a learner".into(),
                (Some(_), _) => "started, voting".into(),
            },
            "the inventory says which hosts hold the data",
        ));
        if let Some(&limit) = max_age.get(h) {
            f.push(backup_finding(o.backup.as_ref(), limit));
        }
    }
    // Members on hosts that did not answer, as the cluster sees them.
    if let (false, Some((src, _))) = (down.is_empty(), seen.iter().find(|(_, o)| o.healthy)) {
        let what: Vec<String> = down
            .iter()
            .map(
                |h| match list.as_ref().and_then(|l| l.iter().find(|m| &m.name == h)) {
                    Some(_) => format!("{h}: a member, its host unreachable"),
                    None => format!("{h}: unreachable, not a member"),
                },
            )
            .collect();
        out.entry(src.clone()).or_default().push(finding(
            "etcd-down-members",
            "every etcd member answers".into(),
            false,
            "every member reachable and healthy".into(),
            what.join("; "),
            "the cluster keeps quorum with fewer members to spare until they are back",
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(backup: &str) -> String {
        format!(
            "==PROVISION active\nactive\n==PROVISION health\nhealthy\n==PROVISION now\n100000\n==PROVISION backup\n{backup}"
        )
    }

    fn backup(status: &str, limit: Option<u64>) -> Finding {
        let outs: IndexMap<String, String> = [("n1".to_owned(), member(status))].into();
        let max_age: IndexMap<String, u64> =
            limit.map(|l| ("n1".to_owned(), l)).into_iter().collect();
        let f = etcd_findings(&outs, &[], &max_age);
        f["n1"]
            .iter()
            .find(|f| f.id == "etcd-backup")
            .cloned()
            .unwrap_or_else(|| panic!("no etcd-backup finding"))
    }

    #[test]
    fn a_recent_good_snapshot_passes_an_old_or_failed_one_does_not() {
        let ok = "last_run=99000\nlast_result=ok\nlast_ok=99000\nlast_file=/b/x.db\nreason=\n";
        let f = backup(ok, Some(3600));
        assert!(f.pass, "{f:?}");
        assert_eq!(f.actual, "the last good one 16 min ago");
        let f = backup(ok, Some(600));
        assert!(!f.pass && f.expected.contains("within 0 h"), "{f:?}");
        let failed =
            "last_run=99900\nlast_result=failed\nlast_ok=10000\nreason=context deadline exceeded\n";
        let f = backup(failed, Some(93600));
        assert!(!f.pass, "{f:?}");
        assert_eq!(
            f.actual,
            "the last attempt failed (1 min ago): context deadline exceeded; the last good one 25 h ago"
        );
        let f = backup("", Some(93600));
        assert!(!f.pass && f.actual == "never taken", "{f:?}");
        let f = backup(
            "last_run=99990\nlast_result=failed\nlast_ok=\nreason=no route\n",
            Some(93600),
        );
        assert!(
            !f.pass && f.actual.contains("none good yet") && f.actual.contains("no route"),
            "{f:?}"
        );
    }

    #[test]
    fn no_schedule_no_backup_finding() {
        let outs: IndexMap<String, String> = [("n1".to_owned(), member(""))].into();
        let f = etcd_findings(&outs, &[], &IndexMap::new());
        assert!(f["n1"].iter().all(|f| f.id != "etcd-backup"));
    }
}
