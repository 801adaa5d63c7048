//! `provision maintain`: patch and reboot the cluster's hosts one at a time, without
//! downtime. For each node: checks that swarm, etcd and Ceph keep their quorum without it,
//! Ceph `noout` for its OSDs, a swarm drain until its tasks run elsewhere, the package
//! upgrades, a reboot when one is needed (or asked for), then a wait until docker, etcd,
//! its Ceph daemons and the CephFS mount are back, the undrain, `noout` off and the
//! cluster healthy. The first node that does not come back healthy stops the roll, left
//! drained; the next `maintain` resumes with it.

use super::checks::{self, Parts};
use super::{connect, parts_of, say, var, Fleet};
use crate::engine::Prepared;
use crate::transport::{quote as q, Conn};
use futures_util::future::join_all;
use indexmap::IndexMap;
use serde_json::Value;
use std::time::{Duration, Instant};

/// What the operator asked for.
pub struct Opts {
    /// The hosts to maintain (all when None).
    pub nodes: Vec<String>,
    /// Reboot every node, needed or not.
    pub reboot: bool,
    /// Every upgrade, not only those from a security archive.
    pub full: bool,
    /// Print the plan only.
    pub check: bool,
    /// Go on where a node's absence costs a quorum (a 1-manager swarm, 2 etcd members).
    pub allow_risk: bool,
    /// How long each wait may take (drain, boot, health).
    pub wait: Duration,
    /// How many workers (no quorum or standby role) go together.
    pub batch: usize,
}

/// What happened to one node.
#[derive(Default)]
pub struct Done {
    pub node: String,
    pub seconds: f64,
    pub upgraded: Vec<String>,
    pub rebooted: bool,
}

/// Why a roll stopped.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Why {
    /// A host did not answer: nothing was started.
    Unreachable,
    /// A node was refused (its absence costs a quorum) or did not come back healthy.
    Failed,
}

/// The end of a roll: the nodes done, the plan (`--check`), and what stopped it.
pub struct Outcome {
    pub done: Vec<Done>,
    pub stopped: Option<(Why, String)>,
    pub plan: Vec<String>,
}

/// A roll over live connections.
struct Roll<'a> {
    f: Fleet<'a>,
    o: &'a Opts,
}

/// Maintains `o.nodes` in order; `resume` are nodes an earlier roll finished, and
/// `progress` is told of each node finished.
pub async fn run(p: &Prepared, o: &Opts, resume: &[String], progress: &dyn Fn(&str)) -> Outcome {
    let mut out = Outcome {
        done: Vec::new(),
        stopped: None,
        plan: Vec::new(),
    };
    // Every host of the cluster answers, or nothing starts: a host that does not answer
    // is unknown, and maintenance would take one more away.
    let (conns, silent) = connect(
        p.hosts
            .iter()
            .map(|h| (h.clone(), p.targets[h].clone()))
            .collect(),
    )
    .await;
    if !silent.is_empty() {
        out.stopped = Some((
            Why::Unreachable,
            format!(
                "{} did not answer: a host that does not answer is unknown, and maintenance would take one more \
                 node away; bring it back first. Nothing was changed.",
                silent.join(", ")
            ),
        ));
        return out;
    }
    let parts: IndexMap<String, Parts> = p
        .hosts
        .iter()
        .map(|h| (h.clone(), parts_of(p, h)))
        .collect();
    let mut roll = Roll {
        f: Fleet {
            p,
            conns,
            parts,
            wait: o.wait,
        },
        o,
    };
    let drained = roll.drained().await;
    let nodes: Vec<(String, Parts)> = o
        .nodes
        .iter()
        .map(|n| (n.clone(), roll.f.parts[n].clone()))
        .collect();
    let order: Vec<String> = checks::order(&nodes, &drained)
        .into_iter()
        .filter(|n| !resume.contains(n) || drained.contains(n))
        .collect();
    if !resume.is_empty() {
        eprintln!("resuming: {} done in the roll before", resume.join(", "));
    }
    let batches = checks::batches(&order, |n| roll.f.parts[n].clone(), o.batch);
    for batch in &batches {
        if o.check {
            for n in batch {
                match roll.plan_line(n).await {
                    Ok(l) => out.plan.push(l),
                    Err(e) => {
                        out.stopped = Some((Why::Failed, format!("{n}: {e}")));
                        return out;
                    }
                }
            }
            continue;
        }
        if batch.len() > 1 {
            eprintln!("together: {}", batch.join(", "));
        }
        let t = Instant::now();
        match roll.batch(batch).await {
            Ok(dones) => {
                for mut d in dones {
                    d.seconds = t.elapsed().as_secs_f64();
                    say(&d.node, &format!("done in {:.1} s", d.seconds));
                    progress(&d.node);
                    out.done.push(d);
                }
            }
            Err((n, Stop { code, msg })) => {
                out.stopped = Some((code, format!("{n}: {msg}")));
                break;
            }
        }
    }
    roll.f.close().await;
    out
}

