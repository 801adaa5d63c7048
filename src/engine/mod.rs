//! The engine: validate everything, connect once per host, gather facts in one round trip,
//! then run each play's roles on its hosts concurrently and tally the results.

pub mod cluster;
mod host;
mod play_run;
mod probes;
mod target;

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
    /// The controller's state directory (default `.provision/` beside the inventory).
    pub state_dir: Option<PathBuf>,
    /// Replace a lost CA instead of refusing.
    pub new_ca: bool,
    /// How long to wait for another run's lock on a host.
    pub lock_wait: Duration,
    /// Run the roles' pre-flight checks (off when only listing hosts or tasks).
    pub lockout_check: bool,
}

impl Options {
    pub fn state_dir(&self) -> PathBuf {
        self.state_dir
            .clone()
            .unwrap_or_else(|| crate::state::default_dir(&self.inventory))
    }
}

/// A host connected (locked) and its facts.
pub(crate) type Connected = (Arc<Conn>, Map<String, Value>);

/// A play with the hosts it runs on.
pub struct PlannedPlay {
    pub play: Play,
    /// Its hosts inside `--limit` (changed).
    pub hosts: Vec<String>,
    /// All its hosts (cluster steps may read those outside the limit).
    pub every: Vec<String>,
}

/// Everything validated, before any connection.
pub struct Prepared {
    pub inventory: Inventory,
    pub plays: Vec<PlannedPlay>,
    /// Every host inside `--limit`, in inventory order.
    pub hosts: Vec<String>,
    pub targets: IndexMap<String, Target>,
    /// Play hosts outside `--limit`, which cluster steps may read.
    pub outside: IndexMap<String, Result<Target, String>>,
    /// What the roles worked out per host (rules, firewalls, derived variables).
    pub worked: crate::roles::Worked,
    /// The connections to the hosts the inventory retires (`provision_state: absent`).
    pub retired: IndexMap<String, Result<Target, String>>,
}

pub use crate::roles::Derived;

