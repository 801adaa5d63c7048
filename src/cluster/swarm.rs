//! `swarm`: one Docker Swarm made of the play's managers and workers, kept that way.
//! It decides from what the hosts report (never from inventory order): a swarm is
//! created only when no host is in one; otherwise any reachable manager is the source
//! of join tokens, read when a node must join and never printed. Managers join one at a
//! time, workers together; roles are promoted or demoted without losing quorum.

use super::{arg, sections, Action, Ctx, Member, Seen, Step};
use crate::transport::quote;
use indexmap::IndexMap;
use serde::Deserialize;
use serde_json::{json, Value};

pub fn new() -> Box<dyn Step> {
    Box::<Swarm>::default()
}

#[derive(Deserialize, Default, Debug, Clone)]
#[serde(rename_all = "PascalCase", default)]
pub struct Info {
    #[serde(rename = "NodeID")]
    pub node_id: String,
    pub node_addr: String,
    pub local_node_state: String,
    pub control_available: bool,
    pub error: String,
    pub cluster: Option<ClusterInfo>,
}

#[derive(Deserialize, Default, Debug, Clone)]
pub struct ClusterInfo {
    #[serde(rename = "ID", default)]
    pub id: String,
}

/// One node as `docker node inspect` shows it.
#[derive(Deserialize, Default, Debug, Clone)]
#[serde(rename_all = "PascalCase", default)]
pub struct Node {
    #[serde(rename = "ID")]
    pub id: String,
    pub spec: NodeSpec,
    pub status: NodeStatus,
    pub description: NodeDesc,
    pub manager_status: Option<ManagerStatus>,
}

#[derive(Deserialize, Default, Debug, Clone)]
#[serde(rename_all = "PascalCase", default)]
pub struct NodeSpec {
    pub role: String,
    pub availability: String,
    pub labels: std::collections::BTreeMap<String, String>,
}

#[derive(Deserialize, Default, Debug, Clone)]
#[serde(rename_all = "PascalCase", default)]
pub struct NodeStatus {
    pub state: String,
    pub addr: String,
}

#[derive(Deserialize, Default, Debug, Clone)]
#[serde(rename_all = "PascalCase", default)]
pub struct NodeDesc {
    pub hostname: String,
}

#[derive(Deserialize, Default, Debug, Clone)]
#[serde(rename_all = "PascalCase", default)]
pub struct ManagerStatus {
    pub leader: bool,
    pub reachability: String,
    pub addr: String,
}

/// The probe lines that read a node's swarm state, and the node list where it is a manager.
pub fn probe_info(with_nodes: bool) -> String {
    let mut s = String::from(
        "echo '==PROVISION info'; docker info --format '{{json .Swarm}}' 2>/dev/null || echo '{\"LocalNodeState\":\"down\"}'\n",
    );
    if with_nodes {
        s += "echo '==PROVISION nodes'; ids=$(docker node ls -q 2>/dev/null) && [ -n \"$ids\" ] && docker node inspect --format '{{json .}}' $ids 2>/dev/null\n";
    }
    s += "true\n";
    s
}

/// Joins through the Docker API with the request (and its token) on stdin, so the token
/// is never in a process's command line (`docker swarm join --token` would put it there).
const JOIN_SCRIPT: &str = "out=$(mktemp); trap 'rm -f \"$out\"' EXIT\n\
code=$(curl -sS --max-time 120 --unix-socket /var/run/docker.sock -H 'Content-Type: application/json' \
--data-binary @- -o \"$out\" -w '%{http_code}' http://localhost/swarm/join) || exit 1\n\
[ \"$code\" = 200 ] || { echo \"docker swarm join: HTTP $code: $(cat \"$out\")\" >&2; exit 1; }\n";

/// The body of the Docker API's swarm join request.
fn join_body(token: &str, addr: &str, data_addr: Option<&str>, manager: &str) -> String {
    let mut b = json!({
        "ListenAddr": "0.0.0.0:2377",
        "AdvertiseAddr": addr,
        "RemoteAddrs": [format!("{manager}:2377")],
        "JoinToken": token,
    });
    if let Some(d) = data_addr {
        b["DataPathAddr"] = json!(d);
    }
    b.to_string()
}

/// Runs a change to a swarm object again while the swarm answers "update out of sequence"
/// (another change to the same node, such as its demotion, is still being applied).
pub fn retrying(cmd: &str) -> String {
    format!(
        "for i in 1 2 3 4 5 6 7 8 9 10; do out=$({cmd} 2>&1) && exit 0; \
         case \"$out\" in *'out of sequence'*) sleep 1;; *) break;; esac; done; echo \"$out\" >&2; exit 1"
    )
}

/// What one host reported.
#[derive(Debug, Clone, Default)]
pub struct Seen1 {
    pub info: Info,
    /// The swarm's nodes, where this host is a working manager.
    pub nodes: Option<Vec<Node>>,
    pub sections: IndexMap<String, String>,
}

