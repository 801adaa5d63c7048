//! etcd over mutual TLS on fresh lab hosts (installed from the lab's repository): three
//! initial members, idempotence without restarts, two members added under a writer loop
//! with no failed write, a run killed right after `member add` healed by the next, a wiped
//! member re-added, and health and membership in the audit.

mod common;
use common::*;
use std::path::Path;

const E: &str = "sudo ETCDCTL_API=3 etcdctl --endpoints=https://127.0.0.1:2379 --cacert=/etc/provision/pki/ca.crt --cert=/etc/provision/pki/etcd.crt --key=/etc/provision/pki/etcd.key";

fn inventory(d: &Path, n: usize) {
    inventory_with(d, n, "")
}

fn inventory_with(d: &Path, n: usize, vars: &str) {
    let hosts: String = (1..=n)
        .map(|i| format!("        node{i}: {{ ansible_host: 10.200.0.1{i} }}\n"))
        .collect();
    write(
        d,
        "inventory.yml",
        &format!(
            "all:\n  vars:\n    ansible_user: admin\n    ansible_become: true\n    ansible_ssh_private_key_file: {lab}/id_ed25519\n    known_hosts_file: {lab}/known_hosts\n{vars}  children:\n    etcd:\n      hosts:\n{hosts}",
            lab = lab_dir().display()
        ),
    );
}

fn run(d: &Path, env: &[(&str, &str)]) -> (Option<i32>, String) {
    let o = std::process::Command::new(BIN)
        .arg(d.join("inventory.yml"))
        .arg("-p")
        .arg(d.join("etcd.yml"))
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (o.status.code(), text(&o))
}

/// (name, started, learner) of every member, seen from `on`.
fn members(on: &str) -> Vec<(String, bool)> {
    let out = ssh(on, &format!("{E} member list -w json"));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let mut m: Vec<(String, bool)> = v["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["name"].as_str().unwrap_or("").to_owned(),
                m["isLearner"].as_bool().unwrap_or(false),
            )
        })
        .collect();
    m.sort();
    m
}

fn voting(names: &[&str]) -> Vec<(String, bool)> {
    names.iter().map(|n| (n.to_string(), false)).collect()
}

fn healthy(on: &str) -> usize {
    ssh(on, &format!("{E} endpoint health --cluster 2>&1 || true"))
        .lines()
        .filter(|l| l.contains("is healthy"))
        .count()
}

/// A put every 100 ms from node1 (to `endpoints`, or its own member) until `stop` is
/// called: returns "writes=N failed=F".
fn writer(prefix: &str, endpoints: Option<&str>) -> impl FnOnce() -> String {
    let ctl = match endpoints {
        Some(e) => E.replace(
            "--endpoints=https://127.0.0.1:2379",
            &format!("--endpoints={e}"),
        ),
        None => E.to_string(),
    };
    let child = std::process::Command::new("ssh")
        .arg("-F")
        .arg(lab_dir().join("ssh_config"))
        .arg("node1")
        .arg(format!("rm -f /tmp/stop; n=0; f=0; while [ ! -f /tmp/stop ] && [ $n -lt 3000 ]; do n=$((n+1)); {ctl} put {prefix}$n v >/dev/null 2>&1 || f=$((f+1)); sleep 0.1; done; echo writes=$n failed=$f"))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_secs(1));
    move || {
        ssh("node1", "touch /tmp/stop");
        let w = child.wait_with_output().unwrap();
        String::from_utf8_lossy(&w.stdout).trim().to_owned()
    }
}

fn etcd_findings(d: &Path) -> Vec<String> {
    let o = provision(&[
        "audit",
        d.join("inventory.yml").to_str().unwrap(),
        "--output",
        "json",
    ]);
    let mut v = Vec::new();
    for l in text(&o).lines() {
        let Ok(e) = serde_json::from_str::<serde_json::Value>(l) else {
            continue;
        };
        for f in e["findings"].as_array().into_iter().flatten() {
            if f["id"].as_str().unwrap().starts_with("etcd") {
                v.push(format!(
                    "{} {} {}",
                    e["host"].as_str().unwrap(),
                    f["id"].as_str().unwrap(),
                    f["pass"]
                ));
            }
        }
    }
    v
}

