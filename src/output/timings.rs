//! Where a run's time goes: every task's span on every host, and from them the largest
//! items (a task's wall time across its hosts, its slowest host) and the critical path
//! (the chain of spans that kept the run waiting, traced back from its end). Honest about
//! parallel hosts: a task that takes 10 s on each of 5 hosts at once costs the run 10 s.

use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::Instant;

/// One task on one host, in seconds from the run's start.
#[derive(Clone, Debug, PartialEq)]
pub struct Span {
    pub host: String,
    pub role: String,
    pub task: String,
    pub start: f64,
    pub end: f64,
    /// A cluster step's span (a barrier: every host of the step waits for it).
    pub step: bool,
}

/// The spans of a run as they are reported.
pub struct Clock {
    origin: Instant,
    open: HashMap<String, (String, String, f64)>,
    steps: std::collections::HashSet<(String, String)>,
    pub spans: Vec<Span>,
}

impl Default for Clock {
    fn default() -> Self {
        Clock {
            origin: Instant::now(),
            open: HashMap::new(),
            steps: Default::default(),
            spans: Vec::new(),
        }
    }
}

impl Clock {
    fn now(&self) -> f64 {
        self.origin.elapsed().as_secs_f64()
    }

    /// A task starts on `host` (a progress line of the same task keeps its start).
    pub fn start(&mut self, host: &str, role: &str, task: &str) {
        if let Some((r, t, _)) = self.open.get(host) {
            if r == role && task.starts_with(t.as_str()) {
                return;
            }
        }
        let now = self.now();
        self.open
            .insert(host.to_owned(), (role.to_owned(), task.to_owned(), now));
    }

    /// The task is a cluster step: its spans are barriers.
    pub fn step(&mut self, role: &str, task: &str) {
        self.steps.insert((role.to_owned(), task.to_owned()));
    }

    /// A task ends on `host`: its span from its start (now, when it never started).
    pub fn done(&mut self, host: &str, role: &str, task: &str) {
        let end = self.now();
        let start = match self.open.remove(host) {
            Some((r, t, s)) if r == role && task.starts_with(t.as_str()) => s,
            _ => end,
        };
        let step = self.steps.contains(&(role.to_owned(), task.to_owned()));
        self.spans.push(Span {
            host: host.to_owned(),
            role: role.to_owned(),
            task: task.to_owned(),
            start,
            end,
            step,
        });
    }
}

/// A task across its hosts.
#[derive(Clone, Debug, PartialEq)]
pub struct Item {
    pub role: String,
    pub task: String,
    /// What it cost the run: its longest span on one host (hosts run in parallel).
    pub wall: f64,
    pub hosts: usize,
    pub slowest: String,
    pub slowest_seconds: f64,
    /// Host time, summed.
    pub total: f64,
}

/// Every task across its hosts, largest wall time first.
pub fn items(spans: &[Span]) -> Vec<Item> {
    let mut order: Vec<(String, String)> = Vec::new();
    let mut by: HashMap<(String, String), Vec<&Span>> = HashMap::new();
    for s in spans {
        let k = (s.role.clone(), s.task.clone());
        if !by.contains_key(&k) {
            order.push(k.clone());
        }
        by.entry(k).or_default().push(s);
    }
    let mut out: Vec<Item> = order
        .into_iter()
        .map(|k| {
            let v = &by[&k];
            let slow = v
                .iter()
                .max_by(|a, b| (a.end - a.start).total_cmp(&(b.end - b.start)))
                .expect("a task has a span");
            Item {
                role: k.0,
                task: k.1,
                wall: slow.end - slow.start,
                hosts: v.len(),
                slowest: slow.host.clone(),
                slowest_seconds: slow.end - slow.start,
                total: v.iter().map(|s| s.end - s.start).sum(),
            }
        })
        .collect();
    out.sort_by(|a, b| b.wall.total_cmp(&a.wall));
    out
}

/// Is this span a cluster step's (a barrier)?
fn shared(s: &Span, _spans: &[Span]) -> bool {
    s.step
}

/// The chain of spans that kept the run waiting: from the span that ended last, each
/// step back to the span that ended last before it started: on the same host, or, before
/// a cluster step (a barrier), on any host.
pub fn critical_path(spans: &[Span]) -> Vec<Span> {
    const EPS: f64 = 0.005;
    let mut out = Vec::new();
    let Some(mut cur) = spans.iter().max_by(|a, b| a.end.total_cmp(&b.end)) else {
        return out;
    };
    // Each step back starts strictly earlier: the walk ends.
    for _ in 0..spans.len() {
        out.push(cur.clone());
        let barrier = shared(cur, spans);
        let before = spans
            .iter()
            .filter(|s| s.end <= cur.start + EPS && s.start < cur.start)
            .filter(|s| barrier || s.host == cur.host)
            .max_by(|a, b| a.end.total_cmp(&b.end).then(b.start.total_cmp(&a.start)));
        match before {
            Some(b) => cur = b,
            None => break,
        }
    }
    out.reverse();
    out
}

