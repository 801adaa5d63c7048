//! The host firewall: which ports each host opens and to whom, worked out from the
//! inventory's groups on the controller before any connection, and rendered as
//! provision's own nftables table. The run (the `firewall` variable) and the audit use
//! the same result.

pub mod audit;
mod render;
#[cfg(test)]
mod tests;

use crate::inventory::Inventory;
use ipnet::IpNet;
use serde_json::{json, Map, Value};
use std::net::IpAddr;

pub use render::render;

/// The one table provision owns; nothing else in the ruleset is touched.
pub const TABLE: &str = "provision";

/// The role whose hosts get a firewall.
pub const ROLE: &str = "firewall";

/// A host's firewall as the run and the audit need it: the rules, the file that holds
/// them and whether fail2ban guards SSH.
#[derive(Debug, Clone)]
pub struct HostWall {
    pub wanted: Wanted,
    pub file: String,
    pub fail2ban: bool,
}

/// `h`'s firewall, given the firewall role's defaults.
pub fn for_host(inv: &Inventory, d: &Map<String, Value>, h: &str) -> Result<HostWall, String> {
    let wanted = resolve(inv, d, h)?;
    let vars = Vars {
        host: &inv.hosts[h].vars,
        defaults: d,
    };
    Ok(HostWall {
        file: vars.str_or("firewall_file", "/etc/provision/firewall.nft"),
        fail2ban: vars.str_or("firewall_intrusion", "fail2ban") == "fail2ban",
        wanted,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Tcp,
    Udp,
    Esp,
}

impl Proto {
    pub fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Esp => "esp",
        }
    }
}

/// One opening: a protocol, its ports (none for ESP) and who may use it (empty: anyone).
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub comment: String,
    pub proto: Proto,
    pub ports: Vec<(u16, u16)>,
    pub from: Vec<IpNet>,
}

/// A host's wanted firewall.
#[derive(Debug, Clone)]
pub struct Wanted {
    pub enabled: bool,
    pub ssh_port: u16,
    pub ssh_sources: Vec<IpNet>,
    pub input: Vec<Rule>,
    /// Published container ports restricted to sources (in the forward chain).
    pub published: Vec<Rule>,
    /// nft lines put at the top of the input chain as written (not checked for lockout).
    pub raw: Vec<String>,
}

impl Wanted {
    /// May `ip` open a new SSH connection, as far as the rules show?
    pub fn admits_ssh(&self, ip: IpAddr) -> bool {
        self.ssh_sources.is_empty() || self.ssh_sources.iter().any(|n| n.contains(&ip))
    }

    pub fn as_var(&self, host: &str) -> Value {
        json!({
            "enabled": self.enabled,
            "nft": render(self, host),
            "ssh_port": self.ssh_port,
            "ssh_sources": self.ssh_sources.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
        })
    }
}

/// Does `x`'s firewall name one of `inside` (so it must change when they are added)?
pub fn depends_on(
    inv: &Inventory,
    d: &Map<String, Value>,
    x: &str,
    inside: &[String],
) -> Result<bool, String> {
    let w = resolve(inv, d, x)?;
    if !w.enabled {
        return Ok(false);
    }
    Ok(inside
        .iter()
        .filter_map(|h| address(inv, h).ok())
        .any(|ip| mentions(&w, ip)))
}

/// Values of one host: its variables over the role's defaults.
struct Vars<'a> {
    host: &'a Map<String, Value>,
    defaults: &'a Map<String, Value>,
}

impl Vars<'_> {
    fn get(&self, k: &str) -> Option<&Value> {
        self.host
            .get(k)
            .or_else(|| self.defaults.get(k))
            .filter(|v| !v.is_null())
    }

    fn str_or(&self, k: &str, d: &str) -> String {
        match self.get(k) {
            Some(Value::String(s)) => s.clone(),
            _ => d.to_owned(),
        }
    }

    fn bool(&self, k: &str, d: bool) -> Result<bool, String> {
        match self.get(k) {
            None => Ok(d),
            Some(Value::Bool(b)) => Ok(*b),
            Some(v) => Err(format!("`{k}` must be true or false, found {v}")),
        }
    }

    fn list(&self, k: &str) -> Result<Vec<Value>, String> {
        match self.get(k) {
            None => Ok(Vec::new()),
            Some(Value::Array(a)) => Ok(a.clone()),
            Some(v) => Err(format!("`{k}` must be a list, found {v}")),
        }
    }
}