#[derive(Debug, thiserror::Error)]
pub enum Invalid {
    #[error("{0}")]
    Located(#[from] Located),
    #[error("{0}")]
    Other(String),
}

pub fn prepare(o: &Options) -> Result<Prepared, Invalid> {
    let mut inventory = Inventory::load(&o.inventory)?;
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
            play::builtin(&inventory),
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
    let limit: Option<std::collections::HashSet<String>> = limit.map(|l| l.into_iter().collect());
    let mut seen = std::collections::HashSet::new();
    let mut all = Vec::new();
    let mut out = Vec::new();
    for p in plays {
        let every = inventory::select(&inventory, &p.hosts)
            .map_err(|e| Invalid::Other(format!("{}: play `{}`: {e}", p.loc, p.name)))?;
        let mut hosts = every.clone();
        if let Some(l) = &limit {
            hosts.retain(|h| l.contains(h));
        }
        for h in &hosts {
            if seen.insert(h.clone()) {
                all.push(h.clone());
            }
        }
        out.push(PlannedPlay {
            play: p,
            hosts,
            every,
        });
    }
    if limit.is_some() && o.lockout_check {
        follow_limit(&mut inventory, &mut out, &mut all, &mut seen)?;
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
    let mut outside = IndexMap::new();
    for PlannedPlay { every, .. } in &out {
        for h in every {
            if !seen.contains(h) && !outside.contains_key(h) {
                let t = target::target(o, &inventory, &inventory.hosts[h], &cfg);
                outside.insert(h.clone(), t);
            }
        }
    }
    let retired = inventory
        .retired
        .values()
        .map(|r| {
            (
                r.host.name.clone(),
                target::target(o, &inventory, &r.host, &cfg),
            )
        })
        .collect();
    // The roles each host runs, for what the roles work out and check before any contact.
    let mut host_roles: std::collections::HashMap<&str, Vec<&play::Role>> = Default::default();
    for PlannedPlay {
        play: p, hosts: hs, ..
    } in &out
    {
        for h in hs {
            host_roles.entry(h).or_default().extend(&p.roles);
        }
    }
    let worked = crate::roles::work_out(
        &mut inventory,
        &roles,
        &host_roles,
        &all,
        &targets,
        o.lockout_check,
    )?;
    Ok(Prepared {
        inventory,
        plays: out,
        hosts: all,
        targets,
        outside,
        worked,
        retired,
    })
}

/// Records a host's connection (or why there is none) in its run.
fn connected(rep: &Reporter, h: &str, run: &mut HostRun, c: Result<Connected, ConnectError>) {
    match c {
        Ok((c, f)) => {
            run.conn = Some(c);
            run.facts = f;
        }
        Err(ConnectError::Unreachable(e)) => {
            run.tally.unreachable = 1;
            run.failed = true;
            rep.task_done(h, "connect", "connect", Status::Unreachable, &e, None);
        }
        Err(ConnectError::Failed(e)) => {
            run.tally.failed = 1;
            run.failed = true;
            rep.task_done(h, "connect", "connect", Status::Failed, &e, None);
        }
    }
    run.finished = Some(Instant::now());
}

fn text_reads_facts(v: &Value, facts: &[&str]) -> bool {
    match v {
        Value::String(s) => target::reads_facts_via_hostvars(s, facts),
        Value::Array(a) => a.iter().any(|x| text_reads_facts(x, facts)),
        Value::Object(m) => m.values().any(|x| text_reads_facts(x, facts)),
        _ => false,
    }
}

/// Could any task, handler, template or variable of the play read another host's facts?
fn play_reads_facts(p: &Play) -> bool {
    let facts = target::FACT_NAMES;
    let task = |t: &play::Task| {
        text_reads_facts(&t.args.to_json(), facts)
            || [&t.when, &t.changed_when].iter().any(|w| {
                w.as_ref()
                    .is_some_and(|w| target::reads_facts_via_hostvars(w, facts))
            })
            || t.items
                .as_ref()
                .is_some_and(|i| text_reads_facts(&i.to_json(), facts))
            || text_reads_facts(&Value::Object(t.vars.clone()), facts)
    };
    text_reads_facts(&Value::Object(p.vars.clone()), facts)
        || p.roles.iter().any(|r| {
            r.tasks.iter().chain(&r.handlers).any(task)
                || r.templates
                    .iter()
                    .any(|(_, t)| target::reads_facts_via_hostvars(t, facts))
                || text_reads_facts(&Value::Object(r.defaults.clone()), facts)
        })
}

fn inv_reads_facts(inv: &Inventory) -> bool {
    let facts = target::FACT_NAMES;
    inv.hosts
        .values()
        .any(|h| h.vars.values().any(|v| text_reads_facts(v, facts)))
}

/// Roles whose state on a host names other hosts (a firewall admits its peers) also run,
/// alone, on the hosts outside `--limit` that name a host inside it: first, so a node
/// being added is admitted before it joins.
fn follow_limit(
    inv: &mut Inventory,
    out: &mut Vec<PlannedPlay>,
    all: &mut Vec<String>,
    seen: &mut std::collections::HashSet<String>,
) -> Result<(), Invalid> {
    let mut extra = Vec::new();
    let mut notes = Vec::new();
    for PlannedPlay { play: p, every, .. } in out.iter() {
        for role in &p.roles {
            let Some(dep) = crate::roles::row(&role.name).and_then(|r| r.depends) else {
                continue;
            };
            let mut followers = Vec::new();
            for x in every.iter().filter(|x| !seen.contains(*x)) {
                if dep(inv, &role.defaults, x, all)
                    .map_err(|e| Invalid::Other(format!("{}: host `{x}`: {e}", inv.hosts[x].loc)))?
                {
                    followers.push(x.clone());
                }
            }
            if !followers.is_empty() {
                notes.push(format!(
                    "{} (outside --limit): role {} runs there too, as its state names hosts inside --limit",
                    followers.join(", "),
                    role.name
                ));
                let mut fp = p.clone();
                fp.name = format!(
                    "{}: role {} only, outside --limit (it must admit the hosts inside)",
                    p.name, role.name
                );
                fp.roles = vec![role.clone()];
                extra.push((fp, followers, every.clone()));
            }
        }
    }
    for (fp, hs, every) in extra.into_iter().rev() {
        for h in &hs {
            if seen.insert(h.clone()) {
                all.push(h.clone());
            }
        }
        out.insert(
            0,
            PlannedPlay {
                play: fp,
                hosts: hs,
                every,
            },
        );
    }
    inv.warnings.extend(notes);
    Ok(())
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

/// Where a host stands in the run.
pub struct HostRun {
    pub conn: Option<Arc<Conn>>,
    pub facts: Map<String, Value>,
    pub tally: Tally,
    pub failed: bool,
    pub registered: Map<String, Value>,
    /// When the host's last play ended (its own time in the recap).
    pub finished: Option<Instant>,
}

/// `hostvars` and `groups`, built once per run.
pub struct Shared {
    pub hostvars: Map<String, Value>,
    pub vars: [(&'static str, minijinja::Value); 2],
    pub derived: IndexMap<String, Derived>,
    /// The hosts a `throttle`d task may run on at once, per task (by its place).
    pub throttles: std::sync::Mutex<std::collections::HashMap<String, Arc<tokio::sync::Semaphore>>>,
}

impl Shared {
    /// The gate of a throttled task, shared by every host of the run.
    pub fn throttle(&self, task: &str, n: usize) -> Arc<tokio::sync::Semaphore> {
        let mut m = self.throttles.lock().unwrap_or_else(|e| e.into_inner());
        m.entry(task.to_owned())
            .or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(n)))
            .clone()
    }

    pub fn derived(&self, h: &str) -> &[(&'static str, minijinja::Value)] {
        self.derived.get(h).map(Vec::as_slice).unwrap_or(&[])
    }
}

/// The remote lock, then the facts, on one channel held as long as the connection lives,
/// so a run that dies (or loses the host) releases the lock. Waits `wait` for another
/// holder. The lock is flock on descriptor 9, which the final `cat` keeps open.
fn lock_script(wait: Duration) -> String {
    let holder = crate::transport::quote(&crate::state::holder());
    format!(
        r#"PL=/run/lock/provision.lock; [ -d /run/lock ] && [ -w /run/lock ] || PL=/tmp/provision.lock
if command -v flock >/dev/null 2>&1; then
  {{ [ -e "$PL" ] || : > "$PL"; }} 2>/dev/null
  command exec 9<"$PL" || exit 76
  flock -w {} -E 75 9 || {{ rc=$?; echo "held by $(cat "$PL.holder" 2>/dev/null || echo 'an unknown run')"; exit $rc; }}
  printf '%s\n' {holder} > "$PL.holder" 2>/dev/null
fi
{}
echo {LOCK_READY}
exec cat >/dev/null"#,
        wait.as_secs().max(1),
        target::FACTS
    )
}

const LOCK_READY: &str = "PROVISION-LOCKED-AND-READY";

/// Why a host could not be started on.
#[derive(Debug)]
pub enum ConnectError {
    /// Not reached (network, host key, authentication).
    Unreachable(String),
    /// Reached, but it cannot be worked on (locked by another run, sudo refused).
    Failed(String),
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectError::Unreachable(e) | ConnectError::Failed(e) => f.write_str(e),
        }
    }
}

/// Connects, takes the host lock (when `lock`), gathers facts and checks sudo.
/// Returns the connection and the facts.
pub(crate) async fn connect_host(
    t: Target,
    wants_root: bool,
    lock: bool,
    lock_wait: Duration,
) -> Result<Connected, ConnectError> {
    let unreachable =
        |e: crate::transport::TransportError| ConnectError::Unreachable(e.to_string());
    let conn = Conn::connect(t).await.map_err(unreachable)?;
    // With the lock, the facts come on the lock's own channel: one exec, not two.
    let facts = if lock {
        match conn.hold(&lock_script(lock_wait), LOCK_READY).await {
            Err(e) => return Err(unreachable(e)),
            Ok(Err(out)) if !out.stdout.starts_with("held by ") => {
                return Err(ConnectError::Failed(format!(
                    "the host lock could not be taken (exit {}): {}",
                    out.rc,
                    crate::sys::tail(format!("{}{}", out.stdout, out.stderr).trim(), 3)
                )))
            }
            Ok(Err(out)) => {
                return Err(ConnectError::Failed(format!(
                    "another provision run is working on this host ({}); waited {} s. \
                     Run again when it is done (a run that died releases its lock when its connection closes)",
                    out.stdout.trim().trim_start_matches("held by "),
                    lock_wait.as_secs()
                )))
            }
            Ok(Ok(out)) => out,
        }
    } else {
        conn.run(target::FACTS, None, None)
            .await
            .map_err(unreachable)?
            .stdout
    };
    let facts = target::parse_facts(&facts);
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
                return Err(ConnectError::Failed(format!(
                    "sudo refused the become password for {}: {}",
                    conn.target.user,
                    crate::sys::tail(r.stderr.trim(), 2)
                )));
            }
        }
    }
    Ok((Arc::new(conn), facts))
}

