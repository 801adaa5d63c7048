//! The README's first command: `provision` with no inventory starts the lab (3 fresh hosts
//! with disks and the lab's registry) and shows every role: etcd on the manager, Ceph, a
//! node label, an overlay network, a web app and the monitoring stack converged, with
//! Prometheus seeing every node's exporter; it ends by saying where to look, and again it
//! changes nothing. Then maintenance of its only manager: refused without `--allow-risk`,
//! done with it; and of a worker: the web app short meanwhile, a crowded service spread
//! again after.

mod common;
use common::*;
use std::time::{Duration, Instant};

fn first() -> (i32, String) {
    let o = provision(&[]);
    (o.status.code().unwrap_or(-1), text(&o))
}

#[test]
fn the_first_command_shows_every_role() {
    let Some(_lab) = LabGuard::none() else {
        return;
    };
    let t = Instant::now();
    let (rc, out) = first();
    eprintln!(
        "the first command, no lab up: {:.0} s",
        t.elapsed().as_secs_f64()
    );
    assert_eq!(rc, 0, "{out}");
    for want in [
        "no inventory given: using the local lab's /var/lib/provision-lab/showcase.yml",
        "web app:     http://10.200.0.12:8080/",
        "Prometheus:  http://10.200.0.11:9090/targets",
        "provision status",
        "provision audit",
    ] {
        assert!(out.contains(want), "{want}: {out}");
    }

    // The web app answers from the nodes labelled for it, through the overlay's DNS-RR.
    for n in ["10.200.0.12", "10.200.0.13"] {
        let o = std::process::Command::new("curl")
            .args(["-sS", "--max-time", "5", &format!("http://{n}:8080/")])
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&o.stdout),
            "hello from provision\n",
            "{n}: {}",
            text(&o)
        );
    }
    // Prometheus sees each node's exporter up (its first scrape may take a scrape interval).
    let mut up = 0;
    for _ in 0..60 {
        let o = std::process::Command::new("curl")
            .args([
                "-s",
                "--max-time",
                "3",
                "http://10.200.0.11:9090/api/v1/targets",
            ])
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
        up = v["data"]["activeTargets"].as_array().map_or(0, |a| {
            a.iter()
                .filter(|x| x["labels"]["job"] == "node" && x["health"] == "up")
                .count()
        });
        if up == 3 {
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    assert_eq!(up, 3, "Prometheus sees {up} of 3 node-exporters up");
    // etcd on the manager, the label, the network, Ceph.
    assert!(ssh("node1", "bash -lc 'etcdctl endpoint health' 2>&1").contains("is healthy"));
    assert_eq!(
        ssh(
            "node1",
            "sudo docker node inspect node2 -f '{{index .Spec.Labels \"web\"}}'"
        ),
        "yes"
    );
    assert_eq!(
        ssh(
            "node1",
            "sudo docker network inspect shared -f '{{.Driver}} {{.Attachable}}'"
        ),
        "overlay true"
    );
    assert_eq!(ssh("node1", "sudo ceph health"), "HEALTH_OK");
    let o = provision(&["status"]);
    assert!(
        o.status.success() && text(&o).contains("monitoring_prometheus"),
        "{}",
        text(&o)
    );

    let t = Instant::now();
    let (rc, out) = first();
    eprintln!("again: {:.1} s", t.elapsed().as_secs_f64());
    assert!(rc == 0 && out.contains("no changes"), "{out}");

    // Maintenance of the only manager (the only etcd member and Ceph monitor): refused with
    // the risk named, nothing changed; with --allow-risk it reboots and everything returns.
    let init = || ssh("node1", "cut -d' ' -f22 /proc/1/stat");
    let before = init();
    let o = provision(&["maintain", "--reboot", "-l", "node1"]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(2), "{out}");
    assert!(
        out.contains("the swarm would lose its quorum while node1 is away")
            && out.contains("--allow-risk"),
        "{out}"
    );
    assert_eq!(init(), before, "refused, yet node1 rebooted");
    assert_eq!(
        ssh(
            "node1",
            "sudo docker node inspect node1 -f '{{.Spec.Availability}}'"
        ),
        "active"
    );
    let t = Instant::now();
    let o = provision(&["maintain", "--reboot", "-l", "node1", "--allow-risk"]);
    let out = text(&o);
    eprintln!(
        "maintain --allow-risk of the only manager: {:.1} s\n{out}",
        t.elapsed().as_secs_f64()
    );
    assert_eq!(o.status.code(), Some(0), "{out}");
    for want in [
        "the swarm loses its quorum meanwhile",
        "monitoring_prometheus",
        "cannot run on another node: stopped while it is away (--allow-risk)",
        "maintained 1 node(s)",
    ] {
        assert!(out.contains(want), "{want}: {out}");
    }
    assert_ne!(init(), before, "node1 rebooted");
    assert_eq!(ssh("node1", "sudo ceph health"), "HEALTH_OK");
    assert_eq!(
        ssh(
            "node1",
            "sudo docker node ls --format '{{.Status}} {{.Availability}}' | sort -u"
        ),
        "Ready Active"
    );
    let (rc, out) = first();
    assert!(
        rc == 0 && out.contains("no changes"),
        "after the reboot: {out}"
    );

    // A worker maintained: the web app's task there has nowhere to go (one per labelled
    // node), so the app runs short meanwhile and is whole again after; a service of two
    // tasks on the labelled nodes crowds onto node3 during the drain and is spread again.
    ssh(
        "node1",
        "sudo docker service create --detach=false --quiet --name pair --replicas 2 \
         --constraint node.labels.web==yes 10.200.0.1:5000/busybox:lab sleep 1d >/dev/null",
    );
    let where_pair = || {
        ssh(
            "node1",
            "sudo docker service ps pair --filter desired-state=running --format '{{.Node}}' | sort | tr '\\n' ' '",
        )
    };
    assert_eq!(where_pair(), "node2 node3");
    let o = provision(&["maintain", "--reboot", "-l", "node2"]);
    let out = text(&o);
    eprintln!("maintain --reboot of node2: {out}");
    assert_eq!(o.status.code(), Some(0), "{out}");
    for want in [
        "web_web 1/2",
        "run short while it is away",
        "rebalance: pair",
        "rebalanced pair",
    ] {
        assert!(out.contains(want), "{want}: {out}");
    }
    assert_eq!(where_pair(), "node2 node3", "spread again");
    assert_eq!(
        ssh(
            "node1",
            "sudo docker service ls --filter name=web_web --format '{{.Replicas}}'"
        ),
        "2/2 (max 1 per node)"
    );
    ssh("node1", "sudo docker service rm pair >/dev/null");
}
