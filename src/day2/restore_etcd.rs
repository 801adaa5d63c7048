//! `provision restore --etcd`: every etcd member's data back from a set's snapshot, as a
//! new cluster with every key. The members must be built (their /etc/default/etcd written
//! by a run) and every one must answer. Three phases, so a failure leaves etcd as it was
//! until the last: each member restores the snapshot into a folder of its own while etcd
//! runs on; then each stops etcd and swaps the folders (the old data set aside); then all
//! start together and must be healthy.

use super::Fleet;
use crate::transport::quote;

/// What each member's config says, and what it holds now.
struct Member {
    name: String,
    peer: String,
    data: String,
    token: String,
    running: bool,
    /// Keys in its etcd now (None: it did not answer).
    keys: Option<u64>,
}

fn probe_script(ctl: &str) -> String {
    format!(
        "[ -r /etc/default/etcd ] && . /etc/default/etcd\n\
         echo \"==PROVISION conf\"; printf '%s\\n' \"$ETCD_NAME\" \"$ETCD_INITIAL_ADVERTISE_PEER_URLS\" \"$ETCD_DATA_DIR\" \"$ETCD_INITIAL_CLUSTER_TOKEN\"\n\
         if systemctl is-active --quiet etcd; then echo \"==PROVISION running\"; \
         echo \"==PROVISION keys\"; {ctl} get '' --prefix --count-only -w json 2>/dev/null; fi; true\n"
    )
}

fn parse(h: &str, out: &str) -> Result<Member, String> {
    let s = crate::probe::sections(out);
    let conf: Vec<&str> = s
        .get("conf")
        .map(|c| c.lines().collect())
        .unwrap_or_default();
    let [name, peer, data, token] = conf[..] else {
        return Err(format!(
            "{h}: /etc/default/etcd lacks the member's settings: run provision on it first"
        ));
    };
    if [name, peer, data, token]
        .iter()
        .any(|v| v.trim().is_empty())
    {
        return Err(format!(
            "{h}: /etc/default/etcd lacks the member's settings: run provision on it first"
        ));
    }
    if !data.starts_with('/') || data.trim_end_matches('/').is_empty() {
        return Err(format!(
            "{h}: /etc/default/etcd names the data folder `{data}`: not a folder a restore may replace"
        ));
    }
    // An empty count is left out of etcd's JSON.
    let keys = s
        .get("keys")
        .and_then(|k| serde_json::from_str::<serde_json::Value>(k.trim()).ok())
        .map(|v| v["count"].as_u64().unwrap_or(0));
    Ok(Member {
        name: name.into(),
        peer: peer.into(),
        data: data.into(),
        token: token.into(),
        running: s.contains_key("running"),
        keys,
    })
}

/// Restores `db` (a snapshot, `sha256` its checksum) onto every etcd member of `f`.
/// Returns what was done, one line per member; or why not, and whether anything changed.
pub async fn run(
    f: &Fleet<'_>,
    db: &[u8],
    sha256: &str,
    force: bool,
) -> Result<Vec<String>, (bool, String)> {
    let members = plan(f, force).await.map_err(|e| (false, e))?;
    apply(f, &members, db, sha256).await
}

