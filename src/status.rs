//! `provision status`: the cluster as it is, from one read-only command per host: the
//! swarm's nodes and services, etcd, Ceph, every certificate, the hosts that did not answer.
//! Healthy, degraded (what is wrong, one line each) or unknown (a host did not answer).

use crate::finding::AuditError;
use crate::inventory::{Host, Inventory};
use crate::roles::Worked;
use indexmap::IndexMap;
use serde::Serialize;
use serde_json::{Map, Value};

/// The read-only script for host `h`; `worked` holds the roles' defaults.
pub fn script(inv: &Inventory, worked: &Worked, h: &Host) -> String {
    let inside = |g: &str| inv.groups.get(g).is_some_and(|m| m.contains(&h.name));
    let var = |role: &str, k: &str| worked.var_str(h, role, k);
    let pki = var("pki", "pki_dir");
    let mut s = String::new();
    if !pki.is_empty() {
        s += &format!("echo '==PROVISION pki'\n{}", crate::pki::list_script(&pki));
    }
    if inside("managers") {
        s += &format!(
            "echo '==PROVISION nodes'; docker node ls --format '{{{{json .}}}}' 2>/dev/null\n\
             echo '==PROVISION labels'; docker node inspect $(docker node ls -q 2>/dev/null) --format '{{{{.Description.Hostname}}}} {{{{json .Spec.Labels}}}}' 2>/dev/null\n\
             echo '==PROVISION services'; {}docker service ls --format '{{{{.ID}}}}|{{{{.Name}}}}|{{{{.Replicas}}}}|{{{{.Image}}}}' 2>/dev/null | \
             while IFS='|' read -r id name r image; do printf '%s|%s|%s\\n' \"$name\" \"$(reps \"$id\" \"$r\")\" \"$image\"; done\n",
            crate::cluster::stacks::REPLICAS_FN
        );
    }
    if inside("etcd") && !pki.is_empty() {
        let d = var("etcd", "pki_dir");
        let ctl = crate::cluster::etcd::etcdctl(
            &format!("{d}/ca.crt"),
            &format!("{d}/etcd.crt"),
            &format!("{d}/etcd.key"),
        );
        s += &format!(
            "echo '==PROVISION etcdstatus'; {ctl} endpoint status --cluster -w json 2>/dev/null\n\
             echo '==PROVISION etcdmembers'; {ctl} member list -w json 2>/dev/null\n"
        );
    }
    if inside("ceph_mons") && inv.groups.contains_key("ceph_osds") {
        s += "echo '==PROVISION ceph'; timeout 15 ceph status -f json 2>/dev/null\n";
    }
    s + "true\n"
}

#[derive(Serialize, Default, Debug)]
pub struct Node {
    pub name: String,
    pub role: String,
    pub status: String,
    pub availability: String,
    pub manager: String,
    pub engine: String,
    pub labels: String,
}

#[derive(Serialize, Default, Debug)]
pub struct Service {
    pub name: String,
    pub replicas: String,
    pub image: String,
}

#[derive(Serialize, Default, Debug)]
pub struct Etcd {
    pub members: usize,
    pub answering: usize,
    pub leader: String,
    pub db_bytes: u64,
}

#[derive(Serialize, Default, Debug)]
pub struct Ceph {
    pub health: String,
    pub quorum: Vec<String>,
    pub mons: usize,
    pub osds_up: u64,
    pub osds_in: u64,
    pub osds: u64,
    pub used_bytes: u64,
    pub total_bytes: u64,
}

#[derive(Serialize, Debug)]
pub struct Cert {
    pub host: String,
    pub file: String,
    pub days_left: i64,
    pub ok: bool,
}

/// The cluster as read.
#[derive(Serialize, Default, Debug)]
pub struct Status {
    pub nodes: Vec<Node>,
    pub services: Vec<Service>,
    pub etcd: Option<Etcd>,
    pub ceph: Option<Ceph>,
    pub certificates: Vec<Cert>,
    pub unreachable: Vec<String>,
    /// Hosts that answered but could not be read, with why.
    pub errors: Vec<String>,
    /// What is wrong, one line each.
    pub problems: Vec<String>,
}

/// The first answering host's section `k`.
fn first<'a>(secs: &'a IndexMap<String, IndexMap<String, String>>, k: &str) -> Option<&'a str> {
    secs.values()
        .filter_map(|s| s.get(k))
        .find(|v| !v.trim().is_empty())
        .map(String::as_str)
}

