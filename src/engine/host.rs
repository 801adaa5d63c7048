//! One host through a segment of a play: host-local tasks in order (cluster steps are
//! the barriers between segments). Each task probes, plans and changes only what differs.

use super::probes::{ProbeCache, MAX_BATCH};
use super::Options;
use crate::inventory;
use crate::modules::{self, Module, Plan};
use crate::output::{Reporter, Status, Tally};
use crate::play::{Play, Role, Task};
use crate::template;
use crate::transport::Conn;
use minijinja::Environment;
use serde_json::{json, Map, Value};
use std::collections::HashSet;

/// What every task of a host shares.
pub struct HostCtx<'a> {
    pub play: &'a Play,
    pub host: &'a inventory::Host,
    /// None for a host taking part in a cluster step while down (counted, never run on).
    pub conn: Option<&'a Conn>,
    pub hostvars: &'a Map<String, Value>,
    /// Facts of a host read outside `--limit` (not in `hostvars`).
    pub facts: Option<&'a Map<String, Value>>,
    /// Values published by cluster steps, seen by every host.
    pub published: &'a Map<String, Value>,
    /// `hostvars` and `groups` as template values, built once per run and shared
    /// (cloning one is cloning an Arc): a task's context no longer copies every host's vars.
    pub shared_vars: &'a [(&'static str, minijinja::Value)],
    /// This host's variables worked out by provision (`hardening`, `firewall`), shared
    /// with the hosts that have the same; task, play and registered variables win.
    pub derived: &'a [(&'static str, minijinja::Value)],
    pub o: &'a Options,
    pub rep: &'a Reporter,
    /// The run's shared state (throttled tasks' gates).
    pub shared: &'a super::Shared,
}

/// Where a host stands in a play; carried across the play's segments.
#[derive(Default)]
pub struct HostState {
    pub registered: Map<String, Value>,
    pub tally: Tally,
    /// Notified handler names, per role.
    pub notified: Vec<HashSet<String>>,
    pub probes: ProbeCache,
    /// When the host's last piece of work in the play ended (its own time in the recap).
    pub done_at: Option<std::time::Instant>,
}

pub fn selected(task: &Task, o: &Options) -> bool {
    if task.tags.iter().any(|t| o.skip_tags.contains(t)) {
        return false;
    }
    o.tags.is_empty()
        || task.tags.iter().any(|t| o.tags.contains(t))
        || task.tags.iter().any(|t| t == "always")
}

