//! A cluster with a host down: 3 managers (etcd members, Ceph monitors and OSD hosts) and
//! 2 workers (node4 with an OSD, node5 with only the CephFS mount), labels, an overlay
//! network and a stack. For each of a manager, the OSD worker and the mount-only worker:
//! power it off, change the stack's config, run (exit 3, quick, the stack converged on the
//! live nodes, nothing lowered, rewritten or removed on the others), audit (degraded, exit
//! 3), power it on and run (healthy again, audit clean). Then a worker added with --limit
//! while a manager is off. One cluster for all scenarios.

mod common;
use common::*;
use std::path::Path;
use std::time::{Duration, Instant};

fn inventory(d: &Path, content: &str, node6: bool) {
    inventory_with(d, content, node6, "", "b")
}

/// `conf`: more ceph_conf settings (", key: value"); `zone`: node5's zone label.
fn inventory_with(d: &Path, content: &str, node6: bool, conf: &str, zone: &str) {
    let disks = disks();
    let osd = |i: usize| {
        format!(
            "        node{i}: {{ ansible_host: 10.200.0.1{i}, ceph_osd_devices: [{}] }}\n",
            disks[i - 1]
        )
    };
    let osds: String = [1, 2, 3, 4].into_iter().map(osd).collect();
    write(
        d,
        "inventory.yml",
        &format!(
            "{vars}    ceph_allow_loop_devices: true\n    ceph_conf: {{ mon_data_avail_warn: 5, osd_memory_target: 939524096{conf} }}\n    \
             ceph_health_timeout: 240\n    \
             swarm_networks: [{{ name: backend, attachable: true }}]\n    \
             stacks:\n      - name: web\n        builtin: app\n        \
             vars: {{ image: \"10.200.0.1:5000/busybox:lab\", command: [httpd, -f, -h, /www], site_path: /www/index.html, replicas: 2, endpoint_mode: dnsrr }}\n        \
             configs: {{ site: {{ content: \"hello {content}\\n\" }} }}\n  \
             children:\n    managers:\n      hosts:\n        node1: {{ ansible_host: 10.200.0.11 }}\n        node2: {{ ansible_host: 10.200.0.12 }}\n        node3: {{ ansible_host: 10.200.0.13 }}\n    \
             workers:\n      hosts:\n        node4: {{ ansible_host: 10.200.0.14, swarm_labels: {{ disk: ssd }} }}\n        node5: {{ ansible_host: 10.200.0.15, swarm_labels: {{ zone: {zone} }} }}\n{node6}    \
             etcd:\n      children: {{ managers: {{}} }}\n    \
             ceph_osds:\n      hosts:\n{osds}",
            vars = lab_vars(),
            node6 = if node6 {
                "        node6: { ansible_host: 10.200.0.16 }\n"
            } else {
                ""
            },
        ),
    );
}

fn run(d: &Path, extra: &[&str]) -> (i32, String, Duration) {
    let t = Instant::now();
    let o = std::process::Command::new(BIN)
        .arg(d.join("inventory.yml"))
        .args(extra)
        .output()
        .unwrap();
    (o.status.code().unwrap_or(-1), text(&o), t.elapsed())
}

fn audit(d: &Path) -> (i32, String) {
    let o = provision(&["audit", d.join("inventory.yml").to_str().unwrap()]);
    (o.status.code().unwrap_or(-1), text(&o))
}

/// What must not change on a live host while another is down: its configuration of the
/// others (ceph.conf, etcd's settings, /etc/hosts, the firewall's rules).
fn config_of(node: &str) -> String {
    ssh(
        node,
        "sudo sh -c 'for f in /etc/ceph/ceph.conf /etc/default/etcd /etc/hosts /etc/provision/firewall.nft; do echo \"== $f\"; cat $f 2>/dev/null; done'",
    )
}

fn pools() -> String {
    ssh(
        "node1",
        "sudo ceph osd pool ls detail -f json | python3 -c 'import json,sys; print(sorted((p[\"pool_name\"], p[\"size\"], p[\"min_size\"]) for p in json.load(sys.stdin)))'",
    )
}

