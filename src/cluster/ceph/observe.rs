//! What a Ceph host reports: files and units, its OSD devices, and (on a monitor with the
//! admin key) the cluster's own view, read through one librados connection.

use super::super::sections;
use crate::transport::quote;
use indexmap::IndexMap;
use serde::Deserialize;
use serde_json::Value;

/// The cluster queries run on a monitor in one librados connection (python3-rados comes
/// with ceph-common). Keys never leave the host: `auth ls` is cut to entity names.
const QUERY: &str = r#"python3 - <<'PY'
import json
try:
    import rados
    c = rados.Rados(conffile='/etc/ceph/ceph.conf', name='client.admin',
                    conf={'keyring': '/etc/ceph/ceph.client.admin.keyring'})
    c.connect(timeout=8)
except Exception as e:
    print("==PROVISION query-error")
    print(str(e))
    raise SystemExit(0)
for sec, cmd in [("status", {"prefix": "status"}), ("mondump", {"prefix": "mon dump"}),
                 ("auth", {"prefix": "auth ls"}), ("pools", {"prefix": "osd pool ls", "detail": "detail"}),
                 ("fs", {"prefix": "fs ls"}), ("tree", {"prefix": "osd tree"})]:
    cmd["format"] = "json"
    try:
        ret, out, err = c.mon_command(json.dumps(cmd), b'', timeout=8)
    except Exception as e:
        ret, out = -1, b''
    print("==PROVISION " + sec)
    if ret != 0:
        continue
    if sec == "auth":
        print(json.dumps([a.get("entity") for a in json.loads(out).get("auth_dump", [])]))
    else:
        print(out.decode())
c.shutdown()
PY
"#;

pub struct ProbeOpts<'a> {
    pub host: &'a str,
    pub files: &'a [String],
    pub mon: bool,
    pub devices: &'a [String],
    pub allow_loop: bool,
    /// Seconds to wait first (the step is waiting for the cluster to settle).
    pub sleep: u32,
}

pub fn probe_script(o: &ProbeOpts) -> String {
    let mut s = String::new();
    if o.sleep > 0 {
        s += &format!("sleep {}\n", o.sleep);
    }
    s += "echo '==PROVISION conf'; cat /etc/ceph/ceph.conf 2>/dev/null\necho '==PROVISION files'\n";
    for f in o.files {
        s += &format!("[ -e {f} ] && sha256sum {f}\n", f = quote(f));
    }
    let h = quote(o.host);
    s += &format!(
        "echo '==PROVISION mondata'; [ -e /var/lib/ceph/mon/ceph-{h}/done ] && echo yes\n\
         echo '==PROVISION units'\n\
         for u in ceph-mon@{h} ceph-mgr@{h} ceph-mds@{h}; do echo \"$u $(systemctl is-active $u 2>/dev/null)\"; done\n\
         echo '==PROVISION osds'\n\
         for d in /var/lib/ceph/osd/ceph-*; do [ -f \"$d/whoami\" ] && i=$(cat \"$d/whoami\") && echo \"$i $(systemctl is-active ceph-osd@$i 2>/dev/null)\"; done\n"
    );
    if !o.devices.is_empty() {
        let env = if o.allow_loop {
            "CEPH_VOLUME_ALLOW_LOOP_DEVICES=true "
        } else {
            ""
        };
        let devs: Vec<String> = o.devices.iter().map(|d| quote(d)).collect();
        s += &format!(
            "echo '==PROVISION rawlist'; {env}ceph-volume raw list {} --format json 2>/dev/null\n",
            devs.join(" ")
        );
        for (i, d) in o.devices.iter().enumerate() {
            let d = quote(d);
            s += &format!(
                "echo '==PROVISION dev{i}'; if [ -b {d} ]; then blkid -p -o export {d} 2>/dev/null | grep -E '^(TYPE|PTTYPE|UUID|LABEL)='; \
                 if blkid -p {d} >/dev/null 2>&1 && ! blkid -p -s TYPE -o value {d} 2>/dev/null | grep -qx ceph_bluestore; then echo '--reasons'; {env}ceph-volume inventory --format json {d} 2>/dev/null; fi; else echo missing; fi\n"
            );
        }
    }
    // Daemons started before the settings stamp last changed (their settings are old).
    s += &format!(
        "echo '==PROVISION stale'\nif [ -e {st} ]; then st=$(stat -c %Y {st}); now=$(date +%s)\n\
         for u in ceph-mon@{h} ceph-mgr@{h} ceph-mds@{h} $(for d in /var/lib/ceph/osd/ceph-*; do [ -f \"$d/whoami\" ] && echo ceph-osd@$(cat \"$d/whoami\"); done); do\n\
         p=$(systemctl show -p MainPID --value \"$u\" 2>/dev/null); [ \"${{p:-0}}\" -gt 0 ] 2>/dev/null || continue\n\
         e=$(ps -o etimes= -p \"$p\" 2>/dev/null) || continue\n\
         [ $((now - e)) -lt \"$st\" ] && echo \"$u\"\ndone; fi\n",
        st = super::conf::SETTINGS_STAMP
    );
    s += "echo '==PROVISION mounts'; cat /proc/mounts\n";
    if o.mon {
        s += "if [ -r /etc/ceph/ceph.client.admin.keyring ] && systemctl is-active --quiet ceph-mon@";
        s += &h;
        s += "; then\n";
        s += QUERY;
        s += "fi\n";
    }
    s += "true\n";
    s
}

