//! `swarm_stacks`: the inventory's stacks, rendered on the controller, deployed through a
//! manager (compose, configs and secrets on stdin) and waited for until every service runs
//! its new spec. An unchanged stack is recognised by the spec hash on its services and
//! left alone; a stack provision deployed that left the inventory is reported (removed
//! only with `prune`).

mod plan;
pub mod render;

use super::swarm::{owner, parse, probe_info, source, Seen1};
use super::{sections, Action, Ctx, Member, Seen, Step};
use crate::args::Args;
use crate::transport::quote;
use indexmap::IndexMap;
use render::{Stack, Swarm, SPEC_LABEL};

pub fn new() -> Box<dyn Step> {
    Box::<Stacks>::default()
}

#[derive(Default)]
struct Stacks {
    want: Vec<Stack>,
    prune: bool,
    resolve: String,
    notes: Vec<String>,
    secrets: Vec<String>,
    /// Action message -> the stacks it deploys or waits for (for its progress).
    watching: IndexMap<String, Vec<String>>,
    /// Stack -> deploys and waits planned in this run: a stack still not running after
    /// its wait succeeded has tasks that flap, and the step stops instead of waiting again.
    tries: IndexMap<String, u32>,
}

/// For the audit (on a manager): provision's services, their stack and replicas.
pub fn audit_script() -> String {
    format!("{REPLICAS_FN}echo '==PROVISION stacks'; ids=$(docker service ls -q --filter label=provision.spec 2>/dev/null) && [ -n \"$ids\" ] && \
     for i in $ids; do printf '%s|%s\\n' \"$(docker service inspect --format '{{{{.Spec.Name}}}}|{{{{index .Spec.Labels \"com.docker.stack.namespace\"}}}}' $i)\" \"$(reps $i)\"; done; true\n")
}

/// The stacks `vars` (`stacks`) want deployed, by name.
pub fn wanted_names(vars: &serde_json::Map<String, serde_json::Value>) -> Vec<String> {
    use serde_json::Value;
    vars.get("stacks")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|s| s.get("state").and_then(Value::as_str) != Some("absent"))
        .filter_map(|s| s.get("name").and_then(Value::as_str).map(str::to_owned))
        .collect()
}

/// Audit findings from `audit_script`'s output and the stacks the inventory lists.
pub fn audit_findings(out: &str, wanted: &[String]) -> Vec<crate::finding::Finding> {
    use crate::finding::Finding;
    let listing = sections(out).get("stacks").cloned().unwrap_or_default();
    let mut f = Vec::new();
    let mut deployed: Vec<String> = Vec::new();
    for l in listing.lines() {
        let p: Vec<&str> = l.split('|').collect();
        let [svc, ns, rep] = p[..] else { continue };
        if !deployed.iter().any(|d| d == ns) {
            deployed.push(ns.to_owned());
        }
        f.push(Finding {
            id: format!("stack-service:{svc}"),
            title: format!("service {svc} runs its wanted tasks"),
            reason: "a service short of tasks is down or degraded".into(),
            pass: converged(rep),
            expected: "running = wanted".into(),
            actual: format!("replicas {rep}"),
        });
    }
    for w in wanted {
        f.push(Finding {
            id: format!("stack:{w}"),
            title: format!("stack {w} is deployed"),
            reason: "the inventory lists it".into(),
            pass: deployed.contains(w),
            expected: "deployed".into(),
            actual: if deployed.contains(w) {
                "deployed".into()
            } else {
                "not deployed".into()
            },
        });
    }
    for d in deployed.iter().filter(|d| !wanted.contains(d)) {
        f.push(Finding {
            id: format!("stack:{d}"),
            title: format!("stack {d} is in the inventory"),
            reason: "provision deployed it, but the inventory no longer lists it".into(),
            pass: false,
            expected: "listed in `stacks`, or removed".into(),
            actual: "deployed, not in the inventory".into(),
        });
    }
    f
}

