//! The converge loop of a cluster step: probe the members, plan across all of them,
//! apply, probe again, until the plan is empty (bounded rounds). Only members inside
//! `--limit` may be changed; serial actions run one at a time, each followed by a new probe.

use crate::cluster::{Action, Ctx, Member, Seen, Step};
use crate::transport::{Output, Remote};
use indexmap::IndexMap;
use std::sync::Arc;

pub use crate::cluster::MAX_ROUNDS;

/// What a step did, per host.
#[derive(Default, Debug)]
pub struct Outcome {
    /// Hosts changed (or, in check mode, that would be), with what was done there.
    pub changed: IndexMap<String, Vec<String>>,
    /// Hosts whose action failed, with why.
    pub failed: IndexMap<String, String>,
    /// The step itself failed: the play stops.
    pub fatal: Option<String>,
    pub rounds: usize,
    /// Hosts whose connection was lost during the step (with why): unreachable, not failed.
    pub lost: IndexMap<String, String>,
}

/// One command's result, and whether the host's connection is gone.
type Ran = (String, Result<Output, String>, bool);

/// A script to run: (host, as user, script, stdin).
type Job = (String, Option<String>, String, Option<Vec<u8>>);

async fn run_all(jobs: Vec<Job>, remotes: &IndexMap<String, Arc<dyn Remote>>) -> Vec<Ran> {
    let mut set = tokio::task::JoinSet::new();
    let mut v = Vec::new();
    for (i, (host, user, script, stdin)) in jobs.into_iter().enumerate() {
        let Some(r) = remotes.get(&host).cloned() else {
            v.push((
                i,
                (host.clone(), Err(format!("{host} is not connected")), false),
            ));
            continue;
        };
        set.spawn(async move {
            let res = r
                .run_script(&docker_bounded(&script), stdin.as_deref(), user.as_deref())
                .await;
            let lost = res.as_ref().is_err_and(|e| e.is_lost());
            (i, (host, res.map_err(|e| e.to_string()), lost))
        });
    }
    while let Some(j) = set.join_next().await {
        match j {
            Ok(x) => v.push(x),
            Err(e) => v.push((
                usize::MAX,
                (String::new(), Err(format!("internal error: {e}")), false),
            )),
        }
    }
    v.sort_by_key(|(i, _)| *i);
    v.into_iter().map(|(_, r)| r).collect()
}

/// A host whose connection was lost becomes a down member for the rest of the step: the
/// step plans without it, as it does for a host that was unreachable from the start.
fn lose(members: &mut [Member], oc: &mut Outcome, host: &str, why: &str) {
    if let Some(m) = members.iter_mut().find(|m| m.name == host) {
        m.writable = false;
        m.down = Some("unreachable (its connection was lost during this step)".into());
    }
    oc.lost
        .entry(host.to_owned())
        .or_insert_with(|| why.to_owned());
}

fn down(members: &[Member], host: &str) -> bool {
    members.iter().any(|m| m.name == host && m.is_down())
}

fn user_of(members: &[Member], host: &str) -> Option<String> {
    members
        .iter()
        .find(|m| m.name == host)
        .and_then(|m| m.user.clone())
}

fn failure(out: &Result<Output, String>) -> Option<String> {
    match out {
        Err(e) => Some(e.clone()),
        Ok(o) if o.rc != 0 => Some(format!(
            "exit code {}: {}",
            o.rc,
            crate::sys::tail(o.stderr.trim(), 6)
        )),
        Ok(_) => None,
    }
}

