//! One place that decides how progress and results are shown: live per-host lines on a
//! terminal, plain lines otherwise, or one JSON event per line. Secrets are never passed in.

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde_json::json;
use std::collections::HashMap;
use std::io::Write;
use std::sync::Mutex;
use std::time::Duration;

mod audit;
pub mod timings;
pub use audit::{audit_report, AuditView};

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

/// Above this many hosts, progress is one overall bar and only changed and failed hosts
/// are listed (one line per host does not fit a terminal).
pub const CROWD: usize = 40;

/// How progress is shown: a line per host, or a summary for many hosts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    Auto,
    Hosts,
    Summary,
}

impl Progress {
    /// Whether `hosts` hosts are shown as a summary (auto: above `CROWD`).
    pub fn summary(self, hosts: usize) -> bool {
        match self {
            Progress::Auto => hosts > CROWD,
            Progress::Hosts => false,
            Progress::Summary => true,
        }
    }
}

/// One host's progress in summary mode.
#[derive(Default)]
struct HostProgress {
    done: u64,
    total: u64,
    task: String,
    since: Option<std::time::Instant>,
    failed: bool,
    unreachable: bool,
}

/// Summary mode: an overall bar (on a terminal), per-host state, failures for grouping.
struct Crowd {
    bar: Option<ProgressBar>,
    hosts: HashMap<String, HostProgress>,
    drawn: Option<std::time::Instant>,
    /// (host, role : task, message) of every failure, for the recap's groups.
    failures: Vec<(String, String, String)>,
}

