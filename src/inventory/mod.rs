//! Ansible-style YAML inventories: parsed with locations, then resolved into hosts
//! with merged variables and connection settings, all invariants checked before any SSH.

mod address;
mod pattern;
mod range;
mod retire;

use crate::yaml::{self, check_keys, closest, err, Kind, Loc, Located, Node};
use indexmap::{IndexMap, IndexSet};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

pub use pattern::select;
pub use retire::Retired;

/// Connection variables users know from Ansible, and our short aliases.
const CONN_VARS: &[&str] = &[
    "ansible_host",
    "ansible_port",
    "ansible_user",
    "ansible_ssh_private_key_file",
    "ansible_become",
    "ansible_become_user",
    "ansible_ssh_common_args",
    "ansible_connection",
    "ansible_python_interpreter",
];
const GROUP_KEYS: &[&str] = &["hosts", "vars", "children"];

#[derive(Debug, Clone)]
pub struct Host {
    pub name: String,
    pub loc: Loc,
    pub address: String,
    pub port: u16,
    /// ansible_port was set (else ~/.ssh/config's Port may apply).
    pub port_given: bool,
    pub user: Option<String>,
    pub key_file: Option<PathBuf>,
    pub sudo: bool,
    pub become_user: String,
    /// Every variable, merged in precedence order.
    pub vars: Map<String, Value>,
    pub groups: Vec<String>,
}

#[derive(Debug, Clone, Default)]
pub struct Inventory {
    pub path: PathBuf,
    pub hosts: IndexMap<String, Host>,
    /// Group name to its hosts (children included), `all` and `ungrouped` too.
    pub groups: IndexMap<String, IndexSet<String>>,
    /// Each group's own hosts and child groups, as written (for `provision inventory`).
    pub tree: IndexMap<String, (Vec<String>, Vec<String>)>,
    pub warnings: Vec<String>,
    /// Hosts marked `provision_state: absent`: in no group, taken out of the cluster.
    pub retired: IndexMap<String, Retired>,
}

#[derive(Default)]
struct Group {
    loc: Option<Loc>,
    vars: Vec<(Map<String, Value>, Loc)>,
    hosts: IndexSet<String>,
    children: Vec<(String, Loc)>,
}

#[derive(Default)]
struct Raw {
    groups: IndexMap<String, Group>,
    host_vars: IndexMap<String, Vec<Map<String, Value>>>,
    host_locs: IndexMap<String, Loc>,
}

impl Inventory {
    pub fn load(path: &Path) -> Result<Inventory, Located> {
        let root = yaml::parse_file(path)?;
        let mut raw = Raw::default();
        raw.groups.insert("all".into(), Group::default());
        let entries = root.entries("the inventory")?;
        if entries.is_empty() {
            return Err(err(&root.loc, "the inventory defines no hosts")
                .hint("start with `all:` and list hosts under `all: hosts:`"));
        }
        for (name, key, body) in entries {
            if name != "all" {
                raw.groups["all"]
                    .children
                    .push((name.clone(), key.loc.clone()));
            }
            parse_group(&mut raw, &name, key, body)?;
        }
        let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        let mut warnings = Vec::new();
        resolve(path, dir, raw, &mut warnings)
    }

    pub fn host_names(&self) -> Vec<String> {
        self.hosts.keys().cloned().collect()
    }
}

