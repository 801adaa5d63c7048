//! Ceph's plan, phase by phase: each phase returns the actions to run now, or None when
//! it has nothing to do and the next phase may look.

use super::*;

/// What one round of planning sees.
pub(super) struct View<'a> {
    pub members: &'a [Member],
    pub obs: IndexMap<String, Obs>,
    pub cx: &'a Ctx<'a>,
    pub fsid: String,
}

impl View<'_> {
    pub fn writable(&self, h: &str) -> bool {
        self.members.iter().any(|m| m.name == h && m.writable)
    }
}

/// The cluster once its monitors are in quorum: the monitor read, what it said, the monitors.
pub(super) struct Quorate {
    pub src: String,
    pub c: Cluster,
    pub mons: Vec<Host>,
}

/// Actions to run now (empty: wait, or done), or None: nothing to do in this phase.
pub(super) type Phase = Result<Option<Vec<Action>>, String>;

impl Ceph {
    pub(super) fn wait_some(&mut self, why: String, detail: &str, cx: &Ctx) -> Phase {
        self.wait(why, detail, cx).map(Some)
    }

    fn wait_err(
        &mut self,
        why: String,
        detail: &str,
        cx: &Ctx,
    ) -> Result<Result<Quorate, Vec<Action>>, String> {
        self.wait(why, detail, cx).map(Err)
    }

