//! The files provision writes for Ceph: ceph.conf (per host: its own public address),
//! the unit that activates raw OSDs at boot, the CephFS mount unit and docker's ordering.

use indexmap::IndexMap;

/// A monitor's v2 + v1 address vector.
pub fn addrvec(ip: &str) -> String {
    format!("[v2:{ip}:3300,v1:{ip}:6789]")
}

/// Pool replicas for this many OSD hosts: 3 (min 2) from three hosts on, else one per host.
pub fn pool_size(osd_hosts: usize) -> (u64, u64) {
    match osd_hosts {
        0 | 1 => (1, 1),
        2 => (2, 1),
        _ => (3, 2),
    }
}

pub struct ConfIn<'a> {
    pub fsid: &'a str,
    pub mons: &'a [String],
    pub addr: &'a str,
    pub public_network: Option<&'a str>,
    pub size: (u64, u64),
    pub extra: &'a IndexMap<String, String>,
}

pub fn ceph_conf(c: &ConfIn) -> String {
    let mut s = format!(
        "# Managed by provision (ceph_cluster). A changed setting restarts the daemons, one at a time.\n\
         [global]\nfsid = {}\nmon_host = {}\npublic_addr = {}\n",
        c.fsid,
        c.mons
            .iter()
            .map(|m| addrvec(m))
            .collect::<Vec<_>>()
            .join(","),
        c.addr
    );
    if let Some(n) = c.public_network {
        s += &format!("public_network = {n}\n");
    }
    s += "auth_cluster_required = cephx\nauth_service_required = cephx\nauth_client_required = cephx\n\
          auth_allow_insecure_global_id_reclaim = false\nms_bind_msgr2 = true\n";
    s += &format!(
        "osd_pool_default_size = {}\nosd_pool_default_min_size = {}\n",
        c.size.0, c.size.1
    );
    if c.size.0 == 1 {
        s += "mon_allow_pool_size_one = true\n";
    }
    for (k, v) in c.extra {
        s += &format!("{k} = {v}\n");
    }
    s
}

/// Written only when the settings daemons read at start change: a daemon started before
/// its last change runs with old settings and is restarted (one at a time).
pub const SETTINGS_STAMP: &str = "/etc/ceph/provision-settings";

/// The stamp: a digest of ceph.conf's settings, without what daemons learn from the
/// cluster itself (the monitors' addresses, the pool defaults provision applies to pools).
pub fn settings_stamp(c: &ConfIn) -> String {
    use sha2::Digest;
    let mut s = format!("public_network = {:?}\n", c.public_network);
    for (k, v) in c.extra {
        s += &format!("{k} = {v}\n");
    }
    format!(
        "# Managed by provision (ceph_cluster): the digest of the ceph.conf settings daemons\n\
         # read at start. A daemon started before this file changed is restarted.\n{}\n",
        hex::encode(sha2::Sha256::digest(s.as_bytes()))
    )
}

pub const OSD_UNIT: &str = "/etc/systemd/system/provision-ceph-osds.service";
pub const OSD_DROPIN: &str = "/etc/systemd/system/ceph-osd@.service.d/provision.conf";
pub const DOCKER_DROPIN: &str = "/etc/systemd/system/docker.service.d/provision-cephfs.conf";

/// Ceph 16's raw OSDs have no activation at boot: this unit activates the inventory's
/// devices before the ceph-osd@ units start.
pub fn osd_unit(devices: &[String], allow_loop: bool) -> String {
    let mut s = String::from(
        "# Managed by provision (ceph_cluster)\n[Unit]\nDescription=Activate the raw Ceph OSDs provision prepared\n\
         After=local-fs.target\nBefore=ceph-osd.target\n\n[Service]\nType=oneshot\nRemainAfterExit=yes\n",
    );
    if allow_loop {
        s += "Environment=CEPH_VOLUME_ALLOW_LOOP_DEVICES=true\n";
    }
    for d in devices {
        // `-`: a device not yet prepared must not keep the others down.
        s += &format!("ExecStart=-/usr/sbin/ceph-volume raw activate --device {d} --no-systemd\n");
    }
    s += "\n[Install]\nWantedBy=multi-user.target ceph-osd.target\n";
    s
}

pub const OSD_DROPIN_TEXT: &str = "# Managed by provision (ceph_cluster)\n[Unit]\n\
    After=provision-ceph-osds.service\nWants=provision-ceph-osds.service\n";

/// The unit that mounts CephFS: a service, not a mount unit, so that a mount that fails
/// at boot (the active MDS was on this host and is still failing over) is tried again.
pub const MOUNT_SERVICE: &str = "provision-cephfs.service";

