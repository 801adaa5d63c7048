//! The decisions of a maintenance roll, from what the hosts printed: node order, quorum
//! arithmetic, the packages apt would upgrade, tasks still on a drained node.

/// A node's parts in the cluster, from the inventory's groups.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Parts {
    pub manager: bool,
    pub swarm: bool,
    pub etcd: bool,
    pub mon: bool,
    pub mgr: bool,
    pub mds: bool,
    pub osds: bool,
    /// The CephFS mount point, on a Ceph client.
    pub mount: Option<String>,
}

impl Parts {
    /// No quorum or standby role: may be away together with other such nodes.
    pub fn batchable(&self) -> bool {
        !(self.manager || self.etcd || self.mon || self.mgr || self.mds)
    }
}

/// Managers first (one at a time keeps their quorum), then the others, each group in
/// inventory order; a node left drained by an earlier roll goes first.
pub fn order(nodes: &[(String, Parts)], drained: &[String]) -> Vec<String> {
    let mut out: Vec<String> = nodes
        .iter()
        .filter(|(n, _)| drained.contains(n))
        .map(|(n, _)| n.clone())
        .collect();
    for managers in [true, false] {
        for (n, p) in nodes {
            if p.manager == managers && !out.contains(n) {
                out.push(n.clone());
            }
        }
    }
    out
}

/// The roll's order cut into batches: a node with a quorum or a standby role (manager,
/// etcd member, Ceph monitor, manager or MDS) alone; the others together, up to `size`
/// consecutive ones.
pub fn batches(order: &[String], parts: impl Fn(&str) -> Parts, size: usize) -> Vec<Vec<String>> {
    let mut out: Vec<Vec<String>> = Vec::new();
    let mut open = false;
    for n in order {
        let alone = !parts(n).batchable();
        match out.last_mut() {
            Some(b) if open && !alone && b.len() < size.max(1) => b.push(n.clone()),
            _ => {
                out.push(vec![n.clone()]);
                open = !alone;
            }
        }
    }
    out
}

/// Does a group of `members`, `healthy` of them healthy now (the node among them when
/// `node_healthy`), keep its quorum while the node is away?
pub fn keeps_quorum(members: usize, healthy: usize, node_healthy: bool) -> Result<(), String> {
    let quorum = members / 2 + 1;
    let left = healthy.saturating_sub(node_healthy as usize);
    if left >= quorum {
        return Ok(());
    }
    Err(format!(
        "{members} members, {healthy} healthy: without this node {left} remain, and a quorum needs {quorum}"
    ))
}

/// The swarm's managers from `docker node ls --format '{{.Hostname}} {{.ManagerStatus}}'`:
/// (count, reachable).
pub fn managers(node_ls: &str) -> (usize, Vec<String>) {
    let mut n = 0;
    let mut up = Vec::new();
    for l in node_ls.lines() {
        let mut w = l.split_whitespace();
        let (Some(h), Some(s)) = (w.next(), w.next()) else {
            continue;
        };
        n += 1;
        if s == "Leader" || s == "Reachable" {
            up.push(h.to_owned());
        }
    }
    (n, up)
}

/// One package apt would upgrade: name, new version, and whether it comes from a security
/// archive.
#[derive(Clone, Debug, PartialEq)]
pub struct Upgrade {
    pub name: String,
    pub version: String,
    pub security: bool,
}

/// The upgrades in `apt-get -s dist-upgrade`'s output (`Inst NAME [OLD] (NEW ORIGIN [ARCH])`).
pub fn upgrades(sim: &str) -> Vec<Upgrade> {
    sim.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("Inst ")?;
            let (name, rest) = rest.split_once(' ')?;
            let paren = rest.split_once('(')?.1;
            let (version, origin) = paren.split_once(' ').unwrap_or((paren, ""));
            Some(Upgrade {
                name: name.to_owned(),
                version: version.trim_end_matches(')').to_owned(),
                security: origin.to_ascii_lowercase().contains("security"),
            })
        })
        .collect()
}

/// The engine the inventory pins (`docker_version`), when the installed one differs:
/// upgraded (or moved back) in the node's drained window, whatever its archive.
pub fn pinned_engine(package: &str, pinned: &str, installed: &str) -> Option<Upgrade> {
    let (pinned, installed) = (pinned.trim(), installed.trim());
    (!pinned.is_empty() && pinned != installed).then(|| Upgrade {
        name: package.to_owned(),
        version: pinned.to_owned(),
        security: true,
    })
}

/// The units to restart after these packages were upgraded: containerd, then docker
/// (whose daemons Debian's packages leave running old binaries), in that order.
pub fn engine_restarts(upgraded: &[String], engine: &str) -> Vec<String> {
    let any = |names: &[&str]| upgraded.iter().any(|u| names.contains(&u.as_str()));
    let mut units = Vec::new();
    if any(&["containerd", "containerd.io"]) {
        units.push("containerd.service".to_owned());
    }
    if !units.is_empty() || any(&[engine, "docker.io", "docker-ce", "runc"]) {
        units.push("docker.service".to_owned());
    }
    units
}

