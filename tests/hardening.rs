//! The built-in playbook (bootstrap + hardening) and `provision audit` on lab hosts:
//! state on the hosts, idempotence, drift found exactly and repaired, and sshd changes
//! that would break access refused or rolled back with the host still reachable.

mod common;
use common::*;

const DROP_IN: &str = "/etc/ssh/sshd_config.d/50-provision-hardening.conf";

/// (host, rule id) of every drifted rule in a JSON audit.
fn drifted(out: &str) -> Vec<(String, String)> {
    let mut v = Vec::new();
    for line in out.lines() {
        let Ok(e) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if e["event"] != "audit" {
            continue;
        }
        for f in e["findings"].as_array().into_iter().flatten() {
            if f["pass"] == false {
                v.push((
                    e["host"].as_str().unwrap().to_owned(),
                    f["id"].as_str().unwrap().to_owned(),
                ));
            }
        }
    }
    v.sort();
    v
}

#[test]
fn bootstrap_hardening_audit_drift_and_lockout_protection() {
    let Some(_lab) = LabGuard::up(3) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let lab_inv = std::fs::read_to_string(lab_dir().join("inventory.yml")).unwrap();
    write(d, "inventory.yml", &lab_inv);
    let pubkey = std::fs::read_to_string(lab_dir().join("id_ed25519.pub")).unwrap();
    write(
        d,
        "group_vars/all.yml",
        &format!(
            "admin_users:\n  - name: ops\n    keys: [\"{}\"]\nextra_packages: [jq]\n",
            pubkey.trim()
        ),
    );
    let inv = d.join("inventory.yml");
    let inv = inv.to_str().unwrap();
    let audit = |extra: &[&str]| {
        let mut a = vec!["audit", inv];
        a.extend(extra);
        provision(&a)
    };

    // A host never provisioned: the audit reports drift, crashes on nothing, writes nothing.
    let o = audit(&["--output", "json"]);
    assert_eq!(o.status.code(), Some(5), "{}", text(&o));
    let before = drifted(&text(&o));
    assert!(before
        .iter()
        .any(|(h, r)| h == "node1" && r == "ssh-root-login"));
    assert!(before
        .iter()
        .any(|(h, r)| h == "node3" && r == "docker-icc"));
    assert_eq!(
        ssh(
            "node1",
            &format!("test -e {DROP_IN} && echo yes || echo no")
        ),
        "no"
    );

    // First run: everything applied.
    let o = provision(&[inv]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    for h in ["node1", "node2", "node3"] {
        assert!(recap(&out, h, "changed") >= 8, "{out}");
        assert_eq!(ssh(h, "hostname"), h);
        assert!(ssh(h, "cat /etc/hosts").contains("10.200.0.13 node3"));
        assert_eq!(
            ssh(
                h,
                "systemctl is-active chrony; dpkg-query -W -f='${Status}' jq"
            ),
            "active\ninstall ok installed"
        );
        assert_eq!(
            ssh(h, "readlink /etc/localtime"),
            "/usr/share/zoneinfo/Etc/UTC"
        );
        let sshd = ssh(h, "sudo sshd -T");
        for want in [
            "permitrootlogin no",
            "passwordauthentication no",
            "maxauthtries 3",
            "x11forwarding no",
        ] {
            assert!(
                sshd.lines().any(|l| l == want),
                "{h}: no `{want}` in sshd -T"
            );
        }
        assert_eq!(
            ssh(h, "cat /proc/sys/net/ipv4/conf/all/rp_filter /proc/sys/net/ipv4/ip_forward; stat -c %a /etc/shadow /etc/ssh/sshd_config"),
            "1\n1\n640\n600"
        );
        assert!(
            ssh(
                h,
                "grep -c rp_filter /etc/sysctl.d/90-provision-hardening.conf"
            )
            .parse::<u32>()
            .unwrap()
                >= 2
        );
        let daemon: serde_json::Value =
            serde_json::from_str(&ssh(h, "cat /etc/docker/daemon.json")).unwrap();
        assert_eq!(daemon["icc"], false);
        assert_eq!(daemon["log-opts"]["max-file"], "3");
        // The admin user: its key works, sudo works, the sudoers file passed visudo.
        assert_eq!(
            ssh(
                h,
                "sudo visudo -cf /etc/sudoers.d/provision-admins >/dev/null && echo valid"
            ),
            "valid"
        );
    }
    let key = lab_dir().join("id_ed25519");
    let kh = lab_dir().join("known_hosts");
    let ops = std::process::Command::new("ssh")
        .args([
            "-i",
            key.to_str().unwrap(),
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "BatchMode=yes",
        ])
        .arg(format!("-oUserKnownHostsFile={}", kh.display()))
        .args(["ops@10.200.0.12", "sudo -n id -un"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&ops.stdout).trim(),
        "root",
        "{}",
        text(&ops)
    );

    // Second run: nothing to change; the audit passes in one round trip per host.
    let o = provision(&[inv]);
    let out = text(&o);
    assert!(o.status.success() && out.contains("no changes"), "{out}");
    for h in ["node1", "node2", "node3"] {
        assert_eq!(recap(&out, h, "changed"), 0, "{out}");
    }
    let o = audit(&[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        text(&o).contains("compliant") && text(&o).contains("round_trips=1"),
        "{}",
        text(&o)
    );

    // A reader gone before the report (`| true`) is no crash: same exit code, no panic.
    let o = std::process::Command::new("bash")
        .args([
            "-c",
            &format!("{BIN} audit {inv} -v | true; exit ${{PIPESTATUS[0]}}"),
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(!text(&o).contains("panicked"), "{}", text(&o));

    // Drift by hand on node2: an sshd option, a sysctl, a file mode.
    ssh(
        "node2",
        &format!("sudo sed -i 's/^MaxAuthTries 3/MaxAuthTries 6/' {DROP_IN}; sudo sysctl -qw net.ipv4.conf.all.rp_filter=0; sudo chmod 644 /etc/shadow"),
    );
    let o = audit(&["--output", "json"]);
    assert_eq!(o.status.code(), Some(5), "{}", text(&o));
    assert_eq!(
        drifted(&text(&o)),
        [
            ("node2".to_string(), "file-shadow".to_string()),
            ("node2".into(), "net-rp-filter".into()),
            ("node2".into(), "ssh-max-auth-tries".into()),
        ]
    );
    // A re-run changes exactly those, and the audit passes again.
    let o = provision(&[inv]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert_eq!(recap(&out, "node2", "changed"), 3, "{out}");
    assert_eq!(recap(&out, "node1", "changed"), 0, "{out}");
    assert_eq!(recap(&out, "node3", "changed"), 0, "{out}");
    assert_eq!(audit(&[]).status.code(), Some(0));

    let drop_in = |h: &str| ssh(h, &format!("sudo sha256sum {DROP_IN}"));
    let good = drop_in("node1");

    // AllowUsers without the connecting user: refused before any connection.
    write(
        d,
        "host_vars/node1.yml",
        "hardening_ssh_allow_users: [ops]\n",
    );
    let o = provision(&[inv]);
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    assert!(text(&o).contains("does not let `admin`"), "{}", text(&o));

    // A value sshd refuses: `sshd -t` stops it, the previous file stays, the host answers.
    write(
        d,
        "host_vars/node1.yml",
        "hardening_values: {ssh-max-auth-tries: lots}\n",
    );
    let o = provision(&[inv, "--limit", "node1"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("sshd -t refused"), "{}", text(&o));
    assert_eq!(drop_in("node1"), good);

    // AllowGroups that leaves the connecting user out: sshd accepts it, but the new
    // connection fails, so the previous settings come back; the host still answers.
    write(
        d,
        "host_vars/node1.yml",
        "hardening_ssh_allow_groups: [nobody-here]\n",
    );
    let o = provision(&[inv, "--limit", "node1"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("a new SSH connection as `admin` failed")
            && text(&o).contains("restored"),
        "{}",
        text(&o)
    );
    assert_eq!(drop_in("node1"), good);
    assert_eq!(
        ssh("node1", "sudo sshd -T | grep -c '^allowgroups' || true"),
        "0"
    );
    std::fs::remove_file(d.join("host_vars/node1.yml")).unwrap();
    assert_eq!(audit(&[]).status.code(), Some(0));
}