pub fn mount_service(path: &str, client: &str, fs: &str) -> String {
    format!(
        "# Managed by provision (ceph_cluster)\n[Unit]\nDescription=CephFS {fs} on {path} (ceph-fuse)\n\
         After=network-online.target\nWants=network-online.target\n\
         # Before docker only, not a remote filesystem target, which logins wait for (a slow\n\
         # mount at boot must not keep operators out of SSH).\n\
         Before=docker.service\n\n\
         [Service]\nType=simple\nExecStartPre=/bin/mkdir -p {path}\n\
         ExecStartPre=-/bin/umount -l {path}\n\
         ExecStart=/usr/bin/ceph-fuse -f --id {client} --client_fs {fs} {path}\n\
         # Started means mounted: docker, ordered after this unit, finds the volume there.\n\
         ExecStartPost=/bin/sh -c 'for i in $(seq 120); do mountpoint -q {path} && exit 0; sleep 1; done; exit 1'\n\
         ExecStopPost=-/bin/umount -l {path}\nRestart=on-failure\nRestartSec=5\nTimeoutStartSec=150\n\n\
         [Install]\nWantedBy=multi-user.target\n"
    )
}

pub fn docker_dropin(unit: &str) -> String {
    format!("# Managed by provision (ceph_cluster): the shared volume is mounted before docker starts\n[Unit]\nAfter={unit}\nWants={unit}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conf_names_every_mon_and_this_host() {
        let extra: IndexMap<String, String> =
            [("mon_data_avail_warn".to_string(), "5".to_string())].into();
        let c = ceph_conf(&ConfIn {
            fsid: "f",
            mons: &["10.0.0.1".into(), "10.0.0.2".into()],
            addr: "10.0.0.9",
            public_network: Some("10.0.0.0/24"),
            size: pool_size(1),
            extra: &extra,
        });
        assert!(c.contains("mon_host = [v2:10.0.0.1:3300,v1:10.0.0.1:6789],[v2:10.0.0.2:3300,v1:10.0.0.2:6789]\n"), "{c}");
        assert!(c.contains("public_addr = 10.0.0.9\n"));
        assert!(c.contains("mon_allow_pool_size_one = true\n"));
        assert!(c.ends_with("mon_data_avail_warn = 5\n"));
    }

    #[test]
    fn the_settings_stamp_changes_with_settings_only() {
        let a: IndexMap<String, String> =
            [("osd_max_backfills".to_string(), "1".to_string())].into();
        let b: IndexMap<String, String> =
            [("osd_max_backfills".to_string(), "2".to_string())].into();
        let mons = ["10.0.0.1".to_string()];
        let more = ["10.0.0.1".to_string(), "10.0.0.2".into(), "10.0.0.3".into()];
        let c = |mons: &[String], size, extra| {
            settings_stamp(&ConfIn {
                fsid: "f",
                mons,
                addr: "10.0.0.9",
                public_network: None,
                size: pool_size(size),
                extra,
            })
        };
        // New monitors or more OSD hosts restart nothing; a changed setting does.
        assert_eq!(c(&mons, 1, &a), c(&more, 3, &a));
        assert_ne!(c(&mons, 1, &a), c(&mons, 1, &b));
    }

    #[test]
    fn pool_sizes_follow_osd_hosts() {
        assert_eq!(pool_size(1), (1, 1));
        assert_eq!(pool_size(2), (2, 1));
        assert_eq!(pool_size(3), (3, 2));
        assert_eq!(pool_size(7), (3, 2));
    }

    #[test]
    fn the_mount_service_is_ready_only_once_mounted() {
        let u = mount_service("/mnt/cephfs", "swarm", "cephfs");
        assert!(
            u.contains(
                "ExecStart=/usr/bin/ceph-fuse -f --id swarm --client_fs cephfs /mnt/cephfs\n"
            ),
            "{u}"
        );
        assert!(u.contains("mountpoint -q /mnt/cephfs") && u.contains("Restart=on-failure"));
        assert!(u.contains("\nBefore=docker.service\n"), "{u}");
        // Logins wait for remote-fs.target: the mount must not be part of it.
        assert!(!u.contains("remote-fs"), "{u}");
    }

    #[test]
    fn osd_unit_activates_each_device() {
        let u = osd_unit(&["/dev/sdb".into(), "/dev/sdc".into()], false);
        assert_eq!(
            u.matches("ExecStart=-/usr/sbin/ceph-volume raw activate")
                .count(),
            2
        );
        assert!(!u.contains("LOOP"));
    }
}
