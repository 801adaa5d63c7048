//! Stacks on a real 1-manager + 2-worker swarm: checks before deploying, a stack with a
//! config and a secret deployed and waited for, an unchanged re-run that touches nothing,
//! a config change rolled out under a new name (the old one removed), a bad image failing
//! fast with Docker's reason, a stack removed, and the monitoring stack running on images
//! pulled from the lab's registry (Prometheus finding every node-exporter).

mod common;
use common::*;
use std::path::Path;

fn inventory(d: &Path, stacks: &str) {
    let lab = std::fs::read_to_string(lab_dir().join("inventory.yml")).unwrap();
    let vars = format!(
        "  vars:\n    swarm_labels: {{ web: yes }}\n    stacks_resolve_image: always\n    stacks:{}\n",
        if stacks.is_empty() { " []".to_owned() } else { format!("\n{stacks}") }
    );
    let inv = lab.replacen("  vars:\n", &vars, 1);
    assert_ne!(inv, lab);
    write(d, "inventory.yml", &inv);
}

fn run(d: &Path) -> (i32, String) {
    let o = provision(&[d.join("inventory.yml").to_str().unwrap()]);
    (o.status.code().unwrap_or(-1), text(&o))
}

const WEB: &str = "      - name: web
        builtin: app
        vars: { image: \"10.200.0.1:5000/busybox:lab\", command: [httpd, -f, -h, /www], site_path: /www/index.html, replicas: 2, endpoint_mode: dnsrr,
                constraints: [\"node.labels.web == yes\"], max_per_node: 1, publish_port: 8080 }
        configs: { site: { content: \"hello CONTENT\\n\" } }
        secrets: { token: { value: s3cr3t-value-42 } }
";

fn web(content: &str) -> String {
    WEB.replace("CONTENT", content)
}

fn in_task(cmd: &str) -> String {
    for n in ["node2", "node3", "node1"] {
        let (_, id) = ssh_rc(n, "sudo docker ps -q -f name=web_web | head -1");
        if !id.trim().is_empty() {
            return ssh(n, &format!("sudo docker exec {} {cmd}", id.trim()));
        }
    }
    panic!("no task of web_web runs");
}

#[test]
fn stacks_deploy_converge_roll_out_and_fail_fast() {
    let Some(_lab) = LabGuard::with_registry(3) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    inventory(d, "");
    let (rc, out) = run(d);
    assert_eq!(rc, 0, "{out}");

    // Checked before anything is deployed: a constraint no node satisfies.
    write(d, "bad.yml.j2", "version: \"3.8\"\nservices:\n  a:\n    image: 10.200.0.1:5000/busybox:lab\n    deploy: { placement: { constraints: [\"node.labels.zone == nowhere\"] } }\n");
    inventory(
        d,
        &(web("v1") + "      - { name: bad, compose: bad.yml.j2 }\n"),
    );
    let (rc, out) = run(d);
    assert_eq!(rc, 2, "{out}");
    assert!(
        out.contains("nothing was deployed: stack `bad`: service `a`: no node satisfies `node.labels.zone == nowhere`"),
        "{out}"
    );
    assert_eq!(
        ssh("node1", "sudo docker stack ls --format '{{.Name}}'"),
        ""
    );

    // Deployed and waited for; the secret never shows.
    inventory(d, &web("v1"));
    let (rc, out) = run(d);
    assert_eq!(rc, 0, "{out}");
    assert!(out.contains("deploy stack web (web; web_site_"), "{out}");
    assert!(!out.contains("s3cr3t-value-42"), "{out}");
    assert!(ssh(
        "node1",
        "sudo docker service ls --format '{{.Name}} {{.Replicas}}'"
    )
    .contains("web_web 2/2"));
    assert_eq!(in_task("cat /www/index.html"), "hello v1");
    // It answers on every node it runs on (2 replicas, one per labelled node).
    let on: Vec<String> = ssh(
        "node1",
        "sudo docker service ps web_web --filter desired-state=running --format '{{.Node}}'",
    )
    .lines()
    .map(str::to_owned)
    .collect();
    assert_eq!(on.len(), 2, "{on:?}");
    for n in &on {
        let ip = format!("10.200.0.1{}", &n[4..]);
        let o = std::process::Command::new("curl")
            .args(["-s", "--max-time", "5", &format!("http://{ip}:8080/")])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "hello v1", "{n}");
    }
    assert_eq!(in_task("cat /run/secrets/token"), "s3cr3t-value-42");
    for n in ["node1", "node2", "node3"] {
        let (_, found) = ssh_rc(n, "sudo grep -rl s3cr3t-value-42 /etc /tmp /root /home /var/tmp /var/lib/provision-managed 2>/dev/null | head -3");
        assert_eq!(found.trim(), "", "the secret is on {n}'s disk");
    }
    let version = || {
        ssh(
            "node1",
            "sudo docker service inspect --format '{{.Version.Index}}' web_web",
        )
    };
    let v1 = version();

    // Again: nothing changes, the service is not touched.
    let (rc, out) = run(d);
    assert_eq!(rc, 0, "{out}");
    assert!(out.contains("no changes"), "{out}");
    assert_eq!(version(), v1);

    // New content: a new config object, a rolling update, the old object removed.
    inventory(d, &web("v2"));
    let (rc, out) = run(d);
    assert_eq!(rc, 0, "{out}");
    assert_eq!(in_task("cat /www/index.html"), "hello v2");
    let configs = ssh("node1", "sudo docker config ls --format '{{.Name}}'");
    assert_eq!(
        configs
            .lines()
            .filter(|l| l.starts_with("web_site_"))
            .count(),
        1,
        "{configs}"
    );
    assert_ne!(version(), v1);

    // A missing image fails fast, with Docker's reason.
    inventory(d, &(web("v2") + "      - { name: broken, builtin: app, vars: { image: \"nosuch:image\", replicas: 1 } }\n"));
    let t = std::time::Instant::now();
    let (rc, out) = run(d);
    assert_eq!(rc, 2, "{out}");
    assert!(out.contains("No such image"), "{out}");
    assert!(t.elapsed().as_secs() < 120, "took {:?}", t.elapsed());
    // The audit names the service short of tasks; the converged one passes.
    let audit = text(&provision(&[
        "audit",
        d.join("inventory.yml").to_str().unwrap(),
        "-v",
    ]));
    assert!(audit.contains("DRIFT  stack-service:broken_web"), "{audit}");
    assert!(audit.contains("pass   stack-service:web_web"), "{audit}");

    // The same stack with a command that fails: the run fails with the new task's error
    // (not the old spec's "No such image").
    inventory(d, &(web("v2") + "      - { name: broken, builtin: app, vars: { image: \"10.200.0.1:5000/busybox:lab\", command: [sh, -c, \"exit 3\"], replicas: 1 } }\n"));
    let (rc, out) = run(d);
    assert_eq!(rc, 2, "{out}");
    assert!(
        out.contains("non-zero exit (3)") && !out.contains("No such image"),
        "{out}"
    );

    // A command that exits 0 at once: its tasks complete and are restarted for ever. The
    // wait sees it and fails with the reason, well within the stack's wait (300 s).
    inventory(d, &(web("v2") + "      - { name: broken, builtin: app, vars: { image: \"10.200.0.1:5000/busybox:lab\", command: [sh, -c, \"exit 0\"], replicas: 1 } }\n"));
    let t = std::time::Instant::now();
    let (rc, out) = run(d);
    assert_eq!(rc, 2, "{out}");
    assert!(out.contains("exited by itself"), "{out}");
    assert!(t.elapsed().as_secs() < 120, "took {:?}", t.elapsed());

    // Dropped from the inventory: reported, left running; `state: absent` removes it.
    inventory(d, &web("v2"));
    let (rc, out) = run(d);
    assert_eq!(rc, 0, "{out}");
    assert!(
        out.contains("stack broken is deployed but no longer in the inventory"),
        "{out}"
    );
    inventory(
        d,
        &(web("v2") + "      - { name: broken, state: absent }\n"),
    );
    let (rc, out) = run(d);
    assert_eq!(rc, 0, "{out}");
    assert!(out.contains("remove stack broken"), "{out}");
    assert_eq!(
        ssh("node1", "sudo docker stack ls --format '{{.Name}}'"),
        "web"
    );

    // The monitoring stack on images built from Debian packages, pulled from the lab's
    // registry: Prometheus finds the node-exporter of every node through swarm DNS.
    let mon = "      - name: mon
        builtin: monitoring
        vars: { grafana: false, cadvisor: false, scrape_interval: 3s, prometheus_port: 9090,
                prometheus_image: \"10.200.0.1:5000/prometheus:lab\", node_exporter_image: \"10.200.0.1:5000/node-exporter:lab\",
                alertmanager_image: \"10.200.0.1:5000/alertmanager:lab\" }
";
    let idle = "      - { name: idle, builtin: app, vars: { image: \"10.200.0.1:5000/busybox:lab\", replicas: 0 } }\n";
    inventory(d, &(web("v2") + mon + idle));
    let o = provision(&[
        d.join("inventory.yml").to_str().unwrap(),
        "--output",
        "json",
        "-v",
    ]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    // While it converges, the host's progress shows the services' task counts.
    assert!(
        out.lines()
            .any(|l| l.contains("\"task_start\"") && l.contains("stacks: mon_")),
        "no progress shown: {out}"
    );
    let svcs = ssh(
        "node1",
        "sudo docker service ls --format '{{.Name}} {{.Replicas}}'",
    );
    for s in [
        "mon_prometheus 1/1",
        "mon_node-exporter 3/3",
        "mon_alertmanager 1/1",
    ] {
        assert!(svcs.contains(s), "{svcs}");
    }
    let mut up = 0;
    for _ in 0..40 {
        let t = ssh(
            "node1",
            "curl -s --max-time 3 http://10.200.0.11:9090/api/v1/targets || true",
        );
        let v: serde_json::Value = serde_json::from_str(&t).unwrap_or_default();
        up = v["data"]["activeTargets"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|x| x["labels"]["job"] == "node" && x["health"] == "up")
                    .count()
            })
            .unwrap_or(0);
        if up >= 3 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
    assert!(up >= 3, "Prometheus does not see 3 node-exporters up");
    let (rc, out) = run(d);
    assert!(rc == 0 && out.contains("no changes"), "{out}");

    // A private registry (the lab's second one asks for a password): without a login a
    // worker cannot pull; with `registry_auth` the manager logs in (0600, never printed)
    // and the stack deploys with registry auth, so the workers pull too.
    let (rc, said) = ssh_rc(
        "node2",
        "sudo docker pull -q 10.200.0.1:5001/busybox:lab 2>&1",
    );
    assert!(
        rc != 0 && said.contains("no basic auth credentials"),
        "{said}"
    );
    let pw = std::fs::read_to_string(lab_dir().join("registry/password")).unwrap();
    let private = "      - { name: private, builtin: app, vars: { image: \"10.200.0.1:5001/busybox:lab\", command: [sleep, \"3600\"],
                  replicas: 2, max_per_node: 1, constraints: [\"node.role == worker\"] } }\n";
    inventory(d, &(web("v2") + mon + private));
    let inv = d.join("inventory.yml");
    let text_inv = std::fs::read_to_string(&inv).unwrap().replacen(
        "  vars:\n",
        &format!("  vars:\n    registry_auth: [{{ server: \"10.200.0.1:5001\", username: lab, password: \"{}\" }}]\n", pw.trim()),
        1,
    );
    std::fs::write(&inv, text_inv).unwrap();
    let (rc, out) = run(d);
    assert_eq!(rc, 0, "{out}");
    assert!(
        !out.contains(pw.trim()),
        "the registry password was printed: {out}"
    );
    assert!(out.contains("private registry logins"), "{out}");
    assert_eq!(
        ssh("node1", "sudo stat -c '%a %U' /root/.docker/config.json"),
        "600 root"
    );
    assert_eq!(
        ssh_rc("node2", "sudo test -e /root/.docker/config.json").0,
        1,
        "a worker got the credentials file"
    );
    let tasks = ssh(
        "node1",
        "sudo docker service ps private_web --filter desired-state=running --format '{{.Node}} {{.CurrentState}}'",
    );
    assert!(
        tasks.lines().filter(|l| l.contains("Running")).count() == 2 && !tasks.contains("node1"),
        "{tasks}"
    );
    let (rc, out) = run(d);
    assert!(rc == 0 && out.contains("no changes"), "{out}");
}
