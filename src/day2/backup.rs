//! `provision backup`: one consistent, timestamped set of what a cluster cannot be
//! rebuilt without. Every part is encrypted with the vault password (the Ansible Vault
//! format, so `ansible-vault view` opens it too) and listed in a manifest with its size,
//! checksum, source host and time:
//! - `state`: the controller's state directory (CA key, cephx keys, fsid), as a tar;
//! - `etcd`: `etcdctl snapshot save` on a healthy member, checked with `snapshot status`;
//! - `swarm`: the specs of services, networks, configs and secrets (no secret values);
//! - `swarm-raft`: the raft state of a manager that is not the leader, taken while its
//!   dockerd is stopped, only when the other managers keep the quorum (else skipped, why
//!   in the manifest);
//! - `ceph`: the monmap, auth entities, pools and filesystems.

use super::{say, Fleet};
use crate::vault::{self, Password};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub const MANIFEST: &str = "manifest.json";

/// One part written, or why it was not.
pub struct Part {
    pub name: String,
    pub from: String,
    pub file: Option<String>,
    pub bytes: u64,
    pub sha256: String,
    pub note: String,
    /// Not taken because something failed (not because the cluster has no such part).
    pub failed: bool,
}

fn sha(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// Writes `plain` encrypted as `name.vault` in `set`.
pub(crate) fn put(
    set: &Path,
    name: &str,
    from: &str,
    plain: &[u8],
    pw: &Password,
    note: String,
) -> anyhow::Result<Part> {
    let v = vault::encrypt(plain, pw);
    let file = format!("{name}.vault");
    crate::sys::write_atomic(&set.join(&file), v.as_bytes(), 0o600)?;
    Ok(Part {
        name: name.into(),
        from: from.into(),
        file: Some(file),
        bytes: v.len() as u64,
        sha256: sha(v.as_bytes()),
        note,
        failed: false,
    })
}

/// A part not taken: `why` starts with "none:" when the cluster has no such thing.
fn skipped(name: &str, why: String) -> Part {
    let (failed, note) = match why.strip_prefix("none: ") {
        Some(w) => (false, w.to_owned()),
        None => (true, why),
    };
    Part {
        name: name.into(),
        from: String::new(),
        file: None,
        bytes: 0,
        sha256: String::new(),
        note,
        failed,
    }
}

/// A base64 payload a host printed, decoded.
fn b64(s: &str) -> Result<Vec<u8>, String> {
    use base64::Engine;
    let clean: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    base64::engine::general_purpose::STANDARD
        .decode(clean)
        .map_err(|e| format!("the host's payload is damaged: {e}"))
}

/// Makes the set in a new folder under `to`: its path and parts.
pub async fn run(
    f: &Fleet<'_>,
    state_dir: &Path,
    to: &Path,
    pw: &Password,
) -> anyhow::Result<(PathBuf, Vec<Part>)> {
    let stamp = crate::sys::now_utc().replace([':', '-'], "");
    let set = to.join(&stamp);
    std::fs::create_dir_all(&set)?;
    std::fs::set_permissions(&set, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
    let mut parts = Vec::new();

    // The state directory, without its lock.
    let out = std::process::Command::new("tar")
        .arg("-C")
        .arg(state_dir)
        .args(["--exclude=./lock", "--exclude=./*.lock", "-cf", "-", "."])
        .output()?;
    if !out.status.success() {
        anyhow::bail!(
            "tar of {}: {}",
            state_dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    say(
        "controller",
        &format!("state directory: {} bytes", out.stdout.len()),
    );
    parts.push(put(
        &set,
        "state",
        "controller",
        &out.stdout,
        pw,
        String::new(),
    )?);

    parts.push(match etcd(f).await {
        Ok((h, db, status)) => {
            say(&h, &format!("etcd snapshot: {} bytes ({status})", db.len()));
            put(&set, "etcd", &h, &db, pw, status)?
        }
        Err(e) => skipped("etcd", e),
    });
    match swarm_specs(f).await {
        Ok((h, specs)) => parts.push(put(&set, "swarm", &h, specs.as_bytes(), pw, String::new())?),
        Err(e) => parts.push(skipped("swarm", e)),
    }
    parts.push(match raft(f).await {
        Ok((h, tar)) => {
            say(&h, &format!("swarm raft state: {} bytes", tar.len()));
            put(
                &set,
                "swarm-raft",
                &h,
                &tar,
                pw,
                "taken with its dockerd stopped".into(),
            )?
        }
        Err(e) => skipped("swarm-raft", e),
    });
    parts.push(match ceph(f).await {
        Ok((h, maps)) => put(&set, "ceph", &h, maps.as_bytes(), pw, String::new())?,
        Err(e) => skipped("ceph", e),
    });
    write_manifest(&set, &f.p.inventory.path.display().to_string(), &parts)?;
    Ok((set, parts))
}

/// The set's manifest: each part with its size, checksum, source and note.
pub(crate) fn write_manifest(set: &Path, inventory: &str, parts: &[Part]) -> anyhow::Result<()> {
    let manifest = json!({
        "created": crate::sys::now_utc(),
        "inventory": inventory,
        "format": 1,
        "parts": parts.iter().map(|p| json!({
            "name": p.name, "file": p.file, "from": p.from, "bytes": p.bytes,
            "sha256": p.sha256, "note": p.note, "failed": p.failed,
        })).collect::<Vec<_>>(),
    });
    crate::sys::write_atomic(
        &set.join(MANIFEST),
        serde_json::to_string_pretty(&manifest)?.as_bytes(),
        0o600,
    )
}

/// A snapshot from the first etcd member that answers healthy: (host, bytes, status).
async fn etcd(f: &Fleet<'_>) -> Result<(String, Vec<u8>, String), String> {
    let members: Vec<String> = f
        .parts
        .iter()
        .filter(|(_, p)| p.etcd)
        .map(|(h, _)| h.clone())
        .collect();
    if members.is_empty() {
        return Err("none: no etcd in this inventory".into());
    }
    let mut why = Vec::new();
    for h in members.iter().filter(|h| f.conns.contains_key(*h)) {
        let ctl = f.etcdctl(h);
        let script = format!(
            "set -e; t=$(mktemp -d); trap 'rm -rf \"$t\"' EXIT\n\
             {ctl} endpoint health >/dev/null 2>&1\n\
             {ctl} snapshot save \"$t/s.db\" >/dev/null 2>&1\n\
             echo '==PROVISION status'; ETCDCTL_API=3 etcdctl snapshot status \"$t/s.db\" -w json 2>/dev/null || true\n\
             echo '==PROVISION db'; base64 -w0 \"$t/s.db\"; echo"
        );
        match f.ok(h, &script).await {
            Ok(out) => {
                let s = crate::probe::sections(&out);
                let db = b64(s.get("db").map(String::as_str).unwrap_or(""))?;
                let st: Value = s
                    .get("status")
                    .and_then(|x| serde_json::from_str(x.trim()).ok())
                    .unwrap_or_default();
                if db.is_empty() || !st["totalKey"].is_u64() {
                    why.push(format!(
                        "{h}: the snapshot did not check out ({})",
                        s.get("status").map(|x| x.trim()).unwrap_or("")
                    ));
                    continue;
                }
                let status = format!(
                    "revision {}, {} keys, hash {}",
                    st["revision"], st["totalKey"], st["hash"]
                );
                return Ok((h.clone(), db, status));
            }
            Err(e) => why.push(format!("{h}: {e}")),
        }
    }
    Err(format!(
        "no healthy etcd member gave a snapshot: {}",
        why.join("; ")
    ))
}

/// The first manager that answers.
fn manager(f: &Fleet<'_>) -> Result<String, String> {
    if !f.parts.values().any(|p| p.manager) {
        return Err("none: no swarm in this inventory".into());
    }
    f.other("", |p| p.manager)
        .ok_or_else(|| "no manager of the swarm answers".into())
}

async fn swarm_specs(f: &Fleet<'_>) -> Result<(String, String), String> {
    let m = manager(f)?;
    let out = f
        .ok(
            &m,
            "for k in service network config secret; do echo \"==PROVISION $k\"; \
             ids=$(docker $k ls -q 2>/dev/null); [ -z \"$ids\" ] && echo '[]' || docker $k inspect $ids; done",
        )
        .await?;
    let s = crate::probe::sections(&out);
    let mut v = serde_json::Map::new();
    for k in ["service", "network", "config", "secret"] {
        let j: Value = s
            .get(k)
            .and_then(|x| serde_json::from_str(x.trim()).ok())
            .ok_or(format!("{m}: the {k}s could not be read"))?;
        v.insert(format!("{k}s"), j);
    }
    Ok((m, serde_json::to_string_pretty(&v).unwrap_or_default()))
}

/// The raft state of a reachable manager that is not the leader, its dockerd stopped
/// meanwhile, when the others keep the quorum.
async fn raft(f: &Fleet<'_>) -> Result<(String, Vec<u8>), String> {
    let m = manager(f)?;
    let ls = f
        .ok(
            &m,
            "docker node ls --format '{{.Hostname}} {{.ManagerStatus}}' | awk 'NF > 1'",
        )
        .await?;
    let (count, up) = super::checks::managers(&ls);
    let leader = ls
        .lines()
        .find(|l| l.ends_with(" Leader"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or("");
    let quorum = count / 2 + 1;
    if up.len() < quorum + 1 {
        return Err(format!(
            "none: {count} manager(s), {} reachable: stopping one for the copy would leave {}, and a quorum of {count} needs {quorum}; \
             the raft state is not taken (the specs are)",
            up.len(),
            up.len().saturating_sub(1)
        ));
    }
    let h = up
        .iter()
        .find(|h| h.as_str() != leader && f.conns.contains_key(*h))
        .ok_or("no reachable manager other than the leader answers".to_string())?
        .clone();
    let out = f
        .ok(
            &h,
            "set -e; systemctl stop docker docker.socket; \
             trap 'systemctl start docker' EXIT; \
             tar -C /var/lib/docker -czf - swarm | base64 -w0; echo",
        )
        .await?;
    let tar = b64(&out)?;
    // Back in the swarm, reachable, before anything else.
    let t = Instant::now();
    loop {
        let st = f
            .ok(&h, "docker node inspect self --format '{{.Status.State}} {{.ManagerStatus.Reachability}}' 2>/dev/null || true")
            .await
            .unwrap_or_default();
        if st.trim() == "ready reachable" {
            break;
        }
        if t.elapsed() > Duration::from_secs(120) {
            return Err(format!(
                "{h}: docker is not back in the swarm 120 s after the raft copy"
            ));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    Ok((h, tar))
}

async fn ceph(f: &Fleet<'_>) -> Result<(String, String), String> {
    if !f.parts.values().any(|p| p.mon) {
        return Err("none: no Ceph in this inventory".into());
    }
    let mon = f
        .other("", |p| p.mon)
        .ok_or("no Ceph monitor answers".to_string())?;
    let out = f
        .ok(
            &mon,
            "for c in 'mon dump' 'auth ls' 'osd pool ls detail' 'fs dump' 'config dump'; do \
             echo \"==PROVISION $c\"; ceph $c -f json 2>/dev/null; echo; done",
        )
        .await?;
    let s = crate::probe::sections(&out);
    let mut v = serde_json::Map::new();
    for k in [
        "mon dump",
        "auth ls",
        "osd pool ls detail",
        "fs dump",
        "config dump",
    ] {
        let j: Value = s
            .get(k)
            .and_then(|x| serde_json::from_str(x.trim()).ok())
            .ok_or(format!("{mon}: `ceph {k}` could not be read"))?;
        v.insert(k.replace(' ', "_"), j);
    }
    Ok((mon, serde_json::to_string_pretty(&v).unwrap_or_default()))
}

/// Checks a set against its manifest: every part there, of its size and checksum, and
/// opened by the password. The problems found, by part.
pub fn verify(set: &Path, passwords: &[Password]) -> Result<Vec<String>, String> {
    let m: Value = std::fs::read(set.join(MANIFEST))
        .map_err(|e| format!("{}: {e}", set.join(MANIFEST).display()))
        .and_then(|b| {
            serde_json::from_slice(&b).map_err(|e| format!("{}: {e}", set.join(MANIFEST).display()))
        })?;
    let mut bad = Vec::new();
    for p in m["parts"].as_array().into_iter().flatten() {
        let Some(file) = p["file"].as_str() else {
            continue;
        };
        let name = p["name"].as_str().unwrap_or(file);
        let Ok(b) = std::fs::read(set.join(file)) else {
            bad.push(format!("{name}: {file} is missing"));
            continue;
        };
        if b.len() as u64 != p["bytes"].as_u64().unwrap_or(0)
            || sha(&b) != p["sha256"].as_str().unwrap_or("")
        {
            bad.push(format!(
                "{name}: {file} differs from the manifest (size or checksum): damaged or truncated"
            ));
            continue;
        }
        if let Err(e) = vault::decrypt(&String::from_utf8_lossy(&b), passwords) {
            bad.push(format!("{name}: {e}"));
        }
    }
    Ok(bad)
}
