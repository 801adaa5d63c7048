//! `ceph_cluster`: a Ceph cluster from Debian's packages, kept matching the inventory.
//! The fsid and every key are made on the controller (state dir). Phases, each planned
//! from what the hosts and the cluster report: files (ceph.conf, keyrings, units), the
//! monitors (created together when no monitor has data, later ones added one at a time
//! and waited for in quorum), keys the cluster lacks, managers and MDSs, OSDs on the
//! named devices, pools and CephFS, the CephFS mount, and a health gate.

pub mod audit;
mod conf;
mod health;
pub mod keys;
pub mod observe;

use super::{arg, put_inline, Action, Ctx, Member, Seen, Step};
use crate::transport::quote;
use indexmap::IndexMap;
use keys::Secrets;
use observe::{Cluster, Obs};
use serde_json::{json, Value};
use std::time::Instant;

pub fn new() -> Box<dyn Step> {
    Box::<Ceph>::default()
}

pub use conf::{pool_size, MOUNT_SERVICE};

#[derive(Clone, Debug)]
struct Dev {
    path: String,
    wipe: bool,
}

#[derive(Clone, Debug)]
struct Host {
    name: String,
    addr: String,
    mon: bool,
    mgr: bool,
    mds: bool,
    client: bool,
    devices: Vec<Dev>,
}

#[derive(Clone, Debug, Default)]
struct Cfg {
    fs: String,
    mount: String,
    client: String,
    public_network: Option<String>,
    extra: IndexMap<String, String>,
    allow_loop: bool,
    health_allow: Vec<String>,
    timeout: u64,
}

#[derive(Default)]
struct Ceph {
    hosts: IndexMap<String, Host>,
    cfg: Cfg,
    secrets: Option<Secrets>,
    waiting: Option<(String, Instant)>,
    /// This run changed something or waited: the gate must then hold on two probes a few
    /// seconds apart (the PG states the manager reports lag the OSD map by seconds).
    stirred: bool,
    /// When the gate first passed after a change.
    healthy_since: Option<Instant>,
    notes: Vec<String>,
    published: Value,
}

const ADMIN_KEYRING: &str = "/etc/ceph/ceph.client.admin.keyring";
const OSD_KEYRING: &str = "/var/lib/ceph/bootstrap-osd/ceph.keyring";

/// One file provision keeps on a host: its content, and whether it holds a key.
struct File {
    path: String,
    content: String,
    mode: &'static str,
    owner: &'static str,
    secret: bool,
}

fn sha(s: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(s.as_bytes()))
}

fn devices_of(m: &Member) -> Result<Vec<Dev>, String> {
    let bad = |v: &Value| {
        format!(
            "host `{}`: ceph_osd_devices must be a list of device paths or {{path, wipe}}, found {v}",
            m.name
        )
    };
    let list = match m.args.get("osd_devices") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(a)) => a.clone(),
        Some(v) => return Err(bad(v)),
    };
    let mut out = Vec::new();
    for v in &list {
        let d = match v {
            Value::String(s) => Dev {
                path: s.clone(),
                wipe: false,
            },
            Value::Object(o) => Dev {
                path: o
                    .get("path")
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad(v))?
                    .to_owned(),
                wipe: crate::args::Args(o)
                    .bool("wipe", false)
                    .map_err(|e| format!("host `{}`: ceph_osd_devices: {e}", m.name))?,
            },
            _ => return Err(bad(v)),
        };
        if !d.path.starts_with("/dev/") || d.path.contains(char::is_whitespace) {
            return Err(format!(
                "host `{}`: OSD device `{}` must be a path under /dev/",
                m.name, d.path
            ));
        }
        if out.iter().any(|o: &Dev| o.path == d.path) {
            return Err(format!(
                "host `{}`: OSD device `{}` is listed twice",
                m.name, d.path
            ));
        }
        out.push(d);
    }
    Ok(out)
}

fn cfg_of(m: &Member) -> Result<Cfg, String> {
    let a = crate::args::Args(&m.args);
    let e = |e: String| format!("ceph_cluster: {e}");
    let mut extra = IndexMap::new();
    match m.args.get("conf") {
        None | Some(Value::Null) => {}
        Some(Value::Object(o)) => {
            for (k, v) in o {
                let v = match v {
                    Value::String(s) => s.clone(),
                    Value::Number(_) | Value::Bool(_) => v.to_string(),
                    _ => return Err(format!("ceph_conf: `{k}` must be a string or number")),
                };
                if k.contains(['\n', '=', '[']) || v.contains('\n') {
                    return Err(format!("ceph_conf: `{k}` is not a valid setting"));
                }
                extra.insert(k.clone(), v);
            }
        }
        Some(v) => {
            return Err(format!(
                "ceph_conf must be a mapping of settings, found {v}"
            ))
        }
    }
    let fs = a.str("fs").map_err(e)?.unwrap_or_default();
    let mount = a
        .str("fs_mount")
        .map_err(e)?
        .unwrap_or_else(|| "/mnt/cephfs".into());
    if !fs.is_empty() && (!mount.starts_with('/') || mount == "/") {
        return Err(format!(
            "cephfs_mount `{mount}` must be an absolute path other than /"
        ));
    }
    let client = a
        .str("fs_client")
        .map_err(e)?
        .unwrap_or_else(|| "swarm".into());
    let ok = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_".contains(c))
    };
    if !ok(&client) || (!fs.is_empty() && !ok(&fs)) {
        return Err(format!(
            "cephfs name `{fs}` and client `{client}` may hold letters, digits, - and _ only"
        ));
    }
    Ok(Cfg {
        fs,
        mount,
        client,
        public_network: a
            .str("public_network")
            .map_err(e)?
            .filter(|s| !s.is_empty()),
        extra,
        allow_loop: a.bool("allow_loop_devices", false).map_err(e)?,
        health_allow: a.list("health_allow").map_err(e)?,
        timeout: a
            .str("health_timeout")
            .map_err(e)?
            .map(|t| {
                t.parse()
                    .map_err(|_| format!("ceph_health_timeout `{t}` is not a number of seconds"))
            })
            .transpose()?
            .unwrap_or(300),
    })
}

