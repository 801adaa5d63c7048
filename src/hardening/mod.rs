//! Hardening rules as data (roles/hardening/rules.yml): each has an id, a title, a
//! reason, what it checks and the wanted value. Resolved per host from the host's
//! variables; the hardening role applies them and `provision audit` checks them.

pub mod audit;

use crate::play::RoleSource;
use crate::template::{self, environment};
use crate::yaml::{self, check_keys, err, Kind, Loc, Located, Node};
use serde_json::{json, Map, Value};

const KEYS: &[&str] = &[
    "id",
    "title",
    "reason",
    "sshd",
    "sysctl",
    "file",
    "dir",
    "docker",
    "value",
    "mode",
    "owner",
    "group",
    "if_exists",
    "when",
];

/// A rule as written, values not yet rendered.
#[derive(Debug, Clone)]
pub struct RuleDef {
    pub id: String,
    title: String,
    reason: String,
    kind: String,
    target: String,
    value: Value,
    file: (Option<String>, Option<String>, Option<String>, bool),
    when: Option<String>,
    loc: Loc,
}

/// What a rule checks, with the wanted value.
#[derive(Debug, Clone, PartialEq)]
pub enum Check {
    Sshd {
        key: String,
        value: String,
    },
    Sysctl {
        key: String,
        value: String,
    },
    File {
        path: String,
        dir: bool,
        mode: String,
        owner: String,
        group: String,
        if_exists: bool,
    },
    Docker {
        key: String,
        value: Value,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub id: String,
    pub title: String,
    pub reason: String,
    pub check: Check,
}

/// The rules file and the role's defaults.
pub struct Rules {
    pub defs: Vec<RuleDef>,
    defaults: Map<String, Value>,
}

impl Rules {
    pub fn load(src: &RoleSource) -> Result<Rules, Located> {
        let (text, path) = src.read("hardening", "rules.yml").ok_or_else(|| {
            err(
                &Loc::file_only(std::path::Path::new("roles/hardening")),
                "no rules.yml",
            )
        })?;
        let root = yaml::parse(&text, &path)?;
        let Kind::Seq(items) = &root.kind else {
            return Err(err(&root.loc, "the hardening rules must be a list"));
        };
        let mut defs: Vec<RuleDef> = Vec::new();
        for n in items {
            let d = parse_rule(n)?;
            if let Some(first) = defs.iter().find(|x| x.id == d.id) {
                return Err(err(
                    &d.loc,
                    format!("rule id `{}` is used twice (first at {})", d.id, first.loc),
                ));
            }
            defs.push(d);
        }
        let mut defaults = Map::new();
        if let Some((t, p)) = src.read("hardening", "defaults/main.yml") {
            if let Value::Object(m) = yaml::parse(&t, &p)?.to_json() {
                defaults = m;
            }
        }
        Ok(Rules { defs, defaults })
    }

