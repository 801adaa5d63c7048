//! The engine: validate everything, connect once per host, gather facts in one round trip,
//! then run each play's roles on its hosts concurrently and tally the results.

use crate::inventory::{self, Inventory};
use crate::modules::{self, Plan};
use crate::output::{Reporter, Status, Tally};
use crate::play::{self, Play, RoleSource, Task};
use crate::template::{self, environment};
use crate::transport::{sshconfig, Conn, HostKeyPolicy, Keys, Secret, Target};
use crate::yaml::Located;
use indexmap::IndexMap;
use serde_json::{json, Map, Value};
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub struct Options {
    pub inventory: PathBuf,
    pub playbook: Option<PathBuf>,
    pub roles_dir: Option<PathBuf>,
    pub limit: Option<String>,
    pub tags: Vec<String>,
    pub skip_tags: Vec<String>,
    pub check: bool,
    pub diff: bool,
    pub forks: usize,
    pub accept_new_host_keys: bool,
    pub connect_timeout: Duration,
    pub command_timeout: Duration,
    pub any_errors_fatal: bool,
    pub max_fail_percentage: Option<u8>,
    /// An OpenSSH client config to honour (default ~/.ssh/config).
    pub ssh_config: Option<PathBuf>,
}

/// Everything validated, before any connection.
pub struct Prepared {
    pub inventory: Inventory,
    pub plays: Vec<(Play, Vec<String>)>,
    pub hosts: Vec<String>,
    pub targets: IndexMap<String, Target>,
}

#[derive(Debug, thiserror::Error)]
pub enum Invalid {
    #[error("{0}")]
    Located(#[from] Located),
    #[error("{0}")]
    Other(String),
}

pub fn prepare(o: &Options) -> Result<Prepared, Invalid> {
    let inventory = Inventory::load(&o.inventory)?;
    let roles = RoleSource {
        dir: o.roles_dir.clone(),
    };
    let (text, path) = match &o.playbook {
        Some(p) => (
            std::fs::read_to_string(p).map_err(|e| {
                Invalid::Other(format!("{}: cannot read the playbook: {e}", p.display()))
            })?,
            p.clone(),
        ),
        None => (
            play::BUILTIN.to_owned(),
            PathBuf::from("<built-in playbook>"),
        ),
    };
    let plays = play::load_playbook(&text, &path, &roles)?;
    let limit = match &o.limit {
        Some(l) => Some(
            inventory::select(&inventory, l)
                .map_err(|e| Invalid::Other(format!("--limit: {e}")))?,
        ),
        None => None,
    };
    let mut all = Vec::new();
    let mut out = Vec::new();
    for p in plays {
        let mut hosts = inventory::select(&inventory, &p.hosts)
            .map_err(|e| Invalid::Other(format!("{}: play `{}`: {e}", p.loc, p.name)))?;
        if let Some(l) = &limit {
            hosts.retain(|h| l.contains(h));
        }
        for h in &hosts {
            if !all.contains(h) {
                all.push(h.clone());
            }
        }
        out.push((p, hosts));
    }
    if all.is_empty() {
        return Err(Invalid::Other(format!(
            "no host matches{}",
            o.limit
                .as_ref()
                .map(|l| format!(" --limit `{l}`"))
                .unwrap_or_default()
        )));
    }
    let cfg_path = o
        .ssh_config
        .clone()
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".ssh/config")));
    let cfg = match cfg_path {
        Some(p) if o.ssh_config.is_some() && !p.exists() => {
            return Err(Invalid::Other(format!(
                "--ssh-config {}: no such file",
                p.display()
            )))
        }
        Some(p) => sshconfig::Config::load(&p).map_err(Invalid::Other)?,
        None => Default::default(),
    };
    let mut targets = IndexMap::new();
    for h in &all {
        let host = &inventory.hosts[h];
        let t = target(o, &inventory, host, &cfg)
            .map_err(|e| Invalid::Other(format!("{}: {e}", host.loc)))?;
        targets.insert(h.clone(), t);
    }
    Ok(Prepared {
        inventory,
        plays: out,
        hosts: all,
        targets,
    })
}

pub struct Summary {
    pub tallies: IndexMap<String, Tally>,
    pub connections: u64,
}

impl Summary {
    pub fn changed(&self) -> u32 {
        self.tallies.values().map(|t| t.changed).sum()
    }
}

struct HostRun {
    conn: Option<Arc<Conn>>,
    facts: Map<String, Value>,
    tally: Tally,
    failed: bool,
    registered: Map<String, Value>,
}

