//! Day 2 on one cluster of 5 fresh hosts: 3 managers (etcd members, Ceph monitors and
//! OSD hosts) and 2 workers (node4 with an OSD), a web stack with 2 replicas.
//! - Ceph as built and kept: quorum, keys, CephFS before docker and shared; a second run
//!   that restarts nothing; drift seen by the audit and repaired; a host powered off and
//!   on; a changed setting rolled through every daemon; lost keys refused.
//! - `provision backup`: every part, encrypted, verified.
//! - `provision status` and `provision maintain`: the plan in check mode; a roll refused
//!   while a host is powered off; then a manager and the OSD worker drained, patched and
//!   rebooted one at a time, the stack served throughout; a node that does not come back
//!   stops the roll, and the next one resumes with it; a package upgrade applied only with
//!   --full; the cluster whole and the audit clean.
//! - Removal (`provision_state: absent`): the plan in check mode; a removal that would
//!   break the managers' quorum refused before any contact; a worker removed while the
//!   stack is served; the OSD worker replaced by a new machine under its name; then
//!   powered off and removed with `provision_force`, its data moved (a CephFS file
//!   intact), the OSD purged; the audit clean after each, a re-run idle.
//! - Both workers back as managers (5 managers, etcd members and monitors; node5 an OSD
//!   host once its disk may be wiped), then both removed in one run under an etcd writer,
//!   a CephFS writer and the web service: 3 of each left, node5's data moved.

mod common;
use common::*;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const IMAGE: &str = "10.200.0.1:5000/busybox:lab";

fn inventory(d: &Path) {
    let disks = disks();
    let osds: String =
        [1, 2, 3, 4]
            .into_iter()
            .map(|i| {
                format!(
                "        node{i}: {{ ansible_host: 10.200.0.1{i}, ceph_osd_devices: [{}]{} }}\n",
                disks[i - 1],
                if i == 4 { ", swarm_labels: { disk: osd }" } else { "" }
            )
            })
            .collect();
    write(
        d,
        "inventory.yml",
        &format!(
            "{vars}    ceph_allow_loop_devices: true\n    ceph_conf: {{ mon_data_avail_warn: 5, osd_memory_target: 939524096 }}\n    \
             ceph_health_timeout: 240\n    \
             stacks:\n      - name: web\n        builtin: app\n        \
             vars: {{ image: \"10.200.0.1:5000/busybox:lab\", command: [httpd, -f, -h, /www], site_path: /www/index.html, replicas: 2, endpoint_mode: dnsrr, attachable: true }}\n        \
             configs: {{ site: {{ content: \"hello\\n\" }} }}\n  \
             children:\n    managers:\n      hosts:\n        node1: {{ ansible_host: 10.200.0.11 }}\n        node2: {{ ansible_host: 10.200.0.12 }}\n        node3: {{ ansible_host: 10.200.0.13 }}\n    \
             workers:\n      hosts:\n        node4: {{ ansible_host: 10.200.0.14 }}\n        node5: {{ ansible_host: 10.200.0.15 }}\n    \
             etcd:\n      children: {{ managers: {{}} }}\n    \
             ceph_osds:\n      hosts:\n{osds}",
            vars = lab_vars(),
        ),
    );
}

fn maintain(d: &Path, extra: &[&str]) -> (i32, String) {
    let inv = d.join("inventory.yml");
    let mut args = vec!["maintain", inv.to_str().unwrap()];
    args.extend(extra);
    let o = provision(&args);
    (o.status.code().unwrap_or(-1), text(&o))
}

/// PID 1's start (clock ticks after the machine's boot): a reboot of a lab host starts
/// its init anew (lab hosts share the machine's kernel, so its boot id stays).
fn init_start(node: &str) -> u64 {
    ssh(node, "cut -d' ' -f22 /proc/1/stat").parse().unwrap()
}

/// lab-hello 1.0 installed, and a local repository (file:, unsigned, trusted) with 2.0.
const HELLO_REPO: &str = r#"set -e
mk() {
    d=$(mktemp -d); mkdir -p "$d/DEBIAN"
    printf 'Package: lab-hello\nVersion: %s\nArchitecture: all\nMaintainer: lab <lab@lab>\nDescription: a package for the maintenance test\n' "$1" > "$d/DEBIAN/control"
    dpkg-deb --build "$d" "$2" >/dev/null; rm -rf "$d"
}
mk 1.0 /tmp/lab-hello_1.0_all.deb && dpkg -i /tmp/lab-hello_1.0_all.deb >/dev/null
mkdir -p /srv/labrepo && cd /srv/labrepo
f=lab-hello_2.0_all.deb; mk 2.0 "$f"
{ dpkg-deb -f "$f"; echo "Filename: ./$f"; echo "Size: $(stat -c %s "$f")"; echo "SHA256: $(sha256sum "$f" | cut -d' ' -f1)"; echo; } > Packages
{ echo 'Origin: lab'; echo 'Label: lab'; echo "Date: $(date -R -u)"; echo 'SHA256:'; echo " $(sha256sum Packages | cut -d' ' -f1) $(stat -c %s Packages) Packages"; } > Release
echo 'deb [trusted=yes] file:/srv/labrepo ./' > /etc/apt/sources.list.d/labtest.list
"#;

/// The Docker engine installed, rebuilt under a higher version (`VERSION+lab1`) in a
/// repository of its own on the host: an engine upgrade to pin with `docker_version`.
const ENGINE_REPO: &str = r#"set -e
t=$(mktemp -d); cd "$t"
apt-get download -q docker.io >/dev/null 2>&1
f=$(ls docker.io_*.deb); v=$(dpkg-deb -f "$f" Version)
dpkg-deb -R "$f" x
sed -i "s/^Version: .*/Version: $v+lab1/" x/DEBIAN/control
mkdir -p /srv/engrepo; cd /srv/engrepo
g=docker.io_lab1.deb; dpkg-deb -Zgzip -z1 -b "$t/x" "$g" >/dev/null; rm -rf "$t"
{ dpkg-deb -f "$g"; echo "Filename: ./$g"; echo "Size: $(stat -c %s "$g")"; echo "SHA256: $(sha256sum "$g" | cut -d' ' -f1)"; echo; } > Packages
{ echo 'Origin: lab'; echo 'Label: lab'; echo "Date: $(date -R -u)"; echo 'SHA256:'; echo " $(sha256sum Packages | cut -d' ' -f1) $(stat -c %s Packages) Packages"; } > Release
echo 'deb [trusted=yes] file:/srv/engrepo ./' > /etc/apt/sources.list.d/labengine.list
"#;

/// An etcd writer (run in `sh -c '...'`): a put every 100 ms until /tmp/stop-loop.
const ETCD_LOOP: &str = "ok=0; bad=0; while [ ! -e /tmp/stop-loop ]; do \
    if ETCDCTL_API=3 etcdctl --endpoints=https://127.0.0.1:2379 --cacert=/etc/provision/pki/ca.crt \
    --cert=/etc/provision/pki/etcd.crt --key=/etc/provision/pki/etcd.key --command-timeout=5s \
    put maintain-loop $ok >/dev/null 2>&1; then ok=$((ok+1)); else bad=$((bad+1)); fi; \
    echo \"$ok $bad\" > /tmp/etcd-counts; sleep 0.1; done";

/// A CephFS writer: an appended line every 100 ms, each flushed to the cluster.
const CEPHFS_LOOP: &str = "ok=0; bad=0; while [ ! -e /tmp/stop-loop ]; do \
    if echo $ok | dd of=/mnt/cephfs/maint-loop oflag=append,sync conv=notrunc status=none; \
    then ok=$((ok+1)); else bad=$((bad+1)); fi; \
    echo \"$ok $bad\" > /tmp/fs-counts; sleep 0.1; done";