/// Accumulates one phase's changes, one action per host.
/// Where a batched script runs: (host, on behalf of).
type BatchKey = (String, Option<String>);
/// What is batched there: (messages, script, stdin).
type BatchBody = (Vec<String>, String, Vec<u8>);

#[derive(Default)]
struct Batch {
    per: IndexMap<BatchKey, BatchBody>,
    serial: bool,
}

impl Batch {
    fn add(&mut self, host: &str, run_on: Option<&str>, msg: String, script: String) {
        let e = self
            .per
            .entry((host.to_owned(), run_on.map(str::to_owned)))
            .or_default();
        e.0.push(msg);
        e.1 += &script;
    }
    fn stdin(&mut self, host: &str, run_on: Option<&str>, data: &str) {
        if let Some(e) = self
            .per
            .get_mut(&(host.to_owned(), run_on.map(str::to_owned)))
        {
            e.2.extend_from_slice(data.as_bytes());
        }
    }
    fn actions(self) -> Vec<Action> {
        self.per
            .into_iter()
            .map(|((host, run_on), (msgs, script, stdin))| Action {
                host,
                run_on,
                msg: msgs.join("; "),
                script: format!("set -e\n{script}"),
                stdin: (!stdin.is_empty()).then_some(stdin),
                serial: self.serial,
            })
            .collect()
    }
    fn is_empty(&self) -> bool {
        self.per.is_empty()
    }
}

impl Ceph {
    fn mons(&self) -> Vec<&Host> {
        self.hosts.values().filter(|h| h.mon).collect()
    }
    fn osd_hosts(&self) -> usize {
        self.hosts
            .values()
            .filter(|h| !h.devices.is_empty())
            .count()
    }
    fn entities(&self) -> Vec<String> {
        let mut v = vec!["mon.".to_string(), "client.admin".into()];
        if self.osd_hosts() > 0 {
            v.push("client.bootstrap-osd".into());
        }
        for h in self.hosts.values() {
            if h.mgr {
                v.push(format!("mgr.{}", h.name));
            }
            if h.mds && !self.cfg.fs.is_empty() {
                v.push(format!("mds.{}", h.name));
            }
        }
        if !self.cfg.fs.is_empty() && self.hosts.values().any(|h| h.client) {
            v.push(format!("client.{}", self.cfg.client));
        }
        v
    }
    fn secrets(&self) -> &Secrets {
        self.secrets.as_ref().expect("loaded in plan")
    }

    fn files(&self, h: &Host) -> Vec<File> {
        let s = self.secrets();
        let mon_addrs: Vec<String> = self.mons().iter().map(|m| m.addr.clone()).collect();
        let fs = &self.cfg.fs;
        let cin = conf::ConfIn {
            fsid: &s.fsid,
            mons: &mon_addrs,
            addr: &h.addr,
            public_network: self.cfg.public_network.as_deref(),
            size: pool_size(self.osd_hosts()),
            extra: &self.cfg.extra,
        };
        let plain = |path: &str, content: String| File {
            path: path.into(),
            content,
            mode: "644",
            owner: "root",
            secret: false,
        };
        let mut v = vec![
            plain("/etc/ceph/ceph.conf", conf::ceph_conf(&cin)),
            plain(conf::SETTINGS_STAMP, conf::settings_stamp(&cin)),
        ];
        let key = |path: String, entity: &str| File {
            path,
            content: keys::keyring(s, &[entity], fs, false),
            mode: "600",
            owner: "ceph",
            secret: true,
        };
        if h.mon {
            v.push(key(ADMIN_KEYRING.into(), "client.admin"));
        }
        if h.mgr {
            v.push(key(
                format!("/var/lib/ceph/mgr/ceph-{}/keyring", h.name),
                &format!("mgr.{}", h.name),
            ));
        }
        if h.mds && !fs.is_empty() {
            v.push(key(
                format!("/var/lib/ceph/mds/ceph-{}/keyring", h.name),
                &format!("mds.{}", h.name),
            ));
        }
        if !h.devices.is_empty() {
            v.push(key(OSD_KEYRING.into(), "client.bootstrap-osd"));
            let devs: Vec<String> = h.devices.iter().map(|d| d.path.clone()).collect();
            v.push(File {
                path: conf::OSD_UNIT.into(),
                content: conf::osd_unit(&devs, self.cfg.allow_loop),
                mode: "644",
                owner: "root",
                secret: false,
            });
            v.push(File {
                path: conf::OSD_DROPIN.into(),
                content: conf::OSD_DROPIN_TEXT.into(),
                mode: "644",
                owner: "root",
                secret: false,
            });
        }
        if h.client && !fs.is_empty() {
            let c = format!("client.{}", self.cfg.client);
            v.push(key(format!("/etc/ceph/ceph.{c}.keyring"), &c));
            let unit = MOUNT_SERVICE;
            v.push(File {
                path: format!("/etc/systemd/system/{unit}"),
                content: conf::mount_service(&self.cfg.mount, &self.cfg.client, fs),
                mode: "644",
                owner: "root",
                secret: false,
            });
            v.push(File {
                path: conf::DOCKER_DROPIN.into(),
                content: conf::docker_dropin(unit),
                mode: "644",
                owner: "root",
                secret: false,
            });
        }
        v
    }