const FACTS: &str = r#"set +e; . /etc/os-release 2>/dev/null
echo "ansible_distribution=$ID"; echo "ansible_distribution_version=$VERSION_ID"; echo "ansible_distribution_release=$VERSION_CODENAME"
echo "ansible_architecture=$(uname -m)"; echo "ansible_kernel=$(uname -r)"; echo "ansible_hostname=$(hostname)"
echo "ansible_default_ipv4_address=$(ip -4 route get 1.1.1.1 2>/dev/null | sed -n 's/.* src \([0-9.]*\).*/\1/p')"
echo "ansible_all_ipv4_addresses=$(hostname -I 2>/dev/null)"
if [ -d /run/systemd/system ]; then echo ansible_service_mgr=systemd; else echo ansible_service_mgr=sysv; fi
echo "ansible_memtotal_mb=$(awk '/MemTotal/ {print int($2/1024)}' /proc/meminfo)"; echo "ansible_processor_vcpus=$(nproc)"
echo "ansible_user_id=$(id -un)"; sudo -n true 2>/dev/null && echo ansible_sudo=yes || echo ansible_sudo=no"#;

fn parse_facts(out: &str) -> Map<String, Value> {
    let mut m = Map::new();
    for line in out.lines() {
        if let Some((k, v)) = line.split_once('=') {
            let val = match k {
                "ansible_memtotal_mb" | "ansible_processor_vcpus" => {
                    v.parse::<u64>().map(Value::from).unwrap_or(Value::Null)
                }
                "ansible_all_ipv4_addresses" => {
                    Value::from(v.split_whitespace().collect::<Vec<_>>())
                }
                _ => Value::from(v),
            };
            m.insert(k.to_owned(), val);
        }
    }
    m
}

/// How to reach `h`: the inventory first, then ~/.ssh/config (as Ansible passes its
/// settings to ssh), then OpenSSH's defaults.
fn target(
    o: &Options,
    inv: &Inventory,
    h: &inventory::Host,
    cfg: &sshconfig::Config,
) -> Result<Target, String> {
    let dir = inv
        .path
        .parent()
        .map(|p| p.to_path_buf())
        .unwrap_or_default();
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let c = cfg.host(&h.address);
    let mut files = Vec::new();
    match h.vars.get("known_hosts_file").and_then(Value::as_str) {
        Some(f) => files.push(inventory::expand(f, &dir)),
        None => files.push(dir.join("known_hosts")),
    }
    files.extend(c.known_hosts.iter().cloned());
    if let Some(home) = &home {
        files.push(home.join(".ssh/known_hosts"));
    }
    let mut keys: Vec<PathBuf> = h.key_file.iter().cloned().collect();
    keys.extend(c.identity_files.iter().cloned());
    if keys.is_empty() {
        if let Some(home) = &home {
            for n in ["id_ed25519", "id_ecdsa", "id_rsa"] {
                let p = home.join(".ssh").join(n);
                if p.exists() {
                    keys.push(p);
                }
            }
        }
    }
    for k in &keys {
        if !k.exists() {
            return Err(format!(
                "host `{}`: private key {} does not exist",
                h.name,
                k.display()
            ));
        }
    }
    let user = h
        .user
        .clone()
        .or(c.user.clone())
        .unwrap_or_else(|| std::env::var("USER").unwrap_or_else(|_| "root".into()));
    let mut t = Target {
        name: h.name.clone(),
        address: c.host_name.clone().unwrap_or_else(|| h.address.clone()),
        port: if h.port_given {
            h.port
        } else {
            c.port.unwrap_or(h.port)
        },
        user,
        key_files: keys.clone(),
        identities_only: c.identities_only,
        jump: None,
        hostkeys: HostKeyPolicy {
            files,
            accept_new: o.accept_new_host_keys,
        },
        connect_timeout: o.connect_timeout,
        command_timeout: o.command_timeout,
        keys: Default::default(),
        become_pass: None,
    };
    let hops: Vec<String> = match h
        .vars
        .get("ansible_ssh_common_args")
        .and_then(Value::as_str)
        .and_then(sshconfig::jump_from_args)
    {
        Some(j) => j.split(',').map(str::to_owned).collect(),
        None => c
            .proxy_jump
            .iter()
            .flat_map(|j| j.split(','))
            .map(str::to_owned)
            .collect(),
    };
    let mut prev: Option<Box<Target>> = None;
    for hop in hops {
        let (user, host, port) =
            sshconfig::parse_jump(&hop).map_err(|e| format!("host `{}`: {e}", h.name))?;
        let hc = cfg.host(&host);
        let mut keys = hc.identity_files.clone();
        if keys.is_empty() {
            keys = t.key_files.clone();
        }
        prev = Some(Box::new(Target {
            name: format!("{} (bastion)", host),
            address: hc.host_name.clone().unwrap_or(host),
            port: port.or(hc.port).unwrap_or(22),
            user: user.or(hc.user.clone()).unwrap_or_else(|| t.user.clone()),
            key_files: keys,
            identities_only: hc.identities_only,
            jump: prev,
            ..t.clone()
        }));
    }
    t.jump = prev;
    Ok(t)
}