pub fn parse(out: &str) -> Seen1 {
    let s = sections(out);
    let info = s
        .get("info")
        .and_then(|t| {
            t.lines()
                .rev()
                .find_map(|l| serde_json::from_str::<Info>(l).ok())
        })
        .map(|mut i| {
            if i.local_node_state.is_empty() {
                i.local_node_state = "down".into();
            }
            i
        })
        .unwrap_or(Info {
            local_node_state: "down".into(),
            ..Default::default()
        });
    let nodes = s.get("nodes").and_then(|t| {
        let v: Vec<Node> = t
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        (!v.is_empty()).then_some(v)
    });
    Seen1 {
        info,
        nodes,
        sections: s,
    }
}

/// Finds the swarm the members are in: (source manager, its node list, cluster id).
/// Err when they are in different swarms.
/// The host a swarm-wide change is made for: the source manager if it is inside the run's
/// limit, else another writable manager.
pub fn owner(members: &[Member], src: &str, seen: &IndexMap<String, Seen1>) -> Option<String> {
    members
        .iter()
        .find(|m| m.name == src && m.writable)
        .or_else(|| {
            members
                .iter()
                .find(|m| m.writable && seen.get(&m.name).is_some_and(|o| o.info.control_available))
        })
        .map(|m| m.name.clone())
}

/// The manager to act through: (its name, the nodes it sees, its cluster id).
pub type Source<'a> = (String, &'a Vec<Node>, String);

pub fn source<'a>(
    members: &[Member],
    seen: &'a IndexMap<String, Seen1>,
) -> Result<Option<Source<'a>>, String> {
    let mut clusters: IndexMap<String, Vec<String>> = IndexMap::new();
    for m in members {
        if let Some(s) = seen.get(&m.name) {
            // A node just demoted can still say ControlAvailable, with an empty cluster id.
            if let (true, Some(c)) = (s.info.control_available, &s.info.cluster) {
                if !c.id.is_empty() {
                    clusters
                        .entry(c.id.clone())
                        .or_default()
                        .push(m.name.clone());
                }
            }
        }
    }
    if clusters.len() > 1 {
        return Err(format!(
            "the hosts are in different swarms ({}): a host belongs to one swarm only; \
             make the strays leave (`docker swarm leave --force`) or fix the inventory",
            clusters
                .iter()
                .map(|(id, hs)| format!("{} in cluster {}", hs.join(", "), &id[..id.len().min(12)]))
                .collect::<Vec<_>>()
                .join("; ")
        ));
    }
    // Prefer a manager inside --limit, then the leader.
    let mut best: Option<(Source, (bool, bool))> = None;
    for m in members {
        let Some(s) = seen.get(&m.name) else { continue };
        let (Some(nodes), Some(c)) = (&s.nodes, &s.info.cluster) else {
            continue;
        };
        if !s.info.control_available || c.id.is_empty() {
            continue;
        }
        let leader = nodes
            .iter()
            .any(|n| n.id == s.info.node_id && n.manager_status.as_ref().is_some_and(|m| m.leader));
        let rank = (m.writable, leader);
        if best.as_ref().is_none_or(|b| rank > b.1) {
            best = Some(((m.name.clone(), nodes, c.id.clone()), rank));
        }
    }
    Ok(best.map(|(s, _)| s))
}

#[derive(Clone, Debug)]
struct Want {
    manager: bool,
    addr: String,
    data_addr: Option<String>,
}

#[derive(Default)]
struct Swarm {
    want: IndexMap<String, Want>,
    pools: Vec<String>,
    pool_mask: Option<u32>,
    tokens_wanted: bool,
    /// The manager to read tokens on, once known.
    token_source: Option<String>,
    tokens: Option<(String, String)>,
    waiting: bool,
    leader_waits: u32,
    notes: Vec<String>,
    published: Value,
}

fn is_ip(s: &str) -> bool {
    s.parse::<std::net::IpAddr>().is_ok()
}

