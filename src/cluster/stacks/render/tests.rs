use super::*;
use serde_json::json;

const WEB: &str = r#"version: "3.8"
services:
  web:
    image: "{{ image | default('busybox:lab') }}"
    configs: [{ source: site, target: /www/index.html }]
    secrets: [token]
    networks: [front]
    deploy:
      replicas: {{ replicas }}
      placement: { constraints: ["node.labels.zone == {{ zone }}"] }
networks:
  front: { driver: overlay }
"#;

fn entry(extra: serde_json::Value) -> serde_json::Value {
    let mut e = json!({
        "name": "web",
        "compose": "web.yml.j2",
        "vars": {"replicas": 2, "zone": "a"},
        "configs": {"site": {"content": "hello\n"}},
        "secrets": {"token": {"value": "s3cret"}},
    });
    if let (Some(m), serde_json::Value::Object(x)) = (e.as_object_mut(), extra) {
        m.extend(x);
    }
    e
}

fn render(e: &serde_json::Value) -> Result<Stack, String> {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("web.yml.j2"), WEB).unwrap();
    stack(e, d.path(), &|_| None)
}

#[test]
fn configs_and_secrets_get_content_addressed_names_and_the_spec_follows_them() {
    let a = render(&entry(json!({}))).unwrap();
    assert_eq!(a.services, vec!["web"]);
    let site = a.objects.iter().find(|o| o.key == "site").unwrap();
    assert!(site.name.starts_with("web_site_") && !site.secret);
    assert_eq!(
        a.doc["configs"]["site"],
        json!({"external": true, "name": site.name})
    );
    assert!(a.objects.iter().any(|o| o.key == "token" && o.secret));
    assert!(
        !a.compose.contains("s3cret"),
        "a secret value in the compose file"
    );
    assert_eq!(
        a.doc["services"]["web"]["deploy"]["labels"][SPEC_LABEL],
        json!(a.spec)
    );
    // Same input, same everything; new content, new name and spec.
    let again = render(&entry(json!({}))).unwrap();
    assert_eq!(
        (again.spec.clone(), again.compose.clone()),
        (a.spec.clone(), a.compose.clone())
    );
    let b = render(&entry(json!({"configs": {"site": {"content": "bye\n"}}}))).unwrap();
    assert_ne!(b.spec, a.spec);
    assert_ne!(b.objects[0].name, site.name);
    let c = render(&entry(json!({"vars": {"replicas": 3, "zone": "a"}}))).unwrap();
    assert_ne!(c.spec, a.spec);
}

#[test]
fn bad_stacks_are_refused_with_the_reason() {
    let cases = [
        (json!({"name": "Web"}), "stack name `Web`"),
        (json!({"vars": {"zone": "a"}}), "undefined"),
        (json!({"state": "gone"}), "not present or absent"),
        (json!({"compose": "nope.yml"}), "cannot read"),
        (json!({"builtin": "x"}), "either `builtin`"),
        (
            json!({"configs": {"site": {}}}),
            "either `content` or `file`",
        ),
        (json!({"colour": 1}), "unknown key `colour`"),
    ];
    for (extra, want) in cases {
        let e = render(&entry(extra.clone())).expect_err(&extra.to_string());
        assert!(e.contains(want), "{extra}: {e}");
    }
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join("v.yml"),
        "version: \"2.4\"\nservices: {a: {image: x}}\n",
    )
    .unwrap();
    let e = stack(&json!({"name": "v", "compose": "v.yml"}), d.path(), &|_| {
        None
    })
    .unwrap_err();
    assert!(e.contains("\"3.0\" to \"3.9\""), "{e}");
}

