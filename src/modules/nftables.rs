//! provision's nftables table, lockout-proof. The new rules are checked with `nft -c`,
//! then loaded in one transaction with a dead man's switch armed on the host: unless a
//! brand-new SSH connection confirms them within `confirm_timeout` seconds, the host puts
//! the previous table (and file) back by itself. Only `inet provision` is ever replaced.

use super::files::{parse_file, probe_file};
use super::{q, Args, Diff, Module, Plan};
use crate::firewall::TABLE;
use crate::transport::{put_script_verified, Output};
use ipnet::IpNet;
use std::net::IpAddr;

const BACKUP: &str = "/var/backups/provision-firewall.nft";
const PREV: &str = "/run/provision-firewall.prev";
const RESTORE: &str = "/run/provision-firewall-restore.sh";
const TIMER: &str = "/run/provision-firewall.timer";

pub struct Nftables {
    path: String,
    content: String,
    present: bool,
    ssh_port: u16,
    ssh_sources: Vec<IpNet>,
    client: Option<IpAddr>,
    confirm_timeout: u32,
}

impl Nftables {
    pub fn new(a: &Args) -> Result<Self, String> {
        let present = a.choice("state", "present", &["present", "absent"])? == "present";
        let path = a.req("path")?;
        if !path.starts_with('/') {
            return Err(format!("`path` must be absolute, got `{path}`"));
        }
        let content = a.str("content")?.unwrap_or_default();
        if present && !content.contains(&format!("table inet {TABLE} {{")) {
            return Err(format!(
                "`content` must define `table inet {TABLE}` (provision replaces only that table)"
            ));
        }
        let mut ssh_sources = Vec::new();
        for s in a.list("ssh_sources")? {
            ssh_sources.push(
                s.parse::<IpNet>()
                    .map_err(|_| format!("`ssh_sources`: `{s}` is not a network"))?,
            );
        }
        let client = a.str("client")?.filter(|c| !c.is_empty());
        let client = match client {
            Some(c) => Some(
                c.parse::<IpAddr>()
                    .map_err(|_| format!("`client`: `{c}` is not an address"))?,
            ),
            None => None,
        };
        let num = |k: &str, d: u32| -> Result<u32, String> {
            match a.str(k)? {
                None => Ok(d),
                Some(s) => s
                    .parse()
                    .map_err(|_| format!("`{k}` must be a number, found `{s}`")),
            }
        };
        let confirm_timeout = num("confirm_timeout", 30)?;
        if !(5..=600).contains(&confirm_timeout) {
            return Err("`confirm_timeout` must be between 5 and 600 seconds".into());
        }
        Ok(Nftables {
            path,
            content,
            present,
            ssh_port: num("ssh_port", 22)? as u16,
            ssh_sources,
            client,
            confirm_timeout,
        })
    }

    fn loaded(&self) -> String {
        format!("{}.loaded", self.path)
    }
}

/// Puts the previous table and file back; also what the dead man's switch runs.
fn restore_script(path: &str) -> String {
    let (f, l) = (q(path), q(&format!("{path}.loaded")));
    format!(
        "if [ -s {PREV} ]; then {{ printf 'table inet {TABLE} {{}}\\ndelete table inet {TABLE}\\n'; cat {PREV}; }} | nft -f -; \
         else nft delete table inet {TABLE} 2>/dev/null || true; fi\n\
         if [ -f {BACKUP} ]; then mv -f {BACKUP} {f}; else rm -f {f}; fi\n\
         nft list table inet {TABLE} > {l} 2>/dev/null || rm -f {l}\n\
         rm -f {TIMER} {PREV} {RESTORE}\n\
         logger -t provision 'firewall: the new rules were not confirmed, the previous ones are back' 2>/dev/null || true\n"
    )
}

impl Module for Nftables {
    fn probe(&self) -> Option<String> {
        Some(format!(
            "{}; echo '==PROVISION loaded'; cat {} 2>/dev/null; echo '==PROVISION live'; \
             if command -v nft >/dev/null 2>&1; then nft list table inet {TABLE} 2>/dev/null; else echo NO-NFT; fi; \
             echo '==PROVISION pending'; [ -f {TIMER} ] && echo PENDING; true",
            probe_file(&self.path),
            q(&self.loaded())
        ))
    }

