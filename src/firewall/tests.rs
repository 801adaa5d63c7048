use super::*;
use serde_json::Map;

fn inv(text: &str) -> (tempfile::TempDir, Inventory) {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("inv.yml");
    std::fs::write(&p, text).unwrap();
    let i = Inventory::load(&p).unwrap();
    (d, i)
}

const CLUSTER: &str = "all:
  children:
    managers:
      hosts:
        m1: { ansible_host: 10.0.0.1 }
        m2: { ansible_host: 10.0.0.2 }
        m3: { ansible_host: 10.0.0.3 }
    workers:
      hosts:
        w1: { ansible_host: 10.0.0.4 }
        w2: { ansible_host: 10.0.0.5, private_address: 192.168.0.5 }
    etcd:
      hosts:
        m1:
        e1: { ansible_host: 10.0.0.9 }
";

fn wanted(text: &str, h: &str) -> Result<Wanted, String> {
    let (_d, i) = inv(text);
    resolve(&i, &Map::new(), h)
}

fn opening(w: &Wanted, port: u16, proto: Proto) -> Option<&Rule> {
    w.input
        .iter()
        .find(|r| r.proto == proto && r.ports.iter().any(|(a, b)| *a <= port && port <= *b))
}

fn nets(v: &[&str]) -> Vec<IpNet> {
    v.iter().map(|s| s.parse().unwrap()).collect()
}

#[test]
fn managers_open_swarm_management_to_the_nodes_only() {
    let m = wanted(CLUSTER, "m2").unwrap();
    let nodes = nets(&[
        "10.0.0.1/32",
        "10.0.0.2/32",
        "10.0.0.3/32",
        "10.0.0.4/32",
        "192.168.0.5/32",
    ]);
    assert_eq!(opening(&m, 2377, Proto::Tcp).unwrap().from, nodes);
    assert_eq!(opening(&m, 7946, Proto::Udp).unwrap().from, nodes);
    assert_eq!(opening(&m, 4789, Proto::Udp).unwrap().from, nodes);
    assert!(
        opening(&m, 2379, Proto::Tcp).is_none(),
        "m2 is no etcd member"
    );
    assert!(
        opening(&m, 2376, Proto::Tcp).is_none(),
        "docker API closed by default"
    );
    assert!(m.input.iter().all(|r| r.proto != Proto::Esp));
    let w = wanted(CLUSTER, "w1").unwrap();
    assert_eq!(
        opening(&w, 2377, Proto::Tcp).unwrap().from,
        nodes,
        "open on workers too, so a role change in the inventory never cuts a manager off"
    );
    assert!(opening(&w, 2376, Proto::Tcp).is_none());
    assert_eq!(opening(&w, 7946, Proto::Tcp).unwrap().from, nodes);
}

#[test]
fn etcd_members_admit_each_other_and_their_clients() {
    let e = wanted(CLUSTER, "e1").unwrap();
    assert_eq!(
        opening(&e, 2380, Proto::Tcp).unwrap().from,
        nets(&["10.0.0.1/32", "10.0.0.9/32"])
    );
    assert!(opening(&e, 2377, Proto::Tcp).is_none());
    let with_clients = CLUSTER.to_owned()
        + "  vars:\n    firewall_etcd_client_sources: [workers, 172.16.0.0/12]\n";
    let e = wanted(&with_clients, "e1").unwrap();
    assert_eq!(
        opening(&e, 2379, Proto::Tcp).unwrap().from,
        nets(&[
            "10.0.0.1/32",
            "10.0.0.4/32",
            "10.0.0.9/32",
            "172.16.0.0/12",
            "192.168.0.5/32"
        ])
    );
}

#[test]
fn docker_api_esp_edge_and_extra_rules() {
    let text = CLUSTER.to_owned()
        + "    edge:\n      hosts:\n        w1:\n  vars:\n    firewall_docker_api_sources: [10.9.0.7]\n    \
           swarm_networks: [{name: secure, encrypted: true}]\n    \
           firewall_rules_web: [{port: '8080,9000-9010', proto: tcp+udp, from: [m1], comment: web}]\n";
    let m = wanted(&text, "m1").unwrap();
    assert_eq!(
        opening(&m, 2376, Proto::Tcp).unwrap().from,
        nets(&["10.9.0.7/32"])
    );
    assert!(m
        .input
        .iter()
        .any(|r| r.proto == Proto::Esp && r.from.len() == 5));
    let web = opening(&m, 9005, Proto::Udp).unwrap();
    assert_eq!(web.ports, vec![(8080, 8080), (9000, 9010)]);
    assert_eq!(web.from, nets(&["10.0.0.1/32"]));
    assert!(opening(&m, 8080, Proto::Tcp).is_some());
    assert!(opening(&m, 443, Proto::Tcp).is_none());
    let w = wanted(&text, "w1").unwrap();
    assert!(
        opening(&w, 443, Proto::Tcp).unwrap().from.is_empty(),
        "edge: anyone"
    );
}

