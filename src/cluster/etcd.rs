//! `etcd_cluster`: an etcd cluster over mutual TLS, kept matching the inventory.
//! Initial members start together (the unit waits for quorum); later members are added
//! one at a time as learners on a healthy member (a snapshot first), started with
//! `existing`, then promoted; a member whose data is gone is removed and added again.
//! A member changes (and restarts) only when its real configuration changes, one at a
//! time, each followed by a health check.

use super::{arg, put_inline, sections, Action, Ctx, Member, Seen, Step};
use crate::transport::quote;
use indexmap::IndexMap;
use serde::Deserialize;
use serde_json::{json, Value};

pub fn new() -> Box<dyn Step> {
    Box::<Etcd>::default()
}

#[derive(Clone, Debug)]
struct Want {
    name: String,
    addr: String,
    cert: String,
    key: String,
    ca: String,
    data_dir: String,
    config: String,
    token: String,
}

impl Want {
    fn peer_url(&self) -> String {
        format!("https://{}:2380", self.addr)
    }
    fn client_url(&self) -> String {
        format!("https://{}:2379", self.addr)
    }
    fn etcdctl(&self) -> String {
        etcdctl(&self.ca, &self.cert, &self.key)
    }
    /// The settings that matter to a running member (a change restarts it).
    fn significant(&self, cert_sha: &str) -> String {
        let u = self.client_url();
        format!(
            "# Managed by provision (etcd_cluster); certificate and CA sha256 {cert_sha}\n\
             ETCD_NAME={}\nETCD_DATA_DIR={}\n\
             ETCD_LISTEN_PEER_URLS={}\nETCD_LISTEN_CLIENT_URLS={u},https://127.0.0.1:2379\n\
             ETCD_ADVERTISE_CLIENT_URLS={u}\nETCD_INITIAL_ADVERTISE_PEER_URLS={}\n\
             ETCD_CERT_FILE={c}\nETCD_KEY_FILE={k}\nETCD_TRUSTED_CA_FILE={ca}\nETCD_CLIENT_CERT_AUTH=true\n\
             ETCD_PEER_CERT_FILE={c}\nETCD_PEER_KEY_FILE={k}\nETCD_PEER_TRUSTED_CA_FILE={ca}\nETCD_PEER_CLIENT_CERT_AUTH=true\n",
            self.name,
            self.data_dir,
            self.peer_url(),
            self.peer_url(),
            c = self.cert,
            k = self.key,
            ca = self.ca
        )
    }
    fn config(&self, cert_sha: &str, initial: &str, state: &str) -> String {
        format!(
            "{}# Read only at a member's first start:\nETCD_INITIAL_CLUSTER={initial}\nETCD_INITIAL_CLUSTER_STATE={state}\nETCD_INITIAL_CLUSTER_TOKEN={}\n",
            self.significant(cert_sha),
            self.token
        )
    }
}

/// etcdctl against the local member, over TLS with the member's own certificate.
pub fn etcdctl(ca: &str, cert: &str, key: &str) -> String {
    format!(
        "ETCDCTL_API=3 etcdctl --endpoints=https://127.0.0.1:2379 --cacert={} --cert={} --key={} --command-timeout=10s",
        quote(ca),
        quote(cert),
        quote(key)
    )
}

