//! One play across its hosts: the task list cut into segments at each cluster step.
//! Host-local segments run on every host at once; a cluster step is a barrier that
//! sees every host (and may read hosts outside `--limit`), then the hosts go on.

use super::cluster::converge;
use super::host::{self, HostCtx, HostState};
use super::{connect_host, ConnectError, HostRun, Options, Shared};
use crate::cluster::{Ctx, Member};
use crate::inventory::Inventory;
use crate::modules::{self, Build};
use crate::output::{Reporter, Status};
use crate::play::{Play, Task};
use crate::state::State;
use crate::template::{self, environment};
use crate::transport::{Conn, Remote};
use indexmap::IndexMap;
use minijinja::Environment;
use serde_json::{Map, Value};
use std::collections::HashSet;
use std::sync::Arc;

/// A host outside the play's hosts that a cluster step read (None when it could not be
/// reached).
type Extra = super::Connected;

/// A task of the play: role index, task index, handler or not.
#[derive(Clone, Copy, Debug)]
pub struct TaskRef {
    pub role: usize,
    pub index: usize,
    pub handler: bool,
}

impl TaskRef {
    pub fn task(self, play: &Play) -> &Task {
        let r = &play.roles[self.role];
        if self.handler {
            &r.handlers[self.index]
        } else {
            &r.tasks[self.index]
        }
    }
}

pub enum Segment {
    Local(Vec<TaskRef>),
    Cluster(TaskRef),
}

/// The selected tasks of a play cut at each cluster step.
pub fn segments(play: &Play, o: &Options) -> Vec<Segment> {
    let mut out = Vec::new();
    let mut local = Vec::new();
    for (ri, r) in play.roles.iter().enumerate() {
        for (ti, t) in r.tasks.iter().enumerate() {
            if !host::selected(t, o) {
                continue;
            }
            let tr = TaskRef {
                role: ri,
                index: ti,
                handler: false,
            };
            if modules::is_cluster(&t.module) {
                if !local.is_empty() {
                    out.push(Segment::Local(std::mem::take(&mut local)));
                }
                out.push(Segment::Cluster(tr));
            } else {
                local.push(tr);
            }
        }
    }
    if !local.is_empty() {
        out.push(Segment::Local(local));
    }
    out
}

/// Everything a play's segments share.
pub struct PlayRun {
    pub play: Arc<Play>,
    pub envs: Arc<Vec<Environment<'static>>>,
    pub inv: Arc<Inventory>,
    pub shared: Arc<Shared>,
    pub o: Arc<Options>,
    pub rep: Arc<Reporter>,
    pub state: Arc<State>,
    /// How to reach the play's hosts outside `--limit` (read-only).
    pub outside: Arc<IndexMap<String, Result<crate::transport::Target, String>>>,
    /// Connections still being made (first play only): a host starts its first local
    /// segment as soon as its own is in; cluster steps wait for all.
    pub connecting: std::sync::Mutex<IndexMap<String, Connecting>>,
}

/// Builds the play's template environments once, for all its hosts.
pub fn environments(play: &Play) -> Result<Vec<Environment<'static>>, String> {
    let mut envs = Vec::new();
    for role in &play.roles {
        let mut env = environment();
        for (name, src) in &role.templates {
            env.add_template_owned(name.clone(), src.clone())
                .map_err(|e| {
                    format!(
                        "role {}: template {name}: {}",
                        role.name,
                        template::describe(&e)
                    )
                })?;
        }
        envs.push(env);
    }
    Ok(envs)
}

