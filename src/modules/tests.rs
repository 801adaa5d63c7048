//! Every host module's plan() from captured probe outputs: what each one decides for
//! a host already right, a host that differs, and a host where it cannot work.

use super::{build, Plan, TABLE};
use crate::transport::Output;
use base64::Engine;
use serde_json::{json, Value};

fn out(rc: i32, stdout: &str) -> Output {
    Output {
        rc,
        stdout: stdout.into(),
        stderr: String::new(),
    }
}

fn file(mode: &str, content: &str) -> String {
    owned(mode, "root", content)
}

fn owned(mode: &str, owner: &str, content: &str) -> String {
    format!(
        "E {mode} {owner} {owner}\n{}\n",
        base64::engine::general_purpose::STANDARD.encode(content)
    )
}

#[derive(Debug, PartialEq)]
enum Want {
    Ok,
    Change(&'static str),
    Fail(&'static str),
}

fn kind(p: &Plan) -> String {
    match p {
        Plan::Ok(m) => format!("ok: {m}"),
        Plan::Change { script, msg, .. } => format!("change: {msg} | {script}"),
        Plan::Fail(m) => format!("fail: {m}"),
    }
}

const BIG: &str = concat!(
    include_str!("../../roles/hardening/rules.yml"),
    include_str!("../../roles/hardening/rules.yml"),
    include_str!("../../roles/hardening/rules.yml"),
    include_str!("../../roles/hardening/rules.yml"),
    include_str!("../../roles/hardening/rules.yml"),
    include_str!("../../roles/hardening/rules.yml"),
    include_str!("../../roles/hardening/rules.yml"),
    include_str!("../../roles/hardening/rules.yml")
);

fn sha(s: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(s.as_bytes()))
}

const NFT: &str =
    "table inet provision {}\ndelete table inet provision\ntable inet provision {\n}\n";
const LIVE: &str = "table inet provision {\n\tchain input {\n\t}\n}\n";

#[test]
fn every_module_plans_from_captured_probes() {
    let cases: Vec<(&str, Value, Output, Want)> = vec![
        (
            "command",
            json!({"cmd": "make", "creates": "/x"}),
            out(0, "skip\n"),
            Want::Ok,
        ),
        (
            "command",
            json!({"cmd": "make", "creates": "/x"}),
            out(0, "run\n"),
            Want::Change("make"),
        ),
        (
            "shell",
            json!({"cmd": "echo hi", "chdir": "/tmp"}),
            out(0, ""),
            Want::Change("cd /tmp && echo hi"),
        ),
        (
            "copy",
            json!({"dest": "/etc/a", "content": "x\n", "mode": "0644"}),
            out(0, &file("644", "x\n")),
            Want::Ok,
        ),
        (
            "copy",
            json!({"dest": "/big", "content": BIG, "mode": "0644"}),
            out(0, &format!("E 644 root root\nH:{}\n", sha(BIG))),
            Want::Ok,
        ),
        (
            "copy",
            json!({"dest": "/big", "content": BIG, "mode": "0644"}),
            out(0, &format!("E 644 root root\nH:{}\n", sha("other"))),
            Want::Change("sha256sum"),
        ),
        (
            "copy",
            json!({"dest": "/etc/a", "content": "x\n", "mode": "0644"}),
            out(0, &file("600", "x\n")),
            Want::Change("chmod 644"),
        ),
        (
            "copy",
            json!({"dest": "/etc/a", "content": "y\n"}),
            out(0, &file("644", "x\n")),
            Want::Change("mv -f"),
        ),
        (
            "copy",
            json!({"dest": "/etc/a", "content": "y\n"}),
            out(0, "N\n"),
            Want::Change("mktemp"),
        ),
        (
            "template",
            json!({"src": "t.j2", "dest": "/etc/t", "content": "t\n"}),
            out(0, &file("644", "t\n")),
            Want::Ok,
        ),
        (
            "file",
            json!({"path": "/d", "state": "directory", "mode": "0755"}),
            out(0, "directory|755|root|root\n"),
            Want::Ok,
        ),
        (
            "file",
            json!({"path": "/d", "state": "directory", "mode": "0700"}),
            out(0, "directory|755|root|root\n"),
            Want::Change("chmod 700"),
        ),
        (
            "file",
            json!({"path": "/d", "state": "directory"}),
            out(0, "absent\n"),
            Want::Change("mkdir"),
        ),
        (
            "file",
            json!({"path": "/l", "state": "link", "src": "/t"}),
            out(0, "link /t\n"),
            Want::Ok,
        ),
        (
            "file",
            json!({"path": "/l", "state": "link", "src": "/t"}),
            out(0, "link /u\n"),
            Want::Change("ln"),
        ),
        (
            "file",
            json!({"path": "/f", "state": "absent"}),
            out(0, "absent\n"),
            Want::Ok,
        ),
        (
            "file",
            json!({"path": "/f", "state": "absent"}),
            out(0, "regular file|644|root|root\n"),
            Want::Change("rm"),
        ),
        (
            "lineinfile",
            json!({"path": "/etc/f", "line": "a=1", "regexp": "^a="}),
            out(0, &file("644", "a=1\nb=2\n")),
            Want::Ok,
        ),
        (
            "lineinfile",
            json!({"path": "/etc/f", "line": "a=1", "regexp": "^a="}),
            out(0, &file("644", "a=0\nb=2\n")),
            Want::Change("mv -f"),
        ),
        (
            "lineinfile",
            json!({"path": "/etc/f", "line": "a=1"}),
            out(0, "N\n"),
            Want::Fail("does not exist"),
        ),
        (
            "blockinfile",
            json!({"path": "/etc/f", "block": "x"}),
            out(0, &file("644", "top\n")),
            Want::Change("mv -f"),
        ),
        (
            "blockinfile",
            json!({"path": "/etc/f", "block": "x"}),
            out(0, "N\n"),
            Want::Fail("does not exist"),
        ),
        (
            "sysctl",
            json!({"name": "net.ipv4.ip_forward", "value": "1", "sysctl_file": "/etc/sysctl.d/9.conf"}),
            out(
                0,
                &format!("{}--live--\n1\n", file("644", "net.ipv4.ip_forward = 1\n")),
            ),
            Want::Ok,
        ),
        (
            "sysctl",
            json!({"name": "net.ipv4.ip_forward", "value": "1", "sysctl_file": "/etc/sysctl.d/9.conf"}),
            out(
                0,
                &format!("{}--live--\n0\n", file("644", "net.ipv4.ip_forward = 1\n")),
            ),
            Want::Change("sysctl"),
        ),
        (
            "sysctl",
            json!({"name": "net.nope", "value": "1"}),
            out(0, "N\n--live--\n<missing>\n"),
            Want::Fail("no sysctl"),
        ),
        (
            "hostname",
            json!({"name": "node1"}),
            out(0, "node1\nnode1\n"),
            Want::Ok,
        ),
        (
            "hostname",
            json!({"name": "node1"}),
            out(0, "debian\ndebian\n"),
            Want::Change("hostnamectl"),
        ),
        (
            "package",
            json!({"name": ["jq"]}),
            out(0, "MGR=apt\njq ii \n"),
            Want::Ok,
        ),
        (
            "package",
            json!({"name": ["jq", "tree"]}),
            out(0, "MGR=apt\njq ii \n"),
            Want::Change("tree"),
        ),
        (
            "apt",
            json!({"name": "jq", "state": "absent"}),
            out(0, "MGR=apt\njq ii \n"),
            Want::Change("jq"),
        ),
        (
            "package",
            json!({"name": "jq"}),
            out(0, "MGR=dnf\n"),
            Want::Fail("dnf"),
        ),
        (
            "service",
            json!({"name": "chrony", "state": "started", "enabled": true}),
            out(0, "systemd\nactive\nenabled\n"),
            Want::Ok,
        ),
        (
            "service",
            json!({"name": "chrony", "state": "started", "enabled": true}),
            out(0, "systemd\ninactive\ndisabled\n"),
            Want::Change("start"),
        ),
        (
            "systemd",
            json!({"name": "nope", "state": "started"}),
            out(0, "systemd\ninactive\nmissing\n"),
            Want::Fail("not installed"),
        ),
        (
            "user",
            json!({"name": "ops"}),
            out(0, "ops:x:1001:1001::/home/ops:/bin/sh\nops\nGROUP\n"),
            Want::Ok,
        ),
        (
            "user",
            json!({"name": "ops"}),
            out(0, "ABSENT\n\nNOGROUP\n"),
            Want::Change("useradd"),
        ),
        ("group", json!({"name": "ops"}), out(0, "yes\n"), Want::Ok),
        (
            "group",
            json!({"name": "ops"}),
            out(0, "no\n"),
            Want::Change("groupadd"),
        ),
        (
            "authorized_key",
            json!({"user": "ops", "key": "ssh-ed25519 AAAA k"}),
            out(
                0,
                &format!("/home/ops\n{}", owned("600", "ops", "ssh-ed25519 AAAA k\n")),
            ),
            Want::Ok,
        ),
        (
            "authorized_key",
            json!({"user": "ops", "key": "ssh-ed25519 AAAA k"}),
            out(
                0,
                &format!("/home/ops\n{}", file("600", "ssh-ed25519 AAAA k\n")),
            ),
            Want::Change("chown ops"),
        ),
        (
            "authorized_key",
            json!({"user": "ops", "key": "ssh-ed25519 BBBB k"}),
            out(
                0,
                &format!("/home/ops\n{}", file("600", "ssh-ed25519 AAAA k\n")),
            ),
            Want::Change(""),
        ),
        (
            "authorized_key",
            json!({"user": "nobody-here", "key": "ssh-ed25519 AAAA"}),
            out(3, ""),
            Want::Fail("does not exist"),
        ),
        ("assert", json!({"that": true}), out(0, ""), Want::Ok),
        (
            "assert",
            json!({"that": false, "msg": "Debian only"}),
            out(0, ""),
            Want::Fail("Debian only"),
        ),
        ("wait_for", json!({"port": 22}), out(0, ""), Want::Ok),
        (
            "wait_for",
            json!({"port": 22, "timeout": 1}),
            out(1, ""),
            Want::Fail("timed out"),
        ),
        (
            "sshd_config",
            json!({"path": "/etc/ssh/sshd_config.d/p.conf", "content": "X11Forwarding no\n"}),
            out(
                0,
                &format!("{}INCLUDED\n", file("600", "X11Forwarding no\n")),
            ),
            Want::Ok,
        ),
        (
            "sshd_config",
            json!({"path": "/etc/ssh/sshd_config.d/p.conf", "content": "X11Forwarding no\n"}),
            out(0, &format!("{}NOT-INCLUDED\n", file("600", ""))),
            Want::Fail("does not include"),
        ),
        (
            "sshd_config",
            json!({"path": "/etc/ssh/sshd_config.d/p.conf", "content": "X11Forwarding no\n"}),
            out(0, "N\nINCLUDED\n"),
            Want::Change("sshd -t"),
        ),
        (
            "nftables",
            json!({"path": "/etc/p.nft", "content": NFT, "ssh_sources": ["10.0.0.0/8"], "client": "10.1.1.1"}),
            out(
                0,
                &format!(
                    "{}==PROVISION loaded\n{LIVE}==PROVISION live\n{LIVE}==PROVISION pending\n",
                    file("600", NFT)
                ),
            ),
            Want::Ok,
        ),
        (
            "nftables",
            json!({"path": "/etc/p.nft", "content": NFT}),
            out(
                0,
                &format!(
                    "{}==PROVISION loaded\n{LIVE}==PROVISION live\n{LIVE}\ttcp dport 8080 accept\n==PROVISION pending\n",
                    file("600", NFT)
                ),
            ),
            Want::Change("nft -c -f"),
        ),
        (
            "nftables",
            json!({"path": "/etc/p.nft", "content": NFT}),
            out(
                0,
                &format!(
                    "{}==PROVISION loaded\n{LIVE}==PROVISION live\n{LIVE}==PROVISION pending\nPENDING\n",
                    file("600", NFT)
                ),
            ),
            Want::Change("kill \"$(cat /run/provision-firewall.timer)\""),
        ),
        (
            "nftables",
            json!({"path": "/etc/p.nft", "content": NFT}),
            out(0, "N\n==PROVISION loaded\n==PROVISION live\n==PROVISION pending\n"),
            Want::Change("setsid sh -c 'sleep 30"),
        ),
        (
            "nftables",
            json!({"path": "/etc/p.nft", "content": NFT, "ssh_sources": ["10.0.0.0/8"], "client": "192.168.1.1"}),
            out(0, "N\n==PROVISION loaded\n==PROVISION live\n==PROVISION pending\n"),
            Want::Fail("would not admit this connection's address 192.168.1.1"),
        ),
        (
            "nftables",
            json!({"path": "/etc/p.nft", "content": NFT}),
            out(0, "N\n==PROVISION loaded\n==PROVISION live\nNO-NFT\n==PROVISION pending\n"),
            Want::Fail("nftables package"),
        ),
        (
            "nftables",
            json!({"path": "/etc/p.nft", "state": "absent"}),
            out(0, "N\n==PROVISION loaded\n==PROVISION live\n==PROVISION pending\n"),
            Want::Ok,
        ),
        (
            "nftables",
            json!({"path": "/etc/p.nft", "state": "absent"}),
            out(0, &format!("N\n==PROVISION loaded\n==PROVISION live\n{LIVE}==PROVISION pending\n")),
            Want::Change("nft delete table inet provision"),
        ),
    ];
    let mut seen = std::collections::HashSet::new();
    for (module, args, probe, want) in cases {
        seen.insert(module);
        let Value::Object(a) = args else {
            unreachable!()
        };
        let m = build(module, &a).unwrap_or_else(|e| panic!("{module}: {e}"));
        let p = m.plan(&probe);
        let k = kind(&p);
        let ok = match (&want, &p) {
            (Want::Ok, Plan::Ok(_)) => true,
            (Want::Change(s), Plan::Change { script, .. }) => script.contains(s),
            (Want::Fail(s), Plan::Fail(m)) => m.contains(s),
            _ => false,
        };
        assert!(ok, "{module} {a:?}: wanted {want:?}, planned {k}");
        if let Plan::Change { script, .. } = &p {
            let syntax = std::process::Command::new("sh")
                .arg("-n")
                .arg("-c")
                .arg(script)
                .output()
                .unwrap();
            assert!(
                syntax.status.success(),
                "{module}: the planned script is not valid sh: {script}\n{}",
                String::from_utf8_lossy(&syntax.stderr)
            );
        }
    }
    for d in TABLE
        .iter()
        .filter(|d| matches!(d.build, super::Build::Host(_)))
    {
        assert!(
            seen.contains(d.name),
            "no plan() case for module `{}`",
            d.name
        );
    }
}
