//! A real swarm from a fresh lab: 3 managers + 2 workers with the built-in playbook,
//! idempotence (same NodeIDs, no init or join), the Docker API over mutual TLS, labels
//! declarative, overlay networks carrying traffic between workers, and a sixth host added
//! with --limit while the first manager's dockerd is down.

mod common;
use common::*;
use std::path::Path;

fn inventory(d: &Path, node4_labels: &str, node5_labels: &str, with_node6: bool) {
    inventory_roles(
        d,
        node4_labels,
        node5_labels,
        with_node6,
        ["node3", "node4"],
    );
}

/// `swap`: [the third manager, the first worker] (swapping them moves the roles).
fn inventory_roles(
    d: &Path,
    node4_labels: &str,
    node5_labels: &str,
    with_node6: bool,
    swap: [&str; 2],
) {
    let node6 = if with_node6 {
        "        node6: { ansible_host: 10.200.0.16, swarm_labels: { zone: c } }\n"
    } else {
        ""
    };
    write(
        d,
        "inventory.yml",
        &format!(
            "all:
  vars:
    ansible_user: admin
    ansible_become: true
    ansible_ssh_private_key_file: {lab}/id_ed25519
    known_hosts_file: {lab}/known_hosts
    chrony_options: \"-x\"
    extra_packages: [busybox-static]
    # the test reads the Docker API over TLS from this machine, and from node1 with a docker context
    firewall_docker_api_sources: [10.200.0.1, node1]
    swarm_default_addr_pool: [10.90.0.0/16]
    swarm_networks:
      - {{ name: appnet, attachable: true, subnet: 10.91.1.0/24 }}
      - {{ name: secnet, encrypted: true, attachable: true }}
  children:
    managers:
      hosts:
        node1: {{ ansible_host: 10.200.0.11 }}
        node2: {{ ansible_host: 10.200.0.12 }}
        {m3}: {{ ansible_host: 10.200.0.1{m3n} }}
    workers:
      hosts:
        {w1}: {{ ansible_host: 10.200.0.1{w1n}, swarm_labels: {{ {node4_labels} }} }}
        node5: {{ ansible_host: 10.200.0.15, swarm_labels: {{ {node5_labels} }} }}
{node6}",
            lab = lab_dir().display(),
            m3 = swap[0],
            m3n = &swap[0][4..],
            w1 = swap[1],
            w1n = &swap[1][4..],
        ),
    );
}

fn run(d: &Path, extra: &[&str]) -> (i32, String) {
    let inv = d.join("inventory.yml");
    let mut a = vec![inv.to_str().unwrap()];
    a.extend(extra);
    let o = provision(&a);
    (o.status.code().unwrap_or(-1), text(&o))
}

/// `docker node ls` on a manager: (hostname, status, manager status) per node.
fn nodes(on: &str) -> Vec<(String, String, String)> {
    ssh(
        on,
        "sudo docker node ls --format '{{.Hostname}} {{.Status}} {{.ManagerStatus}}'",
    )
    .lines()
    .map(|l| {
        let w: Vec<&str> = l.split_whitespace().collect();
        (
            w[0].to_owned(),
            w[1].to_owned(),
            w.get(2).unwrap_or(&"").to_string(),
        )
    })
    .collect()
}

fn labels(on: &str, node: &str) -> String {
    ssh(
        on,
        &format!("sudo docker node inspect {node} --format '{{{{json .Spec.Labels}}}}'"),
    )
}