/// Runs `step` to convergence. `hide` is told of secrets the moment the step knows them.
pub async fn converge(
    step: &mut dyn Step,
    members: &[Member],
    remotes: &IndexMap<String, Arc<dyn Remote>>,
    cx: &Ctx<'_>,
    hide: &(dyn Fn(Vec<String>) + Sync),
    progress: &(dyn Fn(&str, &str) + Sync),
) -> Outcome {
    let mut oc = Outcome::default();
    let mut members: Vec<Member> = members.to_vec();
    let members = &mut members;
    for round in 1..=step.max_rounds() {
        oc.rounds = round;
        if crate::interrupt::requested() {
            oc.fatal = Some("the run was interrupted".into());
            return oc;
        }
        let probes = step
            .probes(members)
            .into_iter()
            .filter(|(h, _)| !oc.failed.contains_key(h) && !down(members, h))
            .map(|(h, s)| (h.clone(), user_of(members, &h), s, None))
            .collect();
        let mut seen = Seen::new();
        for (h, res, lost) in run_all(probes, remotes).await {
            match (lost, res) {
                (true, Err(e)) => lose(members, &mut oc, &h, &e),
                (_, res) => {
                    seen.insert(h, res);
                }
            }
        }
        let planned = step.plan(members, &seen, cx);
        hide(step.secrets());
        let actions: Vec<Action> = match planned {
            Ok(a) => a
                .into_iter()
                .filter(|a| !oc.failed.contains_key(&a.host))
                .collect(),
            // After a failed change its host is no longer probed, so the step may not see
            // enough to plan: that failure is the news, not this.
            Err(_) if !oc.failed.is_empty() => return oc,
            Err(e) => {
                oc.fatal = Some(e);
                return oc;
            }
        };
        if actions.is_empty() {
            if step.wants_reprobe() {
                continue;
            }
            return oc;
        }
        if let Some(e) = refused(members, &actions) {
            oc.fatal = Some(e);
            return oc;
        }
        if cx.check {
            for a in actions {
                oc.changed
                    .entry(a.host)
                    .or_default()
                    .push(format!("would {}", a.msg));
            }
            return oc;
        }
        // A serial change goes alone; the others together.
        let batch: Vec<Action> = match actions.iter().position(|a| a.serial) {
            Some(i) => vec![actions[i].clone()],
            None => actions,
        };
        let results = run_batch(step, &batch, members, remotes, progress).await;
        record(&batch, &results, members, &mut oc);
        if oc.fatal.is_some() {
            return oc;
        }
    }
    oc.fatal = Some(format!(
        "did not settle after {} rounds of probe and change: the hosts keep differing from the plan",
        step.max_rounds()
    ));
    oc
}

/// Only members inside --limit may change, and none through a host that is down: the
/// first action that would is the step's error.
fn refused(members: &[Member], actions: &[Action]) -> Option<String> {
    let blocked = |h: &str| members.iter().find(|m| m.name == h && m.is_down());
    let a = actions.iter().find(|a| {
        !members.iter().any(|m| m.name == a.host && m.writable)
            || a.run_on.as_deref().is_some_and(|on| blocked(on).is_some())
    })?;
    let on = a.run_on.as_deref().unwrap_or(&a.host);
    Some(match blocked(&a.host).or_else(|| blocked(on)) {
        Some(m) => format!(
            "would have to {} on {on}, but {} is {}: run again once it answers",
            a.msg,
            m.name,
            m.down.as_deref().unwrap_or("down")
        ),
        None => format!(
            "would have to change {} ({}), which is outside --limit or not in the play: \
             widen --limit to include it",
            a.host, a.msg
        ),
    })
}

