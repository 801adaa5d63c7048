//! `provision lab`: real hosts answer SSH, verify, install packages, reach each other,
//! and leave nothing behind.

mod common;
use common::*;
use std::process::Command;

fn leftovers() -> Vec<String> {
    let mut found = Vec::new();
    let netns = String::from_utf8_lossy(
        &Command::new("ip")
            .args(["netns", "list"])
            .output()
            .unwrap()
            .stdout,
    )
    .into_owned();
    found.extend(
        netns
            .lines()
            .filter(|l| l.starts_with("plab-"))
            .map(|l| format!("netns {l}")),
    );
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    found.extend(
        mounts
            .lines()
            .filter(|l| l.contains("provision-lab/hosts"))
            .map(|l| format!("mount {l}")),
    );
    let loops =
        String::from_utf8_lossy(&Command::new("losetup").arg("-a").output().unwrap().stdout)
            .into_owned();
    found.extend(
        loops
            .lines()
            .filter(|l| l.contains("provision-lab"))
            .map(|l| format!("loop {l}")),
    );
    for h in ["pids", "memory", "systemd", "unified"] {
        for base in [format!("/sys/fs/cgroup/{h}"), "/sys/fs/cgroup".to_string()] {
            let out = Command::new("find")
                .arg(&base)
                .args(["-maxdepth", "4", "-type", "d", "-name", "provision-lab"])
                .output()
                .unwrap();
            found.extend(
                String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .map(|l| format!("cgroup {l}")),
            );
        }
    }
    let ps = String::from_utf8_lossy(
        &Command::new("ps")
            .args(["-eo", "args"])
            .output()
            .unwrap()
            .stdout,
    )
    .into_owned();
    found.extend(
        ps.lines()
            .filter(|l| l.contains("provision-lab") || l.contains("--bind 10.200.0.1"))
            .map(|l| format!("process {l}")),
    );
    let links =
        String::from_utf8_lossy(&Command::new("ip").args(["link"]).output().unwrap().stdout)
            .into_owned();
    found.extend(
        links
            .lines()
            .filter(|l| l.contains("plab0") || l.contains("pl-node"))
            .map(|l| format!("link {l}")),
    );
    found.sort();
    found.dedup();
    found
}

#[test]
fn lab_hosts_are_real_and_lab_down_cleans_everything() {
    let Some(lab) = LabGuard::up(3) else {
        return;
    };
    let mut names = Vec::new();
    let mut addrs = Vec::new();
    for n in ["node1", "node2", "node3"] {
        // StrictHostKeyChecking=yes with the written known_hosts: this fails on a wrong key.
        names.push(ssh(n, "hostname"));
        addrs.push(ssh(n, "ip -4 -o addr show eth0 | awk '{print $4}'"));
        assert_eq!(ssh(n, "sudo -n id -u"), "0");
        assert_eq!(ssh(n, "systemctl is-active ssh"), "active");
    }
    assert_eq!(names, ["node1", "node2", "node3"]);
    assert_eq!(
        addrs,
        ["10.200.0.11/16", "10.200.0.12/16", "10.200.0.13/16"]
    );
    // A package that is not in the image installs from the lab's repository.
    assert!(ssh("node2", "command -v jq || echo missing").ends_with("missing"));
    ssh("node2", "sudo apt-get update -q >/dev/null && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -q jq >/dev/null");
    assert_eq!(ssh("node2", "echo '{\"a\": 7}' | jq .a"), "7");
    // Hosts reach each other, but nothing outside the machine.
    ssh("node1", "ping -c1 -W2 10.200.0.13 >/dev/null");
    ssh("node3", "ping -c1 -W2 10.200.0.11 >/dev/null");
    assert_eq!(
        ssh(
            "node1",
            "ping -c1 -W1 192.0.2.1 >/dev/null 2>&1 && echo out || echo blocked"
        ),
        "blocked"
    );
    // A wrong host key is refused by OpenSSH with the lab's known_hosts.
    let kh = lab_dir().join("known_hosts");
    let saved = std::fs::read_to_string(&kh).unwrap();
    let lines: Vec<&str> = saved.lines().collect();
    let swapped = format!(
        "{}\n",
        [
            lines[0].split(' ').next().unwrap(),
            lines[1].split_once(' ').unwrap().1
        ]
        .join(" ")
    );
    std::fs::write(&kh, swapped).unwrap();
    let o = Command::new("ssh")
        .arg("-F")
        .arg(lab_dir().join("ssh_config"))
        .args(["node1", "true"])
        .output()
        .unwrap();
    std::fs::write(&kh, saved).unwrap();
    assert!(!o.status.success(), "ssh accepted a wrong host key");
    // Up again with the same size is a no-op; a different size is refused.
    assert!(provision(&["lab", "up", "3"]).status.success());
    let o = provision(&["lab", "up", "2"]);
    assert!(
        !o.status.success() && text(&o).contains("lab down"),
        "{}",
        text(&o)
    );
    drop(lab);
    assert_eq!(leftovers(), Vec::<String>::new());
    // Host keys are kept across restarts.
    let before =
        std::fs::read_to_string(lab_dir().join("hosts/node1/keys/ssh_host_ed25519_key.pub"))
            .unwrap();
    let Some(lab) = LabGuard::up(1) else {
        return;
    };
    assert_eq!(
        ssh("node1", "cat /etc/ssh/ssh_host_ed25519_key.pub"),
        before.trim()
    );
    drop(lab);
    assert_eq!(leftovers(), Vec::<String>::new());
}

#[test]
fn lab_disk_rejects_a_size_it_cannot_read() {
    // Fails before touching anything: no lab is started.
    let o = provision(&["lab", "up", "2", "--disk", "lots"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("is not a size"), "{}", text(&o));
}