impl Step for Swarm {
    fn prepare(&mut self, members: &[Member], cx: &Ctx) -> Result<(), String> {
        for m in members {
            let role = arg(m, "role")?.unwrap_or_default();
            let manager = match role.as_str() {
                "manager" => true,
                "worker" => false,
                other => {
                    return Err(format!(
                        "host `{}`: swarm role must be manager or worker, found `{other}`",
                        m.name
                    ))
                }
            };
            let addr = arg(m, "advertise_addr")?.unwrap_or_default();
            if !is_ip(&addr) {
                return Err(format!(
                    "host `{}`: swarm advertise_addr `{addr}` is not an IP address: set private_address or swarm_advertise_addr",
                    m.name
                ));
            }
            let data_addr = arg(m, "data_path_addr")?.filter(|s| !s.is_empty());
            self.want.insert(
                m.name.clone(),
                Want {
                    manager,
                    addr,
                    data_addr,
                },
            );
        }
        if let Some(first) = members.first() {
            self.pools = crate::args::Args(&first.args)
                .list("default_addr_pool")
                .map_err(|e| format!("swarm: {e}"))?;
            self.pool_mask = match first.args.get("default_addr_pool_mask_length") {
                None | Some(Value::Null) => None,
                Some(v) => Some(
                    v.as_u64()
                        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                        .filter(|n| (8..=30).contains(n))
                        .ok_or("swarm: default_addr_pool_mask_length must be 8 to 30")?
                        as u32,
                ),
            };
            let even_ok = crate::args::Args(&first.args)
                .bool("allow_even_managers", false)
                .map_err(|e| format!("swarm: {e}"))?;
            let managers = self.want.values().filter(|w| w.manager).count();
            if managers == 0 {
                return Err("no manager among the swarm's hosts still running: put at least one host in the managers group (a manager that failed or is unreachable is left out)".into());
            }
            // The inventory's count: an unreachable manager is still one of them.
            let group = cx
                .inventory
                .hosts
                .get(&first.name)
                .and_then(|h| h.vars.get("swarm_managers_group"))
                .and_then(Value::as_str)
                .unwrap_or("managers");
            let managers = cx
                .inventory
                .groups
                .get(group)
                .map_or(0, |g| g.len())
                .max(managers);
            if managers % 2 == 0 && !even_ok {
                return Err(format!(
                    "{managers} managers: an even number adds no fault tolerance (quorum of {managers} is {}); \
                     use an odd number, or set swarm_allow_even_managers: true",
                    managers / 2 + 1
                ));
            }
        }
        Ok(())
    }

    fn reads_outside_limit(&self) -> bool {
        true
    }

    fn counts_down_hosts(&self) -> bool {
        true
    }

    fn probes(&self, members: &[Member]) -> Vec<(String, String)> {
        members
            .iter()
            .map(|m| {
                let manager = self.want.get(&m.name).is_some_and(|w| w.manager);
                let mut s = String::new();
                if self.waiting {
                    s += "sleep 2\n";
                }
                s += &probe_info(manager);
                if self.tokens_wanted && self.token_source.as_deref() == Some(&m.name) {
                    s += "echo '==PROVISION tokens'; docker swarm join-token -q worker 2>/dev/null; docker swarm join-token -q manager 2>/dev/null; true\n";
                }
                (m.name.clone(), s)
            })
            .collect()
    }

    fn plan(&mut self, members: &[Member], seen: &Seen, cx: &Ctx) -> Result<Vec<Action>, String> {
        self.notes.clear();
        self.waiting = false;
        let obs = self.observe(members, seen, cx);
        let Some((src, nodes, cluster)) = source(members, &obs)? else {
            // A swarm without an answering manager may be electing a leader: wait a little.
            let in_swarm = obs.values().any(|o| o.info.local_node_state == "active");
            if in_swarm && self.leader_waits < 8 {
                self.leader_waits += 1;
                self.waiting = true;
                return Ok(Vec::new());
            }
            return self.plan_init(members, &obs);
        };
        if let Some(t) = obs[&src].sections.get("tokens") {
            let l: Vec<&str> = t.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
            if l.len() == 2 {
                self.tokens = Some((l[0].to_owned(), l[1].to_owned()));
            }
        }
        self.token_source = Some(src.clone());
        let view = View {
            src: &src,
            src_addr: &obs[&src].info.node_addr,
            nodes,
            by_id: nodes.iter().map(|n| (n.id.as_str(), n)).collect(),
            unreachable_managers: nodes
                .iter()
                .filter(|n| {
                    n.spec.role == "manager"
                        && n.manager_status
                            .as_ref()
                            .is_some_and(|s| s.reachability != "reachable")
                })
                .count(),
        };
        // Promotions go before demotions: the manager count never dips below the wanted one.
        let mut promotes = Vec::new();
        let mut actions = Vec::new();
        let mut need_tokens = false;
        for m in members {
            let (Some(w), Some(o)) = (self.want.get(&m.name).cloned(), obs.get(&m.name)) else {
                continue;
            };
            match o.info.local_node_state.as_str() {
                "active" => match self.plan_role(m, &w, o, &view)? {
                    Some(a) if w.manager => promotes.push(a),
                    Some(a) => actions.push(a),
                    None => {}
                },
                state @ ("pending" | "error") => actions.push(rejoin(m, &w, o, state)),
                "locked" => {
                    return Err(format!(
                    "{} is locked (autolock): unlock it with `docker swarm unlock`, then run again",
                    m.name
                ))
                }
                "inactive" if m.writable => match self.plan_join(m, &w, &view) {
                    Some(a) => actions.push(a),
                    None => need_tokens = true,
                },
                "inactive" => {}
                "down" if m.writable => actions.push(super::refusal(
                    &m.name,
                    format!(
                        "docker does not answer on {} (not running, or not responding): \
                         start it (the docker role does), then run again",
                        m.name
                    ),
                )),
                "down" => self.notes.push(format!(
                    "{} (outside --limit): docker is not running there",
                    m.name
                )),
                other => self.notes.push(format!(
                    "{} is in swarm state `{other}`: left alone",
                    m.name
                )),
            }
        }
        promotes.append(&mut actions);
        if promotes.is_empty() && !need_tokens {
            promotes = plan_replaced(members, &obs, &view);
        }
        if need_tokens {
            self.tokens_wanted = true;
            if promotes.is_empty() {
                self.waiting = false;
            }
        }
        self.note_unknown_nodes(members, &obs, nodes, cx);
        self.publish(&obs, nodes, &cluster, &src);
        Ok(promotes)
    }