/// The critical path with runs of one host merged: (host, first task, last task, tasks,
/// start, end). A span shared by several hosts (a cluster step, a barrier) is "all".
pub fn path_runs(path: &[Span], spans: &[Span]) -> Vec<(String, String, String, usize, f64, f64)> {
    let mut out: Vec<(String, String, String, usize, f64, f64)> = Vec::new();
    for s in path {
        let name = format!("{} : {}", s.role, s.task);
        let host = if shared(s, spans) {
            "all".to_string()
        } else {
            s.host.clone()
        };
        match out.last_mut() {
            Some(last) if last.0 == host => {
                last.2 = name;
                last.3 += 1;
                last.5 = s.end;
            }
            _ => out.push((host, name.clone(), name, 1, s.start, s.end)),
        }
    }
    out
}

/// The report: the `n` largest items and the critical path, as text lines.
pub fn text(spans: &[Span], wall: f64, n: usize) -> String {
    let mut out =
        format!("\nTIMINGS (the run: {wall:.1} s)\nlargest items (the longest host; hosts run in parallel):\n");
    for i in items(spans).iter().take(n) {
        out += &format!(
            "  {:>7.1} s  {} : {}  ({} host{}, slowest {} {:.1} s, {:.1} s in all)\n",
            i.wall,
            i.role,
            i.task,
            i.hosts,
            if i.hosts == 1 { "" } else { "s" },
            i.slowest,
            i.slowest_seconds,
            i.total
        );
    }
    out += "critical path (what kept the run waiting):\n";
    for (host, first, last, k, start, end) in path_runs(&critical_path(spans), spans) {
        let what = if k == 1 {
            first
        } else {
            format!("{first} .. {last} ({k} tasks)")
        };
        out += &format!("  {start:>7.1} - {end:>7.1} s  {host:<12} {what}\n");
    }
    out
}

/// The same, for the JSON recap.
pub fn json(spans: &[Span], wall: f64) -> Value {
    let items: Vec<Value> = items(spans)
        .into_iter()
        .map(|i| {
            json!({"role": i.role, "task": i.task, "wall": round(i.wall), "hosts": i.hosts,
                   "slowest": i.slowest, "slowest_seconds": round(i.slowest_seconds), "total": round(i.total)})
        })
        .collect();
    let path: Vec<Value> = critical_path(spans)
        .into_iter()
        .map(|s| json!({"host": s.host, "role": s.role, "task": s.task, "start": round(s.start), "end": round(s.end)}))
        .collect();
    let spans: Vec<Value> = spans
        .iter()
        .map(|s| json!({"host": s.host, "role": s.role, "task": s.task, "start": round(s.start), "end": round(s.end)}))
        .collect();
    json!({"wall": round(wall), "items": items, "critical_path": path, "spans": spans})
}

fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(host: &str, task: &str, start: f64, end: f64) -> Span {
        Span {
            host: host.into(),
            role: "r".into(),
            task: task.into(),
            start,
            end,
            step: task == "step",
        }
    }

    /// Two hosts install packages in parallel (b is slower), then a cluster step on both.
    fn run() -> Vec<Span> {
        vec![
            s("a", "facts", 0.0, 1.0),
            s("b", "facts", 0.0, 1.2),
            s("a", "packages", 1.0, 5.0),
            s("b", "packages", 1.2, 9.0),
            s("a", "step", 9.0, 15.0),
            s("b", "step", 9.0, 15.0),
        ]
    }

    #[test]
    fn items_count_parallel_hosts_once() {
        let i = items(&run());
        assert_eq!(i[0].task, "packages");
        assert!((i[0].wall - 7.8).abs() < 1e-9 && (i[0].total - 11.8).abs() < 1e-9);
        assert_eq!((i[0].slowest.as_str(), i[0].slowest_seconds), ("b", 7.8));
        assert_eq!(
            (i[1].task.as_str(), i[1].wall, i[1].hosts),
            ("step", 6.0, 2)
        );
    }

    #[test]
    fn the_critical_path_follows_the_slowest_host_into_the_barrier() {
        let p = critical_path(&run());
        let names: Vec<(&str, &str)> = p
            .iter()
            .map(|s| (s.host.as_str(), s.task.as_str()))
            .collect();
        assert_eq!(names[..2], [("b", "facts"), ("b", "packages")]);
        assert_eq!(names[2].1, "step");
        let runs = path_runs(&p, &run());
        assert_eq!((runs[0].0.as_str(), runs[0].3), ("b", 2));
        assert_eq!(
            (runs[1].0.as_str(), runs[1].1.as_str()),
            ("all", "r : step")
        );
        assert!(text(&run(), 15.0, 10).contains("slowest b 7.8 s"));
    }

    #[test]
    fn instant_tasks_at_one_moment_end_the_walk() {
        let spans = vec![
            s("a", "x", 5.0, 5.0),
            s("a", "y", 5.001, 5.003),
            s("a", "z", 5.003, 5.003),
        ];
        let p = critical_path(&spans);
        assert!(p.len() <= 3, "{p:?}");
    }

    #[test]
    fn a_progress_line_keeps_the_task_start() {
        let mut c = Clock::default();
        c.start("a", "ceph", "ceph cluster");
        std::thread::sleep(std::time::Duration::from_millis(20));
        c.start("a", "ceph", "ceph cluster: waiting for health");
        c.done("a", "ceph", "ceph cluster");
        assert!(c.spans[0].end - c.spans[0].start >= 0.02, "{:?}", c.spans);
    }
}
