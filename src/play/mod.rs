//! Playbooks, roles and tasks as data: parsed with locations and checked against the
//! module specs before any host is contacted.

use crate::inventory::vars_map;
use crate::modules;
use crate::yaml::{self, check_keys, closest, err, Kind, Loc, Located, Node};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

use crate::assets::{ROLES, TEMPLATES};

/// The built-in cluster playbook: groups mapped to roles, in order. The etcd play is
/// there when the inventory has an `etcd` group, the Ceph play with a `ceph_osds` group,
/// the swarm play with a `managers` group.
pub fn builtin(inv: &crate::inventory::Inventory) -> String {
    let mut s = String::from(
        "- name: cluster hosts\n  hosts: all\n  roles: [bootstrap, hardening, firewall, pki]\n",
    );
    if inv.groups.contains_key("etcd") {
        s += "- name: etcd\n  hosts: etcd\n  roles: [etcd]\n";
    }
    if inv.groups.contains_key("ceph_osds") {
        // Before docker: CephFS is mounted on the swarm nodes before docker starts.
        s += "- name: ceph\n  hosts: ceph_mons:ceph_mgrs:ceph_mds:ceph_osds:ceph_clients\n  roles: [ceph]\n";
    }
    if inv.groups.contains_key("managers") {
        let hosts = if inv.groups.contains_key("workers") {
            "managers:workers"
        } else {
            "managers"
        };
        s += &format!("- name: docker swarm\n  hosts: {hosts}\n  roles: [docker, swarm, stacks]\n");
    }
    s
}

const TASK_KEYS: &[&str] = &[
    "name",
    "when",
    "loop",
    "register",
    "notify",
    "tags",
    "become",
    "become_user",
    "ignore_errors",
    "no_log",
    "vars",
    "listen",
    "changed_when",
    "throttle",
];
const PLAY_KEYS: &[&str] = &["name", "hosts", "roles", "vars", "become", "tags"];

#[derive(Debug, Clone)]
pub struct Task {
    pub name: String,
    pub role: String,
    pub module: String,
    pub args: Node,
    pub when: Option<String>,
    pub changed_when: Option<String>,
    pub items: Option<Node>,
    pub register: Option<String>,
    pub notify: Vec<String>,
    pub tags: Vec<String>,
    pub sudo: Option<bool>,
    pub become_user: Option<String>,
    pub ignore_errors: bool,
    pub no_log: bool,
    /// At most this many hosts run the task at once (1: one host after another).
    pub throttle: Option<usize>,
    pub vars: Map<String, Value>,
    pub loc: Loc,
}

#[derive(Debug, Clone)]
pub struct Role {
    pub name: String,
    pub tasks: Vec<Task>,
    pub handlers: Vec<Task>,
    pub defaults: Map<String, Value>,
    /// Template name to its source text.
    pub templates: Vec<(String, String)>,
    /// roles/ROLE/files: name to content, for `copy: src=`.
    pub files: Vec<(String, String)>,
}

#[derive(Debug, Clone)]
pub struct Play {
    pub name: String,
    pub hosts: String,
    pub roles: Vec<Role>,
    pub vars: Map<String, Value>,
    pub sudo: Option<bool>,
    pub loc: Loc,
}

/// Where roles come from: a directory first (if given), then the ones built in.
pub struct RoleSource {
    pub dir: Option<PathBuf>,
}

impl RoleSource {
    pub(crate) fn read(&self, role: &str, rel: &str) -> Option<(String, PathBuf)> {
        if let Some(d) = &self.dir {
            let p = d.join(role).join(rel);
            if let Ok(t) = std::fs::read_to_string(&p) {
                return Some((t, p));
            }
        }
        let f = ROLES.get_file(format!("{role}/{rel}"))?;
        Some((
            f.contents_utf8()?.to_owned(),
            PathBuf::from(format!("<built-in>/roles/{role}/{rel}")),
        ))
    }

    fn exists(&self, role: &str) -> bool {
        self.dir.as_ref().is_some_and(|d| d.join(role).is_dir()) || ROLES.get_dir(role).is_some()
    }