/// A host that trusts another provision CA than the state directory's is refused before
/// anything runs on it: a replaced CA is never adopted silently.
fn check_ca_pin(
    facts: &Map<String, Value>,
    pins: &[String],
    state_dir: &std::path::Path,
) -> Result<(), ConnectError> {
    let (Some(pin), Some(have)) = (
        pins.first(),
        facts.get("provision_ca_sha256").and_then(Value::as_str),
    ) else {
        return Ok(());
    };
    if have.is_empty() || pins.iter().any(|p| p == have) {
        return Ok(());
    }
    Err(ConnectError::Failed(format!(
        "this host trusts another provision CA (sha256 of its ca.crt {have}) than the state directory \
         {} (ca.crt {pin}): refused, nothing was changed on it. Restore the CA this cluster uses \
         into the state directory from your backup, or run with --new-ca to move every host to \
         the state directory's CA",
        state_dir.display()
    )))
}

pub async fn execute(
    p: Prepared,
    o: Options,
    rep: Arc<Reporter>,
    state: Arc<crate::state::State>,
) -> Summary {
    let started = Instant::now();
    let inv = Arc::new(p.inventory);
    let joins = connect_all(&p.hosts, &p.targets, &inv, &o, &state);
    // A host starts as soon as its own facts are in, unless some template could read
    // another host's facts through `hostvars` (then every host's are gathered first).
    let early = !p.plays.iter().any(|pp| play_reads_facts(&pp.play)) && !inv_reads_facts(&inv);
    let mut runs: IndexMap<String, HostRun> = IndexMap::new();
    let mut connecting = IndexMap::new();
    for (h, j) in p.hosts.iter().zip(joins) {
        let mut run = HostRun {
            conn: None,
            facts: Map::new(),
            tally: Tally::default(),
            failed: false,
            registered: Map::new(),
            finished: None,
        };
        if early {
            connecting.insert(h.clone(), j);
        } else {
            let c = j
                .await
                .unwrap_or_else(|e| Err(ConnectError::Failed(format!("internal error: {e}"))));
            connected(&rep, h, &mut run, c);
        }
        runs.insert(h.clone(), run);
    }
    let shared = Arc::new(shared(&inv, &runs, p.worked.derived));
    let total_hosts = p.hosts.len();
    let o = Arc::new(o);
    let outside = Arc::new(p.outside);
    let mut extra = IndexMap::new();
    let mut published = Map::new();
    for PlannedPlay { play, hosts, every } in p.plays {
        let envs = match play_run::environments(&play) {
            Ok(e) => e,
            Err(e) => {
                for h in &hosts {
                    if let Some(r) = runs.get_mut(h).filter(|r| !r.failed) {
                        r.tally.failed += 1;
                        r.failed = true;
                        rep.task_done(h, &play.name, "templates", Status::Failed, &e, None);
                    }
                }
                break;
            }
        };
        let pr = play_run::PlayRun {
            play: Arc::new(play),
            envs: Arc::new(envs),
            inv: inv.clone(),
            shared: shared.clone(),
            o: o.clone(),
            rep: rep.clone(),
            state: state.clone(),
            outside: outside.clone(),
            connecting: std::sync::Mutex::new(std::mem::take(&mut connecting)),
        };
        let settled = pr
            .run(&hosts, &every, &mut runs, &mut extra, &mut published)
            .await;
        let failed = runs.values().filter(|r| r.failed).count();
        let over = o
            .max_fail_percentage
            .is_some_and(|m| failed * 100 > total_hosts * m as usize);
        if !settled || (o.any_errors_fatal && failed > 0) || over {
            rep.warn(&format!(
                "stopping after play `{}`: {failed} of {total_hosts} hosts failed",
                pr.play.name
            ));
            break;
        }
    }
    finish(runs, extra, connecting, &rep, started).await
}

