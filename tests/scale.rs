//! Many light hosts (tini and sshd, no systemd): the light lab itself (distinct names,
//! nothing left behind by `lab down`), and what a run over 50 of them shows: one summary,
//! only the failed and changed hosts listed, counts right, failures grouped by task and
//! error, in text and in JSON.

mod common;
use common::*;
use std::path::Path;

const N: usize = 50;

fn inventory(d: &Path) {
    let hosts: String = (1..=N)
        .map(|i| format!("        node{i}: {{ ansible_host: {} }}\n", addr(i)))
        .collect();
    write(
        d,
        "inventory.yml",
        &format!(
            "{}  children:\n    light:\n      hosts:\n{hosts}        ghost: {{ ansible_host: 10.200.3.250 }}\n    \
             bad:\n      hosts: {{ node7: {{}}, node23: {{}}, node41: {{}} }}\n    odd:\n      hosts: {{ node2: {{}}, node4: {{}} }}\n",
            lab_vars()
        ),
    );
    write(
        d,
        "site.yml",
        "- hosts: all\n  become: false\n  roles: [scale]\n",
    );
    write(
        d,
        "roles/scale/tasks/main.yml",
        "- name: look around\n  command: { cmd: hostname, creates: /etc/hostname }\n\
         - name: a change on some\n  command: \"true\"\n  when: inventory_hostname in groups['odd']\n\
         - name: fails on the bad ones\n  command: \"sh -c 'echo disk full >&2; exit 1'\"\n  when: inventory_hostname in groups['bad']\n",
    );
}

fn addr(i: usize) -> String {
    format!("10.200.0.{}", 10 + i)
}

fn run(d: &Path, extra: &[&str]) -> (Option<i32>, String, String) {
    let p = |f: &str| d.join(f).into_os_string();
    let mut args = vec![
        p("inventory.yml"),
        "-p".into(),
        p("site.yml"),
        "--roles".into(),
    ];
    args.push(p("roles"));
    tool(&args, extra)
}

/// The binary with `args`, a short connect timeout and `extra`: (exit code, stdout, all).
fn tool(args: &[std::ffi::OsString], extra: &[&str]) -> (Option<i32>, String, String) {
    let o = std::process::Command::new(BIN)
        .args(args)
        .args(["--connect-timeout", "3"])
        .args(extra)
        .output()
        .unwrap();
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        text(&o),
    )
}

