//! `provision maintain` on a cluster of 5: 3 managers (etcd members, Ceph monitors and OSD
//! hosts) and 2 workers (node4 with an OSD), a web stack with 2 replicas. The plan in
//! check mode; a roll refused while a host is powered off; then a manager and the OSD
//! worker drained, patched and rebooted one at a time, the stack served throughout; a node
//! that does not come back stops the roll, and the next one resumes with it; the cluster
//! whole and the audit clean at the end.

mod common;
use common::*;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

fn inventory(d: &Path) {
    let disks = disks();
    let osds: String = [1, 2, 3, 4]
        .into_iter()
        .map(|i| {
            format!(
                "        node{i}: {{ ansible_host: 10.200.0.1{i}, ceph_osd_devices: [{}] }}\n",
                disks[i - 1]
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
             vars: {{ image: \"10.200.0.1:5000/busybox:lab\", command: [httpd, -f, -h, /www], site_path: /www/index.html, replicas: 2, endpoint_mode: dnsrr }}\n        \
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

fn availability() -> String {
    ssh(
        "node2",
        "sudo docker node ls --format '{{.Hostname}} {{.Status}} {{.Availability}}' | sort",
    )
}

#[test]
fn maintain_drains_patches_and_reboots_one_node_at_a_time() {
    let Some(_lab) = LabGuard::start(&["lab", "up", "5", "--disk", "8G", "--registry"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    inventory(d);
    let o = provision(&[d.join("inventory.yml").to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let all_active = "node1 Ready Active\nnode2 Ready Active\nnode3 Ready Active\nnode4 Ready Active\nnode5 Ready Active";
    assert_eq!(availability(), all_active);

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
    let o = provision(&["lab", "start", "node5"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = provision(&[d.join("inventory.yml").to_str().unwrap()]);
    assert!(o.status.success(), "the cluster heals: {}", text(&o));
    assert_eq!(availability(), all_active);

    // The roll: node1 (a manager, etcd member, monitor and OSD host) then node4 (a worker
    // with an OSD). Meanwhile, from node3: the web service never without a running task.
    let before = (init_start("node1"), init_start("node4"));
    let stop = Arc::new(AtomicBool::new(false));
    let (samples, empty) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let sampler = {
        let (stop, samples, empty) = (stop.clone(), samples.clone(), empty.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let (rc, r) = ssh_rc(
                    "node3",
                    "sudo docker service ls --filter name=web_web --format '{{.Replicas}}'",
                );
                if rc == 0 {
                    samples.fetch_add(1, Ordering::Relaxed);
                    if r.trim().starts_with("0/") {
                        empty.fetch_add(1, Ordering::Relaxed);
                    }
                }
                std::thread::sleep(std::time::Duration::from_millis(500));
            }
        })
    };
    let t = std::time::Instant::now();
    let (rc, out) = maintain(d, &["--reboot", "-l", "node1:node4"]);
    let took = t.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    eprintln!("maintain --reboot of node1 and node4: {took:.1} s\n{out}");
    assert_eq!(rc, 0, "{out}");
    assert!(out.contains("maintained 2 node(s)"), "{out}");
    let (d1, d4) = (
        out.find("node1: drain").expect(&out),
        out.find("node4: drain").expect(&out),
    );
    assert!(d1 < d4, "one node at a time, the manager first: {out}");
    assert!(
        out.find("node1: done").unwrap() < d4,
        "node4 waits for node1: {out}"
    );
    assert_ne!(init_start("node1"), before.0, "node1 rebooted");
    assert_ne!(init_start("node4"), before.1, "node4 rebooted");
    let (n, e) = (
        samples.load(Ordering::Relaxed),
        empty.load(Ordering::Relaxed),
    );
    eprintln!("web service sampled {n} times during the roll, {e} without a running task");
    assert!(n > 10, "the sampler ran");
    assert_eq!(
        e, 0,
        "the web service had no running task in {e} of {n} samples"
    );

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
    ssh("node5", "sudo systemctl disable docker 2>/dev/null");
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
    ssh("node5", "sudo systemctl enable --now docker 2>/dev/null");
    let node4 = init_start("node4");
    let (rc, out) = maintain(d, &["--reboot", "-l", "node4:node5"]);
    assert_eq!(rc, 0, "{out}");
    assert!(out.contains("resuming: node4 done"), "{out}");
    assert!(!out.contains("node4: drain"), "node4 is not redone: {out}");
    assert_eq!(init_start("node4"), node4, "node4 not rebooted again");
    assert_eq!(availability(), all_active);

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
