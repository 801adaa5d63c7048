//! An Ansible user's files against the real tools (Debian's ansible-core, installed by
//! .ci/run). Vault: files and inline values `ansible-vault` wrote are read, files
//! `provision vault` writes it reads, wrong and missing passwords refused with the place,
//! values masked in output. Inventory: anchors, aliases and merge keys give the same
//! hostvars as `ansible-inventory --list`.

mod common;
use common::*;
use std::path::Path;
use std::process::Command;

fn ansible_vault(args: &[&str], dir: &Path) -> String {
    let o = Command::new("ansible-vault")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("ansible-vault is installed (apt-get install ansible-core; .ci/run does)");
    assert!(o.status.success(), "ansible-vault {args:?}: {}", text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn run_in(dir: &Path, args: &[&str]) -> (i32, String) {
    let o = Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    (o.status.code().unwrap_or(-1), text(&o))
}

#[test]
fn vault_files_and_inline_values_both_ways() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    write(d, "pass", "lab-secret\n");
    write(d, "wrong", "not-it\n");
    // A password script: its output is the password.
    write(d, "pass.sh", "#!/bin/sh\necho lab-secret\n");
    std::fs::set_permissions(
        d.join("pass.sh"),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    let plain = "db_password: hunter2\nnotes: |\n  two\n  lines\n";

    // ansible-vault writes (1.1), provision reads.
    write(d, "a.yml", plain);
    ansible_vault(&["encrypt", "--vault-password-file", "pass", "a.yml"], d);
    let (rc, out) = run_in(
        d,
        &["vault", "view", "a.yml", "--vault-password-file", "pass.sh"],
    );
    assert_eq!((rc, out.as_str()), (0, plain));
    let (rc, out) = run_in(
        d,
        &["vault", "view", "a.yml", "--vault-password-file", "wrong"],
    );
    assert_eq!(rc, 4, "{out}");
    assert!(out.contains("a.yml: wrong vault password"), "{out}");

    // provision writes (1.2 with a vault id), ansible-vault reads; decrypt in place.
    write(d, "b.yml", plain);
    let (rc, out) = run_in(d, &["vault", "encrypt", "b.yml", "--vault-id", "prod@pass"]);
    assert_eq!(rc, 0, "{out}");
    let b = std::fs::read_to_string(d.join("b.yml")).unwrap();
    assert!(
        b.starts_with("$ANSIBLE_VAULT;1.2;AES256;prod\n") && !b.contains("hunter2"),
        "{b}"
    );
    assert_eq!(
        ansible_vault(&["view", "--vault-id", "prod@pass", "b.yml"], d),
        plain
    );
    let (rc, out) = run_in(d, &["vault", "decrypt", "b.yml", "--vault-id", "prod@pass"]);
    assert_eq!(rc, 0, "{out}");
    assert_eq!(std::fs::read_to_string(d.join("b.yml")).unwrap(), plain);

    // An inventory with a vaulted group_vars file and an inline !vault value, both by
    // ansible-vault: read with the password, the values masked; refused without it or
    // with a wrong one, naming the place, before anything else.
    std::fs::create_dir_all(d.join("group_vars")).unwrap();
    write(d, "group_vars/all.yml", "app_secret: from-the-file\n");
    ansible_vault(
        &[
            "encrypt",
            "--vault-password-file",
            "pass",
            "group_vars/all.yml",
        ],
        d,
    );
    let inline = ansible_vault(
        &[
            "encrypt_string",
            "--vault-password-file",
            "pass",
            "inline-value",
            "--name",
            "      api_key_x",
        ],
        d,
    );
    write(
        d,
        "inv.yml",
        &format!("all:\n  hosts:\n    n1:\n      ansible_host: 10.0.0.1\n{inline}"),
    );
    let (rc, out) = run_in(
        d,
        &[
            "inventory",
            "inv.yml",
            "--host",
            "n1",
            "--vault-password-file",
            "pass",
        ],
    );
    assert_eq!(rc, 0, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).expect(&out);
    assert_eq!(v["ansible_host"], "10.0.0.1");
    assert_eq!(v["app_secret"], "********", "{out}");
    assert_eq!(v["api_key_x"], "********", "{out}");
    assert!(!out.contains("inline-value") && !out.contains("from-the-file"));
    // Without the password, or with a wrong one: refused at the value's place.
    let (rc, out) = run_in(d, &["inventory", "inv.yml", "--host", "n1"]);
    assert_eq!(rc, 4, "{out}");
    assert!(
        out.contains("inv.yml:6:") && out.contains("no vault password was given"),
        "{out}"
    );
    let (rc, out) = run_in(
        d,
        &[
            "inventory",
            "inv.yml",
            "--host",
            "n1",
            "--vault-password-file",
            "wrong",
        ],
    );
    assert_eq!(rc, 4, "{out}");
    assert!(
        out.contains("inv.yml:6:") && out.contains("wrong vault password"),
        "{out}"
    );
    let o = Command::new(BIN)
        .args(["inventory", "inv.yml", "--host", "n1"])
        .env("ANSIBLE_VAULT_PASSWORD_FILE", d.join("pass"))
        .current_dir(d)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    // A damaged file: refused with its name.
    let a = std::fs::read_to_string(d.join("a.yml")).unwrap();
    write(d, "a.yml", &a[..a.len() / 2]);
    let (rc, out) = run_in(
        d,
        &["vault", "view", "a.yml", "--vault-password-file", "pass"],
    );
    assert_eq!(rc, 4, "{out}");
    assert!(out.contains("a.yml:"), "{out}");
}

#[test]
fn anchors_and_merge_keys_give_the_hostvars_of_ansible_inventory() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    write(
        d,
        "inv.yml",
        "all:\n  vars:\n    base: &base { tier: web, disk: ssd }\n    ports: &ports [80, 443]\n  children:\n    managers:\n      \
         hosts:\n        m1: { ansible_host: 10.0.0.1, node_labels: *base, extra_labels: { <<: *base, backup: \"yes\", tier: db } }\n    \
         workers:\n      vars: { role_name: w, open: *ports }\n      hosts:\n        w1: { ansible_host: 10.0.0.2 }\n        \
         w2: { ansible_host: 10.0.0.3, role_name: special }\n",
    );
    let o = Command::new("ansible-inventory")
        .args(["-i", "inv.yml", "--list"])
        .current_dir(d)
        .output()
        .expect("ansible-inventory is installed (apt-get install ansible-core; .ci/run does)");
    assert!(o.status.success(), "{}", text(&o));
    let theirs: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let (rc, out) = run_in(d, &["inventory", "inv.yml", "--list"]);
    assert_eq!(rc, 0, "{out}");
    let ours: serde_json::Value = serde_json::from_str(&out).expect(&out);
    let (a, b) = (&ours["_meta"]["hostvars"], &theirs["_meta"]["hostvars"]);
    assert_eq!(a, b, "ours:\n{a:#}\nansible-inventory:\n{b:#}");
    assert_eq!(
        b["m1"]["extra_labels"]["tier"], "db",
        "the mapping's own key wins"
    );
    assert_eq!(b["m1"]["extra_labels"]["disk"], "ssd");
}

/// inventory/example.yml (every role, vault values) validates, and lists the hosts, groups
/// and variables `ansible-inventory` lists; the vault values masked, never printed.
#[test]
fn the_example_inventory_validates_and_matches_ansible_inventory() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("inventory");
    // The example's key lives in the operator's home: a stand-in one here.
    let home = tempfile::tempdir().unwrap();
    write(
        home.path(),
        ".ssh/id_ed25519",
        "not a key: never read by --list-hosts\n",
    );
    let ours = |args: &[&str]| {
        let o = Command::new(BIN)
            .args(args)
            .args(["--vault-password-file", "example.vault-pass"])
            .current_dir(&root)
            .env("HOME", home.path())
            .output()
            .unwrap();
        (o.status.code().unwrap_or(-1), text(&o))
    };
    let (rc, out) = ours(&["example.yml", "--list-hosts"]);
    assert_eq!(rc, 0, "{out}");
    assert_eq!(
        out.split_whitespace().collect::<Vec<_>>(),
        ["mgr1", "mgr2", "mgr3", "wrk1", "wrk2"]
    );
    let (rc, out) = ours(&["example.yml", "--list-tasks"]);
    assert_eq!(rc, 0, "{out}");
    for role in [
        "bootstrap :",
        "hardening :",
        "firewall :",
        "pki :",
        "etcd :",
        "ceph :",
        "docker :",
        "swarm :",
        "stacks :",
    ] {
        assert!(out.contains(role), "{role}: {out}");
    }
    let (rc, out) = ours(&["inventory", "example.yml", "--list"]);
    assert_eq!(rc, 0, "{out}");
    assert!(
        !out.contains("change-me"),
        "a vault value was printed: {out}"
    );
    let ours: serde_json::Value = serde_json::from_str(&out).expect(&out);
    let o = Command::new("ansible-inventory")
        .args([
            "-i",
            "example.yml",
            "--list",
            "--vault-password-file",
            "example.vault-pass",
        ])
        .current_dir(&root)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let theirs: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    for (group, v) in theirs.as_object().unwrap() {
        if group != "_meta" && group != "all" {
            assert_eq!(ours[group]["hosts"], v["hosts"], "{group}");
        }
    }
    let (a, b) = (&ours["_meta"]["hostvars"], &theirs["_meta"]["hostvars"]);
    assert_eq!(
        a.as_object().unwrap().keys().collect::<Vec<_>>(),
        b.as_object().unwrap().keys().collect::<Vec<_>>()
    );
    for (host, vars) in b.as_object().unwrap() {
        for (k, v) in vars.as_object().unwrap() {
            assert_eq!(a[host][k], masked(v, is_secret(k)), "{host}: {k}");
        }
        assert_eq!(
            a[host].as_object().unwrap().len(),
            vars.as_object().unwrap().len(),
            "{host}"
        );
    }
}

/// docs/inventory.md's masking rule: a name with password, secret, token, ... (not a
/// `_file` or `_path`) hides every string under it.
fn is_secret(k: &str) -> bool {
    !k.ends_with("_file")
        && ["password", "secret", "token"]
            .iter()
            .any(|w| k.contains(w))
}

/// ansible-inventory's value as ours shows it: vault values and secrets masked.
fn masked(v: &serde_json::Value, secret: bool) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::Object(m) if m.contains_key("__ansible_vault") => Value::from("********"),
        Value::String(_) if secret => Value::from("********"),
        Value::Array(a) => a.iter().map(|x| masked(x, secret)).collect(),
        Value::Object(m) => m
            .iter()
            .map(|(k, x)| (k.clone(), masked(x, secret || is_secret(k))))
            .collect(),
        other => other.clone(),
    }
}