#[derive(Deserialize, Debug, Clone, Default)]
#[serde(rename_all = "camelCase", default)]
pub struct EtcdMember {
    #[serde(rename = "ID")]
    pub id: u64,
    pub name: String,
    #[serde(rename = "peerURLs")]
    pub peer_urls: Vec<String>,
    #[serde(rename = "clientURLs")]
    pub client_urls: Vec<String>,
    pub is_learner: bool,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct MemberList {
    members: Vec<EtcdMember>,
}

/// What one host reported.
#[derive(Default, Debug, Clone)]
pub struct Obs {
    pub active: bool,
    pub healthy: bool,
    pub has_data: bool,
    pub config: String,
    pub cert_sha: String,
    pub members: Option<Vec<EtcdMember>>,
    /// Only from the audit's probe.
    pub backup: Option<BackupStatus>,
}

/// The read-only probe of an etcd host for the audit, from its variables (over the role's
/// defaults).
pub fn audit_script(vars: &serde_json::Map<String, serde_json::Value>) -> String {
    let v = |k: &str| {
        vars.get(k)
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let pki = v("pki_dir");
    let (crt, key, ca) = (
        format!("{pki}/etcd.crt"),
        format!("{pki}/etcd.key"),
        format!("{pki}/ca.crt"),
    );
    probe_script(
        &etcdctl(&ca, &crt, &key),
        &v("etcd_data_dir"),
        "/etc/default/etcd",
        &crt,
        &ca,
    ) + BACKUP_PROBE
}

/// The scheduled snapshots' last outcome (written by the role's script) and the host's clock.
const BACKUP_PROBE: &str = "echo '==PROVISION now'; date +%s\n\
    echo '==PROVISION backup'; cat /var/lib/provision/etcd-backup.status 2>/dev/null; true\n";

/// What the last scheduled snapshot left in its status file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BackupStatus {
    /// The host's clock when probed.
    pub now: u64,
    pub last_run: Option<u64>,
    pub last_ok: Option<u64>,
    pub failed: bool,
    pub reason: String,
}

fn backup_status(now: &str, text: &str) -> Option<BackupStatus> {
    let now = now.trim().parse().ok()?;
    let get = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(k)?.strip_prefix('='))
            .map(str::trim)
            .unwrap_or_default()
    };
    Some(BackupStatus {
        now,
        last_run: get("last_run").parse().ok(),
        last_ok: get("last_ok").parse().ok(),
        failed: get("last_result") == "failed",
        reason: get("reason").to_owned(),
    })
}

/// `cert`: the sha256 of the member's certificate and its CA file together (either
/// changing restarts the member: etcd reads its trusted CAs only when it starts).
pub fn probe_script(w_ctl: &str, data_dir: &str, config: &str, cert: &str, ca: &str) -> String {
    format!(
        "echo '==PROVISION active'; systemctl is-active etcd 2>/dev/null\n\
         echo '==PROVISION data'; [ -d {d}/member ] && echo yes || echo no\n\
         echo '==PROVISION config'; cat {cf} 2>/dev/null\n\
         echo '==PROVISION cert'; [ -r {c} ] && cat {c} {ca} 2>/dev/null | sha256sum | cut -d' ' -f1\n\
         if systemctl is-active --quiet etcd; then\n\
           echo '==PROVISION health'; {ctl} endpoint health >/dev/null 2>&1 && echo healthy\n\
           echo '==PROVISION members'; {ctl} member list -w json 2>/dev/null\n\
         fi; true\n",
        d = quote(data_dir),
        cf = quote(config),
        c = quote(cert),
        ca = quote(ca),
        ctl = w_ctl
    )
}

pub fn parse(out: &str) -> Obs {
    let s = sections(out);
    let get = |k: &str| s.get(k).map(|v| v.trim().to_owned()).unwrap_or_default();
    Obs {
        active: get("active") == "active",
        healthy: get("health") == "healthy",
        has_data: get("data") == "yes",
        config: s.get("config").cloned().unwrap_or_default(),
        cert_sha: get("cert"),
        members: s
            .get("members")
            .and_then(|t| serde_json::from_str::<MemberList>(t.trim()).ok())
            .map(|l| l.members),
        backup: backup_status(&get("now"), s.get("backup").map_or("", |t| t.as_str())),
    }
}

/// The lines of a config file a running member depends on (INITIAL_* only count at first start).
fn significant_of(config: &str) -> String {
    config
        .lines()
        .take_while(|l| !l.starts_with("# Read only at a member's first start"))
        .map(|l| format!("{l}\n"))
        .collect()
}