    fn known(&self) -> Vec<String> {
        let mut v: Vec<String> = ROLES
            .dirs()
            .map(|d| d.path().display().to_string())
            .collect();
        if let Some(d) = &self.dir {
            if let Ok(rd) = std::fs::read_dir(d) {
                v.extend(
                    rd.flatten()
                        .filter(|e| e.path().is_dir())
                        .map(|e| e.file_name().to_string_lossy().into_owned()),
                );
            }
        }
        v
    }

    /// Files of roles/ROLE/SUB (`templates` also from templates/ROLE/), by file name.
    fn folder(&self, role: &str, sub: &str) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if let Some(d) = &self.dir {
            for sub in [
                d.join(role).join(sub),
                d.parent().unwrap_or(d).join(sub).join(role),
            ] {
                if let Ok(rd) = std::fs::read_dir(&sub) {
                    for e in rd.flatten() {
                        if let Ok(t) = std::fs::read_to_string(e.path()) {
                            out.push((e.file_name().to_string_lossy().into_owned(), t));
                        }
                    }
                }
            }
        }
        let shared = if sub == "templates" {
            TEMPLATES.get_dir(role)
        } else {
            None
        };
        for dir in [ROLES.get_dir(format!("{role}/{sub}")), shared]
            .into_iter()
            .flatten()
        {
            for f in dir.files() {
                let name = f
                    .path()
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                if !out.iter().any(|(n, _)| *n == name) {
                    out.push((name, f.contents_utf8().unwrap_or_default().to_owned()));
                }
            }
        }
        out
    }
}

pub fn load_playbook(text: &str, path: &Path, roles: &RoleSource) -> Result<Vec<Play>, Located> {
    let root = yaml::parse(text, path)?;
    let Kind::Seq(items) = &root.kind else {
        return Err(err(
            &root.loc,
            format!(
                "a playbook must be a list of plays, found {}",
                root.type_name()
            ),
        )
        .hint("start each play with `- hosts: PATTERN`"));
    };
    if items.is_empty() {
        return Err(err(&root.loc, "the playbook has no plays"));
    }
    items.iter().map(|p| parse_play(p, roles)).collect()
}

fn parse_play(node: &Node, roles: &RoleSource) -> Result<Play, Located> {
    let mut play = Play {
        name: String::new(),
        hosts: String::new(),
        roles: Vec::new(),
        vars: Map::new(),
        sudo: None,
        loc: node.loc.clone(),
    };
    let mut has_hosts = false;
    for (k, kn, v) in node.entries("a play")? {
        check_keys(&k, kn, PLAY_KEYS, "a play")?;
        match k.as_str() {
            "name" => play.name = v.scalar_string("name")?,
            "hosts" => {
                play.hosts = v.string_list("hosts")?.join(":");
                has_hosts = true;
            }
            "vars" => play.vars = vars_map(v, "play vars")?,
            "become" => play.sudo = Some(v.as_bool("become")?),
            "tags" => {}
            _ => {
                let Kind::Seq(list) = &v.kind else {
                    return Err(err(
                        &v.loc,
                        format!("roles must be a list, found {}", v.type_name()),
                    ));
                };
                for r in list {
                    play.roles.push(load_role(r, roles)?);
                }
            }
        }
    }
    if !has_hosts {
        return Err(
            err(&node.loc, "this play has no `hosts`").hint("add `hosts: all` or a group name")
        );
    }
    if play.name.is_empty() {
        play.name = play.hosts.clone();
    }
    Ok(play)
}

