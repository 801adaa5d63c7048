//! Modules for commands, packages, services, users and the host's identity.

use super::{q, Args, Module, Plan};
use crate::transport::Output;

pub struct Command {
    cmd: String,
    chdir: Option<String>,
    creates: Option<String>,
    removes: Option<String>,
}

impl Command {
    pub fn new(a: &Args) -> Result<Self, String> {
        Ok(Command {
            cmd: a.req("cmd")?,
            chdir: a.str("chdir")?,
            creates: a.str("creates")?,
            removes: a.str("removes")?,
        })
    }
}

impl Module for Command {
    fn probe(&self) -> Option<String> {
        if self.creates.is_none() && self.removes.is_none() {
            return None;
        }
        let mut s = String::from("r=run; ");
        if let Some(c) = &self.creates {
            s += &format!("[ -e {} ] && r=skip; ", q(c));
        }
        if let Some(r) = &self.removes {
            s += &format!("[ -e {} ] || r=skip; ", q(r));
        }
        Some(s + "echo $r")
    }
    fn plan(&self, p: &Output) -> Plan {
        if p.stdout.trim() == "skip" {
            return Plan::Ok("skipped: creates/removes says it already ran".into());
        }
        let script = match &self.chdir {
            Some(d) => format!("cd {} && {}", q(d), self.cmd),
            None => self.cmd.clone(),
        };
        Plan::Change {
            script,
            stdin: None,
            diff: None,
            msg: String::new(),
        }
    }
    fn is_command(&self) -> bool {
        true
    }
}

pub struct Package {
    names: Vec<String>,
    present: bool,
    update_cache: bool,
}

impl Package {
    pub fn new(a: &Args) -> Result<Self, String> {
        let names = a.list("name")?;
        if let Some(bad) = names.iter().find(|n| {
            n.is_empty()
                || !n
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-.:=~".contains(c))
        }) {
            return Err(format!("`{bad}` is not a package name"));
        }
        let state = a.choice(
            "state",
            "present",
            &["present", "absent", "installed", "removed"],
        )?;
        Ok(Package {
            names,
            present: matches!(state.as_str(), "present" | "installed"),
            update_cache: a.bool("update_cache", false)?,
        })
    }
}

impl Module for Package {
    fn probe(&self) -> Option<String> {
        let names: Vec<String> = self
            .names
            .iter()
            .map(|n| q(n.split('=').next().unwrap_or(n)))
            .collect();
        Some(format!(
            "if ! command -v apt-get >/dev/null; then if command -v dnf >/dev/null; then echo MGR=dnf; else echo MGR=none; fi; exit 0; fi; \
             echo MGR=apt; dpkg-query -W -f='${{Package}} ${{db:Status-Abbrev}}\\n' {} 2>/dev/null; true",
            names.join(" ")
        ))
    }
    fn plan(&self, p: &Output) -> Plan {
        let out = &p.stdout;
        if out.contains("MGR=dnf") {
            return Plan::Fail(
                "this host uses dnf, which provision does not support yet (only apt)".into(),
            );
        }
        if out.contains("MGR=none") {
            return Plan::Fail("no supported package manager (apt-get) on this host".into());
        }
        let installed: Vec<&str> = out
            .lines()
            .filter(|l| l.split_whitespace().nth(1) == Some("ii"))
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        let base = |n: &String| n.split('=').next().unwrap_or(n).to_owned();
        let todo: Vec<&String> = self
            .names
            .iter()
            .filter(|n| installed.contains(&base(n).as_str()) != self.present)
            .collect();
        if todo.is_empty() {
            return Plan::Ok(format!(
                "{} {}",
                self.names.join(", "),
                if self.present { "installed" } else { "absent" }
            ));
        }
        let list: Vec<String> = todo.iter().map(|n| q(n)).collect();
        let env = "DEBIAN_FRONTEND=noninteractive";
        // Wait for the dpkg lock (unattended-upgrades, a run just interrupted) instead of failing.
        let lock = "-o DPkg::Lock::Timeout=300";
        let script = if self.present {
            let update = if self.update_cache {
                "apt-get update -q -o DPkg::Lock::Timeout=300 && "
            } else {
                ""
            };
            // A run interrupted inside dpkg leaves packages half-configured: finish them.
            let heal = format!(
                "if [ -n \"$(ls -A /var/lib/dpkg/updates 2>/dev/null)\" ] || dpkg --audit 2>/dev/null | grep -q .; then \
                 {env} dpkg --configure -a --force-confold >&2; fi; "
            );
            format!(
                "{heal}{update}{env} apt-get install -y -q {lock} -o Dpkg::Options::=--force-confold {}",
                list.join(" ")
            )
        } else {
            format!("{env} apt-get remove -y -q {lock} {}", list.join(" "))
        };
        let names: Vec<&str> = todo.iter().map(|s| s.as_str()).collect();
        Plan::Change {
            script,
            stdin: None,
            diff: None,
            msg: format!(
                "{} {}",
                if self.present { "installed" } else { "removed" },
                names.join(", ")
            ),
        }
    }
}