#[derive(Default)]
struct Etcd {
    want: IndexMap<String, Want>,
    waits: u32,
    waiting: bool,
    notes: Vec<String>,
    published: Value,
}

fn start_script(w: &Want, config: &str, wipe: bool) -> String {
    let mut s = String::from("set -e\n");
    if wipe {
        s += &format!(
            "systemctl stop etcd 2>/dev/null || true; rm -rf {}\n",
            quote(&w.data_dir)
        );
    }
    s += &put_inline(&w.config, config, "644", "root", "root");
    s += "systemctl unmask etcd >/dev/null 2>&1 || true; systemctl enable etcd >/dev/null 2>&1; systemctl restart etcd\n";
    s
}

impl Step for Etcd {
    fn prepare(&mut self, members: &[Member], cx: &Ctx) -> Result<(), String> {
        let token = format!(
            "provision-{}",
            cx.inventory
                .path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default()
        );
        for m in members {
            let req = |k: &str| -> Result<String, String> {
                arg(m, k)?
                    .filter(|v| !v.is_empty())
                    .ok_or_else(|| format!("host `{}`: etcd_cluster needs `{k}`", m.name))
            };
            let addr = req("address")?;
            if addr.parse::<std::net::IpAddr>().is_err() {
                return Err(format!(
                    "host `{}`: etcd address `{addr}` is not an IP address: set private_address",
                    m.name
                ));
            }
            self.want.insert(
                m.name.clone(),
                Want {
                    name: m.name.clone(),
                    addr,
                    cert: req("cert")?,
                    key: req("key")?,
                    ca: req("ca")?,
                    data_dir: req("data_dir")?,
                    config: arg(m, "config")?.unwrap_or_else(|| "/etc/default/etcd".into()),
                    token: token.clone(),
                },
            );
        }
        // The inventory's count: an unreachable member is still one of them.
        let n = cx
            .inventory
            .groups
            .get("etcd")
            .map_or(0, |g| g.len())
            .max(self.want.len());
        if n.is_multiple_of(2) && n > 0 {
            let even_ok = members
                .first()
                .map(|m| crate::args::Args(&m.args).bool("allow_even_members", false))
                .transpose()
                .map_err(|e| format!("etcd_cluster: {e}"))?
                .unwrap_or(false);
            if !even_ok {
                return Err(format!(
                    "{n} etcd members: an even number adds no fault tolerance; use an odd number or set etcd_allow_even_members: true"
                ));
            }
        }
        Ok(())
    }

    fn reads_outside_limit(&self) -> bool {
        true
    }

    fn counts_down_hosts(&self) -> bool {
        true
    }

    fn probes(&self, members: &[Member]) -> Vec<(String, String)> {
        members
            .iter()
            .filter_map(|m| self.want.get(&m.name).map(|w| (m, w)))
            .map(|(m, w)| {
                let mut s = String::new();
                if self.waiting {
                    s += "sleep 2\n";
                }
                s += &probe_script(&w.etcdctl(), &w.data_dir, &w.config, &w.cert, &w.ca);
                (m.name.clone(), s)
            })
            .collect()
    }