fn load_role(node: &Node, src: &RoleSource) -> Result<Role, Located> {
    let (name, vars) = match &node.kind {
        Kind::Str(s) => (s.clone(), Map::new()),
        Kind::Map(_) => {
            let mut name = None;
            let mut vars = Map::new();
            for (k, kn, v) in node.entries("a role")? {
                match k.as_str() {
                    "role" | "name" => name = Some(v.scalar_string("role")?),
                    "vars" => vars = vars_map(v, "role vars")?,
                    _ => {
                        vars.insert(k.clone(), v.to_json());
                        let _ = kn;
                    }
                }
            }
            (
                name.ok_or_else(|| err(&node.loc, "this role entry has no `role:` name"))?,
                vars,
            )
        }
        _ => {
            return Err(err(
                &node.loc,
                format!(
                    "a role is a name or a mapping with `role:`, found {}",
                    node.type_name()
                ),
            ))
        }
    };
    if !src.exists(&name) {
        let known = src.known();
        let refs: Vec<&str> = known.iter().map(String::as_str).collect();
        let e = err(&node.loc, format!("unknown role `{name}`"));
        return Err(match closest(&name, &refs) {
            Some(c) => e.hint(format!("did you mean `{c}`?")),
            None => e.hint(format!("known roles: {}", known.join(", "))),
        });
    }
    let mut defaults = Map::new();
    if let Some((t, p)) = src.read(&name, "defaults/main.yml") {
        defaults = vars_map(&yaml::parse(&t, &p)?, "role defaults")?;
    }
    for (k, v) in vars {
        defaults.insert(k, v);
    }
    let assets = Assets {
        templates: src.folder(&name, "templates"),
        files: src.folder(&name, "files"),
    };
    let tasks = match src.read(&name, "tasks/main.yml") {
        Some((t, p)) => parse_tasks(&yaml::parse(&t, &p)?, &name, &assets)?,
        None => Vec::new(),
    };
    let handlers = match src.read(&name, "handlers/main.yml") {
        Some((t, p)) => parse_tasks(&yaml::parse(&t, &p)?, &name, &assets)?,
        None => Vec::new(),
    };
    for t in &tasks {
        for n in &t.notify {
            if !handlers.iter().any(|h| &h.name == n) {
                return Err(err(
                    &t.loc,
                    format!(
                        "task `{}` notifies `{n}`, which is no handler of role `{name}`",
                        t.name
                    ),
                ));
            }
        }
    }
    Ok(Role {
        name,
        tasks,
        handlers,
        defaults,
        templates: assets.templates,
        files: assets.files,
    })
}

/// A role's templates and plain files, by file name.
#[derive(Default)]
pub struct Assets {
    pub templates: Vec<(String, String)>,
    pub files: Vec<(String, String)>,
}

pub fn parse_tasks(node: &Node, role: &str, assets: &Assets) -> Result<Vec<Task>, Located> {
    match &node.kind {
        Kind::Null => Ok(Vec::new()),
        Kind::Seq(items) => items.iter().map(|t| parse_task(t, role, assets)).collect(),
        _ => Err(err(
            &node.loc,
            format!(
                "a task file must be a list of tasks, found {}",
                node.type_name()
            ),
        )),
    }
}