    fn wants_reprobe(&self) -> bool {
        (self.tokens_wanted && self.tokens.is_none()) || self.waiting
    }

    fn notes(&self) -> Vec<String> {
        self.notes.clone()
    }

    fn secrets(&self) -> Vec<String> {
        self.tokens
            .iter()
            .flat_map(|(a, b)| [a.clone(), b.clone()])
            .collect()
    }

    fn publish(&self) -> Value {
        self.published.clone()
    }
}

/// The swarm as its answering manager sees it.
struct View<'a> {
    src: &'a str,
    src_addr: &'a str,
    nodes: &'a [Node],
    by_id: IndexMap<&'a str, &'a Node>,
    unreachable_managers: usize,
}

/// A host that joined anew (a replaced machine, or one that left and joined again)
/// leaves its old node behind, down, under its name or address: removed (demoted first
/// when a manager: an unreachable voter less), one at a time, once the new node is ready.
fn plan_replaced(members: &[Member], obs: &IndexMap<String, Seen1>, v: &View) -> Vec<Action> {
    let mut out = Vec::new();
    for m in members.iter().filter(|m| m.writable) {
        let Some(me) = obs
            .get(&m.name)
            .filter(|o| o.info.local_node_state == "active")
            .and_then(|o| v.by_id.get(o.info.node_id.as_str()))
        else {
            continue;
        };
        if me.status.state != "ready" {
            continue;
        }
        for n in v.nodes {
            let same = n.description.hostname == me.description.hostname
                || (!n.status.addr.is_empty() && n.status.addr == me.status.addr);
            if n.id == me.id
                || !same
                || n.status.state != "down"
                || obs.values().any(|o| o.info.node_id == n.id)
            {
                continue;
            }
            let id = quote(&n.id);
            out.push(Action {
                host: m.name.clone(),
                run_on: Some(v.src.to_owned()),
                msg: format!(
                    "remove {}'s old swarm node {} (down; it joined anew as {})",
                    m.name,
                    &n.id[..n.id.len().min(12)],
                    &me.id[..me.id.len().min(12)]
                ),
                script: if n.manager_status.is_some() {
                    format!("docker node demote {id} >/dev/null && docker node rm --force {id} >/dev/null")
                } else {
                    format!("docker node rm --force {id} >/dev/null")
                },
                stdin: None,
                serial: true,
            });
            return out;
        }
    }
    out
}

/// A node stuck joining (pending, error) leaves the swarm to join again.
fn rejoin(m: &Member, w: &Want, o: &Seen1, state: &str) -> Action {
    Action {
        host: m.name.clone(),
        run_on: None,
        msg: format!(
            "leave the swarm to join again ({} was {state}{})",
            m.name,
            if o.info.error.is_empty() {
                String::new()
            } else {
                format!(": {}", o.info.error)
            }
        ),
        script: "docker swarm leave --force".into(),
        stdin: None,
        serial: w.manager,
    }
}

impl Swarm {
    /// Each member's swarm state as it answered; who could not be read is noted.
    fn observe(&mut self, members: &[Member], seen: &Seen, cx: &Ctx) -> IndexMap<String, Seen1> {
        let mut obs = IndexMap::new();
        for m in members {
            match seen.get(&m.name) {
                Some(Ok(o)) => {
                    let mut s = parse(&o.stdout);
                    // In check mode the docker role has not started docker yet on a fresh host.
                    if cx.check && m.writable && s.info.local_node_state == "down" {
                        s.info.local_node_state = "inactive".into();
                        self.notes.push(format!(
                            "{}: docker is not running yet; planned as a fresh node",
                            m.name
                        ));
                    }
                    obs.insert(m.name.clone(), s);
                }
                Some(Err(e)) => self
                    .notes
                    .push(format!("{} could not be read: {e}", m.name)),
                None => {}
            }
        }
        obs
    }

    /// A node in the swarm whose role differs from the inventory's: promoted, or demoted
    /// when the swarm's quorum allows.
    fn plan_role(
        &mut self,
        m: &Member,
        w: &Want,
        o: &Seen1,
        v: &View,
    ) -> Result<Option<Action>, String> {
        let Some(n) = v.by_id.get(o.info.node_id.as_str()) else {
            return Err(format!(
                "{} is in another swarm (its node {} is unknown to the swarm of {}): \
                 make it leave (`docker swarm leave --force`) or fix the inventory",
                m.name, o.info.node_id, v.src
            ));
        };
        let is_manager = n.spec.role == "manager";
        let (verb, msg) = match (w.manager, is_manager) {
            (true, false) => ("promote", format!("promote {} to manager", m.name)),
            (false, true) => {
                let managers = v.nodes.iter().filter(|n| n.spec.role == "manager").count();
                if v.unreachable_managers > 0 || managers <= 1 {
                    self.notes.push(format!(
                        "{} should be a worker, but demoting it now could cost the swarm its quorum ({managers} managers, {} unreachable): left a manager",
                        m.name, v.unreachable_managers
                    ));
                    return Ok(None);
                }
                ("demote", format!("demote {} to worker", m.name))
            }
            _ => return Ok(None),
        };
        Ok(Some(Action {
            host: m.name.clone(),
            run_on: Some(v.src.to_owned()),
            msg,
            script: retrying(&format!("docker node {verb} {}", quote(&n.id))),
            stdin: None,
            serial: true,
        }))
    }

