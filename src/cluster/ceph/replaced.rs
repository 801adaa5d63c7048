//! A replaced machine (or a wiped disk) under the same host name: its old OSDs stay in
//! the CRUSH map, down, with no device of the host holding them. Once the host holds an
//! OSD of this cluster again, each old one is marked out, and purged when every PG is
//! active+clean again (its data copied from the others).

use super::plan::{Phase, Quorate, View};
use super::*;

/// The OSDs under `host`'s CRUSH bucket that are down and not among `local` (the ids its
/// devices and OSD folders hold): (id, still in).
pub fn orphans(tree: &Value, host: &str, local: &[i64]) -> Vec<(i64, bool)> {
    let nodes: Vec<&Value> = tree["nodes"]
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    let Some(bucket) = nodes
        .iter()
        .find(|n| n["type"] == "host" && n["name"] == host)
    else {
        return Vec::new();
    };
    bucket["children"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_i64)
        .filter(|id| !local.contains(id))
        .filter_map(|id| {
            let o = nodes.iter().find(|n| n["id"] == id && n["type"] == "osd")?;
            (o["status"] == "down").then(|| (id, o["reweight"].as_f64().unwrap_or(0.0) > 0.0))
        })
        .collect()
}

impl Ceph {
    /// 4b. Old OSDs of a replaced machine: out, then purged once the data has moved.
    pub(super) fn phase_replaced(&mut self, v: &View, q: &Quorate) -> Phase {
        let mut actions = Vec::new();
        let mut waiting = Vec::new();
        let clean = q.c.unclean_pgs().is_empty();
        for h in self.hosts.values() {
            let Some(o) = v.obs.get(&h.name) else {
                continue;
            };
            if h.devices.is_empty()
                || !v.writable(&h.name)
                || o.devices.len() < h.devices.len()
                || o.devices.iter().any(|d| d.missing)
                || !o.raw.iter().any(|r| r.ceph_fsid == v.fsid)
            {
                continue;
            }
            let mut local: Vec<i64> = o.raw.iter().map(|r| r.osd_id).collect();
            local.extend(o.osds.keys());
            for (id, is_in) in orphans(&q.c.tree, &h.name, &local) {
                let (msg, script) = if is_in {
                    (
                        format!("mark osd.{id} out: no device of {} holds it any more (the machine was replaced); its data moves to the other OSDs", h.name),
                        format!("ceph osd out {id} >/dev/null"),
                    )
                } else if clean {
                    (
                        format!("purge osd.{id} of {}'s old machine (its data has moved)", h.name),
                        format!("ceph osd safe-to-destroy {id} >/dev/null && ceph osd purge {id} --yes-i-really-mean-it >/dev/null"),
                    )
                } else {
                    waiting.push(format!("osd.{id}"));
                    continue;
                };
                actions.push(Action {
                    host: h.name.clone(),
                    run_on: Some(q.src.clone()),
                    msg,
                    script,
                    stdin: None,
                    serial: true,
                });
            }
        }
        if !actions.is_empty() {
            return Ok(Some(actions));
        }
        if !waiting.is_empty() {
            return self.wait_some(
                format!(
                    "the data of {} (a replaced machine's) to move",
                    waiting.join(", ")
                ),
                &q.c.unclean_pgs().join(", "),
                v.cx,
            );
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_osds_are_those_down_that_no_device_holds() {
        let tree = json!({"nodes": [
            {"id": -3, "type": "host", "name": "n4", "children": [7, 3]},
            {"id": 3, "type": "osd", "status": "down", "reweight": 1.0},
            {"id": 7, "type": "osd", "status": "up", "reweight": 1.0},
            {"id": -4, "type": "host", "name": "n5", "children": [4]},
            {"id": 4, "type": "osd", "status": "down", "reweight": 0.0},
        ]});
        assert_eq!(orphans(&tree, "n4", &[7]), vec![(3, true)]);
        assert_eq!(
            orphans(&tree, "n4", &[7, 3]),
            vec![],
            "held by a device: a restart, not a replacement"
        );
        assert_eq!(orphans(&tree, "n5", &[]), vec![(4, false)], "out already");
        assert_eq!(orphans(&tree, "n9", &[]), vec![]);
    }
}