/// A shell function: `reps ID [REPLICAS]` prints a service's tasks running / wanted.
/// Docker's own count takes the last state a down node reported (`Running`) for tasks swarm
/// has already replaced (desired shutdown): with a node down it says 3/2 for ever, or 2/2
/// while a replacement is still pending. So while a node is not Ready, or the count is off,
/// the tasks that should run and do, on nodes that are Ready, are counted (a global service
/// wants none on a node that is down); otherwise Docker's count stands (no extra call per
/// service on a healthy swarm).
pub const REPLICAS_FN: &str = "down_names=$(docker node ls --format '{{.Hostname}} {{.Status}}' 2>/dev/null | awk '$2 != \"Ready\" {printf \"%s \", $1}')\n\
reps() { r=${2:-$(docker service ls --filter id=\"$1\" --format '{{.Replicas}}' 2>/dev/null)}; a=${r%%/*}; b=${r#*/}; b=${b%% *}; \
case \"$r\" in *completed*|'') printf '%s' \"$r\"; return ;; esac; \
if [ \"$a\" = \"$b\" ] && [ -z \"$down_names\" ]; then printf '%s' \"$r\"; return; fi; \
g=$(docker service inspect --format '{{if .Spec.Mode.Global}}g{{end}}' \"$1\" 2>/dev/null); \
n=$(docker service ps --filter desired-state=running --format '{{.CurrentState}}|{{.Node}}' \"$1\" 2>/dev/null | \
awk -F'|' -v down=\" $down_names\" 'index(down, \" \" $2 \" \") { d++; next } $1 ~ /^Running/ { c++ } END { print c + 0, d + 0 }'); \
set -- $n; [ \"$g\" = g ] && b=$((b - $2)); printf '%s/%s' \"$1\" \"$b\"; }\n";

fn script() -> String {
    probe_info(true)
        + &format!(
            "echo '==PROVISION services'; ids=$(docker service ls -q 2>/dev/null) && [ -n \"$ids\" ] && \
             docker service inspect --format '{{{{.Spec.Name}}}}|{{{{index .Spec.Labels \"com.docker.stack.namespace\"}}}}|{{{{index .Spec.Labels \"{SPEC_LABEL}\"}}}}' $ids 2>/dev/null\n\
             echo '==PROVISION replicas'; {REPLICAS_FN}docker service ls --format '{{{{.ID}}}}|{{{{.Name}}}}|{{{{.Replicas}}}}' 2>/dev/null | \
             while IFS='|' read -r id name r; do printf '%s %s\\n' \"$name\" \"$(reps \"$id\" \"$r\")\"; done\n\
             echo '==PROVISION networks'; docker network ls --format '{{{{.Name}}}}' 2>/dev/null; true\n"
        )
}

impl Step for Stacks {
    fn prepare(&mut self, members: &[Member], cx: &Ctx) -> Result<(), String> {
        let Some(m) = members.first() else {
            return Ok(());
        };
        let a = Args(&m.args);
        self.prune = a.bool("prune", false)?;
        self.resolve = a.choice("resolve_image", "always", &["always", "changed", "never"])?;
        let base = cx
            .inventory
            .path
            .parent()
            .map(|p| p.to_path_buf())
            .unwrap_or_default();
        let list = match m.args.get("stacks") {
            None | Some(serde_json::Value::Null) => Vec::new(),
            Some(serde_json::Value::Array(a)) => a.clone(),
            Some(v) => return Err(format!("`stacks` must be a list, found {v}")),
        };
        let builtin = |name: &str| crate::assets::builtin_file(&format!("stacks/{name}.yml.j2"));
        for e in &list {
            let s = render::stack(e, &base, &builtin)?;
            if self.want.iter().any(|w| w.name == s.name) {
                return Err(format!("stack `{}` is listed twice", s.name));
            }
            self.secrets.extend(
                s.objects
                    .iter()
                    .filter(|o| o.secret)
                    .map(|o| String::from_utf8_lossy(&o.data).into_owned())
                    .filter(|v| v.len() >= 4),
            );
            self.want.push(s);
        }
        Ok(())
    }

    fn reads_outside_limit(&self) -> bool {
        true
    }

    fn probes(&self, members: &[Member]) -> Vec<(String, String)> {
        if self.want.is_empty() && !self.prune {
            return Vec::new();
        }
        members.iter().map(|m| (m.name.clone(), script())).collect()
    }

