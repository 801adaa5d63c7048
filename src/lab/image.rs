//! The lab's root filesystem images: debootstrap base + a layer of cluster packages, the
//! base alone for fresh hosts, and a flat apt repository holding the cluster packages and
//! the extra ones, cached by the hash of their lists.

use crate::sys::{require_tool, run, run_quiet};
use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

pub const SUITE: &str = "bookworm";

/// Installed by debootstrap: what a fresh server has, plus python3 for the peers' benchmarks.
pub const BASE: &[&str] = &[
    "openssh-server",
    "sudo",
    "python3",
    "iproute2",
    "iputils-ping",
    "procps",
    "ca-certificates",
    "openssl",
    "tini",
    "systemd",
    "systemd-sysv",
    "dbus",
    "libpam-systemd",
    "iptables",
    "kmod",
    "curl",
    "gnupg",
    "apt-utils",
    "util-linux",
    "mount",
    "e2fsprogs",
    "netbase",
    "less",
];

/// Installed in a second step: the cluster's daemons, so hosts need no internet.
pub const LAYER: &[&str] = &[
    "docker.io",
    "etcd-server",
    "etcd-client",
    "ceph-mon",
    "ceph-mgr",
    "ceph-osd",
    "ceph-common",
    "ceph-mds",
    "ceph-fuse",
    "udev",
];

/// Not installed: served to the hosts by the lab's apt repository.
pub const EXTRA: &[&str] = &[
    "tree",
    "jq",
    "chrony",
    "unattended-upgrades",
    "fail2ban",
    "auditd",
    "busybox-static",
    "nftables",
    "python3-systemd",
];

/// Units that cannot work inside a lab host.
const MASKED: &[&str] = &[
    "systemd-udevd.service",
    "systemd-udevd-control.socket",
    "systemd-udevd-kernel.socket",
    "getty@tty1.service",
    "console-getty.service",
    "systemd-modules-load.service",
    "systemd-remount-fs.service",
    "sys-kernel-config.mount",
    "sys-kernel-debug.mount",
    "sys-kernel-tracing.mount",
    "proc-sys-fs-binfmt_misc.automount",
    "systemd-firstboot.service",
    "e2scrub_reap.service",
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "nvmf-autoconnect.service",
];

/// Daemons installed in the image but left off, as on a server that never ran them.
const DISABLED: &[&str] = &[
    "docker.service",
    "docker.socket",
    "containerd.service",
    "etcd.service",
];

/// Bumped when the configure step changes, so cached images are rebuilt.
const RECIPE: u32 = 3;

pub const ADMIN_USER: &str = "admin";

pub struct Image {
    pub rootfs: PathBuf,
    /// The base alone, as a fresh server: the cluster packages come from the repository.
    pub fresh: PathBuf,
    pub repo: PathBuf,
}

fn key(parts: &[&[&str]], recipe: u32) -> String {
    let mut h = Sha256::new();
    h.update(format!("{SUITE}\n"));
    if recipe > 0 {
        h.update(format!("recipe {recipe}\n"));
    }
    for list in parts {
        h.update(list.join(" "));
        h.update("\n");
    }
    hex::encode(&h.finalize()[..8])
}