    /// The rules that apply to a host with these variables, values rendered.
    pub fn resolve(&self, vars: &Map<String, Value>) -> Result<Vec<Rule>, String> {
        let mut ctx = self.defaults.clone();
        ctx.extend(vars.clone());
        let disabled: Vec<String> = match ctx.get("hardening_disabled") {
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
            None | Some(Value::Null) => Vec::new(),
            Some(other) => {
                return Err(format!(
                    "hardening_disabled must be a list of rule ids, found {other}"
                ))
            }
        };
        let values = match ctx.get("hardening_values") {
            Some(Value::Object(m)) => m.clone(),
            None | Some(Value::Null) => Map::new(),
            Some(other) => {
                return Err(format!(
                    "hardening_values must map rule ids to values, found {other}"
                ))
            }
        };
        let known: Vec<&str> = self.defs.iter().map(|d| d.id.as_str()).collect();
        for id in disabled.iter().chain(values.keys()) {
            let matches = glob::Pattern::new(id)
                .map(|p| known.iter().any(|k| p.matches(k)))
                .unwrap_or(false);
            if !matches {
                let near = yaml::closest(id, &known)
                    .map(|c| format!(" (did you mean `{c}`?)"))
                    .unwrap_or_default();
                return Err(format!("no hardening rule `{id}`{near}"));
            }
        }
        let env = environment();
        let mctx = minijinja::Value::from_serialize(&ctx);
        let mut out = Vec::new();
        for d in &self.defs {
            let off = disabled
                .iter()
                .any(|p| glob::Pattern::new(p).is_ok_and(|g| g.matches(&d.id)));
            if off {
                continue;
            }
            if let Some(w) = &d.when {
                if !template::eval_bool(&env, w, &mctx)
                    .map_err(|e| format!("rule {} ({}): when: {e}", d.id, d.loc))?
                {
                    continue;
                }
            }
            let raw = values
                .get(&d.id)
                .cloned()
                .unwrap_or_else(|| d.value.clone());
            let value = template::render_value(&env, &raw, &mctx)
                .map_err(|e| format!("rule {} ({}): {e}", d.id, d.loc))?;
            let check = match d.kind.as_str() {
                "sshd" => Check::Sshd {
                    key: d.target.clone(),
                    value: sshd_word(&value),
                },
                "sysctl" => Check::Sysctl {
                    key: d.target.clone(),
                    value: scalar(&value),
                },
                "docker" => Check::Docker {
                    key: d.target.clone(),
                    value,
                },
                _ => Check::File {
                    path: d.target.clone(),
                    dir: d.kind == "dir",
                    mode: d.file.0.clone().unwrap_or_default(),
                    owner: d.file.1.clone().unwrap_or_else(|| "root".into()),
                    group: d.file.2.clone().unwrap_or_else(|| "root".into()),
                    if_exists: d.file.3,
                },
            };
            if let Check::Sshd { value, key } | Check::Sysctl { value, key } = &check {
                if value.is_empty() || value.contains('\n') {
                    return Err(format!(
                        "rule {}: `{key}` needs a one-line value, got `{value}`",
                        d.id
                    ));
                }
            }
            out.push(Rule {
                id: d.id.clone(),
                title: d.title.clone(),
                reason: d.reason.clone(),
                check,
            });
        }
        Ok(out)
    }

    pub fn default(&self, key: &str) -> Option<&Value> {
        self.defaults.get(key)
    }
}

fn parse_rule(n: &Node) -> Result<RuleDef, Located> {
    let mut d = RuleDef {
        id: String::new(),
        title: String::new(),
        reason: String::new(),
        kind: String::new(),
        target: String::new(),
        value: Value::Null,
        file: (None, None, None, false),
        when: None,
        loc: n.loc.clone(),
    };
    for (k, kn, v) in n.entries("a hardening rule")? {
        check_keys(&k, kn, KEYS, "hardening rules")?;
        match k.as_str() {
            "id" => d.id = v.scalar_string("id")?,
            "title" => d.title = v.scalar_string("title")?,
            "reason" => d.reason = v.scalar_string("reason")?,
            "value" => d.value = v.to_json(),
            "mode" => d.file.0 = Some(v.scalar_string("mode")?.trim_start_matches('0').to_owned()),
            "owner" => d.file.1 = Some(v.scalar_string("owner")?),
            "group" => d.file.2 = Some(v.scalar_string("group")?),
            "if_exists" => d.file.3 = v.as_bool("if_exists")?,
            "when" => d.when = Some(v.scalar_string("when")?),
            kind => {
                if !d.kind.is_empty() {
                    return Err(err(
                        &kn.loc,
                        format!("rule has two kinds, `{}` and `{kind}`", d.kind),
                    ));
                }
                d.kind = kind.to_owned();
                d.target = v.scalar_string(kind)?;
            }
        }
    }
    let missing = |what: &str| err(&n.loc, format!("hardening rule `{}` has no `{what}`", d.id));
    if d.id.is_empty() {
        return Err(missing("id"));
    }
    if d.title.is_empty() {
        return Err(missing("title"));
    }
    if d.reason.is_empty() {
        return Err(missing("reason"));
    }
    match d.kind.as_str() {
        "" => {
            return Err(
                err(&n.loc, format!("rule `{}` says nothing to check", d.id))
                    .hint("give one of sshd, sysctl, file, dir, docker"),
            )
        }
        "file" | "dir" if d.file.0.is_none() => return Err(missing("mode")),
        "file" | "dir" => {}
        _ if d.value.is_null() => return Err(missing("value")),
        _ => {}
    }
    Ok(d)
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.trim().to_owned(),
        other => other.to_string(),
    }
}

/// sshd's words: booleans are yes/no.
fn sshd_word(v: &Value) -> String {
    match v {
        Value::Bool(true) => "yes".into(),
        Value::Bool(false) => "no".into(),
        other => scalar(other),
    }
}

