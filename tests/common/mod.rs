//! Helpers for tests against the local lab: real hosts, real sshd.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output};

pub const BIN: &str = env!("CARGO_BIN_EXE_provision");

pub fn lab_dir() -> PathBuf {
    std::env::var_os("PROVISION_LAB_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/var/lib/provision-lab".into())
}

pub fn provision(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .output()
        .expect("provision runs")
}

pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Runs a command on a lab host with OpenSSH, host keys checked against the lab's known_hosts.
pub fn ssh(node: &str, cmd: &str) -> String {
    let cfg = lab_dir().join("ssh_config");
    let o = Command::new("ssh")
        .arg("-F")
        .arg(cfg)
        .arg(node)
        .arg(cmd)
        .output()
        .expect("ssh runs");
    assert!(o.status.success(), "ssh {node} {cmd}: {}", text(&o));
    String::from_utf8_lossy(&o.stdout).trim().to_owned()
}

/// The top of an inventory for the lab's hosts: `all:` and the connection settings under
/// `vars:` (more vars may follow, at four spaces).
pub fn lab_vars() -> String {
    format!(
        "all:\n  vars:\n    ansible_user: admin\n    ansible_become: true\n    \
         ansible_ssh_private_key_file: {lab}/id_ed25519\n    known_hosts_file: {lab}/known_hosts\n    \
         chrony_options: \"-x\"\n",
        lab = lab_dir().display()
    )
}

/// Takes the lab down when dropped, also when a test fails.
pub struct LabGuard;

impl LabGuard {
    pub fn up(n: usize) -> Option<LabGuard> {
        Self::start(&["lab", "up", &n.to_string()])
    }

    /// Hosts as fresh servers: docker, etcd and ceph come from the lab's repository.
    pub fn fresh(n: usize) -> Option<LabGuard> {
        Self::start(&["lab", "up", &n.to_string(), "--fresh"])
    }

    /// With the lab's registry of images built from Debian packages.
    pub fn with_registry(n: usize) -> Option<LabGuard> {
        Self::start(&["lab", "up", &n.to_string(), "--registry"])
    }

    /// No lab: the test starts one itself (the first command does).
    pub fn none() -> Option<LabGuard> {
        Self::start(&["lab", "down"])
    }

    /// Any `provision lab up` arguments (`["lab", "up", "4", "--disk", "8G"]`). None (the
    /// test skips, saying so) when not run as root, unless PROVISION_REQUIRE_LAB is set
    /// (`.ci/run` sets it): then a missing lab fails the test, so CI never skips.
    pub fn start(args: &[&str]) -> Option<LabGuard> {
        if unsafe { libc::geteuid() } != 0 {
            assert!(
                std::env::var_os("PROVISION_REQUIRE_LAB").is_none(),
                "this test needs the lab, and the lab needs root (PROVISION_REQUIRE_LAB is set)"
            );
            eprintln!("skipped: this test needs the local lab, which needs root");
            return None;
        }
        let _ = provision(&["lab", "down"]);
        let o = provision(args);
        assert!(o.status.success(), "lab up failed: {}", text(&o));
        Some(LabGuard)
    }
}

impl Drop for LabGuard {
    fn drop(&mut self) {
        let _ = provision(&["lab", "down"]);
    }
}

/// A number from the recap line of `host` (`changed`, `failed`, ...).
pub fn recap(out: &str, host: &str, key: &str) -> u32 {
    out.lines()
        .find(|l| l.starts_with(host) && l.contains("changed="))
        .and_then(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix(&format!("{key}=")))
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key} for {host} in:\n{out}"))
}

/// Runs a command on a lab host and returns (exit code, stdout + stderr), whatever it exits with.
pub fn ssh_rc(node: &str, cmd: &str) -> (i32, String) {
    let o = Command::new("ssh")
        .arg("-F")
        .arg(lab_dir().join("ssh_config"))
        .arg(node)
        .arg(cmd)
        .output()
        .expect("ssh runs");
    (o.status.code().unwrap_or(-1), text(&o))
}

pub fn write(dir: &std::path::Path, rel: &str, text: &str) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

/// Each lab host's loop device, from the lab's state.
pub fn disks() -> Vec<String> {
    let st: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(lab_dir().join("lab.json")).unwrap())
            .unwrap();
    st["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["loopdev"].as_str().unwrap().to_owned())
        .collect()
}