/// Every key file the targets (and their bastions) may use.
fn key_files(t: &Target, out: &mut Vec<PathBuf>) {
    for k in &t.key_files {
        if !out.contains(k) {
            out.push(k.clone());
        }
    }
    if let Some(j) = &t.jump {
        key_files(j, out);
    }
}

fn set_secrets(t: &mut Target, keys: &Arc<Keys>, pass: &Option<Arc<Secret>>) {
    t.keys = keys.clone();
    t.become_pass = pass.clone();
    if let Some(j) = &mut t.jump {
        set_secrets(j, keys, pass);
    }
}

impl Prepared {
    /// Reads the key files (asking for passphrases when `interactive`) and sets the
    /// become password, before any connection.
    pub async fn unlock(
        &mut self,
        interactive: bool,
        become_pass: Option<String>,
    ) -> Result<(), String> {
        let mut files = Vec::new();
        for t in self.targets.values() {
            key_files(t, &mut files);
        }
        let keys = Arc::new(Keys::load(&files, interactive).await?);
        let pass = become_pass.map(|p| Arc::new(Secret(p)));
        for t in self.targets.values_mut() {
            set_secrets(t, &keys, &pass);
        }
        Ok(())
    }
}

pub async fn execute(p: Prepared, o: Options, rep: Arc<Reporter>) -> Summary {
    let started = Instant::now();
    let inv = Arc::new(p.inventory);
    let sem = Arc::new(tokio::sync::Semaphore::new(o.forks.max(1)));
    // Connect and gather facts everywhere first.
    let mut joins = Vec::new();
    for h in &p.hosts {
        let t = p.targets[h].clone();
        let sem = sem.clone();
        let wants_root = inv.hosts[h].sudo;
        joins.push(tokio::spawn(async move {
            let _permit = sem.acquire_owned().await;
            let unreachable = |e: crate::transport::TransportError| (true, e.to_string());
            let conn = Conn::connect(t).await.map_err(unreachable)?;
            let out = conn.run(FACTS, None, None).await.map_err(unreachable)?;
            let facts = parse_facts(&out.stdout);
            if facts.get("ansible_sudo").and_then(Value::as_str) == Some("no")
                && conn.target.become_pass.is_some()
            {
                conn.use_sudo_password();
                if wants_root {
                    let r = conn
                        .run("true", None, Some("root"))
                        .await
                        .map_err(unreachable)?;
                    if r.rc != 0 {
                        return Err((
                            false,
                            format!(
                                "sudo refused the become password for {}: {}",
                                conn.target.user,
                                crate::sys::tail(r.stderr.trim(), 2)
                            ),
                        ));
                    }
                }
            }
            Ok::<_, (bool, String)>((Arc::new(conn), facts))
        }));
    }
    let mut runs: IndexMap<String, HostRun> = IndexMap::new();
    for (h, j) in p.hosts.iter().zip(joins) {
        let mut run = HostRun {
            conn: None,
            facts: Map::new(),
            tally: Tally::default(),
            failed: false,
            registered: Map::new(),
        };
        match j
            .await
            .unwrap_or_else(|e| Err((false, format!("internal error: {e}"))))
        {
            Ok((c, f)) => {
                run.conn = Some(c);
                run.facts = f;
            }
            Err((true, e)) => {
                run.tally.unreachable = 1;
                run.failed = true;
                rep.task_done(h, "connect", "connect", Status::Unreachable, &e, None);
            }
            Err((false, e)) => {
                run.tally.failed = 1;
                run.failed = true;
                rep.task_done(h, "connect", "become", Status::Failed, &e, None);
            }
        }
        runs.insert(h.clone(), run);
    }
    // hostvars: inventory vars and facts of every host.
    let mut hostvars = Map::new();
    for (name, host) in &inv.hosts {
        let mut v = host.vars.clone();
        if let Some(r) = runs.get(name) {
            v.extend(r.facts.clone());
        }
        v.insert("inventory_hostname".into(), json!(name));
        v.entry("ansible_host").or_insert(json!(host.address));
        hostvars.insert(name.clone(), Value::Object(v));
    }
    let groups: Map<String, Value> = inv
        .groups
        .iter()
        .map(|(g, m)| (g.clone(), json!(m.iter().collect::<Vec<_>>())))
        .collect();
    let shared = Arc::new((hostvars, groups));
    let total_hosts = p.hosts.len();
    for (play, hosts) in p.plays {
        let play = Arc::new(play);
        let mut joins = Vec::new();
        for h in hosts {
            let Some(run) = runs.get_mut(&h) else {
                continue;
            };
            if run.failed {
                continue;
            }
            let conn = run.conn.clone();
            let registered = std::mem::take(&mut run.registered);
            let (play, shared, inv, rep, o, sem) = (
                play.clone(),
                shared.clone(),
                inv.clone(),
                rep.clone(),
                o.clone(),
                sem.clone(),
            );
            joins.push(tokio::spawn(async move {
                let _permit = sem.acquire_owned().await;
                let host = &inv.hosts[&h];
                let Some(conn) = conn else {
                    return (h, Tally::default(), true, registered);
                };
                let (t, failed, reg) = run_play(
                    &play, host, &conn, &shared.0, &shared.1, registered, &o, &rep,
                )
                .await;
                (h, t, failed, reg)
            }));
        }
        for j in joins {
            if let Ok((h, t, failed, reg)) = j.await {
                if let Some(run) = runs.get_mut(&h) {
                    run.tally.ok += t.ok;
                    run.tally.changed += t.changed;
                    run.tally.failed += t.failed;
                    run.tally.skipped += t.skipped;
                    run.failed |= failed;
                    run.registered = reg;
                }
            }
        }
        let failed = runs.values().filter(|r| r.failed).count();
        let over = o
            .max_fail_percentage
            .is_some_and(|m| failed * 100 > total_hosts * m as usize);
        if (o.any_errors_fatal && failed > 0) || over {
            rep.warn(&format!(
                "stopping after play `{}`: {failed} of {total_hosts} hosts failed",
                play.name
            ));
            break;
        }
    }
    let mut tallies = IndexMap::new();
    for (h, mut r) in runs {
        r.tally.seconds = started.elapsed().as_secs_f64();
        if let Some(c) = &r.conn {
            r.tally.commands = c.commands();
            c.close().await;
        }
        rep.host_done(&h, &r.tally);
        tallies.insert(h, r.tally);
    }
    Summary {
        tallies,
        connections: crate::transport::CONNECTIONS.load(std::sync::atomic::Ordering::Relaxed),
    }
}

