//! A stack as the inventory declares it, rendered on the controller: the compose template
//! with its variables, configs and secrets given content-addressed names, and a spec hash
//! on every service so an unchanged stack is recognised without deploying it again.
//! Also the checks made before anything is deployed.

use crate::transport::quote;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::Path;

pub const SPEC_LABEL: &str = "provision.spec";

/// One config or secret: its key in the compose file and its bytes.
#[derive(Debug, Clone)]
pub struct Object {
    pub key: String,
    pub name: String,
    pub secret: bool,
    pub data: Vec<u8>,
}

#[derive(Debug, Clone)]
pub struct Stack {
    pub name: String,
    pub present: bool,
    /// The compose file as deployed (JSON, which compose accepts).
    pub compose: String,
    pub services: Vec<String>,
    pub spec: String,
    pub objects: Vec<Object>,
    pub wait: u64,
    pub doc: Value,
}

fn short(b: &[u8]) -> String {
    hex::encode(&Sha256::digest(b)[..6])
}

fn name_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 40
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        && s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
}

/// Reads `content`/`value` or `file` (relative to the inventory's folder).
fn bytes(what: &str, m: &Map<String, Value>, base: &Path, inline: &str) -> Result<Vec<u8>, String> {
    match (m.get(inline), m.get("file")) {
        (Some(Value::String(s)), None) => Ok(s.clone().into_bytes()),
        (None, Some(Value::String(f))) => {
            let p = base.join(f);
            std::fs::read(&p).map_err(|e| format!("{what}: cannot read {}: {e}", p.display()))
        }
        _ => Err(format!("{what}: give either `{inline}` or `file`")),
    }
}

/// One stack from its inventory entry. `template` finds a built-in stack's template.
pub fn stack(
    entry: &Value,
    base: &Path,
    template: &dyn Fn(&str) -> Option<String>,
) -> Result<Stack, String> {
    let Value::Object(e) = entry else {
        return Err(format!(
            "each stack is a mapping with a `name`, found {entry}"
        ));
    };
    for k in e.keys() {
        if ![
            "name", "builtin", "compose", "vars", "configs", "secrets", "state", "wait",
        ]
        .contains(&k.as_str())
        {
            return Err(format!(
                "unknown key `{k}` (known: name, builtin, compose, vars, configs, secrets, state, wait)"
            ));
        }
    }
    let name = e
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    if !name_ok(&name) {
        return Err(format!(
            "stack name `{name}`: use lowercase letters, digits, - and _ (at most 40)"
        ));
    }
    let at = |s: &str| format!("stack `{name}`: {s}");
    let present = match e.get("state").and_then(Value::as_str).unwrap_or("present") {
        "present" => true,
        "absent" => false,
        s => return Err(at(&format!("state `{s}` is not present or absent"))),
    };
    let wait = match e.get("wait") {
        None => 300,
        Some(v) => v
            .as_u64()
            .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            .ok_or_else(|| at("`wait` must be a number of seconds"))?,
    };
    if !present {
        return Ok(Stack {
            name,
            present,
            compose: String::new(),
            services: Vec::new(),
            spec: String::new(),
            objects: Vec::new(),
            wait,
            doc: Value::Null,
        });
    }
    let (src, text) = source(e, base, template, &at)?;
    let vars = compose_vars(e, &name, &at)?;
    let env = crate::template::environment();
    let rendered = env
        .render_str(&text, minijinja::Value::from_serialize(&vars))
        .map_err(|err| at(&format!("{src}: {}", crate::template::describe(&err))))?;
    let node =
        crate::yaml::parse(&rendered, Path::new(&src)).map_err(|err| at(&err.to_string()))?;
    let mut doc = node.to_json();
    let Value::Object(d) = &mut doc else {
        return Err(at(&format!(
            "{src} is not a compose file (a mapping with `services`)"
        )));
    };
    check_version(d, &src, &at)?;
    let objects = take_objects(e, d, &name, base, &at)?;
    let services: Vec<String> = match d.get("services") {
        Some(Value::Object(s)) if !s.is_empty() => s.keys().cloned().collect(),
        _ => return Err(at(&format!("{src} has no `services`"))),
    };
    // The spec hash covers everything deployed, the objects' names included.
    let spec = hex::encode(
        &Sha256::digest(serde_json::to_string(&doc).unwrap_or_default().as_bytes())[..8],
    );
    label_spec(&mut doc, &spec);
    Ok(Stack {
        name,
        present,
        compose: serde_json::to_string_pretty(&doc).unwrap_or_default() + "\n",
        services,
        spec,
        objects,
        wait,
        doc,
    })
}