#[derive(Deserialize, Debug, Clone, Default)]
#[serde(default)]
pub struct RawOsd {
    pub ceph_fsid: String,
    pub device: String,
    pub osd_id: i64,
}

/// The cluster as a monitor sees it.
#[derive(Debug, Clone, Default)]
pub struct Cluster {
    pub status: Value,
    pub mons: Vec<(String, String)>,
    pub entities: Vec<String>,
    pub pools: Vec<Value>,
    pub fs: Vec<String>,
    pub tree: Value,
}

impl Cluster {
    pub fn quorum(&self) -> Vec<String> {
        self.status["quorum_names"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }
    pub fn fsid(&self) -> &str {
        self.status["fsid"].as_str().unwrap_or("")
    }
    pub fn health(&self) -> &str {
        self.status["health"]["status"].as_str().unwrap_or("?")
    }
    /// Health check codes with their summaries.
    pub fn checks(&self) -> Vec<(String, String)> {
        self.status["health"]["checks"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| {
                        (
                            k.clone(),
                            v["summary"]["message"].as_str().unwrap_or("").to_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
    pub fn osd_counts(&self) -> (u64, u64, u64) {
        let o = &self.status["osdmap"];
        let n = |k: &str| {
            o[k].as_u64()
                .or_else(|| o["osdmap"][k].as_u64())
                .unwrap_or(0)
        };
        (n("num_osds"), n("num_up_osds"), n("num_in_osds"))
    }
    /// PG states other than active+clean, with counts; empty when all are clean.
    pub fn unclean_pgs(&self) -> Vec<String> {
        self.status["pgmap"]["pgs_by_state"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|s| s["state_name"] != "active+clean")
                    .map(|s| format!("{} {}", s["count"], s["state_name"].as_str().unwrap_or("?")))
                    .collect()
            })
            .unwrap_or_default()
    }
    pub fn mgr_available(&self) -> bool {
        self.status["mgrmap"]["available"]
            .as_bool()
            .unwrap_or(false)
    }
    pub fn mds_active(&self) -> bool {
        self.status["fsmap"]["by_rank"]
            .as_array()
            .is_some_and(|a| a.iter().any(|r| r["status"] == "up:active"))
    }
    pub fn pool_size(&self, name: &str) -> Option<(u64, u64)> {
        self.pools.iter().find(|p| p["pool_name"] == name).map(|p| {
            (
                p["size"].as_u64().unwrap_or(0),
                p["min_size"].as_u64().unwrap_or(0),
            )
        })
    }
    /// CRUSH host buckets and the OSD ids under each.
    pub fn crush_hosts(&self) -> IndexMap<String, Vec<i64>> {
        let mut out = IndexMap::new();
        for n in self.tree["nodes"].as_array().into_iter().flatten() {
            if n["type"] == "host" {
                let ids = n["children"]
                    .as_array()
                    .map(|a| a.iter().filter_map(Value::as_i64).collect())
                    .unwrap_or_default();
                out.insert(n["name"].as_str().unwrap_or("").to_owned(), ids);
            }
        }
        out
    }
}

/// One device as the host reported it.
#[derive(Debug, Clone, Default)]
pub struct Device {
    pub missing: bool,
    /// blkid's findings (`TYPE=ext4`, ...), empty on a blank device.
    pub signatures: Vec<String>,
    /// ceph-volume's reasons for rejecting it, when it has any (not asked of a BlueStore
    /// device: its OSD, ours or foreign, is named from `raw list`).
    pub reasons: Vec<String>,
}

#[derive(Debug, Clone, Default)]
pub struct Obs {
    pub conf: String,
    /// Path to sha256 of files that exist.
    pub files: IndexMap<String, String>,
    pub mon_data: bool,
    pub units: IndexMap<String, bool>,
    /// OSD ids mounted on this host, with whether their unit is active.
    pub osds: IndexMap<i64, bool>,
    pub raw: Vec<RawOsd>,
    pub devices: Vec<Device>,
    pub mounts: String,
    /// Daemon units running with settings older than the stamp.
    pub stale: Vec<String>,
    pub cluster: Option<Cluster>,
    pub query_error: Option<String>,
}

pub fn parse(out: &str, ndev: usize) -> Obs {
    let s = sections(out);
    let get = |k: &str| s.get(k).cloned().unwrap_or_default();
    let mut o = Obs {
        conf: get("conf"),
        mon_data: get("mondata").trim() == "yes",
        mounts: get("mounts"),
        stale: get("stale").lines().map(str::to_owned).collect(),
        ..Obs::default()
    };
    for l in get("files").lines() {
        if let Some((sha, path)) = l.split_once("  ") {
            o.files.insert(path.trim().to_owned(), sha.to_owned());
        }
    }
    for l in get("units").lines() {
        if let Some((u, st)) = l.split_once(' ') {
            o.units.insert(u.to_owned(), st.trim() == "active");
        }
    }
    for l in get("osds").lines() {
        if let Some((id, st)) = l.split_once(' ') {
            if let Ok(id) = id.parse() {
                o.osds.insert(id, st.trim() == "active");
            }
        }
    }
    if let Ok(m) =
        serde_json::from_str::<std::collections::BTreeMap<String, RawOsd>>(get("rawlist").trim())
    {
        o.raw = m.into_values().collect();
    }
    for i in 0..ndev {
        let t = get(&format!("dev{i}"));
        let (sig, reasons) = t.split_once("--reasons").unwrap_or((&t, ""));
        let reasons = serde_json::from_str::<Value>(reasons.trim())
            .ok()
            .and_then(|v| {
                let r = if v.is_array() { v[0].clone() } else { v };
                r["rejected_reasons"].as_array().cloned()
            })
            .unwrap_or_default()
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect();
        o.devices.push(Device {
            missing: sig.trim() == "missing",
            signatures: sig
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && *l != "missing")
                .map(str::to_owned)
                .collect(),
            reasons,
        });
    }
    if let Some(e) = s.get("query-error") {
        o.query_error = Some(e.trim().to_owned());
    } else if let Some(st) = s.get("status") {
        let json = |k: &str| serde_json::from_str::<Value>(get(k).trim()).unwrap_or(Value::Null);
        let status: Value = serde_json::from_str(st.trim()).unwrap_or(Value::Null);
        if !status.is_null() {
            let mondump = json("mondump");
            o.cluster = Some(Cluster {
                status,
                mons: mondump["mons"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|m| {
                        (
                            m["name"].as_str().unwrap_or("").to_owned(),
                            m["addr"].as_str().unwrap_or("").to_owned(),
                        )
                    })
                    .collect(),
                entities: serde_json::from_str(get("auth").trim()).unwrap_or_default(),
                pools: json("pools").as_array().cloned().unwrap_or_default(),
                fs: json("fs")
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|f| f["name"].as_str().map(str::to_owned))
                    .collect(),
                tree: json("tree"),
            });
        }
    }
    o
}

impl Obs {
    pub fn active(&self, unit: &str) -> bool {
        self.units.get(unit).copied().unwrap_or(false)
    }
    pub fn mounted(&self, path: &str) -> bool {
        self.mounts
            .lines()
            .any(|l| l.split_whitespace().nth(1) == Some(path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_files_units_devices_and_cluster() {
        let out = "==PROVISION conf\n[global]\n==PROVISION files\nabc  /etc/ceph/ceph.conf\n\
                   ==PROVISION mondata\nyes\n==PROVISION units\nceph-mon@n1 active\nceph-mgr@n1 inactive\n\
                   ==PROVISION osds\n0 active\n==PROVISION rawlist\n{\"u\": {\"ceph_fsid\": \"f\", \"device\": \"/dev/loop1\", \"osd_id\": 0}}\n\
                   ==PROVISION dev0\n==PROVISION dev1\nTYPE=ext4\nUUID=x\n--reasons\n{\"available\": false, \"rejected_reasons\": [\"Has a FileSystem\"]}\n\
                   ==PROVISION stale\nceph-osd@0\n==PROVISION mounts\nnone /mnt/cephfs fuse.ceph-fuse rw 0 0\n\
                   ==PROVISION status\n{\"fsid\": \"f\", \"quorum_names\": [\"n1\"], \"health\": {\"status\": \"HEALTH_WARN\", \"checks\": {\"X\": {\"summary\": {\"message\": \"m\"}}}}, \
                   \"osdmap\": {\"num_osds\": 3, \"num_up_osds\": 2, \"num_in_osds\": 3}, \"pgmap\": {\"pgs_by_state\": [{\"state_name\": \"active+clean\", \"count\": 5}, {\"state_name\": \"peering\", \"count\": 1}]}}\n\
                   ==PROVISION mondump\n{\"mons\": [{\"name\": \"n1\", \"addr\": \"10.0.0.1:6789/0\"}]}\n\
                   ==PROVISION auth\n[\"mon.\", \"client.admin\"]\n==PROVISION pools\n[{\"pool_name\": \"p\", \"size\": 2, \"min_size\": 1}]\n\
                   ==PROVISION fs\n[{\"name\": \"cephfs\"}]\n==PROVISION tree\n{\"nodes\": [{\"id\": -2, \"name\": \"n1\", \"type\": \"host\", \"children\": [0]}]}\n";
        let o = parse(out, 2);
        assert!(o.mon_data && o.active("ceph-mon@n1") && !o.active("ceph-mgr@n1"));
        assert_eq!(o.files["/etc/ceph/ceph.conf"], "abc");
        assert!(o.osds[&0]);
        assert_eq!(o.raw[0].device, "/dev/loop1");
        assert!(o.devices[0].signatures.is_empty() && !o.devices[0].missing);
        assert_eq!(o.devices[1].signatures, vec!["TYPE=ext4", "UUID=x"]);
        assert_eq!(o.devices[1].reasons, vec!["Has a FileSystem"]);
        assert!(o.mounted("/mnt/cephfs") && !o.mounted("/mnt"));
        assert_eq!(o.stale, vec!["ceph-osd@0"]);
        let c = o.cluster.unwrap();
        assert_eq!(c.quorum(), vec!["n1"]);
        assert_eq!(c.osd_counts(), (3, 2, 3));
        assert_eq!(c.unclean_pgs(), vec!["1 peering"]);
        assert_eq!(c.checks(), vec![("X".to_string(), "m".to_string())]);
        assert_eq!(c.pool_size("p"), Some((2, 1)));
        assert_eq!(c.fs, vec!["cephfs"]);
        assert_eq!(c.entities, vec!["mon.", "client.admin"]);
        assert_eq!(c.crush_hosts()["n1"], vec![0]);
    }
}
