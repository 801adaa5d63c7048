//! The read-only check of every rule on a host: one command that only reads
//! (`sshd -T`, /proc/sys, stat, daemon.json), compared here, rule by rule.

use super::{Check, Rule};
use crate::transport::quote as q;
use serde_json::Value;
use std::collections::HashMap;

pub use crate::finding::Finding;

/// One script reading everything the rules need. It writes nothing, not even temp files.
pub fn script(rules: &[Rule], sysctl_file: &str) -> String {
    let mut s = String::from("echo '==PROVISION sshd'; sshd -T 2>&1\n");
    s += &format!(
        "echo '==PROVISION persisted'; cat {} 2>/dev/null\n",
        q(sysctl_file)
    );
    for r in rules {
        match &r.check {
            Check::Sysctl { key, .. } => {
                let path = format!("/proc/sys/{}", key.replace('.', "/"));
                s += &format!(
                    "echo '==PROVISION sysctl {key}'; cat {} 2>/dev/null || echo '<missing>'\n",
                    q(&path)
                );
            }
            Check::File { path, .. } => {
                s += &format!(
                    "echo '==PROVISION file {path}'; stat -c '%F|%a|%U|%G' {} 2>/dev/null || echo absent\n",
                    q(path)
                );
            }
            _ => {}
        }
    }
    s += "echo '==PROVISION docker'; cat /etc/docker/daemon.json 2>/dev/null\n";
    s
}

fn sections(out: &str) -> HashMap<String, String> {
    let mut map = HashMap::new();
    let mut cur: Option<String> = None;
    for line in out.lines() {
        if let Some(name) = line.strip_prefix("==PROVISION ") {
            cur = Some(name.to_owned());
            map.entry(name.to_owned()).or_insert_with(String::new);
        } else if let Some(c) = &cur {
            let e = map.entry(c.clone()).or_insert_with(String::new);
            e.push_str(line);
            e.push('\n');
        }
    }
    map
}

/// `sshd -T` spellings that mean the same.
fn sshd_norm(v: &str) -> String {
    let v = v.trim().to_ascii_lowercase();
    match v.as_str() {
        "without-password" => "prohibit-password".into(),
        _ => v.split_whitespace().collect::<Vec<_>>().join(" "),
    }
}

fn sysctl_norm(v: &str) -> String {
    v.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Compares the probe's output with every rule.
pub fn evaluate(rules: &[Rule], out: &str, sysctl_file: &str) -> Vec<Finding> {
    let sec = sections(out);
    let empty = String::new();
    let sshd_out = sec.get("sshd").unwrap_or(&empty);
    let mut sshd: HashMap<String, Vec<String>> = HashMap::new();
    for line in sshd_out.lines() {
        if let Some((k, v)) = line.split_once(' ') {
            sshd.entry(k.to_ascii_lowercase())
                .or_default()
                .push(v.trim().to_owned());
        }
    }
    let sshd_ok = sshd.contains_key("port");
    let persisted: HashMap<String, String> = sec
        .get("persisted")
        .unwrap_or(&empty)
        .lines()
        .filter(|l| !l.trim_start().starts_with(['#', ';']))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), sysctl_norm(v)))
        .collect();
    let docker_text = sec.get("docker").unwrap_or(&empty);
    let docker: Result<Value, String> = if docker_text.trim().is_empty() {
        Err("no /etc/docker/daemon.json".into())
    } else {
        serde_json::from_str(docker_text).map_err(|e| format!("daemon.json is not valid JSON: {e}"))
    };
    rules
        .iter()
        .map(|r| {
            let (pass, expected, actual) = match &r.check {
                Check::Sshd { key, value } => {
                    let actual = if !sshd_ok {
                        format!("sshd -T failed: {}", crate::sys::tail(sshd_out.trim(), 2))
                    } else {
                        sshd.get(&key.to_ascii_lowercase())
                            .map(|v| v.join(" "))
                            .unwrap_or_else(|| "(not set)".into())
                    };
                    (
                        sshd_ok && sshd_norm(&actual) == sshd_norm(value),
                        format!("{key} {value}"),
                        format!("{key} {actual}"),
                    )
                }
                Check::Sysctl { key, value } => {
                    let live = sysctl_norm(sec.get(&format!("sysctl {key}")).unwrap_or(&empty));
                    let want = sysctl_norm(value);
                    let saved = persisted.get(key);
                    let actual = match saved {
                        Some(p) => format!("live {live}, {sysctl_file} {p}"),
                        None => format!("live {live}, not in {sysctl_file}"),
                    };
                    (
                        live == want && saved == Some(&want),
                        format!("live {want}, {sysctl_file} {want}"),
                        actual,
                    )
                }
                Check::File {
                    path,
                    dir,
                    mode,
                    owner,
                    group,
                    if_exists,
                } => {
                    let got = sec
                        .get(&format!("file {path}"))
                        .map(|s| s.trim().to_owned())
                        .unwrap_or_default();
                    let kind = if *dir { "directory" } else { "regular file" };
                    let expected = format!("{kind} {mode} {owner}:{group}");
                    if got == "absent" || got.is_empty() {
                        (*if_exists, expected, "absent".into())
                    } else {
                        let f: Vec<&str> = got.split('|').collect();
                        let actual = format!(
                            "{} {} {}:{}",
                            f.first()
                                .copied()
                                .unwrap_or("?")
                                .replace("regular empty file", "regular file"),
                            f.get(1).copied().unwrap_or("?"),
                            f.get(2).copied().unwrap_or("?"),
                            f.get(3).copied().unwrap_or("?")
                        );
                        (actual == expected, expected, actual)
                    }
                }
                Check::Docker { key, value } => {
                    let actual = match &docker {
                        Ok(v) => v
                            .get(key)
                            .map(|x| x.to_string())
                            .unwrap_or_else(|| "(not set)".into()),
                        Err(e) => e.clone(),
                    };
                    let pass = docker.as_ref().is_ok_and(|v| v.get(key) == Some(value));
                    (
                        pass,
                        format!("\"{key}\": {value}"),
                        format!("\"{key}\": {actual}"),
                    )
                }
            };
            Finding {
                id: r.id.clone(),
                title: r.title.clone(),
                reason: r.reason.clone(),
                pass,
                expected,
                actual,
            }
        })
        .collect()
}