/// Does a reboot bring something new: apt asks for one, or a kernel newer than the
/// running one is installed (`uname -r` vs the newest /boot/vmlinuz-*)?
pub fn needs_reboot(required_file: bool, running: &str, installed: &[&str]) -> bool {
    required_file
        || installed
            .iter()
            .filter(|k| !k.is_empty())
            .any(|k| version_gt(k, running.trim()))
}

/// `a > b` for kernel and package versions, comparing numbers as numbers.
fn version_gt(a: &str, b: &str) -> bool {
    let parts = |s: &str| -> Vec<u64> {
        s.split(|c: char| !c.is_ascii_digit())
            .filter(|p| !p.is_empty())
            .map(|p| p.parse().unwrap_or(0))
            .collect()
    };
    parts(a) > parts(b)
}

/// Services whose running tasks differ from their wanted ones, from
/// `docker service ls --format '{{.Name}} {{.Replicas}}'`.
pub fn unsettled(service_ls: &str) -> Vec<String> {
    service_ls
        .lines()
        .filter_map(|l| l.split_once(' '))
        .filter(|(_, r)| !crate::cluster::stacks::converged(r.trim()))
        .map(|(n, r)| format!("{n} {}", r.trim()))
        .collect()
}

/// From the nodes of a service's running tasks (one per line): none on `node` and two or
/// more on another: crowded since `node` was drained.
pub fn crowded_without(nodes: &str, node: &str) -> bool {
    let list: Vec<&str> = nodes
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    !list.contains(&node)
        && list
            .iter()
            .any(|x| list.iter().filter(|y| *y == x).count() >= 2)
}

/// The tasks on a node not yet stopped, from `docker node ps --format '{{.CurrentState}}'`:
/// a drained task is no longer wanted at once, but runs until it has stopped.
pub fn still_running(states: &str) -> usize {
    states
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .filter(|l| {
            ![
                "Shutdown", "Complete", "Failed", "Rejected", "Orphaned", "Remove", "Pending",
            ]
            .iter()
            .any(|s| l.starts_with(s))
        })
        .count()
}

/// The services whose pending tasks no node can take, from `docker service ps` lines
/// `NAME.SLOT|ERROR` (or `NAME.NODEID|ERROR` for a global service).
pub fn stranded(ps: &str) -> Vec<String> {
    let mut names: Vec<String> = ps
        .lines()
        .filter_map(|l| l.split_once('|'))
        .filter(|(_, e)| e.to_ascii_lowercase().contains("no suitable node"))
        .filter_map(|(task, _)| task.trim().rsplit_once('.').map(|(svc, _)| svc.to_owned()))
        .collect();
    names.sort();
    names.dedup();
    names
}