fn parse_task(node: &Node, role: &str, assets: &Assets) -> Result<Task, Located> {
    let mut t = Task {
        name: String::new(),
        role: role.to_owned(),
        module: String::new(),
        args: node.clone(),
        when: None,
        changed_when: None,
        items: None,
        register: None,
        notify: Vec::new(),
        tags: Vec::new(),
        sudo: None,
        become_user: None,
        ignore_errors: false,
        throttle: None,
        no_log: false,
        vars: Map::new(),
        loc: node.loc.clone(),
    };
    for (k, kn, v) in node.entries("a task")? {
        match k.as_str() {
            "name" => t.name = v.scalar_string("name")?,
            "when" => {
                t.when = Some(match &v.kind {
                    Kind::Seq(_) => v
                        .string_list("when")?
                        .iter()
                        .map(|c| format!("({c})"))
                        .collect::<Vec<_>>()
                        .join(" and "),
                    Kind::Bool(b) => b.to_string(),
                    _ => v.scalar_string("when")?,
                })
            }
            "loop" => t.items = Some(v.clone()),
            "changed_when" => {
                t.changed_when = Some(match &v.kind {
                    Kind::Bool(b) => b.to_string(),
                    _ => v.scalar_string("changed_when")?,
                })
            }
            "register" => t.register = Some(v.as_str("register")?.to_owned()),
            "notify" | "listen" => t.notify = v.string_list("notify")?,
            "tags" => t.tags = v.string_list("tags")?,
            "become" => t.sudo = Some(v.as_bool("become")?),
            "become_user" => t.become_user = Some(v.scalar_string("become_user")?),
            "ignore_errors" => t.ignore_errors = v.as_bool("ignore_errors")?,
            "no_log" => t.no_log = v.as_bool("no_log")?,
            "throttle" => {
                let n = match &v.kind {
                    Kind::Int(n) if *n > 0 => *n as usize,
                    _ => {
                        return Err(err(&v.loc, "`throttle` must be a positive number of hosts")
                            .hint("throttle: 1 runs the task on one host after another"))
                    }
                };
                t.throttle = Some(n);
            }
            "vars" => t.vars = vars_map(v, "task vars")?,
            m if modules::def(m).is_some() => {
                if !t.module.is_empty() {
                    return Err(err(
                        &kn.loc,
                        format!("this task has two modules, `{}` and `{m}`", t.module),
                    )
                    .hint("split it into two tasks"));
                }
                t.module = m.to_owned();
                t.args = v.clone();
            }
            _ => {
                let mut known: Vec<&str> = TASK_KEYS.to_vec();
                known.extend(modules::names());
                check_keys(&k, kn, &known, "a task (not a task keyword nor a module)")?;
            }
        }
    }
    if t.module.is_empty() {
        return Err(
            err(&node.loc, format!("task `{}` names no module", t.name)).hint(format!(
                "modules: {}",
                modules::names().collect::<Vec<_>>().join(", ")
            )),
        );
    }
    if modules::is_cluster(&t.module) && (t.items.is_some() || t.changed_when.is_some()) {
        return Err(err(
            &node.loc,
            format!(
                "`{}` is a cluster step: it takes no `loop` or `changed_when`",
                t.module
            ),
        )
        .hint("give it the list as an argument instead"));
    }
    check_args(&t, assets)?;
    if t.name.is_empty() {
        t.name = t.module.clone();
    }
    Ok(t)
}

/// Checks a task's arguments against its module's spec (free-form commands are `cmd`).
fn check_args(t: &Task, assets: &Assets) -> Result<(), Located> {
    let Some(d) = modules::def(&t.module) else {
        return Ok(());
    };
    let (required, optional) = (d.required, d.optional);
    let a = &t.args;
    if matches!(a.kind, Kind::Str(_)) && (t.module == "command" || t.module == "shell") {
        return Ok(());
    }
    let entries = a.entries(&format!("the arguments of `{}`", t.module))?;
    let mut known: Vec<&str> = required.to_vec();
    known.extend(optional);
    for (k, kn, v) in &entries {
        check_keys(k, kn, &known, &format!("module `{}`", t.module))?;
        if t.module == "template" && k == "src" {
            if let Kind::Str(s) = &v.kind {
                if !s.contains("{{") && !assets.templates.iter().any(|(n, _)| n == s) {
                    return Err(err(
                        &v.loc,
                        format!("template `{s}` not found for role `{}`", t.role),
                    )
                    .hint("put it in roles/ROLE/templates/ or templates/ROLE/"));
                }
            }
        }
    }
    for r in required {
        if !entries.iter().any(|(k, _, _)| k == r) {
            return Err(err(&a.loc, format!("module `{}` needs `{r}`", t.module)));
        }
    }
    if t.module == "copy" {
        let has = |key: &str| entries.iter().any(|(k, _, _)| k == key);
        if has("content") == has("src") {
            return Err(err(
                &a.loc,
                "module `copy` needs exactly one of `content` and `src`".to_string(),
            ));
        }
        if let Some((_, _, v)) = entries.iter().find(|(k, _, _)| k == "src") {
            if let Kind::Str(s) = &v.kind {
                let local = Path::new(s);
                let found = assets.files.iter().any(|(n, _)| n == s)
                    || (local.is_absolute() && local.is_file());
                if !s.contains("{{") && !found {
                    return Err(err(
                        &v.loc,
                        format!("file `{s}` not found for role `{}`", t.role),
                    )
                    .hint(
                        "put it in roles/ROLE/files/, or give an absolute path on this machine",
                    ));
                }
            }
        }
    }
    Ok(())
}
