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
mod plan;
mod replaced;

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

pub use conf::{pool_size, DOCKER_DROPIN, MOUNT_SERVICE};

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
        // Polls fast at first (a restarted daemon is usually back within seconds), then
        // back off once the wait is long (data moving, a host rebooting).
        let sleep = match &self.waiting {
            None => 0,
            Some((_, since)) if since.elapsed().as_secs() < 20 => 1,
            Some(_) => 3,
        };
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
        let v = plan::View {
            members,
            obs,
            cx,
            fsid,
        };
        if let Some(a) = self.phase_files(&v)? {
            return Ok(a);
        }
        let q = match self.phase_monitors(&v, cluster)? {
            Ok(q) => q,
            Err(a) => return Ok(a),
        };
        for phase in [
            Self::phase_keys,
            Self::phase_daemons,
            Self::phase_replaced,
            Self::phase_pools,
            Self::phase_mounts,
            Self::phase_health,
            Self::phase_restarts,
        ] {
            if let Some(a) = phase(self, &v, &q)? {
                return Ok(a);
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
    // Ceph's units allow few starts in 30 minutes (ceph-mgr@: 3): settings changed a few
    // times in a row would leave the daemon refused by systemd, so the count is reset first.
    let mut s = format!(
        "set -e\nsystemctl reset-failed ceph-{kind}@{id} 2>/dev/null || true\nsystemctl restart ceph-{kind}@{id}\n",
        id = quote(id)
    );
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
