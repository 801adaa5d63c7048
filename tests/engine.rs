//! The engine against real lab hosts: every module, idempotence, check mode on drift,
//! host keys, unreachable hosts.

mod common;
use common::*;

fn recap_line<'a>(out: &'a str, host: &str) -> &'a str {
    out.lines()
        .find(|l| l.starts_with(host) && l.contains("changed="))
        .unwrap_or_else(|| panic!("no recap for {host} in:\n{out}"))
}

fn count(line: &str, key: &str) -> u32 {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[test]
fn modules_idempotence_check_mode_and_host_keys() {
    let Some(_lab) = LabGuard::up(3) else {
        return;
    };
    let inv = lab_dir().join("inventory.yml");
    let inv = inv.to_str().unwrap();
    let fx = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
    let play = format!("{fx}/site.yml");
    let roles = format!("{fx}/roles");
    let run = |extra: &[&str]| {
        let mut a = vec![inv, "-p", &play, "--roles", &roles];
        a.extend(extra);
        provision(&a)
    };

    // First run changes things on every host.
    let o = run(&[]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    for h in ["node1", "node2", "node3"] {
        assert!(count(recap_line(&out, h), "changed") >= 10, "{out}");
    }
    // The state is really on the hosts.
    for h in ["node1", "node2", "node3"] {
        assert_eq!(
            ssh(h, "sudo cat /opt/provision-test/motd"),
            format!("hello from {h}")
        );
        assert_eq!(
            ssh(
                h,
                "sudo stat -c %a /opt/provision-test /opt/provision-test/app.conf"
            ),
            "750\n640"
        );
        assert_eq!(
            ssh(h, "sudo readlink /opt/provision-test/current"),
            "/opt/provision-test"
        );
        assert!(ssh(h, "sudo cat /opt/provision-test/app.conf").contains("peers=node1,node2,node3"));
        assert_eq!(
            ssh(h, "sudo stat -c %a /opt/provision-test/notice.txt; sudo cat /opt/provision-test/notice.txt"),
            "600\ncopied from the role files folder"
        );
        assert_eq!(
            ssh(h, "sudo cat /opt/provision-test/settings"),
            "level=info"
        );
        assert!(ssh(h, "sudo cat /opt/provision-test/blocks").contains("managed block line"));
        assert_eq!(
            ssh(h, "/usr/sbin/sysctl -n net.ipv4.conf.all.accept_redirects"),
            "0"
        );
        assert!(ssh(h, "cat /etc/sysctl.d/99-provision.conf")
            .contains("net.ipv4.conf.all.accept_redirects = 0"));
        assert!(ssh(h, "dpkg-query -W -f='${Status}' tree").contains("installed"));
        assert_eq!(ssh(h, "id -nG deploy"), "deploy deployers");
        assert!(ssh(h, "sudo cat ~deploy/.ssh/authorized_keys").contains("test@provision"));
        assert_eq!(
            ssh(h, "sudo stat -c '%a %U' ~deploy/.ssh/authorized_keys"),
            "600 deploy"
        );
        assert_eq!(ssh(h, "sudo cat /opt/provision-test/handler-ran"), "yes");
        assert!(ssh(h, "sudo test -e /opt/provision-test/created && echo y") == "y");
    }

    // Second run: nothing to change.
    let o = run(&[]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    for h in ["node1", "node2", "node3"] {
        assert_eq!(count(recap_line(&out, h), "changed"), 0, "{out}");
    }
    assert!(out.contains("no changes"), "{out}");

    // Drift by hand on node2; --check reports exactly that drift and changes nothing.
    ssh("node2", "sudo sh -c 'echo tampered > /opt/provision-test/motd; chmod 700 /opt/provision-test; sysctl -qw net.ipv4.conf.all.accept_redirects=1'");
    let o = run(&["--check", "--diff"]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert_eq!(count(recap_line(&out, "node1"), "changed"), 0, "{out}");
    assert_eq!(count(recap_line(&out, "node3"), "changed"), 0, "{out}");
    assert_eq!(count(recap_line(&out, "node2"), "changed"), 3, "{out}");
    for task in ["allmods : copy", "allmods : directory", "allmods : sysctl"] {
        assert!(
            out.lines()
                .any(|l| l.contains("node2 | changed") && l.contains(task)),
            "{task} not reported:\n{out}"
        );
    }
    assert!(
        out.contains("-tampered") && out.contains("+hello from node2"),
        "no diff:\n{out}"
    );
    assert_eq!(
        ssh("node2", "sudo cat /opt/provision-test/motd"),
        "tampered"
    );
    assert_eq!(ssh("node2", "stat -c %a /opt/provision-test"), "700");
    // A real run repairs exactly the drift.
    let o = run(&[]);
    let out = text(&o);
    assert_eq!(
        count(recap_line(&out, "node2"), "changed"),
        3,
        "copy, directory and sysctl (the handler finds its file right):\n{out}"
    );
    assert_eq!(
        ssh("node2", "sudo cat /opt/provision-test/motd"),
        "hello from node2"
    );

    // JSON output: one event per line, ending with the recap.
    let o = run(&["--output", "json", "--limit", "node1"]);
    let last = String::from_utf8_lossy(&o.stdout)
        .lines()
        .last()
        .unwrap()
        .to_owned();
    let v: serde_json::Value = serde_json::from_str(&last).unwrap();
    assert_eq!(v["event"], "recap");
    assert_eq!(v["hosts"]["node1"]["changed"], 0);
    // Where the time went: every task with its wall time and slowest host, the critical
    // path from the first task to the last.
    let items = v["timings"]["items"].as_array().unwrap();
    assert!(items.len() >= 10, "{items:?}");
    assert!(items
        .iter()
        .all(|i| i["slowest"] == "node1" && i["wall"].as_f64().unwrap() >= 0.0));
    let path = v["timings"]["critical_path"].as_array().unwrap();
    assert!(
        !path.is_empty() && v["timings"]["spans"].is_null(),
        "spans only with --timings"
    );
    let wall = v["timings"]["wall"].as_f64().unwrap();
    assert!((path.last().unwrap()["end"].as_f64().unwrap() - wall).abs() < 0.01);
    let o = run(&["--timings"]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    let t = out.split("TIMINGS (the run: ").nth(1).expect(&out);
    assert!(
        t.contains("largest items (the longest host; hosts run in parallel):")
            && t.contains("critical path"),
        "{t}"
    );
    assert!(
        t.lines().filter(|l| l.contains(" host")).count() >= 10,
        "{t}"
    );
    assert!(t.contains("3 hosts, slowest node"), "{t}");

    // Host keys: an inventory without a known_hosts entry is refused...
    let dir = tempfile::tempdir().unwrap();
    let key = lab_dir().join("id_ed25519");
    let inv2 = dir.path().join("inv.yml");
    std::fs::write(&inv2, format!(
        "all:\n  vars:\n    ansible_user: admin\n    ansible_become: true\n    ansible_ssh_private_key_file: {}\n  hosts:\n    node1:\n      ansible_host: 10.200.0.11\n    ghost:\n      ansible_host: 10.200.0.99\n",
        key.display())).unwrap();
    let inv2s = inv2.to_str().unwrap();
    let o = provision(&[inv2s, "--limit", "node1", "--connect-timeout", "3"]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(3), "{out}");
    assert!(
        out.contains("unknown host key") && out.contains("--accept-new-host-keys"),
        "{out}"
    );
    // ...recorded with --accept-new-host-keys (trust on first use)...
    let o = provision(&[inv2s, "--limit", "node1", "--accept-new-host-keys"]);
    assert!(o.status.success(), "{}", text(&o));
    let kh = std::fs::read_to_string(dir.path().join("known_hosts")).unwrap();
    assert!(kh.contains("ssh-ed25519"), "{kh}");
    // ...and a changed key is fatal, naming the file and line, even with --accept-new-host-keys.
    let other =
        std::fs::read_to_string(lab_dir().join("hosts/node2/keys/ssh_host_ed25519_key.pub"))
            .unwrap();
    let fake = format!(
        "10.200.0.11 {}\n",
        other
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ")
    );
    std::fs::write(dir.path().join("known_hosts"), fake).unwrap();
    let o = provision(&[inv2s, "--limit", "node1", "--accept-new-host-keys"]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(3), "{out}");
    assert!(
        out.contains("HOST KEY MISMATCH") && out.contains("known_hosts:1"),
        "{out}"
    );
    // An unreachable host is reported; the others finish.
    std::fs::write(dir.path().join("known_hosts"), "").unwrap();
    let o = provision(&[inv2s, "--accept-new-host-keys", "--connect-timeout", "2"]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(3), "{out}");
    assert!(recap_line(&out, "ghost").contains("unreachable=1"), "{out}");
    assert!(
        recap_line(&out, "node1").contains("failed=0")
            && recap_line(&out, "node1").contains("unreachable=0"),
        "{out}"
    );
}
