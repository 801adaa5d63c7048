//! `share`: read a value on one host and use it on others, in the same run. The value
//! comes from the first host of `from` that answers (hosts outside `--limit` are read,
//! not changed); it is written to `dest` on the play's hosts and published to later tasks.

use super::{arg, sections, Action, Ctx, Member, Seen, Step};
use crate::transport::put_script_verified;
use serde_json::{json, Value};

pub fn new() -> Box<dyn Step> {
    Box::<Share>::default()
}

#[derive(Default)]
struct Share {
    sources: Vec<String>,
    command: String,
    secret: bool,
    found: Option<(String, String)>,
}

impl Step for Share {
    fn prepare(&mut self, members: &[Member], cx: &Ctx) -> Result<(), String> {
        let Some(first) = members.first() else {
            return Ok(());
        };
        let from = arg(first, "from")?.unwrap_or_default();
        self.command = arg(first, "command")?.unwrap_or_default();
        self.secret = crate::args::Args(&first.args)
            .bool("secret", false)
            .map_err(|e| format!("share: {e}"))?;
        for m in members {
            if arg(m, "from")?.unwrap_or_default() != from
                || arg(m, "command")?.unwrap_or_default() != self.command
            {
                return Err(format!(
                    "share: `from` and `command` must be the same on every host (host `{}` differs)",
                    m.name
                ));
            }
        }
        let wanted = crate::inventory::select(cx.inventory, &from)
            .map_err(|e| format!("share: `from: {from}`: {e}"))?;
        self.sources = members
            .iter()
            .filter(|m| wanted.contains(&m.name))
            .map(|m| m.name.clone())
            .collect();
        if self.sources.is_empty() {
            return Err(format!("share: `from: {from}` names no host of this play"));
        }
        Ok(())
    }

    fn reads_outside_limit(&self) -> bool {
        true
    }

    fn probes(&self, members: &[Member]) -> Vec<(String, String)> {
        let mut v = Vec::new();
        for m in members {
            let mut s = String::new();
            if self.sources.contains(&m.name) {
                s += &format!(
                    "out=$( {}\n) 2>/dev/null; rc=$?; echo '==PROVISION rc'; echo $rc; echo '==PROVISION value'; printf '%s\\n' \"$out\"; ",
                    self.command
                );
            }
            if let (true, Ok(Some(dest))) = (m.writable, arg(m, "dest")) {
                s += &format!(
                    "echo '==PROVISION dest'; {}",
                    crate::probe::probe_file(&dest)
                );
            }
            if !s.is_empty() {
                v.push((m.name.clone(), s));
            }
        }
        v
    }

    fn plan(&mut self, members: &[Member], seen: &Seen, _cx: &Ctx) -> Result<Vec<Action>, String> {
        let mut why = Vec::new();
        self.found = None;
        for src in &self.sources {
            match seen.get(src) {
                Some(Ok(out)) => {
                    let s = sections(&out.stdout);
                    let rc = s.get("rc").map(|r| r.trim().to_owned()).unwrap_or_default();
                    if rc == "0" {
                        let value = s.get("value").cloned().unwrap_or_default();
                        self.found = Some((src.clone(), value.trim_end().to_owned()));
                        break;
                    }
                    why.push(format!("{src}: `{}` exited with {rc}", self.command));
                }
                Some(Err(e)) => why.push(format!("{src}: {e}")),
                None => why.push(format!("{src}: not reached")),
            }
        }
        let Some((src, value)) = &self.found else {
            return Err(format!(
                "share: no host of `from` answered ({})",
                why.join("; ")
            ));
        };
        let mut actions = Vec::new();
        for m in members.iter().filter(|m| m.writable) {
            let Some(dest) = arg(m, "dest")? else {
                continue;
            };
            let cur = match seen.get(&m.name) {
                Some(Ok(out)) => sections(&out.stdout)
                    .get("dest")
                    .cloned()
                    .unwrap_or_default(),
                _ => continue,
            };
            let cur = crate::probe::parse_file(&cur);
            let want = format!("{value}\n");
            let mode = crate::args::Args(&m.args)
                .mode("mode")
                .map_err(|e| format!("host `{}`: {e}", m.name))?
                .unwrap_or_else(|| {
                    if self.secret {
                        "600".into()
                    } else {
                        "644".into()
                    }
                });
            if cur.exists && cur.content == want && cur.mode == mode {
                continue;
            }
            actions.push(Action {
                host: m.name.clone(),
                run_on: None,
                msg: format!("write {dest} with the value read on {src}"),
                script: put_script_verified(&dest, &mode, None, None, None, want.as_bytes()),
                stdin: Some(want.into_bytes()),
                serial: false,
            });
        }
        Ok(actions)
    }

    fn secrets(&self) -> Vec<String> {
        match (&self.found, self.secret) {
            (Some((_, v)), true) if !v.is_empty() => vec![v.clone()],
            _ => Vec::new(),
        }
    }

    fn publish(&self) -> Value {
        match &self.found {
            Some((src, v)) => json!({"value": v, "from": src}),
            None => Value::Null,
        }
    }
}