#[test]
fn lint_finds_what_would_never_converge() {
    let s = render(&entry(json!({"vars": {"replicas": 1, "zone": "c"}}))).unwrap();
    let nodes = vec![
        (
            "node1".to_owned(),
            BTreeMap::from([("zone".to_owned(), "a".to_owned())]),
        ),
        ("node2".to_owned(), BTreeMap::new()),
    ];
    let sw = Swarm {
        nodes: &nodes,
        networks: &[],
    };
    let l = lint(&s, &sw);
    assert_eq!(l.len(), 1, "{l:?}");
    assert!(
        l[0].contains("no node satisfies `node.labels.zone == c`"),
        "{l:?}"
    );
    assert!(lint(&render(&entry(json!({}))).unwrap(), &sw).is_empty());
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join("h.yml"),
        "version: \"3.8\"\nservices:\n  a:\n    image: x\n    networks: [missing]\n    ports: [{target: 80, published: 80, mode: host}]\n    deploy: {update_config: {order: start-first}}\nnetworks:\n  ext: {external: true, name: shared}\n",
    )
    .unwrap();
    let h = stack(&json!({"name": "h", "compose": "h.yml"}), d.path(), &|_| {
        None
    })
    .unwrap();
    let l = lint(&h, &sw);
    assert!(
        l.iter().any(|x| x.contains("`shared` is external")),
        "{l:?}"
    );
    assert!(
        l.iter()
            .any(|x| x.contains("network `missing` is not declared")),
        "{l:?}"
    );
    assert!(l.iter().any(|x| x.contains("never converges")), "{l:?}");
    // Images, volumes and Traefik middlewares referenced must be defined.
    std::fs::write(
        d.path().join("r.yml"),
        "version: \"3.8\"\nservices:\n  a:\n    volumes: [\"data:/d\", \"/etc:/e:ro\"]\n    deploy: {labels: {traefik.http.routers.a.middlewares: \"auth,gone@swarm,x@file\", traefik.http.middlewares.auth.basicauth.users: u}}\n",
    )
    .unwrap();
    let r = stack(&json!({"name": "r", "compose": "r.yml"}), d.path(), &|_| {
        None
    })
    .unwrap();
    let l = lint(&r, &sw);
    assert_eq!(l.len(), 3, "{l:?}");
    assert!(
        l[0].contains("has no `image`")
            && l[1].contains("volume `data`")
            && l[2].contains("middleware `gone@swarm`"),
        "{l:?}"
    );
    let nets = vec!["shared".to_owned()];
    assert_eq!(
        lint(
            &h,
            &Swarm {
                nodes: &nodes,
                networks: &nets
            }
        )
        .len(),
        2
    );
}

#[test]
fn the_deploy_script_carries_secrets_on_stdin_only() {
    let s = render(&entry(json!({}))).unwrap();
    let (script, stdin) = deploy_script(&s, "never");
    assert!(!script.contains("s3cret"));
    let input = String::from_utf8(stdin).unwrap();
    assert!(input.contains("s3cret") && input.contains("compose - - "));
    assert!(script.contains("--resolve-image never"));
    let ok = std::process::Command::new("sh")
        .args(["-n", "-c", &script])
        .status()
        .unwrap();
    assert!(ok.success(), "{script}");
}

#[test]
fn the_built_in_stacks_render_and_pass_the_checks() {
    let builtin = |n: &str| crate::assets::builtin_file(&format!("stacks/{n}.yml.j2"));
    let cases = [
        (
            "traefik",
            json!({"acme_email": "ops@example.com", "acme_staging": true, "dashboard_domain": "tr.example.com",
                   "dashboard_users": ["admin:$apr1$x$y"], "crowdsec": true}),
            json!({"crowdsec_bouncer_key": {"value": "k3y-123"}}),
            vec!["traefik", "crowdsec", "bouncer"],
        ),
        (
            "monitoring",
            json!({"grafana_domain": "g.example.com", "alert_webhook": "https://hooks.example.com/a"}),
            json!({"grafana_admin": {"value": "pw-123456"}}),
            vec![
                "prometheus",
                "node-exporter",
                "cadvisor",
                "alertmanager",
                "grafana",
            ],
        ),
        ("portainer", json!({}), json!({}), vec!["agent", "server"]),
        (
            "app",
            json!({"domain": "app.example.com"}),
            json!({}),
            vec!["web"],
        ),
    ];
    // A 3-manager + 2-worker swarm.
    let nodes: Vec<(String, BTreeMap<String, String>)> = (1..=5)
        .map(|i| (format!("node{i}"), BTreeMap::new()))
        .collect();
    let nets = vec!["proxy".to_owned()];
    let sw = Swarm {
        nodes: &nodes,
        networks: &nets,
    };
    let d = tempfile::tempdir().unwrap();
    for (name, vars, secrets, services) in cases {
        let e = json!({"name": name, "builtin": name, "vars": vars, "secrets": secrets});
        let s = stack(&e, d.path(), &builtin).unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut want: Vec<&str> = services.clone();
        want.sort();
        assert_eq!(s.services, want, "{name}");
        assert_eq!(lint(&s, &sw), Vec::<String>::new(), "{name}: {}", s.compose);
        match name {
            "traefik" => {
                assert!(
                    s.compose.contains("acme-staging") && s.compose.contains("$$apr1"),
                    "{}",
                    s.compose
                );
                assert!(s.compose.contains("crowdsec@swarm"));
            }
            "monitoring" => {
                let prom = s
                    .objects
                    .iter()
                    .find(|o| o.key == "prometheus")
                    .expect("prometheus config");
                assert!(String::from_utf8_lossy(&prom.data).contains("tasks.node-exporter"));
                assert!(s.objects.iter().any(|o| o.key == "grafana_dashboard_nodes"));
                assert!(!s.compose.contains("x-provision-configs"));
            }
            _ => {}
        }
    }
    // A required variable left out is named.
    let e = stack(
        &json!({"name": "t", "builtin": "traefik"}),
        d.path(),
        &builtin,
    )
    .unwrap_err();
    assert!(e.contains("acme_email"), "{e}");
}
