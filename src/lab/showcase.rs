//! The first command's cluster: the lab's inventory plus what shows every role (etcd on
//! the manager, a node label, an overlay network, a web app and the monitoring stack from
//! the lab's registry), and where to look once it is up.

use super::{registry, Lab, LabState};
use anyhow::Result;
use std::path::PathBuf;

const VARS: &str = r#"    # The first command's cluster (see the README): every role on the lab.
    swarm_networks: [{ name: shared, attachable: true }]
    stacks:
      - name: web
        builtin: app
        vars: { image: "REG/busybox:lab", command: [httpd, -f, -h, /www], site_path: /www/index.html,
                replicas: 2, endpoint_mode: dnsrr, constraints: ["node.labels.web == yes"], max_per_node: 1, publish_port: 8080 }
        configs: { site: { content: "hello from provision\n" } }
      - name: monitoring
        builtin: monitoring
        vars: { grafana: false, cadvisor: false, prometheus_port: 9090, prometheus_image: "REG/prometheus:lab",
                node_exporter_image: "REG/node-exporter:lab", alertmanager_image: "REG/alertmanager:lab" }
"#;

impl Lab {
    pub fn showcase_inventory(&self) -> PathBuf {
        self.dir.join("showcase.yml")
    }

    /// Writes the showcase inventory when the lab can hold it (systemd hosts, disks, a
    /// registry, a worker); returns the inventory to use.
    pub fn showcase(&self) -> Result<PathBuf> {
        let Some(st) = self.state() else {
            return Ok(self.inventory());
        };
        if !fits(&st) {
            return Ok(self.inventory());
        }
        let lab = std::fs::read_to_string(self.inventory())?;
        let text = showcase_text(&lab, &registry::address());
        crate::sys::write_atomic(&self.showcase_inventory(), text.as_bytes(), 0o644)?;
        Ok(self.showcase_inventory())
    }
}

fn fits(st: &LabState) -> bool {
    !st.minimal && st.registry_pid > 0 && st.disk.is_some() && st.hosts.len() >= 2
}

fn showcase_text(lab: &str, reg: &str) -> String {
    let vars = VARS.replace("REG", reg);
    lab.replacen("  children:\n", &format!("{vars}  children:\n"), 1)
        .replacen(
            "        workers:\n",
            "        workers:\n          vars: { swarm_labels: { web: \"yes\" } }\n",
            1,
        )
        + "    etcd:\n      children: { managers: {} }\n"
}

/// Where to look once the showcase is up.
pub fn where_to_look(lab: &Lab, inventory: &std::path::Path) -> Vec<String> {
    let Some(st) = lab.state() else {
        return Vec::new();
    };
    let addr = |i: usize| {
        st.hosts
            .get(i)
            .map(|h| h.address.clone())
            .unwrap_or_default()
    };
    let workers: Vec<String> = (1..st.hosts.len())
        .map(|i| format!("http://{}:8080/", addr(i)))
        .collect();
    let mut look = Vec::new();
    if inventory == lab.showcase_inventory() {
        look.push(format!(
            "web app:     {} (on the nodes that run it)",
            workers.join("  ")
        ));
        look.push(format!("Prometheus:  http://{}:9090/targets", addr(0)));
    }
    look.extend([
        "the cluster: provision status      drift: provision audit".into(),
        format!("inventory:   {}", inventory.display()),
        format!("a shell:     ssh -F {} node1", lab.ssh_config().display()),
    ]);
    look
}

#[cfg(test)]
mod tests {
    #[test]
    fn showcase_adds_every_role_to_the_lab_inventory() {
        let lab = "all:\n  vars:\n    ansible_user: admin\n  children:\n    lab:\n      children:\n        managers:\n          hosts:\n            node1:\n              ansible_host: 10.200.0.11\n        workers:\n          hosts:\n            node2:\n              ansible_host: 10.200.0.12\n    ceph_osds:\n      hosts:\n        node1: { ceph_osd_devices: [/dev/loop1] }\n";
        let s = super::showcase_text(lab, "10.200.0.1:5000");
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("inv.yml");
        std::fs::write(&p, &s).unwrap();
        let inv = crate::inventory::Inventory::load(&p).unwrap();
        assert_eq!(inv.groups["etcd"].iter().collect::<Vec<_>>(), ["node1"]);
        assert_eq!(inv.hosts["node2"].vars["swarm_labels"]["web"], "yes");
        let stacks = &inv.hosts["node1"].vars["stacks"];
        assert_eq!(stacks[0]["vars"]["image"], "10.200.0.1:5000/busybox:lab");
        assert_eq!(stacks[1]["builtin"], "monitoring");
    }
}