    /// A host not in a swarm joins it; None while the join tokens are not read yet. A
    /// manager never joins while another manager is unreachable.
    fn plan_join(&self, m: &Member, w: &Want, v: &View) -> Option<Action> {
        if w.manager && v.unreachable_managers > 0 {
            // Said at once: waiting cannot bring the down manager back.
            let down: Vec<&str> = v
                .nodes
                .iter()
                .filter(|n| {
                    n.manager_status
                        .as_ref()
                        .is_some_and(|s| s.reachability != "reachable")
                })
                .map(|n| n.description.hostname.as_str())
                .collect();
            return Some(super::refusal(
                &m.name,
                format!(
                    "{} cannot join as a manager while manager(s) {} are unreachable: \
                     a new manager then counts toward a quorum the swarm may not reach; \
                     bring them back (or remove them), then run again",
                    m.name,
                    down.join(", ")
                ),
            ));
        }
        let (wt, mt) = self.tokens.as_ref()?;
        let body = join_body(
            if w.manager { mt } else { wt },
            &w.addr,
            w.data_addr.as_deref(),
            v.src_addr,
        );
        Some(Action {
            host: m.name.clone(),
            run_on: None,
            msg: format!(
                "join {} as {} via {}",
                m.name,
                if w.manager { "manager" } else { "worker" },
                v.src
            ),
            script: JOIN_SCRIPT.into(),
            stdin: Some(body.into_bytes()),
            serial: w.manager,
        })
    }

    /// Nodes in the swarm that the inventory does not know: reported, never removed.
    fn note_unknown_nodes(
        &mut self,
        members: &[Member],
        obs: &IndexMap<String, Seen1>,
        nodes: &[Node],
        cx: &Ctx,
    ) {
        let known: Vec<&str> = obs.values().map(|o| o.info.node_id.as_str()).collect();
        for n in nodes {
            // A host of the inventory left out of this step (failed, unreachable) is not news.
            if !known.contains(&n.id.as_str())
                && !members.iter().any(|m| m.name == n.description.hostname)
                && !cx.inventory.hosts.contains_key(&n.description.hostname)
            {
                self.notes.push(format!(
                    "node {} ({}, {}, {}) is in the swarm but not in the inventory: left alone",
                    n.description.hostname,
                    n.spec.role,
                    n.status.state,
                    &n.id[..n.id.len().min(12)]
                ));
            }
        }
    }

    /// What the later steps read: the cluster, the manager that answered, node ids.
    fn publish(&mut self, obs: &IndexMap<String, Seen1>, nodes: &[Node], cluster: &str, src: &str) {
        let node_ids: serde_json::Map<String, Value> = obs
            .iter()
            .filter(|(_, o)| !o.info.node_id.is_empty())
            .map(|(h, o)| (h.clone(), json!(o.info.node_id)))
            .collect();
        let managers: Vec<String> = nodes
            .iter()
            .filter_map(|n| n.manager_status.as_ref().map(|s| s.addr.clone()))
            .collect();
        self.published =
            json!({"cluster_id": cluster, "source": src, "managers": managers, "nodes": node_ids});
    }