    /// Waits (probing again) for `why`, failing once the health timeout has passed.
    fn wait(&mut self, why: String, detail: &str, cx: &Ctx) -> Result<Vec<Action>, String> {
        if cx.check {
            self.notes.push(format!("would wait: {why}"));
            self.waiting = None;
            return Ok(Vec::new());
        }
        self.stirred = true;
        self.healthy_since = None;
        let since = match &self.waiting {
            Some((w, t)) if *w == why => *t,
            _ => Instant::now(),
        };
        if since.elapsed().as_secs() > self.cfg.timeout {
            return Err(format!(
                "Ceph: gave up after {} s waiting for {why}{}",
                self.cfg.timeout,
                if detail.is_empty() {
                    String::new()
                } else {
                    format!(": {detail}")
                }
            ));
        }
        self.waiting = Some((why, since));
        Ok(Vec::new())
    }
}

/// Enables and starts `ceph-KIND@ID`; `id` is a shell word (quoted, or `"$id"`).
fn start_unit(kind: &str, id: &str) -> String {
    format!(
        "install -d -o ceph -g ceph -m 770 /run/ceph\nsystemctl enable ceph-{kind}@{id} ceph-{kind}.target >/dev/null 2>&1\nsystemctl start ceph-{kind}@{id}\n"
    )
}

fn daemon_start(kind: &str, name: &str) -> String {
    start_unit(kind, &quote(name))
}

impl Step for Ceph {
    fn prepare(&mut self, members: &[Member], cx: &Ctx) -> Result<(), String> {
        for m in members {
            let a = crate::args::Args(&m.args);
            let e = |e: String| format!("host `{}`: {e}", m.name);
            let addr = arg(m, "address")?.unwrap_or_default();
            if addr.parse::<std::net::IpAddr>().is_err() {
                return Err(format!(
                    "host `{}`: Ceph address `{addr}` is not an IP address: set private_address",
                    m.name
                ));
            }
            let h = Host {
                name: m.name.clone(),
                addr,
                mon: a.bool("mon", false).map_err(e)?,
                mgr: a.bool("mgr", false).map_err(e)?,
                mds: a.bool("mds", false).map_err(e)?,
                client: a.bool("client", false).map_err(e)?,
                devices: devices_of(m)?,
            };
            self.hosts.insert(m.name.clone(), h);
        }
        if let Some(m) = members.first() {
            self.cfg = cfg_of(m)?;
        }
        // Counted from the inventory: an unreachable monitor is still one of them.
        let n = cx
            .inventory
            .groups
            .get("ceph_mons")
            .map(|g| g.len())
            .unwrap_or(0)
            .max(self.mons().len());
        if n == 0 {
            return Err(
                "Ceph needs monitors: put hosts in the `ceph_mons` group (default: the managers)"
                    .into(),
            );
        }
        let even_ok = members
            .first()
            .map(|m| crate::args::Args(&m.args).bool("allow_even_mons", false))
            .transpose()?
            .unwrap_or(false);
        if n.is_multiple_of(2) && !even_ok {
            return Err(format!(
                "{n} Ceph monitors: an even number adds no fault tolerance; use an odd number or set ceph_allow_even_mons: true"
            ));
        }
        if !self.hosts.values().any(|h| h.mgr) {
            return Err(
                "Ceph needs at least one manager: put hosts in `ceph_mgrs` (default: the monitors)"
                    .into(),
            );
        }
        if !self.cfg.fs.is_empty() && !self.hosts.values().any(|h| h.mds) {
            return Err(format!(
                "CephFS `{}` needs a metadata server: put hosts in `ceph_mds` (default: the monitors), or set cephfs_name: \"\"",
                self.cfg.fs
            ));
        }
        Ok(())
    }

    fn reads_outside_limit(&self) -> bool {
        true
    }

    fn counts_down_hosts(&self) -> bool {
        true
    }

    fn max_rounds(&self) -> usize {
        1000
    }

