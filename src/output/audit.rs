//! What `provision audit` prints: a block per host, or for many hosts the drift grouped
//! by rule and the hosts not checked grouped by error.

use super::{group_hosts, some_names};
use crate::finding::AuditResult;
use crate::hardening::audit::Finding;
use indexmap::IndexMap;
use serde_json::{json, Value};

/// How the audit is shown.
pub struct AuditView {
    pub json: bool,
    pub verbose: u8,
    /// Grouped by rule and error instead of host by host (many hosts).
    pub summary: bool,
}

/// One drift group: a rule whose expected and actual values are the same on its hosts.
#[derive(PartialEq)]
struct Drift<'a> {
    id: &'a str,
    title: &'a str,
    expected: &'a str,
    actual: &'a str,
    reason: &'a str,
}

/// Prints what `provision audit` found; returns (rules drifted, hosts not checked).
pub fn audit_report(
    results: &IndexMap<String, (AuditResult, u64)>,
    view: &AuditView,
    seconds: f64,
) -> (usize, usize) {
    let drift: usize = results
        .values()
        .filter_map(|(r, _)| r.as_ref().ok())
        .map(|f| f.iter().filter(|f| !f.pass).count())
        .sum();
    let broken = results.values().filter(|(r, _)| r.is_err()).count();
    if view.json {
        json_report(results, view, drift, broken, seconds);
    } else if view.summary {
        text_summary(results, view, drift, broken, seconds);
    } else {
        text_by_host(results, view.verbose);
        out!("\nAUDIT");
        for (host, (res, round_trips)) in results {
            match res {
                Err(_) => out!("{host:<12} not checked"),
                Ok(f) => {
                    let failed = f.iter().filter(|f| !f.pass).count();
                    out!(
                        "{host:<12} rules={:<4} pass={:<4} drift={:<4} round_trips={round_trips}",
                        f.len(),
                        f.len() - failed,
                        failed,
                    )
                }
            }
        }
        if let Some(d) = degraded_line(results) {
            out!("{d}");
        }
        last_line(drift, broken, seconds);
    }
    (drift, broken)
}

fn text_by_host(results: &IndexMap<String, (AuditResult, u64)>, verbose: u8) {
    for (host, (res, _)) in results {
        match res {
            Err(e) => out!("{host:<12} ERROR  {e}"),
            Ok(findings) => {
                for f in findings.iter().filter(|f| !f.pass || verbose > 0) {
                    out!(
                        "{host:<12} {}  {:<28} {}",
                        if f.pass { "pass " } else { "DRIFT" },
                        f.id,
                        f.title
                    );
                    if !f.pass {
                        out!("{:<12}        expected: {}\n{:<12}        actual:   {}\n{:<12}        why:      {}", "", f.expected, "", f.actual, "", f.reason);
                    } else if !f.actual.is_empty() {
                        out!("{:<12}        actual:   {}", "", f.actual);
                    }
                }
            }
        }
    }
}

/// One line when hosts did not answer: which, and what the others see of them.
pub fn degraded_line(results: &IndexMap<String, (AuditResult, u64)>) -> Option<String> {
    let down: Vec<&str> = results
        .iter()
        .filter(|(_, (r, _))| r.as_ref().is_err_and(|e| e.unreachable))
        .map(|(h, _)| h.as_str())
        .collect();
    if down.is_empty() {
        return None;
    }
    let seen: Vec<String> = results
        .iter()
        .filter_map(|(h, (r, _))| r.as_ref().ok().map(|f| (h, f)))
        .flat_map(|(h, f)| {
            f.iter()
                .filter(|f| !f.pass && f.id.contains("-down-"))
                .map(move |f| format!("{} (seen from {h})", f.actual))
        })
        .collect();
    Some(format!(
        "degraded: {} unreachable{}",
        down.join(", "),
        if seen.is_empty() {
            String::new()
        } else {
            format!("; {}", seen.join("; "))
        }
    ))
}

fn last_line(drift: usize, broken: usize, seconds: f64) {
    if drift == 0 && broken == 0 {
        out!("compliant: every rule holds on every host ({seconds:.1}s)");
    } else {
        out!("{drift} rule(s) drifted, {broken} host(s) not checked ({seconds:.1}s)");
    }
}

/// Host counts: (compliant, drifted, not checked).
fn counts(results: &IndexMap<String, (AuditResult, u64)>) -> (usize, usize, usize) {
    let (mut ok, mut drifted, mut broken) = (0, 0, 0);
    for (r, _) in results.values() {
        match r {
            Err(_) => broken += 1,
            Ok(f) if f.iter().any(|f| !f.pass) => drifted += 1,
            Ok(_) => ok += 1,
        }
    }
    (ok, drifted, broken)
}

fn drift_groups(results: &IndexMap<String, (AuditResult, u64)>) -> Vec<(Drift<'_>, Vec<String>)> {
    group_hosts(results.iter().flat_map(|(h, (r, _))| {
        r.iter().flatten().filter(|f| !f.pass).map(|f: &Finding| {
            (
                h.as_str(),
                Drift {
                    id: &f.id,
                    title: &f.title,
                    expected: &f.expected,
                    actual: &f.actual,
                    reason: &f.reason,
                },
            )
        })
    }))
}