    /// No swarm among the members: create one, unless some host cannot tell.
    fn plan_init(
        &mut self,
        members: &[Member],
        obs: &IndexMap<String, Seen1>,
    ) -> Result<Vec<Action>, String> {
        for m in members {
            let Some(w) = self.want.get(&m.name) else {
                continue;
            };
            match obs.get(&m.name).map(|o| o.info.local_node_state.as_str()) {
                Some("inactive") => {}
                Some("active") | Some("pending") | Some("locked") | Some("error") => {
                    return Err(format!(
                        "{} is in a swarm, but no manager of it answers: start docker on a manager \
                         (or restore quorum) and run again; a new swarm is not made while one exists",
                        m.name
                    ))
                }
                _ if w.manager => {
                    return Err(format!(
                        "cannot tell whether {} is in a swarm (unreachable, or docker is not running): \
                         a new swarm is not made until every manager answers",
                        m.name
                    ))
                }
                _ => {}
            }
        }
        let Some(first) = members
            .iter()
            .find(|m| m.writable && self.want.get(&m.name).is_some_and(|w| w.manager))
        else {
            return Err(
                "no host is in a swarm yet, and no manager is inside --limit to create it on"
                    .into(),
            );
        };
        let w = &self.want[&first.name];
        let mut cmd = format!("docker swarm init --advertise-addr {}", w.addr);
        if let Some(d) = &w.data_addr {
            cmd += &format!(" --data-path-addr {}", quote(d));
        }
        for p in &self.pools {
            cmd += &format!(" --default-addr-pool {}", quote(p));
        }
        if let Some(n) = self.pool_mask {
            cmd += &format!(" --default-addr-pool-mask-length {n}");
        }
        self.published = Value::Null;
        Ok(vec![Action {
            host: first.name.clone(),
            run_on: None,
            msg: format!("create the swarm on {} (no host is in one)", first.name),
            script: format!("{cmd} >/dev/null"),
            stdin: None,
            serial: true,
        }])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_docker_prints() {
        let out = "==PROVISION info\n{\"NodeID\":\"abc\",\"NodeAddr\":\"10.0.0.1\",\"LocalNodeState\":\"active\",\"ControlAvailable\":true,\"Error\":\"\",\"RemoteManagers\":[],\"Cluster\":{\"ID\":\"c1\"}}\n==PROVISION nodes\n{\"ID\":\"abc\",\"Spec\":{\"Labels\":{\"zone\":\"a\"},\"Role\":\"manager\",\"Availability\":\"active\"},\"Description\":{\"Hostname\":\"node1\"},\"Status\":{\"State\":\"ready\",\"Addr\":\"10.0.0.1\"},\"ManagerStatus\":{\"Leader\":true,\"Reachability\":\"reachable\",\"Addr\":\"10.0.0.1:2377\"}}\n";
        let s = parse(out);
        assert_eq!(s.info.local_node_state, "active");
        assert_eq!(s.info.cluster.unwrap().id, "c1");
        let n = &s.nodes.unwrap()[0];
        assert_eq!(n.spec.labels["zone"], "a");
        assert!(n.manager_status.as_ref().unwrap().leader);
        assert_eq!(
            parse("==PROVISION info\nCannot connect\n")
                .info
                .local_node_state,
            "down"
        );
        assert_eq!(
            parse("==PROVISION info\n{\"LocalNodeState\":\"down\"}\n")
                .info
                .local_node_state,
            "down"
        );
    }

    fn member(n: &str, role: &str, writable: bool) -> Member {
        crate::cluster::testing::member(
            n,
            json!({"role": role, "advertise_addr": "10.0.0.1"}),
            writable,
        )
    }

    /// A node's probe: its state, and (for an active manager) the swarm's nodes as
    /// (name, role, manager reachability).
    fn info(state: &str, id: &str, nodes: &[(&str, &str, &str)]) -> String {
        let control = !nodes.is_empty();
        let mut o = format!(
            "==PROVISION info\n{{\"NodeID\":\"{id}\",\"NodeAddr\":\"10.0.0.1\",\"LocalNodeState\":\"{state}\",\"ControlAvailable\":{control},\"Cluster\":{}}}\n",
            if state == "active" { "{\"ID\":\"c1\"}" } else { "null" }
        );
        if control {
            o += "==PROVISION nodes\n";
            for (n, role, reach) in nodes {
                let ms = if *role == "manager" {
                    format!(
                        ",\"ManagerStatus\":{{\"Leader\":{},\"Reachability\":\"{reach}\"}}",
                        *n == "m1"
                    )
                } else {
                    String::new()
                };
                o += &format!("{{\"ID\":\"id-{n}\",\"Spec\":{{\"Role\":\"{role}\",\"Availability\":\"active\"}},\"Description\":{{\"Hostname\":\"{n}\"}},\"Status\":{{\"State\":\"ready\"}}{ms}}}\n");
            }
            o += "==PROVISION tokens\nSWMTKN-w\nSWMTKN-m\n";
        }
        o
    }

    fn planned(ms: &[Member], outs: &[(&str, String)]) -> Result<Vec<Action>, String> {
        crate::cluster::testing::plan_once(&mut Swarm::default(), ms, outs)
    }

    fn msgs(a: &[Action]) -> Vec<&str> {
        a.iter().map(|a| a.msg.as_str()).collect()
    }

    #[test]
    fn a_replaced_machine_old_down_node_is_removed_once_the_new_one_is_ready() {
        let ms = vec![member("m1", "manager", true), member("w1", "worker", true)];
        let swarm = [("m1", "manager", "reachable"), ("w1", "worker", "")];
        let old = "{\"ID\":\"old-w1\",\"Spec\":{\"Role\":\"worker\"},\"Description\":{\"Hostname\":\"w1\"},\"Status\":{\"State\":\"down\"}}\n";
        let m1 = info("active", "id-m1", &swarm)
            .replace("==PROVISION tokens", &format!("{old}==PROVISION tokens"));
        let outs = vec![("m1", m1.clone()), ("w1", info("active", "id-w1", &[]))];
        let a = planned(&ms, &outs).unwrap();
        assert_eq!(
            msgs(&a),
            ["remove w1's old swarm node old-w1 (down; it joined anew as id-w1)"]
        );
        assert_eq!(a[0].run_on.as_deref(), Some("m1"));
        assert!(
            a[0].script.contains("docker node rm --force old-w1"),
            "{}",
            a[0].script
        );
        // Still joining: the old node stays until the new one is in.
        let outs = vec![("m1", m1), ("w1", info("inactive", "", &[]))];
        let a = planned(&ms, &outs).unwrap();
        assert!(
            a.iter().all(|a| !a.msg.contains("old swarm node")),
            "{:?}",
            msgs(&a)
        );
    }

    #[test]
    fn managers_join_one_at_a_time_and_workers_together_with_the_token_on_stdin() {
        let ms = vec![
            member("m1", "manager", true),
            member("m2", "manager", true),
            member("m3", "manager", true),
            member("w1", "worker", true),
            member("w2", "worker", true),
        ];
        let swarm = [("m1", "manager", "reachable")];
        let outs = vec![
            ("m1", info("active", "id-m1", &swarm)),
            ("m2", info("inactive", "", &[])),
            ("m3", info("inactive", "", &[])),
            ("w1", info("inactive", "", &[])),
            ("w2", info("inactive", "", &[])),
        ];
        let a = planned(&ms, &outs).unwrap();
        let joins: Vec<&Action> = a.iter().filter(|a| a.msg.starts_with("join")).collect();
        assert_eq!(joins.len(), 4, "{:?}", msgs(&a));
        for j in &joins {
            assert_eq!(j.serial, j.msg.contains("as manager"), "{}", j.msg);
            assert!(!j.script.contains("SWMTKN"), "a token in a script");
            assert!(String::from_utf8_lossy(j.stdin.as_deref().unwrap()).contains("SWMTKN"));
        }
    }

    #[test]
    fn a_manager_join_is_refused_at_once_while_a_manager_is_unreachable() {
        let ms = vec![
            member("m1", "manager", true),
            member("m2", "manager", true),
            member("m3", "manager", true),
            member("w1", "worker", true),
        ];
        let swarm = [
            ("m1", "manager", "reachable"),
            ("m2", "manager", "unreachable"),
        ];
        let outs = vec![
            ("m1", info("active", "id-m1", &swarm)),
            ("m3", info("inactive", "", &[])),
            ("w1", info("inactive", "", &[])),
        ];
        let a = planned(&ms, &outs).unwrap();
        let m3: Vec<&Action> = a.iter().filter(|a| a.host == "m3").collect();
        assert_eq!(m3.len(), 1, "{:?}", msgs(&a));
        assert!(
            m3[0].msg.contains("cannot join as a manager") && m3[0].msg.contains("m2"),
            "{}",
            m3[0].msg
        );
        assert!(m3[0].script.contains("exit 3"), "a refusal changes nothing");
        // The worker still joins, through the live manager.
        assert!(
            a.iter()
                .any(|a| a.host == "w1" && a.msg.contains("join w1 as worker via m1")),
            "{:?}",
            msgs(&a)
        );
    }

    #[test]
    fn promotions_come_before_demotions() {
        // w1 becomes a manager and m3 a worker: promote first, so the count never dips.
        let ms = vec![
            member("m1", "manager", true),
            member("m2", "manager", true),
            member("m3", "worker", true),
            member("w1", "manager", true),
        ];
        let swarm = [
            ("m1", "manager", "reachable"),
            ("m2", "manager", "reachable"),
            ("m3", "manager", "reachable"),
            ("w1", "worker", ""),
        ];
        let node = |n: &str| info("active", &format!("id-{n}"), &[]);
        let outs = vec![
            ("m1", info("active", "id-m1", &swarm)),
            ("m2", node("m2")),
            ("m3", node("m3")),
            ("w1", node("w1")),
        ];
        let a = planned(&ms, &outs).unwrap();
        let m = msgs(&a);
        let p = m
            .iter()
            .position(|x| x.contains("promote w1"))
            .expect("promoted");
        assert!(
            !m.iter().any(|x| x.contains("demote m3"))
                || m.iter().position(|x| x.contains("demote m3")).unwrap() > p,
            "{m:?}"
        );
        assert!(a[p].serial);
    }

    #[test]
    fn no_swarm_is_created_while_a_manager_does_not_answer_and_a_silent_docker_fails_alone() {
        // Nobody in a swarm, m2 not read: creating one now could make a second swarm.
        let ms = vec![
            member("m1", "manager", true),
            member("m2", "manager", true),
            member("m3", "manager", true),
        ];
        let outs = vec![
            ("m1", info("inactive", "", &[])),
            ("m3", info("inactive", "", &[])),
        ];
        match planned(&ms, &outs) {
            Ok(a) => assert!(!a.iter().any(|a| a.msg.contains("init")), "{:?}", msgs(&a)),
            Err(e) => assert!(e.contains("m2"), "{e}"),
        }
        // In a swarm, a worker whose docker does not answer fails alone; the others go on.
        let ms = vec![
            member("m1", "manager", true),
            member("w1", "worker", true),
            member("w2", "worker", true),
        ];
        let swarm = [("m1", "manager", "reachable")];
        let outs = vec![
            ("m1", info("active", "id-m1", &swarm)),
            ("w1", info("down", "", &[])),
            ("w2", info("inactive", "", &[])),
        ];
        let a = planned(&ms, &outs).unwrap();
        assert!(
            a.iter().any(|a| a.host == "w1"
                && a.msg.contains("docker does not answer on w1")
                && a.script.contains("exit 3")),
            "{:?}",
            msgs(&a)
        );
        assert!(
            a.iter()
                .any(|a| a.host == "w2" && a.msg.contains("join w2")),
            "{:?}",
            msgs(&a)
        );
    }

    #[test]
    fn out_of_sequence_updates_are_retried_other_errors_are_not() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("n");
        let flaky = format!(
            "{{ c=$(cat {f} 2>/dev/null || echo 0); c=$((c+1)); echo $c > {f}; [ $c -ge 3 ] || {{ echo 'rpc error: update out of sequence'; false; }}; }}",
            f = f.display()
        );
        let ok = std::process::Command::new("sh")
            .arg("-c")
            .arg(retrying(&flaky))
            .output()
            .unwrap();
        assert!(ok.status.success());
        assert_eq!(std::fs::read_to_string(&f).unwrap().trim(), "3");
        let bad = std::process::Command::new("sh")
            .arg("-c")
            .arg(retrying("{ echo 'no such node'; false; }"))
            .output()
            .unwrap();
        assert!(!bad.status.success());
        assert!(String::from_utf8_lossy(&bad.stderr).contains("no such node"));
    }