    fn probes(&self, members: &[Member]) -> Vec<(String, String)> {
        let sleep = if self.waiting.is_some() { 3 } else { 0 };
        members
            .iter()
            .filter_map(|m| self.hosts.get(&m.name))
            .map(|h| {
                let mut files: Vec<String> = vec![
                    "/etc/ceph/ceph.conf".into(),
                    conf::SETTINGS_STAMP.into(),
                    ADMIN_KEYRING.into(),
                    OSD_KEYRING.into(),
                    format!("/var/lib/ceph/mgr/ceph-{}/keyring", h.name),
                    format!("/var/lib/ceph/mds/ceph-{}/keyring", h.name),
                    format!("/etc/ceph/ceph.client.{}.keyring", self.cfg.client),
                    conf::OSD_UNIT.into(),
                    conf::OSD_DROPIN.into(),
                    conf::DOCKER_DROPIN.into(),
                ];
                files.push(format!("/etc/systemd/system/{MOUNT_SERVICE}"));
                let devs: Vec<String> = h.devices.iter().map(|d| d.path.clone()).collect();
                let s = observe::probe_script(&observe::ProbeOpts {
                    host: &h.name,
                    files: &files,
                    mon: h.mon,
                    devices: &devs,
                    allow_loop: self.cfg.allow_loop,
                    sleep,
                });
                (h.name.clone(), s)
            })
            .collect()
    }

    fn plan(&mut self, members: &[Member], seen: &Seen, cx: &Ctx) -> Result<Vec<Action>, String> {
        let planned = self.plan_phases(members, seen, cx);
        if planned.as_ref().is_ok_and(|a| !a.is_empty()) {
            self.stirred = true;
            self.healthy_since = None;
        }
        planned
    }

    fn wants_reprobe(&self) -> bool {
        self.waiting.is_some()
    }

    fn notes(&self) -> Vec<String> {
        self.notes.clone()
    }

    fn secrets(&self) -> Vec<String> {
        self.secrets
            .as_ref()
            .map(|s| s.keys.values().cloned().collect())
            .unwrap_or_default()
    }

    fn publish(&self) -> Value {
        self.published.clone()
    }
}