/// An HTTP client of the web service: a container on the stack's network (`web_app`,
/// attachable) asks `http://web_web/` every 100 ms through swarm DNS (each request bounded
/// at 2 s: this busybox's wget has no timeout of its own), counting answers and failures
/// in /tmp/http/counts on its host.
const HTTP_LOOP: &str = "ok=0; bad=0; while [ ! -e /out/stop ]; do \
    if busybox timeout 2 busybox wget -q -O /dev/null http://web_web/; then ok=$((ok+1)); else bad=$((bad+1)); fi; \
    echo \"$ok $bad\" > /out/counts; sleep 0.1; done";

struct HttpLoop {
    node: &'static str,
}

impl HttpLoop {
    fn start(node: &'static str) -> HttpLoop {
        sh_on(
            node,
            &format!(
                "docker rm -f http-loop >/dev/null 2>&1; rm -rf /tmp/http; mkdir -p /tmp/http\n\
                 cat > /tmp/http/loop.sh <<'EOF'\n{HTTP_LOOP}\nEOF\n\
                 docker run -d --name http-loop --network web_app -v /tmp/http:/out {IMAGE} sh /out/loop.sh >/dev/null"
            ),
        );
        // Answering before the test goes on: a loop that cannot ask would only count failures.
        let t = Instant::now();
        loop {
            let c = ssh(node, "cat /tmp/http/counts 2>/dev/null || true");
            if c.split_whitespace().next().is_some_and(|ok| ok != "0") {
                break;
            }
            assert!(
                t.elapsed().as_secs() < 30,
                "the HTTP loop on {node} gets no answer: {c}; {}",
                ssh(node, "sudo docker logs --tail 5 http-loop 2>&1")
            );
            std::thread::sleep(Duration::from_millis(500));
        }
        HttpLoop { node }
    }

    /// (answered, failed)
    fn finish(self) -> (u64, u64) {
        sh_on(
            self.node,
            "touch /tmp/http/stop; sleep 2.5; docker rm -f http-loop >/dev/null",
        );
        let c = ssh(self.node, "cat /tmp/http/counts");
        let (ok, bad) = c.split_once(' ').expect(&c);
        (ok.parse().unwrap(), bad.parse().unwrap())
    }
}