/// Why a node's maintenance stopped.
struct Stop {
    code: Why,
    msg: String,
}

fn refused(msg: String) -> Stop {
    Stop {
        code: Why::Failed,
        msg,
    }
}

/// How a refused drain's message starts (the batch is then made active again).
const STRANDED: &str = "stranded: ";

/// A node that did not come back healthy: left drained, for the next roll to resume.
fn fail(n: &str, what: &str, e: String) -> Stop {
    Stop {
        code: Why::Failed,
        msg: format!(
            "{what}: {e}; {n} stays drained (Ceph noout kept): fix it, then run `provision maintain` again to resume"
        ),
    }
}

/// One node of a batch while it is away, and where it is acted on from.
struct Away {
    n: String,
    parts: Parts,
    mon: Option<String>,
    manager: Option<String>,
}

/// The first node whose phase failed, with why.
fn first_err(away: &[Away], results: Vec<Result<(), Stop>>) -> Option<(String, Stop)> {
    away.iter()
        .zip(results)
        .find_map(|(a, r)| r.err().map(|e| (a.n.clone(), e)))
}

impl Roll<'_> {
    /// Nodes left drained (by an earlier roll that stopped).
    async fn drained(&self) -> Vec<String> {
        let Some(m) = self.f.other("", |p| p.manager) else {
            return Vec::new();
        };
        self.f
            .ok(
                &m,
                "docker node ls --format '{{.Hostname}} {{.Availability}}' 2>/dev/null",
            )
            .await
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_once(' '))
            .filter(|(_, a)| a.trim() == "Drain")
            .map(|(h, _)| h.to_owned())
            .collect()
    }

    /// Swarm, etcd and Ceph keep their quorum without `n`.
    /// The checks before a batch goes away: each node's quorums, then Ceph's word on all
    /// their daemons at once.
    async fn prechecks(&self, nodes: &[String]) -> Result<(), Stop> {
        for n in nodes {
            say(n, "checking that the cluster keeps its quorum without it");
            self.quorums(n).await?;
        }
        self.ceph_may_stop(nodes).await
    }

    /// The swarm's and etcd's quorums without `n`, and whether it is the only monitor.
    async fn quorums(&self, n: &str) -> Result<(), Stop> {
        let parts = self.f.parts[n].clone();
        let risky = |what: &str, e: String| {
            refused(format!(
                "{what} would lose its quorum while {n} is away ({e}); refused: \
                 add members first, or run with --allow-risk to accept it"
            ))
        };
        if parts.manager {
            let m = self.f.other("", |p| p.manager).unwrap_or_default();
            let ls = self
                .f
                .ok(
                    &m,
                    "docker node ls --format '{{.Hostname}} {{.ManagerStatus}}' | awk 'NF > 1'",
                )
                .await
                .map_err(|e| refused(format!("the swarm's managers could not be read: {e}")))?;
            let (count, up) = checks::managers(&ls);
            if let Err(e) = checks::keeps_quorum(count, up.len(), up.iter().any(|u| u == n)) {
                if !self.o.allow_risk {
                    return Err(risky("the swarm", e));
                }
                say(
                    n,
                    &format!("the swarm loses its quorum meanwhile ({e}): --allow-risk"),
                );
            }
        }
        if parts.etcd {
            let via = self.f.other("", |p| p.etcd).unwrap_or_default();
            let ctl = self.f.etcdctl(&via);
            let out = self
                .f.ok(
                    &via,
                    &format!(
                        "echo '==PROVISION health'; {ctl} endpoint health --cluster -w json 2>/dev/null\n\
                         echo '==PROVISION members'; {ctl} member list -w json 2>/dev/null; true"
                    ),
                )
                .await
                .map_err(|e| refused(format!("etcd's health could not be read: {e}")))?;
            let s = crate::probe::sections(&out);
            let list: Vec<Value> = s
                .get("health")
                .and_then(|h| serde_json::from_str(h.trim()).ok())
                .unwrap_or_default();
            let healthy = list.iter().filter(|e| e["health"] == true).count();
            // The node's own endpoint, by its member's name (its address may be another).
            let members_json: Value = s
                .get("members")
                .and_then(|m| serde_json::from_str(m.trim()).ok())
                .unwrap_or_default();
            let urls: Vec<String> = members_json["members"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|m| m["name"] == n)
                .flat_map(|m| m["clientURLs"].as_array().cloned().unwrap_or_default())
                .filter_map(|u| u.as_str().map(str::to_owned))
                .collect();
            // Not found: counted as healthy, so its absence is counted against the quorum.
            let node_ok = urls.is_empty()
                || list.iter().any(|e| {
                    e["health"] == true
                        && e["endpoint"]
                            .as_str()
                            .is_some_and(|u| urls.iter().any(|x| x == u))
                });
            let members = self.etcd_members().max(list.len());
            if let Err(e) = checks::keeps_quorum(members, healthy, node_ok) {
                if !self.o.allow_risk {
                    return Err(risky("etcd", e));
                }
                say(
                    n,
                    &format!("etcd loses its quorum meanwhile ({e}): --allow-risk"),
                );
            }
        }
        if parts.mon && self.f.other(n, |p| p.mon).is_none() {
            let e = format!("{n} is the only Ceph monitor: Ceph stops while it is away");
            if !self.o.allow_risk {
                return Err(refused(format!(
                    "{e}; refused: add monitors first, or run with --allow-risk to accept it"
                )));
            }
            say(n, &format!("{e}: --allow-risk"));
        }
        Ok(())
    }

    /// `ceph osd ok-to-stop` for the nodes' OSDs and `ceph mon ok-to-stop` for their
    /// monitors, asked of a monitor outside them (none: the only one, said before).
    async fn ceph_may_stop(&self, nodes: &[String]) -> Result<(), Stop> {
        let Some(mon) = self.f.outside(nodes, |p| p.mon) else {
            return Ok(());
        };
        let mut script = String::from("ids=''\n");
        for n in nodes {
            let parts = &self.f.parts[n];
            if parts.osds {
                script += &format!("ids=\"$ids $(ceph osd ls-tree {})\"\n", q(n));
            }
            if parts.mon {
                script += &format!("ceph mon ok-to-stop {} 2>&1 >/dev/null\n", q(n));
            }
        }
        script += "[ -z \"$(echo $ids)\" ] || ceph osd ok-to-stop $ids 2>&1 >/dev/null\n";
        // Ceph may say no while PGs still settle from the node before: asked again
        // for up to 2 minutes (within --wait), then refused with its reason.
        let t = Instant::now();
        let bound = self.o.wait.min(Duration::from_secs(120));
        loop {
            let o = self
                .f
                .sh(&mon, &format!("set -e\n{script}"))
                .await
                .map_err(|e| refused(format!("Ceph could not be asked: {e}")))?;
            if o.rc == 0 {
                return Ok(());
            }
            if t.elapsed() > bound {
                let why = crate::sys::tail(format!("{}{}", o.stdout, o.stderr).trim(), 2);
                return Err(refused(format!(
                    "Ceph says its daemons may not stop now ({why}); refused: wait until HEALTH_OK"
                )));
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }

    /// The etcd members the inventory names (an unreachable one is still counted).
    fn etcd_members(&self) -> usize {
        self.f.parts.values().filter(|p| p.etcd).count()
    }

    /// The packages `n` would get, and whether it reboots.
    async fn plan_line(&self, n: &str) -> Result<String, String> {
        let (ups, reboot) = self.upgrades(n, true).await?;
        let ups: Vec<String> = ups
            .iter()
            .map(|u| format!("{} {}", u.name, u.version))
            .collect();
        Ok(format!(
            "{n}: {}; reboot: {}",
            if ups.is_empty() {
                "no upgrades".to_string()
            } else {
                format!("would upgrade {}", ups.join(", "))
            },
            if reboot { "yes" } else { "no" }
        ))
    }

    /// The upgrades `n` gets (security ones unless --full) and whether a reboot follows,
    /// as apt simulates them (`refresh`: the package lists read again first).
    async fn upgrades(
        &self,
        n: &str,
        refresh: bool,
    ) -> Result<(Vec<checks::Upgrade>, bool), String> {
        let engine =
            var(self.f.p, n, "docker", "docker_package").unwrap_or_else(|| "docker.io".into());
        let out = self
            .f.ok(
                n,
                &format!(
                    "export DEBIAN_FRONTEND=noninteractive\n\
                     {}echo '==PROVISION sim'; apt-get -s -o Debug::NoLocking=1 dist-upgrade 2>/dev/null\n\
                     echo '==PROVISION reboot'; [ -e /var/run/reboot-required ] && echo yes; \
                     echo '==PROVISION kernel'; uname -r; \
                     echo '==PROVISION kernels'; ls /boot 2>/dev/null | sed -n 's/^vmlinuz-//p'; \
                     echo '==PROVISION engine'; dpkg-query -W -f '${{Version}}' {} 2>/dev/null; true",
                    if refresh {
                        "apt-get -q -o DPkg::Lock::Timeout=300 update >/dev/null 2>&1 || true\n"
                    } else {
                        ""
                    },
                    q(&engine)
                ),
            )
            .await?;
        let s = crate::probe::sections(&out);
        let get = |k: &str| s.get(k).cloned().unwrap_or_default();
        let mut ups: Vec<checks::Upgrade> = checks::upgrades(&get("sim"))
            .into_iter()
            .filter(|u| self.o.full || u.security)
            .collect();
        // The engine the inventory pins, on swarm nodes, in place of apt's choice for it.
        let pinned = var(self.f.p, n, "docker", "docker_version").unwrap_or_default();
        if let (true, Some(e)) = (
            self.f.parts[n].swarm,
            checks::pinned_engine(&engine, &pinned, &get("engine")),
        ) {
            ups.retain(|u| u.name != e.name);
            ups.push(e);
        }
        let kernels = get("kernels");
        let kernels: Vec<&str> = kernels.lines().collect();
        let kernel_pkg = ups.iter().any(|u| u.name.starts_with("linux-image"));
        let reboot = self.o.reboot
            || kernel_pkg
            || checks::needs_reboot(get("reboot").trim() == "yes", &get("kernel"), &kernels);
        Ok((ups, reboot))
    }

    /// One batch (one node, or workers together), phase by phase: each phase for all of
    /// them at once, the next when it held for all.
    async fn batch(&mut self, nodes: &[String]) -> Result<Vec<Done>, (String, Stop)> {
        let all = nodes.join(", ");
        self.prechecks(nodes).await.map_err(|e| (all.clone(), e))?;
        let away: Vec<Away> = nodes.iter().map(|n| self.away(n, nodes)).collect();
        // One drain after the other: a service never loses two tasks at once. The long
        // phases (upgrades, reboots, coming back) then run for all of them together.
        let (mut drained, mut moved) = (Vec::new(), Vec::new());
        for a in &away {
            let r = self.leave(a).await;
            let failed = r.is_err();
            match r {
                Ok(m) => {
                    moved.push(m);
                    drained.push(Ok(()));
                }
                Err(e) => drained.push(Err(e)),
            }
            if failed {
                break;
            }
        }
        if let Some((n, mut stop)) = first_err(&away, drained) {
            if let Some(msg) = stop.msg.strip_prefix(STRANDED) {
                stop.msg = msg.to_owned();
                for a in &away {
                    self.restore(a).await;
                }
            }
            return Err((n, stop));
        }
        let patched = join_all(away.iter().map(|a| self.patch(a))).await;
        let mut dones = Vec::new();
        for (a, r) in away.iter().zip(patched) {
            let (upgraded, reboot) = r.map_err(|e| (a.n.clone(), e))?;
            dones.push((
                Done {
                    node: a.n.clone(),
                    upgraded,
                    ..Done::default()
                },
                reboot,
            ));
        }
        let rebooting: Vec<&Away> = away
            .iter()
            .zip(&dones)
            .filter(|(_, (_, r))| *r)
            .map(|(a, _)| a)
            .collect();
        let back = join_all(rebooting.iter().map(|a| self.reboot(&a.n))).await;
        for (a, r) in rebooting.iter().zip(back) {
            let c = r.map_err(|e| (a.n.clone(), fail(&a.n, "reboot", e)))?;
            if let Some(old) = self.f.conns.insert(a.n.clone(), c) {
                old.close().await;
            }
        }
        for (d, r) in dones.iter_mut() {
            d.rebooted = *r;
        }
        let returned = join_all(away.iter().map(|a| self.ret(a))).await;
        if let Some(stop) = first_err(&away, returned) {
            return Err(stop);
        }
        if let Some(mon) = away.iter().find_map(|a| a.mon.clone()) {
            self.f
                .ceph_healthy(&all, &mon, &[])
                .await
                .map_err(|e| (all.clone(), fail(&all, "ceph health", e)))?;
        }
        for (a, m) in away.iter().zip(&moved) {
            self.rebalance(a, m).await;
        }
        Ok(dones.into_iter().map(|(d, _)| d).collect())
    }

    /// Where `n` of a batch is acted on from: a monitor and a manager outside the batch
    /// (or the node itself when it is the only one: --allow-risk).
    fn away(&self, n: &str, batch: &[String]) -> Away {
        let parts = self.f.parts[n].clone();
        Away {
            n: n.to_owned(),
            mon: self
                .f
                .outside(batch, |p| p.mon)
                .or_else(|| parts.mon.then(|| n.to_owned())),
            manager: self
                .f
                .outside(batch, |p| p.manager)
                .or_else(|| parts.manager.then(|| n.to_owned())),
            parts,
        }
    }

    /// Ceph's noout for its OSDs, then the drain; the replicated services that had a task
    /// on it.
    async fn leave(&self, a: &Away) -> Result<Vec<String>, Stop> {
        let n = &a.n;
        let mut moved = Vec::new();
        if let (true, Some(mon)) = (a.parts.osds, &a.mon) {
            say(n, "ceph: noout for its OSDs");
            self.f.ok(
                mon,
                &format!("ids=$(ceph osd ls-tree {h}); [ -z \"$ids\" ] || ceph osd add-noout $ids >/dev/null 2>&1", h = q(n)),
            )
            .await
            .map_err(|e| fail(n, "ceph noout", e))?;
        }
        if let (true, Some(m)) = (a.parts.swarm, &a.manager) {
            moved = self
                .f
                .ok(
                    m,
                    &format!(
                        "r=$(docker service ls --filter mode=replicated --format '{{{{.Name}}}}'); \
                         docker node ps {} --filter desired-state=running --format '{{{{.Name}}}}' | sed 's/\\.[^.]*$//' | sort -u | \
                         while read s; do echo \"$r\" | grep -qx \"$s\" && echo \"$s\"; done; true",
                        q(n)
                    ),
                )
                .await
                .map(|o| o.lines().map(str::to_owned).collect())
                .unwrap_or_default();
            match self.f.drain(n, n, m, self.o.allow_risk).await {
                Ok(()) => {}
                Err(super::Drain::Stranded(e)) => {
                    return Err(refused(format!(
                        "{STRANDED}{e}; refused, made active again: let the service run elsewhere \
                         (constraints, replicas), or run with --allow-risk to accept it"
                    )))
                }
                Err(e) => return Err(fail(n, "drain", e.to_string())),
            }
        }
        Ok(moved)
    }

    /// The services that lost a task to `a`'s drain and now run two or more on one node
    /// while none on it: spread again, one service at a time (`docker service update
    /// --force`, a rolling restart of its tasks, waited for).
    async fn rebalance(&self, a: &Away, services: &[String]) {
        let Some(m) = &a.manager else { return };
        for svc in services {
            let nodes = match self
                .f
                .ok(
                    m,
                    &format!(
                        "docker service ps {} --filter desired-state=running --format '{{{{.Node}}}}'",
                        q(svc)
                    ),
                )
                .await
            {
                Ok(o) => o,
                Err(_) => continue,
            };
            if !checks::crowded_without(&nodes, &a.n) {
                continue;
            }
            say(&a.n, &format!("rebalance: {svc} runs none here and two or more on one node: docker service update --force"));
            let t = Instant::now();
            match self
                .f
                .ok(
                    m,
                    &format!(
                        "timeout {} docker service update --force --detach=false --quiet {} >/dev/null",
                        self.o.wait.as_secs(),
                        q(svc)
                    ),
                )
                .await
            {
                Ok(_) => say(&a.n, &format!("rebalanced {svc} in {:.1} s", t.elapsed().as_secs_f64())),
                Err(e) => say(&a.n, &format!("warning: {svc} could not be rebalanced: {e}")),
            }
        }
    }

    /// Its upgrades installed; whether it reboots.
    async fn patch(&self, a: &Away) -> Result<(Vec<String>, bool), Stop> {
        let n = &a.n;
        let (ups, reboot) = self
            .upgrades(n, true)
            .await
            .map_err(|e| fail(n, "apt", e))?;
        if ups.is_empty() {
            return Ok((Vec::new(), reboot));
        }
        let names: Vec<String> = ups.iter().map(|u| u.name.clone()).collect();
        say(n, &format!("upgrading {}", names.join(", ")));
        // Each at the version apt simulated (the pinned engine at its pin).
        let specs: Vec<String> = ups
            .iter()
            .map(|u| q(&format!("{}={}", u.name, u.version)))
            .collect();
        self.f
            .ok(
                n,
                &format!(
                "export DEBIAN_FRONTEND=noninteractive; apt-get -y -q -o DPkg::Lock::Timeout=300 \
                 -o Dpkg::Options::=--force-confold --allow-downgrades install {} >/dev/null",
                specs.join(" ")
            ),
            )
            .await
            .map_err(|e| fail(n, "apt upgrade", e))?;
        // Debian's engine packages do not restart their daemons on upgrade: the old dockerd
        // would run on until a reboot. Restarted here, drained; `back` waits for it.
        let engine =
            var(self.f.p, n, "docker", "docker_package").unwrap_or_else(|| "docker.io".into());
        let restart = checks::engine_restarts(&names, &engine);
        if !reboot && !restart.is_empty() {
            say(
                n,
                &format!("restart {} (the engine was upgraded)", restart.join(", ")),
            );
            self.f
                .ok(
                    n,
                    &format!(
                        "timeout {} systemctl restart {}",
                        self.o.wait.as_secs(),
                        restart.join(" ")
                    ),
                )
                .await
                .map_err(|e| fail(n, "engine restart", e))?;
        }
        Ok((
            ups.iter()
                .map(|u| format!("{} {}", u.name, u.version))
                .collect(),
            reboot,
        ))
    }

    /// Back: its services, the undrain, Ceph's noout lifted.
    async fn ret(&self, a: &Away) -> Result<(), Stop> {
        let n = &a.n;
        self.back(n, &a.parts, a.mon.as_deref())
            .await
            .map_err(|e| fail(n, "coming back", e))?;
        if let (true, Some(m)) = (a.parts.swarm, &a.manager) {
            say(n, "undrain");
            self.f
                .ok(
                    m,
                    &format!(
                        "docker node update --availability active {} >/dev/null",
                        q(n)
                    ),
                )
                .await
                .map_err(|e| fail(n, "undrain", e))?;
        }
        if let (true, Some(mon)) = (a.parts.osds, &a.mon) {
            self.f.ok(
                mon,
                &format!("ids=$(ceph osd ls-tree {h}); [ -z \"$ids\" ] || ceph osd rm-noout $ids >/dev/null 2>&1", h = q(n)),
            )
            .await
            .map_err(|e| fail(n, "ceph rm-noout", e))?;
        }
        Ok(())
    }

    /// Undoes a drain and Ceph's noout, as far as it went (a refusal after them).
    async fn restore(&self, a: &Away) {
        if let (true, Some(m)) = (a.parts.swarm, &a.manager) {
            let _ = self
                .f
                .ok(
                    m,
                    &format!(
                        "docker node update --availability active {} >/dev/null",
                        q(&a.n)
                    ),
                )
                .await;
        }
        if let (true, Some(mon)) = (a.parts.osds, &a.mon) {
            let _ = self
                .f
                .ok(
                    mon,
                    &format!("ids=$(ceph osd ls-tree {h}); [ -z \"$ids\" ] || ceph osd rm-noout $ids >/dev/null 2>&1", h = q(&a.n)),
                )
                .await;
        }
    }

    /// Reboots `n`; its new connection once it answers SSH again, booted anew.
    async fn reboot(&self, n: &str) -> Result<Conn, String> {
        let id = "cat /proc/sys/kernel/random/boot_id; cut -d' ' -f22 /proc/1/stat";
        let before = self.f.ok(n, id).await?;
        say(n, "reboot");
        self.f.ok(
            n,
            "systemd-run --quiet --on-active=1 --timer-property=AccuracySec=100ms /bin/systemctl reboot",
        )
        .await?;
        let t = Instant::now();
        loop {
            tokio::time::sleep(Duration::from_secs(2)).await;
            if t.elapsed() > self.o.wait {
                return Err(format!(
                    "it did not come back within {} s of the reboot",
                    self.o.wait.as_secs()
                ));
            }
            let Ok(c) = Conn::connect(self.f.p.targets[n].clone()).await else {
                continue;
            };
            let now = c
                .run(
                    &format!("{id}; test ! -e /run/nologin && echo booted"),
                    None,
                    Some("root"),
                )
                .await;
            match now {
                Ok(o)
                    if o.rc == 0
                        && o.stdout.contains("booted")
                        && o.stdout.replace("booted", "").trim() != before.trim() =>
                {
                    say(n, &format!("back after {:.1} s", t.elapsed().as_secs_f64()));
                    return Ok(c);
                }
                _ => c.close().await,
            }
        }
    }

    /// Waits until `n`'s services are back: docker in the swarm, its etcd member healthy,
    /// its Ceph daemons up, the CephFS mount.
    async fn back(&self, n: &str, parts: &Parts, mon: Option<&str>) -> Result<(), String> {
        say(n, "waiting for its services");
        let mut local = String::from("r=0\n");
        if parts.swarm {
            local += "[ \"$(docker info --format '{{.Swarm.LocalNodeState}}' 2>/dev/null)\" = active ] || { echo 'docker is not back in the swarm'; r=1; }\n";
        }
        if parts.etcd {
            local += &format!(
                "{} endpoint health >/dev/null 2>&1 || {{ echo 'its etcd member is not healthy'; r=1; }}\n",
                self.f.etcdctl(n)
            );
        }
        if let Some(m) = &parts.mount {
            local += &format!(
                "mountpoint -q {} || {{ echo 'CephFS is not mounted'; r=1; }}\n",
                q(m)
            );
        }
        local += "exit $r\n";
        let t = Instant::now();
        loop {
            let mut why = Vec::new();
            match self.f.sh(n, &local).await {
                Ok(o) if o.rc == 0 => {}
                Ok(o) => why.push(o.stdout.trim().replace('\n', "; ")),
                Err(e) => why.push(e),
            }
            if let (true, Some(mon)) = (parts.osds || parts.mon, mon) {
                let script = format!(
                    "ids=$(ceph osd ls-tree {h}); down=''; for i in $ids; do ceph osd dump -f json | python3 -c \"import json,sys; d=json.load(sys.stdin); sys.exit(0 if any(o['osd']==$i and o['up'] for o in d['osds']) else 1)\" || down=\"$down osd.$i\"; done; \
                     [ -z \"$down\" ] || echo \"down:$down\"\n{}",
                    if parts.mon {
                        format!("ceph quorum_status -f json | grep -q '\"quorum_names\":\\[[^]]*\"{}\"' || echo 'its monitor is not in quorum'\n", n)
                    } else {
                        String::new()
                    },
                    h = q(n)
                );
                match self.f.ok(mon, &script).await {
                    Ok(o) if o.trim().is_empty() => {}
                    Ok(o) => why.push(o.trim().replace('\n', "; ")),
                    Err(e) => why.push(e),
                }
            }
            if why.is_empty() {
                say(
                    n,
                    &format!("its services are back ({:.1} s)", t.elapsed().as_secs_f64()),
                );
                return Ok(());
            }
            if t.elapsed() > self.o.wait {
                return Err(format!(
                    "after {} s: {}",
                    self.o.wait.as_secs(),
                    why.join("; ")
                ));
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }
}
