//! Taking the hosts marked `provision_state: absent` out of the cluster, one at a time,
//! each step waited for and skipped when done: swarm (drain until its tasks run
//! elsewhere, demote, leave, remove), etcd (snapshot, member remove, its member stopped),
//! Ceph (MDS and manager handed over, monitor removed, OSDs out until the data has moved,
//! then stopped and purged, the mount stopped), then its certificates recorded as retired
//! and removed. A host that does not answer is removed from the survivors' side only
//! with `provision_force: true`. What is done is recorded in the state directory.

use super::checks::Parts;
use super::retire_plan::{demote_keeps_quorum, etcd_member, find_node, osd_hosts_enough};
use super::{connect, parts, say, Fleet};
use crate::cluster::ceph::MOUNT_SERVICE;
use crate::cluster::swarm::Node;
use crate::engine::Prepared;
use crate::inventory::Retired;
use crate::state::State;
use crate::transport::quote as q;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// The state file that records each removal.
pub const RECORD: &str = "retired.json";

pub struct Opts {
    pub check: bool,
    /// How long each wait may take (drain, data moved, health).
    pub wait: Duration,
}

/// One host taken out.
pub struct Removed {
    pub node: String,
    pub seconds: f64,
    /// Of which spent waiting for the cluster (tasks rescheduled, data moved, health).
    pub waited: f64,
    pub changes: Vec<String>,
    /// What could not be cleaned on a host that did not answer.
    pub left_on_host: Vec<String>,
}

/// Why a removal stopped.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Why {
    /// A host did not answer: nothing was started.
    Unreachable,
    /// A step was refused (quorum, data not moved) or failed.
    Failed,
}

#[derive(Default)]
pub struct Outcome {
    pub done: Vec<Removed>,
    pub plan: Vec<String>,
    pub stopped: Option<(Why, String)>,
}

/// The removals recorded in the state directory: host to its record.
pub fn recorded(state: &State) -> serde_json::Map<String, Value> {
    state
        .read(RECORD)
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|v| v.as_object().cloned())
        .unwrap_or_default()
}

/// Forgets the removal of hosts the inventory has back (present again): marked absent
/// later, they are removed anew.
pub fn forget_returned(p: &Prepared, state: &State) -> Result<(), String> {
    let mut rec = recorded(state);
    let before = rec.len();
    rec.retain(|h, _| p.inventory.retired.contains_key(h));
    if rec.len() == before {
        return Ok(());
    }
    state.write(
        RECORD,
        &serde_json::to_vec_pretty(&rec).unwrap_or_default(),
        0o600,
    )
}

struct Stop(Why, String);

fn refused(msg: String) -> Stop {
    Stop(Why::Failed, msg)
}

