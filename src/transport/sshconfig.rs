//! What `~/.ssh/config` says about a host: HostName, User, Port, IdentityFile,
//! IdentitiesOnly, ProxyJump and UserKnownHostsFile (parsed by the ssh2-config crate).

use ssh2_config::{ParseRule, SshConfig};
use std::io::BufReader;
use std::path::{Path, PathBuf};

#[derive(Default)]
pub struct Config(Option<SshConfig>);

/// The settings for one host; `None`/empty where the file says nothing.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct HostConfig {
    pub host_name: Option<String>,
    pub user: Option<String>,
    pub port: Option<u16>,
    pub identity_files: Vec<PathBuf>,
    pub identities_only: bool,
    pub proxy_jump: Vec<String>,
    pub known_hosts: Vec<PathBuf>,
}

impl Config {
    /// Reads `path`; a missing default file is an empty config.
    pub fn load(path: &Path) -> Result<Config, String> {
        let file = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Config(None)),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        Self::parse(&mut BufReader::new(file)).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn parse(text: &mut impl std::io::BufRead) -> Result<Config, String> {
        let rules = ParseRule::ALLOW_UNKNOWN_FIELDS | ParseRule::ALLOW_UNSUPPORTED_FIELDS;
        SshConfig::default()
            .parse(text, rules)
            .map(|c| Config(Some(c)))
            .map_err(|e| e.to_string())
    }

    pub fn host(&self, host: &str) -> HostConfig {
        let Some(c) = &self.0 else {
            return HostConfig::default();
        };
        let p = c.query(host);
        let extra = |k: &str| p.unsupported_fields.get(k).cloned().unwrap_or_default();
        let home = std::env::var_os("HOME").map(PathBuf::from);
        let path = |s: &str| match (s.strip_prefix("~/"), &home) {
            (Some(rest), Some(h)) => h.join(rest),
            _ => PathBuf::from(s),
        };
        HostConfig {
            host_name: p.host_name.clone(),
            user: p.user.clone(),
            port: p.port,
            identity_files: p.identity_file.clone().unwrap_or_default(),
            identities_only: extra("identitiesonly")
                .first()
                .is_some_and(|v| v.eq_ignore_ascii_case("yes")),
            proxy_jump: p
                .proxy_jump
                .clone()
                .unwrap_or_default()
                .into_iter()
                .filter(|j| !j.eq_ignore_ascii_case("none"))
                .collect(),
            known_hosts: extra("userknownhostsfile")
                .iter()
                .filter(|f| !f.eq_ignore_ascii_case("none"))
                .map(|f| path(f))
                .collect(),
        }
    }
}

/// A ProxyJump hop: `[user@]host[:port]`.
pub fn parse_jump(spec: &str) -> Result<(Option<String>, String, Option<u16>), String> {
    let spec = spec.strip_prefix("ssh://").unwrap_or(spec);
    let (user, rest) = match spec.rsplit_once('@') {
        Some((u, r)) => (Some(u.to_owned()), r),
        None => (None, spec),
    };
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (
            h,
            Some(
                p.parse::<u16>()
                    .map_err(|_| format!("bad port in ProxyJump `{spec}`"))?,
            ),
        ),
        _ => (rest, None),
    };
    if host.is_empty() {
        return Err(format!("ProxyJump `{spec}` names no host"));
    }
    Ok((user, host.to_owned(), port))
}

/// The ProxyJump in Ansible's `ansible_ssh_common_args` (`-J x` or `-o ProxyJump=x`).
pub fn jump_from_args(args: &str) -> Option<String> {
    let words: Vec<&str> = args.split_whitespace().collect();
    for (i, w) in words.iter().enumerate() {
        let opt = match *w {
            "-J" => words.get(i + 1).copied(),
            "-o" => words.get(i + 1).copied().and_then(option_jump),
            w if w.starts_with("-J") => Some(&w[2..]),
            w if w.starts_with("-o") => option_jump(&w[2..]),
            _ => None,
        };
        if let Some(j) = opt {
            return Some(j.trim_matches(|c| c == '"' || c == '\'').to_owned());
        }
    }
    None
}

fn option_jump(o: &str) -> Option<&str> {
    let o = o.trim_matches(|c| c == '"' || c == '\'');
    let (k, v) = o.split_once('=').or_else(|| o.split_once(' '))?;
    k.eq_ignore_ascii_case("proxyjump").then_some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_settings_first_match_wins() {
        let text = "Host web*\n  HostName 10.0.0.5\n  User deploy\n  Port 2222\n  IdentityFile /k/one\n  IdentitiesOnly yes\n  ProxyJump admin@bastion:2200\n  UserKnownHostsFile /k/known\n\nHost *\n  User nobody\n  IdentityFile /k/two\n";
        let c = Config::parse(&mut text.as_bytes()).unwrap();
        let h = c.host("web1");
        assert_eq!(h.host_name.as_deref(), Some("10.0.0.5"));
        assert_eq!(h.user.as_deref(), Some("deploy"));
        assert_eq!(h.port, Some(2222));
        assert!(h.identities_only);
        assert_eq!(h.proxy_jump, vec!["admin@bastion:2200".to_string()]);
        assert_eq!(h.known_hosts, vec![PathBuf::from("/k/known")]);
        assert_eq!(h.identity_files[0], PathBuf::from("/k/one"));
        let other = c.host("db1");
        assert_eq!(other.user.as_deref(), Some("nobody"));
        assert!(other.proxy_jump.is_empty());
        assert!(!other.identities_only);
    }

    #[test]
    fn jump_specs() {
        assert_eq!(
            parse_jump("admin@b:2200").unwrap(),
            (Some("admin".into()), "b".into(), Some(2200))
        );
        assert_eq!(parse_jump("b").unwrap(), (None, "b".into(), None));
        assert!(parse_jump("u@b:x").is_err());
        assert!(parse_jump("u@").is_err());
        assert_eq!(jump_from_args("-o ProxyJump=u@b").as_deref(), Some("u@b"));
        assert_eq!(jump_from_args("-C -J b:22").as_deref(), Some("b:22"));
        assert_eq!(jump_from_args("-o StrictHostKeyChecking=no"), None);
    }
}
