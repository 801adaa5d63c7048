//! The stacks step's plan, in phases: read what the manager runs, sort each wanted stack
//! (current, deployed but not running yet, to deploy, to remove), stop a stack whose tasks
//! flap, then the actions, and what provision deployed that the inventory no longer lists.

use super::{remove, render, Stacks};
use crate::cluster::Action;
use indexmap::IndexMap;

/// What the manager reported.
#[derive(Default)]
pub(super) struct Live {
    /// Stack -> its services: (name, spec label).
    deployed: IndexMap<String, Vec<(String, String)>>,
    networks: Vec<String>,
    /// Service -> tasks running / wanted (`2/2`, `1/2 (...)`).
    replicas: IndexMap<String, String>,
}

impl Live {
    pub(super) fn read(secs: &IndexMap<String, String>) -> Live {
        let lines = |k: &str| secs.get(k).map(String::as_str).unwrap_or("").lines();
        let mut deployed: IndexMap<String, Vec<(String, String)>> = IndexMap::new();
        for l in lines("services") {
            let f: Vec<&str> = l.split('|').collect();
            if let [svc, ns, spec] = f[..] {
                if !ns.is_empty() && ns != "<no value>" {
                    deployed
                        .entry(ns.to_owned())
                        .or_default()
                        .push((svc.to_owned(), spec.replace("<no value>", "")));
                }
            }
        }
        Live {
            deployed,
            networks: lines("networks").map(str::to_owned).collect(),
            replicas: lines("replicas")
                .filter_map(|l| l.split_once(' '))
                .map(|(n, r)| (n.to_owned(), r.trim().to_owned()))
                .collect(),
        }
    }
}

/// Wanted stacks by index: to deploy (true) or remove (false), in inventory order, and
/// those deployed as wanted whose tasks do not all run yet.
pub(super) struct Sorted {
    pub todo: Vec<(usize, bool)>,
    pub waits: Vec<usize>,
}

impl Stacks {
    /// The networks there are, counting those the stacks of this run make (`proxy` of the
    /// proxy stack).
    pub(super) fn networks(&self, live: &Live) -> Vec<String> {
        let mut networks = live.networks.clone();
        for w in self.want.iter().filter(|w| w.present) {
            for (key, n) in w
                .doc
                .get("networks")
                .and_then(|n| n.as_object())
                .into_iter()
                .flatten()
            {
                if n.get("external").and_then(|e| e.as_bool()) != Some(true) {
                    networks.push(
                        n.get("name")
                            .and_then(|x| x.as_str())
                            .map(str::to_owned)
                            .unwrap_or_else(|| format!("{}_{key}", w.name)),
                    );
                }
            }
        }
        networks
    }

    /// Current stacks are left alone (or waited for); a stack that would deploy but fails
    /// its checks against the swarm stops the step before anything is deployed.
    pub(super) fn sort(&self, live: &Live, sw: &render::Swarm) -> Result<Sorted, String> {
        let mut out = Sorted {
            todo: Vec::new(),
            waits: Vec::new(),
        };
        let mut problems = Vec::new();
        for (i, s) in self.want.iter().enumerate() {
            let have = live.deployed.get(&s.name);
            if !s.present {
                if have.is_some() {
                    out.todo.push((i, false));
                }
                continue;
            }
            let current = have.is_some_and(|h| {
                h.len() == s.services.len()
                    && s.services.iter().all(|svc| {
                        let full = format!("{}_{svc}", s.name);
                        h.iter().any(|(n, spec)| *n == full && *spec == s.spec)
                    })
            });
            if current {
                let all_running = s.services.iter().all(|svc| {
                    live.replicas
                        .get(&format!("{}_{svc}", s.name))
                        .is_some_and(|r| super::converged(r))
                });
                if !all_running {
                    out.waits.push(i);
                }
                continue;
            }
            problems.extend(
                render::lint(s, sw)
                    .into_iter()
                    .map(|p| format!("stack `{}`: {p}", s.name)),
            );
            out.todo.push((i, true));
        }
        if !problems.is_empty() {
            return Err(format!("nothing was deployed: {}", problems.join("; ")));
        }
        Ok(out)
    }

    /// A stack deployed or waited for twice in this run that still does not run has tasks
    /// that exit or flap: the step stops instead of waiting again.
    pub(super) fn count_tries(&mut self, sorted: &Sorted, live: &Live) -> Result<(), String> {
        let names: Vec<String> = sorted
            .waits
            .iter()
            .chain(sorted.todo.iter().filter(|(_, d)| *d).map(|(i, _)| i))
            .map(|&i| self.want[i].name.clone())
            .collect();
        for name in names {
            let n = self.tries.entry(name.clone()).or_default();
            *n += 1;
            if *n > 2 {
                let shown: Vec<String> = live
                    .replicas
                    .iter()
                    .filter(|(svc, _)| svc.starts_with(&format!("{name}_")))
                    .map(|(svc, r)| format!("{svc} {r}"))
                    .collect();
                return Err(format!(
                    "stack {name}: its services do not stay running ({}) after being deployed and waited for: \
                     their tasks exit or flap; see `docker service ps --no-trunc`",
                    shown.join(", ")
                ));
            }
        }
        Ok(())
    }

