//! The cluster engine and the PKI on lab hosts: certificates signed by the controller's
//! CA from CSRs made on the hosts, reissued only when needed, a lost CA refused, the
//! run and host locks, a value read on one host used on another under --limit, and a
//! panicking host task failing the run.

mod common;
use common::*;
use std::path::Path;

const PKI: &str = "/etc/provision/pki";

fn inventory(d: &Path, node2_extra: &str, node3_extra: &str) {
    write(
        d,
        "inventory.yml",
        &format!(
            "all:
  vars:
    ansible_user: admin
    ansible_become: true
    ansible_ssh_private_key_file: {lab}/id_ed25519
    known_hosts_file: {lab}/known_hosts
  children:
    managers:
      hosts:
        node1: {{ ansible_host: 10.200.0.11, pki_certs_extra: [{{name: etcd, profile: etcd}}, {{name: docker, profile: docker}}] }}
    etcd:
      hosts:
        node1:
        node2: {{ ansible_host: 10.200.0.12, pki_certs_extra: [{{name: etcd, profile: etcd}}] {node2_extra} }}
    workers:
      hosts:
        node3: {{ ansible_host: 10.200.0.13 {node3_extra} }}
",
            lab = lab_dir().display()
        ),
    );
}

fn sha(node: &str, files: &str) -> String {
    ssh(
        node,
        &format!("cd {PKI} && sudo sha256sum {files} && stat -c '%n %Y' {files}"),
    )
}

fn run(d: &Path, extra: &[&str]) -> (i32, String) {
    let inv = d.join("inventory.yml");
    let pb = d.join("pki.yml");
    let mut a = vec![inv.to_str().unwrap(), "-p", pb.to_str().unwrap()];
    a.extend(extra);
    let o = provision(&a);
    (o.status.code().unwrap_or(-1), text(&o))
}