impl PlayRun {
    /// Runs the play on `hosts` (inside the limit); `all` are the play's hosts without it.
    pub async fn run(
        &self,
        hosts: &[String],
        all: &[String],
        runs: &mut IndexMap<String, HostRun>,
        extra: &mut IndexMap<String, Option<Extra>>,
        published: &mut Map<String, Value>,
    ) -> bool {
        let segs = segments(&self.play, &self.o);
        let total: usize = segs
            .iter()
            .map(|s| match s {
                Segment::Local(v) => v.len(),
                Segment::Cluster(_) => 1,
            })
            .sum();
        let mut states: IndexMap<String, HostState> = IndexMap::new();
        for h in hosts {
            let Some(r) = runs.get_mut(h) else { continue };
            if r.failed {
                continue;
            }
            self.rep.plan(h, total as u64);
            let mut notified = vec![HashSet::new(); self.play.roles.len()];
            // Handlers notified in a run that failed before they ran: they run in this one.
            for (role, names) in self.pending(h) {
                if let Some(ri) = self.play.roles.iter().position(|r| r.name == role) {
                    notified[ri].extend(names);
                }
            }
            states.insert(
                h.clone(),
                HostState {
                    registered: std::mem::take(&mut r.registered),
                    notified,
                    ..Default::default()
                },
            );
        }
        let mut ok = true;
        for seg in segs {
            match seg {
                Segment::Local(refs) => self.local(refs, runs, &mut states, published).await,
                Segment::Cluster(tr) => {
                    // A cluster step sees every host: the connections still being made first.
                    self.settle_connects(runs).await;
                    // Hosts meet a cluster step in their final local state: handlers first.
                    self.flush_handlers(runs, &mut states, published).await;
                    if !self
                        .cluster(tr, all, runs, extra, &mut states, published)
                        .await
                    {
                        ok = false;
                        break;
                    }
                }
            }
        }
        if ok {
            self.flush_handlers(runs, &mut states, published).await;
        }
        for (h, st) in states {
            self.keep_pending(&h, runs.get(&h).is_some_and(|r| r.failed), &st);
            if let Some(r) = runs.get_mut(&h) {
                r.tally.ok += st.tally.ok;
                r.tally.changed += st.tally.changed;
                r.tally.failed += st.tally.failed;
                r.tally.skipped += st.tally.skipped;
                r.tally.unreachable += st.tally.unreachable;
                r.registered = st.registered;
                r.finished = Some(st.done_at.unwrap_or_else(std::time::Instant::now));
            }
        }
        // Connections still being made (hosts this play never reached): recorded last, so
        // the others' times are their own.
        self.settle_connects(runs).await;
        ok
    }

    fn take_connecting(&self, h: &str) -> Option<Connecting> {
        self.connecting.lock().ok()?.shift_remove(h)
    }

    /// Waits for the connections still being made and records them.
    async fn settle_connects(&self, runs: &mut IndexMap<String, HostRun>) {
        let left: Vec<(String, Connecting)> = match self.connecting.lock() {
            Ok(mut m) => m.drain(..).collect(),
            Err(_) => return,
        };
        for (h, p) in left {
            let c = joined(p).await;
            if let Some(r) = runs.get_mut(&h) {
                super::connected(&self.rep, &h, r, c);
            }
        }
    }

    fn pending_file(h: &str) -> String {
        format!("pending-handlers/{h}.json")
    }

    /// Handlers left pending on `h` by an earlier run: role name to handler names.
    fn pending(&self, h: &str) -> Vec<(String, Vec<String>)> {
        self.state
            .read(&Self::pending_file(h))
            .and_then(|b| {
                serde_json::from_slice::<std::collections::BTreeMap<String, Vec<String>>>(&b).ok()
            })
            .map(|m| m.into_iter().collect())
            .unwrap_or_default()
    }

    /// After the play: a host that failed with handlers still notified keeps them in the
    /// state directory for the next run; one that finished has none left for this play's roles.
    fn keep_pending(&self, h: &str, failed: bool, st: &HostState) {
        if self.o.check {
            return;
        }
        let mine: Vec<&str> = self.play.roles.iter().map(|r| r.name.as_str()).collect();
        let mut left: std::collections::BTreeMap<String, Vec<String>> = self
            .pending(h)
            .into_iter()
            .filter(|(role, _)| !mine.contains(&role.as_str()))
            .collect();
        if failed {
            for (ri, names) in st.notified.iter().enumerate() {
                if !names.is_empty() {
                    let mut v: Vec<String> = names.iter().cloned().collect();
                    v.sort();
                    left.insert(self.play.roles[ri].name.clone(), v);
                }
            }
        }
        let file = Self::pending_file(h);
        if left.is_empty() {
            if self.state.read(&file).is_some() {
                let _ = self.state.remove(&file);
            }
        } else if let Ok(b) = serde_json::to_vec(&left) {
            if let Err(e) = self.state.write(&file, &b, 0o600) {
                self.rep
                    .warn(&format!("{h}: pending handlers could not be saved: {e}"));
            }
        }
    }

