//! Ceph on fresh lab hosts with a blank loop device each (packages from the lab's
//! repository): 3 monitors in quorum, a manager active with standbys, one OSD per host
//! and one CRUSH host per node, HEALTH_OK; CephFS mounted before docker and shared by
//! containers on two nodes; a second run that changes and restarts nothing; a fourth
//! host whose disk holds a filesystem refused untouched, then wiped on request and
//! joined; a host restarted whose monitor and OSD come back; the audit; a lost key file
//! refused.

mod common;
use common::*;
use std::path::Path;
use std::time::{Duration, Instant};

const IMAGE: &str = "10.200.0.1:5000/busybox:lab";

/// node1-3 are managers, monitors and OSD hosts; `node4` is node4's OSD device (none when
/// empty); with `five_mons`, node4 and node5 are monitors too.
fn inventory(d: &Path, node4: &str, five_mons: bool) {
    let disks = disks();
    let host = |i: usize| {
        format!(
            "        node{i}: {{ ansible_host: 10.200.0.1{i}, ceph_osd_devices: [{}] }}\n",
            disks[i - 1]
        )
    };
    let osds: String = (1..=3).map(host).collect();
    let extra = match node4 {
        "" => String::new(),
        dev => {
            format!("        node4: {{ ansible_host: 10.200.0.14, ceph_osd_devices: [{dev}] }}\n")
        }
    };
    write(
        d,
        "inventory.yml",
        &format!(
            "{}    ceph_allow_loop_devices: true\n    ceph_conf: {{ mon_data_avail_warn: 5, osd_memory_target: 939524096 }}\n  \
             children:\n    managers:\n      hosts:\n        node1: {{ ansible_host: 10.200.0.11 }}\n        node2: {{ ansible_host: 10.200.0.12 }}\n        node3: {{ ansible_host: 10.200.0.13 }}\n    \
             ceph_osds:\n      hosts:\n{osds}{extra}{mons}",
            lab_vars(),
            mons = if five_mons {
                "    ceph_mons:\n      hosts: { node1: {}, node2: {}, node3: {}, node4: {}, node5: { ansible_host: 10.200.0.15 } }\n    \
                 ceph_mgrs:\n      hosts: { node1: {}, node2: {}, node3: {} }\n    ceph_mds:\n      hosts: { node1: {}, node2: {}, node3: {} }\n"
            } else {
                ""
            }
        ),
    );
}

fn run(d: &Path, extra: &[&str]) -> (Option<i32>, String) {
    let o = std::process::Command::new(BIN)
        .arg(d.join("inventory.yml"))
        .args(extra)
        .output()
        .unwrap();
    (o.status.code(), text(&o))
}

fn status() -> serde_json::Value {
    serde_json::from_str(&ssh("node1", "sudo ceph -s -f json")).unwrap()
}

/// Polls `ceph -s` until `ok` holds (up to `secs`), returning the last status.
fn wait_for(secs: u64, ok: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let start = Instant::now();
    loop {
        let (rc, out) = ssh_rc("node1", "sudo timeout 20 ceph -s -f json");
        if rc == 0 {
            let s: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
            if ok(&s) || start.elapsed() > Duration::from_secs(secs) {
                return s;
            }
        } else if start.elapsed() > Duration::from_secs(secs) {
            panic!("ceph -s failed: {out}");
        }
        std::thread::sleep(Duration::from_secs(2));
    }
}