/// Connects, locks and gathers facts on every host, `forks` at a time; a host whose CA
/// pin does not match the state directory's is refused.
fn connect_all(
    hosts: &[String],
    targets: &IndexMap<String, Target>,
    inv: &Inventory,
    o: &Options,
    state: &crate::state::State,
) -> Vec<play_run::Connecting> {
    let sem = Arc::new(tokio::sync::Semaphore::new(o.forks.max(1)));
    // The CA the hosts must already trust: the state directory's (none yet: nothing pinned).
    // (during a CA rotation, either CA or both)
    let pins: Arc<Vec<String>> = Arc::new(if o.new_ca {
        Vec::new()
    } else {
        crate::pki::rotation::accepted_pins(state)
    });
    let mut joins = Vec::new();
    for h in hosts {
        let t = targets[h].clone();
        let sem = sem.clone();
        let wants_root = inv.hosts[h].sudo;
        let (lock, wait) = (!o.check, o.lock_wait);
        let pins = pins.clone();
        let state_dir = state.dir.clone();
        joins.push(tokio::spawn(async move {
            let _permit = sem.acquire_owned().await;
            let (c, f) = connect_host(t, wants_root, lock, wait).await?;
            check_ca_pin(&f, &pins, &state_dir)?;
            Ok((c, f))
        }));
    }
    joins
}