    /// Waits for stacks already deployed, removals, then the stacks to deploy in inventory
    /// order in one command (a stack may use the network an earlier one makes); each reads
    /// its own part of stdin.
    pub(super) fn actions(&mut self, owner: &str, src: &str, sorted: &Sorted) -> Vec<Action> {
        self.watching.clear();
        let mut actions = Vec::new();
        for &i in &sorted.waits {
            let s = &self.want[i];
            let msg = format!(
                "wait until every service of stack {} runs (deployed, not running yet)",
                s.name
            );
            self.watching.insert(msg.clone(), vec![s.name.clone()]);
            actions.push(Action {
                host: owner.to_owned(),
                run_on: Some(src.to_owned()),
                msg,
                script: render::wait_script(&s.name, &s.spec, s.wait),
                stdin: None,
                serial: false,
            });
        }
        let (mut script, mut stdin, mut msgs) = (String::from("set -e\n"), Vec::new(), Vec::new());
        let mut names = Vec::new();
        for &(i, deploy) in &sorted.todo {
            let s = &self.want[i];
            if !deploy {
                actions.push(remove(owner, src, &s.name));
                continue;
            }
            let (sc, input) = render::deploy_script(s, &self.resolve);
            script += &format!("(\n{sc}\n)\n");
            stdin.extend(input);
            names.push(s.name.clone());
            let objs: Vec<&str> = s.objects.iter().map(|o| o.name.as_str()).collect();
            msgs.push(format!(
                "{} ({}{})",
                s.name,
                s.services.join(", "),
                if objs.is_empty() {
                    String::new()
                } else {
                    format!("; {}", objs.join(", "))
                }
            ));
        }
        if !msgs.is_empty() {
            let msg = format!(
                "deploy stack{} {} and wait until every service runs it",
                if msgs.len() > 1 { "s" } else { "" },
                msgs.join(", ")
            );
            self.watching.insert(msg.clone(), names);
            actions.push(Action {
                host: owner.to_owned(),
                run_on: Some(src.to_owned()),
                msg,
                script,
                stdin: Some(stdin),
                serial: false,
            });
        }
        actions
    }

    /// Stacks provision deployed that the inventory no longer lists: removed only with
    /// `prune`, reported otherwise.
    pub(super) fn leftovers(&mut self, owner: &str, src: &str, live: &Live) -> Vec<Action> {
        let mut actions = Vec::new();
        for (ns, svcs) in &live.deployed {
            let ours = svcs.iter().any(|(_, spec)| !spec.is_empty());
            if ours && !self.want.iter().any(|w| &w.name == ns) {
                if self.prune {
                    actions.push(remove(owner, src, ns));
                } else {
                    self.notes.push(format!(
                        "stack {ns} is deployed but no longer in the inventory: left running (list it with `state: absent`, or set stacks_prune: true, to remove it)"
                    ));
                }
            }
        }
        actions
    }
}

#[cfg(test)]
mod tests {
    use crate::cluster::testing::{member, only_action, plan_once};
    use serde_json::{json, Value};

    const WEB: &str = "version: \"3.8\"\nservices:\n  web:\n    image: busybox\n    networks: [front]\nnetworks:\n  front: { external: true }\n";

    /// A stack entry whose compose file is written in `d`.
    fn entry(d: &std::path::Path, name: &str) -> Value {
        std::fs::write(d.join("web.yml"), WEB).unwrap();
        json!({"name": name, "compose": d.join("web.yml").to_str().unwrap()})
    }

    /// The manager's probe: its swarm, provision's services (`name|stack|spec`), their
    /// replicas, the networks.
    fn manager(services: &[(&str, &str, &str)], replicas: &str) -> String {
        let mut o = "==PROVISION info\n{\"NodeID\":\"id-m1\",\"LocalNodeState\":\"active\",\"ControlAvailable\":true,\"Cluster\":{\"ID\":\"c1\"}}\n\
                     ==PROVISION nodes\n{\"ID\":\"id-m1\",\"Spec\":{\"Role\":\"manager\"},\"Description\":{\"Hostname\":\"m1\"},\"Status\":{\"State\":\"ready\"}}\n\
                     ==PROVISION services\n".to_string();
        for (svc, ns, spec) in services {
            o += &format!("{svc}|{ns}|{spec}\n");
        }
        o + "==PROVISION replicas\n" + replicas + "==PROVISION networks\nfront\ningress\n"
    }

