//! Authentication and reaching hosts, against lab hosts: ssh-agent, IdentitiesOnly,
//! an encrypted key asked for on a terminal, ProxyJump (inventory and ~/.ssh/config),
//! a sudo password (--ask-become-pass) and become_user.

mod common;
use common::*;
use std::path::Path;
use std::process::{Command, Output, Stdio};

struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Scratch {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("home/.ssh")).unwrap();
        let roles = dir.path().join("roles/probe/tasks");
        std::fs::create_dir_all(&roles).unwrap();
        std::fs::write(
            roles.join("main.yml"),
            "- name: record the SSH client address\n  shell: echo \"$SSH_CONNECTION\" > /tmp/ssh_connection.$(id -un)\n  become: false\n- name: write as root\n  copy: {dest: /root/provision-auth, content: \"root\\n\"}\n- name: write as admin\n  shell: id -un > /tmp/provision-as\n  become_user: admin\n- name: a file with a secret\n  copy: {dest: /root/provision-secret, content: \"pw={{ db_password | default('none') }}\\n\"}\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("site.yml"),
            "- hosts: all\n  roles: [probe]\n",
        )
        .unwrap();
        Scratch { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_str().unwrap().to_owned()
    }

    fn write(&self, name: &str, text: &str) -> String {
        std::fs::write(self.dir.path().join(name), text).unwrap();
        self.path(name)
    }

    /// An inventory of lab hosts with `vars` on `all`; no key unless `vars` names one.
    fn inventory(&self, vars: &str, hosts: &str) -> String {
        let kh = lab_dir().join("known_hosts");
        self.write(
            "inv.yml",
            &format!(
                "all:\n  vars: {{known_hosts_file: {}, ansible_become: true{vars}}}\n  hosts:\n{hosts}",
                kh.display()
            ),
        )
    }

    /// Runs provision with HOME in the scratch folder (no keys, no ssh config there).
    fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut c = Command::new(BIN);
        c.args(args)
            .args(["-p", &self.path("site.yml"), "--roles", &self.path("roles")])
            .env("HOME", self.path("home"))
            .env_remove("SSH_AUTH_SOCK")
            .stdin(Stdio::null());
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().unwrap()
    }

    /// Runs provision on a pseudo-terminal (util-linux `script`), typing `input`.
    fn run_tty(&self, args: &[&str], input: &str) -> String {
        let mut cmd = format!("{BIN} {}", args.join(" "));
        cmd += &format!(
            " -p {} --roles {} --output json",
            self.path("site.yml"),
            self.path("roles")
        );
        let mut c = Command::new("script")
            .args(["-qec", &cmd, "/dev/null"])
            .env("HOME", self.path("home"))
            .env_remove("SSH_AUTH_SOCK")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("script (util-linux) runs");
        use std::io::Write;
        // Wait for the prompt before typing, as a person would.
        std::thread::sleep(std::time::Duration::from_millis(700));
        c.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        text(&c.wait_with_output().unwrap())
    }
}

fn lab_key() -> String {
    lab_dir().join("id_ed25519").to_str().unwrap().to_owned()
}

fn ok(o: &Output) {
    assert!(o.status.success(), "{}", text(o));
}

fn agent(dir: &Path) -> (String, String) {
    let sock = dir.join("agent.sock");
    let o = Command::new("ssh-agent")
        .arg("-a")
        .arg(&sock)
        .output()
        .unwrap();
    assert!(o.status.success());
    let out = String::from_utf8_lossy(&o.stdout);
    let pid = out
        .split("SSH_AGENT_PID=")
        .nth(1)
        .and_then(|r| r.split(';').next())
        .unwrap()
        .to_owned();
    (sock.to_str().unwrap().to_owned(), pid)
}