/// The stack's compose template: (where it comes from, its text).
fn source(
    e: &Map<String, Value>,
    base: &Path,
    template: &dyn Fn(&str) -> Option<String>,
    at: &dyn Fn(&str) -> String,
) -> Result<(String, String), String> {
    Ok(match (e.get("builtin"), e.get("compose")) {
        (Some(Value::String(b)), None) => (
            format!("<built-in>/templates/stacks/{b}.yml.j2"),
            template(b).ok_or_else(|| at(&format!("no built-in stack `{b}`")))?,
        ),
        (None, Some(Value::String(c))) => {
            let p = base.join(c);
            (
                p.display().to_string(),
                std::fs::read_to_string(&p)
                    .map_err(|err| at(&format!("cannot read {}: {err}", p.display())))?,
            )
        }
        _ => {
            return Err(at(
                "give either `builtin` (a stack of provision's) or `compose` (a file of yours)",
            ))
        }
    })
}

/// The template's variables: the entry's `vars`, the stack's name and its objects' keys.
fn compose_vars(
    e: &Map<String, Value>,
    name: &str,
    at: &dyn Fn(&str) -> String,
) -> Result<Map<String, Value>, String> {
    let mut vars = match e.get("vars") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(v) => return Err(at(&format!("`vars` must be a mapping, found {v}"))),
    };
    vars.insert("stack".into(), json!(name));
    // The keys of the stack's configs and secrets, for templates that mount them all.
    for (kind, var) in [("configs", "config_names"), ("secrets", "secret_names")] {
        let keys: Vec<String> = e
            .get(kind)
            .and_then(Value::as_object)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        vars.insert(var.into(), json!(keys));
    }
    Ok(vars)
}

/// Docker 20.10 deploys compose files of version 3.0 to 3.9.
fn check_version(
    d: &Map<String, Value>,
    src: &str,
    at: &dyn Fn(&str) -> String,
) -> Result<(), String> {
    let version = d.get("version").and_then(|v| {
        v.as_str()
            .map(str::to_owned)
            .or_else(|| v.as_f64().map(|f| f.to_string()))
    });
    match version.as_deref() {
        Some(v) if v.starts_with("3") && v.split('.').nth(1).is_none_or(|m| m.parse::<u32>().is_ok_and(|m| m <= 9)) => {}
        other => {
            return Err(at(&format!(
                "{src}: `version` is {}: the swarm's docker (20.10) deploys compose files of version \"3.0\" to \"3.9\"",
                other.unwrap_or("missing")
            )))
        }
    }
    Ok(())
}