#[test]
fn fifty_light_hosts() {
    let Some(lab) = LabGuard::start(&["lab", "up", &N.to_string(), "--init", "minimal"]) else {
        return;
    };
    // Every host answers SSH under its own name; a light host is small.
    let names: std::collections::BTreeSet<String> = [1, 17, 33, N]
        .iter()
        .map(|i| ssh(&format!("node{i}"), "hostname"))
        .collect();
    assert_eq!(names.len(), 4, "{names:?}");
    assert_eq!(ssh("node17", "sudo -n true && cat /proc/1/comm"), "tini");
    let status = text(&provision(&["lab", "status"]));
    assert_eq!(
        status.lines().filter(|l| l.contains("ssh-ready")).count(),
        N,
        "{status}"
    );

    let d = tempfile::tempdir().unwrap();
    inventory(d.path());
    let (rc, _, out) = run(d.path(), &[]);
    assert_eq!(rc, Some(3), "{out}");
    assert!(
        out.contains(&format!(
            "RECAP {} hosts: ok=45 changed=2 failed=3 unreachable=1",
            N + 1
        )),
        "{out}"
    );
    // The failures, grouped: one group of three bad hosts, one unreachable host.
    let groups = &out[out
        .find("FAILURES by task and error")
        .expect("a failure summary")..];
    assert!(
        groups.contains("    3 host(s)  scale : fails on the bad ones: "),
        "{groups}"
    );
    assert!(groups.contains("node7, node23, node41"), "{groups}");
    assert!(
        groups.contains("    1 host(s)  connect : connect: cannot reach 10.200.3.250"),
        "{groups}"
    );
    // Only exceptions in the recap's rows, and only changed or failed hosts listed above it.
    let rows: Vec<&str> = out
        .lines()
        .filter(|l| l.contains(" ok=") && l.contains("time="))
        .collect();
    assert_eq!(rows.len(), 4, "{out}");
    assert!(
        out.contains("       node2 | changed     | 1 task(s) changed"),
        "{out}"
    );
    assert!(
        !out.contains("node9 "),
        "an unchanged host was listed:\n{out}"
    );

    // The same in JSON: a summary and the groups.
    let (rc, stdout, _) = run(d.path(), &["--output", "json"]);
    assert_eq!(rc, Some(3));
    let recap: serde_json::Value = stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .find(|v: &serde_json::Value| v["event"] == "recap")
        .expect("a recap event");
    assert_eq!(recap["summary"]["hosts"], N + 1);
    assert_eq!(recap["summary"]["failed"], 3);
    assert_eq!(recap["summary"]["unreachable"], 1);
    assert_eq!(
        recap["failures"][0]["hosts"].as_array().unwrap().len(),
        3,
        "{recap}"
    );
    assert!(
        !stdout.lines().any(|l| l.contains("\"status\":\"ok\"")),
        "ok tasks listed"
    );

    // The audit of many hosts: drift grouped by rule (node5 fixed by hand), the
    // unreachable host grouped by error, no row per host.
    ssh(
        "node5",
        "sudo sed -i '1i PermitRootLogin no' /etc/ssh/sshd_config",
    );
    let audit = |extra: &[&str]| {
        let args = [
            "audit".into(),
            d.path().join("inventory.yml").into_os_string(),
        ];
        let (rc, stdout, _) = tool(&args, extra);
        (rc, stdout)
    };
    let (rc, out) = audit(&[]);
    assert_eq!(rc, Some(3), "{out}");
    assert!(
        out.contains(&format!(
            "AUDIT {} hosts: compliant=0 drifted={N} not_checked=1",
            N + 1
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!("{N:>5} host(s)  ssh-password-auth ")),
        "{out}"
    );
    let root = &out[out.find("  ssh-root-login ").expect("a root login group")..];
    assert!(
        out.contains(&format!("{:>5} host(s)  ssh-root-login ", N - 1)),
        "{out}"
    );
    assert!(
        root.contains(
            "node1, node2, node3, node4, node6, node7, node8, node9, node10, node11 and 39 more"
        ),
        "{root}"
    );
    let errors = &out[out.find("NOT CHECKED by error").expect("an error group")..];
    assert!(
        errors.contains("    1 host(s)  unreachable: ") && errors.contains("ghost"),
        "{errors}"
    );
    assert!(!out.contains("round_trips="), "a row per host:\n{out}");

    let (rc, out) = audit(&["--output", "json"]);
    assert_eq!(rc, Some(3), "{out}");
    let summary: serde_json::Value = out
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .find(|v: &serde_json::Value| v["event"] == "audit_summary")
        .expect("an audit summary");
    assert_eq!(summary["summary"]["drifted"], N, "{summary}");
    let root = summary["drift_by_rule"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["rule"] == "ssh-root-login")
        .expect("the root login group");
    assert_eq!(root["hosts"].as_array().unwrap().len(), N - 1);
    assert_eq!(
        summary["not_checked_by_error"][0]["hosts"],
        serde_json::json!(["ghost"])
    );

    // `lab down` leaves nothing: no namespace, cgroup or host directory.
    drop(lab);
    let netns = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&netns.stdout).contains("plab-"));
    assert!(
        !Path::new("/sys/fs/cgroup/pids/provision-lab").exists()
            && !Path::new("/sys/fs/cgroup/provision-lab").exists()
    );
    assert!(!lab_dir().join("hosts/node50/upper").exists());
}