fn parse_group(raw: &mut Raw, name: &str, key: &Node, body: &Node) -> Result<(), Located> {
    check_name(name, key, "group")?;
    let group = raw.groups.entry(name.to_owned()).or_default();
    if group.loc.is_none() {
        group.loc = Some(key.loc.clone());
    }
    let mut hosts = Vec::new();
    let mut children = Vec::new();
    for (k, knode, v) in body.entries(&format!("group `{name}`"))? {
        check_keys(
            &k,
            knode,
            GROUP_KEYS,
            &format!("group `{name}` (a group has hosts, vars and children)"),
        )?;
        match k.as_str() {
            "vars" => {
                let vars = vars_map(v, &format!("vars of group `{name}`"))?;
                raw.groups[name].vars.push((vars, v.loc.clone()));
            }
            "hosts" => {
                if let Kind::Seq(_) = v.kind {
                    return Err(err(
                        &v.loc,
                        format!(
                            "hosts of group `{name}` must be a mapping of host names, found a list"
                        ),
                    )
                    .hint(
                        "write each host as `name:` on its own line (with a colon), not `- name`",
                    ));
                }
                for (h, hnode, hvars) in v.entries(&format!("hosts of group `{name}`"))? {
                    hosts.push((h, hnode.clone(), hvars.clone()));
                }
            }
            _ => {
                for (c, cnode, cbody) in v.entries(&format!("children of group `{name}`"))? {
                    children.push((c, cnode.clone(), cbody.clone()));
                }
            }
        }
    }
    for (pattern, hnode, hvars) in hosts {
        let names = range::expand(&pattern).map_err(|e| {
            err(&hnode.loc, format!("invalid host range {e}"))
                .hint("for example web[01:10] or db-[a:c]")
        })?;
        let vars = vars_map(&hvars, &format!("vars of host `{pattern}`"))?;
        for h in names {
            check_name(&h, &hnode, "host")?;
            raw.groups[name].hosts.insert(h.clone());
            raw.host_locs.entry(h.clone()).or_insert(hnode.loc.clone());
            raw.host_vars.entry(h).or_default().push(vars.clone());
        }
    }
    for (c, cnode, cbody) in children {
        if c == "all" {
            return Err(err(&cnode.loc, "`all` cannot be a child group")
                .hint("every group is already a child of `all`"));
        }
        raw.groups[name]
            .children
            .push((c.clone(), cnode.loc.clone()));
        parse_group(raw, &c, &cnode, &cbody)?;
    }
    Ok(())
}

fn check_name(name: &str, node: &Node, what: &str) -> Result<(), Located> {
    let ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && !name.starts_with(['-', '.']);
    if !ok {
        return Err(err(&node.loc, format!("invalid {what} name `{name}`"))
            .hint("use letters, digits, `-`, `_` and `.`, or a range like web[01:10]"));
    }
    Ok(())
}

/// A mapping of variables; `ansible_*` keys must be ones we know.
pub fn vars_map(node: &Node, what: &str) -> Result<Map<String, Value>, Located> {
    let mut out = Map::new();
    for (k, knode, v) in node.entries(what)? {
        if k.starts_with("ansible_") {
            check_keys(&k, knode, CONN_VARS, "connection variables")?;
        }
        if !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            || k.starts_with(|c: char| c.is_ascii_digit())
        {
            return Err(
                err(&knode.loc, format!("invalid variable name `{k}`")).hint(
                    "variable names use letters, digits and `_`, and do not start with a digit",
                ),
            );
        }
        out.insert(k, v.to_json());
    }
    Ok(out)
}