    fn plan(
        stacks: Value,
        prune: bool,
        out: String,
    ) -> (Result<Vec<crate::cluster::Action>, String>, Vec<String>) {
        let ms = vec![member(
            "m1",
            json!({"stacks": stacks, "prune": prune}),
            true,
        )];
        let mut st = super::Stacks::default();
        let r = plan_once(&mut st, &ms, &[("m1", out)]);
        (r, st.notes.clone())
    }

    fn spec(e: &Value) -> String {
        super::render::stack(e, std::path::Path::new("/"), &|_| None)
            .unwrap()
            .spec
    }

    #[test]
    fn a_stack_with_the_wanted_spec_running_is_left_alone_one_that_differs_is_deployed() {
        let d = tempfile::tempdir().unwrap();
        let e = entry(d.path(), "web");
        let sp = spec(&e);
        let (r, _) = plan(
            json!([e]),
            false,
            manager(&[("web_web", "web", &sp)], "web_web 2/2\n"),
        );
        assert!(r.unwrap().is_empty(), "a current stack is not redeployed");
        let (r, _) = plan(
            json!([e]),
            false,
            manager(&[("web_web", "web", "old")], "web_web 2/2\n"),
        );
        let r = r.unwrap();
        let a = only_action(&r, "m1", "m1");
        assert!(a.msg.starts_with("deploy stack web (web)"), "{}", a.msg);
        assert!(a.stdin.is_some(), "the compose file travels on stdin");
    }

    #[test]
    fn a_stack_deployed_but_not_running_yet_is_waited_for_not_redeployed() {
        let d = tempfile::tempdir().unwrap();
        let e = entry(d.path(), "web");
        let sp = spec(&e);
        let (r, _) = plan(
            json!([e]),
            false,
            manager(&[("web_web", "web", &sp)], "web_web 1/2\n"),
        );
        let r = r.unwrap();
        let a = only_action(&r, "m1", "m1");
        assert!(
            a.msg
                .starts_with("wait until every service of stack web runs"),
            "{}",
            a.msg
        );
    }

    #[test]
    fn a_stack_that_fails_its_checks_stops_the_step_before_anything_is_deployed() {
        let d = tempfile::tempdir().unwrap();
        let good = entry(d.path(), "web");
        std::fs::write(
            d.path().join("bad.yml"),
            WEB.replace("front: {", "gone: {")
                .replace("[front]", "[gone]"),
        )
        .unwrap();
        let bad = json!({"name": "bad", "compose": d.path().join("bad.yml").to_str().unwrap()});
        let (r, _) = plan(json!([good, bad]), false, manager(&[], ""));
        let e = r.unwrap_err();
        assert!(
            e.starts_with("nothing was deployed")
                && e.contains("stack `bad`: network `gone` is external"),
            "{e}"
        );
    }

    #[test]
    fn a_stack_that_left_the_inventory_is_reported_and_removed_only_with_prune() {
        let d = tempfile::tempdir().unwrap();
        let e = entry(d.path(), "web");
        let sp = spec(&e);
        let out = manager(
            &[
                ("web_web", "web", &sp),
                ("old_app", "old", "abc"),
                ("theirs_x", "theirs", ""),
            ],
            "web_web 2/2\nold_app 1/1\ntheirs_x 1/1\n",
        );
        let (r, notes) = plan(json!([e]), false, out.clone());
        assert!(r.unwrap().is_empty());
        assert!(
            notes
                .iter()
                .any(|n| n.contains("stack old is deployed but no longer in the inventory")),
            "{notes:?}"
        );
        assert!(
            !notes.iter().any(|n| n.contains("theirs")),
            "a stack provision did not deploy is not its business"
        );
        let (r, _) = plan(json!([e]), true, out);
        let r = r.unwrap();
        let a = only_action(&r, "m1", "m1");
        assert!(
            a.script.contains("docker stack rm") && a.script.contains("old"),
            "{}",
            a.script
        );
    }

    #[test]
    fn a_stack_marked_absent_is_removed() {
        let d = tempfile::tempdir().unwrap();
        let mut e = entry(d.path(), "web");
        e["state"] = json!("absent");
        let (r, _) = plan(
            json!([e]),
            false,
            manager(&[("web_web", "web", "abc")], "web_web 2/2\n"),
        );
        let r = r.unwrap();
        let a = only_action(&r, "m1", "m1");
        assert!(a.script.contains("docker stack rm"), "{}", a.script);
    }
}