/// The stack's configs and secrets, content-addressed (`STACK_KEY_HASH`), made external
/// in the compose file.
fn take_objects(
    e: &Map<String, Value>,
    d: &mut Map<String, Value>,
    name: &str,
    base: &Path,
    at: &dyn Fn(&str) -> String,
) -> Result<Vec<Object>, String> {
    let mut objects = Vec::new();
    // A template's own configs (`x-provision-configs: {name: text}`): the compose format
    // of docker 20.10 has no inline config content, and stdin has no folder for `file:`.
    let own: Map<String, Value> = match d.remove("x-provision-configs") {
        Some(Value::Object(m)) => m
            .into_iter()
            .map(|(k, v)| (k, json!({"content": v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string())})))
            .collect(),
        _ => Map::new(),
    };
    for (kind, inline, secret) in [("configs", "content", false), ("secrets", "value", true)] {
        let mut list = match e.get(kind) {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(m)) => m.clone(),
            Some(v) => {
                return Err(at(&format!(
                    "`{kind}` must map names to {{{inline} | file}}, found {v}"
                )))
            }
        };
        if !secret {
            for (k, v) in &own {
                list.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
        let top = d.entry(kind).or_insert_with(|| json!({}));
        if !top.is_object() {
            *top = json!({});
        }
        for (key, spec) in list {
            if !name_ok(&key) {
                return Err(at(&format!(
                    "{kind} name `{key}`: use lowercase letters, digits, - and _"
                )));
            }
            let Value::Object(m) = spec else {
                return Err(at(&format!(
                    "{kind}.{key} must be a mapping with `{inline}` or `file`"
                )));
            };
            let data = bytes(&at(&format!("{kind}.{key}")), &m, base, inline)?;
            let obj_name = format!("{name}_{key}_{}", short(&data));
            top[&key] = json!({"external": true, "name": obj_name});
            objects.push(Object {
                key,
                name: obj_name,
                secret,
                data,
            });
        }
        if top.as_object().is_some_and(|m| m.is_empty()) {
            d.remove(kind);
        }
    }
    Ok(objects)
}

/// Every service carries the stack's spec hash as a label: an unchanged stack is
/// recognised by it.
fn label_spec(doc: &mut Value, spec: &str) {
    if let Some(Value::Object(svcs)) = doc.get_mut("services") {
        for (_, s) in svcs.iter_mut() {
            let Value::Object(s) = s else { continue };
            let deploy = s.entry("deploy").or_insert_with(|| json!({}));
            if !deploy.is_object() {
                *deploy = json!({});
            }
            let labels = deploy
                .as_object_mut()
                .map(|d| d.entry("labels").or_insert_with(|| json!({})))
                .expect("deploy is a mapping");
            match labels {
                Value::Array(a) => a.push(json!(format!("{SPEC_LABEL}={spec}"))),
                Value::Object(m) => {
                    m.insert(SPEC_LABEL.into(), json!(spec));
                }
                other => *other = json!({SPEC_LABEL: spec}),
            }
        }
    }
}

/// What the swarm has, for the checks.
pub struct Swarm<'a> {
    /// Node hostname → labels.
    pub nodes: &'a [(String, BTreeMap<String, String>)],
    pub networks: &'a [String],
}

fn strs(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|x| x.as_str().map(str::to_owned))
            .collect(),
        Some(Value::Object(m)) => m.keys().cloned().collect(),
        Some(Value::String(s)) => vec![s.clone()],
        _ => Vec::new(),
    }
}