    #[test]
    fn a_just_demoted_node_is_not_another_swarm() {
        let ms = vec![member("a", "manager", true), member("b", "worker", true)];
        let mut seen = IndexMap::new();
        seen.insert("a".to_string(), parse("==PROVISION info\n{\"NodeID\":\"n1\",\"LocalNodeState\":\"active\",\"ControlAvailable\":true,\"Cluster\":{\"ID\":\"c1\"}}\n==PROVISION nodes\n{\"ID\":\"n1\",\"Spec\":{\"Role\":\"manager\"}}\n"));
        seen.insert("b".to_string(), parse("==PROVISION info\n{\"NodeID\":\"n2\",\"LocalNodeState\":\"active\",\"ControlAvailable\":true,\"Cluster\":{\"ID\":\"\"}}\n"));
        let (src, _, id) = source(&ms, &seen).unwrap().unwrap();
        assert_eq!((src.as_str(), id.as_str()), ("a", "c1"));
    }

    #[test]
    fn even_managers_refused_unless_allowed() {
        let d = tempfile::tempdir().unwrap();
        let st = crate::state::State::read_only(d.path());
        let inv = crate::inventory::Inventory::default();
        let cx = Ctx {
            state: &st,
            inventory: &inv,
            check: false,
            new_ca: false,
        };
        let ms = vec![member("a", "manager", true), member("b", "manager", true)];
        assert!(Swarm::default()
            .prepare(&ms, &cx)
            .unwrap_err()
            .contains("even"));
        let mut ms2 = ms.clone();
        ms2[0]
            .args
            .insert("allow_even_managers".into(), json!(true));
        assert!(Swarm::default().prepare(&ms2, &cx).is_ok());
        let bad = vec![member("a", "boss", true)];
        assert!(Swarm::default()
            .prepare(&bad, &cx)
            .unwrap_err()
            .contains("manager or worker"));
    }