// Long on purpose: the inventory resolved in order (groups and children checked, group_vars/ and host_vars/ read, variables merged by precedence).
fn resolve(
    path: &Path,
    dir: PathBuf,
    raw: Raw,
    warnings: &mut Vec<String>,
) -> Result<Inventory, Located> {
    let file_loc = Loc::file_only(path);
    // Children must name defined groups, without cycles.
    for (g, group) in &raw.groups {
        for (c, loc) in &group.children {
            if !raw.groups.contains_key(c) {
                return Err(err(loc, format!("group `{g}` has unknown child `{c}`")));
            }
        }
    }
    let names: Vec<String> = raw.groups.keys().cloned().collect();
    let mut members: IndexMap<String, IndexSet<String>> = IndexMap::new();
    let mut depth: IndexMap<String, usize> = IndexMap::new();
    for g in &names {
        let mut stack = Vec::new();
        collect_members(&raw, g, &mut stack, &mut members)?;
    }
    fn set_depth(raw: &Raw, g: &str, d: usize, depth: &mut IndexMap<String, usize>) {
        if depth.get(g).is_some_and(|old| *old >= d) {
            return;
        }
        depth.insert(g.to_owned(), d);
        for (c, _) in &raw.groups[g].children {
            set_depth(raw, c, d + 1, depth);
        }
    }
    set_depth(&raw, "all", 0, &mut depth);
    // group_vars/ and host_vars/ beside the inventory.
    let gv_files = side_vars(&dir.join("group_vars"))?;
    let hv_files = side_vars(&dir.join("host_vars"))?;
    for (g, (_, loc)) in &gv_files {
        if !raw.groups.contains_key(g) {
            let known: Vec<&str> = raw.groups.keys().map(String::as_str).collect();
            let e = err(loc, format!("group_vars for unknown group `{g}`"));
            return Err(match closest(g, &known) {
                Some(k) => e.hint(format!("did you mean `{k}`?")),
                None => e,
            });
        }
    }
    for (h, (_, loc)) in &hv_files {
        if !raw.host_vars.contains_key(h) {
            let known: Vec<&str> = raw.host_vars.keys().map(String::as_str).collect();
            let e = err(loc, format!("host_vars for unknown host `{h}`"));
            return Err(match closest(h, &known) {
                Some(k) => e.hint(format!("did you mean `{k}`?")),
                None => e,
            });
        }
    }
    let mut hosts = IndexMap::new();
    let mut seen_addr: IndexMap<(String, u16), String> = IndexMap::new();
    let host_names: Vec<String> = raw.host_vars.keys().cloned().collect();
    if host_names.is_empty() {
        return Err(err(&file_loc, "the inventory defines no hosts")
            .hint("list hosts under `all: hosts:` or a group's `hosts:`"));
    }
    for h in host_names {
        let loc = raw.host_locs[&h].clone();
        let mut groups: Vec<String> = names
            .iter()
            .filter(|g| members[*g].contains(&h))
            .cloned()
            .collect();
        groups.sort_by_key(|g| (depth.get(g).copied().unwrap_or(0), g.clone()));
        let mut vars = Map::new();
        for g in &groups {
            for (v, _) in &raw.groups[g].vars {
                merge(&mut vars, v);
            }
            if let Some((v, _)) = gv_files.get(g) {
                merge(&mut vars, v);
            }
        }
        for v in &raw.host_vars[&h] {
            merge(&mut vars, v);
        }
        if let Some((v, _)) = hv_files.get(&h) {
            merge(&mut vars, v);
        }
        let host = connection(&h, &loc, vars, groups, &dir)?;
        if let Some(other) = seen_addr.insert((host.address.clone(), host.port), h.clone()) {
            return Err(err(
                &loc,
                format!(
                    "hosts `{other}` and `{h}` both use address {}:{}",
                    host.address, host.port
                ),
            )
            .hint("each host needs its own ansible_host (or ansible_port)"));
        }
        if let Some(a) = host.vars.get("ansible_ssh_common_args") {
            let jump = a
                .as_str()
                .and_then(crate::transport::sshconfig::jump_from_args);
            if jump.is_none() {
                warnings.push(format!(
                    "{h}: ansible_ssh_common_args is ignored apart from ProxyJump (-J); put other options in ~/.ssh/config"
                ));
            }
        }
        hosts.insert(h, host);
    }
    let mut groups = members;
    let ungrouped: IndexSet<String> = hosts
        .keys()
        .filter(|h| names.iter().all(|g| g == "all" || !groups[g].contains(*h)))
        .cloned()
        .collect();
    groups.insert("ungrouped".into(), ungrouped);
    let tree = raw
        .groups
        .iter()
        .map(|(g, grp)| {
            let own: Vec<String> = grp.hosts.iter().cloned().collect();
            let children: Vec<String> = grp.children.iter().map(|(c, _)| c.clone()).collect();
            (g.clone(), (own, children))
        })
        .collect();
    let mut inv = Inventory {
        path: path.to_path_buf(),
        hosts,
        groups,
        tree,
        warnings: std::mem::take(warnings),
        retired: IndexMap::new(),
    };
    ceph_group_defaults(&mut inv);
    retire::extract(&mut inv)?;
    Ok(inv)
}