pub struct Service {
    name: String,
    state: Option<String>,
    enabled: Option<bool>,
    daemon_reload: bool,
}

impl Service {
    pub fn new(a: &Args) -> Result<Self, String> {
        let state = match a.str("state")? {
            None => None,
            Some(_) => Some(a.choice(
                "state",
                "",
                &["started", "stopped", "restarted", "reloaded"],
            )?),
        };
        let enabled = if a.0.contains_key("enabled") {
            Some(a.bool("enabled", false)?)
        } else {
            None
        };
        if state.is_none() && enabled.is_none() {
            return Err("give `state` or `enabled`".into());
        }
        Ok(Service {
            name: a.req("name")?,
            state,
            enabled,
            daemon_reload: a.bool("daemon_reload", false)?,
        })
    }
}

impl Module for Service {
    fn probe(&self) -> Option<String> {
        let n = q(&self.name);
        Some(format!(
            "if [ -d /run/systemd/system ]; then echo systemd; systemctl is-active {n}; systemctl is-enabled {n} 2>/dev/null || echo missing; \
             else echo sysv; if service {n} status >/dev/null 2>&1; then echo active; else echo inactive; fi; \
             if ls /etc/rc2.d/S*{n} >/dev/null 2>&1; then echo enabled; else echo disabled; fi; fi"
        ))
    }
    fn plan(&self, p: &Output) -> Plan {
        let lines: Vec<&str> = p.stdout.lines().collect();
        let systemd = lines.first() == Some(&"systemd");
        let active = lines.get(1) == Some(&"active");
        let enabled_state = lines.get(2).copied().unwrap_or("");
        if systemd && enabled_state == "missing" && lines.get(1) != Some(&"active") {
            return Plan::Fail(format!(
                "service `{}` is not installed on this host",
                self.name
            ));
        }
        let n = q(&self.name);
        let mut script = Vec::new();
        let mut msg = Vec::new();
        if self.daemon_reload && systemd {
            script.push("systemctl daemon-reload".to_string());
        }
        if let Some(want) = self.enabled {
            let is = matches!(
                enabled_state,
                "enabled" | "enabled-runtime" | "static" | "alias" | "indirect" | "generated"
            );
            if want != is {
                let verb = if want { "enable" } else { "disable" };
                script.push(if systemd {
                    format!("systemctl {verb} {n}")
                } else {
                    format!("update-rc.d {n} {verb}")
                });
                msg.push(format!("{verb}d"));
            }
        }
        let action = match self.state.as_deref() {
            Some("started") if !active => Some("start"),
            Some("stopped") if active => Some("stop"),
            Some("restarted") => Some("restart"),
            Some("reloaded") => Some("reload"),
            _ => None,
        };
        if let Some(a) = action {
            script.push(if systemd {
                format!("systemctl {a} {n}")
            } else {
                format!("service {n} {a}")
            });
            msg.push(format!("{a}ed"));
        }
        if msg.is_empty() {
            return Plan::Ok(format!(
                "{} is {}",
                self.name,
                if active { "running" } else { "stopped" }
            ));
        }
        Plan::Change {
            script: script.join(" && "),
            stdin: None,
            diff: None,
            msg: format!("{} {}", self.name, msg.join(", ")),
        }
    }
}

pub struct Hostname {
    name: String,
}