    #[test]
    fn init_only_when_no_host_is_in_a_swarm_and_every_manager_answers() {
        let d = tempfile::tempdir().unwrap();
        let st = crate::state::State::read_only(d.path());
        let inv = crate::inventory::Inventory::default();
        let cx = Ctx {
            state: &st,
            inventory: &inv,
            check: false,
            new_ca: false,
        };
        let ms = vec![
            member("a", "manager", false),
            member("b", "manager", true),
            member("c", "manager", true),
        ];
        let mut s = Swarm::default();
        s.prepare(&ms, &cx).unwrap();
        let inactive = Ok(crate::transport::Output {
            rc: 0,
            stdout: "==PROVISION info\n{\"LocalNodeState\":\"inactive\"}\n".into(),
            stderr: String::new(),
        });
        let mut seen: Seen = IndexMap::new();
        seen.insert("a".into(), Err("unreachable".into()));
        seen.insert("b".into(), inactive.clone());
        seen.insert("c".into(), inactive.clone());
        assert!(s
            .plan(&ms, &seen, &cx)
            .unwrap_err()
            .contains("cannot tell whether a"));
        seen.insert("a".into(), inactive);
        let a = s.plan(&ms, &seen, &cx).unwrap();
        assert_eq!(a.len(), 1);
        assert_eq!(
            a[0].host, "b",
            "init on a manager inside --limit, not the first in the file"
        );
        assert!(a[0]
            .script
            .starts_with("docker swarm init --advertise-addr 10.0.0.1"));
    }
}