impl Crowd {
    /// The three hosts longest on their current task.
    fn slowest(&self) -> String {
        let mut v: Vec<(&String, &HostProgress)> = self
            .hosts
            .iter()
            .filter(|(_, h)| h.since.is_some() && h.done < h.total && !h.failed && !h.unreachable)
            .collect();
        v.sort_by_key(|(_, h)| h.since);
        v.iter()
            .take(3)
            .map(|(n, h)| {
                format!(
                    "{n} ({}, {:.0}s)",
                    h.task,
                    h.since.map(|t| t.elapsed().as_secs_f64()).unwrap_or(0.0)
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn draw(&mut self, force: bool) {
        let Some(bar) = &self.bar else { return };
        if !force
            && self
                .drawn
                .is_some_and(|t| t.elapsed() < Duration::from_millis(200))
        {
            return;
        }
        self.drawn = Some(std::time::Instant::now());
        let count =
            |f: &dyn Fn(&HostProgress) -> bool| self.hosts.values().filter(|h| f(h)).count();
        let (failed, unreachable) = (count(&|h| h.failed), count(&|h| h.unreachable));
        let busy = count(&|h| h.done < h.total && !h.failed && !h.unreachable);
        bar.set_length(self.hosts.values().map(|h| h.total).sum());
        bar.set_position(self.hosts.values().map(|h| h.done.min(h.total)).sum());
        let slow = self.slowest();
        bar.set_message(format!(
            "tasks · {busy} of {} hosts busy · failed {failed} · unreachable {unreachable}{}",
            self.hosts.len(),
            if slow.is_empty() {
                String::new()
            } else {
                format!(" · slowest: {slow}")
            }
        ));
    }
}

pub struct Reporter {
    mode: Mode,
    verbose: u8,
    bars: Option<(MultiProgress, Mutex<HashMap<String, ProgressBar>>)>,
    crowd: Option<Mutex<Crowd>>,
    lock: Mutex<()>,
    /// Values never printed: replaced by `********` in messages and diffs.
    secrets: std::sync::RwLock<Vec<String>>,
    /// Every task's span on every host, for `--timings` and the JSON recap.
    clock: Mutex<timings::Clock>,
    timings: std::sync::atomic::AtomicBool,
}

/// Variable names whose values are secrets.
pub fn is_secret_name(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    // A path to a secret (ansible_ssh_private_key_file) is not one.
    if n.ends_with("_file") || n.ends_with("_path") {
        return false;
    }
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
        Self::with_progress(mode, verbose, hosts, Progress::Auto)
    }

    pub fn with_progress(mode: Mode, verbose: u8, hosts: &[String], p: Progress) -> Reporter {
        use std::io::IsTerminal;
        let summary = p.summary(hosts.len());
        let tty = mode == Mode::Text && std::io::stderr().is_terminal();
        let crowd = summary.then(|| {
            let bar = tty.then(|| {
                let pb = ProgressBar::new(0).with_style(
                    ProgressStyle::with_template(
                        "{spinner} {pos}/{len} {bar:30} {elapsed:>4} {wide_msg}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
                );
                pb.enable_steady_tick(Duration::from_millis(120));
                pb
            });
            Mutex::new(Crowd {
                bar,
                hosts: hosts
                    .iter()
                    .map(|h| (h.clone(), HostProgress::default()))
                    .collect(),
                drawn: None,
                failures: Vec::new(),
            })
        });
        let bars = (tty && !summary).then(|| {
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
            crowd,
            lock: Mutex::new(()),
            secrets: Default::default(),
            clock: Mutex::new(timings::Clock::default()),
            timings: Default::default(),
        }
    }

    /// `--timings`: the recap ends with the largest items and the critical path.
    pub fn show_timings(&self) {
        self.timings
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    fn timing_report(&self) -> (Vec<timings::Span>, f64, bool) {
        let c = self.clock.lock().unwrap_or_else(|e| e.into_inner());
        let wall = c.spans.iter().map(|s| s.end).fold(0.0, f64::max);
        (
            c.spans.clone(),
            wall,
            self.timings.load(std::sync::atomic::Ordering::Relaxed),
        )
    }

    fn line(&self, text: &str) {
        let _g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(bar) = self.crowd_bar() {
            bar.println(text);
            return;
        }
        match &self.bars {
            Some((mp, _)) => {
                let _ = mp.println(text);
            }
            None => {
                let _ = writeln!(std::io::stdout(), "{text}");
            }
        }
    }

    fn crowd_bar(&self) -> Option<ProgressBar> {
        self.crowd
            .as_ref()
            .and_then(|c| c.lock().unwrap_or_else(|e| e.into_inner()).bar.clone())
    }

    /// Summary mode: updates a host's progress and the bar.
    fn crowd_update(&self, host: &str, f: impl FnOnce(&mut HostProgress)) {
        let Some(c) = self.crowd.as_ref() else { return };
        let mut c = c.lock().unwrap_or_else(|e| e.into_inner());
        let h = c.hosts.entry(host.to_owned()).or_default();
        f(h);
        c.draw(false);
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
        self.crowd_update(host, |h| h.total += total);
        if let Some((_, map)) = &self.bars {
            if let Some(pb) = map.lock().unwrap_or_else(|e| e.into_inner()).get(host) {
                pb.set_length(total);
            }
        }
    }

    /// A cluster step starts on `hosts` at once: a barrier in the timings.
    pub fn step_start(&self, hosts: &[String], role: &str, task: &str) {
        self.clock
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .step(role, task);
        for h in hosts {
            self.task_start(h, role, task);
        }
    }

    pub fn task_start(&self, host: &str, role: &str, task: &str) {
        self.clock
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .start(host, role, task);
        if self.crowd.is_some() {
            self.crowd_update(host, |h| {
                h.task = format!("{role} : {task}");
                h.since = Some(std::time::Instant::now());
            });
            return;
        }
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
        self.clock
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .done(host, role, task);
        let msg = &self.redact(msg);
        let diff = diff.map(|d| self.redact(d));
        let diff = diff.as_deref();
        if self.crowd.is_some() {
            self.crowd_update(host, |h| {
                h.done += 1;
                match status {
                    Status::Failed => h.failed = true,
                    Status::Unreachable => h.unreachable = true,
                    _ => {}
                }
            });
            if matches!(status, Status::Failed | Status::Unreachable) {
                if let Some(c) = &self.crowd {
                    c.lock().unwrap_or_else(|e| e.into_inner()).failures.push((
                        host.to_owned(),
                        format!("{role} : {task}"),
                        msg.to_owned(),
                    ));
                }
            }
            // Only failures (and, with -v, every task) are listed task by task.
            let listed = matches!(status, Status::Failed | Status::Unreachable) || self.verbose > 0;
            if !listed {
                return;
            }
        }
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
        // Summary mode lists the hosts that changed (failures were listed as they came).
        if self.crowd.is_some() {
            if t.changed > 0 && t.failed == 0 && t.unreachable == 0 {
                match self.mode {
                    Mode::Json => self.event(json!({"event": "host", "host": host, "state": "changed", "changed": t.changed})),
                    Mode::Text => self.line(&format!("{host:>12} | changed     | {} task(s) changed", t.changed)),
                }
            }
            return;
        }
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
        if let Some(bar) = self.crowd_bar() {
            bar.finish_and_clear();
        }
        let (spans, wall, show) = self.timing_report();
        if self.crowd.is_some() {
            self.recap_summary(rows, check, connections);
            if show && self.mode == Mode::Text {
                self.line(timings::text(&spans, wall, 10).trim_end());
            }
            return;
        }
        match self.mode {
            Mode::Json => {
                let hosts: serde_json::Map<String, serde_json::Value> =
                    rows.iter().map(|(h, t)| (h.clone(), json!(t))).collect();
                let mut t = timings::json(&spans, wall);
                if !show {
                    t.as_object_mut().map(|o| o.remove("spans"));
                }
                self.event(json!({"event": "recap", "check": check, "connections": connections, "hosts": hosts, "timings": t}));
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
                if show {
                    out += &timings::text(&spans, wall, 10);
                }
                self.line(out.trim_end());
            }
        }
    }
}

impl Reporter {
    /// The recap for many hosts: counts, the hosts that failed or were unreachable, and
    /// the failures grouped by task and error.
    fn recap_summary(&self, rows: &[(String, Tally)], check: bool, connections: u64) {
        let n = |f: &dyn Fn(&Tally) -> bool| rows.iter().filter(|(_, t)| f(t)).count();
        let unreachable = n(&|t| t.unreachable > 0);
        let failed = n(&|t| t.failed > 0 && t.unreachable == 0);
        let changed = n(&|t| t.changed > 0 && t.failed == 0 && t.unreachable == 0);
        let ok = rows.len() - unreachable - failed - changed;
        let failures = self
            .crowd
            .as_ref()
            .map(|c| c.lock().unwrap_or_else(|e| e.into_inner()).failures.clone())
            .unwrap_or_default();
        let order: Vec<&str> = rows.iter().map(|(h, _)| h.as_str()).collect();
        let groups = group_failures(&failures, &order);
        let exceptions: Vec<&(String, Tally)> = rows
            .iter()
            .filter(|(_, t)| t.failed > 0 || t.unreachable > 0)
            .collect();
        match self.mode {
            Mode::Json => {
                let hosts: serde_json::Map<String, serde_json::Value> =
                    rows.iter().map(|(h, t)| (h.clone(), json!(t))).collect();
                let groups: Vec<serde_json::Value> = groups
                    .iter()
                    .map(|(what, msg, hs)| json!({"task": what, "error": msg, "hosts": hs}))
                    .collect();
                self.event(json!({"event": "recap", "check": check, "connections": connections,
                    "summary": {"hosts": rows.len(), "ok": ok, "changed": changed, "failed": failed, "unreachable": unreachable},
                    "failures": groups, "hosts": hosts}));
            }
            Mode::Text => {
                let mut out = format!(
                    "\nRECAP{} {} hosts: ok={ok} changed={changed} failed={failed} unreachable={unreachable}\n",
                    if check { " (check mode: nothing was changed)" } else { "" },
                    rows.len()
                );
                for (h, t) in exceptions {
                    out += &format!(
                        "{h:<16} ok={:<4} changed={:<4} failed={:<3} skipped={:<4} unreachable={:<2} time={:.1}s\n",
                        t.ok, t.changed, t.failed, t.skipped, t.unreachable, t.seconds
                    );
                }
                if !groups.is_empty() {
                    out += "FAILURES by task and error\n";
                    for (what, msg, hs) in &groups {
                        let names = some_names(hs);
                        out += &format!("{:>5} host(s)  {what}: {msg}\n       {names}\n", hs.len());
                    }
                }
                if changed == 0 && failed == 0 && unreachable == 0 {
                    out += "no changes: every host is already in the wanted state\n";
                }
                self.line(out.trim_end());
            }
        }
    }
}

/// Failures grouped by task and the first line of their error, largest group first,
/// each group's hosts in `order` (the inventory's; hosts fail in any order).
pub fn group_failures(
    f: &[(String, String, String)],
    order: &[&str],
) -> Vec<(String, String, Vec<String>)> {
    let rank: HashMap<&str, usize> = order.iter().enumerate().map(|(i, h)| (*h, i)).collect();
    let mut sorted: Vec<&(String, String, String)> = f.iter().collect();
    sorted.sort_by_key(|(h, _, _)| rank.get(h.as_str()).copied().unwrap_or(usize::MAX));
    group_hosts(sorted.into_iter().map(|(h, what, msg)| {
        let first = msg.lines().next().unwrap_or("").trim().to_owned();
        (h.as_str(), (what.clone(), first))
    }))
    .into_iter()
    .map(|((what, msg), hosts)| (what, msg, hosts))
    .collect()
}

/// Hosts grouped by a key, largest group first (ties in first-seen order), each
/// group's hosts in the order given and named once.
pub fn group_hosts<'a, K: PartialEq>(
    items: impl IntoIterator<Item = (&'a str, K)>,
) -> Vec<(K, Vec<String>)> {
    let mut groups: Vec<(K, Vec<String>)> = Vec::new();
    for (host, key) in items {
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, hs)) => {
                if !hs.iter().any(|h| h == host) {
                    hs.push(host.to_owned())
                }
            }
            None => groups.push((key, vec![host.to_owned()])),
        }
    }
    groups.sort_by_key(|g| std::cmp::Reverse(g.1.len()));
    groups
}

/// Up to ten names, then how many more.
pub fn some_names(hs: &[String]) -> String {
    if hs.len() > 10 {
        format!("{} and {} more", hs[..10].join(", "), hs.len() - 10)
    } else {
        hs.join(", ")
    }
}

/// Every string under a secret-looking key, at any depth.
pub fn secret_values(v: &serde_json::Value, under_secret: bool, out: &mut Vec<String>) {
    match v {
        serde_json::Value::String(s) if under_secret || crate::vault::is_revealed(s) => {
            out.push(s.clone())
        }
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
    fn secret_names() {
        for n in [
            "db_password",
            "JOIN_TOKEN",
            "ssh_private_key",
            "grafana_admin_secret",
        ] {
            assert!(is_secret_name(n), "{n}");
        }
        for n in [
            "ansible_ssh_private_key_file",
            "vault_password_file",
            "token_path",
            "acme_email",
        ] {
            assert!(!is_secret_name(n), "{n}");
        }
    }

    #[test]
    fn failures_group_by_task_and_first_line() {
        let f = |h: &str, w: &str, m: &str| (h.to_string(), w.to_string(), m.to_string());
        let g = group_failures(
            &[
                f("b", "r : t", "exit 1: disk full\nmore"),
                f("a", "r : t", "exit 1: disk full"),
                f("c", "r : u", "boom"),
                f("b", "r : t", "exit 1: disk full"),
            ],
            &["a", "b", "c"],
        );
        assert_eq!(g.len(), 2);
        assert_eq!(
            g[0],
            (
                "r : t".into(),
                "exit 1: disk full".into(),
                vec!["a".into(), "b".into()]
            )
        );
        assert_eq!(g[1].2, vec!["c".to_string()]);
    }

    #[test]
    fn summary_mode_for_many_hosts_names_the_slowest() {
        let hosts: Vec<String> = (0..50).map(|i| format!("h{i}")).collect();
        let r = Reporter::with_progress(Mode::Json, 0, &hosts, Progress::Auto);
        r.plan("h1", 2);
        r.plan("h2", 2);
        r.task_start("h2", "role", "slow");
        std::thread::sleep(Duration::from_millis(5));
        r.task_start("h1", "role", "fast");
        let c = r.crowd.as_ref().unwrap().lock().unwrap();
        assert!(
            c.slowest().starts_with("h2 (role : slow"),
            "{}",
            c.slowest()
        );
        drop(c);
        let few = Reporter::with_progress(Mode::Json, 0, &hosts[..3], Progress::Auto);
        assert!(few.crowd.is_none());
        assert!(
            Reporter::with_progress(Mode::Json, 0, &hosts[..3], Progress::Summary)
                .crowd
                .is_some()
        );
    }

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