#[test]
fn etcd_bootstrap_add_members_heal_and_audit() {
    let Some(_lab) = LabGuard::fresh(5) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    inventory(d, 3);
    write(d, "etcd.yml", "- hosts: etcd\n  roles: [pki, etcd]\n");

    let (rc, out) = run(d, &[]);
    assert_eq!(rc, Some(0), "{out}");
    assert!(
        out.contains("start the initial etcd members together"),
        "{out}"
    );
    assert_eq!(healthy("node2"), 3);
    assert_eq!(members("node1"), voting(&["node1", "node2", "node3"]));
    // The operator profile: a login shell's plain `etcdctl` reaches the cluster, no sudo.
    let op = ssh("node2", "bash -lc 'etcdctl member list' 2>&1");
    assert_eq!(
        op.lines().filter(|l| l.contains(", started, ")).count(),
        3,
        "{op}"
    );
    assert_eq!(
        ssh(
            "node2",
            "stat -c '%a %G' /etc/provision/pki/etcd-operator.key"
        ),
        "640 etcd-operators"
    );
    ssh("node1", &format!("{E} put greeting hello >/dev/null"));
    assert_eq!(
        ssh("node3", &format!("{E} get greeting --print-value-only")),
        "hello"
    );
    let anon = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "5", "--cacert"])
        .arg(d.join(".provision/ca.crt"))
        .arg("https://10.200.0.11:2379/version")
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&anon.stdout).contains("etcdserver"),
        "answered a client without a certificate: {}",
        text(&anon)
    );

    // Again: nothing changes, nothing restarts.
    let pids = |n: &str| ssh(n, "systemctl show -p MainPID --value etcd");
    let before: Vec<String> = ["node1", "node2", "node3"]
        .iter()
        .map(|n| pids(n))
        .collect();
    let (rc, out) = run(d, &[]);
    assert!(rc == Some(0) && out.contains("no changes"), "{out}");
    assert_eq!(
        before,
        ["node1", "node2", "node3"]
            .iter()
            .map(|n| pids(n))
            .collect::<Vec<_>>()
    );

    // Scheduled snapshots: a timer on every member and a first snapshot taken by the
    // run, checked, 0600 in a 0700 folder. The audit reads their age and outcome: a
    // snapshot that failed (etcd stopped) and one too old are findings until a good one.
    for n in ["node1", "node2", "node3"] {
        assert_eq!(
            ssh(n, "systemctl is-enabled provision-etcd-backup.timer; systemctl is-active provision-etcd-backup.timer"),
            "enabled\nactive",
            "{n}"
        );
    }
    ssh(
        "node2",
        "sudo systemctl start provision-etcd-backup.service",
    );
    let snaps = ssh("node2", "sudo sh -c 'ls /var/backups/etcd/etcd-*.db'");
    assert_eq!(
        snaps.lines().count(),
        2,
        "the run's snapshot and this one: {snaps}"
    );
    let last = snaps.lines().last().unwrap();
    assert_eq!(
        ssh(
            "node2",
            &format!("sudo stat -c '%a %U' /var/backups/etcd {last}")
        ),
        "700 root\n600 root"
    );
    let status = ssh(
        "node2",
        &format!("sudo sh -c 'ETCDCTL_API=3 etcdctl snapshot status {last} -w json'"),
    );
    let status: serde_json::Value = serde_json::from_str(&status).expect(&status);
    assert!(
        status["revision"].as_u64().unwrap() >= 2,
        "greeting is in it: {status}"
    );
    let backup_finding = |n: &str| {
        etcd_findings(d)
            .into_iter()
            .find(|f| f.starts_with(&format!("{n} etcd-backup ")))
            .unwrap_or_else(|| panic!("no etcd-backup finding for {n}"))
    };
    assert_eq!(backup_finding("node1"), "node1 etcd-backup true");
    ssh("node3", "sudo systemctl stop etcd");
    let (rc, _) = ssh_rc(
        "node3",
        "sudo systemctl start provision-etcd-backup.service",
    );
    assert_ne!(rc, 0, "a snapshot of a stopped member fails");
    ssh("node3", "sudo systemctl start etcd");
    assert_eq!(backup_finding("node3"), "node3 etcd-backup false");
    let o = provision(&["audit", d.join("inventory.yml").to_str().unwrap()]);
    let out = text(&o);
    assert!(
        o.status.code() == Some(5) && out.contains("the last attempt failed"),
        "{out}"
    );
    ssh(
        "node1",
        "sudo sed -i \"s/^last_ok=.*/last_ok=$(( $(date +%s) - 27 * 3600 ))/\" /var/lib/provision/etcd-backup.status",
    );
    let o = provision(&["audit", d.join("inventory.yml").to_str().unwrap()]);
    let out = text(&o);
    assert!(out.contains("the last good one 27 h ago"), "{out}");
    assert_eq!(backup_finding("node1"), "node1 etcd-backup false");
    for n in ["node1", "node3"] {
        ssh(n, "sudo systemctl start provision-etcd-backup.service");
    }
    let f = etcd_findings(d);
    assert!(f.iter().all(|f| f.ends_with("true")), "{f:?}");

    // Two more members while a writer puts every 100 ms: no write fails.
    inventory(d, 5);
    let stop = writer("k", None);
    let (rc, out) = run(d, &[]);
    let w = stop();
    assert_eq!(rc, Some(0), "{out}");
    assert!(w.ends_with("failed=0") && !w.starts_with("writes=0"), "{w}");
    let profile = ssh("node1", "cat /etc/profile.d/01-etcd.sh");
    assert!(profile.contains("https://10.200.0.15:2379"), "{profile}");
    eprintln!("writer during two member adds: {w}");
    assert_eq!(
        members("node4"),
        voting(&["node1", "node2", "node3", "node4", "node5"])
    );
    assert_eq!(healthy("node5"), 5);

    // A run killed right after `member add`: the next run starts and promotes the member.
    ssh(
        "node5",
        "sudo systemctl stop etcd; sudo rm -rf /var/lib/etcd/provision",
    );
    let id5 = ssh(
        "node1",
        &format!("{E} member list | grep node5 | cut -d, -f1"),
    );
    ssh("node1", &format!("{E} member remove {id5} >/dev/null"));
    let (rc, _) = run(d, &[("PROVISION_TEST_KILL_AFTER", "add node5")]);
    assert_eq!(rc, None, "the test hook kills the run");
    let half = members("node1");
    assert!(
        half.contains(&(String::new(), true)),
        "node5 should be added, not started: {half:?}"
    );
    let (rc, out) = run(d, &[]);
    assert_eq!(rc, Some(0), "{out}");
    assert!(
        out.contains("start etcd on node5 joining the existing cluster"),
        "{out}"
    );
    assert_eq!(
        members("node1"),
        voting(&["node1", "node2", "node3", "node4", "node5"])
    );

    // A member whose data dir is wiped is removed and added again.
    let old4 = ssh(
        "node1",
        &format!("{E} member list | grep node4 | cut -d, -f1"),
    );
    ssh(
        "node4",
        "sudo systemctl stop etcd; sudo rm -rf /var/lib/etcd/provision",
    );
    let (rc, out) = run(d, &[]);
    assert_eq!(rc, Some(0), "{out}");
    assert!(out.contains("stale etcd member"), "{out}");
    let new4 = ssh(
        "node1",
        &format!("{E} member list | grep node4 | cut -d, -f1"),
    );
    assert_ne!(old4, new4);
    assert_eq!(
        members("node2"),
        voting(&["node1", "node2", "node3", "node4", "node5"])
    );
    assert_eq!(healthy("node2"), 5);

    // The audit: every member healthy and voting; a stopped one is drift; the run restarts it.
    assert!(
        etcd_findings(d).iter().all(|f| f.ends_with("true")),
        "{:?}",
        etcd_findings(d)
    );
    ssh("node3", "sudo systemctl stop etcd");
    let f = etcd_findings(d);
    assert!(f.contains(&"node3 etcd-health false".to_string()), "{f:?}");
    assert_eq!(
        f.iter().filter(|f| f.ends_with("false")).count(),
        1,
        "{f:?}"
    );
    let (rc, out) = run(d, &[]);
    assert_eq!(rc, Some(0), "{out}");
    assert!(
        out.contains("start etcd on node3 (its data is kept)"),
        "{out}"
    );
    assert_eq!(healthy("node1"), 5);
    assert_eq!(
        ssh("node3", &format!("{E} get greeting --print-value-only")),
        "hello"
    );

    // New certificates (a name added): the members restart one at a time and the cluster
    // keeps taking writes. The writer uses every endpoint; a put in flight on the member
    // being restarted can fail, so at most one failure per restart is allowed.
    inventory_with(d, 5, "    pki_extra_sans: [etcd.example]\n");
    let all: Vec<String> = (1..=5)
        .map(|i| format!("https://10.200.0.1{i}:2379"))
        .collect();
    let stop = writer("r", Some(&all.join(",")));
    let (rc, out) = run(d, &[]);
    let w = stop();
    assert_eq!(rc, Some(0), "{out}");
    assert_eq!(
        out.matches("(restarted, one member at a time)").count(),
        5,
        "{out}"
    );
    eprintln!("writer during the certificate roll: {w}");
    let failed: usize = w.rsplit("failed=").next().unwrap().parse().unwrap();
    let writes: usize = w
        .trim_start_matches("writes=")
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(writes > 10 && failed <= 5, "{w}");
    assert_eq!(healthy("node4"), 5);
    assert!(ssh(
        "node2",
        "openssl x509 -in /etc/provision/pki/etcd.crt -noout -ext subjectAltName"
    )
    .contains("etcd.example"));

    // A rotation begun while a member is powered off stops in its first phase: nothing is
    // decided without that member (no restart through it, none removed), the phase is kept,
    // and the rotation below, once it is back, goes on from there.
    let rotate = || {
        std::process::Command::new(BIN)
            .arg(d.join("inventory.yml"))
            .arg("-p")
            .arg(d.join("etcd.yml"))
            .arg("--rotate-ca")
            .output()
            .unwrap()
    };
    let state = d.join(".provision");
    let before_ca = std::fs::read_to_string(state.join("ca.crt")).unwrap();
    assert!(provision(&["lab", "stop", "node5"]).status.success());
    let o = rotate();
    let out = text(&o);
    assert_eq!(o.status.code(), Some(3), "{out}");
    assert!(out.contains("CA rotation stopped in phase 1"), "{out}");
    assert!(!out.contains("(restarted, one member at a time)"), "{out}");
    assert_eq!(
        std::fs::read_to_string(state.join("ca.rotation")).unwrap(),
        "trust\n"
    );
    assert_eq!(
        std::fs::read_to_string(state.join("ca.crt")).unwrap(),
        before_ca
    );
    assert_eq!(members("node1").len(), 5, "a member was removed");
    assert!(provision(&["lab", "start", "node5"]).status.success());
    let t = std::time::Instant::now();
    while healthy("node1") < 5 && t.elapsed().as_secs() < 60 {
        std::thread::sleep(std::time::Duration::from_secs(2));
    }

    // A planned CA rotation under the same writer: three runs (both CAs trusted, every
    // certificate reissued, the old CA dropped), the members restarted one at a time in
    // each; then every certificate is the new CA's and no host trusts the old one.
    let old_ca = before_ca;
    let stop = writer("c", Some(&all.join(",")));
    let o = rotate();
    let w = stop();
    let out = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    for p in [
        "phase 1 of 3",
        "phase 2 of 3",
        "phase 3 of 3",
        "CA rotation done",
    ] {
        assert!(out.contains(p), "{p}: {out}");
    }
    assert_eq!(
        out.matches("(restarted, one member at a time)").count(),
        15,
        "every member restarted once per phase: {out}"
    );
    eprintln!("writer during the CA rotation: {w}");
    let failed: usize = w.rsplit("failed=").next().unwrap().parse().unwrap();
    assert!(failed <= 15, "{w}");
    let new_ca = std::fs::read_to_string(state.join("ca.crt")).unwrap();
    assert_ne!(new_ca, old_ca);
    for f in ["ca.next.crt", "ca.next.key", "ca.old.crt", "ca.rotation"] {
        assert!(!state.join(f).exists(), "{f} left in the state directory");
    }
    let old_line = old_ca.lines().nth(1).unwrap().to_owned();
    for i in 1..=5 {
        let n = format!("node{i}");
        assert_eq!(ssh(&n, "cat /etc/provision/pki/ca.crt"), new_ca.trim_end());
        let v = ssh(
            &n,
            "cd /etc/provision/pki && openssl verify -CAfile ca.crt etcd.crt host.crt",
        );
        assert_eq!(v.matches(": OK").count(), 2, "{n}: {v}");
        let (rc, _) = ssh_rc(
            &n,
            &format!("grep -qF '{old_line}' /etc/ssl/certs/ca-certificates.crt /usr/local/share/ca-certificates/provision-ca.crt"),
        );
        assert_eq!(rc, 1, "{n} still trusts the old CA");
    }
    assert_eq!(healthy("node3"), 5);
    assert_eq!(
        ssh("node5", &format!("{E} get greeting --print-value-only")),
        "hello"
    );
    let (rc, out) = run(d, &[]);
    assert!(rc == Some(0) && out.contains("no changes"), "{out}");
    let f = etcd_findings(d);
    assert!(
        !f.is_empty() && f.iter().all(|f| f.ends_with("true")),
        "{f:?}"
    );

    // Two members removed (5 -> 3, `provision_state: absent`) under a writer to the three
    // that stay: a snapshot first, each `member remove` keeps the quorum, etcd stopped on
    // the hosts and their data set aside, their certificates gone; no write fails.
    let inv = std::fs::read_to_string(d.join("inventory.yml")).unwrap();
    let mut gone = inv.clone();
    for i in [4, 5] {
        gone = gone.replace(
            &format!("node{i}: {{ ansible_host: 10.200.0.1{i} }}"),
            &format!("node{i}: {{ ansible_host: 10.200.0.1{i}, provision_state: absent }}"),
        );
    }
    assert_ne!(gone, inv);
    write(d, "inventory.yml", &gone);
    let stop = writer("r", Some(&all[..3].join(",")));
    let t = std::time::Instant::now();
    let (rc, out) = run(d, &[]);
    let took = t.elapsed().as_secs_f64();
    let w = stop();
    eprintln!("removing node4 and node5 (the whole run): {took:.1} s; writer: {w}\n{out}");
    assert_eq!(rc, Some(0), "{out}");
    assert!(
        out.contains("removed node4: ") && out.contains("removed node5: "),
        "{out}"
    );
    assert_eq!(members("node1"), voting(&["node1", "node2", "node3"]));
    assert_eq!(healthy("node1"), 3);
    let failed: usize = w.rsplit("failed=").next().unwrap().parse().unwrap();
    assert_eq!(failed, 0, "{w}");
    for n in ["node4", "node5"] {
        assert_eq!(ssh(n, "systemctl is-active etcd || true"), "inactive");
        assert_eq!(
            ssh(n, "systemctl is-active provision-etcd-backup.timer; ls /etc/systemd/system/provision-etcd-backup.timer 2>/dev/null; true"),
            "inactive",
            "{n}: no snapshot timer left"
        );
        assert_eq!(
            ssh(
                n,
                "sudo sh -c 'ls -d /var/lib/etcd/provision.removed-* | wc -l'"
            ),
            "1",
            "{n}: its data set aside"
        );
        assert_eq!(ssh(n, "sudo ls /etc/provision/pki"), "ca.crt", "{n}");
        assert!(
            ssh(
                "node1",
                &format!("sudo test -s /var/lib/etcd/snapshot-before-removing-{n}.db && echo yes")
            ) == "yes",
            "a snapshot before removing {n}"
        );
    }
    assert_eq!(
        ssh("node2", &format!("{E} get greeting --print-value-only")),
        "hello"
    );
    let (rc, out) = run(d, &[]);
    assert!(rc == Some(0) && out.contains("no changes"), "{out}");
    assert!(!out.contains("removing"), "{out}");
    let f = etcd_findings(d);
    assert!(
        !f.is_empty() && f.iter().all(|f| f.ends_with("true")),
        "{f:?}"
    );
    // The removed members answer on no cluster port, as seen from a member.
    let o = provision(&[
        "audit",
        d.join("inventory.yml").to_str().unwrap(),
        "--output",
        "json",
    ]);
    let out = text(&o);
    for n in ["node4", "node5"] {
        let line = out
            .lines()
            .find(|l| l.contains(&format!("\"host\":\"{n}\"")))
            .expect(&out);
        let e: serde_json::Value = serde_json::from_str(line).unwrap();
        let f = e["findings"].as_array().unwrap();
        assert!(
            f.iter().any(|f| f["id"] == "retired.port-2379") && f.iter().all(|f| f["pass"] == true),
            "{line}"
        );
    }
    // The restore drill: a backup set, a key written after it, then `restore --etcd`:
    // refused while etcd holds data (nothing changed); with every member's data gone (etcd
    // stopped, its folder deleted, as on new machines), the three members start as a new
    // cluster from the snapshot: the key from before is back, the later one is not, the
    // members vote, and a run after it changes nothing.
    write(d, "vault-pass", "etcd-drill\n");
    let (inv, pass) = (d.join("inventory.yml"), d.join("vault-pass"));
    let (inv, pass) = (inv.to_str().unwrap(), pass.to_str().unwrap());
    let backups = d.join("backups");
    let o = provision(&[
        "backup",
        inv,
        "--to",
        backups.to_str().unwrap(),
        "--vault-password-file",
        pass,
    ]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    let set = out
        .lines()
        .find_map(|l| l.strip_prefix("backup set: "))
        .expect(&out)
        .to_owned();
    ssh("node1", &format!("{E} put after-backup yes >/dev/null"));
    let restore = || {
        let o = provision(&[
            "restore",
            inv,
            "--etcd",
            "--from",
            &set,
            "--vault-password-file",
            pass,
        ]);
        (o.status.code(), text(&o))
    };
    let (rc, out) = restore();
    assert_eq!(rc, Some(4), "{out}");
    assert!(
        out.contains("etcd runs and holds data on node1 (") && out.contains("nothing was changed"),
        "{out}"
    );
    assert_eq!(
        ssh("node2", &format!("{E} get after-backup --print-value-only")),
        "yes"
    );
    // A member powered off: unknown, so nothing is rebuilt.
    let o = provision(&["lab", "stop", "node3"]);
    assert!(o.status.success(), "{}", text(&o));
    let (rc, out) = restore();
    assert_eq!(rc, Some(4), "{out}");
    assert!(
        out.contains("node3")
            && out.contains("every one must answer")
            && out.contains("nothing was changed"),
        "{out}"
    );
    let o = provision(&["lab", "start", "node3"]);
    assert!(o.status.success(), "{}", text(&o));
    for n in ["node1", "node2", "node3"] {
        ssh(
            n,
            "sudo systemctl stop etcd; sudo rm -rf /var/lib/etcd/provision",
        );
    }
    let t = std::time::Instant::now();
    let (rc, out) = restore();
    eprintln!(
        "etcd restored on 3 members: {:.1} s\n{out}",
        t.elapsed().as_secs_f64()
    );
    assert_eq!(rc, Some(0), "{out}");
    assert!(
        out.contains("etcd restored from") && out.contains("3 member(s)"),
        "{out}"
    );
    assert_eq!(healthy("node1"), 3);
    assert_eq!(members("node2"), voting(&["node1", "node2", "node3"]));
    assert_eq!(
        ssh("node3", &format!("{E} get greeting --print-value-only")),
        "hello"
    );
    assert_eq!(
        ssh("node3", &format!("{E} get after-backup --print-value-only")),
        "",
        "written after the set: not in it"
    );
    let (rc, out) = run(d, &[]);
    assert!(rc == Some(0) && out.contains("no changes"), "{out}");
    let f = etcd_findings(d);
    assert!(
        !f.is_empty() && f.iter().all(|f| f.ends_with("true")),
        "{f:?}"
    );
}