impl Ceph {
    /// The phases, in order; the first with something to do returns its actions.
    fn plan_phases(
        &mut self,
        members: &[Member],
        seen: &Seen,
        cx: &Ctx,
    ) -> Result<Vec<Action>, String> {
        self.notes.clear();
        let writable = |h: &str| members.iter().any(|m| m.name == h && m.writable);
        let obs: IndexMap<String, Obs> = seen
            .iter()
            .filter_map(|(h, r)| {
                let n = self.hosts.get(h).map(|x| x.devices.len()).unwrap_or(0);
                r.as_ref()
                    .ok()
                    .map(|o| (h.clone(), observe::parse(&o.stdout, n)))
            })
            .collect();
        for (h, r) in seen {
            if let Err(e) = r {
                self.notes.push(format!("{h} could not be read: {e}"));
            }
        }
        let cluster: Option<(String, Cluster)> = self
            .mons()
            .iter()
            .filter_map(|m| {
                obs.get(&m.name)
                    .and_then(|o| o.cluster.clone())
                    .map(|c| (m.name.clone(), c))
            })
            .find(|(_, c)| !c.quorum().is_empty());

        // The cluster's identity: from the state dir, or new when no host has a cluster.
        if self.secrets.is_none() {
            match Secrets::load(cx.state)? {
                Some(s) => self.secrets = Some(s),
                None => {
                    let holders: Vec<&String> = obs
                        .iter()
                        .filter(|(_, o)| o.mon_data || o.conf.contains("fsid = "))
                        .map(|(h, _)| h)
                        .collect();
                    if !holders.is_empty() {
                        return Err(format!(
                            "the state directory {} has no {}, but {} already belong to a Ceph cluster: \
                             restore {} from your backup (it holds the cluster's fsid and keys); \
                             provision never makes new keys for a running cluster",
                            cx.state.dir.display(),
                            keys::FILE,
                            holders.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "),
                            keys::FILE
                        ));
                    }
                    self.secrets = Some(Secrets::create()?);
                }
            }
        }
        let mut made = false;
        for e in self.entities() {
            made |= self.secrets.as_mut().expect("set above").ensure(&e)?;
        }
        if made && !cx.check {
            self.secrets().save(cx.state)?;
        }
        let fsid = self.secrets().fsid.clone();
        if let Some((src, c)) = &cluster {
            if c.fsid() != fsid {
                return Err(format!(
                    "the Ceph cluster on {src} has fsid {}, not this inventory's {fsid} ({}): \
                     these hosts belong to another cluster",
                    c.fsid(),
                    cx.state.dir.join(keys::FILE).display()
                ));
            }
        }
        self.published = json!({
            "fsid": fsid,
            "mons": self.mons().iter().map(|m| conf::addrvec(&m.addr)).collect::<Vec<_>>(),
            "fs": self.cfg.fs,
            "mount": self.cfg.mount,
        });

        // 1. Files: ceph.conf, keyrings, units.
        let mut b = Batch::default();
        for h in self.hosts.values() {
            let Some(o) = obs.get(&h.name) else { continue };
            let mut secret_lines = String::new();
            let mut script = String::new();
            let mut changed = Vec::new();
            let mut units = false;
            for f in self.files(h) {
                if o.files.get(&f.path) == Some(&sha(&f.content)) {
                    continue;
                }
                if let Some(dir) = std::path::Path::new(&f.path).parent() {
                    let dir = quote(&dir.to_string_lossy());
                    // Ceph's own directories belong to ceph; /etc ones keep their owner.
                    script += &if f.path.starts_with("/var/lib/ceph/") {
                        format!("install -d -o ceph -g ceph {dir}\n")
                    } else {
                        format!("mkdir -p {dir}\n")
                    };
                }
                if f.secret {
                    use base64::Engine;
                    secret_lines += &base64::engine::general_purpose::STANDARD.encode(&f.content);
                    secret_lines += "\n";
                    script += &format!(
                        "read -r k; printf %s \"$k\" | base64 -d | ( {} ) || exit 1\n",
                        crate::transport::put_script(&f.path, f.mode, Some(f.owner), Some(f.owner))
                    );
                } else {
                    script += &put_inline(&f.path, &f.content, f.mode, f.owner, f.owner);
                }
                units |= f.path.starts_with("/etc/systemd/");
                changed.push(f.path);
            }
            // A first stamp beside an unchanged ceph.conf (a cluster made before stamps)
            // dates from that ceph.conf: nothing is restarted for it.
            let conf_kept = !changed.iter().any(|p| p == "/etc/ceph/ceph.conf")
                && o.files.contains_key("/etc/ceph/ceph.conf");
            if conf_kept && !o.files.contains_key(conf::SETTINGS_STAMP) {
                script += &format!("touch -r /etc/ceph/ceph.conf {}\n", conf::SETTINGS_STAMP);
            }
            if changed.is_empty() {
                continue;
            }
            if !writable(&h.name) {
                self.notes.push(format!(
                    "{} (outside --limit) needs {}: the next full run writes it",
                    h.name,
                    changed.join(", ")
                ));
                continue;
            }
            if units {
                script += "systemctl daemon-reload\n";
            }
            if changed.iter().any(|p| p == conf::OSD_UNIT) {
                script += "systemctl enable provision-ceph-osds.service >/dev/null 2>&1\n";
            }
            b.add(
                &h.name,
                None,
                format!("write {}", changed.join(", ")),
                script,
            );
            b.stdin(&h.name, None, &secret_lines);
        }
        if !b.is_empty() {
            return Ok(b.actions());
        }

        // 2. Monitors.
        let mons: Vec<Host> = self.mons().into_iter().cloned().collect();
        let Some((src, c)) = cluster else {
            let with_data: Vec<&Host> = mons
                .iter()
                .filter(|m| obs.get(&m.name).is_some_and(|o| o.mon_data))
                .collect();
            if with_data.is_empty() {
                if let Some(m) = mons
                    .iter()
                    .find(|m| !obs.contains_key(&m.name) || !writable(&m.name))
                {
                    return Err(format!(
                        "the first Ceph monitors are created together, and {} cannot be: it is unreachable or outside --limit",
                        m.name
                    ));
                }
                let s = self.secrets();
                let mut ents: Vec<&str> = vec!["mon."];
                let all = self.entities();
                ents.extend(all.iter().filter(|e| *e != "mon.").map(String::as_str));
                let keyring = keys::keyring(s, &ents, &self.cfg.fs, true);
                let mut map = format!("monmaptool --create --clobber --fsid {fsid}");
                for m in &mons {
                    map += &format!(
                        " --addv {} {}",
                        quote(&m.name),
                        quote(&conf::addrvec(&m.addr))
                    );
                }
                let mut b = Batch::default();
                for m in &mons {
                    let script =
                        mkfs_script(&m.name, &format!("{map} \"$t/monmap\" >/dev/null"), "");
                    b.add(
                        &m.name,
                        None,
                        format!("create monitor {} (a new cluster, fsid {fsid})", m.name),
                        script,
                    );
                    b.stdin(&m.name, None, &keyring);
                }
                return Ok(b.actions());
            }
            let mut b = Batch::default();
            for m in &with_data {
                if !obs[&m.name].active(&format!("ceph-mon@{}", m.name)) && writable(&m.name) {
                    b.add(
                        &m.name,
                        None,
                        format!("start monitor {}", m.name),
                        daemon_start("mon", &m.name),
                    );
                }
            }
            if !b.is_empty() {
                return Ok(b.actions());
            }
            let live = mons.iter().filter(|m| obs.contains_key(&m.name)).count();
            if live <= mons.len() / 2 {
                return Err(format!(
                    "the Ceph monitors cannot form a quorum: it needs {} of {}, and only {live} answer; \
                     down: {}. Bring them back, then run again",
                    mons.len() / 2 + 1,
                    mons.len(),
                    super::down_list(members).join(", ")
                ));
            }
            let errs: Vec<String> = obs
                .iter()
                .filter_map(|(h, o)| o.query_error.as_ref().map(|e| format!("{h}: {e}")))
                .collect();
            return self.wait(
                "the Ceph monitors to form a quorum".into(),
                &errs.join("; "),
                cx,
            );
        };
        let quorum = c.quorum();
        for m in &mons {
            let Some(o) = obs.get(&m.name) else { continue };
            if !writable(&m.name) {
                continue;
            }
            if !o.mon_data {
                let s = self.secrets();
                let keyring = keys::keyring(s, &["mon."], &self.cfg.fs, true);
                let add = "ceph mon getmap -o \"$t/monmap\"";
                // A bare address gets both the v2 (3300) and v1 (6789) ports.
                let after = format!(
                    "ceph mon dump 2>/dev/null | grep -q ' mon.{n}$' || ceph mon add {n} {} >/dev/null\n",
                    quote(&m.addr),
                    n = m.name
                );
                return Ok(vec![Action {
                    host: m.name.clone(),
                    run_on: None,
                    msg: format!(
                        "add monitor {} to the cluster (one at a time, then wait for quorum)",
                        m.name
                    ),
                    script: format!("set -e\n{}", mkfs_script(&m.name, add, &after)),
                    stdin: Some(keyring.into_bytes()),
                    serial: true,
                }]);
            }
            if !quorum.contains(&m.name) {
                if !o.active(&format!("ceph-mon@{}", m.name)) {
                    return Ok(vec![Action {
                        host: m.name.clone(),
                        run_on: None,
                        msg: format!("start monitor {}", m.name),
                        script: format!("set -e\n{}", daemon_start("mon", &m.name)),
                        stdin: None,
                        serial: true,
                    }]);
                }
                return self.wait(
                    format!("monitor {} to join the quorum", m.name),
                    &format!("quorum is {}", quorum.join(", ")),
                    cx,
                );
            }
        }

        // 3. Keys the cluster lacks, imported through a monitor for the host they belong to.
        let missing: Vec<String> = self
            .entities()
            .into_iter()
            .filter(|e| !c.entities.contains(e))
            .collect();
        if !missing.is_empty() {
            let mut b = Batch::default();
            for e in &missing {
                let owner = e
                    .split_once('.')
                    .map(|(_, n)| n)
                    .filter(|n| self.hosts.contains_key(*n))
                    .map(str::to_owned)
                    .or_else(|| {
                        self.hosts
                            .values()
                            .find(|h| {
                                writable(&h.name)
                                    && (e != "client.bootstrap-osd" || !h.devices.is_empty())
                            })
                            .map(|h| h.name.clone())
                    })
                    .unwrap_or_else(|| src.clone());
                let kr = keys::keyring(self.secrets(), &[e.as_str()], &self.cfg.fs, true);
                use base64::Engine;
                b.add(
                    &owner,
                    Some(&src),
                    format!("import the key of {e} into the cluster via {src}"),
                    "read -r k; printf %s \"$k\" | base64 -d | ceph auth import -i - >/dev/null\n"
                        .into(),
                );
                b.stdin(
                    &owner,
                    Some(&src),
                    &format!("{}\n", base64::engine::general_purpose::STANDARD.encode(kr)),
                );
            }
            // Several keys for one owner: each import reads its own line.
            return Ok(b.actions());
        }

        // 4. Managers, MDSs and OSDs.
        let mut b = Batch::default();
        let mut refused = Vec::new();
        for h in self.hosts.values() {
            let Some(o) = obs.get(&h.name) else { continue };
            if !writable(&h.name) {
                continue;
            }
            if h.mgr && !o.active(&format!("ceph-mgr@{}", h.name)) {
                b.add(
                    &h.name,
                    None,
                    format!("start manager {}", h.name),
                    daemon_start("mgr", &h.name),
                );
            }
            if h.mds && !self.cfg.fs.is_empty() && !o.active(&format!("ceph-mds@{}", h.name)) {
                b.add(
                    &h.name,
                    None,
                    format!("start metadata server {}", h.name),
                    daemon_start("mds", &h.name),
                );
            }
            let env = if self.cfg.allow_loop {
                "CEPH_VOLUME_ALLOW_LOOP_DEVICES=true "
            } else {
                ""
            };
            let mut why = Vec::new();
            let mut osd_script = String::new();
            let mut msgs = Vec::new();
            for (i, d) in h.devices.iter().enumerate() {
                let Some(dev) = o.devices.get(i) else {
                    continue;
                };
                let raw = o.raw.iter().find(|r| r.device == d.path);
                let dq = quote(&d.path);
                match raw {
                    Some(r) if r.ceph_fsid == fsid => {
                        if !o.osds.contains_key(&r.osd_id) {
                            osd_script += &format!("{env}ceph-volume raw activate --device {dq} --no-systemd >/dev/null\n");
                            msgs.push(format!("activate OSD {} on {}", r.osd_id, d.path));
                        }
                        if !o.osds.get(&r.osd_id).copied().unwrap_or(false) {
                            osd_script += &daemon_start("osd", &r.osd_id.to_string());
                            msgs.push(format!("start OSD {}", r.osd_id));
                        }
                        continue;
                    }
                    _ => {}
                }
                if dev.missing {
                    why.push(format!(
                        "{} does not exist on {} (or is not a block device)",
                        d.path, h.name
                    ));
                    continue;
                }
                let foreign = raw.map(|r| {
                    format!(
                        "OSD {} of another Ceph cluster (fsid {})",
                        r.osd_id, r.ceph_fsid
                    )
                });
                let sig = (!dev.signatures.is_empty()).then(|| {
                    let mut s = format!("data ({})", dev.signatures.join(", "));
                    if !dev.reasons.is_empty() {
                        s += &format!("; ceph-volume: {}", dev.reasons.join(", "));
                    }
                    s
                });
                if let Some(what) = foreign.or(sig) {
                    if !d.wipe {
                        why.push(format!(
                            "{} on {} holds {what}: left untouched; erase it yourself or set `wipe: true` for it in ceph_osd_devices",
                            d.path, h.name
                        ));
                        continue;
                    }
                    osd_script += &format!("wipefs -a {dq} >/dev/null\ndd if=/dev/zero of={dq} bs=1M count=64 conv=fsync status=none\n");
                    msgs.push(format!("wipe {} (wipe: true; it held {what})", d.path));
                }
                osd_script += &format!(
                    "log=$(mktemp); {env}ceph-volume raw prepare --bluestore --data {dq} >\"$log\" 2>&1 || {{ tail -5 \"$log\" >&2; rm -f \"$log\"; exit 1; }}; rm -f \"$log\"\n\
                     {env}ceph-volume raw activate --device {dq} --no-systemd >/dev/null\n\
                     id=$({env}ceph-volume raw list {dq} --format json | python3 -c 'import json,sys; print(list(json.load(sys.stdin).values())[0][\"osd_id\"])')\n\
                     {}",
                    start_unit("osd", "\"$id\"")
                );
                msgs.push(format!("create an OSD on {}", d.path));
            }
            if !why.is_empty() {
                refused.push(super::refusal(
                    &h.name,
                    format!("refuse OSD device(s): {}", why.join("; ")),
                ));
                continue;
            }
            if !msgs.is_empty() {
                b.add(&h.name, None, msgs.join(", "), osd_script);
            }
        }
        if !refused.is_empty() || !b.is_empty() {
            let mut v = b.actions();
            v.extend(refused);
            return Ok(v);
        }

        // 5. Pools and CephFS, through a monitor.
        let owner = if writable(&src) {
            src.clone()
        } else {
            mons.iter()
                .find(|m| writable(&m.name))
                .map(|m| m.name.clone())
                .unwrap_or(src.clone())
        };
        let (size, min) = pool_size(self.osd_hosts());
        let mut script = String::new();
        let mut msgs = Vec::new();
        let fs = self.cfg.fs.clone();
        if !fs.is_empty() && !c.fs.contains(&fs) {
            let (md, data) = (format!("{fs}_metadata"), format!("{fs}_data"));
            script += &format!(
                "ceph osd pool create {md} 16 >/dev/null\nceph osd pool create {data} 32 >/dev/null\n\
                 ceph osd pool set {md} size {size} --yes-i-really-mean-it >/dev/null\nceph osd pool set {data} size {size} --yes-i-really-mean-it >/dev/null\n\
                 ceph fs new {fs} {md} {data} >/dev/null\n"
            );
            if self.hosts.values().filter(|h| h.mds).count() < 2 {
                // One MDS: no standby to want (else HEALTH_WARN for ever).
                script += &format!("ceph fs set {fs} standby_count_wanted 0 >/dev/null\n");
            }
            msgs.push(format!("create CephFS {fs} (pools {md}, {data})"));
        }
        for p in &c.pools {
            let name = p["pool_name"].as_str().unwrap_or("");
            let Some((s, m)) = c.pool_size(name) else {
                continue;
            };
            if (s, m) != (size, min) && !name.is_empty() {
                let n = quote(name);
                script += &format!(
                    "ceph osd pool set {n} size {size} --yes-i-really-mean-it >/dev/null\nceph osd pool set {n} min_size {min} >/dev/null\n"
                );
                msgs.push(format!(
                    "pool {name}: size {size}, min_size {min} (was {s}, {m})"
                ));
            }
        }
        if !msgs.is_empty() {
            let mut b = Batch::default();
            b.add(&owner, Some(&src), msgs.join("; "), script);
            return Ok(b.actions());
        }

        // 6. The CephFS mount on its clients (once an MDS is active).
        if !fs.is_empty() {
            let want: Vec<&Host> = self
                .hosts
                .values()
                .filter(|h| {
                    h.client
                        && writable(&h.name)
                        && obs
                            .get(&h.name)
                            .is_some_and(|o| !o.mounted(&self.cfg.mount))
                })
                .collect();
            if !want.is_empty() {
                if !c.mds_active() {
                    return self.wait(format!("an active metadata server for CephFS {fs}"), "", cx);
                }
                let unit = MOUNT_SERVICE;
                let mut b = Batch::default();
                for h in want {
                    b.add(
                        &h.name,
                        None,
                        format!("mount CephFS {fs} on {} (ceph-fuse, {unit})", self.cfg.mount),
                        format!(
                            "install -d {m}\nsystemctl enable {u} >/dev/null 2>&1\nsystemctl restart {u}\nmountpoint -q {m}\n",
                            m = quote(&self.cfg.mount),
                            u = unit
                        ),
                    );
                }
                return Ok(b.actions());
            }
        }

        // 7. The health gate.
        // Hosts that failed (a refused device) or could not be read are not waited for.
        let wanted_osds: usize = self
            .hosts
            .values()
            .filter(|h| obs.contains_key(&h.name))
            .map(|h| h.devices.len())
            .sum();
        let mon_names: Vec<String> = mons.iter().map(|m| m.name.clone()).collect();
        let down: Vec<(String, usize)> = members
            .iter()
            .filter(|m| m.is_down())
            .map(|m| {
                let n = self.hosts.get(&m.name).map_or(0, |h| h.devices.len());
                (m.name.clone(), n)
            })
            .collect();
        let verdict = health::judge(
            &c,
            &health::Gate {
                mons: &mon_names,
                down: &down,
                wanted_osds,
                allow: &self.cfg.health_allow,
            },
        );
        if !verdict.why.is_empty() {
            return self.wait("Ceph to be healthy".into(), &verdict.why.join("; "), cx);
        }
        // After a change or a wait, healthy once is not enough: it must still hold a few
        // seconds later (an OSD just up is in the OSD map before its PGs show peering).
        if self.stirred && !cx.check {
            let since = *self.healthy_since.get_or_insert_with(Instant::now);
            if since.elapsed().as_secs() < 3 {
                let w = self.waiting.take();
                self.waiting = Some((
                    "Ceph to stay healthy".into(),
                    w.map_or_else(Instant::now, |(_, t)| t),
                ));
                return Ok(Vec::new());
            }
        }
        self.waiting = None;
        if !verdict.explained.is_empty() {
            self.notes.push(format!(
                "degraded: {}: {}",
                super::down_list(members).join(", "),
                verdict.explained.join(", ")
            ));
            // Restarting a daemon now could cost the quorum the down hosts already strain.
            if self
                .hosts
                .values()
                .any(|h| obs.get(&h.name).is_some_and(|o| !o.stale.is_empty()) && writable(&h.name))
            {
                self.notes.push(
                    "daemons with older settings are restarted once every host is back".into(),
                );
            }
            return Ok(Vec::new());
        }

        // 8. Daemons running with old settings: restarted one at a time (monitors, managers,
        // OSDs, then metadata servers), each after the cluster is healthy again.
        for kind in ["mon", "mgr", "osd", "mds"] {
            for h in self.hosts.values().filter(|h| writable(&h.name)) {
                let Some(o) = obs.get(&h.name) else { continue };
                let prefix = format!("ceph-{kind}@");
                if let Some(u) = o.stale.iter().find(|u| u.starts_with(&prefix)) {
                    return Ok(vec![Action {
                        host: h.name.clone(),
                        run_on: None,
                        msg: format!("restart {u}: the ceph.conf settings changed after it started (one daemon at a time)"),
                        script: restart_script(kind, &u[prefix.len()..]),
                        stdin: None,
                        serial: true,
                    }]);
                }
            }
        }
        Ok(Vec::new())
    }
}