fn selected(task: &Task, o: &Options) -> bool {
    if task.tags.iter().any(|t| o.skip_tags.contains(t)) {
        return false;
    }
    o.tags.is_empty()
        || task.tags.iter().any(|t| o.tags.contains(t))
        || task.tags.iter().any(|t| t == "always")
}

#[allow(clippy::too_many_arguments)]
async fn run_play(
    play: &Play,
    host: &inventory::Host,
    conn: &Conn,
    hostvars: &Map<String, Value>,
    groups: &Map<String, Value>,
    mut registered: Map<String, Value>,
    o: &Options,
    rep: &Reporter,
) -> (Tally, bool, Map<String, Value>) {
    let mut tally = Tally::default();
    let total: usize = play
        .roles
        .iter()
        .map(|r| r.tasks.iter().filter(|t| selected(t, o)).count())
        .sum();
    rep.plan(&host.name, total as u64);
    for role in &play.roles {
        let mut env = environment();
        for (name, src) in &role.templates {
            if let Err(e) = env.add_template_owned(name.clone(), src.clone()) {
                rep.task_done(
                    &host.name,
                    &role.name,
                    &format!("template {name}"),
                    Status::Failed,
                    &template::describe(&e),
                    None,
                );
                tally.failed += 1;
                return (tally, true, registered);
            }
        }
        // Tasks first, then the handlers they notified, once each.
        let mut notified: HashSet<String> = HashSet::new();
        for phase in [true, false] {
            let list: Vec<&Task> = if phase {
                role.tasks.iter().filter(|t| selected(t, o)).collect()
            } else {
                role.handlers
                    .iter()
                    .filter(|h| notified.contains(&h.name))
                    .collect()
            };
            for task in list {
                let ok = run_task(
                    task,
                    play,
                    role,
                    host,
                    conn,
                    hostvars,
                    groups,
                    &mut registered,
                    &env,
                    o,
                    rep,
                    &mut tally,
                    &mut notified,
                )
                .await;
                if !ok {
                    return (tally, true, registered);
                }
            }
        }
    }
    (tally, false, registered)
}