/// Reads every host's output into one view and judges it.
pub fn judge(
    results: &IndexMap<String, Result<String, AuditError>>,
    ca_pem: Option<&str>,
    now: i64,
) -> Status {
    let mut st = Status::default();
    let mut secs: IndexMap<String, IndexMap<String, String>> = IndexMap::new();
    for (h, r) in results {
        match r {
            Ok(o) => {
                secs.insert(h.clone(), crate::probe::sections(o));
            }
            Err(e) if e.unreachable => st.unreachable.push(h.clone()),
            Err(e) => st.errors.push(format!("{h}: {}", e.message)),
        }
    }
    nodes(&mut st, &secs);
    etcd(&mut st, &secs);
    ceph(&mut st, &secs);
    for (h, s) in &secs {
        let Some(listing) = s.get("pki") else {
            continue;
        };
        for r in crate::pki::rows(listing, ca_pem, now) {
            if !r.healthy() {
                st.problems.push(format!(
                    "certificate {} on {h}: {}",
                    r.file,
                    r.error.clone().unwrap_or_else(|| if r.issuer_ok {
                        format!("due for renewal ({} days left)", r.days_left)
                    } else {
                        "issued by another CA".into()
                    })
                ));
            }
            st.certificates.push(Cert {
                host: h.clone(),
                file: r.file.clone(),
                days_left: r.days_left,
                ok: r.healthy(),
            });
        }
    }
    st.certificates.sort_by_key(|c| c.days_left);
    st
}

fn nodes(st: &mut Status, secs: &IndexMap<String, IndexMap<String, String>>) {
    let labels: IndexMap<&str, &str> = first(secs, "labels")
        .unwrap_or("")
        .lines()
        .filter_map(|l| l.split_once(' '))
        .collect();
    for l in first(secs, "nodes").unwrap_or("").lines() {
        let Ok(v) = serde_json::from_str::<Value>(l) else {
            continue;
        };
        let s = |k: &str| v[k].as_str().unwrap_or("").to_owned();
        let name = s("Hostname");
        let lab: Map<String, Value> = labels
            .get(name.as_str())
            .and_then(|j| serde_json::from_str(j).ok())
            .unwrap_or_default();
        let n = Node {
            role: if s("ManagerStatus").is_empty() {
                "worker"
            } else {
                "manager"
            }
            .into(),
            status: s("Status"),
            availability: s("Availability"),
            manager: s("ManagerStatus"),
            engine: s("EngineVersion"),
            labels: lab
                .iter()
                .filter(|(k, _)| !k.starts_with("provision."))
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect::<Vec<_>>()
                .join(","),
            name,
        };
        if n.status != "Ready" {
            st.problems.push(format!("node {} is {}", n.name, n.status));
        } else if n.availability != "Active" {
            st.problems.push(format!(
                "node {} is {}",
                n.name,
                n.availability.to_lowercase()
            ));
        }
        if n.manager == "Unreachable" {
            st.problems
                .push(format!("manager {} is unreachable", n.name));
        }
        st.nodes.push(n);
    }
    for l in first(secs, "services").unwrap_or("").lines() {
        let p: Vec<&str> = l.splitn(3, '|').collect();
        let [name, replicas, image] = p[..] else {
            continue;
        };
        if !crate::cluster::stacks::converged(replicas) {
            st.problems
                .push(format!("service {name} runs {replicas} tasks"));
        }
        st.services.push(Service {
            name: name.into(),
            replicas: replicas.into(),
            image: image.split('@').next().unwrap_or(image).into(),
        });
    }
}

fn etcd(st: &mut Status, secs: &IndexMap<String, IndexMap<String, String>>) {
    let Some(members) = first(secs, "etcdmembers") else {
        return;
    };
    let members: Value = serde_json::from_str(members.trim()).unwrap_or_default();
    let list = members["members"].as_array().cloned().unwrap_or_default();
    let status: Vec<Value> = first(secs, "etcdstatus")
        .and_then(|s| serde_json::from_str(s.trim()).ok())
        .unwrap_or_default();
    let leader_id = status.iter().find_map(|e| e["Status"]["leader"].as_u64());
    let name_of = |id: u64| {
        list.iter()
            .find(|m| m["ID"].as_u64() == Some(id))
            .and_then(|m| m["name"].as_str())
            .unwrap_or("?")
            .to_owned()
    };
    let e = Etcd {
        members: list.len(),
        answering: status.len(),
        leader: leader_id.map(name_of).unwrap_or_default(),
        db_bytes: status
            .iter()
            .filter_map(|e| e["Status"]["dbSize"].as_u64())
            .max()
            .unwrap_or(0),
    };
    if e.answering < e.members {
        st.problems.push(format!(
            "etcd: {} of {} members answer",
            e.answering, e.members
        ));
    }
    if e.leader.is_empty() {
        st.problems.push("etcd has no leader".into());
    }
    st.etcd = Some(e);
}

