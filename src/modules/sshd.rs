//! sshd settings in a drop-in file, lockout-proof: the new file is checked with
//! `sshd -t` before sshd is reloaded (and put back if refused); after the reload the
//! runner proves that a new connection works, and runs `rollback` if it does not.

use super::files::{parse_file, probe_file};
use super::{q, Args, Diff, Module, Plan};
use crate::transport::{put_script, Output};

/// Where the previous drop-in is kept while a change is being proven.
const BACKUP: &str = "/var/backups/provision-sshd-dropin";

pub struct SshdConfig {
    path: String,
    content: String,
}

impl SshdConfig {
    pub fn new(a: &Args) -> Result<Self, String> {
        let path = a.req("path")?;
        if !path.starts_with("/etc/ssh/") {
            return Err(format!("`path` must be under /etc/ssh/, got `{path}`"));
        }
        Ok(SshdConfig {
            path,
            content: a.req("content")?,
        })
    }

    fn restore(&self) -> String {
        let (f, b) = (q(&self.path), q(BACKUP));
        format!("if [ -f {b} ]; then mv -f {b} {f}; else rm -f {f}; fi")
    }
}

fn reload() -> &'static str {
    "if [ -d /run/systemd/system ]; then systemctl reload ssh 2>/dev/null || systemctl reload sshd; \
     else kill -HUP \"$(cat /run/sshd.pid)\"; fi"
}

impl Module for SshdConfig {
    fn probe(&self) -> Option<String> {
        Some(format!(
            "{}; if grep -qsiE '^[[:space:]]*Include[[:space:]]+/etc/ssh/sshd_config.d/\\*\\.conf' /etc/ssh/sshd_config; \
             then echo INCLUDED; else echo NOT-INCLUDED; fi",
            probe_file(&self.path)
        ))
    }

    fn plan(&self, p: &Output) -> Plan {
        let cur = parse_file(&p.stdout);
        if self.path.starts_with("/etc/ssh/sshd_config.d/")
            && !p.stdout.lines().any(|l| l == "INCLUDED")
        {
            return Plan::Fail(
                "/etc/ssh/sshd_config does not include /etc/ssh/sshd_config.d/*.conf, so a drop-in \
                 would have no effect: add `Include /etc/ssh/sshd_config.d/*.conf` at its top"
                    .into(),
            );
        }
        let head: Vec<&str> = p
            .stdout
            .lines()
            .next()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        let meta_ok = head.get(1..4) == Some(&["600", "root", "root"][..]);
        if cur.exists && cur.content == self.content && meta_ok {
            return Plan::Ok(format!("{} is in place", self.path));
        }
        let (f, b) = (q(&self.path), q(BACKUP));
        let script = format!(
            "set -e; mkdir -p /var/backups\n\
             if [ -f {f} ]; then cp -p {f} {b}.tmp 2>/dev/null && mv -f {b}.tmp {b} || {{ rm -f {b}.tmp; echo \"cannot keep a copy of {f} in /var/backups (disk full?): nothing was changed\" >&2; exit 1; }}; else rm -f {b}; fi\n\
             ( {} )\n\
             if ! out=$(sshd -t 2>&1); then {}; echo \"sshd -t refused the new settings (the previous ones are back in place): $out\" >&2; exit 1; fi\n\
             {}",
            put_script(&self.path, "600", Some("root"), Some("root")),
            self.restore(),
            reload()
        );
        Plan::Change {
            script,
            stdin: Some(self.content.as_bytes().to_vec()),
            diff: Some(Diff {
                path: self.path.clone(),
                before: cur.content,
                after: self.content.clone(),
            }),
            msg: format!("{} updated, checked with sshd -t, sshd reloaded", self.path),
        }
    }

    fn rollback(&self) -> Option<String> {
        Some(format!("set -e; {}; {}", self.restore(), reload()))
    }
}
