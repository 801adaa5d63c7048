//! Modules that manage file contents and metadata.

use super::{q, Args, Diff, Module, Plan};
pub use crate::probe::{
    parse_file, probe_file, probe_file_sized, sha256_hex, FileState as Remote, BIG,
};
use crate::transport::{put_script, put_script_verified, Output};

/// Plans a file with `content`, mode and owner, changing only what differs.
pub(super) fn plan_content(
    path: &str,
    cur: &Remote,
    content: &str,
    mode: Option<&str>,
    owner: Option<&str>,
    group: Option<&str>,
    validate: Option<&str>,
) -> Plan {
    let mode_ok = mode.is_none_or(|m| m == cur.mode);
    let owner_ok = owner.is_none_or(|o| o == cur.owner);
    let group_ok = group.is_none_or(|g| g == cur.group);
    let same = match &cur.sha {
        Some(h) => *h == sha256_hex(content.as_bytes()),
        None => cur.content == content,
    };
    if cur.exists && same && mode_ok && owner_ok && group_ok {
        return Plan::Ok(format!("{path} is up to date"));
    }
    let diff = (cur.sha.is_none() && content.len() <= BIG).then(|| Diff {
        path: path.to_owned(),
        before: cur.content.clone(),
        after: content.to_owned(),
    });
    if cur.exists && same {
        let mut s = String::from("set -e; ");
        if let Some(m) = mode.filter(|_| !mode_ok) {
            s += &format!("chmod {m} {}; ", q(path));
        }
        if !owner_ok || !group_ok {
            s += &format!(
                "chown {}:{} {}; ",
                owner.unwrap_or(&cur.owner),
                group.unwrap_or(&cur.group),
                q(path)
            );
        }
        return Plan::Change {
            script: s,
            stdin: None,
            diff: None,
            msg: format!("{path}: mode or owner fixed"),
        };
    }
    let keep_mode = if cur.exists {
        cur.mode.clone()
    } else {
        "644".into()
    };
    let mode = mode.map(str::to_owned).unwrap_or(keep_mode);
    let owner = owner
        .map(str::to_owned)
        .or_else(|| cur.exists.then(|| cur.owner.clone()));
    let group = group
        .map(str::to_owned)
        .or_else(|| cur.exists.then(|| cur.group.clone()));
    Plan::Change {
        script: put_script_verified(
            path,
            &mode,
            owner.as_deref(),
            group.as_deref(),
            validate,
            content.as_bytes(),
        ),
        stdin: Some(content.as_bytes().to_vec()),
        diff,
        msg: format!("{path} {}", if cur.exists { "updated" } else { "created" }),
    }
}

pub struct Copy {
    dest: String,
    pub content: String,
    mode: Option<String>,
    owner: Option<String>,
    group: Option<String>,
    validate: Option<String>,
}

impl Copy {
    pub fn new(a: &Args) -> Result<Self, String> {
        Ok(Copy {
            dest: a.req("dest")?,
            content: a.str("content")?.ok_or("`content` or `src` is required")?,
            mode: a.mode("mode")?,
            owner: a.str("owner")?,
            group: a.str("group")?,
            validate: match a.str("validate")? {
                Some(v) if !v.contains("%s") => {
                    return Err(format!(
                        "`validate` must contain %s (the new file), got `{v}`"
                    ))
                }
                v => v,
            },
        })
    }
}

impl Module for Copy {
    fn probe(&self) -> Option<String> {
        Some(probe_file_sized(&self.dest, self.content.len()))
    }
    fn plan(&self, p: &Output) -> Plan {
        let cur = parse_file(&p.stdout);
        plan_content(
            &self.dest,
            &cur,
            &self.content,
            self.mode.as_deref(),
            self.owner.as_deref(),
            self.group.as_deref(),
            self.validate.as_deref(),
        )
    }
}

pub struct File {
    path: String,
    state: String,
    mode: Option<String>,
    owner: Option<String>,
    group: Option<String>,
    src: Option<String>,
    /// Leave a missing path alone instead of failing (hardening of optional files).
    if_exists: bool,
}

impl File {
    pub fn new(a: &Args) -> Result<Self, String> {
        let state = a.choice(
            "state",
            "file",
            &["file", "directory", "link", "absent", "touch"],
        )?;
        let src = a.str("src")?;
        if state == "link" && src.is_none() {
            return Err("`src` is required with state=link".into());
        }
        Ok(File {
            path: a.req("path")?,
            state,
            mode: a.mode("mode")?,
            owner: a.str("owner")?,
            group: a.str("group")?,
            src,
            if_exists: a.bool("if_exists", false)?,
        })
    }
}