/// What every host's templates share: hostvars (inventory variables, and facts when they
/// were gathered first), groups, and each host's derived variables.
fn shared(
    inv: &Inventory,
    runs: &IndexMap<String, HostRun>,
    derived: IndexMap<String, Derived>,
) -> Shared {
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
    let vars = [
        ("hostvars", minijinja::Value::from_serialize(&hostvars)),
        ("groups", minijinja::Value::from_serialize(&groups)),
    ];
    Shared {
        hostvars,
        vars,
        derived,
        throttles: Default::default(),
    }
}

/// Ends every connection (those no play reached too) and tallies each host.
async fn finish(
    mut runs: IndexMap<String, HostRun>,
    extra: IndexMap<String, Option<Connected>>,
    connecting: IndexMap<String, play_run::Connecting>,
    rep: &Reporter,
    started: Instant,
) -> Summary {
    for (h, j) in connecting {
        let c = j
            .await
            .unwrap_or_else(|e| Err(ConnectError::Failed(format!("internal error: {e}"))));
        if let Some(r) = runs.get_mut(&h) {
            connected(rep, &h, r, c);
        }
    }
    let mut tallies = IndexMap::new();
    for (h, mut r) in runs {
        r.tally.seconds = r
            .finished
            .map(|f| f.duration_since(started))
            .unwrap_or_else(|| started.elapsed())
            .as_secs_f64();
        if let Some(c) = &r.conn {
            r.tally.commands = c.commands();
            c.close().await;
        }
        rep.host_done(&h, &r.tally);
        tallies.insert(h, r.tally);
    }
    for (_, c) in extra.into_iter().filter_map(|(h, c)| c.map(|c| (h, c))) {
        c.0.close().await;
    }
    Summary {
        tallies,
        connections: crate::transport::CONNECTIONS.load(std::sync::atomic::Ordering::Relaxed),
    }
}

pub use crate::finding::{AuditError, AuditResult};

/// Checks every hardening rule on every host, read-only: one connection and one
/// command per host. Returns the results and the round trips made per host.
/// Calls its function when dropped: one host's audit is over, however it ended.
struct Tick(Arc<dyn Fn() + Send + Sync>);

impl Drop for Tick {
    fn drop(&mut self) {
        (self.0)()
    }
}