/// Runs `steps` on one host; false when a task failed. The probe results end with the
/// segment: a cluster step may change the host before the next one, which then probes
/// afresh in one batch (and a host that is done holds none).
pub async fn run_segment(
    h: &HostCtx<'_>,
    envs: &[Environment<'static>],
    steps: &[(usize, &Task)],
    st: &mut HostState,
) -> bool {
    let ok = run_steps(h, envs, steps, st).await;
    st.probes.invalidate();
    ok
}

async fn run_steps(
    h: &HostCtx<'_>,
    envs: &[Environment<'static>],
    steps: &[(usize, &Task)],
    st: &mut HostState,
) -> bool {
    for i in 0..steps.len() {
        if !st.probes.fresh {
            prefetch(h, envs, &steps[i..], st).await;
        }
        let (ri, task) = steps[i];
        #[cfg(debug_assertions)]
        if std::env::var("PROVISION_TEST_PANIC").ok().as_deref()
            == Some(&format!("{}:{}", h.host.name, task.name))
        {
            panic!("test hook: panic in task `{}`", task.name);
        }
        if crate::interrupt::requested() {
            h.rep.task_done(
                &h.host.name,
                &h.play.roles[ri].name,
                &task.name,
                Status::Failed,
                "not started: the run was interrupted",
                None,
            );
            st.tally.failed += 1;
            return false;
        }
        if !run_task(h, &h.play.roles[ri], ri, &envs[ri], task, st).await {
            return false;
        }
    }
    true
}

/// A cluster task's arguments rendered for one host; None when its `when` is false.
pub fn cluster_args(
    h: &HostCtx<'_>,
    ri: usize,
    env: &Environment<'static>,
    task: &Task,
    st: &HostState,
) -> Result<Option<Map<String, Value>>, String> {
    let c = context(h, &h.play.roles[ri], &st.registered, task);
    let ctx = h.ctx(&c);
    if let Some(w) = &task.when {
        match template::eval_bool(env, w, &ctx) {
            Ok(true) => {}
            Ok(false) => return Ok(None),
            Err(e) => return Err(format!("when `{w}`: {e}")),
        }
    }
    match template::render_value(env, &task.args.to_json(), &ctx)? {
        Value::Object(m) => Ok(Some(m)),
        _ => Err("arguments must be a mapping".into()),
    }
}

/// The user a cluster task's commands run as on this host.
pub fn cluster_user(h: &HostCtx<'_>, task: &Task) -> Option<String> {
    become_user(h, task).map(str::to_owned)
}

/// The variables a task sees. Precedence, low to high: role defaults, inventory,
/// facts, play vars, registered results, task vars.
fn context(
    h: &HostCtx<'_>,
    role: &Role,
    registered: &Map<String, Value>,
    task: &Task,
) -> Map<String, Value> {
    let mut c = role.defaults.clone();
    if let Some(Value::Object(hv)) = h.hostvars.get(&h.host.name) {
        c.extend(hv.clone());
    }
    if let Some(f) = h.facts {
        c.extend(f.clone());
    }
    c.extend(h.play.vars.clone());
    c.extend(h.published.clone());
    c.extend(registered.clone());
    c.extend(task.vars.clone());
    c.insert(
        "group_names".into(),
        json!(h
            .host
            .groups
            .iter()
            .filter(|g| *g != "all")
            .collect::<Vec<_>>()),
    );
    c
}

impl<'a> HostCtx<'a> {
    /// The host's connection: host tasks only ever run on connected hosts.
    fn conn(&self) -> &'a Conn {
        self.conn.expect("host tasks run only on connected hosts")
    }

    /// The template context: a task's variables plus the shared `hostvars` and `groups`.
    /// Variables whose values are templates themselves (`a: "{{ b }}"` in role defaults or
    /// the inventory) are rendered first, a few levels deep, as Ansible does lazily.
    fn ctx(&self, c: &Map<String, Value>) -> minijinja::Value {
        let build = |c: &Map<String, Value>| -> minijinja::Value {
            c.iter()
                .map(|(k, v)| (k.as_str(), minijinja::Value::from_serialize(v)))
                .chain(
                    self.derived
                        .iter()
                        .filter(|(k, _)| !c.contains_key(*k))
                        .map(|(k, v)| (*k, v.clone())),
                )
                .chain(self.shared_vars.iter().map(|(k, v)| (*k, v.clone())))
                .collect()
        };
        let templated = |v: &Value| {
            v.as_str()
                .is_some_and(|s| s.contains("{{") || s.contains("{%"))
        };
        if !c.values().any(templated) {
            return build(c);
        }
        let env = resolver();
        let mut c = c.clone();
        for _ in 0..4 {
            let keys: Vec<String> = c
                .iter()
                .filter(|(_, v)| templated(v))
                .map(|(k, _)| k.clone())
                .collect();
            if keys.is_empty() {
                break;
            }
            let ctx = build(&c);
            for k in keys {
                if let Ok(v) = template::render_value(env, &c[&k], &ctx) {
                    c.insert(k, v);
                }
            }
        }
        build(&c)
    }
}

fn resolver() -> &'static Environment<'static> {
    static ENV: std::sync::OnceLock<Environment<'static>> = std::sync::OnceLock::new();
    ENV.get_or_init(template::environment)
}

/// The user a task's commands run as: None without become.
fn become_user<'a>(h: &'a HostCtx<'_>, task: &'a Task) -> Option<&'a str> {
    let sudo = task.sudo.or(h.play.sudo).unwrap_or(h.host.sudo);
    sudo.then(|| task.become_user.as_deref().unwrap_or(&h.host.become_user))
}