/// Removes each retired host not recorded as removed, in inventory order.
pub async fn run(p: &Prepared, state: &State, o: &Opts) -> Outcome {
    let mut out = Outcome::default();
    let rec = recorded(state);
    let pending: Vec<&Retired> = p
        .inventory
        .retired
        .values()
        .filter(|r| !rec.contains_key(&r.host.name))
        .collect();
    if pending.is_empty() {
        return out;
    }
    let mut targets: Vec<_> = p
        .hosts
        .iter()
        .map(|h| (h.clone(), p.targets[h].clone()))
        .collect();
    let mut unusable = Vec::new();
    for r in &pending {
        match &p.retired[&r.host.name] {
            Ok(t) => targets.push((r.host.name.clone(), t.clone())),
            Err(e) => unusable.push(format!("{} ({e})", r.host.name)),
        }
    }
    let (conns, mut silent) = connect(targets).await;
    silent.extend(unusable);
    let is_retired = |s: &String| {
        pending
            .iter()
            .any(|r| s.starts_with(&format!("{} (", r.host.name)))
    };
    let survivors: Vec<&String> = silent.iter().filter(|s| !is_retired(s)).collect();
    let dead_unforced: Vec<&String> = silent
        .iter()
        .filter(|s| {
            pending
                .iter()
                .any(|r| !r.force && s.starts_with(&format!("{} (", r.host.name)))
        })
        .collect();
    let mut f = Fleet {
        p,
        conns,
        parts: p
            .hosts
            .iter()
            .map(|h| (h.clone(), super::parts_of(p, h)))
            .collect(),
        wait: o.wait,
    };
    if !survivors.is_empty() {
        out.stopped = Some((
            Why::Unreachable,
            format!(
                "{} did not answer: a host that does not answer is unknown, and a removal decided without it \
                 could cost a quorum; bring it back first. Nothing was changed.",
                survivors.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
            ),
        ));
    } else if !dead_unforced.is_empty() {
        out.stopped = Some((
            Why::Unreachable,
            format!(
                "{} is to be removed but did not answer. If it is gone for good, set provision_force: true \
                 on it to remove it from the survivors' side; otherwise bring it back. Nothing was changed.",
                dead_unforced.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
            ),
        ));
    }
    if out.stopped.is_some() {
        f.close().await;
        return out;
    }
    let mut r = Retire {
        f,
        o,
        plan: Vec::new(),
        changes: Vec::new(),
        waited: Duration::ZERO,
        record: serde_json::Map::new(),
        dry: false,
    };
    for ret in pending {
        let n = ret.host.name.clone();
        let t = Instant::now();
        r.changes.clear();
        r.waited = Duration::ZERO;
        r.record = serde_json::Map::new();
        // Every check of every layer first, with nothing changed: a removal refused by
        // Ceph (too few OSD hosts left) must not have drained and demoted the node.
        if !o.check {
            r.dry = true;
            let pre = r.one(ret).await;
            r.dry = false;
            r.plan.clear();
            r.record = serde_json::Map::new();
            if let Err(Stop(why, msg)) = pre {
                out.stopped = Some((why, format!("{n}: {msg}; nothing was changed")));
                break;
            }
        }
        match r.one(ret).await {
            Ok(left) => {
                if o.check {
                    continue;
                }
                let d = Removed {
                    node: n.clone(),
                    seconds: t.elapsed().as_secs_f64(),
                    waited: r.waited.as_secs_f64(),
                    changes: r.changes.clone(),
                    left_on_host: left,
                };
                say(
                    &n,
                    &format!(
                        "removed in {:.1} s ({:.1} s of it waiting for the cluster)",
                        d.seconds, d.waited
                    ),
                );
                r.record.insert("at".into(), json!(crate::sys::now_utc()));
                r.record.insert("seconds".into(), json!(d.seconds));
                r.record
                    .insert("dead".into(), json!(!r.f.conns.contains_key(&n)));
                r.record
                    .insert("left_on_host".into(), json!(d.left_on_host));
                let mut all = recorded(state);
                all.insert(n.clone(), Value::Object(r.record.clone()));
                if let Err(e) = state.write(
                    RECORD,
                    &serde_json::to_vec_pretty(&all).unwrap_or_default(),
                    0o600,
                ) {
                    out.stopped =
                        Some((Why::Failed, format!("{n}: removed, but not recorded: {e}")));
                    break;
                }
                out.done.push(d);
            }
            Err(Stop(why, msg)) => {
                out.stopped = Some((
                    why,
                    format!(
                        "{n}: {msg}{}",
                        if r.changes.is_empty() {
                            "; nothing was changed".to_string()
                        } else {
                            "; what was done stays (a drained node stays drained): run again to go on".into()
                        }
                    ),
                ));
                break;
            }
        }
    }
    out.plan = std::mem::take(&mut r.plan);
    r.f.close().await;
    out
}

struct Retire<'a> {
    f: Fleet<'a>,
    o: &'a Opts,
    plan: Vec<String>,
    changes: Vec<String>,
    waited: Duration,
    record: serde_json::Map<String, Value>,
    /// Checks only: every read and refusal, no change and no wait, no plan kept.
    dry: bool,
}