/// With a `ceph_osds` group, the other Ceph groups default to the cluster's own:
/// `ceph_mons` to the managers, `ceph_mgrs` and `ceph_mds` to the monitors, and
/// `ceph_clients` (the hosts that mount CephFS) to the managers and workers.
fn ceph_group_defaults(inv: &mut Inventory) {
    if !inv.groups.contains_key("ceph_osds") {
        return;
    }
    let defaults: [(&str, &[&str]); 4] = [
        ("ceph_mons", &["managers"]),
        ("ceph_mgrs", &["ceph_mons"]),
        ("ceph_mds", &["ceph_mons"]),
        ("ceph_clients", &["managers", "workers"]),
    ];
    for (g, from) in defaults {
        if inv.groups.contains_key(g) {
            continue;
        }
        let from: Vec<String> = from
            .iter()
            .filter(|f| inv.groups.contains_key(**f))
            .map(|f| f.to_string())
            .collect();
        let members: IndexSet<String> = from
            .iter()
            .flat_map(|f| inv.groups[f].iter().cloned())
            .collect();
        for h in &members {
            if let Some(host) = inv.hosts.get_mut(h) {
                host.groups.push(g.to_owned());
            }
        }
        inv.groups.insert(g.to_owned(), members);
        inv.tree.insert(g.to_owned(), (Vec::new(), from));
        if let Some(all) = inv.tree.get_mut("all") {
            all.1.push(g.to_owned());
        }
    }
}

fn collect_members(
    raw: &Raw,
    g: &str,
    stack: &mut Vec<String>,
    out: &mut IndexMap<String, IndexSet<String>>,
) -> Result<IndexSet<String>, Located> {
    if let Some(m) = out.get(g) {
        return Ok(m.clone());
    }
    if stack.iter().any(|s| s == g) {
        let loc = raw.groups[g]
            .loc
            .clone()
            .unwrap_or_else(|| Loc::file_only(Path::new("inventory")));
        stack.push(g.to_owned());
        return Err(
            err(&loc, format!("groups form a cycle: {}", stack.join(" -> ")))
                .hint("a group cannot be its own descendant"),
        );
    }
    stack.push(g.to_owned());
    let mut m = raw.groups[g].hosts.clone();
    for (c, _) in &raw.groups[g].children {
        m.extend(collect_members(raw, c, stack, out)?);
    }
    stack.pop();
    out.insert(g.to_owned(), m.clone());
    Ok(m)
}

fn merge(into: &mut Map<String, Value>, from: &Map<String, Value>) {
    for (k, v) in from {
        into.insert(k.clone(), v.clone());
    }
}

/// A group's or host's variables from a side file, and where they came from.
type SideVars = (Map<String, Value>, Loc);