impl Hostname {
    pub fn new(a: &Args) -> Result<Self, String> {
        let name = a.req("name")?;
        if name.is_empty()
            || name.len() > 63
            || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            || name.starts_with('-')
        {
            return Err(format!(
                "`{name}` is not a valid hostname (letters, digits and `-`, at most 63)"
            ));
        }
        Ok(Hostname { name })
    }
}

impl Module for Hostname {
    fn probe(&self) -> Option<String> {
        Some("hostname; cat /etc/hostname 2>/dev/null".into())
    }
    fn plan(&self, p: &Output) -> Plan {
        let lines: Vec<&str> = p.stdout.lines().map(str::trim).collect();
        if lines.first() == Some(&self.name.as_str()) && lines.get(1) == Some(&self.name.as_str()) {
            return Plan::Ok(format!("hostname is {}", self.name));
        }
        let n = q(&self.name);
        Plan::Change {
            script: format!("hostnamectl set-hostname {n} 2>/dev/null || {{ echo {n} > /etc/hostname && hostname {n}; }}"),
            stdin: None,
            diff: None,
            msg: format!("hostname set to {} (was {})", self.name, lines.first().unwrap_or(&"")),
        }
    }
}

pub struct User {
    name: String,
    present: bool,
    shell: Option<String>,
    groups: Vec<String>,
    append: bool,
    home: Option<String>,
    system: bool,
    create_home: bool,
}

impl User {
    pub fn new(a: &Args) -> Result<Self, String> {
        Ok(User {
            name: a.req("name")?,
            present: a.choice("state", "present", &["present", "absent"])? == "present",
            shell: a.str("shell")?,
            groups: a.list("groups")?,
            append: a.bool("append", true)?,
            home: a.str("home")?,
            system: a.bool("system", false)?,
            create_home: a.bool("create_home", true)?,
        })
    }
}

impl Module for User {
    fn probe(&self) -> Option<String> {
        let n = q(&self.name);
        Some(format!("getent passwd {n} || echo ABSENT; id -nG {n} 2>/dev/null || echo; getent group {n} >/dev/null && echo GROUP || echo NOGROUP"))
    }
    fn plan(&self, p: &Output) -> Plan {
        let mut lines = p.stdout.lines();
        let pw: Vec<&str> = lines.next().unwrap_or("ABSENT").split(':').collect();
        let have: Vec<&str> = lines.next().unwrap_or("").split_whitespace().collect();
        let own_group = lines.next() == Some("GROUP");
        let n = q(&self.name);
        let exists = pw.len() >= 7;
        if !self.present {
            return if exists {
                Plan::Change {
                    script: format!("userdel {n}"),
                    stdin: None,
                    diff: None,
                    msg: format!("user {} removed", self.name),
                }
            } else {
                Plan::Ok(format!("user {} absent", self.name))
            };
        }
        let groups = self
            .groups
            .iter()
            .map(|g| q(g))
            .collect::<Vec<_>>()
            .join(",");
        if !exists {
            let mut s = format!("useradd {}", if self.create_home { "-m" } else { "-M" });
            if self.system {
                s += " -r";
            }
            if own_group {
                s += &format!(" -g {n}");
            }
            if let Some(sh) = &self.shell {
                s += &format!(" -s {}", q(sh));
            }
            if let Some(h) = &self.home {
                s += &format!(" -d {}", q(h));
            }
            if !groups.is_empty() {
                s += &format!(" -G {groups}");
            }
            return Plan::Change {
                script: format!("{s} {n}"),
                stdin: None,
                diff: None,
                msg: format!("user {} created", self.name),
            };
        }
        let mut opts = String::new();
        if let Some(sh) = self.shell.as_deref().filter(|s| *s != pw[6]) {
            opts += &format!(" -s {}", q(sh));
        }
        if let Some(h) = self.home.as_deref().filter(|h| *h != pw[5]) {
            opts += &format!(" -d {}", q(h));
        }
        let missing = self.groups.iter().any(|g| !have.contains(&g.as_str()));
        let extra = !self.append
            && have
                .iter()
                .skip(1)
                .any(|h| !self.groups.iter().any(|g| g == h));
        if missing || extra {
            opts += &format!(" {}-G {groups}", if self.append { "-a " } else { "" });
        }
        if opts.is_empty() {
            return Plan::Ok(format!("user {} is up to date", self.name));
        }
        Plan::Change {
            script: format!("usermod{opts} {n}"),
            stdin: None,
            diff: None,
            msg: format!("user {} updated", self.name),
        }
    }
}