/// Runs a script on a lab host as root, given on stdin.
fn sh_on(node: &str, script: &str) {
    use std::io::Write;
    let mut c = std::process::Command::new("ssh")
        .arg("-F")
        .arg(lab_dir().join("ssh_config"))
        .args([node, "sudo sh -s"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let o = c.wait_with_output().unwrap();
    assert!(o.status.success(), "{node}: {}", text(&o));
}

fn availability() -> String {
    ssh(
        "node2",
        "sudo docker node ls --format '{{.Hostname}} {{.Status}} {{.Availability}}' | sort",
    )
}

#[test]
fn day_two_on_one_cluster() {
    let Some(_lab) = LabGuard::start(&["lab", "up", "5", "--disk", "8G", "--fresh", "--registry"])
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    inventory(d);
    let t = Instant::now();
    let o = provision(&[d.join("inventory.yml").to_str().unwrap()]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    eprintln!(
        "fresh hosts to a cluster (etcd, Ceph HEALTH_OK with CephFS mounted, swarm, stack): {:.0} s",
        t.elapsed().as_secs_f64()
    );
    ceph(d, &out);
    backups(d);
    maintenance(d);
    let base = removals(d);
    managers(d, &base);
}

fn ceph_status() -> serde_json::Value {
    serde_json::from_str(&ssh("node1", "sudo ceph -s -f json 2>/dev/null")).unwrap()
}

/// Reads `ceph -s` until `ok` holds or `secs` pass; returns the last read.
fn ceph_wait(secs: u64, ok: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let t = Instant::now();
    loop {
        let s = ceph_status();
        if ok(&s) || t.elapsed() > Duration::from_secs(secs) {
            return s;
        }
        std::thread::sleep(Duration::from_secs(2));
    }
}

/// HEALTH_OK with `osds` OSDs up and in.
fn ceph_healthy(s: &serde_json::Value, osds: u64) -> bool {
    s["health"]["status"] == "HEALTH_OK"
        && s["osdmap"]["num_up_osds"] == osds
        && s["osdmap"]["num_in_osds"] == osds
}

/// Each CRUSH host with its number of OSDs.
fn crush_hosts() -> Vec<(String, usize)> {
    let tree: serde_json::Value =
        serde_json::from_str(&ssh("node1", "sudo ceph osd tree -f json 2>/dev/null")).unwrap();
    let mut hosts: Vec<(String, usize)> = tree["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["type"] == "host")
        .map(|n| {
            (
                n["name"].as_str().unwrap().to_owned(),
                n["children"].as_array().map_or(0, |c| c.len()),
            )
        })
        .collect();
    hosts.sort();
    hosts
}

fn pid(node: &str, unit: &str) -> String {
    ssh(node, &format!("systemctl show -p MainPID --value {unit}"))
}

fn osd_unit(node: &str) -> String {
    format!(
        "ceph-osd@{}",
        ssh(node, "sudo sh -c 'cat /var/lib/ceph/osd/ceph-*/whoami'")
    )
}

fn audit(d: &Path) -> (i32, String) {
    let o = provision(&["audit", d.join("inventory.yml").to_str().unwrap()]);
    (o.status.code().unwrap_or(-1), text(&o))
}

/// Waits (up to 30 s) until every swarm node is Ready: a leader change may leave a node
/// Unknown until its next heartbeat.
fn all_ready(n: usize) {
    let want = format!("{n} Ready");
    let mut ready = String::new();
    for _ in 0..30 {
        ready = ssh(
            "node1",
            "sudo docker node ls --format '{{.Status}}' | sort | uniq -c",
        );
        if ready.trim() == want {
            return;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    panic!("not every node is Ready: {ready}");
}

/// Ceph as the first run leaves it, then kept: 3 monitors in quorum on their own
/// addresses, a manager with 2 standbys, one OSD and one CRUSH host per OSD node, keys
/// 0600 and never printed, CephFS mounted before docker on every swarm node and shared by
/// containers; a second run that restarts nothing; an OSD stopped by hand seen by the
/// audit and started again; a host powered off and on whose daemons and mount come back;
/// a changed setting rolled through every daemon one at a time; lost keys refused.
fn ceph(d: &Path, first: &str) {
    let s = ceph_status();
    assert!(ceph_healthy(&s, 4), "{s}");
    assert_eq!(s["mgrmap"]["available"], true, "{s}");
    assert_eq!(s["mgrmap"]["num_standbys"], 2, "{s}");
    assert_eq!(
        crush_hosts(),
        (1..=4).map(|i| (format!("node{i}"), 1)).collect::<Vec<_>>()
    );
    let dump = ssh("node1", "sudo ceph mon dump 2>/dev/null");
    assert!(
        dump.contains("[v2:10.200.0.12:3300/0,v1:10.200.0.12:6789/0] mon.node2"),
        "{dump}"
    );
    let state = d.join(".provision/ceph.json");
    let keys: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(&state).unwrap().mode() & 0o777, 0o600);
    for k in keys["keys"].as_object().unwrap().values() {
        assert!(!first.contains(k.as_str().unwrap()), "a key was printed");
    }
    assert_eq!(
        ssh("node1", "sudo stat -c '%a %U' /etc/ceph/ceph.client.admin.keyring /var/lib/ceph/bootstrap-osd/ceph.keyring /etc/ceph/ceph.client.swarm.keyring"),
        "600 ceph\n600 ceph\n600 ceph"
    );
    assert!(
        ssh("node1", "sudo cat /var/lib/ceph/mgr/ceph-node1/keyring")
            .contains(keys["keys"]["mgr.node1"].as_str().unwrap())
    );

    // CephFS: mounted on every swarm node before docker; containers on two nodes share it.
    for n in ["node1", "node2", "node3", "node4", "node5"] {
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
            "node5",
            &format!("sudo docker run --rm -v /mnt/cephfs:/data {IMAGE} cat /data/shared.txt")
        ),
        "written-on-node1"
    );

    // A second run: no change, no restart, no new key, the same OSDs.
    let osds = ssh("node1", "sudo ceph osd ls");
    let osd2 = osd_unit("node2");
    let units = ["ceph-mon@node2", "ceph-mgr@node2", osd2.as_str()];
    let pids: Vec<String> = units.iter().map(|u| pid("node2", u)).collect();
    assert!(pids.iter().all(|p| p != "0"), "{pids:?}");
    let sum = std::fs::read(&state).unwrap();
    let t = Instant::now();
    let (rc, out) = run(d);
    assert_eq!(rc, 0, "{out}");
    eprintln!("second run: {:.1} s", t.elapsed().as_secs_f64());
    assert!(out.contains("no changes"), "{out}");
    assert_eq!(ssh("node1", "sudo ceph osd ls"), osds);
    let again: Vec<String> = units.iter().map(|u| pid("node2", u)).collect();
    assert_eq!(pids, again, "a daemon was restarted");
    assert_eq!(std::fs::read(&state).unwrap(), sum, "keys changed");

    // The audit: clean, then an OSD stopped by hand is drift, and the next run repairs it.
    let (rc, aout) = audit(d);
    assert_eq!(rc, 0, "{aout}");
    let osd3 = osd_unit("node3");
    ssh("node3", &format!("sudo systemctl stop {osd3}"));
    let (rc, aout) = audit(d);
    assert_eq!(rc, 5, "{aout}");
    assert!(
        aout.contains("node3") && aout.contains("ceph-daemons"),
        "{aout}"
    );
    let (rc, out) = run(d);
    assert_eq!(rc, 0, "{out}");
    let id3 = osd3.trim_start_matches("ceph-osd@");
    assert!(out.contains(&format!("start OSD {id3}")), "{out}");
    assert!(ceph_healthy(&ceph_wait(60, |s| ceph_healthy(s, 4)), 4));

    // node2 powered off and on: its monitor rejoins the quorum, its OSD comes back, CephFS
    // is mounted again before docker, with no run.
    let o = provision(&["lab", "stop", "node2"]);
    assert!(o.status.success(), "{}", text(&o));
    let s = ceph_wait(60, |s| {
        s["quorum_names"].as_array().map(|q| q.len()) == Some(2)
    });
    assert_eq!(s["quorum_names"].as_array().unwrap().len(), 2, "{s}");
    let o = provision(&["lab", "start", "node2"]);
    assert!(o.status.success(), "{}", text(&o));
    let s = ceph_wait(180, |s| ceph_healthy(s, 4));
    assert!(ceph_healthy(&s, 4), "after the restart: {s}");
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
    all_ready(5);

    // A changed setting: every daemon restarted, one at a time, the cluster healthy after.
    // First a run that wrote node3's new settings and died before restarting: the audit
    // says so.
    let inv = d.join("inventory.yml");
    let yaml = std::fs::read_to_string(&inv).unwrap();
    std::fs::write(
        &inv,
        yaml.replace(
            "osd_memory_target: 939524096",
            "osd_memory_target: 939524096, osd_max_backfills: 3",
        ),
    )
    .unwrap();
    ssh("node3", "sudo touch /etc/ceph/provision-settings");
    let (rc, aout) = audit(d);
    assert_eq!(rc, 5, "{aout}");
    let drift: Vec<&str> = aout.lines().filter(|l| l.contains("DRIFT")).collect();
    assert!(
        drift.len() == 1 && drift[0].starts_with("node3") && drift[0].contains("ceph-settings"),
        "{aout}"
    );
    assert!(
        aout.contains("started before: ceph-mon@node3, ceph-mgr@node3, ceph-mds@node3, ceph-osd@"),
        "{aout}"
    );
    let osd2 = osd_unit("node2");
    let units = ["ceph-mon@node2", "ceph-mgr@node2", osd2.as_str()];
    let before: Vec<String> = units.iter().map(|u| pid("node2", u)).collect();
    let t = Instant::now();
    let (rc, out) = run(d);
    assert_eq!(rc, 0, "{out}");
    eprintln!(
        "rolling restart of 13 daemons: {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let osd4 = osd_unit("node4");
    for u in [
        "ceph-mon@node1",
        "ceph-mgr@node3",
        "ceph-mds@node2",
        osd2.as_str(),
        osd4.as_str(),
    ] {
        assert!(out.contains(&format!("restart {u}")), "{u}: {out}");
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
    assert_eq!(ceph_status()["health"]["status"], "HEALTH_OK");
    let (rc, aout) = audit(d);
    assert_eq!(rc, 0, "{aout}");
    let (rc, out) = run(d);
    assert!(rc == 0 && out.contains("no changes"), "{out}");
    assert_eq!(
        after,
        units.iter().map(|u| pid("node2", u)).collect::<Vec<_>>()
    );

    // Lost keys are never remade for a running cluster.
    std::fs::rename(&state, d.join("ceph.json.bak")).unwrap();
    let o = provision(&[inv.to_str().unwrap(), "--check"]);
    let out = text(&o);
    assert_ne!(o.status.code(), Some(0), "{out}");
    assert!(out.contains("restore ceph.json"), "{out}");
    std::fs::rename(d.join("ceph.json.bak"), &state).unwrap();
}

/// A backup set of the whole cluster: every part there and encrypted, the raft state
/// from a manager that is not the leader (back in the swarm after), the set verified; a
/// damaged part and a wrong password named.
fn backups(d: &Path) {
    write(d, "vault-pass", "day2-backup\n");
    let (inv, pass, to) = (
        d.join("inventory.yml"),
        d.join("vault-pass"),
        d.join("backups"),
    );
    let (inv, pass, to) = (
        inv.to_str().unwrap(),
        pass.to_str().unwrap(),
        to.to_str().unwrap(),
    );
    let o = provision(&["backup", inv, "--to", to]);
    assert_eq!(o.status.code(), Some(4), "no password: {}", text(&o));
    let leader = ssh(
        "node1",
        "sudo docker node ls --format '{{.Hostname}} {{.ManagerStatus}}' | awk '$2 == \"Leader\" {print $1}'",
    );
    let t = std::time::Instant::now();
    let o = provision(&["backup", inv, "--to", to, "--vault-password-file", pass]);
    let out = text(&o);
    eprintln!("backup: {:.1} s\n{out}", t.elapsed().as_secs_f64());
    assert!(o.status.success(), "{out}");
    let set = out
        .lines()
        .find_map(|l| l.strip_prefix("backup set: "))
        .expect(&out)
        .to_owned();
    let m: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(Path::new(&set).join("manifest.json")).unwrap(),
    )
    .unwrap();
    let parts = m["parts"].as_array().unwrap();
    for name in ["state", "etcd", "swarm", "swarm-raft", "ceph"] {
        let p = parts.iter().find(|p| p["name"] == name).expect(name);
        assert!(
            p["file"].is_string() && p["bytes"].as_u64().unwrap() > 100,
            "{name}: {p}"
        );
        let body =
            std::fs::read_to_string(Path::new(&set).join(p["file"].as_str().unwrap())).unwrap();
        assert!(
            body.starts_with("$ANSIBLE_VAULT;1.1;AES256\n"),
            "{name} is encrypted"
        );
    }
    let raft = parts.iter().find(|p| p["name"] == "swarm-raft").unwrap();
    assert_ne!(
        raft["from"],
        leader.as_str(),
        "the raft state is not the leader's"
    );
    let etcd = parts.iter().find(|p| p["name"] == "etcd").unwrap();
    assert!(
        etcd["note"].as_str().unwrap().contains("revision"),
        "{etcd}"
    );
    // The manager whose dockerd stopped is back: every node Ready (a leader change may
    // leave another node Unknown until its next heartbeat).
    let mut ready = String::new();
    for _ in 0..30 {
        ready = ssh(
            "node1",
            "sudo docker node ls --format '{{.Status}}' | sort | uniq -c",
        );
        if ready.trim() == "5 Ready" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
    assert_eq!(ready.trim(), "5 Ready", "{ready}");
    let verify = |pw: &str| {
        let o = provision(&["backup", "--verify", &set, "--vault-password-file", pw]);
        (o.status.code().unwrap_or(-1), text(&o))
    };
    let (rc, out) = verify(pass);
    assert_eq!(rc, 0, "{out}");

    // The controller's state directory lost: it comes back from the set, the same files
    // byte for byte, and a run in check mode finds nothing to change with it.
    let state = d.join(".provision");
    let files = |dir: &Path| -> Vec<(String, Vec<u8>)> {
        let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .filter(|e| e.path().is_file() && e.file_name() != "lock")
            .map(|e| {
                (
                    e.file_name().to_string_lossy().into_owned(),
                    std::fs::read(e.path()).unwrap(),
                )
            })
            .collect();
        v.sort();
        v
    };
    let before = files(&state);
    assert!(before.iter().any(|(n, _)| n == "ceph.json"), "{before:?}");
    std::fs::rename(&state, d.join("state-lost")).unwrap();
    let restore = |extra: &[&str]| {
        let mut args = vec!["restore", inv, "--state", "--from", &set];
        args.extend(extra);
        let o = provision(&args);
        (o.status.code().unwrap_or(-1), text(&o))
    };
    let (rc, out) = restore(&[]);
    assert_eq!(rc, 4, "no password: {out}");
    assert!(!state.exists());
    let (rc, out) = restore(&["--vault-password-file", pass]);
    assert_eq!(rc, 0, "{out}");
    assert_eq!(files(&state), before, "the state restored byte for byte");
    let (rc, out) = restore(&["--vault-password-file", pass]);
    assert!(
        rc == 4 && out.contains("already holds"),
        "a live state is not replaced: {out}"
    );
    let o = provision(&[inv, "--check"]);
    assert!(
        o.status.success() && text(&o).contains("no changes"),
        "with the restored state: {}",
        text(&o)
    );
    std::fs::remove_dir_all(d.join("state-lost")).unwrap();
    write(d, "wrong-pass", "nope\n");
    let (rc, out) = verify(d.join("wrong-pass").to_str().unwrap());
    assert!(rc == 2 && out.contains("wrong vault password"), "{out}");
    let etcd_file = Path::new(&set).join("etcd.vault");
    let mut b = std::fs::read(&etcd_file).unwrap();
    let i = b.len() / 2;
    b[i] = if b[i] == b'0' { b'1' } else { b'0' };
    std::fs::write(&etcd_file, b).unwrap();
    let (rc, out) = verify(pass);
    assert!(
        rc == 2 && out.contains("etcd: etcd.vault differs from the manifest"),
        "{out}"
    );
}

fn maintenance(d: &Path) {
    let all_active = "node1 Ready Active\nnode2 Ready Active\nnode3 Ready Active\nnode4 Ready Active\nnode5 Ready Active";
    assert_eq!(availability(), all_active);

    // The cluster at a glance, one command per host.
    let st = |d: &Path| {
        let o = provision(&["status", d.join("inventory.yml").to_str().unwrap()]);
        (o.status.code().unwrap_or(-1), text(&o))
    };
    let (rc, out) = st(d);
    assert_eq!(rc, 0, "{out}");
    for want in [
        "etcd: 3 members, 3 answering, leader node",
        "ceph: HEALTH_OK, monitors 3/3 in quorum",
        "OSDs 4 up / 4 in of 4",
        "healthy",
    ] {
        assert!(out.contains(want), "{want}: {out}");
    }
    assert!(
        out.lines()
            .any(|l| l.starts_with("web_web") && l.contains(" 2/2 ")),
        "{out}"
    );
    assert_eq!(
        out.lines()
            .filter(|l| l.contains(" Ready ") && l.contains("Active"))
            .count(),
        5,
        "{out}"
    );
    let o = provision(&[
        "status",
        d.join("inventory.yml").to_str().unwrap(),
        "--output",
        "markdown",
    ]);
    let md = text(&o);
    assert!(
        o.status.success()
            && md.contains("**Healthy.**")
            && md.contains("| node1 | manager | Ready | Active |"),
        "{md}"
    );

    // The plan: managers first, what each would get, nothing changed.
    let (rc, out) = maintain(d, &["--check", "--reboot", "-l", "node4:node1"]);
    assert_eq!(rc, 0, "{out}");
    let (p1, p4) = (
        out.find("node1: ").expect(&out),
        out.find("node4: ").expect(&out),
    );
    assert!(p1 < p4, "a manager goes first: {out}");
    assert!(out.contains("reboot: yes"), "{out}");
    assert_eq!(availability(), all_active);

    // A host powered off: nothing starts (it is unknown; maintenance would take one more away).
    let o = provision(&["lab", "stop", "node5"]);
    assert!(o.status.success(), "{}", text(&o));
    let (rc, out) = maintain(d, &["--reboot", "-l", "node4"]);
    assert_eq!(rc, 3, "{out}");
    assert!(
        out.contains("node5")
            && out.contains("did not answer")
            && out.contains("Nothing was changed"),
        "{out}"
    );
    let (rc, out) = st(d);
    assert_eq!(rc, 3, "{out}");
    assert!(
        out.contains("unreachable (unknown, not gone): node5"),
        "{out}"
    );
    let o = provision(&["lab", "start", "node5"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = provision(&[d.join("inventory.yml").to_str().unwrap()]);
    assert!(o.status.success(), "the cluster heals: {}", text(&o));
    assert_eq!(availability(), all_active);

    // The roll: node1 then node2 (managers, etcd members, monitors and OSD hosts), one at
    // a time, then the workers node4 (an OSD host) and node5 together (--batch 2).
    // Meanwhile, on node3: the web service sampled (never without a running task), and two
    // writers every 100 ms, etcd puts and CephFS appends, each counting what worked and
    // what failed. node3 itself after them.
    sh_on(
        "node3",
        &format!(
            "rm -f /tmp/stop-loop /mnt/cephfs/maint-loop; setsid sh -c '{ETCD_LOOP}' >/dev/null 2>&1 </dev/null & \
             setsid sh -c '{CEPHFS_LOOP}' >/dev/null 2>&1 </dev/null &"
        ),
    );
    let rolled = ["node1", "node2", "node4", "node5"];
    let before: Vec<u64> = rolled.iter().map(|n| init_start(n)).collect();
    let sampler = Sampler::start("node3");
    let http = HttpLoop::start("node3");
    let t = std::time::Instant::now();
    let (rc, out) = maintain(
        d,
        &["--reboot", "-l", "node1:node2:node4:node5", "--batch", "2"],
    );
    let took = t.elapsed().as_secs_f64();
    let web = sampler.finish();
    let (http_ok, http_bad) = http.finish();
    eprintln!(
        "maintain --reboot of node1, node2, then node4 and node5 together: {took:.1} s\n{out}"
    );
    assert_eq!(rc, 0, "{out}");
    assert!(out.contains("maintained 4 node(s)"), "{out}");
    let at = |s: &str| out.find(s).expect(s);
    assert!(
        at("node1: drain") < at("node1: done") && at("node1: done") < at("node2: drain"),
        "one manager at a time: {out}"
    );
    assert!(
        at("node2: done") < at("together: node4, node5")
            && at("together: node4, node5") < at("node4: drain")
            && at("node4: drain") < at("node5: done")
            && at("node5: drain") < at("node4: done"),
        "the managers first, then both workers away at once: {out}"
    );
    for (n, b) in rolled.iter().zip(&before) {
        assert_ne!(init_start(n), *b, "{n} rebooted");
    }
    ssh("node3", "sudo touch /tmp/stop-loop");
    std::thread::sleep(std::time::Duration::from_secs(2));
    let (etcd_ok, etcd_bad) = loop_counts("node3", "etcd");
    let (fs_ok, fs_bad) = loop_counts("node3", "fs");
    let fs_lines: u64 = ssh("node3", "wc -l < /mnt/cephfs/maint-loop")
        .parse()
        .unwrap();
    eprintln!(
        "during the roll: etcd puts {etcd_ok} ok, {etcd_bad} failed; CephFS appends {fs_ok} ok, {fs_bad} failed, {fs_lines} lines in the file"
    );
    assert!(etcd_ok > 50 && fs_ok > 50, "the writers ran");
    assert!(
        etcd_bad <= 2,
        "at most one failed etcd put per member restarted (2): {etcd_bad}"
    );
    assert_eq!(fs_bad, 0, "CephFS writes failed");
    assert_eq!(
        fs_lines, fs_ok,
        "every CephFS append acknowledged is in the file"
    );
    eprintln!(
        "web service during the roll: {web:?}; HTTP requests {http_ok} answered, {http_bad} failed"
    );
    assert!(web.answers > 10, "the sampler ran: {web:?}");
    assert_eq!(web.empty, 0, "the web service had no running task: {web:?}");
    assert!(http_ok > 100, "the HTTP loop ran: {http_ok}");
    let moved = web.tasks.saturating_sub(2) as u64;
    assert!(
        http_bad <= moved,
        "at most one failed HTTP request per moved task ({moved}): {http_bad}"
    );
    let node3 = init_start("node3");
    let t = std::time::Instant::now();
    let (rc, out) = maintain(d, &["--reboot", "-l", "node3"]);
    eprintln!(
        "maintain --reboot of node3: {:.1} s",
        t.elapsed().as_secs_f64()
    );
    assert_eq!(rc, 0, "{out}");
    assert_ne!(init_start("node3"), node3, "node3 rebooted");

    // The cluster whole: every node ready and active, 3 healthy etcd members, HEALTH_OK with
    // no noout left, the stack at 2/2, the audit clean, nothing left to change.
    assert_eq!(availability(), all_active);
    let health = ssh(
        "node1",
        "sudo sh -c 'ETCDCTL_API=3 etcdctl --endpoints=https://127.0.0.1:2379 --cacert=/etc/provision/pki/ca.crt --cert=/etc/provision/pki/etcd.crt --key=/etc/provision/pki/etcd.key endpoint health --cluster 2>&1'",
    );
    assert_eq!(health.matches("is healthy").count(), 3, "{health}");
    assert_eq!(ssh("node2", "sudo ceph health"), "HEALTH_OK");
    assert_eq!(
        ssh(
            "node2",
            "sudo docker service ls --filter name=web_web --format '{{.Replicas}}'"
        ),
        "2/2"
    );

    // A node that does not come back healthy (its docker left disabled: not started at
    // boot) stops the roll: it stays drained, the nodes done are recorded. Fixed, the next
    // roll resumes with it and does not redo the others.
    // docker.socket too: on a fresh host it would start docker on the first API call.
    ssh(
        "node5",
        "sudo systemctl disable docker.service docker.socket 2>/dev/null",
    );
    let (rc, out) = maintain(d, &["--reboot", "--wait", "30", "-l", "node4:node5"]);
    assert_eq!(rc, 2, "{out}");
    assert!(
        out.contains("node5: coming back")
            && out.contains("docker is not back in the swarm")
            && out.contains("stays drained"),
        "{out}"
    );
    assert!(
        availability().contains("node5 Down Drain") || availability().contains("node5 Ready Drain"),
        "{}",
        availability()
    );
    assert!(d.join(".provision/maintain.json").exists());
    ssh(
        "node5",
        "sudo systemctl enable --now docker.socket docker.service 2>/dev/null",
    );
    let node4 = init_start("node4");
    let (rc, out) = maintain(d, &["--reboot", "-l", "node4:node5"]);
    assert_eq!(rc, 0, "{out}");
    assert!(out.contains("resuming: node4 done"), "{out}");
    assert!(!out.contains("node4: drain"), "node4 is not redone: {out}");
    assert_eq!(init_start("node4"), node4, "node4 not rebooted again");
    assert_eq!(availability(), all_active);

    // A package upgrade really applied: node4 holds lab-hello 1.0 and a repository offers
    // 2.0 from an archive that is not a security one: the default roll leaves it, --full
    // upgrades it (no reboot needed) and says so in the recap.
    sh_on("node4", HELLO_REPO);
    let (rc, out) = maintain(d, &["--check", "-l", "node4"]);
    assert!(
        rc == 0 && out.contains("node4: no upgrades; reboot: no"),
        "{out}"
    );
    let (rc, out) = maintain(d, &["--check", "--full", "-l", "node4"]);
    assert!(
        rc == 0 && out.contains("node4: would upgrade lab-hello 2.0; reboot: no"),
        "{out}"
    );
    let node4 = init_start("node4");
    let (rc, out) = maintain(d, &["--full", "-l", "node4"]);
    assert_eq!(rc, 0, "{out}");
    assert!(
        out.contains("rebooted: no   upgraded: lab-hello 2.0"),
        "{out}"
    );
    assert_eq!(
        ssh("node4", "dpkg-query -W -f '${Version}' lab-hello"),
        "2.0"
    );
    assert_eq!(init_start("node4"), node4, "no reboot was needed");
    assert_eq!(availability(), all_active);

    // An engine upgrade: node4 and node5 pinned (`docker_version`) to a newer docker.io
    // (the installed one rebuilt as VERSION+lab1). A normal run does not touch the engine;
    // `maintain` installs it in each node's drained window, one node after the other, and
    // dockerd comes back in the swarm.
    for n in ["node4", "node5"] {
        sh_on(n, ENGINE_REPO);
    }
    let old_v = ssh("node4", "dpkg-query -W -f '${Version}' docker.io");
    let new_v = format!("{old_v}+lab1");
    let pinned = std::fs::read_to_string(d.join("inventory.yml")).unwrap();
    with_vars(
        d,
        &pinned,
        &[
            ("node4", &format!("docker_version: \"{new_v}\"")),
            ("node5", &format!("docker_version: \"{new_v}\"")),
        ],
    );
    let o = provision(&[d.join("inventory.yml").to_str().unwrap()]);
    assert!(
        o.status.success() && text(&o).contains("no changes"),
        "a normal run leaves the engine to maintain: {}",
        text(&o)
    );
    let (rc, out) = maintain(d, &["--check", "-l", "node4:node5"]);
    assert!(
        rc == 0
            && out.contains(&format!(
                "node4: would upgrade docker.io {new_v}; reboot: no"
            )),
        "{out}"
    );
    let dockerd = |n: &str| ssh(n, "systemctl show -p MainPID --value docker");
    let pids = [dockerd("node4"), dockerd("node5")];
    let t = Instant::now();
    let (rc, out) = maintain(d, &["-l", "node4:node5"]);
    eprintln!(
        "engine {old_v} -> {new_v} on node4 then node5: {:.1} s\n{out}",
        t.elapsed().as_secs_f64()
    );
    assert_eq!(rc, 0, "{out}");
    let at = |s: &str| out.find(s).expect(s);
    assert!(
        at("node4: drain") < at("node4: done") && at("node4: done") < at("node5: drain"),
        "one worker at a time (batch 1): {out}"
    );
    assert_eq!(
        out.matches(&format!("upgraded: docker.io {new_v}")).count(),
        2,
        "{out}"
    );
    assert_eq!(
        out.matches("restart docker.service (the engine was upgraded)")
            .count(),
        2,
        "{out}"
    );
    for (n, p) in ["node4", "node5"].iter().zip(&pids) {
        assert_eq!(ssh(n, "dpkg-query -W -f '${Version}' docker.io"), new_v);
        assert_ne!(
            &dockerd(n),
            p,
            "{n}'s dockerd restarted with the new engine"
        );
    }
    assert_eq!(availability(), all_active);
    assert_eq!(
        ssh(
            "node2",
            "sudo docker service ls --filter name=web_web --format '{{.Replicas}}'"
        ),
        "2/2"
    );
    // The pins off again: new machines under these names later get the repository's engine.
    write(d, "inventory.yml", &pinned);

    let o = provision(&["audit", d.join("inventory.yml").to_str().unwrap()]);
    assert!(o.status.success(), "audit after the roll: {}", text(&o));
    let o = provision(&[d.join("inventory.yml").to_str().unwrap()]);
    assert!(
        o.status.success() && text(&o).contains("no changes"),
        "{}",
        text(&o)
    );
    assert!(
        !d.join(".provision/maintain.json").exists(),
        "a finished roll leaves no progress behind"
    );
}

/// Samples the web service's running tasks every 500 ms from `node`, until stopped.
struct Sampler {
    stop: Arc<AtomicBool>,
    counts: Arc<[AtomicUsize; 3]>,
    tasks: Arc<std::sync::Mutex<std::collections::BTreeSet<String>>>,
    thread: std::thread::JoinHandle<()>,
}

/// What a Sampler saw: answers, answers with no running task, and failed asks (the swarm's
/// managers did not answer).
#[derive(Debug)]
struct Samples {
    answers: usize,
    empty: usize,
    failed: usize,
    /// The web tasks seen running: beyond the 2 replicas, each one a task that moved.
    tasks: usize,
}

impl Sampler {
    fn start(node: &'static str) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let counts: Arc<[AtomicUsize; 3]> = Arc::new(Default::default());
        let tasks = Arc::new(std::sync::Mutex::new(std::collections::BTreeSet::new()));
        let thread = {
            let (stop, counts, tasks) = (stop.clone(), counts.clone(), tasks.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let (rc, r) = ssh_rc(
                        node,
                        "sudo sh -c \"docker service ls --filter name=web_web --format '{{.Replicas}}' && \
                         docker service ps web_web -q --filter desired-state=running\"",
                    );
                    let mut lines = r.lines();
                    let r = lines.next().unwrap_or("").to_owned();
                    if rc == 0 {
                        tasks
                            .lock()
                            .unwrap()
                            .extend(lines.map(|l| l.trim().to_owned()).filter(|l| !l.is_empty()));
                    }
                    let i = match (rc, r.trim().starts_with("0/")) {
                        (0, false) => 0,
                        (0, true) => 1,
                        _ => 2,
                    };
                    counts[i].fetch_add(1, Ordering::Relaxed);
                    if i == 1 {
                        counts[0].fetch_add(1, Ordering::Relaxed);
                    }
                    std::thread::sleep(Duration::from_millis(500));
                }
            })
        };
        Sampler {
            stop,
            counts,
            tasks,
            thread,
        }
    }

    fn finish(self) -> Samples {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap();
        let c = |i: usize| self.counts[i].load(Ordering::Relaxed);
        let tasks = self.tasks.lock().unwrap().len();
        Samples {
            answers: c(0),
            empty: c(1),
            failed: c(2),
            tasks,
        }
    }
}

/// The inventory with `vars` added to each named host's line.
fn with_vars(d: &Path, base: &str, hosts: &[(&str, &str)]) {
    let mut s = base.to_string();
    for (h, vars) in hosts {
        let i = h.trim_start_matches("node");
        let from = format!("{h}: {{ ansible_host: 10.200.0.1{i} }}");
        assert!(s.contains(&from), "{from}");
        s = s.replace(
            &from,
            &format!("{h}: {{ ansible_host: 10.200.0.1{i}, {vars} }}"),
        );
    }
    write(d, "inventory.yml", &s);
}

fn run(d: &Path) -> (i32, String) {
    let o = provision(&[d.join("inventory.yml").to_str().unwrap()]);
    (o.status.code().unwrap_or(-1), text(&o))
}

/// Removals and a replacement; returns the inventory they started from.
fn removals(d: &Path) -> String {
    let base = std::fs::read_to_string(d.join("inventory.yml")).unwrap();
    let nodes = || {
        ssh(
            "node1",
            "sudo docker node ls --format '{{.Hostname}}' | sort | tr '\\n' ' '",
        )
    };
    assert_eq!(nodes(), "node1 node2 node3 node4 node5");
    // What names node5 on node1: its firewall and /etc/hosts.
    let mentions = || {
        ssh(
            "node1",
            "sudo sh -c 'nft list ruleset | grep -c 10.200.0.15; grep -c 10.200.0.15 /etc/hosts; true'",
        )
    };
    let before = mentions();
    assert!(
        before.lines().all(|l| l.trim() != "0"),
        "node1 names node5 in its firewall and /etc/hosts: {before}"
    );

    // The plan only: every step named, nothing changed.
    with_vars(d, &base, &[("node5", "provision_state: absent")]);
    let o = provision(&[d.join("inventory.yml").to_str().unwrap(), "--check"]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    for want in [
        "removal plan (nothing changed):",
        "node5: wait until its tasks run on other nodes",
        "node5: swarm: leave",
        "node5: swarm: remove node",
        "node5: ceph: stop its CephFS mount",
    ] {
        assert!(out.contains(want), "{want}: {out}");
    }
    assert_eq!(nodes(), "node1 node2 node3 node4 node5");
    assert!(availability().contains("node5 Ready Active"));

    // Two of three managers: refused before any host is contacted, with the numbers.
    with_vars(
        d,
        &base,
        &[
            ("node2", "provision_state: absent"),
            ("node3", "provision_state: absent"),
        ],
    );
    let (rc, out) = run(d);
    assert_eq!(rc, 4, "{out}");
    for want in [
        "removing node2, node3 (2 of 3 managers) would leave 1, fewer than the 2 that a quorum of 3 needs",
        "(2 of 3 etcd members)",
        "(2 of 3 Ceph monitors)",
        "nothing was changed",
    ] {
        assert!(out.contains(want), "{want}: {out}");
    }
    assert_eq!(nodes(), "node1 node2 node3 node4 node5");

    // node5, a worker with a web replica maybe: drained while the service is sampled, then
    // out of the swarm, and out of node1's firewall and /etc/hosts.
    with_vars(d, &base, &[("node5", "provision_state: absent")]);
    let sampler = Sampler::start("node3");
    let http = HttpLoop::start("node3");
    let t = std::time::Instant::now();
    let (rc, out) = run(d);
    let took = t.elapsed().as_secs_f64();
    let web = sampler.finish();
    let (http_ok, http_bad) = http.finish();
    eprintln!("removing node5 (the whole run): {took:.1} s, web service {web:?}, HTTP requests {http_ok} answered, {http_bad} failed\n{out}");
    assert_eq!(rc, 0, "{out}");
    assert!(out.contains("removed node5: "), "{out}");
    assert!(web.answers > 5, "the sampler ran: {web:?}");
    assert_eq!(web.empty, 0, "the web service had no running task: {web:?}");
    assert!(http_ok > 20, "the HTTP loop ran: {http_ok}");
    let moved = web.tasks.saturating_sub(2) as u64;
    assert!(
        http_bad <= moved,
        "at most one failed HTTP request per moved task ({moved}): {http_bad}"
    );
    assert_eq!(nodes(), "node1 node2 node3 node4");
    assert_eq!(
        ssh(
            "node5",
            "sudo docker info --format '{{.Swarm.LocalNodeState}}'"
        ),
        "inactive"
    );
    assert_eq!(
        ssh(
            "node5",
            "systemctl is-active provision-cephfs.service || true"
        ),
        "inactive"
    );
    let after = mentions();
    assert!(
        after.lines().all(|l| l.trim() == "0"),
        "node1 no longer names node5: {after}"
    );
    let rec = std::fs::read_to_string(d.join(".provision/retired.json")).unwrap();
    assert!(
        rec.contains("\"node5\"") && rec.contains("swarm_node"),
        "{rec}"
    );
    let (rc, aout) = audit(d);
    assert_eq!(rc, 0, "audit after removing node5: {aout}");

    // node4 replaced: a new machine under the same name (reinstalled, a blank disk, its
    // new host key accepted on purpose). One run: a new swarm node with the same labels,
    // the old entry gone; a new OSD, the old one out, then purged once its data has moved;
    // a CephFS file written before intact.
    let sum = "sha256sum /mnt/cephfs/keep.bin";
    ssh(
        "node1",
        "sudo sh -c 'head -c 8M /dev/urandom > /mnt/cephfs/keep.bin && sync'",
    );
    let want_sum = ssh("node1", &format!("sudo sh -c '{sum}'"));
    assert_eq!(ssh("node1", "sudo ceph osd ls | wc -l"), "4");
    let old_node = ssh("node1", "sudo docker node inspect node4 -f '{{.ID}}'");
    let old_osd = ssh("node1", "sudo ceph osd ls-tree node4");
    let o = provision(&["lab", "reinstall", "node4"]);
    assert!(o.status.success(), "{}", text(&o));
    let t = std::time::Instant::now();
    let (rc, out) = run(d);
    eprintln!(
        "replacing node4 (one run): {:.1} s\n{out}",
        t.elapsed().as_secs_f64()
    );
    assert_eq!(rc, 0, "{out}");
    assert_eq!(nodes(), "node1 node2 node3 node4");
    let new_node = ssh("node1", "sudo docker node inspect node4 -f '{{.ID}}'");
    assert_ne!(new_node, old_node, "a new swarm node");
    assert_eq!(
        ssh(
            "node1",
            "sudo docker node inspect node4 -f '{{index .Spec.Labels \"disk\"}}'"
        ),
        "osd"
    );
    let new_osd = ssh("node1", "sudo ceph osd ls-tree node4");
    assert!(
        !new_osd.is_empty() && new_osd != old_osd,
        "a new OSD: {old_osd} -> {new_osd}"
    );
    assert_eq!(ssh("node1", "sudo ceph osd ls | wc -l"), "4");
    assert_eq!(ssh("node2", "sudo ceph health"), "HEALTH_OK");
    assert_eq!(ssh("node2", &format!("sudo sh -c '{sum}'")), want_sum);
    let (rc, aout) = audit(d);
    assert_eq!(rc, 0, "audit after replacing node4: {aout}");

    // node4, the OSD worker, powered off. Removing it needs the explicit flag; with it,
    // its OSD goes out, the data moves to the others (the CephFS file stays intact), and
    // the OSD is purged.
    let o = provision(&["lab", "stop", "node4"]);
    assert!(o.status.success(), "{}", text(&o));
    with_vars(
        d,
        &base,
        &[
            ("node5", "provision_state: absent"),
            ("node4", "provision_state: absent"),
        ],
    );
    let (rc, out) = run(d);
    assert_eq!(rc, 3, "{out}");
    assert!(
        out.contains("node4")
            && out.contains("provision_force: true")
            && out.contains("Nothing was changed"),
        "{out}"
    );
    assert_eq!(ssh("node1", "sudo ceph osd ls | wc -l"), "4");
    with_vars(
        d,
        &base,
        &[
            ("node5", "provision_state: absent"),
            ("node4", "provision_state: absent, provision_force: true"),
        ],
    );
    let t = std::time::Instant::now();
    let (rc, out) = run(d);
    let took = t.elapsed().as_secs_f64();
    eprintln!("removing node4, powered off (the whole run): {took:.1} s\n{out}");
    assert_eq!(rc, 0, "{out}");
    for want in [
        "removed node4: ",
        "node4: ceph: mark osd.",
        "its data has moved",
        "not cleaned on the host (it does not answer)",
    ] {
        assert!(out.contains(want), "{want}: {out}");
    }
    assert_eq!(ssh("node1", "sudo ceph osd ls | wc -l"), "3");
    assert_eq!(ssh("node2", "sudo ceph health"), "HEALTH_OK");
    assert_eq!(ssh("node2", &format!("sudo sh -c '{sum}'")), want_sum);
    assert_eq!(nodes(), "node1 node2 node3");
    assert_eq!(
        ssh(
            "node2",
            "sudo docker service ls --filter name=web_web --format '{{.Replicas}}'"
        ),
        "2/2"
    );

    // node3 too (even counts allowed): its quorums would hold, but 2 OSD hosts cannot
    // keep 3 copies. Refused before anything changes, with the numbers.
    let mut even = base.replace(
        "    ceph_allow_loop_devices: true\n",
        "    ceph_allow_loop_devices: true\n    swarm_allow_even_managers: true\n    \
         etcd_allow_even_members: true\n    ceph_allow_even_mons: true\n",
    );
    for (h, v) in [
        ("node3", "provision_state: absent"),
        ("node4", "provision_state: absent, provision_force: true"),
        ("node5", "provision_state: absent"),
    ] {
        let i = h.trim_start_matches("node");
        even = even.replace(
            &format!("{h}: {{ ansible_host: 10.200.0.1{i} }}"),
            &format!("{h}: {{ ansible_host: 10.200.0.1{i}, {v} }}"),
        );
    }
    write(d, "inventory.yml", &even);
    let (rc, out) = run(d);
    assert_eq!(rc, 2, "{out}");
    assert!(
        out.contains("keeps 3 copies, one per host, and without node3 2 OSD host(s)")
            && out.contains("nothing was changed"),
        "{out}"
    );
    assert!(
        availability().contains("node3 Ready Active"),
        "{}",
        availability()
    );
    with_vars(
        d,
        &base,
        &[
            ("node5", "provision_state: absent"),
            ("node4", "provision_state: absent, provision_force: true"),
        ],
    );

    // Done: the audit is clean, and a run again changes nothing (node4 still off).
    let (rc, aout) = audit(d);
    assert_eq!(rc, 0, "audit after the removals: {aout}");
    // A removed node that answers on a cluster port again is flagged.
    sh_on(
        "node5",
        "setsid python3 -m http.server 7946 >/dev/null 2>&1 </dev/null & sleep 1",
    );
    let o = provision(&["audit", d.join("inventory.yml").to_str().unwrap()]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(5), "{out}");
    assert!(out.contains("node5") && out.contains("7946"), "{out}");
    sh_on("node5", "pkill -f 'http.server 7946'; true");
    let (rc, out) = run(d);
    assert!(rc == 0 && out.contains("no changes"), "{out}");
    assert!(!out.contains("removing"), "nothing left to remove: {out}");
    base
}

/// etcd members as node1 sees them with the operators' profile (no sudo, no flags).
fn etcd_members() -> String {
    ssh(
        "node1",
        "bash -lc 'etcdctl member list' | cut -d, -f3 | tr -d ' ' | sort | tr '\\n' ' '",
    )
}

fn mons_in_quorum() -> usize {
    ceph_status()["quorum_names"].as_array().unwrap().len()
}

/// Counts of a writer loop on `n` (`etcd` or `fs`: ETCD_LOOP, CEPHFS_LOOP): (ok, failed).
fn loop_counts(n: &str, what: &str) -> (u64, u64) {
    let c = ssh(n, &format!("cat /tmp/{what}-counts"));
    let (ok, bad) = c.split_once(' ').expect(&c);
    (ok.parse().unwrap(), bad.parse().unwrap())
}

/// node4 and node5 come back (new machines under their names) as managers, etcd members,
/// monitors, and node5 an OSD host once its disk may be wiped; then both are removed in
/// one run while etcd, CephFS and the swarm are used: 5 managers, members and monitors
/// down to 3, node5's data moved before its OSD is purged.
fn managers(d: &Path, base: &str) {
    for n in ["node4", "node5"] {
        let o = provision(&["lab", "reinstall", n]);
        assert!(o.status.success(), "{}", text(&o));
    }
    let disk5 = disks()[4].clone();
    ssh("node5", &format!("sudo mkfs.ext4 -q -F {disk5}"));
    let workers = "    workers:\n      hosts:\n        node4: { ansible_host: 10.200.0.14 }\n        node5: { ansible_host: 10.200.0.15 }\n";
    let node3 = "        node3: { ansible_host: 10.200.0.13 }\n";
    assert!(base.contains(workers) && base.contains(node3), "{base}");
    let five = base.replace(workers, "").replacen(
        node3,
        &format!("{node3}        node4: {{ ansible_host: 10.200.0.14 }}\n        node5: {{ ansible_host: 10.200.0.15 }}\n"),
        1,
    );
    let osd4 = five
        .lines()
        .find(|l| {
            l.trim_start()
                .starts_with("node4: { ansible_host: 10.200.0.14, ceph_osd_devices")
        })
        .expect(&five)
        .to_owned();
    let with_osd5 = |dev: &str| {
        five.replace(
            &osd4,
            &format!("        node5: {{ ansible_host: 10.200.0.15, ceph_osd_devices: [{dev}] }}"),
        )
    };

    // Back as managers: two members added to etcd, two monitors, each waited for; no
    // daemon restarted.
    write(d, "inventory.yml", &five.replace(&format!("{osd4}\n"), ""));
    let (rc, out) = run(d);
    assert_eq!(rc, 0, "{out}");
    for want in ["add monitor node4", "add monitor node5"] {
        assert!(out.contains(want), "{want}: {out}");
    }
    assert!(
        !out.contains("restart ceph-"),
        "new monitors restarted a daemon: {out}"
    );
    assert_eq!(
        ssh("node1", "sudo docker node ls --filter role=manager --format '{{.Hostname}}' | sort | tr '\\n' ' '"),
        "node1 node2 node3 node4 node5"
    );
    assert_eq!(etcd_members(), "node1 node2 node3 node4 node5");
    assert_eq!(mons_in_quorum(), 5);

    // node5's disk holds a filesystem: refused and left alone; with wipe: true it is
    // erased and becomes an OSD.
    write(d, "inventory.yml", &with_osd5(&disk5));
    let (rc, out) = run(d);
    assert_eq!(rc, 2, "{out}");
    assert!(
        out.contains("holds data (") && out.contains("TYPE=ext4") && out.contains("wipe: true"),
        "{out}"
    );
    assert_eq!(
        ssh("node5", &format!("sudo blkid -o value -s TYPE {disk5}")),
        "ext4"
    );
    write(
        d,
        "inventory.yml",
        &with_osd5(&format!("{{ path: {disk5}, wipe: true }}")),
    );
    let (rc, out) = run(d);
    assert_eq!(rc, 0, "{out}");
    assert!(
        out.contains("wipe ") && out.contains("create an OSD"),
        "{out}"
    );
    let s = ceph_wait(180, |s| ceph_healthy(s, 4));
    assert!(ceph_healthy(&s, 4), "{s}");
    let full = std::fs::read_to_string(d.join("inventory.yml")).unwrap();
    let (rc, out) = run(d);
    assert!(rc == 0 && out.contains("no changes"), "{out}");

    // Both removed in one run, under load: etcd puts on node1, CephFS appends on node2,
    // the web service sampled on node1.
    ssh(
        "node1",
        "sudo sh -c 'head -c 16M /dev/urandom > /mnt/cephfs/keep2.bin && sync'",
    );
    let sum = "sha256sum /mnt/cephfs/keep2.bin";
    let want_sum = ssh("node1", &format!("sudo sh -c '{sum}'"));
    let osds_before: u64 = ssh("node1", "sudo ceph osd ls | wc -l").parse().unwrap();
    sh_on(
        "node1",
        &format!("rm -f /tmp/stop-loop; setsid sh -c '{ETCD_LOOP}' >/dev/null 2>&1 </dev/null &"),
    );
    sh_on("node2", &format!("rm -f /tmp/stop-loop /mnt/cephfs/rm-loop; setsid sh -c '{}' >/dev/null 2>&1 </dev/null &", CEPHFS_LOOP.replace("maint-loop", "rm-loop")));
    let sampler = Sampler::start("node1");
    let http = HttpLoop::start("node1");
    with_vars(
        d,
        &full,
        &[
            ("node4", "provision_state: absent"),
            ("node5", "provision_state: absent"),
        ],
    );
    let t = Instant::now();
    let (rc, out) = run(d);
    let took = t.elapsed().as_secs_f64();
    let web = sampler.finish();
    let (http_ok, http_bad) = http.finish();
    for n in ["node1", "node2"] {
        ssh(n, "sudo touch /tmp/stop-loop");
    }
    std::thread::sleep(Duration::from_secs(2));
    let (etcd_ok, etcd_bad) = loop_counts("node1", "etcd");
    let (fs_ok, fs_bad) = loop_counts("node2", "fs");
    let fs_lines: u64 = ssh("node2", "wc -l < /mnt/cephfs/rm-loop").parse().unwrap();
    eprintln!(
        "removing node4 and node5 (2 of 5 managers, etcd members and monitors; node5's OSD): {took:.1} s\n\
         meanwhile: etcd puts {etcd_ok} ok, {etcd_bad} failed; CephFS appends {fs_ok} ok, {fs_bad} failed; web service {web:?}; \
         HTTP requests {http_ok} answered, {http_bad} failed\n{out}"
    );
    assert_eq!(rc, 0, "{out}");
    for want in ["removed node4: ", "removed node5: ", "its data has moved"] {
        assert!(out.contains(want), "{want}: {out}");
    }
    assert!(
        etcd_ok > 20 && fs_ok > 20 && web.answers > 5,
        "the loops ran"
    );
    assert!(
        etcd_bad <= 2,
        "at most one failed put per member removed: {etcd_bad}"
    );
    assert_eq!(fs_bad, 0, "CephFS writes failed");
    assert_eq!(
        fs_lines, fs_ok,
        "every CephFS append acknowledged is in the file"
    );
    assert_eq!(web.empty, 0, "the web service had no running task: {web:?}");
    assert!(http_ok > 20, "the HTTP loop ran: {http_ok}");
    let moved = web.tasks.saturating_sub(2) as u64;
    assert!(
        http_bad <= moved,
        "at most one failed HTTP request per moved task ({moved}): {http_bad}"
    );
    assert!(
        web.failed <= 2,
        "the managers answered (one leader change per demotion at most): {web:?}"
    );
    assert_eq!(
        ssh(
            "node1",
            "sudo docker node ls --format '{{.Hostname}}' | sort | tr '\\n' ' '"
        ),
        "node1 node2 node3"
    );
    assert_eq!(etcd_members(), "node1 node2 node3");
    assert_eq!(mons_in_quorum(), 3);
    let osds_after: u64 = ssh("node1", "sudo ceph osd ls | wc -l").parse().unwrap();
    assert_eq!(osds_after, osds_before - 1, "node5's OSD purged");
    assert_eq!(ssh("node2", "sudo ceph health"), "HEALTH_OK");
    assert_eq!(ssh("node2", &format!("sudo sh -c '{sum}'")), want_sum);
    let (rc, aout) = audit(d);
    assert_eq!(rc, 0, "audit after removing two managers: {aout}");
    let (rc, out) = run(d);
    assert!(rc == 0 && out.contains("no changes"), "{out}");
}
