//! Day 2: work on a running cluster one node at a time, each step waited for.
//! `maintain` patches and reboots nodes; `retire` takes nodes out of the cluster. Both
//! drive a `Fleet`: one connection per host, each host's parts in the cluster, and the
//! waits they share (a swarm drain, Ceph healthy with every PG active+clean).

pub mod backup;
pub mod checks;
pub mod maintain;
pub mod restore;
pub mod restore_etcd;
pub mod retire;
pub mod retire_plan;
pub mod retired;

use crate::engine::cluster::docker_bounded;
use crate::engine::Prepared;
use crate::transport::{quote as q, Conn, Output, Target};
use checks::Parts;
use indexmap::IndexMap;
use serde_json::Value;
use std::time::{Duration, Instant};

/// Live connections to a cluster's hosts and what each runs.
/// Why a drain did not finish.
pub enum Drain {
    /// A service can run only on the node drained.
    Stranded(String),
    Failed(String),
}

impl std::fmt::Display for Drain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Drain::Stranded(e) | Drain::Failed(e) => f.write_str(e),
        }
    }
}

pub struct Fleet<'a> {
    pub p: &'a Prepared,
    pub conns: IndexMap<String, Conn>,
    pub parts: IndexMap<String, Parts>,
    /// How long each wait may take.
    pub wait: Duration,
}

pub fn say(node: &str, msg: &str) {
    eprintln!("{node}: {msg}");
}

/// Connects to every host at once: the connections, and the hosts that did not answer
/// with why.
pub async fn connect(targets: Vec<(String, Target)>) -> (IndexMap<String, Conn>, Vec<String>) {
    let mut conns = IndexMap::new();
    let mut silent = Vec::new();
    let joins: Vec<_> = targets
        .into_iter()
        .map(|(h, t)| (h, tokio::spawn(Conn::connect(t))))
        .collect();
    for (h, j) in joins {
        match j.await {
            Ok(Ok(c)) => {
                conns.insert(h, c);
            }
            Ok(Err(e)) => silent.push(format!("{h} ({e})")),
            Err(e) => silent.push(format!("{h} ({e})")),
        }
    }
    (conns, silent)
}

/// A host's parts in the cluster, from the groups it is in.
pub fn parts(p: &Prepared, host: &crate::inventory::Host, inside: impl Fn(&str) -> bool) -> Parts {
    let has_osds = p.inventory.groups.contains_key("ceph_osds")
        || p.inventory
            .retired
            .values()
            .any(|r| r.groups.iter().any(|g| g == "ceph_osds"));
    let var =
        |role: &str, key: &str| Some(p.worked.var_str(host, role, key)).filter(|v| !v.is_empty());
    let mount = var("ceph", "cephfs_mount")
        .filter(|_| inside("ceph_clients") && var("ceph", "cephfs_name").is_some());
    Parts {
        manager: inside("managers"),
        swarm: inside("managers") || inside("workers"),
        etcd: inside("etcd"),
        mon: inside("ceph_mons") && has_osds,
        mgr: inside("ceph_mgrs") && has_osds,
        mds: inside("ceph_mds") && has_osds && var("ceph", "cephfs_name").is_some(),
        osds: inside("ceph_osds"),
        mount,
    }
}

/// The parts of a host of the inventory (not retired).
pub fn parts_of(p: &Prepared, h: &str) -> Parts {
    let inv = &p.inventory;
    parts(p, &inv.hosts[h], |g| {
        inv.groups.get(g).is_some_and(|m| m.contains(h))
    })
}

/// Host `h`'s variable `key` as role `role` sees it, when it is a non-empty string.
pub fn var(p: &Prepared, h: &str, role: &str, key: &str) -> Option<String> {
    Some(p.worked.var_str(&p.inventory.hosts[h], role, key)).filter(|v| !v.is_empty())
}