/// Variables from `group_vars/NAME(.yml|.yaml)` files and `group_vars/NAME/` folders.
fn side_vars(dir: &Path) -> Result<IndexMap<String, SideVars>, Located> {
    let mut out = IndexMap::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Ok(out);
    };
    let mut entries: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
    entries.sort();
    for p in entries {
        let fname = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if fname.starts_with('.') {
            continue;
        }
        let files: Vec<PathBuf> = if p.is_dir() {
            let mut v: Vec<PathBuf> = std::fs::read_dir(&p)
                .map(|rd| rd.flatten().map(|e| e.path()).collect())
                .unwrap_or_default();
            v.retain(|f| is_yaml(f));
            v.sort();
            v
        } else if is_yaml(&p) || p.extension().is_none() {
            vec![p.clone()]
        } else {
            continue;
        };
        let name = if p.is_dir() {
            fname.clone()
        } else {
            fname
                .trim_end_matches(".yml")
                .trim_end_matches(".yaml")
                .to_owned()
        };
        let mut vars = Map::new();
        let loc = Loc::file_only(&p);
        for f in files {
            let node = yaml::parse_file(&f)?;
            merge(
                &mut vars,
                &vars_map(&node, &format!("variables in {}", f.display()))?,
            );
        }
        out.insert(name, (vars, loc));
    }
    Ok(out)
}

fn is_yaml(p: &Path) -> bool {
    matches!(p.extension().and_then(|e| e.to_str()), Some("yml" | "yaml"))
}

fn connection(
    name: &str,
    loc: &Loc,
    vars: Map<String, Value>,
    groups: Vec<String>,
    dir: &Path,
) -> Result<Host, Located> {
    let s = |k: &str| -> Result<Option<String>, Located> {
        match vars.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(other) => Err(err(
                loc,
                format!("{k} of host `{name}` must be a string, found {other}"),
            )),
        }
    };
    let port = match vars.get("ansible_port") {
        None | Some(Value::Null) => 22,
        Some(Value::Number(n)) => n
            .as_u64()
            .filter(|p| (1..=65535).contains(p))
            .map(|p| p as u16)
            .ok_or_else(|| {
                err(
                    loc,
                    format!("ansible_port of host `{name}` must be 1 to 65535, found {n}"),
                )
            })?,
        Some(Value::String(t)) => t.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| {
            err(
                loc,
                format!("ansible_port of host `{name}` must be 1 to 65535, found `{t}`"),
            )
        })?,
        Some(other) => {
            return Err(err(
                loc,
                format!("ansible_port of host `{name}` must be a number, found {other}"),
            ))
        }
    };
    let sudo = match vars.get("ansible_become") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(Value::String(t)) if ["yes", "true", "True"].contains(&t.as_str()) => true,
        Some(Value::String(t)) if ["no", "false", "False"].contains(&t.as_str()) => false,
        Some(other) => {
            return Err(err(
                loc,
                format!("ansible_become of host `{name}` must be true or false, found {other}"),
            ))
        }
    };
    if let Some(c) = s("ansible_connection")? {
        if c != "ssh" && c != "smart" {
            return Err(err(
                loc,
                format!("host `{name}` uses connection `{c}`; provision only speaks ssh"),
            ));
        }
    }
    let address = s("ansible_host")?.unwrap_or_else(|| name.to_owned());
    if let Some(why) = address::problem(&address) {
        return Err(err(
            loc,
            format!("ansible_host of host `{name}` is not a valid address: `{address}` ({why})"),
        )
        .hint("give an IP address or a host name the controller resolves"));
    }
    let key_file = s("ansible_ssh_private_key_file")?.map(|k| expand(&k, dir));
    Ok(Host {
        name: name.to_owned(),
        loc: loc.clone(),
        address,
        port,
        port_given: vars.get("ansible_port").is_some_and(|v| !v.is_null()),
        user: s("ansible_user")?,
        key_file,
        sudo,
        become_user: s("ansible_become_user")?.unwrap_or_else(|| "root".into()),
        vars,
        groups,
    })
}

/// `~/` is the home directory; relative paths are relative to the inventory's folder.
pub fn expand(p: &str, dir: &Path) -> PathBuf {
    if let Some(rest) = p.strip_prefix("~/") {
        if let Some(home) = std::env::var_os("HOME") {
            return PathBuf::from(home).join(rest);
        }
    }
    let path = PathBuf::from(p);
    if path.is_absolute() {
        path
    } else {
        dir.join(path)
    }
}