fn crush_hosts() -> Vec<(String, usize)> {
    let t: serde_json::Value =
        serde_json::from_str(&ssh("node1", "sudo ceph osd tree -f json")).unwrap();
    let mut v: Vec<(String, usize)> = t["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["type"] == "host")
        .map(|n| {
            (
                n["name"].as_str().unwrap().to_owned(),
                n["children"].as_array().map(|c| c.len()).unwrap_or(0),
            )
        })
        .collect();
    v.sort();
    v
}

fn healthy(s: &serde_json::Value, osds: u64) -> bool {
    s["health"]["status"] == "HEALTH_OK"
        && s["osdmap"]["num_up_osds"] == osds
        && s["osdmap"]["num_in_osds"] == osds
        && s["quorum_names"].as_array().map(|q| q.len()) == Some(3)
}

fn pid(node: &str, unit: &str) -> String {
    ssh(node, &format!("systemctl show -p MainPID --value {unit}"))
}

#[test]
fn ceph_cluster_on_fresh_hosts() {
    let Some(_lab) = LabGuard::start(&["lab", "up", "5", "--disk", "8G", "--fresh", "--registry"])
    else {
        return;
    };
    let d = tempfile::tempdir().unwrap();
    let disks = disks();
    // node4's disk holds a filesystem: it must be refused and left alone.
    ssh("node4", &format!("sudo mkfs.ext4 -q -F {}", disks[3]));
    inventory(d.path(), "", false);

    let t = Instant::now();
    let (rc, out) = run(d.path(), &[]);
    assert_eq!(rc, Some(0), "{out}");
    println!(
        "fresh hosts to HEALTH_OK with CephFS mounted and a swarm: {:.0} s",
        t.elapsed().as_secs_f64()
    );
    let s = status();
    assert!(healthy(&s, 3), "{s}");
    assert_eq!(s["mgrmap"]["available"], true, "{s}");
    assert_eq!(s["mgrmap"]["num_standbys"], 2, "{s}");
    assert_eq!(
        crush_hosts(),
        vec![
            ("node1".into(), 1),
            ("node2".into(), 1),
            ("node3".into(), 1)
        ]
    );
    // The monitors listen on their own addresses, v2 and v1, not on 127.0.1.1.
    let dump = ssh("node1", "sudo ceph mon dump 2>/dev/null");
    assert!(
        dump.contains("[v2:10.200.0.12:3300/0,v1:10.200.0.12:6789/0] mon.node2"),
        "{dump}"
    );
    // Keys: 0600, owned by ceph; never printed; the controller's copy 0600.
    let state = d.path().join(".provision/ceph.json");
    let keys: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(&state).unwrap().mode() & 0o777, 0o600);
    for k in keys["keys"].as_object().unwrap().values() {
        assert!(!out.contains(k.as_str().unwrap()), "a key was printed");
    }
    assert_eq!(
        ssh("node1", "sudo stat -c '%a %U' /etc/ceph/ceph.client.admin.keyring /var/lib/ceph/bootstrap-osd/ceph.keyring /etc/ceph/ceph.client.swarm.keyring"),
        "600 ceph\n600 ceph\n600 ceph"
    );
    assert!(
        ssh("node1", "sudo cat /var/lib/ceph/mgr/ceph-node1/keyring")
            .contains(keys["keys"]["mgr.node1"].as_str().unwrap())
    );
    assert_eq!(
        ssh(
            "node4",
            &format!("sudo blkid -o value -s TYPE {}", disks[3])
        ),
        "ext4"
    );

    // CephFS: mounted on every swarm node before docker; containers on two nodes share it.
    for n in ["node1", "node2", "node3"] {
        assert_eq!(
            ssh(n, "findmnt -n -o FSTYPE /mnt/cephfs"),
            "fuse.ceph-fuse",
            "{n}"
        );
        assert!(
            ssh(n, "systemctl show -p After docker.service").contains("provision-cephfs.service")
        );
    }
    ssh("node1", &format!("sudo docker run --rm -v /mnt/cephfs:/data {IMAGE} sh -c 'echo written-on-node1 > /data/shared.txt'"));
    assert_eq!(
        ssh(
            "node3",
            &format!("sudo docker run --rm -v /mnt/cephfs:/data {IMAGE} cat /data/shared.txt")
        ),
        "written-on-node1"
    );

    // A second run: no change, no restart, no new key, the same OSDs.
    let osds = ssh("node1", "sudo ceph osd ls");
    let osd2 = format!(
        "ceph-osd@{}",
        ssh("node2", "sudo sh -c 'cat /var/lib/ceph/osd/ceph-*/whoami'")
    );
    let units = ["ceph-mon@node2", "ceph-mgr@node2", osd2.as_str()];
    let pids: Vec<String> = units.iter().map(|u| pid("node2", u)).collect();
    assert!(pids.iter().all(|p| p != "0"), "{pids:?}");
    let sum = std::fs::read(&state).unwrap();
    let t = Instant::now();
    let (rc, out2) = run(d.path(), &[]);
    assert_eq!(rc, Some(0), "{out2}");
    println!("second run: {:.1} s", t.elapsed().as_secs_f64());
    for n in ["node1", "node2", "node3"] {
        assert_eq!(recap(&out2, n, "changed"), 0, "{out2}");
    }
    assert_eq!(ssh("node1", "sudo ceph osd ls"), osds);
    let again: Vec<String> = units.iter().map(|u| pid("node2", u)).collect();
    assert_eq!(pids, again, "a daemon was restarted");
    assert_eq!(std::fs::read(&state).unwrap(), sum, "keys changed");

    // The audit: clean, then an OSD stopped by hand is drift, and the next run repairs it.
    let (rc, aout) = {
        let o = provision(&["audit", d.path().join("inventory.yml").to_str().unwrap()]);
        (o.status.code(), text(&o))
    };
    assert_eq!(rc, Some(0), "{aout}");
    let osd3 = ssh("node3", "sudo sh -c 'cat /var/lib/ceph/osd/ceph-*/whoami'");
    ssh("node3", &format!("sudo systemctl stop ceph-osd@{osd3}"));
    let o = provision(&["audit", d.path().join("inventory.yml").to_str().unwrap()]);
    let aout = text(&o);
    assert_eq!(o.status.code(), Some(5), "{aout}");
    assert!(
        aout.contains("node3") && aout.contains("ceph-daemons"),
        "{aout}"
    );
    let (rc, out3) = run(d.path(), &[]);
    assert_eq!(rc, Some(0), "{out3}");
    assert!(out3.contains(&format!("start OSD {osd3}")), "{out3}");
    assert!(healthy(&wait_for(60, |s| healthy(s, 3)), 3));

    // node4 joins with a disk that holds a filesystem: refused, left untouched.
    inventory(d.path(), &disks[3], false);
    let (rc, out4) = run(d.path(), &["--limit", "node4"]);
    assert_eq!(rc, Some(2), "{out4}");
    assert!(
        out4.contains("holds data (") && out4.contains("TYPE=ext4") && out4.contains("wipe: true"),
        "{out4}"
    );
    assert_eq!(
        ssh(
            "node4",
            &format!("sudo blkid -o value -s TYPE {}", disks[3])
        ),
        "ext4"
    );
    // With wipe: true it is erased and becomes an OSD; nothing changes elsewhere.
    inventory(
        d.path(),
        &format!("{{ path: {}, wipe: true }}", disks[3]),
        false,
    );
    let (rc, out5) = run(d.path(), &["--limit", "node4"]);
    assert_eq!(rc, Some(0), "{out5}");
    assert!(
        out5.contains("wipe ") && out5.contains("create an OSD"),
        "{out5}"
    );
    let s = wait_for(120, |s| healthy(s, 4));
    assert!(healthy(&s, 4), "{s}");
    assert_eq!(crush_hosts().len(), 4);
    let (rc, out6) = run(d.path(), &[]);
    assert_eq!(rc, Some(0), "{out6}");
    // Only the peers' /etc/hosts (not updated under --limit) is left to a full run.
    assert_eq!(recap(&out6, "node4", "changed"), 0, "{out6}");
    assert!(
        !out6
            .lines()
            .any(|l| l.contains("| changed") && !l.contains("/etc/hosts")),
        "{out6}"
    );

    // node2 restarted: its monitor rejoins the quorum, its OSD comes back, CephFS is
    // mounted again before docker.
    let o = provision(&["lab", "stop", "node2"]);
    assert!(o.status.success(), "{}", text(&o));
    let s = wait_for(60, |s| {
        s["quorum_names"].as_array().map(|q| q.len()) == Some(2)
    });
    assert_eq!(s["quorum_names"].as_array().unwrap().len(), 2, "{s}");
    let o = provision(&["lab", "start", "node2"]);
    assert!(o.status.success(), "{}", text(&o));
    let s = wait_for(180, |s| healthy(s, 4));
    assert!(healthy(&s, 4), "after the restart: {s}");
    // The mount may finish a little after the OSDs are up (ceph-fuse waits for an MDS).
    let t = Instant::now();
    while ssh_rc("node2", "findmnt /mnt/cephfs").0 != 0 && t.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_secs(2));
    }
    let (rc, why) = ssh_rc(
        "node2",
        "findmnt -n -o FSTYPE /mnt/cephfs || { systemctl status provision-cephfs; sudo journalctl -b -u provision-cephfs --no-pager | tail -20; }",
    );
    assert_eq!(
        (rc, why.trim()),
        (0, "fuse.ceph-fuse"),
        "after {:?}",
        t.elapsed()
    );
    assert_eq!(
        ssh("node2", "cat /mnt/cephfs/shared.txt"),
        "written-on-node1"
    );

    // Two monitors added to a running cluster, one at a time, each waited for in quorum.
    inventory(
        d.path(),
        &format!("{{ path: {}, wipe: true }}", disks[3]),
        true,
    );
    let (rc, out8) = run(d.path(), &[]);
    assert_eq!(rc, Some(0), "{out8}");
    assert!(
        out8.contains("add monitor node4") && out8.contains("add monitor node5"),
        "{out8}"
    );
    let s = status();
    assert_eq!(s["quorum_names"].as_array().unwrap().len(), 5, "{s}");
    assert_eq!(s["health"]["status"], "HEALTH_OK", "{s}");
    let dump = ssh("node1", "sudo ceph mon dump 2>/dev/null");
    assert!(
        dump.contains("[v2:10.200.0.15:3300/0,v1:10.200.0.15:6789/0] mon.node5"),
        "{dump}"
    );
    assert!(
        !out8.contains("restart ceph-"),
        "new monitors restarted a daemon: {out8}"
    );
    let (rc, out9) = run(d.path(), &[]);
    assert_eq!(rc, Some(0), "{out9}");
    assert_eq!(recap(&out9, "node5", "changed"), 0, "{out9}");

    // A changed setting: every daemon restarted, one at a time, the cluster healthy after.
    let inv = d.path().join("inventory.yml");
    let yaml = std::fs::read_to_string(&inv).unwrap();
    std::fs::write(
        &inv,
        yaml.replace(
            "osd_memory_target: 939524096",
            "osd_memory_target: 939524096, osd_max_backfills: 3",
        ),
    )
    .unwrap();
    // A run that wrote node3's new settings and died before restarting: the audit says so.
    ssh("node3", "sudo touch /etc/ceph/provision-settings");
    let audit = || {
        let o = provision(&["audit", inv.to_str().unwrap()]);
        (o.status.code(), text(&o))
    };
    let (rc, aout) = audit();
    assert_eq!(rc, Some(5), "{aout}");
    let drift: Vec<&str> = aout.lines().filter(|l| l.contains("DRIFT")).collect();
    assert!(
        drift.len() == 1 && drift[0].starts_with("node3") && drift[0].contains("ceph-settings"),
        "{aout}"
    );
    assert!(
        aout.contains("started before: ceph-mon@node3, ceph-mgr@node3, ceph-mds@node3, ceph-osd@"),
        "{aout}"
    );
    let before: Vec<String> = units.iter().map(|u| pid("node2", u)).collect();
    let t = Instant::now();
    let (rc, out10) = run(d.path(), &[]);
    assert_eq!(rc, Some(0), "{out10}");
    println!(
        "rolling restart of 15 daemons: {:.1} s",
        t.elapsed().as_secs_f64()
    );
    for u in [
        "ceph-mon@node1",
        "ceph-mon@node5",
        "ceph-mgr@node3",
        "ceph-mds@node2",
        osd2.as_str(),
    ] {
        assert!(out10.contains(&format!("restart {u}")), "{u}: {out10}");
    }
    let after: Vec<String> = units.iter().map(|u| pid("node2", u)).collect();
    assert!(
        before.iter().zip(&after).all(|(b, a)| a != b && a != "0"),
        "{before:?} {after:?}"
    );
    let id = osd2.trim_start_matches("ceph-osd@");
    assert!(
        ssh(
            "node2",
            &format!("sudo ceph daemon osd.{id} config get osd_max_backfills")
        )
        .contains("\"3\""),
        "the OSD runs without the new setting"
    );
    let s = status();
    assert_eq!(s["health"]["status"], "HEALTH_OK", "{s}");
    let (rc, aout) = audit();
    assert_eq!(rc, Some(0), "{aout}");
    let (rc, out11) = run(d.path(), &[]);
    assert_eq!(rc, Some(0), "{out11}");
    assert!(!out11.contains("restart ceph-"), "{out11}");
    assert_eq!(
        after,
        units.iter().map(|u| pid("node2", u)).collect::<Vec<_>>()
    );

    // Lost keys are never remade for a running cluster.
    std::fs::rename(&state, d.path().join("ceph.json.bak")).unwrap();
    let (rc, out7) = run(d.path(), &["--check"]);
    assert_ne!(rc, Some(0), "{out7}");
    assert!(out7.contains("restore ceph.json"), "{out7}");
    std::fs::rename(d.path().join("ceph.json.bak"), &state).unwrap();

    let mem = provision(&["lab", "status"]);
    println!("lab memory after the test:\n{}", text(&mem));
}