/// Returns the cached image, building what is missing.
pub fn ensure(cache: &Path, log: &mut dyn FnMut(&str)) -> Result<Image> {
    let base_dir = cache.join(format!("base-{}", key(&[BASE], 0)));
    let img_dir = cache.join(format!("image-{}", key(&[BASE, LAYER, EXTRA], RECIPE)));
    let image = Image {
        rootfs: img_dir.join("rootfs"),
        fresh: img_dir.join("fresh"),
        repo: img_dir.join("repo"),
    };
    if img_dir.join("ready").exists() {
        return Ok(image);
    }
    require_tool("debootstrap", "debootstrap")?;
    std::fs::create_dir_all(cache).with_context(|| format!("creating {}", cache.display()))?;
    if !base_dir.join("ready").exists() {
        log(&format!(
            "building the base image with debootstrap ({} packages)...",
            BASE.len()
        ));
        let t = Instant::now();
        let tmp = base_dir.with_extension("tmp");
        let _ = std::fs::remove_dir_all(&tmp);
        run(
            Command::new("debootstrap")
                .arg("--variant=minbase")
                .arg(format!("--include={}", BASE.join(",")))
                .arg(SUITE)
                .arg(tmp.join("rootfs")),
            "image build, step debootstrap",
        )?;
        std::fs::write(tmp.join("ready"), "")?;
        replace_dir(&tmp, &base_dir)?;
        log(&format!(
            "base image built in {:.0} s",
            t.elapsed().as_secs_f64()
        ));
    }
    log("building the cluster layer and the package repository...");
    let t = Instant::now();
    let tmp = img_dir.with_extension("tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;
    run(
        Command::new("cp")
            .arg("-a")
            .arg(base_dir.join("rootfs"))
            .arg(tmp.join("rootfs")),
        "image build, step copy base",
    )?;
    let root = tmp.join("rootfs");
    std::fs::write(root.join("usr/sbin/policy-rc.d"), "#!/bin/sh\nexit 101\n")?;
    chmod(&root.join("usr/sbin/policy-rc.d"), 0o755)?;
    in_chroot(
        &root,
        "apt-get update -q",
        "image build, step apt-get update",
    )?;
    in_chroot(
        &root,
        &format!(
            "DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends {}",
            LAYER.join(" ")
        ),
        "image build, step install layer",
    )?;
    in_chroot(
        &root,
        &format!(
            "rm -rf /srv/repo && mkdir -p /srv/repo/partial && \
             cp /var/cache/apt/archives/*.deb /srv/repo/ && \
             apt-get install -y -q --download-only --no-install-recommends \
               -o Dir::Cache::archives=/srv/repo {} && \
             rm -rf /srv/repo/partial /srv/repo/lock && cd /srv/repo && \
             apt-ftparchive packages . > Packages && apt-ftparchive release . > Release",
            EXTRA.join(" ")
        ),
        "image build, step download extra packages",
    )?;
    std::fs::rename(root.join("srv/repo"), tmp.join("repo"))?;
    configure(&root)?;
    run(
        Command::new("cp")
            .arg("-a")
            .arg(base_dir.join("rootfs"))
            .arg(tmp.join("fresh")),
        "image build, step copy base for fresh hosts",
    )?;
    configure(&tmp.join("fresh"))?;
    std::fs::write(tmp.join("ready"), "")?;
    replace_dir(&tmp, &img_dir)?;
    log(&format!(
        "cluster layer built in {:.0} s",
        t.elapsed().as_secs_f64()
    ));
    Ok(image)
}

/// Host-independent settings: no host keys, masked units, the admin user, the local repo.
fn configure(root: &Path) -> Result<()> {
    let mut script = String::from("set -e\nrm -f /etc/ssh/ssh_host_* /usr/sbin/policy-rc.d\n");
    script += &format!("systemctl mask {}\n", MASKED.join(" "));
    script += &format!("systemctl disable {} || true\n", DISABLED.join(" "));
    script += &format!(
        "id {u} >/dev/null 2>&1 || useradd -m -s /bin/bash {u}\n\
         echo '{u} ALL=(ALL) NOPASSWD: ALL' > /etc/sudoers.d/90-lab-{u}\n\
         chmod 0440 /etc/sudoers.d/90-lab-{u}\n\
         passwd -l root >/dev/null\n",
        u = ADMIN_USER
    );
    script += "apt-get clean\nrm -rf /var/lib/apt/lists/*\n";
    script += "echo 'deb [trusted=yes] http://10.200.0.1:8089/ ./' > /etc/apt/sources.list\n";
    script += "rm -f /etc/apt/sources.list.d/*\n: > /etc/machine-id\necho nameserver 10.200.0.1 > /etc/resolv.conf\n";
    in_chroot(root, &script, "image build, step configure")?;
    Ok(())
}

/// Runs a shell script chrooted in `root`, in a private mount namespace.
fn in_chroot(root: &Path, script: &str, what: &str) -> Result<()> {
    let r = root.display();
    let wrapper = format!(
        "set -e; mount -t proc proc {r}/proc; mount --rbind /dev {r}/dev; \
         mount -t tmpfs tmpfs {r}/run; cp /etc/resolv.conf {r}/etc/resolv.conf; \
         exec chroot {r} /bin/sh -c \"$1\""
    );
    run(
        Command::new("unshare")
            .args([
                "--mount",
                "--propagation",
                "private",
                "--fork",
                "sh",
                "-c",
                &wrapper,
                "sh",
                script,
            ])
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("LC_ALL", "C"),
        what,
    )?;
    Ok(())
}

fn replace_dir(from: &Path, to: &Path) -> Result<()> {
    if to.exists() {
        run_quiet(Command::new("rm").arg("-rf").arg(to));
    }
    std::fs::rename(from, to)
        .with_context(|| format!("moving {} to {}", from.display(), to.display()))
}

fn chmod(p: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// The key of the base image, so a base built by hand can be adopted.
pub fn base_dir(cache: &Path) -> PathBuf {
    cache.join(format!("base-{}", key(&[BASE], 0)))
}
