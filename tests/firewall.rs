//! The host firewall on a real 3-manager + 2-worker swarm (with etcd on the managers),
//! node6 standing outside the inventory: what answers from where, published ports,
//! lockout refusal and rollback, the audit of hand-made changes, fail2ban bans, and
//! node6 added with --limit (its peers' firewalls follow).

mod common;
use common::*;
use std::path::Path;

fn inventory(d: &Path, node5_extra: &str, with_node6: bool) {
    let node6 = if with_node6 {
        "        node6: { ansible_host: 10.200.0.16 }\n"
    } else {
        ""
    };
    write(
        d,
        "inventory.yml",
        &format!(
            "{head}    extra_packages: [busybox-static]
    firewall_docker_api_sources: [10.200.0.1]
  children:
    managers:
      hosts:
        node1: {{ ansible_host: 10.200.0.11 }}
        node2: {{ ansible_host: 10.200.0.12 }}
        node3: {{ ansible_host: 10.200.0.13 }}
    etcd:
      children:
        managers:
    workers:
      hosts:
        node4:
          ansible_host: 10.200.0.14
          firewall_published: [{{ port: 8081, from: [10.200.0.1], comment: restricted web }}]
        node5: {{ ansible_host: 10.200.0.15{node5_extra} }}
{node6}",
            head = lab_vars()
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

/// Which of `ports` on `to` accept a TCP connection from `from` (a lab host).
fn open_from(from: &str, to: &str, ports: &[u16]) -> Vec<u16> {
    let script: String = ports
        .iter()
        .map(|p| format!("timeout 2 bash -c 'echo > /dev/tcp/{to}/{p}' 2>/dev/null && echo {p}; "))
        .collect();
    ssh(from, &format!("{script}true"))
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect()
}

fn audit_json(d: &Path) -> String {
    let inv = d.join("inventory.yml");
    text(&provision(&[
        "audit",
        inv.to_str().unwrap(),
        "--output",
        "json",
    ]))
}

#[test]
fn firewall_opens_only_the_cluster_ports_to_the_cluster() {
    let Some(_lab) = LabGuard::fresh(6) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    // Validation: a rule set that would not admit this controller on SSH, refused before
    // any host is contacted.
    inventory(d, ", firewall_ssh_sources: [10.99.0.0/16]", false);
    let (rc, out) = run(d, &[]);
    assert_eq!(rc, 4, "{out}");
    assert!(
        out.contains("inventory.yml:")
            && out.contains("host `node5`")
            && out.contains("would not admit this controller (10.200.0.1) on SSH port 22"),
        "{out}"
    );
    assert_eq!(ssh("node1", "ls /etc/provision 2>/dev/null | wc -l"), "0");

    inventory(d, "", false);
    let (rc, out) = run(d, &[]);
    assert_eq!(rc, 0, "{out}");
    let managed = [22, 2376, 2377, 2379, 2380, 7946];
    // From a worker: SSH, swarm management and gossip; not etcd nor the Docker API.
    assert_eq!(
        open_from("node4", "10.200.0.11", &managed),
        vec![22, 2377, 7946]
    );
    // From etcd's peer: etcd too.
    assert_eq!(
        open_from("node2", "10.200.0.11", &managed),
        vec![22, 2377, 2379, 2380, 7946]
    );
    // From a host outside the inventory: SSH only.
    assert_eq!(open_from("node6", "10.200.0.11", &managed), vec![22]);
    assert_eq!(open_from("node6", "10.200.0.14", &managed), vec![22]);
    // The Docker API answers this machine (an admitted operator source) over TLS.
    let api = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "5", "--cacert"])
        .arg(d.join(".provision/ca.crt"))
        .arg("https://10.200.0.11:2376/info")
        .output()
        .unwrap();
    assert!(
        text(&api).contains("certificate") || text(&api).contains("alert"),
        "the API did not answer with TLS: {}",
        text(&api)
    );
    // The swarm formed through the firewall, and etcd too.
    let nodes = ssh("node1", "sudo docker node ls --format '{{.Status}}'");
    assert_eq!(nodes.matches("Ready").count(), 5, "{nodes}");
    let health = ssh("node2", "sudo ETCDCTL_API=3 etcdctl --endpoints=https://10.200.0.11:2379,https://10.200.0.12:2379,https://10.200.0.13:2379 --cacert=/etc/provision/pki/ca.crt --cert=/etc/provision/pki/etcd.crt --key=/etc/provision/pki/etcd.key endpoint health 2>&1");
    assert_eq!(health.matches("is healthy").count(), 3, "{health}");
    // Persisted: the unit loads the table again after it is gone.
    ssh(
        "node3",
        "sudo nft delete table inet provision; sudo systemctl restart provision-firewall",
    );
    assert!(ssh("node3", "sudo nft list table inet provision").contains("policy drop"));
    assert_eq!(
        ssh("node3", "systemctl is-enabled provision-firewall"),
        "enabled"
    );

    // Published container ports pass through Docker's chains; a restricted one answers
    // only its sources.
    for n in ["node4", "node5"] {
        ssh(n, "set -e; rm -rf /tmp/bb; mkdir -p /tmp/bb/bin /tmp/bb/www; cp /bin/busybox /tmp/bb/bin/; echo hello > /tmp/bb/www/index.html; \
             for a in sh httpd sleep; do ln -s busybox /tmp/bb/bin/$a; done; sudo sh -c 'tar -C /tmp/bb -c . | docker import - busybox:lab >/dev/null'");
    }
    ssh("node4", "sudo docker run -d -p 8081:80 busybox:lab httpd -f -h /www >/dev/null; sudo docker run -d -p 8082:80 busybox:lab httpd -f -h /www >/dev/null; sleep 1");
    let get = |from: Option<&str>, port: u16| -> String {
        let url = format!("http://10.200.0.14:{port}/");
        match from {
            Some(h) => {
                let (_, o) = ssh_rc(h, &format!("curl -s --max-time 3 {url}"));
                o.trim().to_owned()
            }
            None => {
                let o = std::process::Command::new("curl")
                    .args(["-s", "--max-time", "3", &url])
                    .output()
                    .unwrap();
                String::from_utf8_lossy(&o.stdout).trim().to_owned()
            }
        }
    };
    assert_eq!(get(None, 8081), "hello", "the allowed source");
    assert_eq!(get(Some("node6"), 8081), "", "restricted to 10.200.0.1");
    assert_eq!(get(Some("node6"), 8082), "hello", "published ports work");

    // A stack on the two workers: its tasks talk over the overlay (VXLAN through the
    // firewall).
    let compose = "version: \"3.8\"\nservices:\n  web:\n    image: busybox:lab\n    command: httpd -f -h /www\n    networks: [net]\n    deploy:\n      replicas: 2\n      endpoint_mode: dnsrr\n      placement: {constraints: [node.role == worker], max_replicas_per_node: 1}\nnetworks:\n  net: {driver: overlay}\n";
    ssh("node1", &format!("printf '%s' '{compose}' | sudo docker stack deploy --resolve-image never -c - fw >/dev/null"));
    let mut ready = String::new();
    for _ in 0..60 {
        ready = ssh(
            "node1",
            "sudo docker service ls --format '{{.Name}} {{.Replicas}}'",
        );
        if ready.contains("fw_web 2/2") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
    assert!(ready.contains("fw_web 2/2"), "{ready}");
    let ip5 = ssh("node5", "sudo docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}' $(sudo docker ps -q -f name=fw_web) | awk '{print $1}'");
    // (busybox-static's wget crashes in a container; its nc does not)
    let got = ssh("node4", &format!("sudo docker exec $(sudo docker ps -q -f name=fw_web) sh -c 'printf \"GET / HTTP/1.0\\r\\n\\r\\n\" | nc -w 3 {ip5} 80'"));
    assert!(
        got.ends_with("hello"),
        "overlay traffic from node4 to node5 ({ip5}): {got}"
    );

    // Again: nothing changes.
    let (rc, out) = run(d, &[]);
    assert_eq!(rc, 0, "{out}");
    assert!(out.contains("no changes"), "{out}");

    // A port opened by hand inside provision's table: the audit names it and the next run
    // removes it; a table of someone else's is left alone.
    ssh("node2", "sudo nft add rule inet provision input tcp dport 8080 accept; \
                  sudo nft add table inet mine; sudo nft add chain inet mine c; sudo nft add rule inet mine c tcp dport 9999 accept");
    let a = audit_json(d);
    assert!(a.contains("+ tcp dport 8080 accept"), "{a}");
    assert!(a.contains("\"drift\":1"), "{a}");
    let (rc, out) = run(d, &[]);
    assert_eq!(rc, 0, "{out}");
    assert!(out.contains("had been changed by hand"), "{out}");
    let rs = ssh("node2", "sudo nft list ruleset");
    assert!(
        !rs.contains("dport 8080") && rs.contains("dport 9999"),
        "{rs}"
    );
    assert!(!audit_json(d).contains("+ tcp dport 8080"));

    // fail2ban: repeated failed logins from node6 get it banned on node3, and the audit
    // shows the ban.
    ssh("node6", "for i in 1 2 3 4 5 6; do timeout 5 ssh -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o ConnectTimeout=3 intruder@10.200.0.13 true 2>/dev/null; done; true");
    let mut banned = false;
    for _ in 0..20 {
        if ssh("node3", "sudo fail2ban-client status sshd").contains("10.200.0.16") {
            banned = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    assert!(banned, "node6 was not banned");
    assert_eq!(open_from("node6", "10.200.0.13", &[22]), Vec::<u16>::new());
    assert!(audit_json(d).contains("banned: 10.200.0.16"));
    ssh(
        "node3",
        "sudo fail2ban-client set sshd unbanip 10.200.0.16 >/dev/null",
    );

    // Rules that cut new SSH connections in a way validation cannot see: undone on the
    // old connection, the host stays reachable.
    inventory(
        d,
        ", firewall_input_raw: [\"ip saddr 10.200.0.1 tcp dport 22 ct state new drop\"]",
        false,
    );
    let (rc, out) = run(d, &["--connect-timeout", "3"]);
    assert_eq!(rc, 2, "{out}");
    assert!(
        out.contains("a new SSH connection as `admin` failed after the change")
            && out.contains("the previous settings were restored"),
        "{out}"
    );
    assert!(!ssh("node5", "sudo nft list table inet provision").contains("ct state new drop"));
    // Rules that cut the old connection too: the host's own timer puts the old ones back.
    inventory(
        d,
        ", firewall_confirm_timeout: 8, firewall_input_raw: [\"ip saddr 10.200.0.1 tcp dport 22 drop\"]",
        false,
    );
    let (rc, out) = run(d, &["--connect-timeout", "3", "--limit", "node5"]);
    assert_eq!(rc, 2, "{out}");
    assert!(!ssh("node5", "sudo nft list table inet provision").contains("dport 22 drop"));
    assert!(ssh("node5", "sudo journalctl -t provision --no-pager")
        .contains("the new rules were not confirmed"));

    // node6 joins as a worker with --limit: its peers' firewalls admit it first.
    inventory(d, "", true);
    let (rc, out) = run(d, &["--limit", "node6"]);
    assert_eq!(rc, 0, "{out}");
    assert!(
        out.contains(
            "node1, node2, node3, node4, node5 (outside --limit): role firewall runs there too"
        ),
        "{out}"
    );
    let nodes = ssh(
        "node1",
        "sudo docker node ls --format '{{.Hostname}} {{.Status}}'",
    );
    assert!(nodes.contains("node6 Ready"), "{nodes}");
    assert_eq!(
        open_from("node6", "10.200.0.11", &managed),
        vec![22, 2377, 7946]
    );
    // The whole inventory: only the others' /etc/hosts still lacked node6.
    let (rc, out) = run(d, &[]);
    assert_eq!(rc, 0, "{out}");
    let changed: Vec<&str> = out.lines().filter(|l| l.contains("| changed ")).collect();
    assert!(
        !changed.is_empty() && changed.iter().all(|l| l.contains("/etc/hosts updated")),
        "{out}"
    );
    let (rc, out) = run(d, &[]);
    assert_eq!(rc, 0, "{out}");
    assert!(out.contains("no changes"), "{out}");
}