impl Module for File {
    fn probe(&self) -> Option<String> {
        let p = q(&self.path);
        Some(format!("if [ -L {p} ]; then echo \"link $(readlink {p})\"; elif [ -e {p} ]; then stat -c '%F|%a|%U|%G' {p}; else echo absent; fi"))
    }
    fn plan(&self, out: &Output) -> Plan {
        let line = out.stdout.trim();
        let p = q(&self.path);
        let fields: Vec<&str> = line.split('|').collect();
        let kind = if line.starts_with("link ") {
            "link"
        } else if line == "absent" {
            "absent"
        } else if fields[0] == "directory" {
            "directory"
        } else {
            "file"
        };
        let mut script = String::new();
        match self.state.as_str() {
            "absent" => {
                if kind != "absent" {
                    script = format!("rm -rf {p}");
                }
            }
            "link" => {
                let src = self.src.as_deref().unwrap_or_default();
                if line != format!("link {src}") {
                    script = format!("ln -sfn {} {p}", q(src));
                }
            }
            want => {
                if kind == "absent" && self.if_exists {
                    return Plan::Ok(format!("{} does not exist (if_exists)", self.path));
                }
                if kind == "absent" {
                    script = match want {
                        "directory" => format!("mkdir -p {p}; "),
                        "touch" => format!("touch {p}; "),
                        _ => {
                            return Plan::Fail(format!(
                                "{} does not exist (use state=touch to create it)",
                                self.path
                            ))
                        }
                    };
                } else if (want == "directory") != (kind == "directory") || kind == "link" {
                    return Plan::Fail(format!("{} exists but is a {kind}", self.path));
                }
                let (mode, owner, group) = if kind == "absent" {
                    ("", "", "")
                } else {
                    (
                        fields.get(1).copied().unwrap_or(""),
                        fields.get(2).copied().unwrap_or(""),
                        fields.get(3).copied().unwrap_or(""),
                    )
                };
                if let Some(m) = self.mode.as_deref().filter(|m| *m != mode) {
                    script += &format!("chmod {m} {p}; ");
                }
                if let Some(o) = self.owner.as_deref().filter(|o| *o != owner) {
                    script += &format!("chown {} {p}; ", q(o));
                }
                if let Some(g) = self.group.as_deref().filter(|g| *g != group) {
                    script += &format!("chgrp {} {p}; ", q(g));
                }
            }
        }
        if script.is_empty() {
            Plan::Ok(format!("{} is {}", self.path, self.state))
        } else {
            Plan::Change {
                script: format!("set -e; {script}"),
                stdin: None,
                diff: None,
                msg: format!("{}: {}", self.path, script.trim().trim_end_matches(';')),
            }
        }
    }
}

pub struct LineInFile {
    path: String,
    line: Option<String>,
    regexp: Option<regex::Regex>,
    present: bool,
    create: bool,
    mode: Option<String>,
}

impl LineInFile {
    pub fn new(a: &Args) -> Result<Self, String> {
        let present = a.choice("state", "present", &["present", "absent"])? == "present";
        let line = a.str("line")?;
        let regexp = a
            .str("regexp")?
            .map(|r| regex::Regex::new(&r).map_err(|e| format!("bad `regexp`: {e}")))
            .transpose()?;
        if present && line.is_none() {
            return Err("`line` is required with state=present".into());
        }
        if !present && line.is_none() && regexp.is_none() {
            return Err("state=absent needs `line` or `regexp`".into());
        }
        Ok(LineInFile {
            path: a.req("path")?,
            line,
            regexp,
            present,
            create: a.bool("create", false)?,
            mode: a.mode("mode")?,
        })
    }

    fn edit(&self, before: &str) -> String {
        let matches = |l: &str| match &self.regexp {
            Some(r) => r.is_match(l),
            None => Some(l) == self.line.as_deref(),
        };
        let mut lines: Vec<String> = before.lines().map(str::to_owned).collect();
        if self.present {
            let line = self.line.clone().unwrap_or_default();
            if let Some(i) = lines.iter().rposition(|l| matches(l)) {
                lines[i] = line;
            } else if !lines.contains(&line) {
                lines.push(line);
            }
        } else {
            lines.retain(|l| !matches(l));
        }
        join_lines(&lines)
    }
}

fn join_lines(lines: &[String]) -> String {
    if lines.is_empty() {
        String::new()
    } else {
        lines.join("\n") + "\n"
    }
}