/// Mistakes that deploy "fine" and then never converge, found before deploying.
// Long on purpose: a list of independent checks, one message each.
pub fn lint(s: &Stack, sw: &Swarm) -> Vec<String> {
    let mut out = Vec::new();
    let top_nets: Map<String, Value> = s
        .doc
        .get("networks")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    for (key, n) in &top_nets {
        if n.get("external").and_then(Value::as_bool) == Some(true) {
            let real = n.get("name").and_then(Value::as_str).unwrap_or(key);
            if !sw.networks.iter().any(|x| x == real) {
                out.push(format!(
                    "network `{real}` is external but the swarm has no such network"
                ));
            }
        }
    }
    let Some(Value::Object(svcs)) = s.doc.get("services") else {
        return out;
    };
    let volumes = s.doc.get("volumes").and_then(Value::as_object);
    // Traefik middlewares the stack defines in its labels (`traefik.http.middlewares.NAME.*`).
    let labels_of = |svc: &Value| -> Vec<(String, String)> {
        match svc.get("deploy").and_then(|d| d.get("labels")) {
            Some(Value::Object(m)) => m
                .iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        v.as_str()
                            .map(str::to_owned)
                            .unwrap_or_else(|| v.to_string()),
                    )
                })
                .collect(),
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(|x| {
                    x.as_str()?
                        .split_once('=')
                        .map(|(k, v)| (k.to_owned(), v.to_owned()))
                })
                .collect(),
            _ => Vec::new(),
        }
    };
    let mut middlewares: Vec<String> = Vec::new();
    for svc in svcs.values() {
        for (k, _) in labels_of(svc) {
            if let Some(rest) = k.strip_prefix("traefik.http.middlewares.") {
                if let Some((m, _)) = rest.split_once('.') {
                    middlewares.push(m.to_owned());
                }
            }
        }
    }
    for (name, svc) in svcs {
        if svc
            .get("image")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            out.push(format!("service `{name}` has no `image`"));
        }
        for v in strs(svc.get("volumes")) {
            let src = v.split(':').next().unwrap_or("");
            if !src.is_empty()
                && !src.starts_with('/')
                && !src.starts_with('.')
                && !volumes.is_some_and(|m| m.contains_key(src))
            {
                out.push(format!(
                    "service `{name}`: volume `{src}` is not declared under `volumes`"
                ));
            }
        }
        for (k, v) in labels_of(svc) {
            if k.starts_with("traefik.http.routers.") && k.ends_with(".middlewares") {
                for m in v.split(',').map(str::trim) {
                    let (base, provider) = m.split_once('@').unwrap_or((m, "swarm"));
                    if provider == "swarm" && !middlewares.iter().any(|x| x == base) {
                        out.push(format!("service `{name}`: middleware `{m}` is defined by no label of the stack"));
                    }
                }
            }
        }
        for m in strs(svc.get("command"))
            .iter()
            .filter_map(|c| c.strip_prefix("--entrypoints.websecure.http.middlewares="))
        {
            for m in m.split(',') {
                let base = m.split('@').next().unwrap_or(m);
                if !middlewares.iter().any(|x| x == base) {
                    out.push(format!(
                        "service `{name}`: middleware `{m}` is defined by no label of the stack"
                    ));
                }
            }
        }
        for n in strs(svc.get("networks")) {
            if n != "default" && !top_nets.contains_key(&n) {
                out.push(format!(
                    "service `{name}`: network `{n}` is not declared under `networks`"
                ));
            }
        }
        for (kind, what) in [("configs", "config"), ("secrets", "secret")] {
            let declared = s.doc.get(kind).and_then(Value::as_object);
            for r in svc
                .get(kind)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let src = r
                    .as_str()
                    .or_else(|| r.get("source").and_then(Value::as_str));
                if let Some(src) = src {
                    if !declared.is_some_and(|d| d.contains_key(src)) {
                        out.push(format!(
                            "service `{name}`: {what} `{src}` is neither in the stack's `{kind}` nor declared in the compose file"
                        ));
                    }
                }
            }
        }
        let deploy = svc.get("deploy");
        let cons = strs(
            deploy
                .and_then(|d| d.get("placement"))
                .and_then(|p| p.get("constraints")),
        );
        for c in cons {
            let (l, op, r) = match c.split_once("==") {
                Some((l, r)) => (l.trim(), "==", r.trim()),
                None => match c.split_once("!=") {
                    Some((l, r)) => (l.trim(), "!=", r.trim()),
                    None => continue,
                },
            };
            if let Some(label) = l.strip_prefix("node.labels.") {
                let has = sw.nodes.iter().any(|(_, ls)| match op {
                    "==" => ls.get(label).is_some_and(|v| v == r),
                    _ => ls.get(label).is_none_or(|v| v != r),
                });
                if !has {
                    out.push(format!(
                        "service `{name}`: no node satisfies `{c}` (node labels come from swarm_labels)"
                    ));
                }
            } else if l == "node.hostname" && op == "==" && !sw.nodes.iter().any(|(h, _)| h == r) {
                out.push(format!(
                    "service `{name}`: `{c}`: the swarm has no node `{r}`"
                ));
            }
        }
        let start_first = deploy
            .and_then(|d| d.get("update_config"))
            .and_then(|u| u.get("order"))
            .and_then(Value::as_str)
            == Some("start-first");
        let host_port = svc
            .get("ports")
            .and_then(Value::as_array)
            .is_some_and(|ps| {
                ps.iter()
                    .any(|p| p.get("mode").and_then(Value::as_str) == Some("host"))
            });
        if start_first && host_port {
            out.push(format!(
                "service `{name}`: a host-mode port with `order: start-first` never converges (the new task cannot bind the port the old one holds): use stop-first"
            ));
        }
    }
    out
}