/// The sshd drop-in for these rules.
pub fn sshd_conf(rules: &[Rule]) -> String {
    let mut s = String::from("# Managed by provision (hardening rules); edits are reverted.\n");
    for r in rules {
        if let Check::Sshd { key, value } = &r.check {
            s += &format!("# {}: {}\n{key} {value}\n", r.id, r.title);
        }
    }
    s
}

/// The `hardening` variable the role's tasks read.
pub fn as_var(rules: &[Rule]) -> Value {
    let mut sshd = Vec::new();
    let mut sysctl = Vec::new();
    let mut files = Vec::new();
    let mut docker = Map::new();
    for r in rules {
        match &r.check {
            Check::Sshd { key, value } => sshd.push(json!({"key": key, "value": value})),
            Check::Sysctl { key, value } => {
                sysctl.push(json!({"key": key, "value": value, "id": r.id}))
            }
            Check::File {
                path,
                dir,
                mode,
                owner,
                group,
                if_exists,
            } => files.push(json!({
                "path": path, "state": if *dir { "directory" } else { "file" }, "mode": mode,
                "owner": owner, "group": group, "if_exists": if_exists, "id": r.id})),
            Check::Docker { key, value } => {
                docker.insert(key.clone(), value.clone());
            }
        }
    }
    json!({"sshd": sshd, "sshd_conf": sshd_conf(rules), "sysctl": sysctl, "files": files, "docker": docker})
}

/// Refuses rules that would lock `user` out.
pub fn lockout(rules: &[Rule], user: &str) -> Result<(), String> {
    for r in rules {
        let Check::Sshd { key, value } = &r.check else {
            continue;
        };
        match key.to_ascii_lowercase().as_str() {
            "allowusers" => {
                let ok = value.split_whitespace().any(|p| {
                    let name = p.split('@').next().unwrap_or(p);
                    glob::Pattern::new(name).is_ok_and(|g| g.matches(user))
                });
                if !ok {
                    return Err(format!(
                        "rule {} would set AllowUsers {value}, which does not let `{user}` (the user provision connects as) log in: add it to hardening_ssh_allow_users",
                        r.id
                    ));
                }
            }
            "permitrootlogin" if user == "root" && value == "no" => {
                return Err(format!(
                    "rule {} would forbid root logins, but provision connects as root: connect as a sudo user (ansible_user) or set hardening_ssh_permit_root_login: prohibit-password",
                    r.id
                ));
            }
            "pubkeyauthentication" if value == "no" => {
                return Err(format!(
                    "rule {} would turn off key authentication, which provision uses",
                    r.id
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> Rules {
        Rules::load(&RoleSource { dir: None }).expect("built-in rules load")
    }

    #[test]
    fn builtin_rules_resolve_with_overrides() {
        let r = rules();
        let base = r.resolve(&Map::new()).unwrap();
        assert!(base.iter().any(|x| x.id == "ssh-root-login"));
        assert!(
            !base.iter().any(|x| x.id == "ssh-allow-users"),
            "AllowUsers only when asked for"
        );
        let vars = json!({
            "hardening_disabled": ["docker-*", "net-ip-forward"],
            "hardening_values": {"ssh-max-auth-tries": 5},
            "hardening_ssh_allow_users": ["admin", "ops"],
        });
        let got = r.resolve(vars.as_object().unwrap()).unwrap();
        assert!(!got
            .iter()
            .any(|x| x.id.starts_with("docker-") || x.id == "net-ip-forward"));
        let tries = got.iter().find(|x| x.id == "ssh-max-auth-tries").unwrap();
        assert_eq!(
            tries.check,
            Check::Sshd {
                key: "MaxAuthTries".into(),
                value: "5".into()
            }
        );
        let allow = got.iter().find(|x| x.id == "ssh-allow-users").unwrap();
        assert_eq!(
            allow.check,
            Check::Sshd {
                key: "AllowUsers".into(),
                value: "admin ops".into()
            }
        );
        assert!(lockout(&got, "admin").is_ok());
        assert!(lockout(&got, "deploy")
            .unwrap_err()
            .contains("does not let `deploy`"));
        assert!(lockout(&base, "root").is_err());
        let bad = json!({"hardening_disabled": ["ssh-rot-login"]});
        assert!(r
            .resolve(bad.as_object().unwrap())
            .unwrap_err()
            .contains("did you mean `ssh-root-login`"));
    }
}