impl Module for LineInFile {
    fn probe(&self) -> Option<String> {
        Some(probe_file(&self.path))
    }
    fn plan(&self, p: &Output) -> Plan {
        let cur = parse_file(&p.stdout);
        if !cur.exists && !self.create {
            if !self.present {
                return Plan::Ok(format!("{} does not exist", self.path));
            }
            return Plan::Fail(format!(
                "{} does not exist (set create: true to create it)",
                self.path
            ));
        }
        let after = self.edit(&cur.content);
        plan_content(
            &self.path,
            &cur,
            &after,
            self.mode.as_deref(),
            None,
            None,
            None,
        )
    }
}

pub struct BlockInFile {
    path: String,
    block: String,
    marker: String,
    present: bool,
    create: bool,
    mode: Option<String>,
}

impl BlockInFile {
    pub fn new(a: &Args) -> Result<Self, String> {
        let marker = a
            .str("marker")?
            .unwrap_or_else(|| "# {mark} PROVISION MANAGED BLOCK".into());
        if !marker.contains("{mark}") {
            return Err("`marker` must contain {mark}".into());
        }
        Ok(BlockInFile {
            path: a.req("path")?,
            block: a.str("block")?.unwrap_or_default(),
            marker,
            present: a.choice("state", "present", &["present", "absent"])? == "present",
            create: a.bool("create", false)?,
            mode: a.mode("mode")?,
        })
    }

    fn edit(&self, before: &str) -> String {
        let (begin, end) = (
            self.marker.replace("{mark}", "BEGIN"),
            self.marker.replace("{mark}", "END"),
        );
        let lines: Vec<String> = before.lines().map(str::to_owned).collect();
        let start = lines.iter().position(|l| *l == begin);
        let stop = start.and_then(|s| lines[s..].iter().position(|l| *l == end).map(|e| s + e));
        let mut block = Vec::new();
        if self.present {
            block.push(begin.clone());
            block.extend(self.block.lines().map(str::to_owned));
            block.push(end.clone());
        }
        let out: Vec<String> = match (start, stop) {
            (Some(s), Some(e)) => lines[..s]
                .iter()
                .cloned()
                .chain(block)
                .chain(lines[e + 1..].iter().cloned())
                .collect(),
            _ => lines.into_iter().chain(block).collect(),
        };
        join_lines(&out)
    }
}

impl Module for BlockInFile {
    fn probe(&self) -> Option<String> {
        Some(probe_file(&self.path))
    }
    fn plan(&self, p: &Output) -> Plan {
        let cur = parse_file(&p.stdout);
        if !cur.exists && !self.create {
            return Plan::Fail(format!(
                "{} does not exist (set create: true to create it)",
                self.path
            ));
        }
        plan_content(
            &self.path,
            &cur,
            &self.edit(&cur.content),
            self.mode.as_deref(),
            None,
            None,
            None,
        )
    }
}

pub struct Sysctl {
    name: String,
    value: String,
    file: String,
    reload: bool,
}

impl Sysctl {
    pub fn new(a: &Args) -> Result<Self, String> {
        let name = a.req("name")?;
        if !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-/".contains(c))
        {
            return Err(format!("`{name}` is not a sysctl key"));
        }
        Ok(Sysctl {
            name,
            value: a.req("value")?,
            file: a
                .str("sysctl_file")?
                .unwrap_or_else(|| "/etc/sysctl.d/99-provision.conf".into()),
            reload: a.bool("reload", true)?,
        })
    }
}

/// Whether a `key = value` line of a sysctl file holds `want` (whitespace-normalised).
fn same_value(line: &str, want: &str) -> bool {
    line.split_once('=')
        .is_some_and(|(_, v)| v.split_whitespace().collect::<Vec<_>>().join(" ") == want)
}

