//! A docker CLI context for the managers' TLS API (`pki client NAME --docker-context`),
//! written where the docker CLI keeps its contexts: `$DOCKER_CONFIG/contexts` (default
//! `~/.docker`), meta.json under the SHA-256 of the name, the TLS files beside it (0600).

use crate::inventory::Inventory;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// `tcp://ADDRESS:PORT` of a manager's Docker API: `host`, else the first manager.
pub fn endpoint(inv: &Inventory, host: Option<&str>) -> Result<(String, String), String> {
    let name = match host {
        Some(h) => {
            if !inv.hosts.contains_key(h) {
                return Err(format!(
                    "--host {h}: no such host in {}",
                    inv.path.display()
                ));
            }
            h.to_owned()
        }
        None => inv
            .groups
            .get("managers")
            .and_then(|g| g.first())
            .cloned()
            .ok_or_else(|| {
                format!(
                    "{} has no `managers` group: name the host with --host",
                    inv.path.display()
                )
            })?,
    };
    let h = &inv.hosts[&name];
    if !h.groups.iter().any(|g| g == "managers") {
        return Err(format!(
            "host `{name}` is not a manager: the Docker TLS API runs on managers only"
        ));
    }
    if h.vars.get("docker_tls") == Some(&Value::Bool(false)) {
        return Err(format!(
            "host `{name}` has `docker_tls: false`: its Docker API is not served over TLS"
        ));
    }
    let port = match h.vars.get("docker_tls_port") {
        None => 2376,
        Some(v) => v
            .as_u64()
            .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            .filter(|p| (1..=65535).contains(p))
            .ok_or_else(|| format!("host `{name}`: docker_tls_port `{v}` is not a port"))?,
    };
    let addr = crate::firewall::address(inv, &name)?;
    let addr = match addr {
        std::net::IpAddr::V6(a) => format!("[{a}]"),
        a => a.to_string(),
    };
    Ok((name, format!("tcp://{addr}:{port}")))
}

/// A name the docker CLI accepts for a context (and not its own `default`).
pub fn check_name(n: &str) -> Result<(), String> {
    let ok = n.len() >= 2
        && n.starts_with(|c: char| c.is_ascii_alphanumeric())
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.+-".contains(c))
        && n != "default";
    if ok {
        Ok(())
    } else {
        Err(format!(
            "docker context name `{n}`: use a letter or digit, then letters, digits and _ . + - \
             (not `default`); give one with --docker-context=NAME"
        ))
    }
}

/// The docker CLI's configuration folder: `$DOCKER_CONFIG`, else `~/.docker`.
pub fn docker_config() -> Result<PathBuf, String> {
    if let Some(d) = std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(d));
    }
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|h| PathBuf::from(h).join(".docker"))
        .ok_or_else(|| {
            "neither DOCKER_CONFIG nor HOME is set: cannot find the docker CLI's folder".into()
        })
}

/// Writes (or replaces) the context `name`; returns its meta.json's path.
pub fn write(
    config: &Path,
    name: &str,
    url: &str,
    ca: &str,
    cert: &str,
    key: &str,
) -> anyhow::Result<PathBuf> {
    let id = hex::encode(Sha256::digest(name.as_bytes()));
    let meta_dir = config.join("contexts/meta").join(&id);
    let tls_dir = config.join("contexts/tls").join(&id).join("docker");
    for d in [&meta_dir, &tls_dir] {
        std::fs::create_dir_all(d)?;
    }
    for d in [
        config.join("contexts/tls"),
        config.join("contexts/tls").join(&id),
        tls_dir.clone(),
    ] {
        std::fs::set_permissions(&d, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
    }
    for (f, body) in [("ca.pem", ca), ("cert.pem", cert), ("key.pem", key)] {
        crate::sys::write_atomic(&tls_dir.join(f), body.as_bytes(), 0o600)?;
    }
    let meta = json!({
        "Name": name,
        "Metadata": {"Description": "written by provision pki client"},
        "Endpoints": {"docker": {"Host": url, "SkipTLSVerify": false}},
    });
    let p = meta_dir.join("meta.json");
    crate::sys::write_atomic(&p, meta.to_string().as_bytes(), 0o644)?;
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_names_are_the_ones_docker_accepts() {
        for n in ["ops", "ops-1", "a.b+c_d"] {
            assert!(check_name(n).is_ok(), "{n}");
        }
        for n in ["default", "o", "-ops", "ops@x", "a/b", ""] {
            assert!(check_name(n).is_err(), "{n}");
        }
    }

    #[test]
    fn the_context_is_where_the_docker_cli_looks_for_it() {
        let d = tempfile::tempdir().unwrap();
        let p = write(d.path(), "ops", "tcp://10.0.0.1:2376", "C", "T", "K").unwrap();
        let id = hex::encode(Sha256::digest(b"ops"));
        assert_eq!(p, d.path().join(format!("contexts/meta/{id}/meta.json")));
        let m: Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        assert_eq!(m["Endpoints"]["docker"]["Host"], "tcp://10.0.0.1:2376");
        assert_eq!(m["Name"], "ops");
        let key = d.path().join(format!("contexts/tls/{id}/docker/key.pem"));
        assert_eq!(std::fs::read_to_string(&key).unwrap(), "K");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
}