fn context(
    play: &Play,
    role: &play::Role,
    host: &inventory::Host,
    hostvars: &Map<String, Value>,
    groups: &Map<String, Value>,
    registered: &Map<String, Value>,
    task: &Task,
) -> Map<String, Value> {
    // Precedence, low to high: role defaults, inventory, facts, play vars, registered, task vars.
    let mut c = role.defaults.clone();
    if let Some(Value::Object(hv)) = hostvars.get(&host.name) {
        c.extend(hv.clone());
    }
    c.extend(play.vars.clone());
    c.extend(registered.clone());
    c.extend(task.vars.clone());
    c.insert("hostvars".into(), Value::Object(hostvars.clone()));
    c.insert("groups".into(), Value::Object(groups.clone()));
    c.insert(
        "group_names".into(),
        json!(host
            .groups
            .iter()
            .filter(|g| *g != "all")
            .collect::<Vec<_>>()),
    );
    c
}

#[allow(clippy::too_many_arguments)]
async fn run_task(
    task: &Task,
    play: &Play,
    role: &play::Role,
    host: &inventory::Host,
    conn: &Conn,
    hostvars: &Map<String, Value>,
    groups: &Map<String, Value>,
    registered: &mut Map<String, Value>,
    env: &minijinja::Environment<'static>,
    o: &Options,
    rep: &Reporter,
    tally: &mut Tally,
    notified: &mut HashSet<String>,
) -> bool {
    rep.task_start(&host.name, &role.name, &task.name);
    let base = context(play, role, host, hostvars, groups, registered, task);
    let fail = |msg: String, tally: &mut Tally| {
        let msg = format!("{}: {msg}", task.loc);
        rep.task_done(
            &host.name,
            &role.name,
            &task.name,
            Status::Failed,
            &msg,
            None,
        );
        if task.ignore_errors {
            tally.ok += 1;
            true
        } else {
            tally.failed += 1;
            false
        }
    };
    let items: Vec<Option<Value>> = match &task.items {
        None => vec![None],
        Some(node) => {
            let ctx = minijinja::Value::from_serialize(&base);
            match template::render_value(env, &node.to_json(), &ctx) {
                Ok(Value::Array(a)) => a.into_iter().map(Some).collect(),
                Ok(other) => return fail(format!("`loop` must give a list, got {other}"), tally),
                Err(e) => return fail(format!("loop: {e}"), tally),
            }
        }
    };
    let sudo = task.sudo.or(play.sudo).unwrap_or(host.sudo);
    let become_user = task.become_user.as_deref().unwrap_or(&host.become_user);
    let sudo = sudo.then_some(become_user);
    let (mut changed, mut failed, mut skipped) = (false, None::<String>, 0usize);
    let mut msgs = Vec::new();
    let mut diffs = Vec::new();
    let mut last = json!({});
    for item in &items {
        let mut c = base.clone();
        if let Some(i) = item {
            c.insert("item".into(), i.clone());
        }
        let ctx = minijinja::Value::from_serialize(&c);
        if let Some(w) = &task.when {
            match template::eval_bool(env, w, &ctx) {
                Ok(true) => {}
                Ok(false) => {
                    skipped += 1;
                    continue;
                }
                Err(e) => {
                    failed = Some(format!("when `{w}`: {e}"));
                    break;
                }
            }
        }
        let raw = match &task.args.to_json() {
            Value::String(s) => json!({ "cmd": s }),
            other => other.clone(),
        };
        let mut args = match template::render_value(env, &raw, &ctx) {
            Ok(Value::Object(m)) => m,
            Ok(_) => {
                failed = Some("arguments must be a mapping".into());
                break;
            }
            Err(e) => {
                failed = Some(e);
                break;
            }
        };
        if task.module == "template" {
            let src = args
                .get("src")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            match env.get_template(&src).and_then(|t| t.render(&ctx)) {
                Ok(text) => {
                    args.insert("content".into(), json!(text));
                }
                Err(e) => {
                    failed = Some(format!("template {src}: {}", template::describe(&e)));
                    break;
                }
            }
            args.remove("src");
        }
        if task.module == "copy" {
            if let Some(src) = args.remove("src") {
                let src = src.as_str().unwrap_or_default().to_owned();
                let found = role
                    .files
                    .iter()
                    .find(|(n, _)| *n == src)
                    .map(|(_, t)| t.clone());
                let text = match found {
                    Some(t) => t,
                    None => match std::fs::read_to_string(&src) {
                        Ok(t) => t,
                        Err(e) => {
                            failed = Some(format!("copy: cannot read `{src}`: {e}"));
                            break;
                        }
                    },
                };
                args.insert("content".into(), json!(text));
            }
        }
        let module = match modules::build(&task.module, &args) {
            Ok(m) => m,
            Err(e) => {
                failed = Some(format!("{}: {e}", task.module));
                break;
            }
        };
        let probe = match module.probe() {
            Some(script) => match conn.run(&script, None, sudo).await {
                Ok(out) if out.stderr.contains("sudo: a password is required") => {
                    failed = Some(format!(
                        "sudo needs a password for {}: allow NOPASSWD or use --ask-become-pass",
                        conn.target.user
                    ));
                    break;
                }
                Ok(out) => out,
                Err(e) => {
                    failed = Some(e.to_string());
                    break;
                }
            },
            None => Default::default(),
        };
        match module.plan(&probe) {
            Plan::Ok(m) => {
                msgs.push(m);
                last = json!({"changed": false, "rc": 0});
            }
            Plan::Fail(m) => {
                failed = Some(m);
                break;
            }
            Plan::Change {
                script,
                stdin,
                diff,
                msg,
            } => {
                if o.diff {
                    if let Some(d) = &diff {
                        diffs.push(if task.no_log {
                            format!("--- {} (diff hidden: no_log)", d.path)
                        } else {
                            d.unified()
                        });
                    }
                }
                if o.check {
                    if module.is_command() {
                        skipped += 1;
                    } else {
                        changed = true;
                        msgs.push(msg);
                    }
                    continue;
                }
                match conn.run(&script, stdin.as_deref(), sudo).await {
                    Ok(out) => {
                        last = json!({"changed": true, "rc": out.rc, "stdout": out.stdout.trim_end(), "stderr": out.stderr.trim_end()});
                        if out.rc != 0 {
                            let shown = if task.no_log {
                                "(command hidden: no_log)".to_string()
                            } else {
                                crate::sys::tail(&script, 3)
                            };
                            failed = Some(format!(
                                "exit code {}\n  ran: {shown}\n  stderr: {}",
                                out.rc,
                                crate::sys::tail(out.stderr.trim(), 8)
                            ));
                            break;
                        }
                        let mut item_changed = true;
                        if let Some(cw) = &task.changed_when {
                            let mut c2 = c.clone();
                            c2.extend(last.as_object().cloned().unwrap_or_default());
                            match template::eval_bool(
                                env,
                                cw,
                                &minijinja::Value::from_serialize(&c2),
                            ) {
                                Ok(v) => item_changed = v,
                                Err(e) => {
                                    failed = Some(format!("changed_when `{cw}`: {e}"));
                                    break;
                                }
                            }
                        }
                        changed |= item_changed;
                        if !msg.is_empty() {
                            msgs.push(msg);
                        }
                    }
                    Err(e) => {
                        failed = Some(e.to_string());
                        break;
                    }
                }
            }
        }
    }
    let diff_text = (!diffs.is_empty()).then(|| diffs.join("\n"));
    if let Some(r) = &task.register {
        let mut v = last.as_object().cloned().unwrap_or_default();
        v.insert("changed".into(), json!(changed));
        v.insert("failed".into(), json!(failed.is_some()));
        v.insert("skipped".into(), json!(skipped == items.len()));
        registered.insert(r.clone(), Value::Object(v));
    }
    if let Some(e) = failed {
        return fail(e, tally);
    }
    let (status, msg) = if changed {
        tally.changed += 1;
        notified.extend(task.notify.iter().cloned());
        (Status::Changed, msgs.join("; "))
    } else if skipped == items.len() {
        tally.skipped += 1;
        (Status::Skipped, String::new())
    } else {
        tally.ok += 1;
        (Status::Ok, msgs.join("; "))
    };
    rep.task_done(
        &host.name,
        &role.name,
        &task.name,
        status,
        &msg,
        diff_text.as_deref(),
    );
    true
}