impl Module for Sysctl {
    fn probe(&self) -> Option<String> {
        // sysctl(8), not the shell's `read`: dash reads byte by byte, and /proc/sys
        // answers a read past offset 0 with end-of-file (it would see "4096" as "4").
        Some(format!(
            "{}; echo '--live--'; sysctl -n {} 2>/dev/null || echo '<missing>'",
            probe_file(&self.file),
            q(&self.name)
        ))
    }
    fn plan(&self, p: &Output) -> Plan {
        let (file_part, live) = p.stdout.split_once("--live--\n").unwrap_or((&p.stdout, ""));
        let live = live.split_whitespace().collect::<Vec<_>>().join(" ");
        if live == "<missing>" {
            return Plan::Fail(format!("the kernel has no sysctl `{}`", self.name));
        }
        let want = self.value.split_whitespace().collect::<Vec<_>>().join(" ");
        let cur = parse_file(file_part);
        let re = regex::Regex::new(&format!(r"^\s*{}\s*=", regex::escape(&self.name))).ok();
        let mut lines: Vec<String> = cur.content.lines().map(str::to_owned).collect();
        let entry = format!("{} = {}", self.name, self.value);
        match lines
            .iter()
            .position(|l| re.as_ref().is_some_and(|r| r.is_match(l)))
        {
            // `key=value` and `key = value` mean the same: a line that already
            // holds the value is left as it is written.
            Some(i) if same_value(&lines[i], &want) => {}
            Some(i) => lines[i] = entry,
            None => lines.push(entry),
        }
        let after = join_lines(&lines);
        let mut script = String::new();
        let mut diff = None;
        if !cur.exists || after != cur.content {
            script += &format!(
                "printf %s {} | {{ {}; }}; ",
                q(&after),
                put_script(&self.file, "644", Some("root"), Some("root"))
            );
            diff = Some(Diff {
                path: self.file.clone(),
                before: cur.content.clone(),
                after,
            });
        }
        if self.reload && live != want {
            script += &format!("sysctl -q -w {}={}", q(&self.name), q(&self.value));
        }
        if script.is_empty() {
            Plan::Ok(format!("{} = {}", self.name, self.value))
        } else {
            Plan::Change {
                script,
                stdin: None,
                diff,
                msg: if live == want {
                    format!("{} = {} persisted in {}", self.name, self.value, self.file)
                } else {
                    format!("{} set to {} (was {live})", self.name, self.value)
                },
            }
        }
    }
}

pub struct AuthorizedKey {
    user: String,
    key: String,
    present: bool,
    exclusive: bool,
}

impl AuthorizedKey {
    pub fn new(a: &Args) -> Result<Self, String> {
        let key = a.req("key")?.trim().to_owned();
        if key.lines().any(|l| l.split_whitespace().count() < 2) {
            return Err(
                "`key` must be public keys in OpenSSH format (type and base64), one a line".into(),
            );
        }
        Ok(AuthorizedKey {
            user: a.req("user")?,
            key,
            present: a.choice("state", "present", &["present", "absent"])? == "present",
            exclusive: a.bool("exclusive", false)?,
        })
    }
}

impl Module for AuthorizedKey {
    fn probe(&self) -> Option<String> {
        let u = q(&self.user);
        Some(format!(
            "h=$(getent passwd {u} | cut -d: -f6); [ -n \"$h\" ] || {{ echo 'no such user' >&2; exit 3; }}; echo \"$h\"; \
             f=\"$h/.ssh/authorized_keys\"; if [ -f \"$f\" ]; then stat -c 'E %a %U %G' \"$f\" && base64 -w0 \"$f\"; echo; else echo N; fi"
        ))
    }
    fn plan(&self, p: &Output) -> Plan {
        if p.rc == 3 {
            return Plan::Fail(format!("user `{}` does not exist", self.user));
        }
        let (home, rest) = p.stdout.split_once('\n').unwrap_or(("", ""));
        let cur = parse_file(rest);
        let body = |l: &str| l.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
        let wanted: Vec<&str> = self.key.lines().collect();
        let mut lines: Vec<String> = if self.exclusive && self.present {
            Vec::new()
        } else {
            cur.content.lines().map(str::to_owned).collect()
        };
        for k in &wanted {
            let kb = body(k);
            if self.present {
                if !lines.iter().any(|l| body(l) == kb) {
                    lines.push((*k).to_owned());
                }
            } else {
                lines.retain(|l| body(l) != kb);
            }
        }
        if self.exclusive && self.present {
            // Keep the existing lines' comments and options order-stable.
            let old: Vec<String> = cur.content.lines().map(str::to_owned).collect();
            if old.len() == lines.len()
                && old.iter().all(|o| lines.iter().any(|l| body(l) == body(o)))
            {
                lines = old;
            }
        }
        let path = format!("{home}/.ssh/authorized_keys");
        match plan_content(&path, &cur, &join_lines(&lines), Some("600"), Some(&self.user), None, None) {
            Plan::Change { script, stdin, diff, msg } => Plan::Change {
                script: format!("mkdir -p {h}/.ssh && chmod 700 {h}/.ssh && chown {u} {h}/.ssh && {{ {script}\n}}", h = q(home), u = q(&self.user)),
                stdin,
                diff,
                msg,
            },
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn sysctl_lines_compare_by_value_not_spelling() {
        assert!(super::same_value("net.ipv4.ip_forward=1", "1"));
        assert!(super::same_value("net.ipv4.ip_forward =  1 ", "1"));
        assert!(!super::same_value("net.ipv4.ip_forward = 0", "1"));
        assert!(super::same_value("net.core.x = 4096  8192", "4096 8192"));
    }
}