#[test]
fn agent_encrypted_keys_jump_hosts_and_sudo_passwords() {
    let Some(_lab) = LabGuard::up(3) else {
        return;
    };
    let s = Scratch::new();
    let hosts = "    node1: {ansible_host: 10.200.0.11, ansible_user: admin}\n    node2: {ansible_host: 10.200.0.12, ansible_user: admin}\n";
    let inv = s.inventory("", hosts);

    // No key anywhere: refused with a message that says where keys come from.
    let o = s.run(&[&inv], &[]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(
        text(&o).contains("load a key into ssh-agent"),
        "{}",
        text(&o)
    );

    // ssh-agent holding the lab key: works.
    let (sock, pid) = agent(s.dir.path());
    let add = Command::new("ssh-add")
        .arg(lab_key())
        .env("SSH_AUTH_SOCK", &sock)
        .output()
        .unwrap();
    assert!(add.status.success(), "{}", text(&add));
    let o = s.run(&[&inv], &[("SSH_AUTH_SOCK", &sock)]);
    ok(&o);
    assert_eq!(ssh("node2", "sudo cat /root/provision-auth"), "root");

    // An encrypted copy of the key: IdentitiesOnly picks the agent's matching key
    // without asking for the passphrase.
    let enc = s.path("enc_key");
    std::fs::copy(lab_key(), &enc).unwrap();
    let kg = Command::new("ssh-keygen")
        .args(["-q", "-p", "-N", "s3cret-phrase", "-f", &enc])
        .output()
        .unwrap();
    assert!(kg.status.success(), "{}", text(&kg));
    let cfg = s.write(
        "ssh_config",
        &format!("Host 10.200.0.*\n  IdentityFile {enc}\n  IdentitiesOnly yes\n"),
    );
    let o = s.run(&[&inv, "-F", &cfg], &[("SSH_AUTH_SOCK", &sock)]);
    ok(&o);
    let _ = Command::new("kill").arg(&pid).status();

    // Without the agent and without a terminal: refused before any connection.
    let o = s.run(&[&inv, "-F", &cfg], &[]);
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    assert!(
        text(&o).contains("is encrypted") && text(&o).contains("no host was contacted"),
        "{}",
        text(&o)
    );
    // On a terminal: asked once for both hosts, and the passphrase is never echoed.
    let out = s.run_tty(&[&inv, "-F", &cfg], "s3cret-phrase\n");
    assert_eq!(out.matches("Passphrase for").count(), 1, "{out}");
    assert!(out.contains("\"event\":\"recap\""), "{out}");
    assert!(!out.contains("\"unreachable\":1"), "{out}");

    // ProxyJump from ansible_ssh_common_args: node2 is reached through node1.
    let jump = s.inventory(
        &format!(", ansible_user: admin, db_password: hunter2-xyz-42, ansible_ssh_private_key_file: {}", lab_key()),
        "    node2: {ansible_host: 10.200.0.12, ansible_ssh_common_args: '-o ProxyJump=admin@10.200.0.11'}\n    node3: {ansible_host: 10.200.0.13}\n",
    );
    let o = s.run(&[&jump, "--diff"], &[]);
    ok(&o);
    // The secret reached the host, but never the output (the diff shows it masked).
    assert_eq!(
        ssh("node3", "sudo cat /root/provision-secret"),
        "pw=hunter2-xyz-42"
    );
    assert!(
        !text(&o).contains("hunter2-xyz-42") && text(&o).contains("pw=********"),
        "{}",
        text(&o)
    );
    assert!(ssh("node2", "cat /tmp/ssh_connection.admin").starts_with("10.200.0.11 "));
    assert!(ssh("node3", "cat /tmp/ssh_connection.admin").starts_with("10.200.0.1 "));

    // ProxyJump, HostName, User and IdentityFile from the ssh config: alias `n2` via node3.
    let cfg = s.write(
        "ssh_config2",
        &format!(
            "Host n2\n  HostName 10.200.0.12\n  User admin\n  ProxyJump admin@10.200.0.13\n  IdentityFile {}\n",
            lab_key()
        ),
    );
    let inv2 = s.inventory("", "    n2:\n");
    ok(&s.run(&[&inv2, "-F", &cfg], &[]));
    assert!(ssh("node2", "cat /tmp/ssh_connection.admin").starts_with("10.200.0.13 "));

    // A user whose sudo wants a password.
    ssh(
        "node1",
        "sudo sh -c 'id ops >/dev/null 2>&1 || useradd -m -s /bin/sh ops; echo ops:ops-pw-42 | chpasswd; \
         echo \"ops ALL=(ALL) ALL\" > /etc/sudoers.d/ops; mkdir -p ~ops/.ssh; \
         cp ~admin/.ssh/authorized_keys ~ops/.ssh/; chown -R ops ~ops/.ssh; rm -f /root/provision-auth /tmp/provision-as'",
    );
    let ops = s.inventory(
        &format!(
            ", ansible_user: ops, ansible_ssh_private_key_file: {}",
            lab_key()
        ),
        "    node1: {ansible_host: 10.200.0.11}\n",
    );
    let o = s.run(&[&ops], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("use --ask-become-pass"), "{}", text(&o));
    let out = s.run_tty(&[&ops, "-K"], "wrong\n");
    assert!(out.contains("sudo refused the become password"), "{out}");
    assert!(!out.contains("wrong\""), "{out}");
    let out = s.run_tty(&[&ops, "-K"], "ops-pw-42\n");
    assert!(
        out.contains("\"failed\":0") && !out.contains("ops-pw-42\""),
        "{out}"
    );
    assert_eq!(ssh("node1", "sudo cat /root/provision-auth"), "root");
    // become_user: the task ran as admin, not root, and read no password from stdin.
    assert_eq!(ssh("node1", "cat /tmp/provision-as"), "admin");
}