    fn plan(&mut self, members: &[Member], seen: &Seen, _cx: &Ctx) -> Result<Vec<Action>, String> {
        self.notes.clear();
        if self.want.is_empty() && !self.prune {
            return Ok(Vec::new());
        }
        let obs: IndexMap<String, Seen1> = seen
            .iter()
            .filter_map(|(h, r)| r.as_ref().ok().map(|o| (h.clone(), parse(&o.stdout))))
            .collect();
        let Some((src, nodes, _)) = source(members, &obs)? else {
            return Err(
                "no manager of the swarm answers: stacks cannot be read or deployed".into(),
            );
        };
        let live = seen
            .get(&src)
            .and_then(|r| r.as_ref().ok())
            .map(|o| plan::Live::read(&sections(&o.stdout)))
            .unwrap_or_default();
        let labels: Vec<_> = nodes
            .iter()
            .map(|n| (n.description.hostname.clone(), n.spec.labels.clone()))
            .collect();
        let networks = self.networks(&live);
        let sw = Swarm {
            nodes: &labels,
            networks: &networks,
        };
        let sorted = self.sort(&live, &sw)?;
        self.count_tries(&sorted, &live)?;
        let Some(owner) = owner(members, &src, &obs) else {
            for &(i, _) in &sorted.todo {
                self.notes.push(format!(
                    "stack {} differs from the inventory: deployed on the next run that includes a manager",
                    self.want[i].name
                ));
            }
            return Ok(Vec::new());
        };
        let mut actions = self.actions(&owner, &src, &sorted);
        actions.extend(self.leftovers(&owner, &src, &live));
        Ok(actions)
    }

    fn notes(&self) -> Vec<String> {
        self.notes.clone()
    }

    fn secrets(&self) -> Vec<String> {
        self.secrets.clone()
    }

    fn watch(&self, a: &Action) -> Option<String> {
        let names = self.watching.get(&a.msg)?;
        let stacks: Vec<String> = names.iter().map(|n| quote(n)).collect();
        // `web_web 1/2 updating; ...`: tasks running / wanted and the update state.
        Some(format!(
            "{REPLICAS_FN}for s in {}; do for id in $(docker stack services -q \"$s\" 2>/dev/null); do \
             n=$(docker service inspect --format '{{{{.Spec.Name}}}} {{{{if .UpdateStatus}}}}{{{{.UpdateStatus.State}}}}{{{{end}}}}' \"$id\" 2>/dev/null); \
             r=$(reps \"$id\"); \
             printf '%s %s %s; ' \"${{n%% *}}\" \"${{r%% (*}}\" \"${{n#* }}\"; done; done; echo",
            stacks.join(" ")
        ))
    }
}

#[cfg(test)]
#[test]
fn replica_counts_that_are_converged() {
    for (r, want) in [
        ("2/2", true),
        ("0/0", true),
        ("1/2", false),
        ("2/2 (max 1 per node)", true),
        ("0/1 (1/1 completed)", true),
        ("0/1 (0/1 completed)", false),
    ] {
        assert_eq!(converged(r), want, "{r}");
    }
}

/// `2/2`, `0/0`, or a job's `0/1 (1/1 completed)`.
pub fn converged(r: &str) -> bool {
    if let Some(done) = r.split('(').nth(1).filter(|_| r.contains("completed")) {
        let d = done.trim_end_matches(')').trim_end_matches(" completed");
        return d.split_once('/').is_some_and(|(a, b)| a == b);
    }
    let r = r.split_whitespace().next().unwrap_or("");
    r.split_once('/').is_some_and(|(a, b)| a == b)
}

fn remove(owner: &str, src: &str, name: &str) -> Action {
    let st = quote(name);
    Action {
        host: owner.to_owned(),
        run_on: Some(src.to_owned()),
        msg: format!("remove stack {name}"),
        script: format!(
            "docker stack rm {st} >/dev/null; for i in $(seq 60); do [ -z \"$(docker stack services -q {st} 2>/dev/null)\" ] && break; sleep 1; done; \
             for kind in config secret; do for o in $(docker \"$kind\" ls --filter label=provision.stack={st} --format '{{{{.Name}}}}'); do docker \"$kind\" rm \"$o\" >/dev/null 2>&1 || true; done; done"
        ),
        stdin: None,
        serial: false,
    }
}
