//! Facts gathered in one round trip, and how to reach each host (inventory, then
//! ~/.ssh/config, then OpenSSH's defaults).

use super::{Options, Prepared};
use crate::inventory::{self, Inventory};
use crate::transport::{sshconfig, HostKeyPolicy, Keys, Secret, Target};
use serde_json::{Map, Value};
use std::path::PathBuf;
use std::sync::Arc;

/// The facts script: builtins where the shell has them, six programs in all.
pub const FACTS: &str = r#"set +e; . /etc/os-release 2>/dev/null
read -r k < /proc/sys/kernel/osrelease; read -r n < /proc/sys/kernel/hostname
m=0; while read -r a b _; do [ "$a" = MemTotal: ] && m=$((b / 1024)) && break; done < /proc/meminfo
r=$(ip -4 route get 1.1.1.1 2>/dev/null); case "$r" in *" src "*) r=${r#* src }; r=${r%% *} ;; *) r= ;; esac
if [ -d /run/systemd/system ]; then s=systemd; else s=sysv; fi
echo "ansible_distribution=$ID
ansible_distribution_version=$VERSION_ID
ansible_distribution_release=$VERSION_CODENAME
ansible_architecture=$(uname -m)
ansible_kernel=$k
ansible_hostname=$n
ansible_fqdn=$(hostname -f 2>/dev/null || echo "$n")
ansible_default_ipv4_address=$r
ansible_all_ipv4_addresses=$(hostname -I 2>/dev/null)
ansible_service_mgr=$s
ansible_memtotal_mb=$m
ansible_processor_vcpus=$(nproc)
ansible_user_id=${USER:-$(id -un)}
provision_ssh_client=${SSH_CONNECTION%% *}"
c=/usr/local/share/ca-certificates/provision-ca.crt; [ -r "$c" ] || c=/etc/provision/pki/ca.crt
h=; [ -r "$c" ] && { set -- $(sha256sum < "$c"); h=$1; }; echo "provision_ca_sha256=$h"
sudo -n true 2>/dev/null && echo ansible_sudo=yes || echo ansible_sudo=no"#;

/// The names the facts script sets.
pub const FACT_NAMES: &[&str] = &[
    "ansible_distribution",
    "ansible_distribution_version",
    "ansible_distribution_release",
    "ansible_architecture",
    "ansible_kernel",
    "ansible_hostname",
    "ansible_fqdn",
    "ansible_default_ipv4_address",
    "ansible_all_ipv4_addresses",
    "ansible_service_mgr",
    "ansible_memtotal_mb",
    "ansible_processor_vcpus",
    "ansible_user_id",
    "provision_ssh_client",
    "provision_ca_sha256",
    "ansible_sudo",
];

pub fn parse_facts(out: &str) -> Map<String, Value> {
    let mut m = Map::new();
    for line in out.lines() {
        if let Some((k, v)) = line.split_once('=') {
            let val = match k {
                "ansible_memtotal_mb" | "ansible_processor_vcpus" => {
                    v.parse::<u64>().map(Value::from).unwrap_or(Value::Null)
                }
                "ansible_all_ipv4_addresses" => {
                    Value::from(v.split_whitespace().collect::<Vec<_>>())
                }
                _ => Value::from(v),
            };
            m.insert(k.to_owned(), val);
        }
    }
    m
}

/// How to reach `h`: the inventory first, then ~/.ssh/config (as Ansible passes its
/// settings to ssh), then OpenSSH's defaults.
pub fn target(
    o: &Options,
    inv: &Inventory,
    h: &inventory::Host,
    cfg: &sshconfig::Config,
) -> Result<Target, String> {
    let dir = inv
        .path
        .parent()
        .map(|p| p.to_path_buf())
        .unwrap_or_default();
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let c = cfg.host(&h.address);
    let mut files = Vec::new();
    match h.vars.get("known_hosts_file").and_then(Value::as_str) {
        Some(f) => files.push(inventory::expand(f, &dir)),
        None => files.push(dir.join("known_hosts")),
    }
    files.extend(c.known_hosts.iter().cloned());
    if let Some(home) = &home {
        files.push(home.join(".ssh/known_hosts"));
    }
    let mut keys: Vec<PathBuf> = h.key_file.iter().cloned().collect();
    keys.extend(c.identity_files.iter().cloned());
    if keys.is_empty() {
        if let Some(home) = &home {
            for n in ["id_ed25519", "id_ecdsa", "id_rsa"] {
                let p = home.join(".ssh").join(n);
                if p.exists() {
                    keys.push(p);
                }
            }
        }
    }
    for k in &keys {
        if !k.exists() {
            return Err(format!(
                "host `{}`: private key {} does not exist",
                h.name,
                k.display()
            ));
        }
    }
    let user = h
        .user
        .clone()
        .or(c.user.clone())
        .unwrap_or_else(|| std::env::var("USER").unwrap_or_else(|_| "root".into()));
    let mut t = Target {
        name: h.name.clone(),
        address: c.host_name.clone().unwrap_or_else(|| h.address.clone()),
        port: if h.port_given {
            h.port
        } else {
            c.port.unwrap_or(h.port)
        },
        user,
        key_files: keys.clone(),
        identities_only: c.identities_only,
        jump: None,
        hostkeys: HostKeyPolicy {
            files,
            accept_new: o.accept_new_host_keys,
        },
        connect_timeout: o.connect_timeout,
        command_timeout: o.command_timeout,
        keys: Default::default(),
        become_pass: None,
    };
    let hops: Vec<String> = match h
        .vars
        .get("ansible_ssh_common_args")
        .and_then(Value::as_str)
        .and_then(sshconfig::jump_from_args)
    {
        Some(j) => j.split(',').map(str::to_owned).collect(),
        None => c
            .proxy_jump
            .iter()
            .flat_map(|j| j.split(','))
            .map(str::to_owned)
            .collect(),
    };
    let mut prev: Option<Box<Target>> = None;
    for hop in hops {
        let (user, host, port) =
            sshconfig::parse_jump(&hop).map_err(|e| format!("host `{}`: {e}", h.name))?;
        let hc = cfg.host(&host);
        let mut keys = hc.identity_files.clone();
        if keys.is_empty() {
            keys = t.key_files.clone();
        }
        prev = Some(Box::new(Target {
            name: format!("{} (bastion)", host),
            address: hc.host_name.clone().unwrap_or(host),
            port: port.or(hc.port).unwrap_or(22),
            user: user.or(hc.user.clone()).unwrap_or_else(|| t.user.clone()),
            key_files: keys,
            identities_only: hc.identities_only,
            jump: prev,
            ..t.clone()
        }));
    }
    t.jump = prev;
    Ok(t)
}

/// Every key file the targets (and their bastions) may use.
fn key_files(t: &Target, out: &mut Vec<PathBuf>) {
    for k in &t.key_files {
        if !out.contains(k) {
            out.push(k.clone());
        }
    }
    if let Some(j) = &t.jump {
        key_files(j, out);
    }
}

fn set_secrets(t: &mut Target, keys: &Arc<Keys>, pass: &Option<Arc<Secret>>) {
    t.keys = keys.clone();
    t.become_pass = pass.clone();
    if let Some(j) = &mut t.jump {
        set_secrets(j, keys, pass);
    }
}

impl Prepared {
    /// Reads the key files (asking for passphrases when `interactive`) and sets the
    /// become password, before any connection.
    pub async fn unlock(
        &mut self,
        interactive: bool,
        become_pass: Option<String>,
    ) -> Result<(), String> {
        let mut files = Vec::new();
        for t in self
            .targets
            .values()
            .chain(self.outside.values().flatten())
            .chain(self.retired.values().flatten())
        {
            key_files(t, &mut files);
        }
        let keys = Arc::new(Keys::load(&files, interactive).await?);
        let pass = become_pass.map(|p| Arc::new(Secret(p)));
        for t in self
            .targets
            .values_mut()
            .chain(self.outside.values_mut().flatten())
            .chain(self.retired.values_mut().flatten())
        {
            set_secrets(t, &keys, &pass);
        }
        Ok(())
    }
}

/// Could this template text read a host's facts through `hostvars`? True for
/// `hostvars[h].ansible_kernel`, `hostvars[h]['ansible_fqdn']`, and for any use that
/// is not a plain key lookup (`hostvars | dict2items`, `hostvars[h]` handed on).
pub fn reads_facts_via_hostvars(text: &str, facts: &[&str]) -> bool {
    let b = text.as_bytes();
    let mut from = 0;
    while let Some(i) = text[from..].find("hostvars") {
        let mut j = from + i + "hostvars".len();
        from = j;
        let skip_ws = |j: &mut usize| {
            while *j < b.len() && b[*j] == b' ' {
                *j += 1;
            }
        };
        skip_ws(&mut j);
        if j >= b.len() || b[j] != b'[' {
            return true; // hostvars used whole
        }
        // the host subscript, brackets balanced
        let mut depth = 0;
        while j < b.len() {
            match b[j] {
                b'[' => depth += 1,
                b']' => {
                    depth -= 1;
                    if depth == 0 {
                        break;
                    }
                }
                _ => {}
            }
            j += 1;
        }
        j += 1;
        skip_ws(&mut j);
        let key: String = if j < b.len() && b[j] == b'.' {
            text[j + 1..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect()
        } else if text[j.min(b.len())..].starts_with("['")
            || text[j.min(b.len())..].starts_with("[\"")
        {
            text[j + 2..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect()
        } else {
            String::new()
        };
        if key.is_empty() || facts.contains(&key.as_str()) {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_facts_script_sets_every_named_fact_under_dash() {
        let out = std::process::Command::new("sh")
            .args(["-c", FACTS])
            .env("USER", "tester")
            .env("SSH_CONNECTION", "10.0.0.9 5000 10.0.0.1 22")
            .output()
            .unwrap();
        let facts = parse_facts(&String::from_utf8_lossy(&out.stdout));
        let keys: Vec<&str> = facts.keys().map(String::as_str).collect();
        let mut want = FACT_NAMES.to_vec();
        want.sort();
        assert_eq!(keys, want, "{facts:?}");
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
        assert_eq!(facts["ansible_kernel"], kernel.trim());
        assert_eq!(facts["ansible_user_id"], "tester");
        assert_eq!(facts["provision_ssh_client"], "10.0.0.9");
        assert!(
            facts["ansible_memtotal_mb"].as_u64().unwrap() > 0,
            "{facts:?}"
        );
        assert!(facts["ansible_processor_vcpus"].as_u64().unwrap() > 0);
        let addr = facts["ansible_default_ipv4_address"].as_str().unwrap();
        assert!(
            addr.is_empty() || addr.parse::<std::net::Ipv4Addr>().is_ok(),
            "{addr}"
        );
    }

    #[test]
    fn facts_read_through_hostvars_are_found() {
        let f = FACT_NAMES;
        let reads = |t: &str| reads_facts_via_hostvars(t, f);
        assert!(!reads(
            "{% for h in groups['all'] %}{{ hostvars[h].ansible_host | default(h) }}{% endfor %}"
        ));
        assert!(!reads(
            "{{ hostvars[groups['m'][0]]['private_address'] }} and no other"
        ));
        assert!(reads("{{ hostvars[h].ansible_default_ipv4_address }}"));
        assert!(reads("{{ hostvars[h]['ansible_fqdn'] }}"));
        assert!(reads("{{ hostvars | dict2items }}"));
        assert!(reads("{{ hostvars[h] | to_json }}"));
        assert!(!reads("no such thing"));
    }
}