pub struct Group {
    name: String,
    present: bool,
    system: bool,
}

impl Group {
    pub fn new(a: &Args) -> Result<Self, String> {
        Ok(Group {
            name: a.req("name")?,
            present: a.choice("state", "present", &["present", "absent"])? == "present",
            system: a.bool("system", false)?,
        })
    }
}

impl Module for Group {
    fn probe(&self) -> Option<String> {
        Some(format!(
            "getent group {} >/dev/null && echo yes || echo no",
            q(&self.name)
        ))
    }
    fn plan(&self, p: &Output) -> Plan {
        let exists = p.stdout.trim() == "yes";
        let n = q(&self.name);
        match (exists, self.present) {
            (false, true) => Plan::Change {
                script: format!("groupadd {}{n}", if self.system { "-r " } else { "" }),
                stdin: None,
                diff: None,
                msg: format!("group {} created", self.name),
            },
            (true, false) => Plan::Change {
                script: format!("groupdel {n}"),
                stdin: None,
                diff: None,
                msg: format!("group {} removed", self.name),
            },
            _ => Plan::Ok(format!(
                "group {} {}",
                self.name,
                if exists { "exists" } else { "absent" }
            )),
        }
    }
}

pub struct WaitFor {
    script: String,
    what: String,
}

impl WaitFor {
    pub fn new(a: &Args) -> Result<Self, String> {
        let timeout: u64 = a
            .str("timeout")?
            .unwrap_or_else(|| "60".into())
            .parse()
            .map_err(|_| "`timeout` must be seconds".to_string())?;
        let (check, what) = match (a.str("port")?, a.str("path")?) {
            (Some(port), None) => {
                let port: u16 = port
                    .parse()
                    .map_err(|_| format!("`port` must be 1 to 65535, found `{port}`"))?;
                let host = a.str("host")?.unwrap_or_else(|| "127.0.0.1".into());
                (
                    format!(
                        "timeout 1 bash -c {} 2>/dev/null",
                        q(&format!("</dev/tcp/{host}/{port}"))
                    ),
                    format!("port {host}:{port}"),
                )
            }
            (None, Some(path)) => (format!("[ -e {} ]", q(&path)), format!("file {path}")),
            _ => return Err("give exactly one of `port` or `path`".into()),
        };
        let stopped = matches!(
            a.choice(
                "state",
                "started",
                &["started", "present", "stopped", "absent"]
            )?
            .as_str(),
            "stopped" | "absent"
        );
        let cond = if stopped {
            format!("! {{ {check}; }}")
        } else {
            check
        };
        let script = format!("end=$(( $(date +%s) + {timeout} )); until {cond}; do [ $(date +%s) -ge $end ] && exit 1; sleep 0.2; done");
        Ok(WaitFor { script, what })
    }
}

impl Module for WaitFor {
    fn batchable(&self) -> bool {
        false
    }
    fn probe(&self) -> Option<String> {
        Some(self.script.clone())
    }
    fn plan(&self, p: &Output) -> Plan {
        if p.rc == 0 {
            Plan::Ok(format!("{} ready", self.what))
        } else {
            Plan::Fail(format!("timed out waiting for {}", self.what))
        }
    }
}

/// `assert`: stops the host with `msg` unless `that` (an expression, rendered on the
/// controller) is true. Nothing is run on the host.
pub struct Assert {
    that: bool,
    msg: String,
}

impl Assert {
    pub fn new(a: &Args) -> Result<Self, String> {
        Ok(Assert {
            that: a.bool("that", false)?,
            msg: a.str("msg")?.unwrap_or_else(|| "assertion failed".into()),
        })
    }
}

impl Module for Assert {
    fn probe(&self) -> Option<String> {
        None
    }
    fn plan(&self, _: &Output) -> Plan {
        if self.that {
            Plan::Ok(String::new())
        } else {
            Plan::Fail(self.msg.clone())
        }
    }
}