/// The script that deploys `s` through a manager: its configs and secrets (read from
/// stdin, never written to disk), the compose file (stdin too), then waits until every
/// service runs its new spec, failing fast on a task's error or a rollback.
pub fn deploy_script(s: &Stack, resolve: &str) -> (String, Vec<u8>) {
    let mut stdin = Vec::new();
    for o in &s.objects {
        let kind = if o.secret { "secret" } else { "config" };
        stdin.extend(format!("{kind} {} {} {}\n", o.name, o.key, o.data.len()).as_bytes());
        stdin.extend(&o.data);
    }
    stdin.extend(format!("compose - - {}\n", s.compose.len()).as_bytes());
    stdin.extend(s.compose.as_bytes());
    let st = quote(&s.name);
    let keep: Vec<String> = s.objects.iter().map(|o| o.name.clone()).collect();
    let script = format!(
        r#"set -e
while read -r kind name key len; do
  case "$kind" in
    config|secret)
      if docker "$kind" inspect "$name" >/dev/null 2>&1; then dd bs=1 count="$len" of=/dev/null 2>/dev/null
      else dd bs=1 count="$len" 2>/dev/null | docker "$kind" create --label provision.stack={st} --label provision.key="$key" "$name" - >/dev/null; fi ;;
    compose) break ;;
    *) echo "bad input" >&2; exit 1 ;;
  esac
done
t0=$(date -u '+%Y-%m-%d %H:%M:%S')
dd bs=1 count="$len" 2>/dev/null | docker stack deploy --prune --with-registry-auth --resolve-image {resolve} -c - {st} >/dev/null
{wait}
for kind in config secret; do
  for o in $(docker "$kind" ls --filter label=provision.stack={st} --format '{{{{.Name}}}}'); do
    case " {keep} " in *" $o "*) ;; *) docker "$kind" rm "$o" >/dev/null 2>&1 || true ;; esac
  done
done
"#,
        resolve = resolve,
        wait = wait_script(&s.name, &s.spec, s.wait),
        keep = keep.join(" "),
    );
    (script, stdin)
}