/// Counts of cluster members: swarm nodes, etcd members, monitors, OSDs.
fn members(from: &str) -> (usize, usize, usize, usize) {
    let nodes = ssh(from, "sudo docker node ls -q").lines().count();
    let etcd = ssh(
        from,
        "sudo sh -c '. /etc/default/etcd 2>/dev/null; ETCDCTL_API=3 etcdctl --endpoints=https://127.0.0.1:2379 --cacert=/etc/provision/pki/ca.crt --cert=/etc/provision/pki/etcd.crt --key=/etc/provision/pki/etcd.key --command-timeout=5s member list'",
    )
    .lines()
    .count();
    let mons = ssh(from, "sudo ceph mon dump -f json 2>/dev/null | python3 -c 'import json,sys; print(len(json.load(sys.stdin)[\"mons\"]))'")
        .parse()
        .unwrap();
    let osds = ssh(from, "sudo ceph osd ls").lines().count();
    (nodes, etcd, mons, osds)
}

/// The content served by a task of the current spec (not one still shutting down).
fn served(live: &[&str]) -> String {
    let tasks = ssh(
        live[0],
        "sudo docker service ps web_web --no-trunc --filter desired-state=running --format '{{.Node}} {{.Name}}.{{.ID}}'",
    );
    for l in tasks.lines() {
        let Some((node, name)) = l.split_once(' ') else {
            continue;
        };
        if live.contains(&node) {
            return ssh(
                node,
                &format!("sudo docker exec {name} cat /www/index.html"),
            );
        }
    }
    panic!("no task of web_web runs on {live:?}: {tasks}");
}