#[test]
fn swarm_from_a_fresh_lab_labels_networks_tls_and_a_worker_added() {
    // Fresh servers: the docker role installs docker.io from the lab's repository.
    let Some(_lab) = LabGuard::fresh(6) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    inventory(d, "zone: a, db: true", "zone: b, db: true", false);

    let t = std::time::Instant::now();
    let (rc, out) = run(d, &[]);
    let first = t.elapsed().as_secs_f64();
    assert_eq!(rc, 0, "{out}");
    assert!(out.contains("create the swarm on node1"), "{out}");
    let ns = nodes("node2");
    assert_eq!(ns.len(), 5, "{ns:?}");
    assert!(ns.iter().all(|(_, s, _)| s == "Ready"), "{ns:?}");
    assert_eq!(
        ns.iter().filter(|(_, _, m)| m == "Leader").count(),
        1,
        "{ns:?}"
    );
    assert_eq!(
        ns.iter()
            .filter(|(_, _, m)| m == "Leader" || m == "Reachable")
            .count(),
        3,
        "{ns:?}"
    );
    assert!(
        labels("node1", "node4").contains("\"zone\":\"a\"")
            && labels("node1", "node4").contains("\"db\":\"true\"")
    );
    let nets = ssh("node1", "sudo docker network inspect appnet secnet --format '{{.Name}} {{.Attachable}} {{index .Options \"encrypted\"}} {{range .IPAM.Config}}{{.Subnet}}{{end}}'");
    assert!(nets.contains("appnet true  10.91.1.0/24"), "{nets}");
    assert!(
        nets.lines()
            .any(|l| l.starts_with("secnet true") && l.contains("10.90.")),
        "default address pool not used: {nets}"
    );
    let ids_before = ssh("node1", "sudo docker node ls -q | sort");

    // Run again: nothing changes, the same nodes.
    let (rc, out) = run(d, &[]);
    assert_eq!(rc, 0, "{out}");
    assert!(out.contains("no changes"), "{out}");
    assert_eq!(ssh("node1", "sudo docker node ls -q | sort"), ids_before);

    // The Docker API on a manager: mutual TLS with a client certificate from `pki client`.
    let c = d.join("client");
    let o = provision(&[
        "pki",
        "client",
        "ops",
        d.join("inventory.yml").to_str().unwrap(),
        "--out",
        c.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let curl = |with_cert: bool| {
        let mut cmd = std::process::Command::new("curl");
        cmd.args(["-sS", "--max-time", "5", "--cacert"])
            .arg(c.join("ca.crt"));
        if with_cert {
            cmd.arg("--cert")
                .arg(c.join("ops.crt"))
                .arg("--key")
                .arg(c.join("ops.key"));
        }
        cmd.arg("https://10.200.0.12:2376/info").output().unwrap()
    };
    let ok = curl(true);
    assert!(
        ok.status.success() && String::from_utf8_lossy(&ok.stdout).contains("\"Swarm\""),
        "{}",
        text(&ok)
    );
    let refused = curl(false);
    assert!(
        !String::from_utf8_lossy(&refused.stdout).contains("\"Swarm\""),
        "answered without a client certificate: {}",
        text(&refused)
    );

    // A docker context for node2's API, written where the docker CLI looks (DOCKER_CONFIG),
    // used by the real docker CLI of node1 (admitted by the firewall as a named source).
    let cfg = d.join("docker-config");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_provision"))
        .env("DOCKER_CONFIG", &cfg)
        .args([
            "pki",
            "client",
            "ops",
            d.join("inventory.yml").to_str().unwrap(),
        ])
        .arg("--out")
        .arg(d.join("client2"))
        .args(["--docker-context", "--host", "node2"])
        .output()
        .unwrap();
    let said = text(&o);
    assert!(o.status.success(), "{said}");
    assert!(
        said.contains("docker context `ops`: tcp://10.200.0.12:2376 (node2)"),
        "{said}"
    );
    let tar = std::process::Command::new("tar")
        .arg("-C")
        .arg(&cfg)
        .args(["-czf", "-", "."])
        .output()
        .unwrap();
    assert!(tar.status.success());
    let mut put = std::process::Command::new("ssh")
        .arg("-F")
        .arg(lab_dir().join("ssh_config"))
        .args([
            "node1",
            "rm -rf /tmp/dcfg && mkdir -p /tmp/dcfg && tar -C /tmp/dcfg -xzf -",
        ])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(put.stdin.as_mut().unwrap(), &tar.stdout).unwrap();
    drop(put.stdin.take());
    assert!(put.wait().unwrap().success());
    // node1's own socket is not used: the context's endpoint is node2's TLS port.
    let info = ssh(
        "node1",
        "DOCKER_CONFIG=/tmp/dcfg DOCKER_HOST= docker --context ops info --format '{{.Name}} {{.Swarm.ControlAvailable}}'",
    );
    assert_eq!(info, "node2 true");
    let bad = provision(&[
        "pki",
        "client",
        "ops",
        d.join("inventory.yml").to_str().unwrap(),
        "--docker-context",
        "--host",
        "node4",
    ]);
    assert_eq!(bad.status.code(), Some(4), "{}", text(&bad));
    assert!(
        text(&bad).contains("node4` is not a manager"),
        "{}",
        text(&bad)
    );

    // Overlay traffic between containers on the two workers (unencrypted: this kernel has no ESP).
    for n in ["node4", "node5"] {
        ssh(n, "set -e; rm -rf /tmp/bb; mkdir -p /tmp/bb/bin; cp /bin/busybox /tmp/bb/bin/; for a in sh ping sleep ip true; do ln -s busybox /tmp/bb/bin/$a; done; sudo sh -c 'tar -C /tmp/bb -c . | docker import - busybox:lab >/dev/null'");
    }
    ssh(
        "node4",
        "sudo docker run -d --name peer-a --network appnet busybox:lab sleep 600 >/dev/null",
    );
    let ip = ssh("node4", "sudo docker inspect peer-a --format '{{(index .NetworkSettings.Networks \"appnet\").IPAddress}}'");
    assert!(ip.starts_with("10.91.1."), "{ip}");
    let ping = ssh_rc(
        "node5",
        &format!("sudo docker run --rm --network appnet busybox:lab ping -c 2 -W 3 {ip}"),
    );
    assert_eq!(ping.0, 0, "overlay ping failed: {}", ping.1);
    // The encrypted overlay: traffic where the kernel has ESP; here the kernel's own refusal is shown.
    ssh(
        "node4",
        "sudo docker run -d --name peer-s --network secnet busybox:lab sleep 600 >/dev/null",
    );
    let ip2 = ssh("node4", "sudo docker inspect peer-s --format '{{(index .NetworkSettings.Networks \"secnet\").IPAddress}}'");
    let enc = ssh_rc(
        "node5",
        &format!("sudo docker run --rm --network secnet busybox:lab ping -c 2 -W 3 {ip2}"),
    );
    if enc.0 != 0 {
        let x = ssh_rc("node4", "sudo ip xfrm state add src 10.200.0.14 dst 10.200.0.15 proto esp spi 0x100 enc 'cbc(aes)' 0x00112233445566778899aabbccddeeff");
        assert_ne!(
            x.0, 0,
            "the kernel has ESP, yet the encrypted overlay carried nothing: {}",
            enc.1
        );
        eprintln!(
            "encrypted overlay {ip2}: no traffic; the kernel refuses ESP: {}",
            x.1.trim()
        );
    } else {
        eprintln!("encrypted overlay carried traffic");
    }

    // Labels: node4's zone changed, node5's db dropped; a label set by hand stays.
    ssh(
        "node1",
        "sudo docker node update --label-add owner=ops node4 >/dev/null",
    );
    inventory(d, "zone: z, db: true", "zone: b", false);
    let (rc, out) = run(d, &[]);
    assert_eq!(rc, 0, "{out}");
    assert_eq!(recap(&out, "node4", "changed"), 1, "{out}");
    assert_eq!(recap(&out, "node5", "changed"), 1, "{out}");
    for n in ["node1", "node2", "node3"] {
        assert_eq!(recap(&out, n, "changed"), 0, "{out}");
    }
    let l4 = labels("node2", "node4");
    assert!(
        l4.contains("\"zone\":\"z\"")
            && l4.contains("\"db\":\"true\"")
            && l4.contains("\"owner\":\"ops\""),
        "{l4}"
    );
    let l5 = labels("node2", "node5");
    assert!(
        l5.contains("\"zone\":\"b\"") && !l5.contains("\"db\""),
        "{l5}"
    );

    // The audit checks the swarm read-only: clean now, then a label changed by hand is drift.
    let audit = |extra: &[&str]| {
        let inv = d.join("inventory.yml");
        let mut a = vec!["audit", inv.to_str().unwrap(), "--output", "json"];
        a.extend(extra);
        let o = provision(&a);
        (o.status.code().unwrap_or(-1), text(&o))
    };
    let (rc, out) = audit(&[]);
    assert_eq!(rc, 0, "{out}");
    assert!(
        out.contains("\"id\":\"swarm-role\"") && out.contains("\"id\":\"swarm-labels\""),
        "{out}"
    );
    ssh(
        "node1",
        "sudo docker node update --label-add zone=x node5 >/dev/null",
    );
    let (rc, out) = audit(&[]);
    assert_eq!(rc, 5, "{out}");
    let mut drift = Vec::new();
    for l in out.lines() {
        let Ok(e) = serde_json::from_str::<serde_json::Value>(l) else {
            continue;
        };
        for f in e["findings"].as_array().into_iter().flatten() {
            if f["pass"] == false {
                drift.push(format!(
                    "{} {}",
                    e["host"].as_str().unwrap(),
                    f["id"].as_str().unwrap()
                ));
            }
        }
    }
    assert_eq!(drift, ["node5 swarm-labels"], "{out}");
    let (rc, out) = run(d, &[]);
    assert_eq!(rc, 0, "{out}");
    assert_eq!(audit(&[]).0, 0);

    // A sixth host, with the first manager's dockerd down: --check shows the plan, then it joins
    // through another manager; no other host changes and no second swarm appears.
    ssh("node1", "sudo systemctl stop docker.socket docker");
    inventory(d, "zone: z, db: true", "zone: b", true);
    let (rc, out) = run(d, &["--limit", "node6", "--check"]);
    assert_eq!(rc, 0, "{out}");
    assert!(
        out.contains("would join node6 as worker via node2")
            || out.contains("would join node6 as worker via node3"),
        "{out}"
    );
    // Outside --limit only the firewall changes (the peers must admit node6).
    let outside_changes = |out: &str| -> Vec<String> {
        out.lines()
            .filter(|l| {
                ["node1", "node2", "node3", "node4", "node5"]
                    .iter()
                    .any(|n| l.trim_start().starts_with(&format!("{n} | changed")))
                    && !l.contains("| firewall : ")
            })
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(outside_changes(&out), Vec::<String>::new(), "{out}");
    let state6 = ssh(
        "node6",
        "sudo docker info --format '{{.Swarm.LocalNodeState}}' 2>/dev/null || echo not-running",
    );
    assert!(
        state6 == "inactive" || state6 == "not-running",
        "check mode changed node6: {state6}"
    );
    let t = std::time::Instant::now();
    let (rc, out) = run(d, &["--limit", "node6"]);
    let add = t.elapsed().as_secs_f64();
    assert_eq!(rc, 0, "{out}");
    assert!(out.contains("reading node2 (outside --limit"), "{out}");
    assert_eq!(outside_changes(&out), Vec::<String>::new(), "{out}");
    let ns = nodes("node2");
    assert_eq!(ns.len(), 6, "{ns:?}");
    assert!(
        ns.iter()
            .any(|(h, s, m)| h == "node6" && s == "Ready" && m.is_empty()),
        "{ns:?}"
    );
    assert!(labels("node2", "node6").contains("\"zone\":\"c\""));
    let cluster = |n: &str| ssh(n, "sudo docker info --format '{{.Swarm.Cluster.ID}}'");
    assert_eq!(cluster("node2"), cluster("node3"));
    assert_eq!(
        ssh(
            "node6",
            "sudo docker info --format '{{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}}'"
        ),
        "active false"
    );
    eprintln!("first run of 5 hosts: {first:.1} s; adding a worker with --limit: {add:.1} s");

    // The first manager back: everything settles with nothing left to change but node1's docker.
    ssh("node1", "sudo systemctl start docker");
    let (rc, out) = run(d, &[]);
    assert_eq!(rc, 0, "{out}");
    for n in ["node2", "node3", "node4", "node5", "node6"] {
        assert_eq!(recap(&out, n, "failed"), 0, "{out}");
    }
    let (rc, out) = run(d, &[]);
    assert!(rc == 0 && out.contains("no changes"), "{out}");
    assert_eq!(nodes("node1").len(), 6);

    // Roles moved in the inventory: node4 promoted first, then node3 demoted; three managers throughout.
    inventory_roles(d, "zone: z, db: true", "zone: b", true, ["node4", "node3"]);
    let (rc, out) = run(d, &[]);
    assert_eq!(rc, 0, "{out}");
    let p = out.find("promote node4 to manager").expect("promoted");
    let q = out.find("demote node3 to worker").expect("demoted");
    assert!(p < q, "demoted before promoting: {out}");
    // A role change can move the leadership: give the new leader a moment to hear every node.
    let settled = |ns: &[(String, String, String)]| {
        ns.iter()
            .any(|(h, _, m)| h == "node4" && (m == "Reachable" || m == "Leader"))
            && ns.iter().any(|(h, _, m)| h == "node3" && m.is_empty())
            && ns.iter().filter(|(_, _, m)| !m.is_empty()).count() == 3
            && ns.iter().all(|(_, s, _)| s == "Ready")
    };
    let t = std::time::Instant::now();
    let mut ns = nodes("node1");
    while !settled(&ns) && t.elapsed().as_secs() < 60 {
        std::thread::sleep(std::time::Duration::from_secs(2));
        ns = nodes("node1");
    }
    assert!(settled(&ns), "{ns:?}");
    let (rc, out) = run(d, &[]);
    assert!(rc == 0 && out.contains("no changes"), "{out}");

    // The managers' Docker API certificates reissued: their dockerd restart one after
    // another (throttle: 1), each back in the swarm before the next, never together.
    let managers: Vec<String> = nodes("node1")
        .into_iter()
        .filter(|(_, _, m)| !m.is_empty())
        .map(|(h, _, _)| h)
        .collect();
    assert_eq!(managers.len(), 3, "{managers:?}");
    for m in &managers {
        ssh(m, "sudo rm /etc/provision/pki/docker.crt");
    }
    let (rc, out) = run(d, &[]);
    assert_eq!(rc, 0, "{out}");
    // Lab hosts share this machine's kernel, so their monotonic clocks compare.
    let mut starts: Vec<u64> = managers
        .iter()
        .map(|m| {
            ssh(
                m,
                "systemctl show -p ExecMainStartTimestampMonotonic --value docker",
            )
            .parse()
            .unwrap()
        })
        .collect();
    starts.sort();
    let gaps: Vec<f64> = starts
        .windows(2)
        .map(|w| (w[1] - w[0]) as f64 / 1e6)
        .collect();
    eprintln!("managers' dockerd restarts, seconds apart: {gaps:?}");
    assert!(
        gaps.iter().all(|g| *g >= 1.0),
        "restarted together: {gaps:?}\n{out}"
    );
    // Each manager was seen ready before the next restarted; a leader change can still leave
    // another node `Unknown` until its next heartbeat reaches the new leader.
    let t = std::time::Instant::now();
    let mut ns = nodes("node1");
    while !ns.iter().all(|(_, s, _)| s == "Ready") && t.elapsed().as_secs() < 30 {
        std::thread::sleep(std::time::Duration::from_secs(1));
        ns = nodes("node1");
    }
    assert!(ns.iter().all(|(_, s, _)| s == "Ready"), "{ns:?}");
    eprintln!(
        "all nodes Ready {:.1} s after the run",
        t.elapsed().as_secs_f64()
    );

    // A wedged dockerd (stopped, not dead) on a worker: every Docker call has a client-side
    // bound, so the run fails that host and ends instead of waiting out the command timeout
    // (900 s). The bound is 120 s; the test hook makes it 5 s.
    ssh("node5", "sudo pkill -STOP -x dockerd");
    let t = std::time::Instant::now();
    let o = std::process::Command::new(BIN)
        .arg(d.join("inventory.yml"))
        .env("PROVISION_TEST_DOCKER_BOUND", "5")
        .output()
        .unwrap();
    let took = t.elapsed();
    ssh("node5", "sudo pkill -CONT -x dockerd");
    let out = text(&o);
    eprintln!(
        "a run with node5's dockerd wedged: {:.1} s",
        took.as_secs_f64()
    );
    assert_eq!(o.status.code(), Some(2), "{out}");
    assert!(out.contains("node5 | failed"), "{out}");
    assert!(!out.contains("node1 | failed"), "{out}");
    assert!(took.as_secs() < 300, "waited {took:?}: {out}");
    let t = std::time::Instant::now();
    let mut ns = nodes("node1");
    while !ns.iter().all(|(_, s, _)| s == "Ready") && t.elapsed().as_secs() < 60 {
        std::thread::sleep(std::time::Duration::from_secs(2));
        ns = nodes("node1");
    }
    let (rc, out) = run(d, &[]);
    assert_eq!(rc, 0, "{out}");
}