/// The loop's items, or one run without `item`.
fn items(
    h: &HostCtx<'_>,
    task: &Task,
    env: &Environment<'static>,
    base: &Map<String, Value>,
) -> Result<Vec<Option<Value>>, String> {
    match &task.items {
        None => Ok(vec![None]),
        Some(node) => match template::render_value(env, &node.to_json(), &h.ctx(base)) {
            Ok(Value::Array(a)) => Ok(a.into_iter().map(Some).collect()),
            Ok(other) => Err(format!("`loop` must give a list, got {other}")),
            Err(e) => Err(format!("loop: {e}")),
        },
    }
}

/// The module for one item, or None when `when` is false.
fn module_for(
    h: &HostCtx<'_>,
    task: &Task,
    role: &Role,
    env: &Environment<'static>,
    c: &Map<String, Value>,
) -> Result<Option<Box<dyn Module>>, String> {
    let ctx = h.ctx(c);
    if let Some(w) = &task.when {
        match template::eval_bool(env, w, &ctx) {
            Ok(true) => {}
            Ok(false) => return Ok(None),
            Err(e) => return Err(format!("when `{w}`: {e}")),
        }
    }
    let raw = match &task.args.to_json() {
        Value::String(s) => json!({ "cmd": s }),
        other => other.clone(),
    };
    let mut args = match template::render_value(env, &raw, &ctx)? {
        Value::Object(m) => m,
        _ => return Err("arguments must be a mapping".into()),
    };
    if task.module == "template" {
        let src = args
            .remove("src")
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        let text = env
            .get_template(&src)
            .and_then(|t| t.render(&ctx))
            .map_err(|e| format!("template {src}: {}", template::describe(&e)))?;
        args.insert("content".into(), json!(text));
    }
    if task.module == "copy" {
        if let Some(src) = args.remove("src") {
            let src = src.as_str().unwrap_or_default().to_owned();
            let text = match role.files.iter().find(|(n, _)| *n == src) {
                Some((_, t)) => t.clone(),
                None => std::fs::read_to_string(&src)
                    .map_err(|e| format!("copy: cannot read `{src}`: {e}"))?,
            };
            args.insert("content".into(), json!(text));
        }
    }
    modules::build(&task.module, &args)
        .map(Some)
        .map_err(|e| format!("{}: {e}", task.module))
}