    fn plan(&mut self, members: &[Member], seen: &Seen, _cx: &Ctx) -> Result<Vec<Action>, String> {
        self.notes.clear();
        self.waiting = false;
        let writable = |h: &str| members.iter().any(|m| m.name == h && m.writable);
        let obs: IndexMap<String, Obs> = seen
            .iter()
            .filter_map(|(h, r)| r.as_ref().ok().map(|o| (h.clone(), parse(&o.stdout))))
            .collect();
        for (h, r) in seen {
            if let Err(e) = r {
                self.notes.push(format!("{h} could not be read: {e}"));
            }
        }
        let source = obs.iter().find(|(_, o)| o.healthy && o.members.is_some());
        let Some((src, src_obs)) = source else {
            return self.plan_bootstrap(&obs, &writable);
        };
        let src = src.clone();
        let list = src_obs.members.clone().unwrap_or_default();
        let healthy_all = list.iter().all(|m| {
            !m.name.is_empty()
                && self
                    .want
                    .get(&m.name)
                    .is_none_or(|_| obs.get(&m.name).is_some_and(|o| o.healthy))
        });
        let v = Cluster {
            src: &src,
            ctl: self.want[&src].etcdctl(),
            list: &list,
            obs: &obs,
            healthy_all,
        };
        // One membership change at a time, in inventory order.
        let want = self.want.clone();
        for (h, w) in &want {
            let Some(o) = obs.get(h) else { continue };
            let found = list
                .iter()
                .find(|m| m.name == w.name || m.peer_urls.contains(&w.peer_url()));
            let step = match found {
                None if writable(h) => self.plan_add(h, w, &v),
                // Added, never started: start it with the cluster as it is (a stale data dir goes).
                Some(m) if m.name.is_empty() && writable(h) => {
                    let cfg = w.config(&o.cert_sha, &v.initial(Some(w)), "existing");
                    Ok(Some(one(
                        h,
                        None,
                        format!("start etcd on {h} joining the existing cluster"),
                        start_script(w, &cfg, true),
                    )))
                }
                // Known to the cluster, but its data is gone (wiped, or a new host with its name).
                Some(m) if !m.name.is_empty() && !o.has_data && !o.active && writable(h) => {
                    plan_stale(h, m, &v).map(Some)
                }
                Some(m) if !m.name.is_empty() && (o.has_data || o.active) => {
                    self.plan_started(h, w, o, m, &v, writable(h))
                }
                _ => Ok(None),
            };
            if let Some(actions) = step? {
                return Ok(actions);
            }
        }
        for m in &list {
            if !m.name.is_empty() && !self.want.contains_key(&m.name) {
                self.notes.push(format!(
                    "etcd member {} ({:x}) is not in the inventory: left alone",
                    m.name, m.id
                ));
            }
        }
        let endpoints: Vec<String> = self.want.values().map(|w| w.client_url()).collect();
        let w0 = &self.want[&src];
        self.published = json!({"endpoints": endpoints, "ca": w0.ca, "members": list.len()});
        Ok(Vec::new())
    }

    fn wants_reprobe(&self) -> bool {
        self.waiting
    }

    fn notes(&self) -> Vec<String> {
        self.notes.clone()
    }

    fn publish(&self) -> Value {
        self.published.clone()
    }
}

/// The cluster as its healthy member `src` sees it.
struct Cluster<'a> {
    src: &'a str,
    ctl: String,
    list: &'a [EtcdMember],
    obs: &'a IndexMap<String, Obs>,
    healthy_all: bool,
}

impl Cluster<'_> {
    /// `ETCD_INITIAL_CLUSTER` for a member joining it (with `extra`, not yet listed).
    fn initial(&self, extra: Option<&Want>) -> String {
        let mut v: Vec<String> = self
            .list
            .iter()
            .filter(|m| !m.name.is_empty())
            .filter_map(|m| m.peer_urls.first().map(|u| format!("{}={u}", m.name)))
            .collect();
        if let Some(w) = extra {
            let e = format!("{}={}", w.name, w.peer_url());
            if !v.contains(&e) {
                v.push(e);
            }
        }
        v.join(",")
    }
}

/// One serial action.
fn one(h: &str, run_on: Option<&str>, msg: String, script: String) -> Vec<Action> {
    vec![Action {
        host: h.to_owned(),
        run_on: run_on.map(str::to_owned),
        msg,
        script,
        stdin: None,
        serial: true,
    }]
}