/// Runs a batch of changes, each where it runs; a step that watches its changes (a
/// stack's rollout) reports their progress every second meanwhile.
async fn run_batch(
    step: &dyn Step,
    batch: &[Action],
    members: &[Member],
    remotes: &IndexMap<String, Arc<dyn Remote>>,
    progress: &(dyn Fn(&str, &str) + Sync),
) -> Vec<Ran> {
    let jobs = batch
        .iter()
        .map(|a| {
            let on = a.run_on.clone().unwrap_or_else(|| a.host.clone());
            let user = user_of(members, &on);
            (on, user, a.script.clone(), a.stdin.clone())
        })
        .collect();
    let watches: Vec<(String, String, Option<String>, String)> = batch
        .iter()
        .filter_map(|a| {
            let on = a.run_on.clone().unwrap_or_else(|| a.host.clone());
            let user = user_of(members, &on);
            step.watch(a).map(|w| (a.host.clone(), on, user, w))
        })
        .collect();
    if watches.is_empty() {
        return run_all(jobs, remotes).await;
    }
    let tick = async {
        loop {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            for (h, on, user, w) in &watches {
                let Some(r) = remotes.get(on) else { continue };
                if let Ok(o) = r
                    .run_script(&docker_bounded(w), None, user.as_deref())
                    .await
                {
                    let line = o.stdout.trim();
                    if o.rc == 0 && !line.is_empty() {
                        progress(h, line);
                    }
                }
            }
        }
    };
    tokio::select! {
        r = run_all(jobs, remotes) => r,
        _ = tick => unreachable!("the progress loop never ends"),
    }
}

/// Each change's result: changed, failed (fatal in a serial batch), or its host lost.
fn record(batch: &[Action], results: &[Ran], members: &mut [Member], oc: &mut Outcome) {
    let serial = batch.iter().any(|a| a.serial);
    for (a, (_, res, lost)) in batch.iter().zip(results.iter()) {
        let on = a.run_on.as_deref().unwrap_or(&a.host);
        match failure(res) {
            // The host is gone, not wrong: the step goes on without it (the next round
            // plans with it down), whether or not the change was quorum-sensitive.
            Some(e) if *lost => {
                lose(members, oc, on, &e);
                // Made through another host (a manager): planned again through a live one.
                if on == a.host {
                    oc.failed.insert(a.host.clone(), format!("{}: {e}", a.msg));
                }
            }
            Some(e) => {
                let msg = format!("{}: {e}", a.msg);
                if serial {
                    oc.fatal = Some(format!("{}: {msg}", a.host));
                }
                oc.failed.insert(a.host.clone(), msg);
            }
            None => {
                #[cfg(debug_assertions)]
                if std::env::var("PROVISION_TEST_KILL_AFTER").is_ok_and(|p| a.msg.starts_with(&p)) {
                    std::process::abort(); // test hook: a run killed right after this change
                }
                oc.changed
                    .entry(a.host.clone())
                    .or_default()
                    .push(a.msg.clone())
            }
        }
    }
}

/// Every Docker CLI call of a step's script gets a client-side bound: a daemon that does
/// not answer (a manager without quorum, a wedged dockerd) fails that call, naming it,
/// instead of holding the step until the command timeout.
pub const DOCKER_BOUND: u32 = 120;

fn docker_bound() -> u32 {
    // Tests make a wedged daemon cost seconds, not minutes.
    std::env::var("PROVISION_TEST_DOCKER_BOUND")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DOCKER_BOUND)
}