#[test]
fn pki_certificates_locks_cross_host_values_and_panics() {
    let Some(_lab) = LabGuard::up(3) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    inventory(d, "", "");
    write(d, "pki.yml", "- hosts: all\n  roles: [pki]\n");
    let state = d.join(".provision");

    // --check on fresh hosts: the plan per host, nothing written anywhere.
    let (rc, out) = run(d, &["--check"]);
    assert_eq!(rc, 0, "{out}");
    for n in ["node1", "node2", "node3"] {
        assert!(
            out.contains(&format!("would sign a host certificate for {n}"))
                || out.contains("would make a key"),
            "{out}"
        );
        assert_eq!(
            ssh_rc(n, &format!("test -e {PKI}")).0,
            1,
            "check mode wrote on {n}"
        );
    }
    assert!(!state.join("ca.key").exists(), "check mode saved a CA");

    // The real run: keys made on the hosts, CSRs signed here.
    let (rc, out) = run(d, &[]);
    assert_eq!(rc, 0, "{out}");
    for n in ["node1", "node2", "node3"] {
        assert_eq!(recap(&out, n, "changed"), 1, "{out}");
        let v = ssh(n, &format!("openssl verify -CAfile {PKI}/ca.crt {PKI}/host.crt && openssl verify {PKI}/host.crt"));
        assert!(v.contains("host.crt: OK"), "{n}: {v}");
        let x = ssh(
            n,
            &format!("openssl x509 -in {PKI}/host.crt -noout -ext subjectAltName,extendedKeyUsage"),
        );
        let ip = format!("IP Address:10.200.0.1{}", &n[4..]);
        for want in [
            ip.as_str(),
            "IP Address:127.0.0.1",
            "DNS:localhost",
            &format!("DNS:{n}"),
            "TLS Web Server Authentication",
            "TLS Web Client Authentication",
        ] {
            assert!(x.contains(want), "{n} lacks {want}: {x}");
        }
        assert_eq!(
            ssh(n, &format!("stat -c '%a %U' {PKI}/host.key")),
            "600 root"
        );
    }
    let etcd = ssh("node2", &format!("openssl verify -CAfile {PKI}/ca.crt {PKI}/etcd.crt; openssl x509 -in {PKI}/etcd.crt -noout -ext extendedKeyUsage"));
    assert!(
        etcd.contains("etcd.crt: OK") && etcd.contains("Client Authentication"),
        "{etcd}"
    );
    let docker = ssh(
        "node1",
        &format!("openssl x509 -in {PKI}/docker.crt -noout -ext extendedKeyUsage"),
    );
    assert!(
        docker.contains("Server Authentication") && !docker.contains("Client"),
        "{docker}"
    );
    assert_eq!(
        ssh_rc(
            "node3",
            &format!("test -e {PKI}/etcd.crt || test -e {PKI}/docker.crt")
        )
        .0,
        1
    );
    // The CA key is on the controller only, 0600; no host key is there.
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&state).unwrap().permissions().mode() & 0o777,
        0o700
    );
    assert_eq!(
        std::fs::metadata(state.join("ca.key"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    let keys: Vec<String> = std::fs::read_dir(&state)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".key"))
        .collect();
    assert_eq!(keys, ["ca.key"]);
    for n in ["node1", "node2", "node3"] {
        assert_eq!(ssh_rc(n, "grep -rl 'BEGIN PRIVATE KEY\\|BEGIN EC PRIVATE' / --include=ca.key 2>/dev/null | head -1").1.trim(), "", "CA key on {n}");
    }

    // A second run changes nothing: same bytes, same mtimes.
    let before: Vec<String> = ["node1", "node2", "node3"]
        .iter()
        .map(|n| sha(n, "*.crt *.key"))
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let (rc, out) = run(d, &[]);
    assert_eq!(rc, 0, "{out}");
    assert!(out.contains("no changes"), "{out}");
    let after: Vec<String> = ["node1", "node2", "node3"]
        .iter()
        .map(|n| sha(n, "*.crt *.key"))
        .collect();
    assert_eq!(before, after);

    // pki status: every certificate, exit 0.
    let o = provision(&["pki", "status", d.join("inventory.yml").to_str().unwrap()]);
    let st = text(&o);
    assert_eq!(o.status.code(), Some(0), "{st}");
    assert_eq!(st.lines().filter(|l| l.contains(" ok ")).count(), 6, "{st}");

    // A new address for node2 reissues node2's certificates only.
    inventory(d, ", private_address: 10.200.0.92", "");
    let (rc, out) = run(d, &[]);
    assert_eq!(rc, 0, "{out}");
    assert_eq!(
        (
            recap(&out, "node1", "changed"),
            recap(&out, "node2", "changed"),
            recap(&out, "node3", "changed")
        ),
        (0, 1, 0),
        "{out}"
    );
    assert!(ssh(
        "node2",
        &format!("openssl x509 -in {PKI}/host.crt -noout -ext subjectAltName")
    )
    .contains("10.200.0.92"));
    assert_eq!(sha("node1", "*.crt *.key"), before[0]);
    assert_eq!(sha("node3", "*.crt *.key"), before[2]);

    // A short-lived certificate is renewed on the next run with the normal lifetime.
    inventory(
        d,
        ", private_address: 10.200.0.92",
        ", pki_days: 1, pki_extra_sans: [short.example]",
    );
    assert_eq!(run(d, &[]).0, 0);
    let end1 = ssh(
        "node3",
        &format!("openssl x509 -in {PKI}/host.crt -noout -checkend 172800 || echo SHORT"),
    );
    assert!(end1.contains("SHORT"), "{end1}");
    inventory(
        d,
        ", private_address: 10.200.0.92",
        ", pki_extra_sans: [short.example]",
    );
    let (rc, out) = run(d, &[]);
    assert_eq!(rc, 0, "{out}");
    assert!(out.contains("expires in"), "{out}");
    let end2 = ssh(
        "node3",
        &format!("openssl x509 -in {PKI}/host.crt -noout -checkend 25920000 && echo LONG"),
    );
    assert!(end2.contains("LONG"), "{end2}");

    // A certificate from a foreign CA put in place by hand: the audit flags it, the run replaces it.
    ssh("node1", &format!("sudo openssl req -x509 -key {PKI}/host.key -subj /CN=node1 -days 30 -out /tmp/f.crt && sudo mv /tmp/f.crt {PKI}/host.crt"));
    let a = provision(&[
        "audit",
        d.join("inventory.yml").to_str().unwrap(),
        "--output",
        "json",
    ]);
    let at = text(&a);
    assert!(
        at.lines().any(|l| l.contains("\"host\":\"node1\"")
            && l.contains("pki-cert:/etc/provision/pki/host.crt")
            && l.contains("issued by another CA")),
        "{at}"
    );
    let (rc, out) = run(d, &[]);
    assert_eq!(rc, 0, "{out}");
    assert!(out.contains("issued by another CA"), "{out}");
    assert!(ssh(
        "node1",
        &format!("openssl verify -CAfile {PKI}/ca.crt {PKI}/host.crt")
    )
    .contains("OK"));

    // An operator's client certificate.
    let cdir = d.join("client");
    let o = provision(&[
        "pki",
        "client",
        "ops",
        d.join("inventory.yml").to_str().unwrap(),
        "--out",
        cdir.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(
        std::fs::metadata(cdir.join("ops.key"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    let v = std::process::Command::new("openssl")
        .args(["verify", "-purpose", "sslclient", "-CAfile"])
        .arg(cdir.join("ca.crt"))
        .arg(cdir.join("ops.crt"))
        .output()
        .unwrap();
    assert!(v.status.success(), "{}", text(&v));

    // The state directory lost while hosts hold certificates: refused, nothing changed.
    let before: Vec<String> = ["node1", "node2", "node3"]
        .iter()
        .map(|n| sha(n, "*.crt *.key ca.crt"))
        .collect();
    let backup = d.join("backup");
    std::fs::rename(&state, &backup).unwrap();
    let (rc, out) = run(d, &[]);
    assert_eq!(rc, 2, "{out}");
    assert!(
        out.contains("has no CA") && out.contains("--new-ca") && out.contains("backup"),
        "{out}"
    );
    assert!(!state.join("ca.key").exists(), "a new CA was made silently");
    let after: Vec<String> = ["node1", "node2", "node3"]
        .iter()
        .map(|n| sha(n, "*.crt *.key ca.crt"))
        .collect();
    assert_eq!(before, after);
    std::fs::remove_dir_all(&state).unwrap();
    std::fs::rename(&backup, &state).unwrap();
    let (rc, out) = run(d, &[]);
    assert!(rc == 0 && out.contains("no changes"), "{out}");

    // Another CA put in the state directory: never adopted. Every host is refused at
    // connect, both hashes named, nothing changed on any host.
    std::fs::rename(&state, &backup).unwrap();
    std::fs::create_dir_all(&state).unwrap();
    let o = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-subj",
            "/CN=evil CA",
            "-days",
            "30",
            "-keyout",
        ])
        .arg(state.join("ca.key"))
        .arg("-out")
        .arg(state.join("ca.crt"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let (rc, out) = run(d, &[]);
    assert_eq!(rc, 2, "{out}");
    assert!(
        out.contains("trusts another provision CA") && out.contains("--new-ca"),
        "{out}"
    );
    let hash = |p: &Path| {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(std::fs::read(p).unwrap()))
    };
    assert!(out.contains(&hash(&state.join("ca.crt"))), "{out}");
    assert!(out.contains(&hash(&backup.join("ca.crt"))), "{out}");
    let after: Vec<String> = ["node1", "node2", "node3"]
        .iter()
        .map(|n| sha(n, "*.crt *.key ca.crt"))
        .collect();
    assert_eq!(before, after);
    assert!(ssh(
        "node1",
        "sha256sum /usr/local/share/ca-certificates/provision-ca.crt"
    )
    .contains(&hash(&backup.join("ca.crt"))));
    std::fs::remove_dir_all(&state).unwrap();
    std::fs::rename(&backup, &state).unwrap();
    let (rc, out) = run(d, &[]);
    assert!(rc == 0 && out.contains("no changes"), "{out}");

    // Two runs at once: the second refuses, naming the holder.
    let mut holder = std::process::Command::new("flock")
        .arg("-o")
        .arg(state.join("lock"))
        .args(["sleep", "30"])
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let (rc, out) = run(d, &[]);
    holder.kill().unwrap();
    let _ = holder.wait();
    assert_eq!(rc, 6, "{out}");
    assert!(
        out.contains("another provision run holds") && out.contains("no host was contacted"),
        "{out}"
    );
    // A host held by another controller: that host waits, then fails naming it; the others go on.
    let mut remote = std::process::Command::new("ssh")
        .arg("-F").arg(lab_dir().join("ssh_config")).arg("node2")
        .arg("echo 'pid 4242 on other-controller' > /run/lock/provision.lock.holder; exec flock -o /run/lock/provision.lock sleep 60")
        .spawn().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(800));
    let (rc, out) = run(d, &["--lock-timeout", "2"]);
    assert_eq!(rc, 2, "{out}");
    assert!(
        out.contains(
            "another provision run is working on this host (pid 4242 on other-controller)"
        ),
        "{out}"
    );
    assert_eq!(recap(&out, "node1", "failed"), 0, "{out}");
    // The other controller's session dies: its lock goes with it.
    remote.kill().unwrap();
    let _ = remote.wait();
    std::thread::sleep(std::time::Duration::from_millis(500));
    ssh(
        "node2",
        "pkill -f '[f]lock -o /run/lock/provision.lock' || true",
    );
    let (rc, out) = run(d, &["--lock-timeout", "20"]);
    assert_eq!(rc, 0, "{out}");
    // A run killed mid-way leaves no lock behind.
    write(
        d,
        "roles/slow/tasks/main.yml",
        "- name: slow\n  command: sleep 20\n",
    );
    write(d, "slow.yml", "- hosts: node1\n  roles: [slow]\n");
    let inv = d.join("inventory.yml");
    let mut slow = std::process::Command::new(BIN)
        .arg(&inv)
        .arg("-p")
        .arg(d.join("slow.yml"))
        .arg("--roles")
        .arg(d.join("roles"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_secs(2));
    slow.kill().unwrap();
    let _ = slow.wait();
    let t = std::time::Instant::now();
    let (rc, out) = run(d, &["--lock-timeout", "30"]);
    assert_eq!(rc, 0, "{out}");
    assert!(
        t.elapsed().as_secs() < 25,
        "the killed run's lock was not released"
    );

    // One mechanism for cross-host values: node1's machine-id used on node3, with --limit node3.
    write(
        d,
        "roles/relay/tasks/main.yml",
        "- name: read node1's id\n  share: { from: managers, command: cat /etc/machine-id, dest: /etc/provision-peer-id }\n  register: peer\n\
         - name: use it in a template\n  copy: { dest: /etc/provision-peer-from, content: \"{{ peer.value }} from {{ peer.from }}\\n\" }\n\
         - name: a secret read on a host\n  share: { from: managers, command: cat /etc/provision/pki/host.key, secret: true }\n  register: hidden\n\
         - name: used, never shown\n  copy: { dest: /root/secret-len, content: \"{{ hidden.value | length }}\\n\" }\n",
    );
    write(d, "relay.yml", "- hosts: all\n  roles: [relay]\n");
    let relay = |extra: &[&str]| {
        let mut a = vec![
            inv.to_str().unwrap(),
            "-p",
            d.join("relay.yml").to_str().unwrap().to_owned().leak(),
            "--roles",
            d.join("roles").to_str().unwrap().to_owned().leak(),
            "-v",
        ];
        a.extend(extra);
        let o = provision(&a);
        (o.status.code().unwrap_or(-1), text(&o))
    };
    let id1 = ssh("node1", "cat /etc/machine-id");
    let (rc, out) = relay(&["--limit", "node3", "--check"]);
    assert_eq!(rc, 0, "{out}");
    assert!(
        out.contains("would write /etc/provision-peer-id with the value read on node1"),
        "{out}"
    );
    assert!(out.contains("reading node1 (outside --limit)"), "{out}");
    assert_eq!(ssh_rc("node3", "test -e /etc/provision-peer-id").0, 1);
    let (rc, out) = relay(&["--limit", "node3"]);
    assert_eq!(rc, 0, "{out}");
    assert_eq!(ssh("node3", "cat /etc/provision-peer-id"), id1);
    assert_eq!(
        ssh("node3", "cat /etc/provision-peer-from"),
        format!("{id1} from node1")
    );
    for n in ["node1", "node2"] {
        assert_eq!(
            ssh_rc(
                n,
                "test -e /etc/provision-peer-id || test -e /etc/provision-peer-from"
            )
            .0,
            1,
            "{n} changed outside --limit"
        );
    }
    let key = ssh("node1", &format!("sudo cat {PKI}/host.key"));
    let body: String = key.lines().filter(|l| !l.starts_with("-----")).collect();
    assert!(!out.contains(&body[..20]), "a secret was printed: {out}");
    assert!(
        ssh("node3", "sudo cat /root/secret-len")
            .parse::<usize>()
            .unwrap()
            > 100
    );
    let (rc, out) = relay(&["--limit", "node3"]);
    assert!(rc == 0 && out.contains("no changes"), "{out}");

    // A host task that panics fails that host and the run; it is never dropped silently.
    let o = std::process::Command::new(BIN)
        .arg(&inv)
        .arg("-p")
        .arg(d.join("relay.yml"))
        .arg("--roles")
        .arg(d.join("roles"))
        .env("PROVISION_TEST_PANIC", "node2:use it in a template")
        .output()
        .unwrap();
    let out = text(&o);
    assert_eq!(o.status.code(), Some(2), "{out}");
    assert!(out.contains("panicked"), "{out}");
    assert_eq!(recap(&out, "node2", "failed"), 1, "{out}");
    assert_eq!(recap(&out, "node1", "failed"), 0, "{out}");
}