/// Every member's settings, once each answers; refused when one holds data (unless `force`).
async fn plan(f: &Fleet<'_>, force: bool) -> Result<Vec<(String, Member)>, String> {
    let hosts: Vec<String> = f
        .parts
        .iter()
        .filter(|(_, p)| p.etcd)
        .map(|(h, _)| h.clone())
        .collect();
    if hosts.is_empty() {
        return Err("the inventory has no etcd group: nothing to restore".into());
    }
    let silent: Vec<&String> = hosts.iter().filter(|h| !f.conns.contains_key(*h)).collect();
    if !silent.is_empty() {
        return Err(format!(
            "{} did not answer: a restore rebuilds every member at once, so every one must answer",
            silent
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let mut members = Vec::new();
    for h in &hosts {
        let out = f
            .ok(h, &probe_script(&f.etcdctl(h)))
            .await
            .map_err(|e| format!("{h}: {e}"))?;
        members.push((h.clone(), parse(h, &out)?));
    }
    let live: Vec<String> = members
        .iter()
        .filter(|(_, m)| m.running && m.keys != Some(0))
        .map(|(h, m)| match m.keys {
            Some(k) => format!("{h} ({k} keys)"),
            None => format!("{h} (running, not answering)"),
        })
        .collect();
    if !live.is_empty() && !force {
        return Err(format!(
            "etcd runs and holds data on {}: a restore replaces it with the snapshot's; add --force \
             (each member's data folder is then set aside, not deleted)",
            live.join(", ")
        ));
    }
    Ok(members)
}

async fn apply(
    f: &Fleet<'_>,
    members: &[(String, Member)],
    db: &[u8],
    sha256: &str,
) -> Result<Vec<String>, (bool, String)> {
    let initial: Vec<String> = members
        .iter()
        .map(|(_, m)| format!("{}={}", m.name, m.peer))
        .collect();
    let initial = initial.join(",");
    let stamp = crate::sys::now_utc().replace([':', '-'], "");
    let work = |m: &Member| format!("{}.restore-{stamp}", m.data.trim_end_matches('/'));

    // 1. The snapshot restored beside each member's data; nothing stops yet.
    let mut prepared = Vec::new();
    let mut failed = None;
    for (h, m) in members {
        let w = work(m);
        let script = format!(
            "set -e; umask 077; w={w}; rm -rf \"$w\"; mkdir -p \"$w\"; cat > \"$w/snap.db\"\n\
             [ \"$(sha256sum \"$w/snap.db\" | cut -d' ' -f1)\" = {sha256} ] || {{ echo 'the snapshot arrived damaged' >&2; exit 1; }}\n\
             if command -v etcdutl >/dev/null; then r='etcdutl'; else r='env ETCDCTL_API=3 etcdctl'; fi\n\
             $r snapshot restore \"$w/snap.db\" --name {n} --initial-cluster {ic} --initial-cluster-token {t} \
             --initial-advertise-peer-urls {p} --data-dir \"$w/data\" >/dev/null 2>\"$w/err\" || {{ tail -3 \"$w/err\" >&2; exit 1; }}\n\
             rm -f \"$w/snap.db\"\n",
            w = quote(&w),
            n = quote(&m.name),
            ic = quote(&initial),
            t = quote(&m.token),
            p = quote(&m.peer),
        );
        prepared.push((h.clone(), w));
        let o = match f.conns.get(h) {
            Some(c) => c
                .run(&script, Some(db), Some("root"))
                .await
                .map_err(|e| e.to_string()),
            None => Err("no connection".into()),
        };
        match o {
            Ok(o) if o.rc == 0 => {}
            Ok(o) => {
                failed = Some(format!(
                    "{h}: the snapshot could not be restored: {}",
                    o.stderr.trim()
                ))
            }
            Err(e) => failed = Some(format!("{h}: {e}")),
        }
        if failed.is_some() {
            break;
        }
        super::say(h, "snapshot restored beside the data (etcd still runs)");
    }
    if let Some(e) = failed {
        for (h, w) in &prepared {
            let _ = f.sh(h, &format!("rm -rf {}", quote(w))).await;
        }
        return Err((false, e));
    }

    // 2. Each member stopped and its data swapped; the old set aside.
    let mut done = Vec::new();
    for (h, m) in members {
        let (w, d) = (work(m), m.data.trim_end_matches('/').to_owned());
        let aside = format!("{d}.before-restore-{stamp}");
        let script = format!(
            "set -e; systemctl stop etcd\n\
             if [ -e {d} ]; then mv {d} {aside}; echo aside; fi\n\
             mv {w}/data {d}; rm -rf {w}; chown -R etcd:etcd {d}; chmod 700 {d}\n",
            d = quote(&d),
            w = quote(&w),
            aside = quote(&aside),
        );
        let out = f.ok(h, &script).await.map_err(|e| {
            (
                true,
                format!(
                    "{h}: swapping in the restored data failed: {e} (members done before it: {}; \
                     their old data is beside theirs, .before-restore-{stamp})",
                    done.join(", ")
                ),
            )
        })?;
        done.push(h.clone());
        let old = if out.contains("aside") {
            format!("the old set aside as {aside}")
        } else {
            "there was no old data".into()
        };
        super::say(
            h,
            &format!("etcd stopped, the restored data in place; {old}"),
        );
    }

    // 3. All started together (each waits for a quorum), then healthy.
    for (h, _) in members {
        f.ok(h, "systemctl start --no-block etcd")
            .await
            .map_err(|e| (true, format!("{h}: {e}")))?;
    }
    let t = std::time::Instant::now();
    let mut lines = Vec::new();
    for (h, m) in members {
        loop {
            let ctl = f.etcdctl(h);
            let o = f
                .sh(h, &format!("{ctl} endpoint health >/dev/null 2>&1"))
                .await
                .map_err(|e| (true, format!("{h}: {e}")))?;
            if o.rc == 0 {
                break;
            }
            if t.elapsed() > f.wait {
                return Err((
                    true,
                    format!(
                        "{h}: etcd not healthy {} s after the restore (journalctl -u etcd on it says why)",
                        f.wait.as_secs()
                    ),
                ));
            }
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
        lines.push(format!("{h}: member {} restored and healthy", m.name));
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_member_is_read_from_its_config_and_count() {
        let m = super::parse(
            "n1",
            "==PROVISION conf\nn1\nhttps://10.0.0.1:2380\n/var/lib/etcd/p\nprovision-inv\n==PROVISION running\n==PROVISION keys\n{\"header\":{},\"count\":7}\n",
        )
        .unwrap();
        assert_eq!((m.name.as_str(), m.running, m.keys), ("n1", true, Some(7)));
        let m = super::parse("n1", "==PROVISION conf\nn1\np\n/d\nt\n==PROVISION running\n==PROVISION keys\n{\"header\":{}}\n").unwrap();
        assert_eq!(m.keys, Some(0), "an empty cluster");
        let m = super::parse("n1", "==PROVISION conf\nn1\nhttps://10.0.0.1:2380\n/d\nt\n").unwrap();
        assert_eq!(
            (m.running, m.keys),
            (false, None),
            "not running: nothing to count"
        );
        let e = super::parse("n2", "==PROVISION conf\n\n\n\n\n")
            .err()
            .unwrap();
        assert!(
            e.contains("n2") && e.contains("run provision on it first"),
            "{e}"
        );
    }
}