#[test]
fn bad_settings_are_refused_with_the_variable_named() {
    let cases = [
        ("firewall_ssh_sources: [nowhere]", "firewall_ssh_sources"),
        ("firewall_ssh_sources: \"{{ x }}\"", "must be a list"),
        ("firewall_ssh_sources: [\"{{ x }}\"]", "must be written out"),
        ("firewall_rules: [{port: 0}]", "not a port"),
        ("firewall_rules: [{port: 80, proto: sctp}]", "proto `sctp`"),
        (
            "firewall_rules: [{ports: 80, form: [m1]}]",
            "unknown key `form`",
        ),
        ("firewall_rules: [{proto: udp}]", "needs a `port`"),
        ("firewall_published: [{port: 8080}]", "needs `from`"),
        (
            "firewall_input_raw: [\"tcp dport 22 drop; flush ruleset\"]",
            "one nft rule",
        ),
        ("firewall_enabled: maybe", "true or false"),
        ("firewall_intrusion: crowdsec", "fail2ban or none"),
    ];
    for (vars, want) in cases {
        let text = CLUSTER.to_owned() + "  vars:\n    " + vars + "\n";
        let e = wanted(&text, "m1").expect_err(vars);
        assert!(e.contains(want), "{vars}: {e}");
    }
}

#[test]
fn a_peer_without_an_ip_address_is_named() {
    let text = CLUSTER.replace("10.0.0.4", "w1.example.com");
    let e = wanted(&text, "m1").unwrap_err();
    assert!(
        e.contains("host `w1`") && e.contains("private_address"),
        "{e}"
    );
}

#[test]
fn render_is_deterministic_and_splits_families() {
    let text =
        CLUSTER.to_owned() + "  vars:\n    firewall_ssh_sources: [10.1.0.0/16, 'fd00::/8']\n";
    let w = wanted(&text, "m1").unwrap();
    let a = render(&w, "m1");
    assert_eq!(a, render(&wanted(&text, "m1").unwrap(), "m1"));
    assert!(a.contains("policy drop;"));
    assert!(
        a.contains("ip saddr 10.1.0.0/16 tcp dport 22 accept comment \"ssh\""),
        "{a}"
    );
    assert!(a.contains("ip6 saddr fd00::/8 tcp dport 22 accept"), "{a}");
    assert!(a.contains("tcp dport 2377 accept"));
    assert!(a.starts_with("# provision's firewall for m1"));
    assert!(!a.contains("chain forward"));
    assert!(w.admits_ssh("10.1.2.3".parse().unwrap()));
    assert!(!w.admits_ssh("10.2.0.1".parse().unwrap()));
    assert!(wanted(CLUSTER, "m1")
        .unwrap()
        .admits_ssh("8.8.8.8".parse().unwrap()));
}

#[test]
fn published_ports_are_filtered_in_the_forward_chain() {
    let text = CLUSTER.to_owned()
        + "  vars:\n    firewall_published: [{port: 8080, from: [10.0.0.0/8]}]\n";
    let a = render(&wanted(&text, "w1").unwrap(), "w1");
    assert!(a.contains("chain forward"), "{a}");
    assert!(a.contains("ip saddr 10.0.0.0/8 ct state new ct status dnat meta l4proto tcp ct original proto-dst 8080 accept"), "{a}");
    assert!(
        a.contains("ct state new ct status dnat meta l4proto tcp ct original proto-dst 8080 drop"),
        "{a}"
    );
}

#[test]
fn peers_depend_on_a_node_being_added() {
    let (_d, i) = inv(CLUSTER);
    let d = Map::new();
    assert!(depends_on(&i, &d, "m1", &["w2".into()]).unwrap());
    assert!(
        !depends_on(&i, &d, "e1", &["w2".into()]).unwrap(),
        "e1 is no swarm node"
    );
    let (_d, i) = inv(&(CLUSTER.to_owned() + "  vars:\n    firewall_enabled: false\n"));
    assert!(!depends_on(&i, &d, "m1", &["w2".into()]).unwrap());
}