    /// A host's context for rendering a cluster task's arguments.
    fn host_ctx<'a>(
        &'a self,
        h: &str,
        conn: Option<&'a Conn>,
        facts: Option<&'a Map<String, Value>>,
        published: &'a Map<String, Value>,
    ) -> HostCtx<'a> {
        HostCtx {
            play: &self.play,
            host: &self.inv.hosts[h],
            conn,
            hostvars: &self.shared.hostvars,
            facts,
            published,
            shared_vars: &self.shared.vars,
            derived: self.shared.derived(h),
            o: &self.o,
            rep: &self.rep,
            shared: &self.shared,
        }
    }

    /// Why a play host takes no live part in a cluster step, or None when it does (or is
    /// simply not this step's: a host outside `--limit` that the step does not read).
    fn down_reason(
        &self,
        h: &str,
        runs: &IndexMap<String, HostRun>,
        extra: &IndexMap<String, Option<Extra>>,
    ) -> Option<String> {
        match runs.get(h) {
            Some(r) if r.tally.unreachable > 0 => Some("unreachable".into()),
            Some(r) if r.conn.is_none() && r.failed => {
                Some("not connected (it failed to connect)".into())
            }
            Some(r) if r.failed => Some("failed earlier in this run".into()),
            _ => match extra.get(h) {
                Some(None) => Some("unreachable (outside --limit, could not be read)".into()),
                _ => None,
            },
        }
    }

    /// Runs the handlers each host was notified of, in the order their roles define them.
    async fn flush_handlers(
        &self,
        runs: &mut IndexMap<String, HostRun>,
        states: &mut IndexMap<String, HostState>,
        published: &Map<String, Value>,
    ) {
        // Hosts with the same handlers to run go together.
        let mut groups: IndexMap<Vec<(usize, usize)>, Vec<String>> = IndexMap::new();
        for (h, st) in states.iter_mut() {
            // A failed host keeps its notified handlers: they are saved for the next run.
            if runs.get(h).is_none_or(|r| r.failed) {
                continue;
            }
            let mut refs = Vec::new();
            for (ri, r) in self.play.roles.iter().enumerate() {
                for (ti, t) in r.handlers.iter().enumerate() {
                    if st.notified.get(ri).is_some_and(|n| n.contains(&t.name)) {
                        refs.push(TaskRef {
                            role: ri,
                            index: ti,
                            handler: true,
                        });
                    }
                }
                if let Some(n) = st.notified.get_mut(ri) {
                    n.clear();
                }
            }
            if !refs.is_empty() {
                let key = refs.iter().map(|r| (r.role, r.index)).collect();
                groups.entry(key).or_default().push(h.clone());
            }
        }
        for (key, hosts) in groups {
            let refs = key
                .into_iter()
                .map(|(role, index)| TaskRef {
                    role,
                    index,
                    handler: true,
                })
                .collect();
            let mut some: IndexMap<String, HostState> = hosts
                .iter()
                .filter_map(|h| states.swap_remove(h).map(|st| (h.clone(), st)))
                .collect();
            self.local(refs, runs, &mut some, published).await;
            states.extend(some);
        }
    }

    /// A host-local segment on every host still going, at once.
    async fn local(
        &self,
        refs: Vec<TaskRef>,
        runs: &mut IndexMap<String, HostRun>,
        states: &mut IndexMap<String, HostState>,
        published: &Map<String, Value>,
    ) {
        let published = Arc::new(published.clone());
        let sem = Arc::new(tokio::sync::Semaphore::new(self.o.forks.max(1)));
        let mut joins = Vec::new();
        for (h, st) in std::mem::take(states) {
            let pending = self.take_connecting(&h);
            let ready = runs
                .get(&h)
                .filter(|r| !r.failed)
                .and_then(|r| r.conn.clone().map(|c| (c, r.facts.clone())));
            let start = match (ready, pending) {
                (Some(c), _) => Start::Ready(c),
                (None, Some(p)) => Start::Pending(p),
                (None, None) => {
                    states.insert(h, st);
                    continue;
                }
            };
            let (play, envs, inv, shared, o, rep, refs, published, sem) = (
                self.play.clone(),
                self.envs.clone(),
                self.inv.clone(),
                self.shared.clone(),
                self.o.clone(),
                self.rep.clone(),
                refs.clone(),
                published.clone(),
                sem.clone(),
            );
            let before = st.tally.clone();
            let name = h.clone();
            let join = tokio::spawn(async move {
                let mut st = st;
                let (conn, facts, connected) = match start {
                    Start::Ready((c, f)) => (c, f, None),
                    Start::Pending(p) => match joined(p).await {
                        Ok((c, f)) => (c.clone(), f.clone(), Some(Ok((c, f)))),
                        Err(e) => return (st, false, Some(Err(e))),
                    },
                };
                let _permit = sem.acquire_owned().await;
                let ctx = HostCtx {
                    play: &play,
                    host: &inv.hosts[&name],
                    conn: Some(&conn),
                    hostvars: &shared.hostvars,
                    facts: Some(&facts),
                    published: &published,
                    shared_vars: &shared.vars,
                    derived: shared.derived(&name),
                    o: &o,
                    rep: &rep,
                    shared: &shared,
                };
                let steps: Vec<(usize, &Task)> =
                    refs.iter().map(|r| (r.role, r.task(&play))).collect();
                let ok = host::run_segment(&ctx, &envs, &steps, &mut st).await;
                st.done_at = Some(std::time::Instant::now());
                (st, ok, connected)
            });
            joins.push((h, before, join));
        }
        for (h, before, j) in joins {
            match j.await {
                Ok((st, ok, connected)) => {
                    if let Some(c) = connected {
                        if let Some(r) = runs.get_mut(&h) {
                            super::connected(&self.rep, &h, r, c);
                        }
                    }
                    if !ok {
                        if let Some(r) = runs.get_mut(&h) {
                            r.failed = true;
                        }
                    }
                    states.insert(h, st);
                }
                Err(e) => {
                    // A panic fails the host (and so the run); it is never dropped silently.
                    let why = if e.is_panic() {
                        "panicked"
                    } else {
                        "was cancelled"
                    };
                    self.rep.task_done(
                        &h,
                        "engine",
                        "internal error",
                        Status::Failed,
                        &format!("internal error: the host's task {why}: {e}"),
                        None,
                    );
                    let mut st = HostState {
                        tally: before,
                        notified: vec![HashSet::new(); self.play.roles.len()],
                        ..Default::default()
                    };
                    st.tally.failed += 1;
                    if let Some(r) = runs.get_mut(&h) {
                        r.failed = true;
                    }
                    states.insert(h, st);
                }
            }
        }
    }

    /// A cluster step: members rendered per host, converged, reported per host.
    async fn cluster(
        &self,
        tr: TaskRef,
        all: &[String],
        runs: &mut IndexMap<String, HostRun>,
        extra: &mut IndexMap<String, Option<Extra>>,
        states: &mut IndexMap<String, HostState>,
        published: &mut Map<String, Value>,
    ) -> bool {
        let task = tr.task(&self.play).clone();
        let role = self.play.roles[tr.role].name.clone();
        let Some(Build::Cluster(make)) = modules::def(&task.module).map(|d| d.build) else {
            return false;
        };
        let mut step = make();
        let writable: Vec<String> = states
            .keys()
            .filter(|h| runs.get(*h).is_some_and(|r| !r.failed))
            .cloned()
            .collect();
        let outside = if step.reads_outside_limit() {
            self.read_outside(all, states, runs, extra).await
        } else {
            Vec::new()
        };
        let sight = Sight {
            tr,
            task: &task,
            runs,
            extra,
            states,
            published,
        };
        let mut g = self.members(&sight, &writable, &outside);
        if step.counts_down_hosts() {
            self.down_members(&sight, all, &mut g);
        }
        // In the play's order, down or not: lists made from members (mon_host, etcd's
        // cluster) come out the same whoever answers.
        let order: std::collections::HashMap<&str, usize> = all
            .iter()
            .enumerate()
            .map(|(i, h)| (h.as_str(), i))
            .collect();
        g.members
            .sort_by_key(|m| order.get(m.name.as_str()).copied().unwrap_or(usize::MAX));
        self.rep.step_start(&writable, &role, &task.name);
        let cx = Ctx {
            state: &self.state,
            inventory: &self.inv,
            check: self.o.check,
            new_ca: self.o.new_ca,
        };
        let rep = self.rep.clone();
        let hide = move |v: Vec<String>| rep.hide(v);
        let mut oc = if !g.failures.is_empty() {
            super::cluster::Outcome {
                fatal: Some(
                    g.failures
                        .iter()
                        .map(|(h, e)| format!("{h}: {e}"))
                        .collect::<Vec<_>>()
                        .join("; "),
                ),
                ..Default::default()
            }
        } else if g.members.is_empty() {
            Default::default()
        } else {
            match step.prepare(&g.members, &cx) {
                Err(e) => super::cluster::Outcome {
                    fatal: Some(e),
                    ..Default::default()
                },
                Ok(()) => {
                    let progress = |h: &str, line: &str| {
                        self.rep
                            .task_start(h, &role, &format!("{}: {line}", task.name));
                    };
                    converge(step.as_mut(), &g.members, &g.remotes, &cx, &hide, &progress).await
                }
            }
        };
        hide(step.secrets());
        for n in step.notes() {
            self.rep.warn(&format!("{}: {n}", task.name));
        }
        let value = step.publish();
        if let (Some(r), false) = (&task.register, value.is_null()) {
            published.insert(r.clone(), value);
        }
        let fatal = oc.fatal.take();
        self.report_step(
            tr,
            &task,
            &writable,
            &g.members,
            &oc,
            fatal.as_ref(),
            runs,
            states,
        );
        fatal.is_none()
    }

    /// The hosts outside this play (or outside `--limit`) a step reads: over the
    /// connection another play already has, else a new read-only one. Those that cannot
    /// be read are recorded as None.
    async fn read_outside(
        &self,
        all: &[String],
        states: &IndexMap<String, HostState>,
        runs: &IndexMap<String, HostRun>,
        extra: &mut IndexMap<String, Option<Extra>>,
    ) -> Vec<String> {
        let outside: Vec<String> = all
            .iter()
            .filter(|h| !states.contains_key(*h))
            .cloned()
            .collect();
        for h in &outside {
            if extra.contains_key(h) {
                continue;
            }
            if let Some(Some(c)) = runs.get(h).map(|r| r.conn.clone()) {
                self.rep.warn(&format!(
                    "reading {h} (outside --limit for this play): read-only, nothing is changed there"
                ));
                extra.insert(h.clone(), Some((c, runs[h].facts.clone())));
                continue;
            }
            let c = match self.outside.get(h) {
                Some(Ok(t)) => {
                    match connect_host(t.clone(), self.inv.hosts[h].sudo, false, self.o.lock_wait)
                        .await
                    {
                        Ok((c, f)) => {
                            self.rep.warn(&format!(
                                "reading {h} (outside --limit): read-only, nothing is changed there"
                            ));
                            Some((c, f))
                        }
                        Err(e) => {
                            self.rep
                                .warn(&format!("{h} (outside --limit) could not be read: {e}"));
                            None
                        }
                    }
                }
                Some(Err(e)) => {
                    self.rep
                        .warn(&format!("{h} (outside --limit) could not be read: {e}"));
                    None
                }
                None => None,
            };
            extra.insert(h.clone(), c);
        }
        outside
    }

    /// The step's members that answer: the writable hosts, then those only read.
    fn members(&self, s: &Sight, writable: &[String], outside: &[String]) -> Gathered {
        let mut g = Gathered::default();
        let empty = HostState::default();
        let env = &self.envs[s.tr.role];
        for (h, is_writable) in writable
            .iter()
            .map(|h| (h, true))
            .chain(outside.iter().map(|h| (h, false)))
        {
            let conn = if is_writable {
                s.runs
                    .get(h)
                    .and_then(|r| r.conn.clone().map(|c| (c, r.facts.clone())))
            } else {
                s.extra.get(h).cloned().flatten()
            };
            let Some((conn, facts)) = conn else { continue };
            let ctx = self.host_ctx(h, Some(&conn), Some(&facts), s.published);
            let st = s.states.get(h).unwrap_or(&empty);
            match host::cluster_args(&ctx, s.tr.role, env, s.task, st) {
                Ok(Some(args)) => {
                    g.members.push(Member {
                        name: h.clone(),
                        args,
                        writable: is_writable,
                        user: host::cluster_user(&ctx, s.task),
                        down: None,
                    });
                    g.remotes.insert(h.clone(), conn.clone());
                }
                Ok(None) => {}
                Err(e) if is_writable => g.failures.push((h.clone(), e)),
                Err(_) => {}
            }
        }
        g
    }

    /// The play's other hosts (unreachable, failed earlier, not readable) are unknown,
    /// not gone: they take part as down members, counted and never probed or changed.
    fn down_members(&self, s: &Sight, all: &[String], g: &mut Gathered) {
        let empty = HostState::default();
        let env = &self.envs[s.tr.role];
        for h in all {
            if g.members.iter().any(|m| &m.name == h) || g.failures.iter().any(|(f, _)| f == h) {
                continue;
            }
            let Some(why) = self.down_reason(h, s.runs, s.extra) else {
                continue;
            };
            let facts = s.runs.get(h).map(|r| &r.facts).filter(|f| !f.is_empty());
            let ctx = self.host_ctx(h, None, facts, s.published);
            let st = s.states.get(h).unwrap_or(&empty);
            match host::cluster_args(&ctx, s.tr.role, env, s.task, st) {
                Ok(Some(args)) => g.members.push(Member {
                    name: h.clone(),
                    args,
                    writable: false,
                    user: None,
                    down: Some(why),
                }),
                Ok(None) => {}
                Err(e) => self.rep.warn(&format!(
                    "{}: {h} is {why} and its arguments cannot be worked out without it ({e}); \
                     the step goes on without counting it",
                    s.task.name
                )),
            }
        }
    }

    /// Each writable host's result of the step: lost, failed, changed, settled or skipped.
    #[allow(clippy::too_many_arguments)]
    fn report_step(
        &self,
        tr: TaskRef,
        task: &Task,
        writable: &[String],
        members: &[Member],
        oc: &super::cluster::Outcome,
        fatal: Option<&String>,
        runs: &mut IndexMap<String, HostRun>,
        states: &mut IndexMap<String, HostState>,
    ) {
        let role = &self.play.roles[tr.role].name;
        let done = std::time::Instant::now();
        for h in writable {
            let Some(st) = states.get_mut(h) else {
                continue;
            };
            st.done_at = Some(done);
            let in_step = members.iter().any(|m| &m.name == h);
            if let Some(e) = oc.lost.get(h) {
                st.tally.unreachable += 1;
                self.rep
                    .task_done(h, role, &task.name, Status::Unreachable, e, None);
                if let Some(r) = runs.get_mut(h) {
                    r.failed = true;
                }
                continue;
            }
            // The step failed for everyone (fatal), or this host's change failed.
            let failure = fatal
                .map(|e| (e, true))
                .or_else(|| oc.failed.get(h).map(|e| (e, false)));
            let (status, msg) = if let Some((e, all)) = failure {
                st.tally.failed += 1;
                if let Some(r) = runs.get_mut(h) {
                    r.failed = all || !task.ignore_errors;
                }
                (Status::Failed, format!("{}: {e}", task.loc))
            } else if let Some(msgs) = oc.changed.get(h) {
                st.tally.changed += 1;
                if let Some(n) = st.notified.get_mut(tr.role) {
                    n.extend(task.notify.iter().cloned());
                }
                (Status::Changed, msgs.join("; "))
            } else if in_step {
                st.tally.ok += 1;
                (Status::Ok, format!("settled after {} round(s)", oc.rounds))
            } else {
                st.tally.skipped += 1;
                (Status::Skipped, String::new())
            };
            self.rep.task_done(h, role, &task.name, status, &msg, None);
        }
    }
}

/// What a cluster step's members are made from.
struct Sight<'a> {
    tr: TaskRef,
    task: &'a Task,
    runs: &'a IndexMap<String, HostRun>,
    extra: &'a IndexMap<String, Option<Extra>>,
    states: &'a IndexMap<String, HostState>,
    published: &'a Map<String, Value>,
}

/// A cluster step's members, the connections to reach them, and the writable hosts whose
/// arguments could not be worked out.
#[derive(Default)]
struct Gathered {
    members: Vec<Member>,
    remotes: IndexMap<String, Arc<dyn Remote>>,
    failures: Vec<(String, String)>,
}

/// A host's connection being made: the connection and its facts, or why not.
pub type Connecting = tokio::task::JoinHandle<Result<super::Connected, ConnectError>>;

enum Start {
    Ready(super::Connected),
    Pending(Connecting),
}

async fn joined(p: Connecting) -> Result<super::Connected, ConnectError> {
    p.await
        .unwrap_or_else(|e| Err(ConnectError::Failed(format!("internal error: {e}"))))
}
