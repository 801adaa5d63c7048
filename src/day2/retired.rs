//! The audit of removed nodes: a node recorded as removed must not answer on any cluster
//! port (swarm, Docker TLS, etcd, Ceph). Asked from a host of the cluster (the removed
//! node's own firewall still admits its old peers, not the controller), so a node that is
//! powered off passes, and one that came back with its old daemons is flagged.

use crate::engine::Prepared;
use crate::finding::{AuditError, AuditResult, Finding};
use crate::state::State;
use crate::transport::{quote, Conn};
use indexmap::IndexMap;
use std::time::Instant;

/// Each cluster port and what listens there.
const PORTS: [(u16, &str); 7] = [
    (2377, "swarm management"),
    (7946, "swarm gossip"),
    (2376, "the Docker API over TLS"),
    (2379, "etcd clients"),
    (2380, "etcd peers"),
    (3300, "Ceph monitor (v2)"),
    (6789, "Ceph monitor (v1)"),
];

/// Findings for every node the inventory retires and the state records as removed.
pub async fn audit(p: &Prepared, state: &State) -> IndexMap<String, (AuditResult, u64)> {
    let rec = super::retire::recorded(state);
    let mut out = IndexMap::new();
    let removed: Vec<&crate::inventory::Retired> = p
        .inventory
        .retired
        .values()
        .filter(|r| rec.contains_key(&r.host.name))
        .collect();
    if removed.is_empty() {
        return out;
    }
    let t = Instant::now();
    let mut script = String::new();
    for r in &removed {
        for (port, _) in PORTS {
            script += &format!(
                "timeout 2 bash -c 'exec 3<>/dev/tcp/'{a}'/{port}' 2>/dev/null && echo {n} {port}\n",
                a = quote(&r.host.address),
                n = quote(&r.host.name)
            );
        }
    }
    script += "true\n";
    // From the first host of the cluster that answers.
    let mut open: Result<String, String> = Err("no host of the cluster answered".into());
    for h in &p.hosts {
        if let Ok(c) = Conn::connect(p.targets[h].clone()).await {
            open = c
                .run(&script, None, None)
                .await
                .map(|o| o.stdout)
                .map_err(|e| format!("the probe from {h} failed: {e}"));
            c.close().await;
            break;
        }
    }
    for r in removed {
        let n = &r.host.name;
        let res = match &open {
            Err(e) => Err(AuditError {
                unreachable: false,
                message: format!("{n} is recorded as removed, but its ports could not be probed: {e}"),
            }),
            Ok(lines) => Ok(PORTS
                .iter()
                .map(|(port, what)| {
                    let answers = lines.lines().any(|l| l.trim() == format!("{n} {port}"));
                    Finding {
                        id: format!("retired.port-{port}"),
                        title: format!("removed from the cluster: nothing answers on {port} ({what})"),
                        reason: "a removed node that still runs a cluster daemon can rejoin or serve stale data: wipe it"
                            .into(),
                        pass: !answers,
                        expected: "no answer".into(),
                        actual: if answers { "answers".into() } else { "no answer".into() },
                    }
                })
                .collect()),
        };
        out.insert(n.clone(), (res, t.elapsed().as_millis() as u64));
    }
    out
}
