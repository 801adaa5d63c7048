//! One place that decides how progress and results are shown: live per-host lines on a
//! terminal, plain lines otherwise, or one JSON event per line. Secrets are never passed in.

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde_json::json;
use std::collections::HashMap;
use std::io::Write;
use std::sync::Mutex;
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Text,
    Json,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Changed,
    Failed,
    Skipped,
    Unreachable,
}

#[derive(Default, Clone, Debug, serde::Serialize)]
pub struct Tally {
    pub ok: u32,
    pub changed: u32,
    pub failed: u32,
    pub skipped: u32,
    pub unreachable: u32,
    pub seconds: f64,
    pub commands: u64,
}

pub struct Reporter {
    mode: Mode,
    verbose: u8,
    bars: Option<(MultiProgress, Mutex<HashMap<String, ProgressBar>>)>,
    lock: Mutex<()>,
    /// Values never printed: replaced by `********` in messages and diffs.
    secrets: std::sync::RwLock<Vec<String>>,
}

/// Variable names whose values are secrets.
pub fn is_secret_name(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    [
        "password",
        "passwd",
        "passphrase",
        "secret",
        "token",
        "private_key",
        "api_key",
        "apikey",
    ]
    .iter()
    .any(|w| n.contains(w))
}

impl Reporter {
    pub fn new(mode: Mode, verbose: u8, hosts: &[String]) -> Reporter {
        use std::io::IsTerminal;
        let bars = (mode == Mode::Text && std::io::stderr().is_terminal()).then(|| {
            let mp = MultiProgress::new();
            let style = ProgressStyle::with_template(
                "{prefix:>12.bold} {spinner} [{pos}/{len}] {elapsed:>4} {wide_msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar());
            let map = hosts
                .iter()
                .map(|h| {
                    let pb = mp.add(
                        ProgressBar::new(0)
                            .with_style(style.clone())
                            .with_prefix(h.clone()),
                    );
                    pb.enable_steady_tick(Duration::from_millis(120));
                    (h.clone(), pb)
                })
                .collect();
            (mp, Mutex::new(map))
        });
        Reporter {
            mode,
            verbose,
            bars,
            lock: Mutex::new(()),
            secrets: Default::default(),
        }
    }

    fn line(&self, text: &str) {
        let _g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        match &self.bars {
            Some((mp, _)) => {
                let _ = mp.println(text);
            }
            None => {
                let _ = writeln!(std::io::stdout(), "{text}");
            }
        }
    }

    fn event(&self, v: serde_json::Value) {
        let _g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let _ = writeln!(std::io::stdout(), "{v}");
    }

    /// Adds values to hide (shorter than 4 characters would hide too much).
    pub fn hide(&self, values: impl IntoIterator<Item = String>) {
        let mut s = self.secrets.write().unwrap_or_else(|e| e.into_inner());
        s.extend(values.into_iter().filter(|v| v.len() >= 4));
        s.sort_by_key(|v| std::cmp::Reverse(v.len()));
        s.dedup();
    }

    fn redact(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for v in self
            .secrets
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            if out.contains(v.as_str()) {
                out = out.replace(v.as_str(), "********");
            }
        }
        out
    }

    pub fn warn(&self, msg: &str) {
        let msg = &self.redact(msg);
        match self.mode {
            Mode::Json => self.event(json!({"event": "warning", "msg": msg})),
            Mode::Text => eprintln!("warning: {msg}"),
        }
    }

    pub fn plan(&self, host: &str, total: u64) {
        if let Some((_, map)) = &self.bars {
            if let Some(pb) = map.lock().unwrap_or_else(|e| e.into_inner()).get(host) {
                pb.set_length(total);
            }
        }
    }

    pub fn task_start(&self, host: &str, role: &str, task: &str) {
        match (&self.bars, self.mode) {
            (Some((_, map)), _) => {
                if let Some(pb) = map.lock().unwrap_or_else(|e| e.into_inner()).get(host) {
                    pb.set_message(format!("{role} : {task}"));
                }
            }
            (None, Mode::Json) if self.verbose > 0 => {
                self.event(json!({"event": "task_start", "host": host, "role": role, "task": task}))
            }
            _ => {}
        }
    }

    pub fn task_done(
        &self,
        host: &str,
        role: &str,
        task: &str,
        status: Status,
        msg: &str,
        diff: Option<&str>,
    ) {
        let msg = &self.redact(msg);
        let diff = diff.map(|d| self.redact(d));
        let diff = diff.as_deref();
        if let Some((_, map)) = &self.bars {
            if let Some(pb) = map.lock().unwrap_or_else(|e| e.into_inner()).get(host) {
                pb.inc(1);
            }
        }
        match self.mode {
            Mode::Json => self.event(json!({"event": "task", "host": host, "role": role, "task": task, "status": status, "msg": msg, "diff": diff})),
            Mode::Text => {
                let show = status != Status::Ok || self.verbose > 0;
                if show {
                    let tag = format!("{status:?}").to_lowercase();
                    let mut t = format!("{host:>12} | {tag:<11} | {role} : {task}");
                    if !msg.is_empty() && (status != Status::Changed || self.verbose > 0 || status == Status::Failed) {
                        t += &format!("\n{:>12}   {}", "", msg.replace('\n', &format!("\n{:>14} ", "")));
                    }
                    if status == Status::Changed && !msg.is_empty() && self.verbose == 0 {
                        t += &format!(" ({msg})");
                    }
                    self.line(&t);
                }
                if let Some(d) = diff {
                    self.line(d.trim_end());
                }
            }
        }
    }