/// The PGs not active+clean, from `ceph pg stat -f json` (either of its shapes).
pub fn pgs_unclean(v: &serde_json::Value) -> Option<String> {
    let pgs = if v["pg_summary"].is_object() {
        &v["pg_summary"]
    } else {
        v
    };
    let total = pgs["num_pgs"].as_u64().unwrap_or(0);
    let clean: u64 = pgs["num_pg_by_state"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["name"] == "active+clean")
        .filter_map(|s| s["num"].as_u64())
        .sum();
    (clean < total).then(|| format!("{clean} of {total} PGs active+clean"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn tasks_still_running_after_a_drain() {
        let ps = "Running 2 seconds ago\nShutdown 1 second ago\nComplete 3 hours ago\nStarting 1 second ago\nFailed 2 days ago\n";
        assert_eq!(super::still_running(ps), 2);
        assert_eq!(super::still_running(""), 0);
    }

    #[test]
    fn crowded_after_a_drain() {
        assert!(super::crowded_without("node3\nnode3\n", "node2"));
        assert!(!super::crowded_without("node3\nnode2\n", "node2"));
        assert!(!super::crowded_without("node3\nnode4\n", "node2"));
        assert!(!super::crowded_without("node2\nnode3\nnode3\n", "node2"));
        assert!(!super::crowded_without("", "node2"));
    }

    #[test]
    fn workers_in_batches_the_others_alone() {
        let order: Vec<String> = ["m1", "m2", "w1", "w2", "w3", "e1", "w4"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let parts = |n: &str| Parts {
            manager: n.starts_with('m'),
            etcd: n.starts_with('e'),
            swarm: true,
            ..Parts::default()
        };
        assert_eq!(
            batches(&order, parts, 2),
            [
                vec!["m1"],
                vec!["m2"],
                vec!["w1", "w2"],
                vec!["w3"],
                vec!["e1"],
                vec!["w4"]
            ]
        );
        assert_eq!(batches(&order, parts, 1).len(), 7);
        assert_eq!(batches(&order, parts, 0).len(), 7);
    }

    #[test]
    fn stranded_services_from_service_ps() {
        let ps = "monitoring_prometheus.1|no suitable node (scheduling constraints not satisfied on 3 nodes)\n\
                  monitoring_alertmanager.1|no suitable node (1 node not available for new tasks)\n\
                  web_web.2|\n\
                  monitoring_prometheus.1|no suitable node (again)\n";
        assert_eq!(
            super::stranded(ps),
            ["monitoring_alertmanager", "monitoring_prometheus"]
        );
        assert!(super::stranded("").is_empty());
    }

    use super::*;

    fn p(manager: bool) -> Parts {
        Parts {
            manager,
            swarm: true,
            ..Parts::default()
        }
    }

    #[test]
    fn managers_go_first_one_at_a_time_and_a_drained_node_resumes_first() {
        let nodes = vec![
            ("w1".to_string(), p(false)),
            ("m1".to_string(), p(true)),
            ("w2".to_string(), p(false)),
            ("m2".to_string(), p(true)),
        ];
        assert_eq!(order(&nodes, &[]), ["m1", "m2", "w1", "w2"]);
        assert_eq!(order(&nodes, &["w2".into()]), ["w2", "m1", "m2", "w1"]);
    }

    #[test]
    fn quorum_arithmetic() {
        assert!(keeps_quorum(3, 3, true).is_ok());
        assert!(
            keeps_quorum(5, 4, true).is_ok(),
            "5 members, one already down"
        );
        assert!(
            keeps_quorum(3, 2, false).is_ok(),
            "the node itself is the one down"
        );
        let e = keeps_quorum(1, 1, true).unwrap_err();
        assert!(e.contains("0 remain, and a quorum needs 1"), "{e}");
        let e = keeps_quorum(2, 2, true).unwrap_err();
        assert!(e.contains("1 remain, and a quorum needs 2"), "{e}");
        assert!(keeps_quorum(3, 2, true).is_err(), "one down already");
    }

    #[test]
    fn managers_are_counted_from_node_ls() {
        let out = "node1 Leader\nnode2 Reachable\nnode3 Unreachable\n";
        assert_eq!(managers(out), (3, vec!["node1".into(), "node2".into()]));
    }

    #[test]
    fn apt_simulation_is_read_with_origins() {
        let sim = "NOTE: simulation\nInst libssl3 [3.0.11-1~deb12u1] (3.0.11-1~deb12u2 Debian-Security:12/stable-security [amd64])\n\
                   Inst hello [2.10-3] (2.10-4 lab:stable [amd64])\nConf libssl3 (3.0.11-1~deb12u2 Debian-Security:12/stable-security [amd64])\n";
        let u = upgrades(sim);
        assert_eq!(u.len(), 2);
        assert_eq!(
            u[0],
            Upgrade {
                name: "libssl3".into(),
                version: "3.0.11-1~deb12u2".into(),
                security: true
            }
        );
        assert!(!u[1].security && u[1].version == "2.10-4");
    }

    #[test]
    fn a_reboot_is_needed_for_a_newer_kernel_or_when_apt_asks() {
        assert!(needs_reboot(true, "6.1.0-13-amd64", &[]));
        assert!(needs_reboot(false, "6.1.0-13-amd64", &["6.1.0-18-amd64"]));
        assert!(!needs_reboot(
            false,
            "6.1.0-18-amd64",
            &["6.1.0-13-amd64", "6.1.0-18-amd64"]
        ));
        assert!(!needs_reboot(false, "6.1.0-18-amd64", &[""]));
    }

    #[test]
    fn a_pinned_engine_that_differs_is_installed() {
        let u = pinned_engine(
            "docker.io",
            "20.10.24+dfsg1-1+b3",
            "20.10.5+dfsg1-1+deb11u2",
        )
        .unwrap();
        assert_eq!(
            (u.name.as_str(), u.version.as_str()),
            ("docker.io", "20.10.24+dfsg1-1+b3")
        );
        assert!(pinned_engine("docker.io", "20.10.24", "20.10.24\n").is_none());
        assert!(
            pinned_engine("docker.io", "", "20.10.24").is_none(),
            "nothing pinned"
        );
    }

    #[test]
    fn unsettled_services_are_named() {
        let out = "web_web 2/2\nmon_prom 0/1\njob 0/1 (1/1 completed)\n";
        assert_eq!(unsettled(out), ["mon_prom 0/1"]);
    }

    #[test]
    fn an_upgraded_engine_is_restarted_containerd_first() {
        let v = |x: &[&str]| x.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            engine_restarts(&v(&["docker.io"]), "docker.io"),
            v(&["docker.service"])
        );
        assert_eq!(
            engine_restarts(&v(&["containerd", "openssl"]), "docker.io"),
            v(&["containerd.service", "docker.service"])
        );
        assert_eq!(
            engine_restarts(&v(&["docker-ce"]), "docker-ce"),
            v(&["docker.service"])
        );
        assert!(engine_restarts(&v(&["openssl", "lab-hello"]), "docker.io").is_empty());
    }
}