/// Once `ready` holds (within 240 s, the run still going), powers `node` off; returns the
/// run's exit code, its output and how long it went on after the power-off.
fn power_off_when(
    mut child: std::process::Child,
    log: &Path,
    node: &str,
    when: &str,
    ready: impl Fn() -> bool,
) -> (i32, String, Duration) {
    let t = Instant::now();
    while !ready() {
        assert!(
            t.elapsed() < Duration::from_secs(240) && child.try_wait().unwrap().is_none(),
            "the run never got to the moment ({when}):\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let o = provision(&["lab", "stop", node]);
    assert!(o.status.success(), "{}", text(&o));
    let off = Instant::now();
    let rc = child.wait().unwrap().code().unwrap_or(-1);
    let out = std::fs::read_to_string(log).unwrap();
    eprintln!(
        "{node} powered off {when}: the run ended {:.1} s later (exit {rc})",
        off.elapsed().as_secs_f64()
    );
    (rc, out, off.elapsed())
}

fn ceph_ok() -> bool {
    ssh_rc("node1", "sudo ceph health").1.trim() == "HEALTH_OK"
}

/// Records, every 50 ms, every command line on `node` that looks like it carries a secret
/// (a swarm join token, a base64 cephx key).
fn start_sampler(node: &str) {
    use base64::Engine;
    let script = "while :; do cat /proc/[0-9]*/cmdline 2>/dev/null | tr '\\0' '\\n' | \
                  grep -a -E 'SWM[T]KN|[A-Za-z0-9+/]{38}==' >> /root/argv.log; sleep 0.05; done\n";
    let b64 = base64::engine::general_purpose::STANDARD.encode(script);
    ssh(
        node,
        &format!(
            "echo {b64} | base64 -d | sudo tee /root/sampler.sh >/dev/null; sudo touch /root/argv.log; \
             sudo setsid sh /root/sampler.sh </dev/null >/dev/null 2>&1 &"
        ),
    );
}

/// Stops the sampler and returns what it recorded.
fn sampled(node: &str) -> String {
    ssh(
        node,
        "sudo pkill -f /root/sample[r].sh; sudo cat /root/argv.log",
    )
}

#[test]
fn a_cluster_with_a_host_down_stays_safe_quick_and_useful() {
    let Some(_lab) = LabGuard::start(&["lab", "up", "6", "--disk", "8G", "--registry"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    inventory(d, "v0", false);
    let all = ["node1", "node2", "node3", "node4", "node5"];
    for n in all {
        start_sampler(n);
    }
    // A control: the samplers do catch a token-like argument that lives for a second.
    ssh("node5", "sh -c 'sleep 1' SWMTKN-1-control");
    let (rc, out, t) = run(d, &[]);
    assert_eq!(rc, 0, "{out}");
    eprintln!("cluster built in {:.1} s", t.as_secs_f64());
    // No secret in any process's command line on any host while the cluster was built:
    // join tokens and cephx keys travel on stdin.
    let ceph: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join(".provision/ceph.json")).unwrap()).unwrap();
    let keys: Vec<String> = ceph["keys"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    assert!(keys.len() >= 5, "{keys:?}");
    for n in all {
        let log = sampled(n);
        if n == "node5" {
            assert!(
                log.contains("SWMTKN-1-control"),
                "the sampler saw nothing:\n{log}"
            );
        }
        let log = log.replace("SWMTKN-1-control", "");
        assert!(
            !log.contains("SWMTKN"),
            "a join token in a command line on {n}:\n{log}"
        );
        for k in &keys {
            assert!(
                !log.contains(k.as_str()),
                "a cephx key in a command line on {n}:\n{log}"
            );
        }
    }
    let (rc, out, healthy) = run(d, &[]);
    assert_eq!(rc, 0, "{out}");
    assert!(out.contains("no changes"), "{out}");
    eprintln!("healthy re-run: {:.1} s", healthy.as_secs_f64());
    let (rc, out) = audit(d);
    assert_eq!(rc, 0, "{out}");
    let before_pools = pools();
    assert!(before_pools.contains("3, 2"), "{before_pools}");
    let before_members = members("node1");
    assert_eq!(before_members, (5, 3, 3, 4));

    for (round, victim) in ["node2", "node4", "node5"].into_iter().enumerate() {
        let live: Vec<&str> = all.iter().copied().filter(|n| *n != victim).collect();
        let before: Vec<String> = live.iter().map(|n| config_of(n)).collect();
        let o = provision(&["lab", "stop", victim]);
        assert!(o.status.success(), "{}", text(&o));
        // A monitor or OSD host down: the run's gate can name it once Ceph has noticed
        // (an OSD is marked down after its heartbeat grace, about 20 s).
        if victim != "node5" {
            let t = Instant::now();
            while ssh("node1", "sudo ceph health") == "HEALTH_OK" && t.elapsed().as_secs() < 90 {
                std::thread::sleep(Duration::from_secs(1));
            }
            eprintln!(
                "Ceph noticed {victim} down after {:.1} s",
                t.elapsed().as_secs_f64()
            );
        }

        // The outage run: the stack's new config converges on the live nodes.
        let content = format!("v{}", round + 1);
        inventory(d, &content, false);
        let (rc, out, took) = run(d, &[]);
        eprintln!(
            "{victim} down: run took {:.1} s (exit {rc})",
            took.as_secs_f64()
        );
        assert_eq!(rc, 3, "{out}");
        assert!(
            took < healthy + Duration::from_secs(60),
            "{victim} down: the run took {took:?}, a healthy one {healthy:?}\n{out}"
        );
        assert!(out.contains(victim) && out.contains("unreachable"), "{out}");
        assert!(!out.contains("not in the inventory"), "{out}");
        assert!(!out.contains("gave up"), "{out}");
        assert_eq!(served(&live), format!("hello {content}"), "{out}");
        if victim != "node5" {
            assert!(
                out.contains("degraded: "),
                "the Ceph gate names the degradation\n{out}"
            );
        }
        // Nothing lowered, rewritten or removed.
        assert_eq!(pools(), before_pools, "{out}");
        for (n, b) in live.iter().zip(&before) {
            assert_eq!(
                &config_of(n),
                b,
                "{n}'s configuration changed while {victim} was down\n{out}"
            );
        }
        assert_eq!(members("node1"), before_members, "{out}");

        // The audit names the degradation, quickly, and the others' view of the host.
        let t = Instant::now();
        let (rc, out) = audit(d);
        eprintln!(
            "{victim} down: audit took {:.1} s",
            t.elapsed().as_secs_f64()
        );
        assert_eq!(rc, 3, "{out}");
        assert!(
            out.contains(&format!("degraded: {victim} unreachable")),
            "{out}"
        );
        assert!(out.contains("swarm-down-nodes"), "{out}");
        assert!(!out.contains("swarm-unknown-nodes  "), "{out}");
        if victim == "node2" {
            assert!(out.contains("etcd-down-members"), "{out}");
            assert!(out.contains("mon.node2 out of quorum"), "{out}");
        }
        if victim == "node4" {
            assert!(out.contains("ceph-down-hosts"), "{out}");
        }

        // Back on: one run heals everything, the audit is clean.
        let o = provision(&["lab", "start", victim]);
        assert!(o.status.success(), "{}", text(&o));
        let (rc, out, took) = run(d, &[]);
        eprintln!("{victim} back: run took {:.1} s", took.as_secs_f64());
        assert_eq!(rc, 0, "{out}");
        assert!(ceph_ok(), "{}", ssh("node1", "sudo ceph health detail"));
        assert_eq!(members("node1"), before_members);
        let ready = ssh(
            "node1",
            "sudo docker node ls --format '{{.Hostname}} {{.Status}}'",
        );
        assert_eq!(ready.matches(" Ready").count(), 5, "{ready}");
        let (rc, out) = audit(d);
        assert_eq!(rc, 0, "{out}");
    }

    // A worker added with --limit while a manager is off: it joins through a live one.
    provision(&["lab", "stop", "node1"]);
    inventory(d, "v3", true);
    let (rc, out, took) = run(d, &["--limit", "node6"]);
    eprintln!("node6 added with node1 down: {:.1} s", took.as_secs_f64());
    // node1's firewall must admit node6 too and cannot be reached: said, and exit 3.
    assert_eq!(rc, 3, "{out}");
    assert!(out.contains("join node6 as worker via node"), "{out}");
    assert!(out.contains("node1 | unreachable"), "{out}");
    let ready = ssh(
        "node2",
        "sudo docker node ls --format '{{.Hostname}} {{.Status}} {{.ManagerStatus}}'",
    );
    assert!(ready.contains("node6 Ready"), "{ready}");
    // node1 is still a member (not removed), not ready (Down, or Unknown while a new
    // leader learns of it).
    assert!(
        ready
            .lines()
            .any(|l| l.starts_with("node1 ") && !l.contains("Ready")),
        "{ready}"
    );
    provision(&["lab", "start", "node1"]);
    let (rc, out, _) = run(d, &[]);
    assert_eq!(rc, 0, "{out}");
    let before_members = members("node1");
    assert_eq!(before_members, (6, 3, 3, 4));

    // A host powered off in the middle of the Ceph step, while a new setting restarts the
    // daemons one at a time: it is unreachable from then on, the step and the run go on
    // without it, nothing is lowered or removed, and the next run finishes the restarts.
    inventory_with(d, "v3", true, ", osd_scrub_sleep: 0.1", "b");
    let log = d.join("midrun.log");
    // -v lists the tasks that changed nothing too: the swarm's shows the run went on.
    let spawn = |log: &Path| {
        let f = std::fs::File::create(log).unwrap();
        std::process::Command::new(BIN)
            .arg(d.join("inventory.yml"))
            .arg("-v")
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .unwrap()
    };
    let mut child = spawn(&log);
    let t = Instant::now();
    while ssh_rc("node4", "grep -q osd_scrub_sleep /etc/ceph/ceph.conf").0 != 0 {
        assert!(
            t.elapsed() < Duration::from_secs(180),
            "the Ceph step never wrote node4's ceph.conf"
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    std::thread::sleep(Duration::from_secs(3));
    let o = provision(&["lab", "stop", "node4"]);
    assert!(o.status.success(), "{}", text(&o));
    let rc = child.wait().unwrap().code().unwrap_or(-1);
    let out = std::fs::read_to_string(&log).unwrap();
    eprintln!(
        "node4 powered off in the Ceph step: run took {:.1} s (exit {rc})",
        t.elapsed().as_secs_f64()
    );
    assert_eq!(rc, 3, "{out}");
    assert!(out.contains("node4 | unreachable"), "{out}");
    assert!(!out.contains("gave up"), "{out}");
    assert!(
        out.contains("swarm : swarm membership"),
        "the run went on after the Ceph step\n{out}"
    );
    assert_eq!(pools(), before_pools, "{out}");
    assert_eq!(members("node1"), before_members, "{out}");
    let o = provision(&["lab", "start", "node4"]);
    assert!(o.status.success(), "{}", text(&o));
    let (rc, out, took) = run(d, &[]);
    eprintln!(
        "node4 back after the mid-run power-off: run took {:.1} s",
        took.as_secs_f64()
    );
    assert_eq!(rc, 0, "{out}");
    assert!(ceph_ok(), "{}", ssh("node1", "sudo ceph health detail"));
    let (rc, out) = audit(d);
    assert_eq!(rc, 0, "{out}");

    // A worker powered off in the swarm step (its new label to set, then a stack update to
    // roll out): unreachable from then on, the update converges on the others within the
    // stack's wait, nothing removed; the next run sets the label.
    inventory_with(d, "v4", true, ", osd_scrub_sleep: 0.1", "c");
    let (rc, out, off) = power_off_when(spawn(&log), &log, "node5", "in the swarm step", || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("swarm : swarm membership")
    });
    assert_eq!(rc, 3, "{out}");
    assert!(out.contains("node5 | unreachable"), "{out}");
    assert!(!out.contains("node5 | failed"), "{out}");
    assert!(
        off < Duration::from_secs(240),
        "the run waited out a timeout for a powered-off worker\n{out}"
    );
    let live = ["node1", "node2", "node3", "node4", "node6"];
    assert_eq!(served(&live), "hello v4", "{out}");
    assert_eq!(members("node1"), before_members, "{out}");
    assert_eq!(pools(), before_pools, "{out}");
    let o = provision(&["lab", "start", "node5"]);
    assert!(o.status.success(), "{}", text(&o));
    let (rc, out, _) = run(d, &[]);
    assert_eq!(rc, 0, "{out}");
    let zone = ssh(
        "node1",
        "sudo docker node inspect node5 --format '{{index .Spec.Labels \"zone\"}}'",
    );
    assert_eq!(zone, "c", "{out}");
    let (rc, out) = audit(d);
    assert_eq!(rc, 0, "{out}");

    // A worker powered off while a stack update rolls out (the new spec already on the
    // service): the update converges on the others within the stack's wait.
    inventory_with(d, "v5", true, ", osd_scrub_sleep: 0.1", "c");
    let spec_of = || {
        ssh(
            "node1",
            "sudo docker service inspect --format '{{index .Spec.Labels \"provision.spec\"}}' web_web",
        )
    };
    let spec = spec_of();
    let (rc, out, off) =
        power_off_when(spawn(&log), &log, "node5", "during a stack update", || {
            spec_of() != spec
        });
    assert!(rc == 0 || rc == 3, "{out}");
    assert!(
        off < Duration::from_secs(240),
        "the update waited out the stack's wait\n{out}"
    );
    assert_eq!(served(&live), "hello v5", "{out}");
    let o = provision(&["lab", "start", "node5"]);
    assert!(o.status.success(), "{}", text(&o));
    let (rc, out, _) = run(d, &[]);
    assert_eq!(rc, 0, "{out}");
    let (rc, out) = audit(d);
    assert_eq!(rc, 0, "{out}");
}