/// Findings for the certificates provision keeps on a host (none found: none listed).
pub fn certificates(listing: &str, ca_pem: Option<&str>) -> Vec<Finding> {
    crate::pki::rows(listing, ca_pem, crate::pki::now())
        .into_iter()
        .map(|r| Finding {
            id: format!("pki-cert:{}", r.file),
            title: format!("certificate {}", r.file),
            reason: "an expired or foreign certificate breaks TLS between the cluster's services"
                .into(),
            pass: r.healthy() && ca_pem.is_some(),
            expected: "issued by this inventory's CA, outside its renewal window".into(),
            actual: match (&r.error, ca_pem) {
                (Some(e), _) => e.clone(),
                (None, None) => "no CA in the state directory to check it against".into(),
                (None, Some(_)) => format!(
                    "{}, {} days left{}",
                    if r.issuer_ok {
                        "issued by this CA"
                    } else {
                        "issued by another CA"
                    },
                    r.days_left,
                    if r.expiring { " (due for renewal)" } else { "" }
                ),
            },
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(id: &str, check: Check) -> Rule {
        Rule {
            id: id.into(),
            title: id.into(),
            reason: "r".into(),
            check,
        }
    }

    #[test]
    fn findings_compare_what_the_host_reports() {
        let rules = vec![
            rule(
                "a",
                Check::Sshd {
                    key: "PermitRootLogin".into(),
                    value: "prohibit-password".into(),
                },
            ),
            rule(
                "b",
                Check::Sshd {
                    key: "MaxAuthTries".into(),
                    value: "3".into(),
                },
            ),
            rule(
                "c",
                Check::Sysctl {
                    key: "net.x".into(),
                    value: "1".into(),
                },
            ),
            rule(
                "d",
                Check::Sysctl {
                    key: "net.y".into(),
                    value: "1".into(),
                },
            ),
            rule(
                "e",
                Check::File {
                    path: "/f".into(),
                    dir: false,
                    mode: "640".into(),
                    owner: "root".into(),
                    group: "shadow".into(),
                    if_exists: false,
                },
            ),
            rule(
                "f",
                Check::File {
                    path: "/g".into(),
                    dir: true,
                    mode: "700".into(),
                    owner: "root".into(),
                    group: "root".into(),
                    if_exists: true,
                },
            ),
            rule(
                "g",
                Check::Docker {
                    key: "icc".into(),
                    value: Value::Bool(false),
                },
            ),
        ];
        let out = "==PROVISION sshd\nport 22\npermitrootlogin without-password\nmaxauthtries 6\n==PROVISION persisted\nnet.x = 1\n==PROVISION sysctl net.x\n1\n==PROVISION sysctl net.y\n1\n==PROVISION file /f\nregular file|640|root|shadow\n==PROVISION file /g\nabsent\n==PROVISION docker\n{\"icc\": false}\n";
        let f = evaluate(&rules, out, "/etc/sysctl.d/x.conf");
        let pass: Vec<bool> = f.iter().map(|x| x.pass).collect();
        assert_eq!(pass, [true, false, true, false, true, true, true]);
        assert_eq!(f[1].actual, "MaxAuthTries 6");
        assert!(f[3].actual.contains("not in"));
        // A host that never ran sshd -T successfully fails its sshd rules, nothing panics.
        let f = evaluate(&rules, "garbage", "/x");
        assert!(!f[0].pass && !f[6].pass && !f[4].pass);
    }
}