fn ceph(st: &mut Status, secs: &IndexMap<String, IndexMap<String, String>>) {
    let Some(s) = first(secs, "ceph") else { return };
    let v: Value = serde_json::from_str(s.trim()).unwrap_or_default();
    let quorum: Vec<String> = v["quorum_names"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|x| x.as_str().map(str::to_owned))
        .collect();
    let osd = &v["osdmap"];
    let c = Ceph {
        health: v["health"]["status"].as_str().unwrap_or("unknown").into(),
        mons: v["monmap"]["num_mons"]
            .as_u64()
            .unwrap_or(quorum.len() as u64) as usize,
        quorum,
        osds: osd["num_osds"].as_u64().unwrap_or(0),
        osds_up: osd["num_up_osds"].as_u64().unwrap_or(0),
        osds_in: osd["num_in_osds"].as_u64().unwrap_or(0),
        used_bytes: v["pgmap"]["bytes_used"].as_u64().unwrap_or(0),
        total_bytes: v["pgmap"]["bytes_total"].as_u64().unwrap_or(0),
    };
    if c.health != "HEALTH_OK" {
        let checks: Vec<String> = v["health"]["checks"]
            .as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        st.problems
            .push(format!("ceph: {} ({})", c.health, checks.join(", ")));
    }
    st.ceph = Some(c);
}

impl std::fmt::Display for Etcd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} members, {} answering, leader {}, db {}",
            self.members,
            self.answering,
            if self.leader.is_empty() {
                "none"
            } else {
                &self.leader
            },
            bytes(self.db_bytes)
        )
    }
}

impl std::fmt::Display for Ceph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}, monitors {}/{} in quorum ({}), OSDs {} up / {} in of {}, {} used of {}",
            self.health,
            self.quorum.len(),
            self.mons,
            self.quorum.join(", "),
            self.osds_up,
            self.osds_in,
            self.osds,
            bytes(self.used_bytes),
            bytes(self.total_bytes)
        )
    }
}

/// Now, as `2026-12-07 10:20:31`.
pub fn utc_now() -> String {
    let t = ::time::OffsetDateTime::now_utc();
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// `1.2 GiB`.
pub fn bytes(n: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < units.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", units[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(o: &str) -> Result<String, AuditError> {
        Ok(o.to_owned())
    }

    #[test]
    fn a_healthy_cluster_and_what_makes_it_degraded() {
        let mgr = "==PROVISION nodes\n\
            {\"Hostname\":\"n1\",\"Status\":\"Ready\",\"Availability\":\"Active\",\"ManagerStatus\":\"Leader\",\"EngineVersion\":\"20.10.24\"}\n\
            {\"Hostname\":\"n2\",\"Status\":\"Down\",\"Availability\":\"Active\",\"ManagerStatus\":\"\",\"EngineVersion\":\"20.10.24\"}\n\
            ==PROVISION labels\nn1 {\"zone\":\"a\",\"provision.managed\":\"zone\"}\nn2 null\n\
            ==PROVISION services\nweb_web|2/2|busybox:lab@sha256:abc\nmon_prom|0/1|prom:lab\n\
            ==PROVISION etcdstatus\n[{\"Endpoint\":\"https://10.0.0.1:2379\",\"Status\":{\"leader\":7,\"dbSize\":20480}}]\n\
            ==PROVISION etcdmembers\n{\"members\":[{\"ID\":7,\"name\":\"n1\"},{\"ID\":8,\"name\":\"n2\"}]}\n\
            ==PROVISION ceph\n{\"health\":{\"status\":\"HEALTH_WARN\",\"checks\":{\"OSD_DOWN\":{}}},\"quorum_names\":[\"n1\"],\"monmap\":{\"num_mons\":1},\
            \"osdmap\":{\"num_osds\":2,\"num_up_osds\":1,\"num_in_osds\":2},\"pgmap\":{\"bytes_used\":1073741824,\"bytes_total\":8589934592}}\n";
        let mut r = IndexMap::new();
        r.insert("n1".to_string(), ok(mgr));
        r.insert(
            "n3".to_string(),
            Err(AuditError {
                unreachable: true,
                message: "unreachable: timed out".into(),
            }),
        );
        let st = judge(&r, None, 0);
        assert_eq!(st.nodes.len(), 2);
        assert_eq!(
            (st.nodes[0].labels.as_str(), st.nodes[0].role.as_str()),
            ("zone=a", "manager")
        );
        assert_eq!(st.services[0].image, "busybox:lab");
        let e = st.etcd.as_ref().unwrap();
        assert_eq!(
            (e.members, e.answering, e.leader.as_str(), e.db_bytes),
            (2, 1, "n1", 20480)
        );
        let c = st.ceph.as_ref().unwrap();
        assert_eq!((c.osds_up, c.osds_in, c.mons), (1, 2, 1));
        assert_eq!(st.unreachable, ["n3"]);
        assert_eq!(
            st.problems,
            [
                "node n2 is Down",
                "service mon_prom runs 0/1 tasks",
                "etcd: 1 of 2 members answer",
                "ceph: HEALTH_WARN (OSD_DOWN)"
            ]
        );
        assert_eq!(bytes(1073741824), "1.0 GiB");
    }
}