fn literal(k: &str, v: &Value) -> Result<(), String> {
    if v.as_str()
        .is_some_and(|s| s.contains("{{") || s.contains("{%"))
    {
        return Err(format!(
            "`{k}` must be written out (the firewall is worked out before any host is contacted, \
             so templates are not rendered in it)"
        ));
    }
    Ok(())
}

/// The address others see `h` at: `private_address`, else `ansible_host`.
pub fn address(inv: &Inventory, h: &str) -> Result<IpAddr, String> {
    let host = &inv.hosts[h];
    let (key, a) = match host.vars.get("private_address").and_then(Value::as_str) {
        Some(p) => ("private_address", p.to_owned()),
        None => ("ansible_host", host.address.clone()),
    };
    a.parse().map_err(|_| {
        format!(
            "host `{h}` has no IP address for the firewall rules ({key} is `{a}`): \
             set `private_address` to the address the other hosts reach it at"
        )
    })
}

/// Sources written in the inventory: networks, addresses, group or host names.
fn sources(inv: &Inventory, k: &str, items: &[Value]) -> Result<Vec<IpNet>, String> {
    let mut out = Vec::new();
    for v in items {
        literal(k, v)?;
        let s = match v {
            Value::String(s) => s.trim().to_owned(),
            other => return Err(format!("`{k}`: `{other}` is not an address or a name")),
        };
        if let Ok(n) = s.parse::<IpNet>() {
            out.push(n.trunc());
        } else if let Ok(ip) = s.parse::<IpAddr>() {
            out.push(IpNet::from(ip));
        } else if let Some(g) = inv.groups.get(&s) {
            for h in g {
                out.push(IpNet::from(address(inv, h)?));
            }
        } else if inv.hosts.contains_key(&s) {
            out.push(IpNet::from(address(inv, &s)?));
        } else {
            return Err(format!(
                "`{k}`: `{s}` is neither an address, a network (10.0.0.0/8) nor a group or host of the inventory"
            ));
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

fn members(inv: &Inventory, group: &str) -> Result<Vec<IpNet>, String> {
    let mut out = Vec::new();
    for h in inv.groups.get(group).into_iter().flatten() {
        out.push(IpNet::from(address(inv, h)?));
    }
    out.sort();
    out.dedup();
    Ok(out)
}

fn in_group(inv: &Inventory, group: &str, h: &str) -> bool {
    inv.groups.get(group).is_some_and(|g| g.contains(h))
}

fn parse_ports(k: &str, v: &Value) -> Result<Vec<(u16, u16)>, String> {
    let one = |s: &str| -> Result<(u16, u16), String> {
        let bad = || format!("`{k}`: `{s}` is not a port or a range like 6800-7300");
        let (a, b) = s.split_once('-').unwrap_or((s, s));
        let a: u16 = a.trim().parse().map_err(|_| bad())?;
        let b: u16 = b.trim().parse().map_err(|_| bad())?;
        if a == 0 || b < a {
            return Err(bad());
        }
        Ok((a, b))
    };
    match v {
        Value::Number(n) => one(&n.to_string()).map(|p| vec![p]),
        Value::String(s) => s.split(',').map(|p| one(p.trim())).collect(),
        Value::Array(a) => {
            let mut out = Vec::new();
            for x in a {
                out.extend(parse_ports(k, x)?);
            }
            Ok(out)
        }
        other => Err(format!("`{k}`: `{other}` is not a port")),
    }
}

/// `firewall_rules` and every `firewall_rules_*` list, in name order.
fn extra_rules(inv: &Inventory, vars: &Vars, prefix: &str) -> Result<Vec<Rule>, String> {
    let mut keys: Vec<&String> = vars
        .host
        .keys()
        .chain(vars.defaults.keys())
        .filter(|k| *k == prefix || k.starts_with(&format!("{prefix}_")))
        .collect();
    keys.sort();
    keys.dedup();
    let mut out = Vec::new();
    for k in keys {
        for (i, item) in vars.list(k)?.iter().enumerate() {
            let at = format!("{k}[{i}]");
            let Value::Object(m) = item else {
                return Err(format!(
                    "`{at}` must be a mapping like {{port: 8080, proto: tcp, from: [10.0.0.0/8]}}"
                ));
            };
            for key in m.keys() {
                if !["port", "ports", "proto", "from", "comment"].contains(&key.as_str()) {
                    return Err(format!(
                        "`{at}`: unknown key `{key}` (known: port, proto, from, comment)"
                    ));
                }
            }
            let protos: Vec<Proto> = match m.get("proto").and_then(Value::as_str).unwrap_or("tcp") {
                "tcp" => vec![Proto::Tcp],
                "udp" => vec![Proto::Udp],
                "tcp+udp" => vec![Proto::Tcp, Proto::Udp],
                "esp" => vec![Proto::Esp],
                p => {
                    return Err(format!(
                        "`{at}`: proto `{p}` is not one of tcp, udp, tcp+udp, esp"
                    ))
                }
            };
            let ports = match m.get("port").or_else(|| m.get("ports")) {
                Some(v) => parse_ports(&at, v)?,
                None if protos == [Proto::Esp] => Vec::new(),
                None => return Err(format!("`{at}` needs a `port`")),
            };
            let from = match m.get("from") {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::Array(a)) => sources(inv, &at, a)?,
                Some(v) => sources(inv, &at, std::slice::from_ref(v))?,
            };
            let comment = m
                .get("comment")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .unwrap_or_else(|| format!("{k}[{i}]"));
            for p in protos {
                out.push(Rule {
                    comment: comment.clone(),
                    proto: p,
                    ports: ports.clone(),
                    from: from.clone(),
                });
            }
        }
    }
    Ok(out)
}

fn rule(comment: &str, proto: Proto, ports: &[(u16, u16)], from: &[IpNet]) -> Rule {
    Rule {
        comment: comment.to_owned(),
        proto,
        ports: ports.to_vec(),
        from: from.to_vec(),
    }
}

/// What `h` opens, from the groups it is in and the inventory's settings.
// Long on purpose: each firewall variable checked in turn, with its own error.
pub fn resolve(inv: &Inventory, d: &Map<String, Value>, h: &str) -> Result<Wanted, String> {
    let host = &inv.hosts[h];
    let vars = Vars {
        host: &host.vars,
        defaults: d,
    };
    let enabled = vars.bool("firewall_enabled", true)?;
    let intrusion = vars.str_or("firewall_intrusion", "fail2ban");
    if !["fail2ban", "none"].contains(&intrusion.as_str()) {
        return Err(format!(
            "`firewall_intrusion` must be fail2ban or none, found `{intrusion}`"
        ));
    }
    let ssh_port = host.port;
    let ssh_sources = sources(
        inv,
        "firewall_ssh_sources",
        &vars.list("firewall_ssh_sources")?,
    )?;
    let mut input = vec![rule(
        "ssh",
        Proto::Tcp,
        &[(ssh_port, ssh_port)],
        &ssh_sources,
    )];

    let managers_g = vars.str_or("swarm_managers_group", "managers");
    let workers_g = vars.str_or("swarm_workers_group", "workers");
    let is_manager = in_group(inv, &managers_g, h);
    if is_manager || in_group(inv, &workers_g, h) {
        let mut nodes = members(inv, &managers_g)?;
        nodes.extend(members(inv, &workers_g)?);
        nodes.sort();
        nodes.dedup();
        // On every node, not only managers: a node whose role changes in the inventory
        // must stay reachable until the swarm has promoted or demoted it (nothing listens
        // on 2377 on a worker).
        input.push(rule(
            "swarm management",
            Proto::Tcp,
            &[(2377, 2377)],
            &nodes,
        ));
        if is_manager {
            let api = sources(
                inv,
                "firewall_docker_api_sources",
                &vars.list("firewall_docker_api_sources")?,
            )?;
            if vars.bool("docker_tls", true)? && !api.is_empty() {
                let port = match vars.get("docker_tls_port") {
                    Some(v) => parse_ports("docker_tls_port", v)?,
                    None => vec![(2376, 2376)],
                };
                input.push(rule("docker API (TLS)", Proto::Tcp, &port, &api));
            }
        }
        input.push(rule("swarm gossip", Proto::Tcp, &[(7946, 7946)], &nodes));
        input.push(rule("swarm gossip", Proto::Udp, &[(7946, 7946)], &nodes));
        input.push(rule(
            "swarm overlay (VXLAN)",
            Proto::Udp,
            &[(4789, 4789)],
            &nodes,
        ));
        let encrypted = vars
            .list("swarm_networks")?
            .iter()
            .any(|n| n.get("encrypted").and_then(Value::as_bool) == Some(true));
        if encrypted || vars.bool("firewall_swarm_esp", false)? {
            input.push(rule("encrypted overlays (ESP)", Proto::Esp, &[], &nodes));
        }
    }

    let etcd_g = vars.str_or("firewall_etcd_group", "etcd");
    if in_group(inv, &etcd_g, h) {
        let peers = members(inv, &etcd_g)?;
        let mut clients = peers.clone();
        clients.extend(members(
            inv,
            &vars.str_or("firewall_etcd_clients_group", "etcd_clients"),
        )?);
        clients.extend(sources(
            inv,
            "firewall_etcd_client_sources",
            &vars.list("firewall_etcd_client_sources")?,
        )?);
        clients.sort();
        clients.dedup();
        input.push(rule("etcd clients", Proto::Tcp, &[(2379, 2379)], &clients));
        input.push(rule("etcd peers", Proto::Tcp, &[(2380, 2380)], &peers));
    }

    let ceph_groups = ["ceph_mons", "ceph_mgrs", "ceph_osds", "ceph_mds"];
    if ceph_groups.iter().any(|g| in_group(inv, g, h)) {
        let mut peers = Vec::new();
        for g in ceph_groups.iter().chain(&["ceph_clients"]) {
            peers.extend(members(inv, g)?);
        }
        peers.sort();
        peers.dedup();
        if in_group(inv, "ceph_mons", h) {
            input.push(rule(
                "ceph monitors",
                Proto::Tcp,
                &[(3300, 3300), (6789, 6789)],
                &peers,
            ));
        }
        input.push(rule("ceph daemons", Proto::Tcp, &[(6800, 7300)], &peers));
    }

    if in_group(inv, &vars.str_or("firewall_edge_group", "edge"), h) {
        input.push(rule(
            "edge (HTTP, HTTPS)",
            Proto::Tcp,
            &[(80, 80), (443, 443)],
            &[],
        ));
    }
    input.extend(extra_rules(inv, &vars, "firewall_rules")?);
    let published = extra_rules(inv, &vars, "firewall_published")?;
    for r in &published {
        if r.from.is_empty() || r.proto == Proto::Esp {
            return Err(format!(
                "firewall_published `{}` needs `from` (who may reach the published port) and proto tcp or udp",
                r.comment
            ));
        }
    }
    let mut raw = Vec::new();
    for (i, v) in vars.list("firewall_input_raw")?.iter().enumerate() {
        let s = v
            .as_str()
            .ok_or_else(|| format!("`firewall_input_raw[{i}]` must be a string (one nft rule)"))?;
        if s.contains(['\n', '{', '}', ';']) {
            return Err(format!(
                "`firewall_input_raw[{i}]` must be one nft rule on one line, without braces or `;`"
            ));
        }
        raw.push(s.trim().to_owned());
    }
    Ok(Wanted {
        enabled,
        ssh_port,
        ssh_sources,
        input,
        published,
        raw,
    })
}

/// The address this controller would connect to `t` from, as far as routing here tells
/// (a NAT between may change it: the host checks again what it sees).
pub fn controller_address(host: &str, port: u16) -> Option<IpAddr> {
    use std::net::{ToSocketAddrs, UdpSocket};
    let dest = (host, port).to_socket_addrs().ok()?.next()?;
    let bind = if dest.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    };
    let s = UdpSocket::bind(bind).ok()?;
    s.connect(dest).ok()?;
    Some(s.local_addr().ok()?.ip())
}

/// Does this firewall name `ip` itself as a source (so it changes when that host is added)?
pub fn mentions(w: &Wanted, ip: IpAddr) -> bool {
    w.input
        .iter()
        .chain(&w.published)
        .flat_map(|r| &r.from)
        .any(|n| n.prefix_len() == n.max_prefix_len() && n.addr() == ip)
}