    fn plan(&self, p: &Output) -> Plan {
        let (file, rest) = p
            .stdout
            .split_once("==PROVISION loaded\n")
            .unwrap_or((&p.stdout, ""));
        let (loaded, rest) = rest.split_once("==PROVISION live\n").unwrap_or((rest, ""));
        let (live, pending) = rest
            .split_once("==PROVISION pending\n")
            .unwrap_or((rest, ""));
        let cur = parse_file(file);
        if !self.present {
            if !cur.exists && live.trim().is_empty() {
                return Plan::Ok("no provision firewall".into());
            }
            return Plan::Change {
                script: format!(
                    "nft delete table inet {TABLE} 2>/dev/null || true; rm -f {} {}",
                    q(&self.path),
                    q(&self.loaded())
                ),
                stdin: None,
                diff: None,
                msg: format!("table inet {TABLE} removed"),
            };
        }
        if live.trim() == "NO-NFT" {
            return Plan::Fail("`nft` is not installed: install the nftables package first".into());
        }
        if let Some(c) = self.client {
            let admitted =
                self.ssh_sources.is_empty() || self.ssh_sources.iter().any(|n| n.contains(&c));
            if !admitted {
                return Plan::Fail(format!(
                    "these rules would not admit this connection's address {c} on SSH port {}: \
                     add it (or its network) to firewall_ssh_sources; nothing was changed",
                    self.ssh_port
                ));
            }
        }
        let in_place = cur.exists && cur.content == self.content;
        let same_live = !live.trim().is_empty() && live == loaded;
        if in_place && same_live && pending.trim().is_empty() {
            return Plan::Ok(format!("table inet {TABLE} is loaded as {}", self.path));
        }
        let msg = if in_place && !same_live && !live.trim().is_empty() {
            format!(
                "table inet {TABLE} had been changed by hand: reloaded from {}",
                self.path
            )
        } else {
            format!(
                "table inet {TABLE} loaded from {}, confirmed by a new SSH connection",
                self.path
            )
        };
        let script = format!(
            "set -e\n\
             mkdir -p /var/backups\n\
             if [ -f {f} ]; then cp -p {f} {BACKUP}.tmp 2>/dev/null && mv -f {BACKUP}.tmp {BACKUP} || {{ rm -f {BACKUP}.tmp; echo 'cannot keep a copy of the rules in /var/backups (disk full?): nothing was changed' >&2; exit 1; }}; else rm -f {BACKUP}; fi\n\
             nft list table inet {TABLE} > {PREV} 2>/dev/null || : > {PREV}\n\
             cat > {RESTORE} <<'PROVISION-EOF'\n{restore}PROVISION-EOF\n\
             ( {put} )\n\
             if [ -f {TIMER} ]; then kill \"$(cat {TIMER})\" 2>/dev/null || true; fi\n\
             setsid sh -c 'sleep {secs}; exec sh {RESTORE}' </dev/null >/dev/null 2>&1 &\n\
             echo $! > {TIMER}\n\
             if ! out=$(nft -f {f} 2>&1); then kill \"$(cat {TIMER})\" 2>/dev/null || true; sh {RESTORE}; \
             echo \"nft could not load the rules (the previous ones are back): $out\" >&2; exit 1; fi\n\
             nft list table inet {TABLE} > {l}\n",
            f = q(&self.path),
            l = q(&self.loaded()),
            restore = restore_script(&self.path),
            put = put_script_verified(
                &self.path,
                "600",
                Some("root"),
                Some("root"),
                Some("nft -c -f %s"),
                self.content.as_bytes()
            ),
            secs = self.confirm_timeout,
        );
        Plan::Change {
            script,
            stdin: Some(self.content.as_bytes().to_vec()),
            diff: Some(Diff {
                path: self.path.clone(),
                before: cur.content,
                after: self.content.clone(),
            }),
            msg,
        }
    }

    fn rollback(&self) -> Option<String> {
        self.present.then(|| {
            format!(
                "if [ -f {TIMER} ]; then kill \"$(cat {TIMER})\" 2>/dev/null || true; fi; \
                 if [ -f {RESTORE} ]; then sh {RESTORE}; fi"
            )
        })
    }

    fn confirm(&self) -> Option<String> {
        self.present.then(|| {
            format!(
                "if [ ! -f {TIMER} ]; then echo 'the rules were rolled back before they could be confirmed \
                 (raise firewall_confirm_timeout?)' >&2; exit 1; fi; \
                 kill \"$(cat {TIMER})\" 2>/dev/null || true; rm -f {TIMER} {PREV} {BACKUP} {RESTORE}"
            )
        })
    }
}