/// Renders the tasks ahead as far as can be foreseen and sends their probes in one
/// command per become user. Tasks that cannot be rendered yet probe when they run.
async fn prefetch(
    h: &HostCtx<'_>,
    envs: &[Environment<'static>],
    steps: &[(usize, &Task)],
    st: &mut HostState,
) {
    let mut probes = Vec::new();
    for &(ri, task) in steps {
        if probes.len() >= MAX_BATCH {
            break;
        }
        let user = become_user(h, task).map(str::to_owned);
        let role = &h.play.roles[ri];
        let base = context(h, role, &st.registered, task);
        let Ok(list) = items(h, task, &envs[ri], &base) else {
            continue;
        };
        for item in list {
            let mut c = base.clone();
            if let Some(i) = item {
                c.insert("item".into(), i);
            }
            if let Ok(Some(m)) = module_for(h, task, role, &envs[ri], &c) {
                if let (Some(p), true) = (m.probe(), m.batchable()) {
                    probes.push((user.clone(), p));
                }
            }
        }
    }
    st.probes.fill(h.conn(), probes).await;
}

/// What a task did over its items.
#[derive(Default)]
struct TaskRun {
    changed: bool,
    skipped: usize,
    /// What changed, and what was already right (a changed task reports only the former).
    msgs: Vec<String>,
    ok_msgs: Vec<String>,
    diffs: Vec<String>,
    /// The last command's result, for `register` and `changed_when`.
    last: Value,
    failed: Option<String>,
    /// The connection is gone: the host counts as unreachable, not failed.
    lost: bool,
}

async fn run_task(
    h: &HostCtx<'_>,
    role: &Role,
    ri: usize,
    env: &Environment<'static>,
    task: &Task,
    st: &mut HostState,
) -> bool {
    // A throttled task waits for its turn (a rolling restart: one host after another).
    let _turn = match task.throttle {
        Some(n) => h
            .shared
            .throttle(&task.loc.to_string(), n)
            .acquire_owned()
            .await
            .ok(),
        None => None,
    };
    h.rep.task_start(&h.host.name, &role.name, &task.name);
    let base = context(h, role, &st.registered, task);
    let mut run = TaskRun {
        last: json!({}),
        ..Default::default()
    };
    let list = match items(h, task, env, &base) {
        Ok(l) => l,
        Err(e) => {
            run.failed = Some(e);
            Vec::new()
        }
    };
    for item in &list {
        let mut c = base.clone();
        if let Some(i) = item {
            c.insert("item".into(), i.clone());
        }
        let module = match module_for(h, task, role, env, &c) {
            Ok(Some(m)) => m,
            Ok(None) => {
                run.skipped += 1;
                continue;
            }
            Err(e) => {
                run.failed = Some(e);
                break;
            }
        };
        if let Err(e) = run_item(h, task, env, module.as_ref(), &c, st, &mut run).await {
            run.lost |= matches!(&e, ItemError::Transport(t) if t.is_lost());
            run.failed = Some(e.to_string());
            break;
        }
    }
    finish(h, role, ri, task, st, run, list.len())
}

/// Why a task's item did not finish.
#[derive(Debug, thiserror::Error)]
enum ItemError {
    /// From the connection: a lost one makes the host unreachable, not failed.
    #[error(transparent)]
    Transport(#[from] crate::transport::TransportError),
    #[error("{0}")]
    Failed(String),
}

impl From<String> for ItemError {
    fn from(s: String) -> Self {
        ItemError::Failed(s)
    }
}

/// One item: probe (from the batch when it is there), plan, apply, prove access, changed_when.
async fn run_item(
    h: &HostCtx<'_>,
    task: &Task,
    env: &Environment<'static>,
    module: &dyn Module,
    c: &Map<String, Value>,
    st: &mut HostState,
    run: &mut TaskRun,
) -> Result<(), ItemError> {
    let user = become_user(h, task);
    let probe = match module.probe() {
        None => Default::default(),
        Some(script) => match st.probes.get(user, &script) {
            Some(out) => out,
            None => {
                let out = h.conn().run(&script, None, user).await?;
                if out.stderr.contains("sudo: a password is required") {
                    return Err(format!(
                        "sudo needs a password for {}: allow NOPASSWD or use --ask-become-pass",
                        h.conn().target.user
                    )
                    .into());
                }
                out
            }
        },
    };
    let (script, stdin, diff, msg) = match module.plan(&probe) {
        Plan::Ok(m) => {
            run.ok_msgs.push(m);
            run.last = json!({"changed": false, "rc": 0});
            return Ok(());
        }
        // In check mode a probe can fail only because an earlier change was not made
        // (a service whose package would be installed first): say so, do not fail.
        Plan::Fail(m) if h.o.check && st.tally.changed > 0 => {
            run.changed = true;
            run.msgs.push(format!(
                "would change once the earlier changes are made (now: {m})"
            ));
            return Ok(());
        }
        Plan::Fail(m) => return Err(m.into()),
        Plan::Change {
            script,
            stdin,
            diff,
            msg,
        } => (script, stdin, diff, msg),
    };
    if let (true, Some(d)) = (h.o.diff, &diff) {
        run.diffs.push(if task.no_log {
            format!("--- {} (diff hidden: no_log)", d.path)
        } else {
            d.unified()
        });
    }
    if h.o.check {
        if module.is_command() {
            run.skipped += 1;
        } else {
            run.changed = true;
            run.msgs.push(msg);
        }
        return Ok(());
    }
    st.probes.invalidate();
    let out = h.conn().run(&script, stdin.as_deref(), user).await?;
    run.last = json!({"changed": true, "rc": out.rc, "stdout": out.stdout.trim_end(), "stderr": out.stderr.trim_end()});
    if out.rc != 0 {
        let shown = if task.no_log {
            "(command hidden: no_log)".to_string()
        } else {
            crate::sys::tail(&script, 3)
        };
        return Err(format!(
            "exit code {}\n  ran: {shown}\n  stderr: {}",
            out.rc,
            crate::sys::tail(out.stderr.trim(), 8)
        )
        .into());
    }
    if let Some(rollback) = module.rollback() {
        prove_access(h, &rollback, module.confirm().as_deref()).await?;
    }
    let mut item_changed = true;
    if let Some(cw) = &task.changed_when {
        let mut c2 = c.clone();
        c2.extend(run.last.as_object().cloned().unwrap_or_default());
        item_changed = template::eval_bool(env, cw, &h.ctx(&c2))
            .map_err(|e| format!("changed_when `{cw}`: {e}"))?;
    }
    run.changed |= item_changed;
    if !msg.is_empty() {
        run.msgs.push(msg);
    }
    Ok(())
}

/// Registers, reports and counts what the task did; false when it failed.
fn finish(
    h: &HostCtx<'_>,
    role: &Role,
    ri: usize,
    task: &Task,
    st: &mut HostState,
    run: TaskRun,
    items: usize,
) -> bool {
    let host = &h.host.name;
    if let Some(r) = &task.register {
        let mut v = run.last.as_object().cloned().unwrap_or_default();
        v.insert("changed".into(), json!(run.changed));
        v.insert("failed".into(), json!(run.failed.is_some()));
        v.insert("skipped".into(), json!(items > 0 && run.skipped == items));
        st.registered.insert(r.clone(), Value::Object(v));
    }
    if let Some(e) = run.failed {
        if run.lost {
            h.rep
                .task_done(host, &role.name, &task.name, Status::Unreachable, &e, None);
            st.tally.unreachable += 1;
            return false;
        }
        let msg = format!("{}: {e}", task.loc);
        h.rep
            .task_done(host, &role.name, &task.name, Status::Failed, &msg, None);
        if task.ignore_errors {
            st.tally.ok += 1;
            return true;
        }
        st.tally.failed += 1;
        return false;
    }
    let (status, msg) = if run.changed {
        st.tally.changed += 1;
        st.notified[ri].extend(task.notify.iter().cloned());
        (Status::Changed, run.msgs.join("; "))
    } else if run.skipped == items {
        st.tally.skipped += 1;
        (Status::Skipped, String::new())
    } else {
        st.tally.ok += 1;
        (Status::Ok, run.ok_msgs.join("; "))
    };
    let diff = (!run.diffs.is_empty()).then(|| run.diffs.join("\n"));
    h.rep
        .task_done(host, &role.name, &task.name, status, &msg, diff.as_deref());
    true
}

/// After a change that could cut access: a brand-new connection with the same
/// credentials must work; otherwise `rollback` runs on the connection still open.
async fn prove_access(
    h: &HostCtx<'_>,
    rollback: &str,
    confirm: Option<&str>,
) -> Result<(), String> {
    let target = (*h.conn().target).clone();
    let user = target.user.clone();
    let err = match Conn::connect(target).await {
        Ok(c) => {
            let r = match confirm {
                Some(s) => c.run(s, None, Some("root")).await,
                None => c.run("true", None, None).await,
            };
            c.close().await;
            match r {
                Ok(o) if o.rc == 0 => return Ok(()),
                Ok(o) => format!(
                    "it could not confirm the change (exit {}): {}",
                    o.rc,
                    crate::sys::tail(o.stderr.trim(), 2)
                ),
                Err(e) => e.to_string(),
            }
        }
        Err(e) => e.to_string(),
    };
    let restored = match h.conn().run(rollback, None, Some("root")).await {
        Ok(o) if o.rc == 0 => "the previous settings were restored".to_string(),
        Ok(o) => format!("ROLLBACK FAILED (exit {}): {}", o.rc, o.stderr.trim()),
        Err(e) => format!("ROLLBACK FAILED: {e}"),
    };
    Err(format!(
        "a new SSH connection as `{user}` failed after the change ({err}); {restored}. \
         Check what limits who may log in (AllowUsers, AllowGroups, firewall sources and rules)"
    ))
}