/// Polls the stack's services until each runs its wanted count on the new spec.
pub fn wait_script(stack: &str, spec: &str, secs: u64) -> String {
    let st = quote(stack);
    format!(
        r#"{reps}end=$(( $(date +%s) + {secs} )); since=$(date +%s); stuck=0; good=0; kicked=; t0=${{t0:-$(date -u '+%Y-%m-%d %H:%M:%S')}}
while :; do
  ok=1; report=
  # who is down now (a node may go down while this waits)
  down_names=$(docker node ls --format '{{{{.Hostname}}}} {{{{.Status}}}}' 2>/dev/null | awk '$2 != "Ready" {{ printf "%s ", $1 }}')
  for id in $(docker stack services -q {st}); do
    line=$(docker service inspect --format '{{{{.Spec.Name}}}}|{{{{index .Spec.Labels "{SPEC_LABEL}"}}}}|{{{{if .UpdateStatus}}}}{{{{.UpdateStatus.StartedAt}}}}|{{{{.UpdateStatus.State}}}}|{{{{.UpdateStatus.Message}}}}{{{{else}}}}||{{{{end}}}}' "$id")
    n=${{line%%|*}}; rest=${{line#*|}}; lab=${{rest%%|*}}; rest=${{rest#*|}}; ustart=${{rest%%|*}}; rest=${{rest#*|}}; ust=${{rest%%|*}}; umsg=${{rest#*|}}
    # an update status from before this deploy (a rollback a run ago) is history
    if [ -n "$ust" ] && [ "$(awk -v a="$ustart" -v b="$t0" 'BEGIN {{ print (substr(a, 1, 19) < b) }}')" = 1 ]; then ust=old; fi
    rep=$(reps "$id")
    case "$rep" in *completed*) job=1 ;; *) job=0 ;; esac
    # only tasks made since this deploy: an older spec's failures are history; a service
    # (not a job) whose task completed exited by itself and is restarted for ever
    err=$(for t in $(docker service ps -q "$id" 2>/dev/null | head -n 6); do docker inspect --format '{{{{.CreatedAt}}}}|{{{{.Status.State}}}}|{{{{.Status.Err}}}}' "$t" 2>/dev/null; done | \
      awk -F'|' -v t0="$t0" -v job="$job" '{{ c = substr($1, 1, 19); sub("T", " ", c) }} c >= t0 && ($2 == "rejected" || $2 == "failed") && $3 != "" {{ print $3; exit }}
        c >= t0 && $2 == "complete" && job == 0 {{ print "its task exited by itself (state complete): a service command must keep running; restarted for ever"; exit }}')
    case "$ust" in rollback_*|paused) echo "service $n: update $ust: $umsg${{err:+ (a new task: $err)}}" >&2; exit 1 ;; esac
    [ "$lab" = "{spec}" ] || ok=0
    # An update whose new task went to a node that then went down waits for that task for
    # ever (swarm runs the slot elsewhere, the update still waits, the old task of the next
    # slot keeps running): the service is updated again, once, forced, on the live nodes.
    if [ "$ust" = updating ] && [ -n "$down_names" ]; then
      case " $kicked " in *" $id "*) ;; *)
        down_ids=$(docker node ls --format '{{{{.ID}}}} {{{{.Status}}}}' 2>/dev/null | awk '$2 != "Ready" {{ printf "%s ", $1 }}')
        lost=$(for t in $(docker service ps -q "$id" 2>/dev/null | head -n 30); do docker inspect --format '{{{{.CreatedAt}}}}|{{{{.NodeID}}}}' "$t" 2>/dev/null; done | \
          awk -F'|' -v t0="$t0" -v down=" $down_ids" '{{ c = substr($1, 1, 19); sub("T", " ", c) }} c >= t0 && index(down, " " $2 " ") {{ n++ }} END {{ print n + 0 }}')
        if [ "$lost" -gt 0 ]; then
          docker service update --detach --force "$id" >/dev/null 2>&1 || true
          kicked="$kicked $id"; good=0
        fi ;;
      esac
    fi
    case "$ust" in updating) ok=0 ;; esac
    run=${{rep%%/*}}; want=${{rep#*/}}; want=${{want%% *}}
    case "$rep" in *completed*) done_=$(echo "$rep" | sed -n 's/.*(\([0-9]*\)\/\([0-9]*\) completed).*/\1 \2/p'); set -- $done_; [ "${{1:-0}}" = "${{2:-x}}" ] || ok=0 ;;
      *) [ "$run" = "$want" ] || ok=0 ;; esac
    report="$report $n=$rep"
    case " $kicked " in *" $id "*) report="$report (updated again: a new task had gone to a node that went down)" ;; esac
    case "$err" in *"exited by itself"*) echo "service $n: $err" >&2; exit 1 ;; esac
    if [ -n "$err" ] && [ "$run" != "$want" ]; then echo "service $n: $err" >&2; exit 1; fi
    pend=$(docker service ps "$id" --no-trunc --filter desired-state=running --format '{{{{.CurrentState}}}}|{{{{.Error}}}}' 2>/dev/null | grep -E '^Pending[^|]*\|.+' | head -n 1 || true)
    if [ -n "$pend" ]; then stuck=$((stuck+1)); if [ "$stuck" -ge 8 ]; then echo "service $n: ${{pend#*|}}" >&2; exit 1; fi; fi
  done
  # converged twice in a row, a second apart: a task that dies at once is seen doing so
  if [ "$ok" = 1 ]; then good=$((good+1)); else good=0; fi
  if [ "$good" -ge 2 ]; then echo "converged in $(( $(date +%s) - since )) s:$report"; break; fi
  if [ "$(date +%s)" -ge "$end" ]; then echo "not converged after {secs} s:$report" >&2; exit 1; fi
  sleep 1
done"#,
        reps = super::REPLICAS_FN
    )
}

#[cfg(test)]
mod tests;
