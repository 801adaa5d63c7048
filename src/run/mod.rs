//! The engine: validate everything, connect once per host, gather facts in one round trip,
//! then run each play's roles on its hosts concurrently and tally the results.

mod probes;
mod target;
mod task;

use crate::inventory::{self, Inventory};
use crate::output::{Reporter, Status, Tally};
use crate::play::{self, Play, RoleSource};
use crate::transport::{sshconfig, Conn, Target};
use crate::yaml::Located;
use indexmap::IndexMap;
use serde_json::{json, Map, Value};
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
    /// The hardening rules of each host (also its `hardening` variable), and the
    /// file its hardening sysctls are persisted in.
    pub rules: IndexMap<String, (Vec<crate::hardening::Rule>, String)>,
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
        let t = target::target(o, &inventory, host, &cfg)
            .map_err(|e| Invalid::Other(format!("{}: {e}", host.loc)))?;
        targets.insert(h.clone(), t);
    }
    // Hardening rules per host; rules that would lock provision out are refused here.
    let hardening = crate::hardening::Rules::load(&roles)?;
    let mut rules = IndexMap::new();
    let mut inventory = inventory;
    for h in &all {
        let host = inventory.hosts.get_mut(h).expect("selected hosts exist");
        let r = hardening
            .resolve(&host.vars)
            .map_err(|e| Invalid::Other(format!("{}: host `{h}`: {e}", host.loc)))?;
        let hardened = out
            .iter()
            .any(|(p, hs)| hs.contains(h) && p.roles.iter().any(|r| r.name == "hardening"));
        if hardened {
            crate::hardening::lockout(&r, &targets[h].user)
                .map_err(|e| Invalid::Other(format!("{}: host `{h}`: {e}", host.loc)))?;
        }
        host.vars
            .insert("hardening".into(), crate::hardening::as_var(&r));
        let sysctl_file = host
            .vars
            .get("hardening_sysctl_file")
            .or(hardening.default("hardening_sysctl_file"))
            .and_then(Value::as_str)
            .unwrap_or("/etc/sysctl.d/90-provision-hardening.conf")
            .to_owned();
        rules.insert(h.clone(), (r, sysctl_file));
    }
    Ok(Prepared {
        inventory,
        plays: out,
        hosts: all,
        targets,
        rules,
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
            let out = conn
                .run(target::FACTS, None, None)
                .await
                .map_err(unreachable)?;
            let facts = target::parse_facts(&out.stdout);
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
    let shared_vars = [
        ("hostvars", minijinja::Value::from_serialize(&hostvars)),
        ("groups", minijinja::Value::from_serialize(&groups)),
    ];
    let shared = Arc::new((hostvars, shared_vars));
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
                let ctx = task::HostCtx {
                    play: &play,
                    host,
                    conn: &conn,
                    hostvars: &shared.0,
                    shared_vars: &shared.1,
                    o: &o,
                    rep: &rep,
                };
                let (t, failed, reg) = task::run_play(&ctx, registered).await;
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

/// What `provision audit` found on one host: its findings, or why it could not look.
pub type AuditResult = Result<Vec<crate::hardening::audit::Finding>, String>;

/// Checks every hardening rule on every host, read-only: one connection and one
/// command per host. Returns the results and the round trips made per host.
pub async fn audit(p: &Prepared, o: &Options) -> IndexMap<String, (AuditResult, u64)> {
    let sem = Arc::new(tokio::sync::Semaphore::new(o.forks.max(1)));
    let mut joins = Vec::new();
    for h in &p.hosts {
        let t = p.targets[h].clone();
        let (rules, file) = p.rules[h].clone();
        let sem = sem.clone();
        joins.push(tokio::spawn(async move {
            let _permit = sem.acquire_owned().await;
            let conn = match Conn::connect(t).await {
                Ok(c) => c,
                Err(e) => return (Err(format!("unreachable: {e}")), 0),
            };
            let script = crate::hardening::audit::script(&rules, &file);
            let res = match conn.run(&script, None, Some("root")).await {
                Ok(out) if out.stderr.contains("sudo:") => Err(format!(
                    "the audit needs root through sudo: {}",
                    crate::sys::tail(out.stderr.trim(), 2)
                )),
                Ok(out) => Ok(crate::hardening::audit::evaluate(
                    &rules,
                    &out.stdout,
                    &file,
                )),
                Err(e) => Err(e.to_string()),
            };
            let n = conn.commands();
            conn.close().await;
            (res, n)
        }));
    }
    let mut out = IndexMap::new();
    for (h, j) in p.hosts.iter().zip(joins) {
        let r = j
            .await
            .unwrap_or_else(|e| (Err(format!("internal error: {e}")), 0));
        out.insert(h.clone(), r);
    }
    out
}