pub fn docker_bounded(script: &str) -> std::borrow::Cow<'_, str> {
    if !script.contains("docker ") {
        return script.into();
    }
    let b = docker_bound();
    format!(
        "docker() {{ timeout -k 5 {b} docker \"$@\" || {{ r=$?; [ \"$r\" != 124 ] || \
         echo \"docker $1 ${{2:-}}: the Docker daemon did not answer within {b} s\" >&2; return \"$r\"; }}; }}\n{script}"
    )
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::testing::{members, with_ctx};
    use crate::cluster::{sections, Step};
    use crate::transport::TransportError;
    use std::collections::HashMap;
    use std::sync::Mutex;

    /// A host whose only state is a map of files; `cat F` reads, `put F V` writes.
    struct Fake {
        files: Mutex<HashMap<String, String>>,
        log: Arc<Mutex<Vec<String>>>,
        name: String,
    }

    impl Remote for Fake {
        fn run_script<'a>(
            &'a self,
            script: &'a str,
            _stdin: Option<&'a [u8]>,
            _user: Option<&'a str>,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<Output, TransportError>> + Send + 'a>,
        > {
            Box::pin(async move {
                self.log
                    .lock()
                    .unwrap()
                    .push(format!("{} {script}", self.name));
                let mut f = self.files.lock().unwrap();
                let mut out = String::new();
                for line in script.lines() {
                    let w: Vec<&str> = line.splitn(3, ' ').collect();
                    match w.as_slice() {
                        ["cat", k] => {
                            out += &format!(
                                "==PROVISION {k}\n{}\n",
                                f.get(*k).cloned().unwrap_or_default()
                            )
                        }
                        ["put", k, v] => {
                            f.insert(k.to_string(), v.to_string());
                        }
                        ["die"] => {
                            return Err(TransportError::Lost {
                                host: self.name.clone(),
                                reason: "reset by peer".into(),
                            })
                        }
                        ["fail"] => {
                            return Ok(Output {
                                rc: 1,
                                stdout: String::new(),
                                stderr: "boom".into(),
                            })
                        }
                        _ => {}
                    }
                }
                Ok(Output {
                    rc: 0,
                    stdout: out,
                    stderr: String::new(),
                })
            })
        }
    }

    /// Copies `value` from the first member to every other, one host per round when serial.
    struct Relay {
        serial: bool,
        secret: Option<String>,
    }

    impl Step for Relay {
        fn prepare(&mut self, _: &[Member], _: &Ctx) -> Result<(), String> {
            Ok(())
        }
        fn probes(&self, members: &[Member]) -> Vec<(String, String)> {
            members
                .iter()
                .map(|m| (m.name.clone(), "cat value".to_string()))
                .collect()
        }
        fn plan(
            &mut self,
            members: &[Member],
            seen: &Seen,
            _: &Ctx,
        ) -> Result<Vec<Action>, String> {
            let src = &members[0].name;
            let v = match &seen[src] {
                Ok(o) => sections(&o.stdout)["value"].trim().to_owned(),
                Err(e) => return Err(e.clone()),
            };
            self.secret = Some(v.clone());
            Ok(members[1..]
                .iter()
                .filter(|m| match seen.get(&m.name) {
                    Some(Ok(o)) => sections(&o.stdout)["value"].trim() != v,
                    _ => false,
                })
                .map(|m| Action {
                    host: m.name.clone(),
                    run_on: None,
                    msg: format!("copy the value from {src}"),
                    script: if m.name == "bad" {
                        "fail".into()
                    } else if m.name == "gone" {
                        "die".into()
                    } else {
                        format!("put value {v}")
                    },
                    stdin: None,
                    serial: self.serial,
                })
                .collect())
        }
        fn secrets(&self) -> Vec<String> {
            self.secret.iter().cloned().collect()
        }
    }

    fn lab(
        names: &[(&str, &str)],
        log: &Arc<Mutex<Vec<String>>>,
    ) -> IndexMap<String, Arc<dyn Remote>> {
        names
            .iter()
            .map(|(n, v)| {
                let mut files = HashMap::new();
                if !v.is_empty() {
                    files.insert("value".to_string(), v.to_string());
                }
                let r: Arc<dyn Remote> = Arc::new(Fake {
                    files: Mutex::new(files),
                    log: log.clone(),
                    name: n.to_string(),
                });
                (n.to_string(), r)
            })
            .collect()
    }

    /// Runs a step to convergence on fake hosts, secrets dropped.
    fn go(
        step: &mut dyn Step,
        m: &[Member],
        r: &IndexMap<String, Arc<dyn Remote>>,
        check: bool,
    ) -> Outcome {
        with_ctx(check, |cx| {
            rt().block_on(converge(step, m, r, cx, &|_| {}, &|_, _| {}))
        })
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn converges_then_changes_nothing() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let r = lab(&[("a", "tok"), ("b", ""), ("c", "old")], &log);
        let m = members(&["a", "b", "c"], &["a", "b", "c"]);
        let hidden = Mutex::new(Vec::new());
        let hide = |v: Vec<String>| hidden.lock().unwrap().extend(v);
        let oc = with_ctx(false, |cx| {
            rt().block_on(converge(
                &mut Relay {
                    serial: false,
                    secret: None,
                },
                &m,
                &r,
                cx,
                &hide,
                &|_, _| {},
            ))
        });
        assert!(oc.fatal.is_none(), "{oc:?}");
        assert_eq!(oc.changed.keys().collect::<Vec<_>>(), ["b", "c"]);
        assert_eq!(
            oc.rounds, 2,
            "one round to change both at once, one to see it settled"
        );
        assert!(hidden.lock().unwrap().contains(&"tok".to_string()));
        let again = with_ctx(false, |cx| {
            rt().block_on(converge(
                &mut Relay {
                    serial: false,
                    secret: None,
                },
                &m,
                &r,
                cx,
                &hide,
                &|_, _| {},
            ))
        });
        assert!(again.changed.is_empty() && again.rounds == 1);
    }

    #[test]
    fn serial_actions_run_one_per_round() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let r = lab(&[("a", "x"), ("b", ""), ("c", "")], &log);
        let m = members(&["a", "b", "c"], &["a", "b", "c"]);
        let oc = go(
            &mut Relay {
                serial: true,
                secret: None,
            },
            &m,
            &r,
            false,
        );
        assert_eq!(oc.rounds, 3);
        let puts: Vec<String> = log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains("put"))
            .cloned()
            .collect();
        assert_eq!(puts, ["b put value x", "c put value x"]);
    }

    #[test]
    fn check_mode_plans_and_changes_nothing() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let r = lab(&[("a", "x"), ("b", "")], &log);
        let m = members(&["a", "b"], &["a", "b"]);
        let oc = go(
            &mut Relay {
                serial: false,
                secret: None,
            },
            &m,
            &r,
            true,
        );
        assert_eq!(oc.changed["b"], ["would copy the value from a"]);
        assert!(!log.lock().unwrap().iter().any(|l| l.contains("put")));
    }

    #[test]
    fn hosts_outside_the_limit_are_read_never_changed() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let r = lab(&[("a", "x"), ("b", ""), ("c", "")], &log);
        // a is read (outside the limit) and b changed; c outside the limit needs a change: refused.
        let m = members(&["a", "b", "c"], &["b"]);
        let oc = go(
            &mut Relay {
                serial: false,
                secret: None,
            },
            &m,
            &r,
            false,
        );
        assert!(
            oc.fatal
                .as_deref()
                .unwrap()
                .contains("c (copy the value from a), which is outside --limit"),
            "{oc:?}"
        );
        assert!(!log.lock().unwrap().iter().any(|l| l.contains("put")));
        let m = members(&["a", "b"], &["b"]);
        let oc = go(
            &mut Relay {
                serial: false,
                secret: None,
            },
            &m,
            &r,
            false,
        );
        assert!(oc.fatal.is_none() && oc.changed.contains_key("b"));
    }

    /// Changes node labels through a manager: every action runs on `a`, each reported for its host.
    struct ViaManager;

    impl Step for ViaManager {
        fn prepare(&mut self, _: &[Member], _: &Ctx) -> Result<(), String> {
            Ok(())
        }
        fn probes(&self, _: &[Member]) -> Vec<(String, String)> {
            vec![("a".into(), "cat b\ncat c".into())]
        }
        fn plan(&mut self, _: &[Member], seen: &Seen, _: &Ctx) -> Result<Vec<Action>, String> {
            let s = sections(&seen["a"].as_ref().unwrap().stdout);
            Ok(["b", "c"]
                .iter()
                .filter(|h| s[**h].trim().is_empty())
                .map(|h| Action {
                    host: h.to_string(),
                    run_on: Some("a".into()),
                    msg: format!("label {h}"),
                    script: format!("put {h} x"),
                    stdin: None,
                    serial: false,
                })
                .collect())
        }
    }

    #[test]
    fn actions_run_on_another_host_are_each_reported() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let r = lab(&[("a", ""), ("b", ""), ("c", "")], &log);
        // a is outside the limit: it only carries out changes for b and c.
        let m = members(&["a", "b", "c"], &["b", "c"]);
        let oc = go(&mut ViaManager, &m, &r, false);
        assert!(oc.fatal.is_none(), "{oc:?}");
        assert_eq!(oc.changed.keys().collect::<Vec<_>>(), ["b", "c"]);
        assert_eq!(oc.rounds, 2);
        assert!(log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains("put"))
            .all(|l| l.starts_with("a ")));
    }

    #[test]
    fn a_failed_action_fails_its_host_and_a_serial_one_the_step() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let r = lab(&[("a", "x"), ("bad", ""), ("c", "")], &log);
        let m = members(&["a", "bad", "c"], &["a", "bad", "c"]);
        let oc = go(
            &mut Relay {
                serial: false,
                secret: None,
            },
            &m,
            &r,
            false,
        );
        assert!(oc.fatal.is_none());
        assert!(oc.failed["bad"].contains("boom"));
        assert!(oc.changed.contains_key("c"));
        let r = lab(&[("a", "x"), ("bad", ""), ("c", "")], &log);
        let oc = go(
            &mut Relay {
                serial: true,
                secret: None,
            },
            &m,
            &r,
            false,
        );
        assert!(oc.fatal.as_deref().unwrap().starts_with("bad:"));
        assert!(
            !oc.changed.contains_key("c"),
            "nothing after a failed serial change"
        );
    }

    #[test]
    fn a_host_lost_mid_step_is_unreachable_and_the_step_goes_on_without_it() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let r = lab(&[("a", "x"), ("gone", ""), ("c", "")], &log);
        let m = members(&["a", "gone", "c"], &["a", "gone", "c"]);
        let oc = go(
            &mut Relay {
                serial: true,
                secret: None,
            },
            &m,
            &r,
            false,
        );
        assert!(oc.fatal.is_none(), "{:?}", oc.fatal);
        assert!(oc.lost["gone"].contains("lost"), "{:?}", oc.lost);
        assert!(oc.changed.contains_key("c"), "the others go on: {oc:?}");
        let log = log.lock().unwrap();
        let died = log.iter().position(|l| l == "gone die").unwrap();
        assert!(
            !log[died + 1..].iter().any(|l| l.starts_with("gone ")),
            "a lost host is not probed again: {log:?}"
        );
    }

    #[test]
    fn a_down_member_is_never_probed_and_never_changed() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let r = lab(&[("a", "x"), ("b", ""), ("c", "")], &log);
        let mut m = members(&["a", "b", "c"], &["a", "c"]);
        m[1].down = Some("unreachable".into());
        let oc = go(
            &mut Relay {
                serial: false,
                secret: None,
            },
            &m,
            &r,
            false,
        );
        assert!(oc.fatal.is_none(), "{:?}", oc.fatal);
        assert!(oc.changed.contains_key("c"));
        assert!(!log.lock().unwrap().iter().any(|l| l.starts_with("b ")));
        // A step that plans a change on the down host is stopped, saying why.
        struct OnB;
        impl Step for OnB {
            fn prepare(&mut self, _: &[Member], _: &Ctx) -> Result<(), String> {
                Ok(())
            }
            fn probes(&self, _: &[Member]) -> Vec<(String, String)> {
                Vec::new()
            }
            fn plan(&mut self, _: &[Member], _: &Seen, _: &Ctx) -> Result<Vec<Action>, String> {
                Ok(vec![Action {
                    host: "c".into(),
                    run_on: Some("b".into()),
                    msg: "label c".into(),
                    script: "put value y".into(),
                    stdin: None,
                    serial: false,
                }])
            }
        }
        let oc = go(&mut OnB, &m, &r, false);
        let f = oc.fatal.unwrap();
        assert!(f.contains("on b, but b is unreachable"), "{f}");
    }
}