    /// 1. ceph.conf, keyrings and units on every host.
    pub(super) fn phase_files(&mut self, v: &View) -> Phase {
        let obs = &v.obs;
        let writable = |h: &str| v.writable(h);
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
            return Ok(Some(b.actions()));
        }
        Ok(None)
    }

    /// 2. Monitors: the first ones created together; then each added, started, in quorum.
    // Long on purpose: the first monitors created together, then each new one added, in order, each step guarded by quorum.
    pub(super) fn phase_monitors(
        &mut self,
        v: &View,
        cluster: Option<(String, Cluster)>,
    ) -> Result<Result<Quorate, Vec<Action>>, String> {
        let members = v.members;
        let obs = &v.obs;
        let cx = v.cx;
        let fsid = &v.fsid;
        let writable = |h: &str| v.writable(h);
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
                return Ok(Err(b.actions()));
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
                return Ok(Err(b.actions()));
            }
            let live = mons.iter().filter(|m| obs.contains_key(&m.name)).count();
            if live <= mons.len() / 2 {
                return Err(format!(
                "the Ceph monitors cannot form a quorum: it needs {} of {}, and only {live} answer; \
                 down: {}. Bring them back, then run again",
                mons.len() / 2 + 1,
                mons.len(),
                crate::cluster::down_list(members).join(", ")
            ));
            }
            let errs: Vec<String> = obs
                .iter()
                .filter_map(|(h, o)| o.query_error.as_ref().map(|e| format!("{h}: {e}")))
                .collect();
            return self.wait_err(
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
                return Ok(Err(vec![Action {
                    host: m.name.clone(),
                    run_on: None,
                    msg: format!(
                        "add monitor {} to the cluster (one at a time, then wait for quorum)",
                        m.name
                    ),
                    script: format!("set -e\n{}", mkfs_script(&m.name, add, &after)),
                    stdin: Some(keyring.into_bytes()),
                    serial: true,
                }]));
            }
            if !quorum.contains(&m.name) {
                if !o.active(&format!("ceph-mon@{}", m.name)) {
                    return Ok(Err(vec![Action {
                        host: m.name.clone(),
                        run_on: None,
                        msg: format!("start monitor {}", m.name),
                        script: format!("set -e\n{}", daemon_start("mon", &m.name)),
                        stdin: None,
                        serial: true,
                    }]));
                }
                return self.wait_err(
                    format!("monitor {} to join the quorum", m.name),
                    &format!("quorum is {}", quorum.join(", ")),
                    cx,
                );
            }
        }
        Ok(Ok(Quorate { src, c, mons }))
    }

    /// 3. Keys the cluster lacks, imported through a monitor for the host they belong to.
    pub(super) fn phase_keys(&mut self, v: &View, q: &Quorate) -> Phase {
        let writable = |h: &str| v.writable(h);
        let src = &q.src;
        let c = &q.c;
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
                    Some(src),
                    format!("import the key of {e} into the cluster via {src}"),
                    "read -r k; printf %s \"$k\" | base64 -d | ceph auth import -i - >/dev/null\n"
                        .into(),
                );
                b.stdin(
                    &owner,
                    Some(src),
                    &format!("{}\n", base64::engine::general_purpose::STANDARD.encode(kr)),
                );
            }
            // Several keys for one owner: each import reads its own line.
            return Ok(Some(b.actions()));
        }
        Ok(None)
    }

    /// 4. Managers, MDSs and OSDs.
    pub(super) fn phase_daemons(&mut self, v: &View, _: &Quorate) -> Phase {
        let obs = &v.obs;
        let fsid = &v.fsid;
        let writable = |h: &str| v.writable(h);
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
                    Some(r) if r.ceph_fsid == *fsid => {
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
                refused.push(crate::cluster::refusal(
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
            return Ok(Some(v));
        }
        Ok(None)
    }

    /// 5. Pools and CephFS, through a monitor.
    pub(super) fn phase_pools(&mut self, v: &View, q: &Quorate) -> Phase {
        let writable = |h: &str| v.writable(h);
        let src = &q.src;
        let c = &q.c;
        let mons = &q.mons;
        let owner = if writable(src) {
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
            b.add(&owner, Some(src), msgs.join("; "), script);
            return Ok(Some(b.actions()));
        }
        Ok(None)
    }

    /// 6. The CephFS mount on its clients, once an MDS is active.
    pub(super) fn phase_mounts(&mut self, v: &View, q: &Quorate) -> Phase {
        let obs = &v.obs;
        let cx = v.cx;
        let writable = |h: &str| v.writable(h);
        let c = &q.c;
        let fs = self.cfg.fs.clone();
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
                    return self.wait_some(
                        format!("an active metadata server for CephFS {fs}"),
                        "",
                        cx,
                    );
                }
                let unit = MOUNT_SERVICE;
                let mut b = Batch::default();
                for h in want {
                    b.add(
                    &h.name,
                    None,
                    format!("mount CephFS {fs} on {} (ceph-fuse, {unit})", self.cfg.mount),
                    format!(
                        // A mount already under way (a host just booted) is waited for, not
                        // restarted: killing a starting ceph-fuse can leave the next one
                        // hanging on the old session.
                        "install -d {m}\nsystemctl enable {u} >/dev/null 2>&1\n\
                         i=0; while [ \"$(systemctl is-active {u})\" = activating ] && [ $i -lt 150 ]; do sleep 1; i=$((i + 1)); done\n\
                         mountpoint -q {m} || systemctl restart {u}\nmountpoint -q {m}\n",
                        m = quote(&self.cfg.mount),
                        u = unit
                    ),
                );
                }
                return Ok(Some(b.actions()));
            }
        }
        Ok(None)
    }

    /// 7. The health gate: waits, or explains what the down hosts explain.
    pub(super) fn phase_health(&mut self, v: &View, q: &Quorate) -> Phase {
        let members = v.members;
        let obs = &v.obs;
        let cx = v.cx;
        let writable = |h: &str| v.writable(h);
        let c = &q.c;
        let mons = &q.mons;
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
            c,
            &health::Gate {
                mons: &mon_names,
                down: &down,
                wanted_osds,
                allow: &self.cfg.health_allow,
            },
        );
        if !verdict.why.is_empty() {
            return self.wait_some("Ceph to be healthy".into(), &verdict.why.join("; "), cx);
        }
        // After a change or a wait, healthy once is not enough: it must still hold
        // 1.5 s later (an OSD just up is in the OSD map before its PGs show peering).
        if self.stirred && !cx.check {
            let since = *self.healthy_since.get_or_insert_with(Instant::now);
            if since.elapsed().as_millis() < 1500 {
                let w = self.waiting.take();
                self.waiting = Some((
                    "Ceph to stay healthy".into(),
                    w.map_or_else(Instant::now, |(_, t)| t),
                ));
                return Ok(Some(Vec::new()));
            }
        }
        self.waiting = None;
        if !verdict.explained.is_empty() {
            self.notes.push(format!(
                "degraded: {}: {}",
                crate::cluster::down_list(members).join(", "),
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
            return Ok(Some(Vec::new()));
        }
        Ok(None)
    }

    /// 8. Daemons running with old settings: restarted one at a time (monitors, managers, OSDs, then metadata servers), each after the cluster is healthy again.
    pub(super) fn phase_restarts(&mut self, v: &View, _: &Quorate) -> Phase {
        let obs = &v.obs;
        let writable = |h: &str| v.writable(h);
        for kind in ["mon", "mgr", "osd", "mds"] {
            for h in self.hosts.values().filter(|h| writable(&h.name)) {
                let Some(o) = obs.get(&h.name) else { continue };
                let prefix = format!("ceph-{kind}@");
                if let Some(u) = o.stale.iter().find(|u| u.starts_with(&prefix)) {
                    return Ok(Some(vec![Action {
                    host: h.name.clone(),
                    run_on: None,
                    msg: format!("restart {u}: the ceph.conf settings changed after it started (one daemon at a time)"),
                    script: restart_script(kind, &u[prefix.len()..]),
                    stdin: None,
                    serial: true,
                }]));
                }
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::testing::{member, with_ctx, with_down};
    use serde_json::json;

    /// Three monitors with managers, each with one OSD device.
    fn hosts(devices: Value) -> Vec<Member> {
        (1..=3)
            .map(|i| {
                member(
                    &format!("n{i}"),
                    json!({"address": format!("10.0.0.{i}"), "mon": true, "mgr": true, "osd_devices": devices}),
                    true,
                )
            })
            .collect()
    }

    fn quorate(pools: Vec<Value>) -> Quorate {
        Quorate {
            src: "n1".into(),
            c: Cluster {
                pools,
                ..Cluster::default()
            },
            mons: Vec::new(),
        }
    }

    /// Runs `phase` on a Ceph step prepared for `ms`, each host seen as `obs`.
    fn phase(ms: &[Member], obs: Obs, f: impl Fn(&mut Ceph, &View) -> Phase) -> Phase {
        with_ctx(false, |cx| {
            let mut c = Ceph::default();
            c.prepare(ms, cx).unwrap();
            let v = View {
                members: ms,
                obs: ms
                    .iter()
                    .filter(|m| m.down.is_none())
                    .map(|m| (m.name.clone(), obs.clone()))
                    .collect(),
                cx,
                fsid: "f1".into(),
            };
            f(&mut c, &v)
        })
    }

    fn with_data() -> Obs {
        Obs {
            devices: vec![super::observe::Device {
                missing: false,
                signatures: vec!["TYPE=ext4".into()],
                reasons: Vec::new(),
            }],
            ..Obs::default()
        }
    }

    #[test]
    fn a_device_holding_data_is_refused_unless_marked_wipe() {
        let ms = hosts(json!(["/dev/vdb"]));
        let a = phase(&ms, with_data(), |c, v| {
            c.phase_daemons(v, &quorate(vec![]))
        })
        .unwrap()
        .unwrap();
        let refused: Vec<&Action> = a
            .iter()
            .filter(|a| a.msg.starts_with("refuse OSD"))
            .collect();
        assert_eq!(refused.len(), 3, "{a:?}");
        assert!(
            refused[0]
                .msg
                .contains("/dev/vdb on n1 holds data (TYPE=ext4): left untouched"),
            "{}",
            refused[0].msg
        );
        assert!(
            !a.iter().any(|a| a.script.contains("wipefs")),
            "nothing erased"
        );
        let ms = hosts(json!([{"path": "/dev/vdb", "wipe": true}]));
        let a = phase(&ms, with_data(), |c, v| {
            c.phase_daemons(v, &quorate(vec![]))
        })
        .unwrap()
        .unwrap();
        let osd = a
            .iter()
            .find(|a| a.host == "n1" && a.msg.contains("wipe /dev/vdb"))
            .expect("wiped");
        assert!(
            osd.script.contains("wipefs -a /dev/vdb") && osd.script.contains("raw prepare"),
            "{}",
            osd.script
        );
    }

    #[test]
    fn pool_replication_is_counted_from_the_inventory_never_lowered_for_a_host_down() {
        let pool = |s: u64, m: u64| json!({"pool_name": "cephfs_data", "size": s, "min_size": m});
        let ms = with_down(hosts(json!(["/dev/vdb"])), &["n3"]);
        let r = phase(&ms, Obs::default(), |c, v| {
            c.phase_pools(v, &quorate(vec![pool(3, 2)]))
        });
        assert!(
            r.unwrap().is_none(),
            "3 OSD hosts with one down: pools stay 3/2"
        );
        let r = phase(&ms, Obs::default(), |c, v| {
            c.phase_pools(v, &quorate(vec![pool(2, 1)]))
        })
        .unwrap()
        .unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].host, "n1");
        assert_eq!(r[0].msg, "pool cephfs_data: size 3, min_size 2 (was 2, 1)");
    }
}
