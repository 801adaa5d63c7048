//! Ceph in `provision audit`: each Ceph host's daemons against the inventory, the CephFS
//! mount on its clients, and the cluster's health from the first monitor that answers.

use super::observe::{self, Obs};
use crate::finding::Finding;
use indexmap::IndexMap;
use serde_json::Value;

/// What the inventory wants of one Ceph host.
#[derive(Clone, Debug, Default)]
pub struct Want {
    pub mon: bool,
    pub mgr: bool,
    pub mds: bool,
    pub mount: Option<String>,
    pub devices: Vec<String>,
    pub allow_loop: bool,
}

/// The device paths of a `ceph_osd_devices` value (paths or `{path, wipe}`).
pub fn device_paths(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|d| d.as_str().or_else(|| d["path"].as_str()).map(str::to_owned))
        .collect()
}

/// What the inventory wants of `h` in Ceph, when it is a Ceph host; `vars` are its
/// variables over the role's defaults.
pub fn want(
    inv: &crate::inventory::Inventory,
    h: &str,
    vars: &serde_json::Map<String, Value>,
) -> Option<Want> {
    let inside = |g: &str| inv.groups.get(g).is_some_and(|m| m.contains(h));
    let groups = [
        "ceph_mons",
        "ceph_mgrs",
        "ceph_mds",
        "ceph_osds",
        "ceph_clients",
    ];
    if !inv.groups.contains_key("ceph_osds") || !groups.iter().any(|g| inside(g)) {
        return None;
    }
    let fs = vars
        .get("cephfs_name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let mount = vars
        .get("cephfs_mount")
        .and_then(Value::as_str)
        .unwrap_or_default();
    Some(Want {
        mon: inside("ceph_mons"),
        mgr: inside("ceph_mgrs"),
        mds: inside("ceph_mds") && !fs.is_empty(),
        mount: (inside("ceph_clients") && !fs.is_empty()).then(|| mount.to_owned()),
        devices: device_paths(vars.get("ceph_osd_devices")),
        allow_loop: vars
            .get("ceph_allow_loop_devices")
            .and_then(Value::as_bool)
            .unwrap_or(false),
    })
}

/// The health checks `vars` (`ceph_health_allow`) accept.
pub fn health_allow(vars: &serde_json::Map<String, Value>) -> Vec<String> {
    vars.get("ceph_health_allow")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The read-only script for one host (the step's own probe).
pub fn script(host: &str, w: &Want) -> String {
    observe::probe_script(&observe::ProbeOpts {
        host,
        files: &[],
        mon: w.mon,
        devices: &w.devices,
        allow_loop: w.allow_loop,
        sleep: 0,
    })
}

fn finding(
    id: &str,
    title: &str,
    pass: bool,
    expected: String,
    actual: String,
    why: &str,
) -> Finding {
    Finding {
        id: id.into(),
        title: title.into(),
        reason: why.into(),
        pass,
        expected,
        actual,
    }
}

/// `mons` are the inventory's monitors; `down` the Ceph hosts that did not answer, with
/// their OSD device counts: what they explain is reported apart from what they do not.
// Long on purpose: a list of independent Ceph checks, one finding each.
pub fn findings(
    outputs: &IndexMap<String, (String, Want)>,
    allow: &[String],
    mons: &[String],
    down: &[(String, usize)],
) -> IndexMap<String, Vec<Finding>> {
    let seen: IndexMap<String, (Obs, &Want)> = outputs
        .iter()
        .map(|(h, (o, w))| (h.clone(), (observe::parse(o, w.devices.len()), w)))
        .collect();
    let mut out: IndexMap<String, Vec<Finding>> = IndexMap::new();
    for (h, (o, w)) in &seen {
        let f = out.entry(h.clone()).or_default();
        let mut want = Vec::new();
        let mut have = Vec::new();
        for (on, kind) in [(w.mon, "mon"), (w.mgr, "mgr"), (w.mds, "mds")] {
            if on {
                want.push(kind.to_string());
                if o.active(&format!("ceph-{kind}@{h}")) {
                    have.push(kind.to_string());
                }
            }
        }
        if !w.devices.is_empty() {
            want.push(format!("{} OSD(s)", w.devices.len()));
            let up = o.osds.values().filter(|a| **a).count();
            have.push(format!("{up} OSD(s)"));
        }
        if !want.is_empty() {
            f.push(finding(
                "ceph-daemons",
                "the Ceph daemons the inventory gives this host are running",
                want == have,
                want.join(", "),
                if have.is_empty() {
                    "none".into()
                } else {
                    have.join(", ")
                },
                "a stopped daemon leaves the cluster with less redundancy than planned",
            ));
            f.push(finding(
                "ceph-settings",
                "the Ceph daemons run with ceph.conf's current settings",
                o.stale.is_empty(),
                "every daemon started after the settings last changed".into(),
                if o.stale.is_empty() {
                    "yes".into()
                } else {
                    format!("started before: {}", o.stale.join(", "))
                },
                "a setting in ceph.conf does nothing until the daemon restarts; the next run restarts them one at a time",
            ));
        }
        if let Some(m) = &w.mount {
            f.push(finding(
                "ceph-mount",
                "CephFS is mounted",
                o.mounted(m),
                format!("mounted on {m}"),
                if o.mounted(m) {
                    format!("mounted on {m}")
                } else {
                    "not mounted".into()
                },
                "services that use the shared volume would write to the local disk",
            ));
        }
    }
    let mon_hosts: Vec<&String> = seen
        .iter()
        .filter(|(_, (_, w))| w.mon)
        .map(|(h, _)| h)
        .collect();
    let view = seen.iter().find_map(|(h, (o, _))| {
        o.cluster
            .as_ref()
            .filter(|c| !c.quorum().is_empty())
            .map(|c| (h, c))
    });
    match view {
        Some((h, c)) => {
            let wanted_osds = seen.values().map(|(_, w)| w.devices.len()).sum::<usize>();
            let v = super::health::judge(
                c,
                &super::health::Gate {
                    mons,
                    down,
                    wanted_osds,
                    allow,
                },
            );
            let f = out.entry(h.clone()).or_default();
            f.push(finding(
                "ceph-health",
                "Ceph is healthy",
                v.why.is_empty(),
                "HEALTH_OK, every monitor in quorum, PGs active+clean".into(),
                if v.why.is_empty() {
                    c.health().to_owned()
                } else {
                    format!("{}: {}", c.health(), v.why.join("; "))
                },
                "a degraded cluster may lose data on the next failure",
            ));
            if !down.is_empty() {
                let names: Vec<&str> = down.iter().map(|(d, _)| d.as_str()).collect();
                f.push(finding(
                    "ceph-down-hosts",
                    "every Ceph host answers",
                    false,
                    "every Ceph host reachable, its daemons in the cluster".into(),
                    format!(
                        "{} unreachable{}",
                        names.join(", "),
                        if v.explained.is_empty() {
                            String::new()
                        } else {
                            format!(": {}", v.explained.join(", "))
                        }
                    ),
                    "the cluster runs with less redundancy until they are back",
                ));
            }
        }
        None => {
            for h in mon_hosts {
                out.entry(h.clone()).or_default().push(finding(
                    "ceph-health",
                    "Ceph is healthy",
                    false,
                    "a monitor in quorum answers".into(),
                    "no monitor of a Ceph cluster answered".into(),
                    "without a quorum Ceph serves no data",
                ));
            }
        }
    }
    out
}