pub async fn audit(
    p: &Prepared,
    o: &Options,
    ca_pem: Option<&str>,
    done: Arc<dyn Fn() + Send + Sync>,
) -> IndexMap<String, (AuditResult, u64)> {
    use crate::roles::{Scope, TABLE};
    let scope = Scope {
        inventory: &p.inventory,
        hosts: &p.hosts,
        worked: &p.worked,
        ca_pem,
    };
    let sem = Arc::new(tokio::sync::Semaphore::new(o.forks.max(1)));
    let mut joins = Vec::new();
    for h in &p.hosts {
        // Each role's read-only part, behind its marker: one command per host.
        let mut script = Ok(String::new());
        for row in TABLE.iter().filter(|r| scope.runs(h, r.role)) {
            let Some(a) = &row.audit else { continue };
            match ((a.script)(&scope, h), &mut script) {
                (Some(Ok(part)), Ok(s)) => {
                    s.push_str(&crate::roles::marker(row.role));
                    s.push_str(&part);
                }
                (Some(Err(e)), Ok(_)) => script = Err(format!("{}: {e}", row.role)),
                _ => {}
            }
        }
        let t = p.targets[h].clone();
        let sem = sem.clone();
        let done = done.clone();
        joins.push(tokio::spawn(async move {
            let _permit = sem.acquire_owned().await;
            let _tick = Tick(done);
            let script = match script {
                Ok(s) => cluster::docker_bounded(&s).to_string(),
                Err(e) => return HostAudit::failed(e, false),
            };
            let conn = match Conn::connect(t).await {
                Ok(c) => c,
                Err(e) => return HostAudit::failed(format!("unreachable: {e}"), true),
            };
            let res = match conn.run(&script, None, Some("root")).await {
                Ok(out) if out.stderr.contains("sudo:") => Err(format!(
                    "the audit needs root through sudo: {}",
                    crate::sys::tail(out.stderr.trim(), 2)
                )),
                Ok(out) => Ok(crate::roles::sections(&out.stdout)),
                Err(e) => Err(e.to_string()),
            };
            let round_trips = conn.commands();
            conn.close().await;
            HostAudit {
                sections: res,
                round_trips,
                unreachable: false,
            }
        }));
    }
    let mut results = IndexMap::new();
    // Hosts that did not answer: unknown, not gone; the others' view of them is reported.
    let mut unreachable: Vec<String> = Vec::new();
    for (h, j) in p.hosts.iter().zip(joins) {
        let a = j
            .await
            .unwrap_or_else(|e| HostAudit::failed(format!("internal error: {e}"), false));
        if a.unreachable {
            unreachable.push(h.clone());
        }
        results.insert(h.clone(), (a.sections, a.round_trips));
    }
    // Each host's own findings, role by role, then those judged across hosts.
    let mut out: IndexMap<String, (AuditResult, u64)> = IndexMap::new();
    for (h, (sections, n)) in &results {
        let findings = sections.as_ref().map(|secs| {
            TABLE
                .iter()
                .filter_map(|r| Some((r.audit.as_ref()?, secs.get(r.role)?)))
                .flat_map(|(a, sec)| (a.host)(&scope, h, sec))
                .collect()
        });
        let findings = findings.map_err(|e| AuditError {
            unreachable: unreachable.contains(h),
            message: e.clone(),
        });
        out.insert(h.clone(), (findings, *n));
    }
    for row in TABLE {
        let Some(a) = &row.audit else { continue };
        let outs: IndexMap<String, String> = results
            .iter()
            .filter_map(|(h, (r, _))| Some((h.clone(), r.as_ref().ok()?.get(row.role)?.clone())))
            .collect();
        for (h, f) in (a.across)(&scope, &outs, &unreachable) {
            if let Some((Ok(list), _)) = out.get_mut(&h) {
                list.extend(f);
            }
        }
    }
    out
}

/// What one host's audit returned: its output, split by role.
struct HostAudit {
    sections: Result<IndexMap<String, String>, String>,
    round_trips: u64,
    /// It could not be reached: unknown, not gone.
    unreachable: bool,
}

impl HostAudit {
    fn failed(e: String, unreachable: bool) -> HostAudit {
        HostAudit {
            sections: Err(e),
            round_trips: 0,
            unreachable,
        }
    }
}

/// Runs one read-only script per host (as root), one connection each: for `pki status`
/// and `status`. A host that does not answer is told apart by the error's kind.
pub async fn read_all(
    p: &Prepared,
    o: &Options,
    script: impl Fn(&crate::inventory::Host) -> String,
) -> IndexMap<String, Result<String, AuditError>> {
    let sem = Arc::new(tokio::sync::Semaphore::new(o.forks.max(1)));
    let mut joins = Vec::new();
    let failed = |unreachable: bool, message: String| AuditError {
        unreachable,
        message,
    };
    for h in &p.hosts {
        let t = p.targets[h].clone();
        let s = cluster::docker_bounded(&script(&p.inventory.hosts[h])).into_owned();
        let sem = sem.clone();
        joins.push(tokio::spawn(async move {
            let _permit = sem.acquire_owned().await;
            let conn = Conn::connect(t)
                .await
                .map_err(|e| failed(true, format!("unreachable: {e}")))?;
            let r = conn.run(&s, None, Some("root")).await;
            conn.close().await;
            match r {
                Ok(out) if out.rc == 0 => Ok(out.stdout),
                Ok(out) => Err(failed(
                    false,
                    format!(
                        "exit code {}: {}",
                        out.rc,
                        crate::sys::tail(out.stderr.trim(), 2)
                    ),
                )),
                Err(e) => Err(failed(false, e.to_string())),
            }
        }));
    }
    let mut out = IndexMap::new();
    for (h, j) in p.hosts.iter().zip(joins) {
        out.insert(
            h.clone(),
            j.await
                .unwrap_or_else(|e| Err(failed(false, format!("internal error: {e}")))),
        );
    }
    out
}