impl Retire<'_> {
    /// A change: in check mode a line of the plan, else said and run on `on`.
    async fn act(&mut self, n: &str, what: &str, on: &str, script: &str) -> Result<String, Stop> {
        if self.o.check || self.dry {
            self.plan.push(format!("{n}: {what}"));
            return Ok(String::new());
        }
        say(n, what);
        let out = self
            .f
            .ok(on, script)
            .await
            .map_err(|e| refused(format!("{what}: {e}")))?;
        self.changes.push(what.to_owned());
        Ok(out)
    }

    /// A wait: in check mode a line of the plan.
    fn waits(&mut self, n: &str, what: &str) -> bool {
        if self.o.check || self.dry {
            self.plan.push(format!("{n}: wait until {what}"));
            return false;
        }
        true
    }

    async fn read(&self, on: &str, script: &str, what: &str) -> Result<String, Stop> {
        self.f
            .ok(on, script)
            .await
            .map_err(|e| refused(format!("{what} could not be read on {on}: {e}")))
    }

    /// One host, layer by layer; what could not be cleaned on it when it is dead.
    async fn one(&mut self, r: &Retired) -> Result<Vec<String>, Stop> {
        let n = r.host.name.as_str();
        let parts: Parts = parts(self.f.p, &r.host, |g| r.groups.iter().any(|x| x == g));
        let alive = self.f.conns.contains_key(n);
        let dry = self.dry;
        let say = |n: &str, m: &str| {
            if !dry {
                say(n, m)
            }
        };
        say(
            n,
            &format!(
                "removing it from the cluster{}",
                if alive {
                    ""
                } else {
                    " (it does not answer: from the survivors' side, provision_force)"
                }
            ),
        );
        if parts.swarm {
            self.swarm(r, alive).await?;
        }
        if parts.etcd {
            self.etcd(r, alive).await?;
        }
        if parts.mon || parts.mgr || parts.mds || parts.osds || parts.mount.is_some() {
            self.ceph(r, &parts, alive).await?;
        }
        if alive {
            self.certificates(r).await?;
            return Ok(Vec::new());
        }
        let mut left = vec![format!(
            "its certificates and keys in {} (recorded as retired)",
            self.f.p.worked.var_str(&r.host, "pki", "pki_dir")
        )];
        if parts.swarm {
            left.push(
                "its swarm state: run `docker swarm leave --force` there if it comes back".into(),
            );
        }
        if parts.etcd {
            left.push("its etcd data and unit".into());
        }
        if parts.osds || parts.mon {
            left.push("its Ceph daemons and data (its devices are not wiped)".into());
        }
        for l in &left {
            say(
                n,
                &format!("not cleaned on the host (it does not answer): {l}"),
            );
        }
        Ok(left)
    }

    async fn swarm(&mut self, r: &Retired, alive: bool) -> Result<(), Stop> {
        let n = r.host.name.as_str();
        let m = self
            .f
            .other(n, |p| p.manager)
            .ok_or_else(|| refused("no other manager of the swarm answers".into()))?;
        let (id, local) = if alive {
            let o = self
                .read(
                    n,
                    "docker info --format '{{.Swarm.NodeID}} {{.Swarm.LocalNodeState}}' 2>/dev/null; true",
                    "its swarm state",
                )
                .await?;
            let mut w = o.split_whitespace();
            match (w.next(), w.next()) {
                (Some(i), Some(s)) => (i.to_owned(), s.to_owned()),
                (Some(s), None) => (String::new(), s.to_owned()),
                _ => (String::new(), String::new()),
            }
        } else {
            (String::new(), String::new())
        };
        let listed = self
            .read(
                &m,
                "ids=$(docker node ls -q); [ -z \"$ids\" ] && echo '[]' || docker node inspect $ids",
                "the swarm's nodes",
            )
            .await?;
        let nodes: Vec<Node> = serde_json::from_str(listed.trim())
            .map_err(|e| refused(format!("the swarm's nodes could not be read on {m}: {e}")))?;
        let Some(node) = find_node(&nodes, Some(&id), n, &r.host.address).cloned() else {
            if alive && local != "inactive" && !local.is_empty() {
                self.act(
                    n,
                    "swarm: leave (its node is no longer listed)",
                    n,
                    "docker swarm leave --force >/dev/null",
                )
                .await?;
            }
            return Ok(());
        };
        self.record.insert("swarm_node".into(), json!(node.id));
        let short = &node.id[..node.id.len().min(12)];
        if self.waits(
            n,
            "its tasks run on other nodes and every service has its replicas (drain)",
        ) {
            let t = Instant::now();
            self.f
                .drain(n, &node.id, &m, false)
                .await
                .map_err(|e| refused(format!("drain: {e}")))?;
            self.waited += t.elapsed();
            self.changes.push("swarm: drained".into());
        }
        if node.manager_status.is_some() {
            demote_keeps_quorum(&nodes, &node.id).map_err(|e| {
                refused(format!(
                    "the swarm would lose its quorum ({e}); refused: add managers first"
                ))
            })?;
            self.act(
                n,
                "swarm: demote (a manager no more)",
                &m,
                &format!(
                    "docker node demote {id} >/dev/null && for i in $(seq 60); do \
                     [ \"$(docker node inspect -f '{{{{.Spec.Role}}}}' {id})\" = worker ] && exit 0; sleep 1; done; \
                     echo 'still a manager after 60 s' >&2; exit 1",
                    id = q(&node.id)
                ),
            )
            .await?;
        }
        if alive && local != "inactive" {
            // Right after a demotion the node may still see itself as a manager for a moment.
            self.act(
                n,
                "swarm: leave",
                n,
                "for i in $(seq 30); do docker swarm leave >/dev/null 2>&1 && exit 0; \
                 [ \"$(docker info --format '{{.Swarm.LocalNodeState}}')\" = inactive ] && exit 0; sleep 1; done; \
                 docker swarm leave 2>&1 >/dev/null | tail -1 >&2; exit 1",
            )
            .await?;
        }
        self.act(
            n,
            &format!("swarm: remove node {short} from the swarm's list"),
            &m,
            &format!("docker node rm --force {} >/dev/null", q(&node.id)),
        )
        .await?;
        Ok(())
    }

    async fn etcd(&mut self, r: &Retired, alive: bool) -> Result<(), Stop> {
        let n = r.host.name.as_str();
        let s = self
            .f
            .other(n, |p| p.etcd)
            .ok_or_else(|| refused("no other etcd member answers".into()))?;
        let ctl = self.f.etcdctl(&s);
        let out = self
            .read(
                &s,
                &format!(
                    "echo '==PROVISION members'; {ctl} member list -w json 2>/dev/null; echo\n\
                     echo '==PROVISION health'; {ctl} endpoint health --cluster -w json 2>/dev/null; echo; true"
                ),
                "etcd's members",
            )
            .await?;
        let sec = crate::probe::sections(&out);
        let json = |k: &str| crate::probe::json(&sec, k);
        let members = json("members");
        if !members["members"].is_array() {
            return Err(refused(format!(
                "etcd's member list could not be read on {s}"
            )));
        }
        let id = etcd_member(&members, &json("health"), n).map_err(|e| {
            refused(format!(
                "{e}; refused: bring the other members back, or add members first"
            ))
        })?;
        if let Some(id) = id {
            self.record
                .insert("etcd_member".into(), json!(format!("{id:x}")));
            self.act(
                n,
                &format!("etcd: snapshot on {s}, then remove member {id:x}"),
                &s,
                &format!(
                    "set -e; {ctl} snapshot save /var/lib/etcd/snapshot-before-removing-{n}.db >/dev/null; \
                     {ctl} member remove {id:x} >/dev/null"
                ),
            )
            .await?;
        }
        if alive {
            let data = self.f.p.worked.var_str(&r.host, "etcd", "etcd_data_dir");
            let there = self
                .read(
                    n,
                    &format!(
                        "systemctl is-active -q etcd && echo active; systemctl is-enabled -q etcd 2>/dev/null && echo enabled; \
                         [ -d {d} ] && echo data; [ -e /etc/profile.d/01-etcd.sh ] && echo profile; true",
                        d = q(&data)
                    ),
                    "its etcd member",
                )
                .await?;
            if !there.trim().is_empty() {
                self.act(
                    n,
                    &format!("etcd: stop its member and its snapshot timer, its data set aside ({data}.removed-*), its etcdctl profile removed"),
                    n,
                    &format!(
                        "systemctl disable --now etcd >/dev/null 2>&1 || true; \
                         systemctl disable --now provision-etcd-backup.timer >/dev/null 2>&1 || true; \
                         rm -f /etc/profile.d/01-etcd.sh /etc/systemd/system/provision-etcd-backup.timer; \
                         [ ! -d {d} ] || mv {d} {d}.removed-$(date +%Y%m%d%H%M%S)",
                        d = q(&data)
                    ),
                )
                .await?;
            }
        }
        Ok(())
    }

    async fn ceph(&mut self, r: &Retired, parts: &Parts, alive: bool) -> Result<(), Stop> {
        let n = r.host.name.as_str();
        let Some(mon) = self.f.other(n, |p| p.mon) else {
            return Err(refused("no other Ceph monitor answers".into()));
        };
        let out = self
            .read(
                &mon,
                &format!(
                    "echo '==PROVISION ids'; ceph osd ls-tree {h} 2>/dev/null\n\
                     echo '==PROVISION quorum'; ceph quorum_status -f json 2>/dev/null; echo\n\
                     echo '==PROVISION tree'; ceph osd tree -f json 2>/dev/null; echo\n\
                     echo '==PROVISION pools'; ceph osd pool ls detail -f json 2>/dev/null; echo",
                    h = q(n)
                ),
                "Ceph's maps",
            )
            .await?;
        let sec = crate::probe::sections(&out);
        let json = |k: &str| crate::probe::json(&sec, k);
        let ids: Vec<String> = sec
            .get("ids")
            .map(|s| s.split_whitespace().map(str::to_owned).collect())
            .unwrap_or_default();
        let units = if alive {
            self.read(
                n,
                &format!(
                    "for u in ceph-mds@{h} ceph-mgr@{h} ceph-mon@{h} {MOUNT_SERVICE} provision-ceph-osds.service \
                     $(for d in /var/lib/ceph/osd/ceph-*; do [ -f \"$d/whoami\" ] && echo ceph-osd@$(cat \"$d/whoami\"); done); do \
                     if systemctl is-active -q $u || systemctl is-enabled -q $u 2>/dev/null; then echo $u; fi; done; \
                     [ -d /var/lib/ceph/mon/ceph-{h} ] && echo mon-data; \
                     ls /etc/ceph/*.keyring >/dev/null 2>&1 && echo keyrings; true",
                    h = n
                ),
                "its Ceph daemons",
            )
            .await?
        } else {
            String::new()
        };
        let has = |u: &str| units.lines().any(|l| l.trim() == u);
        let mut changed = false;
        // The metadata server and the manager first: a standby takes over.
        for (kind, u) in [
            ("mds", format!("ceph-mds@{n}")),
            ("mgr", format!("ceph-mgr@{n}")),
        ] {
            if has(&u) {
                self.act(
                    n,
                    &format!("ceph: hand its {kind} over to a standby"),
                    &mon,
                    &format!("ceph {kind} fail {} >/dev/null 2>&1 || true", q(n)),
                )
                .await?;
                self.act(
                    n,
                    &format!("ceph: stop its {kind}"),
                    n,
                    &format!("systemctl disable --now {u} >/dev/null 2>&1"),
                )
                .await?;
                changed = true;
            }
        }
        let quorum = json("quorum");
        let mons: Vec<String> = quorum["monmap"]["mons"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m["name"].as_str().map(str::to_owned))
            .collect();
        if mons.iter().any(|m| m == n) {
            let after = mons.len() - 1;
            let up_after = quorum["quorum_names"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|q| *q != n)
                .count();
            if after == 0 || up_after < after / 2 + 1 {
                return Err(refused(format!(
                    "Ceph has {} monitors: without {n} {after} remain with {up_after} in quorum, and a quorum needs {}; refused",
                    mons.len(),
                    after / 2 + 1
                )));
            }
            self.act(
                n,
                "ceph: remove its monitor from the monmap",
                &mon,
                &format!("ceph mon remove {} >/dev/null", q(n)),
            )
            .await?;
            changed = true;
        }
        if has(&format!("ceph-mon@{n}")) || has("mon-data") {
            self.act(
                n,
                "ceph: stop its monitor, its data set aside",
                n,
                &format!(
                    "systemctl disable --now ceph-mon@{n} >/dev/null 2>&1 || true; d=/var/lib/ceph/mon/ceph-{n}; \
                     [ ! -d $d ] || mv $d $d.removed-$(date +%Y%m%d%H%M%S)"
                ),
            )
            .await?;
        }
        if !ids.is_empty() {
            self.osds(
                n,
                &mon,
                &ids,
                &json("tree"),
                &json("pools"),
                alive,
                &units,
                r.wipe && alive,
                r,
            )
            .await?;
            changed = true;
        }
        if parts.mount.is_some() && has(MOUNT_SERVICE) {
            self.act(
                n,
                "ceph: stop its CephFS mount",
                n,
                &format!(
                    "systemctl disable --now {MOUNT_SERVICE} >/dev/null 2>&1; rm -f {}; systemctl daemon-reload",
                    crate::cluster::ceph::DOCKER_DROPIN
                ),
            )
            .await?;
        }
        if alive && has("keyrings") {
            self.act(
                n,
                "ceph: remove its keyrings",
                n,
                "rm -f /etc/ceph/*.keyring",
            )
            .await?;
        }
        if changed && self.waits(n, "Ceph is healthy with every PG active+clean") {
            let t = Instant::now();
            self.f
                .ceph_healthy(n, &mon, &[])
                .await
                .map_err(|e| refused(format!("ceph health: {e}")))?;
            self.waited += t.elapsed();
        }
        Ok(())
    }

    /// Out, wait until the data has moved, stop, purge; the devices wiped on request.
    #[allow(clippy::too_many_arguments)]
    async fn osds(
        &mut self,
        n: &str,
        mon: &str,
        ids: &[String],
        tree: &Value,
        pools: &Value,
        alive: bool,
        units: &str,
        wipe: bool,
        r: &Retired,
    ) -> Result<(), Stop> {
        let names: Vec<String> = ids.iter().map(|i| format!("osd.{i}")).collect();
        let list = names.join(", ");
        self.record.insert("osds".into(), json!(names));
        osd_hosts_enough(tree, pools, n).map_err(|e| refused(format!("{e}; refused")))?;
        let idl = ids.join(" ");
        self.act(
            n,
            &format!("ceph: mark {list} out (its data moves to the other OSDs)"),
            mon,
            &format!("ceph osd out {idl} >/dev/null 2>&1"),
        )
        .await?;
        if self.waits(
            n,
            &format!("the data has moved off {list} (every PG active+clean, safe to destroy)"),
        ) {
            let t = Instant::now();
            self.data_moved(n, mon, &idl).await?;
            self.waited += t.elapsed();
        }
        if alive
            && units
                .lines()
                .any(|l| l.starts_with("ceph-osd@") || l.starts_with("provision-ceph-osds"))
        {
            let stop: Vec<String> = ids.iter().map(|i| format!("ceph-osd@{i}")).collect();
            self.act(
                n,
                &format!("ceph: stop {list}"),
                n,
                &format!(
                    "systemctl disable --now provision-ceph-osds.service {} >/dev/null 2>&1; true",
                    stop.join(" ")
                ),
            )
            .await?;
        }
        self.act(
            n,
            &format!("ceph: purge {list} and its host from the CRUSH map"),
            mon,
            &format!(
                "set -e; ceph osd down {idl} >/dev/null 2>&1 || true; \
                 for i in {idl}; do ceph osd purge $i --yes-i-really-mean-it >/dev/null 2>&1; done; \
                 ceph osd crush rm {h} >/dev/null 2>&1 || true",
                h = q(n)
            ),
        )
        .await?;
        if wipe {
            let devs: Vec<String> = self
                .f
                .p
                .worked
                .var(&r.host, "ceph", "ceph_osd_devices")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|d| d.as_str().or_else(|| d["path"].as_str()).map(str::to_owned))
                .collect();
            for d in devs {
                self.act(
                    n,
                    &format!("ceph: wipe {d} (provision_wipe)"),
                    n,
                    &format!(
                        "wipefs -a -q {d} && dd if=/dev/zero of={d} bs=1M count=16 conv=fsync status=none",
                        d = q(&d)
                    ),
                )
                .await?;
            }
        }
        Ok(())
    }

    /// Until Ceph says the OSDs may be destroyed and every PG is active+clean, on two
    /// reads 3 s apart.
    async fn data_moved(&self, n: &str, mon: &str, idl: &str) -> Result<(), Stop> {
        let t = Instant::now();
        let mut since: Option<Instant> = None;
        let mut told = Instant::now();
        loop {
            let out = self
                .f
                .ok(
                    mon,
                    &format!(
                        "echo '==PROVISION safe'; ceph osd safe-to-destroy {idl} >/dev/null 2>&1 && echo yes\n\
                         echo '==PROVISION pgs'; ceph pg stat -f json 2>/dev/null; echo"
                    ),
                )
                .await
                .map_err(|e| refused(format!("Ceph could not be read: {e}")))?;
            let sec = crate::probe::sections(&out);
            let pgs = crate::probe::json(&sec, "pgs");
            let unclean = super::checks::pgs_unclean(&pgs);
            let safe = sec.get("safe").is_some_and(|s| s.trim() == "yes");
            if safe && unclean.is_none() {
                let at = *since.get_or_insert_with(Instant::now);
                if at.elapsed() >= Duration::from_secs(3) {
                    say(
                        n,
                        &format!("its data has moved ({:.1} s)", t.elapsed().as_secs_f64()),
                    );
                    return Ok(());
                }
            } else {
                since = None;
            }
            let why = format!(
                "{}{}",
                unclean.unwrap_or_else(|| "every PG active+clean".into()),
                if safe {
                    ""
                } else {
                    ", its OSDs not yet safe to destroy"
                }
            );
            if t.elapsed() > self.o.wait {
                return Err(refused(format!(
                    "its data has not moved after {} s ({why}); its OSDs stay out, nothing purged",
                    self.o.wait.as_secs()
                )));
            }
            if told.elapsed() >= Duration::from_secs(10) {
                say(n, &format!("waiting for its data to move: {why}"));
                told = Instant::now();
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }

    /// Its certificates recorded as retired, then removed with their keys (and docker's
    /// TLS and CephFS drop-ins, docker restarted without them).
    async fn certificates(&mut self, r: &Retired) -> Result<(), Stop> {
        let n = r.host.name.as_str();
        let pki = self.f.p.worked.var_str(&r.host, "pki", "pki_dir");
        let pki = if pki.is_empty() {
            "/etc/provision/pki".to_string()
        } else {
            pki
        };
        let list = self
            .read(
                n,
                &format!(
                    "for c in {d}/*.crt; do [ -e \"$c\" ] || continue; b=$(basename \"$c\"); [ \"$b\" = ca.crt ] && continue; \
                     echo \"$b $(openssl x509 -noout -serial -in \"$c\" | cut -d= -f2) $(openssl x509 -noout -fingerprint -sha256 -in \"$c\" | cut -d= -f2)\"; done",
                    d = q(&pki)
                ),
                "its certificates",
            )
            .await?;
        let certs: Vec<Value> = list
            .lines()
            .filter_map(|l| {
                let mut w = l.split_whitespace();
                Some(json!({"file": w.next()?, "serial": w.next()?, "sha256": w.next()?}))
            })
            .collect();
        if certs.is_empty() {
            return Ok(());
        }
        self.record.insert("certificates".into(), json!(certs));
        self.act(
            n,
            &format!("pki: its {} certificate(s) recorded as retired, removed with their keys", certs.len()),
            n,
            &format!(
                "cd {d} && for c in *.crt; do [ \"$c\" = ca.crt ] || rm -f \"$c\" \"${{c%.crt}}.key\"; done; \
                 rm -f /etc/systemd/system/docker.service.d/50-provision-tls.conf; \
                 systemctl daemon-reload; ! systemctl is-active -q docker || systemctl restart docker",
                d = q(&pki)
            ),
        )
        .await?;
        Ok(())
    }
}