    pub fn host_done(&self, host: &str, t: &Tally) {
        if let Some((_, map)) = &self.bars {
            if let Some(pb) = map.lock().unwrap_or_else(|e| e.into_inner()).get(host) {
                let state = if t.unreachable > 0 {
                    "unreachable"
                } else if t.failed > 0 {
                    "failed"
                } else {
                    "done"
                };
                pb.finish_with_message(format!("{state}: {} changed", t.changed));
            }
        }
    }

    /// The table that ends every run; `connections` is the SSH connections opened.
    pub fn recap(&self, rows: &[(String, Tally)], check: bool, connections: u64) {
        if let Some((mp, _)) = &self.bars {
            let _ = mp.clear();
        }
        match self.mode {
            Mode::Json => {
                let hosts: serde_json::Map<String, serde_json::Value> =
                    rows.iter().map(|(h, t)| (h.clone(), json!(t))).collect();
                self.event(json!({"event": "recap", "check": check, "connections": connections, "hosts": hosts}));
            }
            Mode::Text => {
                let mut out = format!(
                    "\nRECAP{}\n",
                    if check {
                        " (check mode: nothing was changed)"
                    } else {
                        ""
                    }
                );
                for (h, t) in rows {
                    out += &format!(
                        "{h:<16} ok={:<4} changed={:<4} failed={:<3} skipped={:<4} unreachable={:<2} time={:.1}s\n",
                        t.ok, t.changed, t.failed, t.skipped, t.unreachable, t.seconds
                    );
                }
                let changed: u32 = rows.iter().map(|(_, t)| t.changed).sum();
                if changed == 0
                    && rows
                        .iter()
                        .all(|(_, t)| t.failed == 0 && t.unreachable == 0)
                {
                    out += "no changes: every host is already in the wanted state\n";
                }
                self.line(out.trim_end());
            }
        }
    }
}

/// Prints what `provision audit` found; returns (rules drifted, hosts not checked).
pub fn audit_report(
    results: &indexmap::IndexMap<String, (crate::engine::AuditResult, u64)>,
    json_mode: bool,
    verbose: u8,
    seconds: f64,
) -> (usize, usize) {
    let (mut drift, mut broken) = (0usize, 0usize);
    let mut summary = Vec::new();
    for (host, (res, round_trips)) in results {
        match res {
            Err(e) => {
                broken += 1;
                if json_mode {
                    out!("{}", json!({"event": "audit", "host": host, "error": e}));
                } else {
                    out!("{host:<12} ERROR  {e}");
                }
                summary.push(json!({"host": host, "error": e}));
            }
            Ok(findings) => {
                let failed = findings.iter().filter(|f| !f.pass).count();
                drift += failed;
                if json_mode {
                    out!(
                        "{}",
                        json!({"event": "audit", "host": host, "findings": findings})
                    );
                } else {
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
                summary.push(
                    json!({"host": host, "rules": findings.len(), "pass": findings.len() - failed,
                    "drift": failed, "round_trips": round_trips}),
                );
            }
        }
    }
    if json_mode {
        out!(
            "{}",
            json!({"event": "audit_summary", "hosts": summary, "drift": drift, "errors": broken, "seconds": seconds})
        );
    } else {
        out!("\nAUDIT");
        for s in &summary {
            match s.get("error") {
                Some(_) => out!("{:<12} not checked", s["host"].as_str().unwrap_or("")),
                None => out!(
                    "{:<12} rules={:<4} pass={:<4} drift={:<4} round_trips={}",
                    s["host"].as_str().unwrap_or(""),
                    s["rules"],
                    s["pass"],
                    s["drift"],
                    s["round_trips"]
                ),
            }
        }
        if drift == 0 && broken == 0 {
            out!("compliant: every rule holds on every host ({seconds:.1}s)");
        } else {
            out!("{drift} rule(s) drifted, {broken} host(s) not checked ({seconds:.1}s)");
        }
    }
    (drift, broken)
}

/// Every string under a secret-looking key, at any depth.
pub fn secret_values(v: &serde_json::Value, under_secret: bool, out: &mut Vec<String>) {
    match v {
        serde_json::Value::String(s) if under_secret => out.push(s.clone()),
        serde_json::Value::Array(a) => a.iter().for_each(|x| secret_values(x, under_secret, out)),
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                secret_values(x, under_secret || is_secret_name(k), out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_found_and_hidden() {
        let v = json!({"db_password": "hunter22", "users": [{"name": "ann", "api_token": "tok-1234"}], "plain": "visible"});
        let mut found = Vec::new();
        secret_values(&v, false, &mut found);
        found.sort();
        assert_eq!(found, ["hunter22", "tok-1234"]);
        let r = Reporter::new(Mode::Json, 0, &[]);
        r.hide(found);
        assert_eq!(
            r.redact("pw=hunter22 t=tok-1234 x=visible"),
            "pw=******** t=******** x=visible"
        );
    }
}