/// A member whose data is gone is removed (to be added again) only when quorum allows.
fn plan_stale(h: &str, m: &EtcdMember, v: &Cluster) -> Result<Vec<Action>, String> {
    let others_ok = v
        .list
        .iter()
        .filter(|x| x.id != m.id)
        .all(|x| v.obs.get(&x.name).is_some_and(|o| o.healthy));
    let voters = v.list.iter().filter(|x| !x.is_learner).count();
    if !others_ok || voters < 3 && !m.is_learner {
        return Err(format!(
            "{h} lost its etcd data, but removing its old member now would cost quorum ({voters} voting members, the others not all healthy): restore quorum first"
        ));
    }
    Ok(one(
        h,
        Some(v.src),
        format!(
            "remove {h}'s stale etcd member {:x} (its data is gone) to add it again",
            m.id
        ),
        format!("{} member remove {:x} >/dev/null", v.ctl, m.id),
    ))
}

impl Etcd {
    fn wait_or(&mut self, what: &str, h: &str) -> Result<Vec<Action>, String> {
        self.waits += 1;
        if self.waits > 8 {
            return Err(format!("{what} {h} waits for cluster health, which did not come: check `etcdctl endpoint health --cluster`"));
        }
        self.waiting = true;
        Ok(Vec::new())
    }

    /// A host that is no member yet: added as a learner (a snapshot first), once every
    /// member is healthy.
    fn plan_add(&mut self, h: &str, w: &Want, v: &Cluster) -> Result<Option<Vec<Action>>, String> {
        if !v.healthy_all {
            return self.wait_or("a member is not healthy; adding", h).map(Some);
        }
        let add = format!(
            "set -e; {ctl} snapshot save /var/lib/etcd/snapshot-before-{n}.db >/dev/null; \
             {ctl} member add {n} --peer-urls={p} --learner >/dev/null",
            ctl = v.ctl,
            n = quote(&w.name),
            p = quote(&w.peer_url())
        );
        Ok(Some(one(
            h,
            Some(v.src),
            format!(
                "add {h} to etcd as a learner via {} (snapshot first)",
                v.src
            ),
            add,
        )))
    }

    /// A started (or stopped, data kept) member: started, promoted from learner, or
    /// restarted when its real settings changed, one member at a time.
    fn plan_started(
        &mut self,
        h: &str,
        w: &Want,
        o: &Obs,
        m: &EtcdMember,
        v: &Cluster,
        writable: bool,
    ) -> Result<Option<Vec<Action>>, String> {
        if !o.active {
            if !writable {
                self.notes
                    .push(format!("{h} (outside --limit): etcd is not running there"));
                return Ok(None);
            }
            let cfg = w.config(&o.cert_sha, &v.initial(None), "existing");
            return Ok(Some(one(
                h,
                None,
                format!("start etcd on {h} (its data is kept)"),
                start_script(w, &cfg, false),
            )));
        }
        // A learner answers no health check of its own: promotion is its gate.
        if m.is_learner {
            if !writable {
                return Ok(None);
            }
            return Ok(Some(one(
                h,
                Some(v.src),
                format!("promote {h} to a voting etcd member"),
                format!(
                    "for i in $(seq 1 30); do {} member promote {:x} >/dev/null 2>&1 && exit 0; sleep 1; done; echo 'the learner did not catch up with the leader in 30 s' >&2; exit 1",
                    v.ctl, m.id
                ),
            )));
        }
        if !o.healthy {
            return self
                .wait_or("a member is not healthy yet; the next change", h)
                .map(Some);
        }
        if !writable || significant_of(&o.config) == w.significant(&o.cert_sha) {
            return Ok(None);
        }
        if !v.healthy_all {
            return self
                .wait_or("a member is not healthy; restarting", h)
                .map(Some);
        }
        let cfg = w.config(&o.cert_sha, &v.initial(None), "existing");
        Ok(Some(one(
            h,
            None,
            format!("new etcd settings on {h} (restarted, one member at a time)"),
            start_script(w, &cfg, false),
        )))
    }