impl<'a> Fleet<'a> {
    /// Every host of `p` connected at once, with its parts; and the hosts that did not
    /// answer, with why.
    pub async fn open(p: &'a Prepared, wait: Duration) -> (Fleet<'a>, Vec<String>) {
        let (conns, silent) = connect(
            p.hosts
                .iter()
                .map(|h| (h.clone(), p.targets[h].clone()))
                .collect(),
        )
        .await;
        let parts = p
            .hosts
            .iter()
            .map(|h| (h.clone(), parts_of(p, h)))
            .collect();
        (
            Fleet {
                p,
                conns,
                parts,
                wait,
            },
            silent,
        )
    }
}

impl Fleet<'_> {
    pub async fn sh(&self, h: &str, script: &str) -> Result<Output, String> {
        let c = self.conns.get(h).ok_or(format!("{h}: no connection"))?;
        c.run(&docker_bounded(script), None, Some("root"))
            .await
            .map_err(|e| e.to_string())
    }

    /// Runs `script` on `h`; its stdout, or its error.
    pub async fn ok(&self, h: &str, script: &str) -> Result<String, String> {
        let o = self.sh(h, script).await?;
        if o.rc != 0 {
            return Err(format!(
                "exit code {}: {}",
                o.rc,
                crate::sys::tail(o.stderr.trim(), 3)
            ));
        }
        Ok(o.stdout)
    }

    /// A connected host with `part`, other than `node`, to act through.
    pub fn other(&self, node: &str, part: impl Fn(&Parts) -> bool) -> Option<String> {
        self.outside(&[node.to_owned()], part)
    }

    /// A connected host with `part`, none of `nodes`, to act through.
    pub fn outside(&self, nodes: &[String], part: impl Fn(&Parts) -> bool) -> Option<String> {
        self.parts
            .iter()
            .find(|(h, p)| !nodes.contains(h) && part(p) && self.conns.contains_key(*h))
            .map(|(h, _)| h.clone())
    }

    /// etcdctl with `h`'s client certificate.
    pub fn etcdctl(&self, h: &str) -> String {
        let pki = var(self.p, h, "etcd", "pki_dir").unwrap_or_default();
        crate::cluster::etcd::etcdctl(
            &format!("{pki}/ca.crt"),
            &format!("{pki}/etcd.crt"),
            &format!("{pki}/etcd.key"),
        )
    }

    /// Drains `node` (on manager `m`) and waits until its tasks run elsewhere and every
    /// service has its replicas. When the services still short are those no other node can
    /// take (their pending tasks say "no suitable node" for 5 s): the ones still running a
    /// task are said and left short; one left with none would stop while the node is away:
    /// with `stranded_ok` it is said and left, else `Err(Drain::Stranded)`, still drained.
    pub async fn drain(
        &self,
        n: &str,
        node: &str,
        m: &str,
        stranded_ok: bool,
    ) -> Result<(), Drain> {
        say(n, "drain: its tasks move to other nodes");
        self.ok(
            m,
            &format!(
                "docker node update --availability drain {} >/dev/null",
                q(node)
            ),
        )
        .await
        .map_err(Drain::Failed)?;
        let t = Instant::now();
        let mut stranded_since: Option<Instant> = None;
        loop {
            let out = self
                .ok(
                    m,
                    &format!(
                        "echo '==PROVISION here'; docker node ps {} --format '{{{{.CurrentState}}}}' 2>/dev/null\n\
                         echo '==PROVISION svc'; docker service ls --format '{{{{.Name}}}} {{{{.Replicas}}}}' 2>/dev/null\n\
                         echo '==PROVISION stuck'; s=$(docker service ls -q 2>/dev/null); [ -z \"$s\" ] || \
                         docker service ps $s --filter desired-state=running --format '{{{{.Name}}}}|{{{{.Error}}}}' 2>/dev/null | grep -i 'no suitable node'; true",
                        q(node)
                    ),
                )
                .await
                .map_err(Drain::Failed)?;
            let s = crate::probe::sections(&out);
            let here = checks::still_running(s.get("here").map(String::as_str).unwrap_or(""));
            let waiting = checks::unsettled(s.get("svc").map(String::as_str).unwrap_or(""));
            let stuck = checks::stranded(s.get("stuck").map(String::as_str).unwrap_or(""));
            if here == 0 && waiting.is_empty() {
                say(n, &format!("drained in {:.1} s", t.elapsed().as_secs_f64()));
                return Ok(());
            }
            let all_stranded = here == 0
                && waiting
                    .iter()
                    .all(|w| stuck.iter().any(|x| w.split(' ').next() == Some(x)));
            stranded_since = if all_stranded {
                stranded_since.or(Some(Instant::now()))
            } else {
                None
            };
            if stranded_since.is_some_and(|s| s.elapsed() >= Duration::from_secs(5)) {
                // Those still running a task serve on, short; those with none stop.
                let (down, short): (Vec<&String>, Vec<&String>) = waiting
                    .iter()
                    .partition(|w| w.split(' ').nth(1).is_some_and(|r| r.starts_with("0/")));
                let list =
                    |v: &[&String]| v.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ");
                if !short.is_empty() {
                    say(
                        n,
                        &format!("drained; {} run short while it is away (no other node may take the rest)", list(&short)),
                    );
                }
                if down.is_empty() {
                    return Ok(());
                }
                let names = list(&down);
                if stranded_ok {
                    say(
                        n,
                        &format!("drained; {names} cannot run on another node: stopped while it is away (--allow-risk)"),
                    );
                    return Ok(());
                }
                return Err(Drain::Stranded(format!(
                    "{names} cannot run on any other node (no suitable node): it would stop while {n} is away"
                )));
            }
            if t.elapsed() > self.wait {
                return Err(Drain::Failed(format!(
                    "after {} s, {here} task(s) still run there; services short of tasks: {}",
                    self.wait.as_secs(),
                    if waiting.is_empty() {
                        "none".into()
                    } else {
                        waiting.join(", ")
                    }
                )));
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// Waits for HEALTH_OK (or only the checks `ceph_health_allow` accepts, and `also`)
    /// with every PG active+clean, on two reads 3 s apart: right after an OSD is back,
    /// HEALTH_OK can show while its PGs still peer.
    pub async fn ceph_healthy(&self, n: &str, mon: &str, also: &[&str]) -> Result<(), String> {
        let mut allow: Vec<String> = self
            .p
            .worked
            .var(&self.p.inventory.hosts[mon], "ceph", "ceph_health_allow")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        allow.extend(also.iter().map(|s| s.to_string()));
        let t = Instant::now();
        let mut since: Option<Instant> = None;
        loop {
            let out = self
                .ok(
                    mon,
                    "echo '==PROVISION health'; ceph health detail -f json 2>/dev/null; echo\n\
                     echo '==PROVISION pgs'; ceph pg stat -f json 2>/dev/null; echo",
                )
                .await?;
            let sec = crate::probe::sections(&out);
            let json = |k: &str| crate::probe::json(&sec, k);
            let v = json("health");
            let mut checks: Vec<String> = v["checks"]
                .as_object()
                .map(|m| m.keys().filter(|k| !allow.contains(k)).cloned().collect())
                .unwrap_or_default();
            if !v["status"].is_string() {
                checks.push("no health read".into());
            }
            if let Some(pgs) = checks::pgs_unclean(&json("pgs")) {
                checks.push(pgs);
            }
            if checks.is_empty() {
                let at = *since.get_or_insert_with(Instant::now);
                if at.elapsed() >= Duration::from_secs(3) {
                    say(
                        n,
                        &format!("Ceph healthy ({:.1} s)", t.elapsed().as_secs_f64()),
                    );
                    return Ok(());
                }
            } else {
                since = None;
            }
            if t.elapsed() > self.wait {
                return Err(format!(
                    "not healthy after {} s: {}",
                    self.wait.as_secs(),
                    checks.join(", ")
                ));
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }

    /// Closes every connection.
    pub async fn close(&mut self) {
        for (_, c) in self.conns.drain(..) {
            c.close().await;
        }
    }
}