/// Restarts one daemon and, for a monitor or an OSD, waits until its admin socket says
/// it is back in the cluster (the health gate then waits for the rest).
fn restart_script(kind: &str, id: &str) -> String {
    let ready = match kind {
        "mon" => Some(("mon_status", r#""state": "(leader|peon)""#)),
        "osd" => Some(("status", r#""state": "active""#)),
        _ => None,
    };
    let mut s = format!("set -e\nsystemctl restart ceph-{kind}@{}\n", quote(id));
    if let Some((cmd, re)) = ready {
        s += &format!(
            "i=0; until ceph daemon {kind}.{id} {cmd} 2>/dev/null | grep -qE '{re}'; do\n\
             i=$((i + 1)); [ $i -lt 180 ] || {{ echo \"{kind}.{id} is not back 180 s after its restart\" >&2; exit 1; }}; sleep 1; done\n",
            id = quote(id)
        );
    }
    s
}

/// Makes a monitor's data (only where it has none: a half-made one is removed first) and
/// starts it. The mkfs keyring arrives on stdin. `map` writes "$t/monmap"; `after` runs
/// between mkfs and start (adding the monitor to a running cluster's map).
fn mkfs_script(name: &str, map: &str, after: &str) -> String {
    let n = quote(name);
    format!(
        "d=/var/lib/ceph/mon/ceph-{n}\n[ -e \"$d/done\" ] || rm -rf \"$d\"\n\
         install -d -o ceph -g ceph -m 750 /var/lib/ceph/mon /var/lib/ceph/tmp \"$d\"\n\
         install -d -o ceph -g ceph -m 770 /run/ceph\n\
         t=$(mktemp -d /var/lib/ceph/tmp/provision.XXXXXX); trap 'rm -rf \"$t\"' EXIT\n\
         (umask 077; cat > \"$t/keyring\")\n{map}\nchown -R ceph:ceph \"$t\"\n\
         ceph-mon --cluster ceph --mkfs -i {n} --monmap \"$t/monmap\" --keyring \"$t/keyring\" --setuser ceph --setgroup ceph\n\
         touch \"$d/done\"; chown ceph:ceph \"$d/done\"\n{after}{}",
        daemon_start("mon", name)
    )
}