    /// No healthy member answers: start the members together (fresh or stopped).
    fn plan_bootstrap(
        &mut self,
        obs: &IndexMap<String, Obs>,
        writable: &dyn Fn(&str) -> bool,
    ) -> Result<Vec<Action>, String> {
        if obs.values().any(|o| o.active) {
            return self.wait_or("etcd runs but is not healthy yet;", "the cluster");
        }
        let missing: Vec<&String> = self.want.keys().filter(|h| !obs.contains_key(*h)).collect();
        if !missing.is_empty() {
            return Err(format!(
                "no etcd member answers and {} could not be read: the initial members must start together",
                missing.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
            ));
        }
        if let Some(h) = self.want.keys().find(|h| !writable(h)) {
            return Err(format!("etcd has no running member: starting it needs every member inside --limit ({h} is not)"));
        }
        let with_data = self.want.keys().filter(|h| obs[*h].has_data).count();
        let initial: String = self
            .want
            .values()
            .map(|w| format!("{}={}", w.name, w.peer_url()))
            .collect::<Vec<_>>()
            .join(",");
        let (state, wipe, msg) = if with_data == 0 {
            ("new", true, "start the initial etcd members together")
        } else if with_data == self.want.len() {
            (
                "existing",
                false,
                "start the stopped etcd members together (their data is kept)",
            )
        } else {
            return Err(format!(
                "no etcd member runs and only {with_data} of {} have data: start those by hand, or remove their data to make a new cluster",
                self.want.len()
            ));
        };
        Ok(self
            .want
            .iter()
            .map(|(h, w)| Action {
                host: h.clone(),
                run_on: None,
                msg: msg.into(),
                script: start_script(w, &w.config(&obs[h].cert_sha, &initial, state), wipe),
                stdin: None,
                serial: false,
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::testing::{members, seen, with_ctx, with_down};

    fn want(i: u8) -> Want {
        Want {
            name: format!("n{i}"),
            addr: format!("10.0.0.{i}"),
            cert: "/c".into(),
            key: "/k".into(),
            ca: "/ca".into(),
            data_dir: "/d".into(),
            config: "/etc/default/etcd".into(),
            token: "t".into(),
        }
    }

    fn step(n: u8) -> Etcd {
        Etcd {
            want: (1..=n).map(|i| (format!("n{i}"), want(i))).collect(),
            ..Default::default()
        }
    }

    /// A member's probe output: (id, name, learner) of every member it lists.
    fn probe(
        active: bool,
        data: bool,
        healthy: bool,
        config: &str,
        list: &[(u64, &str, bool)],
    ) -> String {
        let ms: Vec<String> = list
            .iter()
            .map(|(id, n, l)| {
                let i = n.trim_start_matches('n');
                format!("{{\"ID\":{id},\"name\":\"{n}\",\"peerURLs\":[\"https://10.0.0.{i}:2380\"],\"isLearner\":{l}}}")
            })
            .collect();
        let mut o = format!(
            "==PROVISION active\n{}\n==PROVISION data\n{}\n==PROVISION config\n{config}==PROVISION cert\nsha\n",
            if active { "active" } else { "inactive" },
            if data { "yes" } else { "no" }
        );
        if active {
            o += &format!(
                "==PROVISION health\n{}\n==PROVISION members\n{{\"members\":[{}]}}\n",
                if healthy { "healthy" } else { "" },
                ms.join(",")
            );
        }
        o
    }

    /// A running member with its settings as wanted.
    fn settled(i: u8, list: &[(u64, &str, bool)]) -> String {
        probe(
            true,
            true,
            true,
            &want(i).config("sha", "", "existing"),
            list,
        )
    }

    /// A running member with its settings as wanted, that fails its health check.
    fn unhealthy(i: u8, list: &[(u64, &str, bool)]) -> String {
        probe(
            true,
            true,
            false,
            &want(i).config("sha", "", "existing"),
            list,
        )
    }

    const THREE: &[(u64, &str, bool)] = &[(1, "n1", false), (2, "n2", false), (3, "n3", false)];

    fn plan(s: &mut Etcd, m: &[Member], outs: &[(&str, String)]) -> Result<Vec<Action>, String> {
        with_ctx(false, |cx| s.plan(m, &seen(outs), cx))
    }

    #[test]
    fn a_settled_cluster_plans_nothing_and_a_member_outside_the_inventory_is_left_alone() {
        let mut s = step(3);
        let list = [THREE, &[(9, "old", false)]].concat();
        let outs: Vec<(&str, String)> = ["n1", "n2", "n3"]
            .iter()
            .enumerate()
            .map(|(i, h)| (*h, settled(i as u8 + 1, &list)))
            .collect();
        let a = plan(
            &mut s,
            &members(&["n1", "n2", "n3"], &["n1", "n2", "n3"]),
            &outs,
        )
        .unwrap();
        assert!(
            a.is_empty(),
            "{:?}",
            a.iter().map(|a| &a.msg).collect::<Vec<_>>()
        );
        assert!(
            s.notes
                .iter()
                .any(|n| n.contains("old") && n.contains("not in the inventory")),
            "{:?}",
            s.notes
        );
    }

    #[test]
    fn new_settings_restart_one_member_at_a_time_and_only_when_all_are_healthy() {
        let stale = probe(
            true,
            true,
            true,
            &want(1).config("old-sha", "", "existing"),
            THREE,
        );
        let outs = vec![
            ("n1", stale.clone()),
            ("n2", settled(2, THREE)),
            ("n3", settled(3, THREE)),
        ];
        let m = members(&["n1", "n2", "n3"], &["n1", "n2", "n3"]);
        let a = plan(&mut step(3), &m, &outs).unwrap();
        assert_eq!(a.len(), 1);
        assert!(
            a[0].serial && a[0].host == "n1" && a[0].msg.contains("one member at a time"),
            "{}",
            a[0].msg
        );
        // n3 not healthy: nothing restarts, the step waits.
        let sick = unhealthy(3, THREE);
        let outs = vec![("n1", stale), ("n2", settled(2, THREE)), ("n3", sick)];
        let mut s = step(3);
        let a = plan(&mut s, &m, &outs).unwrap();
        assert!(
            a.is_empty() && s.waiting,
            "{:?}",
            a.iter().map(|a| &a.msg).collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_member_whose_data_is_gone_is_removed_only_when_quorum_allows() {
        let m = members(&["n1", "n2", "n3"], &["n1", "n2", "n3"]);
        let wiped = probe(false, false, false, "", &[]);
        let outs = vec![
            ("n1", settled(1, THREE)),
            ("n2", settled(2, THREE)),
            ("n3", wiped.clone()),
        ];
        let a = plan(&mut step(3), &m, &outs).unwrap();
        assert_eq!(a.len(), 1);
        assert!(
            a[0].msg.contains("remove n3's stale etcd member")
                && a[0].run_on.as_deref() == Some("n1"),
            "{}",
            a[0].msg
        );
        // n2 wiped while n3 is unhealthy: removing n2 would leave one healthy voter of
        // three: refused, with the numbers.
        let sick = unhealthy(3, THREE);
        let outs = vec![("n1", settled(1, THREE)), ("n2", wiped), ("n3", sick)];
        let e = plan(&mut step(3), &m, &outs).unwrap_err();
        assert!(
            e.contains("would cost quorum") && e.contains("3 voting members"),
            "{e}"
        );
    }

    #[test]
    fn a_new_member_joins_as_a_learner_via_a_healthy_member_then_is_promoted() {
        let m = members(&["n1", "n2", "n3", "n4", "n5"], &["n4"]);
        let fresh = probe(false, false, false, "", &[]);
        let mut outs: Vec<(&str, String)> = vec![
            ("n1", settled(1, THREE)),
            ("n2", settled(2, THREE)),
            ("n3", settled(3, THREE)),
            ("n4", fresh.clone()),
        ];
        outs.push(("n5", fresh));
        let mut s = step(5);
        let a = plan(&mut s, &m, &outs).unwrap();
        assert_eq!(a.len(), 1, "one membership change at a time");
        assert!(
            a[0].msg.contains("add n4 to etcd as a learner")
                && a[0].script.contains("snapshot save"),
            "{}",
            a[0].msg
        );
        // n5 outside --limit is never added.
        assert!(!a.iter().any(|a| a.host == "n5"));
        // Added and started as a learner: promoted.
        let four = [THREE, &[(4, "n4", true)]].concat();
        let learner = probe(
            true,
            true,
            false,
            &want(4).config("sha", "", "existing"),
            &four,
        );
        let outs = vec![
            ("n1", settled(1, &four)),
            ("n2", settled(2, &four)),
            ("n3", settled(3, &four)),
            ("n4", learner),
        ];
        let a = plan(
            &mut step(4),
            &members(&["n1", "n2", "n3", "n4"], &["n4"]),
            &outs,
        )
        .unwrap();
        assert_eq!(a.len(), 1);
        assert!(a[0].msg.contains("promote n4"), "{}", a[0].msg);
    }

    #[test]
    fn a_down_member_is_never_removed_nor_restarted_through() {
        // n3 is down (not probed): n1's new settings wait for a healthy cluster, and n3's
        // member is not touched.
        let stale = probe(
            true,
            true,
            true,
            &want(1).config("old-sha", "", "existing"),
            THREE,
        );
        let m = with_down(members(&["n1", "n2", "n3"], &["n1", "n2", "n3"]), &["n3"]);
        let outs = vec![("n1", stale), ("n2", settled(2, THREE))];
        let mut s = step(3);
        let a = plan(&mut s, &m, &outs).unwrap();
        assert!(
            !a.iter().any(|a| a.msg.contains("remove")),
            "{:?}",
            a.iter().map(|a| &a.msg).collect::<Vec<_>>()
        );
        assert!(!a.iter().any(|a| a.host == "n3"));
    }

    #[test]
    fn parses_etcdctl_and_keeps_initial_lines_out_of_restarts() {
        let out = "==PROVISION active\nactive\n==PROVISION data\nyes\n==PROVISION health\nhealthy\n==PROVISION members\n{\"header\":{},\"members\":[{\"ID\":12345678901234567890,\"name\":\"n1\",\"peerURLs\":[\"https://10.0.0.1:2380\"],\"clientURLs\":[\"https://10.0.0.1:2379\"]},{\"ID\":2,\"name\":\"\",\"peerURLs\":[\"https://10.0.0.2:2380\"],\"isLearner\":true}]}\n";
        let o = parse(out);
        assert!(o.active && o.healthy && o.has_data);
        let m = o.members.unwrap();
        assert_eq!(m[0].id, 12345678901234567890);
        assert!(m[1].is_learner && m[1].name.is_empty());
        let w = Want {
            name: "n1".into(),
            addr: "10.0.0.1".into(),
            cert: "/c".into(),
            key: "/k".into(),
            ca: "/ca".into(),
            data_dir: "/d".into(),
            config: "/etc/default/etcd".into(),
            token: "t".into(),
        };
        let a = w.config("abc", "n1=https://10.0.0.1:2380", "new");
        let b = w.config(
            "abc",
            "n1=https://10.0.0.1:2380,n2=https://10.0.0.2:2380",
            "existing",
        );
        assert_ne!(a, b);
        assert_eq!(
            significant_of(&a),
            significant_of(&b),
            "initial-cluster lines must not restart a member"
        );
        assert_ne!(
            significant_of(&w.config("new-cert", "", "existing")),
            significant_of(&a),
            "a new certificate restarts it"
        );
    }
}