fn error_groups(results: &IndexMap<String, (AuditResult, u64)>) -> Vec<(&str, Vec<String>)> {
    group_hosts(results.iter().filter_map(|(h, (r, _))| {
        r.as_ref()
            .err()
            .map(|e| (h.as_str(), e.message.lines().next().unwrap_or("").trim()))
    }))
}

fn text_summary(
    results: &IndexMap<String, (AuditResult, u64)>,
    view: &AuditView,
    drift: usize,
    broken: usize,
    seconds: f64,
) {
    let (ok, drifted, not_checked) = counts(results);
    if view.verbose > 0 {
        text_by_host(results, view.verbose);
    }
    out!(
        "\nAUDIT {} hosts: compliant={ok} drifted={drifted} not_checked={not_checked}",
        results.len()
    );
    let groups = drift_groups(results);
    if !groups.is_empty() {
        out!("DRIFT by rule");
        for (d, hs) in &groups {
            out!(
                "{:>5} host(s)  {:<28} {}\n       expected: {}\n       actual:   {}\n       why:      {}\n       {}",
                hs.len(),
                d.id,
                d.title,
                d.expected,
                d.actual,
                d.reason,
                some_names(hs)
            );
        }
    }
    let errors = error_groups(results);
    if !errors.is_empty() {
        out!("NOT CHECKED by error");
        for (e, hs) in &errors {
            out!("{:>5} host(s)  {e}\n       {}", hs.len(), some_names(hs));
        }
    }
    if let Some(d) = degraded_line(results) {
        out!("{d}");
    }
    last_line(drift, broken, seconds);
}

fn json_report(
    results: &IndexMap<String, (AuditResult, u64)>,
    view: &AuditView,
    drift: usize,
    broken: usize,
    seconds: f64,
) {
    let mut hosts = Vec::new();
    for (host, (res, round_trips)) in results {
        match res {
            Err(e) => {
                out!(
                    "{}",
                    json!({"event": "audit", "host": host, "error": e.message})
                );
                hosts.push(json!({"host": host, "error": e.message}));
            }
            Ok(findings) => {
                let failed = findings.iter().filter(|f| !f.pass).count();
                // Many hosts: only those that drifted, unless asked for all.
                if !view.summary || failed > 0 || view.verbose > 0 {
                    out!(
                        "{}",
                        json!({"event": "audit", "host": host, "findings": findings})
                    );
                }
                hosts.push(json!({"host": host, "rules": findings.len(),
                    "pass": findings.len() - failed, "drift": failed, "round_trips": round_trips}));
            }
        }
    }
    let mut summary = json!({"event": "audit_summary", "hosts": hosts, "drift": drift,
        "errors": broken, "seconds": seconds, "degraded": degraded_line(results)});
    if view.summary {
        let (ok, drifted, not_checked) = counts(results);
        summary["summary"] = json!({"hosts": results.len(), "compliant": ok,
            "drifted": drifted, "not_checked": not_checked});
        summary["drift_by_rule"] = drift_groups(results)
            .iter()
            .map(|(d, hs)| {
                json!({"rule": d.id, "title": d.title, "expected": d.expected,
                "actual": d.actual, "why": d.reason, "hosts": hs})
            })
            .collect::<Value>();
        summary["not_checked_by_error"] = error_groups(results)
            .iter()
            .map(|(e, hs)| json!({"error": e, "hosts": hs}))
            .collect::<Value>();
    }
    out!("{summary}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finding(id: &str, pass: bool, actual: &str) -> Finding {
        Finding {
            id: id.into(),
            title: format!("{id} holds"),
            reason: "because".into(),
            pass,
            expected: "no".into(),
            actual: actual.into(),
        }
    }

    #[test]
    fn drift_groups_by_rule_and_actual_value_in_host_order() {
        let mut r: IndexMap<String, (AuditResult, u64)> = IndexMap::new();
        for i in 0..12 {
            let actual = if i == 5 { "maybe" } else { "yes" };
            r.insert(
                format!("h{i}"),
                (
                    Ok(vec![
                        finding("root-login", false, actual),
                        finding("x", true, ""),
                    ]),
                    1,
                ),
            );
        }
        r.insert(
            "ok".into(),
            (Ok(vec![finding("root-login", true, "no")]), 1),
        );
        r.insert(
            "gone".into(),
            (
                Err(crate::finding::AuditError {
                    unreachable: true,
                    message: "unreachable: no answer\nmore".into(),
                }),
                0,
            ),
        );
        let g = drift_groups(&r);
        assert_eq!(g.len(), 2);
        assert_eq!(
            (g[0].0.id, g[0].0.actual, g[0].1.len()),
            ("root-login", "yes", 11)
        );
        assert_eq!(g[0].1[..3], ["h0", "h1", "h2"]);
        assert_eq!(
            some_names(&g[0].1),
            "h0, h1, h2, h3, h4, h6, h7, h8, h9, h10 and 1 more"
        );
        assert_eq!(
            (g[1].0.actual, g[1].1.clone()),
            ("maybe", vec!["h5".to_string()])
        );
        assert_eq!(counts(&r), (1, 12, 1));
        assert_eq!(
            error_groups(&r),
            vec![("unreachable: no answer", vec!["gone".to_string()])]
        );
    }
}
